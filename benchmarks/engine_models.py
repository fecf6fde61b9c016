"""Time ``faultbound.measure.inject`` per fault model, for side-by-side runs of two source trees.

T = 256 configurations x B = 64 inputs (clean pass reused, as a campaign does) on an MLP 64-128-128-10
(sigmoid, tanh) and a small CNN 1x14x14 -> conv 4 (ReLU) -> linear 32 (ReLU) -> linear 10, for a
crash, Byzantine with adversarial values, Byzantine synapses, precision, neuron int8 bit flips and
weight float32 bit flips. Best of ``--repeats`` per case, wall-clock ``seconds`` and the process's
``cpu_seconds`` (less disturbed by other processes on a shared machine); ``checksum`` (the sum of the finite errors)
shows that two trees measured the same thing. Only public names of ``faultbound.measure`` are used,
so the script runs unchanged against an older tree:

    PYTHONPATH=OLD/src python benchmarks/engine_models.py; PYTHONPATH=src python benchmarks/engine_models.py

Prints one JSON object. Run: ``.venv/bin/python benchmarks/engine_models.py [--repeats 15]``
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
from faultbound.faults import BitFlip
from faultbound.measure import clean_pass, inject, sample_faults


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--configs", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    mlp = fb.Network.from_torch(
        nn.Sequential(nn.Linear(64, 128), nn.Sigmoid(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))
    )
    cnn = fb.Network.from_torch(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 32), nn.ReLU(),
                      nn.Linear(32, 10)),
        input_shape=(1, 14, 14),
    )
    cases = [
        ("mlp crash [1,0]", mlp, fb.Crash(), [1, 0], "random"),
        ("mlp crash [3,2]", mlp, fb.Crash(), [3, 2], "random"),
        ("mlp byzantine adversarial [2,1]", mlp, fb.Byzantine(1.0), [2, 1], "adversarial"),
        ("mlp synapse-byzantine [2,2,1]", mlp, fb.SynapseByzantine(1.0), [2, 2, 1], "random"),
        ("mlp precision", mlp, fb.Precision([0.01, 0.02]), None, "random"),
        ("mlp bitflip neuron int8 [1,1]", mlp, BitFlip("neuron", "int8"), [1, 1], "random"),
        ("mlp bitflip weight float32 [1,1,1]", mlp, BitFlip("weight", "float32", bits=tuple(range(30))), [1, 1, 1],
         "random"),
        ("cnn crash [1,0]", cnn, fb.Crash(), [1, 0], "random"),
    ]
    out: dict[str, object] = {}
    for name, net, fault, failures, mode in cases:
        g = torch.Generator().manual_seed(0)
        fs = sample_faults(net, fault, args.configs, failures=failures, generator=g)
        x = net.domain.sample(args.batch, generator=g)
        cp = clean_pass(net, x)
        errors = inject(net, cp, fault, fs, values=mode).errors
        best = best_cpu = float("inf")
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            inject(net, cp, fault, fs, values=mode)
            best_cpu = min(best_cpu, time.process_time() - c0)
            best = min(best, time.perf_counter() - t0)
        checksum = float(torch.nan_to_num(errors, posinf=0.0).sum())
        out[name] = {
            "seconds": best,
            "cpu_seconds": best_cpu,
            "per_s": args.configs * args.batch / best,
            "checksum": checksum,
        }
    out["threads"] = torch.get_num_threads()
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
