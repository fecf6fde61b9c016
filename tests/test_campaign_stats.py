"""Constant-size campaign statistics: exact sums, DDSketch quantiles, histogram, intervals over
configurations, and merges in any order. References are brute force (fractions, sorting, loops)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.errors import InvalidArgumentError
from faultbound.measure.stats import (
    HIST_EDGES,
    RELATIVE_ACCURACY,
    CampaignState,
    chunk_state,
    cluster_interval,
    exact_sum,
    summarize,
    wilson,
)

finite = st.floats(min_value=0.0, max_value=1e300, allow_nan=False, allow_infinity=False, allow_subnormal=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, max_size=60))
def test_exact_sum_is_exact(values: list[float]) -> None:
    ref = sum((Fraction(v) for v in values), Fraction(0))
    assert Fraction(exact_sum(np.array(values, dtype=np.float64)), 2**1127) == ref


def test_exact_sum_signed_and_large() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(3_000_000) * 10.0 ** rng.integers(-300, 300, 3_000_000)
    ref = math.fsum(v)  # correctly rounded sum
    assert float(Fraction(exact_sum(v), 2**1127)) == ref


def _state(errors: np.ndarray, first_config: int = 0) -> CampaignState:
    e = torch.as_tensor(errors, dtype=torch.float64)
    t, b = e.shape
    flat = int(torch.argmax(torch.nan_to_num(e, nan=math.inf)))
    worst = {"error": float(e.reshape(-1)[flat]), "configuration": first_config + flat // b, "input_index": flat % b}
    return chunk_state(e, torch.zeros(t, b, 1), torch.zeros(b, 1), None, worst)


def _same(a: CampaignState, b: CampaignState) -> None:
    for k in (f.name for f in dataclasses.fields(a)):
        if isinstance(getattr(a, k), np.ndarray):
            assert np.array_equal(getattr(a, k), getattr(b, k)), k
        else:
            assert getattr(a, k) == getattr(b, k), k


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=20), st.randoms())
def test_merge_is_order_independent(rows: list[list[float]], rnd: random.Random) -> None:
    """Chunks merged in any order and any grouping give the same state, bit for bit."""
    e = np.array(rows, dtype=np.float64)
    chunks = [_state(e[i : i + 2], i) for i in range(0, len(e), 2)]
    whole = _state(e)
    seq = CampaignState()
    for c in chunks:
        seq = seq.merge(c)
    shuffled = chunks[:]
    rnd.shuffle(shuffled)
    tree = shuffled[0]
    for c in shuffled[1:]:
        tree = c.merge(tree) if rnd.random() < 0.5 else tree.merge(c)
    _same(seq, whole)
    _same(tree, whole)
    s = summarize(whole)
    assert s["max_error"] == e.max()
    assert s["mean_error"] == float(sum((Fraction(v) for v in e.reshape(-1)), Fraction(0)) / e.size)


def _lower_order_stat(values: np.ndarray, q: float) -> float:
    s = sorted(values.tolist(), key=lambda v: (math.isnan(v), v))
    return s[math.floor(q * (len(s) - 1))]


@pytest.mark.parametrize("seed", range(4))
def test_quantiles_within_relative_accuracy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(-25, 8, size=(300, 37)))
    e[rng.random(e.shape) < 0.1] = 0.0  # crashes that change nothing
    st_ = _state(e)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
        got = summarize(st_, (q,))["quantiles"][str(q)]
        ref = _lower_order_stat(e.reshape(-1), q)
        # DDSketch's rank convention may land on the neighbouring order statistic; both are bounded
        s = np.sort(e.reshape(-1))
        r = q * (e.size - 1)
        lo, hi = s[math.floor(r)], s[min(e.size - 1, math.floor(r) + 1)]
        assert (1 - RELATIVE_ACCURACY) * lo <= got <= (1 + RELATIVE_ACCURACY) * hi, (q, got, ref)


def test_quantiles_with_inf_and_nan_rank_on_top() -> None:
    e = np.array([[0.5, 1.0, np.inf, np.nan]])
    s = summarize(_state(e), (0.0, 0.5, 0.7, 1.0))
    assert s["quantiles"]["0.0"] == pytest.approx(0.5, rel=RELATIVE_ACCURACY)
    assert s["quantiles"]["0.5"] == pytest.approx(1.0, rel=RELATIVE_ACCURACY)
    assert s["quantiles"]["0.7"] == math.inf
    assert math.isnan(s["quantiles"]["1.0"])
    assert math.isnan(s["max_error"]) and math.isnan(s["mean_error"]) and s["nan_evaluations"] == 1
    s2 = summarize(_state(np.array([[0.5, np.inf]])), ())
    assert s2["max_error"] == math.inf and s2["mean_error"] == math.inf


def test_histogram_counts_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    at_edges = [10.0 ** (k / 10) for k in range(-125, 65, 7)]
    near = [np.nextafter(v, 0.0) for v in at_edges] + [np.nextafter(v, np.inf) for v in at_edges]
    e = np.concatenate([np.exp(rng.uniform(-35, 16, 430)), [0.0, 1e-12, 1e6, np.inf, 1.0, 5e-324], at_edges, near])
    e = e.reshape(5, -1)
    h = _state(e).histogram
    # 10^(k/10) correctly rounded, by exact rationals: walk floats from a libm guess to the two that
    # bracket the real value r (r^10 = 10^k), keep the nearer
    mids = []
    for k in range(-120, 61):
        target = Fraction(10) ** k
        v = 10.0 ** (k / 10)
        while Fraction(v) ** 10 > target:
            v = float(np.nextafter(v, 0.0))
        while Fraction(float(np.nextafter(v, np.inf))) ** 10 <= target:
            v = float(np.nextafter(v, np.inf))
        up = float(np.nextafter(v, np.inf))
        # nearer to r: compare (v + up)/2 with r, i.e. ((v + up)/2)^10 with 10^k
        mids.append(up if ((Fraction(v) + Fraction(up)) / 2) ** 10 < target else v)
    edges = [0.0, *[float(v) for v in mids], math.inf]
    ref = [0] * (len(edges) - 1)
    for v in e.reshape(-1):
        for i in range(len(edges) - 1):
            if edges[i] <= v < edges[i + 1] or (i == len(edges) - 2 and v == math.inf):
                ref[i] += 1
                break
    assert len(HIST_EDGES) == len(edges)
    assert h.tolist() == ref and sum(ref) == e.size


def test_state_size_is_constant() -> None:
    """The state after 10x more evaluations of the same distribution has no more entries."""
    rng = np.random.default_rng(0)
    small = _state(np.exp(rng.uniform(-10, 2, (100, 50))))
    big = _state(np.exp(rng.uniform(-10, 2, (10_000, 50))))
    assert len(big.sketch) <= 12 * 115 and len(big.histogram) == len(small.histogram)
    assert len(big.sketch) - len(small.sketch) <= 5


def test_cluster_interval_by_hand() -> None:
    # 4 configurations x 10 inputs, hits 0, 10, 0, 10: p = 0.5, s^2 = 1/3 of (0.25 each) ... by hand
    k = [0, 10, 0, 10]
    s1, s2 = sum(k), sum(v * v for v in k)
    r = [v / 10 for v in k]
    var = sum((x - 0.5) ** 2 for x in r) / 3  # sample variance of per-configuration rates
    n_eff = max(4.0, min(40.0, 0.25 * 4 / var))
    assert n_eff == 4.0
    assert cluster_interval(s1, s2, 4, 10) == pytest.approx(wilson(2.0, 4.0))
    # identical per-configuration rates: at least T configurations' worth, no more than T*B
    lo, hi = cluster_interval(0, 0, 50, 100)
    assert lo == pytest.approx(0.0, abs=1e-15) and hi == pytest.approx(wilson(0, 50)[1])


def test_cluster_interval_covers_where_the_naive_one_does_not() -> None:
    """Configurations differ (some crash sets break every input, most none): the interval over
    configurations covers the true rate about 95% of the time; Wilson over all evaluations does not."""
    rng = np.random.default_rng(0)
    pop = np.where(rng.random(5000) < 0.1, 1.0, 0.0) * rng.uniform(0.5, 1.0, 5000)  # per-config rates
    b = 200
    truth = pop.mean()
    cover_c = cover_n = 0
    reps = 400
    for _ in range(reps):
        rates = pop[rng.integers(0, pop.size, 100)]
        k = rng.binomial(b, rates)
        s1, s2 = int(k.sum()), int((k * k).sum())
        lo, hi = cluster_interval(s1, s2, 100, b)
        cover_c += lo <= truth <= hi
        lo, hi = wilson(s1, 100 * b)
        cover_n += lo <= truth <= hi
    assert cover_c / reps >= 0.9
    assert cover_n / reps <= 0.6


def test_cluster_interval_intermediate_design_effect() -> None:
    # 3 configurations x 4 inputs, hits 1, 2, 3: p = 0.5, rates .25 .5 .75, s^2 = 0.0625
    # n_eff = 0.25 * 3 / 0.0625 = 12 = T*B: the configurations vary exactly as much as independent inputs
    assert cluster_interval(6, 14, 3, 4) == pytest.approx(wilson(6.0, 12.0))
    # hits 0, 2, 4: s^2 = 0.25, n_eff = 3 (the floor T)
    assert cluster_interval(6, 20, 3, 4) == pytest.approx(wilson(1.5, 3.0))


# --------------------------------------------------------------------------- CampaignState: declared merges
def _full_state() -> CampaignState:
    """A chunk state in which no field keeps its empty default (NaN, inf, classifier, labels, threshold)."""
    rng = np.random.default_rng(5)
    e = np.exp(rng.uniform(-8, 2, (6, 4)))
    e[0, 0], e[1, 1], e[2, 2] = np.nan, np.inf, 0.0
    outputs = torch.as_tensor(rng.standard_normal((6, 4, 3)))
    clean = torch.as_tensor(rng.standard_normal((4, 3)))
    worst = {"error": float("nan"), "configuration": 0, "input_index": 0, "note": [1, 2]}
    return chunk_state(torch.as_tensor(e), outputs, clean, torch.tensor([0, 1, 2, 1]), worst, threshold=0.5)


def test_merge_of_two_halves_is_the_whole_campaign() -> None:
    """Shards 0/2 and 1/2 of a campaign merge to the state of the whole run; counts, max and the exact
    sum equal a brute-force replay of every configuration, quantiles are within the sketch's accuracy."""
    from faultbound.measure import CampaignSpec, chunk_faults, inject, run_campaign
    from tests.measure_helpers import make_net

    net = make_net([5, 4], ["tanh", "relu"], d_in=3, n_out=1, seed=2)
    x = net.domain.sample(7, generator=torch.Generator().manual_seed(1))
    spec = CampaignSpec(fb.Crash(), trials=45, failures=(1, 1), chunk=4, seed=9, dtype="float64")
    whole = run_campaign(net, x, spec).state
    halves = [run_campaign(net, x, spec, shard=(i, 2)).state for i in range(2)]
    assert halves[0].configurations > 0 and halves[1].configurations > 0
    merged = halves[0].merge(halves[1])
    assert merged == whole and halves[1].merge(halves[0]) == whole
    _same(merged, whole)
    # brute force: replay every chunk's configurations, keep every error
    errs = [inject(net, x, fb.Crash(), chunk_faults(net, spec, c), dtype=torch.float64).errors
            for c in range(math.ceil(spec.trials / spec.chunk))]
    ref = torch.cat(errs).numpy()
    assert ref.shape == (45, 7)
    assert merged.evaluations == ref.size and merged.configurations == 45
    assert merged.error_max == ref.max()
    assert Fraction(merged.error_sum_exact, 2**1127) == sum((Fraction(v) for v in ref.reshape(-1)), Fraction(0))
    assert int(merged.histogram.sum()) == ref.size
    s = np.sort(ref.reshape(-1))
    for q in (0.1, 0.5, 0.9):
        got = summarize(merged, (q,))["quantiles"][str(q)]
        r = q * (ref.size - 1)
        lo, hi = s[math.floor(r)], s[min(ref.size - 1, math.floor(r) + 1)]
        assert (1 - RELATIVE_ACCURACY) * lo <= got <= (1 + RELATIVE_ACCURACY) * hi, (q, got, lo, hi)


