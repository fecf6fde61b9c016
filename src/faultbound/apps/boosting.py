"""Boosting with Corollary 2: wait for only :math:`N_{l-1} - f_{l-1}` signals, simulated.

Inputs are available at time 0 and never fail; the neurons of layer 1 compute at time 0. A hidden
neuron computes as soon as it holds its share of the previous layer's signals, and the values it
did not wait for are reset to 0 (Corollary 2's "reset to the missing neurons"). Two delay models:

**Per synapse** (``delays="per-synapse"``, the default; Corollary 2 as stated: each neuron waits
for its *own* first :math:`N_{l-1} - f_{l-1}` inputs). Synapse :math:`(k \\leftarrow j)` from neuron
j of layer l to receiver k of layer l+1 (the output nodes for l = L) has its own i.i.d. delay
:math:`D_{kj}`. With :math:`t_j` the time neuron j computes,

.. math::

    t_k = \\operatorname{kth}_{N_l - f_l}\\,\\{t_j + D_{kj}\\}_j \\quad\\text{(boosted)},\\qquad
    t_k = \\max_j\\, (t_j + D_{kj}) \\quad\\text{(wait for all)},

and the end-to-end latency is the time the last output node computes. Each receiver drops its own
f_l latest inputs, so different receivers drop different neurons.

**Per sender** (``delays="per-sender"``). Neuron j's signal reaches every receiver after the same
delay :math:`D_j` (broadcast); the whole next layer starts once it holds :math:`N_l - f_l` signals.
With :math:`D_{(k)}` the k-th smallest delay of a layer,

.. math::

    T_{wait\\,all} = \\sum_{l=1}^{L} D^{(l)}_{(N_l)},\\qquad
    T_{boost} = \\sum_{l=1}^{L} D^{(l)}_{(N_l - f_l)} .

**Certificates.** Per sender, the dropped neurons of layer l are its f_l latest ones for every
receiver: they are crashes, and the error of a run is at most the crash bound :math:`B(f)`
(:func:`faultbound.bound` with :class:`~faultbound.faults.Crash`). Per synapse, each receiver drops
its own set, which a crash bound that lets signs cancel across receivers does not cover (the
``tight`` bound's back-substitution does; see :func:`receiver_bound`). The certificate is then the
smaller of the paper bound and :func:`receiver_bound`, both of which let every receiver choose its
own worst set. With a certificate :math:`\\le \\epsilon - \\epsilon'` the boosted network stays an
:math:`\\epsilon`-approximation.

Latencies are drawn with numpy's seeded ``Generator``: ``exponential(scale)``,
``lognormal(mu, sigma)`` and ``pareto(alpha, x_m)`` (the classical Pareto, support
:math:`[x_m, \\infty)`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch

from faultbound.apps.faulty import crash_errors, late_masks
from faultbound.apps.precision import probe_description, samples_corners_and_data
from faultbound.bounds.api import METHODS, Method, bound
from faultbound.bounds.paper import corollary2_waits
from faultbound.bounds.tolerance import tolerate
from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts
from faultbound.faults import Crash
from faultbound.network.core import Network

__all__ = [
    "LatencyModel",
    "BoostResult",
    "simulate_boost",
    "latencies",
    "synapse_latencies",
    "synapse_forward",
    "receiver_bound",
    "choose_failures",
    "LATENCY_KINDS",
    "DELAY_MODELS",
]

DELAY_MODELS = ("per-synapse", "per-sender")

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


def _receivers(net: Network) -> list[int]:
    """Receivers of each hidden layer's signals: the widths of layers 2..L+1."""
    return [layer.width for layer in net.layers[1:]]


