"""Boosting (Corollary 2): order-statistic latencies, late-signal masks, and soundness of the error."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.apps.boosting import (
    LatencyModel,
    choose_failures,
    dag_latencies,
    latencies,
    receiver_bound,
    resolve_delays,
    simulate_boost,
    site_times,
    synapse_forward,
    synapse_latencies,
)
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
    delays=st.sampled_from(["per-synapse", "per-sender"]),
)
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_boosted_error_never_exceeds_certified(
    seed: int, acts: list[str], width: int, frac: float, kind: str, method: str, conv: bool, delays: str
) -> None:
    """Soundness: dropping the late signals (per sender or per synapse) never errs by more than the
    certificate of that delay model."""
    widths = [width + i for i in range(len(acts))]
    if conv:
        widths[0] = 8  # the conv front end: 2 channels of 2x2 on a 1x4x4 input
    net = random_network(widths, acts, d_in=3, n_out=2, seed=seed, scale=1.5, conv=conv)
    f = [min(n - 1, int(frac * n)) for n in widths]
    r = simulate_boost(net, f, LatencyModel.make(kind), runs=200, seed=seed, method=method, error_runs=60,
                       n_inputs=64, delays=delays)
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


# ------------------------------------------------------------------ per-synapse delays
def _ref_synapse_times(d: list[np.ndarray], widths: list[int], failures: list[int]) -> tuple[float, float]:
    """One run by plain loops: every receiver waits for all / its own first N - f arrivals."""
    t_all = [0.0] * widths[0]
    t_boost = [0.0] * widths[0]
    for dl, f in zip(d, failures, strict=True):
        n_recv, n_send = dl.shape
        new_all, new_boost = [], []
        for k in range(n_recv):
            new_all.append(max(t_all[j] + dl[k, j] for j in range(n_send)))
            arrivals = sorted(t_boost[j] + dl[k, j] for j in range(n_send))
            new_boost.append(arrivals[n_send - f - 1])
        t_all, t_boost = new_all, new_boost
    return max(t_all), max(t_boost)


def test_synapse_latencies_match_loop_reference() -> None:
    net = random_network([4, 3], ["sigmoid", "tanh"], d_in=2, n_out=2, seed=4)
    f = [1, 2]
    lat = LatencyModel.make("lognormal", [0.0, 1.0])
    runs = 7
    full, boost, masks = synapse_latencies(net, f, lat, np.random.default_rng(3), runs, keep=runs)
    # the same draws, in the same order (one chunk: layer by layer, shape (runs, receivers, senders))
    rng = np.random.default_rng(3)
    draws = [lat.sample(rng, (runs, m, n)) for n, m in ((4, 3), (3, 2))]
    for r in range(runs):
        a, b = _ref_synapse_times([draws[0][r], draws[1][r]], [4, 3], f)
        assert full[r] == pytest.approx(a) and boost[r] == pytest.approx(b)
    assert (boost <= full).all() and (boost < full).any()
    # every receiver keeps exactly N - f senders, the earliest to arrive at it
    assert masks[0].shape == (runs, 3, 4) and (masks[0].sum(-1) == 3).all()
    assert masks[1].shape == (runs, 2, 3) and (masks[1].sum(-1) == 1).all()
    for r in range(runs):
        for k in range(3):  # layer 1 computes at time 0, so its arrivals are the delays themselves
            late = draws[0][r, k][~masks[0][r, k]]
            assert late.min() >= draws[0][r, k][masks[0][r, k]].max()


def _ref_forward(net: fb.Network, x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """One failure pattern: receiver k of layer l+1 sums only the senders its mask keeps (loops)."""
    y = net.layers[0].forward(x.double()).reshape(x.shape[0], -1)
    for layer, m in zip(net.layers[1:], masks, strict=True):
        W = layer.effective_matrix()
        b = layer.pre(torch.zeros((1, *layer.in_shape), dtype=torch.float64)).reshape(-1)
        s = torch.stack([sum(W[k, j] * m[k, j] * y[:, j] for j in range(W.shape[1])) + b[k]
                         for k in range(W.shape[0])], 1)
        y = s if layer.activation is None else layer.activation(s)
    return y


def test_synapse_forward_matches_loops_and_crashes() -> None:
    net = random_network([4, 3], ["sigmoid", "relu"], d_in=3, n_out=2, seed=6)
    g = torch.Generator().manual_seed(2)
    x = net.domain.sample(5, g)
    masks = [(torch.rand((6, 3, 4), generator=g) < 0.7).double(), (torch.rand((6, 2, 3), generator=g) < 0.7).double()]
    out = synapse_forward(net, x, masks, chunk=4)
    for r in range(6):
        assert torch.allclose(out[r], _ref_forward(net, x, [masks[0][r], masks[1][r]]), atol=1e-12)
    # every receiver dropping the same senders is a crash of those senders
    crash = random_crash_masks(net, [1, 1], 6, g)
    same = [crash[0].unsqueeze(1).expand(6, 3, 4), crash[1].unsqueeze(1).expand(6, 2, 3)]
    assert torch.allclose(synapse_forward(net, x, same), crash_forward(net, x, crash), atol=1e-12)


@soundness
@given(
    seed=st.integers(0, 10_000),
    acts=st.lists(st.sampled_from(ACTS), min_size=1, max_size=2),
    width=st.integers(2, 3),
    f_frac=st.floats(0.0, 0.99),
    n_out=st.integers(1, 2),
)
@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_receiver_bound_covers_every_drop_pattern(
    seed: int, acts: list[str], width: int, f_frac: float, n_out: int
) -> None:
    """Brute force: every receiver dropping any f of its inputs, on domain points and corners."""
    widths = [width] * len(acts)
    net = random_network(widths, acts, d_in=2, n_out=n_out, seed=seed, scale=2.0)
    f = [min(n - 1, int(f_frac * n)) for n in widths]
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([net.domain.sample(24, g), torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])])
    recv = [layer.width for layer in net.layers[1:]]
    per_receiver = []  # for each hidden layer, every assignment of a dropped set to each receiver
    for n, m, fl in zip(widths, recv, f, strict=True):
        sets = list(itertools.combinations(range(n), fl))
        per_receiver.append(list(itertools.product(sets, repeat=m)))
    ref = net.forward(x.double())
    worst = 0.0
    for combo in itertools.product(*per_receiver):
        masks = []
        for choice, n in zip(combo, widths, strict=True):
            m = torch.ones((len(choice), n), dtype=torch.float64)
            for k, dropped in enumerate(choice):
                m[k, list(dropped)] = 0.0
            masks.append(m)
        worst = max(worst, float((_ref_forward(net, x, masks) - ref).abs().max()))
    assert worst <= receiver_bound(net, f) * (1 + 1e-9) + 1e-12


def _cancelling_network() -> fb.Network:
    """Two identical layer-2 neurons read by the output as y_a - y_b: crashes cancel, per-receiver
    drops do not."""
    from torch import nn

    l1, l2, l3 = nn.Linear(1, 2), nn.Linear(2, 2), nn.Linear(2, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        l1.bias.copy_(torch.tensor([0.5, 1.0]))
        l2.weight.copy_(torch.tensor([[3.0, -2.0], [3.0, -2.0]]))
        l2.bias.zero_()
        l3.weight.copy_(torch.tensor([[1.0, -1.0]]))
        l3.bias.zero_()
    return fb.Network.from_torch(nn.Sequential(l1, nn.Sigmoid(), l2, nn.Sigmoid(), l3))


@pytest.mark.skipif("tight" not in METHODS, reason="tight bound not registered")
def test_per_synapse_drops_can_exceed_the_tight_crash_bound() -> None:
    """Why per-synapse runs get their own certificate: receiver a drops neuron 1, receiver b neuron 2."""
    net = _cancelling_network()
    x = torch.linspace(0, 1, 101, dtype=torch.float64).reshape(-1, 1)
    masks = [torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), torch.ones((1, 1, 2))]
    err = float((synapse_forward(net, x, masks) - net.forward(x)).abs().max())
    crash_tight = fb.bound(net, [1, 0], fb.Crash(), method="tight").value
    assert err > crash_tight * 1.01
    assert err <= receiver_bound(net, [1, 0])
    # every crash of one layer-1 neuron leaves the output unchanged (both receivers move alike)
    for m in ([[0.0, 1.0]], [[1.0, 0.0]]):
        crashed = crash_forward(net, x, [torch.tensor(m, dtype=torch.float64), torch.ones((1, 2))])
        assert float((crashed - net.forward(x)).abs().max()) < 1e-12
    r = simulate_boost(net, [1, 0], LatencyModel.make("exponential"), runs=400, error_runs=200, method="tight")
    assert r.delays == "per-synapse" and r.crash_certified == pytest.approx(crash_tight)
    assert r.measured_max > crash_tight and r.within_bound


def test_probe_description_says_which_corners() -> None:
    from faultbound.apps.precision import probe_description, samples_corners_and_data

    small = random_network([3], ["sigmoid"], d_in=3)
    assert "all 8 domain corners" in probe_description(small, None, 10)
    assert samples_corners_and_data(small, None, 10).shape[0] == 10 + 8
    wide = random_network([3], ["sigmoid"], d_in=12)
    text = probe_description(wide, np.zeros((5, 12)), 10)
    assert "256 random domain corners" in text and "5 data points" in text
    assert samples_corners_and_data(wide, np.zeros((5, 12)), 10).shape[0] == 10 + 256 + 5
    r = simulate_boost(wide, [1], LatencyModel.make("exponential"), runs=50, error_runs=5, n_inputs=10)
    assert "256 random domain corners" in r.to_dict()["inputs"]


# ------------------------------------------------------------------ graph networks, per-sender delays


def test_dag_latencies_on_a_chain_are_the_chain_formula_bit_for_bit() -> None:
    net = random_network([7, 5, 4], ["sigmoid", "relu", "tanh"], d_in=3, seed=4)
    g = fb.GraphNetwork.from_network(net)
    assert g.site_predecessors == net.site_predecessors == ((), (0,), (1,))
    assert g.output_sites == net.output_sites == (2,)
    rng = np.random.default_rng(1)
    delays = [rng.lognormal(0.0, 1.0, (300, n)) for n in g.widths]
    for f in [(0, 0, 0), (2, 1, 3), (6, 4, 0)]:
        full, boost = dag_latencies(delays, f, g.site_predecessors, g.output_sites)
        ref_full, ref_boost = latencies(delays, f)
        assert np.array_equal(full, ref_full) and np.array_equal(boost, ref_boost)


class _TwoBranches(torch.nn.Module):
    """Site 1 = r1(a(x)); site 2 = r2(b(site 1)); site 3 = r3(c(x)) (a parallel branch from the
    input); the output reads site 2 + site 1 (a residual sum) + site 3."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(2, 3), torch.nn.Linear(3, 3), torch.nn.Linear(2, 3)
        self.r1, self.r2, self.r3 = torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.ReLU()
        self.out = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.r1(self.a(x))
        h2 = self.r2(self.b(h1))
        h3 = self.r3(self.c(x))
        return self.out(h2 + h1 + h3)


