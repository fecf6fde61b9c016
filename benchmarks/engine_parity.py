"""Throughput parity of the two engines on layered networks, side by side in one run.

For every case the layered network ``net`` (:class:`~faultbound.network.Network`) runs the same
campaign (the same fault set, inputs, values and generator seed) through the layered engine
(:func:`faultbound.measure.engine.layered_inject`) and through :func:`faultbound.measure.inject`,
which runs the graph engine (:mod:`faultbound.measure.graph_engine`) on the network's graph view
``GraphNetwork.from_network(net)`` (``graph`` below). The two sides are timed interleaved (layered, graph,
clean, layered, graph, clean, ...) so the machine's load moves them alike; each row gives the
median and the min of the seconds, ``graph_vs_layered`` (graph seconds / layered seconds: above 1
the graph engine is slower; the gate of issue 19 is <= 1.1), each engine's throughput against clean
inference (configurations x inputs per second over the torch model's inputs per second on the same
batch, ``campaign_vs_clean``), and how far the two engines' outputs are apart (``max_output_diff``,
``max_rel_diff`` = that over the largest output change, both over the outputs finite on both sides;
``identical`` when bitwise equal (NaN where NaN); ``same_nonfinite``: the same outputs are inf / NaN on both sides).

Cases (the layered networks of ``vs_pytorchfi.py --only small`` and ``campaign_scale.py``):

* ``mlp784-single-crash``: 784-256-256-10 sigmoid, one crash drawn per configuration (failures 1,0),
* ``cnn-single-crash``: conv8-conv16-linear10 ReLU on 1x28x28, one crash per configuration in either
  convolution's output (failures 1,0 and 0,1 half each),
* ``mlp8-crash-3,2``: 8-64-32-1 ReLU, crashes with failures 3,2 (the campaign throughput case),
* ``mlp8-byzantine-3,2``, ``mlp8-byzantine-1,0-adversarial``: Byzantine(1) with random / adversarial values,
* ``mlp8-synapse-crash-3,2``: synapse crashes, 3 into layer 2 and 2 into the output layer (failures 0,3,2),
* ``mlp8-bitflip-neuron``, ``mlp8-bitflip-weight``: one bit flip per configuration (float32 and int8),
* ``mlp8-precision``: Precision offsets on every neuron (random values).

Prints one JSON object per case, then a summary line. Run:
``.venv/bin/python benchmarks/engine_parity.py [--repeats 7] [--threads 1] [--only NAME NAME ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import faultbound as fb
from faultbound.measure import FaultSet, inject, sample_faults
from faultbound.measure.engine import layered_inject


@dataclass
class Case:
    name: str
    model: nn.Sequential
    shape: tuple[int, ...]
    fault: fb.Fault
    configs: int
    batch: int
    failures: tuple[int, ...] | None
    values: str = "random"


def mlp8() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)).eval()


def mlp784() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, 256), nn.Sigmoid(), nn.Linear(256, 256), nn.Sigmoid(), nn.Linear(256, 10)
    ).eval()


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 28 * 28, 10),
    ).eval()


def cases(configs: int) -> list[Case]:
    return [
        Case("mlp784-single-crash", mlp784(), (784,), fb.Crash(), configs, 64, (1, 0)),
        Case("cnn-single-crash", cnn(), (1, 28, 28), fb.Crash(), configs, 64, None),
        Case("mlp8-crash-3,2", mlp8(), (8,), fb.Crash(), 4 * configs, 256, (3, 2)),
        Case("mlp8-byzantine-3,2", mlp8(), (8,), fb.Byzantine(1.0), 4 * configs, 256, (3, 2)),
        Case("mlp8-byzantine-1,0-adversarial", mlp8(), (8,), fb.Byzantine(1.0), configs, 64, (1, 0), "adversarial"),
        Case("mlp8-synapse-crash-3,2", mlp8(), (8,), fb.SynapseCrash(), 4 * configs, 256, (0, 3, 2)),
        Case("mlp8-bitflip-neuron", mlp8(), (8,), fb.BitFlip("neuron"), 4 * configs, 256, (1, 0)),
        Case("mlp8-bitflip-weight-int8", mlp8(), (8,), fb.BitFlip("weight", "int8"), 4 * configs, 256, (0, 1, 0)),
        Case("mlp8-precision", mlp8(), (8,), fb.Precision([1e-3, 1e-3]), configs, 256, None),
    ]


def fault_set(case: Case, net: fb.Network, g: torch.Generator) -> FaultSet:
    if case.name.startswith("cnn"):  # one crash per configuration, in either convolution's output
        half = case.configs // 2
        a = sample_faults(net, case.fault, half, failures=[1, 0], generator=g)
        b = sample_faults(net, case.fault, case.configs - half, failures=[0, 1], generator=g)
        sites = tuple(torch.cat([sa, sb]) if sa is not None and sb is not None else None
                      for sa, sb in zip(a.sites, b.sites, strict=True))
        return FaultSet(case.configs, sites)
    return sample_faults(net, case.fault, case.configs, failures=case.failures, generator=g)


def run(case: Case, repeats: int) -> dict:
    net = fb.Network.from_torch(case.model, input_shape=case.shape)
    g = torch.Generator().manual_seed(0)
    fs = fault_set(case, net, g)
    x = net.domain.sample(case.batch, generator=g)
    xf = x.float().reshape(case.batch, *case.shape)
    steps = 2 if case.values == "adversarial" else 0

    def side(fn: Callable[..., fb.measure.Injection]) -> Callable[[], fb.measure.Injection]:
        return lambda: fn(net, x, case.fault, fs, values=case.values, generator=torch.Generator().manual_seed(1),
                          adversarial_steps=steps)

    def clean() -> None:
        with torch.no_grad():
            for _ in range(20):
                case.model(xf)

    sides = {"layered": side(layered_inject), "graph": side(inject), "clean": clean}
    a, b = sides["layered"](), sides["graph"]()  # warm-up, and the outputs compared
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    times["clean"] = [s / 20 for s in times["clean"]]
    out_a, out_b = a.outputs, b.outputs  # type: ignore[union-attr]
    fin = torch.isfinite(out_a) & torch.isfinite(out_b)
    change = float((out_a - a.clean.unsqueeze(0))[fin].abs().max())  # type: ignore[union-attr]
    diff = float((out_a - out_b)[fin].abs().max())
    nan_a, nan_b = out_a[~fin].isnan(), out_b[~fin].isnan()
    same_nonfinite = torch.equal(nan_a, nan_b) and torch.equal(out_a[~fin][~nan_a], out_b[~fin][~nan_b])
    evals = case.configs * case.batch

    def per_clean(k: str, f: Callable[[list[float]], float]) -> float:
        return round((evals / f(times[k])) / (case.batch / f(times["clean"])), 3)

    return {
        "case": case.name,
        "configurations": case.configs,
        "inputs": case.batch,
        "values": case.values,
        "seconds": {k: {"median": round(statistics.median(v), 5), "min": round(min(v), 5)} for k, v in times.items()},
        "graph_vs_layered": {
            "median": round(statistics.median(times["graph"]) / statistics.median(times["layered"]), 3),
            "min": round(min(times["graph"]) / min(times["layered"]), 3),
        },
        "campaign_vs_clean_median": {k: per_clean(k, statistics.median) for k in ("layered", "graph")},
        "identical": bool(torch.equal(out_a[fin], out_b[fin])) and bool(same_nonfinite),
        "nonfinite_outputs": int((~fin).sum()),
        "same_nonfinite": bool(same_nonfinite) and bool(torch.equal(torch.isfinite(out_a), torch.isfinite(out_b))),
        "max_output_diff": diff,
        "max_rel_diff": diff / change if change > 0 else diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", type=int, default=256)
    ap.add_argument("--only", nargs="*", default=[], help="case names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    only = set(args.only)
    rows = []
    for case in cases(args.configs):
        if only and case.name not in only:
            continue
        row = run(case, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    worst = max(rows, key=lambda r: r["graph_vs_layered"]["median"]) if rows else None
    print(json.dumps({
        "summary": {r["case"]: r["graph_vs_layered"] for r in rows},
        "worst_median": None if worst is None else [worst["case"], worst["graph_vs_layered"]["median"]],
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at end",
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
