"""``method="exact"`` (MILP) against brute force, the measurement engine, tight and paper.

References here never import :mod:`faultbound.bounds.exact`'s internals: brute force is a plain
numpy forward pass over the torch module's own weights with every failure set enumerated, and
witnesses are replayed with the measurement engine (:mod:`faultbound.measure`).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import faultbound as fb
from faultbound.errors import UnsupportedModelError
from faultbound.failures import layer_count
from faultbound.measure import FaultSet, worst_case
from faultbound.measure.engine import differentiable_outputs
from faultbound.measure.state import clean_pass
from tests.cli_run import run
from tests.hyp import examples, soundness

REL = 1e-5  # the documented margin, relative to the problem's scale (>= 1 here)
TOL = 2e-5


# ----------------------------------------------------------------------------- references
def _layers(mod: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray, nn.Module | None]]:
    """(W, b, activation after it) of an MLP given as Linear, act, Linear, act, ..., Linear."""
    mods = list(mod)
    out = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            act = mods[i + 1] if i + 1 < len(mods) else None
            out.append((m.weight.detach().double().numpy(), m.bias.detach().double().numpy(), act))
    return out


def _act(m: nn.Module | None, s: np.ndarray) -> np.ndarray:
    if m is None:
        return s
    if isinstance(m, nn.ReLU):
        return np.maximum(s, 0.0)
    if isinstance(m, nn.LeakyReLU):
        return np.where(s >= 0, s, m.negative_slope * s)
    if isinstance(m, nn.Hardtanh):
        return np.clip(s, m.min_val, m.max_val)
    raise AssertionError(m)


def forward(mod: nn.Sequential, x: np.ndarray, crash: dict[int, tuple[int, ...]] | None = None,
            stuck: float = 0.0, cut: dict[int, tuple[tuple[int, int], ...]] | None = None) -> np.ndarray:
    """Plain numpy forward; ``crash[l]`` units of hidden layer l send ``stuck`` (0: a crash);
    ``cut[l]`` synapses (j, i) into layer l transmit 0."""
    y = np.asarray(x, dtype=np.float64)
    for l, (W, b, act) in enumerate(_layers(mod), start=1):
        Wl = W.copy()
        for j, i in (cut or {}).get(l, ()):
            Wl[j, i] = 0.0
        y = _act(act, Wl @ y + b)
        for j in (crash or {}).get(l, ()):
            y[j] = stuck
    return y


def _sets(sizes: list[int], counts: list[int]) -> list[dict[int, tuple[int, ...]]]:
    per = [list(itertools.combinations(range(n), f)) for n, f in zip(sizes, counts, strict=True)]
    return [{l + 1: c for l, c in enumerate(combo)} for combo in itertools.product(*per)]


def _mlp(widths: list[int], act: str = "relu", d_in: int = 2, n_out: int = 2, seed: int = 0,
         scale: float = 1.0) -> nn.Sequential:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    prev = d_in
    for w in widths:
        lin = nn.Linear(prev, w)
        with torch.no_grad():
            lin.weight.mul_(scale * 2)
            lin.bias.mul_(scale)
        mods += [lin, {"relu": nn.ReLU(), "leaky": nn.LeakyReLU(0.1), "hardtanh": nn.Hardtanh()}[act]]
        prev = w
    mods.append(nn.Linear(prev, n_out))
    return nn.Sequential(*mods).double().eval()


def engine_replay(net: fb.Network, fault: fb.faults.Fault, w: dict) -> float:
    """The engine's float64 error of a witness (independent of the exact module's own replay)."""
    x = torch.tensor(w["input"], dtype=torch.float64).reshape(1, *net.input_shape)
    n = net.L if isinstance(fault, fb.Precision) else layer_count(net, fault)
    sites: list[torch.Tensor | None] = [None] * n
    vals: list[torch.Tensor | None] = [None] * n
    for key, units in w["failure_set"].items():
        if units:
            sites[int(key) - 1] = torch.tensor([units])
            if key in w.get("values", {}):
                vals[int(key) - 1] = torch.tensor(w["values"][key], dtype=torch.float64).reshape(1, 1, -1)
    for key, ps in w.get("precision", {}).items():
        vals[int(key) - 1] = torch.tensor(ps, dtype=torch.float64).reshape(1, 1, -1)
    fs = FaultSet(1, tuple(sites) if not isinstance(fault, fb.Precision) else ())
    with torch.no_grad():
        clean = clean_pass(net, x, torch.float64)
        out = differentiable_outputs(net, clean, fault, fs, vals)
    return float((out[0, 0] - clean.output[0]).abs().max())


def _within_box(net: fb.Network, w: dict) -> bool:
    x = np.asarray(w["input"])
    return bool(np.all(x >= net.domain.lo.numpy().ravel()) and np.all(x <= net.domain.hi.numpy().ravel()))


# ----------------------------------------------------------------------------- brute force
@pytest.mark.parametrize("act", ["relu", "leaky", "hardtanh"])
@pytest.mark.parametrize("kind", ["crash", "stuck"])
def test_per_input_exact_equals_every_set_enumerated(act: str, kind: str) -> None:
    mod = _mlp([4, 3], act, d_in=2, n_out=2, seed=3)
    net = fb.Network.from_torch(mod, domain=(-1, 1))
    stuck = 0.0 if kind == "crash" else 0.7
    fault = fb.Crash() if kind == "crash" else fb.StuckAt(stuck)
    counts = [1, 2]
    rng = np.random.default_rng(0)
    for x in rng.uniform(-1, 1, size=(3, 2)):
        clean = forward(mod, x)
        brute = max(np.abs(forward(mod, x, s, stuck) - clean).max() for s in _sets([4, 3], counts))
        cert = fb.bounds.certify(net, x[None], counts, fault, method="exact")
        assert cert.bounds[0] >= brute - 1e-12
        assert cert.bounds[0] <= brute + REL * max(1.0, 10 * brute) + 1e-9, (cert.bounds[0], brute)
        per_out = [max(abs(forward(mod, x, s, stuck) - clean)[k] for s in _sets([4, 3], counts)) for k in range(2)]
        assert cert.per_output[0] == pytest.approx(per_out, abs=1e-4)


def test_per_input_synapse_crash_equals_enumeration() -> None:
    mod = _mlp([3, 2], "relu", d_in=2, n_out=1, seed=5)
    net = fb.Network.from_torch(mod, domain=(0, 1))
    x = np.array([0.3, 0.8])
    clean = forward(mod, x)
    syn = [[(j, i) for j in range(W.shape[0]) for i in range(W.shape[1])] for W, _, _ in _layers(mod)]
    counts = [1, 0, 1]
    brute = 0.0
    for a in itertools.combinations(syn[0], counts[0]):
        for c in itertools.combinations(syn[2], counts[2]):
            brute = max(brute, float(np.abs(forward(mod, x, cut={1: a, 3: c}) - clean).max()))
    cert = fb.bounds.certify(net, x[None], counts, fb.SynapseCrash(), method="exact")
    assert brute - 1e-12 <= cert.bounds[0] <= brute + 1e-4


def test_whole_domain_between_grid_and_tight() -> None:
    mod = _mlp([4, 3], "relu", d_in=2, n_out=2, seed=7)
    net = fb.Network.from_torch(mod, domain=(-1, 1))
    counts = [1, 1]
    res = fb.bound(net, counts, fb.Crash(), method="exact")
    g = np.linspace(-1, 1, 41)
    grid = max(
        np.abs(forward(mod, np.array([a, b]), s) - forward(mod, np.array([a, b]))).max()
        for a in g for b in g for s in _sets([4, 3], counts)
    )
    tight = fb.bound(net, counts, fb.Crash(), method="tight").value
    assert res.optimal
    assert grid <= res.value + 1e-12 and res.value - res.gap <= tight + 1e-9  # type: ignore[operator]
    # the grid is within a Lipschitz step of the optimum
    assert res.lower <= grid + 0.1 and res.lower >= grid - 1e-9  # type: ignore[operator]
    assert engine_replay(net, fb.Crash(), res.witness) == pytest.approx(res.lower, abs=1e-9)  # type: ignore[arg-type]


def test_time_limit_reports_dual_bound_not_incumbent() -> None:
    mod = _mlp([6, 5], "relu", d_in=2, n_out=2, seed=1)
    net = fb.Network.from_torch(mod, domain=(-1, 1))
    full = fb.bound(net, [1, 1], fb.Byzantine(1.0), method="exact")
    short = fb.bound(net, [1, 1], fb.Byzantine(1.0), method="exact", time_limit=0.02)
    assert full.optimal and not short.optimal  # about 3 s to optimality, stopped at 0.02 s
    # sound either way: never below the optimum, and the interval contains it
    assert short.value >= full.value - TOL
    assert short.lower <= full.value  # type: ignore[operator]
    assert short.gap is not None and short.gap > 0
    assert any("dual bound" in n for n in short.notes)


def test_at_most_never_below_exactly() -> None:
    mod = _mlp([3, 3], "relu", d_in=1, n_out=1, seed=11)
    net = fb.Network.from_torch(mod, domain=(0, 1))
    from faultbound.bounds.exact import exact_bound

    exactly = exact_bound(net, [2, 1], fb.Crash())
    at_most = exact_bound(net, [2, 1], fb.Crash(), at_most=True)
    assert at_most.value >= exactly.value - TOL
    # at most is the max over the sizes below: check against those solved exactly
    sub = max(exact_bound(net, [a, b], fb.Crash()).lower for a in range(3) for b in range(2))
    assert at_most.lower == pytest.approx(sub, abs=1e-6)


def test_conv_network_per_input_crash() -> None:
    torch.manual_seed(2)
    mod = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.AvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double().eval()
    net = fb.Network.from_torch(mod, domain=(0, 1), input_shape=(1, 3, 3))
    x = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        h = torch.relu(mod[0](x)).reshape(-1)
        clean = mod[4](h)
        brute = max(float((mod[4](h * (torch.arange(8) != j)) - clean).abs().max()) for j in range(8))
    cert = fb.bounds.certify(net, x, [1], fb.Crash(), method="exact")
    assert brute - 1e-12 <= cert.bounds[0] <= brute + 1e-4


# ----------------------------------------------------------------------------- property
FAULTS = ["crash", "stuck-at", "byzantine", "byzantine-deviation", "synapse-crash", "synapse-byzantine", "precision"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[fb.Network, fb.faults.Fault, list[int] | None]:
    depth = draw(st.integers(1, 3))
    widths = [draw(st.integers(2, 3)) for _ in range(depth)]
    act = draw(st.sampled_from(["relu", "leaky", "hardtanh"]))
    mod = _mlp(widths, act, d_in=draw(st.integers(1, 2)), n_out=draw(st.integers(1, 2)),
               seed=draw(st.integers(0, 10_000)), scale=draw(st.sampled_from([0.5, 1.0])))
    net = fb.Network.from_torch(mod, domain=(-1, 1))
    kind = draw(st.sampled_from(FAULTS))
    if kind == "precision":
        return net, fb.Precision([draw(st.sampled_from([0.0, 0.05, 0.2])) for _ in widths]), None
    fault = fb.faults.parse_fault(kind, capacity=draw(st.sampled_from([0.5, 1.0])), value=0.5)
    n = layer_count(net, fault)
    counts = [draw(st.integers(0, 1)) for _ in range(n)]
    return net, fault, counts


@soundness
@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_search_le_exact_le_tight_le_paper(case: tuple) -> None:
    net, fault, counts = case
    ex = fb.bound(net, counts, fault, method="exact")
    tight = fb.bound(net, counts, fault, method="tight").value
    paper = fb.bound(net, counts, fault, method="paper").value
    assert ex.optimal and ex.lower is not None and ex.witness is not None
    # the witness is a real configuration: inside the box, replayed by the engine to the value
    assert _within_box(net, ex.witness)
    replayed = engine_replay(net, fault, ex.witness)
    assert replayed == pytest.approx(ex.lower, abs=1e-9)
    assert ex.value - ex.lower <= 1e-3  # the margin: 1e-5 of the (small) interval scale
    if not isinstance(fault, fb.Precision):
        found = worst_case(net, fault, counts, restarts=2, steps=10).max_error
        assert found <= ex.value + 1e-9
    assert ex.lower <= tight * (1 + 1e-9) + 1e-9, (ex.lower, tight)
    assert tight <= paper * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("act", ["leaky", "hardtanh"])
def test_exact_le_tight_byzantine_deviation(act: str) -> None:
    """Issue 8: tight under Byzantine deviation was below these true worst cases (0.6638 vs 0.6580
    and 0.5680), found by exact and replayed by the engine. Seed 10 from a scan of seeds 0..10."""
    net = fb.Network.from_torch(_mlp([3, 3], act, d_in=2, n_out=1, seed=10), domain=(-1, 1))
    fault = fb.ByzantineDeviation(0.5)
    ex = fb.bound(net, [1, 1], fault, method="exact")
    assert engine_replay(net, fault, ex.witness) == pytest.approx(ex.lower, abs=1e-9)  # type: ignore[arg-type]
    assert ex.lower <= fb.bound(net, [1, 1], fault, method="tight").value * (1 + 1e-9) + 1e-9


# ----------------------------------------------------------------------------- refusals and CLI
def _sigmoid_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Sigmoid(), nn.Linear(3, 1)).eval()


def test_sigmoid_refused_naming_the_operation() -> None:
    net = fb.Network.from_torch(_sigmoid_net())
    with pytest.raises(UnsupportedModelError, match="layer 2 has Sigmoid"):
        fb.bound(net, [1, 1], method="exact")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("exact")
    out = {}
    for name, m in (("relu", _mlp([4, 3], "relu", d_in=2, n_out=2, seed=4).float()), ("sig", _sigmoid_net())):
        p = d / f"{name}.pt2"
        torch.export.save(torch.export.export(m, (torch.rand(1, 2),)), str(p))
        out[name] = p
    return out


def test_cli_exact_json_keys(files: dict[str, Path]) -> None:
    code, out, err = run("bound", str(files["relu"]), "--failures", "1,1", "--method", "exact", "--json")
    assert code == 0, err
    ex = json.loads(out)
    code, out, _ = run("bound", str(files["relu"]), "--failures", "1,1", "--method", "tight", "--json")
    tight = json.loads(out)
    assert set(ex) == set(tight) | {"gap", "witness", "lower", "optimal"}
    assert ex["method"] == "exact" and ex["optimal"] is True and 0 <= ex["gap"] <= 1e-4
    assert ex["value"] <= tight["value"] + 1e-9
    assert set(ex["witness"]) >= {"input", "failure_set", "output", "sign"}
    net = fb.load(files["relu"])
    assert engine_replay(net, fb.Crash(), ex["witness"]) == pytest.approx(ex["lower"], abs=1e-6)


def test_cli_time_limit_and_refusal(files: dict[str, Path]) -> None:
    code, out, err = run("bound", str(files["relu"]), "--failures", "1,1", "--method", "exact",
                         "--time-limit", "30", "--json")
    assert code == 0, err
    assert json.loads(out)["gap"] is not None
    code, out, err = run("bound", str(files["sig"]), "--failures", "1,1", "--method", "exact")
    assert code == 2 and "Sigmoid" in err and len(err.strip().splitlines()) == 1
    code, out, err = run("bound", str(files["relu"]), "--failures", "1,1", "--time-limit", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    code, out, err = run("bound", str(files["relu"]), "--failures", "1,1", "--method", "both", "--json")
    assert code == 0 and [r["method"] for r in json.loads(out)["results"]] == ["paper", "tight"]


def test_cli_certify_exact(files: dict[str, Path], tmp_path: Path) -> None:
    X = np.random.default_rng(0).uniform(0, 1, (3, 2)).astype(np.float32)
    net = fb.load(files["relu"])
    y = net.forward(torch.as_tensor(X, dtype=torch.float64)).argmax(1).numpy()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    code, out, err = run("certify", str(files["relu"]), "--data", str(tmp_path / "d.npz"), "--failures", "1,0",
                         "--method", "exact", "--samples", "4", "--json")
    assert code == 0, err
    ex = json.loads(out)
    code, out, err = run("certify", str(files["relu"]), "--data", str(tmp_path / "d.npz"), "--failures", "1,0",
                         "--samples", "4", "--json")
    tight = json.loads(out)
    assert ex["method"] == "exact" and ex["certified_accuracy"] >= tight["certified_accuracy"]
    assert ex["bound_max"] <= tight["bound_max"] + 1e-9
    assert math.isfinite(ex["bound_median"])
