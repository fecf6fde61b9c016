"""A slow, obvious faulty forward over a graph network, written with plain torch ops from the
documented statements (faultbound/faults.py, measure/graph_engine.py module docstring): one
configuration and one input at a time, one failing unit at a time. It never imports the engine.

Each graph operator is re-implemented here from its fields (not by calling ``op.forward``), and the
activations through their ``torch.nn`` modules.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from faultbound.network import gops
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten


def ref_op(op: object, xs: list[Tensor], weight: Tensor | None = None) -> Tensor:
    """One sample ``(1, *shape)`` through one operator (``weight`` replaces a weighted op's weight)."""
    if isinstance(op, gops.Affine):
        o = op.op
        x = xs[0]
        if isinstance(o, Dense):
            w = o.weight if weight is None else weight
            return x @ w.to(x.dtype).T + o.bias.to(x.dtype)
        if isinstance(o, Conv):
            w = o.weight if weight is None else weight
            return F.conv2d(x, w.to(x.dtype), o.bias.to(x.dtype), o.stride, o.padding)
        if isinstance(o, AvgPool):
            return F.avg_pool2d(x, o.kernel, o.stride, o.padding)
        if isinstance(o, ChannelAffine):
            shp = (1, -1) + (1,) * (x.dim() - 2)
            return x * o.scale.to(x.dtype).reshape(shp) + o.shift.to(x.dtype).reshape(shp)
        if isinstance(o, Flatten):
            return x.reshape(x.shape[0], -1)
        raise NotImplementedError(o)
    if isinstance(op, gops.Act):
        return op.act.torch_module().to(xs[0].dtype)(xs[0])
    if isinstance(op, gops.Add):
        out = torch.zeros(())
        for s, x in zip(op.signs, xs, strict=True):
            out = out + x if s > 0 else out - x
        return out
    if isinstance(op, gops.Mul):
        return xs[0] * xs[1]
    if isinstance(op, gops.ConstAffine):
        x = xs[0]
        if op.scale is not None:
            x = x * op.scale.to(x.dtype)
        if op.shift is not None:
            x = x + op.shift.to(x.dtype)
        return x
    if isinstance(op, gops.MatMul):
        return xs[0] @ xs[1]
    if isinstance(op, gops.Concat):
        return torch.cat(xs, op.dim)
    if isinstance(op, gops.Rearrange):
        x = xs[0]
        if op.kind == "view":
            return x.reshape(x.shape[0], *op.args)
        if op.kind == "permute":
            return x.permute(*op.args)
        if op.kind == "slice":
            d, a, b, s = op.args
            return x[(slice(None),) * d + (slice(a, b, s),)]
        d, i = op.args
        return x.select(d, i)
    if isinstance(op, gops.MaxPool):
        return F.max_pool2d(x_pad(xs[0], op.padding, -math.inf), op.kernel, op.stride)
    if isinstance(op, gops.Mean):
        return xs[0].mean(op.dims, keepdim=op.keepdim)
    if isinstance(op, gops.Norm):
        x = xs[0]
        if op.shape is not None:
            dims = tuple(range(x.dim() - len(op.shape), x.dim()))
            mu = x.mean(dims, keepdim=True)
            var = ((x - mu) ** 2).mean(dims, keepdim=True)
            z = (x - mu) / torch.sqrt(var + op.eps)
            w = None if op.weight is None else op.weight.to(x.dtype)
            b = None if op.bias is None else op.bias.to(x.dtype)
        else:
            g = x.reshape(x.shape[0], op.groups, -1)
            mu = g.mean(-1, keepdim=True)
            var = ((g - mu) ** 2).mean(-1, keepdim=True)
            z = ((g - mu) / torch.sqrt(var + op.eps)).reshape(x.shape)
            shp = (-1,) + (1,) * (x.dim() - 2)
            w = None if op.weight is None else op.weight.to(x.dtype).reshape(shp)
            b = None if op.bias is None else op.bias.to(x.dtype).reshape(shp)
        if w is not None:
            z = z * w
        if b is not None:
            z = z + b
        return z
    if isinstance(op, gops.Softmax):
        e = torch.exp(xs[0] - xs[0].amax(op.dim, keepdim=True))
        return e / e.sum(op.dim, keepdim=True)
    raise NotImplementedError(op)


def x_pad(x: Tensor, pad: tuple[int, int], fill: float) -> Tensor:
    return F.pad(x, (pad[1], pad[1], pad[0], pad[0]), value=fill)


def effective_pairs(net: GraphNetwork, node_index: int) -> list[tuple[int, int, float]]:
    """(j, i, w_ji) of the non-zero entries of a weighted node's effective (out, in) matrix, in
    row-major order, from its responses to unit impulses (float64)."""
    node = net.nodes[node_index]
    src = net.nodes[node.inputs[0]]
    n_in = src.width
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *src.shape)
    zero = torch.zeros((1, *src.shape), dtype=torch.float64)
    cols = (ref_op(node.op, [eye]) - ref_op(node.op, [zero])).reshape(n_in, -1)  # (in, out)
    m = cols.T
    j, i = torch.nonzero(m, as_tuple=True)
    return [(int(a), int(b), float(m[a, b])) for a, b in zip(j, i, strict=True)]


