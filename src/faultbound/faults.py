"""Fault models: what a failing unit sends, stated once, and read by every bound and the engine.

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
``BitFlip``            one bit of a value or weight flipped    (measured only)
=====================  ======================================  =====================================

:math:`Y_l` is the largest absolute value a neuron of layer l takes: :math:`\\max|\\varphi|` for a
bounded activation, or the interval-propagation bound over the input domain (ERRATA 7).

**One statement per model.** A neuron or synapse fault states what its failing unit sends as a
:class:`Sent`: :math:`g\\,y + v` with :math:`y` the unit's fault-free value (its fault-free
:math:`w_{ji} y_i` for a synapse), a gain :math:`g` and :math:`v \\in [v_{lo}, v_{hi}]` chosen by the
adversary. The deviation bound, the interval of sent values (the MILP), the values the engine
sends and the values a worst-case search may choose are all derived from it, so a new model of
this shape is one class in this file. :attr:`Fault.site` says where a model strikes (a neuron, a
synapse, a weight or a whole layer); the engine applies faults through a table keyed by it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast, get_args

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError

__all__ = [
    "Fault",
    "NeuronFault",
    "SynapseFault",
    "Sent",
    "Site",
    "Crash",
    "Byzantine",
    "ByzantineDeviation",
    "StuckAt",
    "SynapseCrash",
    "SynapseByzantine",
    "Precision",
    "BitFlip",
    "for_dtype",
    "parse_fault",
    "fault_from_record",
    "FAULTS",
    "FAULT_NAMES",
]

#: Where a fault strikes: a neuron's output, a synapse, a weight, or every neuron of a layer.
Site = Literal["neuron", "synapse", "weight", "layer"]


def _check_capacity(c: float) -> None:
    if not (c >= 0) or math.isnan(c):
        raise InvalidArgumentError(f"Expected `capacity` >= 0, but got {c}.")


@dataclass(frozen=True)
class Sent:
    """What a failing unit sends: :math:`g\\,y + v`, :math:`v \\in [lo, hi]`, with y the unit's
    fault-free value.

    The deviation from the fault-free value is :math:`(g - 1)\\,y + v`, so

    .. math::  |\\tilde y - y| \\le |g - 1|\\,Y + \\max(|lo|, |hi|)

    whenever :math:`|y| \\le Y`.
    """

    gain: float
    lo: float
    hi: float

    @property
    def magnitude(self) -> float:
        """:math:`\\max(|lo|, |hi|)`."""
        return max(abs(self.lo), abs(self.hi))

    @property
    def chosen(self) -> bool:
        """Does the adversary choose v (lo < hi)?"""
        return self.lo < self.hi

    def deviation(self, y_abs: Any) -> Any:
        """:math:`|g-1|\\,Y + \\max(|lo|,|hi|)`, for a float or a tensor/array Y."""
        g = abs(self.gain - 1.0)
        if g == 0:
            return self.magnitude
        return (y_abs if g == 1 else g * y_abs) + self.magnitude

    def range(self, y_lo: Any, y_hi: Any) -> tuple[Any, Any]:
        """Interval of :math:`g\\,y + v` when :math:`y \\in [y_{lo}, y_{hi}]` (floats, arrays or tensors)."""
        if self.gain == 0:
            return self.lo, self.hi
        a, b = self.gain * y_lo, self.gain * y_hi
        if self.gain < 0:
            a, b = b, a
        return a + self.lo, b + self.hi

    def value(self, clean: Tensor, v: Tensor | None) -> Tensor:
        """:math:`g\\,y + v` for fault-free values ``clean`` and chosen ``v`` (broadcastable); ``v``
        may be omitted when the model leaves no choice (lo = hi)."""
        if v is None:
            if self.chosen:
                raise InvalidArgumentError("This fault model needs the values its failing units send.")
            v = torch.full((), self.lo, dtype=clean.dtype)
        if self.gain == 0:
            return v.to(clean.dtype).expand_as(clean)
        if self.gain == 1:
            return clean + v
        return self.gain * clean + v


@dataclass(frozen=True)
class Fault:
    """Base class of the fault models.

    Class attributes a model sets: :attr:`site`, :attr:`adjective` (words: "crashed") and
    :attr:`notes` (attached to every bound of the model).
    """

    site: ClassVar[Site] = "neuron"
    adjective: ClassVar[str] = "failing"
    notes: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def counted(self) -> bool:
        """Do failures come as counts of units per layer (False: every unit of a layer is off)?"""
        return self.site != "layer"

    @property
    def chooses_values(self) -> bool:
        """Does the adversary choose the values failing units send (Byzantine, precision)?"""
        return False

    def magnitudes(self, n_layers: int) -> list[float]:
        """Per layer, the largest :math:`|v|` an adversary may choose (0 when it chooses nothing)."""
        return [0.0] * n_layers

    @property
    def unbounded(self) -> bool:
        """May a failing unit send values of unbounded magnitude (``capacity=inf``)? Then no
        finite bound exists (Lemma 1)."""
        return any(math.isinf(m) for m in self.magnitudes(1))

    def label(self) -> str:
        """A short human name: ``crash``, ``byzantine (C = 1)``, ``stuck-at 0.5``, ..."""
        return self.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"name": ..., <parameters>}`` (an infinite capacity as None)."""
        d: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else (None if v == math.inf else v)
        return d

    def to_record(self) -> dict[str, Any]:
        """``{"class": ..., "fields": ...}``, read back by :func:`fault_from_record` (an infinite
        capacity as the string ``"inf"``)."""
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            fields[f.name] = list(v) if isinstance(v, tuple) else ("inf" if v == math.inf else v)
        return {"class": type(self).__name__, "fields": fields}

    def value_ranges(self, n_layers: int) -> list[tuple[float, float]]:
        """Per layer, the interval ``(lo, hi)`` of the values an adversary may choose: symmetric,
        :math:`\\pm` :meth:`magnitudes`, unless the model states otherwise."""
        return [(-m, m) for m in self.magnitudes(n_layers)]

    @property
    def flippable(self) -> tuple[int, ...]:
        """The bits a failing unit may flip (bit-flip models, drawn per failing unit); ``()`` for
        every other model."""
        return ()


