"""The report's ``--json`` data stays identical, key for key, across refactors of
:mod:`faultbound.report`: a fixed small network, fixed inputs (some outside the domain) and a fixed
seed, compared with ``tests/golden/report.json`` recorded from the code before the report was split
into build / words / plots / render. Only the run's own fields (time, versions) are left out.

Regenerate (only when the report's data is meant to change) with
``FB_REGEN_GOLDEN=1 python -m pytest tests/test_report_json.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import faultbound as fb

GOLDEN = Path(__file__).parent / "golden" / "report.json"
GOLDEN_HTML = GOLDEN.with_suffix(".html")
VOLATILE = ("created_utc", "faultbound_version", "torch_version", "python_version")


def _data() -> Any:
    from faultbound.report.build import ReportSpec, build_report

    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 - 1)
    net = fb.Network.from_torch(model)
    inside = torch.rand(12, 2, generator=g, dtype=torch.float64)
    outside = torch.tensor([[1.5, 0.5], [-0.25, 2.0]], dtype=torch.float64)
    spec = ReportSpec(
        failures=((1, 0), (0, 1), (2, 1)),
        faults=(fb.Crash(), fb.Byzantine(1.0), fb.Byzantine(math.inf)),
        eps=1.0,
        eps_prime=0.05,
        trials=20,
        seed=5,
        title="golden",
        command="faultbound report golden",
    )
    data = build_report(net, spec, inputs=torch.cat([inside, outside]))
    return dataclasses.replace(data, meta=data.meta | {k: k.upper() for k in VOLATILE})


def _report() -> dict[str, Any]:
    d = _data().to_dict()
    for k in VOLATILE:
        d["meta"].pop(k)
    return d


def _same(a: Any, b: Any, where: str = "$") -> None:
    """Key for key and value for value; floats equal to 1e-12 relative (a different BLAS may
    reorder a sum), everything else exactly, including types (int vs float, None)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in b:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(b, float):
        assert type(a) is float and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), f"{where}: {a!r} != {b!r}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def test_report_json_is_unchanged_key_for_key() -> None:
    d = json.loads(json.dumps(_report()))
    if os.environ.get("FB_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(d, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["rows"] and golden["tolerance"] and golden["campaign"] and golden["outside"]  # every section
    _same(d, golden)


def test_the_comparison_can_fail() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    changed = json.loads(json.dumps(golden))
    changed["rows"][0]["tight"]["value"] *= 1 + 1e-9
    for bad in (changed, dict(golden, extra=1), {k: golden[k] for k in reversed(golden)}):
        try:
            _same(bad, golden)
        except AssertionError:
            continue
        raise AssertionError("the comparison accepted a changed report")


def test_report_html_without_plots_is_unchanged() -> None:
    """The page itself (tables, verdict, template), byte for byte; the plots are checked in
    ``tests/test_report.py``."""
    from faultbound.report.render import render_html

    html = render_html(_data(), figures=False)
    if os.environ.get("FB_REGEN_GOLDEN"):
        GOLDEN_HTML.write_text(html, encoding="utf-8")
    assert html == GOLDEN_HTML.read_text(encoding="utf-8")


def test_template_is_package_data_found_by_importlib_resources() -> None:
    """The template is a file of the package, read through :mod:`importlib.resources`, and
    ``pyproject.toml`` declares it as package data (without that line a wheel leaves it out)."""
    import fnmatch
    import inspect
    from importlib import resources

    import faultbound.report.render as render

    f = resources.files("faultbound.report").joinpath(render.TEMPLATE_NAME)
    assert f.is_file() and render.TEMPLATE_NAME.endswith(".html.j2")
    assert render.template_text() == f.read_text(encoding="utf-8")
    assert render.template_text().startswith("<!DOCTYPE html>") and "{% for r in g.rows %}" in render.template_text()
    assert "<!DOCTYPE" not in inspect.getsource(render)  # no second copy held in a string
    tomllib = __import__("pytest").importorskip("tomllib")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["faultbound.report"]
    assert any(fnmatch.fnmatch(render.TEMPLATE_NAME, g) for g in globs)


def test_rendering_with_plots_leaves_no_global_matplotlib_state() -> None:
    """Plots are drawn on their own Agg canvases: rendering never imports pyplot (no figure
    manager, nothing to close) and leaves matplotlib's backend and rcParams as they were."""
    import subprocess
    import sys

    code = """
import sys, torch, faultbound as fb, matplotlib
from torch import nn
from faultbound.report.build import ReportSpec, build_report
from faultbound.report.render import render_html
torch.manual_seed(0)
net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)))
rc = dict(dict.items(matplotlib.rcParams))  # dict.items: reading rcParams["backend"] would import pyplot
html = render_html(build_report(net, ReportSpec(failures=((1,),), trials=5, samples=4)), figures=True)
assert html.count('src="data:image/png;base64,') == 2, html.count("base64")
assert "matplotlib.pyplot" not in sys.modules
assert dict(dict.items(matplotlib.rcParams)) == rc
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
