"""The value-guided search behind ``tolerate(method="tight")``: exactly the largest tolerated count
of any non-decreasing value sequence (brute force over random sequences with plateaus, jumps, ties
with the budget, answers 0 / -1 / all; with and without a cheaper verdict), a logarithmic worst
case, few evaluations on smooth growth; the per-layer, uniform and maximal results of ``tolerate``
against scans of every candidate (layered networks, small residual CNN graphs); the forward-first
graph evaluation against ``graph_propagate``; and a pinned case where the graph bound is not
monotone."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.bounds.graph_tight import graph_bound_within, graph_propagate
from faultbound.bounds.tight import prepare, tight_value
from faultbound.bounds.tolerance import ToleranceResult, _last_within, _uniform_rows, tolerate
from faultbound.faults import Byzantine, Crash, SynapseCrash
from faultbound.network import gops
from tests.graph_reference import Builder
from tests.hyp import examples, soundness
from tests.test_tight import make_net

SHAPES = ["steps", "linear", "log", "sqrt", "square", "exp", "plateau_jump", "constant"]


@st.composite
def monotone(draw: st.DrawFn) -> list[float]:
    """A non-decreasing sequence: random increments (zeros make plateaus, large ones jumps), or a
    smooth shape (linear, concave, convex) rounded to a few digits so that ties occur."""
    n = draw(st.integers(1, 400))
    shape = draw(st.sampled_from(SHAPES))
    k = np.arange(n, dtype=np.float64)
    if shape == "steps":
        inc = draw(st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0, 100.0]), min_size=n, max_size=n))
        v = np.cumsum(inc)
    elif shape == "linear":
        v = 0.37 * k
    elif shape == "log":
        v = np.log1p(k)
    elif shape == "sqrt":
        v = np.sqrt(k)
    elif shape == "square":
        v = k**2
    elif shape == "exp":
        v = np.expm1(k / max(1, n // 8))
    elif shape == "plateau_jump":
        at = draw(st.integers(0, n))
        v = np.where(k < at, 1.0, 1e6)
    else:
        v = np.full(n, 2.0)
    offset = draw(st.sampled_from([0.0, 0.0, 1.0, -1.0]))
    v = np.round(v + offset, draw(st.integers(0, 6)))
    return [float(x) for x in np.maximum.accumulate(v)]  # rounding keeps order; accumulate anyway


def _brute(v: list[float], budget: float) -> int:
    good = [i for i, x in enumerate(v) if x <= budget]
    return max(good) if good and good == list(range(len(good))) else -1


def _count(v: list[float]) -> tuple[list[int], Callable[[int], float]]:
    calls: list[int] = []

    def value(i: int) -> float:
        assert 0 <= i < len(v)
        calls.append(i)
        return v[i]

    return calls, value


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v=monotone(), data=st.data())
def test_search_finds_the_largest_tolerated_count(v: list[float], data: st.DataObject) -> None:
    n = len(v)
    pick = data.draw(st.sampled_from(["value", "between", "below", "above", "anywhere"]))
    if pick == "value":  # a tie: value == budget is tolerated
        budget = v[data.draw(st.integers(0, n - 1))]
    elif pick == "between":
        i = data.draw(st.integers(0, n - 1))
        budget = v[i] + 0.5 * ((v[i + 1] if i + 1 < n else v[i] + 1.0) - v[i])
    elif pick == "below":
        budget = v[0] - 1.0  # even 0 fails: -1
    elif pick == "above":
        budget = v[-1] + 1.0  # every count: n - 1
    else:
        budget = data.draw(st.floats(-10.0, 2.0 * max(v) + 10.0))
    first = data.draw(st.integers(-3, n + 3))
    calls, value = _count(v)
    verdict = None
    if data.draw(st.booleans()):
        # a cheaper verdict: within the budget it may answer any number up to the budget
        slack = data.draw(st.floats(0.0, 1.0))

        def verdict(i: int) -> float:
            calls.append(i)
            return v[i] if v[i] > budget else v[i] + slack * (budget - v[i])

    got = _last_within(n, value, budget, first=first, verdict=verdict)
    assert got == _brute(v, budget)
    assert len(calls) == len(set(calls))  # nothing evaluated twice
    assert len(calls) <= 4 * n.bit_length() + 3  # the documented worst case


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v=monotone(), data=st.data())
def test_search_with_coordinates(v: list[float], data: st.DataObject) -> None:
    """Interpolating in other coordinates (the uniform fractions) changes only where it probes."""
    n = len(v)
    gaps = data.draw(st.lists(st.floats(1e-6, 10.0), min_size=n, max_size=n))
    coords = list(np.cumsum(gaps) - gaps[0])
    budget = data.draw(st.floats(-1.0, 2.0 * max(v) + 1.0))
    calls, value = _count(v)
    got = _last_within(n, value, budget, coords=coords, first=data.draw(st.integers(1, n)))
    assert got == _brute(v, budget)
    assert len(calls) <= 4 * n.bit_length() + 3


def test_search_on_any_sequence_returns_a_boundary() -> None:
    """Not monotone (say float rounding): still a tolerated count whose successor is not."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 200))
        v = rng.random(n).tolist()
        budget = float(rng.random())
        got = _last_within(n, lambda i, v=v: v[i], budget)
        if v[0] > budget:
            assert got == -1
        else:
            assert v[got] <= budget and (got == n - 1 or v[got + 1] > budget)


