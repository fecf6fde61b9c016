"""Boosting (Corollary 2): order-statistic latencies, late-signal masks, and soundness of the error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.apps.boosting import LatencyModel, choose_failures, latencies, simulate_boost
from faultbound.apps.faulty import crash_forward, late_masks, random_crash_masks
from faultbound.bounds.api import METHODS
from faultbound.errors import InvalidArgumentError
from tests.hyp import examples, soundness
from tests.reference import random_network


def test_latencies_match_sorted_reference() -> None:
    rng = np.random.default_rng(0)
    delays = [rng.exponential(1.0, (50, 7)), rng.exponential(1.0, (50, 4))]
    f = (2, 1)
    full, boost = latencies(delays, f)
    ref_full = sum(np.sort(d, 1)[:, -1] for d in delays)
    ref_boost = sum(np.sort(d, 1)[:, d.shape[1] - fl - 1] for d, fl in zip(delays, f, strict=True))
    assert np.allclose(full, ref_full) and np.allclose(boost, ref_boost)
    assert (boost <= full).all() and (boost < full).any()
    # waiting for everyone is boosting with f = 0
    assert np.allclose(latencies(delays, (0, 0))[1], full)


def test_late_masks_drop_exactly_the_latest() -> None:
    d = torch.tensor([[0.3, 0.9, 0.1, 0.5], [2.0, 1.0, 3.0, 0.0]], dtype=torch.float64)
    (m,) = late_masks([d], [2])
    assert m.tolist() == [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("kind", "params"), [("exponential", [2.0]), ("lognormal", [0.5, 0.3]), ("pareto", [3.0, 0.5])]
)
def test_latency_models(kind: str, params: list[float]) -> None:
    lat = LatencyModel.make(kind, params)
    x = lat.sample(np.random.default_rng(0), (20000,))
    assert (x > 0).all()
    if kind == "exponential":
        assert x.mean() == pytest.approx(2.0, rel=0.05)
    if kind == "pareto":
        assert x.min() >= 0.5 and x.mean() == pytest.approx(3.0 * 0.5 / 2.0, rel=0.05)
    if kind == "lognormal":
        assert np.median(x) == pytest.approx(np.exp(0.5), rel=0.05)


@pytest.mark.parametrize(
    ("kind", "params"),
    [("gamma", None), ("exponential", [1.0, 2.0]), ("exponential", [0.0]), ("pareto", [-1.0, 1.0]),
     ("lognormal", [0.0, float("nan")])],
)
def test_latency_model_errors(kind: str, params: list[float] | None) -> None:
    with pytest.raises(InvalidArgumentError):
        LatencyModel.make(kind, params)


def test_crash_forward_matches_one_at_a_time() -> None:
    net = random_network([5, 4], ["sigmoid", "relu"], d_in=3, n_out=2, seed=1)
    g = torch.Generator().manual_seed(0)
    masks = random_crash_masks(net, [2, 1], 6, g)
    assert all(int((1 - m).sum(1).max()) == f for m, f in zip(masks, [2, 1], strict=True))
    x = net.domain.sample(9, g)
    out = crash_forward(net, x, masks, chunk=4)
    for r in range(6):
        y = x
        for idx, layer in enumerate(net.layers):
            y = layer.forward(y)
            if layer.activation is not None:
                y = y * masks[idx][r]
        assert torch.allclose(out[r], y, atol=1e-12)


def test_simulation_is_seeded_and_faster() -> None:
    net = random_network([10, 8], ["sigmoid", "sigmoid"], d_in=3, seed=2)
    lat = LatencyModel.make("exponential")
    a = simulate_boost(net, [3, 2], lat, runs=2000, seed=5, error_runs=30)
    b = simulate_boost(net, [3, 2], lat, runs=2000, seed=5, error_runs=30)
    c = simulate_boost(net, [3, 2], lat, runs=2000, seed=6, error_runs=30)
    assert a.to_dict() == b.to_dict()
    assert a.wait_all != c.wait_all
    assert all(v > 1 for v in a.speedup.values())
    assert a.waits == (3, 7, 6)
    assert a.within_bound and a.measured_max > 0
    with pytest.raises(InvalidArgumentError):
        simulate_boost(net, [10, 0], lat, runs=10)
    with pytest.raises(InvalidArgumentError):
        simulate_boost(net, [1, 0], lat, runs=0)


def test_choose_failures_is_tolerated() -> None:
    net = random_network([8, 6], ["sigmoid", "sigmoid"], d_in=3, seed=3, scale=0.5)
    lat = LatencyModel.make("lognormal", [0, 1])
    f, notes = choose_failures(net, 1.0, 0.2, lat, method="paper")
    assert fb.bound(net, list(f), method="paper").value <= 0.8
    assert sum(f) > 0 and notes


ACTS = ["sigmoid", "tanh", "tuned2", "relu", "softplus"]


@soundness
@given(
    seed=st.integers(0, 10_000),
    acts=st.lists(st.sampled_from(ACTS), min_size=1, max_size=3),
    width=st.integers(2, 6),
    frac=st.floats(0.0, 0.9),
    kind=st.sampled_from(["exponential", "lognormal", "pareto"]),
    method=st.sampled_from(sorted(METHODS)),
    conv=st.booleans(),
)
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_boosted_error_never_exceeds_certified(
    seed: int, acts: list[str], width: int, frac: float, kind: str, method: str, conv: bool
) -> None:
    """Soundness: dropping each layer's latest signals never errs by more than the crash bound."""
    widths = [width + i for i in range(len(acts))]
    if conv:
        widths[0] = 8  # the conv front end: 2 channels of 2x2 on a 1x4x4 input
    net = random_network(widths, acts, d_in=3, n_out=2, seed=seed, scale=1.5, conv=conv)
    f = [min(n - 1, int(frac * n)) for n in widths]
    r = simulate_boost(net, f, LatencyModel.make(kind), runs=200, seed=seed, method=method, error_runs=60,
                       n_inputs=64)
    assert r.measured_max <= r.certified * (1 + 1e-9) + 1e-12
    assert r.boosted["p99"] <= r.wait_all["p99"]


def test_crash_forward_matches_measurement_engine() -> None:
    """The apps' mask forward and the measurement engine agree on the same crash sets."""
    from faultbound.measure import FaultSet, faulty_forward

    net = random_network([6, 5], ["tanh", "sigmoid"], d_in=3, n_out=2, seed=7)
    g = torch.Generator().manual_seed(1)
    f = [2, 1]
    masks = random_crash_masks(net, f, 8, g)
    sites = tuple((m == 0).nonzero()[:, 1].reshape(m.shape[0], fl) for m, fl in zip(masks, f, strict=True))
    x = net.domain.sample(5, g)
    ours = crash_forward(net, x, masks)
    engine = faulty_forward(net, x, fb.Crash(), FaultSet(8, sites), dtype=torch.float64)
    assert torch.allclose(ours, engine, atol=1e-10)
