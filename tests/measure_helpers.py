"""Helpers for the measurement tests: small random networks and a naive one-configuration reference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

import faultbound as fb
from faultbound.faults import (
    BitFlip,
    Byzantine,
    ByzantineDeviation,
    Crash,
    Fault,
    Precision,
    StuckAt,
    SynapseByzantine,
    SynapseCrash,
)
from faultbound.measure.faultset import FaultSet
from faultbound.network.core import Layer, Network
from faultbound.network.ops import Conv, Dense, Flatten

ACTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}


def make_net(
    widths: Sequence[int],
    acts: Sequence[str],
    d_in: int = 3,
    n_out: int = 2,
    conv: int = 0,
    seed: int = 0,
    scale: float = 1.0,
) -> Network:
    """d_in -> widths -> n_out (dense), or with ``conv`` conv layers on 1x5x5 first (stride 1, pad 1)."""
    g = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    acts = list(acts)
    shape: tuple[int, ...]
    if conv:
        ch = 1
        for c in range(conv):
            out_ch = 2 + c
            mods += [nn.Conv2d(ch, out_ch, 3, padding=1), ACTS[acts[c]]()]
            ch = out_ch
        mods.append(nn.Flatten())
        prev = ch * 25
        shape = (1, 5, 5)
        widths, acts = widths[conv:], acts[conv:]
    else:
        prev = d_in
        shape = (d_in,)
    for w, a in zip(widths, acts, strict=True):
        mods += [nn.Linear(prev, w), ACTS[a]()]
        prev = w
    mods.append(nn.Linear(prev, n_out))
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)
    return fb.Network.from_torch(model, input_shape=shape)


# ------------------------------------------------------------------ the documented statements, re-read
# These re-implement BitFlip's docstring with numpy's views of the bits; they never call the engine.


def np_flip_float32(v: float, bit: int) -> float:
    """``v`` as an IEEE-754 float32 word with bit ``bit`` flipped (31 = sign), read back."""
    word = np.array([v], dtype=np.float32).view(np.uint32)
    return float((word ^ np.uint32(1 << bit)).view(np.float32)[0])


def np_flip_int8_change(v: float, bit: int, scale: float) -> float:
    """Change of ``v`` when bit ``bit`` of its two's-complement int8 code q = round(v / s) flips."""
    q = np.int8(np.clip(np.round(v / scale), -128, 127))
    q2 = (np.array([q], dtype=np.int8).view(np.uint8) ^ np.uint8(1 << bit)).view(np.int8)[0]
    return (int(q2) - int(q)) * scale


def neuron_int8_scale(net: Network, l: int) -> float:
    """BitFlip's neuron scale :math:`Y_l / 127`, Y_l the largest |value| of layer l over the domain."""
    box = net.intervals()[l - 1]  # hidden layer l: post-activation box over the domain
    y = float(torch.maximum(box.y_lo.abs(), box.y_hi.abs()).max())
    return (y if y > 0 else 1.0) / 127.0


def weighted_index(layer: Layer) -> int:
    """Index of the layer's only Linear/Conv op."""
    idx = [i for i, o in enumerate(layer.ops) if isinstance(o, (Dense, Conv))]
    assert len(idx) == 1
    return idx[0]


