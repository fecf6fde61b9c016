"""``faultbound report``: the HTML file, its JSON data against direct library calls, soundness of the
data (worst case found <= certificate), self-containment, the VIOLATION path, and one-line errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from markupsafe import escape
from torch import nn

import faultbound as fb
from faultbound.measure import worst_case
from faultbound.report.html import ReportSpec, build_report, default_failures, render_html
from tests.cli_run import run


def _model() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("report") / "mlp.pt2"
    torch.export.save(torch.export.export(_model(), (torch.rand(1, 3),)), str(p))
    return p


@pytest.fixture(scope="module")
def net(model_file: Path) -> fb.Network:
    return fb.load(model_file)


@pytest.fixture(scope="module")
def cli_report(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("out") / "report.html"
    r = run(
        "report",
        str(model_file),
        "--out",
        str(out),
        "--json",
        "--failures",
        "1,0;0,1;2,1",
        "--eps",
        "1",
        "--eps-prime",
        "0.05",
        "--trials",
        "40",
        "--samples",
        "16",
        "--seed",
        "3",
    )
    assert r.returncode == 0, r.stderr
    assert out.is_file()
    data = json.loads(r.stdout)
    assert data["out"] == str(out)
    return data, out.read_text(encoding="utf-8")


def test_json_numbers_equal_library_calls(cli_report: tuple[dict[str, Any], str], net: fb.Network) -> None:
    data, _ = cli_report
    assert [row["failures"] for row in data["rows"]] == [[1, 0], [0, 1], [2, 1]]
    for row in data["rows"]:
        f = row["failures"]
        for m in ("paper", "tight"):
            assert row[m]["value"] == pytest.approx(fb.bound(net, f, fb.Crash(), m).value, rel=1e-12)
        wc = worst_case(net, fb.Crash(), f, seed=3)
        assert row["measured"]["max_error"] == pytest.approx(wc["max_error"], rel=1e-12)
        assert row["ratio_tight"] == pytest.approx(row["tight"]["value"] / wc["max_error"], rel=1e-9)
        # soundness of what the report shows
        assert 0 < row["measured"]["max_error"] <= min(row["tight"]["value"], row["paper"]["value"])
        assert row["ratio_paper"] == pytest.approx(row["paper"]["value"] / wc["max_error"], rel=1e-9)
        assert row["status"] == "ok"
    assert data["violations"] == 0
    tol = data["tolerance"][0]
    for m in ("paper", "tight"):
        assert tol[m]["per_layer_max"] == list(fb.tolerate(net, 1.0, 0.05, fb.Crash(), m).per_layer_max)
    assert tol["tight"]["eps_prime"] == {"value": 0.05, "estimated": False, "source": "given", "n_samples": 0}
    camp = data["campaign"][0]
    assert camp["trials"] == 40 and camp["evaluations"] == 40 * 16 and camp["seed"] == 3
    assert camp["failures"] == [1, 1]
    assert camp["certificate_tight"] == pytest.approx(fb.bound(net, [1, 1], method="tight").value)
    assert 0 < camp["max_error"] <= camp["certificate_tight"]
    assert sum(camp["histogram"]["counts"]) == 40 * 16
    assert data["meta"]["seed"] == 3 and data["meta"]["faultbound_version"] == fb.__version__
    assert "--trials 40" in data["meta"]["command"]


def test_html_is_self_contained_and_shows_the_data(cli_report: tuple[dict[str, Any], str]) -> None:
    data, html = cli_report
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html and "<script" not in html.lower()
    assert "<link" not in html.lower() and "@import" not in html
    assert html.count('src="data:image/png;base64,') == 2  # certificates plot + campaign histogram
    assert str(escape(data["verdict"])) in html
    assert data["verdict"].startswith("Under any 1 crashed neuron in layer 1, the output moves by at most ")
    for row in data["rows"]:
        for v in (row["paper"]["value"], row["tight"]["value"], row["measured"]["max_error"]):
            assert f"{v:.4g}" in html
    assert "VIOLATION" not in html
    assert f"faultbound {fb.__version__}" in html and "seed 3" in html
    assert str(escape(data["meta"]["command"])) in html


def test_default_distributions_and_library_build(net: fb.Network) -> None:
    # widths 4, 3: f_l in {1, 2, 4} with f_l < N_l, one layer at a time, then all ones
    assert default_failures(net, fb.Crash()) == ((1, 0), (2, 0), (0, 1), (0, 2), (1, 1))
    assert default_failures(net, fb.SynapseCrash())[-1] == (1, 1, 1)
    msgs: list[str] = []
    data = build_report(net, ReportSpec(faults=(fb.Crash(), fb.Precision([0.01, 0.02]))), progress=msgs.append)
    assert len(msgs) == len(data.rows) == 6
    assert data.rows[-1].failures == () and data.rows[-1].status == "ok"
    prec = fb.bound(net, None, fb.Precision([0.01, 0.02]), "tight").value
    assert data.rows[-1].tight["value"] == pytest.approx(prec)
    assert all(r.worst <= r.tight["value"] for r in data.rows)
    d = data.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-ready, no NaN/inf
    assert "<html" in render_html(data, figures=False)


def test_unbounded_byzantine_is_not_a_ratio(net: fb.Network) -> None:
    data = build_report(net, ReportSpec(failures=((1, 0),), faults=(fb.Byzantine(math.inf),)))
    (row,) = data.rows
    assert row.status == "unbounded" and row.tight["value"] is None and row.ratio_tight is None
    assert "no finite certificate" in data.verdict
    html = render_html(data, figures=False)
    assert "unbounded" in html and "VIOLATION" not in html


def test_certificate_below_measurement_is_a_red_violation(net: fb.Network, monkeypatch: pytest.MonkeyPatch) -> None:
    import faultbound.measure as measure

    def fake_worst_case(net: Any, fault: Any, failures: Any, **kw: Any) -> dict[str, Any]:
        return {"max_error": 1e6, "exhaustive": True, "failure_set": {}, "input": [], "evaluations": 1}

    monkeypatch.setattr(measure, "worst_case", fake_worst_case)
    data = build_report(net, ReportSpec(failures=((1, 0),)))
    assert data.rows[0].status == "VIOLATION" and data.violations == 1
    assert data.verdict.startswith("VIOLATION")
    html = render_html(data, figures=True)
    assert '<span class="pill bad">VIOLATION</span>' in html and 'class="pill ok"' not in html
    assert 'class="verdict bad"' in html


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--failures", "1,x"], "comma-separated integers"),
        (["--failures", "1,0,0"], "one count per hidden layer"),
        (["--failures", "4,0"], "f_1 < N_1 = 4"),
        (["--eps", "0.1", "--eps-prime", "0.2"], "eps_prime <= eps"),
        (["--fault", "gremlin"], "Expected `fault` to be one of"),
        (["--out", "/nonexistent-dir-faultbound/r.html"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(model_file: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "r.html"
    r = run("report", str(model_file), "--out", str(out), *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_missing_model_is_one_line_exit_2(tmp_path: Path) -> None:
    r = run("report", str(tmp_path / "missing.pt2"), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
