"""Precision planning with Theorem 5: the cheapest per-layer fixed-point formats within a budget.

Every neuron of hidden layer l stores its output in a format :math:`Q(i_l.b_l)` (see
:mod:`faultbound.apps.quantize`), so it is off by at most :math:`2^{-(b_l+1)}`. Optionally every
weight and bias of layer l is stored in :math:`Q(i^w_l.b^w_l)`; a weight off by at most
:math:`\\delta = 2^{-(b^w_l+1)}` moves a neuron's input sum by at most

.. math::

    |\\Delta s_j| \\le \\sum_i |\\Delta w_{ji}|\\,|\\tilde y_i| + |\\Delta b_j|
        \\le \\delta\\,(R_l \\tilde Y_{l-1} + 1) =: \\delta\\, S_l,

where :math:`R_l` is the fan-in and :math:`\\tilde Y_{l-1}` bounds the stored values of layer l-1.
Through a K-Lipschitz activation that is at most :math:`K_l \\delta S_l` on the neuron's output, so
each neuron of layer l errs by at most

.. math::

    \\lambda_l = 2^{-(b_l+1)} + K_l\\, 2^{-(b^w_l+1)} S_l ,

and the output error is certified by Theorem 5 (:func:`faultbound.bound` with
:class:`~faultbound.faults.Precision`) plus :math:`2^{-(b^w_{L+1}+1)} S_{L+1}` for the output weights.

**Per-neuron errors.** The plan's certificate is computed per neuron (:func:`_build`): the weight
errors are the actual differences between the rounded and the true weights, known once the formats
are chosen, and each neuron's range is its clean interval over the domain widened by the deviation
its own row can receive, :math:`K_l((|W|u)_j + \\omega_j)`. The bounds above with the layer maxima
(:math:`\\delta S_l`, :math:`w_m N u`) are the a-priori model.

**The optimisation.** Two steps, for the objective :math:`\\sum_v n_v b_v` (one variable per hidden
layer for the outputs, with :math:`n_v = N_l`; one per layer for the weights, with :math:`n_v` =
weights + biases):

1. Under the a-priori model the paper bound is linear in :math:`2^{-(b_v+1)}`:
   :math:`\\min \\sum_v n_v b_v` s.t. :math:`\\sum_v a_v 2^{-(b_v+1)} \\le \\epsilon - \\epsilon'`
   (:math:`a_v = c_l` for the outputs, :math:`c_l K_l S_l` for the weights, :math:`c_l` the bound at
   :math:`\\lambda = e_l`), solved exactly by :func:`solve_bits`. Its optimum is feasible for every
   certificate below.
2. The plan's own certificate (paper or tight, per-neuron errors) is non-increasing in every
   :math:`b_v`, so :func:`solve_monotone` finds its exact optimum by branch and bound, starting
   from step 1's plan. The result says ``optimal`` with the lower bound equal to the objective;
   past an evaluation limit it reports the gap to a proven lower bound.

The integer bits of a plan cover every value it can produce and are counted in ``memory_bits``, but
are not part of the objective.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, cast

import numpy as np
import torch

from faultbound.apps.quantize import FixedPoint, _fresh, _simple_weighted, fit_format, quantized_forward
from faultbound.bounds.api import Method, bound, check_eps, check_graph_method
from faultbound.bounds.paper import layer_stats
from faultbound.errors import FaultboundError, InvalidArgumentError
from faultbound.failures import AnyNetwork
from faultbound.faults import Precision
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork
from faultbound.progress import Progress, say

__all__ = [
    "PrecisionPlan",
    "plan_precision",
    "measure_plan",
    "search_plan",
    "solve_bits",
    "solve_monotone",
    "certify_plan",
    "PlanMethod",
    "samples_corners_and_data",
    "probe_description",
    "ALL_CORNERS_MAX_D",
]

#: Up to this many inputs every corner of the domain is probed; above it, 256 random corners.
ALL_CORNERS_MAX_D = 10

PlanMethod = Literal["auto", "paper", "tight"]

#: Largest number of branch-and-bound nodes before the solver stops and reports its gap.
NODE_LIMIT = 2_000_000
#: Largest number of certificate evaluations before :func:`solve_monotone` stops and reports its gap.
EVAL_LIMIT = 2_000
#: The same on a graph network above :data:`~faultbound.measure.search.LARGE_NETWORK_MACS` multiply-adds
#: per input, where one evaluation of the tight bound takes seconds (the CIFAR ResNet-18).
LARGE_GRAPH_EVAL_LIMIT = 64
#: Branch-and-bound nodes of the linearised first step on a graph network, whose linearisation only
#: seeds the exact search of the certificate itself (2e6 nodes over ResNet-18's 17 sites took minutes).
GRAPH_LINEAR_NODE_LIMIT = 20_000


@dataclass(frozen=True)
class PrecisionPlan:
    """A precision plan and its certificate.

    Attributes:
        budget: :math:`\\epsilon - \\epsilon'`, the output error allowed.
        method: the bound that certifies ``certified`` (``"paper"`` or ``"tight"``).
        certified: the certified output error of the plan (<= budget).
        certified_paper: the paper bound of the same plan (``None`` on a graph network, where the
            paper's Theorem 2 does not apply).
        act_formats: one format per hidden layer (per fault site on a graph network).
        weight_formats: one per layer 1..L+1, or ``None`` when weights stay in float32.
        lambdas: per-neuron output error :math:`\\lambda_l` per hidden layer.
        output_weight_error: the output weights' share of ``certified``.
        memory_bits: stored bits of the plan (activations, plus weights when planned).
        float32_bits: the same values stored as float32.
        optimal: True when the plan provably minimises ``frac_bits_cost`` among the plans whose
            ``method`` certificate fits the budget.
        frac_bits_cost: :math:`\\sum_v n_v b_v`, the objective.
        lower_bound: a proven lower bound on that minimum (equal to the objective when optimal).
    """

    budget: float
    method: str
    certified: float
    certified_paper: float | None
    act_formats: tuple[FixedPoint, ...]
    weight_formats: tuple[FixedPoint, ...] | None
    lambdas: tuple[float, ...]
    output_weight_error: float
    memory_bits: int
    float32_bits: int
    optimal: bool
    frac_bits_cost: int
    lower_bound: int
    nodes: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def memory_saved(self) -> float:
        """Fraction of the float32 memory saved."""
        return 1.0 - self.memory_bits / self.float32_bits if self.float32_bits else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "method": self.method,
            "certified": self.certified,
            "certified_paper": self.certified_paper,
            "activation_formats": [f.to_dict() for f in self.act_formats],
            "weight_formats": None if self.weight_formats is None else [f.to_dict() for f in self.weight_formats],
            "lambdas": list(self.lambdas),
            "output_weight_error": self.output_weight_error,
            "memory_bits": self.memory_bits,
            "float32_bits": self.float32_bits,
            "memory_saved": self.memory_saved,
            "optimal": self.optimal,
            "objective_frac_bits": self.frac_bits_cost,
            "objective_lower_bound": self.lower_bound,
            "solver_nodes": self.nodes,
            "notes": list(self.notes),
        }


def _least_bits(a: float, budget: float) -> int:
    """Smallest b >= 0 with :math:`a\\,2^{-(b+1)} \\le` budget."""
    if a <= 0:
        return 0
    if budget <= 0:
        return 10**9
    b = max(0, math.ceil(math.log2(a / budget) - 1))
    while b > 0 and a * 2.0 ** (-b) <= budget:  # b - 1 fits too (floating guard)
        b -= 1
    while a * 2.0 ** (-(b + 1)) > budget:
        b += 1
    return b


def solve_bits(
    costs: Sequence[float],
    coefs: Sequence[float],
    budget: float,
    lo: Sequence[int],
    hi: int,
    node_limit: int = NODE_LIMIT,
) -> tuple[list[int], bool, int, int]:
    """Exact :math:`\\min \\sum_v n_v b_v` s.t. :math:`\\sum_v a_v 2^{-(b_v+1)} \\le` budget.

    Depth-first branch and bound over the variables in order of decreasing cost. A node's lower
    bound adds, for every variable still free, :math:`n_v` times the least bits it needs to fit the
    budget left. Returns ``(bits, optimal, lower_bound, nodes)``; ``optimal`` is False only when
    ``node_limit`` was reached, and then ``lower_bound`` is the weaker root bound.

    Raises:
        InvalidArgumentError: when even ``hi`` bits everywhere exceed the budget.
    """
    V = len(costs)
    n = [float(c) for c in costs]
    a = [float(c) for c in coefs]
    low = [int(v) for v in lo]
    exact_budget = Fraction(budget)

    def fits(bits: Sequence[int]) -> bool:
        """The constraint in exact rational arithmetic (a float sum can round 1 + 1e-38 down to 1)."""
        return sum((Fraction(a[v]) / 2 ** (bits[v] + 1) for v in range(V)), Fraction(0)) <= exact_budget

    if not fits([hi] * V):
        raise InvalidArgumentError(
            f"No plan with at most {hi} fractional bits fits the budget {budget:.3g}; raise the budget "
            "or max_frac_bits."
        )
    order = sorted(range(V), key=lambda v: -n[v])

    # A first feasible plan: split the budget evenly over the variables that need it.
    active = max(1, sum(1 for v in range(V) if a[v] > 0))
    best = [max(low[v], min(hi, _least_bits(a[v], budget / active))) for v in range(V)]
    best_cost = sum(n[v] * best[v] for v in range(V)) if fits(best) else math.inf
    root_lb = int(round(sum(n[v] * low[v] for v in range(V))))
    nodes = 0
    stopped = False
    # suffix sums of the error with the largest bits, for feasibility of the rest
    tail_min_err = [0.0] * (V + 1)
    for k in range(V - 1, -1, -1):
        v = order[k]
        tail_min_err[k] = tail_min_err[k + 1] + a[v] * 2.0 ** (-(hi + 1))
    chosen = [0] * V

    def lb_rest(k: int, left: float) -> float:
        total = 0.0
        for kk in range(k, V):
            v = order[kk]
            total += n[v] * max(low[v], _least_bits(a[v], left - tail_min_err[kk + 1]))
        return total

    def dfs(k: int, left: float, cost: float) -> None:
        nonlocal best, best_cost, nodes, stopped
        if stopped:
            return
        nodes += 1
        if nodes > node_limit:
            stopped = True
            return
        if k == V:
            if cost < best_cost - 1e-9 and fits(chosen):
                best_cost = cost
                best = list(chosen)
            return
        v = order[k]
        b0 = max(low[v], _least_bits(a[v], left - tail_min_err[k + 1]))
        for b in range(b0, hi + 1):
            err = a[v] * 2.0 ** (-(b + 1))
            rest = left - err
            if rest < tail_min_err[k + 1]:
                continue
            c = cost + n[v] * b
            if c + lb_rest(k + 1, rest) >= best_cost - 1e-9:
                if a[v] == 0 or n[v] > 0 and c >= best_cost:
                    break
                continue
            chosen[v] = b
            dfs(k + 1, rest, c)
            if a[v] == 0:
                break

    # The search runs in floats against a budget relaxed by 1e-12 (so rounding never prunes a plan
    # that fits exactly); every plan it keeps is checked exactly (`fits`).
    dfs(0, budget * (1 + 1e-12) + 1e-300, 0.0)
    if best_cost == math.inf:  # stopped by the node limit before any plan: [hi] * V fits
        best = [hi] * V
    return best, not stopped, (int(round(best_cost)) if not stopped else root_lb), nodes


def _float32_words(net: AnyNetwork, weights: bool) -> int:
    words = sum(net.widths)
    if weights:
        words += net.n_params
    return 32 * words


def plan_precision(
    net: AnyNetwork,
    budget: float | None = None,
    eps: float | None = None,
    eps_prime: float | None = None,
    weights: bool = False,
    method: PlanMethod = "auto",
    max_frac_bits: int = 40,
    node_limit: int = NODE_LIMIT,
    eval_limit: int | None = None,
    progress: Progress | None = None,
) -> PrecisionPlan:
    """The cheapest per-layer fixed-point formats whose certified output error fits the budget.

    Args:
        net: the network (its domain bounds the inputs). On a graph network (no layered view) one
            format per fault site is planned, certified by the tight bound over the graph (see
            :func:`_plan_sites`); ``weights`` and ``method="paper"`` are refused there.
        budget: the allowed output error; or give ``eps`` and ``eps_prime`` (budget = eps - eps').
        weights: also plan the weights' formats (dense or single-convolution layers).
        method: the certificate to optimise for: ``"paper"``, ``"tight"`` or ``"auto"`` (tight when
            registered); the plan is its exact optimum (or reports the gap, see ``eval_limit``).
        eval_limit: certificate evaluations before the branch and bound stops with a gap (default
            :data:`EVAL_LIMIT`; :data:`LARGE_GRAPH_EVAL_LIMIT` on a graph network above
            :data:`~faultbound.measure.search.LARGE_NETWORK_MACS` multiply-adds per input).
        max_frac_bits: the most fractional bits a format may have.
        progress: called with a message at each stage and at each certificate evaluation of the
            branch and bound; see :mod:`faultbound.progress`.

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1)))
        >>> plan = plan_precision(net, budget=0.01, method="paper")
        >>> plan.certified <= 0.01
        True
    """
    if budget is None:
        if eps is None or eps_prime is None:
            raise InvalidArgumentError("Expected `budget`, or both `eps` and `eps_prime`.")
        check_eps(eps, eps_prime)
        budget = eps - eps_prime
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise InvalidArgumentError(f"Expected a finite budget > 0 (eps > eps'), but got {budget}.")
    if not (isinstance(max_frac_bits, int) and 0 <= max_frac_bits <= 60):
        raise InvalidArgumentError(f"Expected max_frac_bits in 0..60, but got {max_frac_bits}.")
    if method not in ("auto", "paper", "tight"):
        raise InvalidArgumentError(f"Expected `method` auto, paper or tight, but got {method!r}.")
    net.require_bounded_values()
    if eval_limit is None:
        from faultbound.measure.search import LARGE_NETWORK_MACS

        large = net.layers is None and sum(cast(GraphNetwork, net).node_macs) > LARGE_NETWORK_MACS
        eval_limit = LARGE_GRAPH_EVAL_LIMIT if large else EVAL_LIMIT
    if net.layers is None:
        return _plan_sites(
            cast(GraphNetwork, net), budget, weights, method, max_frac_bits, node_limit, eval_limit, progress
        )
    net = cast(Network, net)
    L = net.L
    stats = layer_stats(net)
    notes: list[str] = []
    say(progress, f"paper-bound coefficients of {L} layers")
    # c_l: the paper bound is linear in lambda; its coefficients are the bound at unit vectors.
    coef = []
    for l in range(L):
        unit = [0.0] * L
        unit[l] = 1.0
        coef.append(bound(net, fault=Precision(unit), method="paper").value)
    inter = net.intervals()
    # Forward a-priori pass: least bits per variable, integer bits, S_l, stored-value bounds.
    y_stored = net.value_bound(0)  # inputs are exact
    u_max = 0.0
    act_lo: list[int] = []
    w_lo: list[int] = []
    S: list[float] = []
    w_counts: list[int] = []
    for idx, layer in enumerate(net.layers):
        s_l = float(stats.R[idx]) * y_stored + 1.0
        S.append(s_l)
        dw_max = 0.0
        if weights:
            op = _simple_weighted(layer)
            a_w = coef[idx] * float(stats.K[idx]) * s_l if idx < L else s_l
            bmin = _least_bits(a_w, budget)
            w_lo.append(bmin)
            w_counts.append(int(op.weight.numel() + op.bias.numel()))
            dw_max = s_l * 2.0 ** (-(bmin + 1))
        if idx == L:
            break
        act = layer.activation
        assert act is not None
        d_max = float(stats.K[idx]) * (
            float(stats.w[idx]) * float(min(stats.N_prev[idx], stats.R[idx])) * u_max + dw_max
        )
        bmin_a = _least_bits(coef[idx], budget)
        act_lo.append(bmin_a)
        lo = max(float(inter[idx].y_lo.min()) - d_max, act.lo)
        hi = min(float(inter[idx].y_hi.max()) + d_max, act.hi)
        b_fit = min(bmin_a, max_frac_bits)
        fmt = fit_format(lo, hi, b_fit, b_fit)
        y_stored = min(max(abs(lo), abs(hi)) + 2.0 ** (-(b_fit + 1)), fmt.max_abs)
        u_max = d_max + 2.0 ** (-(bmin_a + 1))
    too_many = [v for v in act_lo + w_lo if v > max_frac_bits]
    if too_many:
        raise InvalidArgumentError(
            f"The budget {budget:.3g} needs more than max_frac_bits = {max_frac_bits} fractional bits "
            "in some layer; raise the budget or max_frac_bits."
        )
    costs: list[float] = [float(w) for w in net.widths]
    coefs: list[float] = list(coef)
    lows = list(act_lo)
    if weights:
        costs += [float(c) for c in w_counts]
        coefs += [coef[l] * float(stats.K[l]) * S[l] for l in range(L)] + [S[L]]
        lows += w_lo
    bits, _, _, nodes = solve_bits(costs, coefs, budget, lows, max_frac_bits, node_limit)

    w_mags = []
    if weights:
        for layer in net.layers:
            op = _simple_weighted(layer)
            w_mags.append(float(max(op.weight.abs().max(), op.bias.abs().max() if op.bias.numel() else 0.0)))

    def build(bv: Sequence[int]) -> tuple[list[FixedPoint], list[FixedPoint] | None, list[float], float]:
        """The plan's formats, per-layer errors and output-weight share, per neuron in one forward pass."""
        return _build(net, bv, weights, w_mags, stats, inter)

    def certify(bv: Sequence[int], m: Method) -> float:
        _, _, lam, out_w = build(bv)
        return bound(net, fault=Precision(lam), method=m).value + out_w

    want_tight = method in ("tight", "auto")
    used: Method = "paper"
    if want_tight:
        try:
            certify(bits, "tight")
            used = "tight"
        except (FaultboundError, NotImplementedError) as e:
            notes.append(f"The tight bound could not certify precision ({e}); the paper bound is used.")
    paper_linear = list(bits)
    bits, optimal, lower, evals = solve_monotone(
        _counted(lambda bv: certify(bv, used), progress, eval_limit),
        costs,
        budget,
        max_frac_bits,
        incumbent=bits,
        eval_limit=eval_limit,
    )
    nodes += evals
    certified = certify(bits, used)
    certified_paper = certify(bits, "paper") if used != "paper" else certified
    if optimal:
        notes.append(
            f"Plan: the exact optimum under the {used} bound of its own per-neuron errors (branch and bound over "
            f"the fractional bits, {evals} certificate evaluations)."
        )
    else:
        notes.append(
            f"Branch and bound stopped after {evals} certificate evaluations: the objective is within "
            f"{sum(c * b for c, b in zip(costs, bits, strict=True)) - lower:.0f} fractional bits of the optimum "
            f"under the {used} bound."
        )
    if paper_linear != list(bits):
        notes.append(
            "The a-priori linear optimum (layer-wide ranges and weight errors) was "
            f"{int(round(sum(c * b for c, b in zip(costs, paper_linear, strict=True))))} fractional bits."
        )
    afs, wfs, lam, out_w = build(bits)
    mem = sum(n * f.word_bits for n, f in zip(net.widths, afs, strict=True))
    if wfs is not None:
        mem += sum(c * f.word_bits for c, f in zip(w_counts, wfs, strict=True))
    cost = int(round(sum(c * b for c, b in zip(costs, bits, strict=True))))
    if certified > budget * (1 + 1e-12):  # pragma: no cover - the solver only returns feasible plans
        raise InvalidArgumentError(f"Internal error: plan certifies {certified} > budget {budget}.")
    return PrecisionPlan(
        budget=float(budget),
        method=used,
        certified=float(certified),
        certified_paper=float(certified_paper),
        act_formats=tuple(afs),
        weight_formats=None if wfs is None else tuple(wfs),
        lambdas=tuple(lam),
        output_weight_error=float(out_w),
        memory_bits=int(mem),
        float32_bits=_float32_words(net, weights),
        optimal=bool(optimal),
        frac_bits_cost=cost,
        lower_bound=min(lower, cost),
        nodes=nodes,
        notes=tuple(notes),
    )


