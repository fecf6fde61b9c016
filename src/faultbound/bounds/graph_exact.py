"""``method="exact"`` on a graph network: the exact worst output deviation by MILP, where every
operator is piecewise linear.

The quantity is the same as for a layered network (:mod:`faultbound.bounds.exact`),

.. math::

    E^\\star = \\sup_{x \\in [lo, hi]}\\ \\sup_{S,\\,v}\\ \\|F(x) - F_{S,v}(x)\\|_\\infty ,

S a failure set with :math:`f_k` failing units at fault site k (or :math:`g_k` failing synapses at
weighted node k), v the values failing units send. The MILP has a *clean* and a *faulty* copy of
every node's units; a node that no fault reaches shares its variables between the copies.

**Operators** (per unit, each copy; :math:`[\\ell, u]` = the variable's interval):

* ``Input``: :math:`x \\in [lo, hi]`; ``Const``: fixed variables.
* ``Affine`` (dense, convolution, average pooling, per-channel affine): :math:`s = A y + b` with
  the op's effective matrix A (a dense op on tokens: :math:`I \\otimes W`); ``Flatten``,
  ``Rearrange`` (view, permute, slice, select) and ``Concat`` are index maps: no variable, no row.
* ``Act`` with a piecewise-linear activation: the activation's own encoding
  (:meth:`~faultbound.network.activations.Activation.milp`; ReLU, LeakyReLU, Hardtanh).
* ``Add`` (signs :math:`\\sigma_k`, broadcasting as torch): :math:`v = \\sum_k \\sigma_k x_k`;
  ``ConstAffine``: :math:`v = a x + c`; ``Mean``: :math:`v = \\frac1n \\sum_i x_i`.
* ``MaxPool`` (kernel, stride, padding; padding never wins): for a window of candidates
  :math:`x_i \\in [\\ell_i, u_i]`, let :math:`\\ell^* = \\max_i \\ell_i`; a candidate with
  :math:`u_i < \\ell^*` is never the maximum and is dropped; one candidate left is the output itself;
  otherwise binaries :math:`\\delta_i`, :math:`\\sum_i \\delta_i = 1`, and

  .. math::  v \\ge x_i, \\qquad v \\le x_i + M_i (1 - \\delta_i), \\qquad
             M_i = \\max_{k \\ne i} u_k - \\ell_i \\ \\ge 0 ,

  :math:`v \\in [\\ell^*, \\max_i u_i]`. Exact: :math:`\\delta_i = 1` forces :math:`v = x_i \\ge` every
  candidate; :math:`\\delta_i = 0` leaves :math:`v - x_i \\le \\max_{k \\ne i} u_k - \\ell_i`, which
  every point with another argmax meets (big-M from the interval bounds below).

Any other operator (``Mul``, ``MatMul``, ``Norm``, ``Softmax``, a smooth activation) is refused,
naming the node: use ``method="tight"``.

**Faults** are the encodings of :mod:`faultbound.bounds.exact`, at the graph's sites: at fault site
k with :math:`f_k > 0` failing units, binaries :math:`q_j`, :math:`\\sum_j q_j = f_k` (:math:`\\le`
with ``at_most``) and :math:`\\tilde y_j = (1 - q_j) z_j + g\\, q_j y_j + q_j v_j` (what the model's
:class:`~faultbound.faults.Sent` states, y the clean value, z what the unit computes in the faulty
network); synapse faults (gain 0) at weighted node k: a binary per non-zero :math:`A_{ji}`,
:math:`\\sum r = g_k`; precision: :math:`\\tilde y_j = z_j + p_j`, :math:`|p_j| \\le \\lambda_k` at
every unit of site k.

**Big-M intervals.** Clean: interval propagation over the box
(:meth:`~faultbound.network.graph.GraphNetwork.box_intervals`). Faulty: the operator's interval
image of its inputs' faulty intervals (with the fault's hull at a site, any synapse's value at a
weighted node), intersected with the clean interval widened by the ``tight`` deviation bound
:math:`t_v` of the node (:func:`~faultbound.bounds.graph_tight.graph_deviations`, sound for every
failure set of at most the given sizes, so for these too). The same :math:`t_v` gives the linking
rows :math:`|\\tilde v_j - v_j| \\le t_{v,j}` at every node that creates variables (valid cuts that
tie the copies together in the LP relaxation). All intervals are widened outward by a relative
:math:`10^{-9}`.

**The number returned** is the solver's dual bound plus the margin of
:data:`~faultbound.bounds.exact.REL_MARGIN`, the witness's error replayed by a float64 faulty forward
(:func:`graph_replay`) is ``lower``, exactly as :func:`~faultbound.bounds.exact.exact_bound`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.bounds.exact import (
    ExactResult,
    _Built,
    _check_exact,
    _deviation_vars,
    _faulty_rows,
    _input_box,
    _Model,
    _objective,
    _outputs,
    _search,
    _sent_hull,
    _sent_units,
    _synapse_box,
    _widen,
)
from faultbound.errors import InvalidArgumentError, UnsupportedModelError
from faultbound.faults import Fault, NeuronFault, Precision, SynapseFault
from faultbound.network.gops import (
    Affine,
    Const,
    GOp,
)
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense

__all__ = ["graph_exact_bound", "check_graph_piecewise_linear", "graph_replay"]


def check_graph_piecewise_linear(net: GraphNetwork) -> None:
    """Raise :class:`UnsupportedModelError` naming every node that ``method="exact"`` cannot encode
    (an operator that is not piecewise linear), in one line."""
    bad = [f"{node.name} ({node.op.describe()})" for node in net.nodes if not node.op.piecewise_linear]
    if bad:
        raise UnsupportedModelError(
            f"method='exact' encodes piecewise-linear operators only, but node{'s' if len(bad) > 1 else ''} "
            f"{', '.join(bad)} {'are' if len(bad) > 1 else 'is'} not; use method='tight'."
        )


# --------------------------------------------------------------------------- matrices


def _synapses(net: GraphNetwork, k: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The effective matrix of weighted node k (1-based) and its synapses (j, i) in the numbering of
    the witness (:func:`~faultbound.bounds.exact._faulty_rows`)."""
    i_node = net.weighted_nodes[k - 1]
    node = net.nodes[i_node]
    assert isinstance(node.op, Affine)
    in_shape = net.nodes[node.inputs[0]].shape
    A, _ = node.op.matrix(in_shape)
    if isinstance(node.op.op, Dense) and len(in_shape) == 1:
        n_in = A.shape[1]
        return A, [(j, i) for j in range(A.shape[0]) for i in range(n_in)]
    rows, cols = np.nonzero(A)
    return A, list(zip(rows.tolist(), cols.tolist(), strict=True))


