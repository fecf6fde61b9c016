"""What the readers share: the batch-norm map, the one-line refusal, small helpers.

Batch norm is read in one place for every reader: :func:`batch_norm` turns inference batch norm
into the per-channel affine map

.. math::

    \\mathrm{BN}(x)_c = \\gamma_c \\frac{x_c - \\mu_c}{\\sqrt{\\sigma^2_c + \\epsilon}} + \\beta_c
    = a_c x_c + t_c,\\qquad a_c = \\frac{\\gamma_c}{\\sqrt{\\sigma^2_c + \\epsilon}},\\quad
    t_c = \\beta_c - \\mu_c a_c,

which :meth:`~faultbound.network.graph.GraphNetwork.build` merges into the dense or convolution
node right before it (:math:`W \\to \\operatorname{diag}(a) W`, :math:`b \\to a \\odot b + t`, the
op's own :meth:`~faultbound.network.ops.Op.fold`) when nothing else reads that node.

This module imports no reader and not :mod:`faultbound.network.core`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.network.ops import ChannelAffine

__all__ = [
    "batch_norm",
    "batched_reference",
    "clean_float",
    "first_line",
    "module_dtype",
    "unsupported_line",
]

def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (no tracebacks in our messages)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


# ------------------------------------------------------------------------------- batch norm
def unsupported_line(what: str, found: Sequence[tuple[Any, str]]) -> str:
    """One line naming each distinct refusal once, at its first place, with how many more it has.

    Args:
        what: what is refused (``"operators"``, ``"ONNX operators"``).
        found: ``(key, first)`` in graph order, one per refused node: ``key`` tells refusals apart
            (the operator, and the reason when a setting of a known operator is refused) and
            ``first`` names the operator and its place (kept for the first node of each key).

    Example: ``Unsupported operators (2): aten.roll at node 'r' (roll, after fc (linear)) and 2 more
    places; aten.sort at node 's' (sort, after fc (linear)).``
    """
    firsts: dict[Any, str] = {}
    more: dict[Any, int] = {}
    for key, first in found:
        if key in firsts:
            more[key] += 1
        else:
            firsts[key], more[key] = first, 0
    parts = [
        f"{first} and {more[k]} more place{'s' if more[k] > 1 else ''}" if more[k] else first
        for k, first in firsts.items()
    ]
    return f"Unsupported {what} ({len(parts)}): {'; '.join(parts)}."


def batch_norm(
    mean: Tensor, var: Tensor, eps: float, gamma: Tensor | None = None, beta: Tensor | None = None
) -> ChannelAffine:
    """Inference batch norm as the per-channel affine map ``a x + t`` (see the module docstring).

    ``gamma`` (scale) and ``beta`` (shift) default to 1 and 0, as for ``affine=False``. Everything
    is computed in float64.
    """
    f64 = torch.float64
    mean, var = mean.detach().to(f64), var.detach().to(f64)
    g = torch.ones_like(mean) if gamma is None else gamma.detach().to(f64)
    b = torch.zeros_like(mean) if beta is None else beta.detach().to(f64)
    scale = g / torch.sqrt(var + float(eps))
    return ChannelAffine(scale.clone(), (b - mean * scale).clone())


def clean_float(v: float, dtype: Any = None) -> float:
    """``v`` as a float; a float32 (or float16) value becomes its shortest decimal (0.1, not 0.1000000015)."""
    if dtype is not None and np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float16)):
        return float(str(np.float32(v)))
    return float(v)


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype a module computes in: that of its first floating parameter or buffer
    (float32 when it has none), so that a float64 module is traced and checked in float64."""
    for t in (*module.parameters(), *module.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.float32


def batched_reference(run: Callable[[Tensor], Tensor], batch: int | None) -> Callable[[Tensor], Tensor]:
    """Wrap a model runner so it sees batches of exactly ``batch`` rows (when the model's batch is fixed).

    The last chunk is padded by repeating its first row; the padding is dropped from the result.
    """
    if batch is None:
        return run

    def chunked(x: Tensor) -> Tensor:
        outs = []
        for i in range(0, x.shape[0], batch):
            part = x[i : i + batch]
            n = part.shape[0]
            if n < batch:
                part = torch.cat([part, part[:1].expand(batch - n, *part.shape[1:])], 0)
            outs.append(run(part)[:n])
        return torch.cat(outs, 0)

    return chunked
