"""``faultbound report``: the HTML file, its JSON data against direct library calls, soundness of the
data (worst case found <= certificate), self-containment, the VIOLATION path, and one-line errors."""

from __future__ import annotations

import dataclasses
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
from faultbound.measure import WorstCase, worst_case
from faultbound.report.build import ReportSpec, ToleranceEntry, build_report, default_failures
from faultbound.report.render import render_html
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
        assert row["measured"]["max_error"] == pytest.approx(wc.max_error, rel=1e-12)
        assert row["ratio_tight"] == pytest.approx(row["tight"]["value"] / wc.max_error, rel=1e-9)
        # soundness of what the report shows
        assert 0 < row["measured"]["max_error"] <= min(row["tight"]["value"], row["paper"]["value"])
        assert row["ratio_paper"] == pytest.approx(row["paper"]["value"] / wc.max_error, rel=1e-9)
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
    assert data["level"] == "informative" and 'class="verdict"' in html and "INFORMATIVE</span>" in html
    assert f"faultbound {fb.__version__}" in html and "seed 3" in html
    assert str(escape(data["meta"]["command"])) in html


def test_default_distributions_and_library_build(net: fb.Network) -> None:
    # widths 4, 3: f_l in {1, 2, 4} with f_l < N_l, one layer at a time, then all ones
    assert default_failures(net, fb.Crash()) == ((1, 0), (2, 0), (0, 1), (0, 2), (1, 1))
    assert default_failures(net, fb.SynapseCrash())[-1] == (1, 1, 1)
    msgs: list[str] = []
    data = build_report(net, ReportSpec(faults=(fb.Crash(), fb.Precision([0.01, 0.02]))), progress=msgs.append)
    # one stage message per row; the worst-case search's own steps come under its row's "[k/6] " prefix
    stages = [m for m in msgs if m.endswith(": certificates and worst-case search")]
    assert len(stages) == len(data.rows) == 6
    assert any(m.startswith("[1/6] ") and "gradient ascent" in m for m in msgs)
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

    def fake_worst_case(net: Any, fault: Any, failures: Any, **kw: Any) -> WorstCase:
        return WorstCase(max_error=1e6, failure_set={}, input=(), values=None, probe_max_error=None, exhaustive=True,
                         evaluations=1, sets_total=1, seed=0, fault=fault, failures=None, probes=0)

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


# --------------------------------------------------------------------------- honest verdicts, long networks


def _row(tight: float | None, worst: float, informative: bool, status: str = "ok") -> Any:
    from faultbound.report.build import BoundRow

    cert = {"value": tight, "unbounded": tight is None}
    return BoundRow(
        fault={"name": "crash", "label": "crash"},
        failures=(1,),
        description="1 crashed neuron in layer 1",
        paper=cert,
        tight=cert,
        measured={"max_error": worst},
        ratio_paper=None if tight is None or worst == 0 else tight / worst,
        ratio_tight=None if tight is None or worst == 0 else tight / worst,
        status=status,  # type: ignore[arg-type]
        informative=informative,
    )


def test_informative_rule_hand_worked() -> None:
    from faultbound.report.words import INFORMATIVE_RATIO, informative, verdict_level

    assert INFORMATIVE_RATIO == 10.0
    assert informative({"value": 9.9}, 1.0, None)  # within 10x of the measurement
    assert not informative({"value": 10.1}, 1.0, None)
    assert informative({"value": 10.1}, 1.0, 11.0)  # far from the measurement but within the budget
    assert not informative({"value": 12.0}, 1.0, 11.0)
    assert informative({"value": 0.0}, 0.0, None)  # a zero certificate says everything
    assert not informative({"value": 1.0}, 0.0, None)  # nothing measured, no budget
    assert not informative({"value": None}, 1.0, 5.0)  # unbounded (Lemma 1)
    good, loose = _row(2.0, 1.0, True), _row(8.6e10, 1.0, False)
    assert verdict_level([good], 0) == "informative"
    assert verdict_level([good, loose], 0) == "loose"
    assert verdict_level([good], 1) == "violation"
    assert verdict_level([_row(None, math.inf, False, "unbounded")], 0) == "loose"


