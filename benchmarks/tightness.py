"""How tight are the certificates? bound / worst case found, paper vs tight, on digits networks.

    .venv/bin/python benchmarks/tightness.py [--epochs 40] [--threads 1] [--quick]

Trains (seeded, full digits set, MSE on one-hot targets) MLPs with sigmoid, tuned sigmoids at several
K, tanh and ReLU with 1-3 hidden layers, and one small CNN. For each network and failure
distribution (one failure in each layer alone, one in every layer, two in the first layer), under
crashes and Byzantine(C=1) neurons, it compares the paper's bound and the tight bound over the
domain [0, 1]^64 with the worst case found by :func:`faultbound.measure.worst_case` (every failure
set when few, else a beam search; inputs from the data, the domain and gradient ascent). The worst
case found is a lower bound on the true worst case, so every ratio is an upper bound on the true
looseness. Per-input certificates are compared with the exhaustive worst case at the input.

The exact column (``--exact-limit S`` seconds per solve, 0 to skip): on the ReLU networks,
``method="exact"`` gives the true worst case (or a sound interval when HiGHS stops at the limit);
the summary quotes tight/exact, paper/exact and search/exact over the rows solved to optimality.
``--exact-only`` runs just the ReLU networks. Prints one JSON object.

``--graphs`` runs the graph networks instead (issue 10): the LeNet with max pooling, the small
ResNet and the small ViT of :mod:`faultbound.models`, trained on the digits
(:func:`faultbound.models.trained_digits_model`). For one failure at each fault site alone and one
at every site, under crashes and Byzantine(C=1) neurons, it compares the tight bound over the domain
with the worst case found by :func:`~faultbound.measure.worst_case` (and, as ``tight_interval_boxes``,
the tight bound with the domain boxes of interval propagation alone), and the per-input certificate
(:func:`~faultbound.bounds.certify.certify`) with the exhaustive worst single crash at each input.
The paper's bound is not defined on graphs (refused), so there is no paper column there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import faultbound as fb
from faultbound.apps.training import fit, mlp
from faultbound.bounds.certify import certify
from faultbound.data import digits
from faultbound.measure import FaultSet, inject, worst_case
from faultbound.nn import TunedSigmoid

SPECS: list[tuple[str, list[int], Callable[[], nn.Module]]] = [
    ("sigmoid-32", [32], nn.Sigmoid),
    ("sigmoid-32-32", [32, 32], nn.Sigmoid),
    ("sigmoid-32-32-32", [32, 32, 32], nn.Sigmoid),
    ("sigmoid-64-64-64", [64, 64, 64], nn.Sigmoid),
    ("tuned0.5-32-32", [32, 32], lambda: TunedSigmoid(0.5)),
    ("tuned1-32-32", [32, 32], lambda: TunedSigmoid(1.0)),
    ("tuned2-32-32", [32, 32], lambda: TunedSigmoid(2.0)),
    ("tanh-32-32", [32, 32], nn.Tanh),
    ("tanh-32-32-32", [32, 32, 32], nn.Tanh),
    ("relu-32", [32], nn.ReLU),
    ("relu-32-32", [32, 32], nn.ReLU),
    ("relu-32-32-32", [32, 32, 32], nn.ReLU),
    ("relu-64-64-64", [64, 64, 64], nn.ReLU),
]


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.Sigmoid(),
        nn.Linear(32, 10),
    )


def _distributions(widths: list[int]) -> list[list[int]]:
    L = len(widths)
    out = [[1 if i == l else 0 for i in range(L)] for l in range(L)]
    if L > 1:
        out.append([1] * L)
    out.append([2] + [0] * (L - 1))
    return out


def _per_input_ratio(net: fb.Network, x: torch.Tensor, f: list[int]) -> float:
    """Median over inputs of b(x) / (largest error at x over every failure set of sizes f)."""
    cert = certify(net, x, f, fb.Crash())
    per_layer = [list(itertools.combinations(range(w), k)) for w, k in zip(net.widths, f, strict=True)]
    rows = list(itertools.product(*per_layer))
    sites = tuple(
        None if k == 0 else torch.tensor([r[l] for r in rows], dtype=torch.long).reshape(len(rows), k)
        for l, k in enumerate(f)
    )
    errs = inject(net, x, fb.Crash(), FaultSet(len(rows), sites), dtype=torch.float64).errors.amax(0).numpy()
    ok = errs > 0
    if not np.all(errs <= cert.bounds + 1e-9):
        raise AssertionError("per-input certificate exceeded by a measurement")
    return float(np.median(cert.bounds[ok] / errs[ok])) if ok.any() else float("nan")


def _exact(net: fb.Network, f: list[int], fault: fb.faults.Fault, limit: float) -> dict[str, Any] | None:
    """The exact column of one row (piecewise-linear networks only)."""
    from faultbound.bounds.exact import exact_bound
    from faultbound.errors import UnsupportedModelError

    if limit <= 0:
        return None
    try:
        r = exact_bound(net, f, fault, time_limit=limit)
    except UnsupportedModelError:
        return None
    return {"value": r.value, "lower": r.lower, "optimal": r.optimal, "seconds": r.seconds, "nodes": r.nodes}


def run(epochs: int, threads: int, quick: bool, exact_limit: float = 0.0, exact_only: bool = False) -> dict[str, Any]:
    torch.set_num_threads(threads)
    ds = digits()
    X, Y = ds.X, ds.onehot()
    probe = torch.as_tensor(X[::14][:128], dtype=torch.float64)
    specs: list[tuple[str, list[int], Callable[[], nn.Module] | None]] = [
        *SPECS,
        ("cnn-conv4-pool-32", [256, 32], None),
    ]
    if quick:
        specs = [specs[0], specs[2], specs[11], specs[-1]]
    if exact_only:
        specs = [sp for sp in specs if sp[0].startswith("relu")]
    nets_out: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for name, widths, act in specs:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        if act is None:
            model = _cnn()
            fit(model, X.reshape(-1, 1, 8, 8), Y, epochs=epochs, seed=0)
            net = fb.Network.from_torch(model, input_shape=(1, 8, 8))
        else:
            model = mlp(64, widths, 10, act)
            fit(model, X, Y, epochs=epochs, seed=0)
            net = fb.Network.from_torch(model)
        x = probe.reshape(-1, *net.input_shape)
        acc = float((net.forward(torch.as_tensor(X).reshape(-1, *net.input_shape)).argmax(1).numpy() == ds.y).mean())
        rows = []
        for f in _distributions(net.widths):
            for fault in (fb.Crash(), fb.Byzantine(1.0)):
                w = worst_case(net, fault, f, inputs=x, seed=0)
                tight = fb.bound(net, f, fault, method="tight").value
                paper = fb.bound(net, f, fault, method="paper").value
                worst = float(w.max_error)
                if worst > tight + 1e-9:
                    raise AssertionError(f"{name} {fault} {f}: measured {worst} > tight bound {tight}")
                ex = _exact(net, f, fault, exact_limit)
                if ex is not None and (worst > ex["value"] + 1e-9 or ex["lower"] > tight + 1e-9):
                    raise AssertionError(f"{name} {fault} {f}: search {worst}, exact {ex}, tight {tight} out of order")
                exact_cols: dict[str, Any] = {}
                if ex is not None:
                    v = ex["value"]
                    exact_cols = {
                        "exact": ex,
                        "tight_over_exact": tight / v if ex["optimal"] and v > 0 else None,
                        "paper_over_exact": paper / v if ex["optimal"] and v > 0 else None,
                        "search_over_exact": worst / v if ex["optimal"] and v > 0 else None,
                    }
                rows.append(
                    {
                        "fault": fault.name,
                        "failures": f,
                        "worst_found": worst,
                        "worst_exhaustive_sets": bool(w.exhaustive),
                        "tight": tight,
                        "paper": paper,
                        "ratio_tight": tight / worst if worst > 0 else None,
                        "ratio_paper": paper / worst if worst > 0 else None,
                        "paper_over_tight": paper / tight if tight > 0 else None,
                        **exact_cols,
                    }
                )
        f1 = [1] + [0] * (net.L - 1)
        nets_out.append(
            {
                "name": name,
                "L": net.L,
                "widths": net.widths,
                "n_params": net.n_params,
                "accuracy": acc,
                "per_input_ratio_median_crash_f1": _per_input_ratio(net, x[:32], f1),
                "rows": rows,
                "seconds": time.perf_counter() - t0,
            }
        )

    def med(vals: list[float | None]) -> float | None:
        v = [a for a in vals if a is not None]
        return statistics.median(v) if v else None

    all_rows = [r for n in nets_out for r in n["rows"]]
    deep = [r for n in nets_out if n["L"] == 3 and not n["name"].startswith("cnn") for r in n["rows"]]
    summary = {
        "median_ratio_tight": med([r["ratio_tight"] for r in all_rows]),
        "median_ratio_paper": med([r["ratio_paper"] for r in all_rows]),
        "median_ratio_tight_crash": med([r["ratio_tight"] for r in all_rows if r["fault"] == "crash"]),
        "median_ratio_tight_byzantine": med([r["ratio_tight"] for r in all_rows if r["fault"] == "byzantine"]),
        "max_ratio_tight": max(r["ratio_tight"] for r in all_rows if r["ratio_tight"] is not None),
        "median_paper_over_tight": med([r["paper_over_tight"] for r in all_rows]),
        "median_paper_over_tight_3_hidden": med([r["paper_over_tight"] for r in deep]),
        "min_paper_over_tight_3_hidden": min((r["paper_over_tight"] for r in deep), default=None),
        "median_per_input_ratio": med([n["per_input_ratio_median_crash_f1"] for n in nets_out]),
        "n_comparisons": len(all_rows),
        "violations": 0,
    }
    solved = [r for r in all_rows if r.get("tight_over_exact") is not None]
    with_exact = [r for r in all_rows if "exact" in r]
    if with_exact:
        summary["exact"] = {
            "rows": len(with_exact),
            "solved_to_optimality": len(solved),
            "time_limit_s": exact_limit,
            "tight_over_exact_median": med([r["tight_over_exact"] for r in solved]),
            "tight_over_exact_max": max((r["tight_over_exact"] for r in solved), default=None),
            "paper_over_exact_median": med([r["paper_over_exact"] for r in solved]),
            "paper_over_exact_max": max((r["paper_over_exact"] for r in solved), default=None),
            "search_over_exact_median": med([r["search_over_exact"] for r in solved]),
            "search_over_exact_min": min((r["search_over_exact"] for r in solved), default=None),
        }
    summary["goal_median_tight_ratio_le_3"] = (summary["median_ratio_tight"] or 1e9) <= 3
    summary["goal_paper_over_tight_ge_100_on_3_hidden"] = (summary["median_paper_over_tight_3_hidden"] or 0) >= 100
    return {
        "command": "benchmarks/tightness.py"
        + (" --quick" if quick else "")
        + f" --epochs {epochs} --threads {threads}"
        + (f" --exact-limit {exact_limit:g}" if exact_limit > 0 else "")
        + (" --exact-only" if exact_only else ""),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads, "torch": torch.__version__},
        "domain": "[0, 1]^64",
        "epochs": epochs,
        "seed": 0,
        "summary": summary,
        "networks": nets_out,
        "seconds_total": time.perf_counter() - t_start,
    }


# --------------------------------------------------------------------------- conv28 section


def _cnn28() -> nn.Sequential:
    """Conv(1->8, 3x3) -> ReLU -> AvgPool(2) -> Conv(8->16, 3x3) -> ReLU -> Flatten -> Linear(3136 -> 10)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 14 * 14, 10),
    )


