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
in a module with a dummy weight; ``declare_neuron_fi`` (which resets its layer counter and deep-copies
the model) is called before every forward, as its documentation prescribes. Both tools' faulty outputs
are compared, and the throughput (configurations x inputs) / s is reported next to clean inference
(inputs / s). Prints one JSON object per model.

Run: ``.venv/bin/python benchmarks/vs_pytorchfi.py [--threads 1] [--repeats 3] [--only resnet18]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Callable

import torch
from torch import nn

import faultbound as fb
from faultbound.measure import FaultSet, clean_pass, inject
from faultbound.models import resnet18_cifar
from faultbound.network.graph import GraphNetwork


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
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(16 * 28 * 28, 10),
    )
    return [
        ("mlp-784-256-256-10-sigmoid", mlp.eval(), (784,)),
        ("cnn-conv8-conv16-linear10-relu", cnn.eval(), (1, 28, 28)),
    ]


def wrap(model: nn.Sequential) -> nn.Sequential:
    mods = [FIAct(m) if isinstance(m, (nn.Sigmoid, nn.ReLU)) else m for m in model]
    return nn.Sequential(*mods).eval()


def best_time(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(name: str, model: nn.Sequential, shape: tuple[int, ...], t: int, b: int, repeats: int) -> dict:
    from pytorchfi.core import fault_injection

    net = fb.Network.from_torch(model, input_shape=shape)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((b, *shape), generator=g)
    widths = net.widths
    total = sum(widths)
    flat = torch.randint(0, total, (t,), generator=g)
    starts = torch.tensor([0] + widths).cumsum(0)
    layer_of = torch.searchsorted(starts[1:], flat, right=True)  # 0-based hidden layer
    unit = flat - starts[layer_of]
    sites = tuple(torch.where(layer_of == i, unit, -1)[:, None] for i in range(len(widths)))
    fs = FaultSet(t, sites)

    # faultbound: the whole campaign, clean pass included
    out_fb = inject(net, x, fb.Crash(), fs).outputs
    fb_s = best_time(lambda: inject(net, x, fb.Crash(), fs), repeats)
    # engine only, with the clean pass of this input batch reused (as a campaign does)
    cp = clean_pass(net, x)
    fb_reuse_s = best_time(lambda: inject(net, cp, fb.Crash(), fs), repeats)

    # PyTorchFI
    wrapped = wrap(model)
    pfi = fault_injection(wrapped, b, input_shape=list(shape), layer_types=[FIAct], use_cuda=False)
    out_pfi = torch.empty_like(out_fb)
    hidden_shapes = [layer.out_shape for layer in net.hidden]

    def pfi_campaign() -> None:
        with torch.no_grad():
            for i in range(t):
                li, j = int(layer_of[i]), int(unit[i])
                shp = hidden_shapes[li]
                idx = list(torch.unravel_index(torch.tensor(j), shp)) if len(shp) > 1 else [j]
                dims = [int(v) for v in idx] + [None] * (3 - len(idx))
                corrupted = pfi.declare_neuron_fi(
                    batch=list(range(b)), layer_num=[li] * b, dim1=[dims[0]] * b, dim2=[dims[1]] * b,
                    dim3=[dims[2]] * b, value=[0.0] * b,
                )
                out_pfi[i] = corrupted(x)

    pfi_s = best_time(pfi_campaign, max(1, repeats - 1))
    with torch.no_grad():
        clean_s = best_time(lambda: [model(x) for _ in range(20)], repeats) / 20
    diff = float((out_fb - out_pfi).abs().max())
    changed = float((out_fb - net.forward(x).unsqueeze(0)).abs().amax(-1).mean())
    return {
        "model": name,
        "configurations": t,
        "inputs": b,
        "faultbound_per_s": t * b / fb_s,
        "faultbound_reuse_clean_per_s": t * b / fb_reuse_s,
        "pytorchfi_per_s": t * b / pfi_s,
        "clean_per_s": b / clean_s,
        "speedup_vs_pytorchfi": pfi_s / fb_s,
        "campaign_vs_clean": (t * b / fb_s) / (b / clean_s),
        "outputs_match": diff <= 1e-4,
        "max_output_difference": diff,
        "mean_crash_error": changed,
        "seconds": {"faultbound": fb_s, "pytorchfi": pfi_s, "clean_forward": clean_s},
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}",
    }