def naive(net: Network, x: Tensor, fault: Fault, fs: FaultSet, values: tuple[Tensor | None, ...], dtype: torch.dtype):
    """Faulty outputs ``(T, B, n_out)``, one configuration and one layer at a time, no shortcuts.

    ``values`` are the per-layer values the engine used (``(T, 1|B, k)``, or ``(T, B, N)`` for precision).
    """
    outs = []
    b = x.shape[0]
    nominal = [a.reshape(b, -1) for a in net.activations(x.to(dtype))]
    for t in range(fs.n_configs):
        y = x.to(dtype)
        for layer in net.layers:
            l = layer.index
            s = layer.pre(y).reshape(b, -1).clone()
            yp = y.reshape(b, -1)
            sites = fs.sites[l - 1] if l - 1 < len(fs.sites) else None
            if isinstance(fault, (SynapseCrash, SynapseByzantine)) and sites is not None:
                a = layer.effective_matrix()
                plain = [o for o in layer.ops if not isinstance(o, Flatten)]
                if len(plain) == 1 and isinstance(plain[0], Dense):
                    jj, ii = torch.meshgrid(torch.arange(a.shape[0]), torch.arange(a.shape[1]), indexing="ij")
                    jj, ii = jj.reshape(-1), ii.reshape(-1)
                else:
                    jj, ii = torch.nonzero(a, as_tuple=True)
                for n, p in enumerate(sites[t].tolist()):
                    if p < 0:
                        continue
                    j, i = int(jj[p]), int(ii[p])
                    sent = torch.zeros(b, dtype=dtype)
                    if isinstance(fault, SynapseByzantine):
                        v = values[l - 1]
                        assert v is not None
                        sent = v[t, :, n].expand(b)
                    s[:, j] = s[:, j] - a[j, i].to(dtype) * yp[:, i] + sent
            if isinstance(fault, BitFlip) and fault.target == "weight" and sites is not None:
                # rebuild the layer's chain with the flipped weights, the obvious way
                wi = weighted_index(layer)
                op = layer.ops[wi]
                dw = torch.zeros(op.weight.numel(), dtype=torch.float64)
                bits = fs.bits[l - 1]
                assert bits is not None
                for p, bit in zip(sites[t].tolist(), bits[t].tolist(), strict=True):
                    if p < 0:
                        continue
                    w = float(op.weight.reshape(-1)[p])
                    if fault.format == "float32":
                        d = np_flip_float32(w, bit) - float(np.float32(w))
                    else:
                        d = np_flip_int8_change(w, bit, float(op.weight.abs().max()) / 127.0)
                    dw[p] += d
                w_new = (op.weight + dw.reshape(op.weight.shape)).to(dtype)
                z = y
                for i_op, o in enumerate(layer.ops):
                    if i_op != wi:
                        z = o.forward(z)
                    elif isinstance(o, Dense):
                        z = F.linear(z, w_new, o.bias.to(dtype))
                    else:
                        z = F.conv2d(z, w_new, o.bias.to(dtype), o.stride, o.padding)
                s = z.reshape(b, -1).clone()
            if layer.activation is None:
                outs.append(s)
                break
            yn = layer.activation(s).clone()
            if isinstance(fault, Precision):
                v = values[l - 1]
                if v is not None:
                    yn = yn + v[t]
            elif isinstance(fault, (Crash, StuckAt, Byzantine, ByzantineDeviation)) or (
                isinstance(fault, BitFlip) and fault.target == "neuron"
            ):
                if sites is not None:
                    for n, j in enumerate(sites[t].tolist()):
                        if j < 0:
                            continue
                        if isinstance(fault, Crash):
                            yn[:, j] = 0.0
                        elif isinstance(fault, StuckAt):
                            yn[:, j] = fault.value
                        elif isinstance(fault, Byzantine):
                            v = values[l - 1]
                            assert v is not None
                            yn[:, j] = v[t, :, n].expand(b)
                        elif isinstance(fault, ByzantineDeviation):
                            v = values[l - 1]
                            assert v is not None
                            yn[:, j] = nominal[l][:, j] + v[t, :, n].expand(b)
                        else:
                            assert isinstance(fault, BitFlip)
                            bits = fs.bits[l - 1]
                            assert bits is not None
                            bit = int(bits[t, n])
                            col = [float(v) for v in yn[:, j]]
                            if fault.format == "float32":
                                new = [np_flip_float32(v, bit) for v in col]
                            else:
                                sc = neuron_int8_scale(net, l)
                                new = [v + np_flip_int8_change(v, bit, sc) for v in col]
                            yn[:, j] = torch.tensor(new, dtype=yn.dtype)
            y = yn.reshape(b, *layer.out_shape)
        # end layers
    return torch.stack(outs)
