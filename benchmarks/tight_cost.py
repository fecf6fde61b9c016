"""Cost of the tight bound on a ~10M-parameter MLP and a conv net with large layers; prints JSON.

    .venv/bin/python benchmarks/tight_cost.py [--threads 1] [--repeats 3]

Times (median of ``--repeats``): the tight propagation alone (one value), the full ``tight_bound``
(value plus one propagation per layer for the per-layer contributions), the paper bound, and a
batch of per-input certificates, for crash, Byzantine, synapse-crash and precision faults.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import faultbound as fb
from faultbound.bounds.certify import certify
from faultbound.bounds.tight import prepare, propagate, tight_bound


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _mlp() -> fb.Network:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 2048),
        nn.Sigmoid(),
        nn.Linear(2048, 2048),
        nn.Tanh(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 10),
    )
    return fb.Network.from_torch(model, check=False)


def _cnn() -> fb.Network:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * 14 * 14, 10),
    )
    return fb.Network.from_torch(model, input_shape=(1, 28, 28), check=False)


def run(threads: int, repeats: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    out: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads, "torch": torch.__version__},
        "repeats": repeats,
        "models": [],
    }
    for name, make, f in (("mlp-784-2048x3-10", _mlp, [20, 20, 20]), ("cnn-28x28-conv32-conv64s2", _cnn, [20, 20])):
        net = make()
        row: dict[str, Any] = {"model": name, "n_params": net.n_params, "widths": net.widths, "failures": f}
        faults: list[tuple[str, fb.faults.Fault, list[int] | None]] = [
            ("crash", fb.Crash(), f),
            ("byzantine", fb.Byzantine(1.0), f),
            # Layer.n_synapses materialises the effective matrix, too large for the big convolutions.
            *([("synapse-crash", fb.SynapseCrash(), [5] * (net.L + 1))] if name.startswith("mlp") else []),
            ("precision", fb.Precision([1e-3] * net.L), None),
        ]
        for fname, fault, counts in faults:
            t_prep, plan = _time(lambda fault=fault, net=net: prepare(net, fault), repeats)
            t_prop, val = _time(lambda plan=plan, counts=counts: float(propagate(plan, counts).amax()), repeats)
            t_full, (tight, per) = _time(
                lambda fault=fault, counts=counts, net=net: tight_bound(net, counts, fault), repeats
            )
            t_paper, paper = _time(
                lambda fault=fault, counts=counts, net=net: fb.bound(net, counts, fault, "paper"), repeats
            )
            row[fname] = {
                "tight": tight,
                "paper": paper.value,
                "paper_over_tight": paper.value / tight if tight > 0 else None,
                "seconds_prepare": t_prep,
                "seconds_propagate": t_prop,
                "seconds_tight_bound_with_per_layer": t_full,
                "seconds_paper": t_paper,
            }
        x = torch.rand((64, *net.input_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        t_cert, cert = _time(lambda x=x, f=f, net=net: certify(net, x, f, fb.Crash(), batch_size=16), 1)
        row["certify_64_inputs_crash"] = {
            "seconds": t_cert,
            "median_bound": float(torch.as_tensor(cert.bounds).median()),
        }
        out["models"].append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(json.dumps(run(a.threads, a.repeats), indent=2))


if __name__ == "__main__":
    main()
