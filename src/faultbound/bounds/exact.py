"""``method="exact"``: the exact worst output deviation of a piecewise-linear network, by MILP.

For a network (a DAG of operators; the paper's layered network is the chain
:meth:`~faultbound.network.graph.GraphNetwork.from_network` views node for node) whose operators
are all piecewise linear, the quantity every other method bounds from above,

.. math::

    E^\\star = \\sup_{x \\in [lo, hi]}\\ \\sup_{S,\\,v}\\ \\|F(x) - F_{S,v}(x)\\|_\\infty ,

(S a failure set with :math:`f_k` failing units at fault site k, or :math:`g_k` failing synapses
at weighted node k; v the values failing units send) is the optimum of a mixed-integer linear
program, solved with HiGHS (``highspy``). There is one MILP builder (:func:`_build`) for every
network; each operator writes its own rows (:meth:`~faultbound.network.gops.GOp.milp`).

**Variables.** The input :math:`x \\in [lo, hi]`; a *clean copy* and a *faulty copy* of every
node's units (a node that no fault reaches shares its variables between the copies). At a fault
site the faulty copy has :math:`z = \\varphi(\\tilde s)` (what a unit computes) and
:math:`\\tilde y` (what it sends).

**Operators** (per unit, each copy; :math:`[\\ell, u]` = the variable's interval):

* ``Input``: :math:`x \\in [lo, hi]`; ``Const``: fixed variables.
* ``Affine`` (dense, convolution, average pooling, per-channel affine): :math:`s = A y + b` with
  the op's effective matrix A (a dense op on tokens: :math:`I \\otimes W`); ``Flatten``,
  ``Rearrange`` (view, permute, slice, select) and ``Concat`` are index maps: no variable, no row.
* ``Act`` with a piecewise-linear activation: the activation's own encoding
  (:meth:`~faultbound.network.activations.Activation.milp`). LeakyReLU with slope
  :math:`\\alpha \\ge 0` (ReLU: :math:`\\alpha = 0`) of :math:`t = s - c`: if :math:`\\ell \\ge c` then
  :math:`y = t`, if :math:`u \\le c` then :math:`y = \\alpha t`, else a phase binary :math:`\\delta`
  and the exact split :math:`t = p + n`, :math:`0 \\le p \\le (u - c)\\delta`,
  :math:`(\\ell - c)(1 - \\delta) \\le n \\le 0`, :math:`y = p + \\alpha n`. Hardtanh on [a, b] is
  :math:`a + \\mathrm{relu}(s - a) - \\mathrm{relu}(s - b)` (two such splits).
* ``Add`` (signs :math:`\\sigma_k`, broadcasting as torch): :math:`v = \\sum_k \\sigma_k x_k`;
  ``ConstAffine``: :math:`v = a x + c`; ``Mean``: :math:`v = \\frac1n \\sum_i x_i`.
* ``MaxPool`` (kernel, stride, padding; padding never wins): for a window of candidates
  :math:`x_i \\in [\\ell_i, u_i]`, let :math:`\\ell^* = \\max_i \\ell_i`; a candidate with
  :math:`u_i < \\ell^*` is never the maximum and is dropped; one candidate left is the output itself;
  otherwise binaries :math:`\\delta_i`, :math:`\\sum_i \\delta_i = 1`, and
  :math:`v \\ge x_i`, :math:`v \\le x_i + M_i (1 - \\delta_i)`,
  :math:`M_i = \\max_{k \\ne i} u_k - \\ell_i \\ge 0`, :math:`v \\in [\\ell^*, \\max_i u_i]`. Exact:
  :math:`\\delta_i = 1` forces :math:`v = x_i \\ge` every candidate; :math:`\\delta_i = 0` leaves
  :math:`v - x_i \\le \\max_{k \\ne i} u_k - \\ell_i`, which every point with another argmax meets.

Any other operator (``Mul``, ``MatMul``, ``Norm``, ``Softmax``, a smooth activation) is refused,
naming the node: use ``method="tight"``.

**Neuron faults** (every fault site), read off what the model states a failing unit sends,
``fault.sent`` = :math:`g\\,y + v`, :math:`v \\in [v_{lo}, v_{hi}]`, y the unit's *fault-free* value
(:class:`~faultbound.faults.Sent`): a binary :math:`q_j` per unit with :math:`\\sum_j q_j = f_k` and

.. math::  \\tilde y_j = (1 - q_j)\\, z_j + g\\, q_j y_j + q_j v_j .

The products with a binary are exact: :math:`w = (1-q) z` with :math:`z \\in [z_\\ell, z_u]` is
:math:`z_\\ell(1-q) \\le w \\le z_u(1-q)`, :math:`z_\\ell q \\le z - w \\le z_u q`, and
:math:`q\\,y_j` (clean copy) likewise; :math:`q v` is :math:`v_{lo} q` when the model leaves no
choice, else a free :math:`b \\in [v_{lo} q, v_{hi} q]`. So crash (g = 0, v = 0), stuck-at
(g = 0, v fixed), Byzantine (g = 0, :math:`v \\in [-C, C]`), Byzantine deviation (g = 1,
:math:`v \\in [-C, C]`) and any other model of that shape (a sign flip: g = -1) are one encoding.

**Synapse faults** (every weighted node: dense and convolution), models with g = 0 (what a failing
synapse sends does not depend on what it carries): a binary :math:`r_{ji}` per synapse (every
:math:`W_{ji}` of a dense node on a flat input, else every non-zero entry of the node's effective
matrix A) with :math:`\\sum r = g_k`;
:math:`\\tilde s_j = \\sum_i A_{ji}(\\tilde y_i - m_{ji}) + b_j + \\sum_i b_{ji}` with
:math:`m_{ji} = r_{ji}\\tilde y_i` (exact product) and :math:`b_{ji}` = :math:`q v` above with
:math:`r_{ji}` for q, the value sent instead. On a layered network, layer l's synapses are those of
its weighted operator: the counts :math:`g_1..g_{L+1}` are per layer, and a layer with failing
synapses must be one weighted operator plus flattens (its effective matrix, as the engine reads it).

**Precision** (:math:`\\lambda_k` at site k): :math:`\\tilde y_j = z_j + p_j`, :math:`|p_j| \\le \\lambda_k`,
no binaries.

**Big-M intervals and cuts.** Clean: the network's linearly refined domain boxes
(:meth:`~faultbound.network.graph.GraphNetwork.intervals`) when the box is its domain, else interval
propagation over the box. Faulty: the operator's interval image of its inputs' faulty intervals
(with the fault's hull at a site, any synapse's value at a weighted node), intersected with the
clean interval widened by the ``tight`` deviation bound :math:`t_v` of the node
(:func:`~faultbound.bounds.graph_tight.graph_forward`, its forward rule capped by back-substitution
at nodes of at most :data:`REFINE_ROWS` units, and at the outputs the minimum with the
back-substitution bound :func:`~faultbound.bounds.graph_tight.graph_backsub`: the ``tight`` bound
itself; sound for every failure set of at most the given sizes, so for these too). The same
:math:`t_v` gives the linking rows :math:`|\\tilde v_j - v_j| \\le t_{v,j}` at every node that
creates variables (valid cuts that tie the two copies together in the LP relaxation). All intervals
are widened outward by a relative :math:`10^{-9}`.

**Objective.** :math:`d_k = \\tilde y_k - y_k` at the outputs. By default one MILP per
(output k, sign σ) maximises :math:`\\sigma d_k`, in decreasing order of the interval bound of
:math:`\\sigma d_k`, and a pair whose interval bound is at most the best witness found is skipped
(it cannot beat it); the certificate is the largest dual bound. With ``combined=True`` binaries
:math:`\\beta_{k\\sigma}`, :math:`\\sum \\beta = 1`, and
:math:`t \\le \\sigma d_k + M_{k\\sigma}(1 - \\beta_{k\\sigma})` (:math:`M` from the interval bounds of
:math:`d`) make it one MILP maximising t (a weaker relaxation).

**Exactly or at most f.** Like :func:`faultbound.bound`, sets have *exactly* the given sizes
(:math:`\\sum q = f_k`); ``at_most=True`` uses :math:`\\le`. They differ in general: a failing unit
cannot always act as a correct one. A crashed unit sends 0 (the same only where its value is 0);
a stuck-at unit only where its value is v; a Byzantine(C) unit can mimic iff its own value lies in
[-C, C] (always, when :math:`C \\ge \\max|\\varphi|`); a deviation unit iff its upstream deviation
is at most C; a crashed synapse only where it carries 0. Where mimicry is always possible the two
optima coincide; elsewhere at-most is the larger (and the tight bound covers it).

**Soundness of the number returned.** HiGHS works in floating point with tolerances (primal
feasibility 1e-7, integrality 1e-6 by default). The certificate is the solver's *dual* bound (the
optimum when it proves optimality, never the incumbent when it stops at a time limit) plus a
margin :data:`REL_MARGIN` times the scale of the problem (the largest interval bound of the output
deviation, at least 1) -- a binary off by 1e-6 moves a big-M term by at most 1e-6 times that
scale. The lower end is the error of the witness *replayed* by a float64 faulty forward pass
(:func:`replay`), a value some failure set really reaches. Brute-force tests check both ends.

**Presolve is off.** HiGHS's MIP presolve (1.16.0) returned a point 10% below the true maximum as
*optimal* on a 31-binary graph MILP (graph 1 of ``tests/test_exact.py``, seed 999999,
Byzantine(0.3): 0.6548 with presolve, 0.7263 without, and 0.7263 at the witness fixed in the same
model, which the presolved solve had cut off). Its reductions are not a proof, and HiGHS's issue
tracker has several such reports, so the solver runs on the model as built: the dual bound then
comes from branch and bound on the relaxation of this very model.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError, UnsupportedModelError
from faultbound.faults import Fault, NeuronFault, Precision, Sent, SynapseFault
from faultbound.measure.engine import graph_view
from faultbound.network.activations import Activation
from faultbound.network.core import Network
from faultbound.network.gops import Affine, Const, GOp
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense

__all__ = ["ExactResult", "exact_bound", "check_piecewise_linear", "replay", "REL_MARGIN"]

#: Margin added to the solver's dual bound, relative to the problem's scale (module docstring).
REL_MARGIN = 1e-5
#: Relative outward slack of the big-M intervals (float64 rounding of the propagation).
_SLACK = 1e-9
#: Nodes of at most this many units get their ``tight`` deviation bound (the MILP's cuts) refined by
#: back-substitution (``graph_forward(..., refine_rows=...)``).
REFINE_ROWS = 4096


@dataclass(frozen=True)
class ExactResult:
    """The exact worst case, or a sound interval around it when the solver stopped early.

    Attributes:
        value: certified upper bound (solver dual bound + margin); the exact value when ``optimal``.
        lower: the error the witness reaches, replayed with the measurement engine (float64).
        optimal: True when HiGHS proved optimality (up to its tolerances, covered by the margin).
        status: HiGHS model status, e.g. ``"Optimal"``, ``"Time limit reached"``.
        witness: failure set, input, values (see :func:`exact_bound`); ``None`` if none was found.
        per_output: the exact value per output (only when requested per output).
        seconds, nodes, n_binaries: solver effort.
    """

    value: float
    lower: float
    optimal: bool
    status: str
    witness: dict[str, Any] | None
    seconds: float
    nodes: int
    n_binaries: int
    dual_bound: float
    margin: float
    per_output: tuple[float, ...] = field(default_factory=tuple)

    @property
    def gap(self) -> float:
        """``value - lower`` (0 up to the margin when optimal)."""
        return max(0.0, self.value - self.lower)


# --------------------------------------------------------------------------- checks


def check_piecewise_linear(net: Network | GraphNetwork) -> None:
    """Raise :class:`UnsupportedModelError` naming every node that ``method="exact"`` cannot encode
    (an operator that is not piecewise linear), in one line."""
    g = graph_view(net)
    bad = [f"{node.name} ({node.op.describe()})" for node in g.nodes if not node.op.piecewise_linear]
    if bad:
        raise UnsupportedModelError(
            f"method='exact' encodes piecewise-linear operators only, but node{'s' if len(bad) > 1 else ''} "
            f"{', '.join(bad)} {'are' if len(bad) > 1 else 'is'} not; use method='tight'."
        )




class _Model:
    """A MILP as column bounds, integrality and sparse rows (passed to HiGHS at once)."""

    def __init__(self) -> None:
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[bool] = []
        self.r_lo: list[float] = []
        self.r_hi: list[float] = []
        self.r_idx: list[np.ndarray] = []
        self.r_val: list[np.ndarray] = []

    def var(self, lo: float, hi: float, integer: bool = False) -> int:
        self.lb.append(float(lo))
        self.ub.append(float(max(hi, lo)))
        self.integer.append(integer)
        return len(self.lb) - 1

    def binary(self) -> int:
        return self.var(0.0, 1.0, True)

    def row(self, idx: Sequence[int], val: Sequence[float], lo: float, hi: float) -> None:
        """``lo <= sum val[k] x[idx[k]] <= hi``; a variable named twice (a graph that reads one node
        twice) gets the sum of its coefficients."""
        i = np.asarray(idx, dtype=np.int32)
        v = np.asarray(val, dtype=np.float64)
        if len(set(i.tolist())) != len(i):
            uniq, inv = np.unique(i, return_inverse=True)
            i, v = uniq.astype(np.int32), np.bincount(inv, weights=v, minlength=len(uniq)).astype(np.float64)
        self.r_idx.append(i)
        self.r_val.append(v)
        self.r_lo.append(float(lo))
        self.r_hi.append(float(hi))

    def eq(self, idx: Sequence[int], val: Sequence[float], rhs: float) -> None:
        self.row(idx, val, rhs, rhs)

    @property
    def n_binaries(self) -> int:
        return int(sum(self.integer))

    def product(self, q: int, z: int, zl: float, zu: float, one_minus: bool = False) -> int:
        """A variable equal to ``q * z`` (or ``(1 - q) * z``) for binary q, z in [zl, zu] (exact)."""
        w = self.var(min(0.0, zl), max(0.0, zu))
        s = -1.0 if one_minus else 1.0
        # w = q z:  zl q <= w <= zu q,  zl (1 - q) <= z - w <= zu (1 - q)
        # w = (1-q) z: the same with q and 1 - q swapped.
        if not one_minus:
            self.row([w, q], [1.0, -zl], 0.0, math.inf)
            self.row([w, q], [1.0, -zu], -math.inf, 0.0)
            self.row([z, w, q], [1.0, -1.0, zl], zl, math.inf)
            self.row([z, w, q], [1.0, -1.0, zu], -math.inf, zu)
        else:
            self.row([w, q], [1.0, s * -zl], zl, math.inf)
            self.row([w, q], [1.0, s * -zu], -math.inf, zu)
            self.row([z, w, q], [1.0, -1.0, -zl], 0.0, math.inf)
            self.row([z, w, q], [1.0, -1.0, -zu], -math.inf, 0.0)
        return w

    def chosen_value(self, q: int, sent: Sent) -> int:
        """A variable b equal to ``q * v`` for binary q and a chosen :math:`v \\in [lo, hi]`:
        :math:`lo\\, q \\le b \\le hi\\, q` (exact: b = 0 when q = 0, any of [lo, hi] when q = 1)."""
        b = self.var(min(sent.lo, 0.0), max(sent.hi, 0.0))
        self.row([b, q], [1.0, -sent.hi], -math.inf, 0.0)
        self.row([b, q], [1.0, -sent.lo], 0.0, math.inf)
        return b

    def leaky(self, s: int, c: float, lo: float, hi: float, alpha: float) -> int:
        """A variable equal to ``leaky_relu(s - c, alpha)`` for s in [lo, hi] (exact split)."""
        a, b = lo - c, hi - c
        if a >= 0:
            y = self.var(a, b)
            self.eq([y, s], [1.0, -1.0], -c)
            return y
        if b <= 0:
            y = self.var(alpha * a, alpha * b)
            self.eq([y, s], [1.0, -alpha], -alpha * c)
            return y
        d = self.binary()
        p = self.var(0.0, b)
        n = self.var(a, 0.0)
        self.eq([s, p, n], [1.0, -1.0, -1.0], c)
        self.row([p, d], [1.0, -b], -math.inf, 0.0)
        self.row([n, d], [1.0, a], a, math.inf)
        y = self.var(alpha * a, b)
        self.eq([y, p, n], [1.0, -1.0, -alpha], 0.0)
        return y

    def activation(self, act: Activation, s: int, lo: float, hi: float) -> int:
        """A variable equal to ``act(s)``: the activation's own encoding (:meth:`Activation.milp`)."""
        return act.milp(self, s, lo, hi)


