"""The report's page: :func:`render_html` renders a :class:`~faultbound.report.build.ReportData`
with jinja2 and the template ``templates/report.html.j2``, a package data file read through
:mod:`importlib.resources` (so an installed wheel carries it). The page is self-contained: inline
CSS, plots as base64 PNG (:mod:`faultbound.report.plots`), no scripts and no external URLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from faultbound.errors import FaultboundError
from faultbound.report.plots import plot_campaign, plot_certificates, png
from faultbound.report.words import fmt, short_failures

if TYPE_CHECKING:
    from faultbound.report.build import ReportData

__all__ = ["TEMPLATE_NAME", "render_html", "template_text"]

#: The page's template: package data of ``faultbound.report`` (``pyproject.toml``,
#: ``[tool.setuptools.package-data]``).
TEMPLATE_NAME = "templates/report.html.j2"


def template_text() -> str:
    """The template's source, read from the installed package (:mod:`importlib.resources`)."""
    return resources.files("faultbound.report").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def _num(v: Any, digits: int = 4) -> str:
    return fmt(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v, digits)


def _ratio_fmt(v: Any) -> str:
    return "—" if v is None else f"{float(v):.3g}×"


def _units(fs: Any) -> str:
    if not fs:
        return "—"
    if isinstance(fs, dict):
        return "; ".join(f"{k}: {list(v)}" for k, v in fs.items())
    return str(fs)


def _vec(v: Any, n: int = 8) -> str:
    if not v:
        return "—"
    vals = [f"{float(x):.3g}" for x in list(v)[:n]]
    more = f", … ({len(v)} values)" if len(v) > n else ""
    return "[" + ", ".join(vals) + more + "]"


def _widths(ws: Sequence[int]) -> str:
    """The widths card: every width up to 8 layers, else ``"6 × 40"`` or ``"4–64 (40 layers)"``."""
    ws = list(ws)
    if len(ws) <= 8:
        return " · ".join(str(w) for w in ws)
    if len(set(ws)) == 1:
        return f"{ws[0]} × {len(ws)}"
    return f"{min(ws)}–{max(ws)} ({len(ws)} layers)"


def render_html(data: ReportData, figures: bool = True) -> str:
    """The report as one self-contained HTML page (inline CSS, plots as base64 PNG, no scripts).

    Args:
        data: from :func:`build_report`.
        figures: draw the plots (needs matplotlib); False renders tables only.
    """
    try:
        import jinja2
    except ImportError as e:  # pragma: no cover - report extra
        raise FaultboundError("HTML reports need jinja2: pip install 'faultbound[report]'.") from e
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        num=_num,
        ratio=_ratio_fmt,
        units=_units,
        vec=_vec,
        int_=lambda v: f"{int(v):,}" if v else "0",
        flist=short_failures,
        widths=_widths,
    )
    d = data.to_dict()
    groups: list[dict[str, Any]] = []
    for row in d["rows"]:
        label = row["fault"]["label"]
        if not groups or groups[-1]["label"] != label:
            groups.append({"label": label, "rows": [], "figure": None})
        groups[-1]["rows"].append(row)
    campaigns = [dict(c, figure=None) for c in d["campaign"] or ()]
    if figures:
        for g in groups:
            if any(r["tight"].get("value") or r["paper"].get("value") for r in g["rows"]):
                g["figure"] = png(plot_certificates(g["rows"])[0])
        for c in campaigns:
            c["figure"] = png(plot_campaign(c)[0])
    return env.from_string(template_text()).render(d=d, groups=groups, campaigns=campaigns)
