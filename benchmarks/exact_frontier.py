"""How large a network does ``method="exact"`` solve to optimality, and how long does it take?

    .venv/bin/python benchmarks/exact_frontier.py [--limit 60] [--epochs 40] [--only digits]

Trains (seeded, the full digits set, MSE on one-hot targets, Adam) ReLU MLPs on the 64 digits
features with depth 1-3 and width 8, 16, 32, plus the digits network 64-20-12-11-10 (cross-entropy).
For each it solves the exact worst case over the domain [0, 1]^64 under one crash in every hidden
layer with a time limit (``--limit`` seconds), and records whether HiGHS proved optimality, the
time, the nodes, the interval [lower, value] and the tight and paper bounds beside it. The
frontier is the largest network (hidden units) of each depth solved within the limit.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
import torch
from torch import nn

import faultbound as fb
from faultbound.apps.training import fit, mlp
from faultbound.bounds.exact import exact_bound
from faultbound.data import digits

GRID = [(d, w) for d in (1, 2, 3) for w in (8, 16, 32)]


def _train(widths: list[int], epochs: int, cross_entropy: bool) -> tuple[fb.Network, float]:
    ds = digits()
    torch.manual_seed(0)
    model = mlp(64, widths, 10, nn.ReLU)
    if cross_entropy:
        fit(model, ds.X, ds.y, epochs=epochs, seed=0, loss="cross_entropy")
    else:
        fit(model, ds.X, ds.onehot(), epochs=epochs, seed=0)
    net = fb.Network.from_torch(model)
    acc = float((net.forward(torch.as_tensor(ds.X)).argmax(1).numpy() == ds.y).mean())
    return net, acc


def _row(name: str, net: fb.Network, acc: float, limit: float) -> dict[str, Any]:
    f = [1] * net.L
    t0 = time.perf_counter()
    r = exact_bound(net, f, fb.Crash(), time_limit=limit)
    secs = time.perf_counter() - t0
    tight = fb.bound(net, f, fb.Crash(), method="tight").value
    paper = fb.bound(net, f, fb.Crash(), method="paper").value
    return {
        "name": name,
        "widths": net.widths,
        "inputs": int(np.prod(net.input_shape)),
        "hidden_units": int(sum(net.widths)),
        "accuracy": acc,
        "failures": f,
        "optimal": r.optimal,
        "status": r.status,
        "seconds": secs,
        "nodes": r.nodes,
        "binaries": r.n_binaries,
        "exact_lower": r.lower,
        "exact_value": r.value,
        "gap": r.gap,
        "tight": tight,
        "paper": paper,
        "tight_over_exact": tight / r.value if r.value > 0 else None,
    }


def run(limit: float, epochs: int, only: str | None) -> dict[str, Any]:
    torch.set_num_threads(1)
    rows = []
    t_start = time.perf_counter()
    specs: list[tuple[str, list[int], bool]] = [(f"relu-{d}x{w}", [w] * d, False) for d, w in GRID]
    specs.append(("digits-64-20-12-11-10", [20, 12, 11], True))
    if only == "digits":
        specs = specs[-1:]
    elif only is not None:
        specs = [s for s in specs if s[0] == only]
    for name, widths, ce in specs:
        net, acc = _train(widths, epochs, ce)
        rows.append(_row(name, net, acc, limit))
    frontier: dict[str, Any] = {}
    for d in (1, 2, 3):
        solved = [r for r in rows if len(r["widths"]) == d and r["optimal"] and not r["name"].startswith("digits")]
        frontier[f"depth_{d}"] = max(solved, key=lambda r: r["hidden_units"])["name"] if solved else None
    return {
        "command": f"benchmarks/exact_frontier.py --limit {limit:g} --epochs {epochs}"
        + (f" --only {only}" if only else ""),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1, "torch": torch.__version__},
        "domain": "[0, 1]^64",
        "fault": "crash, one failure in every hidden layer",
        "time_limit_s": limit,
        "frontier_largest_solved": frontier,
        "rows": rows,
        "seconds_total": time.perf_counter() - t_start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--limit", type=float, default=60.0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--only", default=None, help="'digits' or one network name, e.g. relu-2x16")
    a = p.parse_args()
    print(json.dumps(run(a.limit, a.epochs, a.only), indent=2))


if __name__ == "__main__":
    main()
