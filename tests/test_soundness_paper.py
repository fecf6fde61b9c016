"""Property tests: the paper's (sound) bound is never exceeded by brute force.

Random networks (1-4 hidden layers, every registered activation, dense and conv), every failure set
of the drawn sizes enumerated, Byzantine values at every +-C sign pattern and at random, many
inputs including the domain's corners.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from tests.hyp import examples, soundness
from tests.reference import ACTS, brute_force, byzantine_deviation_forward_worst, probe_points, random_network

TOL = 1e-9
SETTINGS = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def networks(draw: st.DrawFn, max_layers: int = 4, allow_conv: bool = True) -> fb.Network:
    L = draw(st.integers(1, max_layers))
    conv = draw(st.sampled_from([False, "stride", "pool"])) if allow_conv and L >= 2 else False
    widths = [draw(st.integers(2, 3)) for _ in range(L)]
    if conv:
        widths[0] = 32 if conv == "pool" else 8
    acts = [draw(st.sampled_from(sorted(ACTS))) for _ in range(L)]
    seed = draw(st.integers(0, 10_000))
    scale = draw(st.sampled_from([0.5, 1.5, 4.0]))
    lo = draw(st.sampled_from([0.0, -1.0]))
    return random_network(widths, acts, d_in=2, n_out=draw(st.integers(1, 2)), conv=conv, seed=seed,
                          scale=scale, domain=(lo, 1.0))


def _failures(draw: st.DrawFn, net: fb.Network, total_max: int = 2) -> list[int]:
    f = [0] * net.L
    for _ in range(draw(st.integers(0, total_max))):
        l = draw(st.integers(0, net.L - 1))
        if f[l] < min(net.widths[l] - 1, 2 if net.widths[l] < 8 else 1):
            f[l] += 1
    return f


@soundness
@SETTINGS
@given(data=st.data())
def test_crash_never_exceeds_paper_bound(data: st.DataObject) -> None:
    net = data.draw(networks())
    f = _failures(data.draw, net)
    x = probe_points(net, n_random=16, seed=data.draw(st.integers(0, 100)))
    b = fb.bound(net, f, fb.Crash()).value
    assert brute_force(net, f, fb.Crash(), x) <= b + TOL


@soundness
@SETTINGS
@given(data=st.data())
def test_byzantine_never_exceeds_paper_bound(data: st.DataObject) -> None:
    net = data.draw(networks(max_layers=3))
    f = _failures(data.draw, net)
    c = data.draw(st.sampled_from([0.1, 1.0, 3.0]))
    x = probe_points(net, n_random=8)
    fault = fb.Byzantine(c)
    assert brute_force(net, f, fault, x) <= fb.bound(net, f, fault).value + TOL


@soundness
@SETTINGS
@given(data=st.data())
def test_byzantine_deviation_never_exceeds_paper_bound(data: st.DataObject) -> None:
    """Byzantine deviation: a failing neuron sends its fault-free value + u, |u| <= C."""
    net = data.draw(networks(max_layers=3, allow_conv=False))
    f = _failures(data.draw, net)
    c = data.draw(st.sampled_from([0.25, 1.0, 3.0]))
    x = probe_points(net, 16, seed=3)
    worst = byzantine_deviation_forward_worst(net, f, c, x)
    for method in ("paper", "tight"):
        assert worst <= fb.bound(net, f, fb.ByzantineDeviation(c), method=method).value + TOL, method


@soundness
@SETTINGS
@given(data=st.data())
def test_stuck_at_never_exceeds_paper_bound(data: st.DataObject) -> None:
    net = data.draw(networks(max_layers=3))
    f = _failures(data.draw, net)
    fault = fb.StuckAt(data.draw(st.sampled_from([-2.0, 0.5, 5.0])))
    x = probe_points(net, n_random=8)
    assert brute_force(net, f, fault, x) <= fb.bound(net, f, fault).value + TOL


@soundness
@SETTINGS
@given(data=st.data())
def test_synapse_faults_never_exceed_paper_bound(data: st.DataObject) -> None:
    net = data.draw(networks(max_layers=2, allow_conv=False))
    g = [0] * (net.L + 1)
    for _ in range(data.draw(st.integers(1, 2))):
        g[data.draw(st.integers(0, net.L))] += 1
    fault = data.draw(st.sampled_from([fb.SynapseCrash(), fb.SynapseByzantine(0.5), fb.SynapseByzantine(2.0)]))
    x = probe_points(net, n_random=8)
    assert brute_force(net, g, fault, x) <= fb.bound(net, g, fault).value + TOL


@soundness
@SETTINGS
@given(data=st.data())
def test_precision_never_exceeds_theorem5(data: st.DataObject) -> None:
    net = data.draw(networks())
    lam = [data.draw(st.sampled_from([0.0, 0.01, 0.1])) for _ in range(net.L)]
    fault = fb.Precision(lam)
    x = probe_points(net, n_random=8)
    assert brute_force(net, None, fault, x) <= fb.bound(net, fault=fault).value + TOL


@soundness
@SETTINGS
@given(data=st.data())
def test_bound_is_finite_and_contributions_sum(data: st.DataObject) -> None:
    net = data.draw(networks())
    f = _failures(data.draw, net)
    res = fb.bound(net, f, fb.Crash())
    assert math.isfinite(res.value)
    assert abs(sum(res.per_layer) - res.value) <= 1e-9 * max(1.0, res.value)
