"""The batched engine equals the naive one-configuration-at-a-time reference, for every fault model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.errors import InvalidArgumentError
from faultbound.failures import layer_count, n_units
from faultbound.faults import BitFlip
from faultbound.measure import FaultSet, clean_pass, inject, sample_faults
from faultbound.measure import engine as eng
from tests.hyp import examples, soundness
from tests.measure_helpers import make_net, naive


def _pool_bn_net() -> fb.Network:
    """Conv + batch norm + ReLU, then average pooling inside the next layer's affine chain."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(16, 5),
        torch.nn.Sigmoid(), torch.nn.Linear(5, 2),
    ).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    return fb.Network.from_torch(m, input_shape=(1, 8, 8))


NETS = {
    "dense2": lambda: make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1),
    "dense3-relu": lambda: make_net([5, 4, 6], ["relu", "relu", "sigmoid"], d_in=3, n_out=2, seed=2),
    "conv": lambda: make_net([0, 0, 5], ["relu", "tanh", "sigmoid"], conv=2, n_out=3, seed=3),
    "conv-pool-bn": _pool_bn_net,
}

FAULTS = {
    "crash": fb.Crash(),
    "stuck": fb.StuckAt(0.7),
    "byzantine": fb.Byzantine(2.0),
    "byz-dev": fb.ByzantineDeviation(0.5),
    "syn-crash": fb.SynapseCrash(),
    "syn-byz": fb.SynapseByzantine(1.5),
    "flip-f32": BitFlip("neuron", "float32", bits=tuple(range(0, 30))),
    "flip-i8": BitFlip("neuron", "int8"),
    "wflip-f32": BitFlip("weight", "float32", bits=tuple(range(0, 30))),
    "wflip-i8": BitFlip("weight", "int8"),
}


