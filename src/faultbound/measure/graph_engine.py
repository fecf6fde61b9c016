"""Batched faulty forward over a :class:`~faultbound.network.graph.GraphNetwork`.

The graph counterpart of :mod:`faultbound.measure.engine`: T fault configurations x B inputs in one
batched pass over the graph's own operators (:mod:`faultbound.network.gops`), so the function it
perturbs is exactly the one the graph bounds reason about.

**Fault sets on a graph.** ``FaultSet.sites[s]`` holds the failing units of fault site s+1
(neuron faults, neuron bit flips; a flattened unit of the site node's output) or of weighted node
s+1 (synapse faults, weight bit flips), in topological order, as
:func:`~faultbound.failures.failure_counts` counts them. A synapse index is row-major into the
node's effective (out, in) matrix, over its non-zero entries (:func:`synapse_pairs`); a weight index
is the flat index into the weight tensor. Precision offsets are drawn per site, ``(T, B, N_s)``.

**Semantics** (those of :mod:`faultbound.faults`, as the layered engine): a failing neuron sends
``fault.sends(y', y, v)`` (y' its current value, y its fault-free one); a failing synapse j <- i of a
dense or convolution node transmits ``fault.transmits(w_ji y_i, v)`` (y_i fault-free) instead of
:math:`w_{ji} y'_i`; precision adds its offsets to every unit of every site; a bit flip flips a bit
of a site unit (:meth:`~faultbound.faults.BitFlip.sends`, int8 step :math:`Y_s/127`) or of a weight
(:meth:`~faultbound.faults.BitFlip.change`, int8 step :math:`\\max|w|/127`), and the node's output
changes by :math:`(\\Delta W) z'`.

**Work items.** A configuration t on an input b is a *pair* (t, b); a chunk of configurations is
evaluated as a flat batch of pairs. Every node's faulty state is one of

* ``None``: equal to the clean pass for every pair (the node is not downstream of any fault yet);
* a tensor ``(P, *shape)``: the node's value for every pair;
* a :class:`_Win` (images only): the node equals the clean pass outside one spatial window per
  pair, :math:`[r_p, r_p + h) \\times [c_p, c_p + w)`, whose values it holds.

**Clean pass reuse.** The clean values of every node are computed once per input batch
(:func:`graph_clean_pass`); configurations are grouped by their first faulty node, and a node reads
the clean pass until a fault reaches it.

**Receptive-field update.** A single failing unit of an image starts a 1x1 window. Elementwise
operators (activations, per-channel affine, residual sums, products, channel concatenation) keep
the window (the union of their inputs' windows); a local operator (convolution, average and max
pooling) with kernel k, stride s and padding p maps the window :math:`[a, a+h)` to the outputs that
read it, :math:`[\\lceil (a + p - k + 1)/s \\rceil, \\lfloor (a + h - 1 + p)/s \\rfloor]`, and is
recomputed there only, on the input patch they read (the clean halo around the window, padding
included). The window is given up for the whole map when it covers half of it or when a non-local
operator (dense, mean, norm, softmax, matmul, reshape) reads it.

**Unchanged pairs are dropped.** When every fault of a chunk sits at one node, the pairs whose value
at that node did not change (a crashed ReLU that was 0 already) have the clean output and are not
propagated further.

**Sparse states on dense chains** (the layered engine's refinements, :mod:`faultbound.measure.state`).
While a chunk's pairs are its whole T x B grid, a flat node whose readers are all dense nodes may be
an :class:`_Sp`: the clean pass plus a few changed units per configuration,
:math:`y' = y + \\mathrm{scatter}(S_t, \\Delta_{t,b})`. Failing neurons of a clean or sparse node
join it; a dense node reading it is updated instead of recomputed,

.. math::

    s'_{t,b} = s_b + W_{:,S_t}\\,\\Delta_{t,b},

whenever that costs fewer flops (:math:`|S_t| < n_{in}`), into a reusable workspace that the next
activation overwrites in place. Synapse and weight faults on a dense node whose input is clean or
sparse add their changes to the gathered sums only, and after the activation the units they did not
change are dropped again (the state is re-sparsified). The arithmetic is the layered engine's, so on
``GraphNetwork.from_network(net)`` the outputs equal it bit for bit where both take the same path.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts, layer_count
from faultbound.faults import BitFlip, Fault, NeuronFault, SynapseFault, for_dtype
from faultbound.measure.faultset import FaultSet
from faultbound.measure.injection import Injection
from faultbound.measure.state import MAX_ELEMENTS, _errors, _low_rank
from faultbound.measure.values import ValueMode, _adversarial, _init_values, _place_values, _ranges
from faultbound.network.gops import Act, Affine, Const, Input
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Conv, Dense

__all__ = [
    "GraphClean",
    "graph_clean_pass",
    "graph_inject",
    "graph_differentiable_outputs",
    "graph_initial_values",
    "synapse_pairs",
]


# ----------------------------------------------------------------------------------- clean pass
@dataclass(frozen=True, eq=False)
class GraphClean:
    """The clean pass of one input batch over a graph: ``vals[i]`` ``(B, *shape_i)`` for every node.
    ``padded`` caches zero / -inf padded, channels-last copies ``(B, H', W', C)`` of image nodes for
    the receptive-field update."""

    vals: tuple[Tensor, ...]
    padded: dict[tuple[int, int, int, float], Tensor] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return int(self.vals[0].shape[0])

    @property
    def output(self) -> Tensor:
        """:math:`F(x)` ``(B, n_out)``."""
        y = self.vals[-1]
        return y.reshape(y.shape[0], -1)

    @property
    def ys(self) -> tuple[Tensor, ...]:
        """The input first (its dtype is the pass's dtype), as :class:`~faultbound.measure.CleanPass`."""
        return self.vals

    def pad(self, j: int, ph: int, pw: int, fill: float) -> Tensor:
        key = (j, ph, pw, fill)
        got = self.padded.get(key)
        if got is None:
            v = self.vals[j]
            got = (F.pad(v, (pw, pw, ph, ph), value=fill) if ph or pw else v).permute(0, 2, 3, 1).contiguous()
            if not torch.is_grad_enabled():
                self.padded[key] = got
        return got


def graph_clean_pass(net: GraphNetwork, x: Tensor, dtype: torch.dtype | None = None, grad: bool = False) -> GraphClean:
    """Run the clean graph once on ``x`` (``(B, *input_shape)`` or ``(B, d)``) in ``dtype``, keeping
    every node's value (``grad=True`` keeps the autograd graph, for gradients with respect to ``x``)."""
    x = torch.as_tensor(x)
    b = x.shape[0]
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        if x[0].numel() != math.prod(net.input_shape):
            raise InvalidArgumentError(
                f"Expected inputs of shape (B, {', '.join(map(str, net.input_shape))}), but got {tuple(x.shape)}."
            )
        x = x.reshape(b, *net.input_shape)
    with torch.set_grad_enabled(grad):
        vals = net.values(x.to(net.dtype if dtype is None else dtype))
    return GraphClean(tuple(vals))


# ----------------------------------------------------------------------------------- synapses
_SYN_CACHE: dict[tuple[int, int], tuple[object, ...]] = {}


def synapse_pairs(net: GraphNetwork, w: int, p: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(output unit j, input unit i, weight :math:`w_{ji}`) of synapses ``p`` (any shape, >= 0) of
    weighted node ``w`` (0-based among :attr:`GraphNetwork.weighted_nodes`).

    Synapses are the non-zero entries of the node's effective (out, in) matrix in row-major order
    (as the layered engine numbers them), found without the matrix:

    * dense on the last axis of an input ``(..., n_in)`` (one block per token): synapse
      :math:`p = \\tau\\,\\mathrm{nnz}(W) + q` is entry q (row-major) of the non-zeros of W in
      token :math:`\\tau`;
    * convolution: output unit j = (c, h, w) reads the taps (c_in, k_h, k_w) with a non-zero weight
      that fall inside the input, in that lexicographic order (the order of the input index); the
      counts per output are a convolution of ones with the non-zero pattern.
    """
    node = net.nodes[net.weighted_nodes[w]]
    assert isinstance(node.op, Affine)
    op = node.op.op
    in_shape = net.nodes[node.inputs[0]].shape
    flat = p.reshape(-1)
    if isinstance(op, Dense):
        n_out, n_in = op.weight.shape
        r, c = torch.nonzero(op.weight, as_tuple=True)
        nnz = r.numel()
        tok, q = flat // nnz, flat % nnz
        j = tok * n_out + r[q]
        i = tok * n_in + c[q]
        wji = op.weight[r[q], c[q]]
        return j.reshape(p.shape), i.reshape(p.shape), wji.reshape(p.shape)
    assert isinstance(op, Conv)
    key = (id(net), w)
    cached = _SYN_CACHE.get(key)
    if cached is None or cached[0] is not op:
        pattern = (op.weight != 0).to(torch.float64)
        ones = torch.ones((1, *in_shape), dtype=torch.float64)
        counts = F.conv2d(ones, pattern, None, op.stride, op.padding).reshape(-1).round().long()
        cached = (op, counts.cumsum(0))
        _SYN_CACHE[key] = cached
    ends = cast(Tensor, cached[1])
    co, ci, kh, kw = op.weight.shape
    _, hh, ww = in_shape
    ho, wo = node.shape[1], node.shape[2]
    j = torch.searchsorted(ends, flat, right=True)
    r = flat - torch.where(j > 0, ends[(j - 1).clamp(min=0)], torch.zeros_like(j))
    c, oh, ow = j // (ho * wo), (j // wo) % ho, j % wo
    ih = oh[:, None] * op.stride[0] - op.padding[0] + torch.arange(kh)[None, :]  # (k, kh)
    iw = ow[:, None] * op.stride[1] - op.padding[1] + torch.arange(kw)[None, :]
    okh = (ih >= 0) & (ih < hh)
    okw = (iw >= 0) & (iw < ww)
    mask = (op.weight[c] != 0) & okh[:, None, :, None] & okw[:, None, None, :]  # (k, ci, kh, kw)
    mflat = mask.reshape(flat.numel(), -1)
    pos = ((mflat.cumsum(1) == r[:, None] + 1) & mflat).to(torch.int8).argmax(1)
    tc, tkh, tkw = pos // (kh * kw), (pos // kw) % kh, pos % kw
    rows = torch.arange(flat.numel())
    i = tc * hh * ww + ih[rows, tkh] * ww + iw[rows, tkw]
    wji = op.weight[c, tc, tkh, tkw]
    return j.reshape(p.shape), i.reshape(p.shape), wji.reshape(p.shape)


# ----------------------------------------------------------------------------------- states
@dataclass(frozen=True, eq=False)
class _Win:
    """A node equal to the clean pass outside one window per pair: rows ``off[:, 0] + [0, h)``,
    columns ``off[:, 1] + [0, w)``, with values ``val`` ``(P, C, h, w)``."""

    off: Tensor
    val: Tensor


@dataclass(frozen=True, eq=False)
class _Sp:
    """A flat node equal to the clean pass plus a few changed units per configuration:
    :math:`y' = y + \\mathrm{scatter}(idx_t, \\Delta_{t,b})`, ``idx`` ``(T, k)`` (never -1, repeats
    allowed: their changes add up), ``dval`` ``(T, B, k)`` (exactly 0 on padding). Only while the
    chunk's pairs are its whole T x B grid, configuration-major (``_Ctx.grid``)."""

    idx: Tensor
    dval: Tensor


_GState = Tensor | _Win | _Sp | None


@dataclass
class _Ctx:
    """One chunk being propagated: its pairs (configuration ``t`` within the chunk, input ``b``)."""

    net: GraphNetwork
    clean: GraphClean
    fault: Fault
    fs: FaultSet
    vals: list[Tensor | None]
    pt: Tensor | None
    pb: Tensor | None
    windows: bool
    #: T when the pairs are the whole T x B grid, configuration-major (sparse states need it)
    grid: int | None = None
    #: :math:`Y_s` per fault site for the int8 step of neuron bit flips (default: ``net.value_bound``)
    bounds: tuple[float, ...] | None = None

    def value_bound(self, s_idx: int) -> float:
        """:math:`Y_s` of fault site ``s_idx`` (0-based): the largest value over the domain."""
        if self.bounds is not None:
            return self.bounds[s_idx]
        return self.net.value_bound(s_idx + 1)

    def _grid_pairs(self) -> None:
        assert self.grid is not None
        self.pt, self.pb = _pairs(self.grid, self.clean.batch)

    @property
    def t(self) -> Tensor:
        """The configuration (within the chunk) of every pair ``(P,)`` (made when first asked for)."""
        if self.pt is None:
            self._grid_pairs()
        assert self.pt is not None
        return self.pt

    @property
    def b(self) -> Tensor:
        """The input of every pair ``(P,)``."""
        if self.pb is None:
            self._grid_pairs()
        assert self.pb is not None
        return self.pb

    @property
    def n(self) -> int:
        if self.pt is None:
            assert self.grid is not None
            return self.grid * self.clean.batch
        return int(self.pt.numel())

    def clean_of(self, j: int) -> Tensor:
        """Clean values of node j for every pair ``(P, *shape)``."""
        v = self.clean.vals[j]
        if isinstance(self.net.nodes[j].op, Const):
            return v[:1].expand(self.n, *v.shape[1:])
        return v[self.b]

    def per_pair(self, v: Tensor) -> Tensor:
        """A value ``(T, 1|B, k)`` of the chunk as ``(P, k)``."""
        return v[self.t, self.b if v.shape[1] > 1 else torch.zeros_like(self.b)]


def _dense(ctx: _Ctx, j: int, s: _GState) -> Tensor:
    """The full value ``(P, *shape)`` of node j in state ``s``."""
    if s is None:
        return ctx.clean_of(j)
    if isinstance(s, _Win):
        return _overlay(ctx.clean_of(j).clone(), s, 0, 0)
    if isinstance(s, _Sp):
        y = ctx.clean.vals[j]
        b = y.shape[0]
        t, _, k = s.dval.shape
        full = y.reshape(1, b, -1).expand(t, -1, -1).contiguous()
        return full.scatter_add(2, s.idx[:, None, :].expand(t, b, k), s.dval).reshape(t * b, *y.shape[1:])
    return s


def _overlay(canvas: Tensor, win: _Win, r0: Tensor | int, c0: Tensor | int) -> Tensor:
    """Write ``win`` into ``canvas`` ``(P, C, H, W)`` whose (0, 0) is the map's ``(r0, c0)``;
    window units outside the canvas are skipped. In place (the caller owns ``canvas``) unless
    autograd is on."""
    hh, ww = canvas.shape[2], canvas.shape[3]
    h, w = win.val.shape[2], win.val.shape[3]
    rr = win.off[:, 0:1] - (r0 if isinstance(r0, int) else r0[:, None]) + torch.arange(h)[None, :]  # (P, h)
    cc = win.off[:, 1:2] - (c0 if isinstance(c0, int) else c0[:, None]) + torch.arange(w)[None, :]
    ok = ((rr >= 0) & (rr < hh))[:, :, None] & ((cc >= 0) & (cc < ww))[:, None, :]
    pi, a, b = ok.nonzero(as_tuple=True)
    idx = (pi, rr[pi, a], cc[pi, b])
    src = win.val.permute(0, 2, 3, 1)[pi, a, b]  # (n, C): one pixel's channels per row
    view = canvas.permute(0, 2, 3, 1)
    if torch.is_grad_enabled():
        return view.index_put(idx, src).permute(0, 3, 1, 2)
    view.index_put_(idx, src)
    return canvas


def _read(
    ctx: _Ctx, j: int, s: _GState, r0: Tensor, c0: Tensor, h: int, w: int, pad: tuple[int, int], fill: float
) -> Tensor:
    """Node j's values ``(P, C, h, w)`` at rows ``r0 + [0, h)``, columns ``c0 + [0, w)`` of the map
    (``fill`` outside it, at most ``pad`` rows / columns away); channels-last in memory (gathered
    from a channels-last copy of the clean pass, one pixel's channels at a time)."""
    ph, pw = pad
    src = ctx.clean.pad(j, ph, pw, fill)  # (B, H + 2ph, W + 2pw, C)
    rows = (r0[:, None] + ph + torch.arange(h)[None, :])[:, :, None]
    cols = (c0[:, None] + pw + torch.arange(w)[None, :])[:, None, :]
    if isinstance(ctx.net.nodes[j].op, Const):
        bidx = torch.zeros_like(ctx.b)[:, None, None]
    else:
        bidx = ctx.b[:, None, None]
    patch = src[bidx, rows, cols].permute(0, 3, 1, 2)
    if isinstance(s, _Win):
        patch = _overlay(patch, s, r0, c0)
    return patch


def _window_op(ctx: _Ctx, i: int, ins: list[_GState]) -> _GState | None:
    """Node i on windowed / clean inputs, recomputed on a window only; ``None`` when the window
    does not apply (then the caller computes the whole map)."""
    net = ctx.net
    node = net.nodes[i]
    op = node.op
    if len(node.shape) != 3:
        return None
    if op.engine_pointwise and len(ins) == 1 and isinstance(ins[0], _Win):
        return _Win(ins[0].off, op.forward(ins[0].val))
    loc = op.engine_window()
    if loc is not None:
        src = ins[0]
        if not isinstance(src, _Win):
            return None
        (kh, kw), (sh, sw), (ph, pw), fill = loc
        _, ho, wo = node.shape
        h, w = src.val.shape[2], src.val.shape[3]
        lo_h = (-(-(src.off[:, 0] + ph - kh + 1) // sh)).clamp(min=0)
        hi_h = ((src.off[:, 0] + h - 1 + ph) // sh).clamp(max=ho - 1)
        lo_w = (-(-(src.off[:, 1] + pw - kw + 1) // sw)).clamp(min=0)
        hi_w = ((src.off[:, 1] + w - 1 + pw) // sw).clamp(max=wo - 1)
        nh = min(ho, max(1, int((hi_h - lo_h).max()) + 1))
        nw = min(wo, max(1, int((hi_w - lo_w).max()) + 1))
        if 2 * nh * nw > ho * wo:
            return None
        lo_h = lo_h.clamp(max=ho - nh)
        lo_w = lo_w.clamp(max=wo - nw)
        r0, c0 = lo_h * sh - ph, lo_w * sw - pw
        patch = _read(ctx, node.inputs[0], src, r0, c0, (nh - 1) * sh + kh, (nw - 1) * sw + kw, (ph, pw), fill)
        out = op.on_patch(patch)
        return _Win(torch.stack([lo_h, lo_w], 1), out)
    if op.pixelwise([net.nodes[j].shape for j in node.inputs], node.shape):
        if any(not isinstance(s, _Win) and s is not None for s in ins):
            return None
        wins = [s for s in ins if isinstance(s, _Win)]
        lo = torch.stack([s.off for s in wins]).amin(0)
        hi = torch.stack([s.off + torch.tensor([s.val.shape[2], s.val.shape[3]]) for s in wins]).amax(0)
        _, hh, ww = node.shape
        nh = int((hi[:, 0] - lo[:, 0]).max())
        nw = int((hi[:, 1] - lo[:, 1]).max())
        if 2 * nh * nw > hh * ww:
            return None
        r0 = lo[:, 0].clamp(max=hh - nh)
        c0 = lo[:, 1].clamp(max=ww - nw)
        parts = [_read(ctx, j, s, r0, c0, nh, nw, (0, 0), 0.0) for j, s in zip(node.inputs, ins, strict=True)]
        return _Win(torch.stack([r0, c0], 1), op.forward(*parts))
    return None


# ----------------------------------------------------------------------------------- faults
def _site_nodes(net: GraphNetwork, fault: Fault) -> tuple[int, ...]:
    """The node each fault-set entry addresses: fault sites, or weighted nodes."""
    return net.weighted_nodes if fault.site in ("synapse", "weight") else net.site_nodes


def _neurons(ctx: _Ctx, i: int, s_idx: int, state: _GState) -> _GState:
    """Failing units of site ``s_idx`` (node i) send what the fault model states."""
    sites = ctx.fs.sites[s_idx] if s_idx < len(ctx.fs.sites) else None
    if sites is None:
        return state
    sp = sites[ctx.t]  # (P, k)
    valid = sp >= 0
    if not bool(valid.any()):
        return state
    node = ctx.net.nodes[i]
    fault = ctx.fault
    pidx = torch.where(valid, sp, sp[:, :1].clamp(min=0))
    bits = ctx.fs.bits[s_idx] if s_idx < len(ctx.fs.bits) else None
    vals = ctx.vals[s_idx] if s_idx < len(ctx.vals) else None

    def send(cur: Tensor, nominal: Tensor) -> Tensor:
        if bits is None:
            v = None if vals is None else ctx.per_pair(vals)
            return cast(NeuronFault, fault).sends(cur, nominal, v)
        flip = cast(BitFlip, fault)
        scale = 1.0
        if flip.format == "int8":
            y = ctx.value_bound(s_idx)
            scale = (y if y > 0 else 1.0) / 127.0
        return flip.sends(cur, nominal, bits[ctx.t], scale)

    if state is None and ctx.windows and len(node.shape) == 3 and sp.shape[1] == 1 and bool(valid.all()):
        _, hh, ww = node.shape
        u = sp[:, 0]
        ch, rr, cc = u // (hh * ww), (u // ww) % hh, u % ww
        col = ctx.clean.vals[i][ctx.b[:, None], :, rr[:, None], cc[:, None]]  # (P, 1, C)
        col = col.reshape(ctx.n, -1).clone()
        nominal = col.gather(1, ch[:, None])
        col = col.scatter(1, ch[:, None], send(nominal, nominal))
        return _Win(torch.stack([rr, cc], 1), col.reshape(ctx.n, -1, 1, 1))
    full = _dense(ctx, i, state)
    p = ctx.n
    flat = full.reshape(p, -1)
    cur = flat.gather(1, pidx)
    nominal = ctx.clean_of(i).reshape(p, -1).gather(1, pidx)
    new = send(cur, nominal)
    fill = torch.where(valid[:, :1], new[:, :1], cur[:, :1])
    new = torch.where(valid, new, fill)
    return flat.scatter(1, pidx, new).reshape(full.shape)


def _offsets(ctx: _Ctx, i: int, s_idx: int, state: _GState) -> _GState:
    """Precision: every unit of site ``s_idx`` is off by its offset, :math:`y' + u`."""
    v = ctx.vals[s_idx] if s_idx < len(ctx.vals) else None
    if v is None:
        return state
    if ctx.grid is not None:  # pairs are the T x B grid: the offsets (T, B, N_s) need no gather
        t, b = ctx.grid, ctx.clean.batch
        shape = ctx.net.nodes[i].shape
        if state is None:
            base = ctx.clean.vals[i].reshape(1, b, -1)
        else:
            base = _dense(ctx, i, state).reshape(t, b, -1)
        return (base + v.reshape(t, b, -1)).reshape(t * b, *shape)
    full = _dense(ctx, i, state)
    return full + v[ctx.t, ctx.b].reshape(full.shape)


def _synapses(ctx: _Ctx, i: int, w_idx: int, in_state: _GState, out: _GState) -> _GState:
    """Failing synapses j <- i of weighted node ``w_idx`` transmit ``fault.transmits(w y_i, v)``
    instead of :math:`w_{ji} y'_i`: output unit j changes by the difference."""
    sites = ctx.fs.sites[w_idx] if w_idx < len(ctx.fs.sites) else None
    if sites is None:
        return out
    sp = sites[ctx.t]
    valid = sp >= 0
    if not bool(valid.any()):
        return out
    node = ctx.net.nodes[i]
    src = node.inputs[0]
    j, iu, wji = synapse_pairs(ctx.net, w_idx, sp.clamp(min=0))
    p = ctx.n
    cur_in = _dense(ctx, src, in_state).reshape(p, -1).gather(1, iu)
    clean_in = ctx.clean_of(src).reshape(p, -1).gather(1, iu)
    wji = wji.to(cur_in.dtype)
    vals = ctx.vals[w_idx] if w_idx < len(ctx.vals) else None
    v = None if vals is None else ctx.per_pair(vals)
    delta = cast(SynapseFault, ctx.fault).transmits(wji * clean_in, v) - wji * cur_in
    delta = torch.where(valid, delta, torch.zeros_like(delta))
    full = _dense(ctx, i, out)
    return full.reshape(p, -1).scatter_add(1, j, delta).reshape(full.shape)


def _weights(ctx: _Ctx, i: int, w_idx: int, in_state: _GState, out: _GState) -> _GState:
    """Flipped weight bits of weighted node ``w_idx``: the output changes by :math:`(\\Delta W) z'`."""
    sites = ctx.fs.sites[w_idx] if w_idx < len(ctx.fs.sites) else None
    if sites is None:
        return out
    sp = sites[ctx.t]
    valid = sp >= 0
    if not bool(valid.any()):
        return out
    flip = cast(BitFlip, ctx.fault)
    bits = ctx.fs.bits[w_idx][ctx.t]  # type: ignore[index]
    node = ctx.net.nodes[i]
    assert isinstance(node.op, Affine)
    op = node.op.op
    assert isinstance(op, (Dense, Conv))
    pc = sp.clamp(min=0)
    wv = op.weight.reshape(-1)[pc]
    if flip.format != "int8":
        dw = flip.change(wv.to(torch.float64), bits, 1.0)
    else:
        dw = flip.change(wv, bits, (float(op.weight.abs().max()) or 1.0) / 127.0)
    z = _dense(ctx, node.inputs[0], in_state)
    dw = torch.where(valid, dw, torch.zeros_like(dw)).to(z.dtype)
    full = _dense(ctx, i, out).clone()
    p = ctx.n
    rows = torch.arange(p)[:, None].expand_as(pc).reshape(-1)
    if isinstance(op, Dense):
        n_in = op.weight.shape[1]
        jo, ii = (pc // n_in).reshape(-1), (pc % n_in).reshape(-1)
        zin = z.reshape(p, -1, n_in)
        contrib = dw.reshape(-1)[:, None] * zin[rows, :, ii]  # (P*k, tokens)
        fo = full.reshape(p, -1, op.weight.shape[0]).permute(0, 2, 1)  # a view (P, out, tokens)
        fo.index_put_((rows, jo), contrib, accumulate=True)
        return full
    co, ci, kh, kw = op.weight.shape
    q = pc.reshape(-1)
    oc, ic, tkh, tkw = q // (ci * kh * kw), (q // (kh * kw)) % ci, (q // kw) % kh, q % kw
    sh, sw = op.stride
    ph, pw = op.padding
    ho, wo = node.shape[1], node.shape[2]
    zp = F.pad(z, (pw, pw, ph, ph))
    dflat = dw.reshape(-1)
    for a in range(kh):
        for bb in range(kw):
            sel = ((tkh == a) & (tkw == bb)).nonzero().reshape(-1)
            if sel.numel() == 0:
                continue
            patch = zp[rows[sel], ic[sel], a : a + sh * (ho - 1) + 1 : sh, bb : bb + sw * (wo - 1) + 1 : sw]
            full.index_put_((rows[sel], oc[sel]), dflat[sel, None, None] * patch, accumulate=True)
    return full


# ----------------------------------------------------------------------------------- sparse states
# The layered engine's refinements on chains of dense nodes (:mod:`faultbound.measure.state`): a flat
# node that differs from the clean pass on a few units per configuration is an :class:`_Sp`, and a
# dense node reading it is updated by a low-rank product instead of recomputed.
_WT: weakref.WeakKeyDictionary[GraphNetwork, dict[tuple[int, torch.dtype], Tensor]] = weakref.WeakKeyDictionary()
_BUF: weakref.WeakKeyDictionary[GraphNetwork, dict[tuple[int, int, torch.dtype], Tensor]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_LOCK = threading.Lock()


def _dense_op(net: GraphNetwork, i: int) -> Dense | None:
    """The dense op of node i when it is a dense map of a flat input ``(n_in,) -> (n_out,)``."""
    node = net.nodes[i]
    op = node.op
    if isinstance(op, Affine) and isinstance(op.op, Dense) and len(net.nodes[node.inputs[0]].shape) == 1:
        return op.op
    return None


def _users(net: GraphNetwork) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in net.nodes]
    for i, n in enumerate(net.nodes):
        for j in n.inputs:
            out[j].append(i)
    return out


def _wt(net: GraphNetwork, i: int, op: Dense, dtype: torch.dtype) -> Tensor:
    """:math:`W^T` ``(n_in, n_out)`` of dense node i in ``dtype``, cached beside the network."""
    with _CACHE_LOCK:
        per = _WT.setdefault(net, {})
        got = per.get((i, dtype))
        if got is None:
            got = per[(i, dtype)] = op.weight.detach().T.to(dtype).contiguous()
        return got


def _workspace(net: GraphNetwork, i: int, shape: tuple[int, int, int], dtype: torch.dtype) -> Tensor | None:
    """A reusable buffer for node i's low-rank update (no autograd only): fresh multi-megabyte
    tensors cost page faults on every call, which dominate a cheap low-rank update."""
    if torch.is_grad_enabled():
        return None
    n = math.prod(shape)
    with _CACHE_LOCK:
        per = _BUF.setdefault(net, {})
        key = (threading.get_ident(), i, dtype)
        buf = per.get(key)
        if buf is None or buf.numel() < n:
            buf = per[key] = torch.empty(n, dtype=dtype)
    return buf[:n].view(shape)


def _sparse_ok(ctx: _Ctx, i: int, k: int) -> bool:
    """Is the low-rank update of dense node i by k changed input units cheaper than recomputing it
    (flops :math:`TBkN` against :math:`TBN n_{in}`, and the gathered columns within
    :data:`MAX_ELEMENTS`)?"""
    op = _dense_op(ctx.net, i)
    if op is None or ctx.grid is None:
        return False
    n_out, n_in = op.weight.shape
    return k < n_in and ctx.grid * k * n_out <= MAX_ELEMENTS


def _sp_fits(ctx: _Ctx, i: int, k: int, users: list[list[int]]) -> bool:
    """May node i's state be sparse with k units: a flat node of a grid chunk all of whose readers
    take the low-rank update."""
    return (
        ctx.grid is not None
        and len(ctx.net.nodes[i].shape) == 1
        and bool(users[i])
        and all(_sparse_ok(ctx, u, k) for u in users[i])
    )


def _gather_sp(ctx: _Ctx, j: int, state: _GState, idx: Tensor) -> Tensor:
    """Node j's current values at units ``idx`` ``(T, k)`` -> ``(T, B, k)`` (grid chunks; state clean,
    sparse or a full ``(P, n)`` tensor)."""
    y = ctx.clean.vals[j]
    b = y.shape[0]
    t, k = idx.shape
    at = idx[:, None, :].expand(t, b, k)
    if isinstance(state, Tensor):
        return state.reshape(t, b, -1).gather(2, at)
    base = y.reshape(1, b, -1).expand(t, -1, -1).gather(2, at)
    if isinstance(state, _Sp):
        match = (idx[:, :, None] == state.idx[:, None, :]).to(state.dval.dtype)  # (T, k, k_old)
        return base + torch.einsum("tbo,tko->tbk", state.dval, match)
    return base


def _low_rank_node(ctx: _Ctx, i: int, st: _Sp, last: bool) -> Tensor | None:
    """Dense node i on a sparse input: :math:`s' = s + \\Delta y\\, W_{:,S}^T` ``(P, n_out)``
    (:func:`~faultbound.measure.state._low_rank`), in a workspace unless it is the output node;
    ``None`` when recomputing is cheaper."""
    k = st.idx.shape[1]
    if not _sparse_ok(ctx, i, k):
        return None
    op = _dense_op(ctx.net, i)
    assert op is not None
    t, b, _ = st.dval.shape
    s = ctx.clean.vals[i]
    cols = _wt(ctx.net, i, op, s.dtype)[st.idx]  # (T, k, n_out)
    buf = None if last else _workspace(ctx.net, i, (t, b, s.shape[1]), s.dtype)
    return _low_rank(s, st.dval, cols, buf).reshape(t * b, -1)


def _neuron_send(ctx: _Ctx, s_idx: int, cur: Tensor, nominal: Tensor, t: int) -> Tensor:
    """What the failing units of site ``s_idx`` send, values ``(T, B, k)`` of a grid chunk."""
    fault = ctx.fault
    bits = ctx.fs.bits[s_idx] if s_idx < len(ctx.fs.bits) else None
    if bits is None:
        vals = ctx.vals[s_idx] if s_idx < len(ctx.vals) else None
        return cast(NeuronFault, fault).sends(cur, nominal, vals)
    flip = cast(BitFlip, fault)
    scale = 1.0
    if flip.format == "int8":
        y = ctx.value_bound(s_idx)
        scale = (y if y > 0 else 1.0) / 127.0
    return flip.sends(cur, nominal, bits[:, None, :].expand_as(cur), scale)


def _neurons_sp(ctx: _Ctx, i: int, s_idx: int, state: _GState) -> _GState:
    """:func:`_neurons` on a clean or sparse flat node of a grid chunk: the failing units' changes
    join the sparse state (earlier changes at those units are replaced)."""
    sites = ctx.fs.sites[s_idx] if s_idx < len(ctx.fs.sites) else None
    if sites is None:
        return state
    valid = sites >= 0
    if not bool(valid.any()):
        return state
    t = sites.shape[0]
    pidx = torch.where(valid, sites, sites[:, :1].clamp(min=0))
    base = _gather_sp(ctx, i, None, pidx)
    cur = base if state is None else _gather_sp(ctx, i, state, pidx)
    new = _neuron_send(ctx, s_idx, cur, base, t)
    vb = valid[:, None, :]
    add = torch.where(vb, new - base, torch.zeros_like(new))
    if not isinstance(state, _Sp):
        return _Sp(pidx, add)
    hit = ((state.idx[:, :, None] == pidx[:, None, :]) & valid[:, None, :]).any(2)  # (T, k_old)
    old = torch.where(hit[:, None, :], torch.zeros_like(state.dval), state.dval)
    return _Sp(torch.cat([state.idx, pidx], 1), torch.cat([old, add], 2))


def _neurons_full(ctx: _Ctx, i: int, s_idx: int, state: Tensor, own: bool) -> Tensor:
    """:func:`_neurons` on a full state ``(P, *shape)`` of a grid chunk: the failing units' values
    are gathered per configuration (the clean ones from the clean pass, not a per-pair copy), and
    written in place when the state is the chunk's own tensor (``own``, no autograd)."""
    sites = ctx.fs.sites[s_idx] if s_idx < len(ctx.fs.sites) else None
    if sites is None:
        return state
    valid = sites >= 0
    if not bool(valid.any()):
        return state
    t = sites.shape[0]
    b = ctx.clean.batch
    pidx = torch.where(valid, sites, sites[:, :1].clamp(min=0))
    full = state.reshape(t, b, -1)
    at = pidx[:, None, :].expand(t, b, pidx.shape[1])
    cur = full.gather(2, at)
    new = _neuron_send(ctx, s_idx, cur, _gather_sp(ctx, i, None, pidx), t)
    fill = torch.where(valid[:, None, :1], new[..., :1], cur[..., :1])
    new = torch.where(valid[:, None, :], new, fill)
    if own and not torch.is_grad_enabled() and full.is_contiguous():
        return full.scatter_(2, at, new).reshape(state.shape)
    return full.scatter(2, at, new).reshape(state.shape)


def _sum_base(ctx: _Ctx, i: int, out: _GState, t: int) -> Tensor:
    """Node i's receiving sums ``(T, B, n)`` to add a change to: its own tensor, or the clean copy."""
    if isinstance(out, Tensor):
        return out.reshape(t, ctx.clean.batch, -1)
    y = ctx.clean.vals[i]
    # a copy even when T = 1 (``contiguous()`` of a 1-long expansion would be the clean pass itself)
    return y.reshape(1, y.shape[0], -1).expand(t, -1, -1).clone(memory_format=torch.contiguous_format)


def _add_at(base: Tensor, j: Tensor, delta: Tensor) -> Tensor:
    """``base`` ``(T, B, n)`` plus ``delta`` ``(T, B, k)`` at units ``j`` ``(T, k)`` (in place when no
    autograd: ``base`` is the chunk's own tensor)."""
    at = j[:, None, :].expand_as(delta)
    if torch.is_grad_enabled():
        return base.scatter_add(2, at, delta)
    return base.scatter_add_(2, at, delta)


def _synapses_sp(ctx: _Ctx, i: int, w_idx: int, in_state: _GState, out: _GState) -> _GState:
    """:func:`_synapses` for a dense node of a grid chunk whose input is clean or sparse: the
    failing synapses' inputs are gathered, not the whole input."""
    sites = ctx.fs.sites[w_idx] if w_idx < len(ctx.fs.sites) else None
    if sites is None:
        return out
    valid = sites >= 0
    if not bool(valid.any()):
        return out
    t = sites.shape[0]
    src = ctx.net.nodes[i].inputs[0]
    j, iu, wji = synapse_pairs(ctx.net, w_idx, sites.clamp(min=0))  # (T, k)
    cur = _gather_sp(ctx, src, in_state, iu)
    clean_in = _gather_sp(ctx, src, None, iu)
    w = wji.to(cur.dtype)[:, None, :]
    vals = ctx.vals[w_idx] if w_idx < len(ctx.vals) else None
    delta = cast(SynapseFault, ctx.fault).transmits(w * clean_in, vals) - w * cur
    delta = torch.where(valid[:, None, :], delta, torch.zeros_like(delta))
    return _add_at(_sum_base(ctx, i, out, t), j, delta).reshape(t * ctx.clean.batch, -1)


def _weights_sp(ctx: _Ctx, i: int, w_idx: int, in_state: _GState, out: _GState) -> _GState:
    """:func:`_weights` for a dense node of a grid chunk whose input is clean or sparse: a flipped
    :math:`w_{ji}` changes :math:`s_j` by :math:`\\Delta w_{ji} y'_i`."""
    sites = ctx.fs.sites[w_idx] if w_idx < len(ctx.fs.sites) else None
    if sites is None:
        return out
    valid = sites >= 0
    if not bool(valid.any()):
        return out
    t = sites.shape[0]
    flip = cast(BitFlip, ctx.fault)
    bits = ctx.fs.bits[w_idx]
    assert bits is not None
    op = _dense_op(ctx.net, i)
    assert op is not None
    pc = sites.clamp(min=0)
    wv = op.weight.reshape(-1)[pc]
    if flip.format != "int8":
        dw = flip.change(wv.to(torch.float64), bits, 1.0)
    else:
        dw = flip.change(wv, bits, (float(op.weight.abs().max()) or 1.0) / 127.0)
    n_in = op.weight.shape[1]
    cur = _gather_sp(ctx, ctx.net.nodes[i].inputs[0], in_state, pc % n_in)
    dw = torch.where(valid, dw, torch.zeros_like(dw)).to(cur.dtype)
    return _add_at(_sum_base(ctx, i, out, t), pc // n_in, dw[:, None, :] * cur).reshape(t * ctx.clean.batch, -1)


def _sparsify(ctx: _Ctx, i: int, y_new: Tensor, users: list[list[int]]) -> _GState:
    """Node i's full value ``(P, n)`` re-expressed as sparse when only a few units changed (per
    configuration, over all inputs) and its readers' low-rank update pays; unchanged: ``None``."""
    assert ctx.grid is not None
    t = ctx.grid
    y = ctx.clean.vals[i]
    b = y.shape[0]
    dy = y_new.reshape(t, b, -1) - y.reshape(1, b, -1)
    nz = (dy != 0).any(1)  # (T, n)
    k = int(nz.sum(1).max()) if t else 0
    if k == 0:
        return None
    if not _sp_fits(ctx, i, k, users):
        return y_new
    idx = torch.topk(nz.to(torch.float32), k, dim=1, sorted=True).indices
    return _Sp(idx, dy.gather(2, idx[:, None, :].expand(t, b, k)))


# ----------------------------------------------------------------------------------- propagation
def _apart(a: Tensor, b: Tensor) -> bool:
    """Do ``a`` and ``b`` live in different storages (``a`` may be written without changing ``b``)?"""
    return a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()


def _last_use(net: GraphNetwork) -> list[int]:
    last = list(range(len(net.nodes)))
    for i, n in enumerate(net.nodes):
        for j in n.inputs:
            last[j] = max(last[j], i)
    return last


def _propagate(ctx: _Ctx, first: int, prune: bool) -> Tensor:
    """Faulty outputs ``(P, n_out)`` of the chunk's pairs, from node ``first`` on; with ``prune``
    the pairs unchanged at ``first`` are dropped (their output is the clean one) and ``ctx.t`` /
    ``ctx.b`` shrink accordingly."""
    net = ctx.net
    fault = ctx.fault
    where = {n: k for k, n in enumerate(_site_nodes(net, fault))}
    site_of = {n: k for k, n in enumerate(net.site_nodes)}
    last = _last_use(net)
    users = _users(net)
    states: dict[int, _GState] = {}
    scratch: set[int] = set()  # nodes whose state is a workspace buffer (overwritten next chunk)
    own: set[int] = set()  # nodes whose state is a tensor of their own (no other state's storage)
    resparse: set[int] = set()  # nodes whose sums changed on a few units only (synapse / weight faults)
    out_node = len(net.nodes) - 1
    for i in range(max(1, first), len(net.nodes)):
        node = net.nodes[i]
        op = node.op
        if isinstance(op, (Input, Const)):
            continue
        ins = [states.get(j) for j in node.inputs]
        state: _GState
        if all(s is None for s in ins):
            state = None
        elif len(ins) == 1 and isinstance(ins[0], _Sp):
            state = _low_rank_node(ctx, i, ins[0], i == out_node)
            if state is None:
                state = op.forward(_dense(ctx, node.inputs[0], ins[0]))
            elif i != out_node and not torch.is_grad_enabled():
                scratch.add(i)
            own.add(i)
        else:
            state = _window_op(ctx, i, ins) if any(isinstance(s, _Win) for s in ins) else None
            if state is None:
                j0 = node.inputs[0]
                if (
                    isinstance(op, Act)
                    and j0 in scratch
                    and len(users[j0]) == 1
                    and i != out_node
                    and isinstance(ins[0], Tensor)
                ):
                    state = op.act.apply_(ins[0])  # the workspace is this node's only input: in place
                    own.add(i)
                else:
                    xs = [_dense(ctx, j, s) for j, s in zip(node.inputs, ins, strict=True)]
                    state = op.forward(*xs)
                    if isinstance(op, (Act, Affine)) and all(_apart(state, x) for x in xs):
                        own.add(i)
            if (
                node.inputs[0] in resparse
                and isinstance(state, Tensor)
                and op.engine_pointwise
                and _sp_fits(ctx, i, 1, users)
            ):
                state = _sparsify(ctx, i, state, users)  # units the sums' change did not reach drop out
        fast = ctx.grid is not None and _dense_op(net, i) is not None and not isinstance(ins[0], (Tensor, _Win))
        if fault.site == "synapse" and i in where:
            if fast and not isinstance(state, (_Win, _Sp)):
                state = _synapses_sp(ctx, i, where[i], ins[0], state)
                resparse.add(i)
                own.add(i)
            else:
                state = _synapses(ctx, i, where[i], ins[0], state)
        elif fault.site == "weight" and i in where:
            if fast and not isinstance(state, (_Win, _Sp)):
                state = _weights_sp(ctx, i, where[i], ins[0], state)
                resparse.add(i)
                own.add(i)
            else:
                state = _weights(ctx, i, where[i], ins[0], state)
        elif fault.site == "neuron" and i in where:
            here = ctx.fs.sites[where[i]] if where[i] < len(ctx.fs.sites) else None
            k = (0 if here is None else here.shape[1]) + (state.idx.shape[1] if isinstance(state, _Sp) else 0)
            if (state is None or isinstance(state, _Sp)) and _sp_fits(ctx, i, k, users):
                state = _neurons_sp(ctx, i, where[i], state)
            elif ctx.grid is not None and isinstance(state, Tensor):
                state = _neurons_full(ctx, i, where[i], state, i in own)
            else:
                state = _neurons(ctx, i, where[i], state)
        elif fault.site == "layer" and i in site_of:
            state = _offsets(ctx, i, site_of[i], state)
        if prune and i == first and state is not None and not isinstance(state, _Sp):
            ctx.pt, ctx.pb = ctx.t, ctx.b
            ctx.grid = None  # the pairs left are no grid: no sparse states from here on
            if isinstance(state, _Win):
                r, c = state.off[:, 0], state.off[:, 1]
                h, w = state.val.shape[2], state.val.shape[3]
                base = _read(ctx, i, None, r, c, h, w, (0, 0), 0.0)
                changed = (state.val != base).reshape(ctx.n, -1).any(1)
                keep = changed.nonzero().reshape(-1)
                state = _Win(state.off[keep], state.val[keep])
            else:
                changed = (state != ctx.clean_of(i)).reshape(ctx.n, -1).any(1)
                keep = changed.nonzero().reshape(-1)
                state = state[keep]
            ctx.pt, ctx.pb = ctx.t[keep], ctx.b[keep]
            if ctx.n == 0:
                return ctx.clean.output[:0]
        if state is not None:
            states[i] = state
        for j in node.inputs:
            if last[j] == i and j in states:
                del states[j]
    final = states.get(out_node)
    return _dense(ctx, out_node, final).reshape(ctx.n, -1)


def _first_nodes(net: GraphNetwork, fault: Fault, fs: FaultSet) -> Tensor:
    """First faulty node of each configuration (``len(nodes)`` when none)."""
    n_nodes = len(net.nodes)
    if not fault.counted:
        nz = [k for k, e in enumerate(fault.magnitudes(net.L)) if e > 0]
        first = net.site_nodes[nz[0]] if nz else n_nodes
        return torch.full((fs.n_configs,), first, dtype=torch.long)
    nodes = _site_nodes(net, fault)
    out = torch.full((fs.n_configs,), n_nodes, dtype=torch.long)
    for k in range(len(fs.sites) - 1, -1, -1):
        s = fs.sites[k]
        if s is not None and s.shape[1]:
            out = torch.where((s >= 0).any(1), nodes[k], out)
    return out


def _faulty_nodes(net: GraphNetwork, fault: Fault, fs: FaultSet) -> Tensor:
    """How many nodes each configuration strikes ``(T,)``."""
    out = torch.zeros(fs.n_configs, dtype=torch.long)
    for s in fs.sites:
        if s is not None and s.shape[1]:
            out += (s >= 0).any(1).long()
    return out


def graph_initial_values(
    net: GraphNetwork, fault: Fault, fs: FaultSet, mode: ValueMode, b: int, g: torch.Generator, dtype: torch.dtype
) -> list[Tensor | None]:
    """Starting values, as :func:`~faultbound.measure.values._init_values`: per entry ``(T, 1|B, k)``,
    or per site ``(T, B, N_s)`` for precision."""
    return _init_values(net, fault, fs, mode, b, g, dtype)


def _check(net: GraphNetwork, fault: Fault, fs: FaultSet) -> None:
    if getattr(fault, "site", None) not in ("neuron", "synapse", "weight", "layer"):
        raise InvalidArgumentError(f"Expected a fault model, but got {fault!r}.")
    if not fault.counted:
        failure_counts(net, fault, None)
        return
    want = layer_count(net, fault)
    what = "weighted node" if fault.site in ("synapse", "weight") else "fault site"
    if len(fs.sites) != want:
        raise InvalidArgumentError(f"Expected a fault set with one entry per {what} ({want}), but got {len(fs.sites)}.")
    if fault.flippable and len(fs.bits) != want:
        raise InvalidArgumentError("Expected the fault set of a bit flip to carry the flipped bits.")


def _pairs(t: int, b: int) -> tuple[Tensor, Tensor]:
    return torch.arange(t).repeat_interleave(b), torch.arange(b).repeat(t)


def graph_inject(
    net: GraphNetwork,
    x: Tensor | GraphClean,
    fault: Fault,
    faults: FaultSet,
    *,
    values: ValueMode = "random",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    adversarial_steps: int = 2,
    windows: bool = True,
    value_bounds: tuple[float, ...] | None = None,
) -> Injection:
    """:func:`~faultbound.measure.inject` on a graph (see the module docstring); ``windows=False``
    turns the receptive-field update off (every faulty node is computed on its whole map);
    ``value_bounds``: :math:`Y_s` per fault site for the int8 step of neuron bit flips, in place of
    the graph's own :meth:`~faultbound.network.graph.GraphNetwork.value_bound` (a layered network's
    view passes the layered :math:`Y_l`, ``value_bound_domain``)."""
    dtype = x.vals[0].dtype if isinstance(x, GraphClean) else (net.dtype if dtype is None else dtype)
    fault = for_dtype(fault, dtype)
    _check(net, fault, faults)
    if values not in ("fixed", "random", "adversarial"):
        raise InvalidArgumentError(f"Expected `values` among fixed, random, adversarial, but got {values!r}.")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    clean = x if isinstance(x, GraphClean) else graph_clean_pass(net, x, dtype)
    dtype = clean.vals[0].dtype
    b = clean.batch
    t_all = faults.n_configs
    firsts = _first_nodes(net, fault, faults)
    single = _faulty_nodes(net, fault, faults) <= 1 if fault.counted else torch.zeros(t_all, dtype=torch.bool)
    order = torch.argsort(firsts, stable=True)
    chunks: list[tuple[Tensor, int]] = []
    n_nodes = len(net.nodes)
    for f in torch.unique(firsts).tolist():
        members = order[firsts[order] == f]
        if f >= n_nodes:
            per = max(1, members.numel())
        else:
            down = net.downstream([int(f)])
            widest = max(n.width for k, n in enumerate(net.nodes) if down[k])
            per = max(1, MAX_ELEMENTS // max(1, b * widest))
        chunks += [(members[i : i + per], int(f)) for i in range(0, members.numel(), per)]
    outputs = clean.output.unsqueeze(0).expand(t_all, -1, -1).clone()
    used: list[list[Tensor | None]] = []
    for members, first in chunks:
        fs = faults.select(members).compact()
        vals = graph_initial_values(net, fault, fs, values, b, g, dtype)
        if first >= n_nodes:
            used.append(vals)
            continue
        if values == "adversarial" and fault.chooses_values and any(v is not None for v in vals):

            def fwd(
                vs: list[Tensor | None], fs: FaultSet = fs, first: int = first
            ) -> Tensor:
                ctx = _Ctx(net, clean, fault, fs, vs, None, None, windows, fs.n_configs, value_bounds)
                return _propagate(ctx, first, False).reshape(fs.n_configs, b, -1)

            out, vals = _adversarial(fwd, clean.output, _ranges(fault, len(vals)), vals, adversarial_steps)
            outputs[members] = out.detach()
        else:
            prune = bool(single[members].all()) and fault.counted
            ctx = _Ctx(net, clean, fault, fs, vals, None, None, windows, fs.n_configs, value_bounds)
            with torch.no_grad():
                out = _propagate(ctx, first, prune)
            if ctx.grid is not None:  # every pair, configuration-major: a block copy
                outputs[members] = out.reshape(members.numel(), b, -1)
            else:
                n_out = outputs.shape[2]
                outputs.view(t_all * b, n_out).index_copy_(0, members[ctx.t] * b + ctx.b, out.reshape(ctx.n, n_out))
        used.append([None if v is None else v.detach() for v in vals])
    vals_cat = _place_values(faults, used, [m for m, _ in chunks], t_all)
    return Injection(outputs, clean.output, _errors(outputs, clean.output), vals_cat)


def graph_differentiable_outputs(
    net: GraphNetwork,
    clean: GraphClean,
    fault: Fault,
    faults: FaultSet,
    values: list[Tensor | None],
    value_bounds: tuple[float, ...] | None = None,
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)`` with the autograd graph kept (to the inputs when ``clean``
    was made with ``grad=True``, and to ``values``); all configurations in one piece."""
    _check(net, fault, faults)
    firsts = _first_nodes(net, fault, faults)
    first = int(firsts.min()) if firsts.numel() else len(net.nodes)
    b = clean.batch
    t = faults.n_configs
    if first >= len(net.nodes):
        return clean.output.unsqueeze(0).expand(t, -1, -1)
    ctx = _Ctx(net, clean, fault, faults, values, None, None, False, t, value_bounds)
    with torch.enable_grad():
        return _propagate(ctx, first, False).reshape(t, b, -1)
