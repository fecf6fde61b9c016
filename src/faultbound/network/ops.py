"""Affine operations that make up one layer's map from the previous layer's neurons.

A layer l of the paper computes :math:`s^{(l)} = A^{(l)} y^{(l-1)} + b^{(l)}` and then
:math:`y^{(l)} = \\varphi(s^{(l)})`. Here :math:`A^{(l)}` is a chain of primitive operations
(dense, convolution, average pooling, per-channel affine, flatten), so that pooling and unfolded
batch norms need no special case anywhere else. Each op knows

* :meth:`forward` -- the affine map itself on a batch ``(B, *in_shape)`` in the batch's dtype;
* :meth:`abs_linear` -- :math:`|A|\\,e` for a non-negative ``e``: the linear part with every weight
  replaced by its absolute value. For a chain, applying the ops' ``abs_linear`` in turn gives an
  upper bound of :math:`|A_k \\cdots A_1|\\,e` (triangle inequality), which is all a sound bound
  needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

__all__ = ["Op", "Dense", "Conv", "AvgPool", "Flatten", "ChannelAffine"]


def _cast(t: Tensor, cache: dict[torch.dtype, Tensor], dtype: torch.dtype) -> Tensor:
    if t.dtype == dtype:
        return t
    got = cache.get(dtype)
    if got is None:
        got = cache[dtype] = t.to(dtype)
    return got


@dataclass(frozen=True, eq=False)
class Op:
    """Base class of the affine operations."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def linear(self, x: Tensor) -> Tensor:
        """The linear part (no bias)."""
        raise NotImplementedError

    def abs_linear(self, e: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def weighted(self) -> bool:
        """True for ops with learned weights (dense, convolution)."""
        return False


@dataclass(frozen=True, eq=False)
class Dense(Op):
    """:math:`x \\mapsto W x + b` with ``W`` of shape (out, in)."""

    weight: Tensor
    bias: Tensor
    _cw: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)
    _cb: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)
    _abs: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, _cast(self.weight, self._cw, x.dtype), _cast(self.bias, self._cb, x.dtype))

    def linear(self, x: Tensor) -> Tensor:
        return F.linear(x, _cast(self.weight, self._cw, x.dtype))

    def abs_linear(self, e: Tensor) -> Tensor:
        w = self._abs.get(e.dtype)
        if w is None:
            w = self._abs[e.dtype] = self.weight.abs().to(e.dtype)
        return F.linear(e, w)

    @property
    def weighted(self) -> bool:
        return True


@dataclass(frozen=True, eq=False)
class Conv(Op):
    """2-D convolution :math:`x \\mapsto W * x + b` with ``W`` of shape (C_out, C_in, kh, kw)."""

    weight: Tensor
    bias: Tensor
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    _cw: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)
    _cb: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)
    _abs: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x,
            _cast(self.weight, self._cw, x.dtype),
            _cast(self.bias, self._cb, x.dtype),
            self.stride,
            self.padding,
        )

    def linear(self, x: Tensor) -> Tensor:
        return F.conv2d(x, _cast(self.weight, self._cw, x.dtype), None, self.stride, self.padding)

    def abs_linear(self, e: Tensor) -> Tensor:
        w = self._abs.get(e.dtype)
        if w is None:
            w = self._abs[e.dtype] = self.weight.abs().to(e.dtype)
        return F.conv2d(e, w, None, self.stride, self.padding)

    @property
    def fan_in(self) -> int:
        return int(self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3])

    @property
    def weighted(self) -> bool:
        return True


@dataclass(frozen=True, eq=False)
class AvgPool(Op):
    """2-D average pooling (``count_include_pad=True``, floor mode): linear, non-negative weights."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding)

    def linear(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def abs_linear(self, e: Tensor) -> Tensor:
        return self.forward(e)


@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """Reshape ``(B, *shape)`` to ``(B, prod(shape))``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def linear(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def abs_linear(self, e: Tensor) -> Tensor:
        return self.forward(e)


@dataclass(frozen=True, eq=False)
class ChannelAffine(Op):
    """Per-channel :math:`x_c \\mapsto a_c x_c + t_c` (an unfolded batch norm), channel axis 1."""

    scale: Tensor
    shift: Tensor

    def _view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.to(x.dtype).reshape((1, -1) + (1,) * (x.dim() - 2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._view(self.scale, x) + self._view(self.shift, x)

    def linear(self, x: Tensor) -> Tensor:
        return x * self._view(self.scale, x)

    def abs_linear(self, e: Tensor) -> Tensor:
        return e * self._view(self.scale.abs(), e)