def _blind(n: int, ok: Callable[[int], bool]) -> tuple[int, int]:
    """The previous search (gallop ok(1), ok(3), ok(7), ..., then bisection), for its count."""
    calls = 1
    if not ok(0):
        return -1, calls
    lo, step = 0, 1
    while lo + step < n:
        calls += 1
        if not ok(lo + step):
            break
        lo, step = lo + step, 2 * step
    hi = min(n - 1, lo + step - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        calls += 1
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo, calls


def _topk_sums(n: int) -> np.ndarray:
    """The form of a tight bound in one count: the sum of the k largest of n positive terms."""
    terms = np.sort(np.random.default_rng(0).exponential(size=n))[::-1]
    return np.concatenate([[0.0], np.cumsum(terms)[:-1]])


#: Smooth growth, and the most evaluations (value(0) included) measured over the answers below.
SMOOTH: dict[str, tuple[Callable[[np.ndarray], np.ndarray], int]] = {
    "linear": (lambda k: 3.0 * k, 4),
    "sqrt": (np.sqrt, 5),
    "topk": (lambda k: _topk_sums(len(k)), 8),
    "slightly_convex": (lambda k: k + 1e-4 * k**2, 9),
    "log": (np.log1p, 12),  # the worst here; the blind gallop and bisection needs 2, 6, 20, 32
}


@pytest.mark.parametrize("shape", list(SMOOTH))
@pytest.mark.parametrize("answer", [0, 5, 700, 40_000])
def test_search_needs_few_evaluations_on_smooth_growth(shape: str, answer: int) -> None:
    n = 65_536
    fn, most = SMOOTH[shape]
    v = fn(np.arange(n, dtype=np.float64))
    budget = float(v[answer] + 0.5 * (v[answer + 1] - v[answer]))
    calls, value = _count(list(v))
    assert _last_within(n, value, budget) == answer
    ref, blind_calls = _blind(n, lambda i: v[i] <= budget)
    assert ref == answer
    assert len(calls) <= most
    assert len(calls) <= blind_calls


# ----------------------------------------------------------------------------- tolerate
def _candidates(sizes: list[int], limits: list[int], synapse: bool) -> list[tuple[float, tuple[int, ...]]]:
    """Every fraction k / N_l in increasing order (below 1 for neurons) with its distribution
    floor(p N_m) capped at the limits, kept the first time that distribution appears."""
    out: list[tuple[float, tuple[int, ...]]] = []
    for p in sorted({Fraction(k, sz) for sz in sizes for k in range(sz + 1)}):
        if p >= 1 and not synapse:
            break
        row = tuple(min(math.floor(p * m), lim) for m, lim in zip(sizes, limits, strict=True))
        if not out or row != out[-1][1]:
            out.append((float(p), row))
    return out


def _uniform_reference(
    sizes: list[int], limits: list[int], ok: Callable[[tuple[int, ...]], bool], synapse: bool
) -> tuple[float, tuple[int, ...]]:
    """The last candidate of the longest tolerated prefix."""
    best = (0.0, tuple(0 for _ in sizes))
    for p, row in _candidates(sizes, limits, synapse):
        if not ok(row):
            break
        best = (p, row)
    return best


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5), synapse=st.booleans())
def test_uniform_candidates_in_order(sizes: list[int], synapse: bool) -> None:
    """The merged candidate stream is every fraction in order, each new distribution once."""
    limits = list(sizes) if synapse else [sz - 1 for sz in sizes]
    fault = SynapseCrash() if synapse else Crash()
    net = SimpleNamespace(widths=list(sizes))
    fracs, rows = _uniform_rows(net, fault, limits)  # type: ignore[arg-type]
    assert list(zip(fracs, rows, strict=True)) == _candidates(sizes, limits, synapse)


