"""Campaigns at scale: memory and checkpoint size against the number of trials, resume overhead,
kill -9 + resume, the Ray backend with 1 and 2 workers, and campaign throughput against clean inference.

Network: 8-64-32-1 (ReLU, seed 0), crash faults with ``failures = (3, 2)``, inputs drawn uniformly
from the domain. Each scale point runs in a fresh subprocess (its peak RSS is ``ru_maxrss``).

* ``scale``: trials 10^4, 10^5, 10^6 on ``--inputs`` inputs with a checkpoint: peak RSS (MB),
  checkpoint bytes, seconds;
* ``resume``: the 10^5 campaign with and without a checkpoint (overhead = ratio - 1), and a run killed
  with SIGKILL half-way then resumed, compared with the uninterrupted result;
* ``ray``: a 2x10^5-trial campaign in-process, and on a local Ray instance (started once, warmed up)
  with 1 and 2 workers: seconds, speedup of 2 workers over 1, overhead of 1 Ray worker over in-process;
* ``throughput``: configurations x inputs per second of a whole campaign (statistics included) against
  clean inference (inputs per second of the torch model on the same batch), for ``--failures 3,2`` on
  8-64-32-1 with 256 inputs and for single crashes (``failures = (1, 0)``) on 784-256-256-10 sigmoid
  with 64 inputs (the PyTorchFI benchmark's MLP).

Prints one JSON object. Run: ``.venv/bin/python benchmarks/campaign_scale.py [--inputs 64] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
import faultbound as fb
from torch import nn
from faultbound.measure import CampaignSpec, run_campaign
trials, inputs, ck, sleep = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
torch.manual_seed(0)
m = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)).eval()
net = fb.Network.from_torch(m)
x = net.domain.sample(inputs, generator=torch.Generator().manual_seed(0))
spec = CampaignSpec(fb.Crash(), trials=trials, failures=(3, 2), chunk=256, seed=1)
t0 = time.perf_counter()
res = run_campaign(net, x, spec, checkpoint=None if ck == "-" else ck,
                   progress=(lambda d, t: time.sleep(sleep)) if sleep else None)
dt = time.perf_counter() - t0
d = res.to_dict()
d.pop("resumed_from_chunk")
print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "resumed_from": res.resumed_from, "result": d}))
"""


def _child(trials: int, inputs: int, ck: str, sleep: float = 0.0) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(trials), str(inputs), ck, str(sleep)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scale(inputs: int, sizes: list[int], tmp: Path) -> list[dict]:
    rows = []
    for t in sizes:
        ck = tmp / f"scale{t}.npz"
        r = _child(t, inputs, str(ck))
        rows.append({"trials": t, "inputs": inputs, "evaluations": t * inputs, "peak_rss_mb": round(r["rss_mb"], 1),
                     "checkpoint_bytes": ck.stat().st_size, "seconds": round(r["seconds"], 2),
                     "evaluations_per_s": round(t * inputs / r["seconds"])})
    return rows


def _next_chunk(path: Path) -> int:
    try:
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            return int(json.loads(str(z["meta"]))["next_chunk"])
    except Exception:  # noqa: BLE001 - absent, or being replaced
        return 0