def _counts(net: fb.Network, fault: fb.faults.Fault) -> list[int]:
    n = layer_count(net, fault)
    return [min(2, n_units(net, fault, l)) if l % 2 else 1 for l in range(1, n + 1)]


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("fault_name", list(FAULTS))
@pytest.mark.parametrize("how", ["counts", "rate"])
def test_engine_equals_naive(net_name: str, fault_name: str, how: str) -> None:
    net = NETS[net_name]()
    fault = FAULTS[fault_name]
    g = torch.Generator().manual_seed(7)
    if how == "counts":
        fs = sample_faults(net, fault, 7, failures=_counts(net, fault), generator=g)
    else:
        rate = 0.03 if layer_count(net, fault) > net.L else 0.15  # synapses/weights are many
        fs = sample_faults(net, fault, 7, rate=rate, generator=g)
    x = net.domain.sample(5, generator=g)
    valued = fault_name in ("byzantine", "syn-byz", "byz-dev")
    for mode in ("random", "adversarial", "fixed") if valued else ("random",):
        res = inject(net, x, fault, fs, values=mode, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        ref = naive(net, x, fault, fs, res.values, torch.float64)
        torch.testing.assert_close(res.outputs, ref, rtol=1e-9, atol=1e-9)
        want = (ref - net.forward(x.to(torch.float64)).unsqueeze(0)).abs().amax(-1)
        torch.testing.assert_close(res.errors, want, rtol=1e-9, atol=1e-9)
        if mode == "adversarial":
            c = fault.capacity  # type: ignore[attr-defined]
            for v, sites in zip(res.values, fs.sites, strict=True):
                if v is not None and sites is not None:
                    ok = ((v.abs() - c).abs() < 1e-12) | (sites < 0)[:, None, :]
                    assert bool(ok.all())


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("mode", ["random", "adversarial", "fixed"])
def test_precision_equals_naive(net_name: str, mode: str) -> None:
    net = NETS[net_name]()
    lams = [0.05 * l for l in range(1, net.L + 1)]
    lams[0] = 0.0 if net.L > 2 else lams[0]
    fault = fb.Precision(lams)
    fs = sample_faults(net, fault, 4)
    x = net.domain.sample(6, generator=torch.Generator().manual_seed(1))
    res = inject(net, x, fault, fs, values=mode, dtype=torch.float64)
    ref = naive(net, x, fault, fs, res.values, torch.float64)
    torch.testing.assert_close(res.outputs, ref, rtol=1e-9, atol=1e-9)
    for v, lam in zip(res.values, lams, strict=True):
        if v is not None:
            assert float(v.abs().max()) <= lam + 1e-15


def test_float32_default_and_sparse_path_used() -> None:
    """A wide MLP with single crashes: float32 outputs match the float64 reference closely and the
    low-rank path is taken (the columns of A are gathered, not the layer recomputed)."""
    net = make_net([64, 64], ["sigmoid", "sigmoid"], d_in=20, n_out=4, seed=5)
    fs = sample_faults(net, fb.Crash(), 30, failures=[1, 0], generator=torch.Generator().manual_seed(0))
    x = net.domain.sample(8)
    calls: list[int] = []
    orig = eng._columns

    def spy(prep, l, idx):  # type: ignore[no-untyped-def]
        calls.append(l)
        return orig(prep, l, idx)

    eng._columns = spy  # type: ignore[assignment]
    try:
        res = inject(net, x, fb.Crash(), fs)
    finally:
        eng._columns = orig  # type: ignore[assignment]
    assert res.outputs.dtype == torch.float32
    assert 2 in calls
    ref = naive(net, x, fb.Crash(), fs, res.values, torch.float64)
    torch.testing.assert_close(res.outputs.double(), ref, rtol=1e-4, atol=1e-5)


def test_seeded_replay_and_fixed_values() -> None:
    net = NETS["dense2"]()
    fault = fb.Byzantine(1.0)
    x = net.domain.sample(4)
    a = inject(net, x, fault, sample_faults(net, fault, 5, failures=[2, 1], generator=torch.Generator().manual_seed(4)),
               generator=torch.Generator().manual_seed(9))
    fs = sample_faults(net, fault, 5, failures=[2, 1], generator=torch.Generator().manual_seed(4))
    b = inject(net, x, fault, fs, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.outputs, b.outputs)
    # replay the recorded random values as fixed ones
    fixed = FaultSet(fs.n_configs, fs.sites, values=tuple(None if v is None else v[:, 0, :] for v in b.values))
    c = inject(net, x, fault, fixed, values="fixed")
    assert torch.equal(b.outputs, c.outputs)


def test_adversarial_beats_random_on_average() -> None:
    net = NETS["dense2"]()
    fault = fb.Byzantine(1.0)
    fs = sample_faults(net, fault, 20, failures=[1, 1], generator=torch.Generator().manual_seed(0))
    x = net.domain.sample(10)
    adv = inject(net, x, fault, fs, values="adversarial", dtype=torch.float64).errors
    rnd = inject(net, x, fault, fs, values="random", dtype=torch.float64).errors
    assert float(adv.mean()) > float(rnd.mean())


def test_clean_pass_reuse_and_no_faults() -> None:
    net = NETS["conv"]()
    x = net.domain.sample(3)
    cp = clean_pass(net, x, torch.float64)
    fs = FaultSet(2, (None, None, None))
    res = inject(net, cp, fb.Crash(), fs)
    assert res.outputs.shape == (2, 3, 3)
    assert float(res.errors.max()) == 0.0


def test_bad_arguments() -> None:
    net = NETS["dense2"]()
    with pytest.raises(InvalidArgumentError, match="one count per hidden layer"):
        sample_faults(net, fb.Crash(), 3, failures=[1])
    with pytest.raises(InvalidArgumentError, match="rate"):
        sample_faults(net, fb.Crash(), 3, rate=1.5)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        sample_faults(net, fb.Crash(), 3)
    with pytest.raises(InvalidArgumentError, match="bits"):
        BitFlip("neuron", "int8", bits=(9,))
    with pytest.raises(InvalidArgumentError, match="values"):
        inject(net, net.domain.sample(2), fb.Crash(), FaultSet(1, (None, None)), values="nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="shape"):
        inject(net, torch.zeros(2, 7), fb.Crash(), FaultSet(1, (None, None)))


def test_results_never_alias_workspace_buffers() -> None:
    """Workspace buffers are reused across calls; earlier results must not change."""
    net = make_net([32, 16], ["sigmoid", "relu"], d_in=8, n_out=3, seed=9)
    x = net.domain.sample(6)
    fs1 = sample_faults(net, fb.Crash(), 12, failures=[1, 0], generator=torch.Generator().manual_seed(1))
    fs2 = sample_faults(net, fb.Crash(), 12, failures=[1, 0], generator=torch.Generator().manual_seed(2))
    r1 = inject(net, x, fb.Crash(), fs1)
    saved = r1.outputs.clone()
    inject(net, x, fb.Crash(), fs2)
    assert torch.equal(r1.outputs, saved)
    again = inject(net, x, fb.Crash(), fs1)
    assert torch.equal(again.outputs, saved)


@soundness
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conv=st.integers(0, 1),
    depth=st.integers(1, 3),
    act=st.sampled_from(["sigmoid", "tanh", "relu"]),
    seed=st.integers(0, 1000),
    kind=st.sampled_from(["crash", "byzantine", "synapse-crash", "synapse-byzantine", "stuck-at"]),
    rate=st.sampled_from([0.1, 0.3]),
)
def test_batched_equals_one_at_a_time(conv: int, depth: int, act: str, seed: int, kind: str, rate: float) -> None:
    """T configurations in one call equal T calls with one configuration each (random networks)."""
    widths = [0] * conv + [3 + (seed + i) % 4 for i in range(depth)]
    net = make_net(widths, [act] * (conv + depth), d_in=3, n_out=2, conv=conv, seed=seed)
    fault = fb.faults.parse_fault(kind, capacity=0.8, value=0.3)
    g = torch.Generator().manual_seed(seed)
    fs = sample_faults(net, fault, 6, rate=rate / (4 if kind.startswith("synapse") else 1), generator=g)
    x = net.domain.sample(4, generator=g)
    fixed = FaultSet(fs.n_configs, fs.sites, values=tuple(
        None if s is None else (torch.rand(s.shape, generator=g) * 1.6 - 0.8) for s in fs.sites))
    batched = inject(net, x, fault, fixed, values="fixed", dtype=torch.float64).outputs
    for t in range(fs.n_configs):
        one = inject(net, x, fault, fixed.select(slice(t, t + 1)), values="fixed", dtype=torch.float64).outputs
        torch.testing.assert_close(batched[t : t + 1], one, rtol=1e-12, atol=1e-12)
