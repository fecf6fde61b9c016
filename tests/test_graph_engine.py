"""The graph engine (measure/graph_engine.py) against a slow reference (tests/graph_engine_reference.py) on
small hand-built graphs that contain every graph operator, for every fault model; the synapse
numbering against the effective matrix; the windowed update against whole-map recomputation."""

from __future__ import annotations

import pytest
import torch

import faultbound as fb
from faultbound.measure import FaultSet, inject, sample_faults
from faultbound.measure.graph_engine import graph_inject, synapse_pairs
from faultbound.network import activations as A  # noqa: N812
from faultbound.network import gops as G  # noqa: N812
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten
from tests.graph_engine_reference import effective_pairs, ref_faulty


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


FAULTS = [
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
@pytest.mark.parametrize(("name", "fault", "kind", "gain"), FAULTS, ids=[f[0] for f in FAULTS])
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
