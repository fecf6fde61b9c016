"""Training (5.3): differentiable bounds (gradcheck, reference, soundness), clipping, runs, export."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.apps.training import (
    TrainConfig,
    clip_weights,
    export_model,
    fep_neuron_torch,
    fep_paper_torch,
    fep_regulariser,
    fit,
    sweep,
    train,
    tuned_mlp,
)
from faultbound.bounds.api import METHODS
from faultbound.errors import InvalidArgumentError
from faultbound.nn import TunedSigmoid
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
