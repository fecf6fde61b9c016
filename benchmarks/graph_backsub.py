"""Per-input certificates on graph networks: forward rule alone vs its minimum with the
back-substitution bound (issue 10).

For ``faultbound.models.small_resnet()``, ``lenet_maxpool()`` and ``small_vit()`` (random init,
seed 0; inputs drawn uniformly from the domain [0, 1], seed 0) and one crash at each fault site alone:
the per-input, per-output certificate ``graph_propagate(net, Crash(), f, x, x)`` with
``linear=False`` (the forward rule, "before"), with the default ``linear=True`` ("after") and
with ``refine_rows=10**6`` (every node's forward bound also capped by its own back-substitution,
"after_refined"),
against the brute force: every unit of the site crashed in turn, a plain forward written here
(``_crash_each``: the graph's nodes evaluated in order, the site's unit set to 0). Ratios are
certificate / measured worst per (input, output) where the worst is > 0; median and max.

Also the cost of the per-input certificate of ``faultbound.models.resnet18_cifar()`` (3x32x32,
17 ReLU sites) for one crash at the first and at the last site, on a few inputs, and its ratio to
the worst crash of 32 units drawn at random (seeded) from the site: a lower bound of the worst, so
these ratios are upper bounds of the exhaustive ones (65536 forwards of ResNet-18 are out of reach
on this machine).

Prints one JSON object. Run: ``PYTHONPATH=src python benchmarks/graph_backsub.py [--inputs N]
[--threads T] [--no-resnet18]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faultbound as fb  # noqa: E402
from faultbound import models  # noqa: E402
from faultbound.bounds.graph_tight import graph_propagate  # noqa: E402
from faultbound.network.gops import Const, Input  # noqa: E402


def _crash_each(net: Any, x: torch.Tensor, site: int, units: torch.Tensor | None = None) -> torch.Tensor:
    """Per output, the largest |F_crash(x) - F(x)| over the crash of each single unit of the site
    (of ``units`` only when given): ``(n_outputs,)`` for one input ``x`` ``(1, *input_shape)``."""
    node_id = net.site_nodes[site]
    idx = torch.arange(net.widths[site]) if units is None else units
    width = idx.numel()
    xb = x.expand(width, *x.shape[1:])
    vals: list[torch.Tensor] = []
    for i, node in enumerate(net.nodes):
        op = node.op
        if isinstance(op, Input):
            v = xb
        elif isinstance(op, Const):
            v = op.make(width, xb.dtype)
        else:
            v = op.forward(*(vals[j] for j in node.inputs))
        if i == node_id:
            flat = v.reshape(width, -1).clone()
            flat[torch.arange(width), idx] = 0.0
            v = flat.reshape(v.shape)
        vals.append(v)
    faulty = vals[-1].reshape(width, -1)
    clean = net.forward(x).reshape(1, -1)
    return (faulty - clean).abs().amax(0)


def _stats(r: list[float]) -> dict[str, float | None]:
    return {"median": statistics.median(r) if r else None, "max": max(r) if r else None}


def run_small(n_inputs: int) -> list[dict[str, Any]]:
    out = []
    for name, make, shape in (
        ("small_resnet", models.small_resnet, (1, 8, 8)),
        ("lenet_maxpool", models.lenet_maxpool, (1, 8, 8)),
        ("small_vit", models.small_vit, (1, 16, 16)),
    ):
        net = fb.load(make(), input_shape=shape)
        g = torch.Generator().manual_seed(0)
        x = torch.rand((n_inputs, *shape), generator=g, dtype=torch.float64)
        sites = []
        for k in range(net.L):
            f = [1 if j == k else 0 for j in range(net.L)]
            t0 = time.perf_counter()
            before = graph_propagate(net, fb.Crash(), f, x, x, linear=False)
            t1 = time.perf_counter()
            after = graph_propagate(net, fb.Crash(), f, x, x)
            t2 = time.perf_counter()
            refined = graph_propagate(net, fb.Crash(), f, x, x, refine_rows=10**6)
            t3 = time.perf_counter()
            worst = torch.stack([_crash_each(net, x[i : i + 1], k) for i in range(n_inputs)])
            for cert in (before, after, refined):
                if bool((worst > cert + 1e-9 * (1 + cert)).any()):
                    raise AssertionError(f"{name} site {k}: a crash exceeds the certificate")
            ok = worst > 1e-12
            sites.append(
                {
                    "site": net.sites[k].name,
                    "width": net.widths[k],
                    "before": _stats((before[ok] / worst[ok]).tolist()),
                    "after": _stats((after[ok] / worst[ok]).tolist()),
                    "after_refined": _stats((refined[ok] / worst[ok]).tolist()),
                    "pairs": int(ok.sum()),
                    "before_seconds": round(t1 - t0, 4),
                    "after_seconds": round(t2 - t1, 4),
                    "after_refined_seconds": round(t3 - t2, 4),
                }
            )
        out.append({"network": name, "sites": sites})
    return out


def run_resnet18(n_inputs: int, n_units: int = 32) -> dict[str, Any]:
    net = fb.load(models.resnet18_cifar(), input_shape=(3, 32, 32))
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n_inputs, 3, 32, 32), generator=g, dtype=torch.float64)
    rows = []
    for k in (0, net.L - 1):
        f = [1 if j == k else 0 for j in range(net.L)]
        t0 = time.perf_counter()
        before = graph_propagate(net, fb.Crash(), f, x, x, linear=False)
        t1 = time.perf_counter()
        after = graph_propagate(net, fb.Crash(), f, x, x)
        t2 = time.perf_counter()
        g2 = torch.Generator().manual_seed(k)
        units = torch.randperm(net.widths[k], generator=g2)[:n_units]
        worst = torch.stack([_crash_each(net, x[i : i + 1], k, units) for i in range(n_inputs)])
        if bool((worst > after + 1e-9 * (1 + after)).any()):
            raise AssertionError(f"resnet18 site {k}: a crash exceeds the certificate")
        ok = worst > 1e-12
        rows.append(
            {
                "site": net.sites[k].name,
                "width": net.widths[k],
                "sampled_units": n_units,
                "before_over_sampled_worst": _stats((before[ok] / worst[ok]).tolist()),
                "after_over_sampled_worst": _stats((after[ok] / worst[ok]).tolist()),
                "forward_seconds": round(t1 - t0, 2),
                "with_backsub_seconds": round(t2 - t1, 2),
                "median_after_over_before": float((after / before).median()),
            }
        )
    return {"inputs": n_inputs, "sites": rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--inputs", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-resnet18", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    res: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "threads": a.threads,
        "inputs": a.inputs,
        "models": run_small(a.inputs),
    }
    if not a.no_resnet18:
        res["resnet18_cifar"] = run_resnet18(2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
