"""Affine operations that make up one layer's map from the previous layer's neurons.

A layer l of the paper computes :math:`s^{(l)} = A^{(l)} y^{(l-1)} + b^{(l)}` and then
:math:`y^{(l)} = \\varphi(s^{(l)})`. Here :math:`A^{(l)}` is a chain of primitive operations
(dense, convolution, average pooling, per-channel affine, flatten), so that pooling and unfolded
batch norms need no special case anywhere else. Each op knows

* :meth:`forward` -- the affine map itself on a batch ``(B, *in_shape)`` in the batch's dtype;
* :meth:`abs_linear` -- :math:`|A|\\,e` for a non-negative ``e``: the linear part with every weight
  replaced by its absolute value. For a chain, applying the ops' ``abs_linear`` in turn gives an
  upper bound of :math:`|A_k \\cdots A_1|\\,e` (triangle inequality), which is all a sound bound
  needs;

and every other rule that depends on the kind of op, as methods of its class (so adding an op is
one class here): :meth:`Op.window` (its receptive field on a ``(C, H, W)`` input, for the band rows
of the tight bound), :meth:`Op.fan_in` and :meth:`Op.n_synapses` (the paper's R(l) and the synapse
count without a matrix), :attr:`Op.dense_weight` (the matrix of a dense op), :meth:`Op.fold`
(absorbing a following batch norm), :meth:`Op.add_bias` (a bias added after it in a graph),
:attr:`Op.implied_input_shape`, :meth:`Op.tensors`, :attr:`Op.n_params`, :meth:`Op.describe` and
:meth:`Op.to_module`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.nn.grad import conv2d_input

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

    def transpose(self, v: Tensor, in_shape: Sequence[int], absolute: bool = False) -> Tensor:
        """:math:`v A` (rows of ``v`` of the output's shape, ``in_shape`` with the batch of rows),
        with :math:`A` the linear part, or :math:`v|A|` with ``absolute``: here by autograd through
        :meth:`linear` / :meth:`abs_linear`; dense and convolution apply their transposes directly."""
        fn = self.abs_linear if absolute else self.linear
        with torch.enable_grad():
            x = torch.zeros(tuple(in_shape), dtype=v.dtype, requires_grad=True)
            (g,) = torch.autograd.grad(fn(x), x, v)
        return g

    @property
    def weighted(self) -> bool:
        """True for ops with learned weights (dense, convolution)."""
        return False

    #: ``"conv"`` when a layer holding this op is a convolutional layer (``Layer.kind``).
    kind: ClassVar[str] = "dense"
    #: True for a pure reshape (flatten): it neither mixes nor scales values.
    reshape_only: ClassVar[bool] = False

    @property
    def dense_weight(self) -> Tensor | None:
        """The (out, in) matrix of a dense op, else ``None``."""
        return None

    @property
    def implied_input_shape(self) -> tuple[int, ...] | None:
        """The input shape this op implies when it comes first (a dense op: ``(in,)``), else ``None``."""
        return None

    def abs_max(self) -> float:
        """:math:`\\max |w|` over the op's weights (weighted ops only)."""
        raise NotImplementedError

    def fan_in(self, in_width: int) -> int | None:
        """Inputs read by one output, at most, when this is the layer's only weighted op; ``None``
        when it cannot tell without the matrix."""
        return None

    def n_synapses(self, in_shape: tuple[int, ...], first: bool) -> int | None:
        """Non-zero entries of the op's matrix when it is the layer's only weighted op (``first``:
        it reads the layer input directly); ``None`` when it cannot tell without the matrix."""
        return None

    def window(
        self, shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, int], tuple[int, int], tuple[int, ...]] | None:
        """On a ``(C, H, W)`` input: ``(kernel, stride, padding, out_shape)`` of an op whose output
        (c, p) reads inputs :math:`[pS - P, pS - P + k)` per spatial axis (every channel for a
        convolution); ``((1, 1), (1, 1), (0, 0), shape)`` for a per-channel op; ``None`` when the op
        is not local."""
        return None

    def terms(self, in_width: int) -> int:
        """Products summed per output unit (its fan-in: a convolution's kernel taps, a pooling
        window), which the rounding allowance charges (:mod:`faultbound.bounds.rounding`)."""
        return int(self.fan_in(in_width) or in_width)

    #: True for an op that maps each pixel of an image to the same pixel (a per-channel affine map):
    #: the engine applies it to the changed pixels only.
    pointwise: ClassVar[bool] = False

    def local(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """``(kernel, stride, padding)`` of a local image op (each output pixel reads a window of
        input pixels, every channel) that :meth:`on_patch` computes on a padded patch; ``None``
        otherwise. The measurement engine recomputes only the output pixels a fault reaches."""
        return None

    def on_patch(self, patch: Tensor) -> Tensor:
        """The op on a patch of its input that already holds its padding (for :meth:`local` ops)."""
        raise NotImplementedError(f"{type(self).__name__} is not a local image op")

    def fold(self, scale: Tensor, shift: Tensor) -> Op | None:
        """This op followed by :math:`x_c \\mapsto a_c x_c + t_c` on its output channels, as one op
        (a folded batch norm), or ``None`` when it cannot absorb it."""
        return None

    def add_bias(self, bias: np.ndarray) -> Op | None:
        """This op with a constant added to its output as a bias, or ``None`` when it has no bias of
        that shape."""
        return None

    def tensors(self) -> list[Tensor]:
        """The op's parameter tensors (checked for NaN and inf)."""
        return []

    @property
    def n_params(self) -> int:
        """Learned parameters (weights and biases of weighted ops)."""
        return 0

    def describe(self) -> str | None:
        """A short label for layer descriptions, or ``None`` to leave the op out."""
        return None

    def to_module(self, dtype: torch.dtype) -> nn.Module:
        """An equivalent ``torch.nn`` module."""
        raise NotImplementedError


def _out_hw(shape: tuple[int, ...], k: tuple[int, ...], st: tuple[int, int], pd: tuple[int, int]) -> tuple[int, ...]:
    return tuple((shape[1 + a] + 2 * pd[a] - k[a]) // st[a] + 1 for a in range(2))


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

    def transpose(self, v: Tensor, in_shape: Sequence[int], absolute: bool = False) -> Tensor:
        """:math:`v W` (or :math:`v|W|`) on the last axis."""
        w = self._abs_weight(v.dtype) if absolute else _cast(self.weight, self._cw, v.dtype)
        return v @ w

    def _abs_weight(self, dtype: torch.dtype) -> Tensor:
        w = self._abs.get(dtype)
        if w is None:
            w = self._abs[dtype] = self.weight.abs().to(dtype)
        return w

    @property
    def weighted(self) -> bool:
        return True

    @property
    def dense_weight(self) -> Tensor | None:
        return self.weight

    @property
    def implied_input_shape(self) -> tuple[int, ...] | None:
        return (int(self.weight.shape[1]),)

    def abs_max(self) -> float:
        return float(self.weight.abs().max()) if self.weight.numel() else 0.0

    def fan_in(self, in_width: int) -> int | None:
        return int(self.weight.shape[1])

    def n_synapses(self, in_shape: tuple[int, ...], first: bool) -> int | None:
        return int((self.weight != 0).sum())

    def fold(self, scale: Tensor, shift: Tensor) -> Op | None:
        return Dense(self.weight * scale[:, None], self.bias * scale + shift)

    def add_bias(self, bias: np.ndarray) -> Op | None:
        if bias.ndim > 2:
            return None
        b = torch.as_tensor(np.broadcast_to(bias.reshape(-1), self.bias.shape).copy())
        return Dense(self.weight, self.bias + b)

    def tensors(self) -> list[Tensor]:
        return [self.weight, self.bias]

    @property
    def n_params(self) -> int:
        return self.weight.numel() + self.bias.numel()

    def describe(self) -> str | None:
        return f"Linear({self.weight.shape[1]}->{self.weight.shape[0]})"

    def to_module(self, dtype: torch.dtype) -> nn.Module:
        m = nn.Linear(self.weight.shape[1], self.weight.shape[0])
        with torch.no_grad():
            m.weight.copy_(self.weight)
            m.bias.copy_(self.bias)
        return m


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

    def local(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        return (int(self.weight.shape[2]), int(self.weight.shape[3])), self.stride, self.padding

    def on_patch(self, patch: Tensor) -> Tensor:
        return F.conv2d(
            patch, _cast(self.weight, self._cw, patch.dtype), _cast(self.bias, self._cb, patch.dtype), self.stride
        )

    def abs_linear(self, e: Tensor) -> Tensor:
        w = self._abs.get(e.dtype)
        if w is None:
            w = self._abs[e.dtype] = self.weight.abs().to(e.dtype)
        return F.conv2d(e, w, None, self.stride, self.padding)

    def transpose(self, v: Tensor, in_shape: Sequence[int], absolute: bool = False) -> Tensor:
        """The transposed convolution of ``v`` with :math:`W` (or :math:`|W|`), to ``in_shape``."""
        if absolute:
            w = self._abs.get(v.dtype)
            if w is None:
                w = self._abs[v.dtype] = self.weight.abs().to(v.dtype)
        else:
            w = _cast(self.weight, self._cw, v.dtype)
        return conv2d_input(tuple(in_shape), w, v, self.stride, self.padding)

    @property
    def kernel_size(self) -> int:
        """Inputs under one kernel: :math:`C_{in} k_h k_w`."""
        return int(self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3])

    @property
    def weighted(self) -> bool:
        return True

    kind: ClassVar[str] = "conv"

    def abs_max(self) -> float:
        return float(self.weight.abs().max()) if self.weight.numel() else 0.0

    def fan_in(self, in_width: int) -> int | None:
        return min(self.kernel_size, in_width)

    def n_synapses(self, in_shape: tuple[int, ...], first: bool) -> int | None:
        """Each (output, input) pair meets at most one kernel tap, so the count is a convolution of
        an all-ones input with the kernel's non-zero pattern (no matrix is built)."""
        if not first:
            return None
        ones = torch.ones((1, *in_shape), dtype=torch.float64)
        pattern = (self.weight != 0).to(torch.float64)
        counts = F.conv2d(ones, pattern, None, self.stride, self.padding)
        return int(round(float(counts.sum())))

    def window(
        self, shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, int], tuple[int, int], tuple[int, ...]] | None:
        k: tuple[int, ...] = tuple(self.weight.shape[2:])
        out = (int(self.weight.shape[0]),) + _out_hw(shape, k, self.stride, self.padding)
        return k, self.stride, self.padding, out

    def fold(self, scale: Tensor, shift: Tensor) -> Op | None:
        return Conv(self.weight * scale[:, None, None, None], self.bias * scale + shift, self.stride, self.padding)

    def add_bias(self, bias: np.ndarray) -> Op | None:
        per = _per_channel(bias, self.bias.numel())
        if per is None:
            return None
        return Conv(self.weight, self.bias + torch.as_tensor(per), self.stride, self.padding)

    def tensors(self) -> list[Tensor]:
        return [self.weight, self.bias]

    @property
    def n_params(self) -> int:
        return self.weight.numel() + self.bias.numel()

    def describe(self) -> str | None:
        co, ci, kh, kw = self.weight.shape
        return f"Conv({ci}->{co}, {kh}x{kw}, s={self.stride[0]}, p={self.padding[0]})"

    def to_module(self, dtype: torch.dtype) -> nn.Module:
        co, ci, kh, kw = self.weight.shape
        c = nn.Conv2d(ci, co, (kh, kw), self.stride, self.padding)
        with torch.no_grad():
            c.weight.copy_(self.weight)
            assert c.bias is not None
            c.bias.copy_(self.bias)
        return c


def _per_channel(arr: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant added to a (B, C, H, W) tensor as one value per channel, or ``None``."""
    if arr.size == 1:
        return np.full(channels, float(arr.reshape(())))
    dims = list(arr.shape)
    while len(dims) > 3 and dims[0] == 1:
        dims.pop(0)
    if dims == [channels, 1, 1]:
        return arr.reshape(-1).astype(np.float64)
    return None


@dataclass(frozen=True, eq=False)
class AvgPool(Op):
    """2-D average pooling (``count_include_pad=True``, floor mode): linear, non-negative weights."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding)

    def local(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        return self.kernel, self.stride, self.padding

    def on_patch(self, patch: Tensor) -> Tensor:
        """Padding counts in the mean (``count_include_pad=True``): the patch holds it as zeros."""
        return F.avg_pool2d(patch, self.kernel, self.stride)

    def terms(self, in_width: int) -> int:
        return int(math.prod(self.kernel))

    def linear(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def abs_linear(self, e: Tensor) -> Tensor:
        return self.forward(e)

    def window(
        self, shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, int], tuple[int, int], tuple[int, ...]] | None:
        out = (shape[0],) + _out_hw(shape, self.kernel, self.stride, self.padding)
        return self.kernel, self.stride, self.padding, out

    def describe(self) -> str | None:
        return f"AvgPool({self.kernel[0]})"

    def to_module(self, dtype: torch.dtype) -> nn.Module:
        return nn.AvgPool2d(self.kernel, self.stride, self.padding)


@dataclass(frozen=True, eq=False)
class Flatten(Op):
    """Reshape ``(B, *shape)`` to ``(B, prod(shape))``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)

    def linear(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def abs_linear(self, e: Tensor) -> Tensor:
        return self.forward(e)

    reshape_only: ClassVar[bool] = True

    def to_module(self, dtype: torch.dtype) -> nn.Module:
        return nn.Flatten()


@dataclass(frozen=True, eq=False)
class ChannelAffine(Op):
    """Per-channel :math:`x_c \\mapsto a_c x_c + t_c` (an unfolded batch norm), channel axis 1."""

    scale: Tensor
    shift: Tensor
    pointwise: ClassVar[bool] = True

    def terms(self, in_width: int) -> int:
        return 1

    def _view(self, t: Tensor, x: Tensor) -> Tensor:
        return t.to(x.dtype).reshape((1, -1) + (1,) * (x.dim() - 2))

    def forward(self, x: Tensor) -> Tensor:
        return x * self._view(self.scale, x) + self._view(self.shift, x)

    def linear(self, x: Tensor) -> Tensor:
        return x * self._view(self.scale, x)

    def abs_linear(self, e: Tensor) -> Tensor:
        return e * self._view(self.scale.abs(), e)

    def window(
        self, shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], tuple[int, int], tuple[int, int], tuple[int, ...]] | None:
        return (1, 1), (1, 1), (0, 0), shape

    def tensors(self) -> list[Tensor]:
        return [self.scale, self.shift]

    def describe(self) -> str | None:
        return "BatchNorm"

    def to_module(self, dtype: torch.dtype) -> nn.Module:
        return _ChannelAffineModule(self.scale, self.shift)


class _ChannelAffineModule(nn.Module):
    scale: Tensor
    shift: Tensor

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.clone())
        self.register_buffer("shift", shift.clone())

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)
