"""Helpers for the measurement tests: small random networks and a naive one-configuration reference."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

import faultbound as fb
from faultbound.faults import (
    Byzantine,
    ByzantineDeviation,
    Crash,
    Fault,
    Precision,
    StuckAt,
    SynapseByzantine,
    SynapseCrash,
)
from faultbound.measure.engine import (
    BitFlip,
    FaultSet,
    _flip_float32,
    _flip_int8,
    _neuron_scale,
    _single_weighted,
    _weighted_op,
)
from faultbound.network.core import Network
from faultbound.network.ops import Dense

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
                op = _weighted_op(layer)
                if isinstance(op, Dense):
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
                wi = _single_weighted(layer)
                assert wi is not None
                op = layer.ops[wi]
                dw = torch.zeros(op.weight.numel(), dtype=torch.float64)
                bits = fs.bits[l - 1]
                assert bits is not None
                for p, bit in zip(sites[t].tolist(), bits[t].tolist(), strict=True):
                    if p < 0:
                        continue
                    w = op.weight.reshape(-1)[p : p + 1]
                    if fault.format == "float32":
                        d = float(_flip_float32(w, torch.tensor([bit]))) - float(w.to(torch.float32))
                    else:
                        d = float(_flip_int8(w, torch.tensor([bit]), float(op.weight.abs().max()) / 127.0))
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
                            bt = bits[t, n].expand(b)
                            if fault.format == "float32":
                                yn[:, j] = _flip_float32(yn[:, j], bt)
                            else:
                                yn[:, j] = yn[:, j] + _flip_int8(yn[:, j], bt, _neuron_scale(net, l))
            y = yn.reshape(b, *layer.out_shape)
        # end layers
    return torch.stack(outs)