def _check(
    res: ToleranceResult,
    value: Callable[[list[int]], float],
    limits: list[int],
    sizes: list[int],
    budget: float,
    synapse: bool,
) -> None:
    def ok(f: tuple[int, ...]) -> bool:
        return value(list(f)) <= budget

    n = len(limits)
    for l in range(n):
        scan = [ok(tuple(c if i == l else 0 for i in range(n))) for c in range(limits[l] + 1)]
        assert res.per_layer_max[l] == max(i for i, b in enumerate(scan) if b)
    p, row = _uniform_reference(sizes, limits, ok, synapse)
    assert res.uniform_failures == row
    assert res.uniform_fraction == p


@soundness
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 9999),
    widths=st.lists(st.integers(2, 9), min_size=1, max_size=4),
    q=st.floats(0.02, 0.98),
    fault=st.sampled_from([Crash(), Byzantine(0.5), SynapseCrash()]),
)
def test_tolerate_layered_matches_scans(seed: int, widths: list[int], q: float, fault: fb.Fault) -> None:
    acts = ["sigmoid", "tanh", "relu", "gelu"]
    net = make_net(seed, widths, [acts[i % 4] for i in range(len(widths))], False, 1.0)
    plan = prepare(net, fault)

    def value(f: list[int]) -> float:
        return tight_value(plan, f, monotone=True)

    synapse = fault.site == "synapse"
    limits = [lay.n_synapses for lay in net.layers] if synapse else [w - 1 for w in widths]
    top = value(limits)
    budget = q * top * (1 + 1e-9)  # off the values: ties that differ only by rounding
    res = tolerate(net, budget, 0.0, fault, method="tight")
    _check(res, value, limits, limits if synapse else list(widths), budget, synapse)


def _residual_cnn(seed: int) -> fb.GraphNetwork:
    """conv -> relu -> conv -> tanh, added to the first relu, relu, dense: 3 sites of 75 units."""
    b = Builder(seed, (1, 5, 5))
    h = b.act(b.conv(0, 1, 3, 3, pad=1), "relu")
    inner = b.act(b.conv(h, 3, 3, 3, pad=1), "tanh")
    s = b.add("add", gops.Add((1, 1)), [h, inner], lambda u, v: u + v)
    y = b.act(s, "relu")
    b.dense(b.flatten(y), 75, 2)
    return b.build(0.0, 1.0).build()


