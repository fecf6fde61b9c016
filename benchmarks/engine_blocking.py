"""Would cache-sized blocks of configurations speed up the engine's full-state path?

For ``--failures 3,2`` crashes on 8-64-32-1 (the campaign throughput case of ``campaign_scale.py``),
the engine's work per chunk of T = 256 configurations x B = 256 inputs is dominated by memory-bound
passes over a ``(T, B, 32)`` float32 state (8 MiB): the rank-3 update of layer 2 (``baddbmm``), the
ReLU in place, and the output layer's ``linear``. This script times exactly that sequence of torch
calls on the whole chunk and on blocks of ``--block`` configurations (each block's state fits in the
L2 cache), interleaved, best and median of ``--repeats``, and checks that both give equal outputs
(``torch.equal``). It measures the kernel sequence only, not the engine (which does not block yet).

Prints one JSON object. Run: ``.venv/bin/python benchmarks/engine_blocking.py [--repeats 30]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--block", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    t, b, k, n = 256, 256, 3, 32
    s = torch.randn((b, n), generator=g)
    dval = torch.randn((t, b, k), generator=g)
    cols = torch.randn((t, k, n), generator=g)
    w = torch.randn((1, n), generator=g)
    buf = torch.empty((t, b, n))
    small = torch.empty((args.block, b, n))

    def whole() -> torch.Tensor:
        st = torch.baddbmm(s.unsqueeze(0).expand(t, -1, -1), dval, cols, out=buf).relu_()
        return torch.nn.functional.linear(st.reshape(-1, n), w)

    def blocks() -> torch.Tensor:
        outs = []
        for i in range(0, t, args.block):
            j = min(t, i + args.block)
            out = small[: j - i]
            st = torch.baddbmm(s.unsqueeze(0).expand(j - i, -1, -1), dval[i:j], cols[i:j], out=out).relu_()
            outs.append(torch.nn.functional.linear(st.reshape(-1, n), w))
        return torch.cat(outs)

    equal = bool(torch.equal(whole(), blocks()))
    times: dict[str, list[float]] = {"whole": [], "blocks": []}
    for _ in range(args.repeats):  # interleaved: the machine's load moves both alike
        for name, fn in (("whole", whole), ("blocks", blocks)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    res: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at end",
        "threads": 1,
        "shape": {"configurations": t, "inputs": b, "rank": k, "units": n, "block": args.block},
        "equal_outputs": equal,
    }
    for name, ts in times.items():
        ts.sort()
        res[f"{name}_best_ms"] = round(ts[0] * 1e3, 3)
        res[f"{name}_median_ms"] = round(ts[len(ts) // 2] * 1e3, 3)
    res["speedup_best"] = round(times["whole"][0] / times["blocks"][0], 2)
    mid = args.repeats // 2
    res["speedup_median"] = round(times["whole"][mid] / times["blocks"][mid], 2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
