"""The exact MILP on the chain templates of the tests: value, dual bound, witness error and time.

Prints one JSON object per line is not needed: one JSON document with a ``cases`` list. Used once
to record the layered MILP's optima before it was replaced by the one MILP over the graph
(``tests/data/exact_parity.json``, made at commit eccef80 with the command below); the test
``tests/test_exact.py::test_exact_parity_with_the_layered_milp`` checks today's optima against it.

Run: ``.venv/bin/python benchmarks/exact_parity.py > tests/data/exact_parity.json``
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import torch
from torch import nn

import faultbound as fb
from faultbound.bounds.exact import exact_bound


def _mlp(widths: list[int], act: str, d_in: int, n_out: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    acts = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1), "hardtanh": nn.Hardtanh}
    mods: list[nn.Module] = []
    d = d_in
    for w in widths:
        mods += [nn.Linear(d, w), acts[act]()]
        d = w
    mods.append(nn.Linear(d, n_out))
    return nn.Sequential(*mods).double().eval()


def templates() -> dict[str, tuple[fb.Network, list[tuple[str, fb.faults.Fault, list[int] | None]]]]:
    """Name -> (layered network, [(fault label, fault, counts)])."""
    out: dict[str, tuple[fb.Network, list[tuple[str, fb.faults.Fault, list[int] | None]]]] = {}
    faults_2 = [
        ("crash", fb.Crash(), [1, 1]),
        ("stuck-at", fb.StuckAt(0.3), [2, 1]),
        ("byzantine", fb.Byzantine(0.5), [1, 0]),
        ("byzantine-deviation", fb.ByzantineDeviation(0.3), [0, 1]),
        ("synapse-crash", fb.SynapseCrash(), [1, 0, 1]),
        ("synapse-byzantine", fb.SynapseByzantine(0.5), [0, 1, 0]),
        ("precision", fb.Precision([0.1, 0.05]), None),
    ]
    for act, seed in (("relu", 1), ("leaky", 2), ("hardtanh", 3)):
        net = fb.Network.from_torch(_mlp([4, 3], act, d_in=2, n_out=2, seed=seed), domain=(-1, 1))
        out[f"mlp-2-4-3-2-{act}"] = (net, faults_2)
    deep = fb.Network.from_torch(_mlp([3, 3, 3], "relu", d_in=2, n_out=1, seed=4), domain=(0, 1))
    out["mlp-2-3-3-3-1-relu"] = (deep, [("crash", fb.Crash(), [1, 1, 1]), ("byzantine", fb.Byzantine(1.0), [1, 0, 1])])
    torch.manual_seed(3)
    conv = nn.Sequential(
        nn.Conv2d(1, 1, 2), nn.ReLU(), nn.Flatten(), nn.Linear(4, 3), nn.LeakyReLU(0.2), nn.Linear(3, 1)
    ).double().eval()
    cnet = fb.Network.from_torch(conv, domain=(-1.0, 1.0), input_shape=(1, 3, 3))
    out["conv-flatten-dense"] = (cnet, faults_2)
    torch.manual_seed(5)
    pool = nn.Sequential(
        nn.Conv2d(1, 2, 2), nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)
    ).double().eval()
    pnet = fb.Network.from_torch(pool, domain=(0.0, 1.0), input_shape=(1, 3, 3))
    out["conv-avgpool-dense"] = (pnet, [("crash", fb.Crash(), [1, 1]), ("byzantine", fb.Byzantine(0.5), [1, 1]),
                                         ("precision", fb.Precision([0.05, 0.05]), None)])
    return out


def main() -> None:
    torch.set_num_threads(1)
    cases = []
    for name, (net, faults) in templates().items():
        for label, fault, counts in faults:
            t0 = time.perf_counter()
            r = exact_bound(net, counts, fault)
            cases.append({
                "network": name, "fault": label, "counts": counts, "optimal": r.optimal,
                "dual_bound": r.dual_bound, "lower": r.lower, "value": r.value,
                "seconds": round(time.perf_counter() - t0, 3), "n_binaries": r.n_binaries,
            })
    doc = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, 1 thread",
        "python": sys.version.split()[0],
        "cases": cases,
    }
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