def synapse_latencies(
    net: Network,
    failures: Sequence[int],
    latency: LatencyModel,
    rng: np.random.Generator,
    runs: int,
    keep: int = 0,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per-synapse delays: end-to-end latencies ``(wait all, boosted)`` per run, and the kept masks.

    For each run and each hidden layer l, delays ``(N_{l+1}, N_l)`` are drawn (receivers by
    senders); times follow the recursion of the module docstring. Returns the masks of the first
    ``keep`` runs, one boolean array ``(keep, N_{l+1}, N_l)`` per hidden layer: True where receiver
    k used sender j's signal (it arrived among the first :math:`N_l - f_l`).
    """
    widths, recv = net.widths, _receivers(net)
    # at most about 4M delays (32 MB) drawn at once, whatever the layer sizes
    chunk = max(1, min(chunk, (1 << 22) // max(n * m for n, m in zip(widths, recv, strict=True))))
    full_all, boost_all = np.empty(runs), np.empty(runs)
    kept: list[list[np.ndarray]] = [[] for _ in widths]
    for start in range(0, runs, chunk):
        r = min(chunk, runs - start)
        t_full = np.zeros((r, widths[0]))
        t_boost = np.zeros((r, widths[0]))
        for l, (n, m, f) in enumerate(zip(widths, recv, failures, strict=True)):
            d = latency.sample(rng, (r, m, n))
            t_full = (t_full[:, None, :] + d).max(-1)
            arrive = t_boost[:, None, :] + d
            k = n - f
            idx = np.argpartition(arrive, k - 1, axis=-1)[..., :k]
            t_boost = np.take_along_axis(arrive, idx, -1).max(-1)
            if start < keep:
                take = min(r, keep - start)
                mask = np.zeros((take, m, n), dtype=bool)
                np.put_along_axis(mask, idx[:take], True, -1)
                kept[l].append(mask)
        full_all[start : start + r] = t_full.max(-1)
        boost_all[start : start + r] = t_boost.max(-1)
    masks = [np.concatenate(k, 0) if k else np.zeros((0, m, n), dtype=bool)
             for k, m, n in zip(kept, recv, widths, strict=True)]
    return full_all, boost_all, masks


def _affine(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`A^{(l)}` and :math:`b^{(l)}` of a dense layer, float64."""
    A = layer.effective_matrix().to(torch.float64)
    b = layer.pre(torch.zeros((1, *layer.in_shape), dtype=torch.float64)).reshape(-1)
    return A, b


def _check_dense_receivers(net: Network) -> None:
    for layer in net.layers[1:]:
        if layer.kind != "dense":
            raise InvalidArgumentError(
                f"Per-synapse delays are simulated for dense layers, but layer {layer.index} is "
                f"{layer.describe()}; use delays='per-sender' (--delays per-sender)."
            )


def synapse_forward(net: Network, x: torch.Tensor, masks: Sequence[torch.Tensor], chunk: int = 16) -> torch.Tensor:
    """:math:`F(x)` when receiver k of layer l+1 uses only the senders its mask keeps: ``(runs, B, n_out)``.

    ``masks[l]`` is ``(runs, N_{l+1}, N_l)`` (1 = used, 0 = reset to 0); layer 1 reads every input.
    """
    _check_dense_receivers(net)
    if len(masks) != net.L:
        raise InvalidArgumentError(f"Expected one mask per hidden layer ({net.L}), but got {len(masks)}.")
    runs = int(masks[0].shape[0])
    mats = [_affine(layer) for layer in net.layers[1:]]
    x = x.to(torch.float64)
    with torch.no_grad():
        y0 = net.layers[0].forward(x).reshape(x.shape[0], -1)
        outs = []
        for start in range(0, runs, chunk):
            stop = min(runs, start + chunk)
            y = y0.unsqueeze(0).expand(stop - start, *y0.shape)
            for (A, b), m, layer in zip(mats, masks, net.layers[1:], strict=True):
                w = A.unsqueeze(0) * m[start:stop].to(torch.float64)
                s = torch.einsum("rkj,rbj->rbk", w, y) + b
                y = s if layer.activation is None else layer.activation(s)
            outs.append(y)
    return torch.cat(outs, 0)


def receiver_bound(net: Network, failures: Sequence[int]) -> float:
    """A bound on the output error when every receiver drops its own :math:`f_l` inputs of layer l.

    Neuron i of layer l has the clean interval :math:`[\\underline y_i, \\overline y_i]` over the
    domain; :math:`\\Delta_i = \\max(|\\underline y_i|, |\\overline y_i|)` bounds what dropping it
    changes, and :math:`e_i` bounds its own deviation (:math:`e = 0` for the inputs). A receiver k
    that drops the set :math:`S_k`, :math:`|S_k| = f`, of layer l sees its input sum move by

    .. math::

        t_k \\le \\sum_{j\\notin S_k} |w_{kj}| e_j + \\sum_{j \\in S_k} |w_{kj}| \\Delta_j
            \\le \\sum_j |w_{kj}| e_j + \\operatorname{top}_f \\big(|w_{kj}| (\\Delta_j - e_j)\\big)^+_j ,

    whatever the other receivers drop, so :math:`e_k = \\min(K t_k, \\mathrm{cap}_k)`, with
    :math:`\\mathrm{cap}_k = \\max(\\mathrm{hi} - \\underline y_k, \\overline y_k - \\mathrm{lo})` for
    an activation with range [lo, hi]. The bound is :math:`\\max_k t_k` over the outputs. It also
    covers crashes (all receivers dropping the same set).
    """
    f = [int(v) for v in failures]
    _check_dense_receivers(net)
    inter = net.intervals()
    # layer 1 reads the inputs, which never fail: its neurons do not deviate
    e = torch.zeros(net.layers[0].width, dtype=torch.float64)
    t = e
    for idx, layer in enumerate(net.layers[1:], start=1):
        A, _ = _affine(layer)
        W = A.abs()
        iv = inter[idx - 1]
        delta = torch.maximum(iv.y_lo.abs(), iv.y_hi.abs()).reshape(-1)
        t = W @ e
        if f[idx - 1] > 0:
            terms = (W * (delta - e).unsqueeze(0)).clamp_min(0.0)
            t = t + terms.topk(min(f[idx - 1], terms.shape[1]), dim=1).values.sum(1)
        if layer.activation is None:
            return float(t.max())
        act = layer.activation
        cur = inter[idx]
        cap = torch.maximum(act.hi - cur.y_lo.reshape(-1), cur.y_hi.reshape(-1) - act.lo)
        e = torch.minimum(act.K * t, cap)
    return float(t.max())  # pragma: no cover - the last layer is the output


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
    delays: str = "per-synapse"
    crash_certified: float | None = None
    probe: str = ""
    eps: float | None = None
    eps_prime: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def within_bound(self) -> bool:
        return self.measured_max <= self.certified * (1 + 1e-9) + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": (
                "per-synapse: every receiver drops its own f_l latest inputs of layer l"
                if self.delays == "per-synapse"
                else "per-sender: the f_l latest neurons of each layer are dropped for every receiver"
            ),
            "delays": self.delays,
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
            "crash_certified": self.crash_certified,
            "measured_max_error": self.measured_max,
            "measured_median_error": self.measured_median,
            "within_bound": self.within_bound,
            "error_runs": self.error_runs,
            "n_inputs": self.n_inputs,
            "inputs": self.probe,
            "eps": self.eps,
            "eps_prime": self.eps_prime,
            "notes": list(self.notes),
        }