@dataclass(frozen=True)
class _UnitFault(Fault):
    """A fault of single units (neurons or synapses) stated by :attr:`sent`."""

    @property
    def sent(self) -> Sent:
        """What a failing unit sends (the model's one statement)."""
        raise NotImplementedError

    @property
    def chooses_values(self) -> bool:
        return self.sent.chosen

    def magnitudes(self, n_layers: int) -> list[float]:
        return [self.sent.magnitude if self.sent.chosen else 0.0] * n_layers

    def value_ranges(self, n_layers: int) -> list[tuple[float, float]]:
        """``[sent.lo, sent.hi]`` in every layer (``(0, 0)`` when nothing is chosen)."""
        return [(self.sent.lo, self.sent.hi) if self.sent.chosen else (0.0, 0.0)] * n_layers


@dataclass(frozen=True)
class NeuronFault(_UnitFault):
    """A fault of whole neurons; ``failures`` counts neurons per hidden layer 1..L."""

    site: ClassVar[Site] = "neuron"

    def deviation(self, y_abs: Any) -> Any:
        """Largest :math:`|\\tilde y - y|` at a failing neuron whose nominal value is within
        :math:`\\pm` ``y_abs`` (a float or a tensor)."""
        return self.sent.deviation(y_abs)

    def sends(self, current: Tensor, clean: Tensor, value: Tensor | None) -> Tensor:
        """What failing units send: *the* statement of the fault model, which the measurement engine
        applies and every bound covers.

        Args:
            current: the units' values in the faulty network (upstream faults included).
            clean: their fault-free values.
            value: the chosen v (Byzantine models: the value or offset, broadcastable).
        """
        return self.sent.value(clean, value).expand_as(current)


