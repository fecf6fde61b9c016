"""The verbs on graph networks: ``bound`` (tight; paper and fep_as_printed refused in one line),
per-input certificates (never below brute force) and the tolerance search (re-checked by bound
calls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.bounds import compare_methods
from faultbound.bounds.certify import certified_accuracy, certify
from faultbound.bounds.graph_tight import graph_tight_bound
from faultbound.errors import InvalidArgumentError, UnsupportedModelError
from tests.graph_reference import ACTS, TEMPLATES, FaultSpec, brute_force, corners_and_points, forward_all
from tests.hyp import examples, soundness


def _graph(name: str = "residual", seed: int = 1):  # type: ignore[no-untyped-def]
    tg = TEMPLATES[name](seed, ["tanh", "relu", "gelu"])
    return tg, tg.build()


# ----------------------------------------------------------------------------- bound
def test_bound_tight_on_graph_is_graph_tight() -> None:
    _, net = _graph()
    f = [1] + [0] * (net.L - 1)
    res = fb.bound(net, f, fb.Crash(), "tight")
    value, per_site = graph_tight_bound(net, f, fb.Crash())
    assert res.value == value and res.method == "tight"
    assert len(res.per_layer) == net.L and res.per_layer == tuple(per_site)
    assert res.per_layer[0] == pytest.approx(res.value) and all(v == 0 for v in res.per_layer[1:])
    syn = fb.bound(net, [1] * len(net.weighted_nodes), fb.SynapseCrash(), "tight")
    assert len(syn.per_layer) == len(net.weighted_nodes) and syn.value > 0
    prec = fb.bound(net, fault=fb.Precision([0.01] * net.L), method="tight")
    assert prec.value > 0 and len(prec.per_layer) == net.L



def test_bound_default_method_is_tight_on_a_graph_and_paper_on_a_chain() -> None:
    """``method`` left out: :func:`faultbound.bounds.api.default_method` (tight on a graph, where
    the paper's bound is refused; paper on a layered network), named by ``result.method``."""
    _, net = _graph()
    f = [1] + [0] * (net.L - 1)
    assert fb.bound(net, f) == fb.bound(net, f, method="tight")
    torch.manual_seed(0)
    chain = fb.Network.from_torch(
        torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3), torch.nn.Tanh(),
                            torch.nn.Linear(3, 1))
    )
    paper = fb.bound(chain, [1, 1], method="paper")
    assert fb.bound(chain, [1, 1]) == paper and paper.method == "paper"
    assert fb.bound(chain, [1, 1], method="tight").value < paper.value  # the two methods differ here


def test_paper_and_fep_refused_on_graph_in_one_line() -> None:
    _, net = _graph()
    for call in (
        lambda: fb.bound(net, [1] * net.L, fb.Crash(), "paper"),
        lambda: fb.fep_as_printed(net, [1] * net.L),
        lambda: fb.tolerate(net, 1.0, 0.1, fb.Crash(), "paper"),
        lambda: compare_methods(net, 1.0, 0.1),
    ):
        with pytest.raises(UnsupportedModelError) as ei:
            call()
        msg = str(ei.value)
        assert "\n" not in msg and "method='tight'" in msg and "layered" in msg


def test_bound_on_graph_validates_counts() -> None:
    _, net = _graph()
    with pytest.raises(InvalidArgumentError, match="fault site"):
        fb.bound(net, [1] * (net.L + 1), fb.Crash(), "tight")
    with pytest.raises(InvalidArgumentError):
        fb.bound(net, [net.widths[0]] + [0] * (net.L - 1), fb.Crash(), "tight")  # f_l = N_l
    inf = fb.bound(net, [1] + [0] * (net.L - 1), fb.Byzantine(float("inf")), "tight")
    assert inf.unbounded


def test_bound_on_chain_graph_covers_brute_force() -> None:
    """A layered network viewed as a graph: its graph bound is at least the layered brute-force worst
    (here: the same crash measured on the graph's reference)."""
    tg, net = _graph("layernorm_mlp", 4)
    f = [1] * len(tg.site_ids)
    x = corners_and_points(tg, 16, 4)
    worst = float(brute_force(tg, FaultSpec("crash"), f, x).max())
    assert 0 < worst <= fb.bound(net, f, fb.Crash(), "tight").value


# ----------------------------------------------------------------------------- certify
@soundness
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    template=st.sampled_from(sorted(TEMPLATES)),
    seed=st.integers(0, 10**5),
    acts=st.lists(st.sampled_from(sorted(ACTS)), min_size=3, max_size=3),
    kind=st.sampled_from(["crash", "byzantine", "byzdev", "stuck"]),
    radius=st.sampled_from([0.0, 0.0, 0.05]),
)
def test_certify_on_graph_never_below_brute_force(
    template: str, seed: int, acts: list[str], kind: str, radius: float
) -> None:
    tg = TEMPLATES[template](seed, acts)
    net = tg.build()
    fault = {
        "crash": fb.Crash(),
        "byzantine": fb.Byzantine(1.0),
        "byzdev": fb.ByzantineDeviation(0.5),
        "stuck": fb.StuckAt(0.5),
    }[kind]
    spec = FaultSpec(kind, 0.5 if kind in ("byzdev", "stuck") else 1.0)
    f = [1] * len(tg.site_ids)
    x = corners_and_points(tg, 6, seed)
    cert = certify(net, x, f, fault, radius=radius, batch_size=5)
    # at x itself, and at points of the box around x when radius > 0
    shift = 2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) - 1
    pts = [x] if radius == 0 else [x, x + radius * shift]
    for p in pts:
        measured = brute_force(tg, spec, f, p, cap=300, seed=seed).numpy()
        assert (measured <= cert.per_output * (1 + 1e-9) + 1e-12).all()
    # batched equals one at a time
    one = np.concatenate([certify(net, x[i : i + 1], f, fault, radius=radius).per_output for i in range(3)])
    np.testing.assert_allclose(cert.per_output[:3], one, rtol=1e-12, atol=1e-15)