@soundness
@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 999), data=st.data())
def test_graph_bound_within_gives_the_same_verdict(seed: int, data: st.DataObject) -> None:
    """The forward-first evaluation: exact and equal to graph_propagate's largest output bound, or
    (forward within the budget) a number between that bound and the budget."""
    net = _residual_cnn(seed)
    lo, hi = net.domain.lo.unsqueeze(0), net.domain.hi.unsqueeze(0)
    fault = data.draw(st.sampled_from([Crash(), Byzantine(0.5)]))
    counts = [data.draw(st.integers(0, w - 1)) for w in net.widths]
    value = float(graph_propagate(net, fault, counts, lo, hi).amax())
    forward = float(graph_propagate(net, fault, counts, lo, hi, linear=False).amax())
    for budget in (-math.inf, math.inf, value, forward, data.draw(st.floats(0.0, 2.0 * forward + 1.0))):
        got, exact = graph_bound_within(net, fault, counts, lo, hi, budget)
        assert (got <= budget) == (value <= budget)
        if exact:
            assert got == value and forward > budget
        else:
            assert forward <= budget and got == forward and value <= got <= budget


@pytest.mark.parametrize("fault", [Crash(), Byzantine(0.5)])
def test_tolerate_graph_matches_scans(fault: fb.Fault) -> None:
    net = _residual_cnn(3)
    one = [1] + [0] * (net.L - 1)
    budget = 6.0 * fb.bound(net, one, fault, "tight").value

    def value(f: list[int]) -> float:
        return fb.bound(net, f, fault, "tight").value

    limits = [w - 1 for w in net.widths]
    res = tolerate(net, budget, 0.0, fault, method="tight")
    assert any(0 < v < lim for v, lim in zip(res.per_layer_max, limits, strict=True))  # a real boundary
    _check(res, value, limits, list(net.widths), budget, False)


def _tiny_residual_cnn(seed: int) -> fb.GraphNetwork:
    """The same shape on a 2 x 2 input: 3 sites of 8 units, 512 distributions."""
    b = Builder(seed, (1, 2, 2))
    h = b.act(b.conv(0, 1, 2, 3, pad=1), "relu")
    inner = b.act(b.conv(h, 2, 2, 3, pad=1), "tanh")
    s = b.add("add", gops.Add((1, 1)), [h, inner], lambda u, v: u + v)
    y = b.act(s, "relu")
    b.dense(b.flatten(y), 8, 2)
    return b.build(0.0, 1.0).build()


def test_tolerate_graph_maximal_set_matches_enumeration() -> None:
    """The staircase walk on a graph (its verdicts by the forward-first evaluation where only the
    verdict is used) against every distribution's bound."""
    net = _tiny_residual_cnn(1)
    fault = Crash()
    cells = list(itertools.product(*[range(w) for w in net.widths]))  # f_l < N_l
    vals = np.array([fb.bound(net, list(c), fault, "tight").value for c in cells])
    # off the values; a budget whose tolerated set is downward closed: the graph bound is not
    # monotone in every count (here at 0.2 to 0.4: a failure at the first site makes the dense part
    # at the later sites larger and their failing units' extra parts smaller), and where it is
    # not, "largest" and "maximal" have no unique answer (both searches return tolerated counts)
    budget = float(np.quantile(vals, 0.6)) * (1 + 1e-9)
    res = tolerate(net, budget, 0.0, fault, method="tight")
    good = [c for c, v in zip(cells, vals, strict=True) if v <= budget]
    tolerated = set(good)
    for c in good:
        for l in range(len(c)):
            if c[l] > 0:
                assert tuple(v - (i == l) for i, v in enumerate(c)) in tolerated
    maximal = [c for c in good if not any(d != c and all(x >= y for x, y in zip(d, c, strict=True)) for d in good)]
    assert res.n_tolerated == len(good)
    assert sorted(res.maximal or ()) == sorted(maximal)
    assert res.n_evaluated < len(cells) // 4


def test_graph_bound_is_not_monotone_in_every_count() -> None:
    """Pins the fact the tolerance docstring states: one more failure at the first site lowers the
    bound here (its dense deviation at the later failing sites shrinks their extra parts), so on a
    graph "largest tolerated" assumes a prefix of verdicts that can fail."""
    net = _tiny_residual_cnn(1)
    lower = fb.bound(net, [1, 7, 7], Crash(), "tight").value
    higher = fb.bound(net, [0, 7, 7], Crash(), "tight").value
    assert lower < 0.9 * higher
