"""The states of the batched engine: the clean pass, prepared per-network data, and the sparse /
low-rank algebra of faulty states.

Notation: :math:`y^{(l)}` (flattened, ``(B, N_l)``) and :math:`s^{(l)}` are the clean outputs and
pre-activations of layer l; a faulty state carries a configuration axis, ``(T, B, N_l)``, and is
one of

* ``None``: equal to the clean pass (no configuration differs yet);
* :class:`_Sparse`: :math:`y' = y + \\mathrm{scatter}(S_t, \\Delta_t)`, a few units per configuration;
* a full tensor ``(T, B, N_l)``.

**Low-rank update.** When layer l-1 differs from the clean pass on a few units :math:`S_t` only,
the next pre-activation is updated instead of recomputed:

.. math::

    s'^{(l)}_{t,b} = s^{(l)}_b + A^{(l)}_{:,S_t}\\,(y'^{(l-1)}_{t,b,S_t} - y^{(l-1)}_{b,S_t}),

with :math:`A_{:,S}` the columns of the layer's linear map (:func:`_columns`: gathered from the
weight of a dense layer, or the layer's response to unit impulses for a convolution), whenever it
costs fewer flops than recomputing the layer (:func:`_sparse_ok`).

**Prepared data belongs to the caller.** :func:`prepare` returns the per-(network, dtype)
:class:`Prepared` (weight columns, synapse lists, impulse responses, workspaces); it is cached
beside the network, keyed on its identity (a weak reference: the entry goes with the network),
never stored on the frozen :class:`~faultbound.network.Network` itself.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.network.core import Layer, Network
from faultbound.network.ops import Conv, Dense, Flatten

__all__ = ["CleanPass", "clean_pass", "Prepared", "prepare", "MAX_ELEMENTS"]

#: Largest (T x B x N) state the engine holds at once; configurations are chunked to stay below.
MAX_ELEMENTS = 1 << 24


@dataclass(frozen=True, eq=False)
class CleanPass:
    """The clean forward pass of one input batch, flattened: ``ys[l]`` ``(B, N_l)`` for l = 0..L+1
    (``ys[L+1] = F(x)``) and ``ss[l]`` the pre-activations (``ss[0]`` is unused)."""

    ys: tuple[Tensor, ...]
    ss: tuple[Tensor, ...]

    @property
    def batch(self) -> int:
        return int(self.ys[0].shape[0])

    @property
    def output(self) -> Tensor:
        return self.ys[-1]


def clean_pass(net: Network, x: Tensor, dtype: torch.dtype | None = None, grad: bool = False) -> CleanPass:
    """Run the clean layered network once on ``x`` (``(B, *input_shape)`` or ``(B, d)``), in
    ``dtype`` (default the network's own format; ``grad=True`` keeps the graph, for gradients with
    respect to ``x``); graph networks: :func:`faultbound.measure.engine.clean_pass`."""
    x = torch.as_tensor(x)
    b = x.shape[0]
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        if x[0].numel() != math.prod(net.input_shape):
            raise InvalidArgumentError(
                f"Expected inputs of shape (B, {', '.join(map(str, net.input_shape))}), but got {tuple(x.shape)}."
            )
        x = x.reshape(b, *net.input_shape)
    y = x.to(net.dtype if dtype is None else dtype)
    ys = [y.reshape(b, -1)]
    ss = [y.reshape(b, -1)]
    with torch.set_grad_enabled(grad):
        for layer in net.layers:
            s = layer.pre(y)
            y = s if layer.activation is None else layer.activation(s)
            ss.append(s.reshape(b, -1))
            ys.append(y.reshape(b, -1))
    return CleanPass(tuple(ys), tuple(ss))

# ----------------------------------------------------------------------------------- prepared
def _weighted_op(layer: Layer) -> Dense | Conv | None:
    """The layer's one dense/conv op when every other op is a flatten, else None."""
    ops = [o for o in layer.ops if not isinstance(o, Flatten)]
    if len(ops) == 1 and isinstance(ops[0], (Dense, Conv)):
        return ops[0]
    return None