# --------------------------------------------------------------------------- intervals

def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pad = _SLACK * (np.abs(lo) + np.abs(hi)) + 1e-12
    return lo - pad, hi + pad


def _synapse_box(
    A: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray, sent: Sent
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of :math:`\\tilde s` when any synapse may send what it carries or what a failing one
    sends (``sent``, gain 0: a value of [lo, hi])."""
    t1, t2 = A * lo[None, :], A * hi[None, :]
    tl, th = np.minimum(t1, t2), np.maximum(t1, t2)
    nz = A != 0
    tl = np.where(nz, np.minimum(tl, sent.lo), 0.0)
    th = np.where(nz, np.maximum(th, sent.hi), 0.0)
    return _widen(tl.sum(1) + b, th.sum(1) + b)


def _sent_hull(
    fault: Fault, zl: np.ndarray, zu: np.ndarray, yl: np.ndarray, yu: np.ndarray, l: int
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of what a unit of hidden layer l may send: its own value :math:`z \\in [z_l, z_u]`,
    or what a failing one sends (``fault.sent.range`` of the clean value :math:`y \\in [y_l, y_u]`),
    or, for precision, its own value :math:`\\pm \\lambda_l`."""
    if isinstance(fault, NeuronFault):
        a, b = fault.sent.range(yl, yu)
        return np.minimum(zl, a), np.maximum(zu, b)
    if isinstance(fault, Precision):
        lam = fault.errors[l - 1]
        return zl - lam, zu + lam
    return zl, zu




def _faulty_rows(
    m: _Model,
    A: np.ndarray,
    bias: np.ndarray,
    yt: Sequence[int],
    ytl: np.ndarray,
    ytu: np.ndarray,
    tsl: np.ndarray,
    tsu: np.ndarray,
    g: int,
    sent: Sent | None,
    dense: bool,
    at_most: bool,
    s: Sequence[int],
    t_dev: np.ndarray | None,
) -> tuple[list[int], list[tuple[int, int, int]]]:
    """The faulty copy of an affine map: :math:`\\tilde s = A \\tilde y + b` in ``[tsl, tsu]`` (``yt``:
    the variables of :math:`\\tilde y` in ``[ytl, ytu]``), with ``g`` > 0 failing synapses among the
    non-zero :math:`A_{ji}` (module docstring; ``sent`` the synapse fault's statement), and the
    linking rows :math:`|\\tilde s_j - s_j| \\le t_j` to the clean copy ``s`` when ``t_dev`` is given.

    Returns:
        The :math:`\\tilde s` variables and, per failing-synapse binary, ``(binary, engine index,
        value variable or -1)``; the engine numbers synapses ``j * n_in + i`` for a ``dense`` map,
        else in row-major order of the non-zero entries.
    """
    st = []
    syn: list[tuple[int, int, int]] = []
    n_in = A.shape[1]
    order = 0
    for j in range(A.shape[0]):
        nz = np.nonzero(A[j])[0]
        v = m.var(tsl[j], tsu[j])
        idx, val = [v, *[yt[int(i)] for i in nz]], [1.0, *(-A[j, nz])]
        if g > 0:
            for i in nz:
                rb = m.binary()
                mw = m.product(rb, yt[int(i)], float(ytl[i]), float(ytu[i]))
                idx.append(mw)
                val.append(float(A[j, i]))
                assert sent is not None
                bv = m.chosen_value(rb, sent) if sent.chosen else -1
                if bv >= 0:
                    idx.append(bv)
                    val.append(-1.0)
                elif sent.lo != 0:
                    idx.append(rb)
                    val.append(-sent.lo)
                syn.append((rb, j * n_in + int(i) if dense else order, bv))
                order += 1
        else:
            order += len(nz)
        m.eq(idx, val, bias[j])
        st.append(v)
        if t_dev is not None:  # link the copies: |s~_j - s_j| <= t_j (a valid cut)
            m.row([v, s[j]], [1.0, -1.0], -t_dev[j], t_dev[j])
    if g > 0:
        rbs = [b for b, _, _ in syn]
        m.row(rbs, [1.0] * len(rbs), -math.inf if at_most else g, g)
    return st, syn


def _sent_units(
    m: _Model,
    fault: Fault,
    z: Sequence[int],
    zl: np.ndarray,
    zu: np.ndarray,
    y: Sequence[int],
    yl: np.ndarray,
    yu: np.ndarray,
    nl: np.ndarray,
    nu: np.ndarray,
    f: int,
    lam: float,
    at_most: bool,
) -> tuple[list[int], list[int], list[int], list[int]]:
    """What the units of a fault site send (module docstring, *Neuron faults* and *Precision*):
    ``z`` their values in the faulty network (in ``[zl, zu]``), ``y`` their clean values (in
    ``[yl, yu]``), ``[nl, nu]`` the interval of what they send; ``f`` > 0 failing units (exactly, or
    at most with ``at_most``), or a precision error ``lam`` > 0 on every unit, or neither (``z``).

    Returns:
        ``(sent, q, b, p)``: the variables of what the units send, the failure binaries, the chosen
        value variables (Byzantine kinds) and the precision offsets (empty lists where none).
    """
    new: list[int] = []
    qs: list[int] = []
    bl: list[int] = []
    ps: list[int] = []
    if f > 0:
        sent = fault.sent if isinstance(fault, NeuronFault) else None
        qs = [m.binary() for _ in z]
        m.row(qs, [1.0] * len(qs), -math.inf if at_most else f, f)
        for j in range(len(z)):
            w = m.product(qs[j], z[j], float(zl[j]), float(zu[j]), one_minus=True)
            idx, val, rhs = [w], [1.0], 0.0
            assert sent is not None
            if sent.gain != 0:  # g q y_j, y_j the clean value
                c = m.product(qs[j], y[j], float(yl[j]), float(yu[j]))
                idx.append(c)
                val.append(float(sent.gain))
            if sent.chosen:  # q v, v in [lo, hi] chosen
                bv = m.chosen_value(qs[j], sent)
                idx.append(bv)
                val.append(1.0)
                bl.append(bv)
            elif sent.lo != 0:  # q v, v fixed
                idx.append(qs[j])
                val.append(float(sent.lo))
            v = m.var(nl[j], nu[j])
            m.eq([v, *idx], [1.0, *(-np.asarray(val))], rhs)
            new.append(v)
    elif lam > 0:  # precision: every unit of the site
        for j in range(len(z)):
            p = m.var(-lam, lam)
            v = m.var(nl[j], nu[j])
            m.eq([v, z[j], p], [1.0, -1.0, -1.0], 0.0)
            ps.append(p)
            new.append(v)
    else:
        new = list(z)
    return new, qs, bl, ps


def _deviation_vars(
    m: _Model,
    st: Sequence[int],
    s: Sequence[int],
    tsl: np.ndarray,
    tsu: np.ndarray,
    sl: np.ndarray,
    su: np.ndarray,
    t_dev: np.ndarray | None,
) -> list[int]:
    """The output deviations :math:`d_k = \\tilde s_k - s_k` (faulty ``st`` in ``[tsl, tsu]``, clean
    ``s`` in ``[sl, su]``), within :math:`\\pm t_k` when ``t_dev`` is given."""
    d = []
    for k_out in range(len(st)):
        d_lo, d_hi = tsl[k_out] - su[k_out], tsu[k_out] - sl[k_out]
        if t_dev is not None:
            d_lo, d_hi = max(d_lo, -t_dev[k_out]), min(d_hi, t_dev[k_out])
        dv = m.var(d_lo, max(d_hi, d_lo))
        m.eq([dv, st[k_out], s[k_out]], [1.0, -1.0, 1.0], 0.0)
        d.append(dv)
    return d


def _objective(
    m: _Model, d: Sequence[int], outputs: Sequence[int], combined: bool
) -> tuple[list[tuple[int, float]], int | None, float]:
    """The (output, sign) pairs to maximise :math:`\\sigma d_k` over, the combined objective t
    (``combined``, else ``None``) and the problem's scale (module docstring, *Objective*)."""
    dl = np.array([m.lb[v] for v in d])
    du = np.array([m.ub[v] for v in d])
    pairs = [(k, sg) for k in outputs for sg in (1.0, -1.0)]
    worst = [max(du[k], 0.0) if sg > 0 else max(-dl[k], 0.0) for k, sg in pairs]
    dmax = max(worst) if worst else 0.0
    scale = max(1.0, dmax)
    objective: int | None = None
    if combined and len(pairs) > 1:
        t = m.var(0.0, dmax)
        betas = []
        for (k, sg), _ in zip(pairs, worst, strict=True):
            beta = m.binary()
            lowest = -du[k] if sg < 0 else dl[k]  # smallest value of sg * d_k
            big = dmax - lowest
            # t <= sg d_k + big (1 - beta)
            m.row([t, d[k], beta], [1.0, -sg, float(big)], -math.inf, float(big))
            betas.append(beta)
        m.eq(betas, [1.0] * len(betas), 1.0)
        objective = t
    return pairs, objective, scale


@dataclass
class _Built:
    model: _Model
    x: list[int]
    q: dict[int, list[int]]  # hidden layer -> failure binaries per unit (neuron faults)
    bvals: dict[int, list[int]]  # hidden layer -> value variables b (Byzantine kinds)
    r: dict[int, list[tuple[int, int, int]]]  # layer -> [(binary, engine index, bvar or -1)]
    prec: dict[int, list[int]]  # hidden layer -> precision offsets p
    d: list[int]  # output deviation variables
    pairs: list[tuple[int, float]]
    objective: int | None  # t (combined) or None
    scale: float


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


def _build(
    net: GraphNetwork,
    counts: Sequence[int] | None,
    fault: Fault,
    lo: np.ndarray,
    hi: np.ndarray,
    outputs: Sequence[int],
    at_most: bool,
    combined: bool,
) -> _Built:
    from faultbound.bounds.graph_tight import _clean_boxes, graph_backsub, graph_forward

    m = _Model()
    lo_t = torch.as_tensor(lo, dtype=torch.float64).reshape(1, *net.input_shape)
    hi_t = torch.as_tensor(hi, dtype=torch.float64).reshape(1, *net.input_shape)
    boxes = _clean_boxes(net, lo_t, hi_t)
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
    gp = graph_forward(net, fault, counts, lo_t, hi_t, refine_rows=REFINE_ROWS) if starts else None
    devs = None if gp is None else gp.devs
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
        assert gp is not None
        t_fwd = torch.broadcast_to(devs[-1].total(), (1, *net.output.shape)).reshape(1, -1)
        lin = graph_backsub(net, gp)
        t_all = t_fwd if lin is None else torch.minimum(t_fwd, lin.reshape(1, -1))
        t_out = t_all.reshape(-1).numpy() * (1 + 1e-9) + 1e-12
        fl, fu = _bounds(m, out_f)
        cl, cu = _bounds(m, out_c)
        d = _deviation_vars(m, out_f.tolist(), out_c.tolist(), fl, fu, cl, cu, t_out)
    else:  # no fault reaches the output
        d = [m.var(0.0, 0.0) for _ in out_c]
    pairs, objective, scale = _objective(m, d, outputs, combined)
    return _Built(m, x, q, bvals, r, prec, d, pairs, objective, scale)


_BANNER_LOCK = threading.Lock()
_BANNER_DONE = False


def _new_highs() -> Any:
    """A ``highspy.Highs``; the first one per process is made with stdout silenced, since HiGHS
    prints a banner there on its first construction (the library never prints)."""
    import highspy

    global _BANNER_DONE
    with _BANNER_LOCK:
        if _BANNER_DONE:
            return highspy.Highs()
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _BANNER_DONE = True
        return h


def _solve(
    built: _Built, time_limit: float | None, pair: tuple[int, float] | None = None
) -> tuple[str, bool, float, float, np.ndarray | None, int]:
    """Solve for the combined objective, or for ``sign * d_k`` of one ``pair = (k, sign)``;
    returns (status, optimal, primal objective, dual bound, solution, nodes)."""
    import highspy

    m = built.model
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.setOptionValue("presolve", "off")  # presolve has cut off the true optimum (module docstring)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    lp = highspy.HighsLp()
    n = len(m.lb)
    lp.num_col_ = n
    lp.num_row_ = len(m.r_lo)
    cost = np.zeros(n)
    if pair is None and built.objective is not None:
        cost[built.objective] = 1.0
    else:
        k, sg = pair if pair is not None else built.pairs[0]
        cost[built.d[k]] = sg
    lp.col_cost_ = cost
    lp.col_lower_ = np.asarray(m.lb)
    lp.col_upper_ = np.asarray(m.ub)
    lp.row_lower_ = np.asarray(m.r_lo)
    lp.row_upper_ = np.asarray(m.r_hi)
    lp.sense_ = highspy.ObjSense.kMaximize
    starts = np.zeros(len(m.r_idx) + 1, dtype=np.int32)
    starts[1:] = np.cumsum([len(i) for i in m.r_idx])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_ = n
    lp.a_matrix_.num_row_ = len(m.r_lo)
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = np.concatenate(m.r_idx) if m.r_idx else np.zeros(0, np.int32)
    lp.a_matrix_.value_ = np.concatenate(m.r_val) if m.r_val else np.zeros(0)
    lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in m.integer]
    h.passModel(lp)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    primal = float(info.objective_function_value)
    dual = float(info.mip_dual_bound) if m.n_binaries else primal
    sol = None
    if info.primal_solution_status >= 2 or optimal:
        sol = np.asarray(h.getSolution().col_value)
    if optimal:
        dual = max(dual, primal) if math.isfinite(dual) else primal
    return status, optimal, primal, dual, sol, int(info.mip_node_count) if m.n_binaries else 0


