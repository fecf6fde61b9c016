"""Fixed-point formats and the quantized forward pass over a :class:`~faultbound.network.core.Network`.

A format :math:`Q(i.b)` (signed, two's complement) or :math:`UQ(i.b)` (unsigned) stores a value
with ``i`` integer bits and ``b`` fractional bits; its step is :math:`2^{-b}` and it represents

.. math::

    UQ(i.b):\\ [0,\\ 2^i - 2^{-b}],\\qquad Q(i.b):\\ [-2^i,\\ 2^i - 2^{-b}]

in a word of :math:`i + b` (+1 sign) bits. Rounding to nearest, then saturating to the range, moves
any value of :math:`[lo - 2^{-(b+1)},\\ hi + 2^{-(b+1)}]` by at most :math:`2^{-(b+1)}`: rounding
errs by at most half a step, and saturation only moves a rounded value back towards the original.

:func:`quantized_forward` rounds every hidden layer's outputs to its format (Theorem 5's
:math:`\\lambda_l = 2^{-(b_l+1)}` under the output-error reading, ERRATA 4) and, optionally, every
weight and bias of a dense or convolutional layer to a format of its own.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import AnyNetwork
from faultbound.network.core import Layer, Network
from faultbound.network.ops import Conv, Dense

__all__ = ["FixedPoint", "fit_format", "quantize_layers", "quantized_forward"]


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point format: ``signed``, ``int_bits`` (i >= 0) and ``frac_bits`` (b >= 0)."""

    signed: bool
    int_bits: int
    frac_bits: int

    def __post_init__(self) -> None:
        if self.int_bits < 0 or self.frac_bits < 0:
            raise InvalidArgumentError(
                f"Expected int_bits >= 0 and frac_bits >= 0, but got {self.int_bits} and {self.frac_bits}."
            )

    @property
    def word_bits(self) -> int:
        """Bits stored per value: sign + integer + fractional."""
        return int(self.signed) + self.int_bits + self.frac_bits

    @property
    def step(self) -> float:
        return 2.0 ** (-self.frac_bits)

    @property
    def error(self) -> float:
        """Largest rounding error inside the covered range: :math:`2^{-(b+1)}`."""
        return 2.0 ** (-(self.frac_bits + 1))

    @property
    def lo(self) -> float:
        return -(2.0**self.int_bits) if self.signed else 0.0

    @property
    def hi(self) -> float:
        return 2.0**self.int_bits - self.step

    @property
    def max_abs(self) -> float:
        """Largest absolute value a stored number can have."""
        return max(abs(self.lo), abs(self.hi))

    @property
    def name(self) -> str:
        return f"{'Q' if self.signed else 'UQ'}({self.int_bits}.{self.frac_bits})"

    def covers(self, lo: float, hi: float) -> bool:
        """True when every value of [lo, hi] is stored with error at most :attr:`error`."""
        return lo >= self.lo - self.error and hi <= self.hi + self.error

    def quantize(self, t: Tensor) -> Tensor:
        """Round to nearest (ties to even) on the grid :math:`2^{-b}\\mathbb{Z}`, then saturate."""
        scale = 2.0**self.frac_bits
        return torch.clamp(torch.round(t * scale) / scale, self.lo, self.hi)

    def to_dict(self) -> dict[str, object]:
        return {
            "format": self.name,
            "signed": self.signed,
            "int_bits": self.int_bits,
            "frac_bits": self.frac_bits,
            "word_bits": self.word_bits,
            "max_error": self.error,
        }