def _counted(
    fits: Callable[[Sequence[int]], float], progress: Progress | None, eval_limit: int
) -> Callable[[Sequence[int]], float]:
    """``fits``, saying to ``progress`` how many certificate evaluations the branch and bound made."""
    if progress is None:
        return fits
    count = 0

    def counted(bv: Sequence[int]) -> float:
        nonlocal count
        count += 1
        say(progress, f"branch and bound: certificate evaluation {count} (limit {eval_limit})")
        return fits(bv)

    return counted


def _plan_sites(
    net: GraphNetwork,
    budget: float,
    weights: bool,
    method: PlanMethod,
    max_frac_bits: int,
    node_limit: int,
    eval_limit: int,
    progress: Progress | None = None,
) -> PrecisionPlan:
    """:func:`plan_precision` on a graph network: one fixed-point format per fault site.

    Every unit of site s stores its output in :math:`Q(i_s.b_s)`, so it is off by at most
    :math:`\\lambda_s = 2^{-(b_s+1)}` as long as the format covers every value the unit can take;
    the plan is certified by the tight bound over the graph with
    :class:`~faultbound.faults.Precision` :math:`(\\lambda_s)` (Theorem 5 read per site). The integer
    bits of site s cover its clean box over the domain widened by the deviation bound that the same
    propagation gives at s (:func:`~faultbound.bounds.graph_tight.graph_deviations`, which holds
    for every input of the domain while every site errs by at most its :math:`\\lambda`), clipped to
    the activation's range: no stored value saturates, so :math:`\\lambda_s` is the rounding error.

    The fractional bits are optimised as on layered networks: :func:`solve_bits` on the bound's
    linearisation around :math:`\\lambda = \\text{budget}` (each site's coefficient is the forward
    rule's bound with only that site erring, divided by its error) gives a first plan, and :func:`solve_monotone`
    the exact optimum of the certificate itself (or its gap past ``eval_limit`` evaluations).
    Weights are not planned (their formats need a layer's single weighted operator).
    """
    from faultbound.bounds.graph_tight import graph_bound_within, graph_deviations, graph_propagate

    if weights:
        raise InvalidArgumentError(
            "Weight formats are planned on layered networks only; on a graph network plan the fault sites' "
            "formats (without weights / --weights)."
        )
    check_graph_method(net, method)  # "paper" is refused on graphs in one line
    S = net.L
    if S == 0:
        raise InvalidArgumentError("Expected a network with at least one fault site to plan formats for.")

    lo0, hi0 = net.domain.lo.unsqueeze(0), net.domain.hi.unsqueeze(0)

    def lam_of(bv: Sequence[int]) -> list[float]:
        return [2.0 ** (-(int(b) + 1)) for b in bv]

    def tight(lam: Sequence[float], linear: bool = True) -> float:
        """The tight bound (``bound(net, fault=Precision(lam), method="tight").value``, without
        its per-site parts); ``linear=False``: its forward rule alone (an upper bound of it)."""
        return float(graph_propagate(net, Precision(lam), None, lo0, hi0, linear=linear).amax())

    def fits_value(bv: Sequence[int]) -> float:
        """A number that is within the budget exactly when the plan's tight bound is (the
        back-substitution only runs when the forward rule alone exceeds the budget)."""
        return graph_bound_within(net, Precision(lam_of(bv)), None, lo0, hi0, budget)[0]

    coef = []
    for s in range(S):
        say(progress, f"coefficient of fault site {s + 1} of {S}")
        one = [0.0] * S
        one[s] = budget
        coef.append(tight(one, linear=False) / budget)
    act_lo = [_least_bits(c, budget) for c in coef]
    if any(v > max_frac_bits for v in act_lo):
        raise InvalidArgumentError(
            f"The budget {budget:.3g} needs more than max_frac_bits = {max_frac_bits} fractional bits "
            "at some fault site; raise the budget or max_frac_bits."
        )
    costs = [float(w) for w in net.widths]
    bits, _, _, nodes = solve_bits(costs, coef, budget, act_lo, max_frac_bits,
                                   min(node_limit, GRAPH_LINEAR_NODE_LIMIT))
    bits, optimal, lower, evals = solve_monotone(_counted(fits_value, progress, eval_limit), costs, budget,
                                                 max_frac_bits, incumbent=bits, eval_limit=eval_limit)
    nodes += evals
    lam = lam_of(bits)
    certified = tight(lam)
    boxes = net.intervals()
    devs = graph_deviations(net, Precision(lam), None, net.domain.lo.unsqueeze(0), net.domain.hi.unsqueeze(0))
    afs: list[FixedPoint] = []
    for site, b in zip(net.sites, bits, strict=True):
        box_lo, box_hi = boxes[site.node]
        d = devs[site.node].total()
        lo, hi = float((box_lo - d).min()), float((box_hi + d).max())
        if site.activation is not None:
            lo, hi = max(lo, site.activation.lo), min(hi, site.activation.hi)
        afs.append(fit_format(lo, hi, int(b)))
    cost = int(round(sum(c * b for c, b in zip(costs, bits, strict=True))))
    notes = [
        "Graph network: one format per fault site, certified by the tight bound over the graph (the paper's "
        "bound and weight formats need a layered network).",
        (f"Plan: the exact optimum under the tight bound ({evals} certificate evaluations)." if optimal else
         f"Branch and bound stopped after {evals} certificate evaluations: the objective is within "
         f"{cost - lower:.0f} fractional bits of the optimum under the tight bound."),
    ]
    if certified > budget * (1 + 1e-12):  # pragma: no cover - the solver only returns feasible plans
        raise InvalidArgumentError(f"Internal error: plan certifies {certified} > budget {budget}.")
    return PrecisionPlan(
        budget=float(budget),
        method="tight",
        certified=float(certified),
        certified_paper=None,
        act_formats=tuple(afs),
        weight_formats=None,
        lambdas=tuple(lam),
        output_weight_error=0.0,
        memory_bits=int(sum(n * f.word_bits for n, f in zip(net.widths, afs, strict=True))),
        float32_bits=_float32_words(net, False),
        optimal=bool(optimal),
        frac_bits_cost=cost,
        lower_bound=min(lower, cost),
        nodes=nodes,
        notes=tuple(notes),
    )