def wrap_relus(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose every ``nn.ReLU`` module is an :class:`FIAct` (same name)."""
    import copy

    out = copy.deepcopy(model)
    for mod in list(out.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, FIAct(child))
    return out.eval()


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
    widths = net.widths
    flat = torch.randint(0, sum(widths), (t,), generator=g)  # uniform among all site neurons
    starts = torch.tensor([0] + widths).cumsum(0)
    site_of = torch.searchsorted(starts[1:], flat, right=True)
    unit = flat - starts[site_of]
    fs = FaultSet(t, tuple(torch.where(site_of == i, unit, -1)[:, None] for i in range(len(widths))))
    return model, net, x, fs, site_of, unit


def pytorchfi_campaign(
    model: nn.Module, net: GraphNetwork, x: torch.Tensor, site_of: torch.Tensor, unit: torch.Tensor
) -> Callable[[torch.Tensor], None]:
    """A function running the campaign through PyTorchFI into ``out`` ``(T, B, 10)``: every ReLU
    module wrapped, the graph site of each fault mapped to the PyTorchFI layer of the same module
    name, ``declare_neuron_fi`` before every forward."""
    from pytorchfi.core import fault_injection

    b = x.shape[0]
    shape = tuple(x.shape[1:])
    wrapped = wrap_relus(model)
    order = execution_order(wrapped, x, FIAct)
    site_names = [s.name for s in net.sites]
    missing = [n for n in site_names if n not in order]
    if missing or len(order) != len(site_names):
        raise SystemExit(f"graph sites {site_names} do not map onto the ReLU modules {order}")
    layer_num = [order.index(n) for n in site_names]  # graph site -> PyTorchFI layer
    pfi = fault_injection(wrapped, b, input_shape=list(shape), layer_types=[FIAct], use_cuda=False)
    site_shapes = [net.nodes[s.node].shape for s in net.sites]

    def campaign(out: torch.Tensor) -> None:
        with torch.no_grad():
            for i in range(site_of.numel()):
                s, j = int(site_of[i]), int(unit[i])
                c, h, w = (int(v) for v in torch.unravel_index(torch.tensor(j), site_shapes[s]))
                corrupted = pfi.declare_neuron_fi(
                    batch=list(range(b)),
                    layer_num=[layer_num[s]] * b,
                    dim1=[c] * b,
                    dim2=[h] * b,
                    dim3=[w] * b,
                    value=[0.0] * b,
                )
                out[i] = corrupted(x)

    return campaign


def run_resnet18(t: int, b: int, repeats: int) -> dict:
    model, net, x, fs, site_of, unit = resnet18_campaign(t, b)

    out_fb = inject(net, x, fb.Crash(), fs).outputs
    fb_s = best_time(lambda: inject(net, x, fb.Crash(), fs), repeats)
    cp = clean_pass(net, x)
    fb_reuse_s = best_time(lambda: inject(net, cp, fb.Crash(), fs), repeats)

    out_pfi = torch.empty_like(out_fb)
    campaign = pytorchfi_campaign(model, net, x, site_of, unit)

    def pfi_campaign() -> None:
        campaign(out_pfi)

    pfi_s = best_time(pfi_campaign, 1)
    with torch.no_grad():
        clean_s = best_time(lambda: [model(x) for _ in range(3)], repeats) / 3
    diff = float((out_fb - out_pfi).abs().max())
    errors = (out_fb - net.forward(x).unsqueeze(0)).abs().amax(-1)
    return {
        "model": "resnet18-cifar (graph, 17 ReLU sites)",
        "configurations": t,
        "inputs": b,
        "faultbound_per_s": t * b / fb_s,
        "faultbound_reuse_clean_per_s": t * b / fb_reuse_s,
        "pytorchfi_per_s": t * b / pfi_s,
        "clean_per_s": b / clean_s,
        "speedup_vs_pytorchfi": pfi_s / fb_s,
        "campaign_vs_clean": (t * b / fb_s) / (b / clean_s),
        "outputs_match": diff <= 1e-4,
        "max_output_difference": diff,
        "mean_crash_error": float(errors.mean()),
        "changed_pairs": float((errors > 0).double().mean()),
        "seconds": {
            "faultbound_inject": fb_s,
            "faultbound_inject_clean_reused": fb_reuse_s,
            "pytorchfi": pfi_s,
            "clean_forward_batch": clean_s,
            "clean_forward_all": clean_s * t,
        },
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus (CPU only), torch {torch.__version__}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resnet-batch", type=int, default=32)
    ap.add_argument("--only", choices=["small", "resnet18"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    if args.only != "resnet18":
        for name, model, shape in models():
            print(json.dumps(run(name, model, shape, args.configs, args.batch, args.repeats)), flush=True)
    if args.only != "small":
        print(json.dumps(run_resnet18(args.configs, args.resnet_batch, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
