"""What the readers share: the chain tracer, traced values, the batch-norm fold, small helpers.

Both graph formats (ONNX, torch.export) are read the same way by :class:`ChainTracer`: the graph is
walked in topological order as a chain, affine nodes become :mod:`~faultbound.network.ops` ops,
and small elementwise patterns (``sigmoid(c x)``, ``x sigmoid(x)``, the erf form of GELU, softplus
with a threshold, ...) are recognised algebraically and become activations. Every unsupported node
is collected before one :class:`~faultbound.errors.UnsupportedModelError` names them all.

Batch norm is folded in one place for every reader: :func:`batch_norm` turns inference batch norm
into the per-channel affine map

.. math::

    \\mathrm{BN}(x)_c = \\gamma_c \\frac{x_c - \\mu_c}{\\sqrt{\\sigma^2_c + \\epsilon}} + \\beta_c
    = a_c x_c + t_c,\\qquad a_c = \\frac{\\gamma_c}{\\sqrt{\\sigma^2_c + \\epsilon}},\\quad
    t_c = \\beta_c - \\mu_c a_c,

and :func:`fold_batch_norms` merges such a map into the dense or convolution op right before it
(:math:`W \\to \\operatorname{diag}(a) W`, :math:`b \\to a \\odot b + t`, the op's own
:meth:`~faultbound.network.ops.Op.fold`), so that the layer keeps one weighted op. A batch norm not
right after one stays its own op.

This module imports no reader and not :mod:`faultbound.network.core`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import UnsupportedModelError
from faultbound.network.activations import GELU, Activation, Sigmoid, SiLU, Softplus
from faultbound.network.ops import ChannelAffine, Op

__all__ = [
    "Act",
    "ChainTracer",
    "Dead",
    "Expr",
    "Gt",
    "Item",
    "Poison",
    "Value",
    "batch_norm",
    "batched_reference",
    "clean_float",
    "first_line",
    "fold_batch_norms",
]

#: One step of a chain: its name (for messages) and the op or activation it applies.
Item = tuple[str, Op | Activation]

_SUPPORTED_TEXT = (
    "Supported: dense / matmul(+bias), conv2d (groups=1, dilation=1, symmetric padding), "
    "average pooling, flatten, inference batch norm, dropout/identity, and the activations sigmoid, "
    "tuned sigmoid sigmoid(c x), tanh, relu, leaky relu, hardtanh/clip, softplus, elu, gelu, silu."
)


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


def fold_batch_norms(items: Sequence[Item]) -> list[Item]:
    """Merge every batch norm that directly follows a dense or convolution op into that op.

    The merged item is named ``"<op name>, <batch norm name>"``; a batch norm anywhere else (the
    first op, after a pooling or an activation) stays its own item.
    """
    out: list[Item] = []
    for name, it in items:
        prev = out[-1][1] if out else None
        merged = prev.fold(it.scale, it.shift) if isinstance(it, ChannelAffine) and isinstance(prev, Op) else None
        if merged is not None:
            out[-1] = (f"{out[-1][0]}, {name}", merged)
            continue
        out.append((name, it))
    return out


# ------------------------------------------------------------------------------ graph tracing
def clean_float(v: float, dtype: Any = None) -> float:
    """``v`` as a float; a float32 (or float16) value becomes its shortest decimal (0.1, not 0.1000000015)."""
    if dtype is not None and np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float16)):
        return float(str(np.float32(v)))
    return float(v)


@dataclass(frozen=True)
class Expr:
    """An elementwise function of the chain's head ``x``: ``coef * (x if has_x else 1) * f(c x)``.

    ``func`` is ``None`` or ``(name, c)`` with name one of ``sigmoid``, ``erf``, ``erf1``
    (``1 + erf``) and ``softplus`` (``log(1 + e^{c x})``). ``gen`` counts the affine ops emitted
    so far; an Expr of an older generation used again means the graph is not a chain.
    """

    gen: int
    coef: float = 1.0
    has_x: bool = True
    func: tuple[str, float] | None = None

    @property
    def is_x(self) -> bool:
        """True for the head itself."""
        return self.coef == 1.0 and self.has_x and self.func is None

    @property
    def is_scaled_x(self) -> bool:
        """True for ``c x`` (including ``x``)."""
        return self.has_x and self.func is None

    def describe(self) -> str:
        parts = [] if self.coef == 1.0 else [f"{self.coef:g}"]
        if self.has_x:
            parts.append("x")
        if self.func is not None:
            name, c = self.func
            arg = "x" if c == 1.0 else f"{c:g} x"
            parts.append(f"(1 + erf({arg}))" if name == "erf1" else f"{name}({arg})")
        return " * ".join(parts) or "1"


@dataclass(frozen=True)
class Act:
    """A complete activation applied to the head of generation ``gen``."""

    gen: int
    act: Activation


@dataclass(frozen=True)
class Gt:
    """``c x > threshold`` (the switch of torch's softplus)."""

    gen: int
    c: float
    threshold: float


@dataclass(frozen=True)
class Poison:
    """The output of a node already reported as unsupported; its consumers are not reported again."""


@dataclass(frozen=True)
class Dead:
    """An output that the analysis does not model (a dropout mask, batch-norm statistics)."""

    what: str


#: A value during tracing: a constant array, or a function of the chain's head.
Value = np.ndarray | Expr | Act | Gt | Dead | Poison

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)


