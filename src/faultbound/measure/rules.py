"""How a fault is applied at its site: one rule per :attr:`~faultbound.faults.Fault.site`.

The table :data:`RULES` maps a site to where in layer l its faults act and how:

=========  ===============================  ==================================================
site       acts on                          rule
=========  ===============================  ==================================================
neuron     the outputs of hidden layer l    failing units send ``fault.sends(y', y, v)``
layer      every output of hidden layer l   :math:`y' + u`, the chosen offsets u
synapse    the receiving sums of layer l    :math:`s_j` gets ``fault.transmits(w y, v)`` - :math:`w_{ji} y'_i`
weight     the receiving sums of layer l    :math:`s` gets :math:`(\\Delta W) z` (a flipped weight bit)
=========  ===============================  ==================================================

with :math:`y'` the current (upstream-perturbed) value and y the fault-free one. The rules read only
what the fault model states (:meth:`~faultbound.faults.NeuronFault.sends`,
:meth:`~faultbound.faults.SynapseFault.transmits`, :meth:`~faultbound.faults.BitFlip.sends` /
:meth:`~faultbound.faults.BitFlip.change`), so a new neuron or synapse model of the
:class:`~faultbound.faults.Sent` shape needs no change here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
from torch import Tensor

from faultbound.failures import weight_op_index
from faultbound.faults import BitFlip, Fault, NeuronFault, Site, SynapseFault
from faultbound.measure.faultset import FaultSet
from faultbound.measure.state import Prepared, _densify, _gather, _owns, _Sparse, _State, _weighted_op
from faultbound.network.ops import Conv, Dense

__all__ = ["At", "Rule", "RULES", "at_layer"]


class At(NamedTuple):
    """The faults of one chunk at layer l: failing units ``sites`` ``(T, k)`` (-1 padded), the chosen
    ``values`` (``(T, 1|B, k)``, or ``(T, B, N_l)`` for a whole layer) and flipped ``bits`` ``(T, k)``."""

    l: int
    sites: Tensor | None
    values: Tensor | None
    bits: Tensor | None


def at_layer(fs: FaultSet, vals: list[Tensor | None], l: int) -> At:
    """What of ``fs`` and ``vals`` strikes layer l (1-based)."""
    i = l - 1
    return At(
        l,
        fs.sites[i] if i < len(fs.sites) else None,
        vals[i] if i < len(vals) else None,
        fs.bits[i] if i < len(fs.bits) else None,
    )


#: A fault on the receiving sums of layer l: ``(prep, fault, at, state, y_prev, s, s_clean) -> s'``
#: (``s`` None: still clean).
SumRule = Callable[[Prepared, Fault, At, _State, Tensor, "Tensor | None", Tensor], "Tensor | None"]
#: A fault at the outputs of hidden layer l: ``(prep, fault, at, state, y, T) -> state'``.
OutputRule = Callable[[Prepared, Fault, At, _State, Tensor, int], _State]


@dataclass(frozen=True)
class Rule:
    """Where a site's faults act in a layer: on its receiving sums, on its outputs, or both."""

    on_sum: SumRule | None = None
    on_output: OutputRule | None = None


# ----------------------------------------------------------------------------------- neurons
def _neuron_sends(prep: Prepared, fault: Fault, at: At, cur: Tensor, nominal: Tensor) -> Tensor:
    """What the failing neurons send, given their current value ``cur`` and their fault-free value
    ``nominal``: the fault model's own statement ``fault.sends(current, clean, value)``, with the
    chosen values, or (a bit-flip model) the flipped bits as the value."""
    if at.bits is None:
        return cast(NeuronFault, fault).sends(cur, nominal, at.values)
    flip = cast(BitFlip, fault)
    scale = prep.neuron_scale(at.l) if flip.format == "int8" else 1.0
    return flip.sends(cur, nominal, at.bits[:, None, :].expand_as(cur), scale)


def _apply_neurons(prep: Prepared, fault: Fault, at: At, state: _State, y: Tensor, t: int) -> _State:
    """Replace the failing neurons' outputs by what they send (earlier changes there are dropped)."""
    sites = at.sites
    if sites is None:
        return state
    t = sites.shape[0]
    valid = sites >= 0
    if not bool(valid.any()):
        return state
    pidx = torch.where(valid, sites, sites[:, :1].clamp(min=0))
    cur = _gather(state, y, pidx, t)
    base = y.unsqueeze(0).expand(t, -1, -1).gather(2, pidx[:, None, :].expand_as(cur))
    new = _neuron_sends(prep, fault, at, cur, base)
    vb = valid[:, None, :]
    if state is None:
        return _Sparse(pidx, torch.where(vb, new - base, torch.zeros_like(new)))
    if isinstance(state, _Sparse):
        # merge: earlier changes at the failing units are replaced by the new values
        hit = ((state.idx[:, :, None] == pidx[:, None, :]) & valid[:, None, :]).any(2)  # (T, k_old)
        old = torch.where(hit[:, None, :], torch.zeros_like(state.dval), state.dval)
        add = torch.where(vb, new - base, torch.zeros_like(new))
        return _Sparse(torch.cat([state.idx, pidx], 1), torch.cat([old, add], 2))
    full = _densify(state, y, t)
    fill = torch.where(valid[:, None, :1], new[..., :1], cur[..., :1])
    new = torch.where(vb, new, fill)
    index = pidx[:, None, :].expand_as(new)
    if state is full and not torch.is_grad_enabled() and _owns(full, y):
        return full.scatter_(2, index, new)  # the state is this chunk's own tensor: no copy
    return full.scatter(2, index, new)


