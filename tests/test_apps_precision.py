"""Precision planning (Theorem 5): formats, the exact solver, and soundness of quantized networks."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.apps.precision import (
    _least_bits,
    certify_plan,
    measure_plan,
    plan_precision,
    samples_corners_and_data,
    search_plan,
    solve_bits,
    solve_monotone,
)
from faultbound.apps.quantize import FixedPoint, fit_format, quantized_forward
from faultbound.bounds.api import METHODS
from faultbound.errors import InvalidArgumentError
from tests.hyp import examples, soundness
from tests.reference import random_network

# ------------------------------------------------------------------ formats


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("b", [0, 3, 7])
def test_quantize_error_within_half_step_on_covered_range(signed: bool, b: int) -> None:
    fmt = FixedPoint(signed, 2, b)
    lo, hi = fmt.lo - fmt.error, fmt.hi + fmt.error
    t = torch.linspace(lo, hi, 2001, dtype=torch.float64)
    q = fmt.quantize(t)
    assert float((q - t).abs().max()) <= fmt.error + 1e-15
    # outside the covered range saturation errs by more: the check can fail
    far = torch.tensor([hi + 1.0], dtype=torch.float64)
    assert float((fmt.quantize(far) - far).abs()) > fmt.error
    # values land on the grid and in range
    assert bool(((q * 2**b) == torch.round(q * 2**b)).all())
    assert float(q.min()) >= fmt.lo and float(q.max()) <= fmt.hi


def test_format_names_and_bits() -> None:
    assert FixedPoint(False, 0, 8).name == "UQ(0.8)" and FixedPoint(False, 0, 8).word_bits == 8
    assert FixedPoint(True, 1, 4).word_bits == 6 and FixedPoint(True, 1, 4).lo == -2.0
    with pytest.raises(InvalidArgumentError):
        FixedPoint(True, -1, 2)


@example(lo=-1.5, width=0.0, b=0)  # found by a CI run: the bottom edge of Q(0.0) with its rounding slack
@given(lo=st.floats(-50, 50), width=st.floats(0, 60), b=st.integers(0, 12))
@settings(max_examples=60, deadline=None)
def test_fit_format_covers_and_is_narrowest(lo: float, width: float, b: int) -> None:
    hi = lo + width
    fmt = fit_format(lo, hi, b)
    assert fmt.covers(lo, hi)
    if fmt.int_bits > 0:
        assert not FixedPoint(fmt.signed, fmt.int_bits - 1, b).covers(lo, hi)
    # more fractional bits cover too, given one more integer bit: at the bottom of a signed range the
    # rounding slack 2^-(b+1) shrinks as b grows (lo = -1.5 is covered by Q(0.0) but not by Q(0.5))
    assert FixedPoint(fmt.signed, fmt.int_bits + 1, b + 5).covers(lo, hi)
    # an integer width fitted for every b' >= b really serves every b'
    wide = fit_format(lo, hi, b, min_frac_bits=b)
    for extra in (0, 1, 5, 20):
        assert FixedPoint(wide.signed, wide.int_bits, b + extra).covers(lo, hi)


def test_least_bits() -> None:
    for a, budget in [(1.0, 0.5), (1.0, 0.4), (3.7, 1e-3), (0.0, 1.0), (1e-9, 1.0)]:
        b = _least_bits(a, budget)
        assert a * 2.0 ** (-(b + 1)) <= budget
        assert b == 0 or a * 2.0 ** (-b) > budget


# ------------------------------------------------------------------ solver


def _exact_error(coefs, bits) -> Fraction:
    """sum_v a_v 2^-(b_v+1) in exact rational arithmetic (a float sum can round 1 + 1e-145 to 1)."""
    return sum((Fraction(a) / 2 ** (b + 1) for a, b in zip(coefs, bits, strict=True)), Fraction(0))


def _brute(costs, coefs, budget, lo, hi):
    best, best_bits = math.inf, None
    for bits in itertools.product(*[range(lo_v, hi + 1) for lo_v in lo]):
        if _exact_error(coefs, bits) <= Fraction(budget):
            c = sum(n * b for n, b in zip(costs, bits, strict=True))
            if c < best:
                best, best_bits = c, bits
    return best, best_bits


@given(
    data=st.lists(st.tuples(st.integers(0, 20), st.floats(0.0, 50.0)), min_size=1, max_size=3),
    budget=st.floats(1e-3, 2.0),
)
@settings(max_examples=60, deadline=None)
def test_solver_matches_brute_force(data: list[tuple[int, float]], budget: float) -> None:
    costs = [float(c) for c, _ in data]
    coefs = [a for _, a in data]
    hi = 14
    lo = [0] * len(costs)
    if _exact_error(coefs, [hi] * len(coefs)) > Fraction(budget):
        with pytest.raises(InvalidArgumentError):
            solve_bits(costs, coefs, budget, lo, hi)
        return
    bits, optimal, lower, _ = solve_bits(costs, coefs, budget, lo, hi)
    best, _ = _brute(costs, coefs, budget, lo, hi)
    assert optimal
    assert _exact_error(coefs, bits) <= Fraction(budget)
    assert sum(n * b for n, b in zip(costs, bits, strict=True)) == pytest.approx(best)
    assert lower == pytest.approx(best)


def test_solver_node_limit_reports_gap() -> None:
    costs, coefs = [5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]
    bits, optimal, lower, nodes = solve_bits(costs, coefs, 1e-3, [0] * 4, 30, node_limit=3)
    assert not optimal and nodes >= 3
    assert lower <= sum(n * b for n, b in zip(costs, bits, strict=True))


# ------------------------------------------------------------------ plans


def _net(seed: int = 0, acts=("sigmoid", "tanh"), widths=(6, 5)):
    return random_network(list(widths), list(acts), d_in=3, n_out=2, seed=seed, scale=1.0)


def test_plan_paper_is_exact_optimum_over_grid() -> None:
    net = _net()
    budget = 0.02
    plan = plan_precision(net, budget=budget, method="paper")
    assert plan.method == "paper" and plan.optimal
    assert plan.certified <= budget
    # every cheaper bit assignment violates the paper bound (B is linear in lambda)
    cost = sum(n * f.frac_bits for n, f in zip(net.widths, plan.act_formats, strict=True))
    for bits in itertools.product(range(0, 16), repeat=2):
        c = sum(n * b for n, b in zip(net.widths, bits, strict=True))
        if c < cost:
            lam = [2.0 ** (-(b + 1)) for b in bits]
            assert fb.bound(net, fault=fb.Precision(lam), method="paper").value > budget


def test_plan_monotone_in_budget_and_saves_memory() -> None:
    net = _net(1)
    mems = [plan_precision(net, budget=b, method="paper").memory_bits for b in (1e-4, 1e-3, 1e-2, 1e-1)]
    assert mems == sorted(mems, reverse=True)
    plan = plan_precision(net, budget=1e-2, method="paper")
    assert 0 < plan.memory_saved < 1
    assert plan.float32_bits == 32 * sum(net.widths)


def test_plan_eps_and_errors() -> None:
    net = _net()
    p1 = plan_precision(net, eps=0.1, eps_prime=0.08, method="paper")
    p2 = plan_precision(net, budget=0.1 - 0.08, method="paper")
    assert p1.act_formats == p2.act_formats
    for kw in ({}, {"budget": 0.0}, {"budget": -1.0}, {"budget": math.inf}, {"eps": 0.1, "eps_prime": 0.2},
               {"budget": 0.1, "method": "nope"}, {"budget": 1e-30, "max_frac_bits": 10}):
        with pytest.raises(InvalidArgumentError):
            plan_precision(net, **kw)


def test_quantized_forward_infinite_precision_is_exact() -> None:
    net = _net()
    fmts = [FixedPoint(True, 2, 52)] * net.L
    x = samples_corners_and_data(net, n_samples=64)
    assert torch.allclose(quantized_forward(net, x, fmts), net.forward(x), atol=1e-12)
    with pytest.raises(InvalidArgumentError):
        quantized_forward(net, x, fmts[:1])


ACTS = ["sigmoid", "tanh", "tuned2", "relu", "softplus"]


@soundness
@given(
    seed=st.integers(0, 10_000),
    acts=st.lists(st.sampled_from(ACTS), min_size=1, max_size=3),
    width=st.integers(2, 6),
    log_budget=st.floats(-4, 0),
    weights=st.booleans(),
    method=st.sampled_from(["paper", "auto"]),
    conv=st.booleans(),
)
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_quantized_error_never_exceeds_certified(
    seed: int, acts: list[str], width: int, log_budget: float, weights: bool, method: str, conv: bool
) -> None:
    """Soundness: running the planned fixed-point network never errs by more than certified."""
    widths = [width + i for i in range(len(acts))]
    if conv:
        widths[0] = 8  # the conv front end: 2 channels of 2x2 on a 1x4x4 input
    net = random_network(widths, acts, d_in=3, n_out=2, seed=seed, scale=1.5, conv=conv)
    budget = 10.0**log_budget
    # soundness, not optimality: a small search budget keeps the test fast (the plan is feasible anyway)
    plan = plan_precision(net, budget=budget, weights=weights, method=method, eval_limit=60)  # type: ignore[arg-type]
    assert plan.certified <= budget * (1 + 1e-12)
    assert plan.lower_bound <= plan.frac_bits_cost
    assert plan.certified <= plan.certified_paper + 1e-12 or plan.method == "paper"
    measured = measure_plan(net, plan, n_samples=256, seed=seed)
    assert measured <= plan.certified * (1 + 1e-9) + 1e-12
    searched = search_plan(net, plan, seed=seed)
    assert searched <= plan.certified * (1 + 1e-9) + 1e-12


def test_measured_error_is_not_trivially_zero() -> None:
    # the measurement can fail: a coarse plan does move the output
    net = _net(3)
    plan = plan_precision(net, budget=0.5, method="paper")
    assert measure_plan(net, plan, n_samples=256) > 0


@pytest.mark.skipif("tight" not in METHODS, reason="tight bound not registered")
def test_tight_plan_is_no_more_expensive() -> None:
    net = random_network([8, 8], ["sigmoid", "sigmoid"], d_in=3, n_out=1, seed=4, scale=2.0)
    paper = plan_precision(net, budget=0.01, method="paper")
    tight = plan_precision(net, budget=0.01, method="tight")
    assert tight.method == "tight"
    assert tight.memory_bits <= paper.memory_bits
    assert tight.certified <= 0.01


def test_weight_plan_uses_data() -> None:
    net = _net(5)
    X = np.random.default_rng(0).random((50, 3))
    plan = plan_precision(net, budget=0.05, weights=True, method="paper")
    assert plan.weight_formats is not None and len(plan.weight_formats) == net.L + 1
    assert plan.output_weight_error > 0
    assert measure_plan(net, plan, X, n_samples=64) <= plan.certified


# ------------------------------------------------------------------ exact plans under the plan's own certificate


@given(
    seed=st.integers(0, 10_000),
    acts=st.lists(st.sampled_from(["sigmoid", "tanh", "relu"]), min_size=1, max_size=2),
    width=st.integers(2, 3),
    log_budget=st.floats(-2.5, -0.5),
    weights=st.booleans(),
    method=st.sampled_from(sorted(METHODS)),
)
@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_plan_is_the_cheapest_by_enumeration(
    seed: int, acts: list[str], width: int, log_budget: float, weights: bool, method: str
) -> None:
    """Brute force: no plan with fewer fractional bits meets the same certificate within budget."""
    if weights and len(acts) > 1:
        acts = acts[:1]  # 3 variables, 8^3 plans: enumeration stays fast
    net = random_network([width] * len(acts), acts, d_in=2, n_out=1, seed=seed, scale=1.5)
    budget = 10.0**log_budget
    hi = 7
    try:
        plan = plan_precision(net, budget=budget, weights=weights, method=method, max_frac_bits=hi)  # type: ignore[arg-type]
    except InvalidArgumentError:
        return  # no plan within hi bits: checked by test_plan_eps_and_errors
    assert plan.method == method and plan.optimal and plan.lower_bound == plan.frac_bits_cost
    costs = list(net.widths)
    if weights:  # one variable per layer 1..L+1, costing its weights plus biases
        costs += [sum(int(o.weight.numel() + o.bias.numel()) for o in lay.ops if o.weighted) for lay in net.layers]
    n_vars = len(costs)
    best = math.inf
    for bits in itertools.product(range(hi + 1), repeat=n_vars):
        c = sum(n * b for n, b in zip(costs, bits, strict=True))
        if c < best and certify_plan(net, bits, weights, method) <= budget:
            best = c
    assert plan.frac_bits_cost == best
    bits = [f.frac_bits for f in plan.act_formats] + [f.frac_bits for f in plan.weight_formats or []]
    assert certify_plan(net, bits, weights, method) == pytest.approx(plan.certified)


def test_monotone_solver_matches_brute_force_and_reports_gap() -> None:
    # a separable, non-linear certificate: sum of 3 / (b + 1)^2 terms
    coef, costs, budget = [3.0, 1.0, 5.0], [4.0, 9.0, 1.0], 0.6

    def cert(bv):
        return sum(a / (b + 1) ** 2 for a, b in zip(coef, bv, strict=True))

    bits, optimal, lower, evals = solve_monotone(cert, costs, budget, 9)
    best = min(
        sum(n * b for n, b in zip(costs, bv, strict=True))
        for bv in itertools.product(range(10), repeat=3)
        if cert(bv) <= budget
    )
    assert optimal and lower == best and sum(n * b for n, b in zip(costs, bits, strict=True)) == best
    assert cert(bits) <= budget and evals < 10**3
    bits, optimal, lower, _ = solve_monotone(cert, costs, budget, 9, eval_limit=5)
    assert not optimal and lower <= best <= sum(n * b for n, b in zip(costs, bits, strict=True))
    with pytest.raises(InvalidArgumentError):
        solve_monotone(cert, costs, 1e-6, 9)


def test_weight_errors_are_the_actual_roundings() -> None:
    """A weight grid that represents every weight exactly adds no weight error to the certificate."""
    from torch import nn

    lin1, lin2 = nn.Linear(2, 3), nn.Linear(3, 1)
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[0.5, -0.25], [1.0, 0.75], [-0.5, 0.125]]))
        lin1.bias.copy_(torch.tensor([0.25, -0.5, 0.0]))
        lin2.weight.copy_(torch.tensor([[0.5, -1.0, 0.25]]))
        lin2.bias.zero_()
    net = fb.Network.from_torch(nn.Sequential(lin1, nn.Sigmoid(), lin2))
    exact = certify_plan(net, [6, 3, 3], weights=True)  # b^w = 3 represents every weight above
    assert exact == pytest.approx(certify_plan(net, [6], weights=False))
    coarse = certify_plan(net, [6, 1, 1], weights=True)  # 0.125, 0.25, 0.75 round
    assert coarse > exact


# ------------------------------------------------------------------ graph networks (one format per fault site)


class _ResidualMLP(torch.nn.Module):
    """x -> act(a x) = h; act(b h) + h -> out: two fault sites, the second feeding a residual sum."""

    def __init__(self, d: int, w: int, act: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        make = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid}[act]
        self.a, self.b, self.out = torch.nn.Linear(d, w), torch.nn.Linear(w, w), torch.nn.Linear(w, 2)
        self.act1, self.act2 = make(), make()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.a(x))
        return self.out(self.act2(self.b(h)) + h)


def _site_hooks(model: torch.nn.Module, names: list[str], edit) -> list:  # type: ignore[no-untyped-def]
    """Forward hooks that replace the output of each named module by ``edit(k, y)`` (k: its position)."""
    mods = dict(model.named_modules())
    return [mods[n].register_forward_hook(lambda _m, _i, y, k=k: edit(k, y)) for k, n in enumerate(names)]


def _round(y: torch.Tensor, int_bits: int, frac_bits: int, signed: bool) -> torch.Tensor:
    """The fixed-point statement, written out: nearest multiple of 2^-b, saturated to the format's range."""
    step = 2.0**-frac_bits
    lo = -(2.0**int_bits) if signed else 0.0
    return torch.clamp(torch.round(y / step) * step, lo, 2.0**int_bits - step)


