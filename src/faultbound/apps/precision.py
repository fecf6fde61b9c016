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

**The optimisation.** With the paper's bound :math:`B(\\lambda) = \\sum_l c_l \\lambda_l`
(linear in the :math:`\\lambda_l`; :math:`c_l` is the bound at :math:`\\lambda = e_l`), the plan solves

.. math::

    \\min \\sum_v n_v b_v \\quad\\text{s.t.}\\quad \\sum_v a_v 2^{-(b_v+1)} \\le \\epsilon - \\epsilon',
    \\quad b_v \\in \\{b^{min}_v, \\dots, b^{max}\\},

over the variables v (one per hidden layer for the outputs, with :math:`n_v = N_l`,
:math:`a_v = c_l`; one per layer for the weights, with :math:`n_v` = weights + biases). It is solved
exactly by depth-first branch and bound (the result says ``optimal``; past a node limit it reports
the gap to a lower bound). The weight coefficients :math:`a_v` use an a-priori bound of the stored
values :math:`\\tilde Y_{l-1}`, valid for every feasible plan (every feasible plan has
:math:`b_v \\ge b^{min}_v`, the least fractional bits with which variable v alone fits the budget),
so the chosen plan's own certificate is never above the optimised one.

The integer bits of a plan cover every value it can produce: the clean interval of each layer over
the domain, widened by the deviation :math:`D_l` that the plan's rounding can cause upstream, and
clipped to the activation's range. They follow from the ranges and are not part of the objective, but
they are counted in ``memory_bits``.

With ``method="tight"`` (when that bound is registered) the paper-optimal plan is then improved
greedily, one fractional bit at a time, while the tight bound stays within budget: feasible and
certified by the tight bound, but not proven optimal for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from faultbound.apps.quantize import FixedPoint, _simple_weighted, fit_format, quantized_forward
from faultbound.bounds.api import METHODS, bound, check_eps
from faultbound.bounds.paper import layer_stats
from faultbound.errors import FaultboundError, InvalidArgumentError
from faultbound.faults import Precision
from faultbound.network.core import Network

__all__ = ["PrecisionPlan", "plan_precision", "measure_plan", "search_plan", "solve_bits", "PlanMethod"]

PlanMethod = Literal["auto", "paper", "tight"]

#: Largest number of branch-and-bound nodes before the solver stops and reports its gap.
NODE_LIMIT = 2_000_000


@dataclass(frozen=True)
class PrecisionPlan:
    """A precision plan and its certificate.

    Attributes:
        budget: :math:`\\epsilon - \\epsilon'`, the output error allowed.
        method: the bound that certifies ``certified`` (``"paper"`` or ``"tight"``).
        certified: the certified output error of the plan (<= budget).
        certified_paper: the paper bound of the same plan.
        act_formats: one format per hidden layer.
        weight_formats: one per layer 1..L+1, or ``None`` when weights stay in float32.
        lambdas: per-neuron output error :math:`\\lambda_l` per hidden layer.
        output_weight_error: the output weights' share of ``certified``.
        memory_bits: stored bits of the plan (activations, plus weights when planned).
        float32_bits: the same values stored as float32.
        optimal: True when the plan provably minimises ``frac_bits_cost`` under the paper bound
            (always False for ``"tight"``, whose plan is a greedy improvement).
        frac_bits_cost: :math:`\\sum_v n_v b_v`, the objective.
        lower_bound: a lower bound on the objective under the paper bound (equal to it when
            optimal); ``None`` for ``"tight"`` plans, for which no lower bound is known.
    """

    budget: float
    method: str
    certified: float
    certified_paper: float
    act_formats: tuple[FixedPoint, ...]
    weight_formats: tuple[FixedPoint, ...] | None
    lambdas: tuple[float, ...]
    output_weight_error: float
    memory_bits: int
    float32_bits: int
    optimal: bool
    frac_bits_cost: int
    lower_bound: int | None
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
    if sum(ai * 2.0 ** (-(hi + 1)) for ai in a) > budget:
        raise InvalidArgumentError(
            f"No plan with at most {hi} fractional bits fits the budget {budget:.3g}; raise the budget "
            "or max_frac_bits."
        )
    order = sorted(range(V), key=lambda v: -n[v])
    # A first feasible plan: split the budget evenly over the variables that need it.
    active = max(1, sum(1 for v in range(V) if a[v] > 0))
    best = [max(low[v], min(hi, _least_bits(a[v], budget / active))) for v in range(V)]
    feasible = sum(a[v] * 2.0 ** (-(best[v] + 1)) for v in range(V)) <= budget
    best_cost = sum(n[v] * best[v] for v in range(V)) if feasible else math.inf
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
            if cost < best_cost - 1e-9:
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

    dfs(0, budget, 0.0)
    return best, not stopped, (int(round(best_cost)) if not stopped else root_lb), nodes


