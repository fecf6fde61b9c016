"""Per-input certificates: the tight propagation over the box of one input (or a small box around it).

With the domain shrunk to :math:`B_r(x) = [x - r, x + r]` (``radius`` r, 0 by default), the
intervals of :mod:`faultbound.bounds.tight` are those of the clean network at x, so the local slopes
and the failing deviations :math:`\\Delta_i = \\mathrm{dev}(|y_i(x)|)` are the ones at x. The
propagation then gives, for every output k, a bound :math:`t_k(x)` with

.. math::

    |F_{fail}(x')_k - F_{neu}(x')_k| \\le t_k(x)\\quad \\text{for every } x' \\in B_r(x)
    \\text{ and every failure set of the given sizes},

and :math:`b(x) = \\max_k t_k(x)`. Many inputs are treated at once: the batch of boxes is one
batch dimension of the propagation (chunked by ``batch_size``). No input domain is needed: the box
itself bounds every value, also for unbounded activations.

**Graph networks** (:class:`~faultbound.network.graph.GraphNetwork`): the same with
:func:`faultbound.bounds.graph_tight.graph_propagate` over the boxes :math:`[x - r, x + r]`, batched
the same way; it bounds every failure set of *at most* the given counts per site (``monotone`` is
implied). Its back-substitution carries :math:`b \\times n_{out}` rows over every node, so a pass
holds at most :data:`GRAPH_ROWS` :math:`/ (n_{out} \\cdot \\max_v |v|)` inputs (3 for the CIFAR
ResNet-18, whose stem has 65,536 units: in a profile, 1 to 4 inputs per pass cost about the same per
input and 8 cost more, the rows no longer fitting in cache). ``method="exact"`` solves one MILP per
(input, output) on chains and graphs alike (:func:`faultbound.bounds.exact.exact_bound`).

**Classifiers.** With clean logits z and predicted class :math:`c = \\arg\\max_k z_k`, the faulty
network still predicts c at x when :math:`z_c - t_c > z_k + t_k` for every :math:`k \\ne c`. This
holds whenever the margin :math:`z_c - \\max_{k\\ne c} z_k` exceeds :math:`2\\,b(x)` (and sometimes
when it does not). An input is *certified* when it is classified correctly and this holds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from faultbound.bounds.api import check_bounded
from faultbound.bounds.graph_tight import graph_propagate
from faultbound.bounds.rounding import ADDED_FORMATS, rounding_bound
from faultbound.bounds.tight import prepare, propagate
from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts
from faultbound.faults import Crash, Fault
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork
from faultbound.progress import Progress, say

#: The methods that certify single inputs (``"paper"`` reads only the whole domain).
CertifyMethod = Literal["tight", "exact"]

__all__ = [
    "InputCertificates",
    "CertifiedAccuracy",
    "certify",
    "certified_mask",
    "certified_accuracy",
    "GRAPH_ROWS",
]

#: Inputs x outputs x widest node that one pass of a graph's per-input bound holds (its
#: back-substitution's rows times units); more inputs are split into several passes.
GRAPH_ROWS = 2**21


@dataclass(frozen=True)
class InputCertificates:
    """Per-input bounds for ``n`` inputs.

    Attributes:
        bounds: :math:`b(x)`, shape ``(n,)`` (``inf`` under unbounded Byzantine capacity).
        per_output: :math:`t_k(x)`, shape ``(n, n_outputs)``.
        logits: the clean outputs :math:`F_{neu}(x)`, shape ``(n, n_outputs)``.
        radius: the half-width r of the box around each input.
        rounding: per input and output ``(n, n_outputs)``, the rounding allowance included in
            ``per_output`` for a float16 or bfloat16 network (the clean and the faulty network run in
            that format, :mod:`faultbound.bounds.rounding`); ``None`` in float32 and float64.
    """

    bounds: np.ndarray
    per_output: np.ndarray
    logits: np.ndarray
    radius: float
    failures: tuple[int, ...]
    fault: Fault
    rounding: np.ndarray | None = None

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(1)

    def robust(self) -> np.ndarray:
        """Inputs whose predicted class provably survives every failure set (see module docstring)."""
        return certified_mask(self.logits, self.per_output)


def certified_mask(logits: np.ndarray, per_output: np.ndarray) -> np.ndarray:
    """True where :math:`z_c - t_c > z_k + t_k` for every :math:`k \\ne c = \\arg\\max z`."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(per_output, dtype=np.float64)
    if z.shape != t.shape or z.ndim != 2:
        raise InvalidArgumentError(f"Expected logits and bounds of one shape (n, k), but got {z.shape} and {t.shape}.")
    if z.shape[1] < 2:
        return np.zeros(z.shape[0], dtype=bool)
    c = z.argmax(1)
    rows = np.arange(z.shape[0])
    low = z[rows, c] - t[rows, c]
    high = z + t
    high[rows, c] = -np.inf
    with np.errstate(invalid="ignore"):
        return np.asarray(low > high.max(1)) & np.isfinite(low)


