"""What the receptive-field update of the graph engine buys on the CIFAR ResNet-18.

The same single-neuron crash campaign (T configurations, one neuron drawn uniformly among all site
neurons, B random inputs in [0,1]^(3x32x32)) run by ``graph_inject`` with windows on and off (off:
every faulty node is recomputed on its whole map; unchanged pairs are dropped in both), on one clean
pass; outputs compared. Also times one clean forward of the B inputs by the module itself (batch
norms as separate ops) and by the graph (batch norms folded into the convolutions), best of 3.
Prints one JSON object.

Run: ``.venv/bin/python benchmarks/graph_windows.py [--threads 2] [--configs 50] [--batch 32]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import faultbound as fb
from faultbound.measure import FaultSet
from faultbound.measure.graph_engine import graph_clean_pass, graph_inject
from faultbound.models import resnet18_cifar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = resnet18_cifar()
    net = fb.load(model, input_shape=(3, 32, 32))
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.batch, 3, 32, 32), generator=g)
    widths = net.widths
    flat = torch.randint(0, sum(widths), (args.configs,), generator=g)
    starts = torch.tensor([0] + widths).cumsum(0)
    site = torch.searchsorted(starts[1:], flat, right=True)
    unit = flat - starts[site]
    fs = FaultSet(args.configs, tuple(torch.where(site == i, unit, -1)[:, None] for i in range(len(widths))))
    cp = graph_clean_pass(net, x)
    times = {}
    for name, fn in (("clean_module", lambda: model(x)), ("clean_graph", lambda: graph_clean_pass(net, x))):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    outs = {}
    for name, windows in (("windows", True), ("whole_maps", False), ("windows_again", True)):
        t0 = time.perf_counter()
        outs[name] = graph_inject(net, cp, fb.Crash(), fs, windows=windows).outputs
        times[name] = time.perf_counter() - t0
    best_on = min(times["windows"], times["windows_again"])
    print(
        json.dumps(
            {
                "model": "resnet18-cifar",
                "configurations": args.configs,
                "inputs": args.batch,
                "seconds": times,
                "speedup_of_windows": times["whole_maps"] / best_on,
                "max_output_difference": float((outs["windows"] - outs["whole_maps"]).abs().max()),
                "threads": torch.get_num_threads(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}",
            }
        )
    )


if __name__ == "__main__":
    main()