def fit_format(lo: float, hi: float, frac_bits: int, min_frac_bits: int | None = None) -> FixedPoint:
    """The narrowest format with ``frac_bits`` fractional bits that covers [lo, hi].

    With ``min_frac_bits`` = :math:`b_0`, the integer bits i serve every :math:`b' \\ge b_0`: the
    top of the covered range, :math:`2^i - 2^{-(b+1)}`, grows with b, so covering ``hi`` at
    :math:`b_0` suffices; the bottom, :math:`-2^i - 2^{-(b+1)}`, shrinks towards :math:`-2^i` as b
    grows, so ``lo`` must then reach no lower than :math:`-2^i` itself.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InvalidArgumentError(f"Expected a finite range lo <= hi, but got [{lo}, {hi}].")
    b0 = frac_bits if min_frac_bits is None else min(min_frac_bits, frac_bits)
    signed = lo < 0

    def ok(i: int) -> bool:
        f0 = FixedPoint(signed, i, b0)
        if not f0.covers(lo, hi):
            return False
        return min_frac_bits is None or lo >= f0.lo

    i = 0
    while not (ok(i) and FixedPoint(signed, i, frac_bits).covers(lo, hi)):
        i += 1
        if i > 1024:  # pragma: no cover - finite ranges never get here
            raise InvalidArgumentError(f"Range [{lo}, {hi}] is too wide for a fixed-point format.")
    return FixedPoint(signed, i, frac_bits)


def _simple_weighted(layer: Layer) -> Dense | Conv:
    op = layer.weighted_op
    if op is None:
        raise InvalidArgumentError(
            f"Weight quantization supports layers made of one dense or convolution op, but layer "
            f"{layer.index} is {layer.describe()}."
        )
    assert isinstance(op, (Dense, Conv))  # the weighted ops; _fresh rebuilds their weight and bias
    return op


def _fresh(op: Dense | Conv, weight: Tensor, bias: Tensor) -> Dense | Conv:
    caches: dict[str, Any] = {f.name: {} for f in dataclasses.fields(op) if f.name.startswith("_")}
    return dataclasses.replace(op, weight=weight, bias=bias, **caches)


def quantize_layers(net: Network, weight_formats: Sequence[FixedPoint]) -> list[Layer]:
    """The layers 1..L+1 with every weight and bias of layer l rounded to ``weight_formats[l-1]``."""
    if len(weight_formats) != len(net.layers):
        raise InvalidArgumentError(
            f"Expected one weight format per layer 1..L+1 ({len(net.layers)}), but got {len(weight_formats)}."
        )
    out = []
    for layer, fmt in zip(net.layers, weight_formats, strict=True):
        op = _simple_weighted(layer)
        new = _fresh(op, fmt.quantize(op.weight), fmt.quantize(op.bias))
        ops = tuple(new if o is op else o for o in layer.ops)
        out.append(dataclasses.replace(layer, ops=ops))
    return out


def quantized_forward(
    net: AnyNetwork,
    x: Tensor,
    act_formats: Sequence[FixedPoint],
    weight_formats: Sequence[FixedPoint] | None = None,
) -> Tensor:
    """:math:`F_\\lambda(x)`: every hidden output rounded to its layer's format (float64).

    Args:
        x: a batch ``(B, *input_shape)``.
        act_formats: one format per hidden layer 1..L (per fault site of a graph network).
        weight_formats: one format per layer 1..L+1, or ``None`` to keep the weights exact.
    """
    if len(act_formats) != net.L:
        raise InvalidArgumentError(
            f"Expected one activation format per hidden layer ({net.L}), but got {len(act_formats)}."
        )
    if net.layers is None:  # a graph network: every fault site's output rounded to its format
        if weight_formats is not None:
            raise InvalidArgumentError("Weight formats are planned on layered networks only.")
        return net.forward(x.to(torch.float64), lambda s, v: act_formats[s].quantize(v))
    net = cast(Network, net)
    layers = quantize_layers(net, weight_formats) if weight_formats is not None else list(net.layers)
    y = x.to(torch.float64)
    for idx, layer in enumerate(layers):
        y = layer.forward(y)
        if layer.activation is not None:
            y = act_formats[idx].quantize(y)
    return y.reshape(x.shape[0], -1)