def test_save_load_round_trips_every_field(tmp_path: Path) -> None:
    st_ = _full_state()
    empty = CampaignState()
    for f in dataclasses.fields(CampaignState):  # every field is exercised
        a, b = getattr(st_, f.name), getattr(empty, f.name)
        assert not (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b), f.name
    st_.save(tmp_path / "s.npz", {"who": "test"})
    back, meta = CampaignState.load(tmp_path / "s.npz")
    assert meta["who"] == "test" and meta["format"] == CampaignState.format
    for f in dataclasses.fields(CampaignState):
        a, b = getattr(st_, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        elif f.name == "worst":  # NaN error: compare its JSON
            assert json.dumps(a) == json.dumps(b)
        else:
            assert type(a) is type(b) and a == b, f.name
    assert back.error_sum_exact > 2**64  # beyond JSON's doubles, kept exact by the hex codec


def test_a_declared_field_is_merged_and_saved_with_no_other_code(tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True, eq=False)
    class Extended(CampaignState):
        batches: int = dataclasses.field(default=0, metadata={"merge": "sum"})
        peak: float = dataclasses.field(default=-math.inf, metadata={"merge": "max"})
        tags: dict[int, int] = dataclasses.field(default_factory=dict, metadata={"merge": "sum_by_key"})

    base = _full_state()
    common = {f.name: getattr(base, f.name) for f in dataclasses.fields(CampaignState)}
    common["worst"] = {"error": 2.0, "configuration": 1, "input_index": 0}  # NaN != NaN would hide the check
    a = Extended(**common, batches=2, peak=0.25, tags={3: 1, 7: 2})
    b = Extended(**common, batches=5, peak=1.5, tags={7: 1, 9: 4})
    m = a.merge(b)
    assert (m.batches, m.peak, m.tags) == (7, 1.5, {3: 1, 7: 3, 9: 4})
    assert m.evaluations == 2 * base.evaluations and np.array_equal(m.histogram, 2 * base.histogram)
    m.save(tmp_path / "x.npz", {})
    back, _ = Extended.load(tmp_path / "x.npz")
    assert back == m and (back.batches, back.peak, back.tags) == (7, 1.5, {3: 1, 7: 3, 9: 4})
    with pytest.raises(InvalidArgumentError, match="entries"):  # the base class does not read it
        CampaignState.load(tmp_path / "x.npz")
    with pytest.raises(InvalidArgumentError, match="Expected two Extendeds"):
        a.merge(base)  # type: ignore[arg-type]


def test_a_file_of_another_format_is_refused_by_name(tmp_path: Path) -> None:
    @dataclasses.dataclass(frozen=True, eq=False)
    class Next(CampaignState):
        format: ClassVar[str] = "faultbound-campaign-state/3"
        batches: int = dataclasses.field(default=0, metadata={"merge": "sum"})

    _full_state().save(tmp_path / "old.npz", {})
    with pytest.raises(InvalidArgumentError, match="format 'faultbound-campaign-state/2', expected 'faultbound-camp"):
        Next.load(tmp_path / "old.npz")


def test_a_field_without_a_declared_merge_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, eq=False)
    class Undeclared(CampaignState):
        loose: int = 0

    with pytest.raises(TypeError, match="loose declares merge None"):
        Undeclared().merge(Undeclared())
