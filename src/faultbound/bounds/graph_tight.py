"""``method="tight"`` on a graph network: deviation bounds propagated node by node.

For every node v, :class:`~faultbound.network.gops.Dev` bounds :math:`\\delta_v = \\tilde y_v - y_v`
(faulty minus clean) for every input of the box and every failure set of the given sizes, as a dense
per-unit bound plus sparse parts (what f failing units add). Node by node in topological order:

1. the inputs' boxes are widened by their deviations, :math:`[\\underline y - t, \\overline y + t]`
   with :math:`t` = ``Dev.total()``, so that they hold both the clean and the faulty values;
2. the operator's own rule (:meth:`~faultbound.network.gops.GOp.deviation`) gives the node's
   deviation from its inputs' (residual sums add, max pooling passes the largest input deviation
   of a window, norms and softmax by their local Lipschitz bounds, linear operators take the
   :math:`f` largest terms of each row for a part of :math:`f` units); it also receives the clean
   boxes (a norm divides by the smallest std of its clean inputs);
3. at a fault site with :math:`f` failing units, a failing unit j sends a value at most
   :math:`\\Delta_j` = ``fault.deviation(Y_j)`` from its clean value (:math:`Y_j` = its largest
   clean magnitude over the box), so a part :math:`(f, (\\Delta - e)^+)` is added, with e the
   *dense* part of the propagated bound: a correct unit is covered by the propagated bound; a
   failing unit's deviation :math:`\\delta_j` is written :math:`\\operatorname{clip}(\\delta_j, \\pm e_j)`
   (dense) plus the rest, at most :math:`(\\Delta_j - e_j)^+` (the new part), and the sparse parts
   are set to 0 there (their supports only shrink). Subtracting the *total* propagated bound
   instead would be unsound: a sparse part of count 1 may be spent on another unit by the next
   linear layer (pinned in ``tests/test_graph_soundness.py``);
4. a weighted node with :math:`g` failing synapses: a failing synapse (j, i) moves its term
   :math:`w_{ji} y_i` by at most :math:`\\delta_{ji}` = ``fault.deviation(|w_ji|, |y_i|)`` from the
   clean one; at most g rows change, each by at most the sum of its g largest
   :math:`\\delta_{ji}`, which is a part :math:`(g, \\cdot)`;
5. precision adds :math:`\\lambda_l` to every unit of site l.

The output bound is the largest total deviation of an output unit. A part of f units, and the
top-f terms of a row, bound what any f *or fewer* units add, so the bound covers every failure set
of *at most* the given sizes. It is not non-decreasing in every count on every graph: a failure at
an earlier site raises the dense part e at a later failing site and so shrinks that site's extra
part :math:`(\\Delta - e)^+` (``tests/test_tolerance_search.py`` pins a three-site case where one more
failure lowers the bound by 20%); both values are sound.

**Second bound: back-substitution** (:func:`graph_backsub`, neuron faults and precision; synapse
faults keep the forward rule alone). Faulty minus clean output is :math:`\\sum_v M_v c_v`, with
:math:`c_v` what the failing units of site v add and :math:`M_v` the product of the operators'
secant Jacobians along every path from v to the output, each bounded over the widened boxes of step
1 (:meth:`~faultbound.network.gops.GOp.secant_back`: exact for the linear operators, the slope range
for activations, a convex combination for max pooling, interval Jacobians for products, norms and
softmax). Signs cancel inside :math:`M_v` (a residual sum, a convolution's mixed weights, a
difference), which the forward rule cannot see. :func:`graph_propagate` returns the per-output
minimum of the two: both are sound, and each covers every failure set of at most the given sizes
(a part, or the top-f terms of a row, covers at most f units), so the minimum does too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault, NeuronFault, Precision, SynapseFault
from faultbound.network.gops import Affine, Box2, Const, Dev, IMat, Input, _capped, _topk_rows
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Conv, Dense

__all__ = [
    "GraphPass",
    "graph_backsub",
    "graph_bound_within",
    "graph_deviations",
    "graph_forward",
    "graph_propagate",
    "graph_tight_bound",
]

_SAFETY = 1e-9


def _tensor(v: object, like: Tensor) -> Tensor:
    return v if isinstance(v, Tensor) else torch.full_like(like, float(v))  # type: ignore[arg-type]


def _synapse_part(op: Affine, fault: SynapseFault, box: Box2, g: int) -> Tensor:
    """Per output unit, the sum of the ``g`` largest :math:`\\delta_{ji}` of its row."""
    inner = op.op
    assert isinstance(inner, (Dense, Conv))
    y = torch.maximum(box[0].abs(), box[1].abs())
    # delta(w, y) = |gain - 1| |w| |y| + max(|lo|, |hi|): both numbers read off the model's statement
    # exactly (not by evaluating delta at float32 points: 1.05 - 0.05 rounds below 1 there)
    sent = fault.sent
    slope, c = abs(sent.gain - 1.0), sent.magnitude
    terms = op.top_terms(y, g) * slope if slope else torch.zeros_like(op.top_terms(y, g))
    return terms + g * c


@dataclass
class GraphPass:
    """What the forward propagation leaves for the linear bound: per node the clean box, the
    :class:`Dev` (after the node's own failures) and, at a fault site, a per-unit bound of what a
    failing unit adds beyond the propagation, with the number of such units (``None`` elsewhere).
    """

    boxes: list[Box2]
    devs: list[Dev]
    adds: list[tuple[int, Tensor] | None]


def graph_forward(
    net: GraphNetwork,
    fault: Fault,
    counts: Sequence[int] | None,
    lo: Tensor,
    hi: Tensor,
    *,
    refine_rows: int = 0,
) -> GraphPass:
    """The node-by-node propagation of the module docstring, keeping every node's box and
    :class:`Dev`. At a site with f failing units (neuron faults) a failing unit j adds
    :math:`c_j` = its value minus the propagated one, :math:`|c_j| \\le \\Delta_j + t_j` with
    :math:`t_j` the propagated bound there (its sent value is :math:`\\Delta_j` from the clean
    value, which is :math:`t_j` from the propagated one); precision adds :math:`\\lambda_l` on
    every unit.

    With ``refine_rows`` > 0 (neuron faults and precision), the deviation of every node that has
    failures upstream and at most ``refine_rows`` units over the batch (``B * width``) is also
    bounded by back-substitution down to the sites before it (:func:`graph_backsub` with that node
    as the output), and its :class:`Dev` is capped by that bound (``_capped``: still sound, the
    parts kept); the widened boxes of the nodes after it shrink, and with them every slope range
    of the back-substitution. ``0`` is the forward rule alone."""
    boxes = _clean_boxes(net, lo, hi)
    site_pos = {node: k for k, node in enumerate(net.site_nodes)}
    weighted_pos = {node: k for k, node in enumerate(net.weighted_nodes)}
    lam = list(fault.magnitudes(net.L)) if fault.site == "layer" else [0.0] * net.L
    devs: list[Dev] = []
    adds: list[tuple[int, Tensor] | None] = []
    for i, node in enumerate(net.nodes):
        op = node.op
        lo_i, hi_i = boxes[i]
        adds.append(None)
        if isinstance(op, (Input, Const)):
            devs.append(Dev(torch.zeros_like(lo_i)))
            continue
        in_devs = [devs[j] for j in node.inputs]
        if all(not bool((d.total() > 0).any()) for d in in_devs):
            dev = Dev(torch.zeros_like(lo_i))
        else:
            wide = []
            for j, dj in zip(node.inputs, in_devs, strict=True):
                t = dj.total()
                wide.append((boxes[j][0] - t, boxes[j][1] + t))
            dev = op.deviation(wide, in_devs, [boxes[j] for j in node.inputs])
            dev = Dev(dev.e.expand(lo_i.shape) * (1 + _SAFETY), [(k, p * (1 + _SAFETY)) for k, p in dev.parts])
            if refine_rows and lo_i.numel() <= refine_rows and any(a is not None for a in adds):
                lin = _backsub(net, boxes, devs, adds, i)
                if lin is not None:
                    dev = _capped(dev.e, dev.parts, lin.reshape(lo_i.shape))
        if isinstance(fault, SynapseFault) and i in weighted_pos and counts is not None:
            g = int(counts[weighted_pos[i]])
            if g > 0:
                assert isinstance(op, Affine)
                j = node.inputs[0]
                t = devs[j].total()
                part = _synapse_part(op, fault, (boxes[j][0] - t, boxes[j][1] + t), g)
                dev = Dev(dev.e, dev.parts + [(g, part * (1 + _SAFETY))])
        if i in site_pos:
            k = site_pos[i]
            if isinstance(fault, NeuronFault) and counts is not None and counts[k] > 0:
                y_abs = torch.maximum(lo_i.abs(), hi_i.abs())
                delta = _tensor(fault.deviation(y_abs), y_abs)
                adds[i] = (int(counts[k]), (delta + dev.total().expand(y_abs.shape)) * (1 + _SAFETY))
                extra = (delta - dev.e).clamp_min(0.0) * (1 + _SAFETY)
                dev = Dev(dev.e, dev.parts + [(int(counts[k]), extra)])
            if lam[k] > 0:
                adds[i] = (lo_i[0].numel(), torch.full_like(lo_i, lam[k]))
                dev = Dev(dev.e + lam[k], dev.parts)
        # drop parts that cover every unit anyway: fold them into the dense bound
        keep: list[tuple[int, Tensor]] = []
        e = dev.e
        for f, part in dev.parts:
            if f >= part[0].numel():
                e = e + part
            else:
                keep.append((f, part))
        devs.append(Dev(e, keep))
    return GraphPass(boxes, devs, adds)


def _clean_boxes(net: GraphNetwork, lo: Tensor, hi: Tensor) -> list[Box2]:
    """The clean boxes of every node over ``[lo, hi]``: the network's cached domain boxes
    (interval propagation refined by linear bounds, ``GraphNetwork.linear_box_intervals``) when
    ``[lo, hi]`` is its domain (a batch of one), else interval propagation."""
    d = net.domain
    if lo.shape[0] == 1 and torch.equal(lo[0].to(torch.float64), d.lo) and torch.equal(hi[0].to(torch.float64), d.hi):
        return net.intervals()
    return net.box_intervals(lo.to(torch.float64), hi.to(torch.float64))


def graph_deviations(
    net: GraphNetwork, fault: Fault, counts: Sequence[int] | None, lo: Tensor, hi: Tensor
) -> list[Dev]:
    """The :class:`~faultbound.network.gops.Dev` bound of every node (aligned with ``net.nodes``)
    behind :func:`graph_propagate`'s forward rule: :math:`|\\tilde y_v - y_v| \\le` ``Dev.total()`` for
    every input of the boxes and every failure set of at most the given sizes."""
    return graph_forward(net, fault, counts, lo, hi).devs


def _rows(t: Tensor, shape: Sequence[int], n: int) -> Tensor:
    """A per-input tensor broadcast to ``shape`` ``(B, ...)``, repeated for ``n`` rows each and
    flattened: ``(B * n, units)``."""
    return t.expand(tuple(shape)).repeat_interleave(n, 0).reshape(shape[0] * n, -1)


def _dev_cost(mag: Tensor, dev: Dev, shape: Sequence[int], n: int) -> Tensor:
    """Per row of ``mag`` ``(B * n, units)`` (magnitudes of an interval matrix), a bound of
    :math:`\\sum_j |M|_{oj} |\\delta_j|` over every :math:`\\delta` that the :class:`Dev` allows:
    :math:`\\sum_j |M|_{oj} e_j + \\sum_k \\operatorname{top}_{f_k}(|M|_{oj} d_{k,j})_j`."""
    out = (mag * _rows(dev.e, shape, n)).sum(-1)
    for k, d in dev.parts:
        out = out + _topk_rows(mag * _rows(d, shape, n), k)
    return out


def graph_backsub(net: GraphNetwork, gp: GraphPass) -> Tensor | None:
    """A second bound on the output deviation, by interval back-substitution (``(B, n_outputs)``,
    or ``None`` when no failure is linearised: synapse faults (not covered: the forward rule
    alone), or no site fails).

    Every node's deviation is written :math:`\\delta_v = \\sum_{u \\to v} J_{vu}\\,\\delta_u + c_v`,
    with :math:`J_{vu}` the operator's secant Jacobian between the clean and the faulty inputs (both
    in the widened boxes :math:`[\\underline y - t, \\overline y + t]` of the forward pass) and
    :math:`c_v` what failing units add at a site (zero on correct units, at most
    :math:`\\Delta_j + t_j` on a failing one; :math:`\\lambda` everywhere for precision). Unrolled
    from the output, :math:`\\delta_{out} = \\sum_v M_v c_v` with :math:`M_v = \\sum_{paths}
    \\prod J`; each operator bounds its :math:`J` over the boxes (:meth:`GOp.secant_back`, interval
    matrices in centre/radius form), so :math:`M_v` lies in the computed interval matrix and

    .. math:: |\\delta_{out,o}| \\le \\sum_{\\text{sites } v} \\operatorname{top}_{f_v}
        (|M_v|_{oj}\\, c_{v,j})_j + \\sum_{v \\text{ without rule}} \\Big(\\sum_j |M_v|_{oj} e_{v,j}
        + \\sum_k \\operatorname{top}_{f_k}(|M_v|_{oj} d_{k,j})_j\\Big).

    A node whose operator has no linear rule (an activation whose jump lies in the box) stops the
    substitution: its deviation is taken as a free term bounded by its forward :class:`Dev`
    (which already includes every failure upstream of it), and nothing is substituted behind it.
    The same choice is made per output row at a node whose rule bounds a Jacobian over a box
    (``secant_exact = False``: products, norms, softmax, whose coefficients grow with the widened
    boxes): the row stops there when the node's forward :class:`Dev` costs no more than its inputs'
    would (both are sound; the row's substitution then ends at this node). Signs cancel inside
    :math:`M_v` (a residual sum of a path and its negation, a convolution's positive and negative
    weights), which the forward rule cannot see. Nodes whose deviation is zero everywhere are
    skipped."""
    if not any(a is not None for a in gp.adds):
        return None
    return _backsub(net, gp.boxes, gp.devs, gp.adds, len(net.nodes) - 1)


def _backsub(
    net: GraphNetwork,
    boxes: Sequence[Box2],
    devs: Sequence[Dev],
    adds: Sequence[tuple[int, Tensor] | None],
    target: int,
) -> Tensor | None:
    """:func:`graph_backsub` for the deviation of node ``target`` (``(B, width)``), from the
    :class:`Dev` of the nodes before it (``devs`` may stop at ``target``: the node itself is then
    taken as live and without failures of its own). ``None`` when its operator has no rule."""
    b = boxes[target][0].shape[0]
    n = boxes[target][0][0].numel()
    live = [bool((d.total() > 0).any()) for d in devs[:target]] + [True]
    eye = torch.eye(n, dtype=torch.float64).repeat(b, 1).reshape((b * n,) + tuple(boxes[target][0].shape[1:]))
    ms: dict[int, IMat] = {target: (eye, torch.zeros_like(eye))}
    bound = torch.zeros(b * n, dtype=torch.float64)
    for i in range(target, -1, -1):
        m = ms.pop(i, None)
        node = net.nodes[i]
        if m is None or not live[i] or isinstance(node.op, (Input, Const)):
            continue
        shape = boxes[i][0].shape
        mag = (m[0].abs() + m[1]).reshape(b * n, -1)
        ins = [j for j in node.inputs if live[j]]
        back = None
        if ins:
            wide = []
            for j in node.inputs:
                t = devs[j].total()
                wide.append((boxes[j][0] - t, boxes[j][1] + t))
            back = node.op.secant_back(wide, m, n)
        if ins and back is None:
            if i >= len(devs):
                return None
            # no linear rule: the node's whole deviation, from its forward Dev
            bound = bound + _dev_cost(mag, devs[i], shape, n)
            continue
        keep = None
        if back is not None and not node.op.secant_exact and i < len(devs):
            # an interval Jacobian (norm, softmax, products): per row, stop here (this node's
            # forward Dev) when that costs no more than stopping at its inputs would
            stop = _dev_cost(mag, devs[i], shape, n)
            through = torch.zeros_like(stop)
            for j, mj in zip(node.inputs, back, strict=True):
                if mj is not None and live[j]:
                    mj_mag = (mj[0].abs() + mj[1]).reshape(b * n, -1)
                    through = through + _dev_cost(mj_mag, devs[j], boxes[j][0].shape, n)
            halt = stop <= through
            if bool(halt.any()):
                bound = bound + torch.where(halt, stop, torch.zeros_like(stop))
                keep = (~halt).to(stop.dtype)
                mag = mag * keep[:, None]
                back = [
                    None if mj is None else tuple(t * keep.reshape((-1,) + (1,) * (t.dim() - 1)) for t in mj)  # type: ignore[misc]
                    for mj in back
                ]
        add = adds[i] if i < len(devs) else None
        if add is not None:
            bound = bound + _topk_rows(mag * _rows(add[1], shape, n), add[0])
        if back is None:
            continue
        for j, mj in zip(node.inputs, back, strict=True):
            if mj is None or not live[j]:
                continue
            if j in ms:
                ms[j] = (ms[j][0] + mj[0], ms[j][1] + mj[1])
            else:
                ms[j] = mj
    return (bound * (1 + _SAFETY)).reshape(b, n)


def graph_propagate(
    net: GraphNetwork,
    fault: Fault,
    counts: Sequence[int] | None,
    lo: Tensor,
    hi: Tensor,
    *,
    linear: bool = True,
    refine_rows: int = 0,
) -> Tensor:
    """Per-output deviation bounds ``(B, n_outputs)`` over the input boxes ``[lo, hi]``
    (``(B, *input_shape)``) for the failure counts (one per site; per weighted node for synapse
    faults; ``None`` for precision). See the module docstring. With ``linear`` (the default), the
    per-output minimum with the back-substitution bound :func:`graph_backsub` (both are sound, so
    is the minimum; each covers every failure set of at most the counts, so the minimum does too)."""
    gp = graph_forward(net, fault, counts, lo, hi, refine_rows=refine_rows if linear else 0)
    out = _forward_out(gp)
    return _with_backsub(net, gp, out) if linear else out


def _forward_out(gp: GraphPass) -> Tensor:
    """The forward rule's per-output bounds ``(B, n_outputs)``."""
    out = gp.devs[-1].total()
    return out.reshape(out.shape[0], -1)


def _with_backsub(net: GraphNetwork, gp: GraphPass, out: Tensor) -> Tensor:
    """The per-output minimum of ``out`` with the back-substitution bound (when there is one)."""
    lin = graph_backsub(net, gp)
    return out if lin is None else torch.minimum(out, lin)


def graph_bound_within(
    net: GraphNetwork, fault: Fault, counts: Sequence[int] | None, lo: Tensor, hi: Tensor, budget: float
) -> tuple[float, bool]:
    """The largest output bound of :func:`graph_propagate` (``linear=True``), or, when only its
    comparison with ``budget`` matters, a cheaper number that is also within the budget.

    The forward rule runs first; when its largest output bound is at most ``budget``, so is the
    per-output minimum with the back-substitution bound, which is then not computed: returns
    ``(forward bound, False)`` (at least the value, at most the budget). Otherwise it returns
    ``(float(graph_propagate(net, fault, counts, lo, hi).amax()), True)``, computed by the same
    operations. Either way ``value <= budget`` is the verdict :func:`graph_propagate` gives."""
    gp = graph_forward(net, fault, counts, lo, hi)
    out = _forward_out(gp)
    forward = float(out.amax())
    if forward <= budget:
        return forward, False
    return float(_with_backsub(net, gp, out).amax()), True


def graph_tight_bound(net: GraphNetwork, failures: Sequence[int] | None, fault: Fault) -> tuple[float, list[float]]:
    """The tight bound over the graph's domain and the contribution of each site alone.

    Returns:
        ``(value, per_site)``; ``per_site[l]`` is the bound with only site (or weighted node) l+1
        failing.
    """
    if not isinstance(fault, (NeuronFault, SynapseFault, Precision)):
        raise InvalidArgumentError(f"The tight method has no rule for fault {fault!r}.")
    lo, hi = net.domain.lo.unsqueeze(0), net.domain.hi.unsqueeze(0)
    total = float(graph_propagate(net, fault, failures, lo, hi).amax())
    parts: list[float] = []
    if isinstance(fault, Precision):
        for l in range(net.L):
            only = Precision([v if i == l else 0.0 for i, v in enumerate(fault.errors)])
            parts.append(float(graph_propagate(net, only, None, lo, hi).amax()) if fault.errors[l] else 0.0)
        return total, parts
    assert failures is not None
    single = sum(1 for v in failures if v) == 1  # one failing site: its part is the total
    for l in range(len(failures)):
        alone = [v if i == l else 0 for i, v in enumerate(failures)]
        if not failures[l]:
            parts.append(0.0)
        else:
            parts.append(total if single else float(graph_propagate(net, fault, alone, lo, hi).amax()))
    return total, parts
