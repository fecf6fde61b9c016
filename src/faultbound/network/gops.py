"""Operators of a graph network (:class:`~faultbound.network.graph.GraphNetwork`).

A graph network is a DAG of nodes; each node applies one operator to the outputs of earlier nodes.
Every value carries a leading batch axis ``(B, *shape)``; operator arguments that name an axis
count that batch axis (``dim=1`` is the channel axis of an image), as torch does.

Each operator is one class that owns its rules:

* :meth:`GOp.forward` -- what it computes, in the inputs' dtype;
* :meth:`GOp.interval` -- a sound box of its output given boxes of its inputs: for every input
  :math:`x_k \\in [\\underline x_k, \\overline x_k]` the output lies in the returned box
  (interval propagation over the input domain, and over "clean or faulty" boxes in the bounds);
* :meth:`GOp.deviation` -- given boxes that hold both the clean and the faulty inputs, and
  :class:`Dev` bounds of how far each faulty input is from the clean one, a :class:`Dev` bound of
  how far the faulty output is from the clean output (the ``tight`` bound over graphs);
* :meth:`GOp.linear_back` -- a linear upper bound of a linear function of its output by linear
  functions of its inputs over their boxes (linear operators exactly, activations by their
  :meth:`~faultbound.network.activations.Activation.relaxation`, max pooling by its largest lower
  bound and its output's upper bound), which refines the domain boxes
  (:meth:`~faultbound.network.graph.GraphNetwork.linear_box_intervals`);
* :meth:`GOp.milp` -- where :attr:`GOp.piecewise_linear`, MILP variables equal to its output given
  its inputs' variables (the ``exact`` bound over graphs, :mod:`faultbound.bounds.exact`):
  index maps (views, slices, concatenation) permute variable ids, linear operators are equality rows,
  activations use :meth:`~faultbound.network.activations.Activation.milp`, max pooling a one-hot
  selection with big-M's from the inputs' bounds;
* :attr:`GOp.weighted`, :meth:`GOp.describe`, :meth:`GOp.tensors`.

The affine operations of the layered :class:`~faultbound.network.Network` (dense, convolution,
average pooling, per-channel affine, flatten; :mod:`faultbound.network.ops`) are reused as they are
through :class:`Affine`, and its activations through :class:`Act`.

**Deviation bounds** (:class:`Dev`). The faulty-minus-clean difference :math:`\\delta` of a node is
bounded as :math:`\\delta = \\delta^0 + \\sum_k \\delta^k` with :math:`|\\delta^0| \\le e` on every
unit and each :math:`\\delta^k` non-zero on at most :math:`f_k` units, where
:math:`|\\delta^k| \\le d_k` ("sparse parts", what f failing units of a site add). Keeping the
parts sparse is what lets a linear operator take the :math:`f` largest terms of each row, as the
layered ``tight`` bound does, instead of charging every unit with a failure.

Soundness notes for the new operators (all rules are per unit and hold for every failure set):

* residual add :math:`a + b`: :math:`|\\delta| \\le |\\delta_a| + |\\delta_b|` (parts kept);
* concat: the parts of each input, zero on the others;
* elementwise product :math:`ab`: :math:`\\tilde a\\tilde b - ab = \\delta_a \\tilde b + a \\delta_b`, so
  :math:`|\\delta| \\le |\\delta_a| B + A |\\delta_b|` with :math:`A, B` the largest magnitudes over the
  boxes (which hold both networks' values);
* max pooling: :math:`|\\max \\tilde x - \\max x| \\le \\max_{i \\in \\text{window}} |\\delta_i|`;
* layer/group norm and softmax: the mean value theorem with the Jacobian bounded over the box
  that holds both networks' inputs (see :class:`Norm` and :class:`Softmax`);
* matmul :math:`AB`: :math:`|\\delta(AB)| \\le |\\delta_A| |B| + |A| |\\delta_B|` with magnitudes
  from the boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from faultbound.errors import UnsupportedModelError
from faultbound.formats import Arithmetic, gamma
from faultbound.network.activations import Activation, MilpModel
from faultbound.network.ops import Conv, Dense, Op

__all__ = [
    "Dev",
    "IMat",
    "GOp",
    "Input",
    "Const",
    "Affine",
    "Act",
    "Add",
    "Mul",
    "ConstAffine",
    "MatMul",
    "Concat",
    "Rearrange",
    "MaxPool",
    "Mean",
    "Norm",
    "Softmax",
]

Box2 = tuple[Tensor, Tensor]
_SLACK = 1e-12
#: Units of float32 within which torch's CPU kernels evaluate a smooth activation of a float16 or
#: bfloat16 value before rounding it (the rounding allowance, :mod:`faultbound.bounds.rounding`).
ACTIVATION_ULPS = 8


def _widen(lo: Tensor, hi: Tensor) -> Box2:
    """Widen a computed box outward by a relative 1e-12 (rounding of the interval arithmetic)."""
    s = _SLACK * (lo.abs() + hi.abs()) + 1e-300
    return lo - s, hi + s


@dataclass
class Dev:
    """A deviation bound (see the module docstring): dense ``e`` plus sparse ``parts`` ``(f, d)``.

    All tensors have the node's shape with a leading batch axis (or broadcast to it).
    """

    e: Tensor
    parts: list[tuple[int, Tensor]] = field(default_factory=list)

    def total(self) -> Tensor:
        """A per-unit bound of :math:`|\\delta|`: :math:`e + \\sum_k d_k`."""
        t = self.e
        for _, d in self.parts:
            t = t + d
        return t

    def dense(self) -> Dev:
        """The same bound with the parts folded into ``e`` (always sound, looser)."""
        return Dev(self.total(), [])

    def map(self, fn: object) -> Dev:
        """Apply a linear map with non-negative 0/1 structure (reshape, permute, slice) to every
        tensor; sparse counts are kept (such a map never spreads one unit over several)."""
        f = fn  # type: ignore[assignment]
        return Dev(f(self.e), [(k, f(d)) for k, d in self.parts])  # type: ignore[operator]

    def scale(self, a: Tensor) -> Dev:
        """Multiply every tensor by a non-negative per-unit factor ``a``."""
        return Dev(self.e * a, [(k, d * a) for k, d in self.parts])

    @staticmethod
    def zero(like: Tensor) -> Dev:
        return Dev(torch.zeros_like(like), [])


def _broadcast_dev(dev: Dev, in_shape: Sequence[int], out_shape: Sequence[int]) -> Dev:
    """``dev`` of an input of per-sample shape ``in_shape[1:]`` seen in an output of shape
    ``out_shape`` it broadcasts to: the dense part is expanded; a unit is copied to
    :math:`r = |out| / |in|` units at most, so a sparse part of f units becomes one of
    :math:`f r` units (a broadcast unit is no longer one unit)."""
    r = max(1, math.prod(out_shape[1:]) // max(1, math.prod(in_shape[1:])))
    return Dev(dev.e.expand(out_shape), [(k * r, d.expand(out_shape)) for k, d in dev.parts])


def _capped(e: Tensor, parts: Sequence[tuple[int, Tensor]], cap: Tensor) -> Dev:
    """A deviation bound :math:`e + \\sum_k d_k` that is also at most ``cap`` on every unit, as
    :math:`e' = \\min(e, c)` and parts :math:`d'_k = \\min(d_k, (c - e)^+)`: a unit's deviation is
    clipped to :math:`\\pm e'` (dense), and the rest, at most :math:`\\min(\\sum_k d_k, c - e)
    \\le \\sum_k \\min(d_k, (c - e)^+)`, is shared among the parts active there (so supports only
    shrink). This is never looser than capping every piece by c, nor than the dense
    :math:`\\min(e + \\sum d, c)` where e already reaches c."""
    room = (cap - e).clamp(min=0)
    return Dev(torch.minimum(e, cap), [(k, torch.minimum(d, room)) for k, d in parts])


#: An interval matrix in centre/radius form ``(c, r)``, ``r >= 0``: every matrix within ``r`` of
#: ``c`` entrywise. In :meth:`GOp.secant_back` its rows are ``(B * n, *shape)``: the ``n`` output
#: rows of each of the ``B`` inputs, flattened into the batch axis.
IMat = tuple[Tensor, Tensor]
#: What :meth:`GOp.linear_back` returns: per input a coefficient tensor (or ``None``), and a constant.
LinBack = tuple[list[Tensor | None], Tensor]


def _rep(t: Tensor, n: int) -> Tensor:
    """A per-input tensor ``(B, ...)`` repeated for the ``n`` rows of each input: ``(B * n, ...)``
    (a batch of 1 stays 1 and broadcasts)."""
    return t if t.shape[0] == 1 else t.repeat_interleave(n, 0)


def _vjp(fn: object, in_shape: Sequence[int], v: Tensor) -> Tensor:
    """:math:`v^T J` for a linear (or affine) map ``fn`` from ``in_shape``: its transpose applied to
    ``v`` (the bias, if any, does not enter the Jacobian)."""
    f = fn  # type: ignore[assignment]
    with torch.enable_grad():
        x = torch.zeros(tuple(in_shape), dtype=v.dtype, requires_grad=True)
        y = f(x)  # type: ignore[operator]
        (g,) = torch.autograd.grad(y, x, v)
    return g


def _linear_back(fn: object, boxes: Sequence[Box2], lam: Tensor) -> LinBack:
    """:meth:`GOp.linear_back` of an affine map ``fn`` of one input: exact,
    :math:`\\Lambda \\cdot (Ax + b) = (\\Lambda A) \\cdot x + \\Lambda \\cdot b` with
    :math:`\\Lambda A` its transpose applied to :math:`\\Lambda` and :math:`b = fn(0)`."""
    f = fn  # type: ignore[assignment]
    in_shape = tuple(boxes[0][0].shape[1:])
    g = _vjp(f, (lam.shape[0],) + in_shape, lam)
    with torch.no_grad():
        b = f(torch.zeros((1,) + in_shape, dtype=lam.dtype))  # type: ignore[operator]
    return [g], (lam * b).reshape(lam.shape[0], -1).sum(1)


def _imul(m: IMat, lo: Tensor, hi: Tensor) -> IMat:
    """Entrywise product of the interval matrix ``m`` with the interval ``[lo, hi]`` (broadcast),
    midpoint-radius arithmetic: :math:`c' = c\\,a_c`, :math:`r' = |c|a_r + r|a_c| + r a_r`
    (every product of members lies within it)."""
    c, r = m
    ac, ar = (lo + hi) / 2, (hi - lo) / 2
    return c * ac, c.abs() * ar + r * ac.abs() + r * ar


def _unbroadcast(m: IMat, shape: Sequence[int]) -> IMat:
    """Sum the rows of a broadcast input back to its own shape (a broadcast unit feeds every copy)."""
    c, r = m
    return c.sum_to_size(tuple(shape)), r.sum_to_size(tuple(shape))


def _topk_rows(terms: Tensor, k: int) -> Tensor:
    """Sum of the ``k`` largest entries along the last axis (all of them when fewer)."""
    n = terms.shape[-1]
    if k >= n:
        return terms.sum(-1)
    if k == 1:
        return terms.amax(-1)
    return terms.topk(k, dim=-1).values.sum(-1)


def _index_map(op: GOp, ins: Sequence[np.ndarray]) -> tuple[np.ndarray, bool]:
    """An index map (view, slice, concatenation) applied to variable ids: the output's ids."""
    with torch.no_grad():
        ids = op.forward(*(torch.as_tensor(np.ascontiguousarray(i), dtype=torch.int64) for i in ins))
    return ids.numpy(), False