def _build(
    net: Network,
    bv: Sequence[int],
    weights: bool,
    w_mags: Sequence[float],
    stats: Any,
    inter: Sequence[Any],
) -> tuple[list[FixedPoint], list[FixedPoint] | None, list[float], float]:
    """Formats, per-layer :math:`\\lambda_l` and the output weights' share of the plan ``bv``.

    Per neuron, in one forward pass (``u_i`` bounds how far the stored value of neuron i can be
    from the clean one, ``Y_i`` the stored value itself; the inputs are exact):

    * weight rounding is the actual one: with :math:`\\Delta W, \\Delta b` the differences between
      the rounded and the true weights and biases, neuron j's input sum moves by at most
      :math:`\\omega_j = (|\\Delta W|\\,Y)_j + |\\Delta b_j|`;
    * the deviation of its clean value is at most :math:`d_j = K_l ((|W| u)_j + \\omega_j)`, and its
      range :math:`[\\underline y_j - d_j, \\overline y_j + d_j]` (clipped to the activation's range)
      sets the integer bits of the layer's format, which covers every neuron of the layer;
    * :math:`\\lambda_l = 2^{-(b_l+1)} + K_l \\max_j \\omega_j` and, for the output layer, the share
      :math:`\\max_j \\omega_j`.
    """
    L = net.L
    afs: list[FixedPoint] = []
    wfs: list[FixedPoint] = []
    lam: list[float] = []
    lo0, hi0 = net.domain.lo.flatten(), net.domain.hi.flatten()
    y_st = torch.maximum(lo0.abs(), hi0.abs()).to(torch.float64)
    u = torch.zeros_like(y_st)
    out_w = 0.0
    for idx, layer in enumerate(net.layers):
        omega = torch.zeros(layer.width, dtype=torch.float64)
        if weights:
            op = _simple_weighted(layer)
            wf = fit_format(-w_mags[idx], w_mags[idx], int(bv[L + idx]))
            wfs.append(wf)
            delta = _fresh(op, (wf.quantize(op.weight) - op.weight).abs(), (wf.quantize(op.bias) - op.bias).abs())
            ops = tuple(delta if o is op else o for o in layer.ops)
            y_in = y_st.reshape(1, *layer.in_shape)
            for o in ops:  # nonnegative weights on nonnegative values: |dW| Y + |db| exactly
                y_in = o.forward(y_in)
            omega = y_in.reshape(-1)
        if idx == L:
            out_w = float(omega.max())
            break
        act = layer.activation
        assert act is not None
        k = float(stats.K[idx])
        spread = layer.abs_linear(u.reshape(1, *layer.in_shape)).reshape(-1) if bool((u > 0).any()) else 0.0 * omega
        d = k * (spread + omega)
        lo = torch.clamp(inter[idx].y_lo.reshape(-1) - d, min=act.lo)
        hi = torch.clamp(inter[idx].y_hi.reshape(-1) + d, max=act.hi)
        af = fit_format(float(lo.min()), float(hi.max()), int(bv[idx]))
        afs.append(af)
        lam.append(af.error + k * float(omega.max()))
        y_st = torch.clamp(torch.maximum(lo.abs(), hi.abs()) + af.error, max=af.max_abs)
        u = d + af.error
    return afs, (wfs if weights else None), lam, out_w