def jacobian_range_bound(net: fb.Network, failures: list[int]) -> float:
    """The simple sound bound for crashes: per output o, sum over layers k of
    :math:`\\operatorname{top}_{f_k}(|J_k|_{oi}\\,\\max|y_i|)`, with
    :math:`|J_k| = |A_{L+1}|\\,|A_L| \\cdots |A_{k+1}|` (ReLU is 1-Lipschitz) pulled back through
    every op's absolute-value map by autograd; a crashed neuron moves by at most its range.
    Written here from the public ops, independently of ``bounds/tight.py``."""
    boxes = net.intervals()
    n_out = net.n_outputs
    total = torch.zeros(n_out, dtype=torch.float64)
    # rows of |J| for every output, pulled back layer by layer from the output
    rows = torch.eye(n_out, dtype=torch.float64)
    for k in range(net.L, 0, -1):  # hidden layer k (1-based) feeds layer k+1 = net.layers[k]
        layer = net.layers[k]
        x = torch.zeros((n_out, *layer.in_shape), dtype=torch.float64, requires_grad=True)
        y = layer.abs_linear(x).reshape(n_out, -1)
        (rows,) = torch.autograd.grad((y * rows).sum(), x)
        rows = rows.reshape(n_out, -1).detach()
        f = failures[k - 1]
        if f > 0:
            terms = rows * boxes[k - 1].y_abs.reshape(1, -1)
            total += torch.topk(terms, min(f, terms.shape[1]), dim=1).values.sum(1)
    return float(total.max())