def _witness(fault: Fault, built: _Built, sol: np.ndarray, pair: tuple[int, float] | None = None) -> dict[str, Any]:
    """Failure set, input and values of a MILP solution (engine numbering, layers from 1)."""
    # the solver meets bounds up to its feasibility tolerance: clip onto the exact sets
    x = [float(min(max(sol[i], built.model.lb[i]), built.model.ub[i])) for i in built.x]
    sites: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    for l, qs in built.q.items():
        units = [j for j, b in enumerate(qs) if sol[b] > 0.5]
        sites[str(l)] = units
        if l in built.bvals:
            values[str(l)] = [_clip(sol[built.bvals[l][j]], fault) for j in units]
    for l, syn in built.r.items():
        chosen = [(idx, bv) for b, idx, bv in syn if sol[b] > 0.5]
        sites[str(l)] = [idx for idx, _ in chosen]
        if fault.chooses_values:
            values[str(l)] = [_clip(sol[bv], fault) for _, bv in chosen]
    precision = {
        str(l): [float(np.clip(sol[p], built.model.lb[p], built.model.ub[p])) for p in ps]
        for l, ps in built.prec.items()
    }
    if pair is not None:
        k, sg = pair
    else:
        k, sg = max(built.pairs, key=lambda p: p[1] * sol[built.d[p[0]]])
    out: dict[str, Any] = {"input": x, "failure_set": sites, "output": int(k), "sign": int(sg)}
    if values:
        out["values"] = values
    if precision:
        out["precision"] = precision
    out["milp_value"] = float(sg * sol[built.d[k]])
    return out


