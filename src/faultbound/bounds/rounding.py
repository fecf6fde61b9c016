"""The rounding allowance: how far a network run in its format can be from the same network in exact
arithmetic, clean and faulty, so that a certificate holds for what the engine measures in that format.

Every bound of :mod:`faultbound.bounds` is about exact arithmetic: :math:`B \\ge |\\tilde F(x) - F(x)|`
with F the clean and :math:`\\tilde F` the faulty network. A model computing in float16 measures
:math:`|\\tilde F_{16}(x) - F_{16}(x)|` instead, which can exceed B by rounding. By the triangle
inequality

.. math:: |\\tilde F_{16} - F_{16}| \\le |\\tilde F - F| + |\\tilde F_{16} - \\tilde F| + |F_{16} - F|
    \\le B + R_{faulty} + R_{clean},

where :math:`R_{clean}` bounds the rounding error of the clean network over the clean boxes and
:math:`R_{faulty}` that of the faulty network over the faulty boxes (the clean boxes widened by the
tight deviation bound of every node, :func:`~faultbound.bounds.graph_tight.graph_deviations`, which
hold every faulty value for every failure set of the given sizes). Both come from one forward pass
over the graph (a chain through :meth:`GraphNetwork.from_network
<faultbound.network.graph.GraphNetwork.from_network>`), :func:`node_rounding`:

.. math:: r_v = \\underbrace{\\operatorname{dev}_v(r_{u_1}, \\dots, r_{u_k})}_{\\text{inputs' errors}}
    + \\underbrace{\\ell_v}_{\\text{its own rounding}},

where :math:`\\operatorname{dev}_v` is the operator's own deviation rule
(:meth:`GOp.deviation <faultbound.network.gops.GOp.deviation>`, the rule of the tight bound) applied
to dense deviations :math:`r_u` over the inputs' boxes widened by :math:`r_u` (they hold both the
exact and the rounded inputs), and :math:`\\ell_v` the rounding of the operator's result computed in
the format from the rounded inputs.

**The arithmetic model** (u the format's unit roundoff, :math:`\\eta` half its smallest subnormal,
:math:`\\gamma_n(u) = nu/(1-nu)`, magnitudes M over the widened boxes, :math:`u_{acc}` and
:math:`\\eta_{acc}` those of the accumulator of sums: float32 for float16 and bfloat16, the format
itself otherwise; :class:`Arithmetic`, :mod:`faultbound.formats`):

* the input is rounded to the format: :math:`\\ell = u|x| + \\eta`; a constant: :math:`|fl(c) - c|`;
* a dense, convolution, average-pooling or per-channel affine node of n products per output,
  :math:`S = |A| M_{in} + |b|`: its result is a sum of n + 1 terms accumulated at :math:`u_{acc}`
  and rounded to the format at most twice (the sum, then the bias added), off by at most
  :math:`c_1 S` with :math:`c_1 = 2u + (1 + u)^2 \\gamma_{n+1}(u_{acc})` (Higham, Lemma 3.1), plus
  :math:`(n + 1)\\eta_{acc} + 2\\eta + n M_{in} \\eta` for underflow; :math:`c_1` plus u when its
  weights are not numbers of the format (a folded batch norm: :math:`|fl(w) - w| \\le u|w|`). Where
  the engine may compute a faulty value as the clean result plus an update of the changed inputs
  (``incremental``: the layered engine's low-rank update, synapse faults), each rounded, then added:
  the changed inputs' terms are at most 2S, so three times that plus :math:`u M_{out}` covers both;
* an elementwise activation: exact for ReLU and Hardtanh (a comparison); any other within
  :math:`u M_{out} + u^2 + 8 u_{acc} (M_{out} + M_{in}) + \\eta` (torch's CPU kernels evaluate
  float16 and bfloat16 activations in float32 and round once: within :math:`u|y| + u^2`, measured;
  :data:`~faultbound.network.gops.ACTIVATION_ULPS` = 8 units of float32 for the float32 evaluation
  itself);
* a residual sum of k inputs: :math:`\\gamma_k(u) \\sum_j M_j` (additions do not underflow); an
  elementwise product: :math:`uM_{out} + \\eta`; a constant scale and shift:
  :math:`4u(|a|M_{in} + |c|) + 3\\eta`; a mean of n values:
  :math:`(2u + (1 + u)^2\\gamma_n(u_{acc})) M_{in} + 2\\eta`; a matrix product over k terms:
  :math:`(2u + (1 + u)^2\\gamma_k(u_{acc})) (M_A M_B) + (k + 1)\\eta_{acc} + 2\\eta`;
* exact: rearrangements (views, permutes, slices), concatenation, max pooling, flatten;
* layer and group norms and softmax have no rule: a network with one is refused in one line
  (:func:`rounding_rule_missing`).

Each rule is the operator's own :meth:`GOp.local_rounding <faultbound.network.gops.GOp.local_rounding>`
(an activation's exactness is :meth:`Activation.rounds_exactly
<faultbound.network.activations.Activation.rounds_exactly>`, an affine op's number of products
:meth:`Op.terms <faultbound.network.ops.Op.terms>`); this module only walks the graph.

At a fault site of the faulty network a failing unit sends :math:`g\\hat y + v` (:mod:`faultbound.faults`)
rounded to the format: with g = 0 (crash, stuck-at, Byzantine) it sends :math:`fl(v)`, off by at most
:math:`u\\max|v| + \\eta` (0 for a crash), so :math:`r = \\max(r, u\\max|v| + \\eta)`; otherwise
:math:`r = \\max(1, |g|) r + uM + \\eta` (M over the faulty box). A precision offset is rounded and
added, :math:`r + 2uM + \\eta`; a weighted node with g failing synapses, each sending a rounded v,
adds :math:`uM + g(u\\max|v| + \\eta)(1 + u)`. A value whose box reaches the format's
largest number (65504 for float16) may overflow: the allowance is then refused
(:class:`~faultbound.errors.UnboundedError`).

The allowance is zero in float64 (the bounds' own arithmetic, whose rounding every rule already
covers by a relative :math:`10^{-9}`). The bound functions add it for float16 and bfloat16, where a
measured deviation can exceed the exact bound by a visible amount; for float32 they do not (it is
about n·2⁻²⁴ of the values, it would change every float32 certificate, and the worst-case search
measures float32 models in float64, where the certificate holds), and :func:`rounding_allowance`
gives it on request (docs/formats.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from faultbound.bounds.graph_tight import graph_forward
from faultbound.errors import UnboundedError, UnsupportedModelError
from faultbound.faults import Fault, NeuronFault, Precision, SynapseFault
from faultbound.formats import Arithmetic, format_name, largest, tiny_error, unit_roundoff
from faultbound.network.core import Network
from faultbound.network.gops import (
    Box2,
    Const,
    Dev,
    Input,
)
from faultbound.network.graph import GraphNetwork

__all__ = [
    "ADDED_FORMATS",
    "Rounding",
    "node_rounding",
    "rounding_allowance",
    "rounding_bound",
    "rounding_rule_missing",
]

#: The formats whose allowance the bound functions add to every certificate.
ADDED_FORMATS = (torch.float16, torch.bfloat16)
_SAFETY = 1e-9


def _mag(box: Box2) -> Tensor:
    return torch.maximum(box[0].abs(), box[1].abs())


def rounding_rule_missing(net: GraphNetwork) -> str | None:
    """``None`` when every operator of ``net`` has a rounding rule, else one line naming each
    operator without one (once, with its first node)."""
    missing: dict[str, str] = {}
    for node in net.nodes:
        op = node.op
        if isinstance(op, (Input, Const)) or op.has_rounding_rule:
            continue
        missing.setdefault(op.describe(), node.name)
    if not missing:
        return None
    names = ", ".join(f"{k} (node {v})" for k, v in missing.items())
    return (
        f"No rounding rule for {names}: the rounding error of a {format_name(net.dtype)} network with it "
        "is not bounded, so no certificate covers its measurements in that format."
    )


def node_rounding(
    net: GraphNetwork,
    boxes: Sequence[Box2],
    dtype: torch.dtype,
    site_extra: Callable[[int, Tensor, Box2], Tensor] | None = None,
    incremental: bool = False,
) -> list[Tensor]:
    """Per node, a per-unit bound :math:`r_v` of :math:`|\\hat y_v - y_v|` (the node run in ``dtype``
    minus exact arithmetic) for every value in ``boxes`` (each node's box of exact values, with a
    leading batch axis), by the forward pass of the module docstring. ``site_extra(i, r, box)``, when
    given, returns node i's bound after what its failing units send (the faulty network);
    ``incremental``: a weighted node may be computed as a clean result plus an update
    (:class:`Arithmetic`).

    Raises:
        UnsupportedModelError: an operator without a rounding rule (:func:`rounding_rule_missing`).
        UnboundedError: a value that may reach the format's largest number.
    """
    why = rounding_rule_missing(net)
    if why is not None:
        raise UnsupportedModelError(why)
    ar = Arithmetic.of(dtype, incremental)
    u, eta, big = ar.u, ar.eta, largest(dtype)
    rs: list[Tensor] = []
    for i, node in enumerate(net.nodes):
        op = node.op
        lo, hi = boxes[i]
        if isinstance(op, Input):
            r = u * _mag((lo, hi)) + eta
        elif isinstance(op, Const):
            v = op.make(lo.shape[0], torch.float64)
            r = (v.to(dtype).to(torch.float64) - v).abs()
        else:
            wide = [(boxes[j][0] - rs[j], boxes[j][1] + rs[j]) for j in node.inputs]
            for box in wide:
                top = float(_mag(box).max())
                if not math.isfinite(top) or top >= big:
                    raise UnboundedError(
                        f"Values before node {node.name} may reach {format_name(dtype)}'s largest number "
                        f"{big:g} over the domain: the rounding allowance is unbounded (overflow)."
                    )
            dev = op.deviation(wide, [Dev(rs[j]) for j in node.inputs], [boxes[j] for j in node.inputs])
            out_box = op.interval(*wide)
            local = op.local_rounding(wide, out_box, ar)
            r = (dev.total() + local).expand(lo.shape) * (1 + _SAFETY)
        if site_extra is not None:
            r = site_extra(i, r, (lo, hi))
        rs.append(r)
    return rs


@dataclass(frozen=True)
class Rounding:
    """Per input and output ``(B, n_outputs)``: ``clean`` bounds :math:`|F_{fmt} - F|`, ``faulty``
    bounds :math:`|\\tilde F_{fmt} - \\tilde F|` over every failure set of at most the counts."""

    clean: Tensor
    faulty: Tensor

    @property
    def total(self) -> Tensor:
        """:math:`R_{clean} + R_{faulty}`, what a certificate adds."""
        return self.clean + self.faulty


def _as_graph(net: Network | GraphNetwork) -> GraphNetwork:
    return net if isinstance(net, GraphNetwork) else GraphNetwork.from_network(net)


def rounding_bound(
    net: Network | GraphNetwork,
    fault: Fault,
    counts: Sequence[int] | None,
    lo: Tensor,
    hi: Tensor,
    dtype: torch.dtype | None = None,
) -> Rounding:
    """:class:`Rounding` over the input boxes ``[lo, hi]`` (``(B, *input_shape)``) of the network run
    in ``dtype`` (default its own format ``net.dtype``), for the failure counts of the bound
    (one per site, per weighted node for synapse faults, ``None`` for precision). Zero in float64."""
    g = _as_graph(net)
    dtype = g.dtype if dtype is None else dtype
    shape = (lo.shape[0], g.n_outputs)
    if dtype == torch.float64:
        zero = torch.zeros(shape, dtype=torch.float64)
        return Rounding(zero, zero)
    gp = graph_forward(g, fault, counts, lo.to(torch.float64), hi.to(torch.float64))
    clean = node_rounding(g, gp.boxes, dtype)[-1]
    faulty_boxes = [(b[0] - d.total(), b[1] + d.total()) for b, d in zip(gp.boxes, gp.devs, strict=True)]
    u, eta = unit_roundoff(dtype), tiny_error(dtype)
    sites = {node: k for k, node in enumerate(g.site_nodes)}
    weighted = {node: k for k, node in enumerate(g.weighted_nodes)}

    def sent(i: int, r: Tensor, box: Box2) -> Tensor:
        m = _mag(box)
        if isinstance(fault, NeuronFault) and i in sites and counts is not None and counts[sites[i]] > 0:
            sent = fault.sent
            if sent.gain == 0:  # fl(v): exact for a crash
                return torch.clamp(r, min=u * sent.magnitude + eta) if sent.magnitude > 0 else r
            return max(1.0, abs(sent.gain)) * r + u * m + eta
        if isinstance(fault, Precision) and i in sites and fault.magnitudes(g.L)[sites[i]] > 0:
            return r + 2 * u * m + eta
        if isinstance(fault, SynapseFault) and i in weighted and counts is not None and counts[weighted[i]] > 0:
            gk = int(counts[weighted[i]])
            return r + u * m + gk * (u * fault.sent.magnitude + eta) * (1 + u)
        return r

    incremental = isinstance(net, Network) or isinstance(fault, SynapseFault)
    faulty = node_rounding(g, faulty_boxes, dtype, sent, incremental)[-1]
    return Rounding(clean.reshape(shape), faulty.reshape(shape))


def rounding_allowance(
    net: Network | GraphNetwork, fault: Fault, counts: Sequence[int] | None, dtype: torch.dtype | None = None
) -> float:
    """The largest :attr:`Rounding.total` over the network's domain: what a certificate over the
    domain adds for the network run in ``dtype`` (default ``net.dtype``; 0.0 in float64)."""
    d = net.domain
    r = rounding_bound(net, fault, counts, d.lo.unsqueeze(0), d.hi.unsqueeze(0), dtype)
    return float(r.total.max())