def test_graph_plan_rounds_each_site_and_measures_like_hooked_torch() -> None:
    """On a residual graph the plan has one format per fault site; its quantized forward equals the
    module with every activation output rounded by a forward hook (the statement written out), and
    both the rounding error and the error of neurons off by +-lambda stay within the certificate."""
    model = _ResidualMLP(3, 6, "relu", 0).double().eval()
    net = fb.load(model, input_shape=(3,))
    assert net.layers is None and net.L == 2
    plan = plan_precision(net, budget=0.05)
    assert plan.method == "tight" and plan.certified_paper is None and plan.certified <= 0.05
    assert len(plan.act_formats) == 2 and plan.weight_formats is None
    assert plan.lambdas == tuple(f.error for f in plan.act_formats)
    x = samples_corners_and_data(net, None, 256, 0)
    names = [s.name for s in net.sites]
    hooks = _site_hooks(model, names, lambda k, y: _round(y, plan.act_formats[k].int_bits,
                                                          plan.act_formats[k].frac_bits, plan.act_formats[k].signed))
    try:
        with torch.no_grad():
            want = model(x)
    finally:
        for h in hooks:
            h.remove()
    got = quantized_forward(net, x, plan.act_formats)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)
    measured = measure_plan(net, plan, None, 256, 0)
    assert 0 < measured <= plan.certified
    assert search_plan(net, plan) <= plan.certified * (1 + 1e-9)
    assert plan.memory_bits == sum(n * f.word_bits for n, f in zip(net.widths, plan.act_formats, strict=True))


