"""The batched engine equals the naive one-configuration-at-a-time reference, for every fault model.

Graph networks (the second part of this file): the graph engine (measure/graph_engine.py) against a
slow reference (tests/graph_engine_reference.py) on small hand-built graphs that contain every graph
operator, for every fault model; the synapse numbering against the effective matrix; the windowed
update against whole-map recomputation.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.errors import InvalidArgumentError
from faultbound.failures import layer_count, n_units
from faultbound.faults import BitFlip
from faultbound.measure import FaultSet, clean_pass, graph_engine, inject, sample_faults
from faultbound.measure.graph_engine import graph_inject, synapse_pairs
from faultbound.network import activations as A  # noqa: N812
from faultbound.network import gops as G  # noqa: N812
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten
from tests.graph_engine_reference import effective_pairs, ref_faulty
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
    low-rank path is taken (the second dense node is updated from the crashed unit's column of W,
    not recomputed)."""
    net = make_net([64, 64], ["sigmoid", "sigmoid"], d_in=20, n_out=4, seed=5)
    fs = sample_faults(net, fb.Crash(), 30, failures=[1, 0], generator=torch.Generator().manual_seed(0))
    x = net.domain.sample(8)
    calls: list[int] = []
    orig = graph_engine._low_rank_node

    def spy(ctx, i, st, last):  # type: ignore[no-untyped-def]
        got = orig(ctx, i, st, last)
        if got is not None:
            calls.append(i)
        return got

    graph_engine._low_rank_node = spy  # type: ignore[assignment]
    try:
        res = inject(net, x, fb.Crash(), fs)
    finally:
        graph_engine._low_rank_node = orig  # type: ignore[assignment]
    assert res.outputs.dtype == torch.float32
    assert calls  # the dense node after the crashed layer took the low-rank update
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


# ============================================================================= graph networks
def _r(*shape: int, g: torch.Generator, s: float = 0.5) -> torch.Tensor:
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * s)


def image_graph(seed: int = 0) -> GraphNetwork:
    """conv, relu, channel affine, conv, add, group norm, tanh, concat, max pool, avg pool, mul,
    strided conv, relu, mean, flatten, dense x2, add."""
    g = torch.Generator().manual_seed(seed)
    nodes = [
        ("x", G.Input(), ()),
        ("c1", G.Affine(Conv(_r(3, 2, 3, 3, g=g), _r(3, g=g), (1, 1), (1, 1))), (0,)),
        ("a1", G.Act(A.ReLU()), (1,)),
        ("bn", G.Affine(ChannelAffine(_r(3, g=g) + 1, _r(3, g=g))), (2,)),
        ("c2", G.Affine(Conv(_r(3, 3, 3, 3, g=g), _r(3, g=g), (1, 1), (1, 1))), (3,)),
        ("ad", G.Add((1, 1)), (4, 2)),
        ("gn", G.Norm(None, 1, 1e-5, _r(3, g=g) + 1, _r(3, g=g)), (5,)),
        ("a2", G.Act(A.Tanh()), (6,)),
        ("cat", G.Concat(1), (7, 2)),
        ("mp", G.MaxPool((2, 2), (2, 2), (1, 1)), (8,)),
        ("ap", G.Affine(AvgPool((3, 3), (1, 1), (1, 1))), (9,)),
        ("mu", G.Mul(), (10, 9)),
        ("c3", G.Affine(Conv(_r(4, 6, 2, 2, g=g), _r(4, g=g), (2, 2), (1, 1))), (11,)),
        ("a3", G.Act(A.ReLU()), (12,)),
        ("me", G.Mean((2, 3)), (13,)),
        ("fl", G.Affine(Flatten()), (13,)),
        ("d1", G.Affine(Dense(_r(3, 4, g=g), _r(3, g=g))), (14,)),
        ("d2", G.Affine(Dense(_r(3, 36, g=g), _r(3, g=g))), (15,)),
        ("out", G.Add((1, -1)), (16, 17)),
    ]
    return GraphNetwork.build(nodes, (2, 6, 6), None, sites=["ad"])