def _method(method: str) -> Method:
    if method == "auto":
        return "tight"
    if method not in METHODS:
        raise InvalidArgumentError(f"Expected `method` among auto, {', '.join(METHODS)}, but got {method!r}.")
    return cast(Method, method)  # a key of METHODS


def choose_failures(
    net: Network,
    eps: float,
    eps_prime: float,
    latency: LatencyModel,
    method: str = "auto",
    seed: int = 0,
    pilot_runs: int = 2000,
    max_candidates: int = 200,
    delays: str = "per-synapse",
) -> tuple[tuple[int, ...], list[str]]:
    """The tolerated distribution with the smallest median boosted latency on a pilot run.

    Candidates: the maximal tolerated crash distributions (when :func:`tolerate` enumerates them, at
    most ``max_candidates`` of the largest), the uniform one and each per-layer maximum. Per synapse,
    only the candidates whose per-synapse certificate (``min(paper, receiver_bound)``) fits
    :math:`\\epsilon - \\epsilon'` are kept (the all-zero distribution when none does).
    """
    if delays not in DELAY_MODELS:
        raise InvalidArgumentError(f"Expected delays among {', '.join(DELAY_MODELS)}, but got {delays!r}.")
    m = _method(method)
    tol = tolerate(net, eps, eps_prime, Crash(), method=m)
    L = net.L
    cands: list[tuple[int, ...]] = [tuple(tol.uniform_failures)]
    for l, v in enumerate(tol.per_layer_max):
        row = [0] * L
        row[l] = v
        cands.append(tuple(row))
    if tol.maximal:
        cands += sorted(tol.maximal, key=lambda f: -sum(f))[:max_candidates]
    cands = list(dict.fromkeys(cands))
    notes: list[str] = []
    if delays == "per-synapse":
        _check_dense_receivers(net)
        budget = eps - eps_prime
        n_before = len(cands)
        cands = [f for f in cands
                 if min(receiver_bound(net, f), bound(net, f, Crash(), method="paper").value) <= budget]
        notes.append(f"Per-synapse delays: {len(cands)} of {n_before} crash-tolerated distributions are also "
                     f"certified when each receiver drops its own inputs (min(paper, per-receiver) <= {budget:g}).")
        if not cands:
            cands = [tuple([0] * L)]
    best, best_t = cands[0], math.inf
    if delays == "per-sender":
        rng = np.random.default_rng(seed + 7919)
        pilot = [latency.sample(rng, (pilot_runs, n)) for n in net.widths]
    for f in cands:
        if delays == "per-sender":
            _, boost = latencies(pilot, f)
        else:
            _, boost, _ = synapse_latencies(net, f, latency, np.random.default_rng(seed + 7919), pilot_runs)
        t = float(np.median(boost))
        if t < best_t - 1e-12:
            best, best_t = f, t
    notes.insert(0, f"Failures chosen by tolerate(eps={eps:g}, eps'={eps_prime:g}, method={m}) among {len(cands)} "
                    f"tolerated distributions: smallest median latency on a {pilot_runs}-run pilot ({delays} delays).")
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
    delays: str = "per-synapse",
) -> BoostResult:
    """Simulate ``runs`` seeded executions, waiting for all signals and for the first N - f.

    Args:
        failures: the distribution :math:`(f_1, \\dots, f_L)`: how many signals of layer l a
            receiver may go without.
        latency: the delay distribution of one signal (one synapse, or one sender).
        delays: ``"per-synapse"`` (each receiver waits for its own first N - f inputs) or
            ``"per-sender"`` (one delay per neuron, the same for every receiver).
        error_runs: how many of the runs also measure the output error with the late signals
            dropped (over ``n_inputs`` domain samples, domain corners and the data ``X``).
        method: the crash bound (``auto``: tight when registered). Per sender it certifies the
            error; per synapse the certificate is ``min(paper, receiver_bound)`` and the crash
            bound is reported beside it as ``crash_certified``.

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 8), nn.Sigmoid(), nn.Linear(8, 1)))
        >>> r = simulate_boost(net, [2], LatencyModel.make("exponential"), runs=1000, error_runs=50)
        >>> r.speedup["median"] > 1 and r.within_bound
        True
    """
    f = failure_counts(net, Crash(), failures, correct_neuron=True)
    if not (isinstance(runs, int) and runs >= 1):
        raise InvalidArgumentError(f"Expected runs >= 1, but got {runs}.")
    if not (isinstance(error_runs, int) and error_runs >= 0):
        raise InvalidArgumentError(f"Expected error_runs >= 0, but got {error_runs}.")
    if delays not in DELAY_MODELS:
        raise InvalidArgumentError(f"Expected delays among {', '.join(DELAY_MODELS)}, but got {delays!r}.")
    m = _method(method)
    rng = np.random.default_rng(seed)
    k = min(error_runs, runs)
    crash = float(bound(net, f, Crash(), method=m).value)
    used: str  # the method, or "per-receiver"
    if delays == "per-sender":
        per_layer = [latency.sample(rng, (runs, n)) for n in net.widths]
        full, boost = latencies(per_layer, f)
        certified, used, crash_cert = crash, m, None
    else:
        _check_dense_receivers(net)
        full, boost, kept = synapse_latencies(net, f, latency, rng, runs, keep=k if sum(f) > 0 else 0)
        paper = float(bound(net, f, Crash(), method="paper").value)
        recv = receiver_bound(net, f)
        certified, used = (recv, "per-receiver") if recv <= paper else (paper, "paper")
        crash_cert = crash
    s_full, s_boost = _stats(full), _stats(boost)
    speed = {key: (s_full[key] / s_boost[key] if s_boost[key] > 0 else math.inf) for key in s_full}
    measured_max = measured_median = 0.0
    x = samples_corners_and_data(net, X, n_inputs, seed)
    if k > 0 and sum(f) > 0:
        if delays == "per-sender":
            masks = late_masks([torch.as_tensor(d[:k]) for d in per_layer], f)
            errs = crash_errors(net, x, masks)
        else:
            with torch.no_grad():
                ref = net.forward(x.to(torch.float64))
            out = synapse_forward(net, x, [torch.as_tensor(mk) for mk in kept])
            errs = (out - ref.unsqueeze(0)).abs().amax(dim=(1, 2))
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
        method=used,
        measured_max=measured_max,
        measured_median=measured_median,
        error_runs=k,
        n_inputs=int(x.shape[0]),
        delays=delays,
        crash_certified=crash_cert,
        probe=probe_description(net, X, n_inputs),
        eps=eps,
        eps_prime=eps_prime,
    )