@dataclass(frozen=True, eq=False)
class Prepared:
    """Data the engine derives once per (network, dtype) and reuses across calls; filled lazily.

    It refers to its network weakly (the cache of :func:`prepare` is keyed on the network, which
    must stay collectable).
    """

    _net: weakref.ReferenceType[Network]
    dtype: torch.dtype
    cols: dict[int, Tensor] = field(default_factory=dict)
    syn: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    impulses: dict[int, tuple[Tensor, Tensor | None]] = field(default_factory=dict)
    buffers: dict[tuple[int, int], Tensor] = field(default_factory=dict)

    @property
    def net(self) -> Network:
        net = self._net()
        if net is None:  # pragma: no cover - the caller holds the network while it uses this
            raise InvalidArgumentError("The network of this prepared state no longer exists.")
        return net

    def dense_cols(self, l: int) -> Tensor | None:
        """:math:`A^{(l)T}` ``(N_{l-1}, N_l)`` for a dense layer, else None."""
        if l in self.cols:
            return self.cols[l]
        op = _weighted_op(self.net.layers[l - 1])
        if not isinstance(op, Dense):
            return None
        self.cols[l] = op.weight.T.to(self.dtype).contiguous()
        return self.cols[l]

    def synapses(self, l: int) -> tuple[Tensor, Tensor, Tensor]:
        """(rows j, cols i, weights w) of the synapses into layer l, in the order sites index them."""
        if l not in self.syn:
            layer = self.net.layers[l - 1]
            op = _weighted_op(layer)
            if isinstance(op, Dense):
                n_out, n_in = op.weight.shape
                p = torch.arange(n_out * n_in)
                self.syn[l] = (p // n_in, p % n_in, op.weight.reshape(-1).to(self.dtype))
            else:
                m = layer.effective_matrix()
                j, i = torch.nonzero(m, as_tuple=True)
                self.syn[l] = (j, i, m[j, i].to(self.dtype))
        return self.syn[l]

    def neuron_scale(self, l: int) -> float:
        """The int8 step of hidden layer l's outputs, :math:`Y_l / 127` (:math:`Y_l` the largest
        value over the domain; 1/127 when it is 0)."""
        y = self.net.value_bound_domain(l)
        return (y if y > 0 else 1.0) / 127.0


_PREPARED: weakref.WeakKeyDictionary[Network, dict[torch.dtype, Prepared]] = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def prepare(net: Network, dtype: torch.dtype) -> Prepared:
    """The :class:`Prepared` data of ``net`` in ``dtype``: made once, then reused while ``net``
    lives (cached by the network's identity, outside it)."""
    with _PREPARED_LOCK:
        per = _PREPARED.get(net)
        if per is None:
            per = _PREPARED[net] = {}
        got = per.get(dtype)
        if got is None:
            got = per[dtype] = Prepared(weakref.ref(net), dtype)
        return got


# ----------------------------------------------------------------------------------- states
@dataclass(frozen=True, eq=False)
class _Sparse:
    """:math:`y' = y + \\mathrm{scatter}(idx, dval)`: idx ``(T, k)`` (never -1), dval ``(T, B, k)``
    (exactly 0 on padding)."""

    idx: Tensor
    dval: Tensor


_State = Tensor | _Sparse | None  # None: clean; Tensor: full (T, B, N)


def _densify(state: _State, y: Tensor, t: int) -> Tensor:
    base = y.unsqueeze(0).expand(t, -1, -1)
    if state is None:
        return base.contiguous()
    if isinstance(state, _Sparse):
        tt, b, k = state.dval.shape
        return base.contiguous().scatter_add(2, state.idx[:, None, :].expand(tt, b, k), state.dval)
    return state


def _gather(state: _State, y: Tensor, idx: Tensor, t: int) -> Tensor:
    """Current values at ``idx`` ``(T, k)`` -> ``(T, B, k)``."""
    b = y.shape[0]
    k = idx.shape[1]
    base = y.unsqueeze(0).expand(t, -1, -1).gather(2, idx[:, None, :].expand(t, b, k))
    if state is None:
        return base
    if isinstance(state, _Sparse):
        match = (idx[:, :, None] == state.idx[:, None, :]).to(state.dval.dtype)  # (T, k, k_old)
        return base + torch.einsum("tbo,tko->tbk", state.dval, match)
    return state.gather(2, idx[:, None, :].expand(t, b, k))


def _layer_flops(layer: Layer) -> int:
    return layer.width * max(1, layer.fan_in)


def _sparse_ok(prep: Prepared, l: int, t: int, b: int, k: int, u: int) -> bool:
    """Is the low-rank update cheaper than recomputing layer l?"""
    layer = prep.net.layers[l - 1]
    full = t * b * _layer_flops(layer)
    cols = 0 if prep.dense_cols(l) is not None else u * _layer_flops(layer)
    sparse = t * b * k * layer.width + cols
    mem = t * k * layer.width + (0 if prep.dense_cols(l) is not None else u * (layer.width + layer.in_width))
    return sparse < full and mem <= MAX_ELEMENTS


def _columns(prep: Prepared, l: int, idx: Tensor) -> Tensor:
    """:math:`A^{(l)}_{:,idx}` as ``(T, k, N_l)``."""
    wt = prep.dense_cols(l)
    if wt is not None:
        return wt[idx]
    layer = prep.net.layers[l - 1]
    uniq, inv = torch.unique(idx, return_inverse=True)
    keys, cached = prep.impulses.get(l, (torch.empty(0, dtype=torch.long), None))
    out = torch.empty((uniq.numel(), layer.width), dtype=prep.dtype)
    found = torch.zeros(uniq.numel(), dtype=torch.bool)
    if cached is not None and keys.numel():
        pos = torch.searchsorted(keys, uniq).clamp(max=keys.numel() - 1)
        found = keys[pos] == uniq
        out[found] = cached[pos[found]]
    missing = uniq[~found]
    if missing.numel():
        new = []
        for start in range(0, missing.numel(), 512):
            part = missing[start : start + 512]
            eye = torch.zeros((part.numel(), layer.in_width), dtype=prep.dtype)
            eye[torch.arange(part.numel()), part] = 1.0
            with torch.no_grad():
                new.append(layer.linear(eye.reshape(-1, *layer.in_shape)).reshape(part.numel(), -1))
        cols = torch.cat(new, 0)
        out[~found] = cols
        # remember impulse responses (they do not depend on the inputs), within a memory cap
        if (keys.numel() + missing.numel()) * layer.width <= MAX_ELEMENTS:
            all_keys = torch.cat([keys, missing])
            all_cols = cols if cached is None else torch.cat([cached, cols])
            order = torch.argsort(all_keys)
            prep.impulses[l] = (all_keys[order], all_cols[order])
    return out[inv]


def _workspace(prep: Prepared, l: int, shape: tuple[int, ...]) -> Tensor | None:
    """A reusable buffer for hidden layer l (no autograd only): fresh multi-megabyte tensors cost
    page faults on every call, which dominate a cheap low-rank update."""
    if torch.is_grad_enabled():
        return None
    key = (threading.get_ident(), l)
    n = math.prod(shape)
    buf = prep.buffers.get(key)
    if buf is None or buf.numel() < n:
        buf = torch.empty(n, dtype=prep.dtype)
        prep.buffers[key] = buf
    return buf[:n].view(shape)


def _low_rank(s: Tensor, dval: Tensor, cols: Tensor, out: Tensor | None = None) -> Tensor:
    """:math:`s + \\Delta y\\, A_{:,S}^T` in one fused kernel: ``s`` (B, N), ``dval`` (T, B, k),
    ``cols`` (T, k, N) -> (T, B, N), written into ``out`` when given."""
    t, b, k = dval.shape
    if k == 1:
        if out is None:
            return torch.addcmul(s.unsqueeze(0), dval, cols)
        return torch.addcmul(s.unsqueeze(0), dval, cols, out=out)
    if out is None:
        return torch.baddbmm(s.unsqueeze(0).expand(t, -1, -1), dval, cols)
    return torch.baddbmm(s.unsqueeze(0).expand(t, -1, -1), dval, cols, out=out)


def _sparsify(prep: Prepared, l_next: int, y_new: Tensor, y: Tensor) -> _State:
    """Re-express a full state as a sparse one when only a few units changed and it pays."""
    t, b, _ = y_new.shape
    dy = y_new - y.unsqueeze(0)
    nz = (dy != 0).any(1)
    counts = nz.sum(1)
    k = int(counts.max()) if t else 0
    if k == 0:
        return None
    idx = torch.topk(nz.to(torch.float32), k, dim=1, sorted=True).indices
    u = int(torch.unique(idx).numel()) if prep.dense_cols(l_next) is None else 0
    if not _sparse_ok(prep, l_next, t, b, k, u):
        return y_new
    return _Sparse(idx, dy.gather(2, idx[:, None, :].expand(t, b, k)))


def _support(cols: Tensor) -> tuple[Tensor, Tensor] | None:
    """Units reached by the columns ``(T, k, N)``: indices ``(T, k2)`` and validity, or None when
    more than half of the layer is reached (then a dense update is as cheap)."""
    t, _, n = cols.shape
    nz = (cols != 0).any(1)
    counts = nz.sum(1)
    k2 = int(counts.max()) if t else 0
    if k2 == 0 or 2 * k2 > n:
        return None
    idx = torch.topk(nz.to(torch.float32), k2, dim=1, sorted=True).indices
    return idx, torch.arange(k2)[None, :] < counts[:, None]



def _owns(state: Tensor, y: Tensor) -> bool:
    """Is ``state`` a tensor of its own (not a view of the clean pass ``y``), safe to write in place?"""
    return state.is_contiguous() and state.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()


def _errors(out: Tensor, clean: Tensor) -> Tensor:
    """:math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty` ``(T, B)``, NaN counted as inf."""
    e = (out - clean.unsqueeze(0)).abs().amax(-1)
    return torch.nan_to_num(e, nan=math.inf)