def test_loose_certificate_is_not_green(net: fb.Network, monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate 1e6 times the worst case found: amber, and the verdict says why; with a budget
    that the certificate meets, it is informative again."""
    import faultbound.measure as measure

    real = measure.worst_case

    def tiny(net: Any, fault: Any, failures: Any, **kw: Any) -> WorstCase:
        wc = real(net, fault, failures, **kw)
        return dataclasses.replace(wc, max_error=fb.bound(net, failures, fault, "tight").value * 1e-6)

    monkeypatch.setattr(measure, "worst_case", tiny)
    data = build_report(net, ReportSpec(failures=((1, 0),)))
    assert data.level == "loose" and data.violations == 0 and not data.rows[0].informative
    assert "Not informative: 1 of the 1 certificates" in data.verdict
    html = render_html(data, figures=False)
    assert 'class="verdict loose"' in html and "SOUND BUT LOOSE" in html and "INFORMATIVE</span>" not in html
    assert 'class="pill loose"' in html and 'class="pill ok"' not in html  # the row is not green either
    big = fb.bound(net, [1, 0], fb.Crash(), "tight").value + 1.0
    ok = build_report(net, ReportSpec(failures=((1, 0),), eps=big + 0.01, eps_prime=0.01))
    assert ok.level == "informative" and ok.rows[0].informative and ok.to_dict()["level"] == "informative"
    assert 'class="verdict"' in render_html(ok, figures=False)


def test_outside_domain_points_are_reported_apart_never_violations() -> None:
    """Points far outside [0, 1]^2 where a crash moves the output far beyond the certificate."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    net = fb.Network.from_torch(model)
    inside = torch.rand(20, 2, dtype=torch.float64)
    far = torch.full((5, 2), 50.0, dtype=torch.float64)  # y = 100 per neuron there
    data = build_report(net, ReportSpec(failures=((1,),), trials=30, seed=1), inputs=torch.cat([inside, far]))
    cert = data.rows[0].tight["value"]
    assert data.violations == 0 and data.rows[0].status == "ok" and data.campaign[0].status == "ok"  # type: ignore[index]
    assert data.rows[0].worst <= cert
    out = data.outside
    assert out is not None and out.n_points == 5 and out.n_given == 25 and out.features_outside == 2
    assert out.max_excess == pytest.approx(49.0)
    (m,) = out.measured
    assert m.status == "outside-domain" and m.max_error == pytest.approx(100.0)  # one crash: 100 of 400
    assert m.max_error > 10 * cert  # the old report flagged exactly this as a VIOLATION
    assert "5 of the 25 given data points lie outside the domain" in data.verdict
    html = render_html(data, figures=False)
    assert "Data outside the domain" in html and "VIOLATION" not in html and "outside the domain</span>" in html
    # every point inside: no such section
    assert build_report(net, ReportSpec(failures=((1,),)), inputs=inside).outside is None


def _png_size(b64: str) -> tuple[int, int]:
    import base64
    import struct

    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", raw[16:24])
    return int(w), int(h)


def test_forty_layer_network_stays_readable() -> None:
    import warnings

    from faultbound.report.plots import plot_certificates
    from faultbound.report.words import verdict

    L = 40
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    prev = 2
    for _ in range(L):
        mods += [nn.Linear(prev, 3), nn.Tanh()]
        prev = 3
    net = fb.Network.from_torch(nn.Sequential(*mods, nn.Linear(prev, 1)))
    ones = tuple([1] * L)
    data = build_report(net, ReportSpec(failures=((1,) + (0,) * (L - 1), ones, (0,) * (L - 1) + (2,))))
    html = render_html(data, figures=False)
    assert html.count('<div class="tscroll"><table>') == html.count("<table>")  # every table scrolls
    assert "1 × 40 layers" in html and "f40=2 (of 40)" in html and "3 × 40" in html  # labels, widths card
    assert "[1, 1, 1, 1, 1, 1, 1, 1, 1, 1" not in html
    assert "each of layers 1–40" in data.rows[1].description
    # a chart of 121 rows stays one chart of bounded height, without a collapsed layout
    rows = [data.rows[i % 3] for i in range(121)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, _ = plot_certificates(rows)
        from faultbound.report.plots import png

        w, h = _png_size(png(fig))
    assert h <= 110 * 30 and w == 880
    # the verdict summarises the tolerance of 40 layers instead of listing them
    per = [0] * 22 + [5] * 18
    tol = ToleranceEntry(
        fault={"name": "crash", "label": "crash"},
        tight={"eps": 1.0, "eps_prime": {"value": 0.05, "estimated": False}, "per_layer_max": per},
        paper={"per_layer_max": [0] * 38 + [1, 2]},
    )
    text = verdict(list(data.rows), [tol], 0)
    assert "between 0 and 5 neurons per layer; none in 22 of the 40 layers (1–22)" in text
    assert "layer 23" not in text and len(text) < 1200


def test_campaign_histogram_has_its_own_scale() -> None:
    from faultbound.report.plots import plot_campaign

    camp = {
        "histogram": {"edges": [0.0, 0.5, 1.0], "counts": [10, 5]},
        "max_error": 1.0,
        "search_worst": 1.2,
        "certificate_tight": 1.0e6,
        "certificate_paper": 3.0,
    }
    _, ax = plot_campaign(camp)
    lo, hi = ax.get_xlim()
    assert lo == 0.0 and hi == pytest.approx(1.08 * 3.0)  # the paper line (2.5x) stays, the tight one does not
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("certificate: tight 1e+06" in t and "off scale" in t for t in texts)
    assert any(t == "certificate: paper 3" for t in texts)
    # all on scale: matplotlib's own limits, no "off scale"
    _, ax2 = plot_campaign(dict(camp, certificate_tight=2.0))
    assert not any("off scale" in t.get_text() for t in ax2.get_legend().get_texts())
    assert ax2.get_xlim()[1] >= 3.0
