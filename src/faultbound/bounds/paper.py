"""The paper's bounds: Theorem 2 (Fep) as printed, and its sound per-layer derivation.

Notation (the paper's): hidden layers :math:`l = 1..L` of widths :math:`N_l`, the linear output
is layer :math:`L+1`; :math:`w_m^{(l)}` is the largest :math:`|w_{ji}|` into layer l, :math:`K` the
activation's Lipschitz constant and :math:`f_l` the number of failing neurons of layer l.

**Theorem 2, as printed** (:func:`fep_as_printed`):

.. math::

    \\mathrm{Fep} = C \\sum_{l=1}^{L} f_l\\, K^{L-l}\\, w_m^{(L+1)}
        \\prod_{l'=l+1}^{L} (N_{l'} - f_{l'})\\, w_m^{(l')}.

**Sound derivation** (:func:`paper_bound`, ``method="paper"``). The proof of Theorem 2 is the
recursion below; we run it with per-layer constants and with the deviations made correct:

.. math::

    T_l = \\min(f_{l-1}, R_l)\\,\\Delta_{l-1} + \\min(N_{l-1}-f_{l-1}, R_l)\\,D_{l-1},\\qquad
    D_l = K_l\\, w_m^{(l)}\\, T_l,\\qquad |F_{neu}(x) - F_{fail}(x)| \\le w_m^{(L+1)} T_{L+1},

where :math:`D_l` bounds a correct neuron's deviation, :math:`\\Delta_l` a failing one's
(``fault.deviation``: :math:`Y_l` for crashes, :math:`C + Y_l` for Byzantine values in [-C, C],
ERRATA 2), :math:`R_l` is the fan-in (:math:`N_{l-1}` for dense layers, :math:`C_{in} k^2` for
convolutions, ERRATA 6) and :math:`Y_l` the largest value a neuron of layer l takes
(:math:`\\max|\\varphi|` if bounded, interval propagation over the domain otherwise, ERRATA 7).
For a dense network with one bounded activation and crashes, this is exactly the printed Fep.

*Synapses* (Lemma 2 made sound, ERRATA 3): :math:`g_l` failing synapses into layer l add at most
:math:`g_l \\delta_l` to the receiving sums, :math:`\\delta_l` = ``fault.deviation(w_m^(l), Y_{l-1})``;
a hidden neuron turns that into at most :math:`K_l` times as much output deviation, and all of it may
sit in one receptive field:

.. math::

    D_l = K_l w_m^{(l)} \\min(N_{l-1}, R_l) D_{l-1},\\quad X_l = K_l g_l \\delta_l,\\quad
    T_{l+1} = \\min(N_l, R_{l+1}) D_l + X_l \\ldots,\\quad
    \\text{error} \\le w_m^{(L+1)} T_{L+1} + g_{L+1}\\,\\delta_{L+1}.

*Precision* (Theorem 5, output-error reading, ERRATA 4): every neuron of layer l deviates by at most
:math:`D_l + \\lambda_l`. For dense networks this is exactly the printed
:math:`\\sum_l K^{L-l} \\lambda_l \\prod_{l'=l}^{L} N_{l'} w_m^{(l'+1)}`.

All recursions are linear in the seeds (:math:`\\Delta_l`, :math:`\\delta_l`, :math:`\\lambda_l`),
so the per-layer contributions reported sum to the bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faultbound.errors import InvalidArgumentError, UnboundedError, UnsupportedModelError
from faultbound.failures import FailureCounts, failure_counts
from faultbound.faults import Crash, Fault, NeuronFault, Precision, SynapseFault
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork

__all__ = [
    "fep",
    "fep_as_printed",
    "paper_bound",
    "paper_batch",
    "seeds",
    "theorem1_max_crashes",
    "corollary2_waits",
    "LayerStats",
    "layer_stats",
    "check_eps",
]


@dataclass(frozen=True)
class LayerStats:
    """Per-layer scalars the paper's bounds read, for layers 1..L+1 (index 0 = layer 1).

    ``N_prev[l]`` is :math:`N_{l-1}` (the input size for layer 1), ``R`` the fan-in, ``w`` the
    largest absolute weight, ``K`` the Lipschitz constant (1 for the output layer, unused), ``Y``
    the value bound :math:`Y_l` of layer l's neurons for l = 0..L (``Y[0]`` for the inputs).
    """

    N: np.ndarray
    N_prev: np.ndarray
    R: np.ndarray
    w: np.ndarray
    K: np.ndarray
    Y: np.ndarray


def layer_stats(net: Network, fault: Fault | None = None) -> LayerStats:
    """Collect :class:`LayerStats`; values of unbounded activations come from the domain."""
    layers = net.layers
    N = np.array([lay.width for lay in layers], dtype=np.int64)
    N_prev = np.array([lay.in_width for lay in layers], dtype=np.int64)
    R = np.array([lay.fan_in for lay in layers], dtype=np.int64)
    w = np.array([lay.w_max for lay in layers], dtype=np.float64)
    K = np.array([lay.activation.K if lay.activation else 1.0 for lay in layers], dtype=np.float64)
    Y = np.array([net.value_bound(l) for l in range(net.L + 1)], dtype=np.float64)
    return LayerStats(N, N_prev, R, w, K, Y)


def _mul(count: np.ndarray, value: np.ndarray | float) -> np.ndarray:
    """``count * value`` with ``0 * inf = 0`` (no failing unit contributes nothing)."""
    with np.errstate(invalid="ignore"):
        out = np.asarray(count, dtype=np.float64) * value
    return np.where(np.asarray(count) == 0, 0.0, out)


def seeds(s: LayerStats, fault: Fault) -> np.ndarray:
    """What one failing unit adds, per layer, read off the fault model: :math:`\\Delta_l` =
    ``fault.deviation(Y_l)`` for neurons of layers 1..L, :math:`\\delta_l` =
    ``fault.deviation(w_m^(l), Y_{l-1})`` for synapses into layers 1..L+1, :math:`\\lambda_l` for
    precision (every neuron of layer l)."""
    L = len(s.N) - 1
    if isinstance(fault, NeuronFault):
        return np.array([fault.deviation(float(s.Y[l])) for l in range(1, L + 1)])
    if isinstance(fault, SynapseFault):
        return np.array([fault.deviation(float(s.w[l]), float(s.Y[l])) for l in range(L + 1)])
    if isinstance(fault, Precision):
        return np.asarray(fault.errors, dtype=np.float64)
    raise InvalidArgumentError(f"The paper method has no rule for fault {fault!r}.")


def _recursion(s: LayerStats, fault: Fault, F: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The recursion of the fault's site (module docstring), linear in ``seed``."""
    if fault.site == "neuron":
        return _neuron_recursion(s, F, seed)
    if fault.site == "synapse":
        return _synapse_recursion(s, F, seed)
    return _precision_recursion(s, seed, F.shape[:-1])


