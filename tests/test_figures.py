"""Figures 2 and 3 and the sweep plot: data, axes contract, files written."""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from faultbound.errors import InvalidArgumentError
from faultbound.report.figures import (
    figure2_data,
    figure3_config,
    figure3_data,
    plot_error_vs_k,
    plot_sigmoid_profiles,
    plot_sweep,
    sweep_figure,
    write_figures,
)

TINY = replace(figure3_config(), epochs=2, n_samples=200, measure_runs=20, widths=(6, 5), failures=(1, 1))


def _ref_worst(net, failures, x):
    """Every crash set by plain loops: crashed neurons output 0."""
    import itertools


    ref = net.forward(x)
    worst = 0.0
    sets = [list(itertools.combinations(range(layer.width), f)) for layer, f in zip(net.hidden, failures, strict=True)]
    for combo in itertools.product(*sets):
        y = x
        for idx, layer in enumerate(net.layers):
            y = layer.forward(y)
            if layer.activation is not None:
                y = y.clone()
                y[:, list(combo[idx])] = 0.0
        worst = max(worst, float((y - ref).abs().max()))
    return worst, math.prod(len(s) for s in sets)


def test_worst_crash_error_is_exhaustive_or_searched() -> None:
    import torch

    from faultbound.report.figures import worst_crash_error
    from tests.reference import random_network

    net = random_network([5, 4], ["sigmoid", "tanh"], d_in=2, n_out=2, seed=3)
    x = net.domain.sample(30, torch.Generator().manual_seed(0))
    got = worst_crash_error(net, [2, 1], x)
    want, n_sets = _ref_worst(net, [2, 1], x)
    assert got["method"] == "exhaustive" and got["sets"] == n_sets == 10 * 4
    assert got["max"] == pytest.approx(want, rel=1e-12) and 0 < got["mean"] <= got["max"]
    searched = worst_crash_error(net, [2, 1], x, limit=5)
    assert searched["method"] == "search" and searched["mean"] is None
    # the search also moves the inputs, so it may find more on the domain, never more than the bound
    import faultbound as fb

    assert 0 < searched["max"] <= fb.bound(net, [2, 1], method="paper").value * (1 + 1e-9)


def test_training_stops_at_the_target() -> None:
    from faultbound.apps.training import train

    cfg = replace(TINY, epochs=40, widths=(8, 8), target=0.3)
    r = train(cfg)
    s = r.summary
    assert s["epochs_to_target"] is not None and s["epochs_trained"] == s["epochs_to_target"] < 40
    assert r.history[-1]["accuracy"] >= 0.3 > max([h["accuracy"] for h in r.history[:-1]] or [0.0])
    full = train(replace(cfg, stop_at_target=False))
    assert full.summary["epochs_trained"] == 40


def test_figure2_profiles_have_slope_k() -> None:
    rows = figure2_data([0.25, 1.0, 4.0], n=2001, x_max=1.0)
    mid = len(rows) // 2
    assert rows[mid]["x"] == pytest.approx(0.0)
    h = rows[mid + 1]["x"] - rows[mid]["x"]
    for k in (0.25, 1.0, 4.0):
        assert rows[mid][f"K={k:g}"] == pytest.approx(0.5)
        slope = (rows[mid + 1][f"K={k:g}"] - rows[mid - 1][f"K={k:g}"]) / (2 * h)
        assert slope == pytest.approx(k, rel=1e-3)
    with pytest.raises(InvalidArgumentError):
        figure2_data([0.0])


def test_plots_take_and_return_axes_without_pyplot() -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    f2, a2 = plot_sigmoid_profiles(figure2_data([1.0], n=11), ax=ax)
    assert a2 is ax and f2 is fig and len(ax.lines) >= 1
    rows3 = [
        {"K": 0.5, "measured_max_error": 0.1, "measured_mean_error": 0.05, "bound_paper": 1.0, "bound_tight": 0.5,
         "accuracy": 0.5, "failures": "1 1"},
        {"K": 2.0, "measured_max_error": 0.3, "measured_mean_error": 0.1, "bound_paper": 9.0, "bound_tight": 2.0,
         "accuracy": 0.9, "failures": "1 1"},
    ]
    f3, a3 = plot_error_vs_k(rows3)
    assert a3.get_xscale() == "log" and a3.get_yscale() == "log"
    assert [list(line.get_xdata()) for line in a3.lines[:1]] == [[0.5, 2.0]]
    sweep_rows = [
        {"K": k, "fep_weight": lw, "accuracy": 0.9, "epochs_to_target": 3, "bound_paper": 2.0, "bound_tight": 1.0,
         "measured_max_error": 0.5} for k in (0.5, 2.0) for lw in (0.0, 0.1)
    ]
    _, a4 = plot_sweep(sweep_rows)
    assert a4.get_xscale() == "log"
    assert len(sweep_figure(sweep_rows).axes) == 2
    plt = sys.modules.get("matplotlib.pyplot")
    assert plt is None or plt.get_fignums() == []


def test_figure3_data_sound_and_files(tmp_path: Path) -> None:
    rows = figure3_data([0.5, 4.0], TINY)
    assert [r["K"] for r in rows] == [0.5, 4.0]
    for r in rows:
        assert r["measure"] == "exhaustive" and r["crash_sets"] == 6 * 5
        assert 1 <= r["epochs_trained"] <= TINY.epochs
        assert r["reached_target"] == (r["accuracy"] >= TINY.target)
        assert 0 < r["measured_max_error"] <= r["bound_paper"] * (1 + 1e-9)
        if r["bound_tight"] is not None:
            assert r["measured_max_error"] <= r["bound_tight"] * (1 + 1e-9)
            assert r["retuned_measured_max_error"] <= r["retuned_bound_tight"] * (1 + 1e-9)
        assert r["retuned_measured_max_error"] <= r["retuned_bound_paper"] * (1 + 1e-9)
    # retuning the same weights to a larger K raises the paper bound (K^(L-l) factors)
    assert rows[1]["retuned_bound_paper"] > rows[0]["retuned_bound_paper"]
    paths = write_figures(tmp_path, [0.5, 4.0], TINY)
    for key in ("figure2_png", "figure2_csv", "figure3_png", "figure3_csv"):
        assert Path(paths[key]).stat().st_size > 0
    assert Path(paths["figure2_png"]).read_bytes()[:4] == b"\x89PNG"
    with open(paths["figure3_csv"]) as fh:
        got = list(csv.DictReader(fh))
    assert [float(r["K"]) for r in got] == [0.5, 4.0]
    assert float(got[0]["bound_paper"]) == pytest.approx(rows[0]["bound_paper"])
