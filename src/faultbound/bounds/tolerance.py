"""Tolerance: which failure distributions keep an ε'-approximation within ε (Theorem 3).

A network that approximates its target to :math:`\\epsilon'` tolerates the distribution
:math:`(f_l)` whenever :math:`B(f) \\le \\epsilon - \\epsilon'`, where B is a certified bound
(:func:`faultbound.bound`). This module searches that set three ways:

* per layer: the largest :math:`f_l` with every other layer at 0;
* uniform: the largest fraction p such that :math:`f_l = \\lfloor p N_l \\rfloor` is tolerated for
  every fraction up to p;
* exact: for up to 3 hidden layers, every *maximal* tolerated distribution (tolerated, and no
  other tolerated distribution is componentwise larger). With ``method="paper"`` every
  distribution is evaluated: the printed Fep is not monotone in :math:`f_{l'}` for :math:`l' > 1`
  (ERRATA 5), so no step of the search assumes monotonicity.

**method="tight"** uses the monotone form of the tight propagation
(:func:`faultbound.bounds.tight.propagate` with ``monotone=True``), which bounds every failure set
of *at most* :math:`f_l` failures per layer. It is non-decreasing in every :math:`f_l`: the row
bound :math:`t_j = \\max_{|S|\\le f}[\\sum_{i\\notin S}|w_{ji}|e_i + \\sum_{i\\in S}|w_{ji}|\\max(\\Delta_i,
e_i)]` grows with f and with every :math:`e_i`, the capped activation deviation
:math:`\\min(K_j t_j, \\text{image cap}, \\text{width})` grows with :math:`t_j` (slope and image are taken
over an interval that grows with :math:`t_j`), and :math:`\\Delta_i` does not depend on f; by
induction over the layers the output bound grows with every :math:`f_l` (the same holds for the
synapse form and for the interval back-substitution bound, whose interval slopes and failing
terms only grow with the counts; the minimum of non-decreasing bounds is non-decreasing; see
:mod:`faultbound.bounds.tight`). So the tolerated set is downward closed and the
search needs far fewer evaluations:

* per layer and uniform fraction: a bracketing search over the ordered candidates
  (:func:`_last_within`) that keeps a tolerated candidate ``lo`` and an untolerated ``hi`` (or the
  end) and stops at ``hi = lo + 1``, so its answer is exactly the last tolerated candidate, as a
  scan would find it; the bound *values* only choose the next probe (inverse quadratic or secant
  interpolation of the budget, with a blind gallop / bisection step whenever the interpolation
  stalls, so at most ``4 * n.bit_length() + 3`` evaluations; on ResNet-18, where one evaluation
  takes seconds, far fewer than the former blind gallop and bisection). Layer l's first probe
  extrapolates the previous layers' answers (:func:`_next_guess`). The
  uniform search stops at the first fraction whose distribution exceeds a per-layer maximum in
  some layer (not tolerated: it is above an untolerated single-layer distribution) and starts from
  the largest fraction whose bound, guessed as the sum of the per-layer increases seen so far, is
  within the budget;
* maximal set: for every prefix :math:`(f_1..f_{n-2})`, a staircase walk over :math:`(f_{n-1}, f_n)`
  (the largest tolerated :math:`f_n` only decreases as :math:`f_{n-1}` grows; its first column by
  the same search, from the previous prefix's answer), which gives
  :math:`h(f_1..f_{n-1}) = \\max\\{f_n\\ \\text{tolerated}\\}`; a distribution :math:`(p, h(p))` is maximal
  iff :math:`h(p + e_i) < h(p)` for every axis i (monotonicity makes the neighbours enough). The
  number of tolerated distributions is :math:`\\sum_p (h(p) + 1)`.

**Graph networks** (:class:`~faultbound.network.graph.GraphNetwork`) have one count per fault
site (per weighted node for synapse faults) and only ``method="tight"``
(:func:`faultbound.bounds.graph_tight.graph_propagate` over the domain; ``"paper"`` is refused in
one line, :data:`~faultbound.bounds.api.GRAPH_PAPER`). The graph bound covers every failure set of
*at most* the given counts (each sparse part of f units covers every set of at most f), so a
reported distribution certifies every distribution below it; every reported count is one whose own
bound was evaluated to be within the budget, and the same search applies. The graph bound is not
non-decreasing in every count, though: a failure at an earlier site enlarges the dense deviation at
a later failing site and so shrinks that site's extra part :math:`(\\Delta - e)^+`, and the output
bound can drop (``tests/test_tolerance_search.py`` pins a 3-site case where one more failure lowers
it by 20%). Where the verdicts along a searched line are not a prefix, a search returns a tolerated
count whose successor is not tolerated, not necessarily the largest one (the blind gallop and
bisection had the same limit, and may stop at another such count), the uniform search's cap and
the staircase walk assume the prefix too; what is reported stays certified. Single-site lines
(per-layer counts) were monotone on every small graph tried (one failing site has no later failing
site to shrink), and on ResNet-18 every result equals the blind search's.

**Cost.** An evaluation is one bound: ``tight_value`` on a layered network, on a graph
:func:`~faultbound.bounds.graph_tight.graph_propagate` (the forward rule, then the
back-substitution) or, for a probe whose value no later step uses (it ends its search if
tolerated; the staircase walk's verdicts),
:func:`~faultbound.bounds.graph_tight.graph_bound_within`, which skips the back-substitution when
the forward rule alone is within the budget (the same verdict). ``n_evaluated`` counts the distinct
distributions evaluated.

:func:`compare_methods` runs both methods and reports how much larger the tight certificates are.

:math:`\\epsilon'` is given, or estimated from data or a target function -- an estimate from below of
the supremum over the domain, and reported as such (ERRATA 8).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from faultbound.bounds.api import LEMMA1, METHODS, Method, bound, check_bounded, check_eps, check_graph_method
from faultbound.bounds.graph_tight import graph_bound_within, graph_propagate
from faultbound.bounds.paper import layer_stats, paper_batch
from faultbound.bounds.tight import prepare, tight_value
from faultbound.errors import InvalidArgumentError
from faultbound.failures import max_counts
from faultbound.faults import Crash, Fault
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork
from faultbound.progress import Progress, say

__all__ = [
    "EpsPrime",
    "ToleranceResult",
    "tolerate",
    "tolerates",
    "estimate_eps_prime",
    "estimate_eps_prime_fn",
    "maximal_elements",
    "MethodComparison",
    "compare_methods",
]

#: Most bound evaluations of the staircase walk (tight method) before the maximal set is skipped.
MAX_STAIRCASE = 200_000

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
    method: Method
    fault: Fault
    per_layer_max: tuple[int, ...]
    uniform_fraction: float
    uniform_failures: tuple[int, ...]
    maximal: tuple[tuple[int, ...], ...] | None
    n_evaluated: int
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: Number of tolerated distributions (when the maximal set was computed), else ``None``.
    n_tolerated: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_tolerated": self.n_tolerated,
            "eps": self.eps,
            "eps_prime": self.eps_prime.to_dict(),
            "budget": self.budget,
            "method": self.method,
            "fault": self.fault.name,
            "fault_params": self.fault.to_dict(),
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
    net: Network | GraphNetwork,
    failures: Sequence[int],
    eps: float,
    eps_prime: float | EpsPrime,
    fault: Fault | None = None,
    method: Method = "paper",
) -> bool:
    """Theorem 3: True when the bound for ``failures`` is at most :math:`\\epsilon-\\epsilon'`."""
    ep = _as_eps_prime(eps_prime)
    check_eps(eps, ep.value)
    res = bound(net, failures, fault or Crash(), method)
    return (not res.unbounded) and res.value <= eps - ep.value


def _limits(net: Network | GraphNetwork, fault: Fault) -> list[int]:
    """Largest admissible count per layer: every synapse into it, or all neurons but one (Theorem 3)."""
    return list(max_counts(net, fault, correct_neuron=True))


def _evaluator(net: Network, fault: Fault, method: Method) -> Callable[[np.ndarray], np.ndarray]:
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
    net: Network | GraphNetwork,
    eps: float,
    eps_prime: float | EpsPrime,
    fault: Fault | None = None,
    method: Method = "paper",
    max_enumerate: int = MAX_ENUMERATE,
    progress: Progress | None = None,
) -> ToleranceResult:
    """Largest tolerated failure distributions for ``fault`` (see the module docstring).

    Args:
        eps: the accuracy the network must keep, :math:`\\epsilon`.
        eps_prime: the accuracy it has, :math:`\\epsilon'` (a number, or an :class:`EpsPrime`).
        max_enumerate: skip the exact enumeration above this many distributions (said in notes).
        progress: called with a message at each stage (per layer, the uniform fractions, the
            maximal distributions); see :mod:`faultbound.progress`.
    """
    fault = check_bounded(Crash() if fault is None else fault)
    if not fault.counted:
        raise InvalidArgumentError(
            "Tolerance search counts failing units; for precision use faultbound.apps.precision."
        )
    if method not in METHODS:
        raise InvalidArgumentError(f"Expected `method` to be one of {', '.join(METHODS)}, but got {method!r}.")
    check_graph_method(net, method)
    ep = _as_eps_prime(eps_prime)
    check_eps(eps, ep.value)
    budget = eps - ep.value
    limits = _limits(net, fault)
    n = len(limits)
    notes: list[str] = []
    if ep.estimated:
        notes.append(
            f"eps' = {ep.value:.4g} is estimated from {ep.n_samples} samples ({ep.source}): an "
            "estimate from below of the supremum, so the verdicts are estimates too (docs/errata.md §8)."
        )
    zero = tuple([0] * n)
    if fault.unbounded:
        notes.append(LEMMA1)
        return ToleranceResult(eps, ep, budget, method, fault, zero, 0.0, zero, (zero,), 0, tuple(notes))
    net.require_bounded_values()
    if method == "tight":
        return _tolerate_monotone(net, eps, ep, budget, fault, limits, notes, progress=progress)
    assert isinstance(net, Network)
    evaluate = _evaluator(net, fault, method)
    evaluated = 0

    def ok(F: np.ndarray) -> np.ndarray:
        nonlocal evaluated
        evaluated += int(np.prod(F.shape[:-1]))
        return evaluate(F) <= budget

    # per layer, others at zero: every count is evaluated.
    per_layer = []
    for l in range(n):
        say(progress, f"{method}: largest count of layer {l + 1} of {n}")
        counts = np.arange(limits[l] + 1)
        F = np.zeros((len(counts), n), dtype=np.int64)
        F[:, l] = counts
        good = ok(F)
        per_layer.append(int(counts[good].max()) if good.any() else -1)
    if any(v < 0 for v in per_layer):
        notes.append("Even the failure-free network exceeds the budget: eps' > eps?")
        per_layer = [max(v, 0) for v in per_layer]

    # uniform fraction: candidates p = k / N_l, ascending; the longest tolerated prefix.
    say(progress, f"{method}: largest uniform fraction")
    fracs, rows = _uniform_rows(net, fault, limits)
    good = ok(np.array(rows, dtype=np.int64))
    bad = np.flatnonzero(~good)
    last = (bad[0] - 1) if len(bad) else len(rows) - 1
    uniform_p = fracs[last] if last >= 0 else 0.0
    uniform_f = rows[last] if last >= 0 else zero

    # exact maximal set for up to 3 hidden layers (neuron faults).
    maximal: tuple[tuple[int, ...], ...] | None = None
    n_tolerated: int | None = None
    total = math.prod(lim + 1 for lim in limits)
    if fault.site == "neuron" and net.L <= 3 and total <= max_enumerate:
        say(progress, f"{method}: enumerating {total} distributions")
        grids = np.meshgrid(*[np.arange(lim + 1) for lim in limits], indexing="ij")
        F = np.stack(grids, -1)
        good_grid = ok(F)
        mask = maximal_elements(good_grid)
        maximal = tuple(tuple(int(v) for v in idx) for idx in np.argwhere(mask))
        n_tolerated = int(good_grid.sum())
    elif fault.site == "neuron":
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
        n_tolerated,
    )


def _uniform_rows(
    net: Network | GraphNetwork, fault: Fault, limits: list[int]
) -> tuple[list[float], list[tuple[int, ...]]]:
    """Candidate uniform fractions p (ascending) and their distributions floor(p N_l) (capped)."""
    fracs: list[float] = []
    rows: list[tuple[int, ...]] = []
    for p, row in _uniform_candidates(net, fault, limits):
        fracs.append(p)
        rows.append(row)
    assert len(rows) >= 1 and rows[0] == tuple([0] * len(limits))
    return fracs, rows


def _uniform_candidates(
    net: Network | GraphNetwork, fault: Fault, limits: list[int]
) -> Iterator[tuple[float, tuple[int, ...]]]:
    """The candidates of :func:`_uniform_rows` one by one, ascending: every fraction
    :math:`p = k / N` (N a layer size, k = 0..N; p < 1 for neuron faults), first time its
    distribution :math:`\\min(\\lfloor p N_l \\rfloor, \\text{limit}_l)` appears (a merge of the sorted
    sequences k / N, so that a caller can stop early). Equal floats are equal fractions here (sizes
    below :math:`2^{26}`), which give the same distribution."""
    synapse = fault.site == "synapse"
    sizes = limits if synapse else net.widths

    def run(sz: int) -> Iterator[tuple[float, int, int]]:
        return ((k / sz, k, sz) for k in range(sz + 1))

    runs = [run(sz) for sz in sorted(set(sizes))]
    seen: set[tuple[int, ...]] = set()
    for p, k, sz in heapq.merge(*runs):
        if p >= 1.0 and not synapse:
            return
        row = tuple(min((k * m) // sz, lim) for m, lim in zip(sizes, limits, strict=True))
        if row in seen:
            continue
        seen.add(row)
        yield p, row


#: Consecutive interpolation probes without progress after which :func:`_last_within` takes one
#: blind step (gallop or bisection).
_STALL = 3


def _last_within(
    n: int,
    value: Callable[[int], float],
    budget: float,
    *,
    first: int = 1,
    coords: Sequence[float] | None = None,
    verdict: Callable[[int], float] | None = None,
) -> int:
    """Largest i in [0, n) with ``value(i) <= budget``, for a non-decreasing ``value``; -1 when
    ``value(0) > budget``.

    A bracketing search on the values, not only the verdicts. It keeps ``lo`` (``value(lo) <=
    budget``) and ``hi`` (``hi == n``, or ``value(hi) > budget``) and stops when ``hi == lo + 1``, so
    it returns exactly the boundary of the verdicts whatever the values are (when the verdicts are a
    prefix, that is the largest tolerated i); the values only choose where to probe next:

    * inverse quadratic interpolation of the budget through the three latest probes (``i`` as a
      quadratic in the value), when it lands strictly inside the bracket; else the secant through
      the two latest probes (it extrapolates beyond ``lo`` before any probe has failed); else the
      chord of the bracket; the estimate x is probed at the nearest integer (``coords`` default
      to i; with the uniform search's fractions, at the largest i with ``coords[i] <= x``),
      clipped into ``[lo + 1, hi - 1]``: when x is within half a unit of the root, that probe is
      the answer k or k + 1, the last two probes a search needs;
    * safeguard: after :data:`_STALL` consecutive probes that neither doubled ``lo`` (no probe has
      failed yet) nor halved the bracket nor halved the previous step, one blind step (``2 lo + 1``
      before a failure, the midpoint after); after ``2 * n.bit_length()`` probes, blind steps only.
      So at most ``4 * n.bit_length() + 3`` evaluations in all (one of them ``value(0)``), against
      about ``2 log2(answer + 2)`` for a blind gallop and bisection (``ok(1), ok(3), ok(7), ...``);
      on the smooth, roughly linear growth of a tight bound, 3 to 6.

    ``first`` is the first probe after 0 (a guess of the answer, clipped into ``[1, n - 1]``).
    ``verdict``, when given, replaces ``value`` for a probe that ends the search if it is within
    the budget (``i == hi - 1``): it returns ``value(i)``, or, when that is within the budget, any
    number between ``value(i)`` and the budget (:func:`~faultbound.bounds.graph_tight.graph_bound_within`
    skips the back-substitution then).
    """
    if n <= 0:
        return -1
    seen: dict[int, float] = {}
    order: list[int] = []  # probes, latest last (distinct)

    def probe(i: int, closing: bool) -> float:
        v = seen[i] = float(verdict(i) if closing and verdict is not None else value(i))
        order.append(i)
        return v

    if not probe(0, n == 1) <= budget:
        return -1
    lo, hi, failed = 0, n, False
    stall, last_step = 0, 0
    blind_after = 2 * n.bit_length()
    k: int | None = min(max(first, 1), n - 1)
    while hi - lo > 1:
        blind = False
        if k is None and stall < _STALL and len(order) < blind_after:
            k = _interpolate(seen, order, lo, hi, failed, budget, coords)
        if k is None:
            k = (lo + hi) // 2 if failed else min(2 * lo + 1, hi - 1)
            blind = True
        step = abs(k - order[-1])
        before_lo, before_hi, before_failed = lo, hi, failed
        if probe(k, k == hi - 1) <= budget:
            lo = k
        else:
            hi, failed = k, True
        if blind:
            stall = 0
        else:
            if before_failed:
                progress = 2 * (hi - lo) <= before_hi - before_lo
            else:
                progress = failed or lo >= 2 * before_lo + 1
            progress = progress or 2 * step <= last_step
            stall = 0 if progress else stall + 1
        last_step = step
        k = None
    return lo


def _interpolate(
    seen: dict[int, float],
    order: Sequence[int],
    lo: int,
    hi: int,
    failed: bool,
    budget: float,
    coords: Sequence[float] | None,
) -> int | None:
    """The next probe of :func:`_last_within` from the values seen (``None``: no usable model)."""

    def x_of(i: int) -> float:
        return float(i) if coords is None else float(coords[i])

    top = x_of(hi) if failed else math.inf
    x: float | None = None
    if len(order) >= 3:
        pts = order[-3:]
        xs = [x_of(i) for i in pts]
        vs = [seen[i] for i in pts]
        if all(math.isfinite(v) for v in vs) and len(set(vs)) == 3:
            est = 0.0
            for a in range(3):
                w = xs[a]
                for c in range(3):
                    if c != a:
                        w *= (budget - vs[c]) / (vs[a] - vs[c])
                est += w
            if math.isfinite(est) and x_of(lo) < est < top:
                x = est
    if x is None:
        chords = [(order[-2], order[-1])] if len(order) >= 2 else []
        if failed:
            chords.append((lo, hi))
        for a, c in chords:
            xa, xc, va, vc = x_of(a), x_of(c), seen[a], seen[c]
            if xa != xc and math.isfinite(va) and math.isfinite(vc) and (vc - va) / (xc - xa) > 0:
                x = xc + (budget - vc) * (xc - xa) / (vc - va)
                break
    if x is None or math.isnan(x):
        return None
    if coords is None:
        k = hi - 1 if x >= hi else (lo + 1 if x <= lo else math.floor(x + 0.5))
    else:
        k = bisect.bisect_right(coords, x) - 1
    return min(max(k, lo + 1), hi - 1)


def _tolerate_monotone(
    net: Network | GraphNetwork,
    eps: float,
    ep: EpsPrime,
    budget: float,
    fault: Fault,
    limits: list[int],
    notes: list[str],
    max_staircase: int = MAX_STAIRCASE,
    progress: Progress | None = None,
) -> ToleranceResult:
    """The tolerance search of ``method="tight"``: value-guided searches and a staircase walk."""
    value = _graph_value(net, fault, budget) if isinstance(net, GraphNetwork) else _layered_value(net, fault)
    n = len(limits)
    # distribution -> (bound, exact); not exact: a number between the bound and the budget
    cache: dict[tuple[int, ...], tuple[float, bool]] = {}

    def bound_of(f: Sequence[int], verdict_only: bool) -> float:
        """The bound of ``f``; with ``verdict_only``, possibly a larger number within the budget
        when the bound is within it (see :func:`_last_within`)."""
        key = tuple(int(v) for v in f)
        got = cache.get(key)
        if got is None or not (got[1] or verdict_only):
            got = cache[key] = value(list(key), verdict_only)
        return got[0]

    zero = tuple([0] * n)
    notes.append(
        "tight: every distribution at or below a reported one is certified (the monotone bound covers "
        "every set of at most f_l failures per layer)."
    )
    if not bound_of(zero, False) <= budget:
        notes.append("Even the failure-free network exceeds the budget: eps' > eps?")
        return ToleranceResult(eps, ep, budget, "tight", fault, zero, 0.0, zero, (), len(cache), tuple(notes), 0)

    def along(l: int, verdict_only: bool) -> Callable[[int], float]:
        return lambda v: bound_of(tuple(v if i == l else 0 for i in range(n)), verdict_only)

    found: list[int] = []
    for l in range(n):
        say(progress, f"tight: largest count of site {l + 1} of {n}")
        found.append(
            _last_within(limits[l] + 1, along(l, False), budget, first=_next_guess(found), verdict=along(l, True))
        )
    per_layer = tuple(found)

    # rows only grow, so the first row above a per-layer maximum is not tolerated (monotonicity)
    fracs, rows = [], []
    for p, row in _uniform_candidates(net, fault, limits):
        if any(r > m for r, m in zip(row, per_layer, strict=True)):
            break
        fracs.append(p)
        rows.append(row)
    n_rows = len(rows)
    say(progress, "tight: largest uniform fraction")
    guess = _uniform_guess(rows, n_rows, per_layer, cache, budget)
    last = _last_within(
        n_rows,
        lambda i: bound_of(rows[i], False),
        budget,
        first=guess,
        coords=fracs,
        verdict=lambda i: bound_of(rows[i], True),
    )
    uniform_p, uniform_f = fracs[last], rows[last]

    maximal: tuple[tuple[int, ...], ...] | None = None
    n_tolerated: int | None = None
    if fault.site == "neuron":
        cost = math.prod(per_layer[l] + 1 for l in range(n - 2)) * (
            sum(per_layer[-2:]) + 2 + (int(math.log2(per_layer[-1] + 1)) + 1 if n >= 2 else 0)
        )
        if cost <= max_staircase:
            say(progress, f"tight: maximal distributions (staircase walk, about {cost} evaluations)")
            H = _staircase(per_layer, bound_of, budget)
            maximal, n_tolerated = _maximal_from_h(H, per_layer)
        else:
            notes.append(
                f"Maximal distributions not computed: the staircase walk needs about {cost} evaluations "
                f"(limit {max_staircase})."
            )
    return ToleranceResult(
        eps,
        ep,
        budget,
        "tight",
        fault,
        per_layer,
        float(uniform_p),
        tuple(uniform_f),
        maximal,
        len(cache),
        tuple(notes),
        n_tolerated,
    )


def _next_guess(found: Sequence[int]) -> int:
    """First probe of the next layer's search: the answers so far extrapolated geometrically
    (:math:`a_{l-1}^2 / a_{l-2}`, the ratio clipped to [1/4, 4]), or the last answer, or 1. Only a
    guess: any first probe gives the same answer, a good one saves evaluations (on ResNet-18 the
    answers grow by a factor 1.4 to 3.2 from one site to the next, up to the last stage's limits)."""
    if not found or found[-1] <= 0:
        return 1
    if len(found) < 2 or found[-2] <= 0:
        return found[-1]
    ratio = min(max(found[-1] / found[-2], 0.25), 4.0)
    return max(1, round(found[-1] * ratio))


def _uniform_guess(
    rows: Sequence[tuple[int, ...]],
    n_rows: int,
    per_layer: Sequence[int],
    cache: dict[tuple[int, ...], tuple[float, bool]],
    budget: float,
) -> int:
    """A first probe for the uniform search: the largest row whose bound, guessed as the zero bound
    plus the sum over layers of the increase of that layer's count alone (read off the per-layer
    probes with exact values, linearly interpolated), is within the budget. Only a guess: the
    search is exact anyway."""
    n = len(per_layer)
    zero = tuple([0] * n)
    base = cache[zero][0]
    curves = []
    for l in range(n):
        pts = sorted(
            (f[l], v)
            for f, (v, exact) in cache.items()
            if (exact or f == zero) and all(c == 0 for i, c in enumerate(f) if i != l)
        )
        curves.append((np.array([p[0] for p in pts], dtype=np.float64), np.array([p[1] for p in pts])))

    def guessed(i: int) -> float:
        return base + sum(float(np.interp(c, xs, vs)) - base for c, (xs, vs) in zip(rows[i], curves, strict=True))

    first = bisect.bisect_right(range(n_rows), budget, key=guessed) - 1
    return max(first, 1)


def _layered_value(net: Network, fault: Fault) -> Callable[[list[int], bool], tuple[float, bool]]:
    """The monotone tight bound of a layered network as a function of the counts (prepared once),
    always exact."""
    plan = prepare(net, fault)
    return lambda f, verdict_only: (tight_value(plan, f, monotone=True), True)


def _graph_value(net: GraphNetwork, fault: Fault, budget: float) -> Callable[[list[int], bool], tuple[float, bool]]:
    """The graph tight bound over the domain as a function of the counts per site, and whether it
    is exact: with ``verdict_only``, the forward rule's bound when that is within ``budget``
    (:func:`~faultbound.bounds.graph_tight.graph_bound_within`: the back-substitution is skipped)."""
    lo, hi = net.domain.lo.unsqueeze(0), net.domain.hi.unsqueeze(0)

    def run(f: list[int], verdict_only: bool) -> tuple[float, bool]:
        if verdict_only:
            return graph_bound_within(net, fault, f, lo, hi, budget)
        return float(graph_propagate(net, fault, f, lo, hi).amax()), True

    return run


def _staircase(per_layer: Sequence[int], value: Callable[[Sequence[int], bool], float], budget: float) -> np.ndarray:
    """``H[p] = max{f_n : (p, f_n) tolerated}`` (-1 if none) over prefixes p of length n-1, where
    ``(f)`` is tolerated when ``value(f, verdict_only) <= budget`` (with ``verdict_only`` where only
    that comparison is used).

    Each axis only needs to go up to its per-layer maximum (a larger count is not tolerated even
    alone, hence by monotonicity never).
    """

    def ok(f: Sequence[int]) -> bool:
        return value(f, True) <= budget

    n = len(per_layer)
    if n == 1:
        return np.array(per_layer[0])
    shape = tuple(v + 1 for v in per_layer[:-1])
    H = np.full(shape, -1, dtype=np.int64)
    last_max = guess = per_layer[-1]
    for q in itertools.product(*[range(v + 1) for v in per_layer[:-2]]):
        if not value((*q, 0, 0), False) <= budget:  # exact: the search below interpolates from it
            continue

        # first column: a value-guided search from the previous prefix's answer; then walk down
        # as f_{n-1} grows.
        def first_column(v: int, q: tuple[int, ...] = q) -> float:
            return value((*q, 0, v), False)

        def first_verdict(v: int, q: tuple[int, ...] = q) -> float:
            return value((*q, 0, v), True)

        b = guess = _last_within(last_max + 1, first_column, budget, first=guess, verdict=first_verdict)
        for a in range(per_layer[-2] + 1):
            while b >= 0 and not ok((*q, a, b)):
                b -= 1
            if b < 0:
                break
            H[(*q, a)] = b
    return H


def _maximal_from_h(H: np.ndarray, per_layer: Sequence[int]) -> tuple[tuple[tuple[int, ...], ...], int]:
    """Maximal distributions and the number of tolerated ones from the staircase heights."""
    if H.ndim == 0:
        return ((int(H),),), int(H) + 1
    mask = H >= 0
    for ax in range(H.ndim):
        nxt = np.full_like(H, -1)
        src = [slice(None)] * H.ndim
        dst = [slice(None)] * H.ndim
        src[ax] = slice(1, None)
        dst[ax] = slice(None, -1)
        nxt[tuple(dst)] = H[tuple(src)]
        mask &= nxt < H
    maximal = tuple((*map(int, idx), int(H[tuple(idx)])) for idx in np.argwhere(mask))
    return maximal, int((H + 1).sum())


@dataclass(frozen=True)
class MethodComparison:
    """:func:`tolerate` with ``"paper"`` and ``"tight"`` side by side, and the gains of tight.

    ``per_layer_gain[l]`` = (tight f_l max + 1) / (paper f_l max + 1) (counts of tolerated values);
    ``uniform_gain`` = tight / paper uniform fraction (``inf`` when the paper tolerates none);
    ``tolerated_gain`` = number of tolerated distributions, tight / paper, when both are known.
    """

    paper: ToleranceResult
    tight: ToleranceResult

    @property
    def per_layer_gain(self) -> tuple[float, ...]:
        return tuple((t + 1) / (p + 1) for t, p in zip(self.tight.per_layer_max, self.paper.per_layer_max, strict=True))

    @property
    def uniform_gain(self) -> float:
        p, t = self.paper.uniform_fraction, self.tight.uniform_fraction
        if p == 0:
            return math.inf if t > 0 else 1.0
        return t / p

    @property
    def tolerated_gain(self) -> float | None:
        p, t = self.paper.n_tolerated, self.tight.n_tolerated
        if p is None or t is None or p == 0:
            return None
        return t / p

    def to_dict(self) -> dict[str, Any]:
        return {
            "paper": self.paper.to_dict(),
            "tight": self.tight.to_dict(),
            "per_layer_gain": list(self.per_layer_gain),
            "uniform_gain": None if math.isinf(self.uniform_gain) else self.uniform_gain,
            "tolerated_gain": self.tolerated_gain,
        }


def compare_methods(
    net: Network | GraphNetwork,
    eps: float,
    eps_prime: float | EpsPrime,
    fault: Fault | None = None,
) -> MethodComparison:
    """Run :func:`tolerate` with both methods (see :class:`MethodComparison`)."""
    return MethodComparison(
        tolerate(net, eps, eps_prime, fault, "paper"),
        tolerate(net, eps, eps_prime, fault, "tight"),
    )


def _targets(y: np.ndarray | torch.Tensor, n: int, n_out: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y, dtype=np.float64))
    if t.dim() == 1 and n_out == 1:
        t = t[:, None]
    if t.dim() != 2 or t.shape[0] != n or t.shape[1] != n_out:
        raise InvalidArgumentError(
            f"Expected targets of shape ({n}, {n_out}) (one value per output), but got {tuple(t.shape)}."
        )
    return t


def estimate_eps_prime(net: Network, X: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> EpsPrime:
    """:math:`\\max_i \\|F_{neu}(x_i) - y_i\\|_\\infty` over a data set: an estimate from below."""
    x = net.as_inputs(X)
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
