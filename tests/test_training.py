"""Training (5.3): differentiable bounds (gradcheck, reference, soundness), clipping, runs, export."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import faultbound as fb
from faultbound.apps.training import (
    TrainConfig,
    clip_weights,
    dense_constants,
    export_model,
    fep_neuron_torch,
    fep_paper_torch,
    fep_regulariser,
    fit,
    init_linear_,
    mlp,
    sweep,
    train,
    tuned_mlp,
)
from faultbound.bounds.api import METHODS
from faultbound.errors import InvalidArgumentError
from faultbound.nn import TunedSigmoid
from tests.hyp import examples
from tests.reference import probe_points


def _weights(seed: int, sizes=(3, 5, 4, 2)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand((o, i), generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
        for i, o in itertools.pairwise(sizes)
    ]


@pytest.mark.parametrize("smooth", [None, 0.1])
def test_gradcheck_paper_regulariser(smooth: float | None) -> None:
    ws = _weights(0)
    assert torch.autograd.gradcheck(lambda *w: fep_paper_torch(w, [2.0, 0.5], [1, 2], 1.0, smooth), tuple(ws))


def test_gradcheck_neuron_regulariser() -> None:
    ws = _weights(1)
    assert torch.autograd.gradcheck(lambda *w: fep_neuron_torch(w, [0.7, 0.3], [2, 1], 1.0, 1.0), tuple(ws))


def _model(K: float = 1.5, seed: int = 0, widths=(5, 4)) -> nn.Sequential:
    torch.manual_seed(seed)
    m = tuned_mlp(3, widths, 2, K).double()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    return m


def _val(*args, **kw) -> float:
    return float(fep_regulariser(*args, **kw).detach())


def test_paper_regulariser_equals_library_bound() -> None:
    m = _model()
    net = fb.Network.from_torch(m)
    for f in ([0, 0], [1, 0], [2, 3], [0, 1]):
        val = _val(m, f, "paper")
        assert val == pytest.approx(fb.bound(net, f, method="paper").value, rel=1e-12, abs=1e-12)
        # the smooth max is an upper bound of the max: still certified, close for small t
        smooth = _val(m, f, "paper", smooth=0.01)
        assert val <= smooth <= val * 1.2 + 1e-12


def _brute_worst(net: fb.Network, f: list[int]) -> float:
    x = probe_points(net, n_random=64)
    ref = net.forward(x)
    worst = 0.0
    sets = [list(itertools.combinations(range(n), k)) for n, k in zip(net.widths, f, strict=True)]
    for choice in itertools.product(*sets):
        y = x
        for idx, layer in enumerate(net.layers):
            y = layer.forward(y)
            if layer.activation is not None:
                y = y.clone()
                y[:, list(choice[idx])] = 0.0
        worst = max(worst, float((y - ref).abs().max()))
    return worst


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neuron_regulariser_sound_and_below_paper(seed: int) -> None:
    m = _model(K=[0.5, 1.5, 3.0][seed], seed=seed)
    net = fb.Network.from_torch(m)
    for f in ([1, 0], [0, 2], [2, 1]):
        neuron = _val(m, f, "neuron")
        paper = _val(m, f, "paper")
        assert _brute_worst(net, f) <= neuron * (1 + 1e-9)
        assert neuron <= paper * (1 + 1e-12)


def test_regulariser_errors() -> None:
    m = _model()
    with pytest.raises(InvalidArgumentError):
        fep_regulariser(m, [1], "paper")
    with pytest.raises(InvalidArgumentError):
        fep_regulariser(m, [5, 0], "neuron")
    with pytest.raises(InvalidArgumentError):
        fep_regulariser(m, [1, 0], "nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        fep_regulariser(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), [1])
    with pytest.raises(InvalidArgumentError):
        tuned_mlp(2, [3], 1, 0.0)


def test_clip_weights_bounds_w_max_in_training() -> None:
    torch.manual_seed(0)
    X = torch.rand(64, 2).numpy()
    Y = (X.sum(1) > 1).astype(float) * 5.0
    m = tuned_mlp(2, [6], 1, 1.0)
    fit(m, X, Y, epochs=20, lr=0.1, weight_cap=0.3)
    net = fb.Network.from_torch(m)
    assert max(net.w_max) <= 0.3 + 1e-7
    m2 = tuned_mlp(2, [6], 1, 1.0)
    fit(m2, X, Y, epochs=20, lr=0.1)
    assert max(fb.Network.from_torch(m2).w_max) > 0.3  # the cap is what held it
    clip_weights(m2, 0.1)
    assert max(fb.Network.from_torch(m2).w_max) <= 0.1 + 1e-7


def test_fit_restores_threads_and_penalty_lowers_bound() -> None:
    before = torch.get_num_threads()
    torch.manual_seed(0)
    X = torch.rand(128, 2).numpy()
    Y = torch.sin(3 * torch.as_tensor(X).sum(1)).numpy()
    plain, reg = tuned_mlp(2, [8, 8], 1, 2.0), tuned_mlp(2, [8, 8], 1, 2.0)
    reg.load_state_dict(plain.state_dict())
    fit(plain, X, Y, epochs=15, lr=0.02)
    fit(reg, X, Y, epochs=15, lr=0.02, penalty=lambda mm: 0.05 * fep_regulariser(mm, [1, 1], "paper"))
    assert torch.get_num_threads() == before
    b_plain = fb.bound(fb.Network.from_torch(plain), [1, 1]).value
    b_reg = fb.bound(fb.Network.from_torch(reg), [1, 1]).value
    assert b_reg < b_plain


SMALL = TrainConfig(dataset="synthetic", widths=(8, 6), epochs=4, n_samples=256, measure_runs=40, batch_size=32)


def test_train_summary_consistent() -> None:
    res = train(SMALL)
    s = res.summary
    assert s["failures"] == [1, 1]
    assert 0.0 <= s["accuracy"] <= 1.0 and len(res.history) == 4
    assert s["fep_printed"] == pytest.approx(s["bound_paper"])
    assert s["regulariser_paper"] == pytest.approx(s["bound_paper"], rel=1e-6)
    assert s["measured_max_error"] <= s["bound_paper"]
    if "tight" in METHODS:
        assert s["measured_max_error"] <= s["bound_tight"] * (1 + 1e-9) <= s["bound_paper"] * (1 + 1e-9)
    assert s["epochs_to_target"] is None or 1 <= s["epochs_to_target"] <= 4
    json.dumps(s)  # JSON-ready
    # seeded: the same run twice gives the same numbers
    s2 = train(SMALL).summary
    assert s2["bound_paper"] == s["bound_paper"] and s2["accuracy"] == s["accuracy"]


def test_train_config_errors() -> None:
    for bad in (
        replace(SMALL, K=0.0),
        replace(SMALL, K=math.nan),
        replace(SMALL, dataset="mnist"),  # type: ignore[arg-type]
        replace(SMALL, failures=(8, 0)),
        replace(SMALL, failures=(1,)),
        replace(SMALL, weight_cap=-1.0),
        replace(SMALL, fep_weight=-0.1),
        replace(SMALL, epochs=0),
    ):
        with pytest.raises(InvalidArgumentError):
            train(bad)


def test_sweep_rows() -> None:
    rows = sweep([0.5, 2.0], [0.0], replace(SMALL, epochs=2, measure_runs=10))
    assert [r["K"] for r in rows] == [0.5, 2.0]
    assert all(r["measured_max_error"] <= r["bound_paper"] for r in rows)
    with pytest.raises(InvalidArgumentError):
        sweep([], [0.0], SMALL)


def test_export_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), TunedSigmoid(2.0), nn.Linear(4, 2))
    files = export_model(m, tmp_path, 3)
    assert files["pt2"] is not None and Path(files["pt2"]).exists()
    net = fb.load(files["pt2"])
    x = torch.rand(5, 3)
    assert torch.allclose(net.forward(x.double()).float(), m(x), atol=1e-5)
    assert net.K == [2.0]
    if files.get("onnx"):
        net2 = fb.load(files["onnx"])
        assert torch.allclose(net2.forward(x.double()).float(), m(x), atol=1e-5)


# ------------------------------------------------------------------ one meaning of the paper recursion
def _printed(widths: list[int], w: list[float], K: float, f: list[int], C: float) -> float:
    """Theorem 2 as printed, term by term: C sum_l f_l K^(L-l) w_m^(L+1) prod_{l'>l} (N_l' - f_l') w_m^(l')."""
    L = len(widths)
    total = 0.0
    for l in range(1, L + 1):
        term = C * f[l - 1] * K ** (L - l) * w[L]
        for lp in range(l + 1, L + 1):
            term *= (widths[lp - 1] - f[lp - 1]) * w[lp - 1]
        total += term
    return total


def test_paper_regulariser_hand_worked_errata5() -> None:
    """ERRATA 5's network: N = (3, 3), w_m = (1, 2, 1), tanh (K = C = 1): the printed value is 6 for
    f = (1, 0) and 5 for f = (1, 1); by hand, T_2 = f_1 = 1, D_2 = 1 * 2 * 1 = 2, T_3 = f_2 + (3 - f_2) 2."""
    ws = [torch.full((3, 2), 1.0, dtype=torch.float64), torch.full((3, 3), 2.0, dtype=torch.float64),
          torch.full((1, 3), 1.0, dtype=torch.float64)]
    assert float(fep_paper_torch(ws, [1.0, 1.0], [1, 0], 1.0)) == 6.0
    assert float(fep_paper_torch(ws, [1.0, 1.0], [1, 1], 1.0)) == 5.0
    m = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        for lin, w in zip([m[0], m[2], m[4]], ws, strict=True):
            lin.weight.copy_(w)
    assert _val(m, [1, 0], "paper") == 6.0 and _val(m, [1, 1], "paper") == 5.0


_ACTS = [nn.Sigmoid, nn.Tanh, lambda: TunedSigmoid(0.7), lambda: TunedSigmoid(3.0), lambda: nn.Hardtanh(-0.5, 2.0)]


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    widths=st.lists(st.integers(2, 6), min_size=1, max_size=3),
    acts=st.lists(st.integers(0, len(_ACTS) - 1), min_size=3, max_size=3),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.1, 3.0),
    data=st.data(),
)
def test_paper_regulariser_is_the_library_paper_bound(widths, acts, seed, scale, data) -> None:
    """On random dense networks with per-layer activations, the torch recursion is the numpy one of
    ``method="paper"``; with one activation throughout it is also the printed Theorem 2."""
    g = torch.Generator().manual_seed(seed)
    sizes = [3, *widths, 2]
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        mods.append(nn.Linear(a, b))
        if i < len(widths):
            mods.append(_ACTS[acts[i]]())
    m = nn.Sequential(*mods).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1) * scale)
    f = [data.draw(st.integers(0, n - 1)) for n in widths]
    net = fb.Network.from_torch(m)
    c = dense_constants(m)
    assert c.K == net.K  # the same registry constants the Network holds
    reg = _val(m, f, "paper")
    assert reg == pytest.approx(fb.bound(net, f, fb.Crash(), method="paper").value, rel=1e-12, abs=1e-15)
    if len({acts[i] for i in range(len(widths))}) == 1 and acts[0] != 4:  # one activation, max|phi| = 1
        w = [float(lin.weight.detach().abs().max()) for lin in m if isinstance(lin, nn.Linear)]
        assert reg == pytest.approx(_printed(widths, w, net.K[0], f, 1.0), rel=1e-12, abs=1e-15)
        assert reg == pytest.approx(fb.fep_as_printed(net, f), rel=1e-12, abs=1e-15)


def test_regulariser_constants_come_from_the_registry() -> None:
    """Hardtanh(-0.5, 2) is not special-cased anywhere in training: its K = 1, Y = 2 and width 2.5
    come from the activation registry; an unbounded registered activation is refused."""
    m = nn.Sequential(nn.Linear(2, 3), nn.Hardtanh(-0.5, 2.0), nn.Linear(3, 1))
    c = dense_constants(m)
    assert (c.K, c.Y, c.width) == ([1.0], [2.0], [2.5])
    for bad in (nn.ReLU(), nn.Softplus(), nn.Dropout()):
        with pytest.raises(InvalidArgumentError):
            dense_constants(nn.Sequential(nn.Linear(2, 3), bad, nn.Linear(3, 1)))
    with pytest.raises(InvalidArgumentError):  # two activations in a row
        dense_constants(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Tanh(), nn.Linear(3, 1)))


# ------------------------------------------------------------------ randomness
def test_generator_init_is_torch_default_init_without_touching_global_state() -> None:
    torch.manual_seed(7)
    ref = tuned_mlp(5, [6, 4], 3, 2.0)
    state = torch.random.get_rng_state()
    got = tuned_mlp(5, [6, 4], 3, 2.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert ref.state_dict().keys() == got.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k
    other = mlp(5, [6, 4], 3, nn.Tanh, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other[0].weight, got[0].weight)


def test_train_and_fit_leave_the_global_rng_alone_and_stay_reproducible() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    cfg = replace(SMALL, epochs=2, measure_runs=10, fep_weight=0.01)
    first = train(cfg).summary
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state gives the same run
    second = train(cfg).summary
    for key in ("accuracy", "bound_paper", "bound_tight", "final_loss", "measured_max_error"):
        assert first[key] == second[key], key
    # fit: the model's own random draws (dropout) are seeded by `seed` and the global state restored
    X = torch.rand(64, 2, generator=torch.Generator().manual_seed(1)).numpy()
    Y = X.sum(1)
    runs = []
    for _ in range(2):
        model = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Sigmoid(), nn.Linear(8, 1))
        init = torch.Generator().manual_seed(0)
        init_linear_(model[0], init)
        init_linear_(model[3], init)
        state = torch.random.get_rng_state()
        runs.append(fit(model, X, Y, epochs=3, seed=5))
        assert torch.equal(torch.random.get_rng_state(), state)
    assert runs[0] == runs[1]
