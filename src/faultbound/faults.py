"""Fault models as small frozen values, kept apart from how deviations propagate.

=====================  ======================================  =====================================
fault                  what the failing unit sends             deviation :math:`\\Delta` it causes
=====================  ======================================  =====================================
``Crash()``            0                                       :math:`|y| \\le Y_l`
``Byzantine(C)``       any value in [-C, C]                    :math:`C + Y_l` (ERRATA 2)
``ByzantineDeviation`` :math:`y + u`, y fault-free, :math:`|u|\\le C`  C (the paper's printed reading)
``StuckAt(v)``         the constant v                          :math:`|v| + Y_l`
``SynapseCrash()``     0 instead of :math:`w_{ji} y_i`          :math:`|w_{ji}|\\, Y_{l-1}`
``SynapseByzantine``   any value in [-C, C] instead of w y     :math:`C + |w_{ji}|\\, Y_{l-1}`
``Precision(λ)``       every output of layer l off by ≤ λ_l    :math:`\\lambda_l` at every neuron
=====================  ======================================  =====================================

:math:`Y_l` is the largest absolute value a neuron of layer l takes: :math:`\\max|\\varphi|` for a
bounded activation, or the interval-propagation bound over the input domain (ERRATA 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError

__all__ = [
    "Fault",
    "NeuronFault",
    "SynapseFault",
    "Crash",
    "Byzantine",
    "ByzantineDeviation",
    "StuckAt",
    "SynapseCrash",
    "SynapseByzantine",
    "Precision",
    "parse_fault",
    "FAULTS",
    "FAULT_NAMES",
]


def _required(value: Tensor | None, fault: Fault) -> Tensor:
    if value is None:
        raise InvalidArgumentError(f"Fault {fault.name!r} needs the values its failing units send.")
    return value


def _check_capacity(c: float) -> None:
    if not (c >= 0) or math.isnan(c):
        raise InvalidArgumentError(f"Expected `capacity` >= 0, but got {c}.")


@dataclass(frozen=True)
class Fault:
    """Base class of the fault models."""

    @property
    def name(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class NeuronFault(Fault):
    """A fault of whole neurons; ``failures`` counts neurons per hidden layer 1..L."""

    def deviation(self, y_abs: float) -> float:
        """Largest :math:`|\\tilde y - y|` at a failing neuron whose nominal value is within
        :math:`\\pm` ``y_abs``."""
        raise NotImplementedError

    def sends(self, current: Tensor, clean: Tensor, value: Tensor | None) -> Tensor:
        """What failing units send: *the* statement of the fault model, which the measurement engine
        applies and every bound covers.

        Args:
            current: the units' values in the faulty network (upstream faults included).
            clean: their fault-free values.
            value: the chosen values (Byzantine models: the value or offset u, broadcastable).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class SynapseFault(Fault):
    """A fault of synapses; ``failures`` counts synapses into layers 1..L+1."""

    def deviation(self, w_abs: float, y_abs: float) -> float:
        """Largest change of the receiving sum when a synapse of weight ``w_abs`` carrying a value
        within :math:`\\pm` ``y_abs`` fails."""
        raise NotImplementedError


@dataclass(frozen=True)
class Crash(NeuronFault):
    """A crashed neuron sends 0 (Definition 2)."""

    @property
    def name(self) -> str:
        return "crash"

    def deviation(self, y_abs: float) -> float:
        return y_abs

    def sends(self, current: Tensor, clean: Tensor, value: Tensor | None) -> Tensor:
        return torch.zeros_like(current)


@dataclass(frozen=True)
class Byzantine(NeuronFault):
    """A Byzantine neuron sends any value in [-C, C] (Assumption 1). Deviation :math:`C + Y_l`.

    ``capacity=math.inf`` is unbounded transmission (Lemma 1): nothing is tolerated.
    """

    capacity: float = 1.0

    def __post_init__(self) -> None:
        _check_capacity(self.capacity)

    @property
    def name(self) -> str:
        return "byzantine"

    def deviation(self, y_abs: float) -> float:
        return self.capacity + y_abs

    def sends(self, current: Tensor, clean: Tensor, value: Tensor | None) -> Tensor:
        """The chosen value v, :math:`|v| \\le C`."""
        return _required(value, self).expand_as(current)