def token_graph(seed: int = 1) -> GraphNetwork:
    """class token const, concat, layer norm, dense on tokens, permute, matmul, scale, softmax,
    matmul, add, dense, gelu, dense, add, select, dense."""
    g = torch.Generator().manual_seed(seed)
    nodes = [
        ("x", G.Input(), ()),
        ("tok", G.Const(_r(1, 1, 4, g=g)), ()),
        ("cat", G.Concat(1), (1, 0)),
        ("ln", G.Norm((4,), 1, 1e-5, _r(4, g=g) + 1, _r(4, g=g)), (2,)),
        ("q", G.Affine(Dense(_r(4, 4, g=g), _r(4, g=g))), (3,)),
        ("k", G.Affine(Dense(_r(4, 4, g=g), _r(4, g=g))), (3,)),
        ("v", G.Affine(Dense(_r(4, 4, g=g), _r(4, g=g))), (3,)),
        ("kt", G.Rearrange("permute", (0, 2, 1)), (5,)),
        ("sc", G.MatMul(), (4, 7)),
        ("sc2", G.ConstAffine(torch.tensor(0.5, dtype=torch.float64), None), (8,)),
        ("sm", G.Softmax(-1), (9,)),
        ("o", G.MatMul(), (10, 6)),
        ("r", G.Add((1, 1)), (11, 2)),
        ("h", G.Affine(Dense(_r(6, 4, g=g), _r(6, g=g))), (12,)),
        ("act", G.Act(A.GELU()), (13,)),
        ("h2", G.Affine(Dense(_r(4, 6, g=g), _r(4, g=g))), (14,)),
        ("r2", G.Add((1, 1)), (15, 12)),
        ("sl", G.Rearrange("slice", (1, 0, 2, 1)), (16,)),
        ("cls", G.Rearrange("select", (1, 0)), (17,)),
        ("out", G.Affine(Dense(_r(2, 4, g=g), _r(2, g=g))), (18,)),
    ]
    return GraphNetwork.build(nodes, (3, 4), None, sites=["r", "sm"])


GRAPHS = {"image": image_graph, "tokens": token_graph}