def flip_float32(v: float, bit: int) -> float:
    a = np.array([v], dtype=np.float32).view(np.uint32)
    a ^= np.uint32(1 << bit)
    return float(a.view(np.float32)[0])


def flip_int8(v: float, bit: int, scale: float) -> float:
    q = int(max(-128, min(127, round(v / scale))))
    u = (q & 0xFF) ^ (1 << bit)
    q2 = u - 256 if u >= 128 else u
    return v + (q2 - q) * scale


def ref_faulty(
    net: GraphNetwork,
    x: Tensor,
    kind: str,
    units: dict[int, list[int]],
    values: dict[int, list[float]] | None = None,
    bits: dict[int, list[int]] | None = None,
    gain: float = 0.0,
    fmt: str = "float32",
    offsets: dict[int, Tensor] | None = None,
    const: float = 0.0,
) -> Tensor:
    """Faulty output ``(n_out,)`` of one input ``x`` ``(*input_shape)``.

    ``kind``: ``"neuron"`` (failing unit u of site s sends ``gain * clean_u + values[s][k]``),
    ``"synapse"`` (synapse p of weighted node w transmits ``gain * w y_i + values[w][k]``),
    ``"bitneuron"`` / ``"bitweight"`` (bit ``bits[s][k]`` flips; ``fmt`` float32 or int8), or
    ``"precision"`` (site s gets ``offsets[s]``, its shape). Keys are 0-based site / weighted indices;
    ``const`` is the value sent where ``values`` gives none (a stuck-at value).
    """
    dtype = x.dtype
    clean = [torch.zeros(())] * len(net.nodes)
    cur = [torch.zeros(())] * len(net.nodes)
    site_of = {n: k for k, n in enumerate(net.site_nodes)}
    w_of = {n: k for k, n in enumerate(net.weighted_nodes)}
    for i, node in enumerate(net.nodes):
        op = node.op
        if isinstance(op, gops.Input):
            clean[i] = x.reshape(1, *net.input_shape)
            cur[i] = clean[i]
            continue
        if isinstance(op, gops.Const):
            clean[i] = op.value.to(dtype)
            cur[i] = clean[i]
            continue
        clean[i] = ref_op(op, [clean[j] for j in node.inputs])
        weight = None
        if kind == "bitweight" and i in w_of and units.get(w_of[i]):
            o = op.op  # type: ignore[attr-defined]
            wf = o.weight.detach().clone().reshape(-1).to(torch.float64)
            scale = (float(o.weight.abs().max()) or 1.0) / 127.0
            for p, bit in zip(units[w_of[i]], bits[w_of[i]], strict=True):  # type: ignore[index]
                old = float(o.weight.reshape(-1)[p])
                wf[p] = flip_float32(old, bit) if fmt == "float32" else flip_int8(old, bit, scale)
            weight = wf.reshape(o.weight.shape)
        y = ref_op(op, [cur[j] for j in node.inputs], weight)
        if kind == "synapse" and i in w_of and units.get(w_of[i]):
            pairs = effective_pairs(net, i)
            yf = y.reshape(-1).clone()
            src_clean = clean[node.inputs[0]].reshape(-1)
            src_cur = cur[node.inputs[0]].reshape(-1)
            for k, p in enumerate(units[w_of[i]]):
                j, ii, w = pairs[p]
                v = values[w_of[i]][k] if values else const
                yf[j] = yf[j] + (gain * w * src_clean[ii] + v) - w * src_cur[ii]
            y = yf.reshape(y.shape)
        if i in site_of:
            s = site_of[i]
            if kind == "neuron" and units.get(s):
                yf = y.reshape(-1).clone()
                cf = clean[i].reshape(-1)
                for k, u in enumerate(units[s]):
                    v = values[s][k] if values else const
                    yf[u] = gain * cf[u] + v
                y = yf.reshape(y.shape)
            if kind == "bitneuron" and units.get(s):
                yf = y.reshape(-1).clone()
                lo, hi = net.intervals()[i]
                ymax = float(torch.maximum(lo.abs(), hi.abs()).max())
                scale = (ymax if ymax > 0 else 1.0) / 127.0
                for u, bit in zip(units[s], bits[s], strict=True):  # type: ignore[index]
                    old = float(yf[u])
                    yf[u] = flip_float32(old, bit) if fmt == "float32" else flip_int8(old, bit, scale)
                y = yf.reshape(y.shape)
            if kind == "precision" and offsets is not None and s in offsets:
                y = y + offsets[s].reshape(y.shape).to(dtype)
        cur[i] = y
    return cur[-1].reshape(-1)