# --------------------------------------------------------------------------- encodings


def _bounds(m: _Model, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lb = np.asarray(m.lb, dtype=np.float64)
    ub = np.asarray(m.ub, dtype=np.float64)
    return lb[ids], ub[ids]


def _interval(op: GOp, m: _Model, ins: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The operator's interval image (flat, widened) of its inputs' variable bounds."""
    boxes = []
    for ids in ins:
        a, b = _bounds(m, ids)
        boxes.append((torch.as_tensor(a), torch.as_tensor(b)))
    with torch.no_grad():
        lo, hi = op.interval(*boxes)
    return _widen(lo.reshape(-1).numpy(), hi.reshape(-1).numpy())


# --------------------------------------------------------------------------- build


def build_graph(
    net: GraphNetwork,
    counts: Sequence[int] | None,
    fault: Fault,
    lo: np.ndarray,
    hi: np.ndarray,
    outputs: Sequence[int],
    at_most: bool,
    combined: bool,
) -> _Built:
    from faultbound.bounds.graph_tight import graph_deviations

    m = _Model()
    lo_t = torch.as_tensor(lo, dtype=torch.float64).reshape(1, *net.input_shape)
    hi_t = torch.as_tensor(hi, dtype=torch.float64).reshape(1, *net.input_shape)
    boxes = net.box_intervals(lo_t, hi_t)
    for node, (blo, bhi) in zip(net.nodes, boxes, strict=True):
        if not bool(torch.isfinite(blo).all() & torch.isfinite(bhi).all()):
            raise InvalidArgumentError(
                f"method='exact' needs bounded values, but node {node.name} ({node.op.describe()}) is unbounded "
                "over the input box; give a bounded --domain."
            )
    site_pos = {node: k for k, node in enumerate(net.site_nodes)}
    weighted_pos = {node: k for k, node in enumerate(net.weighted_nodes)}
    neuron = isinstance(fault, NeuronFault)
    synapse = isinstance(fault, SynapseFault)
    lam = list(fault.errors) if isinstance(fault, Precision) else [0.0] * net.L
    if synapse:
        starts = [n for n, k in weighted_pos.items() if counts is not None and counts[k] > 0]
    elif neuron:
        starts = [n for n, k in site_pos.items() if counts is not None and counts[k] > 0]
    else:
        starts = [n for n, k in site_pos.items() if lam[k] > 0]
    hit = net.downstream(starts) if starts else [False] * len(net.nodes)
    devs = graph_deviations(net, fault, counts, lo_t, hi_t) if starts else None
    sent = fault.sent if isinstance(fault, (NeuronFault, SynapseFault)) else None

    x = [m.var(a, b) for a, b in zip(lo, hi, strict=True)]
    clean: list[np.ndarray] = []
    faulty: list[np.ndarray] = []
    q: dict[int, list[int]] = {}
    bvals: dict[int, list[int]] = {}
    r: dict[int, list[tuple[int, int, int]]] = {}
    prec: dict[int, list[int]] = {}
    for i, node in enumerate(net.nodes):
        op, shape = node.op, (1, *node.shape)
        cl, cu = _widen(boxes[i][0].reshape(-1).numpy(), boxes[i][1].reshape(-1).numpy())
        ins_c = [clean[j] for j in node.inputs]
        if i == 0:  # the input (node 0)
            c_ids = np.asarray(x, dtype=np.int64).reshape(shape)
        else:
            c_ids, _ = op.milp(m, ins_c, cl, cu)
        clean.append(c_ids)
        if not hit[i]:
            faulty.append(c_ids)
            continue
        assert devs is not None
        t = torch.broadcast_to(devs[i].total(), shape).reshape(-1).numpy() * (1 + 1e-9) + 1e-12
        ins_f = [faulty[j] for j in node.inputs]
        g = int(counts[weighted_pos[i]]) if synapse and counts is not None and i in weighted_pos else 0
        if g > 0:  # failing synapses: the affine map's rows with their binaries
            assert isinstance(op, Affine) and sent is not None  # only affine nodes are weighted
            A, b = op.matrix(net.nodes[node.inputs[0]].shape)
            yt = ins_f[0].reshape(-1)
            ytl, ytu = _bounds(m, yt)
            fl, fu = _synapse_box(A, b, ytl, ytu, sent)
            fl, fu = np.maximum(fl, cl - t), np.minimum(fu, cu + t)
            fu = np.maximum(fu, fl)
            dense = isinstance(op, Affine) and isinstance(op.op, Dense) and len(net.nodes[node.inputs[0]].shape) == 1
            st, syn = _faulty_rows(
                m, A, b, yt.tolist(), ytl, ytu, fl, fu, g, sent, dense, at_most, c_ids.reshape(-1).tolist(), t
            )
            r[weighted_pos[i] + 1] = syn
            z_ids, made = np.asarray(st, dtype=np.int64).reshape(shape), False
        elif not any(hit[j] for j in node.inputs):  # a fault site fed by clean values: z = y
            z_ids, made = c_ids, False
        else:
            fl, fu = _interval(op, m, ins_f)
            fl, fu = np.maximum(fl, cl - t), np.minimum(fu, cu + t)
            fu = np.maximum(fu, fl)
            z_ids, made = op.milp(m, ins_f, fl, fu)
        z, y = z_ids.reshape(-1), c_ids.reshape(-1)
        if made:  # link the copies: |z_j - y_j| <= t_j (a valid cut)
            for j in range(len(z)):
                if z[j] != y[j]:
                    m.row([int(z[j]), int(y[j])], [1.0, -1.0], -t[j], t[j])
        k = site_pos.get(i)
        f = int(counts[k]) if neuron and counts is not None and k is not None else 0
        lam_k = lam[k] if k is not None else 0.0
        if f > 0 or lam_k > 0:
            assert k is not None
            zl, zu = _bounds(m, z)
            yl, yu = _bounds(m, y)
            nl, nu = _sent_hull(fault, zl, zu, yl, yu, k + 1)
            nl, nu = _widen(np.maximum(nl, cl - t), np.minimum(nu, cu + t))
            new, qs, bl, ps = _sent_units(m, fault, z.tolist(), zl, zu, y.tolist(), yl, yu, nl, nu, f, lam_k, at_most)
            for j in range(len(new)):  # what a unit sends is within t_j of its clean value
                m.row([new[j], int(y[j])], [1.0, -1.0], -t[j], t[j])
            if qs:
                q[k + 1] = qs
            if bl:
                bvals[k + 1] = bl
            if ps:
                prec[k + 1] = ps
            z_ids = np.asarray(new, dtype=np.int64).reshape(shape)
        faulty.append(z_ids)
    out_c, out_f = clean[-1].reshape(-1), faulty[-1].reshape(-1)
    if hit[-1]:
        assert devs is not None
        t_out = torch.broadcast_to(devs[-1].total(), (1, *net.output.shape)).reshape(-1).numpy() * (1 + 1e-9) + 1e-12
        fl, fu = _bounds(m, out_f)
        cl, cu = _bounds(m, out_c)
        d = _deviation_vars(m, out_f.tolist(), out_c.tolist(), fl, fu, cl, cu, t_out)
    else:  # no fault reaches the output
        d = [m.var(0.0, 0.0) for _ in out_c]
    pairs, objective, scale = _objective(m, d, outputs, combined)
    return _Built(m, x, q, bvals, r, prec, d, pairs, objective, scale)


# --------------------------------------------------------------------------- replay


def graph_replay(
    net: GraphNetwork, fault: Fault, witness: dict[str, Any], outputs: Sequence[int] | None = None
) -> float:
    """:math:`\\max_k |F(x)_k - F_{S,v}(x)_k|` over ``outputs`` (default: all) of a witness of
    :func:`graph_exact_bound`, by a float64 forward pass over the graph with the witness's faults:
    failing units of site k send ``fault.sends`` of their clean values (and the chosen values),
    failing synapses (j, i) of weighted node k transmit what the model sends instead of
    :math:`A_{ji} y_i`, precision offsets are added at every unit of their site."""
    x = torch.tensor(witness["input"], dtype=torch.float64).reshape(1, *net.input_shape)
    failing = {int(k): v for k, v in witness.get("failure_set", {}).items()}
    values = {int(k): v for k, v in witness.get("values", {}).items()}
    offsets = {int(k): v for k, v in witness.get("precision", {}).items()}
    site_pos = {node: k + 1 for k, node in enumerate(net.site_nodes)}
    weighted_pos = {node: k + 1 for k, node in enumerate(net.weighted_nodes)}
    with torch.no_grad():
        clean = net.values(x)
        vals: list[Tensor] = []
        for i, node in enumerate(net.nodes):
            if i == 0 or isinstance(node.op, Const):
                vals.append(clean[i])
                continue
            out = node.op.forward(*(vals[j] for j in node.inputs)).clone()
            k = weighted_pos.get(i)
            if isinstance(fault, SynapseFault) and k is not None and failing.get(k):
                A, syn = _synapses(net, k)
                flat, y_in = out.reshape(-1), vals[node.inputs[0]].reshape(-1)
                for n, idx in enumerate(failing[k]):
                    j, col = syn[idx]
                    v = values[k][n] if k in values else fault.sent.lo
                    flat[j] += v - A[j, col] * y_in[col]
                out = flat.reshape(out.shape)
            k = site_pos.get(i)
            if k is not None and isinstance(fault, NeuronFault) and failing.get(k):
                flat, y = out.reshape(-1), clean[i].reshape(-1)
                units = torch.tensor(failing[k], dtype=torch.long)
                v = torch.tensor(values[k], dtype=torch.float64) if k in values else None
                flat[units] = fault.sends(flat[units], y[units], v)
                out = flat.reshape(out.shape)
            if k is not None and k in offsets:
                out = out + torch.tensor(offsets[k], dtype=torch.float64).reshape(out.shape)
            vals.append(out)
    dev = (vals[-1] - clean[-1]).reshape(-1).abs()
    return float(dev.max() if outputs is None else dev[list(outputs)].max())


# --------------------------------------------------------------------------- entry point


def graph_exact_bound(
    net: GraphNetwork, failures: Sequence[int] | None, fault: Fault, *, time_limit: float | None = None, **options: Any
) -> ExactResult:
    """The exact worst output deviation of a piecewise-linear graph network over the box
    ``[lo, hi]`` (default: its domain): :func:`~faultbound.bounds.exact.exact_bound` on a graph.

    Args:
        failures: one count per fault site (neuron faults), per weighted node (synapse faults), or
            ``None`` (precision); validated by the caller (:func:`faultbound.failures.failure_counts`).
        time_limit: seconds for HiGHS, as for :func:`~faultbound.bounds.exact.exact_bound`.
        options: ``lo``, ``hi``, ``outputs``, ``at_most``, ``combined``, as for
            :func:`~faultbound.bounds.exact.exact_bound` (which this is, on a graph).

    Returns:
        An :class:`~faultbound.bounds.exact.ExactResult`; the witness's ``failure_set``,
        ``values`` and ``precision`` are keyed by site (or weighted node) 1..S; a synapse is
        numbered ``j * n_in + i`` at a dense node on a flat input, else in row-major order of the
        non-zero entries of the node's effective matrix; ``replayed`` is :func:`graph_replay`.

    Raises:
        UnsupportedModelError: a node that is not piecewise linear (named; use ``method="tight"``).
        InvalidArgumentError: a fault model without an exact encoding, an unbounded box.

    Example:
        >>> import torch, faultbound as fb
        >>> from faultbound.network.gops import Act, Add, Input
        >>> from faultbound.network.graph import GraphNetwork
        >>> relu = fb.network.activations.ReLU()
        >>> g = GraphNetwork.build([("x", Input(), ()), ("r", Act(relu), (0,)), ("sum", Add(), (0, 1))],
        ...                        (1,), (-1.0, 1.0))
        >>> r = graph_exact_bound(g, [1], fb.Crash())  # x + relu(x) with relu crashed: worst at x = 1
        >>> r.optimal, round(r.lower, 6)
        (True, 1.0)
    """
    check_graph_piecewise_linear(net)
    _check_exact(fault, time_limit)
    lo_a, hi_a = _input_box(net, options.get("lo"), options.get("hi"))
    outputs = options.get("outputs")
    outs = _outputs(net.n_outputs, outputs)
    which = None if outputs is None else outs
    t0 = time.perf_counter()
    sizes = None if isinstance(fault, Precision) or failures is None else [int(v) for v in failures]
    built = build_graph(
        net, sizes, fault, lo_a, hi_a, outs, bool(options.get("at_most", False)), bool(options.get("combined", False))
    )
    return _search(built, fault, time_limit, t0, lambda w: graph_replay(net, fault, w, which))
