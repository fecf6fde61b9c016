"""The paper's Figures 2 and 3, and the robustness/learning-cost sweep plot (matplotlib, no pyplot).

Every plot function takes an optional ``ax`` and returns ``(fig, ax)``; none calls ``plt.show``
and none touches pyplot's global state (figures are plain :class:`matplotlib.figure.Figure`, saved
with the Agg canvas). The data behind each figure comes from a separate ``*_data`` function that
returns table rows, written to CSV beside the PNG by :func:`write_figures`.

* **Figure 2** -- :math:`\\varphi_K(x) = \\sigma(4Kx)` for several K: the larger K, the steeper.
* **Figure 3** -- output error under crashes against K (log scale), two ways: networks of the same
  architecture trained independently with TunedSigmoid(K), each until it reaches the target
  accuracy (or the most epochs), and the network trained at K = 1 with its weights kept and only
  its sigmoids retuned to K. The measured error is the worst over *every* crash set of the fixed
  distribution on the test inputs (:func:`worst_crash_error`; the worst-case search when there are
  too many sets), beside the certified bounds of each network.
"""

from __future__ import annotations

import math
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
    "worst_crash_error",
    "EXHAUSTIVE_LIMIT",
]

#: Most crash sets :func:`worst_crash_error` enumerates; above it, the worst-case search is used.
EXHAUSTIVE_LIMIT = 50_000

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
    """The training setup of Figure 3: wave on [0, 1]^2, two hidden layers of 16, 2 crashes each.

    Each network trains until its test accuracy (fraction of test points within 0.05) reaches 0.9,
    for at most 200 epochs.
    """
    from faultbound.apps.training import TrainConfig

    return TrainConfig(
        dataset="synthetic", widths=(16, 16), failures=(2, 2), epochs=200, batch_size=64, n_samples=2048,
        measure_runs=300, target=0.9, tol=0.05, stop_at_target=True,
    )


def worst_crash_error(
    net: Any, failures: Sequence[int], x: Any, limit: int = EXHAUSTIVE_LIMIT, seed: int = 0
) -> dict[str, Any]:
    """The largest :math:`\\|F_{fail}(x) - F(x)\\|_\\infty` over the inputs ``x`` and every crash set.

    Every set with exactly ``failures[l]`` crashed neurons in each hidden layer l is enumerated when
    there are at most ``limit`` of them (``method: "exhaustive"``, the exact worst on ``x``, with the
    mean over the sets); otherwise :func:`faultbound.measure.worst_case` searches the sets and the
    domain's inputs (``method: "search"``, a lower bound of the worst case; no mean).
    """
    import itertools

    import torch

    from faultbound.apps.faulty import crash_errors
    from faultbound.faults import Crash

    counts = [math.comb(layer.width, f) for layer, f in zip(net.hidden, failures, strict=True)]
    n_sets = math.prod(counts)
    if n_sets <= limit:
        per_layer = []
        for layer, f in zip(net.hidden, failures, strict=True):
            rows = []
            for dead in itertools.combinations(range(layer.width), f):
                m = torch.ones(layer.width, dtype=torch.float64)
                m[list(dead)] = 0.0
                rows.append(m)
            per_layer.append(torch.stack(rows))
        grids = torch.meshgrid(*[torch.arange(c) for c in counts], indexing="ij")
        masks = [pl[g.reshape(-1)] for pl, g in zip(per_layer, grids, strict=True)]
        errs = crash_errors(net, x, masks, chunk=256)
        return {"max": float(errs.max()), "mean": float(errs.mean()), "method": "exhaustive", "sets": n_sets}
    from faultbound.measure import worst_case

    r = worst_case(net, Crash(), list(failures), inputs=x, seed=seed)
    return {"max": float(r.max_error), "mean": None, "method": "search", "sets": n_sets}


