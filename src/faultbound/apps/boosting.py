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

**Graph networks** (:class:`~faultbound.network.graph.GraphNetwork`: residual blocks, pooling;
per sender only). Unit j of fault site s has one delay :math:`D_j` (broadcast to every receiver).
Let :math:`P(s)` be the sites whose values reach s through non-site nodes only
(:attr:`~faultbound.network.graph.GraphNetwork.site_predecessors`; the input is available at time
0, so a site fed by the input alone has :math:`P(s) = \\emptyset`). Site s computes at

.. math::

    T_s = \\max_{p \\in P(s)} A_p \\quad (T_s = 0 \\text{ when } P(s) = \\emptyset),\\qquad
    A_p = T_p + D^{(p)}_{(N_p)} \\text{ (wait for all)},\\quad
    A_p = T_p + D^{(p)}_{(N_p - f_p)} \\text{ (boosted)},

:math:`A_p` being when the signals of site p are available: the :math:`f_p` latest units of p are
dropped (value 0) for every receiver. The end-to-end latency is :math:`\\max_p A_p` over the sites
p that reach the output through non-site nodes
(:attr:`~faultbound.network.graph.GraphNetwork.output_sites`). On a chain (site l reads site l-1,
the output reads site L) this is the sum above, operation for operation (:func:`dag_latencies`).
Per-synapse delays need a layered network of dense layers; ``delays="auto"`` picks per-synapse
there and per-sender otherwise.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch

from faultbound.apps.faulty import crash_errors, graph_crash_errors, late_masks
from faultbound.apps.precision import probe_description, samples_corners_and_data
from faultbound.bounds.api import METHODS, Method, bound
from faultbound.bounds.paper import corollary2_waits
from faultbound.bounds.tolerance import tolerate
from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts
from faultbound.faults import Crash
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork
from faultbound.progress import Progress, say

__all__ = [
    "LatencyModel",
    "BoostResult",
    "simulate_boost",
    "latencies",
    "dag_latencies",
    "site_times",
    "SiteTimes",
    "resolve_delays",
    "synapse_latencies",
    "synapse_forward",
    "receiver_bound",
    "choose_failures",
    "LATENCY_KINDS",
    "DELAY_MODELS",
    "DELAY_CHOICES",
]

DELAY_MODELS = ("per-synapse", "per-sender")
#: ``delays`` may also be ``"auto"``: :func:`resolve_delays`.
DELAY_CHOICES = ("auto", *DELAY_MODELS)

#: Most delays drawn at once per chunk of runs in the per-sender model (128 MB of float64); below it
#: all runs are drawn in one go, site after site.
SENDER_CHUNK_ELEMENTS = 1 << 24

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
class SiteTimes:
    """Per fault site s (0-based), arrays ``(runs,)``: when it computes, :math:`T_s`, and when its
    signals are available, :math:`A_s`, waiting for all signals (``*_all``) and boosted
    (``*_boosted``); see :func:`site_times`."""

    compute_all: list[np.ndarray]
    compute_boosted: list[np.ndarray]
    ready_all: list[np.ndarray]
    ready_boosted: list[np.ndarray]