def run_conv28(threads: int) -> dict[str, Any]:
    """Conv -> ReLU -> AvgPool -> Conv on 1x28x28 (seeded default initialisation, domain [0, 1]^784):
    tight, paper and the simple Jacobian x range bound against the worst case found, crashes."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = fb.Network.from_torch(_cnn28(), input_shape=(1, 28, 28))
    rows = []
    for f in ([1, 0], [0, 1], [1, 1], [2, 0]):
        t0 = time.perf_counter()
        tight = fb.bound(net, f, fb.Crash(), method="tight").value
        t_tight = time.perf_counter() - t0
        paper = fb.bound(net, f, fb.Crash(), method="paper").value
        simple = jacobian_range_bound(net, f)
        w = worst_case(net, fb.Crash(), f, seed=0)
        worst = float(w.max_error)
        if worst > tight + 1e-9:
            raise AssertionError(f"conv28 {f}: measured {worst} > tight bound {tight}")
        rows.append(
            {
                "failures": f,
                "worst_found": worst,
                "tight": tight,
                "paper": paper,
                "jacobian_range": simple,
                "tight_over_worst": tight / worst if worst > 0 else None,
                "jacobian_range_over_worst": simple / worst if worst > 0 else None,
                "tight_over_jacobian_range": tight / simple if simple > 0 else None,
                "tight_seconds": t_tight,
            }
        )
    return {
        "command": f"benchmarks/tightness.py --conv28 --threads {threads}",
        "network": "Conv(1->8,3x3,p1) ReLU AvgPool(2) Conv(8->16,3x3,p1) ReLU Flatten Linear(3136->10), "
        "torch.manual_seed(0) default init",
        "domain": "[0, 1]^(1x28x28)",
        "widths": net.widths,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads, "torch": torch.__version__},
        "rows": rows,
    }


def _graph_per_input(net: Any, x: torch.Tensor, site: int) -> dict[str, float]:
    """Per-input certificate / exhaustive worst single crash at fault site ``site`` (0-based), over
    the inputs ``x``: median and max of the ratio."""
    f = [1 if k == site else 0 for k in range(net.L)]
    cert = certify(net, x, f, fb.Crash())
    n = net.widths[site]
    sites = tuple(torch.arange(n, dtype=torch.long).reshape(n, 1) if k == site else None for k in range(net.L))
    errs = inject(net, x, fb.Crash(), FaultSet(n, sites), dtype=torch.float64).errors.amax(0).numpy()
    if not np.all(errs <= cert.bounds + 1e-9):
        raise AssertionError("per-input certificate exceeded by a measurement")
    ok = errs > 0
    ratios = cert.bounds[ok] / errs[ok]
    return {
        "median": float(np.median(ratios)) if ok.any() else float("nan"),
        "max": float(np.max(ratios)) if ok.any() else float("nan"),
        "inputs": int(ok.sum()),
    }


def _tight_interval_boxes(model: Any, image: int, f: list[int], fault: Any) -> float:
    """The tight bound with the domain boxes of interval propagation alone (``LINEAR_MACS = 0``:
    no linear refinement), on a fresh copy of the network."""
    from faultbound.network import graph as graph_mod

    old = graph_mod.LINEAR_MACS
    graph_mod.LINEAR_MACS = 0
    try:
        return float(fb.bound(fb.load(model, input_shape=(1, image, image)), f, fault, method="tight").value)
    finally:
        graph_mod.LINEAR_MACS = old


def run_graphs(threads: int, n_inputs: int = 16) -> dict[str, Any]:
    """The graph networks' section (see the module docstring)."""
    from faultbound.models import digits_split, trained_digits_model

    torch.set_num_threads(threads)
    out: list[dict[str, Any]] = []
    for kind in ("lenet", "resnet", "vit"):
        t0 = time.perf_counter()
        model, acc = trained_digits_model(kind)  # type: ignore[arg-type]
        train_s = time.perf_counter() - t0
        image = 16 if kind == "vit" else 8
        net = fb.load(model, input_shape=(1, image, image))
        x = digits_split(image)[2][:n_inputs].to(torch.float64)
        dists = [[1 if k == l else 0 for k in range(net.L)] for l in range(net.L)] + [[1] * net.L]
        rows = []
        for f in dists:
            for fault in (fb.Crash(), fb.Byzantine(1.0)):
                t1 = time.perf_counter()
                tight = fb.bound(net, f, fault, method="tight").value
                tight_s = time.perf_counter() - t1
                tight_ibp = _tight_interval_boxes(model, image, f, fault)
                t1 = time.perf_counter()
                w = worst_case(net, fault, f, inputs=x, seed=0)
                search_s = time.perf_counter() - t1
                worst = float(w.max_error)
                if worst > tight + 1e-9:
                    raise AssertionError(f"{kind} {fault} {f}: measured {worst} > tight bound {tight}")
                rows.append(
                    {
                        "failures": f,
                        "fault": fault.label(),
                        "tight": tight,
                        "tight_interval_boxes": tight_ibp,
                        "worst_found": worst,
                        "tight_over_worst": tight / worst if worst > 0 else None,
                        "tight_seconds": round(tight_s, 3),
                        "search_seconds": round(search_s, 3),
                    }
                )
        per_input = {net.sites[l].name: _graph_per_input(net, x, l) for l in range(net.L)}
        ratios = [r["tight_over_worst"] for r in rows if r["tight_over_worst"] is not None]
        out.append(
            {
                "network": kind,
                "test_accuracy": acc,
                "train_seconds": round(train_s, 1),
                "sites": [[s.name, s.width] for s in net.sites],
                "paper": "not defined on graph networks (refused; use tight)",
                "domain_median_tight_over_worst": statistics.median(ratios) if ratios else None,
                "per_input_median_certificate_over_worst": {k: v["median"] for k, v in per_input.items()},
                "per_input": per_input,
                "rows": rows,
            }
        )
    return {
        "machine": platform.processor() or platform.machine(),
        "threads": threads,
        "inputs": n_inputs,
        "graphs": out,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="four networks only")
    p.add_argument("--conv28", action="store_true", help="only the 1x28x28 Conv-AvgPool-Conv section")
    p.add_argument("--exact-limit", type=float, default=0.0, help="seconds per exact solve (0: no exact column)")
    p.add_argument("--exact-only", action="store_true", help="only the ReLU networks (the exact column's)")
    p.add_argument("--graphs", action="store_true", help="only the trained graph networks (LeNet, ResNet, ViT)")
    a = p.parse_args()
    if a.graphs:
        print(json.dumps(run_graphs(a.threads), indent=2))
        return
    if a.conv28:
        print(json.dumps(run_conv28(a.threads), indent=2))
        return
    print(json.dumps(run(a.epochs, a.threads, a.quick, a.exact_limit, a.exact_only), indent=2))


if __name__ == "__main__":
    main()
