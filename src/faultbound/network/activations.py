"""Activation registry: Lipschitz constant, range, interval image and local slope per activation.

Each activation of a hidden layer is described by a small frozen value that knows

* ``K`` -- its global Lipschitz constant :math:`K = \\sup_{x \\ne y} |\\varphi(x)-\\varphi(y)|/|x-y|`;
* ``lo, hi`` -- its range (possibly infinite);
* :meth:`Activation.image` -- the exact image :math:`\\varphi([a, b])` of an interval, used by
  interval propagation over the input domain;
* :meth:`Activation.slope` -- :math:`\\max_{x \\in [a, b]} |\\varphi'(x)|`, the Lipschitz constant of
  :math:`\\varphi` restricted to :math:`[a, b]`, used by the tight bound (saturated sigmoids pass almost
  no error).

and, as methods of the same class, every other rule that depends on the activation (the auto_LiRPA
pattern: one class per operator):

* :meth:`Activation.relaxation` -- lines :math:`a_{lo} s + b_{lo} \\le \\varphi(s) \\le a_{hi} s + b_{hi}`
  on an interval (``bounds/tight.py``'s back-substitution of the clean intervals);
* :meth:`Activation.deriv_range` -- :math:`[\\min \\varphi', \\max \\varphi']` on an interval, signed
  (``bounds/tight.py``'s interval back-substitution of the deviation), ``None`` when unknown;
* :meth:`Activation.jump` -- a bound on a discontinuity of :math:`\\varphi` inside an interval (torch's
  softplus switch), added to the slope bound of the deviation;
* :meth:`Activation.milp` -- the exact mixed-integer encoding when :attr:`Activation.piecewise_linear`
  (``bounds/exact.py``);
* :meth:`Activation.apply_` -- the activation in place on a scratch buffer (the fault-injection engine);
* the names the readers know it by (:attr:`Activation.torch_modules`, :attr:`Activation.onnx_ops`,
  :attr:`Activation.aten_ops`) and how each reader builds it (:meth:`Activation.from_module`,
  :meth:`Activation.from_onnx`, :meth:`Activation.from_aten`).

The registry :data:`ACTIVATIONS` is a plain dict from class name to class, filled by
:func:`register`; :data:`REGISTRY` (``torch.nn`` module type -> rule) and the readers' activation
tables are read off it, so adding an activation is one class and one :func:`register` call, in one
file. Everything is computed in float64 torch tensors.

Soundness notes. ``slope`` is exact for piecewise-smooth activations whose derivative is
monotone between known critical points (we evaluate :math:`|\\varphi'|` at the interval ends and at
every critical point of :math:`\\varphi'` inside it), and ``image`` is exact for activations that are
monotone, or monotone on each side of one known minimum. A relative outward margin of
``1e-12`` covers rounding in the hard-coded critical points.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from faultbound.errors import UnsupportedModelError
from faultbound.nn import TunedSigmoid

__all__ = [
    "Activation",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Hardtanh",
    "Softplus",
    "ELU",
    "GELU",
    "SiLU",
    "ACTIVATIONS",
    "REGISTRY",
    "MilpModel",
    "activation_from_module",
    "register",
    "unregister",
    "onnx_activation_ops",
    "aten_activation_ops",
    "piecewise_linear_names",
]

_MARGIN = 1e-12
_SQRT2 = math.sqrt(2.0)
# Minimum of GELU(x) = x Phi(x): root of Phi(x) + x phi(x) = 0.
_GELU_XMIN = -0.7517915241
# Critical points of SiLU'(x): roots of 2 + x (1 - 2 sigmoid(x)) = 0.
_SILU_DCRIT = 2.3993572805
# Minimum of SiLU(x) = x sigmoid(x): root of 1 + x (1 - sigmoid(x)) = 0.
_SILU_XMIN = -1.2784645428


def _t(x: float | Tensor) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float64)


def _closest_to(point: float, a: Tensor, b: Tensor) -> Tensor:
    """The point of [a, b] closest to ``point`` (elementwise)."""
    return torch.clamp(torch.full_like(a, point), min=a, max=b)


def _inside(point: float, a: Tensor, b: Tensor) -> Tensor:
    return (a <= point) & (point <= b)


def _full(v: float, like: Tensor) -> Tensor:
    """A float64 constant shaped like ``like`` (never a float32 scalar tensor: 0.2 must stay 0.2)."""
    return torch.full_like(like, v, dtype=torch.float64)


class MilpModel(Protocol):
    """What :meth:`Activation.milp` and :meth:`~faultbound.network.gops.GOp.milp` may ask of the MILP
    builder of ``bounds/exact.py``: column bounds ``lb``/``ub`` (indexed by variable), new
    variables, and rows."""

    lb: list[float]
    ub: list[float]

    def var(self, lo: float, hi: float, integer: bool = False) -> int: ...

    def binary(self) -> int: ...

    def row(self, idx: Sequence[int], val: Sequence[float], lo: float, hi: float) -> None: ...

    def eq(self, idx: Sequence[int], val: Sequence[float], rhs: float) -> None: ...

    def leaky(self, s: int, c: float, lo: float, hi: float, alpha: float) -> int:
        """A variable equal to ``leaky_relu(s - c, alpha)`` for s in [lo, hi] (exact split)."""
        ...


@dataclass(frozen=True)
class Activation:
    """Base class; subclasses are small frozen values (see the module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that redefines :math:`\\varphi` (``__call__``) gets the safe defaults of every
        rule it does not redefine itself, rather than its parent's, which hold for the parent's
        function only (a ReLU subclass computing something else must not inherit ReLU's MILP)."""
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            for rule in ("apply_", "relaxation", "_deriv", "jump", "milp", "piecewise_linear", "rounds_exactly"):
                if rule not in cls.__dict__:
                    setattr(cls, rule, Activation.__dict__[rule])

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def K(self) -> float:  # noqa: N802 - the paper's notation
        raise NotImplementedError

    @property
    def lo(self) -> float:
        raise NotImplementedError

    @property
    def hi(self) -> float:
        raise NotImplementedError

    @property
    def bounded(self) -> bool:
        """True when the range is finite, so that ``max |phi|`` exists."""
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    @property
    def max_abs(self) -> float:
        """:math:`\\sup |\\varphi|` over the whole real line (``inf`` when unbounded)."""
        return max(abs(self.lo), abs(self.hi))

    @property
    def width(self) -> float:
        """Width of the range, the largest possible deviation of a correct neuron."""
        return self.hi - self.lo

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def image(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """Exact image of the interval ``[a, b]`` (monotone increasing default)."""
        return self(a), self(b)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        """:math:`\\max_{x\\in[a,b]} |\\varphi'(x)|` elementwise (never below the true value)."""
        raise NotImplementedError

    def torch_module(self) -> nn.Module:
        """An equivalent ``torch.nn`` module (for export and training)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ bounds
    def relaxation(
        self, l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a_lo, b_lo, a_hi, b_hi)`` with :math:`a_{lo} s + b_{lo} \\le \\varphi(s) \\le a_{hi} s + b_{hi}`
        for :math:`s \\in [l, u]`, elementwise; ``[y_lo, y_hi]`` is the image of ``[l, u]``.

        Default: the constant lines :math:`y_{lo}, y_{hi}` (always valid).
        """
        zero = torch.zeros_like(l)
        return zero, y_lo, zero, y_hi

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        """:math:`[\\min \\varphi', \\max \\varphi']` over [a, b] before the outward margin."""
        return None

    def deriv_range(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        """:math:`[\\min \\varphi', \\max \\varphi']` over [a, b] (signed, widened by a relative
        1e-12), for activations that are continuous with a derivative known in closed form;
        ``None`` for the others."""
        got = self._deriv(a, b)
        if got is None:
            return None
        dmin, dmax = got
        m = 1e-12 * (dmin.abs() + dmax.abs()) + 1e-300
        return dmin - m, dmax + m

    def jump(self, a: Tensor, b: Tensor) -> Tensor | None:
        """A bound on :math:`|\\varphi(x) - \\varphi(y)| - K_{[a,b]} |x - y|` over [a, b] where
        :math:`\\varphi` is not Lipschitz (a jump), or ``None`` when it is continuous."""
        return None

    #: True when :meth:`milp` encodes the activation exactly (``method="exact"``).
    piecewise_linear: ClassVar[bool] = False
    def rounds_exactly(self, dtype: torch.dtype) -> bool:
        """True when the activation computed in the float format ``dtype`` returns exactly its value
        on inputs of that format (a comparison that returns its input or a constant the format
        holds: ReLU, Hardtanh with such limits); the rounding allowance
        (:mod:`faultbound.bounds.rounding`) charges every other activation. Default ``False``."""
        return False

    def milp(self, m: MilpModel, s: int, lo: float, hi: float) -> int:
        """A MILP variable equal to :math:`\\varphi(s)` for the variable ``s`` in [lo, hi] (exact)."""
        raise UnsupportedModelError(f"{self.name} has no exact MILP encoding (it is not piecewise linear).")

    # ------------------------------------------------------------------ engine
    def apply_(self, s: Tensor) -> Tensor:
        """:math:`\\varphi(s)`, in place on ``s`` when torch has an in-place form (``s`` is scratch)."""
        return self(s)

    # ------------------------------------------------------------------ readers
    #: ``torch.nn`` module types read as this activation (exact type match), by :meth:`from_module`.
    torch_modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: ONNX op types read as this activation, by :meth:`from_onnx`.
    onnx_ops: ClassVar[tuple[str, ...]] = ()
    #: aten op names (overload packets; ``name_`` in-place variants too) read by :meth:`from_aten`.
    aten_ops: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        """The activation of module ``m`` (one of :attr:`torch_modules`); raises
        :class:`UnsupportedModelError` for settings it cannot represent."""
        return cls()

    @classmethod
    def from_onnx(cls, op: str, attrs: Mapping[str, Any], inputs: Sequence[float | None]) -> Activation | None:
        """The activation of an ONNX node ``op`` (one of :attr:`onnx_ops`), or ``None`` for the identity.

        ``attrs``: the node's attributes (floats as their shortest float32 decimal, strings
        decoded); ``inputs``: its inputs after the data, as scalar constants (``None`` when absent).
        Raises :class:`UnsupportedModelError` (its message names the setting) for settings it
        cannot represent.
        """
        return cls()

    @classmethod
    def from_aten(cls, op: str, args: Mapping[str, Any]) -> Activation:
        """The activation of an aten call ``op`` (one of :attr:`aten_ops`) with bound arguments
        ``args``; raises :class:`UnsupportedModelError` for settings it cannot represent."""
        return cls()


def _secant(
    act: Activation, pts: Callable[[Tensor, Tensor, Tensor], list[Tensor]],
    l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Secant slope :math:`a` with the exact extreme offsets of :math:`\\varphi(s) - a s` on [l, u]:
    its values at the ends and at ``pts(a, l, u)`` (the points where :math:`\\varphi' = a`, clamped
    into [l, u]). Offsets are widened by a relative 1e-12; near-point intervals get constant lines."""
    zero = torch.zeros_like(l)
    width = u - l
    ok = width > 1e-9
    fl, fu = act(l), act(u)
    a = torch.where(ok, (fu - fl) / torch.where(ok, width, torch.ones_like(width)), zero)
    cands = [l, u, *[torch.minimum(torch.maximum(p, l), u) for p in pts(a, l, u)]]
    vals = torch.stack([act(x) - a * x for x in cands])
    m = 1e-12 * (vals.abs().amax(0) + (a * l).abs() + (a * u).abs()) + 1e-15
    b_lo, b_hi = vals.amin(0) - m, vals.amax(0) + m
    return (
        torch.where(ok, a, zero),
        torch.where(ok, b_lo, y_lo),
        torch.where(ok, a, zero),
        torch.where(ok, b_hi, y_hi),
    )


def _triangle(
    alpha: float, l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The triangle relaxation of :math:`\\max(s, \\alpha s)` (``alpha <= 1``) on [l, u]; the
    offsets widened by a relative 1e-12."""
    zero = torch.zeros_like(l)
    cross = (l < 0) & (u > 0)
    width = torch.where(cross, u - l, torch.ones_like(l))
    up_slope = torch.where(cross, (u - alpha * l) / width, torch.where(u <= 0, alpha + zero, 1.0 + zero))
    up_icpt = torch.where(cross, u - up_slope * u, zero)
    lo_slope = torch.where(cross, torch.where(u >= -l, 1.0 + zero, alpha + zero), up_slope)
    m = 1e-12 * (l.abs() + u.abs()) + 1e-300
    return lo_slope, zero - m, up_slope, up_icpt + m


@dataclass(frozen=True)
class Sigmoid(Activation):
    """:math:`\\varphi(x) = \\sigma(4 K x)`; plain ``nn.Sigmoid`` is ``K = 1/4``.

    This is the paper's sigmoid tuned to Lipschitz constant K (Section 2.1, Figure 2).
    """

    k: float = 0.25

    @property
    def name(self) -> str:
        return "Sigmoid" if self.k == 0.25 else f"TunedSigmoid(K={self.k:g})"

    @property
    def K(self) -> float:  # noqa: N802
        return self.k

    @property
    def lo(self) -> float:
        return 0.0

    @property
    def hi(self) -> float:
        return 1.0

    def __call__(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x * (4.0 * self.k)) if self.k != 0.25 else torch.sigmoid(x)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        c = 4.0 * self.k
        s = torch.sigmoid(c * _closest_to(0.0, a, b))
        return c * s * (1.0 - s) * (1 + _MARGIN)

    def apply_(self, s: Tensor) -> Tensor:
        return (s if self.k == 0.25 else s.mul_(4.0 * self.k)).sigmoid_()

    def _points(self, a: Tensor, l: Tensor, u: Tensor) -> list[Tensor]:
        """Where :math:`\\varphi'(s) = c\\sigma(cs)(1-\\sigma(cs)) = a`:
        :math:`\\sigma(cs) = (1 \\pm \\sqrt{1 - 4a/c})/2`."""
        c = 4.0 * self.k
        disc = torch.clamp(1.0 - 4.0 * a / c, min=0.0, max=1.0)
        root = torch.sqrt(disc)
        pts = []
        for sg in (1.0, -1.0):
            p = torch.clamp((1.0 + sg * root) / 2, 1e-300, 1.0 - 1e-16)
            pts.append(torch.log(p / (1.0 - p)) / c)
        return pts

    def relaxation(
        self, l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _secant(self, self._points, l, u, y_lo, y_hi)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        c = 4.0 * self.k

        def d(x: Tensor) -> Tensor:
            sg = torch.sigmoid(c * x)
            return c * sg * (1.0 - sg)

        return torch.minimum(d(a), d(b)), d(torch.clamp(torch.zeros_like(a), min=a, max=b))

    torch_modules = (nn.Sigmoid, TunedSigmoid)

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        return Sigmoid(float(m.K)) if isinstance(m, TunedSigmoid) else Sigmoid()

    def torch_module(self) -> nn.Module:
        from faultbound.nn import TunedSigmoid

        return nn.Sigmoid() if self.k == 0.25 else TunedSigmoid(self.k)


@dataclass(frozen=True)
class Tanh(Activation):
    """:math:`\\tanh`, K = 1, range (-1, 1)."""

    @property
    def K(self) -> float:  # noqa: N802
        return 1.0

    @property
    def lo(self) -> float:
        return -1.0

    @property
    def hi(self) -> float:
        return 1.0

    def __call__(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        t = torch.tanh(_closest_to(0.0, a, b))
        return (1.0 - t * t) * (1 + _MARGIN)

    def apply_(self, s: Tensor) -> Tensor:
        return s.tanh_()

    @staticmethod
    def _points(a: Tensor, l: Tensor, u: Tensor) -> list[Tensor]:
        """Where :math:`\\varphi'(s) = 1 - \\tanh^2 s = a`: :math:`s = \\pm\\operatorname{atanh}\\sqrt{1-a}`."""
        t = torch.sqrt(torch.clamp(1.0 - a, min=0.0, max=1.0))
        t = torch.clamp(t, max=1.0 - 1e-16)
        return [torch.atanh(t), -torch.atanh(t)]

    def relaxation(
        self, l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _secant(self, self._points, l, u, y_lo, y_hi)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        def d(x: Tensor) -> Tensor:
            th = torch.tanh(x)
            return 1.0 - th * th

        return torch.minimum(d(a), d(b)), d(torch.clamp(torch.zeros_like(a), min=a, max=b))

    torch_modules = (nn.Tanh,)
    onnx_ops = ("Tanh",)
    aten_ops = ("tanh",)

    def torch_module(self) -> nn.Module:
        return nn.Tanh()


@dataclass(frozen=True)
class ReLU(Activation):
    """:math:`\\max(0, x)`, K = 1, range [0, inf)."""

    @property
    def K(self) -> float:  # noqa: N802
        return 1.0

    @property
    def lo(self) -> float:
        return 0.0

    @property
    def hi(self) -> float:
        return math.inf

    def __call__(self, x: Tensor) -> Tensor:
        return torch.relu(x)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        return (b > 0).to(a.dtype)

    def apply_(self, s: Tensor) -> Tensor:
        return s.relu_()

    def relaxation(
        self, l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _triangle(0.0, l, u, y_lo, y_hi)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        dmin = torch.where(a < 0, _full(0.0, a), _full(1.0, a))
        dmax = torch.where(b > 0, _full(1.0, a), _full(0.0, a))
        return dmin, dmax

    piecewise_linear = True

    def rounds_exactly(self, dtype: torch.dtype) -> bool:
        return True

    def milp(self, m: MilpModel, s: int, lo: float, hi: float) -> int:
        return m.leaky(s, 0.0, lo, hi, 0.0)

    torch_modules = (nn.ReLU,)
    onnx_ops = ("Relu",)
    aten_ops = ("relu",)

    def torch_module(self) -> nn.Module:
        return nn.ReLU()


@dataclass(frozen=True)
class LeakyReLU(Activation):
    """:math:`x` for x >= 0, :math:`\\alpha x` otherwise (``alpha >= 0``)."""

    negative_slope: float = 0.01

    @property
    def name(self) -> str:
        return f"LeakyReLU({self.negative_slope:g})"

    @property
    def K(self) -> float:  # noqa: N802
        return max(1.0, abs(self.negative_slope))

    @property
    def lo(self) -> float:
        return -math.inf if self.negative_slope > 0 else 0.0

    @property
    def hi(self) -> float:
        return math.inf

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.leaky_relu(x, self.negative_slope)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        al = abs(self.negative_slope)
        neg = torch.where(a < 0, torch.full_like(a, al), torch.zeros_like(a))
        pos = (b > 0).to(a.dtype)
        return torch.maximum(neg, pos)

    def relaxation(
        self, l: Tensor, u: Tensor, y_lo: Tensor, y_hi: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        alpha = float(self.negative_slope)
        if alpha <= 1.0:
            return _triangle(alpha, l, u, y_lo, y_hi)
        return super().relaxation(l, u, y_lo, y_hi)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        al = float(self.negative_slope)
        neg, pos = a < 0, b > 0
        lo_al, hi_al = min(al, 1.0), max(al, 1.0)
        dmin = torch.where(neg & pos, _full(lo_al, a), torch.where(neg, _full(al, a), _full(1.0, a)))
        dmax = torch.where(neg & pos, _full(hi_al, a), torch.where(neg, _full(al, a), _full(1.0, a)))
        return dmin, dmax

    piecewise_linear = True

    def milp(self, m: MilpModel, s: int, lo: float, hi: float) -> int:
        return m.leaky(s, 0.0, lo, hi, float(self.negative_slope))

    torch_modules = (nn.LeakyReLU,)
    onnx_ops = ("LeakyRelu",)
    aten_ops = ("leaky_relu",)

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        assert isinstance(m, nn.LeakyReLU)
        if m.negative_slope < 0:
            raise UnsupportedModelError(
                f"Expected LeakyReLU with negative_slope >= 0, but got {m.negative_slope}."
            )
        return LeakyReLU(float(m.negative_slope))

    @classmethod
    def from_onnx(cls, op: str, attrs: Mapping[str, Any], inputs: Sequence[float | None]) -> Activation | None:
        a = float(attrs.get("alpha", 0.01))
        if a < 0:
            raise UnsupportedModelError(f"alpha={a} (expected >= 0)")
        return LeakyReLU(a)

    @classmethod
    def from_aten(cls, op: str, args: Mapping[str, Any]) -> Activation:
        s = float(args.get("negative_slope", 0.01))
        if s < 0:
            raise UnsupportedModelError(f"negative_slope={s} (expected >= 0)")
        return LeakyReLU(s)

    def torch_module(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)


@dataclass(frozen=True)
class Hardtanh(Activation):
    """:math:`\\min(\\max(x, m), M)`, K = 1, range [m, M]."""

    min_val: float = -1.0
    max_val: float = 1.0

    @property
    def name(self) -> str:
        return f"Hardtanh({self.min_val:g},{self.max_val:g})"

    @property
    def K(self) -> float:  # noqa: N802
        return 1.0

    @property
    def lo(self) -> float:
        return self.min_val

    @property
    def hi(self) -> float:
        return self.max_val

    def __call__(self, x: Tensor) -> Tensor:
        return torch.clamp(x, self.min_val, self.max_val)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        return ((b > self.min_val) & (a < self.max_val)).to(a.dtype)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        inside = (b > self.min_val) & (a < self.max_val)
        outside = (a < self.min_val) | (b > self.max_val)
        dmin = torch.where(outside, _full(0.0, a), _full(1.0, a))
        dmax = torch.where(inside, _full(1.0, a), _full(0.0, a))
        return dmin, dmax

    piecewise_linear = True

    def rounds_exactly(self, dtype: torch.dtype) -> bool:
        """When the format holds both limits exactly (the default -1 and 1 in every format)."""
        limits = torch.tensor([self.min_val, self.max_val], dtype=torch.float64)
        return bool(torch.equal(limits.to(dtype).to(torch.float64), limits))

    def milp(self, m: MilpModel, s: int, lo: float, hi: float) -> int:
        """:math:`\\min(\\max(s, a), b) = a + \\mathrm{relu}(s - a) - \\mathrm{relu}(s - b)`."""
        a, b = float(self.min_val), float(self.max_val)
        p1 = m.leaky(s, a, lo, hi, 0.0)
        p2 = m.leaky(s, b, lo, hi, 0.0)
        y = m.var(a, b)
        m.eq([y, p1, p2], [1.0, -1.0, 1.0], a)
        return y

    torch_modules = (nn.Hardtanh,)
    onnx_ops = ("Clip",)
    aten_ops = ("hardtanh", "relu6")

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        assert isinstance(m, nn.Hardtanh)
        return Hardtanh(float(m.min_val), float(m.max_val))

    @classmethod
    def from_onnx(cls, op: str, attrs: Mapping[str, Any], inputs: Sequence[float | None]) -> Activation | None:
        """``Clip``: bounds from the inputs or the attributes; none is the identity, ``min=0`` alone ReLU."""
        lo: float | None = float(attrs["min"]) if "min" in attrs else None
        hi: float | None = float(attrs["max"]) if "max" in attrs else None
        if len(inputs) > 0 and inputs[0] is not None:
            lo = inputs[0]
        if len(inputs) > 1 and inputs[1] is not None:
            hi = inputs[1]
        lo = None if lo is None or lo == -math.inf else lo
        hi = None if hi is None or hi == math.inf else hi
        if lo is None and hi is None:
            return None
        if hi is None and lo == 0.0:
            return ReLU()
        if lo is None or hi is None:
            raise UnsupportedModelError("one-sided bounds other than min=0")
        return Hardtanh(lo, hi)

    @classmethod
    def from_aten(cls, op: str, args: Mapping[str, Any]) -> Activation:
        if op == "relu6":
            return Hardtanh(0.0, 6.0)
        return Hardtanh(float(args.get("min_val", -1.0)), float(args.get("max_val", 1.0)))

    def torch_module(self) -> nn.Module:
        return nn.Hardtanh(self.min_val, self.max_val)


@dataclass(frozen=True)
class Softplus(Activation):
    """:math:`\\log(1 + e^{\\beta x})/\\beta` (identity above ``threshold/beta``), K = 1."""

    beta: float = 1.0
    threshold: float = 20.0

    @property
    def name(self) -> str:
        return f"Softplus(beta={self.beta:g})"

    @property
    def K(self) -> float:  # noqa: N802
        return 1.0

    @property
    def lo(self) -> float:
        return 0.0

    @property
    def hi(self) -> float:
        return math.inf

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.softplus(x, self.beta, self.threshold)

    def image(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        # torch switches to the identity above the threshold, which jumps down by < 3e-9/beta.
        lo, hi = self(a), self(b)
        return lo - 1e-8 / self.beta, hi + 1e-8 / self.beta

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.where(
            self.beta * b > self.threshold, torch.ones_like(b), torch.sigmoid(self.beta * b)
        )

    def jump(self, a: Tensor, b: Tensor) -> Tensor | None:
        """torch's softplus switches to the identity above threshold / beta and drops there by
        log1p(exp(-threshold)) / beta < 3e-9 / beta: not Lipschitz across that point."""
        return torch.where(b * self.beta > self.threshold, _full(1e-8 / self.beta, b), _full(0.0, b))

    torch_modules = (nn.Softplus,)
    aten_ops = ("softplus",)

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        assert isinstance(m, nn.Softplus)
        return Softplus(float(m.beta), float(m.threshold))

    @classmethod
    def from_aten(cls, op: str, args: Mapping[str, Any]) -> Activation:
        return Softplus(float(args.get("beta", 1.0)), float(args.get("threshold", 20.0)))

    def torch_module(self) -> nn.Module:
        return nn.Softplus(self.beta, self.threshold)


@dataclass(frozen=True)
class ELU(Activation):
    """:math:`x` for x > 0, :math:`\\alpha(e^x - 1)` otherwise; K = max(1, alpha)."""

    alpha: float = 1.0

    @property
    def name(self) -> str:
        return f"ELU({self.alpha:g})"

    @property
    def K(self) -> float:  # noqa: N802
        return max(1.0, self.alpha)

    @property
    def lo(self) -> float:
        return -self.alpha

    @property
    def hi(self) -> float:
        return math.inf

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.elu(x, self.alpha)

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        neg = torch.where(
            a <= 0, self.alpha * torch.exp(torch.clamp(b, max=0.0)), torch.zeros_like(a)
        )
        pos = (b > 0).to(a.dtype)
        return torch.maximum(neg, pos) * (1 + _MARGIN)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        al = float(self.alpha)
        neg, pos = a < 0, b > 0
        inf = _full(math.inf, a)
        one = _full(1.0, a)
        dmin = torch.minimum(torch.where(neg, al * torch.exp(a), inf), torch.where(pos, one, inf))
        dmax = torch.maximum(
            torch.where(neg, al * torch.exp(torch.clamp(b, max=0.0)), -inf), torch.where(pos, one, -inf)
        )
        point = ~(neg | pos)
        dmin = torch.where(point, _full(min(al, 1.0), a), dmin)
        dmax = torch.where(point, _full(max(al, 1.0), a), dmax)
        return dmin, dmax

    torch_modules = (nn.ELU,)
    onnx_ops = ("Elu",)
    aten_ops = ("elu",)

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        assert isinstance(m, nn.ELU)
        return ELU(float(m.alpha))

    @classmethod
    def from_onnx(cls, op: str, attrs: Mapping[str, Any], inputs: Sequence[float | None]) -> Activation | None:
        return ELU(float(attrs.get("alpha", 1.0)))

    @classmethod
    def from_aten(cls, op: str, args: Mapping[str, Any]) -> Activation:
        if float(args.get("scale", 1)) != 1.0 or float(args.get("input_scale", 1)) != 1.0:
            raise UnsupportedModelError("scale or input_scale other than 1 (SELU/CELU)")
        return ELU(float(args.get("alpha", 1.0)))

    def torch_module(self) -> nn.Module:
        return nn.ELU(self.alpha)


def _gelu_d(x: Tensor) -> Tensor:
    cdf = 0.5 * (1.0 + torch.erf(x / _SQRT2))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return cdf + x * pdf


@dataclass(frozen=True)
class GELU(Activation):
    """:math:`x\\,\\Phi(x)` (exact form). :math:`\\varphi'` has critical points at :math:`\\pm\\sqrt2`,
    so K = :math:`\\varphi'(\\sqrt2) \\approx 1.1289`; the minimum -0.16997 is at x = -0.75179."""

    @property
    def K(self) -> float:  # noqa: N802
        return float(_gelu_d(_t(_SQRT2))) * (1 + _MARGIN)

    @property
    def lo(self) -> float:
        return float(self(_t(_GELU_XMIN))) - 1e-10

    @property
    def hi(self) -> float:
        return math.inf

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.gelu(x)

    def image(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        lo = self(_closest_to(_GELU_XMIN, a, b))
        lo = torch.where(_inside(_GELU_XMIN, a, b), lo - 1e-10, lo)
        return lo, torch.maximum(self(a), self(b))

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        m = torch.maximum(_gelu_d(a).abs(), _gelu_d(b).abs())
        for c in (_SQRT2, -_SQRT2):
            m = torch.where(_inside(c, a, b), torch.maximum(m, _gelu_d(_t(c)).abs()), m)
        return m * (1 + _MARGIN)

    torch_modules = (nn.GELU,)
    onnx_ops = ("Gelu",)
    aten_ops = ("gelu",)

    @classmethod
    def from_module(cls, m: nn.Module) -> Activation:
        assert isinstance(m, nn.GELU)
        if m.approximate != "none":
            raise UnsupportedModelError(
                f"Expected GELU(approximate='none'), but got approximate={m.approximate!r}."
            )
        return GELU()

    @classmethod
    def from_onnx(cls, op: str, attrs: Mapping[str, Any], inputs: Sequence[float | None]) -> Activation | None:
        if attrs.get("approximate", "none") != "none":
            raise UnsupportedModelError(f"approximate={attrs['approximate']!r}")
        return GELU()

    @classmethod
    def from_aten(cls, op: str, args: Mapping[str, Any]) -> Activation:
        if args.get("approximate", "none") != "none":
            raise UnsupportedModelError(f"approximate={args['approximate']!r}")
        return GELU()

    def torch_module(self) -> nn.Module:
        return nn.GELU()


def _silu_d(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


@dataclass(frozen=True)
class SiLU(Activation):
    """:math:`x\\,\\sigma(x)`. :math:`\\varphi'` has critical points at :math:`\\pm 2.39936`, so
    K = 1.0998; the minimum -0.27846 is at x = -1.27846."""

    @property
    def K(self) -> float:  # noqa: N802
        return float(_silu_d(_t(_SILU_DCRIT))) * (1 + _MARGIN)

    @property
    def lo(self) -> float:
        return float(self(_t(_SILU_XMIN))) - 1e-10

    @property
    def hi(self) -> float:
        return math.inf

    def __call__(self, x: Tensor) -> Tensor:
        return torch.nn.functional.silu(x)

    def image(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        lo = self(_closest_to(_SILU_XMIN, a, b))
        lo = torch.where(_inside(_SILU_XMIN, a, b), lo - 1e-10, lo)
        return lo, torch.maximum(self(a), self(b))

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        m = torch.maximum(_silu_d(a).abs(), _silu_d(b).abs())
        for c in (_SILU_DCRIT, -_SILU_DCRIT):
            m = torch.where(_inside(c, a, b), torch.maximum(m, _silu_d(_t(c)).abs()), m)
        return m * (1 + _MARGIN)

    torch_modules = (nn.SiLU,)
    aten_ops = ("silu",)

    def torch_module(self) -> nn.Module:
        return nn.SiLU()


#: The registry: every activation class, by class name (filled by :func:`register`).
ACTIVATIONS: dict[str, type[Activation]] = {}

#: ``torch.nn`` module type (exact) -> the rule that builds its :class:`Activation` (kept by
#: :func:`register` from each class's :attr:`~Activation.torch_modules`).
REGISTRY: dict[type[nn.Module], Callable[[nn.Module], Activation]] = {}


def register(cls: type[Activation]) -> type[Activation]:
    """Add an activation class to :data:`ACTIVATIONS` (and its modules to :data:`REGISTRY`).

    The readers read their activation tables off the registry at lookup time, so a class
    registered here is read from ``nn.Sequential`` modules (its ``torch_modules``), ONNX
    (``onnx_ops``) and ``torch.export`` programs (``aten_ops``) with no other edit. Usable as a
    decorator; returns ``cls``.
    """
    ACTIVATIONS[cls.__name__] = cls
    for t in cls.torch_modules:
        REGISTRY[t] = cls.from_module
    return cls


def unregister(cls: type[Activation]) -> None:
    """Remove a class added by :func:`register` (for tests that register a local activation)."""
    if ACTIVATIONS.get(cls.__name__) is cls:
        del ACTIVATIONS[cls.__name__]
    for t in cls.torch_modules:
        if t in REGISTRY and REGISTRY[t] == cls.from_module:
            del REGISTRY[t]


for _cls in (Sigmoid, Tanh, ReLU, LeakyReLU, Hardtanh, Softplus, ELU, GELU, SiLU):
    register(_cls)


def onnx_activation_ops() -> dict[str, type[Activation]]:
    """ONNX op type -> activation class, from the registry (read at lookup time)."""
    return {op: c for c in ACTIVATIONS.values() for op in c.onnx_ops}


def aten_activation_ops() -> dict[str, type[Activation]]:
    """aten op name -> activation class, from the registry (read at lookup time)."""
    return {op: c for c in ACTIVATIONS.values() for op in c.aten_ops}


def piecewise_linear_names() -> list[str]:
    """Names of the registered activations that ``method="exact"`` encodes exactly."""
    return [name for name, c in ACTIVATIONS.items() if c.piecewise_linear]


def activation_from_module(m: nn.Module) -> Activation | None:
    """The :class:`Activation` of module ``m``, or ``None`` if ``m`` is not a registered activation.

    ``nn.ReLU6`` and other subclasses are matched by exact type only, so that a subclass with other
    behaviour is never silently treated as its parent.
    """
    rule = REGISTRY.get(type(m))
    return None if rule is None else rule(m)