def site_times(
    delays: Sequence[np.ndarray], failures: Sequence[int], predecessors: Sequence[Sequence[int]]
) -> SiteTimes:
    """When each fault site computes and when its signals are available, per run.

    ``delays[s]`` is ``(runs, N_s)``, one delay per unit of site s (0-based, topological);
    ``predecessors[s]`` are the sites :math:`P(s)` that s waits for (all before s). Site s computes
    at :math:`T_s = \\max_{p \\in P(s)} A_p` (0 when :math:`P(s)` is empty) and its signals are
    available at :math:`A_s = T_s + D^{(s)}_{(N_s)}` (wait for all) or
    :math:`T_s + D^{(s)}_{(N_s - f_s)}` (boosted: the k-th smallest delay, k = N_s - f_s).

    Raises:
        InvalidArgumentError: a predecessor that is not an earlier site.
    """
    runs = int(delays[0].shape[0]) if delays else 0
    out = SiteTimes([], [], [], [])
    for s, (d, f, preds) in enumerate(zip(delays, failures, predecessors, strict=True)):
        if any(not 0 <= p < s for p in preds):
            raise InvalidArgumentError(
                f"Expected the predecessors of site {s} among sites 0..{s - 1}, but got {tuple(preds)}."
            )
        t_full = _latest([out.ready_all[p] for p in preds], runs)
        t_boost = _latest([out.ready_boosted[p] for p in preds], runs)
        k = d.shape[1] - f  # the k-th smallest arrival, 1-based
        out.compute_all.append(t_full)
        out.compute_boosted.append(t_boost)
        out.ready_all.append(t_full + d.max(1))
        out.ready_boosted.append(t_boost + np.partition(d, k - 1, axis=1)[:, k - 1])
    return out