@dataclass(frozen=True)
class ByzantineDeviation(NeuronFault):
    """The printed reading of Theorem 2: a failing neuron sends :math:`y + u`, :math:`|u| \\le C`,
    where y is its *fault-free* value (the measurement engine's semantics too), so its output is
    off by at most C from the nominal value.

    This is *not* Assumption 1 (where C bounds the value sent); under that assumption use
    :class:`Byzantine`. Kept so that the printed formula can be evaluated and shown unsound for
    value-bounded Byzantine neurons (ERRATA 2).
    """

    capacity: float = 1.0

    def __post_init__(self) -> None:
        _check_capacity(self.capacity)

    @property
    def name(self) -> str:
        return "byzantine-deviation"

    def deviation(self, y_abs: float) -> float:
        return self.capacity

    def sends(self, current: Tensor, clean: Tensor, value: Tensor | None) -> Tensor:
        """The *fault-free* value plus the chosen offset u, :math:`|u| \\le C`."""
        return clean + _required(value, self)


@dataclass(frozen=True)
class StuckAt(NeuronFault):
    """A failing neuron sends the constant ``value`` (a stuck-at fault)."""

    value: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise InvalidArgumentError(f"Expected a finite stuck-at value, but got {self.value}.")

    @property
    def name(self) -> str:
        return "stuck-at"

    def deviation(self, y_abs: float) -> float:
        return abs(self.value) + y_abs

    def sends(self, current: Tensor, clean: Tensor, value: Tensor | None) -> Tensor:
        return torch.full_like(current, self.value)


@dataclass(frozen=True)
class SynapseCrash(SynapseFault):
    """A crashed synapse transmits 0 instead of :math:`w_{ji} y_i` (Lemma 2, ERRATA 3)."""

    @property
    def name(self) -> str:
        return "synapse-crash"

    def deviation(self, w_abs: float, y_abs: float) -> float:
        return w_abs * y_abs


@dataclass(frozen=True)
class SynapseByzantine(SynapseFault):
    """A Byzantine synapse transmits any value in [-C, C] instead of :math:`w_{ji} y_i`."""

    capacity: float = 1.0

    def __post_init__(self) -> None:
        _check_capacity(self.capacity)

    @property
    def name(self) -> str:
        return "synapse-byzantine"

    def deviation(self, w_abs: float, y_abs: float) -> float:
        return self.capacity + w_abs * y_abs


@dataclass(frozen=True)
class Precision(Fault):
    """Reduced precision: every output of hidden layer l is off by at most ``errors[l-1]``
    (Theorem 5, under the output-error reading of ERRATA 4)."""

    errors: tuple[float, ...]

    def __init__(self, errors: Sequence[float]) -> None:
        errs = tuple(float(e) for e in errors)
        if any(not (e >= 0) or not math.isfinite(e) for e in errs):
            raise InvalidArgumentError(f"Expected finite precision errors >= 0, but got {errs}.")
        object.__setattr__(self, "errors", errs)

    @property
    def name(self) -> str:
        return "precision"


#: The fault models by CLI name: each builds its frozen value from ``(capacity, value)``.
FAULTS: dict[str, Callable[[float, float], Fault]] = {
    "crash": lambda c, v: Crash(),
    "byzantine": lambda c, v: Byzantine(c),
    "byzantine-deviation": lambda c, v: ByzantineDeviation(c),
    "stuck-at": lambda c, v: StuckAt(v),
    "synapse-crash": lambda c, v: SynapseCrash(),
    "synapse-byzantine": lambda c, v: SynapseByzantine(c),
}
FAULT_NAMES = tuple(FAULTS)


def parse_fault(name: str, capacity: float | None = None, value: float | None = None) -> Fault:
    """Build a fault from its CLI name (``crash``, ``byzantine``, ``synapse-crash``, ...).

    ``capacity`` defaults to 1, the stuck-at ``value`` to 0.

    Example:
        >>> parse_fault("byzantine", capacity=0.5)
        Byzantine(capacity=0.5)
    """
    make = FAULTS.get(name)
    if make is None:
        raise InvalidArgumentError(f"Expected `fault` to be one of {', '.join(FAULT_NAMES)}, but got {name!r}.")
    return make(1.0 if capacity is None else float(capacity), 0.0 if value is None else float(value))
