"""faultbound's batched engine vs PyTorchFI 0.6.0 on the same single-neuron crash campaign.

T = 200 configurations, each crashing one hidden neuron (activation output set to 0) chosen uniformly
among all hidden neurons, on B = 64 inputs, for

* an MLP 784-256-256-10 with sigmoid,
* a CNN 1x28x28 -> conv 8 -> conv 16 (3x3, padding 1, ReLU) -> linear 10, and
* the CIFAR ResNet-18 of :func:`faultbound.models.resnet18_cifar` (3x32x32, 17 ReLU modules; read
  into a :class:`~faultbound.network.graph.GraphNetwork` by ``faultbound.load(module)``, batch norms
  folded), with B = 32 (``--resnet-batch``): every graph fault site is one ReLU module, named as the
  module, and a crash targets that module's output in PyTorchFI.

PyTorchFI hooks modules of the chosen types and needs ``layer.weight``, so every activation is wrapped
in a module with a dummy weight. It runs the campaign in two ways, and both are timed:

* **loop**: one forward of the B inputs per configuration, ``declare_neuron_fi`` with the same unit
  for every batch element;
* **packed**: several configurations per forward, the B inputs repeated once per configuration and
  one per-element injection per row (``declare_neuron_fi(batch=[...])`` with a batch index per row),
  so row ``k * B + b`` carries configuration k on input b. Each size in ``--pack-rows``
  (``--resnet-pack-rows``; the most rows of one forward) is timed, and the fastest of them (by median)
  is the packed figure: on the MLP large packs pay (4096 rows), on the CNN they do not (its 64-row
  batches fit in cache, 4096-row ones do not).

``declare_neuron_fi`` (which resets PyTorchFI's layer counter and deep-copies the model) is called
before every forward, as its documentation prescribes.

Timing: every side (faultbound ``inject``, faultbound with the clean pass reused, PyTorchFI loop,
PyTorchFI packed, clean inference) runs once untimed (MLP and CNN; on ResNet-18, where one side takes
tens of seconds, there is no untimed run), then ``--repeats`` timed runs, interleaved (A, B, C, ...,
A, B, C, ...), so that every side sees the same load; each side's median and min are reported, with
the ratios of medians and of mins. Throughput is (configurations x inputs) / s for a campaign,
inputs / s for clean inference, from the medians.

Outputs: judged against the size of the change a crash makes, not at a fixed absolute tolerance
(on ResNet-18 the mean change is about 1e-5). They match when ``max |out_fb - out_pfi| <= rtol *
max |change| + atol``, where ``change = out_fb - clean_fb`` over all configurations and inputs,
``rtol = 1e-3`` and ``atol`` is the float32 rounding floor ``4 * eps * max |clean output|``; both are
stated in the JSON, with the measured ``relative_difference = max |out_fb - out_pfi| / max |change|``.
Prints one JSON object per model.

Run: ``.venv/bin/python benchmarks/vs_pytorchfi.py [--threads 1] [--repeats 5] [--only resnet18]``
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

import faultbound as fb
from faultbound.measure import FaultSet, clean_pass, inject
from faultbound.models import resnet18_cifar
from faultbound.network.graph import GraphNetwork

RTOL = 1e-3  # outputs match within this fraction of the largest change a crash makes ...
FLOOR_ULPS = 4  # ... plus this many float32 epsilons of the largest clean output

# One PyTorchFI injection target per configuration: (layer number, dim1, dim2, dim3).
Target = tuple[int, int, int | None, int | None]


class FIAct(nn.Module):
    """An activation that PyTorchFI can hook: a leaf module (no children) with a ``weight`` (it reads
    ``weight.shape`` of every hooked layer)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.fn = torch.sigmoid if isinstance(act, nn.Sigmoid) else torch.relu
        self.register_buffer("weight", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def models() -> list[tuple[str, nn.Sequential, tuple[int, ...]]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.Sigmoid(), nn.Linear(256, 256), nn.Sigmoid(), nn.Linear(256, 10))
    cnn = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 28 * 28, 10),
    )
    return [
        ("mlp-784-256-256-10-sigmoid", mlp.eval(), (784,)),
        ("cnn-conv8-conv16-linear10-relu", cnn.eval(), (1, 28, 28)),
    ]


