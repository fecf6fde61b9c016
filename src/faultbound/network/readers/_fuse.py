"""Activations that a model file writes out as elementwise algebra, fused into one activation node.

The graph readers (:mod:`.graph_export`, :mod:`.graph_onnx`) build one node per operator. An
exporter may write an activation as several (``x * sigmoid(x)``, the erf form of GELU, torch's
decomposed softplus with its threshold switch, ``sigmoid(c x)`` for a tuned sigmoid); the readers
build the operators the graph has no node of (``erf``, ``exp``, ``log1p``, ``gt``, ``where``) as
transient :class:`Elem` nodes, and :func:`fuse_activations` rewrites each of these patterns, read
off the node list, into one :class:`~faultbound.network.gops.Act` node on the pattern's input
:math:`x` (constants compared with a relative tolerance of :math:`10^{-6}`):

* ``Act(Sigmoid)(c x)``, :math:`c > 0` -> ``Sigmoid(k = c / 4)`` (the tuned sigmoid
  :math:`1 / (1 + e^{-4 k x})`);
* ``x * Act(Sigmoid)(x)`` -> ``SiLU``;
* :math:`\\tfrac12\\, x\\, (1 + \\mathrm{erf}(x / \\sqrt 2))` (the 1/2 applied last or to x first)
  -> ``GELU``;
* ``where(c x > t, x, log1p(exp(b x)) / b')`` with :math:`b / b' = 1`, :math:`c > 0` -> torch's
  ``Softplus(beta=b, threshold=t b / c)``; ``where(c x > t, x, softplus(b x) / b')`` (ONNX's
  ``Softplus`` behind torch's switch, as the dynamo exporter writes ``nn.Softplus``) likewise.

Each rewritten node must be the only reader of the nodes it absorbs (but for :math:`x`); the
absorbed nodes are then read by nobody and dropped by
:meth:`~faultbound.network.graph.GraphNetwork.build`. An :class:`Elem` node left that the output
still reads is refused, each distinct one named once (:func:`~._common.unsupported_line`). The
probe check then compares the graph with the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import UnsupportedModelError
from faultbound.network.activations import GELU, Activation, Sigmoid, SiLU, Softplus
from faultbound.network.gops import Act, ConstAffine, GOp, Mul
from faultbound.network.readers._common import unsupported_line

__all__ = ["Elem", "fuse_activations"]

NodeSpec = tuple[str, GOp, tuple[int, ...]]


@dataclass(frozen=True)
class Elem(GOp):
    """A transient elementwise operator of a model (``erf``, ``exp``, ``log1p``, ``gt`` with the
    scalar ``threshold``, ``where(cond, a, b)``), only between reading and :func:`fuse_activations`."""

    fn: str
    threshold: float = 0.0
    arity: ClassVar[int] = -1

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        if self.fn == "erf":
            return torch.erf(x)
        if self.fn == "exp":
            return torch.exp(x)
        if self.fn == "log1p":
            return torch.log1p(x)
        if self.fn == "gt":
            return (x > self.threshold).to(x.dtype)
        return torch.where(x > 0, xs[1], xs[2])

    def describe(self) -> str:
        return f"{self.fn} > {self.threshold:g}" if self.fn == "gt" else self.fn


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)


def clean_constant(v: float) -> float:
    """``v``, or its shortest float32 decimal when ``v`` is a float32 number (a weight of a float32
    file: 0.3, not 0.30000001192092896), as the activations of a float32 model are named."""
    f32 = np.float32(v)
    return float(str(f32)) if float(f32) == v and math.isfinite(v) else float(v)


def _scalar(t: Tensor | None) -> float | None:
    if t is None or t.numel() != 1:
        return None
    return clean_constant(float(t.reshape(())))


def fuse_activations(nodes: Sequence[NodeSpec], output: int) -> list[NodeSpec]:
    """The node list with the patterns of the module docstring fused (see there).

    Raises:
        UnsupportedModelError: an :class:`Elem` node that is no part of such a pattern and that the
            output (node ``output``) reads.
    """
    out = list(nodes)
    readers = [0] * len(out)
    for _, _, ins in out:
        for j in ins:
            readers[j] += 1

    def op(i: int) -> GOp:
        return out[i][1]

    def only(i: int) -> bool:
        return readers[i] == 1

    def scaled(i: int) -> tuple[int, float]:
        """``(x, c)`` when node i is ``c x`` (a scalar ConstAffine without shift), else ``(i, 1)``."""
        o = op(i)
        if isinstance(o, ConstAffine) and o.shift is None:
            c = _scalar(o.scale)
            if c is not None:
                return out[i][2][0], c
        return i, 1.0

    def act(i: int, x: int, a: Activation) -> None:
        out[i] = (out[i][0], Act(a), (x,))

    for i, (_, o, ins) in enumerate(out):
        if isinstance(o, Act) and type(o.act) is Sigmoid and o.act.k == 0.25:
            x, c = scaled(ins[0])
            if x != ins[0] and only(ins[0]) and c > 0:
                act(i, x, Sigmoid(clean_constant(c / 4.0)))
        elif isinstance(o, Mul):
            _mul(out, i, only, scaled, act)
        elif isinstance(o, ConstAffine) and o.shift is None and _scalar(o.scale) is not None:
            _half(out, i, only, scaled, act)
        elif isinstance(o, Elem) and o.fn == "where":
            _softplus(out, i, only, scaled, act)
    live = {output}
    for i in range(output, -1, -1):
        if i in live:
            live.update(out[i][2])
    found = [
        ((o.fn, ""), f"{o.fn} at node {name!r} (not part of a supported activation)")
        for i, (name, o, _) in enumerate(out)
        if i in live and isinstance(o, Elem)
    ]
    if found:
        raise UnsupportedModelError(unsupported_line("operators", found))
    return out


def _erf_plus_one(out: list[NodeSpec], i: int, only, scaled) -> int | None:  # type: ignore[no-untyped-def]
    """``x`` when node i is ``1 + erf(x / sqrt 2)`` (each step read once), else ``None``."""
    o = out[i][1]
    if not (isinstance(o, ConstAffine) and o.scale is None and _scalar(o.shift) == 1.0 and only(i)):
        return None
    e = out[i][2][0]
    eo = out[e][1]
    if not (isinstance(eo, Elem) and eo.fn == "erf" and only(e)):
        return None
    d = out[e][2][0]
    x, c = scaled(d)
    if x == d or not only(d) or not _close(c, 1 / math.sqrt(2)):
        return None
    return int(x)


def _mul(out: list[NodeSpec], i: int, only, scaled, act) -> None:  # type: ignore[no-untyped-def]
    """``x * sigmoid(x)`` -> SiLU; ``(x / 2) * (1 + erf(x / sqrt 2))`` -> GELU."""
    p, q = out[i][2]
    for a, b in ((p, q), (q, p)):
        bo = out[b][1]
        if isinstance(bo, Act) and type(bo.act) is Sigmoid and bo.act.k == 0.25 and out[b][2][0] == a and only(b):
            act(i, a, SiLU())
            return
        x = _erf_plus_one(out, b, only, scaled)
        if x is not None:
            xa, c = scaled(a)
            if xa == x and xa != a and only(a) and _close(c, 0.5):
                act(i, x, GELU())
                return


def _half(out: list[NodeSpec], i: int, only, scaled, act) -> None:  # type: ignore[no-untyped-def]
    """``(x * (1 + erf(x / sqrt 2))) / 2`` -> GELU."""
    m, c = scaled(i)
    if not _close(c, 0.5) or not isinstance(out[m][1], Mul) or not only(m):
        return
    p, q = out[m][2]
    for a, b in ((p, q), (q, p)):
        if _erf_plus_one(out, b, only, scaled) == a:
            act(i, a, GELU())
            return


def _softplus(out: list[NodeSpec], i: int, only, scaled, act) -> None:  # type: ignore[no-untyped-def]
    """``where(c x > t, x, log1p(exp(b x)) / b')`` -> ``Softplus(b, t b / c)`` when b = b'."""
    g, a, y = out[i][2]
    go = out[g][1]
    if not (isinstance(go, Elem) and go.fn == "gt" and only(g)):
        return
    x, c = scaled(out[g][2][0])
    if x != a or c <= 0:
        return
    lg, inv = scaled(y)
    so = out[lg][1]
    if isinstance(so, Act) and type(so.act) is Softplus and so.act.beta == 1.0 and only(lg) and (lg == y or only(y)):
        # ONNX's Softplus (no threshold) behind torch's switch: where(c x > t, x, softplus(b x) / b')
        xb, beta = scaled(out[lg][2][0])
        if xb == x and beta > 0 and _close(beta * inv, 1.0):
            act(i, x, Softplus(beta, clean_constant(go.threshold * beta / c)))
        return
    if lg != y and not only(y):
        return
    lo = out[lg][1]
    if not (isinstance(lo, Elem) and lo.fn == "log1p" and only(lg)):
        return
    e = out[lg][2][0]
    eo = out[e][1]
    if not (isinstance(eo, Elem) and eo.fn == "exp" and only(e)):
        return
    xb, beta = scaled(out[e][2][0])
    if xb != x or beta <= 0 or not _close(beta * inv, 1.0):
        return
    act(i, x, Softplus(beta, clean_constant(go.threshold * beta / c)))