def _float32_words(net: Network, weights: bool) -> int:
    words = sum(net.widths)
    if weights:
        words += net.n_params
    return 32 * words


def plan_precision(
    net: Network,
    budget: float | None = None,
    eps: float | None = None,
    eps_prime: float | None = None,
    weights: bool = False,
    method: PlanMethod = "auto",
    max_frac_bits: int = 40,
    node_limit: int = NODE_LIMIT,
) -> PrecisionPlan:
    """The cheapest per-layer fixed-point formats whose certified output error fits the budget.

    Args:
        net: the network (its domain bounds the inputs).
        budget: the allowed output error; or give ``eps`` and ``eps_prime`` (budget = eps - eps').
        weights: also plan the weights' formats (dense or single-convolution layers).
        method: ``"paper"`` (exact optimum for the paper's linear bound), ``"tight"`` (paper optimum
            improved greedily under the tight bound), ``"auto"`` (tight when registered).
        max_frac_bits: the most fractional bits a format may have.

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
    if method == "tight" and "tight" not in METHODS:
        raise InvalidArgumentError("The tight bound is not available in this installation; use method='paper'.")
    net.require_bounded_values()
    L = net.L
    stats = layer_stats(net)
    notes: list[str] = []
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
    bits, optimal, lower, nodes = solve_bits(costs, coefs, budget, lows, max_frac_bits, node_limit)
    if not optimal:
        notes.append(f"Branch and bound stopped after {node_limit} nodes: the objective is within "
                     f"{sum(c * b for c, b in zip(costs, bits, strict=True)) - lower:.0f} bits of the optimum.")

    w_mags = []
    if weights:
        for layer in net.layers:
            op = _simple_weighted(layer)
            w_mags.append(float(max(op.weight.abs().max(), op.bias.abs().max() if op.bias.numel() else 0.0)))

    def build(bv: Sequence[int]) -> tuple[list[FixedPoint], list[FixedPoint] | None, list[float], float]:
        """The plan's formats, per-neuron errors and output-weight share, in one forward pass.

        The integer bits fit this plan's own ranges: the clean interval widened by the deviation
        :math:`D_l = K_l (w_m N_{l-1} u_{l-1} + \\delta^w_l S_l)` that the plan can cause, where
        :math:`u_l = D_l + 2^{-(b_l+1)}` bounds a stored value's deviation.
        """
        afs: list[FixedPoint] = []
        wfs: list[FixedPoint] = []
        lam: list[float] = []
        y_st = net.value_bound(0)
        u = 0.0
        out_w = 0.0
        for idx, layer in enumerate(net.layers):
            s_l = float(stats.R[idx]) * y_st + 1.0
            dw = 0.0
            if weights:
                wf = fit_format(-w_mags[idx], w_mags[idx], int(bv[L + idx]))
                wfs.append(wf)
                dw = s_l * wf.error
            if idx == L:
                out_w = dw
                break
            act = layer.activation
            assert act is not None
            k = float(stats.K[idx])
            d = k * (float(stats.w[idx]) * float(min(stats.N_prev[idx], stats.R[idx])) * u + dw)
            lo = max(float(inter[idx].y_lo.min()) - d, act.lo)
            hi = min(float(inter[idx].y_hi.max()) + d, act.hi)
            af = fit_format(lo, hi, int(bv[idx]))
            afs.append(af)
            lam.append(af.error + k * dw)
            y_st = min(max(abs(lo), abs(hi)) + af.error, af.max_abs)
            u = d + af.error
        return afs, (wfs if weights else None), lam, out_w

    def certify(bv: Sequence[int], m: str) -> float:
        _, _, lam, out_w = build(bv)
        return bound(net, fault=Precision(lam), method=m).value + out_w  # type: ignore[arg-type]

    certified_paper = certify(bits, "paper")
    used = "paper"
    certified = certified_paper
    want_tight = method == "tight" or (method == "auto" and "tight" in METHODS)
    if want_tight:
        try:
            certified = certify(bits, "tight")
            used = "tight"
        except (FaultboundError, NotImplementedError) as e:
            notes.append(f"The tight bound could not certify precision ({e}); the paper bound is used.")
        if used == "tight":
            if certified > certified_paper:
                certified, used = certified_paper, "paper"
            else:
                bits, certified = _greedy_tight(bits, costs, budget, lambda bv: certify(bv, "tight"))
                certified_paper = certify(bits, "paper")
                notes.append(
                    "Plan: the exact optimum under the paper bound, then lowered greedily one fractional bit "
                    "at a time while the tight bound stays within budget (feasible, not proven optimal)."
                )
                optimal = False
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
        lower_bound=None if used == "tight" else min(lower, cost),
        nodes=nodes,
        notes=tuple(notes),
    )


def _greedy_tight(bits: list[int], costs: Sequence[float], budget: float, cert: Any) -> tuple[list[int], float]:
    """Lower one variable's bits at a time (largest cost first) while ``cert`` stays in budget."""
    cur = list(bits)
    val = cert(cur)
    improved = True
    while improved:
        improved = False
        for v in sorted(range(len(cur)), key=lambda k: -costs[k]):
            if cur[v] <= 0 or costs[v] == 0:
                continue
            trial = list(cur)
            trial[v] -= 1
            t = cert(trial)
            if t <= budget:
                cur, val, improved = trial, t, True
    return cur, val