def test_dag_latencies_of_a_residual_graph_by_hand() -> None:
    torch.manual_seed(0)
    net = fb.load(_TwoBranches().eval(), input_shape=(2,))
    assert isinstance(net, fb.GraphNetwork)
    assert [s.name for s in net.sites] == ["r1", "r2", "r3"]
    # site 1 and site 3 read the input only; site 2 reads site 1; the output reads all three
    assert net.site_predecessors == ((), (0,), ())
    assert net.output_sites == (0, 1, 2)
    d1 = np.array([[1.0, 5.0, 2.0], [0.5, 0.5, 0.5]])
    d2 = np.array([[4.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    d3 = np.array([[2.0, 2.0, 7.0], [10.0, 1.0, 2.0]])
    f = (1, 1, 1)
    t = site_times([d1, d2, d3], f, net.site_predecessors)
    # run 0, wait for all: A1 = 0 + 5; T2 = A1 = 5, A2 = 5 + 4 = 9; A3 = 0 + 7; latency max(5, 9, 7) = 9
    # run 0, boosted (2nd smallest of 3): A1 = 2; T2 = 2, A2 = 2 + 3 = 5; A3 = 2; latency 5
    # run 1, wait for all: A1 = 0.5; T2 = 0.5, A2 = 1.5; A3 = 10; latency 10 (the parallel branch)
    # run 1, boosted: A1 = 0.5; A2 = 1.5; A3 = 2; latency 2
    assert [c.tolist() for c in t.compute_all] == [[0, 0], [5, 0.5], [0, 0]]
    assert [c.tolist() for c in t.compute_boosted] == [[0, 0], [2, 0.5], [0, 0]]
    assert [a.tolist() for a in t.ready_all] == [[5, 0.5], [9, 1.5], [7, 10]]
    assert [a.tolist() for a in t.ready_boosted] == [[2, 0.5], [5, 1.5], [2, 2]]
    full, boost = dag_latencies([d1, d2, d3], f, net.site_predecessors, net.output_sites)
    assert full.tolist() == [9, 10] and boost.tolist() == [5, 2]
    with pytest.raises(InvalidArgumentError):
        dag_latencies([d1, d2, d3], f, ((), (2,), ()), (0,))


@pytest.fixture(scope="module")
def resnet() -> tuple[torch.nn.Module, fb.GraphNetwork]:
    from faultbound.models import small_resnet

    module = small_resnet()
    net = fb.load(module, input_shape=(1, 8, 8))
    assert isinstance(net, fb.GraphNetwork)
    return module, net


def _late_zeroed_errors(module: torch.nn.Module, names: list[str], delays: list[np.ndarray], f: list[int],
                        x: torch.Tensor) -> list[float]:
    """Reference in plain torch: per run, the module (float64) with the f_s units of largest delay of
    each activation s replaced by 0 by a forward hook; the largest |output change| over x."""
    m = module.double().eval()
    mods = dict(m.named_modules())
    x = x.to(torch.float64)
    with torch.no_grad():
        ref = m(x)
    errs = []
    for r in range(delays[0].shape[0]):
        hooks = []
        for name, d, fs in zip(names, delays, f, strict=True):
            late = np.argsort(-d[r], kind="stable")[:fs]
            keep = torch.ones(d.shape[1], dtype=torch.float64)
            keep[torch.as_tensor(late)] = 0.0

            def hook(_m: torch.nn.Module, _i: object, out: torch.Tensor, keep: torch.Tensor = keep) -> torch.Tensor:
                return (out.reshape(out.shape[0], -1) * keep).reshape(out.shape)

            hooks.append(mods[name].register_forward_hook(hook))
        with torch.no_grad():
            errs.append(float((m(x) - ref).abs().max()))
        for h in hooks:
            h.remove()
    return errs


def test_per_sender_boost_on_a_resnet_matches_torch_hooks(resnet: tuple[torch.nn.Module, fb.GraphNetwork]) -> None:
    from faultbound.apps.precision import samples_corners_and_data

    module, net = resnet
    f = [3, 2, 4, 1, 5]
    lat = LatencyModel.make("exponential", [1.0])
    runs, k, seed = 400, 5, 11
    r = simulate_boost(net, f, lat, runs=runs, seed=seed, error_runs=k, n_inputs=16, delays="per-sender")
    assert r.delays == "per-sender" and r.failures == tuple(f) and r.error_runs == k
    assert r.waits == tuple(n - fs for n, fs in zip(net.widths, f, strict=True))
    assert r.within_bound and 0 < r.measured_max <= r.certified
    assert r.certified == pytest.approx(fb.bound(net, f, fb.Crash(), method="tight").value, rel=1e-12)
    assert r.boosted["median"] < r.wait_all["median"]
    # the delays the simulation draws (documented): site after site, lat.sample(rng, (runs, N_s))
    rng = np.random.default_rng(seed)
    delays = [rng.exponential(1.0, (runs, n)) for n in net.widths]
    full, boost = dag_latencies(delays, f, net.site_predecessors, net.output_sites)
    assert r.wait_all["mean"] == pytest.approx(float(full.mean()), rel=1e-12)
    assert r.boosted["median"] == pytest.approx(float(np.quantile(boost, 0.5)), rel=1e-12)
    x = samples_corners_and_data(net, None, 16, seed)
    ref = _late_zeroed_errors(module, [s.name for s in net.sites], [d[:k] for d in delays], f, x)
    assert r.measured_max == pytest.approx(max(ref), rel=1e-9, abs=1e-12)
    assert r.measured_median == pytest.approx(float(np.median(ref)), rel=1e-9, abs=1e-12)


def test_graph_delay_models_and_choose_failures(resnet: tuple[torch.nn.Module, fb.GraphNetwork]) -> None:
    _, net = resnet
    lat = LatencyModel.make("exponential")
    assert resolve_delays(net, "auto") == "per-sender"
    chain = random_network([5, 4], ["sigmoid", "tanh"], d_in=3, seed=1)
    assert resolve_delays(chain, "auto") == "per-synapse"
    # a convolution front end is layer 1: no hidden neuron receives through it, so per synapse applies
    assert resolve_delays(random_network([8, 4], ["relu", "tanh"], conv=True, seed=1), "auto") == "per-synapse"
    with pytest.raises(InvalidArgumentError, match="layered network of dense layers.*per-sender"):
        simulate_boost(net, [1, 0, 0, 0, 0], lat, runs=10, delays="per-synapse")
    with pytest.raises(InvalidArgumentError, match="layered network of dense layers"):
        choose_failures(net, 0.5, 0.1, lat, delays="per-synapse")
    with pytest.raises(InvalidArgumentError):
        resolve_delays(net, "per-neuron")
    f, notes = choose_failures(net, 0.5, 0.1, lat, delays="auto", pilot_runs=300)
    assert sum(f) > 0 and "per-sender" in notes[0]
    assert fb.bound(net, list(f), fb.Crash(), method="tight").value <= 0.4
    # the pick has the smallest median DAG latency among the candidates the notes count
    rng = np.random.default_rng(7919)
    pilot = [lat.sample(rng, (300, n)) for n in net.widths]
    med = float(np.median(dag_latencies(pilot, f, net.site_predecessors, net.output_sites)[1]))
    for other in [(0,) * 5, tuple(min(1, v) for v in f)]:
        assert med <= float(np.median(dag_latencies(pilot, other, net.site_predecessors, net.output_sites)[1]))


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    from faultbound.models import small_resnet

    p = tmp_path_factory.mktemp("boost") / "small_resnet.pt2"
    torch.export.save(torch.export.export(small_resnet(), (torch.rand(1, 1, 8, 8),)), str(p))
    return str(p)


def test_cli_boost_on_a_graph(resnet_file: str) -> None:
    import json

    from tests.cli_run import run

    small = ["--runs", "300", "--error-runs", "3", "--samples", "8"]
    r = run("boost", resnet_file, "--failures", "all=1", *small, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["failures"] == [1] * 5 and out["delays"] == "per-sender" and out["within_bound"]
    assert out["waits"] == [511, 511, 511, 255, 255] and out["method"] == "tight"
    r = run("boost", resnet_file, "--failures", "relu=2,layers.1.0.relu2=4", *small, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["failures"] == [2, 0, 0, 0, 4] and out["measured_max_error"] <= out["certified"]
    r = run("boost", resnet_file, "--failures", "all=1", *small)
    assert r.returncode == 0 and "per-sender delays" in r.stdout
    r = run("boost", resnet_file, "--failures", "all=1", "--delays", "per-synapse", *small)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("error:")
    assert len(r.stderr.strip().splitlines()) == 1 and "per-sender" in r.stderr
    r = run("boost", resnet_file, "--failures", "nosuch=1", *small)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