def _clip(v: float, fault: Fault) -> float:
    """A chosen value clipped onto the model's [lo, hi] (the solver meets bounds up to a tolerance)."""
    sent = fault.sent if isinstance(fault, (NeuronFault, SynapseFault)) else Sent(0.0, 0.0, 0.0)
    return float(np.clip(v, sent.lo, sent.hi))




def replay(
    net: Network | GraphNetwork, fault: Fault, witness: dict[str, Any], outputs: Sequence[int] | None = None
) -> float:
    """:math:`\\max_k |F(x)_k - F_{S,v}(x)_k|` over ``outputs`` (default: all) of a witness of
    :func:`exact_bound`, by a float64 forward pass over the graph (a layered network: its chain) with
    the witness's faults:
    failing units of site k send ``fault.sends`` of their clean values (and the chosen values),
    failing synapses (j, i) of weighted node k transmit what the model sends instead of
    :math:`A_{ji} y_i`, precision offsets are added at every unit of their site."""
    net = graph_view(net)
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


def _check_exact(fault: Fault, time_limit: float | None) -> None:
    """Refuse what has no exact encoding: no highspy, a fault model other than the neuron, synapse
    (gain 0) and precision models, an unbounded capacity, a time limit <= 0."""
    try:
        import highspy  # noqa: F401
    except ImportError:  # pragma: no cover - highspy is installed with the `exact` extra
        raise InvalidArgumentError("method='exact' needs highspy: pip install 'faultbound[exact]'.") from None
    if not isinstance(fault, (NeuronFault, SynapseFault, Precision)):
        raise InvalidArgumentError(f"method='exact' has no encoding for fault {fault!r}.")
    if isinstance(fault, SynapseFault) and fault.sent.gain != 0:
        raise UnsupportedModelError(
            f"method='exact' encodes synapse faults whose failing synapse sends a value of its own "
            f"(gain 0), but {fault.label()} sends {fault.sent.gain:g} times what the synapse carries."
        )
    if fault.unbounded:
        raise InvalidArgumentError("method='exact' needs a finite capacity (Lemma 1: unbounded).")
    if time_limit is not None and not (time_limit > 0):
        raise InvalidArgumentError(f"Expected `time_limit` > 0 seconds, but got {time_limit}.")


