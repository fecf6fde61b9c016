"""``method="exact"`` on graph networks (:func:`faultbound.bounds.graph_exact.graph_exact_bound`)
against brute force, the tight graph bound and the layered MILP.

The references never import bound or engine code: each graph is written twice, once as a
:class:`~faultbound.network.graph.GraphNetwork` (what is checked) and once as a plain torch forward
(``F.linear``, ``relu``, ``max_pool2d``, ``cat``, ``mean``) with every failure set of the given sizes
enumerated and the inputs on a grid; a failing unit sends what the fault table says (crash: 0,
stuck-at: v, Byzantine: a chosen value, deviation: its clean value + u).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import faultbound as fb
from faultbound.bounds.exact import exact_bound
from faultbound.bounds.graph_exact import graph_exact_bound
from faultbound.bounds.graph_tight import graph_tight_bound
from faultbound.errors import UnsupportedModelError
from faultbound.network import gops as G
from faultbound.network.activations import Hardtanh, LeakyReLU, ReLU, Tanh
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense
from tests.hyp import examples, soundness

TOL = 1e-6  # solver tolerances (the certificate adds a margin of 1e-5 x the problem's scale: r.margin)

# A reference forward maps (inputs (B, d), sends) to outputs (B, n_out); ``sends(k, computed, clean)``
# returns what site k's units send (``clean`` None during the clean pass).
Sends = Callable[[int, Tensor, Tensor | None], Tensor] | None


def _rand(g: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale


# ----------------------------------------------------------------------------- graph 1
# x (2) -> fc1 (6) -> relu [site 1] -> view (1,2,3) -> maxpool k2 s1 (two overlapping windows) -> view (2)
#   -> fc2 (2) -> leaky relu [site 2] -> + pooled (residual); concat with relu1[0:3] (slice) and the
#   mean of site 2 -> fc3 (1)

W1 = 6  # units of site 1 (graph 1)
W2 = 2  # units of site 2


def _graph1(seed: int) -> tuple[GraphNetwork, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    p = {
        "W1": _rand(g, W1, 2),
        "b1": _rand(g, W1, scale=0.5),
        "W2": _rand(g, W2, W2),
        "b2": _rand(g, W2, scale=0.5),
        "W3": _rand(g, 1, W2 + 3 + 1),
        "b3": _rand(g, 1, scale=0.5),
    }
    nodes = [
        ("x", G.Input(), ()),
        ("fc1", G.Affine(Dense(p["W1"], p["b1"])), (0,)),
        ("relu1", G.Act(ReLU()), (1,)),
        ("img", G.Rearrange("view", (1, 2, 3)), (2,)),
        ("pool", G.MaxPool((2, 2), (1, 1)), (3,)),
        ("flat", G.Rearrange("view", (W2,)), (4,)),
        ("fc2", G.Affine(Dense(p["W2"], p["b2"])), (5,)),
        ("act2", G.Act(LeakyReLU(0.1)), (6,)),
        ("res", G.Add((1, 1)), (7, 5)),
        ("head", G.Rearrange("slice", (1, 0, 3, 1)), (2,)),
        ("avg", G.Mean((1,), True), (7,)),
        ("cat", G.Concat(1), (8, 9, 10)),
        ("out", G.Affine(Dense(p["W3"], p["b3"])), (11,)),
    ]
    return GraphNetwork.build(nodes, (2,), (-1.0, 1.0)), p


def _ref1(p: dict[str, Tensor], x: Tensor, sends: Sends, cut: dict[str, tuple[int, int]] | None = None) -> Tensor:
    """Graph 1 in plain torch; ``cut[name] = (j, i)``: that synapse of fc1/fc2/out transmits 0."""

    def w(name: str) -> Tensor:
        W = p[name].clone()
        for key, (j, i) in (cut or {}).items():
            if key == name:
                W[j, i] = 0.0
        return W

    h1 = torch.relu(F.linear(x, w("W1"), p["b1"]))
    if sends is not None:
        h1 = sends(1, h1, None)
    pooled = F.max_pool2d(h1.reshape(-1, 1, 2, 3), 2, 1).reshape(-1, W2)
    h2 = F.leaky_relu(F.linear(pooled, w("W2"), p["b2"]), 0.1)
    if sends is not None:
        h2 = sends(2, h2, None)
    cat = torch.cat([h2 + pooled, h1[:, 0:3], h2.mean(1, keepdim=True)], 1)
    return F.linear(cat, w("W3"), p["b3"])


# ----------------------------------------------------------------------------- graph 2
# x (1) -> fc (4) -> hardtanh [site 1] -> view (1,2,2) -> maxpool k2 s1 pad 1 (1,3,3) -> view (9)
#   -> x*a + c -> minus a constant -> relu [site 2] -> view (3,3) -> select row 1 (3) -> fc (1),
#   plus fc's skip from the input


def _graph2(seed: int) -> tuple[GraphNetwork, dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    p = {
        "W1": _rand(g, 4, 1, scale=2.0),
        "b1": _rand(g, 4, scale=0.5),
        "a": _rand(g, 9),
        "c": _rand(g, 9, scale=0.3),
        "k": _rand(g, 1, 9, scale=0.3),
        "W2": _rand(g, 1, 3),
        "b2": _rand(g, 1, scale=0.5),
        "Ws": _rand(g, 1, 1),
    }
    nodes = [
        ("x", G.Input(), ()),
        ("fc1", G.Affine(Dense(p["W1"], p["b1"])), (0,)),
        ("ht", G.Act(Hardtanh(-0.5, 0.5)), (1,)),
        ("img", G.Rearrange("view", (1, 2, 2)), (2,)),
        ("pool", G.MaxPool((2, 2), (1, 1), (1, 1)), (3,)),
        ("flat", G.Rearrange("view", (9,)), (4,)),
        ("aff", G.ConstAffine(p["a"], p["c"]), (5,)),
        ("k", G.Const(p["k"]), ()),
        ("sub", G.Add((1, -1)), (6, 7)),
        ("relu2", G.Act(ReLU()), (8,)),
        ("rows", G.Rearrange("view", (3, 3)), (9,)),
        ("row1", G.Rearrange("select", (1, 1)), (10,)),
        ("fc2", G.Affine(Dense(p["W2"], p["b2"])), (11,)),
        ("skip", G.Affine(Dense(p["Ws"], torch.zeros(1, dtype=torch.float64))), (0,)),
        ("out", G.Add((1, 1)), (12, 13)),
    ]
    return GraphNetwork.build(nodes, (1,), (-1.0, 1.0)), p


def _ref2(p: dict[str, Tensor], x: Tensor, sends: Sends) -> Tensor:
    h1 = torch.clamp(F.linear(x, p["W1"], p["b1"]), -0.5, 0.5)
    if sends is not None:
        h1 = sends(1, h1, None)
    pooled = F.max_pool2d(h1.reshape(-1, 1, 2, 2), 2, 1, padding=1).reshape(-1, 9)
    h2 = torch.relu(pooled * p["a"] + p["c"] - p["k"])
    if sends is not None:
        h2 = sends(2, h2, None)
    return F.linear(h2.reshape(-1, 3, 3)[:, 1], p["W2"], p["b2"]) + x @ p["Ws"].T


# ----------------------------------------------------------------------------- brute force


def _with_faults(
    ref: Callable[[Tensor, Sends], Tensor],
    x: Tensor,
    units: dict[int, list[int]],
    send: Callable[[Tensor, Tensor, int, int], Tensor],
) -> Tensor:
    """The faulty output: failing unit j of site k sends ``send(computed, clean, k, n)`` (n: its
    position among the site's failing units)."""
    clean: dict[int, Tensor] = {}

    def record(k: int, h: Tensor, _: Tensor | None) -> Tensor:
        clean[k] = h.clone()
        return h

    ref(x, record)

    def faulty(k: int, h: Tensor, _: Tensor | None) -> Tensor:
        h = h.clone()
        for n, j in enumerate(units.get(k, [])):
            h[:, j] = send(h[:, j], clean[k][:, j], k, n)
        return h

    return ref(x, faulty)


def _brute(
    ref: Callable[[Tensor, Sends], Tensor],
    xs: Tensor,
    widths: list[int],
    counts: list[int],
    send: Callable[[Tensor, Tensor, int, int], Tensor],
) -> float:
    """max over every failure set of exactly the given sizes and every input of ``xs`` of the
    inf-norm output error."""
    base = ref(xs, None)
    best = 0.0
    per = [list(itertools.combinations(range(n), f)) for n, f in zip(widths, counts, strict=True)]
    for combo in itertools.product(*per):
        units = {k + 1: list(c) for k, c in enumerate(combo)}
        out = _with_faults(ref, xs, units, send)
        best = max(best, float((out - base).abs().max()))
    return best


def _grid(n: int, d: int) -> Tensor:
    ax = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    return torch.cartesian_prod(*([ax] * d)).reshape(-1, d)


def _replay_witness(ref: Callable[[Tensor, Sends], Tensor], w: dict, fault: fb.faults.NeuronFault) -> float:
    """The witness's error by the plain forward: its input, its failure set, its values."""
    x = torch.tensor(w["input"], dtype=torch.float64).reshape(1, -1)
    units = {int(k): v for k, v in w["failure_set"].items()}
    values = {int(k): v for k, v in w.get("values", {}).items()}
    sent = fault.sent

    def send(h: Tensor, clean: Tensor, k: int, n: int) -> Tensor:
        v = values[k][n] if k in values else sent.lo
        return sent.gain * clean + v

    out = _with_faults(ref, x, units, send)
    return float((out - ref(x, None)).abs().max())


def _fixed_send(fault: fb.faults.NeuronFault) -> Callable[[Tensor, Tensor, int, int], Tensor]:
    s = fault.sent
    assert not s.chosen
    return lambda h, clean, k, n: s.gain * clean + s.lo


FAULTS = [fb.Crash(), fb.StuckAt(0.6), fb.StuckAt(-0.4)]


# ----------------------------------------------------------------------------- tests


@soundness
@settings(max_examples=examples(3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), fi=st.integers(0, len(FAULTS) - 1), counts=st.sampled_from([[1, 1], [2, 0], [0, 1]]))
def test_graph1_exact_vs_brute_force_and_tight(seed: int, fi: int, counts: list[int]) -> None:
    """Residual add, concat, overlapping max pool, mean and slicing: the exact value is at least
    every brute-force error (sound), is reached by its witness in a plain forward (so it is the
    maximum), and is at most the tight bound."""
    net, p = _graph1(seed)
    fault = FAULTS[fi]
    r = graph_exact_bound(net, counts, fault)
    assert r.optimal
    brute = _brute(lambda x, s: _ref1(p, x, s), _grid(41, 2), [W1, W2], counts, _fixed_send(fault))
    assert r.value >= brute - TOL
    assert r.witness is not None
    got = _replay_witness(lambda x, s: _ref1(p, x, s), r.witness, fault)
    assert got == pytest.approx(r.lower, abs=1e-9)
    assert r.value - got <= r.margin + 1e-5 * max(1.0, abs(r.value))  # the MIP tolerance
    assert got >= brute - TOL  # the grid never beats the true maximum
    tight, _ = graph_tight_bound(net, counts, fault)
    assert r.dual_bound <= tight + TOL


@soundness
@settings(max_examples=examples(3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), fi=st.integers(0, len(FAULTS) - 1), counts=st.sampled_from([[1, 1], [1, 0], [0, 2]]))
def test_graph2_exact_equals_fine_grid(seed: int, fi: int, counts: list[int]) -> None:
    """A 1-D input on a fine grid (padded max pool, const affine, a constant subtracted, select,
    a skip connection): the grid's maximum is within the grid's resolution of the exact value, and
    never above it."""
    net, p = _graph2(seed)
    fault = FAULTS[fi]
    r = graph_exact_bound(net, counts, fault)
    assert r.optimal
    n = 4001
    brute = _brute(lambda x, s: _ref2(p, x, s), _grid(n, 1), [4, 9], counts, _fixed_send(fault))
    assert r.value >= brute - TOL
    # |d/dx error| <= 2 * |W2| |a| |W1| + |Ws|-ish; a crude Lipschitz constant of the error in x
    lip = 2 * (p["W2"].abs().sum() * p["a"].abs().max() * p["W1"].abs().max() + p["Ws"].abs().sum())
    h = 2.0 / (n - 1)
    assert r.dual_bound <= brute + float(lip) * h + TOL
    assert r.witness is not None
    assert _replay_witness(lambda x, s: _ref2(p, x, s), r.witness, fault) == pytest.approx(r.lower, abs=1e-9)
    tight, _ = graph_tight_bound(net, counts, fault)
    assert r.dual_bound <= tight + TOL


@soundness
@settings(max_examples=examples(2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), cap=st.sampled_from([0.3, 1.0]), deviation=st.booleans())
def test_graph1_chosen_values(seed: int, cap: float, deviation: bool) -> None:
    """Byzantine values (sent value or deviation chosen in [-C, C]): the exact value is at least the
    brute force over sets, a grid of inputs and the values {-C, 0, C}; its witness, values included,
    reaches it in a plain forward."""
    net, p = _graph1(seed)
    fault: fb.faults.NeuronFault = fb.ByzantineDeviation(cap) if deviation else fb.Byzantine(cap)
    counts = [1, 1]
    r = graph_exact_bound(net, counts, fault)
    assert r.optimal and r.witness is not None
    xs = _grid(21, 2)
    base = _ref1(p, xs, None)
    brute = 0.0
    for u1, u2 in itertools.product([-cap, 0.0, cap], repeat=2):
        vals = {1: u1, 2: u2}

        def send(h: Tensor, clean: Tensor, k: int, n: int, vals: dict[int, float] = vals) -> Tensor:
            return fault.sent.gain * clean + vals[k]

        for j1, j2 in itertools.product(range(W1), range(W2)):
            out = _with_faults(lambda x, s: _ref1(p, x, s), xs, {1: [j1], 2: [j2]}, send)
            brute = max(brute, float((out - base).abs().max()))
    assert r.value >= brute - TOL
    got = _replay_witness(lambda x, s: _ref1(p, x, s), r.witness, fault)
    assert got == pytest.approx(r.lower, abs=1e-9)
    assert r.value - got <= r.margin + 1e-5 * max(1.0, abs(r.value))  # the MIP's optimality tolerance
    assert r.dual_bound <= graph_tight_bound(net, counts, fault)[0] + TOL


@soundness
@settings(max_examples=examples(2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), node=st.sampled_from([0, 1, 2]))
def test_graph1_synapse_crash(seed: int, node: int) -> None:
    """One crashed synapse at fc1, fc2 or the output layer: exact = the brute force's maximum over
    every synapse and a grid, up to the grid's resolution, and its witness reaches it."""
    net, p = _graph1(seed)
    counts = [0, 0, 0]
    counts[node] = 1
    r = graph_exact_bound(net, counts, fb.SynapseCrash())
    assert r.optimal and r.witness is not None
    name = ["W1", "W2", "W3"][node]
    xs = _grid(41, 2)
    base = _ref1(p, xs, None)
    brute = 0.0
    for j, i in itertools.product(range(p[name].shape[0]), range(p[name].shape[1])):
        brute = max(brute, float((_ref1(p, xs, None, {name: (j, i)}) - base).abs().max()))
    assert r.value >= brute - TOL
    # the witness: dense nodes on a flat input number synapse (j, i) as j * n_in + i
    (idx,) = r.witness["failure_set"][str(node + 1)]
    j, i = divmod(idx, p[name].shape[1])
    x = torch.tensor(r.witness["input"], dtype=torch.float64).reshape(1, -1)
    got = float((_ref1(p, x, None, {name: (j, i)}) - _ref1(p, x, None)).abs().max())
    assert got == pytest.approx(r.lower, abs=1e-9)
    assert r.value - got <= r.margin + 1e-5 * max(1.0, abs(r.value))  # the MIP's optimality tolerance
    assert r.dual_bound <= graph_tight_bound(net, counts, fb.SynapseCrash())[0] + TOL


def test_precision_on_graph_sound_and_reached() -> None:
    """Precision errors at both sites: sound against sampled offsets, and reached by its witness."""
    net, p = _graph1(7)
    fault = fb.Precision([0.05, 0.1])
    r = graph_exact_bound(net, None, fault)
    assert r.optimal and r.witness is not None
    g = torch.Generator().manual_seed(0)
    xs = _grid(21, 2)
    base = _ref1(p, xs, None)
    brute = 0.0
    for _ in range(64):
        o1 = torch.sign(_rand(g, W1)) * 0.05
        o2 = torch.sign(_rand(g, W2)) * 0.1
        offs = {1: o1, 2: o2}
        out = _ref1(p, xs, lambda k, h, _, offs=offs: h + offs[k])
        brute = max(brute, float((out - base).abs().max()))
    assert r.value >= brute - TOL
    x = torch.tensor(r.witness["input"], dtype=torch.float64).reshape(1, -1)
    offs = {int(k): torch.tensor(v, dtype=torch.float64) for k, v in r.witness["precision"].items()}
    got = float((_ref1(p, x, lambda k, h, _: h + offs[k]) - _ref1(p, x, None)).abs().max())
    assert got == pytest.approx(r.lower, abs=1e-9)
    assert r.value - got <= r.margin + 1e-5 * max(1.0, abs(r.value))  # the MIP's optimality tolerance


@pytest.mark.parametrize(
    "fault, counts",
    [
        (fb.Crash(), [1, 1]),
        (fb.Byzantine(0.5), [1, 0]),
        (fb.ByzantineDeviation(0.3), [0, 1]),
        (fb.SynapseCrash(), [1, 0, 0]),
        (fb.Precision([0.1, 0.05]), None),
    ],
)
def test_chain_equals_layered_exact(fault: fb.faults.Fault, counts: list[int] | None) -> None:
    """On a chain (a convolution, flatten, dense layers), the graph MILP gives the layered MILP's
    value, and the same replayed witness error."""
    torch.manual_seed(3)
    mod = nn.Sequential(
        nn.Conv2d(1, 1, 2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3), nn.LeakyReLU(0.2), nn.Linear(3, 1)
    )
    net = fb.Network.from_torch(mod, domain=(-1.0, 1.0), input_shape=(1, 3, 3))
    graph = GraphNetwork.from_network(net)
    a = exact_bound(net, counts, fault)
    b = graph_exact_bound(graph, counts, fault)
    assert a.optimal and b.optimal
    assert b.dual_bound == pytest.approx(a.dual_bound, abs=TOL)
    assert b.lower == pytest.approx(a.lower, abs=TOL)
    assert b.value >= a.lower - TOL and a.value >= b.lower - TOL


def test_refuses_operators_that_are_not_piecewise_linear() -> None:
    """Mul, softmax and a smooth activation are refused in one line that names each node and says
    to use method='tight'."""
    nodes = [
        ("x", G.Input(), ()),
        ("fc", G.Affine(Dense(torch.ones(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))), (0,)),
        ("th", G.Act(Tanh()), (1,)),
        ("gate", G.Mul(), (1, 2)),
        ("sm", G.Softmax(1), (3,)),
    ]
    net = GraphNetwork.build(nodes, (2,), (0.0, 1.0))
    with pytest.raises(UnsupportedModelError) as e:
        graph_exact_bound(net, [1], fb.Crash())
    msg = str(e.value)
    assert "\n" not in msg and "method='tight'" in msg
    for name in ("th", "gate", "sm"):
        assert f"{name} (" in msg
    assert "fc (" not in msg


def test_time_limit_gives_a_sound_interval() -> None:
    """With a tiny time limit the value is still at least the brute force, and at least lower."""
    net, p = _graph1(11)
    counts = [2, 1]
    r = graph_exact_bound(net, counts, fb.Crash(), time_limit=0.05)
    brute = _brute(lambda x, s: _ref1(p, x, s), _grid(21, 2), [W1, W2], counts, _fixed_send(fb.Crash()))
    assert r.value >= brute - TOL
    assert r.value >= r.lower
    assert r.optimal or r.status != "Optimal"


def test_at_most_is_at_least_exactly() -> None:
    """Sets of at most the sizes contain the sets of exactly the sizes: the optimum cannot drop."""
    net, _ = _graph2(5)
    exactly = graph_exact_bound(net, [2, 1], fb.StuckAt(0.3))
    at_most = graph_exact_bound(net, [2, 1], fb.StuckAt(0.3), at_most=True)
    assert at_most.value >= exactly.lower - TOL
    assert at_most.lower >= exactly.lower - TOL


def test_a_node_read_twice() -> None:
    """A node read twice (concat of a site with itself, then a sum of a node with itself): the
    repeated variables merge in one row; exact = the fine grid's maximum up to its resolution."""
    g = torch.Generator().manual_seed(4)
    W1, b1, W2 = _rand(g, 3, 1, scale=2.0), _rand(g, 3, scale=0.5), _rand(g, 1, 6)
    nodes = [
        ("x", G.Input(), ()),
        ("fc1", G.Affine(Dense(W1, b1)), (0,)),
        ("relu", G.Act(ReLU()), (1,)),
        ("twice", G.Concat(1), (2, 2)),
        ("fc2", G.Affine(Dense(W2, torch.zeros(1, dtype=torch.float64))), (3,)),
        ("double", G.Add((1, 1)), (4, 4)),
    ]
    net = GraphNetwork.build(nodes, (1,), (-1.0, 1.0))

    def ref(x: Tensor, sends: Sends) -> Tensor:
        h = torch.relu(F.linear(x, W1, b1))
        if sends is not None:
            h = sends(1, h, None)
        y = F.linear(torch.cat([h, h], 1), W2)
        return y + y

    r = graph_exact_bound(net, [1], fb.Crash())
    assert r.optimal
    n = 2001
    brute = _brute(ref, _grid(n, 1), [3], [1], _fixed_send(fb.Crash()))
    lip = 2 * float(W2.abs().sum() * W1.abs().max())
    assert brute - TOL <= r.value and r.dual_bound <= brute + lip * 2.0 / (n - 1) + TOL


def test_graph1_byzantine_seed_999999_is_covered_by_exact() -> None:
    """Found by ``make soundness`` (--hypothesis-seed=12): HiGHS's presolve cut off this failure set
    and reported 0.6548 as optimal; the exact bound must cover it (replayed in plain torch, the
    reference ``_ref1``, not the engine), and it is the optimum (its witness reaches it)."""
    net, p = _graph1(999999)
    fault = fb.Byzantine(0.3)
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)

    def send(h: Tensor, clean: Tensor, k: int, n: int) -> Tensor:
        return fault.sent.gain * clean - 0.3

    out = _with_faults(lambda x, s: _ref1(p, x, s), x, {1: [0], 2: [1]}, send)
    measured = float((out - _ref1(p, x, None)).abs().max())
    assert measured == pytest.approx(0.7263188166688797, rel=1e-9)
    r = graph_exact_bound(net, [1, 1], fault)
    assert r.optimal and r.value >= measured - TOL
    assert r.lower == pytest.approx(r.value, abs=r.margin + TOL)


@pytest.mark.parametrize("counts", [[1, 0], [1, 1], [2, 1]])
def test_per_input_exact_certificates_on_a_graph(counts: list[int]) -> None:
    """``certify(method="exact")`` on a graph: per input and output, the maximum over every failure
    set of the given sizes (crash: the unit sends 0) at that input, enumerated in plain torch."""
    net, p = _graph1(7)
    xs = torch.tensor([[0.3, -0.6], [-0.9, 0.2], [1.0, 1.0]], dtype=torch.float64)
    cert = fb.bounds.certify(net, xs, counts, fb.Crash(), method="exact")

    def send(h: Tensor, clean: Tensor, k: int, n: int) -> Tensor:
        return torch.zeros_like(h)

    for i in range(xs.shape[0]):
        brute = _brute(lambda x, s: _ref1(p, x, s), xs[i : i + 1], [W1, W2], counts, send)
        assert brute - TOL <= cert.bounds[i] <= brute + 1e-4 * max(1.0, brute) + TOL, (i, cert.bounds[i], brute)
    tight = fb.bounds.certify(net, xs, counts, fb.Crash())
    assert (cert.bounds <= tight.bounds + TOL).all()