def figure3_data(Ks: Sequence[float] = FIG3_KS, config: Any = None, reference_K: float = 1.0) -> list[dict[str, Any]]:  # noqa: N803
    """Train one network per K (same data, seed and failure distribution) and measure it.

    Each row: K; the trained network's accuracy, epochs trained and whether it reached the target;
    its worst (and mean) output error over every crash set of the fixed distribution on the test
    inputs (:func:`worst_crash_error`), the paper and tight bounds and the printed Fep. The
    ``retuned_*`` columns isolate K: the network trained at ``reference_K`` keeps its weights and
    only its sigmoids are retuned to K, then it is measured and bounded the same way.
    """
    import torch

    import faultbound as fb
    from faultbound.apps.training import split_dataset, train
    from faultbound.nn import TunedSigmoid

    cfg = config or figure3_config()
    if not Ks or any(not (k > 0) for k in Ks):
        raise InvalidArgumentError(f"Expected positive values of K, but got {list(Ks)}.")
    ref = train(replace(cfg, K=float(reference_K)))
    _, _, Xte, _, _, _ = split_dataset(cfg)
    x_te = torch.as_tensor(Xte, dtype=torch.float64)
    failures = list(ref.summary["failures"])
    rows = []
    for k in Ks:
        res = ref if float(k) == float(reference_K) else train(replace(cfg, K=float(k)))
        s = res.summary
        trained = worst_crash_error(res.network, failures, x_te)
        retuned = torch.nn.Sequential(
            *[TunedSigmoid(float(k)) if isinstance(m, TunedSigmoid) else m for m in ref.model.children()]
        )
        net = fb.Network.from_torch(retuned, domain=(0.0, 1.0))
        fixed = worst_crash_error(net, failures, x_te)
        rows.append(
            {
                "K": float(k),
                "accuracy": s["accuracy"],
                "epochs_trained": s["epochs_trained"],
                "reached_target": s["epochs_to_target"] is not None,
                "measured_max_error": trained["max"],
                "measured_mean_error": trained["mean"],
                "measure": trained["method"],
                "crash_sets": trained["sets"],
                "bound_paper": s["bound_paper"],
                "bound_tight": s["bound_tight"],
                "fep_printed": s["fep_printed"],
                "retuned_measured_max_error": fixed["max"],
                "retuned_bound_paper": fb.bound(net, failures, method="paper").value,
                "retuned_bound_tight": fb.bound(net, failures, method="tight").value,
                "failures": " ".join(map(str, failures)),
            }
        )
    return rows


def plot_error_vs_k(rows: Sequence[dict[str, Any]], ax: Any = None) -> tuple[Any, Any]:
    """Figure 3: measured output error against K (log-log), with the certified bounds beside it."""
    fig, ax = _axes(ax, (6.5, 6.0))
    K = [r["K"] for r in rows]
    ax.plot(K, [r["measured_max_error"] for r in rows], "o-", color="tab:blue",
            label="trained per K: measured (worst crash set)")
    if all(r.get("measured_mean_error") not in (None, "") for r in rows):
        ax.plot(K, [r["measured_mean_error"] for r in rows], "o:", color="tab:blue", alpha=0.6,
                label="trained per K: measured (mean over crash sets)")
    ax.plot(K, [r["bound_paper"] for r in rows], "s--", color="tab:orange", label="trained per K: paper (Fep)")
    if all(r.get("bound_tight") not in (None, "") for r in rows):
        ax.plot(K, [r["bound_tight"] for r in rows], "^--", color="tab:green", label="trained per K: tight bound")
    if all(r.get("retuned_measured_max_error") not in (None, "") for r in rows):
        ax.plot(K, [r["retuned_measured_max_error"] for r in rows], "o-", color="tab:purple", alpha=0.6,
                label="same weights, retuned K: measured (worst crash set)")
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
    """Write ``figure2.png/.csv``, ``figure3.png/.csv`` and ``figure3_config.json`` (the training setup)
    into ``out_dir``; returns the paths."""
    from faultbound.apps.training import write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    rows2 = figure2_data()
    write_csv(rows2, out / "figure2.csv")
    fig, _ = plot_sigmoid_profiles(rows2)
    fig.savefig(out / "figure2.png", dpi=120)
    paths["figure2_png"], paths["figure2_csv"] = str(out / "figure2.png"), str(out / "figure2.csv")
    import json
    from dataclasses import asdict

    cfg = config or figure3_config()
    rows3 = figure3_data(Ks, cfg)
    write_csv(rows3, out / "figure3.csv")
    (out / "figure3_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    fig, _ = plot_error_vs_k(rows3)
    fig.savefig(out / "figure3.png", dpi=120)
    paths["figure3_png"], paths["figure3_csv"] = str(out / "figure3.png"), str(out / "figure3.csv")
    paths["figure3_config"] = str(out / "figure3_config.json")
    return paths