def _units(fs: FaultSet, t: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, s in enumerate(fs.sites):
        if s is not None:
            out[k] = [int(u) for u in s[t] if u >= 0]
    return out


def _per(vals: tuple[torch.Tensor | None, ...], fs: FaultSet, t: int, b: int) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for k, v in enumerate(vals):
        s = fs.sites[k] if k < len(fs.sites) else None
        if v is None or s is None:
            continue
        row = v[t, 0 if v.shape[1] == 1 else b]
        out[k] = [float(row[c]) for c in range(s.shape[1]) if s[t, c] >= 0]
    return out


def _bits(fs: FaultSet, t: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, s in enumerate(fs.sites):
        if s is not None:
            out[k] = [int(fs.bits[k][t, c]) for c in range(s.shape[1]) if s[t, c] >= 0]  # type: ignore[index]
    return out


GRAPH_FAULTS = [
    ("crash", fb.Crash(), "neuron", 0.0),
    ("byzantine", fb.Byzantine(0.7), "neuron", 0.0),
    ("deviation", fb.ByzantineDeviation(0.3), "neuron", 1.0),
    ("stuck", fb.StuckAt(0.25), "neuron", 0.0),
    ("syn-crash", fb.SynapseCrash(), "synapse", 0.0),
    ("syn-byz", fb.SynapseByzantine(0.4), "synapse", 0.0),
    ("bit-neuron-f32", fb.BitFlip("neuron", "float32", (20, 23, 29, 31)), "bitneuron", 0.0),
    ("bit-neuron-int8", fb.BitFlip("neuron", "int8"), "bitneuron", 0.0),
    ("bit-weight-f32", fb.BitFlip("weight", "float32", (22, 26, 31)), "bitweight", 0.0),
    ("bit-weight-int8", fb.BitFlip("weight", "int8"), "bitweight", 0.0),
]


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize(("name", "fault", "kind", "gain"), GRAPH_FAULTS, ids=[f[0] for f in GRAPH_FAULTS])
@pytest.mark.parametrize("mode", ["random", "adversarial"])
def test_engine_matches_reference(
    graph: str, name: str, fault: fb.faults.Fault, kind: str, gain: float, mode: str
) -> None:
    net = GRAPHS[graph]()
    g = torch.Generator().manual_seed(3)
    if kind in ("synapse", "bitweight"):
        counts = [1 + (k % 2) for k in range(len(net.weighted_nodes))]
    else:
        counts = [1 + (k % 2) for k in range(net.L)]
    fs = sample_faults(net, fault, 5, failures=counts, generator=g)
    # one configuration with a single failing unit (the windowed path), one with none
    single = tuple(None if s is None else torch.where(torch.arange(s.shape[1]) == 0, s[:1], -1) for s in fs.sites)
    fs1 = FaultSet(1, single, tuple(None if b is None else b[:1] for b in fs.bits) if fs.bits else ())
    x = net.domain.sample(3, generator=g).to(torch.float64)
    for f in (fs, fs1):
        inj = inject(net, x, fault, f, values=mode, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        assert inj.outputs.shape == (f.n_configs, 3, net.n_outputs)
        for t in range(f.n_configs):
            for b in range(3):
                want = ref_faulty(
                    net, x[b], kind, _units(f, t), values=_per(inj.values, f, t, b) or None,
                    bits=_bits(f, t) if f.bits else None, gain=gain, fmt=getattr(fault, "format", "float32"),
                    const=getattr(fault, "value", 0.0),
                )
                torch.testing.assert_close(inj.outputs[t, b], want, rtol=1e-7, atol=1e-8, equal_nan=True)
    assert bool((inj.errors >= 0).all())


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("mode", ["random", "fixed", "adversarial"])
def test_precision_matches_reference(graph: str, mode: str) -> None:
    net = GRAPHS[graph]()
    lams = [0.05 * (k + 1) for k in range(net.L)]
    fault = fb.Precision(lams)
    fs = sample_faults(net, fault, 3)
    x = net.domain.sample(2, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    inj = inject(net, x, fault, fs, values=mode, dtype=torch.float64)
    moved = 0.0
    for t in range(3):
        for b in range(2):
            offs = {k: v[t, b] for k, v in enumerate(inj.values) if v is not None}
            for k, u in offs.items():
                assert float(u.abs().max()) <= lams[k] + 1e-12
            want = ref_faulty(net, x[b], "precision", {}, offsets=offs)
            torch.testing.assert_close(inj.outputs[t, b], want, rtol=1e-7, atol=1e-8, equal_nan=True)
            moved = max(moved, float((want - inj.clean[b]).abs().max()))
    assert moved > 0


def test_fixed_values_are_sent() -> None:
    net = image_graph()
    fs = FaultSet(1, (torch.tensor([[5, 7]]), None, None, None), values=(torch.tensor([[0.3, -2.0]]), None, None, None))
    x = net.domain.sample(2, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    inj = inject(net, x, fb.Byzantine(0.5), fs, values="fixed", dtype=torch.float64)
    for b in range(2):
        want = ref_faulty(net, x[b], "neuron", {0: [5, 7]}, values={0: [0.3, -0.5]})  # clipped to [-C, C]
        torch.testing.assert_close(inj.outputs[0, b], want)


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_synapse_numbering_is_the_effective_matrix(graph: str) -> None:
    net = GRAPHS[graph]()
    for w, node in enumerate(net.weighted_nodes):
        pairs = effective_pairs(net, node)
        assert len(pairs) == fb.failures.n_units(net, fb.SynapseCrash(), w + 1)
        p = torch.arange(len(pairs))
        j, i, wji = synapse_pairs(net, w, p)
        assert [(int(a), int(b)) for a, b in zip(j, i, strict=True)] == [(a, b) for a, b, _ in pairs]
        torch.testing.assert_close(wji.double(), torch.tensor([c for _, _, c in pairs], dtype=torch.float64))


def test_strided_padded_conv_numbering() -> None:
    g = torch.Generator().manual_seed(4)
    wt = _r(3, 2, 3, 2, g=g)
    wt[0, 1, 1, 0] = 0.0  # a zero weight is no synapse
    nodes = [
        ("x", G.Input(), ()),
        ("c", G.Affine(Conv(wt, _r(3, g=g), (2, 1), (1, 0))), (0,)),
        ("a", G.Act(A.ReLU()), (1,)),
        ("fl", G.Affine(Flatten()), (2,)),
        ("d", G.Affine(Dense(_r(2, 3 * 3 * 4, g=g), _r(2, g=g))), (3,)),
    ]
    net = GraphNetwork.build(nodes, (2, 5, 5), None)
    pairs = effective_pairs(net, 1)
    j, i, _ = synapse_pairs(net, 0, torch.arange(len(pairs)))
    assert [(int(a), int(b)) for a, b in zip(j, i, strict=True)] == [(a, b) for a, b, _ in pairs]


@pytest.mark.parametrize("fault", [fb.Crash(), fb.StuckAt(2.0), fb.BitFlip("neuron", "float32", (30,))])
def test_windows_equal_whole_maps(fault: fb.faults.Fault) -> None:
    """The receptive-field update gives the outputs of whole-map recomputation (float64)."""
    from faultbound.models import small_resnet

    net = fb.load(small_resnet(), input_shape=(1, 8, 8))
    assert isinstance(net, GraphNetwork)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((4, 1, 8, 8), generator=g, dtype=torch.float64)
    for s in range(net.L):
        counts = [1 if k == s else 0 for k in range(net.L)]
        fs = sample_faults(net, fault, 16, failures=counts, generator=g)
        a = graph_inject(net, x, fault, fs, dtype=torch.float64, windows=True)
        b = graph_inject(net, x, fault, fs, dtype=torch.float64, windows=False)
        torch.testing.assert_close(a.outputs, b.outputs, rtol=1e-12, atol=1e-12)
        if isinstance(fault, fb.StuckAt):
            assert bool((a.errors > 0).any())


def test_chunks_and_one_at_a_time_agree() -> None:
    """Configurations grouped by first faulty node, with several failures: each configuration
    alone gives the same outputs."""
    net = image_graph()
    fault = fb.Crash()
    fs = sample_faults(net, fault, 6, failures=[2, 0, 1, 1], generator=torch.Generator().manual_seed(2))
    even = torch.arange(6)[:, None] % 2 == 0
    fs = FaultSet(6, tuple(None if s is None else torch.where(even, s, -1) for s in fs.sites))
    x = net.domain.sample(3, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    inj = inject(net, x, fault, fs, dtype=torch.float64)
    for t in range(6):
        one = inject(net, x, fault, fs.select(slice(t, t + 1)), dtype=torch.float64)
        torch.testing.assert_close(inj.outputs[t], one.outputs[0])


def test_clean_configuration_and_wrong_shapes() -> None:
    net = image_graph()
    fs = FaultSet(2, (None,) * net.L)
    x = net.domain.sample(2).to(torch.float64)
    inj = inject(net, x, fb.Crash(), fs, dtype=torch.float64)
    assert float(inj.errors.max()) == 0.0
    with pytest.raises(fb.errors.InvalidArgumentError):
        inject(net, x, fb.Crash(), FaultSet(2, (None,) * (net.L + 1)))
    with pytest.raises(fb.errors.InvalidArgumentError):
        inject(net, x, fb.SynapseCrash(), FaultSet(2, (None,) * net.L))
