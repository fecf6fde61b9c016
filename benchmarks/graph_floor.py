"""How fast can an exact single-neuron crash campaign on ResNet-18 be? A floor, measured side by side
with faultbound's engine and PyTorchFI on the campaign of ``vs_pytorchfi.py`` (T = 200 crashes drawn
uniformly among the 557,056 site neurons, B = 32 random inputs).

Issue 10 asks for 20x PyTorchFI. This script times the work that any engine which recomputes the
faulty network must still do, with everything else given to it for free (an *oracle*):

* only the *changed* pairs count: a (configuration, input) pair whose crashed ReLU was 0 already
  sends what it sent, and its output is the clean one;
* for a crash before the first node whose map is at most ``--from-size`` pixels a side (8: stage 3
  of ResNet-18, where one neuron's change has reached every position, see RESULTS §7), the faulty
  values of the nodes that stage 3 reads (the stage-2 output) are handed to the oracle: the stem and
  stages 1-2 cost it nothing;
* for a crash at or after that node, the oracle computes the nodes downstream of the crash only,
  reading the clean pass everywhere else;
* from there on it runs the graph's own operators on the changed pairs, batched, in float32.

Every side (the floor, faultbound's ``inject``, PyTorchFI's loop, PyTorchFI packed: several
configurations per forward, its fastest usage, as in ``vs_pytorchfi.py``, and clean inference) runs
``--repeats`` times, in turn, so that all see the same load; ``max_speedup_vs_pytorchfi_*`` =
PyTorchFI's time / the floor's (ratios of the medians and of the mins) is then the most such an
engine can reach on this machine, next to the speed-up that faultbound's ``inject`` reaches in the
same run. The script also counts the changed pairs with
a ReLU whose input changes sign after the oracle's start (``pairs_with_relu_sign_change``): where
none does, the tail would be linear in the change and one Jacobian-vector product per pair would
do; that share says how often such a shortcut could apply. Prints one JSON object.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/graph_floor.py --threads 2 [--repeats 2]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
from collections.abc import Callable

import torch
from vs_pytorchfi import interleaved, ratio, resnet18_campaign, resnet18_pytorchfi, stats

import faultbound as fb
from faultbound.measure import inject
from faultbound.measure.graph_engine import graph_clean_pass
from faultbound.network.gops import Act, Const, Input
from faultbound.network.graph import GraphNetwork

CHUNK = 256  # pairs per batch of the oracle's tail


def tail(
    net: GraphNetwork,
    clean: list[torch.Tensor],
    states: dict[int, torch.Tensor],
    b: torch.Tensor,
    first: int,
    flips: torch.Tensor | None = None,
) -> torch.Tensor:
    """The outputs of the pairs (inputs ``b``) from node ``first`` on: a node is computed when one
    of its inputs holds a faulty value (``states``), from the clean pass otherwise; with ``flips``
    (``(P,)`` bool), marks the pairs where a ReLU's input changes sign."""
    states = dict(states)
    for i in range(first, len(net.nodes)):
        node = net.nodes[i]
        if isinstance(node.op, (Input, Const)) or not any(j in states for j in node.inputs):
            continue
        ins = [states[j] if j in states else clean[j][b] for j in node.inputs]
        if flips is not None and isinstance(node.op, Act):
            z, zc = ins[0], clean[node.inputs[0]][b]
            flips |= ((z > 0) != (zc > 0)).reshape(z.shape[0], -1).any(1)
        states[i] = node.op.forward(*ins)
    return states[len(net.nodes) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--from-size", type=int, default=8)
    ap.add_argument("--pack-rows", type=int, default=256, help="most rows of one packed PyTorchFI forward")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)

    model, net, x, fs, site_of, unit = resnet18_campaign(args.configs, args.batch)
    t, b = args.configs, args.batch
    n_nodes = len(net.nodes)
    k = next(i for i, n in enumerate(net.nodes) if len(n.shape) == 3 and n.shape[1] <= args.from_size)
    frontier = sorted({j for i in range(k, n_nodes) for j in net.nodes[i].inputs if j < k})
    cost = net.node_macs

    clean = list(graph_clean_pass(net, x).vals)
    # the oracle's starting states, per group (start node, pairs): not timed
    early: list[tuple[int, int]] = []  # (configuration, input) with the crash before node k
    late: dict[int, list[tuple[int, int]]] = {}
    for c in range(t):
        s = int(site_of[c])
        node = net.site_nodes[s]
        changed = clean[node].reshape(b, -1)[:, int(unit[c])] != 0
        for bi in changed.nonzero().reshape(-1).tolist():
            (early if node < k else late.setdefault(node, [])).append((c, bi))

    def crashed(c: int, rows: torch.Tensor) -> tuple[int, torch.Tensor]:
        node = net.site_nodes[int(site_of[c])]
        v = clean[node][rows].reshape(rows.numel(), -1).clone()
        v[:, int(unit[c])] = 0.0
        return node, v.reshape(rows.numel(), *net.nodes[node].shape)

    groups: list[tuple[int, dict[int, torch.Tensor], torch.Tensor, torch.Tensor]] = []
    with torch.no_grad():
        for c in range(t):  # early crashes: run the faulty network up to node k, keep the frontier
            rows = torch.tensor([bi for cc, bi in early if cc == c], dtype=torch.long)
            if rows.numel() == 0:
                continue
            node, v = crashed(c, rows)
            states = {node: v}
            for i in range(node + 1, k):
                n = net.nodes[i]
                if isinstance(n.op, (Input, Const)) or not any(j in states for j in n.inputs):
                    continue
                states[i] = n.op.forward(*(states[j] if j in states else clean[j][rows] for j in n.inputs))
            fr = {j: states[j] if j in states else clean[j][rows] for j in frontier}
            groups.append((k, fr, rows, torch.full_like(rows, c)))
        for node, pairs in late.items():
            for c in sorted({cc for cc, _ in pairs}):
                rows = torch.tensor([bi for cc, bi in pairs if cc == c], dtype=torch.long)
                _, v = crashed(c, rows)
                groups.append((node + 1, {node: v}, rows, torch.full_like(rows, c)))
    # batch the groups that start at the same node into chunks of CHUNK pairs
    batches: list[tuple[int, dict[int, torch.Tensor], torch.Tensor]] = []
    configs: list[torch.Tensor] = []
    for first in sorted({g[0] for g in groups}):
        gs = [g for g in groups if g[0] == first]
        keys = sorted(gs[0][1])
        st = {j: torch.cat([g[1][j] for g in gs]) for j in keys}
        rows = torch.cat([g[2] for g in gs])
        cfg = torch.cat([g[3] for g in gs])
        for a in range(0, rows.numel(), CHUNK):
            batches.append((first, {j: v[a : a + CHUNK] for j, v in st.items()}, rows[a : a + CHUNK]))
            configs.append(cfg[a : a + CHUNK])
    pairs = sum(int(r.numel()) for _, _, r in batches)

    with torch.no_grad():
        flips = [torch.zeros(r.numel(), dtype=torch.bool) for _, _, r in batches]
        floor_out = [tail(net, clean, s, r, f, fl) for (f, s, r), fl in zip(batches, flips, strict=True)]
        fb_out = inject(net, x, fb.Crash(), fs).outputs
    # the oracle computes the faulty outputs: the same as the engine's
    diff = max(
        float((out - fb_out[c, r]).abs().max()) for (_, _, r), c, out in zip(batches, configs, floor_out, strict=True)
    )
    outs = {"pytorchfi_loop": torch.empty_like(fb_out), "pytorchfi_packed": torch.empty_like(fb_out)}
    pfi = resnet18_pytorchfi(model, net, x, site_of, unit, pack_rows=[args.pack_rows])
    (k_packed, packed), = pfi.packed.items()

    def clean_batches() -> None:
        for _ in range(3):
            model(x)

    sides: dict[str, Callable[[], object]] = {
        "floor": lambda: [tail(net, clean, s, r, f) for f, s, r in batches],
        "faultbound_inject": lambda: inject(net, x, fb.Crash(), fs),
        "pytorchfi_loop": lambda: pfi.loop(outs["pytorchfi_loop"]),
        "pytorchfi_packed": lambda: packed(outs["pytorchfi_packed"]),
        "clean_forward_batch": clean_batches,
    }
    with torch.no_grad():  # every side the same number of times, in turn, under the same load
        times = interleaved(sides, args.repeats)
    times["clean_forward_batch"] = [v / 3 for v in times["clean_forward_batch"]]
    med = {k: statistics.median(v) for k, v in times.items()}
    n_flip = int(sum(int(fl.sum()) for fl in flips))
    after = sum(cost[k:])
    clean_t = [v * t for v in times["clean_forward_batch"]]
    print(
        json.dumps(
            {
                "model": "resnet18-cifar (graph, 17 ReLU sites)",
                "configurations": t,
                "inputs": b,
                "repeats": args.repeats,
                "timing": "every side run in turn (floor, faultbound, PyTorchFI loop, PyTorchFI packed, clean), "
                "repeats times; ratios of medians and of mins",
                "from_node": k,
                "from_shape": list(net.nodes[k].shape),
                "changed_pairs": pairs,
                "share_of_macs_from_node": after / sum(cost),
                "pairs_with_relu_sign_change": n_flip,
                "share_with_relu_sign_change": n_flip / max(1, pairs),
                "pytorchfi_packed_per_forward": k_packed,
                "seconds": {k: stats(v) for k, v in times.items()},
                "seconds_median": med,
                "max_speedup_vs_pytorchfi_loop": ratio(times["pytorchfi_loop"], times["floor"]),
                "faultbound_speedup_vs_pytorchfi_loop": ratio(times["pytorchfi_loop"], times["faultbound_inject"]),
                "max_speedup_vs_pytorchfi_packed": ratio(times["pytorchfi_packed"], times["floor"]),
                "faultbound_speedup_vs_pytorchfi_packed": ratio(
                    times["pytorchfi_packed"], times["faultbound_inject"]
                ),
                "max_campaign_vs_clean": ratio(clean_t, times["floor"]),
                "faultbound_campaign_vs_clean": ratio(clean_t, times["faultbound_inject"]),
                "floor_outputs_vs_faultbound_max_difference": diff,
                "faultbound_vs_pytorchfi_max_difference": max(
                    float((fb_out - o).abs().max()) for o in outs.values()
                ),
                "threads": torch.get_num_threads(),
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}",
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
