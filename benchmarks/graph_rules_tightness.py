"""Tight bound vs brute-force worst case on the small graphs of the soundness tests.

For each test-graph template (tests/graph_reference.py: residual Add/Sub, Concat + Mul gate,
MaxPool + channel affine, GroupNorm + global average pooling, LayerNorm, attention with a class
token) and each fault model, over a few random weight seeds: the brute-force worst
:math:`\\max |F_{fail}(x) - F(x)|` over every failure set of one failing unit per site (or one
synapse per weighted node), the adversary's values at +-C and at random, and corners, the centre and
random points of the domain; against the graph ``tight`` bound over the domain and per input
(``lo = hi = x``). Ratios are bound / worst (>= 1; 1 is exact). For the max-pooling graphs also the
ratio with the plain max-pooling rule (largest deviation of the window, no candidates, no cap).
Over the domain also the ratio with the interval boxes alone (``LINEAR_MACS = 0``: no linear
refinement of the domain boxes, :meth:`~faultbound.network.graph.GraphNetwork.linear_box_intervals`).

Prints one JSON object. Run: ``PYTHONPATH=src python benchmarks/graph_rules_tightness.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faultbound.bounds.graph_tight import graph_propagate  # noqa: E402
from faultbound.faults import Byzantine, Crash, Fault, SynapseCrash  # noqa: E402
from faultbound.network import gops  # noqa: E402
from faultbound.network import graph as graph_mod  # noqa: E402
from faultbound.network.gops import Box2, Dev  # noqa: E402
from tests.graph_reference import TEMPLATES, FaultSpec, RGraph, brute_force, corners_and_points  # noqa: E402

SEEDS = (1, 2, 3, 4, 5)
ACTS = ("tanh", "gelu", "sigmoid")
FAULTS: dict[str, tuple[FaultSpec, Fault]] = {
    "crash": (FaultSpec("crash"), Crash()),
    "byzantine(C=1)": (FaultSpec("byzantine", 1.0), Byzantine(1.0)),
    "synapse-crash": (FaultSpec("syn-crash"), SynapseCrash()),
}


class PlainMaxPool(gops.MaxPool):
    """The max-pooling deviation rule before candidates and the cap: the largest deviation of the
    window (for the comparison only)."""

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        import torch.nn.functional as F  # noqa: N812

        shape = boxes[0][0].shape
        dv = devs[0]
        spread = math.prod(math.ceil(k / s) for k, s in zip(self.kernel, self.stride, strict=True))

        def pool(t: torch.Tensor) -> torch.Tensor:
            pad = (self.padding[1],) * 2 + (self.padding[0],) * 2
            return F.max_pool2d(F.pad(t.expand(shape), pad), self.kernel, self.stride)

        return Dev(pool(dv.e), [(k * spread, pool(d)) for k, d in dv.parts])


def _plain(tg: RGraph) -> RGraph:
    nodes = []
    for n in tg.nodes:
        op = n.op
        if isinstance(op, gops.MaxPool):
            op = PlainMaxPool(op.kernel, op.stride, op.padding)
        nodes.append(type(n)(n.name, op, n.inputs, n.ref, n.site, n.weighted))
    return RGraph(nodes, tg.input_shape, tg.lo, tg.hi)


@contextlib.contextmanager
def interval_boxes():  # type: ignore[no-untyped-def]
    """Domain boxes by interval propagation alone while inside (no linear refinement)."""
    old = graph_mod.LINEAR_MACS
    graph_mod.LINEAR_MACS = 0
    try:
        yield
    finally:
        graph_mod.LINEAR_MACS = old


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for name, make in TEMPLATES.items():
        for fname, (spec, fault) in FAULTS.items():
            dom_r, per_r, plain_r, ibp_r = [], [], [], []
            for seed in SEEDS:
                tg = make(seed, list(ACTS))
                net = tg.build()
                counts = [1] * (len(tg.weighted_ids) if spec.synapse else len(tg.site_ids))
                x = corners_and_points(tg, 64, seed, max_corners=64)
                worst = brute_force(tg, spec, counts, x, cap=400, seed=seed)
                dom = graph_propagate(net, fault, counts, tg.lo[None], tg.hi[None])
                per = graph_propagate(net, fault, counts, x, x)
                w = float(worst.max())
                if w <= 0:
                    continue
                dom_r.append(float(dom.max()) / w)
                with interval_boxes():
                    ibp_r.append(float(graph_propagate(tg.build(), fault, counts, tg.lo[None], tg.hi[None]).max()) / w)
                per_r.append(float((per.amax(1) / worst.amax(1).clamp_min(1e-300)).median()))
                if name == "cnn_maxpool":
                    pnet = _plain(tg).build()
                    plain_r.append(float(graph_propagate(pnet, fault, counts, tg.lo[None], tg.hi[None]).max()) / w)
            row = {
                "graph": name,
                "fault": fault.label() if fname != "byzantine(C=1)" else "byzantine (C = 1)",
                "seeds": len(dom_r),
                "domain_ratio_median": statistics.median(dom_r),
                "domain_ratio_max": max(dom_r),
                "domain_ratio_median_interval_boxes": statistics.median(ibp_r),
                "per_input_ratio_median": statistics.median(per_r),
            }
            if plain_r:
                row["domain_ratio_median_plain_maxpool"] = statistics.median(plain_r)
            rows.append(row)
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": 1,
                "seeds": list(SEEDS),
                "activations": list(ACTS),
                "counts": "1 per site (1 per weighted node for synapse faults)",
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
