"""``method="tight"``: per-neuron deviation propagation with local slopes and range caps.

Notation: layer l = 1..L+1 computes :math:`s_j = \\sum_i w_{ji} y_i + b_j` from the previous layer's
neurons i (the inputs for l = 1), hidden neurons output :math:`y_j = \\varphi(s_j)`; the output layer
is linear. :math:`[\\underline s_j, \\overline s_j]` and :math:`[\\underline y_j, \\overline y_j]` are
the clean pre-activation and output intervals over the input box (interval propagation).

**Neuron faults.** :math:`e_i` bounds the deviation :math:`|\\tilde y_i - y_i|` of a *correct* neuron
i of layer l-1 under every failure set of the given sizes, :math:`\\Delta_i` = ``fault.deviation``
:math:`(\\max(|\\underline y_i|, |\\overline y_i|))` that of a *failing* one (crash: :math:`|y_i|`;
Byzantine values in [-C, C]: :math:`C + |y_i|`, ERRATA 2; Byzantine deviation, which sends its
*fault-free* value plus u with :math:`|u| \\le C`: :math:`\\Delta_i = C`). :math:`\\Delta_i` bounds the
distance to the clean value whatever the upstream deviation, so it is never added to :math:`e_i`
here; but in the back-substitution bound below, what a failing unit adds *on top of* its propagated
deviation :math:`\\varphi(\\tilde s_i) - \\varphi(s_i)` is at most :math:`\\Delta_i + e_i` (for every
fault model, Byzantine deviation included). The inputs never fail: :math:`e = 0`.
For a correct neuron j of layer l and a failing set S of size :math:`f = f_{l-1}`,

.. math::

    |\\tilde s_j - s_j| \\le \\sum_{i\\notin S} |w_{ji}| e_i + \\sum_{i \\in S} |w_{ji}| \\Delta_i
      = \\sum_i |w_{ji}| e_i + \\sum_{i\\in S} |w_{ji}| (\\Delta_i - e_i)
      \\le t_j := \\sum_i |w_{ji}| e_i + \\operatorname{top}_f\\big(|w_{ji}|(\\Delta_i - e_i)\\big)_i,

the sum of the f largest terms of row j (exactly the worst set S of size f). With the positive part
:math:`(\\Delta_i - e_i)^+` instead, :math:`t_j` bounds every set of *at most* f failures and is
monotone (``monotone=True``, used by the tolerance search).

Both :math:`\\tilde s_j` and :math:`s_j` lie in :math:`[\\underline s_j - t_j, \\overline s_j + t_j]`,
so with :math:`K_j = \\min(K, \\max_{[\\underline s_j - t_j, \\overline s_j + t_j]} |\\varphi'|)`
(``activation.slope``) and the image :math:`[\\underline Y_j, \\overline Y_j]` of that widened
interval,

.. math::

    e_j = \\min\\big(K_j t_j,\\ \\max(\\overline Y_j - \\underline y_j,\\ \\overline y_j - \\underline Y_j),
          \\ \\mathrm{hi} - \\mathrm{lo}\\big).

The widening uses the deviation of the *faulty* network (:math:`t_j`), so the slope covers both
networks. The output error is :math:`\\max_j t_j` over the outputs (no activation).

**Synapse faults** (:math:`g_l` failing synapses into layer l = 1..L+1). A failing synapse (j, i)
replaces :math:`w_{ji}\\tilde y_i` by a value at most :math:`\\delta_{ji}` =
``fault.deviation`` :math:`(|w_{ji}|, |y_i|)` away from the clean :math:`w_{ji} y_i`; all
:math:`g_l` may sit in row j, so

.. math::

    t_j = \\sum_i |w_{ji}| e_i + \\operatorname{top}_{g_l}\\big((\\delta_{ji} - |w_{ji}| e_i)^+\\big)_i .

But they touch at most :math:`g_l` rows, so the next layer sees the *increment* over the no-own-
failure deviation at only :math:`g_l` neurons, and in total at most :math:`g_l` synapses' worth of it
(:func:`_propagate_synapses`); this keeps the bound below the paper's :math:`K g \\delta` term.

**Precision** (:math:`\\lambda_l` on every output of hidden layer l, ERRATA 4): no failing set,
:math:`e_j = \\min(K_j t_j, \\ldots) + \\lambda_l`.

**Second bound: interval back-substitution** (:func:`_linear_deviation`, neuron faults and
precision, every layer kind, activations with a known derivative range: sigmoid, tanh, ReLU,
LeakyReLU, Hardtanh, ELU). The faulty-minus-clean output is :math:`\\sum_k M_k c_k` with
:math:`M_k = A_{L+1} D_L A_L \\cdots D_{k+1} A_{k+1}`, :math:`D` the diagonal secant slopes (inside
:math:`[\\min\\varphi', \\max\\varphi']` over the widened intervals above) and :math:`c_k` what failing
units add (:math:`\\le \\Delta_i + e_i`). Signs cancel inside :math:`M_k`; the output bound is the
smaller of the two, per output. Both are sound and non-decreasing in every count, so is the minimum.

**Clean intervals** (:func:`refined_intervals`). Interval propagation over the box
(:meth:`Network.box_intervals`); for the whole domain (one box) of a
network whose layers have small effective matrices, hidden layers 2..L are also bounded by
back-substituting linear relaxations of the activations (triangle for ReLU/LeakyReLU, secant with
exact offsets for sigmoid/tanh, the image's constant lines otherwise) down to the input box, and
the two are intersected (both are sound, so is the intersection).

**Convolutions and pooling.** Rows are those of the effective matrix :math:`A^{(l)}` (materialised
when it is small and no band is much smaller). A chain of convolutions, average poolings and
per-channel affines reads, per output neuron, only a receptive field of :math:`C_{in} R_h R_w`
inputs (:func:`_receptive_field`: stride, padding and extent of the composed chain); its rows are
kept as that band (:func:`_local_rows`, obtained from :math:`C_{in} R_h R_w` periodic probe inputs
and checked against the chain), so :math:`\\sum_i |A_{ji}| e_i` and the exact top-f per row cost
:math:`N_l C_{in} R_h R_w` (e.g. conv 3x3 after a 2x2 pool: 6x6 per input channel). Larger plain
convolutions take the top terms per receptive field with ``unfold`` (the positive-part form, sound
for every set); other large chains fall back to :math:`\\operatorname{top}_f \\le f \\max_i`
(sound, looser).

**Why tight <= paper.** By induction :math:`e_i \\le D_{l-1}` and :math:`\\Delta_i \\le \\Delta_{l-1}`
(per-neuron values never exceed the layer's), :math:`|w_{ji}| \\le w_m`, :math:`K_j \\le K`, so
:math:`t_j \\le w_m (\\min(f, R)\\Delta + \\min(N - f, R) D)`, the paper's :math:`T_l` (the exact
form sums f failing and the others correct terms of one row).

**Monotonicity** (``monotone=True``). :math:`t_j = \\max_{|S| \\le f}[\\sum_{i\\notin S}|w_{ji}|e_i +
\\sum_{i\\in S}|w_{ji}|\\max(\\Delta_i, e_i)]` is non-decreasing in f and in every :math:`e_i`;
:math:`K_j t_j` and the image cap are non-decreasing in :math:`t_j` (the slope is a max over a
growing interval, the image grows), and :math:`\\Delta_i` does not depend on f. By induction over
the layers, every :math:`e_j` and the output bound are non-decreasing in every :math:`f_l`.

**Per-layer contributions** (``per_layer``): entry l is the bound with only layer l failing
(:math:`f_l` there, 0 elsewhere; only :math:`\\lambda_l` for precision). They do not sum to the
total (the propagation is not linear) but each is at most the total of the monotone form.

All of it is a few matrix-vector products and one ``topk`` per layer: about one pass over the
weights. The batch dimension B treats many input boxes at once (see
:mod:`faultbound.bounds.certify`).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault, NeuronFault, Precision, SynapseFault
from faultbound.network.activations import Activation
from faultbound.network.core import Layer, LayerIntervals, Network
from faultbound.network.ops import Conv

__all__ = [
    "LayerBox",
    "TightPlan",
    "prepare",
    "propagate",
    "refined_intervals",
    "tight_bound",
    "tight_value",
]

#: Relative outward rounding applied to every t_j (float64 sums of non-negative terms).
_SAFETY = 1e-12
#: Effective matrices up to this many entries are materialised for exact row top-f.
_MATRIX_ENTRIES = 8_000_000
#: Elements per chunk of the (batch, rows, fan-in) term tensor.
_CHUNK = 1 << 22


#: Clean intervals of one layer for a batch of input boxes, flattened to ``(B, N_l)``.
LayerBox = LayerIntervals


def refined_intervals(net: Network, lo: Tensor, hi: Tensor, refine: bool = True) -> list[LayerBox]:
    """The clean intervals tight reads: :meth:`Network.box_intervals` of the boxes ``[lo, hi]``
    (``(B, *input_shape)``, float64), flattened to ``(B, N_l)``, with the input box prepended, and
    with its linear-relaxation refinement.

    Returns ``L + 2`` entries: index 0 is the input box itself, index l the layer l. With ``refine``
    and a single box of non-zero width, the pre-activation bounds of hidden layers 2..L are
    intersected with linear relaxation bounds (:func:`_linear_bounds`) before the activation's image
    is taken, when that is cheap (about :data:`_REFINE_FLOPS`); otherwise (and with
    ``refine=False``) the intervals are exactly :meth:`Network.box_intervals`'.
    """
    B = lo.shape[0]
    x_lo, x_hi = lo.reshape(B, -1), hi.reshape(B, -1)
    out = [LayerBox(x_lo, x_hi, x_lo, x_hi)]
    use_lin = refine and B == 1 and bool((hi > lo).any()) and _refine_cost(net) <= _REFINE_FLOPS
    if not use_lin:
        for iv in net.box_intervals(lo, hi):
            out.append(LayerBox(*(v.reshape(B, -1) for v in (iv.s_lo, iv.s_hi, iv.y_lo, iv.y_hi))))
        return out
    relax: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    with torch.no_grad():
        for idx, layer in enumerate(net.layers):
            # the step of Network.box_intervals, with the refinement between the affine map and the activation
            c, r = (lo + hi) / 2, (hi - lo) / 2
            sc = layer.pre(c)
            sr = layer.abs_linear(r)
            slack = 1e-12 * (sc.abs() + sr)
            s_lo, s_hi = sc - sr - slack, sc + sr + slack
            act = layer.activation
            if act is None:
                y_lo, y_hi = s_lo, s_hi
            else:
                if idx > 0:
                    l_lo, l_hi = _linear_bounds(net, idx, relax, x_lo[0], x_hi[0])
                    shape = s_lo.shape
                    s_lo = torch.maximum(s_lo.reshape(-1), l_lo).reshape(shape)
                    s_hi = torch.minimum(s_hi.reshape(-1), l_hi).reshape(shape)
                    s_hi = torch.maximum(s_hi, s_lo)
                y_lo, y_hi = act.image(s_lo, s_hi)
                relax.append(act.relaxation(s_lo.reshape(-1), s_hi.reshape(-1), y_lo.reshape(-1), y_hi.reshape(-1)))
            out.append(LayerBox(s_lo.reshape(B, -1), s_hi.reshape(B, -1), y_lo.reshape(B, -1), y_hi.reshape(B, -1)))
            lo, hi = y_lo, y_hi
    return out


# --------------------------------------------------------------------------- linear relaxation

#: Largest multiply-add count of the linear-relaxation refinement of the domain intervals.
_REFINE_FLOPS = 400_000_000


def _refine_cost(net: Network) -> float:
    """Multiply-adds of the backward passes (inf when a layer has no small effective matrix)."""
    widths = [net.layers[0].in_width] + [lay.width for lay in net.hidden]
    if any(lay.in_width * lay.width > _MATRIX_ENTRIES for lay in net.hidden):
        return math.inf
    cost = 0.0
    for m in range(2, net.L + 1):  # target hidden layer m (1-based)
        cost += 2 * sum(widths[m] * widths[k] * widths[k - 1] for k in range(1, m + 1))
    return cost


def _matrix(layer: Layer) -> tuple[Tensor, Tensor]:
    """:math:`A^{(l)}` and :math:`b^{(l)}` of an affine chain (``b = pre(0)``)."""
    A = layer.effective_matrix()  # the dense op's own weight when the chain is one
    b = layer.pre(torch.zeros((1, *layer.in_shape), dtype=torch.float64)).reshape(-1)
    return A, b


def _linear_bounds(
    net: Network, m: int, relax: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]], x_lo: Tensor, x_hi: Tensor
) -> tuple[Tensor, Tensor]:
    """Bounds of :math:`s^{(m+1)}` (``m`` is the 0-based layer index) by back-substitution.

    Starting from :math:`s = A_m y + b_m`, each activation is replaced by its upper line where the
    coefficient is positive and its lower line where it is negative (for the upper bound; the other
    way round for the lower bound), then :math:`s_k = A_k y_{k-1} + b_k`, down to the input box.
    """
    centre, radius = (x_lo + x_hi) / 2, (x_hi - x_lo) / 2
    A_m, b_m = _matrix(net.layers[m])
    res = []
    for upper in (True, False):
        C, const = A_m, b_m.clone()
        for k in range(m - 1, -1, -1):
            a_lo, b_lo, a_hi, b_hi = relax[k]
            P, N = C.clamp(min=0.0), C.clamp(max=0.0)
            if upper:
                const = const + P @ b_hi + N @ b_lo
                D = P * a_hi[None] + N * a_lo[None]
            else:
                const = const + P @ b_lo + N @ b_hi
                D = P * a_lo[None] + N * a_hi[None]
            A_k, b_k = _matrix(net.layers[k])
            const = const + D @ b_k
            C = D @ A_k
        spread = C.abs() @ radius
        val = C @ centre + const
        slack = 1e-10 * (val.abs() + spread + (C.abs() @ centre.abs()) + const.abs())
        res.append(val + spread + slack if upper else val - spread - slack)
    return res[1], res[0]


# --------------------------------------------------------------------------- row rules


TermFn = Callable[..., Tensor]


@dataclass(frozen=True, eq=False)
class _Local:
    """The non-zero band of :math:`A^{(l)}` for a chain of convolutions and poolings.

    Row j (output channel c, position p) reads only the inputs of its receptive field
    :math:`[p S - P, p S - P + R)` per spatial axis (:func:`_receptive_field`), so the row is stored as
    ``F = C_{in} R_h R_w`` entries: ``values[j, f]`` is :math:`A_{j, \\mathrm{index}[j, f]}` and
    ``valid[j, f]`` says that the position lies inside the input (outside it, in the padding, the
    entry is no synapse and its value is 0). ``N_out x F`` numbers instead of ``N_out x N_in``.
    """

    values: Tensor  # (N_out, F) signed entries of A
    index: Tensor  # (N_out, F) int64 column of A (0 where invalid)
    valid: Tensor  # (N_out, F) bool: inside the input


@dataclass(frozen=True, eq=False)
class _Rows:
    """How to take per-row sums and top-k sums of layer l's rows (one of four paths).

    ``"matrix"``: the effective matrix, materialised (small layers, dense layers); ``"local"``: the
    receptive-field band of a conv/pool chain (:class:`_Local`, exact, no ``N_out x N_in`` matrix);
    ``"unfold"``: a single large convolution, top terms per receptive field with ``unfold``;
    ``"fallback"``: :math:`\\operatorname{top}_f \\le f \\max` through the row sums (sound, loose).
    """

    layer: Layer
    kind: str  # "matrix" | "local" | "unfold" | "fallback"
    abs_matrix: Tensor | None = None  # (N_out, N_in) for "matrix"
    structural: Tensor | None = None  # (N_out, N_in) bool: the entry is a synapse ("matrix", non-dense)
    local: _Local | None = None  # for "local"

    def abs_mul(self, e: Tensor) -> Tensor:
        """:math:`\\sum_i |A_{ji}| e_i` (an upper bound for the chained fallback), ``(B, N_out)``."""
        if self.kind == "matrix":
            assert self.abs_matrix is not None
            return e @ self.abs_matrix.T
        if self.kind == "local":
            assert self.local is not None
            loc = self.local
            W = loc.values.abs()
            B, (n_out, n_f) = e.shape[0], W.shape
            out = torch.empty((B, n_out), dtype=torch.float64)
            rows = max(1, _CHUNK // max(1, B * n_f))
            for r0 in range(0, n_out, rows):
                r1 = min(n_out, r0 + rows)
                out[:, r0:r1] = (e[:, loc.index[r0:r1]] * W[None, r0:r1]).sum(-1)
            return out
        B = e.shape[0]
        return self.layer.abs_linear(e.reshape(B, *self.layer.in_shape)).reshape(B, -1)

    def topk(
        self, k: int, fn: TermFn, vals: Sequence[Tensor], signed: bool, upper: Sequence[Tensor] | None = None
    ) -> Tensor:
        """:math:`\\operatorname{top}_k` of the terms ``fn(|A_ji|, *vals_i)`` of every row j.

        ``signed=True`` keeps negative terms (exactly k entries of the row); otherwise terms are
        clamped at 0 (at most k). Paths that cannot be exact fall back to the clamped form.
        ``upper``: per-input values at which ``fn`` is largest (default ``vals``), for the fallback.
        """
        if self.kind == "matrix":
            return self._topk_matrix(k, fn, vals, signed)
        if self.kind == "local":
            return self._topk_local(k, fn, vals, signed)
        if self.kind == "unfold":
            return self._topk_unfold(k, fn, vals)
        return self._topk_fallback(k, fn, vals if upper is None else upper)

    def vjp(self, M: Tensor, absolute: bool) -> Tensor:
        """:math:`M A` (``absolute=False``) or an entrywise upper bound of :math:`M |A|` for
        :math:`M \\ge 0` (``absolute=True``), for ``M`` of shape ``(..., N_out)``; ``(..., N_in)``.

        The chained paths (and the band of a single convolution, or when M has many rows: above
        :data:`_VJP_ENTRIES` products) pull M back through each op in turn: autograd of the linear
        map (exact), or of the ops' absolute-value maps, whose product bounds :math:`|A|` entrywise
        (exactly :math:`|A|` for a single weighted op: each synapse meets one weight).
        """
        lead = M.shape[:-1]
        M2 = M.reshape(-1, M.shape[-1])
        loc = self.local  # set exactly when kind == "local"
        if self.kind == "matrix":
            A = self.abs_matrix if absolute else _signed_matrix(self.layer)
            assert A is not None
            out = M2 @ A
        elif (
            self.kind == "local"
            and loc is not None
            and self.layer._simple is None  # one conv: autograd below is exact, and faster
            and M2.shape[0] * loc.values.numel() <= _VJP_ENTRIES
        ):
            W = loc.values.abs() if absolute else loc.values
            n_in = self.layer.in_width
            out = torch.zeros((M2.shape[0], n_in), dtype=torch.float64)
            flat = loc.index.reshape(-1)
            step = max(1, _CHUNK // max(1, W.numel()))
            for r0 in range(0, M2.shape[0], step):
                r1 = min(M2.shape[0], r0 + step)
                out[r0:r1].index_add_(1, flat, (M2[r0:r1, :, None] * W[None]).reshape(r1 - r0, -1))
        else:
            layer = self.layer
            x = torch.zeros((M2.shape[0], *layer.in_shape), dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                y = (layer.abs_linear(x) if absolute else layer.linear(x)).reshape(M2.shape[0], -1)
                (g,) = torch.autograd.grad((y * M2).sum(), x)
            out = g.reshape(M2.shape[0], -1)
        return out.reshape(*lead, -1)

    def _topk_matrix(self, k: int, fn: TermFn, vals: Sequence[Tensor], signed: bool) -> Tensor:
        assert self.abs_matrix is not None
        W = self.abs_matrix
        n_out, n_in = W.shape
        B = vals[0].shape[0]
        k = min(k, n_in)
        out = torch.empty((B, n_out), dtype=torch.float64)
        rows = max(1, _CHUNK // max(1, B * n_in))
        for r0 in range(0, n_out, rows):
            r1 = min(n_out, r0 + rows)
            terms = fn(W[None, r0:r1, :], *(v[:, None, :] for v in vals))
            if self.structural is not None:
                terms = torch.where(self.structural[None, r0:r1, :], terms, torch.zeros((), dtype=terms.dtype))
            if not signed:
                terms = terms.clamp_min(0.0)
            out[:, r0:r1] = _topk_sum(terms, k)
        return out

    def _topk_local(self, k: int, fn: TermFn, vals: Sequence[Tensor], signed: bool) -> Tensor:
        """Exactly :meth:`_topk_matrix` on the band. Every entry of row j outside its synapses is 0,
        so a signed row chooses among its synapses' terms and :math:`\\min(k, N_{in} - n_j)` zeros
        (:math:`n_j` synapses in row j); padding positions are no input and never chosen."""
        assert self.local is not None
        loc = self.local
        W = loc.values.abs()
        n_out, n_f = W.shape
        n_in = self.layer.in_width
        B = vals[0].shape[0]
        live = loc.valid & (loc.values != 0)
        k = min(k, n_in)
        if signed:
            zeros = (n_in - live.sum(1, keepdim=True)).clamp(max=k)  # (N_out, 1) zeros on offer
            z_ok = torch.arange(k)[None, :] < zeros  # (N_out, k)
        out = torch.empty((B, n_out), dtype=torch.float64)
        rows = max(1, _CHUNK // max(1, B * (n_f + k)))
        for r0 in range(0, n_out, rows):
            r1 = min(n_out, r0 + rows)
            idx = loc.index[r0:r1]
            terms = fn(W[None, r0:r1, :], *(v[:, idx] for v in vals))
            if not signed:
                terms = torch.where(live[None, r0:r1, :], terms, torch.zeros((), dtype=terms.dtype)).clamp_min(0.0)
                out[:, r0:r1] = _topk_sum(terms, min(k, n_f))
                continue
            ninf = torch.full((), -math.inf, dtype=terms.dtype)
            terms = torch.where(live[None, r0:r1, :], terms, ninf)
            pad = torch.where(z_ok[None, r0:r1, :], torch.zeros((), dtype=terms.dtype), ninf).expand(B, -1, -1)
            terms = torch.cat([terms, pad], -1)  # at least k finite entries per row
            out[:, r0:r1] = torch.topk(terms, k, dim=-1, sorted=False).values.sum(-1)
        return out

    def _topk_unfold(self, k: int, fn: TermFn, vals: Sequence[Tensor]) -> Tensor:
        op = self.layer.ops[0]
        assert isinstance(op, Conv)
        co, ci, kh, kw = op.weight.shape
        B = vals[0].shape[0]
        shape = self.layer.in_shape

        def unf(v: Tensor) -> Tensor:
            return F.unfold(v.reshape(B, *shape), (kh, kw), padding=op.padding, stride=op.stride)

        uvals = [unf(v) for v in vals]  # (B, ci*kh*kw, P)
        valid = unf(torch.ones((1, *shape), dtype=torch.float64).expand(B, *shape)) > 0
        W = op.weight.abs().reshape(co, ci * kh * kw)
        ckk, P = uvals[0].shape[1], uvals[0].shape[2]
        k = min(k, ckk)
        out = torch.empty((B, co, P), dtype=torch.float64)
        chans = max(1, _CHUNK // max(1, B * ckk * P))
        for c0 in range(0, co, chans):
            c1 = min(co, c0 + chans)
            terms = fn(W[None, c0:c1, :, None], *(u[:, None, :, :] for u in uvals))
            terms = torch.where(valid[:, None, :, :], terms, torch.zeros((), dtype=terms.dtype)).clamp_min(0.0)
            out[:, c0:c1, :] = _topk_sum(terms.transpose(2, 3), k)
        return out.reshape(B, -1)

    def _topk_fallback(self, k: int, fn: TermFn, vals: Sequence[Tensor]) -> Tensor:
        # top_k of non-negative terms <= min(sum of all, k * largest). Terms are bounded through
        # an entrywise bound of |A_ji| by the row sums |A| 1 (sound, loose), evaluated at the
        # largest value of every per-input quantity (fn is non-decreasing in |w| and in each of
        # `vals`; callers pass e = 0 for the synapse terms, which decrease in e).
        B = vals[0].shape[0]
        ones = torch.ones((B, self.layer.in_width), dtype=torch.float64)
        row_bound = self.abs_mul(ones)  # (B, N_out) >= max_i |A_ji|
        maxed = [v.amax(1, keepdim=True).clamp_min(0.0) for v in vals]
        big = fn(row_bound, *maxed).clamp_min(0.0)
        return min(k, self.layer.in_width) * big


def _topk_sum(terms: Tensor, k: int) -> Tensor:
    """Sum of the k largest entries along the last axis."""
    n = terms.shape[-1]
    if k <= 0:
        return torch.zeros(terms.shape[:-1], dtype=terms.dtype)
    if k >= n:
        return terms.sum(-1)
    if 2 * k > n:  # cheaper to drop the n - k smallest
        return terms.sum(-1) - torch.topk(terms, n - k, dim=-1, largest=False, sorted=False).values.sum(-1)
    return torch.topk(terms, k, dim=-1, sorted=False).values.sum(-1)


#: Entries of a receptive-field band (:class:`_Local`) that are stored, at most.
_LOCAL_ENTRIES = 16_000_000
#: Rows x band entries above which :meth:`_Rows.vjp` pulls back through the ops instead of the band.
_VJP_ENTRIES = 64_000_000


def _rows_for(layer: Layer) -> _Rows:
    """The cheapest exact row rule of ``layer``: the dense matrix, the effective matrix when it is
    small and no band is much smaller, the band of a conv/pool chain, a single convolution's
    ``unfold``, and only then the loose fallback."""
    simple = layer._simple  # the single weighted op, if the chain is that op plus flattens
    dense = None if simple is None else simple.dense_weight
    if dense is not None:
        return _Rows(layer, "matrix", dense.abs())
    entries = layer.in_width * layer.width
    rf = _receptive_field(layer)
    band = None if rf is None else layer.width * rf[0] * math.prod(rf[1])
    if entries <= _MATRIX_ENTRIES and (band is None or 8 * band > entries):
        A = layer.effective_matrix()
        return _Rows(layer, "matrix", A.abs(), A != 0)
    if band is not None and band <= _LOCAL_ENTRIES:
        loc = _band(layer)
        if loc is not None:
            return _Rows(layer, "local", local=loc)
    if entries <= _MATRIX_ENTRIES:
        A = layer.effective_matrix()
        return _Rows(layer, "matrix", A.abs(), A != 0)
    if isinstance(simple, Conv) and layer.ops[0] is simple and len(layer.in_shape) == 3:
        return _Rows(layer, "unfold")
    return _Rows(layer, "fallback")


def _receptive_field(
    layer: Layer,
) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, ...]] | None:
    """``(C_in, R, S, P, out_shape)`` of a chain of convolutions, average poolings and per-channel
    affines (a trailing flatten allowed) on a ``(C, H, W)`` input, else ``None``.

    Per spatial axis, output p reads the inputs :math:`[pS - P, pS - P + R)`. An op with kernel k,
    stride s and padding q after a chain (S, P, R) gives :math:`(sS,\\ qS + P,\\ (k-1)S + R)`: its
    output p reads chain outputs :math:`[ps - q, ps - q + k)`, each of which reads R inputs spaced S.
    """
    if len(layer.in_shape) != 3:
        return None
    ops = list(layer.ops)
    while ops and ops[-1].reshape_only:
        ops.pop()
    S, P, R = [1, 1], [0, 0], [1, 1]
    shape: tuple[int, ...] = tuple(layer.in_shape)
    for op in ops:
        win = op.window(shape)  # the op's kernel, stride, padding and output shape
        if win is None:
            return None
        k, st, pd, shape = win
        for a in range(2):
            S[a], P[a], R[a] = st[a] * S[a], pd[a] * S[a] + P[a], (k[a] - 1) * S[a] + R[a]
    if math.prod(shape) != layer.width:
        return None
    return layer.in_shape[0], (R[0], R[1]), (S[0], S[1]), (P[0], P[1]), shape


#: Bands already built, per layer: box-independent like the effective matrix, so built once. Kept
#: here (weakly keyed, so a dropped Network frees its bands), not written into the Layer.
_BANDS: weakref.WeakKeyDictionary[Layer, _Local] = weakref.WeakKeyDictionary()


def _band(layer: Layer) -> _Local | None:
    """:func:`_local_rows` of ``layer``, built once per layer."""
    got = _BANDS.get(layer)
    if got is None:
        got = _local_rows(layer)
        if got is not None:
            _BANDS[layer] = got
    return got


def _local_rows(layer: Layer) -> _Local | None:
    """The band of :math:`A^{(l)}` (:class:`_Local`) from :math:`C_{in} R_h R_w` probe inputs.

    Probe (c, a, b) is 1 at channel c on every position :math:`(h, w)` with
    :math:`h \\equiv a \\pmod{R_h}`, :math:`w \\equiv b \\pmod{R_w}`, 0 elsewhere. A receptive field
    spans exactly :math:`R` consecutive positions per axis, so it holds exactly one such position
    (offset :math:`(a - \\mathrm{base}) \\bmod R`), and output j of the linear part on the probe is
    that single entry :math:`A_{j,i}`. Every (row, offset) pair is met by exactly one probe. A
    random input checks the band against the chain (``None`` if it ever differed).
    """
    rf = _receptive_field(layer)
    if rf is None:
        return None
    c_in, (Rh, Rw), (Sh, Sw), (Ph, Pw), (c_out, OH, OW) = rf
    _, H, W = layer.in_shape
    n_f = c_in * Rh * Rw
    hh = torch.arange(H) % Rh
    ww = torch.arange(W) % Rw
    outs = []
    per = max(1, _CHUNK // max(1, layer.in_width + layer.width))
    probes = [(c, a, b) for c in range(c_in) for a in range(Rh) for b in range(Rw)]
    with torch.no_grad():
        for p0 in range(0, n_f, per):
            chunk = probes[p0 : p0 + per]
            x = torch.zeros((len(chunk), c_in, H, W), dtype=torch.float64)
            for n, (c, a, b) in enumerate(chunk):
                x[n, c] = ((hh == a)[:, None] & (ww == b)[None, :]).to(torch.float64)
            outs.append(layer.linear(x).reshape(len(chunk), c_out, OH, OW))
    out = torch.cat(outs, 0).reshape(c_in, Rh, Rw, c_out, OH, OW)
    base_h = torch.arange(OH) * Sh - Ph  # (OH,)
    base_w = torch.arange(OW) * Sw - Pw
    dh, dw = torch.arange(Rh), torch.arange(Rw)
    pos_h = base_h[:, None] + dh[None, :]  # (OH, Rh) input row of offset dh
    pos_w = base_w[:, None] + dw[None, :]
    ah, aw = pos_h % Rh, pos_w % Rw  # the probe phase that lights that position
    ci = torch.arange(c_in)
    vals = out[
        ci[None, None, None, :, None, None],
        ah[None, :, None, None, :, None],
        aw[None, None, :, None, None, :],
        torch.arange(c_out)[:, None, None, None, None, None],
        torch.arange(OH)[None, :, None, None, None, None],
        torch.arange(OW)[None, None, :, None, None, None],
    ]  # (c_out, OH, OW, c_in, Rh, Rw)
    ok_h = (pos_h >= 0) & (pos_h < H)
    ok_w = (pos_w >= 0) & (pos_w < W)
    valid = (ok_h[None, :, None, None, :, None] & ok_w[None, None, :, None, None, :]).expand(vals.shape)
    index = (
        ci[None, None, None, :, None, None] * (H * W)
        + pos_h.clamp(0, H - 1)[None, :, None, None, :, None] * W
        + pos_w.clamp(0, W - 1)[None, None, :, None, None, :]
    ).expand(vals.shape)
    n_out = c_out * OH * OW
    vals = torch.where(valid, vals, torch.zeros((), dtype=vals.dtype)).reshape(n_out, n_f).contiguous()
    loc = _Local(vals, index.reshape(n_out, n_f).contiguous(), valid.reshape(n_out, n_f).contiguous())
    # check the band against the chain on a random input (a wrong band would be unsound)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((2, *layer.in_shape), generator=g, dtype=torch.float64) - 0.5
    with torch.no_grad():
        ref = layer.linear(x).reshape(2, -1)
    got = (x.reshape(2, -1)[:, loc.index] * loc.values[None]).sum(-1)
    if not torch.allclose(got, ref, rtol=1e-9, atol=1e-9 * (1.0 + float(ref.abs().max()))):
        return None  # pragma: no cover - a receptive field the formula above missed
    return loc


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, eq=False)
class TightPlan:
    """Everything of the propagation that does not depend on the failure counts.

    ``boxes[l]`` are the clean intervals of layer l (``boxes[0]``: the input boxes), ``delta[l]``
    the failing-neuron deviations :math:`\\Delta` of hidden layer l (``delta[0]`` unused).
    """

    net: Network
    fault: Fault
    boxes: list[LayerBox]
    rows: list[_Rows]
    delta: list[Tensor | None]

    @property
    def batch(self) -> int:
        return int(self.boxes[0].s_lo.shape[0])


def _as_tensor_like(v: object, like: Tensor) -> Tensor:
    t = torch.as_tensor(v, dtype=torch.float64)
    return t.expand_as(like) if t.shape != like.shape else t


def prepare(net: Network, fault: Fault, lo: Tensor | None = None, hi: Tensor | None = None) -> TightPlan:
    """Intervals, row rules and failing deviations for ``fault`` over the boxes ``[lo, hi]``
    (default: the network's domain, a batch of one)."""
    if lo is None or hi is None:
        lo, hi = net.domain.lo.unsqueeze(0), net.domain.hi.unsqueeze(0)
    boxes = refined_intervals(net, lo.to(torch.float64), hi.to(torch.float64))
    for l in range(1, net.L + 1):
        b = boxes[l]
        if not bool(torch.isfinite(b.y_lo).all() & torch.isfinite(b.y_hi).all()):
            raise InvalidArgumentError(f"Layer {l} has non-finite values over the input box.")
    rows = [_rows_for(layer) for layer in net.layers]
    delta: list[Tensor | None] = [None]
    for l in range(1, net.L + 1):
        if isinstance(fault, NeuronFault):
            ya = boxes[l].y_abs
            delta.append(_as_tensor_like(fault.deviation(ya), ya))
        else:
            delta.append(None)
    return TightPlan(net, fault, boxes, rows, delta)


def _deviation_after(act: Activation, box: LayerBox, t: Tensor) -> Tensor:
    """:math:`e_j` from :math:`t_j`: local slope, image cap and range width (module docstring)."""
    a, b = box.s_lo - t, box.s_hi + t
    k = torch.clamp(act.slope(a, b), max=act.K)
    lin = k * t
    jump = act.jump(a, b)  # a discontinuity (torch's softplus switch)
    if jump is not None:
        lin = lin + jump * (t > 0)
    Ylo, Yhi = act.image(a, b)
    cap = torch.maximum(Yhi - box.y_lo, box.y_hi - Ylo)
    e = torch.minimum(lin, cap)
    if math.isfinite(act.width):
        e = torch.clamp(e, max=act.width)
    return e.clamp_min(0.0) * (1 + _SAFETY)


def _synapse_terms(fault: SynapseFault) -> TermFn:
    """:math:`\\delta_{ji} - |w_{ji}| e_i` for the synapse (j, i)."""

    def fn(w: Tensor, y: Tensor, e: Tensor) -> Tensor:
        return _as_tensor_like(fault.deviation(w, y), w * y) - w * e

    return fn


def _synapse_delta(fault: SynapseFault) -> TermFn:
    """:math:`\\delta_{ji}` alone."""

    def fn(w: Tensor, y: Tensor) -> Tensor:
        return _as_tensor_like(fault.deviation(w, y), w * y)

    return fn


def _neuron_terms(w: Tensor, u: Tensor) -> Tensor:
    return w * u


def propagate(plan: TightPlan, failures: Sequence[int] | None, monotone: bool = False) -> Tensor:
    """Per-output deviation bounds ``(B, n_outputs)`` for the failure counts ``failures``.

    ``monotone=False``: sets of exactly the given sizes (signed top-f, never above the paper's
    bound); ``monotone=True``: sets of at most the given sizes (positive parts; non-decreasing in
    every count). Synapse faults always use the positive-part form.
    """
    net, fault = plan.net, plan.fault
    counts = [0] * (net.L + 1) if failures is None else [int(v) for v in failures]
    if isinstance(fault, SynapseFault):
        return _propagate_synapses(plan, counts, fault)
    B = plan.batch
    lam = list(fault.magnitudes(net.L)) if fault.site == "layer" else [0.0] * net.L
    neuron = fault.site == "neuron"
    e = torch.zeros((B, net.layers[0].in_width), dtype=torch.float64)
    e_zero = True
    t = e
    ts: list[Tensor] = []  # pre-activation deviation bounds of hidden layers
    cs: list[Tensor | None] = []  # bounds on what failing / imprecise units add, per hidden layer
    for idx, layer in enumerate(net.layers):
        rows = plan.rows[idx]
        t = torch.zeros((B, layer.width), dtype=torch.float64) if e_zero else rows.abs_mul(e)
        if neuron and idx > 0 and counts[idx - 1] > 0:
            d = plan.delta[idx]
            assert d is not None
            # A failing unit's output is at most Delta_i from the clean value, whatever its
            # upstream deviation (Byzantine deviation: clean value + u, so Delta_i = C).
            u = d - e
            signed = not monotone
            if not signed:
                u = u.clamp_min(0.0)
            t = t + rows.topk(counts[idx - 1], _neuron_terms, [u], signed)
        t = t.clamp_min(0.0) * (1 + _SAFETY)
        if layer.activation is None:
            lin = _linear_deviation(plan, counts, ts, cs)
            return t if lin is None else torch.minimum(t, lin)
        e = _deviation_after(layer.activation, plan.boxes[idx + 1], t)
        ts.append(t)
        if neuron and counts[idx] > 0:
            d = plan.delta[idx + 1]
            assert d is not None
            # c_i = (failing value - clean) - (phi(s~_i) - phi(s_i)): at most Delta_i + e_i.
            cs.append((d + e) * (1 + _SAFETY))
        elif lam[idx] > 0:
            cs.append(torch.full_like(e, lam[idx]))
        else:
            cs.append(None)
        if lam[idx] > 0:
            e = e + lam[idx]
        e_zero = not bool((e > 0).any())
    return t  # pragma: no cover - the last layer is the output


def _linear_deviation(
    plan: TightPlan, counts: Sequence[int], ts: Sequence[Tensor], cs: Sequence[Tensor | None]
) -> Tensor | None:
    """A second bound on the output deviation, by interval back-substitution (or ``None``).

    Write each hidden layer's deviation as :math:`\\delta_k = D_k A_k \\delta_{k-1} + c_k`, where
    :math:`D_k` is the diagonal of secant slopes between the clean and the faulty pre-activation
    (both in :math:`[\\underline s - t, \\overline s + t]`, so :math:`D_k \\in [\\min\\varphi',
    \\max\\varphi']` there) and :math:`c_k` is what failing units add: zero on correct neurons,
    at most :math:`\\Delta_i + e_i` on a failing one (its value minus the propagated part, for every
    fault model: a Byzantine-deviation unit's clean value + u is C from the clean value but up to
    :math:`C + e_i` from its propagated value), :math:`\\lambda_k` everywhere for precision. Then

    .. math::

        F_{fail} - F = \\sum_k M_k c_k,\\qquad M_k = A_{L+1} D_L A_L \\cdots D_{k+1} A_{k+1},

    and with :math:`|M_k|` the magnitude of the interval matrix product (centre/radius arithmetic),
    :math:`|(F_{fail} - F)_o| \\le \\sum_k \\operatorname{top}_{f_k}(|M_k|_{oi}\\, c_{k,i})_i`
    (the sum over i for precision). Signs cancel inside :math:`M_k`, which the per-neuron
    propagation cannot see; the caller keeps the smaller of the two bounds (both are sound, both
    are non-decreasing in every count). Needs a continuous activation with a known derivative
    range in every hidden layer. The products are taken row by row from the output
    (:meth:`_Rows.vjp`: the matrix, the receptive-field band, or autograd through the chain), so no
    :math:`N_l \\times N_{l-1}` matrix is built for convolutions; for a chain without an exact row
    rule, :math:`M_r |A|` is replaced by the larger :math:`M_r |A_k| \\cdots |A_1|` (sound).
    """
    net = plan.net
    if not any(c is not None for c in cs):
        return None
    ranges = []
    for k, layer in enumerate(net.hidden):
        box = plan.boxes[k + 1]
        act = layer.activation
        assert act is not None  # a hidden layer
        rng = act.deriv_range(box.s_lo - ts[k], box.s_hi + ts[k])
        if rng is None:
            return None
        ranges.append(rng)
    B = plan.batch
    Wsigned = plan.rows[-1].vjp(torch.eye(net.n_outputs, dtype=torch.float64), absolute=False)
    Mc = Wsigned.expand(B, *Wsigned.shape)
    Mr = torch.zeros_like(Mc)
    out = torch.zeros((B, net.n_outputs), dtype=torch.float64)
    first = min(k for k, c in enumerate(cs) if c is not None)
    for k in range(net.L - 1, first - 1, -1):
        mag = Mc.abs() + Mr  # (B, n_out, N_k)
        c = cs[k]
        if c is not None:
            terms = mag * c[:, None, :]
            if plan.fault.site == "layer":  # every unit of the layer is off
                out = out + terms.sum(-1)
            else:
                out = out + _topk_sum(terms, min(counts[k], terms.shape[-1]))
        if k == first:
            break
        dmin, dmax = ranges[k]
        dc, dr = ((dmin + dmax) / 2)[:, None, :], ((dmax - dmin) / 2)[:, None, :]
        Mc2 = Mc * dc
        Mr2 = Mc.abs() * dr + Mr * (dc.abs() + dr)
        Mc = plan.rows[k].vjp(Mc2, absolute=False)
        Mr = plan.rows[k].vjp(Mr2, absolute=True)
    return out * (1 + 1e-10) + 1e-300


def _signed_matrix(layer: Layer) -> Tensor:
    return layer.effective_matrix()  # the dense op's own weight when the chain is one


def _propagate_synapses(plan: TightPlan, counts: list[int], fault: SynapseFault) -> Tensor:
    """Synapse faults: :math:`g_l` failing synapses into layer l touch at most :math:`g_l` rows.

    Per neuron j of layer l, with :math:`e^0` the deviation bounds of layer l-1 when its own rows
    have no failing synapse and :math:`e^g` when they have up to :math:`g_{l-1}`:

    .. math::

        A_j = \\sum_i |w_{ji}| e^0_i + \\min\\Big(\\operatorname{top}_{g_{l-1}}\\big(|w_{ji}|(e^g_i - e^0_i)\\big),
              \\ g_{l-1} \\max_i |w_{ji}| k_i m_i\\Big),\\qquad
        t_j = A_j + \\operatorname{top}_{g_l}\\big((\\delta_{ji} - |w_{ji}| e^0_i)^+\\big),

    :math:`e^0_j, e^g_j` are the activation deviations of :math:`A_j` and :math:`t_j`, :math:`m_j` the
    largest :math:`\\delta_{ji}` of row j and :math:`k_j` the slope over
    :math:`[\\underline s_j - t_j, \\overline s_j + t_j]`. A neuron with :math:`g_j` failing synapses
    deviates by at most :math:`e^0_j + \\min(e^g_j - e^0_j, k_j g_j m_j)` (compare :math:`\\varphi(\\tilde s_j)`
    with the value whose failing synapses carry their clean terms), and the :math:`g_j` sum to at most
    :math:`g_l`: hence the two forms of the increment. The output error is :math:`\\max_j t_j`.
    """
    net = plan.net
    B = plan.batch
    syn_fn, delta_fn = _synapse_terms(fault), _synapse_delta(fault)
    e0 = torch.zeros((B, net.layers[0].in_width), dtype=torch.float64)
    e0_zero = True
    eg = km = e0
    g_prev = 0
    for idx, layer in enumerate(net.layers):
        rows = plan.rows[idx]
        a = torch.zeros((B, layer.width), dtype=torch.float64) if e0_zero else rows.abs_mul(e0)
        if g_prev > 0:
            inc1 = rows.topk(g_prev, _neuron_terms, [(eg - e0).clamp_min(0.0)], False)
            inc2 = g_prev * rows.topk(1, _neuron_terms, [km], False)
            a = a + torch.minimum(inc1, inc2)
        a = a.clamp_min(0.0) * (1 + _SAFETY)
        g = counts[idx]
        t = a
        if g > 0:
            ya = plan.boxes[idx].y_abs
            own = rows.topk(g, syn_fn, [ya, e0], False, upper=[ya, torch.zeros_like(e0)])
            t = (a + own) * (1 + _SAFETY)
        if layer.activation is None:
            return t
        box = plan.boxes[idx + 1]
        e0 = _deviation_after(layer.activation, box, a)
        e0_zero = not bool((e0 > 0).any())
        if g > 0:
            eg = _deviation_after(layer.activation, box, t)
            k = torch.clamp(layer.activation.slope(box.s_lo - t, box.s_hi + t), max=layer.activation.K)
            m = rows.topk(1, delta_fn, [plan.boxes[idx].y_abs], False)
            km = k * m * (1 + _SAFETY)
        g_prev = g
    return t  # pragma: no cover - the last layer is the output


def tight_value(plan: TightPlan, failures: Sequence[int] | None, monotone: bool = False) -> float:
    """:math:`\\max` over the batch and the outputs of :func:`propagate`."""
    return float(propagate(plan, failures, monotone).amax())


def _only(counts: Sequence[int], l: int) -> list[int]:
    return [v if i == l else 0 for i, v in enumerate(counts)]


def tight_bound(
    net: Network, failures: Sequence[int] | None, fault: Fault, monotone: bool = False
) -> tuple[float, list[float]]:
    """``method="tight"``: the bound over the network's domain and the per-layer contributions.

    Args:
        failures: f_1..f_L (neuron faults), g_1..g_{L+1} (synapse faults), ``None`` for precision.
        monotone: bound every set of *at most* these sizes (see the module docstring).

    Returns:
        ``(value, per_layer)``; ``per_layer[l]`` is the bound with only layer l+1 failing.

    Example:
        >>> import torch, faultbound as fb
        >>> from torch import nn
        >>> lin1, lin2 = nn.Linear(1, 2), nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = lin1.weight.fill_(1.0), lin1.bias.zero_(), lin2.weight.fill_(0.5), lin2.bias.zero_()
        >>> net = fb.Network.from_torch(nn.Sequential(lin1, nn.Sigmoid(), lin2))
        >>> round(tight_bound(net, [1], fb.Crash())[0], 6)  # sigmoid(x) <= sigmoid(1) on [0, 1]
        0.365529
    """
    if not isinstance(fault, (NeuronFault, SynapseFault, Precision)):
        raise InvalidArgumentError(f"The tight method has no rule for fault {fault!r}.")
    plan = prepare(net, fault)
    total = tight_value(plan, failures, monotone)
    parts: list[float] = []
    if isinstance(fault, Precision):
        for l in range(net.L):
            only = Precision([v if i == l else 0.0 for i, v in enumerate(fault.errors)])
            sub = TightPlan(net, only, plan.boxes, plan.rows, plan.delta)
            parts.append(tight_value(sub, None, monotone))
        return total, parts
    assert failures is not None
    for l in range(len(failures)):
        parts.append(tight_value(plan, _only(failures, l), monotone) if failures[l] else 0.0)
    return total, parts