def paper_batch(net: Network, failures: np.ndarray, fault: Fault, stats: LayerStats | None = None) -> np.ndarray:
    """The ``method="paper"`` bound for many failure distributions at once.

    Args:
        failures: integer array ``(..., L)`` for neuron faults, ``(..., L+1)`` for synapse faults;
            ignored (pass shape ``(..., 0)``) for :class:`Precision`.

    Returns:
        float64 array of shape ``failures.shape[:-1]``.
    """
    s = stats or layer_stats(net, fault)
    return _recursion(s, fault, np.asarray(failures, dtype=np.int64), seeds(s, fault))


def neuron_recursion(
    n_prev: Sequence[Any],
    fan_in: Sequence[Any],
    w: Sequence[Any],
    K: Sequence[Any],  # noqa: N803
    F: Sequence[Any],  # noqa: N803
    delta: Sequence[Any],
    mul: Callable[[Any, Any], Any],
) -> Any:
    """The neuron recursion of the module docstring, written once for numpy and torch:

    .. math::

        T_l = \\min(f_{l-1}, R_l)\\,\\Delta_{l-1} + \\min(N_{l-1} - f_{l-1}, R_l)\\,D_{l-1},\\quad
        D_l = K_l\\, w_m^{(l)} T_l,\\quad \\mathrm{bound} = w_m^{(L+1)} T_{L+1}.

    Per layer 1..L+1: ``n_prev`` (:math:`N_{l-1}`), ``fan_in`` (:math:`R_l`), ``w``
    (:math:`w_m^{(l)}`, floats, arrays or differentiable tensors); per hidden layer 1..L: ``K``,
    ``F`` (counts: ints or integer arrays of one batch shape) and ``delta`` (:math:`\\Delta_l`).
    ``mul(count, value)`` multiplies with :math:`0 \\cdot \\infty = 0`.
    """
    L = len(w) - 1
    f_prev: Any = 0
    d_fail: Any = 0.0
    d_ok: Any = 0.0
    for l in range(L + 1):  # layer index l+1
        R = fan_in[l]
        T = mul(np.minimum(f_prev, R), d_fail) + mul(np.minimum(n_prev[l] - f_prev, R), d_ok)
        if l == L:
            return w[l] * T
        d_ok = K[l] * w[l] * T
        f_prev, d_fail = F[l], delta[l]
    raise AssertionError("unreachable")  # pragma: no cover