@dataclass(frozen=True)
class SynapseFault(_UnitFault):
    """A fault of synapses; ``failures`` counts synapses into layers 1..L+1. :attr:`sent` is what a
    failing synapse transmits, with y its fault-free :math:`w_{ji} y_i`."""

    site: ClassVar[Site] = "synapse"

    def deviation(self, w_abs: Any, y_abs: Any) -> Any:
        """Largest change of the receiving sum when a synapse of weight ``w_abs`` carrying a value
        within :math:`\\pm` ``y_abs`` fails."""
        return self.sent.deviation(w_abs * y_abs)

    def transmits(self, wy: Tensor, value: Tensor | None) -> Tensor:
        """What failing synapses transmit instead of their fault-free :math:`w_{ji} y_i` (``wy``)."""
        return self.sent.value(wy, value).expand_as(wy)


def _capacity_label(name: str, c: float) -> str:
    return f"{name} (C = {'inf' if c == math.inf else f'{c:g}'})"


_VALUE_NOTE = "Byzantine deviation = C + max|value| (docs/errata.md §2, §3)."


@dataclass(frozen=True)
class Crash(NeuronFault):
    """A crashed neuron sends 0 (Definition 2)."""

    adjective: ClassVar[str] = "crashed"

    @property
    def name(self) -> str:
        return "crash"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Byzantine(NeuronFault):
    """A Byzantine neuron sends any value in [-C, C] (Assumption 1). Deviation :math:`C + Y_l`.

    ``capacity=math.inf`` is unbounded transmission (Lemma 1): nothing is tolerated.
    """

    capacity: float = 1.0
    adjective: ClassVar[str] = "Byzantine"
    notes: ClassVar[tuple[str, ...]] = (_VALUE_NOTE,)

    def __post_init__(self) -> None:
        _check_capacity(self.capacity)

    @property
    def name(self) -> str:
        return "byzantine"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, -self.capacity, self.capacity)

    def label(self) -> str:
        return _capacity_label(self.name, self.capacity)


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
    adjective: ClassVar[str] = "Byzantine (deviation-bounded)"
    notes: ClassVar[tuple[str, ...]] = (
        "byzantine-deviation is the printed reading of Theorem 2 (C bounds the deviation); "
        "for neurons that send values in [-C, C] use byzantine (docs/errata.md §2).",
    )

    def __post_init__(self) -> None:
        _check_capacity(self.capacity)

    @property
    def name(self) -> str:
        return "byzantine-deviation"

    @property
    def sent(self) -> Sent:
        return Sent(1.0, -self.capacity, self.capacity)

    def label(self) -> str:
        return _capacity_label(self.name, self.capacity)


@dataclass(frozen=True)
class StuckAt(NeuronFault):
    """A failing neuron sends the constant ``value`` (a stuck-at fault)."""

    value: float = 0.0
    adjective: ClassVar[str] = "stuck-at"

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise InvalidArgumentError(f"Expected a finite stuck-at value, but got {self.value}.")

    @property
    def name(self) -> str:
        return "stuck-at"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, self.value, self.value)

    def label(self) -> str:
        return f"stuck-at {self.value:g}"


@dataclass(frozen=True)
class SynapseCrash(SynapseFault):
    """A crashed synapse transmits 0 instead of :math:`w_{ji} y_i` (Lemma 2, ERRATA 3)."""

    adjective: ClassVar[str] = "crashed"

    @property
    def name(self) -> str:
        return "synapse-crash"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class SynapseByzantine(SynapseFault):
    """A Byzantine synapse transmits any value in [-C, C] instead of :math:`w_{ji} y_i`."""

    capacity: float = 1.0
    adjective: ClassVar[str] = "Byzantine"
    notes: ClassVar[tuple[str, ...]] = (_VALUE_NOTE,)

    def __post_init__(self) -> None:
        _check_capacity(self.capacity)

    @property
    def name(self) -> str:
        return "synapse-byzantine"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, -self.capacity, self.capacity)

    def label(self) -> str:
        return _capacity_label(self.name, self.capacity)