def resume(inputs: int, trials: int, tmp: Path) -> dict:
    plain = _child(trials, inputs, "-")
    ck = tmp / "resume.npz"
    with_ck = _child(trials, inputs, str(ck))
    # kill -9 half-way (slowed by a sleep per chunk so the kill lands mid-run), then resume
    ck2 = tmp / "killed.npz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(trials), str(inputs), str(ck2), "0.01"], env=env,
                            stdout=subprocess.DEVNULL)
    n_chunks = -(-trials // 256)
    deadline = time.time() + 600
    while _next_chunk(ck2) < n_chunks // 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # kill once a third of the chunks are in the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _child(trials, inputs, str(ck2))
    return {
        "trials": trials,
        "inputs": inputs,
        "seconds_without_checkpoint": round(plain["seconds"], 2),
        "seconds_with_checkpoint": round(with_ck["seconds"], 2),
        "checkpoint_overhead": round(with_ck["seconds"] / plain["seconds"] - 1, 3),
        "chunks": n_chunks,
        "killed_then_resumed_from_chunk": resumed["resumed_from"],
        "resumed_identical_to_uninterrupted": resumed["result"] == plain["result"] == with_ck["result"],
    }


def ray_bench(inputs: int, trials: int) -> dict:
    import ray
    import torch
    from torch import nn

    import faultbound as fb
    from faultbound.measure import CampaignSpec, run_campaign
    from faultbound.measure.distributed import ray_environment, run_ray

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)).eval()
    net = fb.Network.from_torch(m)
    x = net.domain.sample(inputs, generator=torch.Generator().manual_seed(0))
    spec = CampaignSpec(fb.Crash(), trials=trials, failures=(3, 2), chunk=256, seed=1)
    t0 = time.perf_counter()
    local = run_campaign(net, x, spec).to_dict()
    t_local = time.perf_counter() - t0
    os.environ.update(ray_environment())
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    t_start = time.perf_counter() - t0
    try:
        warm = CampaignSpec(fb.Crash(), trials=1024, failures=(3, 2), chunk=256, seed=1)
        run_ray(net, x, warm, workers=2)  # worker processes start and import torch
        out = {}
        for w in (1, 2):
            t0 = time.perf_counter()
            got = run_ray(net, x, spec, workers=w).to_dict()
            out[w] = (time.perf_counter() - t0, got == local)
    finally:
        ray.shutdown()
    return {
        "trials": trials,
        "inputs": inputs,
        "seconds_in_process": round(t_local, 2),
        "seconds_ray_1_worker": round(out[1][0], 2),
        "seconds_ray_2_workers": round(out[2][0], 2),
        "speedup_2_vs_1_workers": round(out[1][0] / out[2][0], 3),
        "ray_overhead_1_worker_vs_in_process": round(out[1][0] / t_local - 1, 3),
        "ray_start_seconds": round(t_start, 2),
        "identical_to_in_process": out[1][1] and out[2][1],
    }


def throughput(repeats: int) -> list[dict]:
    import torch
    from torch import nn

    import faultbound as fb
    from faultbound.measure import CampaignSpec, run_campaign

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cases = [
        ("8-64-32-1 relu, failures 3,2", nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                                        nn.Linear(32, 1)), 256, (3, 2), 4096),
        ("784-256-256-10 sigmoid, single crash", nn.Sequential(nn.Linear(784, 256), nn.Sigmoid(), nn.Linear(256, 256),
                                                               nn.Sigmoid(), nn.Linear(256, 10)), 64, (1, 0), 2048),
    ]
    rows = []
    for name, m, b, f, t in cases:
        m = m.eval()
        net = fb.Network.from_torch(m)
        x = net.domain.sample(b, generator=torch.Generator().manual_seed(0))
        spec = CampaignSpec(fb.Crash(), trials=t, failures=f, chunk=256, seed=1)
        xf = x.float()
        camp, cl = [], []
        with torch.no_grad():
            for _ in range(repeats):  # interleaved, best of each: the machine's load moves both alike
                camp.append(_timed(lambda: run_campaign(net, x, spec)))  # noqa: B023
                cl.append(_timed(lambda: [m(xf) for _ in range(200)]) / 200)  # noqa: B023
        best, clean = min(camp), min(cl)
        rows.append({"case": name, "configurations": t, "inputs": b, "campaign_per_s": round(t * b / best),
                     "clean_inputs_per_s": round(b / clean),
                     "campaign_vs_clean": round((t * b / best) / (b / clean), 3)})
    return rows


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="10^3..10^4 trials only (a smoke run).")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default="scale,resume,throughput,ray", help="Comma-separated parts to run.")
    args = ap.parse_args()
    sizes = [10**3, 10**4] if args.quick else [10**4, 10**5, 10**6]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        parts = set(args.only.split(","))
        out: dict = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start",
            "threads": 1,
        }
        if "scale" in parts:
            out["scale"] = scale(args.inputs, sizes, tmp)
        if "resume" in parts:
            out["resume"] = resume(args.inputs, sizes[-2], tmp)
        if "throughput" in parts:
            out["throughput"] = throughput(args.repeats)
        if "ray" in parts and not args.skip_ray:
            out["ray"] = ray_bench(args.inputs, sizes[-2] * 2)
        out["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
