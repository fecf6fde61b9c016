"""Tolerance: which failure distributions keep an ε'-approximation within ε (Theorem 3).

A network that approximates its target to :math:`\\epsilon'` tolerates the distribution
:math:`(f_l)` whenever :math:`B(f) \\le \\epsilon - \\epsilon'`, where B is a certified bound
(:func:`faultbound.bound`). This module searches that set three ways:

* per layer: the largest :math:`f_l` with every other layer at 0;
* uniform: the largest fraction p such that :math:`f_l = \\lfloor p N_l \\rfloor` is tolerated for
  every fraction up to p;
* exact: for up to 3 hidden layers, every *maximal* tolerated distribution (tolerated, and no
  other tolerated distribution is componentwise larger). Every distribution is evaluated: the
  printed Fep is not monotone in :math:`f_{l'}` for :math:`l' > 1` (ERRATA 5), so no step of the
  search assumes monotonicity.

:math:`\\epsilon'` is given, or estimated from data or a target function -- an estimate from below of
the supremum over the domain, and reported as such (ERRATA 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from faultbound.bounds.api import LEMMA1, METHODS, Method, check_eps, fault_dict
from faultbound.bounds.paper import layer_stats, paper_batch
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Crash, Fault, NeuronFault, Precision, SynapseFault
from faultbound.network.core import Network

__all__ = [
    "EpsPrime",
    "ToleranceResult",
    "tolerate",
    "tolerates",
    "estimate_eps_prime",
    "estimate_eps_prime_fn",
    "maximal_elements",
]

#: Most distributions evaluated by the exact enumeration.
MAX_ENUMERATE = 4_000_000


@dataclass(frozen=True)
class EpsPrime:
    """:math:`\\epsilon'`, given or estimated. An estimate is a max over samples: from below."""

    value: float
    estimated: bool
    source: str
    n_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "estimated": self.estimated,
            "source": self.source,
            "n_samples": self.n_samples,
        }


@dataclass(frozen=True)
class ToleranceResult:
    """What :func:`tolerate` found. Distributions are tuples (f_1..f_L, or L+1 for synapses)."""

    eps: float
    eps_prime: EpsPrime
    budget: float
    method: str
    fault: Fault
    per_layer_max: tuple[int, ...]
    uniform_fraction: float
    uniform_failures: tuple[int, ...]
    maximal: tuple[tuple[int, ...], ...] | None
    n_evaluated: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "eps_prime": self.eps_prime.to_dict(),
            "budget": self.budget,
            "method": self.method,
            "fault": self.fault.name,
            "fault_params": fault_dict(self.fault),
            "per_layer_max": list(self.per_layer_max),
            "uniform_fraction": self.uniform_fraction,
            "uniform_failures": list(self.uniform_failures),
            "maximal": None if self.maximal is None else [list(m) for m in self.maximal],
            "n_evaluated": self.n_evaluated,
            "notes": list(self.notes),
        }


def _as_eps_prime(eps_prime: float | EpsPrime) -> EpsPrime:
    if isinstance(eps_prime, EpsPrime):
        return eps_prime
    return EpsPrime(float(eps_prime), False, "given")


def tolerates(
    net: Network,
    failures: Sequence[int],
    eps: float,
    eps_prime: float | EpsPrime,
    fault: Fault | None = None,
    method: Method = "paper",
) -> bool:
    """Theorem 3: True when the bound for ``failures`` is at most :math:`\\epsilon-\\epsilon'`."""
    from faultbound.bounds.api import bound

    ep = _as_eps_prime(eps_prime)
    check_eps(eps, ep.value)
    res = bound(net, failures, fault or Crash(), method)
    return (not res.unbounded) and res.value <= eps - ep.value


def _limits(net: Network, fault: Fault) -> list[int]:
    """Largest admissible count per layer."""
    if isinstance(fault, SynapseFault):
        return [lay.n_synapses for lay in net.layers]
    return [w - 1 for w in net.widths]


def _evaluator(net: Network, fault: Fault, method: str) -> Callable[[np.ndarray], np.ndarray]:
    """Vectorised bound over an array of distributions ``(..., n_layers)``."""
    if method == "paper":
        stats = layer_stats(net, fault)
        return lambda F: paper_batch(net, F, fault, stats)
    fn = METHODS[method]

    def run(F: np.ndarray) -> np.ndarray:
        flat = F.reshape(-1, F.shape[-1])
        vals = np.array([fn(net, [int(v) for v in row], fault)[0] for row in flat])
        return vals.reshape(F.shape[:-1])

    return run


def maximal_elements(ok: np.ndarray) -> np.ndarray:
    """Boolean mask of the maximal true cells of ``ok`` (no true cell componentwise above).

    ``up[f]`` = any true cell :math:`g \\ge f` is a suffix-OR along every axis; ``f`` is dominated
    when ``up[f + e_i]`` holds for some axis i.
    """
    up = ok.copy()
    for ax in range(ok.ndim):
        up = np.flip(np.maximum.accumulate(np.flip(up, ax), axis=ax), ax)
    dominated = np.zeros_like(ok)
    for ax in range(ok.ndim):
        shifted = np.zeros_like(ok)
        src = [slice(None)] * ok.ndim
        dst = [slice(None)] * ok.ndim
        src[ax] = slice(1, None)
        dst[ax] = slice(None, -1)
        shifted[tuple(dst)] = up[tuple(src)]
        dominated |= shifted
    return ok & ~dominated


def tolerate(
    net: Network,
    eps: float,
    eps_prime: float | EpsPrime,
    fault: Fault | None = None,
    method: Method = "paper",
    max_enumerate: int = MAX_ENUMERATE,
) -> ToleranceResult:
    """Largest tolerated failure distributions for ``fault`` (see the module docstring).

    Args:
        eps: the accuracy the network must keep, :math:`\\epsilon`.
        eps_prime: the accuracy it has, :math:`\\epsilon'` (a number, or an :class:`EpsPrime`).
        max_enumerate: skip the exact enumeration above this many distributions (said in notes).
    """
    fault = Crash() if fault is None else fault
    if isinstance(fault, Precision):
        raise InvalidArgumentError(
            "Tolerance search counts failing units; for precision use faultbound.apps.precision."
        )
    if method not in METHODS:
        raise InvalidArgumentError(
            f"Expected `method` to be one of {', '.join(METHODS)}, but got {method!r}."
        )
    ep = _as_eps_prime(eps_prime)
    check_eps(eps, ep.value)
    budget = eps - ep.value
    limits = _limits(net, fault)
    n = len(limits)
    notes: list[str] = []
    if ep.estimated:
        notes.append(
            f"eps' = {ep.value:.4g} is estimated from {ep.n_samples} samples ({ep.source}): an "
            "estimate from below of the supremum, so the verdicts are estimates too (ERRATA 8)."
        )
    zero = tuple([0] * n)
    if getattr(fault, "capacity", None) == math.inf:
        notes.append(LEMMA1)
        return ToleranceResult(eps, ep, budget, method, fault, zero, 0.0, zero, (zero,), 0, tuple(notes))
    net.require_bounded_values()
    evaluate = _evaluator(net, fault, method)
    evaluated = 0

    def ok(F: np.ndarray) -> np.ndarray:
        nonlocal evaluated
        evaluated += int(np.prod(F.shape[:-1]))
        return evaluate(F) <= budget

    # per layer, others at zero: every count is evaluated.
    per_layer = []
    for l in range(n):
        counts = np.arange(limits[l] + 1)
        F = np.zeros((len(counts), n), dtype=np.int64)
        F[:, l] = counts
        good = ok(F)
        per_layer.append(int(counts[good].max()) if good.any() else -1)
    if any(v < 0 for v in per_layer):
        notes.append("Even the failure-free network exceeds the budget: eps' > eps?")
        per_layer = [max(v, 0) for v in per_layer]

    # uniform fraction: candidates p = k / N_l, ascending; the longest tolerated prefix.
    widths = [lay.width for lay in net.layers] if isinstance(fault, SynapseFault) else net.widths
    sizes = limits if isinstance(fault, SynapseFault) else widths
    cands = sorted({(k, sz) for sz in sizes for k in range(0, sz + 1)}, key=lambda t: t[0] / t[1])
    fracs, rows = [], []
    seen = set()
    for k, sz in cands:
        p = k / sz
        row = tuple(min((k * m) // sz, lim) for m, lim in zip(sizes, limits, strict=True))
        if p >= 1.0 and not isinstance(fault, SynapseFault):
            break
        if row in seen:
            continue
        seen.add(row)
        fracs.append(p)
        rows.append(row)
    good = ok(np.array(rows, dtype=np.int64))
    bad = np.flatnonzero(~good)
    last = (bad[0] - 1) if len(bad) else len(rows) - 1
    uniform_p = fracs[last] if last >= 0 else 0.0
    uniform_f = rows[last] if last >= 0 else zero

    # exact maximal set for up to 3 hidden layers (neuron faults).
    maximal: tuple[tuple[int, ...], ...] | None = None
    total = math.prod(lim + 1 for lim in limits)
    if isinstance(fault, NeuronFault) and net.L <= 3 and total <= max_enumerate:
        grids = np.meshgrid(*[np.arange(lim + 1) for lim in limits], indexing="ij")
        F = np.stack(grids, -1)
        good_grid = ok(F)
        mask = maximal_elements(good_grid)
        maximal = tuple(tuple(int(v) for v in idx) for idx in np.argwhere(mask))
    elif isinstance(fault, NeuronFault):
        notes.append(
            f"Maximal distributions not enumerated: {net.L} hidden layers and {total} "
            f"distributions (exact enumeration covers up to 3 layers and {max_enumerate})."
        )
    return ToleranceResult(
        eps,
        ep,
        budget,
        method,
        fault,
        tuple(per_layer),
        float(uniform_p),
        tuple(uniform_f),
        maximal,
        evaluated,
        tuple(notes),
    )


def _targets(y: np.ndarray | torch.Tensor, n: int, n_out: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    if t.dim() == 1 and n_out == 1:
        t = t[:, None]
    if t.dim() != 2 or t.shape[0] != n or t.shape[1] != n_out:
        raise InvalidArgumentError(
            f"Expected targets of shape ({n}, {n_out}) (one value per output), but got "
            f"{tuple(t.shape)}."
        )
    return t


def estimate_eps_prime(net: Network, X: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> EpsPrime:
    """:math:`\\max_i \\|F_{neu}(x_i) - y_i\\|_\\infty` over a data set: an estimate from below."""
    x = torch.as_tensor(np.asarray(X, dtype=np.float64))
    if x.dim() == 1 and len(net.input_shape) == 1 and net.input_shape[0] != 1:
        x = x[None]
    x = x.reshape(x.shape[0], *net.input_shape) if x.numel() == x.shape[0] * math.prod(net.input_shape) else x
    if tuple(x.shape[1:]) != net.input_shape:
        raise InvalidArgumentError(
            f"Expected inputs of shape (n, {', '.join(map(str, net.input_shape))}), but got "
            f"{tuple(x.shape)}."
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError("Expected finite inputs, but the data has NaN or inf.")
    t = _targets(y, x.shape[0], net.n_outputs)
    with torch.no_grad():
        err = (net.forward(x) - t).abs().amax()
    return EpsPrime(float(err), True, "data", int(x.shape[0]))


def estimate_eps_prime_fn(
    net: Network,
    target: Callable[[torch.Tensor], torch.Tensor],
    n_samples: int = 4096,
    seed: int = 0,
) -> EpsPrime:
    """:math:`\\max \\|F_{neu}(x) - F(x)\\|_\\infty` over the domain's corners, a regular grid (for
    up to 6 inputs) and uniform samples: an estimate from below of the supremum."""
    d = math.prod(net.input_shape)
    g = torch.Generator().manual_seed(seed)
    pts = [net.domain.sample(n_samples, g)]
    if d <= 6:
        per = max(2, int(round(n_samples ** (1.0 / d))))
        axes = [torch.linspace(0, 1, per, dtype=torch.float64)] * d
        u = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, *net.input_shape)
        pts.append(net.domain.lo + u * (net.domain.hi - net.domain.lo))
    x = torch.cat(pts, 0)
    with torch.no_grad():
        t = torch.as_tensor(target(x), dtype=torch.float64).reshape(x.shape[0], -1)
        err = (net.forward(x) - t).abs().amax()
    return EpsPrime(float(err), True, "target function", int(x.shape[0]))
