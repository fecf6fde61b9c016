"""Measurement on random small graph networks: the engine equals the plain-torch reference for random
fault sets, and campaigns and worst-case searches never exceed the graph's tight bound."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.bounds.graph_tight import graph_tight_bound
from faultbound.measure import CampaignSpec, FaultSet, inject, run_campaign, sample_faults, worst_case
from faultbound.network import activations as A  # noqa: N812
from faultbound.network import gops as G  # noqa: N812
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import AvgPool, Conv, Dense, Flatten
from tests.graph_engine_reference import ref_faulty
from tests.hyp import examples, soundness

ACTS = [A.ReLU(), A.Tanh(), A.Sigmoid()]


@st.composite
def graphs(draw: st.DrawFn) -> GraphNetwork:
    """Image graphs of 1-4 blocks (conv + activation, pooling, residual block, channel concat),
    then flatten and a dense output."""
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    c, h = draw(st.integers(1, 2)), draw(st.integers(4, 6))
    nodes: list[tuple[str, G.GOp, tuple[int, ...]]] = [("x", G.Input(), ())]
    vals = [torch.zeros((1, c, h, h), dtype=torch.float64)]

    def add(op: G.GOp, ins: tuple[int, ...]) -> int:
        nodes.append((f"n{len(nodes)}", op, ins))
        vals.append(op.forward(*(vals[j] for j in ins)))
        return len(nodes) - 1

    def conv(src: int, co: int, k: int, s: int, p: int) -> int:
        ci = vals[src].shape[1]
        w = torch.randn((co, ci, k, k), generator=g, dtype=torch.float64) * (1.0 / (ci * k * k) ** 0.5)
        b = torch.randn(co, generator=g, dtype=torch.float64) * 0.1
        return add(G.Affine(Conv(w, b, (s, s), (p, p))), (src,))

    def act(src: int) -> int:
        return add(G.Act(draw(st.sampled_from(ACTS))), (src,))

    cur = 0
    for _ in range(draw(st.integers(1, 4))):
        _, cc, hh, _ = vals[cur].shape
        kind = draw(st.sampled_from(["conv", "pool", "res", "cat"]))
        if kind == "conv":
            k = draw(st.integers(1, min(3, hh)))
            cur = act(conv(cur, draw(st.integers(1, 3)), k, draw(st.integers(1, 2)), draw(st.integers(0, k - 1))))
        elif kind == "pool" and hh >= 2:
            op = G.MaxPool((2, 2), (2, 2), (0, 0)) if draw(st.booleans()) else G.Affine(AvgPool((2, 2), (1, 1), (0, 0)))
            cur = add(op, (cur,))
        elif kind == "res":
            cur = act(add(G.Add((1, 1)), (act(conv(cur, cc, 3, 1, 1)), cur)))
        else:
            cur = add(G.Concat(1), (act(conv(cur, draw(st.integers(1, 2)), 1, 1, 0)), cur))
    if not any(isinstance(op, G.Act) for _, op, _ in nodes):
        cur = act(conv(cur, 2, 1, 1, 0))
    fl = add(G.Affine(Flatten()), (cur,))
    n_in = vals[fl].shape[1]
    n_out = draw(st.integers(1, 3))
    w = torch.randn((n_out, n_in), generator=g, dtype=torch.float64) / n_in**0.5
    add(G.Affine(Dense(w, torch.zeros(n_out, dtype=torch.float64))), (fl,))
    return GraphNetwork.build(nodes, (c, h, h), None)


def _counts(draw: st.DrawFn, net: GraphNetwork, synapse: bool) -> list[int]:
    n = len(net.weighted_nodes) if synapse else net.L
    counts = [draw(st.integers(0, 1)) for _ in range(n)]
    if not any(counts):
        counts[draw(st.integers(0, n - 1))] = 1
    return counts


NEURON = [fb.Crash(), fb.Byzantine(0.5), fb.StuckAt(-0.4), fb.ByzantineDeviation(0.2)]
SYNAPSE = [fb.SynapseCrash(), fb.SynapseByzantine(0.3)]


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_graphs_match_reference(data: st.DataObject) -> None:
    net = data.draw(graphs())
    fault = data.draw(st.sampled_from(NEURON + SYNAPSE))
    synapse = fault.site == "synapse"
    counts = _counts(data.draw, net, synapse)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    fs = sample_faults(net, fault, 3, failures=counts, generator=gen)
    x = net.domain.sample(2, generator=torch.Generator().manual_seed(1)).to(torch.float64)
    inj = inject(net, x, fault, fs, dtype=torch.float64)
    gain = 1.0 if isinstance(fault, fb.ByzantineDeviation) else 0.0
    for t in range(3):
        units = {k: [int(u) for u in s[t] if u >= 0] for k, s in enumerate(fs.sites) if s is not None}
        for b in range(2):
            vals = {
                k: [float(v[t, 0 if v.shape[1] == 1 else b, c]) for c in range(len(units[k]))]
                for k, v in enumerate(inj.values)
                if v is not None
            }
            want = ref_faulty(net, x[b], "synapse" if synapse else "neuron", units, values=vals or None, gain=gain,
                              const=getattr(fault, "value", 0.0))
            torch.testing.assert_close(inj.outputs[t, b], want, rtol=1e-9, atol=1e-10)


@soundness
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_campaign_and_search_stay_below_graph_tight(data: st.DataObject) -> None:
    net = data.draw(graphs())
    fault = data.draw(st.sampled_from(NEURON + SYNAPSE))
    counts = _counts(data.draw, net, fault.site == "synapse")
    bound, _ = graph_tight_bound(net, counts, fault)
    x = net.domain.sample(16, generator=torch.Generator().manual_seed(0))
    res = run_campaign(net, x, CampaignSpec(fault, trials=40, failures=tuple(counts), values="adversarial",
                                            dtype="float64"))
    assert res.max_error <= bound
    w = worst_case(net, fault, counts, n_probe=8, rounds=1, restarts=1, steps=4, exhaustive_limit=2000)
    assert w.max_error <= bound
    assert w.max_error >= 0.0


@soundness
@settings(max_examples=examples(5), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_precision_campaign_below_graph_tight(data: st.DataObject) -> None:
    net = data.draw(graphs())
    lams = [data.draw(st.sampled_from([0.0, 0.01, 0.1])) for _ in range(net.L)]
    fault = fb.Precision(lams)
    bound, _ = graph_tight_bound(net, None, fault)
    x = net.domain.sample(8, generator=torch.Generator().manual_seed(0))
    for mode in ("fixed", "adversarial"):
        inj = inject(net, x, fault, FaultSet(4, (None,) * net.L), values=mode, dtype=torch.float64)
        assert float(inj.errors.max()) <= bound