def _var_bounds(m: MilpModel, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = ids.reshape(-1)
    return np.asarray(m.lb, dtype=np.float64)[flat], np.asarray(m.ub, dtype=np.float64)[flat]


def _new_vars(m: MilpModel, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.asarray([m.var(a, b) for a, b in zip(lo.reshape(-1), hi.reshape(-1), strict=True)], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class GOp:
    """Base class of graph operators (see the module docstring)."""

    #: Number of inputs; -1 for any number.
    arity: ClassVar[int] = 1
    #: True when :meth:`milp` encodes the operator exactly (the ``exact`` bound); an operator opts in.
    piecewise_linear: ClassVar[bool] = False
    #: True for an activation: its output is a fault site by default.
    default_site: ClassVar[bool] = False
    #: False when :meth:`secant_back` bounds the Jacobian over a box (products, norms, softmax):
    #: the back-substitution may then stop at the node instead (see ``graph_tight._backsub``).
    secant_exact: ClassVar[bool] = True

    def forward(self, *xs: Tensor) -> Tensor:
        raise NotImplementedError

    def interval(self, *boxes: Box2) -> Box2:
        raise NotImplementedError

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        """A :class:`Dev` of the output, given input boxes that hold both the clean and the faulty
        inputs and the inputs' deviation bounds; ``clean``, when given, holds boxes of the clean
        inputs alone (each inside the corresponding box of ``boxes``), which a rule may use too."""
        raise NotImplementedError

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Back-substitution through the operator (the linear bound of
        :func:`~faultbound.bounds.graph_tight.graph_backsub`).

        ``boxes`` hold both networks' inputs (batch ``B``); ``m`` is an interval matrix
        ``(B * n, *out_shape)`` of secant derivatives of the ``n`` outputs with respect to this
        operator's output. Returns, per input, an interval matrix ``(B * n, *in_shape)`` that holds
        :math:`m J` for every secant Jacobian :math:`J` of the operator between two points of the
        boxes (:math:`\\tilde y - y = J(\\tilde x - x)`), ``None`` for an input that needs none,
        or ``None`` altogether when the operator has no such rule (the bound then keeps this
        node's forward deviation instead)."""
        return None

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Back-substitution of linear *upper* bounds through the operator (the domain refinement
        of :meth:`~faultbound.network.graph.GraphNetwork.linear_box_intervals`).

        ``boxes`` are the inputs' boxes and ``out`` the output's (batch 1); ``lam``
        ``(R, *out_shape)`` holds R linear functions of the output. Returns, per input, a
        ``(R, *in_shape)`` tensor :math:`\\Lambda_k` (``None`` for an input that needs none) and a
        constant ``c`` ``(R,)`` such that :math:`\\Lambda \\cdot y \\le \\sum_k \\Lambda_k \\cdot x_k + c`
        for every input :math:`x_k` in its box and :math:`y` the output; or ``None`` when the
        operator has no such rule (the caller bounds :math:`\\Lambda \\cdot y` by the output's box).
        Default: ``None``."""
        return None

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """The exact mixed-integer encoding of the operator (``method="exact"`` on graphs).

        ``ins`` hold the variable ids of the inputs, each shaped ``(1, *in_shape)``; ``lo``/``hi``
        (flat) a box known to hold the output, which new variables take as their bounds. Returns
        the output's variable ids shaped ``(1, *out_shape)``, each equal to the operator's value at
        every feasible point, and whether new variables were made (``False`` for an index map,
        whose output ids are input ids). Default: refused, in one line."""
        raise UnsupportedModelError(f"method='exact' cannot encode {self.describe()} (not piecewise linear).")

    # ------------------------------------------------------------------ rounding (bounds/rounding.py)
    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """Per output unit, a bound of the operator's *own* rounding when it runs in the format of
        ``ar`` (:class:`~faultbound.formats.Arithmetic`) on inputs of that format within the boxes
        ``ins`` (batch axis first), its output within ``out``: :math:`|fl(op(\\hat x)) - op(\\hat x)|`
        under the arithmetic model of :mod:`faultbound.bounds.rounding`. Default: no rule (refused)."""
        raise UnsupportedModelError(f"No rounding rule for {self.describe()}.")

    @property
    def has_rounding_rule(self) -> bool:
        """True when the operator defines :meth:`local_rounding`."""
        return type(self).local_rounding is not GOp.local_rounding

    # ------------------------------------------------------------------ engine (measure/graph_engine.py)
    def engine_window(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], float] | None:
        """``(kernel, stride, padding, padding value)`` of a local image operator, whose output pixel
        reads a window of input pixels: the engine then recomputes, with :meth:`on_patch`, only the
        output pixels whose window a fault reaches. Default ``None`` (the whole map)."""
        return None

    def on_patch(self, patch: Tensor) -> Tensor:
        """The operator on a patch of its input that already holds its padding (local operators)."""
        raise NotImplementedError(f"{self.describe()} is not a local image operator")

    @property
    def engine_pointwise(self) -> bool:
        """True when the operator maps each pixel of its one image input to the same pixel with no
        spatially varying constant: the engine applies it to the changed pixels only."""
        return False

    def pixelwise(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> bool:
        """True when output pixel (h, w) reads only pixel (h, w) of every input, for these
        ``(C, H, W)`` shapes: the engine combines the changed pixels only. Default ``False``."""
        return False

    @property
    def weighted(self) -> bool:
        """True for operators with learned weights (synapse faults apply there)."""
        return False

    def tensors(self) -> list[Tensor]:
        return []

    @property
    def n_params(self) -> int:
        return 0

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, eq=False)
class Input(GOp):
    """The network input (node 0)."""

    piecewise_linear: ClassVar[bool] = True

    arity: ClassVar[int] = 0

    def describe(self) -> str:
        return "input"


@dataclass(frozen=True, eq=False)
class Const(GOp):
    """A constant tensor (a class token, a position embedding), stored with a leading axis of 1 and
    expanded to the batch."""

    piecewise_linear: ClassVar[bool] = True

    value: Tensor
    arity: ClassVar[int] = 0

    def forward(self, *xs: Tensor) -> Tensor:
        return self.value

    def make(self, batch: int, dtype: torch.dtype) -> Tensor:
        v = self.value.to(dtype)
        return v.expand(batch, *v.shape[1:])

    def tensors(self) -> list[Tensor]:
        return [self.value]

    @property
    def n_params(self) -> int:
        return self.value.numel()

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """Variables fixed at the constant's values."""
        v = self.make(1, torch.float64).numpy()
        return _new_vars(m, v, v).reshape(v.shape), True

    def describe(self) -> str:
        return f"const{tuple(self.value.shape[1:])}"


@dataclass(frozen=True, eq=False)
class Affine(GOp):
    """One affine op of :mod:`faultbound.network.ops` (dense on the last axis, convolution, average
    pooling, per-channel affine, flatten). Interval: centre :math:`Ac + b`, radius :math:`|A|r`.
    Deviation: :math:`|A|e + \\sum_k \\operatorname{top}_{f_k}` of each row's :math:`|A_{ji}| d_{k,i}`
    (the layered ``tight`` rule), with a cheaper sound form for convolutions:
    :math:`\\min(f \\max_i |A_{ji}| d_i, \\sum_i |A_{ji}| d_i)`."""

    piecewise_linear: ClassVar[bool] = True

    op: Op
    _matrices: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def forward(self, *xs: Tensor) -> Tensor:
        return self.op.forward(xs[0])

    def interval(self, *boxes: Box2) -> Box2:
        lo, hi = boxes[0]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        sc = self.op.forward(c)
        sr = self.op.abs_linear(r)
        return _widen(sc - sr, sc + sr)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        dev = devs[0]
        if self.op.reshape_only:
            return dev.map(self.op.forward)
        e = self.op.abs_linear(dev.e)
        for k, d in dev.parts:
            e = e + self.top_terms(d, k)
        return Dev(e)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Exact: :math:`mA` (:meth:`~faultbound.network.ops.Op.transpose`), radius :math:`r|A|`."""
        c, r = m
        shape = (c.shape[0],) + tuple(boxes[0][0].shape[1:])
        return [(self.op.transpose(c, shape), self.op.transpose(r, shape, absolute=True))]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Exact: :math:`\\Lambda A` (:meth:`~faultbound.network.ops.Op.transpose`) and
        :math:`\\Lambda \\cdot b`."""
        in_shape = tuple(boxes[0][0].shape[1:])
        g = self.op.transpose(lam, (lam.shape[0],) + in_shape)
        with torch.no_grad():
            b = self.op.forward(torch.zeros((1,) + in_shape, dtype=lam.dtype))
        return [g], (lam * b).reshape(lam.shape[0], -1).sum(1)

    def top_terms(self, d: Tensor, k: int) -> Tensor:
        """Per output unit, a bound of the sum of the ``k`` largest :math:`|A_{ji}| d_i`."""
        op = self.op
        total = op.abs_linear(d)
        if isinstance(op, Dense):
            w = op.weight.abs().to(d.dtype)
            lead = d.shape[:-1]
            flat = d.reshape(-1, d.shape[-1])
            out = []
            for start in range(0, flat.shape[0], 64):
                terms = flat[start : start + 64, None, :] * w[None]
                out.append(_topk_rows(terms, k))
            return torch.cat(out, 0).reshape(*lead, w.shape[0])
        if isinstance(op, Conv):
            w = op.weight.abs().to(d.dtype)
            co = w.shape[0]
            cols = F.unfold(d, w.shape[2:], padding=op.padding, stride=op.stride)  # (B, Ci*kh*kw, P)
            wf = w.reshape(co, -1)
            oh, ow = total.shape[2], total.shape[3]
            b, kk, p = cols.shape
            # max over the kernel's K inputs, a block of them at a time (about 2^18 products per block)
            kb = max(1, (1 << 18) // max(1, b * co * p))
            best = (wf[None, :, :kb, None] * cols[:, None, :kb]).amax(2)  # (B, Co, P)
            for k0 in range(kb, kk, kb):
                torch.maximum(best, (wf[None, :, k0 : k0 + kb, None] * cols[:, None, k0 : k0 + kb]).amax(2), out=best)
            capped = torch.minimum(total, k * best.reshape(d.shape[0], co, oh, ow))
            return capped
        return total  # pooling and per-channel ops: every input counted (sound)

    @property
    def weighted(self) -> bool:
        return self.op.weighted

    def tensors(self) -> list[Tensor]:
        return self.op.tensors()

    @property
    def n_params(self) -> int:
        return self.op.n_params

    def matrix(self, in_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """:math:`A` (output units x input units) and :math:`b` of the map on inputs shaped
        ``in_shape`` (no batch axis), float64, computed once per shape; a dense op on a token axis
        is one weight matrix per token (block diagonal), any other op the layered network's
        effective matrix (:meth:`~faultbound.network.core.Layer.effective_matrix`)."""
        key = tuple(int(v) for v in in_shape)
        got = self._matrices.get(key)
        if got is not None:
            return got
        from faultbound.network.core import Layer  # the layered view's effective matrix

        inner = self.op
        with torch.no_grad():
            y0 = inner.forward(torch.zeros((1, *key), dtype=torch.float64))
            b = y0.reshape(-1).numpy()
            if isinstance(inner, Dense):
                w = inner.weight.to(torch.float64).numpy()
                reps = math.prod(key[:-1])
                A = w if reps == 1 else np.kron(np.eye(reps), w)
            else:
                A = Layer(0, (inner,), None, key, tuple(y0.shape[1:])).effective_matrix().numpy()
        self._matrices[key] = (A, b)
        return A, b

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """A view permutes ids; otherwise one row :math:`s_j - \\sum_i A_{ji} y_i = b_j` per output
        unit (the non-zero :math:`A_{ji}` only)."""
        if self.op.reshape_only:
            return _index_map(self, ins)
        x = ins[0]
        A, b = self.matrix(x.shape[1:])
        y = x.reshape(-1)
        out = []
        for j in range(A.shape[0]):
            nz = np.nonzero(A[j])[0]
            v = m.var(float(lo[j]), float(hi[j]))
            m.eq([v, *y[nz].tolist()], [1.0, *(-A[j, nz]).tolist()], float(b[j]))
            out.append(v)
        with torch.no_grad():
            shape = self.op.forward(torch.zeros(x.shape, dtype=torch.float64)).shape
        return np.asarray(out, dtype=np.int64).reshape(shape), True

    def engine_window(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], float] | None:
        local = self.op.local()
        return None if local is None else (*local, 0.0)

    def on_patch(self, patch: Tensor) -> Tensor:
        return self.op.on_patch(patch)

    @property
    def engine_pointwise(self) -> bool:
        return self.op.pointwise

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """A sum of n products and the bias, :math:`S = |A| M_{in} + |b|`: :math:`c_1 S` plus the
        underflow terms (:meth:`~faultbound.formats.Arithmetic.dot`), u more when the weights are not
        numbers of the format; three times that plus :math:`uM_{out}` when the engine may update a
        clean result (``ar.incremental``); exact for views."""
        inner = self.op
        if inner.reshape_only:
            return torch.zeros_like(out[0])
        m_in = _mag(ins[0])
        n = inner.terms(m_in[0].numel())
        bias = inner.forward(torch.zeros_like(m_in[:1])).abs()
        s = inner.abs_linear(m_in) + bias
        exact = all(bool(torch.equal(t.to(ar.dtype).to(torch.float64), t.to(torch.float64))) for t in inner.tensors())
        c1 = ar.dot(n + 1) + (0.0 if exact else ar.u)
        under = (n + 1) * ar.eta_acc + 2 * ar.eta + n * float(m_in.max()) * ar.eta
        if ar.incremental:
            return 3 * (c1 * s + under) + ar.u * _mag(out)
        return c1 * s + under

    def describe(self) -> str:
        return self.op.describe() or type(self.op).__name__


@dataclass(frozen=True, eq=False)
class Act(GOp):
    """An activation (elementwise). Its output is a fault site.

    Deviation: with :math:`t` the input's total deviation bound and :math:`[\\underline s - t,
    \\overline s + t]` holding both networks' inputs, :math:`K_j` = the largest slope there
    (``activation.slope``), each part is scaled by :math:`K_j`, and the whole is capped by the
    activation's width over that box (:func:`_capped`)."""

    act: Activation
    default_site: ClassVar[bool] = True

    @property
    def piecewise_linear(self) -> bool:  # type: ignore[override]
        return bool(self.act.piecewise_linear)

    def forward(self, *xs: Tensor) -> Tensor:
        return self.act(xs[0])

    def interval(self, *boxes: Box2) -> Box2:
        return self.act.image(*boxes[0])

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        (lo, hi), dev = boxes[0], devs[0]
        k = self.act.slope(lo, hi)
        ylo, yhi = self.act.image(lo, hi)
        cap = yhi - ylo
        jump = self.act.jump(lo, hi)
        out = dev.scale(k)
        if jump is not None:
            out = Dev(out.e + jump, out.parts)
        return _capped(out.e.expand(cap.shape), [(f, d.expand(cap.shape)) for f, d in out.parts], cap)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """The secant slope :math:`(\\varphi(\\tilde s) - \\varphi(s))/(\\tilde s - s)` lies in
        :math:`[\\min\\varphi', \\max\\varphi']` over the box (``Activation.deriv_range``), or in
        :math:`[-K, K]` with K the largest slope there; no rule where a jump of a discontinuous
        activation lies in the box."""
        lo, hi = boxes[0]
        jump = self.act.jump(lo, hi)
        if jump is not None and bool((jump > 0).any()):
            return None
        rng = self.act.deriv_range(lo, hi)
        if rng is None:
            k = self.act.slope(lo, hi)
            rng = (-k, k)
        return [_imul(m, _rep(rng[0], n), _rep(rng[1], n))]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """With the relaxation :math:`a_{lo} s + b_{lo} \\le \\varphi(s) \\le a_{hi} s + b_{hi}` on the
        input's box (``Activation.relaxation``), a positive coefficient takes the upper line and a
        negative one the lower: :math:`\\Lambda \\cdot \\varphi(s) \\le (\\Lambda^+ a_{hi} + \\Lambda^- a_{lo})
        \\cdot s + \\Lambda^+ \\cdot b_{hi} + \\Lambda^- \\cdot b_{lo}`."""
        lo, hi = boxes[0]
        ylo, yhi = self.act.image(lo, hi)
        a_lo, b_lo, a_hi, b_hi = self.act.relaxation(lo.reshape(-1), hi.reshape(-1), ylo.reshape(-1), yhi.reshape(-1))
        flat = lam.reshape(lam.shape[0], -1)
        pos, neg = flat.clamp(min=0), flat.clamp(max=0)
        g = (pos * a_hi + neg * a_lo).reshape((lam.shape[0],) + tuple(lo.shape[1:]))
        return [g], (pos * b_hi + neg * b_lo).sum(1)

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """The activation's own encoding per unit
        (:meth:`~faultbound.network.activations.Activation.milp`), each output's bounds narrowed
        to ``[lo, hi]``."""
        s = ins[0].reshape(-1)
        sl, su = _var_bounds(m, ins[0])
        out = []
        for j, v in enumerate(s.tolist()):
            z = self.act.milp(m, v, float(sl[j]), float(su[j]))
            m.lb[z] = max(m.lb[z], float(lo[j]))  # the unit's own (tighter) range
            m.ub[z] = max(m.lb[z], min(m.ub[z], float(hi[j])))
            out.append(z)
        return np.asarray(out, dtype=np.int64).reshape(ins[0].shape), True

    @property
    def engine_pointwise(self) -> bool:
        return True

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """Exact where the activation rounds exactly; else evaluated in float32 within
        ``ACTIVATION_ULPS`` units of it and rounded once: :math:`uM_{out} + u^2 + 8u_{acc}(M_{out} +
        M_{in}) + \\eta`."""
        if self.act.rounds_exactly(ar.dtype):
            return torch.zeros_like(out[0])
        m_out, m_in = _mag(out), _mag(ins[0])
        return ar.u * m_out + ar.u * ar.u + ACTIVATION_ULPS * ar.u_acc * (m_out + m_in) + ar.eta

    def describe(self) -> str:
        return self.act.name


@dataclass(frozen=True, eq=False)
class Add(GOp):
    """:math:`\\sum_k \\sigma_k x_k` with signs :math:`\\sigma_k = \\pm 1` (a residual sum, or a
    difference); broadcasting as torch."""

    piecewise_linear: ClassVar[bool] = True

    signs: tuple[int, ...] = (1, 1)
    arity: ClassVar[int] = -1

    def forward(self, *xs: Tensor) -> Tensor:
        out = xs[0] if self.signs[0] > 0 else -xs[0]
        for s, x in zip(self.signs[1:], xs[1:], strict=True):
            out = out + x if s > 0 else out - x
        return out

    def interval(self, *boxes: Box2) -> Box2:
        lo = torch.zeros(())
        hi = torch.zeros(())
        for s, (a, b) in zip(self.signs, boxes, strict=True):
            lo, hi = (lo + a, hi + b) if s > 0 else (lo - b, hi - a)
        return _widen(lo, hi)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        shape = self.interval(*boxes)[0].shape
        e = torch.zeros(shape, dtype=devs[0].e.dtype)
        parts: list[tuple[int, Tensor]] = []
        for dv, box in zip(devs, boxes, strict=True):
            wide = _broadcast_dev(dv, box[0].shape, shape)
            e = e + wide.e
            parts += wide.parts
        return Dev(e, parts)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Exact: :math:`\\sigma_k m`, summed over the copies of a broadcast input."""
        c, r = m
        return [
            _unbroadcast((c if s > 0 else -c, r), (c.shape[0],) + tuple(b[0].shape[1:]))
            for s, b in zip(self.signs, boxes, strict=True)
        ]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Exact: :math:`\\sigma_k \\Lambda`, summed over the copies of a broadcast input."""
        rows = lam.shape[0]
        gs: list[Tensor | None] = [
            (lam if s > 0 else -lam).sum_to_size((rows,) + tuple(b[0].shape[1:]))
            for s, b in zip(self.signs, boxes, strict=True)
        ]
        return gs, torch.zeros(rows, dtype=lam.dtype)

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """One row :math:`v_j - \\sum_k \\sigma_k x_{k,j} = 0` per unit (inputs broadcast)."""
        shape = np.broadcast_shapes(*(x.shape for x in ins))
        v = _new_vars(m, lo, hi)
        terms = [np.broadcast_to(x, shape).reshape(-1) for x in ins]
        for j in range(len(v)):
            m.eq([int(v[j]), *(int(t[j]) for t in terms)], [1.0, *(-float(s) for s in self.signs)], 0.0)
        return v.reshape(shape), True

    def pixelwise(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> bool:
        """Without broadcasting."""
        return all(tuple(s) == tuple(out_shape) for s in in_shapes)

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """k terms added in the format: :math:`\\gamma_k(u) \\sum_j M_j`."""
        total = torch.zeros_like(out[0])
        for box in ins:
            total = total + _mag(box)
        return gamma(len(ins), ar.u) * total

    def describe(self) -> str:
        return "add" if all(s > 0 for s in self.signs) else "sub"


def _mag(box: Box2) -> Tensor:
    return torch.maximum(box[0].abs(), box[1].abs())


@dataclass(frozen=True, eq=False)
class Mul(GOp):
    """Elementwise product of two variable tensors (gating)."""

    arity: ClassVar[int] = 2
    secant_exact: ClassVar[bool] = False

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0] * xs[1]

    def interval(self, *boxes: Box2) -> Box2:
        (a0, a1), (b0, b1) = boxes
        c = torch.stack(torch.broadcast_tensors(a0 * b0, a0 * b1, a1 * b0, a1 * b1))
        return _widen(c.amin(0), c.amax(0))

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        # a~b~ - ab = (a~ - a) b~ + a (b~ - b); both b~ and a lie in the boxes. Each sparse part
        # of a (of b) times the magnitude of b (of a) stays on the same units (broadcast: r copies).
        shape = self.interval(*boxes)[0].shape
        ma, mb = _mag(boxes[0]), _mag(boxes[1])
        da = _broadcast_dev(devs[0], boxes[0][0].shape, shape).scale(mb.expand(shape))
        db = _broadcast_dev(devs[1], boxes[1][0].shape, shape).scale(ma.expand(shape))
        return Dev(da.e + db.e, da.parts + db.parts)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """:math:`\\tilde a\\tilde b - ab = \\delta_a \\tilde b + a\\,\\delta_b`: the coefficient of
        :math:`\\delta_a` is :math:`\\tilde b` (in b's box), that of :math:`\\delta_b` is a (in a's)."""
        (a0, a1), (b0, b1) = boxes
        rows = m[0].shape[0]
        ma = _unbroadcast(_imul(m, _rep(b0, n), _rep(b1, n)), (rows,) + tuple(a0.shape[1:]))
        mb = _unbroadcast(_imul(m, _rep(a0, n), _rep(a1, n)), (rows,) + tuple(b0.shape[1:]))
        return [ma, mb]

    def pixelwise(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> bool:
        """Without broadcasting."""
        return all(tuple(s) == tuple(out_shape) for s in in_shapes)

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """One rounded product: :math:`uM_{out} + \\eta`."""
        return ar.u * _mag(out) + ar.eta

    def describe(self) -> str:
        return "mul"


@dataclass(frozen=True, eq=False)
class ConstAffine(GOp):
    """Elementwise :math:`x \\cdot a + c` with constant ``a`` and ``c`` (broadcast; either may be
    ``None``): a scaling in attention, a bias left alone, an unfolded batch norm anywhere."""

    piecewise_linear: ClassVar[bool] = True

    scale: Tensor | None = None
    shift: Tensor | None = None

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        if self.scale is not None:
            x = x * self.scale.to(x.dtype)
        if self.shift is not None:
            x = x + self.shift.to(x.dtype)
        return x

    def interval(self, *boxes: Box2) -> Box2:
        lo, hi = boxes[0]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        if self.scale is not None:
            r = r * self.scale.abs()
        c = self.forward(c)
        return _widen(c - r, c + r)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        if self.scale is None:
            shape = self.interval(*boxes)[0].shape
            return _broadcast_dev(devs[0], boxes[0][0].shape, shape)
        shape = self.interval(*boxes)[0].shape
        wide = _broadcast_dev(devs[0], boxes[0][0].shape, shape)
        return wide.scale(self.scale.abs().to(devs[0].e.dtype).expand(shape))

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Exact: :math:`m a` (radius :math:`r|a|`), summed over the copies of a broadcast input."""
        c, r = m
        if self.scale is not None:
            a = self.scale.to(c.dtype)
            c, r = c * a, r * a.abs()
        return [_unbroadcast((c, r), (c.shape[0],) + tuple(boxes[0][0].shape[1:]))]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Exact: :math:`\\Lambda a` (summed over the copies of a broadcast input) and
        :math:`\\Lambda \\cdot c`."""
        rows = lam.shape[0]
        g = lam if self.scale is None else lam * self.scale.to(lam.dtype)
        g = g.sum_to_size((rows,) + tuple(boxes[0][0].shape[1:]))
        c = torch.zeros(rows, dtype=lam.dtype)
        if self.shift is not None:
            c = (lam * self.shift.to(lam.dtype)).reshape(rows, -1).sum(1)
        return [g], c

    def tensors(self) -> list[Tensor]:
        return [t for t in (self.scale, self.shift) if t is not None]

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """One row :math:`v_j - a_j x_j = c_j` per unit."""
        with torch.no_grad():
            ones = torch.ones(self.forward(torch.zeros(ins[0].shape, dtype=torch.float64)).shape, dtype=torch.float64)
        shape = tuple(ones.shape)
        x = np.broadcast_to(ins[0], shape).reshape(-1)
        a = (ones if self.scale is None else ones * self.scale.to(torch.float64)).reshape(-1).numpy()
        c = (0 * ones if self.shift is None else 0 * ones + self.shift.to(torch.float64)).reshape(-1).numpy()
        v = _new_vars(m, lo, hi)
        for j in range(len(v)):
            m.eq([int(v[j]), int(x[j])], [1.0, -float(a[j])], float(c[j]))
        return v.reshape(shape), True

    @property
    def engine_pointwise(self) -> bool:
        """With scalar constants only."""
        return all(t is None or t.numel() == 1 for t in (self.scale, self.shift))

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """:math:`4u(|a|M_{in} + |c|) + 3\\eta` (constants rounded to the format, a product, a sum)."""
        s = _mag(ins[0])
        if self.scale is not None:
            s = s * self.scale.abs()
        if self.shift is not None:
            s = s + self.shift.abs()
        return (4 * ar.u * s + 3 * ar.eta).expand(out[0].shape)

    def describe(self) -> str:
        if self.scale is not None and self.scale.numel() == 1:
            return f"x*{float(self.scale):.4g}" + ("" if self.shift is None else "+c")
        return "affine" if self.scale is not None else "bias"


@dataclass(frozen=True, eq=False)
class MatMul(GOp):
    """``torch.matmul`` of two variable tensors (attention scores :math:`QK^T`, and :math:`PV`).

    Interval: :math:`A_cB_c \\pm (|A_c|B_r + A_r|B_c| + A_rB_r)`. Deviation:
    :math:`|\\delta_A||B| + |A||\\delta_B|` with magnitudes from the boxes; a sparse part of f units of
    A stays sparse (f rows, so at most f N units of the product), one of B too (f columns, f T
    units)."""

    arity: ClassVar[int] = 2
    secant_exact: ClassVar[bool] = False

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.matmul(xs[0], xs[1])

    def interval(self, *boxes: Box2) -> Box2:
        (a0, a1), (b0, b1) = boxes
        ac, ar = (a0 + a1) / 2, (a1 - a0) / 2
        bc, br = (b0 + b1) / 2, (b1 - b0) / 2
        c = ac @ bc
        r = ac.abs() @ br + ar @ bc.abs() + ar @ br
        return _widen(c - r, c + r)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        # A~B~ - AB = (A~ - A) B~ + A (B~ - B); both B~ and A lie in the boxes
        (a_lo, _), (b_lo, _) = boxes
        ma, mb = _mag(boxes[0]), _mag(boxes[1])
        da, db = devs
        ea, eb = da.e.expand(a_lo.shape), db.e.expand(b_lo.shape)
        out = ea @ mb + ma @ eb
        # a unit of A moves one row of the product (N units), a unit of B one column (T units);
        # batch dimensions broadcast by matmul copy it r times more
        rows, cols = out.shape[-2], out.shape[-1]
        r_a = max(1, math.prod(out.shape[1:-2]) // max(1, math.prod(a_lo.shape[1:-2])))
        r_b = max(1, math.prod(out.shape[1:-2]) // max(1, math.prod(b_lo.shape[1:-2])))
        parts = [(k * cols * r_a, (d.expand(a_lo.shape) @ mb).expand(out.shape)) for k, d in da.parts]
        parts += [(k * rows * r_b, (ma @ d.expand(b_lo.shape)).expand(out.shape)) for k, d in db.parts]
        return Dev(out, parts)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """:math:`\\tilde A\\tilde B - AB = \\delta_A \\tilde B + A\\,\\delta_B`: the coefficients of
        :math:`\\delta_A` are :math:`m \\tilde B^T`, those of :math:`\\delta_B` are :math:`A^T m`, with
        :math:`\\tilde B` and A in the boxes (interval matrix products, midpoint-radius)."""
        (a0, a1), (b0, b1) = boxes
        c, r = m
        rows = c.shape[0]
        ac, ar = _rep((a0 + a1) / 2, n), _rep((a1 - a0) / 2, n)
        bc, br = _rep((b0 + b1) / 2, n), _rep((b1 - b0) / 2, n)
        bct, brt = bc.transpose(-1, -2), br.transpose(-1, -2)
        ma = (c @ bct, c.abs() @ brt + r @ bct.abs() + r @ brt)
        act, art = ac.transpose(-1, -2), ar.transpose(-1, -2)
        mb = (act @ c, art @ c.abs() + act.abs() @ r + art @ r)
        return [
            _unbroadcast(ma, (rows,) + tuple(a0.shape[1:])),
            _unbroadcast(mb, (rows,) + tuple(b0.shape[1:])),
        ]

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """k products accumulated at ``u_acc``: :math:`c_1(k)(M_A M_B) + (k + 1)\\eta_{acc} + 2\\eta`."""
        ma, mb = _mag(ins[0]), _mag(ins[1])
        k = int(ma.shape[-1])
        return ar.dot(k) * (ma @ mb) + (k + 1) * ar.eta_acc + 2 * ar.eta

    def describe(self) -> str:
        return "matmul"


@dataclass(frozen=True, eq=False)
class Concat(GOp):
    """Concatenation along ``dim`` (channels of an image, tokens of a sequence)."""

    piecewise_linear: ClassVar[bool] = True

    dim: int = 1
    arity: ClassVar[int] = -1

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.dim)

    def interval(self, *boxes: Box2) -> Box2:
        return torch.cat([b[0] for b in boxes], self.dim), torch.cat([b[1] for b in boxes], self.dim)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        e = torch.cat([dv.e.expand(b[0].shape) for dv, b in zip(devs, boxes, strict=True)], self.dim)
        parts: list[tuple[int, Tensor]] = []
        for i, dv in enumerate(devs):
            for k, d in dv.parts:
                pieces = [
                    d.expand(b[0].shape) if j == i else torch.zeros_like(b[0], dtype=d.dtype)
                    for j, b in enumerate(boxes)
                ]
                parts.append((k, torch.cat(pieces, self.dim)))
        return Dev(e, parts)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Exact: each input's slice of m."""
        sizes = [b[0].shape[self.dim] for b in boxes]
        cs, rs = m[0].split(sizes, self.dim), m[1].split(sizes, self.dim)
        return [(c, r) for c, r in zip(cs, rs, strict=True)]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Exact: each input's slice of :math:`\\Lambda`."""
        sizes = [b[0].shape[self.dim] for b in boxes]
        return list(lam.split(sizes, self.dim)), torch.zeros(lam.shape[0], dtype=lam.dtype)

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """An index map: the inputs' ids concatenated."""
        return _index_map(self, ins)

    def pixelwise(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> bool:
        """Along channels (``dim=1``) of equally sized images."""
        return self.dim == 1 and all(tuple(s[1:]) == tuple(out_shape[1:]) for s in in_shapes)

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """Exact: a concatenation returns values of its inputs."""
        return torch.zeros_like(out[0])

    def describe(self) -> str:
        return f"concat(dim={self.dim})"


@dataclass(frozen=True, eq=False)
class Rearrange(GOp):
    """A pure rearrangement of units (no value changes): ``view`` to a per-sample ``shape``,
    ``permute`` of the axes (the batch axis stays first), ``slice`` (``dim, start, stop, step``)
    or ``select`` (``dim, index``: a class token). The same map applies to values, intervals and
    deviation bounds, and never spreads one unit over several."""

    piecewise_linear: ClassVar[bool] = True

    kind: str
    args: tuple[int, ...]

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        if self.kind == "view":
            return x.reshape(x.shape[0], *self.args)
        if self.kind == "permute":
            return x.permute(*self.args)
        if self.kind == "slice":
            dim, start, stop, step = self.args
            return x[(slice(None),) * dim + (slice(start, stop, step),)]
        if self.kind == "select":
            dim, index = self.args
            return x.select(dim, index)
        raise ValueError(self.kind)

    def interval(self, *boxes: Box2) -> Box2:
        return self.forward(boxes[0][0]), self.forward(boxes[0][1])

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        shape = boxes[0][0].shape
        dv = devs[0]
        return Dev(self.forward(dv.e.expand(shape)), [(k, self.forward(d.expand(shape))) for k, d in dv.parts])

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Exact: the transpose of the 0/1 map, for the centre and the radius alike."""
        shape = (m[0].shape[0],) + tuple(boxes[0][0].shape[1:])
        return [(_vjp(self.forward, shape, m[0]), _vjp(self.forward, shape, m[1]))]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Exact: the transpose of the 0/1 map."""
        return _linear_back(self.forward, boxes, lam)

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """An index map: the input's ids rearranged."""
        return _index_map(self, ins)

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """Exact: a rearrangement returns values of its inputs."""
        return torch.zeros_like(out[0])

    def describe(self) -> str:
        return f"{self.kind}{self.args}"


@dataclass(frozen=True, eq=False)
class MaxPool(GOp):
    """2-D max pooling (dilation 1, floor mode; padding counts as :math:`-\\infty`).

    Interval: monotone, so the pool of the bounds.

    Deviation. Let :math:`m = \\max_i x_i` and :math:`\\tilde m = \\max_i \\tilde x_i` over one window,
    reached at :math:`i^*` and :math:`\\tilde\\imath`. Then :math:`\\tilde m - m \\le \\tilde x_{\\tilde\\imath} -
    x_{\\tilde\\imath}` and :math:`m - \\tilde m \\le x_{i^*} - \\tilde x_{i^*}`, so :math:`|\\tilde m - m|
    \\le \\max(|\\delta_{i^*}|, |\\delta_{\\tilde\\imath}|)`. With boxes :math:`[l_i, u_i]` that hold both
    the clean and the faulty inputs, a unit can be the largest of either only when
    :math:`u_i \\ge \\max_j l_j` (a *candidate*): the largest deviation of the window's candidates
    bounds the output's. Both maxima also lie in :math:`[\\max_j l_j, \\max_j u_j]`, which caps it.
    A sparse part of f units touches at most :math:`f \\lceil k_h/s_h \\rceil \\lceil k_w/s_w \\rceil`
    outputs (the windows overlapping one input); the cap is applied by :func:`_capped`.
    """

    piecewise_linear: ClassVar[bool] = True

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def forward(self, *xs: Tensor) -> Tensor:
        return F.max_pool2d(xs[0], self.kernel, self.stride, self.padding)

    def interval(self, *boxes: Box2) -> Box2:
        return self.forward(boxes[0][0]), self.forward(boxes[0][1])

    def _cols(self, t: Tensor, fill: float) -> Tensor:
        """``(B, C, kh*kw, P)``: each window's entries, padding filled with ``fill``."""
        b, c, h, w = t.shape
        ph, pw = self.padding
        padded = F.pad(t.reshape(b * c, 1, h, w), (pw, pw, ph, ph), value=fill)
        cols = F.unfold(padded, self.kernel, stride=self.stride)  # (B*C, kh*kw, P)
        return cols.reshape(b, c, cols.shape[1], cols.shape[2])

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        lo, hi = boxes[0]
        shape = lo.shape
        dv = devs[0]
        spread = math.prod(math.ceil(k / s) for k, s in zip(self.kernel, self.stride, strict=True))
        lo_c, hi_c = self._cols(lo, -math.inf), self._cols(hi, -math.inf)
        floor = lo_c.amax(2, keepdim=True)  # max_j l_j per window
        cand = hi_c >= floor
        cap = (hi_c.amax(2) - floor[:, :, 0]).clamp(min=0)
        out_shape = (shape[0], shape[1]) + tuple(
            (n + 2 * p - k) // s + 1
            for n, p, k, s in zip(shape[2:], self.padding, self.kernel, self.stride, strict=True)
        )

        def pool(t: Tensor) -> Tensor:
            cols = self._cols(t.expand(shape), 0.0)  # deviations are >= 0: zero padding is harmless
            return torch.where(cand, cols, torch.zeros_like(cols)).amax(2).reshape(out_shape)

        return _capped(pool(dv.e), [(k * spread, pool(d)) for k, d in dv.parts], cap.reshape(out_shape))

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Secant of a window's max: with :math:`i^*`, :math:`\\tilde\\imath` the clean and faulty
        argmax, :math:`\\delta_{i^*} \\le \\tilde m - m \\le \\delta_{\\tilde\\imath}`, so
        :math:`\\tilde m - m = \\theta\\delta_{i^*} + (1 - \\theta)\\delta_{\\tilde\\imath}` with
        :math:`\\theta \\in [0, 1]`: the coefficient of input i is in [0, 1] when it is a candidate
        (:math:`u_i \\ge \\max_j l_j`), 0 otherwise, and exactly 1 when it is the window's only
        candidate (then :math:`i^* = \\tilde\\imath = i`). The windows' terms are summed back onto
        the inputs (``fold``)."""
        lo, hi = boxes[0]
        b, ch, h, w = lo.shape
        lo_c, hi_c = self._cols(lo, -math.inf), self._cols(hi, -math.inf)  # (B, C, K, P)
        cand = hi_c >= lo_c.amax(2, keepdim=True)
        only = cand & (cand.sum(2, keepdim=True) == 1)
        lam_lo = _rep(only.to(lo.dtype), n)
        lam_hi = _rep(cand.to(lo.dtype), n)
        c, r = m
        rows = c.shape[0]
        cc = c.reshape(rows, ch, 1, -1)
        rr = r.reshape(rows, ch, 1, -1)
        gc, gr = _imul((cc, rr), lam_lo, lam_hi)
        ph, pw = self.padding
        k = gc.shape[2]

        def fold(t: Tensor) -> Tensor:
            t = F.fold(t.reshape(rows * ch, k, -1), (h + 2 * ph, w + 2 * pw), self.kernel, stride=self.stride)
            return t[:, 0, ph : ph + h, pw : pw + w].reshape(rows, ch, h, w)

        return [(fold(gc), fold(gr))]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """With :math:`j^*` the input of largest lower bound in a window, :math:`\\max_i x_i \\ge
        x_{j^*}`, and :math:`\\max_i x_i \\le \\overline y` (the output's upper bound); when
        :math:`\\underline x_{j^*} \\ge \\overline x_i` for every other input i of the window, the max is
        :math:`x_{j^*}` itself. So a negative coefficient goes to :math:`x_{j^*}`, a positive one too
        when :math:`j^*` dominates, and to the constant :math:`\\overline y` otherwise; the windows'
        coefficients are summed back onto the inputs (``fold``)."""
        lo, hi = boxes[0]
        _, ch, h, w = lo.shape
        lo_c, hi_c = self._cols(lo, -math.inf)[0], self._cols(hi, -math.inf)[0]  # (C, K, P)
        k = lo_c.shape[1]
        best = lo_c.argmax(1, keepdim=True)  # (C, 1, P)
        pick = torch.zeros_like(lo_c, dtype=torch.bool).scatter(1, best, True)
        others = torch.where(pick, torch.full_like(hi_c, -math.inf), hi_c).amax(1)  # (C, P)
        dom = lo_c.gather(1, best)[:, 0] >= others  # (C, P)
        rows = lam.shape[0]
        flat = lam.reshape(rows, ch, -1)
        pos, neg = flat.clamp(min=0), flat.clamp(max=0)
        to_best = neg + torch.where(dom, pos, torch.zeros_like(pos))  # (R, C, P)
        const = (torch.where(dom, torch.zeros_like(pos), pos) * out[1].reshape(1, ch, -1)).reshape(rows, -1).sum(1)
        cols = pick.to(lam.dtype)[None] * to_best[:, :, None, :]  # (R, C, K, P)
        ph, pw = self.padding
        g = F.fold(cols.reshape(rows * ch, k, -1), (h + 2 * ph, w + 2 * pw), self.kernel, stride=self.stride)
        return [g[:, 0, ph : ph + h, pw : pw + w].reshape(rows, ch, h, w)], const

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """Per window, the candidates :math:`x_i` with :math:`u_i \\ge \\max_j l_j` (bounds of the
        input variables); one candidate is the output itself, else :math:`y \\ge x_i` for each and
        a one-hot :math:`\\delta` with :math:`y \\le x_i + M_i (1 - \\delta_i)`,
        :math:`M_i = \\max_{q \\ne i} u_q - l_i` (so y equals the largest), within ``[lo, hi]``."""
        ids = ins[0]
        kh, kw = self.kernel
        t = torch.as_tensor(ids + 1, dtype=torch.float64)  # 0 marks padding
        unfolded = F.unfold(t, (kh, kw), padding=self.padding, stride=self.stride)  # (1, C*kh*kw, P)
        c = ids.shape[1]
        cols = unfolded.reshape(c, kh * kw, -1).round().to(torch.int64).numpy() - 1
        out: list[int] = []
        flo, fhi = lo.reshape(-1), hi.reshape(-1)
        lb, ub = _var_bounds(m, ids)
        where = {int(v): n for n, v in enumerate(ids.reshape(-1).tolist())}
        for ci in range(c):
            for p in range(cols.shape[2]):
                cand = [int(v) for v in cols[ci, :, p] if v >= 0]
                at = [where[v] for v in cand]
                cl, cu = lb[at], ub[at]
                best = float(cl.max())
                keep = [(v, a, b) for v, a, b in zip(cand, cl, cu, strict=True) if b >= best]
                if len(keep) == 1:
                    out.append(keep[0][0])
                    continue
                k = len(out)
                y = m.var(max(best, float(flo[k])), min(max(b for _, _, b in keep), float(fhi[k])))
                deltas = [m.binary() for _ in keep]
                m.eq(deltas, [1.0] * len(deltas), 1.0)
                for n, (v, a, _) in enumerate(keep):
                    big = max(max(b for q, (_, _, b) in enumerate(keep) if q != n) - a, 0.0)
                    m.row([y, v], [1.0, -1.0], 0.0, math.inf)  # y >= x_i
                    m.row([y, v, deltas[n]], [1.0, -1.0, big], -math.inf, big)  # y <= x_i + M (1 - d)
                out.append(y)
        with torch.no_grad():
            shape = self.forward(torch.zeros(ids.shape, dtype=torch.float64)).shape
        return np.asarray(out, dtype=np.int64).reshape(shape), True

    def engine_window(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], float] | None:
        return self.kernel, self.stride, self.padding, -math.inf

    def on_patch(self, patch: Tensor) -> Tensor:
        return F.max_pool2d(patch, self.kernel, self.stride)

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """Exact: max pooling returns values of its inputs."""
        return torch.zeros_like(out[0])

    def describe(self) -> str:
        return f"MaxPool({self.kernel[0]})"


@dataclass(frozen=True, eq=False)
class Mean(GOp):
    """Mean over axes ``dims`` (global average pooling, mean over tokens); linear and
    non-negative, so interval and dense deviation are the means of the bounds, and a part of f units
    adds at most :math:`\\min(f \\max d, \\sum d) / n`."""

    piecewise_linear: ClassVar[bool] = True

    dims: tuple[int, ...]
    keepdim: bool = False

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].mean(self.dims, keepdim=self.keepdim)

    def interval(self, *boxes: Box2) -> Box2:
        return _widen(self.forward(boxes[0][0]), self.forward(boxes[0][1]))

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        shape = boxes[0][0].shape
        dv = devs[0]
        n = math.prod(shape[d] for d in self.dims)
        e = self.forward(dv.e.expand(shape))
        for k, d in dv.parts:
            d = d.expand(shape)
            top = torch.minimum(k * d.amax(self.dims, keepdim=self.keepdim), d.sum(self.dims, keepdim=self.keepdim))
            e = e + top / n
        return Dev(e)

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Exact: the transpose of the (non-negative) mean, for the centre and the radius alike."""
        shape = (m[0].shape[0],) + tuple(boxes[0][0].shape[1:])
        return [(_vjp(self.forward, shape, m[0]), _vjp(self.forward, shape, m[1]))]

    def linear_back(self, boxes: Sequence[Box2], out: Box2, lam: Tensor) -> LinBack | None:
        """Exact: the transpose of the mean."""
        return _linear_back(self.forward, boxes, lam)

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        """One row :math:`v_j - \\frac1n \\sum_{i \\in g_j} x_i = 0` per output unit (its group
        :math:`g_j` of n inputs)."""
        x = ins[0]
        nd = x.ndim
        dims = sorted(d % nd for d in self.dims)
        rest = [d for d in range(nd) if d not in dims]
        v = _new_vars(m, lo, hi)
        groups = x.transpose(*rest, *dims).reshape(len(v), -1)
        n = groups.shape[1]
        for j in range(len(v)):
            m.eq([int(v[j]), *groups[j].tolist()], [1.0, *([-1.0 / n] * n)], 0.0)
        with torch.no_grad():
            shape = self.forward(torch.zeros(x.shape, dtype=torch.float64)).shape
        return v.reshape(shape), True

    def local_rounding(self, ins: Sequence[Box2], out: Box2, ar: Arithmetic) -> Tensor:
        """A sum of n values accumulated at ``u_acc``, divided and rounded:
        :math:`c_1(n) M_{in} + 2\\eta`."""
        n = max(1, ins[0][0][0].numel() // max(1, out[0][0].numel()))
        return (ar.dot(n) * float(_mag(ins[0]).max()) + 2 * ar.eta) * torch.ones_like(out[0])

    def describe(self) -> str:
        return f"mean{self.dims}"


def _var_min(lo: Tensor, hi: Tensor) -> Tensor:
    """:math:`\\min_{x \\in [lo, hi]} \\operatorname{var}(x)` over the last axis, exactly:
    :math:`\\operatorname{var}(x) = \\min_m \\frac1n \\sum_i (x_i - m)^2`, so the minimum over the
    box is :math:`\\min_m g(m)`, :math:`g(m) = \\frac1n\\sum_i \\operatorname{dist}(m, [lo_i, hi_i])^2`,
    convex; its derivative is piecewise linear and increasing between the sorted breakpoints, so the
    minimiser is found on the segment where it changes sign."""
    n = lo.shape[-1]
    pts = torch.cat([lo, hi], -1).sort(-1).values  # (..., 2n)

    def g(m: Tensor) -> Tensor:  # m (..., p)
        below = (lo[..., None, :] - m[..., :, None]).clamp(min=0)
        above = (m[..., :, None] - hi[..., None, :]).clamp(min=0)
        return (below.square() + above.square()).sum(-1) / n

    def dg(m: Tensor) -> Tensor:
        below = (lo[..., None, :] - m[..., :, None]).clamp(min=0)
        above = (m[..., :, None] - hi[..., None, :]).clamp(min=0)
        return (above - below).sum(-1)

    d = dg(pts)  # increasing along the last axis
    # first breakpoint where the derivative is >= 0
    idx = (d < 0).sum(-1, keepdim=True).clamp(max=2 * n - 1)
    right = pts.gather(-1, idx)
    left = pts.gather(-1, (idx - 1).clamp(min=0))
    dr, dl = d.gather(-1, idx), d.gather(-1, (idx - 1).clamp(min=0))
    denom = dr - dl
    frac = torch.where(denom > 0, (-dl) / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dl))
    m = torch.where(idx > 0, left + frac.clamp(0, 1) * (right - left), right)
    cand = torch.cat([m, right, left], -1)
    return g(cand).amin(-1).clamp(min=0)


def _var_max(lo: Tensor, hi: Tensor) -> Tensor:
    """An upper bound of :math:`\\operatorname{var}(x)` over the box: for any fixed c,
    :math:`\\operatorname{var}(x) \\le \\frac1n\\sum_i (x_i - c)^2 \\le \\frac1n\\sum_i
    \\max((lo_i - c)^2, (hi_i - c)^2)`; c = the mean of the centres."""
    c = ((lo + hi) / 2).mean(-1, keepdim=True)
    return torch.maximum((lo - c).square(), (hi - c).square()).mean(-1)


@dataclass(frozen=True, eq=False)
class Norm(GOp):
    """Layer norm over the last ``len(shape)`` axes, or group norm with ``groups`` groups over the
    channel axis (and space): :math:`z = (x - \\mu)/\\sqrt{\\sigma^2 + \\epsilon}`, then the
    elementwise affine ``weight``, ``bias`` (batch statistics are not used: eval mode).

    Interval of :math:`z_j`: :math:`x_j - \\mu = \\frac{n-1}{n}x_j - \\frac1n\\sum_{i\\ne j}x_i` is
    bounded exactly; :math:`\\sigma^2` lies in :math:`[\\min\\operatorname{var}, \\max\\operatorname{var}]`
    (:func:`_var_min`, :func:`_var_max`); also :math:`|z_j| \\le \\sqrt{n-1}`.

    Deviation. With :math:`x_c = x - \\mu` (centred), :math:`s = \\sqrt{\\sigma^2 + \\epsilon}` and the
    faulty network's :math:`\\tilde x_c, \\tilde s, \\tilde z`:

    .. math::  \\tilde z - z = \\frac{\\tilde x_c - x_c}{s} + \\tilde z\\,\\frac{s - \\tilde s}{s},
        \\qquad |s - \\tilde s| \\le |\\sigma - \\tilde\\sigma| \\le \\frac{\\|\\delta\\|_2}{\\sqrt n}

    (:math:`\\sigma = \\|x_c\\|_2/\\sqrt n`, centring is a projection), so
    :math:`|\\delta z_j| \\le \\frac1{s_{min}}(|\\delta_j| + |\\overline{\\delta}| + \\tilde Z_j
    \\|\\delta\\|_2/\\sqrt n)` with :math:`s_{min} = \\sqrt{\\min\\operatorname{var} + \\epsilon}` over the
    box of the *clean* inputs (``clean``, when given: a fault that can flatten the faulty group does
    not shrink it; else over the box that holds both) and :math:`\\tilde Z_j` the largest :math:`|z_j|` over
    the given box (which holds the faulty inputs). With
    :math:`\\delta = \\delta^0 + \\sum_k \\delta^k` (dense e, parts of :math:`f_k` units up
    to :math:`d_k`): :math:`n|\\overline\\delta| \\le \\sum e + \\sum_k \\operatorname{top}_{f_k} d_k` and
    :math:`\\|\\delta\\|_2 \\le \\|e\\|_2 + \\sum_k (\\operatorname{top}_{f_k} d_k^2)^{1/2}`; the term
    :math:`|\\delta_j|/s_{min}` keeps the parts (same units), the rest is dense. Each piece is capped by
    the width of the output interval (:func:`_capped`)."""

    shape: tuple[int, ...] | None
    groups: int
    eps: float
    weight: Tensor | None
    bias: Tensor | None
    secant_exact: ClassVar[bool] = False

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        w = None if self.weight is None else self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.shape is not None:
            return F.layer_norm(x, self.shape, w, b, self.eps)
        return F.group_norm(x, self.groups, w, b, self.eps)

    def _grouped(self, t: Tensor) -> Tensor:
        if self.shape is not None:
            n = math.prod(self.shape)
            return t.reshape(*t.shape[: t.dim() - len(self.shape)], n)
        return t.reshape(t.shape[0], self.groups, -1)

    def _affine_view(self, t: Tensor | None, x: Tensor) -> Tensor | None:
        if t is None:
            return None
        if self.shape is not None:
            return t.to(x.dtype)
        return t.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 2))

    def _z_box(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per unit, the box of :math:`z` over the input box, and :math:`s_{min}` (grouped shapes)."""
        gl, gh = self._grouped(lo), self._grouped(hi)
        n = gl.shape[-1]
        sl, sh = gl.sum(-1, keepdim=True), gh.sum(-1, keepdim=True)
        a = (n - 1) / n * gl - (sh - gh) / n  # lower bound of x_j - mu
        b = (n - 1) / n * gh - (sl - gl) / n
        smin = (_var_min(gl, gh) + self.eps).sqrt()[..., None]
        smax = (_var_max(gl, gh) + self.eps).sqrt()[..., None]
        zlo = torch.where(a >= 0, a / smax, a / smin)
        zhi = torch.where(b <= 0, b / smax, b / smin)
        cap = math.sqrt(max(n - 1, 0))
        return zlo.clamp(min=-cap), zhi.clamp(max=cap), smin

    def interval(self, *boxes: Box2) -> Box2:
        lo, hi = boxes[0]
        zlo, zhi, _ = self._z_box(lo, hi)
        zlo, zhi = zlo.reshape(lo.shape), zhi.reshape(lo.shape)
        w = self._affine_view(self.weight, lo)
        b = self._affine_view(self.bias, lo)
        if w is not None:
            c, r = (zlo + zhi) / 2 * w, (zhi - zlo) / 2 * w.abs()
            zlo, zhi = c - r, c + r
        if b is not None:
            zlo, zhi = zlo + b, zhi + b
        return _widen(zlo, zhi)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        lo, hi = boxes[0]
        zlo, zhi, _ = self._z_box(lo, hi)
        dv = devs[0]
        # the smallest std of the clean inputs (over the wider box when their own is not given)
        clo, chi = (lo, hi) if clean is None else clean[0]
        smin = (_var_min(self._grouped(clo), self._grouped(chi)) + self.eps).sqrt()[..., None]
        e = self._grouped(dv.e.expand(lo.shape))
        parts = [(k, self._grouped(d.expand(lo.shape))) for k, d in dv.parts]
        n = e.shape[-1]
        # |mean(delta)| and ||delta||_2 from the sparse structure: a part of k units adds at most
        # the sum (the root of the sum of squares) of its k largest entries
        mean = e.sum(-1, keepdim=True)
        norm2 = e.norm(dim=-1, keepdim=True)
        for k, d in parts:
            mean = mean + _topk_rows(d, k)[..., None]
            norm2 = norm2 + _topk_rows(d.square(), k)[..., None].sqrt()
        zmag = torch.maximum(zlo.abs(), zhi.abs())
        common = (mean / n + zmag * norm2 / math.sqrt(n)) / smin
        # |delta_j| / s stays on the units of each part; the rest is dense; capped by the width
        capped = _capped(e / smin + common, [(k, d / smin) for k, d in parts], zhi - zlo)
        w = self._affine_view(self.weight, lo)

        def out(t: Tensor) -> Tensor:
            t = t.reshape(lo.shape) * (1 + 1e-9)
            return t if w is None else t * w.abs()

        return Dev(out(capped.e), [(k, out(d)) for k, d in capped.parts])

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Interval Jacobian over the box. By the mean value theorem, for each output j,
        :math:`\\tilde z_j - z_j = \\nabla z_j(\\xi_j) \\cdot (\\tilde x - x)` at a point
        :math:`\\xi_j` of the segment (inside the box), and
        :math:`\\partial z_j / \\partial x_i = \\frac1s(\\delta_{ij} - \\frac1n - \\frac{z_j z_i}n)`
        (centring is a projection; :math:`\\partial s/\\partial x_i = x_{c,i}/(ns)`). With
        :math:`1/s \\in [1/s_{max}, 1/s_{min}]` and :math:`z_j, z_i` in their boxes (all taken
        independently per row, which only widens), :math:`(mJ)_i = a_i - \\frac1n\\sum_j a_j
        - \\frac1n \\sum_j a_j z_j\\, z_i` with :math:`a_j = m_j w_j / s`: three interval terms,
        O(n) per group (midpoint-radius; the sum over j of products with the same interval
        :math:`z_i` takes :math:`\\sum_j |c_j|` for the radius)."""
        lo, hi = boxes[0]
        zlo, zhi, smin = self._z_box(lo, hi)
        smax = (_var_max(self._grouped(lo), self._grouped(hi)) + self.eps).sqrt()[..., None]
        c, r = m
        w = self._affine_view(self.weight, lo)
        if w is not None:
            c, r = c * w, r * w.abs()
        c, r = self._grouped(c), self._grouped(r)
        k = c.shape[-1]
        ac, ar = _imul((c, r), _rep(1.0 / smax, n), _rep(1.0 / smin, n))
        zl, zh = _rep(zlo, n), _rep(zhi, n)
        bc, br = _imul((ac, ar), zl, zh)
        zc, zr = (zl + zh) / 2, (zh - zl) / 2
        t3c = bc.sum(-1, keepdim=True) * zc
        t3r = zr * bc.abs().sum(-1, keepdim=True) + (zc.abs() + zr) * br.sum(-1, keepdim=True)
        oc = ac - ac.sum(-1, keepdim=True) / k - t3c / k
        orr = ar + ar.sum(-1, keepdim=True) / k + t3r / k
        shape = (m[0].shape[0],) + tuple(lo.shape[1:])
        return [(oc.reshape(shape), orr.reshape(shape) * (1 + 1e-9))]

    def tensors(self) -> list[Tensor]:
        return [t for t in (self.weight, self.bias) if t is not None]

    @property
    def n_params(self) -> int:
        return sum(t.numel() for t in self.tensors())

    def describe(self) -> str:
        return f"LayerNorm{self.shape}" if self.shape is not None else f"GroupNorm({self.groups})"


def _lse_others(v: Tensor, d: int) -> Tensor:
    """:math:`\\log \\sum_{i \\ne j} e^{v_i}` for every j along axis ``d``, without cancellation:
    for j other than the first largest entry the sum keeps the largest term (so it is at least
    :math:`e^{\\max v}` and the subtraction loses nothing relative), for the largest entry it is
    recomputed with that entry masked (:math:`-\\infty` when it is the only one)."""
    m = v.amax(d, keepdim=True)
    e = torch.exp(v - m)
    s = e.sum(d, keepdim=True)
    rest = torch.log((s - e).clamp(min=1e-300)) + m
    idx = v.argmax(d, keepdim=True)
    masked = v.scatter(d, idx, -math.inf)
    top = torch.logsumexp(masked, d, keepdim=True).expand_as(v)
    is_top = torch.zeros_like(v, dtype=torch.bool).scatter(d, idx, True)
    return torch.where(is_top, top, rest)


@dataclass(frozen=True, eq=False)
class Softmax(GOp):
    """Softmax along ``dim``: :math:`p_j = e^{x_j} / \\sum_i e^{x_i}`.

    Interval (exact per coordinate): :math:`p_j = 1/(1 + \\sum_{i \\ne j} e^{x_i - x_j}) =
    \\operatorname{sigmoid}(x_j - \\log\\sum_{i \\ne j} e^{x_i})` is decreasing in every :math:`x_i` and
    increasing in :math:`x_j`; computed in log space (:func:`_lse_others`), so that a probability
    far below 1 is never rounded up to 1. Deviation (mean value theorem,
    :math:`J = \\operatorname{diag}(p) - pp^T`): :math:`|\\delta p_j| = p_j |\\delta x_j - \\sum_i p_i
    \\delta x_i| \\le \\overline p_j (|\\delta x_j| + S)` with :math:`S = \\min(\\max_i |\\delta x_i|,
    \\sum_i \\overline p_i |\\delta x_i|)` (as :math:`\\sum_i p_i = 1`), bounded from the dense part and the
    f largest entries of each sparse part; :math:`\\overline p_j |\\delta x_j|` keeps the parts. The
    whole is capped by the output interval's width (:func:`_capped`)."""

    dim: int = -1
    secant_exact: ClassVar[bool] = False

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.softmax(xs[0], self.dim)

    def interval(self, *boxes: Box2) -> Box2:
        lo, hi = boxes[0]
        # p_j = sigmoid(x_j - LSE_{i != j} x_i): the lower end at (lo_j, hi_i), the upper at (hi_j, lo_i)
        p_lo = torch.sigmoid(lo - _lse_others(hi, self.dim))
        p_hi = torch.sigmoid(hi - _lse_others(lo, self.dim))
        return _widen(p_lo.clamp(0, 1), p_hi.clamp(0, 1))

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        plo, phi = self.interval(*boxes)
        dv = devs[0]
        d = self.dim
        e = dv.e.expand(plo.shape)
        parts = [(k, p.expand(plo.shape)) for k, p in dv.parts]
        # |sum_i p_i delta_i| <= max_i |delta_i| (sum p = 1), and <= sum_i p_hi_i |delta_i|
        by_max = e.amax(d, keepdim=True)
        by_sum = (phi * e).sum(d, keepdim=True)
        for k, p in parts:
            by_max = by_max + p.amax(d, keepdim=True)
            by_sum = by_sum + _topk_rows((phi * p).movedim(d, -1), k).unsqueeze(-1).movedim(-1, d)
        common = torch.minimum(by_max, by_sum)
        # p_j |delta_j| stays on the units of each part; p_j |sum_i p_i delta_i| is dense
        out = _capped(phi * (e + common), [(k, phi * p) for k, p in parts], phi - plo)
        return Dev(out.e * (1 + 1e-9), [(k, p * (1 + 1e-9)) for k, p in out.parts])

    def secant_back(self, boxes: Sequence[Box2], m: IMat, n: int) -> list[IMat | None] | None:
        """Interval Jacobian over the box (mean value theorem per output j, as for :class:`Norm`):
        :math:`\\partial p_j/\\partial x_i = p_j(\\delta_{ij} - p_i)`, so :math:`(mJ)_i = a_i -
        \\sum_j a_j\\, p_i` with :math:`a_j = m_j p_j`, p in the output box (taken independently per
        row)."""
        plo, phi = self.interval(*boxes)
        d = self.dim
        pl, ph = _rep(plo, n), _rep(phi, n)
        ac, ar = _imul(m, pl, ph)
        pc, pr = (pl + ph) / 2, (ph - pl) / 2
        t2c = ac.sum(d, keepdim=True) * pc
        t2r = pr * ac.abs().sum(d, keepdim=True) + (pc.abs() + pr) * ar.sum(d, keepdim=True)
        return [(ac - t2c, (ar + t2r) * (1 + 1e-9))]

    def describe(self) -> str:
        return f"softmax(dim={self.dim})"