def _neuron_recursion(s: LayerStats, F: np.ndarray, delta: np.ndarray) -> np.ndarray:  # noqa: N803
    cols = [F[..., l] for l in range(F.shape[-1])]
    out = neuron_recursion(list(s.N_prev), list(s.R), list(s.w), list(s.K), cols, [float(d) for d in delta], _mul)
    return np.broadcast_to(np.asarray(out, dtype=np.float64), F.shape[:-1]).copy()


def _synapse_recursion(s: LayerStats, G: np.ndarray, delta: np.ndarray) -> np.ndarray:
    L = len(s.N) - 1
    shape = G.shape[:-1]
    d_ok = np.zeros(shape)
    extra = np.zeros(shape)
    for l in range(L + 1):
        T = _mul(np.minimum(s.N_prev[l], s.R[l]), d_ok) + extra
        if l == L:
            return s.w[l] * T + _mul(G[..., l], delta[l])
        d_ok = s.K[l] * s.w[l] * T
        extra = s.K[l] * _mul(G[..., l], delta[l])
    raise AssertionError("unreachable")  # pragma: no cover


def _precision_recursion(s: LayerStats, lam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    L = len(s.N) - 1
    u = np.zeros(shape)
    for l in range(L + 1):
        T = np.minimum(s.N_prev[l], s.R[l]) * u
        if l == L:
            return s.w[l] * T
        u = s.K[l] * s.w[l] * T + lam[l]
    raise AssertionError("unreachable")  # pragma: no cover


def paper_bound(
    net: Network, failures: FailureCounts | Sequence[int] | None, fault: Fault
) -> tuple[float, list[float]]:
    """``method="paper"``: the bound and each layer's contribution (see the module docstring).

    ``failures`` are trusted (validated by :func:`faultbound.bound`); ``None`` for precision."""
    s = layer_stats(net, fault)
    F = np.zeros(0, dtype=np.int64) if failures is None else np.asarray(failures, dtype=np.int64)
    seed = seeds(s, fault)
    total = float(_recursion(s, fault, F, seed))
    parts = []
    for l in range(len(seed)):
        only = np.where(np.arange(len(seed)) == l, seed, 0.0)
        parts.append(float(_recursion(s, fault, F, only)))
    return total, parts


def fep_as_printed(net: Network | GraphNetwork, failures: Sequence[int], capacity: float | None = None) -> float:
    """Theorem 2 exactly as printed (see the module docstring). Not a sound bound for Byzantine
    neurons that send values in [-C, C] (ERRATA 2): :func:`faultbound.bound` is.

    ``capacity`` defaults to :math:`\\max|\\varphi|` (the paper's crash reading, C = 1 for the
    sigmoid). With several activations, K is the largest of their constants. The printed formula
    uses the layer widths :math:`N_l`, even for convolutions.

    Example (ERRATA 5's network: N = (3, 3), w_m = (1, 2, 1), K = C = 1):
        the printed value is 6 for f = (1, 0) and 5 for f = (1, 1).

    Raises:
        UnboundedError: for an unbounded activation without ``capacity``.
        UnsupportedModelError: for a graph network (the formula is a recursion over layers).
    """
    if isinstance(net, GraphNetwork):
        raise UnsupportedModelError(
            "Theorem 2 as printed is defined for layered networks and this model is a graph: "
            "use bound(net, failures, method='tight')."
        )
    f = failure_counts(net, Crash(), failures, correct_neuron=True)
    if capacity is None:
        acts = [lay.activation for lay in net.hidden]
        if not all(a is not None and a.bounded for a in acts):
            raise UnboundedError(
                "Theorem 2 as printed needs C = max|phi|, which is infinite for "
                f"{', '.join(sorted({a.name for a in acts if a is not None and not a.bounded}))}; "
                "pass `capacity`, or use bound(), which bounds values over the input domain."
            )
        capacity = max(a.max_abs for a in acts if a is not None)
    if not capacity >= 0:
        raise InvalidArgumentError(f"Expected `capacity` >= 0, but got {capacity}.")
    return printed_fep(
        [lay.width for lay in net.hidden], net.w_max, max(net.K), f, float(capacity)
    )


def printed_fep(
    widths: Sequence[int], w_max: Sequence[float], K: float, failures: Sequence[int], C: float  # noqa: N803
) -> float:
    """The printed formula on raw numbers: ``widths`` = N_1..N_L, ``w_max`` = w_m^(1..L+1)."""
    L = len(widths)
    total = 0.0
    for l in range(1, L + 1):
        if failures[l - 1] == 0:
            continue
        term = C * failures[l - 1] * K ** (L - l) * w_max[L]
        for lp in range(l + 1, L + 1):
            term *= (widths[lp - 1] - failures[lp - 1]) * w_max[lp - 1]
        total += term
    return total


def check_eps(eps: float, eps_prime: float) -> None:
    """Validate :math:`0 \\le \\epsilon' \\le \\epsilon` (both finite), the premise of Theorems 1 and 3."""
    for name, v in (("eps", eps), ("eps_prime", eps_prime)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InvalidArgumentError(f"Expected `{name}` to be a finite number >= 0, but got {v}.")
    if eps_prime > eps:
        raise InvalidArgumentError(
            f"Expected eps_prime <= eps (the network must approximate its target to better than "
            f"eps), but got eps_prime = {eps_prime} > eps = {eps}."
        )


def theorem1_max_crashes(net: Network, eps: float, eps_prime: float) -> int:
    """Theorem 1: a single-layer network tolerates :math:`N_{fail} \\le (\\epsilon-\\epsilon')/(w_m C)`
    crashes, with :math:`C = \\max|y|` (1 for the sigmoid). Returns that largest count (at most N).
    """
    check_eps(eps, eps_prime)
    if net.L != 1:
        raise InvalidArgumentError(
            f"Theorem 1 is for single-layer networks, but this network has {net.L} hidden layers; "
            "use tolerate()."
        )
    wc = net.output.w_max * net.value_bound(1)
    n = net.widths[0]
    if wc == 0:
        return n
    return int(min(n, math.floor((eps - eps_prime) / wc * (1 + 1e-12))))


def corollary2_waits(net: Network, failures: Sequence[int]) -> list[int]:
    """Corollary 2: with a tolerated crash distribution (f_l), a neuron of layer l (l = 1..L+1)
    waits for only :math:`N_{l-1} - f_{l-1}` signals (its fan-in minus f_{l-1} for a convolution);
    layer 1 waits for every input, since inputs do not fail."""
    f = failure_counts(net, Crash(), failures, correct_neuron=True)
    waits = []
    for idx, layer in enumerate(net.layers):
        f_prev = 0 if idx == 0 else f[idx - 1]
        waits.append(max(layer.fan_in - f_prev, 0))
    return waits


def fep(net: Network, failures: Sequence[int], capacity: float | None = None) -> float:
    """Deprecated alias of :func:`fep_as_printed` (the name said nothing of the formula being the
    printed, partly unsound one)."""
    warnings.warn(
        "faultbound.fep is deprecated; call fep_as_printed (the printed Theorem 2) or bound() (sound).",
        DeprecationWarning,
        stacklevel=2,
    )
    return fep_as_printed(net, failures, capacity)