def certify_plan(
    net: Network, bits: Sequence[int], weights: bool = False, method: Method = "paper"
) -> float:
    """The certified output error of the plan with fractional bits ``bits``.

    ``bits`` holds :math:`b_1, \\dots, b_L` for the hidden outputs, then with ``weights``
    :math:`b^w_1, \\dots, b^w_{L+1}` for the weights; the formats and errors are those of
    :func:`plan_precision` (see :func:`_build`), certified by ``bound(method=method)``.
    """
    net.require_bounded_values()
    n = net.L + (net.L + 1 if weights else 0)
    if len(bits) != n:
        raise InvalidArgumentError(f"Expected {n} fractional bit counts, but got {len(bits)}.")
    w_mags = []
    if weights:
        for layer in net.layers:
            op = _simple_weighted(layer)
            w_mags.append(float(max(op.weight.abs().max(), op.bias.abs().max() if op.bias.numel() else 0.0)))
    _, _, lam, out_w = _build(net, bits, weights, w_mags, layer_stats(net), net.intervals())
    return bound(net, fault=Precision(lam), method=method).value + out_w


def solve_monotone(
    cert: Callable[[Sequence[int]], float],
    costs: Sequence[float],
    budget: float,
    hi: int,
    incumbent: Sequence[int] | None = None,
    eval_limit: int = EVAL_LIMIT,
) -> tuple[list[int], bool, int, int]:
    """Exact :math:`\\min \\sum_v n_v b_v` s.t. ``cert(b)`` :math:`\\le` budget, for a ``cert`` that is
    non-increasing in every :math:`b_v \\in \\{0, \\dots, hi\\}`.

    Depth-first branch and bound over the variables in order of decreasing cost:

    * :math:`b^{min}_v`, the least :math:`b_v` with ``cert`` within budget when every other variable
      has ``hi`` bits, bounds every feasible plan from below (monotonicity), and so does
      :math:`\\sum_v n_v b^{min}_v` the objective;
    * a partial plan is extended only while it is feasible with the rest at ``hi`` bits, and while
      its cost plus :math:`\\sum n_v b^{min}_v` over the rest is below the best plan found;
    * the last variable takes the least feasible value, found by bisection.

    Returns ``(bits, optimal, lower_bound, evaluations)``; past ``eval_limit`` evaluations of
    ``cert`` the search stops, ``optimal`` is False and ``lower_bound`` is the root bound.

    Raises:
        InvalidArgumentError: when even ``hi`` bits everywhere exceed the budget.
    """
    V = len(costs)
    cache: dict[tuple[int, ...], float] = {}
    evals = 0

    class _Stop(Exception):
        pass

    def c(bv: Sequence[int]) -> float:
        nonlocal evals
        key = tuple(int(b) for b in bv)
        if key not in cache:
            evals += 1
            if evals > eval_limit:
                raise _Stop
            cache[key] = cert(key)
        return cache[key]

    def fits(bv: Sequence[int]) -> bool:
        return c(bv) <= budget

    top = [hi] * V
    if not fits(top):
        raise InvalidArgumentError(
            f"No plan with at most {hi} fractional bits fits the budget {budget:.3g}; raise the budget "
            "or max_frac_bits."
        )

    def least(v: int, base: list[int], lo: int) -> int:
        """Least b in [lo, hi] with ``base`` (b at v) within budget; ``base`` with hi at v must fit."""
        a, b = lo, hi
        while a < b:
            mid = (a + b) // 2
            trial = list(base)
            trial[v] = mid
            if fits(trial):
                b = mid
            else:
                a = mid + 1
        return a

    def cost(bv: Sequence[int]) -> float:
        return float(sum(n * b for n, b in zip(costs, bv, strict=True)))

    best: list[int] = list(incumbent) if incumbent is not None else list(top)
    root_lb = 0
    try:
        if not fits(best):
            best = list(top)
        b_min = [least(v, top, 0) for v in range(V)]
        root_lb = int(round(cost(b_min)))
        best_cost = cost(best)
        order = sorted(range(V), key=lambda v: -costs[v])

        def dfs(k: int, partial: list[int]) -> None:
            nonlocal best, best_cost
            v = order[k]
            rest_lb = sum(costs[u] * b_min[u] for u in order[k + 1 :])
            here = cost([partial[u] if u in order[:k] else 0 for u in range(V)])
            if k == V - 1:
                b = least(v, partial, b_min[v])
                trial = list(partial)
                trial[v] = b
                if here + costs[v] * b < best_cost - 1e-9:
                    best, best_cost = trial, here + costs[v] * b
                return
            for b in range(b_min[v], hi + 1):
                if here + costs[v] * b + rest_lb >= best_cost - 1e-9:
                    break
                trial = list(partial)
                trial[v] = b
                if not fits(trial):  # the rest still at hi bits
                    continue
                dfs(k + 1, trial)

        dfs(0, list(top))
    except _Stop:
        return best, False, root_lb, evals
    return best, True, int(round(best_cost)), evals


