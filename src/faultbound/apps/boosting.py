"""Boosting with Corollary 2: wait for only :math:`N_{l-1} - f_{l-1}` signals, simulated.

**Execution model (per layer).** Execution is layer-synchronous. The inputs are available at time
0 and never fail. Every hidden neuron j of layer l starts when its layer starts and its signal
reaches layer l+1 after a random delay :math:`D_j` (i.i.d. across neurons and runs). Signals are
broadcast, so every neuron of layer l+1 sees the same arrival times; layer l+1 starts once it holds
:math:`k_l` of layer l's signals and resets the rest to 0 (Corollary 2's "reset to the missing
neurons"). With :math:`D_{(k)}` the k-th smallest delay of a layer, the end-to-end latency is

.. math::

    T_{wait\\,all} = \\sum_{l=1}^{L} D^{(l)}_{(N_l)},\\qquad
    T_{boost} = \\sum_{l=1}^{L} D^{(l)}_{(N_l - f_l)} .

In a boosted run the dropped neurons of layer l are exactly its :math:`f_l` latest ones; they act
as crashed neurons, so the output error of that run is at most the certified crash bound
:math:`B(f)` (:func:`faultbound.bound` with :class:`~faultbound.faults.Crash`), and with
:math:`B(f) \\le \\epsilon - \\epsilon'` the boosted network stays an :math:`\\epsilon`-approximation.

A per-receiving-neuron model (each synapse its own delay) would drop different neurons at each
receiver; it is not simulated here.

Latencies are drawn with numpy's seeded ``Generator``: ``exponential(scale)``,
``lognormal(mu, sigma)`` and ``pareto(alpha, x_m)`` (the classical Pareto, support
:math:`[x_m, \\infty)`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from faultbound.apps.faulty import crash_errors, late_masks
from faultbound.apps.precision import probe_inputs
from faultbound.bounds.api import METHODS, bound, check_failures
from faultbound.bounds.paper import corollary2_waits
from faultbound.bounds.tolerance import tolerate
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Crash
from faultbound.network.core import Network

__all__ = ["LatencyModel", "BoostResult", "simulate_boost", "latencies", "choose_failures", "LATENCY_KINDS"]

LatencyKind = Literal["exponential", "lognormal", "pareto"]
LATENCY_KINDS: dict[str, tuple[str, ...]] = {
    "exponential": ("scale",),
    "lognormal": ("mu", "sigma"),
    "pareto": ("alpha", "x_m"),
}
_DEFAULTS: dict[str, tuple[float, ...]] = {"exponential": (1.0,), "lognormal": (0.0, 1.0), "pareto": (2.5, 1.0)}


@dataclass(frozen=True)
class LatencyModel:
    """A delay distribution: ``kind`` and its parameters (see the module docstring)."""

    kind: str
    params: tuple[float, ...]

    @staticmethod
    def make(kind: str, params: Sequence[float] | None = None) -> LatencyModel:
        if kind not in LATENCY_KINDS:
            raise InvalidArgumentError(
                f"Expected a latency among {', '.join(LATENCY_KINDS)}, but got {kind!r}."
            )
        names = LATENCY_KINDS[kind]
        p = tuple(float(v) for v in params) if params else _DEFAULTS[kind]
        if len(p) != len(names):
            raise InvalidArgumentError(
                f"Expected {len(names)} parameter(s) ({', '.join(names)}) for {kind}, but got {len(p)}."
            )
        if not all(math.isfinite(v) for v in p):
            raise InvalidArgumentError(f"Expected finite latency parameters, but got {p}.")
        positive = {"exponential": (0,), "lognormal": (1,), "pareto": (0, 1)}[kind]
        for i in positive:
            if p[i] <= 0:
                raise InvalidArgumentError(f"Expected {names[i]} > 0 for {kind}, but got {p[i]}.")
        return LatencyModel(kind, p)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.kind == "exponential":
            return rng.exponential(self.params[0], shape)
        if self.kind == "lognormal":
            return rng.lognormal(self.params[0], self.params[1], shape)
        alpha, xm = self.params
        return xm * (1.0 + rng.pareto(alpha, shape))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(zip(LATENCY_KINDS[self.kind], self.params, strict=True))}


def _stats(t: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(t.mean()),
        "median": float(np.quantile(t, 0.5)),
        "p99": float(np.quantile(t, 0.99)),
        "p99.9": float(np.quantile(t, 0.999)),
    }


def latencies(delays: Sequence[np.ndarray], failures: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """End-to-end latencies ``(wait all, boosted)`` per run from per-layer delays ``(runs, N_l)``."""
    full = np.zeros(delays[0].shape[0])
    boost = np.zeros(delays[0].shape[0])
    for d, f in zip(delays, failures, strict=True):
        n = d.shape[1]
        full += d.max(1)
        k = n - f  # the k-th smallest arrival, 1-based
        boost += np.partition(d, k - 1, axis=1)[:, k - 1]
    return full, boost


@dataclass(frozen=True)
class BoostResult:
    """One boosting simulation (see the module docstring)."""

    failures: tuple[int, ...]
    waits: tuple[int, ...]
    latency: LatencyModel
    runs: int
    seed: int
    wait_all: dict[str, float]
    boosted: dict[str, float]
    speedup: dict[str, float]
    certified: float
    method: str
    measured_max: float
    measured_median: float
    error_runs: int
    n_inputs: int
    eps: float | None = None
    eps_prime: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def within_bound(self) -> bool:
        return self.measured_max <= self.certified * (1 + 1e-9) + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "per-layer: the f_l latest neurons of each layer are dropped for every receiver",
            "failures": list(self.failures),
            "waits": list(self.waits),
            "latency": self.latency.to_dict(),
            "runs": self.runs,
            "seed": self.seed,
            "latency_wait_all": self.wait_all,
            "latency_boosted": self.boosted,
            "speedup": self.speedup,
            "certified": self.certified,
            "method": self.method,
            "measured_max_error": self.measured_max,
            "measured_median_error": self.measured_median,
            "within_bound": self.within_bound,
            "error_runs": self.error_runs,
            "n_inputs": self.n_inputs,
            "eps": self.eps,
            "eps_prime": self.eps_prime,
            "notes": list(self.notes),
        }


def _method(method: str) -> str:
    if method == "auto":
        return "tight" if "tight" in METHODS else "paper"
    if method not in METHODS:
        raise InvalidArgumentError(f"Expected `method` among auto, {', '.join(METHODS)}, but got {method!r}.")
    return method


def choose_failures(
    net: Network,
    eps: float,
    eps_prime: float,
    latency: LatencyModel,
    method: str = "auto",
    seed: int = 0,
    pilot_runs: int = 2000,
    max_candidates: int = 200,
) -> tuple[tuple[int, ...], list[str]]:
    """The tolerated crash distribution with the smallest median boosted latency on a pilot run.

    Candidates: the maximal tolerated distributions (when :func:`tolerate` enumerates them, at most
    ``max_candidates`` of the largest), the uniform one and each per-layer maximum.
    """
    m = _method(method)
    tol = tolerate(net, eps, eps_prime, Crash(), method=m)  # type: ignore[arg-type]
    L = net.L
    cands: list[tuple[int, ...]] = [tuple(tol.uniform_failures)]
    for l, v in enumerate(tol.per_layer_max):
        row = [0] * L
        row[l] = v
        cands.append(tuple(row))
    if tol.maximal:
        cands += sorted(tol.maximal, key=lambda f: -sum(f))[:max_candidates]
    cands = list(dict.fromkeys(cands))
    rng = np.random.default_rng(seed + 7919)
    delays = [latency.sample(rng, (pilot_runs, n)) for n in net.widths]
    best, best_t = cands[0], math.inf
    for f in cands:
        _, boost = latencies(delays, f)
        t = float(np.median(boost))
        if t < best_t - 1e-12:
            best, best_t = f, t
    notes = [f"Failures chosen by tolerate(eps={eps:g}, eps'={eps_prime:g}, method={m}) among {len(cands)} "
             f"tolerated distributions: smallest median latency on a {pilot_runs}-run pilot."]
    return best, notes + list(tol.notes)


def simulate_boost(
    net: Network,
    failures: Sequence[int],
    latency: LatencyModel,
    runs: int = 10_000,
    seed: int = 0,
    method: str = "auto",
    error_runs: int = 500,
    X: np.ndarray | torch.Tensor | None = None,
    n_inputs: int = 256,
    eps: float | None = None,
    eps_prime: float | None = None,
) -> BoostResult:
    """Simulate ``runs`` seeded executions, waiting for all signals and for the first N - f.

    Args:
        failures: the crash distribution :math:`(f_1, \\dots, f_L)` each layer may drop.
        latency: the delay distribution of one neuron's signal.
        error_runs: how many of the runs also measure the output error with the late signals
            dropped (over ``n_inputs`` domain samples and corners plus the data ``X``).
        method: the bound certifying the error (``auto``: tight when registered).

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1)))
        >>> r = simulate_boost(net, [2], LatencyModel.make("exponential"), runs=1000, error_runs=50)
        >>> r.speedup["median"] > 1 and r.within_bound
        True
    """
    f = check_failures(net, failures, Crash())
    if not (isinstance(runs, int) and runs >= 1):
        raise InvalidArgumentError(f"Expected runs >= 1, but got {runs}.")
    if not (isinstance(error_runs, int) and error_runs >= 0):
        raise InvalidArgumentError(f"Expected error_runs >= 0, but got {error_runs}.")
    m = _method(method)
    rng = np.random.default_rng(seed)
    delays = [latency.sample(rng, (runs, n)) for n in net.widths]
    full, boost = latencies(delays, f)
    s_full, s_boost = _stats(full), _stats(boost)
    speed = {k: (s_full[k] / s_boost[k] if s_boost[k] > 0 else math.inf) for k in s_full}
    certified = bound(net, f, Crash(), method=m).value  # type: ignore[arg-type]
    k = min(error_runs, runs)
    measured_max = measured_median = 0.0
    x = probe_inputs(net, X, n_inputs, seed)
    if k > 0 and sum(f) > 0:
        masks = late_masks([torch.as_tensor(d[:k]) for d in delays], f)
        errs = crash_errors(net, x, masks)
        measured_max, measured_median = float(errs.max()), float(errs.median())
    waits = tuple(corollary2_waits(net, f))
    return BoostResult(
        failures=f,
        waits=waits,
        latency=latency,
        runs=runs,
        seed=seed,
        wait_all=s_full,
        boosted=s_boost,
        speedup=speed,
        certified=float(certified),
        method=m,
        measured_max=measured_max,
        measured_median=measured_median,
        error_runs=k,
        n_inputs=int(x.shape[0]),
        eps=eps,
        eps_prime=eps_prime,
    )