def _input_box(net: Network | GraphNetwork, lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    """The input box as flat float64 arrays (default: the network's domain)."""
    d = math.prod(net.input_shape)
    lo_a = np.asarray(net.domain.lo if lo is None else lo, dtype=np.float64).reshape(-1)
    hi_a = np.asarray(net.domain.hi if hi is None else hi, dtype=np.float64).reshape(-1)
    if lo_a.size != d or hi_a.size != d:
        raise InvalidArgumentError(f"Expected an input box of {d} features, but got {lo_a.size} and {hi_a.size}.")
    return lo_a, hi_a


def _outputs(n_outputs: int, outputs: Sequence[int] | None) -> list[int]:
    """The outputs to maximise over (default: all), checked."""
    outs = list(range(n_outputs)) if outputs is None else [int(k) for k in outputs]
    if not outs or any(not 0 <= k < n_outputs for k in outs):
        raise InvalidArgumentError(f"Expected outputs in 0..{n_outputs - 1}, but got {outputs}.")
    return outs


def _as_graph(
    net: Network | GraphNetwork, failures: Sequence[int] | None, fault: Fault
) -> tuple[GraphNetwork, list[int] | None]:
    """The network as a graph and the failure counts per fault site (neuron faults) or weighted
    node (synapse faults); ``None`` for precision.

    A layered network is its chain (:meth:`GraphNetwork.from_network`): its sites are the hidden
    layers 1..L, and its counts :math:`g_1..g_{L+1}` of failing synapses are per layer, the synapses
    of layer l being those of its one weighted operator. A layer with failing synapses whose
    effective matrix is not that operator's (pooling or a second weighted operator in the layer)
    is refused in one line."""
    if isinstance(fault, Precision) or failures is None:
        return graph_view(net), None
    counts = [int(v) for v in failures]
    if isinstance(net, GraphNetwork):
        return net, counts
    g = graph_view(net)
    if fault.site == "neuron":
        return g, (counts + [0] * net.L)[: net.L]
    counts = (counts + [0] * (net.L + 1))[: net.L + 1]
    for layer, c in zip(net.layers, counts, strict=True):
        n_weighted = sum(1 for op in layer.ops if op.weighted)
        if n_weighted != 1 or (c > 0 and layer.weighted_op is None):
            raise UnsupportedModelError(
                f"method='exact' counts failing synapses per layer of one weighted operator (plus flattens), "
                f"but layer {layer.index} is {layer.describe()}; use method='tight'."
            )
    return g, counts


def exact_bound(
    net: Network | GraphNetwork,
    failures: Sequence[int] | None,
    fault: Fault,
    *,
    time_limit: float | None = None,
    lo: np.ndarray | Tensor | None = None,
    hi: np.ndarray | Tensor | None = None,
    outputs: Sequence[int] | None = None,
    at_most: bool = False,
    combined: bool = False,
) -> ExactResult:
    """The exact worst output deviation over the box ``[lo, hi]`` (default: the network's domain),
    by one MILP builder for every network (module docstring).

    Args:
        failures: one count per fault site (neuron faults; the hidden layers f_1..f_L of a layered
            network), per weighted node (synapse faults; g_1..g_{L+1} per layer of a layered
            network), ``None`` for precision; validated by the caller (:func:`faultbound.bound`).
        time_limit: seconds for HiGHS; when it stops early ``value`` is its dual bound (+ margin).
        lo, hi: the input box (flat or input-shaped); ``lo == hi`` is one input.
        outputs: the outputs k to maximise :math:`|d_k|` over (default: all).
        at_most: sets of at most (instead of exactly) the given sizes.
        combined: one MILP over every (output, sign) instead of one MILP per pair (in decreasing
            order of their interval bounds, skipping those that cannot beat the witness found;
            with a time limit each gets an equal share of the time left).

    Returns:
        An :class:`ExactResult`; ``witness`` has ``input`` (flat), ``failure_set`` ({site or weighted
        node from 1 (a layer of a layered network): [unit or synapse index]}: units in row-major
        order of the site's output; a synapse numbered ``j * n_in + i`` at a dense node on a flat
        input, else in row-major order of the non-zero entries of the node's effective matrix, as
        the engine numbers them), ``values`` ({site: [value sent (Byzantine), u (deviation)]}),
        ``precision`` ({site: [offset per unit]}), ``output``, ``sign``, ``milp_value`` and
        ``replayed`` (:func:`replay`'s float64 error).

    Raises:
        UnsupportedModelError: a node that is not piecewise linear (named; use ``method="tight"``).
        InvalidArgumentError: a fault model without an exact encoding (bit flips), an unbounded box.

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> lin1, lin2 = nn.Linear(1, 2), nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = lin1.weight.fill_(1.0), lin1.bias.zero_(), lin2.weight.fill_(0.5), lin2.bias.zero_()
        >>> net = fb.Network.from_torch(nn.Sequential(lin1, nn.ReLU(), lin2))
        >>> r = exact_bound(net, [1], fb.Crash())  # one crashed ReLU: 0.5 * x, worst at x = 1
        >>> r.optimal, round(r.lower, 6), [round(v, 6) for v in r.witness["input"]]
        (True, 0.5, [1.0])
    """
    check_piecewise_linear(net)
    _check_exact(fault, time_limit)
    g, counts = _as_graph(net, failures, fault)
    lo_a, hi_a = _input_box(g, lo, hi)
    outs = _outputs(g.n_outputs, outputs)
    which = None if outputs is None else outs
    t0 = time.perf_counter()
    built = _build(g, counts, fault, lo_a, hi_a, outs, at_most, combined)
    return _search(built, fault, time_limit, t0, lambda w: replay(g, fault, w, which))


def _search(
    built: _Built,
    fault: Fault,
    time_limit: float | None,
    t0: float,
    replayed: Callable[[dict[str, Any]], float],
) -> ExactResult:
    """Solve a built MILP (one per (output, sign) pair unless combined; :func:`exact_bound`) and
    return the certificate; ``replayed(witness)`` is the error a witness really reaches."""
    m = built.model
    # interval bound of each (output, sign): sound, and the pruning rule below
    cap = {p: (m.ub[built.d[p[0]]] if p[1] > 0 else -m.lb[built.d[p[0]]]) for p in built.pairs}
    ordered: list[tuple[int, float]] = sorted(built.pairs, key=lambda p: -cap[p])
    jobs: list[tuple[int, float] | None] = [None] if built.objective is not None else list(ordered)
    deadline = None if time_limit is None else t0 + time_limit
    witness: dict[str, Any] | None = None
    lower, nodes, status = 0.0, 0, "Optimal"
    # pass 1: every pair with an equal share of the time left; pass 2 (time limit only): the pairs
    # that stopped early, again with the whole time left shared among them
    duals: dict[tuple[int, float] | None, float] = {}
    settled: set[tuple[int, float] | None] = set()
    for _pass in range(1 if deadline is None else 2):
        todo = [p for p in jobs if p not in settled]
        for i, pair in enumerate(todo):
            bound_p = built.scale if pair is None else max(cap[pair], 0.0)
            if witness is not None and min(bound_p, duals.get(pair, math.inf)) <= lower:
                settled.add(pair)  # cannot beat the witness found: no solve needed (one solve gives a witness)
                duals[pair] = min(bound_p, duals.get(pair, math.inf))
                continue
            left = None if deadline is None else (deadline - time.perf_counter()) / (len(todo) - i)
            if left is not None and left <= 0.005:
                duals.setdefault(pair, bound_p)
                status = "Time limit reached"
                continue
            st, opt, _primal, dual, sol, n_nodes = _solve(built, left, pair)
            nodes += n_nodes
            if opt or st == "Time limit reached":
                got_dual = min(dual, bound_p) if math.isfinite(dual) else bound_p
            else:  # the MILP is always feasible: any other status is numerical trouble, keep the interval
                got_dual = bound_p
            duals[pair] = min(duals.get(pair, math.inf), got_dual)
            if opt:
                settled.add(pair)
            else:
                status = st
            if sol is not None:
                w = _witness(fault, built, sol, pair)
                got = replayed(w)
                if witness is None or got > lower:
                    witness, lower = w, got
    upper = max(duals.values()) if duals else 0.0
    optimal = len(settled) == len(jobs)
    if optimal:
        status = "Optimal"
    if witness is not None:
        witness["replayed"] = lower
    margin = REL_MARGIN * built.scale
    dual = upper
    value = max(upper + margin, lower)
    return ExactResult(
        float(value),
        float(lower),
        bool(optimal),
        status,
        witness,
        time.perf_counter() - t0,
        nodes,
        built.model.n_binaries,
        float(dual),
        float(margin),
    )
