"""Activation registry: Lipschitz constant, range, interval image and local slope per activation.

Each activation of a hidden layer is described by a small frozen value that knows

* ``K`` -- its global Lipschitz constant :math:`K = \\sup_{x \\ne y} |\\varphi(x)-\\varphi(y)|/|x-y|`;
* ``lo, hi`` -- its range (possibly infinite);
* :meth:`Activation.image` -- the exact image :math:`\\varphi([a, b])` of an interval, used by
  interval propagation over the input domain;
* :meth:`Activation.slope` -- :math:`\\max_{x \\in [a, b]} |\\varphi'(x)|`, the Lipschitz constant of
  :math:`\\varphi` restricted to :math:`[a, b]`, used by the tight bound (saturated sigmoids pass almost
  no error).

The registry :data:`REGISTRY` is a plain dict from ``torch.nn`` module type to a rule that turns a
module instance into an :class:`Activation`. Everything is computed in float64 torch tensors.

Soundness notes. ``slope`` is exact for piecewise-smooth activations whose derivative is
monotone between known critical points (we evaluate :math:`|\\varphi'|` at the interval ends and at
every critical point of :math:`\\varphi'` inside it), and ``image`` is exact for activations that are
monotone, or monotone on each side of one known minimum. A relative outward margin of
``1e-12`` covers rounding in the hard-coded critical points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from faultbound.errors import UnsupportedModelError

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
    "REGISTRY",
    "activation_from_module",
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


@dataclass(frozen=True)
class Activation:
    """Base class; subclasses are small frozen values (see the module docstring)."""

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

    def torch_module(self) -> nn.Module:
        return nn.SiLU()


def _leaky(m: nn.Module) -> Activation:
    assert isinstance(m, nn.LeakyReLU)
    if m.negative_slope < 0:
        raise UnsupportedModelError(
            f"Expected LeakyReLU with negative_slope >= 0, but got {m.negative_slope}."
        )
    return LeakyReLU(float(m.negative_slope))


def _gelu(m: nn.Module) -> Activation:
    assert isinstance(m, nn.GELU)
    if m.approximate != "none":
        raise UnsupportedModelError(
            f"Expected GELU(approximate='none'), but got approximate={m.approximate!r}."
        )
    return GELU()


def _tuned(m: nn.Module) -> Activation:
    return Sigmoid(float(m.K))  # type: ignore[arg-type]


def _registry() -> dict[type[nn.Module], Callable[[nn.Module], Activation]]:
    from faultbound.nn import TunedSigmoid

    return {
        nn.Sigmoid: lambda m: Sigmoid(),
        TunedSigmoid: _tuned,
        nn.Tanh: lambda m: Tanh(),
        nn.ReLU: lambda m: ReLU(),
        nn.LeakyReLU: _leaky,
        nn.Hardtanh: lambda m: Hardtanh(float(m.min_val), float(m.max_val)),  # type: ignore[arg-type]
        nn.Softplus: lambda m: Softplus(float(m.beta), float(m.threshold)),  # type: ignore[arg-type]
        nn.ELU: lambda m: ELU(float(m.alpha)),  # type: ignore[arg-type]
        nn.GELU: _gelu,
        nn.SiLU: lambda m: SiLU(),
    }


#: Map from ``torch.nn`` module type to the rule that builds its :class:`Activation`.
REGISTRY: dict[type[nn.Module], Callable[[nn.Module], Activation]] = _registry()


def activation_from_module(m: nn.Module) -> Activation | None:
    """The :class:`Activation` of module ``m``, or ``None`` if ``m`` is not a registered activation.

    ``nn.ReLU6`` and other subclasses are matched by exact type only, so that a subclass with other
    behaviour is never silently treated as its parent.
    """
    rule = REGISTRY.get(type(m))
    return None if rule is None else rule(m)
