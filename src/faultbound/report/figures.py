"""The paper's Figures 2 and 3, and the robustness/learning-cost sweep plot (matplotlib, no pyplot).

Every plot function takes an optional ``ax`` and returns ``(fig, ax)``; none calls ``plt.show``
and none touches pyplot's global state (figures are plain :class:`matplotlib.figure.Figure`, saved
with the Agg canvas). The data behind each figure comes from a separate ``*_data`` function that
returns table rows, written to CSV beside the PNG by :func:`write_figures`.

* **Figure 2** -- :math:`\\varphi_K(x) = \\sigma(4Kx)` for several K: the larger K, the steeper.
* **Figure 3** -- networks of the same architecture, trained here on the same data with
  TunedSigmoid(K) for several K, all hit by the same crash failure sets; measured output error
  against K (log scale), beside the certified bounds of each trained network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from faultbound.errors import FaultboundError, InvalidArgumentError

__all__ = [
    "FIG2_KS",
    "FIG3_KS",
    "figure2_data",
    "figure3_data",
    "plot_sigmoid_profiles",
    "plot_error_vs_k",
    "plot_sweep",
    "plot_sweep_cost",
    "sweep_figure",
    "write_figures",
    "figure3_config",
]

FIG2_KS = (0.25, 0.5, 1.0, 2.0, 4.0)
FIG3_KS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _axes(ax: Any, figsize: tuple[float, float] = (5.5, 4.0)) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - plot extra
        raise FaultboundError("Plots need matplotlib: pip install 'faultbound[plot]'.") from e
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    return ax.figure, ax


def figure2_data(Ks: Sequence[float] = FIG2_KS, n: int = 201, x_max: float = 3.0) -> list[dict[str, float]]:  # noqa: N803
    """Rows ``{x, K=..., ...}``: :math:`\\sigma(4Kx)` on a grid of ``n`` points in [-x_max, x_max]."""
    if not Ks or any(not (k > 0) for k in Ks):
        raise InvalidArgumentError(f"Expected positive values of K, but got {list(Ks)}.")
    x = np.linspace(-x_max, x_max, n)
    cols = {f"K={k:g}": 1.0 / (1.0 + np.exp(-4.0 * k * x)) for k in Ks}
    return [{"x": float(x[i]), **{name: float(v[i]) for name, v in cols.items()}} for i in range(n)]


def plot_sigmoid_profiles(rows: Sequence[dict[str, float]] | None = None, ax: Any = None) -> tuple[Any, Any]:
    """Figure 2: the sigmoid tuned to several K (slope K at 0)."""
    rows = list(rows) if rows is not None else figure2_data()
    fig, ax = _axes(ax)
    x = np.array([r["x"] for r in rows])
    for name in [k for k in rows[0] if k != "x"]:
        ax.plot(x, [r[name] for r in rows], label=name)
    ax.set_xlabel("x")
    ax.set_ylabel(r"$\varphi_K(x) = \sigma(4Kx)$")
    ax.set_title("Figure 2: sigmoid tuned to Lipschitz constant K")
    ax.axhline(0.5, color="0.8", lw=0.6, zorder=0)
    ax.legend(frameon=False)
    return fig, ax


def figure3_config() -> Any:
    """The training setup of Figure 3: wave on [0, 1]^2, two hidden layers of 16, 2 crashes each."""
    from faultbound.training import TrainConfig

    return TrainConfig(
        dataset="synthetic", widths=(16, 16), failures=(2, 2), epochs=30, batch_size=64, n_samples=2048,
        measure_runs=300, target=0.9, tol=0.05,
    )


def figure3_data(Ks: Sequence[float] = FIG3_KS, config: Any = None, reference_K: float = 1.0) -> list[dict[str, Any]]:  # noqa: N803
    """Train one network per K (same data, seed and failure distribution) and measure it.

    Each row: K, the measured worst and mean output error over the same random crash sets on the
    test inputs, the paper and tight bounds, the printed Fep and the test accuracy. The ``retuned_*``
    columns isolate K: the network trained at ``reference_K`` keeps its weights and only its
    sigmoids are retuned to K, then it is measured and bounded the same way.
    """
    import torch

    import faultbound as fb
    from faultbound.apps.faulty import crash_errors, random_crash_masks
    from faultbound.bounds.api import METHODS
    from faultbound.nn import TunedSigmoid
    from faultbound.training import split_dataset, train

    cfg = config or figure3_config()
    if not Ks or any(not (k > 0) for k in Ks):
        raise InvalidArgumentError(f"Expected positive values of K, but got {list(Ks)}.")
    ref = train(replace(cfg, K=float(reference_K)))
    _, _, Xte, _, _, _ = split_dataset(cfg)
    x_te = torch.as_tensor(Xte, dtype=torch.float64)
    failures = list(ref.summary["failures"])
    rows = []
    for k in Ks:
        s = ref.summary if float(k) == float(reference_K) else train(replace(cfg, K=float(k))).summary
        retuned = torch.nn.Sequential(
            *[TunedSigmoid(float(k)) if isinstance(m, TunedSigmoid) else m for m in ref.model.children()]
        )
        net = fb.Network.from_torch(retuned, domain=(0.0, 1.0))
        masks = random_crash_masks(net, failures, cfg.measure_runs, torch.Generator().manual_seed(12345))
        errs = crash_errors(net, x_te, masks)
        rows.append(
            {
                "K": float(k),
                "measured_max_error": s["measured_max_error"],
                "measured_mean_error": s["measured_mean_error"],
                "bound_paper": s["bound_paper"],
                "bound_tight": s["bound_tight"],
                "fep_printed": s["fep_printed"],
                "accuracy": s["accuracy"],
                "retuned_measured_max_error": float(errs.max()),
                "retuned_bound_paper": fb.bound(net, failures, method="paper").value,
                "retuned_bound_tight": fb.bound(net, failures, method="tight").value if "tight" in METHODS else None,
                "failures": " ".join(map(str, failures)),
            }
        )
    return rows


def plot_error_vs_k(rows: Sequence[dict[str, Any]], ax: Any = None) -> tuple[Any, Any]:
    """Figure 3: measured output error against K (log-log), with the certified bounds beside it."""
    fig, ax = _axes(ax, (6.5, 6.0))
    K = [r["K"] for r in rows]
    ax.plot(K, [r["measured_max_error"] for r in rows], "o-", label="measured (worst of the crash sets)")
    ax.plot(K, [r["measured_mean_error"] for r in rows], "o:", label="measured (mean)")
    ax.plot(K, [r["bound_paper"] for r in rows], "s--", label="bound: paper (Fep)")
    if all(r.get("bound_tight") not in (None, "") for r in rows):
        ax.plot(K, [r["bound_tight"] for r in rows], "^--", label="bound: tight")
    if all(r.get("retuned_measured_max_error") not in (None, "") for r in rows):
        ax.plot(K, [r["retuned_measured_max_error"] for r in rows], "o-", color="tab:purple", alpha=0.6,
                label="same weights, retuned K: measured")
        ax.plot(K, [r["retuned_bound_paper"] for r in rows], "s:", color="tab:purple", alpha=0.6,
                label="same weights, retuned K: Fep")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("Lipschitz constant K (log scale)")
    ax.set_ylabel("output error under the same crashes")
    f = rows[0].get("failures", "") if rows else ""
    ax.set_title(f"Figure 3: error against K (crashes per layer: {f})")
    acc = ax.twinx()
    acc.plot(K, [r["accuracy"] for r in rows], color="0.6", lw=1, marker=".", label="test accuracy (right)")
    acc.set_ylim(0, 1.05)
    acc.set_ylabel("test accuracy (grey)", color="0.4")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = acc.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, frameon=False, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    return fig, ax


def plot_sweep(rows: Sequence[dict[str, Any]], ax: Any = None) -> tuple[Any, Any]:
    """Learning cost against robustness: final accuracy against the certified and measured error."""
    fig, ax = _axes(ax, (6.0, 4.2))
    lam = sorted({r["fep_weight"] for r in rows})
    markers = "osD^v<>"
    for i, lw in enumerate(lam):
        sel = [r for r in rows if r["fep_weight"] == lw]
        key = "bound_tight" if all(r.get("bound_tight") not in (None, "") for r in sel) else "bound_paper"
        m = markers[i % len(markers)]
        ax.scatter([r[key] for r in sel], [r["accuracy"] for r in sel], marker=m, label=f"certified, fep-weight {lw:g}")
        ax.scatter([r["measured_max_error"] for r in sel], [r["accuracy"] for r in sel], marker=m,
                   facecolors="none", edgecolors="k", label=f"measured, fep-weight {lw:g}")
        for r in sel:
            ax.annotate(f"K={r['K']:g}", (r[key], r["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("output error under the fixed crash distribution (log)")
    ax.set_ylabel("test accuracy (learning)")
    ax.set_title("Robustness against ease of learning (5.3)")
    ax.legend(frameon=False, fontsize=7)
    return fig, ax


def plot_sweep_cost(rows: Sequence[dict[str, Any]], ax: Any = None) -> tuple[Any, Any]:
    """Learning cost against K: epochs to the target accuracy, one line per regulariser weight."""
    fig, ax = _axes(ax)
    for lw in sorted({r["fep_weight"] for r in rows}):
        sel = sorted((r for r in rows if r["fep_weight"] == lw), key=lambda r: r["K"])
        ep = [np.nan if r["epochs_to_target"] in (None, "") else r["epochs_to_target"] for r in sel]
        ax.plot([r["K"] for r in sel], ep, "o-", label=f"fep-weight {lw:g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("Lipschitz constant K (log scale)")
    ax.set_ylabel("epochs to the target accuracy")
    ax.set_title("Learning cost")
    ax.legend(frameon=False, fontsize=8)
    return fig, ax


def sweep_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Both sweep panels side by side: :func:`plot_sweep_cost` and :func:`plot_sweep`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    plot_sweep_cost(rows, a)
    plot_sweep(rows, b)
    return fig


def write_figures(out_dir: str | Path, Ks: Sequence[float] = FIG3_KS, config: Any = None) -> dict[str, str]:  # noqa: N803
    """Write ``figure2.png/.csv`` and ``figure3.png/.csv`` into ``out_dir``; returns the paths."""
    from faultbound.training import write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    rows2 = figure2_data()
    write_csv(rows2, out / "figure2.csv")
    fig, _ = plot_sigmoid_profiles(rows2)
    fig.savefig(out / "figure2.png", dpi=120)
    paths["figure2_png"], paths["figure2_csv"] = str(out / "figure2.png"), str(out / "figure2.csv")
    rows3 = figure3_data(Ks, config)
    write_csv(rows3, out / "figure3.csv")
    fig, _ = plot_error_vs_k(rows3)
    fig.savefig(out / "figure3.png", dpi=120)
    paths["figure3_png"], paths["figure3_csv"] = str(out / "figure3.png"), str(out / "figure3.csv")
    return paths
