"""Worst-case search and soundness: nothing measured or found ever exceeds a certified bound
(``method="paper"`` and every other registered method, e.g. ``"tight"``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.bounds.api import METHODS
from faultbound.errors import InvalidArgumentError
from faultbound.failures import layer_count, n_units
from faultbound.faults import BitFlip, Fault
from faultbound.measure import FaultSet, inject, sample_faults, worst_case
from tests.hyp import examples, soundness
from tests.measure_helpers import make_net

TOL = 1e-9


@st.composite
def nets(draw: st.DrawFn) -> fb.Network:
    conv = draw(st.integers(0, 1))
    depth = draw(st.integers(1, 3 - conv))
    acts = [draw(st.sampled_from(["sigmoid", "tanh", "relu"])) for _ in range(depth + conv)]
    widths = [0] * conv + [draw(st.integers(2, 5)) for _ in range(depth)]
    return make_net(widths, acts, d_in=draw(st.integers(1, 3)), n_out=draw(st.integers(1, 3)), conv=conv,
                    seed=draw(st.integers(0, 10_000)), scale=draw(st.sampled_from([0.5, 1.0, 2.0])))


def _fault_and_failures(draw: st.DrawFn, net: fb.Network) -> tuple[Fault, list[int] | None]:
    kind = draw(st.sampled_from(
        ["crash", "byzantine", "byzantine-deviation", "stuck-at", "synapse-crash", "synapse-byzantine", "precision"]
    ))
    if kind == "precision":
        return fb.Precision([draw(st.sampled_from([0.0, 0.01, 0.1])) for _ in range(net.L)]), None
    fault = fb.faults.parse_fault(kind, capacity=draw(st.sampled_from([0.5, 1.0, 3.0])), value=draw(
        st.sampled_from([-2.0, 0.5, 1.0])))
    n = layer_count(net, fault)
    failures = [draw(st.integers(0, min(2, n_units(net, fault, l) - 1))) for l in range(1, n + 1)]
    return fault, failures


@soundness
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_measured_errors_never_exceed_bound(data: st.DataObject) -> None:
    net = data.draw(nets())
    fault, failures = _fault_and_failures(data.draw, net)
    bound = min(fb.bound(net, failures, fault, method=m).value for m in METHODS)  # every certificate
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    fs = sample_faults(net, fault, 16, failures=failures, generator=g)
    x = torch.cat([net.domain.sample(12, generator=g), net.domain.lo[None], net.domain.hi[None]])
    for mode in ("random", "adversarial"):
        e = inject(net, x, fault, fs, values=mode, dtype=torch.float64, generator=g).errors
        assert float(e.max()) <= bound + TOL, (mode, float(e.max()), bound)


@soundness
@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_search_never_exceeds_bound(data: st.DataObject) -> None:
    net = data.draw(nets())
    fault, failures = _fault_and_failures(data.draw, net)
    bound = min(fb.bound(net, failures, fault, method=m).value for m in METHODS)
    r = worst_case(net, fault, failures, n_probe=8, steps=6, restarts=3, refine=2, exhaustive_limit=5_000)
    assert 0.0 <= r.max_error <= bound + TOL
    x = torch.tensor(r.input, dtype=torch.float64)
    assert bool(((x >= net.domain.lo.reshape(-1)) & (x <= net.domain.hi.reshape(-1))).all())


def test_result_replays_and_beats_random_campaign() -> None:
    net = make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1)
    fault = fb.Byzantine(1.0)
    r = worst_case(net, fault, [1, 1], seed=3)
    assert r.exhaustive and r.evaluations > 0
    assert set(r.to_dict()) >= {"max_error", "exhaustive", "failure_set", "input", "evaluations", "values"}
    # replay: the recorded set, input and values give the recorded error
    sites = {int(k): list(v) for k, v in r.failure_set.items()}
    fs = FaultSet.from_lists(2, sites)
    if r.values:
        fs = FaultSet(1, fs.sites, values=tuple(
            None if s is None else torch.tensor([r.values[i + 1]]) for i, s in enumerate(fs.sites)))
        e = inject(net, torch.tensor([r.input]), fault, fs, values="fixed", dtype=torch.float64).errors
        assert float(e[0, 0]) == pytest.approx(r.max_error, rel=1e-9)
    # a random campaign of the same size never does better
    fs = sample_faults(net, fault, 64, failures=[1, 1])
    e = inject(net, net.domain.sample(64), fault, fs, dtype=torch.float64).errors
    assert float(e.max()) <= r.max_error + TOL


def test_beam_close_to_exhaustive() -> None:
    net = make_net([8, 8], ["sigmoid", "sigmoid"], d_in=3, n_out=1, seed=4, scale=2.0)
    ex = worst_case(net, fb.Crash(), [2, 1], n_probe=16, steps=10)
    bm = worst_case(net, fb.Crash(), [2, 1], n_probe=16, steps=10, exhaustive_limit=0)
    assert ex.exhaustive and not bm.exhaustive
    assert bm.max_error >= 0.95 * ex.max_error
    assert bm.evaluations < ex.evaluations


@pytest.mark.parametrize("limit", [10**9, 0], ids=["exhaustive", "beam"])
def test_result_does_not_depend_on_where_the_batches_are_scored(limit: int) -> None:
    """The contract a distributed scorer relies on: scoring the batches one at a time, in reverse order,
    each in a fresh call (as separate workers would), and concatenating gives the in-process result."""
    from faultbound.measure.search import score_batches

    net = make_net([9, 6], ["relu", "tanh"], d_in=3, n_out=2, seed=2)
    calls: list[int] = []

    def scattered(net_, fault_, sets, x, dtype, seeds, batch):  # type: ignore[no-untyped-def]
        parts = {}
        for i in reversed(range(len(seeds))):
            parts[i] = score_batches(net_, fault_, sets[i * batch : (i + 1) * batch], x, dtype, seeds[i : i + 1], batch)
        calls.append(len(seeds))
        return (torch.cat([parts[i][0] for i in range(len(seeds))]),
                torch.cat([parts[i][1] for i in range(len(seeds))]))

    kw = {"n_probe": 6, "steps": 3, "batch": 7, "exhaustive_limit": limit}
    ref = worst_case(net, fb.Byzantine(0.7), [2, 1], **kw)
    got = worst_case(net, fb.Byzantine(0.7), [2, 1], scorer=scattered, **kw)
    assert max(calls) > 1  # several batches were scored apart
    assert got == ref
    assert ref.exhaustive == (limit > 0)


def test_bad_arguments() -> None:
    net = make_net([4], ["sigmoid"], d_in=2, n_out=1)
    with pytest.raises(InvalidArgumentError, match="one count per hidden layer"):
        worst_case(net, fb.Crash(), [1, 1])
    with pytest.raises(InvalidArgumentError, match="bit flips"):
        worst_case(net, BitFlip(), [1])
    with pytest.raises(InvalidArgumentError, match="Lemma 1"):
        worst_case(net, fb.Byzantine(float("inf")), [1])


# --------------------------------------------------------------------------- typed result and settings
WORST_CASE_KEYS = [
    "max_error", "failure_set", "input", "values", "probe_max_error", "exhaustive", "evaluations", "sets_total",
    "seed", "fault", "failures", "probes",
]


@pytest.mark.parametrize(
    ("fault", "failures"),
    [(fb.Byzantine(0.9), [1, 1]), (fb.Crash(), [2, 0]), (fb.Precision((0.1, 0.2)), None)],
    ids=["byzantine", "crash", "precision"],
)
def test_worst_case_to_dict_keeps_the_json_shape(fault: Fault, failures: list[int] | None) -> None:
    """The JSON the CLI and the report print: these keys in this order, string layer keys, lists."""
    import json

    net = make_net([4, 3], ["tanh", "sigmoid"], d_in=2, n_out=2, seed=7)
    r = worst_case(net, fault, failures, n_probe=4, steps=3, restarts=2)
    d = r.to_dict()
    assert list(d) == WORST_CASE_KEYS
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    assert d["max_error"] == r.max_error and d["exhaustive"] is True and d["seed"] == 0
    assert d["fault"] == fault.to_dict()
    assert d["failures"] == failures
    assert isinstance(d["input"], list) and len(d["input"]) == 2 and d["probes"] == r.probes >= 4 + 4
    assert d["failure_set"] == {str(l): list(u) for l, u in r.failure_set.items()}
    assert all(isinstance(k, str) and isinstance(v, list) for k, v in d["failure_set"].items())
    if failures is None:
        assert d["failure_set"] == {} and d["values"] is None and d["sets_total"] == 1
    else:
        assert [len(d["failure_set"].get(str(l), [])) for l in (1, 2)] == failures
    if isinstance(fault, fb.Byzantine) and d["values"] is not None:
        assert set(d["values"]) == set(d["failure_set"])
        assert all(abs(v) <= 0.9 for vs in d["values"].values() for v in vs)
    assert r.strategy == "exhaustive"


def test_search_spec_and_keywords_are_one_path() -> None:
    from faultbound.measure import SearchSpec

    net = make_net([5, 4], ["relu", "tanh"], d_in=2, n_out=1, seed=3)
    spec = SearchSpec(n_probe=4, steps=3, restarts=2, seed=5)
    by_spec = worst_case(net, fb.Crash(), [1, 1], spec)
    by_kw = worst_case(net, fb.Crash(), [1, 1], n_probe=4, steps=3, restarts=2, seed=5)
    by_both = worst_case(net, fb.Crash(), [1, 1], SearchSpec(n_probe=4, steps=9, restarts=2), steps=3, seed=5)
    assert by_spec == by_kw == by_both
    # the strategy names say what the limit said
    beam = worst_case(net, fb.Crash(), [1, 1], spec, strategy="beam")
    assert beam == worst_case(net, fb.Crash(), [1, 1], spec, exhaustive_limit=0) and beam.strategy == "beam"
    assert worst_case(net, fb.Crash(), [1, 1], spec, strategy="exhaustive", exhaustive_limit=0) == by_spec
    with pytest.raises(InvalidArgumentError, match="beam, refine"):
        SearchSpec(beam=0)
    with pytest.raises(InvalidArgumentError, match="strategy"):
        SearchSpec(strategy="greedy")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="but got stpes"):
        worst_case(net, fb.Crash(), [1, 1], stpes=3)
    with pytest.raises(InvalidArgumentError, match="beam, refine"):
        worst_case(net, fb.Crash(), [1, 1], spec, refine=0)


# --------------------------------------------------------------------------- sampled ranking (large graphs)
def test_ranked_units_sample_each_faulty_layer() -> None:
    """``max_units`` ranks a uniform sample of at least f units of each faulty layer, all of them
    when the layer is no larger, and none of a layer without failures."""
    from faultbound.measure.search import _ranked_units

    net = make_net([30, 4, 12], ["relu", "tanh", "sigmoid"], d_in=2, n_out=1, seed=5)
    g = torch.Generator().manual_seed(1)
    got = _ranked_units(net, fb.Crash(), (1, 2, 0), 6, g)
    assert len(got[0]) == 6 and got[0] == sorted(set(got[0])) and all(0 <= u < 30 for u in got[0])
    assert got[1] == [0, 1, 2, 3] and got[2] == []
    assert len(_ranked_units(net, fb.Crash(), (9, 0, 0), 6, g)[0]) == 9  # never fewer than f
    assert _ranked_units(net, fb.Crash(), (1, 1, 1), None, g) == [list(range(30)), list(range(4)), list(range(12))]
    # different draws sample different units (the sample is random, not the first units)
    draws = {tuple(_ranked_units(net, fb.Crash(), (1, 0, 0), 6, g)[0]) for _ in range(5)}
    assert len(draws) > 1 and any(max(d) >= 6 for d in draws)


def test_max_units_search_is_cheaper_and_stays_below_the_bound() -> None:
    net = make_net([40, 30], ["tanh", "relu"], d_in=3, n_out=2, seed=11)
    kw = {"n_probe": 4, "steps": 3, "restarts": 2, "exhaustive_limit": 0, "candidates": 4}
    full = worst_case(net, fb.Crash(), [2, 1], **kw)
    sampled = worst_case(net, fb.Crash(), [2, 1], max_units=5, **kw)
    assert sampled.evaluations < full.evaluations and not sampled.exhaustive
    assert [len(sampled.failure_set.get(l, ())) for l in (1, 2)] == [2, 1]
    assert sampled.max_error <= fb.bound(net, [2, 1], fb.Crash(), "tight").value + TOL
    # a sample as large as every layer is no sample: the same search as max_units=None
    assert worst_case(net, fb.Crash(), [2, 1], max_units=40, **kw) == full
    with pytest.raises(InvalidArgumentError, match="max_units"):
        worst_case(net, fb.Crash(), [2, 1], max_units=0)


def test_default_spec_samples_units_only_on_large_graphs() -> None:
    from faultbound.measure.search import LARGE_NETWORK_BUDGET, SearchSpec, _macs, default_spec
    from faultbound.network.graph import GraphNetwork

    small = make_net([5, 4], ["relu", "tanh"], d_in=2, n_out=1, seed=3)
    assert default_spec(small) == SearchSpec() and default_spec(GraphNetwork.from_network(small)) == SearchSpec()
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(64 * 32 * 32, 2))
    big = GraphNetwork.from_network(fb.load(module, input_shape=(32, 32, 32)))
    macs = 32 * 64 * 9 * 1024 + 64 * 64 * 9 * 1024 + 64 * 1024 * 2  # multiply-adds by hand
    assert _macs(big) == macs > 5e7
    spec = default_spec(big)
    evals = max(256, int(LARGE_NETWORK_BUDGET / macs))
    assert (spec.max_evaluations, spec.max_units, spec.restarts, spec.steps) == (evals, evals // 2, 2, 10)
