"""How many more failure distributions does the tight bound certify than the paper's formula?

    .venv/bin/python benchmarks/tolerance_gain.py [--epochs 40] [--threads 1]

Trains the sigmoid digits networks of ``benchmarks/tightness.py`` (same seed and recipe) and runs
:func:`faultbound.bounds.compare_methods` (``tolerate`` with ``method="paper"`` and ``method="tight"``) for
eps' = 0 and eps in {2, 5}. Prints one JSON object per (network, eps): per-layer maxima, uniform
fraction, number of tolerated distributions, bounds evaluated and seconds, for both methods.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

import faultbound as fb
from faultbound.apps.training import fit, mlp
from faultbound.data import digits

NETWORKS = [("sigmoid-32-32", [32, 32]), ("sigmoid-32-32-32", [32, 32, 32])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = digits()
    for name, widths in NETWORKS:
        torch.manual_seed(0)
        model = mlp(64, widths, 10, nn.Sigmoid)
        fit(model, ds.X, ds.onehot(), epochs=args.epochs, seed=0)
        net = fb.Network.from_torch(model)
        for eps in (2.0, 5.0):
            row: dict[str, object] = {"network": name, "eps": eps, "eps_prime": 0.0}
            for method in ("paper", "tight"):
                t0 = time.perf_counter()
                r = fb.tolerate(net, eps, 0.0, method=method)  # type: ignore[arg-type]
                row[method] = {
                    "per_layer_max": list(r.per_layer_max),
                    "uniform_fraction": r.uniform_fraction,
                    "uniform_failures": list(r.uniform_failures),
                    "n_tolerated": r.n_tolerated,
                    "n_evaluated": r.n_evaluated,
                    "seconds": time.perf_counter() - t0,
                }
            row["threads"] = args.threads
            row["machine"] = f"{platform.machine()}, torch {torch.__version__}"
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