# ----------------------------------------------------------------------------------- whole layers
def _apply_offsets(prep: Prepared, fault: Fault, at: At, state: _State, y: Tensor, t: int) -> _State:
    """Every output of the layer is off by its chosen offset: :math:`y' + u` (precision)."""
    if at.values is None:
        return state
    return _densify(state, y, t) + at.values


# ----------------------------------------------------------------------------------- synapses
def _apply_synapses(
    prep: Prepared, fault: Fault, at: At, state: _State, y_prev: Tensor, s: Tensor | None, s_clean: Tensor
) -> Tensor | None:
    """A failing synapse j <- i transmits ``fault.transmits(w_ji y_i, v)`` (y_i fault-free) instead of
    :math:`w_{ji} y'_i`: :math:`s_j` changes by the difference."""
    sites = at.sites
    if sites is None:
        return s
    t = sites.shape[0]
    valid = sites >= 0
    if not bool(valid.any()):
        return s
    rows, cols, w = prep.synapses(at.l)
    p = sites.clamp(min=0)
    j, i, wji = rows[p], cols[p], w[p]  # (T, k)
    cur = _gather(state, y_prev, i, t)  # (T, B, k)
    old = wji[:, None, :] * cur
    wy = wji[:, None, :] * _gather(None, y_prev, i, t)  # the fault-free w_ji y_i
    delta = cast(SynapseFault, fault).transmits(wy, at.values) - old
    delta = torch.where(valid[:, None, :], delta, torch.zeros_like(delta))
    base = s if s is not None else s_clean.unsqueeze(0).expand(t, -1, -1).contiguous()
    return base.scatter_add(2, j[:, None, :].expand_as(delta), delta)


# ----------------------------------------------------------------------------------- weights
def _apply_weight_flips(
    prep: Prepared, fault: Fault, at: At, state: _State, y_prev: Tensor, s: Tensor | None, s_clean: Tensor
) -> Tensor | None:
    """A flipped bit of weight p changes it by :meth:`BitFlip.change`; the receiving sums change by
    :math:`(\\Delta W) z`, z the weighted op's (current) input, through the linear ops after it."""
    sites, bits = at.sites, at.bits
    if sites is None:
        return s
    assert bits is not None
    flip = cast(BitFlip, fault)
    t = sites.shape[0]
    valid = sites >= 0
    if not bool(valid.any()):
        return s
    layer = prep.net.layers[at.l - 1]
    wi = weight_op_index(layer)
    assert wi is not None
    op = layer.ops[wi]
    assert isinstance(op, (Dense, Conv))
    wflat = op.weight.reshape(-1)
    p = sites.clamp(min=0)
    w = wflat[p]
    if flip.format != "int8":
        dw = flip.change(w.to(torch.float64), bits, 1.0)
    else:
        dw = flip.change(w, bits, (float(op.weight.abs().max()) or 1.0) / 127.0)
    dw = torch.where(valid, dw, torch.zeros_like(dw)).to(prep.dtype)
    base = s if s is not None else s_clean.unsqueeze(0).expand(t, -1, -1).contiguous()
    b = y_prev.shape[0]
    if isinstance(op, Dense) and _weighted_op(layer) is op:
        # only flattens around the dense op: the flipped weight w_ji sees y'_i directly
        n_in = op.weight.shape[1]
        j, i = p // n_in, p % n_in
        cur = _gather(state, y_prev, i, t)
        return base.scatter_add(2, j[:, None, :].expand_as(cur), dw[:, None, :] * cur)
    # general chain ops[:wi] -> op -> ops[wi+1:]: the weighted op's input z is recomputed, its change
    # dW z goes through the linear parts of the ops after it
    z = _densify(state, y_prev, t).reshape(t * b, *layer.in_shape)
    for o in layer.ops[:wi]:
        z = o.forward(z)
    if isinstance(op, Dense):
        n_out, n_in = op.weight.shape
        zf = z.reshape(t, b, n_in)
        j, i = p // n_in, p % n_in
        cur = zf.gather(2, i[:, None, :].expand(t, b, i.shape[1]))
        ds = torch.zeros((t, b, n_out), dtype=prep.dtype)
        ds = ds.scatter_add(2, j[:, None, :].expand_as(cur), dw[:, None, :] * cur)
        ds = ds.reshape(t * b, n_out)
    else:
        # convolution: the weight is shared by every output position; convolve with the sparse kernel change
        co, ci, kh, kw = op.weight.shape
        dk = torch.zeros((t, co * ci * kh * kw), dtype=prep.dtype).scatter_add(1, p, dw).reshape(t * co, ci, kh, kw)
        zin = z.reshape(t, b, *z.shape[1:]).permute(1, 0, 2, 3, 4).reshape(b, t * ci, *z.shape[2:])
        ds = torch.nn.functional.conv2d(zin, dk, None, op.stride, op.padding, groups=t)
        ds = ds.reshape(b, t, co, *ds.shape[2:]).permute(1, 0, 2, 3, 4).reshape(t * b, co, *ds.shape[2:])
    for o in layer.ops[wi + 1 :]:
        ds = o.linear(ds)
    return base + ds.reshape(t, b, -1)


#: The rule of each fault site.
RULES: dict[Site, Rule] = {
    "neuron": Rule(on_output=_apply_neurons),
    "layer": Rule(on_output=_apply_offsets),
    "synapse": Rule(on_sum=_apply_synapses),
    "weight": Rule(on_sum=_apply_weight_flips),
}