def _scalar(v: Value) -> float | None:
    if isinstance(v, np.ndarray) and v.size == 1 and np.issubdtype(v.dtype, np.number):
        return clean_float(float(v.reshape(())), v.dtype)
    return None


def expr_activation(e: Expr) -> Activation | None:
    """The activation that ``e`` computes, or ``None`` when it is not one we support."""
    if e.func is None:
        return None
    name, c = e.func
    if name == "sigmoid" and not e.has_x and _close(e.coef, 1.0) and c > 0:
        return Sigmoid(c / 4.0)
    if name == "sigmoid" and e.has_x and _close(e.coef, 1.0) and _close(c, 1.0):
        return SiLU()
    if name == "erf1" and e.has_x and _close(e.coef, 0.5) and _close(c, _INV_SQRT2):
        return GELU()
    if name == "softplus" and not e.has_x and c > 0 and _close(e.coef * c, 1.0):
        return Softplus(c)
    return None


class ChainTracer:
    """Builds the flat ``(name, Op | Activation)`` list of a graph walked as a chain.

    A loader maps each graph node to one call: :meth:`affine` for dense / conv / pool / flatten /
    batch norm, :meth:`add_const` for a bias added after a dense or conv, :meth:`mul`,
    :meth:`div`, :meth:`unary`, :meth:`greater`, :meth:`where` for elementwise algebra,
    :meth:`activation` for a complete activation, and :meth:`fail` for anything else. Problems are
    collected in :attr:`problems`; :meth:`finish` raises one error naming each distinct one (the
    node's operator, the first word of its label, and the reason) once, at its first node
    (:func:`unsupported_line`).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[Item] = []
        self.problems: list[str] = []
        #: per problem: (operator, reason), what tells problems apart
        self.keys: list[tuple[str, str]] = []
        self.gen = 0
        self._biasable = False

    def start(self) -> Expr:
        """The model input, the head of generation 0."""
        return Expr(self.gen)

    def fail(self, label: str, why: str = "") -> Poison:
        """Record an unsupported node; its consumers go on silently so that all others are listed."""
        self._refuse(label, why)
        return Poison()

    def _refuse(self, label: str, why: str = "") -> None:
        """Record a problem of the node ``label`` (``"Op 'name'"``)."""
        self.problems.append(f"{label} ({why})" if why else label)
        self.keys.append((label.split(" ", 1)[0], why))

    def _new_head(self, biasable: bool = False) -> Expr:
        self.gen += 1
        self._biasable = biasable
        return Expr(self.gen)

    def _current(self, v: Value, label: str) -> bool:
        if isinstance(v, Poison):
            return False
        if isinstance(v, Dead):
            self._refuse(label, f"uses {v.what}, which is not modelled")
            return False
        if isinstance(v, np.ndarray):
            self._refuse(label, "expected the layer input, but got a constant")
            return False
        if v.gen != self.gen:
            self._refuse(label, "uses the output of an earlier layer: the model is not a plain chain")
            return False
        return True

    def materialize(self, v: Value, label: str) -> bool:
        """Emit the activation that ``v`` computes (nothing for the head itself)."""
        if not self._current(v, label):
            return False
        if isinstance(v, Act):
            self.items.append((label, v.act))
            self._new_head()
            return True
        if isinstance(v, Gt):
            self._refuse(label, "uses a comparison that is not part of a softplus")
            return False
        assert isinstance(v, Expr)
        if v.is_x:
            return True
        act = expr_activation(v)
        if act is None:
            hint = " (a scalar Mul is only supported right before a Sigmoid)" if v.is_scaled_x else ""
            self._refuse(
                label, f"its input computes {v.describe()}, which is not a supported activation{hint}"
            )
            return False
        self.items.append((label, act))
        self._new_head()
        return True

    def affine(self, label: str, v: Value, op: Op) -> Expr:
        """Append an affine op applied to ``v``; returns the new head."""
        if not self.materialize(v, label):
            return self._new_head()
        self.items.append((label, op))
        return self._new_head(biasable=op.weighted)

    def _live(self, label: str, *vals: Value) -> bool:
        """True when no value is poisoned and every traced value belongs to the current layer."""
        if any(isinstance(v, Poison) for v in vals):
            return False
        return all(self._current(v, label) for v in vals if not isinstance(v, np.ndarray))

    def add_const(self, label: str, v: Value, c: np.ndarray) -> Value:
        """``v + c``: a bias after a dense / conv, or the ``1 +`` of ``1 + erf``."""
        if not self._live(label, v):
            return Poison()
        k = _scalar(c)
        if isinstance(v, Expr) and v.func is not None and v.func[0] == "erf" and not v.has_x:
            if k is not None and _close(k, v.coef):
                return Expr(v.gen, v.coef, False, ("erf1", v.func[1]))
        if isinstance(v, Expr) and v.is_x and self._biasable and self.items:
            name, op = self.items[-1]
            arr = np.asarray(c, dtype=np.float64)
            try:
                biased = op.add_bias(arr) if isinstance(op, Op) else None
                if biased is not None:
                    self.items[-1] = (f"{name}, {label}", biased)
                    return v
            except ValueError:
                pass
        return self.fail(label, f"adds a constant of shape {tuple(np.shape(c))} that is not a bias")

    def mul(self, label: str, a: Value, b: Value) -> Value:
        """``a * b``: scaling by a scalar, or the product of two factors of one expression."""
        if not self._live(label, a, b):
            return Poison()
        if isinstance(a, np.ndarray):
            a, b = b, a
        if isinstance(a, Act) and _scalar(b) == 1.0:  # torch's ELU scale factors of 1
            return a
        if isinstance(a, Expr) and isinstance(b, np.ndarray):
            k = _scalar(b)
            if k is None:
                return self.fail(label, f"multiplies by a constant of shape {tuple(b.shape)}, not a scalar")
            return Expr(a.gen, a.coef * k, a.has_x, a.func)
        if isinstance(a, Expr) and isinstance(b, Expr):
            if (a.has_x and b.has_x) or (a.func is not None and b.func is not None):
                return self.fail(label, f"computes ({a.describe()}) * ({b.describe()})")
            return Expr(a.gen, a.coef * b.coef, a.has_x or b.has_x, a.func or b.func)
        return self.fail(label, "multiplies values that do not form one supported activation")

    def div(self, label: str, a: Value, b: Value) -> Value:
        """``a / b`` for a scalar constant ``b``."""
        if not self._live(label, a, b):
            return Poison()
        k = _scalar(b)
        if isinstance(a, Act) and k == 1.0:
            return a
        if k is None or k == 0 or not isinstance(a, Expr):
            return self.fail(label, "divides by something other than a non-zero scalar constant")
        return Expr(a.gen, a.coef / k, a.has_x, a.func)

    def unary(self, label: str, name: str, v: Value) -> Value:
        """``name(c x)`` for ``name`` in ``sigmoid``, ``erf``, ``softplus``, ``exp``."""
        if not self._live(label, v):
            return Poison()
        if isinstance(v, Expr) and v.is_scaled_x:
            return Expr(v.gen, 1.0, False, (name, v.coef))
        return self.fail(label, f"applies {name} to something other than a multiple of the layer input")

    def log1p(self, label: str, v: Value) -> Value:
        """``log(1 + exp(c x)) = softplus(c x)`` (torch's decomposed softplus)."""
        if not self._live(label, v):
            return Poison()
        if isinstance(v, Expr) and v.func is not None and v.func[0] == "exp" and not v.has_x and _close(v.coef, 1):
            return Expr(v.gen, 1.0, False, ("softplus", v.func[1]))
        return self.fail(label, "is not part of a softplus")

    def greater(self, label: str, v: Value, t: Value) -> Value:
        """``c x > threshold`` (softplus switch)."""
        if not self._live(label, v, t):
            return Poison()
        k = _scalar(t)
        if k is not None and isinstance(v, Expr) and v.is_scaled_x:
            return Gt(v.gen, v.coef, k)
        return self.fail(label, "compares something other than the layer input with a scalar")

    def where(self, label: str, cond: Value, a: Value, b: Value) -> Value:
        """``where(c x > t, x, softplus(c x) / c)``: torch's softplus with its threshold."""
        if not self._live(label, cond, a, b):
            return Poison()
        if isinstance(cond, Gt) and isinstance(a, Expr) and isinstance(b, Expr) and a.is_x and cond.c > 0:
            act = expr_activation(b)
            if isinstance(act, Softplus):
                # c x > t  <=>  beta x > t beta / c
                return Act(self.gen, Softplus(act.beta, clean_float(cond.threshold * act.beta / cond.c)))
        return self.fail(label, "is not the threshold switch of a softplus")

    def activation(self, label: str, v: Value, act: Activation) -> Value:
        """A complete activation applied to the layer input."""
        if not self._live(label, v):
            return Poison()
        if isinstance(v, Expr) and v.is_x:
            return Act(self.gen, act)
        what = v.describe() if isinstance(v, Expr) else "an activation"
        return self.fail(label, f"applies {act.name} to {what} rather than to the layer input")

    def finish(self, v: Value, label: str) -> list[Item]:
        """The items after the graph output ``v``, batch norms folded; raises naming every problem found."""
        if not self.problems:
            self.materialize(v, label)
        if self.problems:
            found = list(zip(self.keys, self.problems, strict=True))
            raise UnsupportedModelError(f"{unsupported_line(self.what, found)} {_SUPPORTED_TEXT}")
        return fold_batch_norms(self.items)


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
