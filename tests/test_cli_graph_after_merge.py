"""Every command on a graph network through the CLI: ``bound``, ``tolerate``, ``inject``, ``worst``,
``certify`` and ``report`` on a residual network and a LeNet with max pooling.

These need the graph bounds (branch graph-bounds) and the graph engine (branch graph-engine); they
pass once those are merged with graph-cli. References are plain torch: the module itself with a
forward hook that zeroes one unit of the crashed ReLU's output (the statement of a crash), never
faultbound's own engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.models import lenet_maxpool, small_resnet
from tests.cli_run import run

SITE = "layers.1.0.relu2"  # the last ReLU of small_resnet: 16 x 4 x 4 = 256 units, site 5 of 5


def _module(m: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)  # type: ignore[index]
    return m


def _crashed(model: nn.Module, relu: nn.Module, x: torch.Tensor, unit: int) -> torch.Tensor:
    """The model's output with unit ``unit`` (flat index) of ``relu``'s output sent as 0."""

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out.reshape(out.shape[0], -1)[:, unit] = 0.0
        return out

    h = relu.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        h.remove()


def _brute_single_crash(model: nn.Module, site: str, x: torch.Tensor) -> float:
    """max over units of the site and over the inputs x of ||F(x) - F_crash(x)||_inf."""
    relu = _module(model, site)
    widths: list[int] = []
    h = relu.register_forward_hook(lambda _m, _i, o: widths.append(o[0].numel()))
    with torch.no_grad():
        clean = model(x)
    h.remove()
    return max(float((_crashed(model, relu, x, j) - clean).abs().max()) for j in range(widths[0]))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    m = small_resnet(seed=1).double()
    p = tmp_path_factory.mktemp("graph") / "resnet.pt2"
    torch.export.save(torch.export.export(small_resnet(seed=1), (torch.rand(1, 1, 8, 8),)), str(p))
    return m, p


def _json(*args: str) -> dict[str, Any]:
    r = run(*args, "--json")
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def test_bound_tight_is_above_every_single_crash(resnet: tuple[nn.Module, Path]) -> None:
    model, path = resnet
    d = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")
    assert d["method"] == "tight" and d["failures"] == [0, 0, 0, 0, 1]
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.cat([x, torch.zeros(1, 1, 8, 8, dtype=torch.float64), torch.ones(1, 1, 8, 8, dtype=torch.float64)])
    assert _brute_single_crash(model, SITE, x) <= d["value"]
    # the per-site contributions: only the crashed site contributes
    assert d["per_layer"][:4] == [0, 0, 0, 0] and d["per_layer"][4] > 0


def test_bound_both_on_a_graph_gives_tight_and_says_why_no_paper(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    d = _json("bound", str(path), "--failures", f"{SITE}=1", "--method", "both")
    assert [r["method"] for r in d["results"]] == ["tight"]
    assert any("paper" in n for n in d["notes"])
    # without --method: fb.bound's default on a graph, tight (no note: paper was not asked for)
    d = _json("bound", str(path), "--failures", f"{SITE}=1")
    want = fb.bound(fb.load(path), [0, 0, 0, 0, 1])
    assert want.method == "tight" and [r["method"] for r in d["results"]] == ["tight"]
    assert d["value"] == want.value and not any("paper" in n for n in d["notes"])
    code, out, err = run("bound", str(path), "--failures", "all=1")
    assert code == 0, err
    for name in ("relu", "layers.0.0.relu1", "layers.0.0.relu2", "layers.1.0.relu1", SITE):
        assert name in out
    # --method paper alone on a graph is refused in one line
    code, _, err = run("bound", str(path), "--failures", "all=1", "--method", "paper")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_worst_replays_and_stays_below_the_bound(resnet: tuple[nn.Module, Path]) -> None:
    model, path = resnet
    cert = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")["value"]
    w = _json("worst", str(path), "--failures", f"{SITE}=1")
    assert 0 < w["max_error"] <= cert
    (units,) = w["failure_set"].values()
    x = torch.tensor(w["input"], dtype=torch.float64).reshape(1, 1, 8, 8)
    relu = _module(model, SITE)
    with torch.no_grad():
        again = float((_crashed(model, relu, x, units[0]) - model(x)).abs().max())
    assert again == pytest.approx(w["max_error"], rel=1e-4, abs=1e-6)


def test_inject_stays_below_the_bound(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    cert = _json("bound", str(path), "--method", "tight", "--failures", "all=1")["value"]
    d = _json("inject", str(path), "--samples", "16", "--failures", "all=1", "--trials", "40")
    assert d["configurations"] == 40 and 0 < d["max_error"] <= cert


def test_certify_certified_below_measured(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    d = _json("certify", str(path), "--digits", "--failures", f"{SITE}=1", "--max-inputs", "60")
    m = d["measured"]
    assert m["worst_exhaustive"] is True and m["worst_sets"] == 256
    assert d["certified_accuracy"] <= m["worst_accuracy"] <= d["clean_accuracy"]


def test_tolerate_agrees_with_bound(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    one = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")["value"]
    eps = 3 * one
    t = _json("tolerate", str(path), "--eps", f"{eps!r}", "--eps-prime", "0", "--method", "tight")
    per = t["per_layer_max"]
    assert len(per) == 5 and per[4] >= 1
    f = per[4]
    inside = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}={f}")["value"]
    outside = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}={f + 1}")["value"]
    assert inside <= eps < outside


def test_report_on_a_graph(resnet: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = resnet
    out = tmp_path / "r.html"
    cert = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")["value"]
    d = _json("report", str(path), "--failures", f"{SITE}=1", "--out", str(out), "--no-plots")
    row = d["rows"][0]
    assert row["tight"]["value"] == pytest.approx(cert) and row["paper"]["value"] is None
    assert row["measured"]["max_error"] <= cert and d["violations"] == 0
    html = out.read_text()
    assert SITE in html and "is defined for layered networks" in html


def test_lenet_with_max_pooling(tmp_path: Path) -> None:
    model = lenet_maxpool(seed=2)
    p = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 8, 8),)), str(p))
    info = _json("inspect", str(p))
    assert [s["width"] for s in info["sites"]] == [6 * 8 * 8, 16 * 4 * 4, 32]
    d = _json("bound", str(p), "--method", "tight", "--failures", "1=1")
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _brute_single_crash(model.double(), "1", x) <= d["value"]