def test_certify_on_graph_splits_passes_by_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph's inputs are split into passes of at most GRAPH_ROWS rows x units: the same bounds."""
    import importlib

    cmod = importlib.import_module("faultbound.bounds.certify")  # the package re-exports the function

    tg, net = _graph("residual", 3)
    x = corners_and_points(tg, 5, 3)
    f = [1] + [0] * (net.L - 1)
    whole = certify(net, x, f, fb.Crash())
    calls: list[int] = []
    real = cmod.graph_propagate

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(int(args[3].shape[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(cmod, "graph_propagate", counted)
    monkeypatch.setattr(cmod, "GRAPH_ROWS", 2 * net.n_outputs * max(node.width for node in net.nodes))
    split = certify(net, x, f, fb.Crash())
    assert calls == [2] * (x.shape[0] // 2) + [1] * (x.shape[0] % 2)
    np.testing.assert_allclose(split.per_output, whole.per_output, rtol=1e-12, atol=1e-15)


def test_certified_accuracy_on_graph() -> None:
    tg, net = _graph("attention", 2)
    x = corners_and_points(tg, 40, 2)
    with torch.no_grad():
        labels = net.forward(x).argmax(1).numpy()
    labels[:3] = 1 - labels[:3]  # three wrong labels
    f = [1] + [0] * (net.L - 1)
    acc = certified_accuracy(net, x, labels, f, fb.Crash())
    assert acc.clean_accuracy == pytest.approx(1 - 3 / x.shape[0])
    assert (acc.certified <= acc.correct).all() and acc.certified_accuracy <= acc.clean_accuracy
    assert acc.certified.any()
    # a certified input keeps its class under every brute-forced failure set
    spec = FaultSpec("crash")
    idx = np.flatnonzero(acc.certified)[:6]
    dev = brute_force(tg, spec, f, x[idx]).numpy()
    logits = forward_all(tg, x[idx])[-1].reshape(len(idx), -1).numpy()
    c = logits.argmax(1)
    rows = np.arange(len(idx))
    low = logits[rows, c] - dev[rows, c]
    high = logits + dev
    high[rows, c] = -np.inf
    assert (low > high.max(1)).all()


def test_certify_exact_on_a_graph_that_is_not_piecewise_linear_is_refused() -> None:
    tg, net = _graph("attention")
    with pytest.raises(UnsupportedModelError, match="method='tight'"):
        certify(net, corners_and_points(tg, 1, 0), [1] + [0] * (net.L - 1), method="exact")


# ----------------------------------------------------------------------------- tolerance
@pytest.mark.parametrize(
    "template,fault", [("residual", fb.Crash()), ("cnn_maxpool", fb.Byzantine(0.5)), ("attention", fb.SynapseCrash())]
)
def test_tolerate_on_graph_rechecked_by_bound(template: str, fault: fb.Fault) -> None:
    tg, net = _graph(template, 3)
    zero = [0] * (len(net.weighted_nodes) if fault.site == "synapse" else net.L)
    one = list(zero)
    one[0] = 1
    eps_prime = 0.01
    eps = eps_prime + 2.5 * fb.bound(net, one, fault, "tight").value  # a budget some counts fit in
    res = fb.tolerate(net, eps, eps_prime, fault, "tight")
    budget = eps - eps_prime
    limits = fb.failures.max_counts(net, fault, correct_neuron=True)
    assert len(res.per_layer_max) == len(zero) and res.per_layer_max[0] >= 1
    for l, v in enumerate(res.per_layer_max):
        f = list(zero)
        f[l] = v
        assert fb.bound(net, f, fault, "tight").value <= budget
        if v < limits[l]:
            f[l] = v + 1
            assert fb.bound(net, f, fault, "tight").value > budget
    assert fb.bound(net, list(res.uniform_failures), fault, "tight").value <= budget
    if res.maximal is not None:
        assert res.maximal
        for m in res.maximal:
            assert fb.bound(net, list(m), fault, "tight").value <= budget


@soundness
@settings(max_examples=examples(4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**5))
def test_tolerated_distributions_hold_under_brute_force(seed: int) -> None:
    """Every maximal distribution tolerate reports, brute-forced: the worst deviation stays within
    the budget eps - eps'."""
    tg = TEMPLATES["residual"](seed, ["tanh", "sigmoid", "relu"], depth=1)
    net = tg.build()
    eps_prime = 0.0
    eps = 2.0 * fb.bound(net, [1, 0, 0], fb.Crash(), "tight").value
    res = fb.tolerate(net, eps, eps_prime, fb.Crash(), "tight")
    assert res.maximal is not None
    x = corners_and_points(tg, 8, seed)
    for m in res.maximal:
        worst = float(brute_force(tg, FaultSpec("crash"), list(m), x, cap=200).max())
        assert worst <= eps - eps_prime
