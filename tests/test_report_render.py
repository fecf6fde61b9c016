"""The report's rendering: the template is package data found through ``importlib.resources``,
and drawing the plots leaves no global matplotlib state behind."""

from __future__ import annotations

from pathlib import Path


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