def wrap(model: nn.Sequential) -> nn.Sequential:
    mods = [FIAct(m) if isinstance(m, (nn.Sigmoid, nn.ReLU)) else m for m in model]
    return nn.Sequential(*mods).eval()


def wrap_relus(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every ``nn.ReLU`` module is an :class:`FIAct` (same name)."""
    out = copy.deepcopy(model)
    for mod in list(out.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, FIAct(child))
    return out.eval()


def interleaved(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` runs of every side, run in turn (A, B, C, A, B, C, ...) so that all
    sides see the same load."""
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(repeats):
        for k, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def stats(runs: list[float]) -> dict[str, float | list[float]]:
    return {"median": statistics.median(runs), "min": min(runs), "runs": runs}


def ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """``num / den`` of the medians and of the mins (a speed-up when both are seconds)."""
    return {"median": statistics.median(num) / statistics.median(den), "min": min(num) / min(den)}


def uniform_crashes(widths: list[int], t: int, g: torch.Generator) -> tuple[FaultSet, torch.Tensor, torch.Tensor]:
    """T single-neuron crashes drawn uniformly among all ``sum(widths)`` neurons: the fault set, and
    each configuration's site (0-based) and unit within the site."""
    flat = torch.randint(0, sum(widths), (t,), generator=g)
    starts = torch.tensor([0] + widths).cumsum(0)
    site_of = torch.searchsorted(starts[1:], flat, right=True)
    unit = flat - starts[site_of]
    fs = FaultSet(t, tuple(torch.where(site_of == i, unit, -1)[:, None] for i in range(len(widths))))
    return fs, site_of, unit


def targets(
    site_of: torch.Tensor, unit: torch.Tensor, shapes: list[tuple[int, ...]], layer_num: list[int]
) -> list[Target]:
    """PyTorchFI's (layer number, dim1, dim2, dim3) of each configuration's crashed neuron."""
    out: list[Target] = []
    for s, j in zip(site_of.tolist(), unit.tolist(), strict=True):
        idx = [int(v) for v in torch.unravel_index(torch.tensor(j), shapes[s])]
        out.append((layer_num[s], idx[0], idx[1] if len(idx) > 1 else None, idx[2] if len(idx) > 2 else None))
    return out


@dataclass(frozen=True)
class PyTorchFICampaigns:
    """The ways of running the campaign through PyTorchFI, each writing ``out`` ``(T, B, n)``: the
    loop, and packed with k configurations per forward for each k in ``packed``."""

    loop: Callable[[torch.Tensor], None]
    packed: dict[int, Callable[[torch.Tensor], None]]


def pytorchfi_campaigns(
    wrapped: nn.Module, x: torch.Tensor, tg: list[Target], pack_rows: list[int]
) -> PyTorchFICampaigns:
    """PyTorchFI's loop, and its packed form with at most ``r`` rows per forward for each ``r`` in
    ``pack_rows``."""
    from pytorchfi.core import fault_injection

    b = x.shape[0]
    shape = list(x.shape[1:])
    loop_fi = fault_injection(wrapped, b, input_shape=shape, layer_types=[FIAct], use_cuda=False)

    def loop(out: torch.Tensor) -> None:
        with torch.no_grad():
            for i, (layer, d1, d2, d3) in enumerate(tg):
                corrupted = loop_fi.declare_neuron_fi(
                    batch=list(range(b)),
                    layer_num=[layer] * b,
                    dim1=[d1] * b,
                    dim2=[d2] * b,
                    dim3=[d3] * b,
                    value=[0.0] * b,
                )
                out[i] = corrupted(x)

    def packed(k: int) -> Callable[[torch.Tensor], None]:
        packed_fi = fault_injection(wrapped, k * b, input_shape=shape, layer_types=[FIAct], use_cuda=False)
        x_packed = x.repeat(k, *([1] * len(shape)))  # row c * B + r is input r

        def campaign(out: torch.Tensor) -> None:
            with torch.no_grad():
                for start in range(0, len(tg), k):
                    chunk = tg[start : start + k]
                    rows = [(c * b + r, t) for c, t in enumerate(chunk) for r in range(b)]
                    corrupted = packed_fi.declare_neuron_fi(
                        batch=[r for r, _ in rows],
                        layer_num=[t[0] for _, t in rows],
                        dim1=[t[1] for _, t in rows],
                        dim2=[t[2] for _, t in rows],
                        dim3=[t[3] for _, t in rows],
                        value=[0.0] * len(rows),
                    )
                    out[start : start + len(chunk)] = corrupted(x_packed[: len(rows)]).view(len(chunk), b, -1)

        return campaign

    ks = sorted({max(1, min(len(tg), r // b)) for r in pack_rows})
    return PyTorchFICampaigns(loop, {k: packed(k) for k in ks})


def compare(
    net: fb.Network | GraphNetwork,
    module: nn.Module,
    x: torch.Tensor,
    fs: FaultSet,
    pfi: PyTorchFICampaigns,
    repeats: int,
    clean_forwards: int,
    warmup: bool,
) -> dict:
    """Run and time both tools on the campaign ``fs`` over ``x``; the common part of every row."""
    t, b = fs.n_configs, x.shape[0]
    res = inject(net, x, fb.Crash(), fs)
    out_fb, clean_fb = res.outputs, res.clean
    cp = clean_pass(net, x)
    outs = {"pytorchfi_loop": torch.empty_like(out_fb)}
    outs |= {f"pytorchfi_packed_{k}_per_forward": torch.empty_like(out_fb) for k in pfi.packed}

    def clean() -> None:
        with torch.no_grad():
            for _ in range(clean_forwards):
                module(x)

    sides: dict[str, Callable[[], object]] = {
        "faultbound": lambda: inject(net, x, fb.Crash(), fs),
        "faultbound_clean_reused": lambda: inject(net, cp, fb.Crash(), fs),
        "pytorchfi_loop": lambda: pfi.loop(outs["pytorchfi_loop"]),
        **{
            f"pytorchfi_packed_{k}_per_forward": partial(fn, outs[f"pytorchfi_packed_{k}_per_forward"])
            for k, fn in pfi.packed.items()
        },
        "clean_forward": clean,
    }
    if warmup:
        for fn in sides.values():
            fn()
    times = interleaved(sides, repeats)
    times["clean_forward"] = [s / clean_forwards for s in times["clean_forward"]]

    change_fb = out_fb - clean_fb.unsqueeze(0)
    max_change = float(change_fb.abs().max())
    atol = FLOOR_ULPS * torch.finfo(torch.float32).eps * float(clean_fb.abs().max())
    match: dict[str, dict[str, float | bool]] = {}
    for side, out in outs.items():
        diff = float((out_fb - out).abs().max())
        match[side] = {
            "outputs_match": diff <= RTOL * max_change + atol,
            "max_output_difference": diff,
            "relative_difference": diff / max_change,
        }
    errors = change_fb.abs().amax(-1)
    fbs = times["faultbound"]
    best = min((k for k in times if k.startswith("pytorchfi_packed")), key=lambda k: statistics.median(times[k]))
    return {
        "configurations": t,
        "inputs": b,
        "repeats": repeats,
        "pytorchfi_packed_best": best,
        "per_s_median": {k: (b if k == "clean_forward" else t * b) / statistics.median(v) for k, v in times.items()},
        "speedup_vs_pytorchfi_loop": ratio(times["pytorchfi_loop"], fbs),
        "speedup_vs_pytorchfi_packed": ratio(times[best], fbs),
        "pytorchfi_packed_vs_loop": ratio(times["pytorchfi_loop"], times[best]),
        "campaign_vs_clean": ratio([s * t for s in times["clean_forward"]], fbs),
        "outputs_match": all(m["outputs_match"] for m in match.values()),
        "match_rule": {
            "rtol": RTOL,
            "atol": atol,
            "atol_is": f"{FLOOR_ULPS} float32 eps x max |clean output|",
            "max_change": max_change,
        },
        "match": match,
        "mean_crash_error": float(errors.mean()),
        "changed_pairs": float((errors > 0).double().mean()),
        "seconds": {k: stats(v) for k, v in times.items()},
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}",
    }


def run(
    name: str, model: nn.Sequential, shape: tuple[int, ...], t: int, b: int, repeats: int, pack_rows: list[int]
) -> dict:
    net = fb.Network.from_torch(model, input_shape=shape)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((b, *shape), generator=g)
    fs, layer_of, unit = uniform_crashes(list(net.widths), t, g)
    shapes = [tuple(layer.out_shape) for layer in net.hidden]
    pfi = pytorchfi_campaigns(wrap(model), x, targets(layer_of, unit, shapes, list(range(len(shapes)))), pack_rows)
    return {"model": name, **compare(net, model, x, fs, pfi, repeats, clean_forwards=20, warmup=True)}


def execution_order(model: nn.Module, x: torch.Tensor, kind: type[nn.Module]) -> list[str]:
    """Names of the modules of type ``kind`` in the order their forward runs (PyTorchFI's layer
    numbers: its hooks count calls in that order)."""
    names: list[str] = []
    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: names.append(n))
        for n, m in model.named_modules()
        if isinstance(m, kind)
    ]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return names


def resnet18_campaign(
    t: int, b: int
) -> tuple[nn.Module, GraphNetwork, torch.Tensor, FaultSet, torch.Tensor, torch.Tensor]:
    """The ResNet-18 campaign: the module, its graph, B inputs, and T single-neuron crashes drawn
    uniformly among all site neurons (the fault set, each configuration's site and unit)."""
    model = resnet18_cifar()
    shape = (3, 32, 32)
    net = fb.load(model, input_shape=shape)
    assert isinstance(net, GraphNetwork)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((b, *shape), generator=g)
    fs, site_of, unit = uniform_crashes(list(net.widths), t, g)
    return model, net, x, fs, site_of, unit


def resnet18_pytorchfi(
    model: nn.Module,
    net: GraphNetwork,
    x: torch.Tensor,
    site_of: torch.Tensor,
    unit: torch.Tensor,
    pack_rows: list[int],
) -> PyTorchFICampaigns:
    """The campaign through PyTorchFI: every ReLU module wrapped, the graph site of each fault mapped
    to the PyTorchFI layer of the same module name (its execution order)."""
    wrapped = wrap_relus(model)
    order = execution_order(wrapped, x, FIAct)
    site_names = [s.name for s in net.sites]
    missing = [n for n in site_names if n not in order]
    if missing or len(order) != len(site_names):
        raise SystemExit(f"graph sites {site_names} do not map onto the ReLU modules {order}")
    layer_num = [order.index(n) for n in site_names]  # graph site -> PyTorchFI layer
    shapes = [tuple(net.nodes[s.node].shape) for s in net.sites]
    return pytorchfi_campaigns(wrapped, x, targets(site_of, unit, shapes, layer_num), pack_rows)


def run_resnet18(t: int, b: int, repeats: int, pack_rows: list[int]) -> dict:
    model, net, x, fs, site_of, unit = resnet18_campaign(t, b)
    pfi = resnet18_pytorchfi(model, net, x, site_of, unit, pack_rows)
    row = compare(net, model, x, fs, pfi, repeats, clean_forwards=3, warmup=False)
    return {"model": "resnet18-cifar (graph, 17 ReLU sites)", **row}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resnet-batch", type=int, default=32)
    ap.add_argument(
        "--pack-rows",
        default="256,4096",
        help="most rows of one packed PyTorchFI forward; a comma-separated list times each (MLP and CNN)",
    )
    ap.add_argument("--resnet-pack-rows", default="256", help="the same for ResNet-18")
    ap.add_argument("--only", choices=["small", "resnet18"], default=None)
    args = ap.parse_args()

    def rows(text: str) -> list[int]:
        return [int(v) for v in text.split(",")]

    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    if args.only != "resnet18":
        for name, model, shape in models():
            row = run(name, model, shape, args.configs, args.batch, args.repeats, rows(args.pack_rows))
            print(json.dumps(row), flush=True)
    if args.only != "small":
        row = run_resnet18(args.configs, args.resnet_batch, args.repeats, rows(args.resnet_pack_rows))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