@dataclass(frozen=True)
class Precision(Fault):
    """Reduced precision: every output of hidden layer l is off by at most ``errors[l-1]``
    (Theorem 5, under the output-error reading of ERRATA 4): it sends :math:`y' + u`,
    :math:`|u| \\le \\lambda_l`, with y' its (upstream-perturbed) value."""

    errors: tuple[float, ...]
    site: ClassVar[Site] = "layer"

    def __init__(self, errors: Sequence[float]) -> None:
        errs = tuple(float(e) for e in errors)
        if any(not (e >= 0) or not math.isfinite(e) for e in errs):
            raise InvalidArgumentError(f"Expected finite precision errors >= 0, but got {errs}.")
        object.__setattr__(self, "errors", errs)

    @property
    def name(self) -> str:
        return "precision"

    @property
    def chooses_values(self) -> bool:
        return True

    def magnitudes(self, n_layers: int) -> list[float]:
        return list(self.errors)

    def label(self) -> str:
        return "precision (" + ", ".join(f"λ{i}={e:g}" for i, e in enumerate(self.errors, 1)) + ")"


BitFormat = Literal["native", "float16", "bfloat16", "float32", "int8"]

#: The float words a bit flip may act on: the integer type of the same width, and the width.
_WORDS: dict[str, tuple[torch.dtype, torch.dtype, int]] = {
    "float16": (torch.float16, torch.int16, 16),
    "bfloat16": (torch.bfloat16, torch.int16, 16),
    "float32": (torch.float32, torch.int32, 32),
}


def _masks(width: int, itype: torch.dtype) -> Tensor:
    """Bit i of a two's-complement word of ``width`` bits, as that integer type (bit width-1 is the sign)."""
    return torch.tensor([(1 << i) if i < width - 1 else -(1 << (width - 1)) for i in range(width)], dtype=itype)


_MASKS = {name: _masks(width, itype) for name, (_, itype, width) in _WORDS.items()}
_NATIVE = (
    "BitFlip(format='native') flips bits of the format the engine runs in: resolve it with "
    "fault.in_format(dtype) (the measurement functions do), or name the format."
)


