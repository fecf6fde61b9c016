"""Worst-case search quality: beam search + gradient ascent vs exhaustive enumeration.

On networks small enough to enumerate every failure set, run :func:`faultbound.measure.worst_case`
twice with the same probes and seed:

* exhaustive: every failure set on every probe input, then projected gradient ascent over the inputs
  of the best sets (the reference "exhaustive worst case");
* search: beam search over failure sets (``exhaustive_limit=0``) on a few probes, then the same
  gradient ascent.

Goal: the search reaches >= 99% of the exhaustive worst case with <= 1% of its evaluations
(evaluation = one configuration on one input). Also reported: the ratio to the exhaustive error over
the probes alone (before gradient ascent), and the certified bound (``method="paper"``) for scale.
Prints one JSON object per case and a summary object.

Run: ``.venv/bin/python benchmarks/search_quality.py [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch import nn

import faultbound as fb
from faultbound.measure import worst_case


def net(widths: list[int], act: type[nn.Module], d_in: int, n_out: int, seed: int) -> fb.Network:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    prev = d_in
    for w in widths:
        mods += [nn.Linear(prev, w), act()]
        prev = w
    mods.append(nn.Linear(prev, n_out))
    return fb.Network.from_torch(nn.Sequential(*mods))


CASES = [
    ("sigmoid 4-24-24-1, crash (2,2)", lambda: net([24, 24], nn.Sigmoid, 4, 1, 0), fb.Crash(), [2, 2]),
    ("tanh 4-24-24-3, crash (2,2)", lambda: net([24, 24], nn.Tanh, 4, 3, 1), fb.Crash(), [2, 2]),
    ("relu 5-40-30-2, crash (2,1)", lambda: net([40, 30], nn.ReLU, 5, 2, 2), fb.Crash(), [2, 1]),
    ("sigmoid 4-20-20-1, byzantine C=1 (2,2)", lambda: net([20, 20], nn.Sigmoid, 4, 1, 3), fb.Byzantine(1.0), [2, 2]),
    ("tanh 3-16-16-16-1, crash (1,2,1)", lambda: net([16, 16, 16], nn.Tanh, 3, 1, 4), fb.Crash(), [1, 2, 1]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, make, fault, failures in CASES:
        n = make()
        t0 = time.perf_counter()
        ex = worst_case(n, fault, failures, exhaustive_limit=10**12, seed=args.seed, steps=30)
        t1 = time.perf_counter()
        se = worst_case(n, fault, failures, exhaustive_limit=0, seed=args.seed, steps=30)
        t2 = time.perf_counter()
        assert ex.exhaustive and not se.exhaustive
        row = {
            "case": name,
            "failure_sets": ex.sets_total,
            "probes": ex.probes,
            "exhaustive_max_error": ex.max_error,
            "exhaustive_probe_only_max_error": ex.probe_max_error,
            "search_max_error": se.max_error,
            "ratio": se.max_error / ex.max_error if ex.max_error > 0 else None,
            "exhaustive_evaluations": ex.evaluations,
            "search_evaluations": se.evaluations,
            "evaluation_fraction": se.evaluations / ex.evaluations,
            "bound_paper": fb.bound(n, failures, fault).value,
            "seconds": {"exhaustive": t1 - t0, "search": t2 - t1},
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    fracs = [r["evaluation_fraction"] for r in rows]
    print(
        json.dumps(
            {
                "summary": True,
                "min_ratio": min(ratios),
                "max_evaluation_fraction": max(fracs),
                "goal_met": min(ratios) >= 0.99 and max(fracs) <= 0.01,
                "threads": torch.get_num_threads(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}",
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
