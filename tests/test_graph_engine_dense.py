"""The graph engine on chains of dense nodes (its sparse states: a few changed units per
configuration, the low-rank update of the next dense node, unchanged units dropped after synapse and
weight faults) equals the plain-torch reference for every fault model, with several faults per site
and in several sites, and agrees with the layered engine on the layered network it views."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.measure import inject, sample_faults
from faultbound.network import activations as A  # noqa: N812
from faultbound.network import gops as G  # noqa: N812
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense
from tests.graph_engine_reference import ref_faulty
from tests.hyp import examples

ACTS = [A.ReLU(), A.Tanh(), A.Sigmoid()]
FAULTS = [
    fb.Crash(),
    fb.Byzantine(0.5),
    fb.StuckAt(-0.4),
    fb.ByzantineDeviation(0.2),
    fb.SynapseCrash(),
    fb.SynapseByzantine(0.3),
    fb.BitFlip("neuron", "float32"),
    fb.BitFlip("neuron", "int8"),
    fb.BitFlip("weight", "float32"),
    fb.BitFlip("weight", "int8"),
    fb.Precision([0.01, 0.02, 0.03]),
]


@st.composite
def chains(draw: st.DrawFn) -> GraphNetwork:
    """Dense + activation chains d-n1-...-nL-m (L = 1..3), float64 weights, a few exact zeros."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    widths = [draw(st.integers(2, 5))] + [draw(st.integers(3, 9)) for _ in range(draw(st.integers(1, 3)))]
    widths.append(draw(st.integers(1, 3)))
    nodes: list[tuple[str, G.GOp, tuple[int, ...]]] = [("x", G.Input(), ())]
    for k in range(len(widths) - 1):
        w = torch.randn((widths[k + 1], widths[k]), generator=g, dtype=torch.float64) / widths[k] ** 0.5
        w[w.abs() < 0.05] = 0.0
        b = torch.randn(widths[k + 1], generator=g, dtype=torch.float64) * 0.1
        nodes.append((f"d{k}", G.Affine(Dense(w, b)), (len(nodes) - 1,)))
        if k < len(widths) - 2:
            nodes.append((f"a{k}", G.Act(draw(st.sampled_from(ACTS))), (len(nodes) - 1,)))
    return GraphNetwork.build(nodes, (widths[0],), None)


def _reference(net: GraphNetwork, x: torch.Tensor, fault: fb.Fault, inj: fb.measure.Injection, fs: fb.measure.FaultSet,
               t: int, b: int) -> torch.Tensor:
    if fault.site == "layer":
        offsets = {k: v[t, b].reshape(net.nodes[n].shape) for k, (n, v) in enumerate(zip(net.site_nodes, inj.values,
                                                                                          strict=True))}
        return ref_faulty(net, x[b], "precision", {}, offsets=offsets)
    units = {k: [int(u) for u in s[t] if u >= 0] for k, s in enumerate(fs.sites) if s is not None}
    if isinstance(fault, fb.BitFlip):
        bits = {k: [int(v) for v, u in zip(s[t], fs.sites[k][t], strict=True) if u >= 0]  # type: ignore[index]
                for k, s in enumerate(fs.bits) if s is not None}
        kind = "bitneuron" if fault.target == "neuron" else "bitweight"
        return ref_faulty(net, x[b], kind, units, bits=bits, fmt=fault.format)
    vals = {
        k: [float(v[t, 0 if v.shape[1] == 1 else b, c]) for c in range(len(units[k]))]
        for k, v in enumerate(inj.values)
        if v is not None
    }
    gain = 1.0 if isinstance(fault, fb.ByzantineDeviation) else 0.0
    return ref_faulty(net, x[b], fault.site, units, values=vals or None, gain=gain,
                      const=getattr(fault, "value", 0.0))


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_dense_chains_match_reference(data: st.DataObject) -> None:
    net = data.draw(chains())
    fault = data.draw(st.sampled_from(FAULTS))
    if isinstance(fault, fb.Precision):
        fault = fb.Precision([0.01] * net.L)
    n_sites = len(net.weighted_nodes) if fault.site in ("synapse", "weight") else net.L
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    if fault.counted:
        sizes = [
            net.nodes[n].width if fault.site == "neuron" else int((net.nodes[n].op.op.weight != 0).sum())  # type: ignore[attr-defined]
            for n in (net.site_nodes if fault.site == "neuron" else net.weighted_nodes)
        ]
        counts = [data.draw(st.integers(0, min(3, s))) for s in sizes]
        if not any(counts):
            counts[data.draw(st.integers(0, n_sites - 1))] = 1
        fs = sample_faults(net, fault, 6, failures=counts, generator=gen)
    else:
        fs = sample_faults(net, fault, 6)
    x = net.domain.sample(3, generator=torch.Generator().manual_seed(1)).to(torch.float64)
    inj = inject(net, x, fault, fs, dtype=torch.float64)
    # a float32 weight flip: the engine adds the float32 word's change to the float64 weight, the
    # reference sets the weight to the flipped word; they differ by the weight's float32 rounding,
    # at most 2^-24 |w| (outputs here are O(1)): float32-level tolerance. Otherwise float64 rounding.
    tol = 1e-6 if isinstance(fault, fb.BitFlip) and fault.target == "weight" and fault.format == "float32" else 1e-9
    for t in range(6):
        for b in range(3):
            want = _reference(net, x, fault, inj, fs, t, b)
            got = inj.outputs[t, b]
            fin = torch.isfinite(want)
            assert torch.equal(fin, torch.isfinite(got)) or not bool(fin.all())
            torch.testing.assert_close(got[fin], want[fin], rtol=tol, atol=tol / 10)


def test_layered_view_equals_layered_engine() -> None:
    """8-64-32-1 ReLU, crashes with failures 3,2 (several units per site, in two sites), in float32:
    the graph engine on ``GraphNetwork.from_network(net)`` does the layered engine's arithmetic (the
    same low-rank products and scatters), so the outputs are bitwise equal."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 1))
    net = fb.Network.from_torch(m)
    graph = GraphNetwork.from_network(net)
    x = net.domain.sample(64, generator=torch.Generator().manual_seed(0))
    for fault, failures in [(fb.Crash(), [3, 2]), (fb.Byzantine(1.0), [3, 2]), (fb.SynapseCrash(), [0, 3, 2])]:
        fs = sample_faults(net, fault, 200, failures=failures, generator=torch.Generator().manual_seed(2))
        a = inject(net, x, fault, fs, generator=torch.Generator().manual_seed(3))
        b = inject(graph, x, fault, fs, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.outputs, b.outputs), fault
