"""The demo: train small TunedSigmoid MLPs on a synthetic target, then certify them.

Everything is embedded (a closed-form target on [0, 1]^2, see :mod:`faultbound.data`), seeded and
fast (seconds). :func:`run_demo` returns plain data; the CLI renders it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from faultbound.apps.training import fit, tuned_mlp
from faultbound.bounds.api import Method, bound
from faultbound.bounds.paper import theorem1_max_crashes
from faultbound.bounds.tolerance import EpsPrime, ToleranceResult, estimate_eps_prime_fn, tolerate
from faultbound.data import TARGETS, synthetic
from faultbound.network.core import Network

__all__ = ["DemoNetwork", "run_demo", "DEMO_EPS"]

#: The accuracy the demo networks must keep under failures.
DEMO_EPS = 0.25


@dataclass(frozen=True)
class DemoNetwork:
    """One trained network and what faultbound certifies about it."""

    name: str
    net: Network
    eps: float
    eps_prime: EpsPrime
    bounds: tuple[tuple[tuple[int, ...], dict[str, float]], ...]
    tolerance: dict[str, ToleranceResult]
    theorem1: int | None
    train_seconds: float


class _Cap(nn.Module):
    """Parametrisation :math:`w = c \\tanh(v)`, so that :math:`|w| < c` throughout training."""

    def __init__(self, cap: float) -> None:
        super().__init__()
        self.cap = cap

    def forward(self, v: Tensor) -> Tensor:
        return self.cap * torch.tanh(v)


def _train(widths: list[int], K: float, cap: float, seed: int, epochs: int) -> tuple[nn.Sequential, float]:
    data = synthetic("wave", d=2, n=2048, seed=seed)
    model = tuned_mlp(2, widths, 1, K, generator=torch.Generator().manual_seed(seed))
    # Small output weights make failures cheap (Section 5.3): cap them by a parametrisation.
    out = model[-1]
    parametrize.register_parametrization(out, "weight", _Cap(cap))
    t0 = time.perf_counter()
    fit(model, data.X, data.y, epochs=epochs, lr=3e-2, seed=seed)
    parametrize.remove_parametrizations(out, "weight", leave_parametrized=True)
    return model, time.perf_counter() - t0


def run_demo(
    seed: int = 0,
    epochs: int = 300,
    progress: Callable[[str], None] | None = None,
) -> list[DemoNetwork]:
    """Train two TunedSigmoid MLPs on the 'wave' target and certify them.

    * ``wide-1``: one hidden layer of 256 neurons, K = 1, output weights capped at 0.03 --
      Theorem 1 applies.
    * ``deep-2``: two hidden layers of 16 neurons, K = 1, output weights capped at 0.3 --
      Theorem 3, maximal distributions.

    :math:`\\epsilon'` is estimated on a grid and random samples of [0, 1]^2 (from below), and
    :math:`\\epsilon` = :data:`DEMO_EPS`.
    """
    specs = [("wide-1", [256], 1.0, 0.03), ("deep-2", [16, 16], 1.0, 0.3)]
    methods: list[Method] = ["paper", "tight"]
    out = []
    for name, widths, K, cap in specs:
        if progress:
            progress(f"training {name} ({'-'.join(map(str, [2, *widths, 1]))}, TunedSigmoid K={K:g})")
        model, secs = _train(widths, K, cap, seed, epochs)
        net = Network.from_torch(model)
        ep = estimate_eps_prime_fn(net, TARGETS["wave"], n_samples=4096, seed=seed)
        eps = max(DEMO_EPS, ep.value)
        dists: list[tuple[int, ...]] = [tuple([0] * net.L)]
        for l in range(net.L):
            for f in (1, 2, 4):
                one = [0] * net.L
                one[l] = min(f, net.widths[l] - 1)
                dists.append(tuple(one))
        dists.append(tuple([1] * net.L))
        rows: list[tuple[tuple[int, ...], dict[str, float]]] = []
        for d in dict.fromkeys(dists):
            rows.append((d, {m: bound(net, list(d), method=m).value for m in methods}))
        if progress:
            progress(f"tolerance search for {name}")
        tol: dict[str, ToleranceResult] = {m: tolerate(net, eps, ep, method=m) for m in methods}
        t1 = theorem1_max_crashes(net, eps, ep.value) if net.L == 1 else None
        out.append(DemoNetwork(name, net, eps, ep, tuple(rows), tol, t1, secs))
    return out