def samples_corners_and_data(
    net: AnyNetwork, X: torch.Tensor | np.ndarray | None = None, n_samples: int = 2048, seed: int = 0
) -> torch.Tensor:
    """Points of the domain to measure on: ``n_samples`` uniform samples, the domain corners (all up
    to :data:`ALL_CORNERS_MAX_D` inputs, else 256 random ones) and the data ``X``.

    Data outside the domain is refused, never clipped: the plan is certified for the domain only, so
    a clipped point would measure a different input than the one passed (widen the domain first,
    e.g. ``net.with_domain(...)``, or the CLI's ``--domain-from-data``).
    """
    g = torch.Generator().manual_seed(seed)
    pts = [net.domain.sample(n_samples, g)]
    lo, hi = net.domain.lo, net.domain.hi
    d = lo.numel()
    if d <= ALL_CORNERS_MAX_D:
        idx = torch.arange(2**d)
        bits = ((idx[:, None] >> torch.arange(d)) & 1).to(torch.float64)
    else:
        bits = (torch.rand((256, d), generator=g, dtype=torch.float64) < 0.5).to(torch.float64)
    pts.append(lo.flatten() + bits * (hi - lo).flatten())
    if X is not None:
        x = torch.as_tensor(np.asarray(X, dtype=np.float64)).reshape(-1, d)
        outside = (x < lo.flatten()) | (x > hi.flatten())
        if bool(outside.any()):
            raise InvalidArgumentError(
                f"Expected data inside the network's domain, but {int(outside.any(1).sum())} of {len(x)} points "
                f"fall outside it (features {torch.nonzero(outside.any(0)).flatten().tolist()[:8]})."
            )
        pts.append(x)
    return torch.cat([p.reshape(-1, *net.input_shape) for p in pts], 0)