def certify(
    net: Network | GraphNetwork,
    X: np.ndarray | Tensor,
    failures: Sequence[int] | None = None,
    fault: Fault | None = None,
    radius: float = 0.0,
    batch_size: int = 512,
    monotone: bool = False,
    method: CertifyMethod = "tight",
    time_limit: float | None = None,
    progress: Progress | None = None,
) -> InputCertificates:
    """Certify every input of ``X`` (``(n, *input_shape)`` or flat rows) at once.

    Args:
        failures: f_1..f_L for neuron faults, g_1..g_{L+1} for synapse faults, ``None`` for
            :class:`~faultbound.faults.Precision`.
        radius: certify the whole box :math:`[x - r, x + r]` around each input.
        batch_size: inputs per propagation pass (memory: batch x rows x fan-in per layer chunk).
        monotone: bound every failure set of *at most* these sizes.
        method: ``"tight"`` (the propagation above) or ``"exact"``: per input and output, the exact
            worst :math:`|F_{fail}(x')_k - F_{neu}(x')_k|` by MILP (:mod:`faultbound.bounds.exact`;
            piecewise-linear networks; one MILP per (input, output), so for few inputs).
        time_limit: seconds per MILP for ``"exact"`` (the solver's bound is used when it stops).
        progress: called with a message before each batch of inputs (each input for ``"exact"``);
            see :mod:`faultbound.progress`.

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> lin1, lin2 = nn.Linear(1, 2), nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = lin1.weight.fill_(1.0), lin1.bias.zero_(), lin2.weight.fill_(0.5), lin2.bias.zero_()
        >>> net = fb.Network.from_torch(nn.Sequential(lin1, nn.ReLU(), lin2))
        >>> cert = certify(net, [[0.2], [0.8]], [1])  # one crashed ReLU: 0.5 * x
        >>> [round(float(b), 6) for b in cert.bounds]
        [0.1, 0.4]
    """
    fault = Crash() if fault is None else fault
    check_bounded(fault)
    f = failure_counts(net, fault, failures, correct_neuron=True)
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius >= 0):
        raise InvalidArgumentError(f"Expected `radius` to be a finite number >= 0, but got {radius}.")
    if int(batch_size) < 1:
        raise InvalidArgumentError(f"Expected `batch_size` >= 1, but got {batch_size}.")
    x = net.as_inputs(X)
    n = x.shape[0]
    with torch.no_grad():
        logits = net.forward(x).numpy()
    if fault.unbounded and sum(f) > 0:
        per = np.full((n, net.n_outputs), np.inf)
        return InputCertificates(np.full(n, np.inf), per, logits, float(radius), f, fault)
    if method not in ("tight", "exact"):
        raise InvalidArgumentError(f"Expected `method` to be tight or exact, but got {method!r}.")
    if method == "exact":
        per_output = _exact_per_output(net, x, f, fault, float(radius), monotone, time_limit, progress)
        extra = None
        if net.dtype in ADDED_FORMATS and n:
            extra = rounding_bound(net, fault, list(f) if f else None, x - radius, x + radius).total.numpy()
            per_output = per_output + extra
        bounds = per_output.max(1) if n else np.zeros(0)
        return InputCertificates(bounds, per_output, logits, float(radius), f, fault, extra)
    outs = []
    step = int(batch_size)
    if isinstance(net, GraphNetwork):
        step = max(1, min(step, GRAPH_ROWS // (net.n_outputs * max(node.width for node in net.nodes))))
    rounds = []
    added = net.dtype in ADDED_FORMATS
    for start in range(0, n, step):
        say(progress, f"certifying inputs {start + 1}-{min(start + step, n)} of {n}")
        xb = x[start : start + step]
        if added:
            rounds.append(rounding_bound(net, fault, list(f) if f else None, xb - radius, xb + radius).total)
        if isinstance(net, GraphNetwork):
            outs.append(graph_propagate(net, fault, list(f) if f else None, xb - radius, xb + radius))
            continue
        plan = prepare(net, fault, xb - radius, xb + radius)
        outs.append(propagate(plan, list(f) if f else None, monotone))
    per_output = torch.cat(outs).numpy() if outs else np.zeros((0, net.n_outputs))
    rounding = None
    if added:
        rounding = torch.cat(rounds).numpy() if rounds else np.zeros((0, net.n_outputs))
        per_output = per_output + rounding
    bounds = per_output.max(1) if n else np.zeros(0)
    return InputCertificates(bounds, per_output, logits, float(radius), f, fault, rounding)


def _exact_per_output(
    net: Network | GraphNetwork,
    x: Tensor,
    f: tuple[int, ...],
    fault: Fault,
    radius: float,
    at_most: bool,
    time_limit: float | None,
    progress: Progress | None = None,
) -> np.ndarray:
    """:math:`t_k(x)` = the exact worst deviation of output k over the box around each input
    (:func:`~faultbound.bounds.exact.exact_bound`, chains and graphs)."""
    from faultbound.bounds.exact import exact_bound

    out = np.zeros((x.shape[0], net.n_outputs))
    for i in range(x.shape[0]):
        say(progress, f"exact certificates (MILP): input {i + 1} of {x.shape[0]}")
        xi = x[i].reshape(-1).numpy()
        for k in range(net.n_outputs):
            r = exact_bound(
                net, list(f) if f else None, fault, time_limit=time_limit, lo=xi - radius, hi=xi + radius,
                outputs=[k], at_most=at_most,
            )
            out[i, k] = r.value
    return out


@dataclass(frozen=True)
class CertifiedAccuracy:
    """Clean and certified accuracy of a classifier on a labelled set.

    ``certified[i]``: input i is classified correctly and provably stays so under every failure
    set of the given sizes. ``bounds[i]`` is :math:`b(x_i)`.
    """

    n: int
    clean_accuracy: float
    certified_accuracy: float
    correct: np.ndarray
    certified: np.ndarray
    bounds: np.ndarray
    failures: tuple[int, ...]
    fault: Fault
    radius: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        finite = self.bounds[np.isfinite(self.bounds)]
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "certified_accuracy": self.certified_accuracy,
            "n_certified": int(self.certified.sum()),
            "failures": list(self.failures),
            "fault": self.fault.name,
            "fault_params": self.fault.to_dict(),
            "radius": self.radius,
            "bound_median": float(np.median(finite)) if finite.size else None,
            "bound_max": float(self.bounds.max()) if self.bounds.size and np.isfinite(self.bounds).all() else None,
            "notes": list(self.notes),
        }


def certified_accuracy(
    net: Network | GraphNetwork,
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor | Sequence[int],
    failures: Sequence[int] | None = None,
    fault: Fault | None = None,
    radius: float = 0.0,
    batch_size: int = 512,
    method: CertifyMethod = "tight",
    time_limit: float | None = None,
    progress: Progress | None = None,
) -> CertifiedAccuracy:
    """Fraction of inputs classified correctly *and* certified (see the module docstring).

    ``progress`` is called as by :func:`certify` (see :mod:`faultbound.progress`).

    Raises:
        InvalidArgumentError: for a network with one output, or labels that are not class indices.
    """
    if net.n_outputs < 2:
        raise InvalidArgumentError(
            f"Expected a classifier with at least 2 outputs, but the network has {net.n_outputs}."
        )
    labels = np.asarray(y)
    x = net.as_inputs(X)
    if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
        raise InvalidArgumentError(f"Expected one label per input ({x.shape[0]}), but got shape {labels.shape}.")
    if labels.size and (
        not np.all(np.equal(np.mod(labels, 1), 0)) or labels.min() < 0 or labels.max() >= net.n_outputs
    ):
        raise InvalidArgumentError(f"Expected integer labels in 0..{net.n_outputs - 1}.")
    labels = labels.astype(np.int64)
    cert = certify(
        net, x, failures, fault, radius, batch_size, method=method, time_limit=time_limit, progress=progress
    )
    correct = cert.predictions == labels
    certified = correct & cert.robust()
    n = int(x.shape[0])
    notes: list[str] = []
    if radius > 0:
        notes.append(f"Bounds hold over the box of radius {radius:g} around each input; margins are taken at x.")
    return CertifiedAccuracy(
        n,
        float(correct.mean()) if n else 0.0,
        float(certified.mean()) if n else 0.0,
        correct,
        certified,
        cert.bounds,
        cert.failures,
        cert.fault,
        float(radius),
        tuple(notes),
    )


def certify_inputs(
    net: Network,
    X: np.ndarray | Tensor,
    failures: Sequence[int] | None = None,
    fault: Fault | None = None,
    **kwargs: Any,
) -> InputCertificates:
    """Deprecated alias of :func:`certify`."""
    warnings.warn("certify_inputs is deprecated; call certify.", DeprecationWarning, stacklevel=2)
    return certify(net, X, failures, fault, **kwargs)