@dataclass(frozen=True)
class BitFlip(Fault):
    """A single-event upset: one bit of a neuron's output (``target="neuron"``) or of a weight
    (``target="weight"``) flips. Measured only: no bound covers it.

    ``format="native"`` (the default) flips a bit of the IEEE-754 word of the format the engine runs
    in, which is the network's own format by default: bits 0..15 of a float16 or bfloat16 word, 0..31
    of a float32 word (the last is the sign); the measurement functions resolve it
    (:meth:`in_format`) before they draw bits. ``"float16"``, ``"bfloat16"`` and ``"float32"`` name
    the word explicitly (the value is rounded to it, flipped, and read back in the engine's format).
    ``format="int8"`` flips a bit of the two's-complement int8 fixed-point code
    :math:`q = \\mathrm{round}(v / s)` with scale :math:`s = Y_l / 127` for neurons (:math:`Y_l` the
    largest value over the domain) and :math:`s = w_m^{(l)} / 127` for weights; the unit then
    changes by :math:`(q' - q) s`. ``bits`` restricts which bits may flip (default: all).
    """

    target: Literal["neuron", "weight"] = "neuron"
    format: BitFormat = "native"
    bits: tuple[int, ...] | None = None
    adjective: ClassVar[str] = "bit-flipped"

    def __post_init__(self) -> None:
        if self.target not in ("neuron", "weight"):
            raise InvalidArgumentError(f"Expected bit-flip target 'neuron' or 'weight', but got {self.target!r}.")
        if self.format not in get_args(BitFormat):
            raise InvalidArgumentError(
                f"Expected bit-flip format {', '.join(get_args(BitFormat))}, but got {self.format!r}."
            )
        if self.format == "native":
            if self.bits is not None and (not self.bits or any(not 0 <= b < 32 for b in self.bits)):
                raise InvalidArgumentError(f"Expected bits in 0..31, but got {self.bits}.")
            return
        width = self.n_bits
        if self.bits is not None and (not self.bits or any(not 0 <= b < width for b in self.bits)):
            raise InvalidArgumentError(f"Expected bits in 0..{width - 1} for {self.format}, but got {self.bits}.")

    def in_format(self, dtype: torch.dtype) -> BitFlip:
        """This fault with ``format="native"`` made the word of ``dtype`` (float64 runs flip float32
        words, the widest word the engine flips); any other format is returned as it is.

        Raises:
            InvalidArgumentError: ``bits`` outside the word of ``dtype``.
        """
        if self.format != "native":
            return self
        name = {torch.float16: "float16", torch.bfloat16: "bfloat16"}.get(dtype, "float32")
        return BitFlip(self.target, cast(BitFormat, name), self.bits)

    @property
    def site(self) -> Site:  # type: ignore[override]  # a property here: it depends on `target`
        return self.target

    @property
    def name(self) -> str:
        return f"bitflip-{self.target}"

    @property
    def n_bits(self) -> int:
        """The word's width; a ``"native"`` fault has none until :meth:`in_format` resolves it."""
        if self.format == "native":
            raise InvalidArgumentError(_NATIVE)
        return 8 if self.format == "int8" else _WORDS[self.format][2]

    @property
    def flippable(self) -> tuple[int, ...]:
        return self.bits if self.bits is not None else tuple(range(self.n_bits))

    def sends(self, current: Tensor, clean: Tensor, value: Tensor, scale: float = 1.0) -> Tensor:
        """What a neuron with a flipped bit sends: its *current* value (upstream faults included; a
        bit flip acts on what the neuron computes, so ``clean`` is unused) with bit ``value`` flipped
        (:meth:`flipped`; ``scale``: the int8 step s)."""
        return self.flipped(current, value, scale)

    def change(self, v: Tensor, bits: Tensor, scale: float) -> Tensor:
        """:math:`v' - v` when bit ``bits`` of ``v`` flips (``scale``: the int8 step s); for a float
        word, v is first rounded to it, and the change is that of the word."""
        if self.format != "int8":
            w = self._word(v)
            flipped = self._flip(w, bits)
            return (flipped.to(torch.float64) - w.to(torch.float64)).to(v.dtype)
        q = torch.clamp(torch.round(v.to(torch.float64) / scale), -128, 127).to(torch.int64)
        u = q & 0xFF
        u2 = u ^ (1 << bits)
        q2 = torch.where(u2 >= 128, u2 - 256, u2)
        return ((q2 - q).to(torch.float64) * scale).to(v.dtype)

    def flipped(self, v: Tensor, bits: Tensor, scale: float) -> Tensor:
        """:math:`v'`: the float word with the bit flipped, or :math:`v + (q' - q)s` for int8."""
        if self.format != "int8":
            return self._flip(self._word(v), bits).to(v.dtype)
        return v + self.change(v, bits, scale)

    def _word(self, v: Tensor) -> Tensor:
        if self.format not in _WORDS:
            raise InvalidArgumentError(_NATIVE)
        return v.to(_WORDS[self.format][0]).contiguous()

    def _flip(self, w: Tensor, bits: Tensor) -> Tensor:
        fdtype, itype, _ = _WORDS[self.format]
        return (w.view(itype) ^ _MASKS[self.format][bits]).view(fdtype)


def for_dtype(fault: Fault, dtype: torch.dtype) -> Fault:
    """``fault`` as the engine running in ``dtype`` applies it: a ``BitFlip(format="native")``
    becomes the bit flip of that format's word (:meth:`BitFlip.in_format`); every other fault is
    returned as it is."""
    return fault.in_format(dtype) if isinstance(fault, BitFlip) else fault


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


def _classes() -> dict[str, type[Fault]]:
    """Every concrete fault model of this module, by class name."""
    out: dict[str, type[Fault]] = {}
    for n in __all__:
        obj = globals()[n]
        abstract = (Fault, _UnitFault, NeuronFault, SynapseFault)
        if isinstance(obj, type) and issubclass(obj, Fault) and obj not in abstract:
            out[n] = obj
    return out


def fault_from_record(d: dict[str, Any]) -> Fault:
    """The fault model a :meth:`Fault.to_record` record describes (only faultbound's own classes)."""
    cls = _classes().get(str(d.get("class")))
    if cls is None or not isinstance(d.get("fields"), dict):
        raise InvalidArgumentError(f"Expected a faultbound fault model, but got {d.get('class')!r}.")
    kw = {k: (math.inf if v == "inf" else tuple(v) if isinstance(v, list) else v) for k, v in d["fields"].items()}
    try:
        return cls(**kw)
    except TypeError as e:
        raise InvalidArgumentError(f"Expected the fields of {cls.__name__}, but got {sorted(kw)}: {e}.") from None