def test_graph_plan_refuses_weights_and_the_paper_bound() -> None:
    net = fb.load(_ResidualMLP(3, 4, "tanh", 1).eval(), input_shape=(3,))
    with pytest.raises(InvalidArgumentError, match="Weight formats are planned on layered networks"):
        plan_precision(net, budget=0.1, weights=True)
    with pytest.raises(fb.errors.UnsupportedModelError, match="method='tight'"):
        plan_precision(net, budget=0.1, method="paper")


def test_graph_plan_is_the_cheapest_by_enumeration() -> None:
    """With a small bit range the plan's objective equals the least cost over every bit vector whose
    tight certificate fits (each certificate computed by ``fb.bound``, the public verb)."""
    net = fb.load(_ResidualMLP(2, 3, "sigmoid", 2).eval(), input_shape=(2,))
    budget, hi = 0.02, 9
    plan = plan_precision(net, budget=budget, max_frac_bits=hi)
    best = math.inf
    for bv in itertools.product(range(hi + 1), repeat=net.L):
        lam = [2.0 ** -(b + 1) for b in bv]
        if fb.bound(net, fault=fb.Precision(lam), method="tight").value <= budget:
            best = min(best, sum(n * b for n, b in zip(net.widths, bv, strict=True)))
    assert plan.optimal and plan.frac_bits_cost == best


