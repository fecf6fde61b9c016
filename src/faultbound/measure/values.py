"""The values an adversary chooses: Byzantine values and precision offsets.

A fault model that chooses values (:attr:`~faultbound.faults.Fault.chooses_values`) lets each failing
unit of layer l send a value :math:`v \\in [lo_l, hi_l]` = ``fault.value_ranges(L)[l]`` (:math:`\\pm C`
for Byzantine neurons and synapses, :math:`\\pm\\lambda_l` for precision, where every neuron of layer l
is off); write :math:`c_l = (lo_l + hi_l)/2` and :math:`r_l = (hi_l - lo_l)/2`. Values are

* ``"fixed"``: given per configuration (:attr:`FaultSet.values <faultbound.measure.faultset.FaultSet>`,
  clipped to the interval), default :math:`hi_l`;
* ``"random"``: uniform in :math:`[lo_l, hi_l]`, per configuration for failing units, per
  configuration x input x neuron for a whole layer;
* ``"adversarial"``: :math:`c_l \\pm r_l` by the sign of the downstream gradient of the largest output
  deviation, refined for a few sign-ascent steps (:func:`_adversarial`); the best step is kept per
  (configuration, input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault
from faultbound.measure.faultset import FaultSet
from faultbound.measure.state import _errors
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork

__all__ = ["ValueMode"]

ValueMode = Literal["fixed", "random", "adversarial"]


def _ranges(fault: Fault, n_layers: int) -> list[tuple[float, float]]:
    """``fault.value_ranges(n_layers)``, which must be finite to be measured."""
    ranges = fault.value_ranges(n_layers)
    if not all(math.isfinite(lo) and math.isfinite(hi) for lo, hi in ranges):
        raise InvalidArgumentError("Expected a finite capacity to measure Byzantine faults (Lemma 1: unbounded).")
    return ranges


def _between(unit: Tensor, lo: float, hi: float) -> Tensor:
    """:math:`c + u\\,r` for ``unit`` u in [-1, 1] (c the centre, r the radius of [lo, hi]); exactly
    :math:`u\\,hi` when the interval is symmetric."""
    centre, radius = (lo + hi) / 2, (hi - lo) / 2
    return unit * radius if centre == 0 else unit * radius + centre


def _init_values(
    net: Network | GraphNetwork,
    fault: Fault,
    fs: FaultSet,
    mode: ValueMode,
    b: int,
    g: torch.Generator,
    dtype: torch.dtype,
) -> list[Tensor | None]:
    """Per layer: ``(T, 1, k)`` (failing units, fixed/random), ``(T, B, k)`` (adversarial) or
    ``(T, B, N_l)`` (a whole layer, or a graph's fault site, off: precision); ``None`` where nothing
    is chosen."""
    t = fs.n_configs
    out: list[Tensor | None] = []
    if not fault.chooses_values:
        return [None] * len(fs.sites)
    if not fault.counted:
        for l, (lo, hi) in enumerate(_ranges(fault, net.L), start=1):
            if lo == hi == 0:
                out.append(None)
                continue
            shape = (t, b, net.widths[l - 1])
            if mode == "random":
                out.append(_between(torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1, lo, hi).to(dtype))
            elif mode == "fixed":
                out.append(torch.full(shape, hi, dtype=dtype))
            else:
                sign = torch.randint(0, 2, shape, generator=g).to(dtype) * 2 - 1
                out.append(_between(sign, lo, hi))
        return out
    ranges = _ranges(fault, len(fs.sites))
    for i, s in enumerate(fs.sites):
        if s is None:
            out.append(None)
            continue
        lo, hi = ranges[i]
        k = s.shape[1]
        if mode == "fixed":
            given = fs.values[i] if i < len(fs.values) else None
            v = given.to(dtype).clamp(lo, hi) if given is not None else torch.full((t, k), hi, dtype=dtype)
            out.append(v[:, None, :])
        elif mode == "random":
            out.append(_between(torch.rand((t, 1, k), generator=g, dtype=torch.float64) * 2 - 1, lo, hi).to(dtype))
        else:
            sign = torch.randint(0, 2, (t, b, k), generator=g).to(dtype) * 2 - 1
            out.append(_between(sign, lo, hi))
    return out


def _place_values(
    fs: FaultSet, used: list[list[Tensor | None]], members: list[Tensor], t_all: int
) -> tuple[Tensor | None, ...]:
    """Values of every chunk back in configuration order (sites padded back to the full k)."""
    n = len(used[0]) if used else 0
    out: list[Tensor | None] = []
    for i in range(n):
        parts = [u[i] for u in used]
        shapes = [p for p in parts if p is not None]
        if not shapes:
            out.append(None)
            continue
        site = fs.sites[i] if i < len(fs.sites) else None
        k_full = site.shape[1] if site is not None else shapes[0].shape[2]
        mid = max(p.shape[1] for p in shapes)
        full = torch.zeros((t_all, mid, k_full), dtype=shapes[0].dtype)
        for u, rows in zip(used, members, strict=True):
            p = u[i]
            if p is not None:
                full[rows, :, : p.shape[2]] = p
        out.append(full)
    return tuple(out)


def _adversarial(
    forward: Callable[[list[Tensor | None]], Tensor],
    clean_output: Tensor,
    ranges: list[tuple[float, float]],
    vals: list[Tensor | None],
    steps: int,
) -> tuple[Tensor, list[Tensor | None]]:
    """Sign ascent on the values:
    :math:`v \\leftarrow c + r\\,\\mathrm{sign}(\\partial \\sigma (F'_o - F_o) / \\partial v)` with o the
    most deviated output, :math:`\\sigma` its sign, c and r the centre and radius of the layer's
    interval of values; the best step per (t, b) is kept.

    ``forward`` maps the values to the faulty outputs ``(T, B, n_out)`` (differentiably), ``ranges``
    holds each layer's interval ``(lo, hi)``.
    """
    best_err: Tensor | None = None
    best_out: Tensor | None = None
    best_vals: list[Tensor | None] = list(vals)
    cur = [None if v is None else v.detach().clone() for v in vals]
    for step in range(steps + 1):
        leaves = [None if v is None else v.requires_grad_(True) for v in cur]
        with torch.enable_grad():
            out = forward(leaves)
            dev = out - clean_output.unsqueeze(0)
            err = _errors(out.detach(), clean_output)
            if best_err is None or best_out is None:
                best_err, best_out = err.clone(), out.detach().clone()
                best_vals = [None if v is None else v.detach().clone() for v in cur]
            else:
                better = err > best_err
                best_err = torch.where(better, err, best_err)
                best_out = torch.where(better[..., None], out.detach(), best_out)
                best_vals = [
                    None if bv is None or v is None else torch.where(better[..., None], v.detach(), bv)
                    for bv, v in zip(best_vals, cur, strict=True)
                ]
            if step == steps:
                break
            o = dev.detach().abs().argmax(-1, keepdim=True)
            sig = torch.sign(dev.detach().gather(-1, o))
            sig = torch.where(sig == 0, torch.ones_like(sig), sig)
            obj = (sig * dev.gather(-1, o)).sum()
            live = [v for v in leaves if v is not None]
            if not obj.requires_grad:
                break
            grads = torch.autograd.grad(obj, live, allow_unused=True)
        gi = iter(grads)
        nxt: list[Tensor | None] = []
        for v, (lo, hi) in zip(cur, ranges, strict=True):
            if v is None:
                nxt.append(None)
                continue
            gr = next(gi)
            v = v.detach()
            nxt.append(v if gr is None else torch.where(gr != 0, _between(torch.sign(gr), lo, hi), v))
        cur = nxt
    assert best_out is not None
    return best_out, best_vals