def probe_description(net: AnyNetwork, X: torch.Tensor | np.ndarray | None = None, n_samples: int = 2048) -> str:
    """What :func:`samples_corners_and_data` measures on, in words (samples, which corners, data)."""
    d = net.domain.lo.numel()
    corners = f"all {2**d} domain corners" if d <= ALL_CORNERS_MAX_D else (
        f"256 random domain corners (of 2^{d}; all corners only up to {ALL_CORNERS_MAX_D} inputs)"
    )
    n_data = 0 if X is None else int(np.asarray(X).reshape(-1, d).shape[0])
    return f"{n_samples} uniform domain samples, {corners}, {n_data} data points"


def measure_plan(
    net: AnyNetwork,
    plan: PrecisionPlan,
    X: torch.Tensor | np.ndarray | None = None,
    n_samples: int = 2048,
    seed: int = 0,
) -> float:
    """Largest :math:`\\|F(x) - F_\\lambda(x)\\|_\\infty` over data, domain corners and samples (float64).

    The quantized network rounds every stored value exactly as the plan says; this is a measured
    (from below) worst case, to set beside ``plan.certified``.
    """
    x = samples_corners_and_data(net, X, n_samples, seed)
    with torch.no_grad():
        ref = net.forward(x)
        q = quantized_forward(net, x, plan.act_formats, plan.weight_formats)
    return float((ref - q).abs().amax()) if len(x) else 0.0


def search_plan(
    net: AnyNetwork, plan: PrecisionPlan, X: torch.Tensor | np.ndarray | None = None, seed: int = 0
) -> float:
    """Worst output error found by :func:`faultbound.measure.worst_case` for the fault model that
    Theorem 5 certifies: every neuron of layer l off by any amount within :math:`\\pm\\lambda_l`
    (adversarial signs and inputs), plus the output weights' share when weights are planned.

    It is a lower bound on the plan's certified quantity, usually well above what rounding does
    (:func:`measure_plan`), and shows how much of the certificate's slack is the bound's.
    """
    from faultbound.measure import worst_case

    inputs = None
    if X is not None:
        d = net.domain.lo.numel()
        x = torch.as_tensor(np.asarray(X, dtype=np.float64)).reshape(-1, d)
        inputs = torch.minimum(torch.maximum(x, net.domain.lo.flatten()), net.domain.hi.flatten())
        inputs = inputs.reshape(-1, *net.input_shape)
    r = worst_case(net, Precision(plan.lambdas), inputs=inputs, seed=seed)
    return float(r.max_error) + plan.output_weight_error