def probe_inputs(net: Network, X: torch.Tensor | np.ndarray | None = None, n_samples: int = 2048,
                 seed: int = 0) -> torch.Tensor:
    """Points of the domain to measure on: data, corners and uniform samples.

    Data outside the domain is refused, never clipped: the plan is certified for the domain only, so
    a clipped point would measure a different input than the one passed (widen the domain first,
    e.g. ``net.with_domain(...)``, or the CLI's ``--domain-from-data``).
    """
    g = torch.Generator().manual_seed(seed)
    pts = [net.domain.sample(n_samples, g)]
    lo, hi = net.domain.lo, net.domain.hi
    d = lo.numel()
    if d <= 10:
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


def measure_plan(
    net: Network,
    plan: PrecisionPlan,
    X: torch.Tensor | np.ndarray | None = None,
    n_samples: int = 2048,
    seed: int = 0,
) -> float:
    """Largest :math:`\\|F(x) - F_\\lambda(x)\\|_\\infty` over data, domain corners and samples (float64).

    The quantized network rounds every stored value exactly as the plan says; this is a measured
    (from below) worst case, to set beside ``plan.certified``.
    """
    x = probe_inputs(net, X, n_samples, seed)
    with torch.no_grad():
        ref = net.forward(x)
        q = quantized_forward(net, x, plan.act_formats, plan.weight_formats)
    return float((ref - q).abs().amax()) if len(x) else 0.0


def search_plan(net: Network, plan: PrecisionPlan, X: torch.Tensor | np.ndarray | None = None, seed: int = 0) -> float:
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
    return float(r["max_error"]) + plan.output_weight_error