def dag_latencies(
    delays: Sequence[np.ndarray],
    failures: Sequence[int],
    predecessors: Sequence[Sequence[int]],
    outputs: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """End-to-end latencies ``(wait all, boosted)`` per run over a DAG of fault sites:
    :math:`\\max_{p \\in outputs} A_p` with the times :math:`A_p` of :func:`site_times`; ``outputs``
    are the sites the output waits for. On a chain (``predecessors = [(), (0,), (1,), ...]``,
    ``outputs = (L-1,)``) it is :func:`latencies`, bit for bit (the same additions in the same order).

    Raises:
        InvalidArgumentError: a predecessor that is not an earlier site, an output that is no site.
    """
    times = site_times(delays, failures, predecessors)
    runs = int(delays[0].shape[0]) if delays else 0
    if any(not 0 <= p < len(delays) for p in outputs):
        raise InvalidArgumentError(f"Expected output sites among 0..{len(delays) - 1}, but got {tuple(outputs)}.")
    return (_latest([times.ready_all[p] for p in outputs], runs),
            _latest([times.ready_boosted[p] for p in outputs], runs))


def _latest(times: Sequence[np.ndarray], runs: int) -> np.ndarray:
    """The elementwise maximum of ``times`` (zeros when there are none)."""
    if not times:
        return np.zeros(runs)
    out = times[0]
    for t in times[1:]:
        out = np.maximum(out, t)
    return out


def _sender_delays(
    widths: Sequence[int], latency: LatencyModel, rng: np.random.Generator, runs: int
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Per-sender delays in chunks of runs: ``(first run, [(r, N_s) per site])``, at most
    :data:`SENDER_CHUNK_ELEMENTS` delays per chunk (one chunk, the sites in order, below it)."""
    chunk = max(1, min(runs, SENDER_CHUNK_ELEMENTS // max(1, sum(widths))))
    for start in range(0, runs, chunk):
        r = min(chunk, runs - start)
        yield start, [latency.sample(rng, (r, n)) for n in widths]


def _layered(net: Network | GraphNetwork) -> Network | None:
    """The network when it is layered (the paper's form), ``None`` for a graph network."""
    return None if net.layers is None else cast(Network, net)


def _synapse_net(net: Network | GraphNetwork) -> Network:
    """The layered network of dense receivers that per-synapse delays need.

    Raises:
        InvalidArgumentError: a graph network, or a receiving layer that is not dense.
    """
    layered = _layered(net)
    if layered is None:
        raise InvalidArgumentError(
            f"Per-synapse delays need a layered network of dense layers, but got a graph network "
            f"({net.L} fault sites); use delays='per-sender' (--delays per-sender)."
        )
    _check_dense_receivers(layered)
    return layered


def resolve_delays(net: Network | GraphNetwork, delays: str) -> str:
    """``delays``, with ``"auto"`` resolved: per-synapse on a layered network whose receiving layers
    are all dense, per-sender otherwise (graph networks, convolutions).

    Raises:
        InvalidArgumentError: ``delays`` not among auto, per-synapse, per-sender.
    """
    if delays not in DELAY_CHOICES:
        raise InvalidArgumentError(f"Expected delays among {', '.join(DELAY_CHOICES)}, but got {delays!r}.")
    if delays != "auto":
        return delays
    layered = _layered(net)
    dense = layered is not None and all(layer.kind == "dense" for layer in layered.layers[1:])
    return "per-synapse" if dense else "per-sender"


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
    """One boosting simulation (see the module docstring).

    ``waits``: on a layered network, how many signals a neuron of layer l = 1..L+1 waits for
    (Corollary 2, :func:`~faultbound.bounds.paper.corollary2_waits`: its fan-in minus
    :math:`f_{l-1}`). On a graph network, per fault site s, how many of its :math:`N_s` signals
    are awaited before its readers start, :math:`N_s - f_s` (a unit's fan-in is not the unit of
    waiting there: the whole site's signals are, for every reader).
    """

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
    net: Network | GraphNetwork,
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
    :math:`\\epsilon - \\epsilon'` are kept (the all-zero distribution when none does). Per sender the
    pilot's latencies are :func:`dag_latencies` over the network's fault sites (a chain's layers, or
    a graph's DAG of sites), every candidate on the same delays.
    """
    delays = resolve_delays(net, delays)
    synapse_net = _synapse_net(net) if delays == "per-synapse" else None
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
    if synapse_net is not None:
        budget = eps - eps_prime
        n_before = len(cands)
        cands = [f for f in cands
                 if min(receiver_bound(synapse_net, f), bound(synapse_net, f, Crash(), method="paper").value) <= budget]
        notes.append(f"Per-synapse delays: {len(cands)} of {n_before} crash-tolerated distributions are also "
                     f"certified when each receiver drops its own inputs (min(paper, per-receiver) <= {budget:g}).")
        if not cands:
            cands = [tuple([0] * L)]
        medians = [float(np.median(synapse_latencies(synapse_net, f, latency, np.random.default_rng(seed + 7919),
                                                     pilot_runs)[1])) for f in cands]
    else:
        boosted = np.empty((len(cands), pilot_runs))
        rng = np.random.default_rng(seed + 7919)
        for start, d in _sender_delays(net.widths, latency, rng, pilot_runs):
            for c, f in enumerate(cands):
                boosted[c, start : start + d[0].shape[0]] = dag_latencies(
                    d, f, net.site_predecessors, net.output_sites)[1]
        medians = [float(np.median(b)) for b in boosted]
    best, best_t = cands[0], math.inf
    for f, t in zip(cands, medians, strict=True):
        if t < best_t - 1e-12:
            best, best_t = f, t
    notes.insert(0, f"Failures chosen by tolerate(eps={eps:g}, eps'={eps_prime:g}, method={m}) among {len(cands)} "
                    f"tolerated distributions: smallest median latency on a {pilot_runs}-run pilot ({delays} delays).")
    return best, notes + list(tol.notes)


def simulate_boost(
    net: Network | GraphNetwork,
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
    progress: Progress | None = None,
) -> BoostResult:
    """Simulate ``runs`` seeded executions, waiting for all signals and for the first N - f.

    Args:
        net: a layered network, or a graph network (per-sender delays over its DAG of fault sites;
            see the module docstring).
        failures: the distribution :math:`(f_1, \\dots, f_L)`: how many signals of layer (fault site)
            l a receiver may go without.
        latency: the delay distribution of one signal (one synapse, or one sender).
        delays: ``"per-synapse"`` (each receiver waits for its own first N - f inputs; layered
            networks of dense layers only), ``"per-sender"`` (one delay per neuron, the same for
            every receiver) or ``"auto"`` (:func:`resolve_delays`). Per sender the delays are drawn
            site after site, ``latency.sample(rng, (runs, N_s))`` with
            ``rng = numpy.random.default_rng(seed)`` (in chunks of runs when all of them would hold
            more than :data:`SENDER_CHUNK_ELEMENTS` delays); the first ``error_runs`` runs drop
            the :math:`f_s` units of largest delay of each site.
        error_runs: how many of the runs also measure the output error with the late signals
            dropped (over ``n_inputs`` domain samples, domain corners and the data ``X``).
        method: the crash bound (``auto``: tight when registered). Per sender it certifies the
            error; per synapse the certificate is ``min(paper, receiver_bound)`` and the crash
            bound is reported beside it as ``crash_certified``.
        progress: called with a message at each stage (the crash bound, each chunk of simulated
            runs, the measured error); see :mod:`faultbound.progress`.

    Raises:
        InvalidArgumentError: bad counts, runs or delays; per-synapse delays on a graph network or
            on a layer that is not dense.

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
    delays = resolve_delays(net, delays)
    layered = _layered(net)  # the one branch between layered and graph networks
    synapse_net = _synapse_net(net) if delays == "per-synapse" else None
    m = _method(method)
    rng = np.random.default_rng(seed)
    k = min(error_runs, runs)
    say(progress, "certified crash bound")
    crash = float(bound(net, f, Crash(), method=m).value)
    used: str  # the method, or "per-receiver"
    notes: list[str] = []
    if synapse_net is None:
        full, boost = np.empty(runs), np.empty(runs)
        first: list[list[np.ndarray]] = [[] for _ in f]  # the delays of the first k runs, per site
        for start, d in _sender_delays(net.widths, latency, rng, runs):
            stop = start + d[0].shape[0]
            say(progress, f"simulating runs {start + 1}-{stop} of {runs} (per-sender delays)")
            full[start:stop], boost[start:stop] = dag_latencies(d, f, net.site_predecessors, net.output_sites)
            if start < k:
                for keep, ds in zip(first, d, strict=True):
                    keep.append(ds[: k - start])
        certified, used, crash_cert = crash, m, None
        if layered is None:
            notes.append(
                f"Graph network: a fault site computes once the signals of the sites it reads are available "
                f"(the latest of them); waits = N_s - f_s signals awaited per site ({net.L} sites)."
            )
    else:
        say(progress, f"simulating {runs} runs (per-synapse delays)")
        full, boost, kept = synapse_latencies(synapse_net, f, latency, rng, runs, keep=k if sum(f) > 0 else 0)
        paper = float(bound(synapse_net, f, Crash(), method="paper").value)
        recv = receiver_bound(synapse_net, f)
        certified, used = (recv, "per-receiver") if recv <= paper else (paper, "paper")
        crash_cert = crash
    s_full, s_boost = _stats(full), _stats(boost)
    speed = {key: (s_full[key] / s_boost[key] if s_boost[key] > 0 else math.inf) for key in s_full}
    measured_max = measured_median = 0.0
    x = samples_corners_and_data(net, X, n_inputs, seed)
    if k > 0 and sum(f) > 0:
        say(progress, f"output error of the first {k} runs on {x.shape[0]} inputs")
        if synapse_net is None:
            masks = late_masks([torch.as_tensor(np.concatenate(d, 0)) for d in first], f)
            errs = crash_errors(layered, x, masks) if layered is not None else graph_crash_errors(
                cast(GraphNetwork, net), x, masks)
        else:
            with torch.no_grad():
                ref = synapse_net.forward(x.to(torch.float64))
            out = synapse_forward(synapse_net, x, [torch.as_tensor(mk) for mk in kept])
            errs = (out - ref.unsqueeze(0)).abs().amax(dim=(1, 2))
        measured_max, measured_median = float(errs.max()), float(errs.median())
    waits = tuple(corollary2_waits(layered, f)) if layered is not None else tuple(
        n - fs for n, fs in zip(net.widths, f, strict=True))
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
        notes=tuple(notes),
    )
