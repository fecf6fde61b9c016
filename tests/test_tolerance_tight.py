"""Tolerance with the tight bound: monotone, and the binary searches / staircase walk agree with
evaluating every distribution."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.bounds.tight import prepare, tight_value
from faultbound.bounds.tolerance import compare_methods, maximal_elements, tolerate
from faultbound.faults import Byzantine, Crash, SynapseCrash
from tests.test_tight import N_EXAMPLES, make_net

ACTS = ["sigmoid", "tuned3", "tanh", "relu", "gelu", "softplus", "hardtanh"]


@st.composite
def nets(draw: st.DrawFn) -> fb.Network:
    L = draw(st.integers(1, 3))
    widths = [draw(st.integers(2, 5)) for _ in range(L)]
    acts = [draw(st.sampled_from(ACTS)) for _ in range(L)]
    return make_net(draw(st.integers(0, 9999)), widths, acts, False, draw(st.sampled_from([0.5, 1.0, 2.0])))


def _grid(net: fb.Network, fault: fb.faults.Fault) -> np.ndarray:
    plan = prepare(net, fault)
    limits = [w - 1 for w in net.widths]
    vals = np.zeros([v + 1 for v in limits])
    for f in itertools.product(*[range(v + 1) for v in limits]):
        vals[f] = tight_value(plan, list(f), monotone=True)
    return vals


@settings(max_examples=max(15, N_EXAMPLES), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=nets(), q=st.floats(0.05, 0.95), fault=st.sampled_from([Crash(), Byzantine(0.5)]))
def test_monotone_search_equals_full_enumeration(net: fb.Network, q: float, fault: fb.faults.Fault) -> None:
    vals = _grid(net, fault)
    # monotone in every count (up to float rounding)
    for ax in range(vals.ndim):
        assert np.all(np.diff(vals, axis=ax) >= -1e-12 * vals.max())
    # off the grid values: plateaus (range caps) make ties that differ only by rounding
    budget = float(np.quantile(vals, q)) * (1 + 1e-9)
    res = tolerate(net, budget, 0.0, fault, method="tight")
    ok = vals <= budget
    assert res.n_tolerated == int(ok.sum())
    assert sorted(res.maximal or ()) == sorted(tuple(int(v) for v in i) for i in np.argwhere(maximal_elements(ok)))
    for l in range(net.L):
        idx = [0] * net.L
        line = []
        for v in range(net.widths[l]):
            idx[l] = v
            line.append(bool(ok[tuple(idx)]))
        assert res.per_layer_max[l] == max(i for i, b in enumerate(line) if b)
    assert ok[tuple(res.uniform_failures)]
    # each maximal distribution is certified by bound(method="tight"), which bounds exact sizes
    for m in res.maximal or ():
        assert fb.bound(net, list(m), fault, method="tight").value <= budget * (1 + 1e-12)
    assert res.n_evaluated <= vals.size
    if vals.size >= 40:
        assert res.n_evaluated < vals.size


def test_synapse_binary_search_matches_scan() -> None:
    net = make_net(3, [3, 2], ["sigmoid", "tanh"], False, 1.0)
    fault = SynapseCrash()
    plan = prepare(net, fault)
    budget = tight_value(plan, [2, 1, 1], monotone=True)
    res = tolerate(net, budget, 0.0, fault, method="tight")
    for l, lay in enumerate(net.layers):
        scan = [
            tight_value(plan, [v if i == l else 0 for i in range(net.L + 1)], monotone=True) <= budget
            for v in range(lay.n_synapses + 1)
        ]
        assert res.per_layer_max[l] == max(i for i, b in enumerate(scan) if b)
        assert all(scan[: res.per_layer_max[l] + 1])


def test_compare_methods_reports_gains() -> None:
    net = make_net(1, [4, 4, 3], ["sigmoid", "tanh", "relu"], False, 1.0)
    eps = 1.5 * fb.bound(net, [1, 1, 1], Crash(), method="tight").value
    cmp = compare_methods(net, eps, 0.0)
    assert cmp.tight.method == "tight" and cmp.paper.method == "paper"
    assert all(g >= 1 for g in cmp.per_layer_gain)
    assert cmp.tight.n_tolerated is not None and cmp.paper.n_tolerated is not None
    assert cmp.tight.n_tolerated >= cmp.paper.n_tolerated
    d = cmp.to_dict()
    assert d["tolerated_gain"] == pytest.approx(cmp.tight.n_tolerated / cmp.paper.n_tolerated)


def test_paper_path_unchanged() -> None:
    net = make_net(2, [3, 3], ["sigmoid", "sigmoid"], False, 1.0)
    res = tolerate(net, 1.0, 0.1)
    assert res.method == "paper" and res.maximal is not None and res.n_tolerated is not None
