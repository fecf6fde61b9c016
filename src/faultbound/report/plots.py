"""The report's plots (matplotlib, Agg canvas, no pyplot, no global state): each function takes an
optional ``ax`` and returns ``(fig, ax)``; :func:`png` encodes a figure for the page.

They draw the report's JSON form (:meth:`faultbound.report.build.BoundRow.to_dict`, the campaign
dictionaries of :meth:`faultbound.report.build.ReportData.to_dict`), so a saved ``--json`` can be
plotted again.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from faultbound.errors import FaultboundError
from faultbound.report.words import short_failures

if TYPE_CHECKING:
    from faultbound.report.build import BoundRow

__all__ = ["MEASURED_COLOR", "PAPER_COLOR", "TIGHT_COLOR", "plot_campaign", "plot_certificates", "png"]


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``ax``'s figure, or a new figure on its own Agg canvas (no pyplot: nothing global is
    registered, so nothing needs closing and ``plt.show()`` never runs)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - report extra
        raise FaultboundError("Reports need matplotlib: pip install 'faultbound[report]'.") from e
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    return ax.figure, ax


PAPER_COLOR, TIGHT_COLOR, MEASURED_COLOR = "#8c6bb1", "#2b8cbe", "#e6550d"


def _plain_log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Log-axis tick labels as plain numbers (0.2, 0.5, 1, 2); minor ones only over a short range."""
    from matplotlib.ticker import FuncFormatter

    few_decades = hi / lo < 300

    def label(v: float, _pos: Any) -> str:
        if v <= 0:
            return ""
        mant = v / 10 ** math.floor(math.log10(v) + 1e-9)
        major = abs(mant - 1) < 1e-6
        shown = (2, 3, 5) if hi / lo < 10 else (2, 5)
        keep = major or (few_decades and any(abs(mant - m) < 1e-6 for m in shown))
        return f"{v:g}" if keep else ""

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


def plot_certificates(rows: Sequence[BoundRow | Mapping[str, Any]], ax: Any = None) -> tuple[Any, Any]:
    """Dot chart (log scale): paper bound, tight bound and worst case found, one line per
    distribution. A grey bar spans worst case to tight certificate; violations are marked red."""
    rs = [r.to_dict() if hasattr(r, "to_dict") else r for r in rows]
    n = max(len(rs), 1)
    # 0.42 in per row up to 20 rows, then 0.16 in: a long network stays one readable chart
    fig, ax = _axes(ax, (8.0, 0.9 + 0.42 * min(n, 20) + 0.16 * max(0, n - 20)))
    small = n > 20
    ys = np.arange(len(rs))[::-1]
    vals = []
    for y, r in zip(ys, rs, strict=True):
        p, t, m = r["paper"].get("value"), r["tight"].get("value"), r["measured"]["max_error"]
        if m is not None and m > 0 and t is not None:
            ax.plot([m, t], [y, y], color="0.85", lw=3 if small else 6, solid_capstyle="round", zorder=1)
        for v, color, marker in ((p, PAPER_COLOR, "s"), (t, TIGHT_COLOR, "D"), (m, MEASURED_COLOR, "o")):
            if v is not None and v > 0:
                ax.plot([v], [y], marker=marker, color=color, ms=4 if small else 7, ls="none", zorder=3)
                vals.append(v)
        if r["status"] == "VIOLATION":
            ax.annotate(
                "VIOLATION",
                (m, y),
                xytext=(6, 4),
                textcoords="offset points",
                color="red",
                fontsize=8,
                fontweight="bold",
            )
        if r["status"] == "unbounded":
            ax.annotate(
                "unbounded (Lemma 1)",
                (1, y),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                color="0.4",
                fontsize=8,
            )
    labels = [short_failures(r["failures"]) if r["failures"] else r["fault"]["label"] for r in rs]
    ax.set_yticks(ys, labels, fontsize=7 if small else None)
    ax.set_ylim(-0.7, len(rs) - 0.3)
    if vals:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, min(vals), max(vals))
    ax.set_xlabel("output error, ∞-norm (log scale)")
    ax.set_ylabel("failures per layer")
    few = bool(vals) and max(vals) / min(vals) < 300
    ax.grid(axis="x", which="both" if few else "major", color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    handles = [
        ax.plot([], [], marker="s", color=PAPER_COLOR, ls="none", label="certificate: paper")[0],
        ax.plot([], [], marker="D", color=TIGHT_COLOR, ls="none", label="certificate: tight")[0],
        ax.plot([], [], marker="o", color=MEASURED_COLOR, ls="none", label="worst case found")[0],
    ]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    return fig, ax


def plot_campaign(campaign: Mapping[str, Any], ax: Any = None) -> tuple[Any, Any]:
    """Histogram of a campaign's output errors, with its worst case and the certificates as lines.

    The x-axis spans the measurements (campaign and search). A certificate more than 4 times
    beyond them would squeeze every bar into one: it is then listed at the right edge with its
    value and its ratio to the largest measurement, instead of being drawn to scale.
    """
    fig, ax = _axes(ax, (9.0, 2.8))
    h = campaign["histogram"]
    measured = [v for v in (campaign.get("max_error"), campaign.get("search_worst")) if v is not None]
    if h["counts"]:
        measured.append(float(h["edges"][-1]))
    top = max(measured, default=0.0)
    if h["counts"]:
        edges = np.asarray(h["edges"])
        ax.bar(
            edges[:-1],
            h["counts"],
            width=np.diff(edges),
            align="edge",
            color="#fdae6b",
            edgecolor="white",
            lw=0.5,
            label="random failure sets × inputs",
        )
    off: list[str] = []
    right = top
    for key, color, label in (
        ("max_error", "#fd8d3c", "campaign max"),
        ("search_worst", MEASURED_COLOR, "worst case found by search"),
        ("certificate_tight", TIGHT_COLOR, "certificate: tight"),
        ("certificate_paper", PAPER_COLOR, "certificate: paper"),
    ):
        v = campaign.get(key)
        if v is None:
            continue
        if top > 0 and v > 4 * top:
            off.append(label)
            ax.plot(
                [],
                [],
                color=color,
                lw=1.5,
                ls="--",
                label=f"{label} {v:.3g}\n(off scale: {v / top:.3g}× the largest measured)",
            )
            continue
        ls = "-" if key in ("max_error", "search_worst") else "--"
        ax.axvline(v, color=color, lw=1.5, ls=ls, label=f"{label} {v:.3g}")
        right = max(right, v)
    if top > 0 and off:
        ax.set_xlim(0.0, 1.08 * right)
    ax.set_xlabel("output error, ∞-norm" + (" (scale of the measurements)" if off else ""))
    ax.set_ylabel("count")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, ax


def png(fig: Any) -> str:
    """The figure as a base64 PNG (110 dpi, no software tag: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")
