"""Wall time of every command on the CIFAR ResNet-18 (random init, a .pt2 with a batch of 1) for a
single-neuron crash query, through the CLI as a user runs it (a fresh ``faultbound`` process per
command); prints JSON.

    .venv/bin/python benchmarks/graph_commands.py [--site relu] [--out DIR]  # threads: OMP_NUM_THREADS or torch default

For each fault site named with ``--site`` (default: the first ReLU, 65,536 units, and the last,
8,192) it runs, with ``--failures SITE=1`` (one crashed neuron there, none elsewhere):

* ``inspect`` (reading the file and checking it against the program: the floor of every command);
* ``bound --method tight``;
* ``tolerate --method tight`` (eps' 0, eps = 4x the single-crash bound at SITE);
* ``inject`` (200 configurations x 32 domain points);
* ``worst`` (the default search, sized for the network: on ResNet-18 8 probes and 360 sampled units);
* ``certify`` (32 random images of the domain labelled with the model's own prediction);
* ``report --no-plots`` (the certificate, the worst case, no campaign).

Each entry has the seconds, the exit status, the key figure of the command's ``--json`` output, and
the error line when it failed (or ``timed out after T s`` past ``--timeout``). Issue 10 asks each
to finish under a minute on the 2-core machine. Each command's line also goes to stderr as it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faultbound.models import resnet18_cifar

FAULTBOUND = [sys.executable, "-c", "from faultbound.cli import main; main()"]


def _run(args: list[str], timeout: float) -> dict[str, Any]:
    out = _run_once(args, timeout)
    shown = {k: v for k, v in out.items() if k != "json"}
    print(f"{' '.join(args[:1] + args[2:])}: {json.dumps(shown)}", file=sys.stderr, flush=True)  # progress
    return out


def _run_once(args: list[str], timeout: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([*FAULTBOUND, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": round(time.perf_counter() - t0, 2), "rc": None, "error": f"timed out after {timeout} s"}
    out: dict[str, Any] = {"seconds": round(time.perf_counter() - t0, 2), "rc": p.returncode}
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        out["error"] = lines[-1] if lines else ""
        return out
    try:
        out["json"] = json.loads(p.stdout)
    except ValueError:
        out["stdout_tail"] = p.stdout[-300:]
    return out


def _key(command: str, d: dict[str, Any]) -> dict[str, Any]:
    """The figures worth keeping from a command's --json output."""
    j = d.pop("json", None)
    if j is None:
        return d
    pick = {
        "inspect": ("n_sites", "n_params"),
        "bound": ("value", "method"),
        "tolerate": ("per_layer_max", "uniform_fraction"),
        "inject": ("max_error", "mean_error", "configurations", "inputs"),
        "worst": ("max_error", "evaluations", "exhaustive"),
        "certify": ("clean_accuracy", "certified_accuracy"),
        "report": ("violations",),
    }[command]
    d["result"] = {k: j.get(k) for k in pick}
    if command == "certify":
        d["result"]["measured_worst_accuracy"] = (j.get("measured") or {}).get("worst_accuracy")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", action="append", help="fault site (node name) of the crash; repeatable")
    ap.add_argument("--out", type=Path, default=None, help="folder for the .pt2 and data (default: a temp folder)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per command before it is stopped")
    args = ap.parse_args()
    sites = args.site or ["relu", "layers.3.1.relu2"]
    folder = Path(tempfile.mkdtemp()) if args.out is None else args.out
    folder.mkdir(parents=True, exist_ok=True)
    model = resnet18_cifar()
    path = folder / "resnet18.pt2"
    t0 = time.perf_counter()
    torch.export.save(torch.export.export(model, (torch.rand(1, 3, 32, 32),)), str(path))
    export_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 3, 32, 32, generator=g)
    with torch.no_grad():
        y = model(x).argmax(-1)
    data = folder / "images.npz"
    np.savez(data, X=x.numpy().astype(np.float64), y=y.numpy())
    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": os.environ.get("OMP_NUM_THREADS") or f"torch default ({torch.get_num_threads()})",
        "torch": torch.__version__,
        "model": "resnet18_cifar (random init, seed 0)",
        "params": sum(p.numel() for p in model.parameters()),
        "export_seconds": round(export_s, 2),
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "inspect": _key("inspect", _run(["inspect", str(path), "--json"], args.timeout)),
        "queries": {},
    }
    for site in sites:
        f = f"{site}=1"
        q: dict[str, Any] = {}
        q["bound"] = _key("bound", _run(["bound", str(path), "--method", "tight", "--failures", f, "--json"],
                                        args.timeout))
        value = (q["bound"].get("result") or {}).get("value")
        eps = 4 * float(value) if value else 1.0
        q["tolerate"] = _key(
            "tolerate",
            _run(["tolerate", str(path), "--eps", f"{eps:.6g}", "--eps-prime", "0", "--method", "tight", "--json"],
                 args.timeout),
        )
        q["tolerate"]["eps"] = eps
        q["inject"] = _key(
            "inject",
            _run(["inject", str(path), "--samples", "32", "--failures", f, "--trials", "200", "--json"], args.timeout),
        )
        q["worst"] = _key("worst", _run(["worst", str(path), "--failures", f, "--json"], args.timeout))
        q["certify"] = _key(
            "certify", _run(["certify", str(path), "--data", str(data), "--failures", f, "--json"], args.timeout)
        )
        q["report"] = _key(
            "report",
            _run(["report", str(path), "--failures", f, "--no-plots", "--out", str(folder / f"report_{site}.html"),
                  "--json"], args.timeout),
        )
        q["all_under_a_minute"] = all(
            v.get("rc") == 0 and v["seconds"] < 60 for v in q.values() if isinstance(v, dict)
        )
        result["queries"][site] = q
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