@soundness
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["relu", "tanh", "sigmoid"]),
       budget=st.sampled_from([0.01, 0.1, 1.0]))
@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_graph_plan_formats_cover_every_perturbed_value(seed: int, act: str, budget: float) -> None:
    """Brute force from the statement: every site's value, with every earlier site off by any u in
    [-lambda, lambda] (random and corner draws, per unit), lies in the site's format range (so no stored
    value saturates), and the output moves by at most the certificate."""
    model = _ResidualMLP(3, 5, act, seed).double().eval()
    net = fb.load(model, input_shape=(3,))
    plan = plan_precision(net, budget=budget)
    g = torch.Generator().manual_seed(seed)
    x = samples_corners_and_data(net, None, 128, seed)
    with torch.no_grad():
        clean = model(x)
    names = [s.name for s in net.sites]
    for draw in range(8):
        seen: list[tuple[int, torch.Tensor]] = []

        def edit(k: int, y: torch.Tensor, draw: int = draw, seen: list = seen) -> torch.Tensor:  # type: ignore[type-arg]
            seen.append((k, y.detach().clone()))
            lam = plan.lambdas[k]
            u = torch.rand(y.shape, generator=g, dtype=y.dtype) * 2 - 1
            if draw % 2:
                u = torch.sign(u)
            return y + lam * u

        hooks = _site_hooks(model, names, edit)
        try:
            with torch.no_grad():
                out = model(x)
        finally:
            for h in hooks:
                h.remove()
        assert float((out - clean).abs().max()) <= plan.certified * (1 + 1e-9) + 1e-12
        for k, y in seen:
            fmt = plan.act_formats[k]
            assert fmt.covers(float(y.min()), float(y.max())), (k, fmt.name, float(y.min()), float(y.max()))
