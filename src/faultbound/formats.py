"""Number formats: the floating-point format a network computes in, and its rounding constants.

A network records the format of the model it was read from (``Network.dtype``,
``GraphNetwork.dtype``): float16, bfloat16, float32 or float64. Its weights are stored in float64
whatever the format (float16 and bfloat16 values are exact in float64). The constants below are
those of the standard model of floating-point arithmetic (Higham, *Accuracy and Stability of
Numerical Algorithms*, §2.2): for a real z inside the format's range,

.. math:: \\mathrm{fl}(z) = z (1 + \\delta) + \\eta,\\qquad |\\delta| \\le u,\\quad |\\eta| \\le \\eta_{min},
    \\quad \\delta \\eta = 0,

with the unit roundoff :math:`u = 2^{-p}` (p the precision in bits, the implicit bit included) and
:math:`\\eta_{min}` half the smallest subnormal (gradual underflow). A sum of n products computed in a
format of unit roundoff u, in any order, is off by at most :math:`\\gamma_n \\sum |w_i x_i|` with
:math:`\\gamma_n = n u / (1 - n u)` (Higham, Lemma 3.1 and §3.1), plus underflow terms.

Example:
    >>> import torch
    >>> from faultbound.formats import unit_roundoff, format_name
    >>> unit_roundoff(torch.float16), unit_roundoff(torch.bfloat16), format_name(torch.bfloat16)
    (0.00048828125, 0.00390625, 'bfloat16')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast, get_args

import torch

from faultbound.errors import InvalidArgumentError

__all__ = [
    "Arithmetic",
    "FORMATS",
    "FormatName",
    "format_dtype",
    "format_name",
    "gamma",
    "largest",
    "tiny_error",
    "unit_roundoff",
]

FormatName = Literal["float16", "bfloat16", "float32", "float64"]

#: The floating formats a network may compute in, by name.
FORMATS: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def format_name(dtype: torch.dtype) -> FormatName:
    """The name of a floating dtype (``torch.float16`` → ``"float16"``)."""
    for name, d in FORMATS.items():
        if d == dtype:
            return cast(FormatName, name)
    raise InvalidArgumentError(f"Expected a floating format ({', '.join(FORMATS)}), but got {dtype}.")


def format_dtype(fmt: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a format given by name or dtype; refused in one line otherwise."""
    if isinstance(fmt, torch.dtype):
        format_name(fmt)
        return fmt
    if fmt not in get_args(FormatName):
        raise InvalidArgumentError(f"Expected a floating format ({', '.join(FORMATS)}), but got {fmt!r}.")
    return FORMATS[fmt]


def unit_roundoff(dtype: torch.dtype) -> float:
    """:math:`u = 2^{-p}`, half the distance from 1 to the next number of the format
    (``torch.finfo(dtype).eps / 2``): 2⁻¹¹ for float16, 2⁻⁸ for bfloat16, 2⁻²⁴ for float32, 2⁻⁵³
    for float64."""
    format_name(dtype)
    return float(torch.finfo(dtype).eps) / 2


def tiny_error(dtype: torch.dtype) -> float:
    """:math:`\\eta_{min}`: the largest absolute error of rounding a number below the normal range,
    half the smallest subnormal (``finfo.smallest_normal * eps / 2``)."""
    fi = torch.finfo(dtype)
    return float(fi.smallest_normal) * float(fi.eps) / 2


def largest(dtype: torch.dtype) -> float:
    """The largest finite number of the format (65504 for float16)."""
    return float(torch.finfo(dtype).max)


def gamma(n: int, u: float) -> float:
    """:math:`\\gamma_n = n u / (1 - n u)`, the relative error bound of a sum of n terms in a format of
    unit roundoff u (``inf`` when :math:`n u \\ge 1`)."""
    nu = n * u
    return math.inf if nu >= 1 else nu / (1 - nu)


@dataclass(frozen=True)
class Arithmetic:
    """The arithmetic model of one pass: the format's unit roundoff ``u`` and underflow ``eta``, those
    of the accumulator of sums (``u_acc``, ``eta_acc``: float32 for float16 and bfloat16, the format
    itself otherwise), and ``incremental``: whether the engine may compute a weighted node's faulty
    value as the clean result plus an update (the layered engine's low-rank update, synapse faults)."""

    dtype: torch.dtype
    u: float
    eta: float
    u_acc: float
    eta_acc: float
    incremental: bool

    @staticmethod
    def of(dtype: torch.dtype, incremental: bool) -> Arithmetic:
        acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        return Arithmetic(
            dtype, unit_roundoff(dtype), tiny_error(dtype), unit_roundoff(acc), tiny_error(acc), incremental
        )

    def dot(self, n: int) -> float:
        """:math:`c_1`: a sum of n products accumulated at ``u_acc`` and rounded to the format at most
        twice (the sum, then the bias added), relative to the sum of the terms' magnitudes."""
        return 2 * self.u + (1 + self.u) ** 2 * gamma(n, self.u_acc)
