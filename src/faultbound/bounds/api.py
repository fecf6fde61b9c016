"""The one verb of the bounds family: :func:`bound`, and input validation shared by all bounds.

Every method is a function ``(net, failures, fault) -> (value, per_layer)`` registered in
:data:`METHODS` (``"exact"``, which takes a time limit, is dispatched beside them); :func:`bound`
validates once (:func:`~faultbound.failures.failure_counts`) and wraps the answer in a
:class:`BoundResult`. The methods read only what the fault model states (its ``sent``, ``site``,
``notes``), so a new neuron or synapse model of that shape needs no code here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np

from faultbound.bounds.graph_tight import graph_tight_bound
from faultbound.bounds.paper import check_eps, paper_bound
from faultbound.bounds.rounding import ADDED_FORMATS, rounding_allowance
from faultbound.bounds.tight import tight_bound
from faultbound.errors import InvalidArgumentError, UnsupportedModelError
from faultbound.failures import FailureCounts, failure_counts
from faultbound.faults import Crash, Fault, NeuronFault, Precision, SynapseFault
from faultbound.formats import format_name
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork

__all__ = [
    "BoundResult",
    "bound",
    "METHODS",
    "METHOD_NAMES",
    "Method",
    "check_bounded",
    "check_eps",
    "check_graph_method",
    "default_method",
    "GRAPH_PAPER",
    "with_rounding",
]

#: The bound methods, by name.
Method = Literal["paper", "tight", "exact"]
#: ``("paper", "tight", "exact")``.
METHOD_NAMES: tuple[Method, ...] = get_args(Method)
BoundFn = Callable[[Network, Sequence[int] | None, Fault], tuple[float, list[float]]]

LEMMA1 = (
    "Lemma 1: with unbounded transmission (capacity = inf) no network tolerates a single "
    "Byzantine neuron or synapse."
)


#: The methods with the common signature ``(net, failures, fault) -> (value, per_layer)``, by name
#: (every method but ``"exact"``).
METHODS: dict[str, BoundFn] = {"paper": paper_bound, "tight": tight_bound}


#: The one-line refusal of the paper's formulas on a graph network.
GRAPH_PAPER = (
    "The paper bound (Theorem 2) is defined for layered networks and this model is a graph "
    "(residual sums, pooling, norms or attention): use method='tight'."
)


def check_graph_method(net: object, method: str) -> None:
    """Raise :class:`~faultbound.errors.UnsupportedModelError` (:data:`GRAPH_PAPER`) for
    ``method="paper"`` on a :class:`~faultbound.network.graph.GraphNetwork`: Theorem 2 is a
    recursion over layers (widths :math:`N_l`, largest weights :math:`w_m^{(l)}`), which a graph
    with residual sums, pooling, norms and attention does not have (docs/graphs.md)."""
    if isinstance(net, GraphNetwork) and method == "paper":
        raise UnsupportedModelError(GRAPH_PAPER)


def default_method(net: Network | GraphNetwork) -> Method:
    """The method :func:`bound` uses when none is given, and ``faultbound bound`` without
    ``--method``: ``"paper"`` (the paper's Theorem 2, made sound) on a layered
    :class:`~faultbound.network.core.Network`, ``"tight"`` on a
    :class:`~faultbound.network.graph.GraphNetwork`, where Theorem 2 is not defined
    (:func:`check_graph_method`). ``method="tight"`` is usually the smaller certificate on a layered
    network too; ask for it (or compare both, as ``faultbound bound --method both`` does)."""
    return "tight" if net.layers is None else "paper"


def check_bounded(fault: object) -> Fault:
    """``fault`` if some bound covers it: a neuron or synapse model stated by its ``sent``, or
    :class:`~faultbound.faults.Precision` (not a bit flip, which is measured only)."""
    if not isinstance(fault, (NeuronFault, SynapseFault, Precision)):
        raise InvalidArgumentError(f"Expected a fault model, but got {fault!r}.")
    return fault


@dataclass(frozen=True)
class BoundResult:
    """A certified bound on :math:`\\sup_x \\|F_{neu}(x) - F_{fail}(x)\\|_\\infty`.

    Attributes:
        value: the bound (``inf`` only when ``unbounded``: Lemma 1).
        method: ``"paper"`` or ``"tight"``.
        fault: the fault model.
        failures: f_l per layer (L entries; L+1 for synapse faults; empty for precision).
        per_layer: each layer's contribution (they sum to ``value`` for ``"paper"``).
        unbounded: True when no finite bound exists (unbounded capacity).
        notes: plain-language caveats.
        lower: ``method="exact"`` only: the error its witness reaches (replayed by the engine), so
            the true worst case lies in ``[lower, value]``; ``value - lower`` is :attr:`gap`.
        witness: ``method="exact"`` only: failure set, input and values reaching ``lower``.
        optimal: ``method="exact"`` only: the solver proved optimality (else it hit the time limit).
        rounding: the rounding allowance included in ``value`` for a network computing in float16 or
            bfloat16 (:mod:`faultbound.bounds.rounding`: the clean and the faulty network run in
            that format, each against exact arithmetic); 0.0 in float32 and float64.
    """

    value: float
    method: Method
    fault: Fault
    failures: tuple[int, ...]
    per_layer: tuple[float, ...]
    unbounded: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    lower: float | None = None
    witness: dict[str, Any] | None = None
    optimal: bool | None = None
    rounding: float = 0.0

    @property
    def gap(self) -> float | None:
        """``value - lower`` for ``method="exact"`` (``None`` for the other methods)."""
        return None if self.lower is None else max(0.0, self.value - self.lower)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "value": None if self.unbounded else self.value,
            "unbounded": self.unbounded,
            "method": self.method,
            "fault": self.fault.name,
            "fault_params": self.fault.to_dict(),
            "failures": list(self.failures),
            "per_layer": [None if not math.isfinite(v) else v for v in self.per_layer],
            "notes": list(self.notes),
            "rounding": self.rounding,
        }
        if self.method == "exact":
            out.update(gap=self.gap, lower=self.lower, optimal=self.optimal, witness=self.witness)
        return out


def bound(
    net: Network | GraphNetwork,
    failures: Sequence[int] | None = None,
    fault: Fault | None = None,
    method: Method | None = None,
    time_limit: float | None = None,
) -> BoundResult:
    """Certified bound on the output error for every input of the domain and every failure set
    with ``failures[l]`` failing units in layer l.

    Args:
        net: the network.
        failures: :math:`(f_1, \\dots, f_L)` (L+1 entries for synapse faults; omit for
            :class:`~faultbound.faults.Precision`).
        fault: the fault model, :class:`~faultbound.faults.Crash` by default.
        method: ``None`` (the default, :func:`default_method`: ``"paper"`` on a layered Network,
            ``"tight"`` on a GraphNetwork; the CLI's ``bound`` has the same default and
            ``result.method`` names the one used), ``"paper"`` (the paper's derivation, made
            sound; see :mod:`faultbound.bounds.paper`), ``"tight"`` (per-neuron propagation) or ``"exact"``
            (the exact worst case by MILP, piecewise-linear networks only, opt-in because it can be
            slow; see :mod:`faultbound.bounds.exact`). On a
            :class:`~faultbound.network.graph.GraphNetwork`: ``"tight"`` propagates over the graph
            (:mod:`faultbound.bounds.graph_tight`; ``per_layer`` is then per fault site),
            ``"exact"`` solves the graph's MILP, and ``"paper"`` is refused (:data:`GRAPH_PAPER`).
        time_limit: seconds for ``"exact"``; when the solver stops there, ``value`` is its dual
            bound (sound) and ``lower`` the best witness, with ``gap`` between them.

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> lin1, lin2 = nn.Linear(1, 2), nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = lin1.weight.fill_(1.0), lin1.bias.zero_(), lin2.weight.fill_(0.5), lin2.bias.zero_()
        >>> net = fb.Network.from_torch(nn.Sequential(lin1, nn.Sigmoid(), lin2))
        >>> fb.bound(net, [1]).value  # one crashed sigmoid (|y| <= 1) behind a weight of 0.5
        0.5
    """
    fault = Crash() if fault is None else fault
    if method is None:
        method = default_method(net)
    if method not in METHOD_NAMES:
        raise InvalidArgumentError(f"Expected `method` to be one of {', '.join(METHOD_NAMES)}, but got {method!r}.")
    if time_limit is not None and method != "exact":
        raise InvalidArgumentError("Expected `time_limit` only with method='exact'.")
    check_bounded(fault)
    check_graph_method(net, method)
    f = failure_counts(net, fault, failures, correct_neuron=True)
    if fault.unbounded and sum(f) > 0:
        per = tuple(math.inf if v > 0 else 0.0 for v in f)
        return BoundResult(math.inf, method, fault, f, per, True, (LEMMA1,))
    net.require_bounded_values()
    if method == "exact":
        return with_rounding(net, _exact(net, f, fault, time_limit))
    if isinstance(net, GraphNetwork):
        value, per_layer = graph_tight_bound(net, f if f else None, fault)
    else:
        value, per_layer = METHODS[method](net, f if f else None, fault)
    notes = list(fault.notes)
    if not all(math.isfinite(v) for v in [value, *per_layer]) or np.isnan(value):
        raise InvalidArgumentError("The bound is not finite; check the domain and the weights.")
    res = BoundResult(float(value), method, fault, f, tuple(float(v) for v in per_layer), False, tuple(notes))
    return with_rounding(net, res)


def with_rounding(net: Network | GraphNetwork, res: BoundResult) -> BoundResult:
    """``res`` with the rounding allowance of the network's format added to its value (and ``lower``
    left as measured), when the format is float16 or bfloat16
    (:data:`~faultbound.bounds.rounding.ADDED_FORMATS`): then
    :math:`|\\tilde F_{fmt}(x) - F_{fmt}(x)| \\le` ``value`` for the network run in its format; see
    :mod:`faultbound.bounds.rounding`. Unchanged otherwise, and for an unbounded result."""
    if net.dtype not in ADDED_FORMATS or res.unbounded:
        return res
    extra = rounding_allowance(net, res.fault, list(res.failures) if res.failures else None)
    note = (
        f"includes a rounding allowance of {extra:.3g} for {format_name(net.dtype)} arithmetic "
        "(the clean and the faulty network run in that format; docs/formats.md)."
    )
    return replace(res, value=res.value + extra, rounding=extra, notes=(*res.notes, note))


def _exact(net: Network | GraphNetwork, f: FailureCounts, fault: Fault, time_limit: float | None) -> BoundResult:
    """``method="exact"`` wrapped as a :class:`BoundResult` (``per_layer`` is not computed: it would
    take one more MILP per layer); :func:`~faultbound.bounds.exact.exact_bound` reads chains and
    graphs."""
    from faultbound.bounds.exact import exact_bound

    r = exact_bound(net, f if f else None, fault, time_limit=time_limit)
    notes = [
        "exact: per-layer contributions are not computed (one MILP per layer).",
    ]
    if r.optimal:
        notes.append(f"exact: solved to optimality; value = solver bound + margin {r.margin:.2g}.")
    else:
        notes.append(
            f"exact: solver stopped ({r.status}); the worst case lies in [{r.lower:.6g}, {r.value:.6g}], "
            "value is the solver's dual bound."
        )
    return BoundResult(
        float(r.value), "exact", fault, f, (), False, tuple(notes), float(r.lower), r.witness, r.optimal
    )
