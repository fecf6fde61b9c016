"""Batched faulty forward pass: T fault configurations x B inputs in one pass over the Network.

The engine never hooks into a user's module: it runs the :class:`~faultbound.network.Network`'s own
layers, so the function it perturbs is exactly the one the bounds reason about.

Notation: :math:`y^{(l)}` (flattened, ``(B, N_l)``) and :math:`s^{(l)}` are the clean outputs and
pre-activations of layer l; a primed quantity is faulty and carries a configuration axis,
``(T, B, N_l)``. The output error of configuration t on input b is

.. math::

    e_{t,b} = \\| F_t'(x_b) - F(x_b) \\|_\\infty .

**Clean prefix.** The clean pass is computed once per input batch; configuration states start as
"clean" and only become tensors at the first faulty layer.

**Low-rank update.** When layer l-1 differs from the clean pass on a few units :math:`S_t` only
(``Sparse`` state, the typical single-neuron fault), the next pre-activation is updated instead of
recomputed:

.. math::

    s'^{(l)}_{t,b} = s^{(l)}_b + A^{(l)}_{:,S_t}\\,(y'^{(l-1)}_{t,b,S_t} - y^{(l-1)}_{b,S_t}),

with :math:`A_{:,S}` the columns of the layer's linear map (gathered from the weight of a dense
layer, or computed once per batch as the layer's response to unit impulses for a convolution).
After the activation, units whose value did not change are dropped again (a convolution's change
stays inside a receptive field), so sparsity is kept as long as it pays, by a flop count.

**Fault models** (what the failing unit sends): crash -> 0; stuck-at -> v; Byzantine(C) -> a value
in [-C, C]; Byzantine deviation -> y + u (y fault-free), :math:`|u| \\le C`; synapse crash -> 0 instead of
:math:`w_{ji} y_i`; synapse Byzantine -> a value in [-C, C] instead of :math:`w_{ji} y_i`;
precision -> every output of layer l off by :math:`u`, :math:`|u| \\le \\lambda_l`; :class:`BitFlip`
-> one bit of a neuron's output or of a weight flipped, in float32 or int8 fixed point.

Values of Byzantine and precision faults are ``"fixed"`` (given per configuration, default +C /
+lambda), ``"random"`` (uniform, per configuration for Byzantine units, per configuration x input x
neuron for precision) or ``"adversarial"``: :math:`\\pm C` by the sign of the downstream gradient of
the largest output deviation, refined for a few sign-ascent steps; the best step is kept per
(configuration, input).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError, UnsupportedModelError
from faultbound.faults import (
    BitFlip,
    Byzantine,
    ByzantineDeviation,
    Fault,
    NeuronFault,
    Precision,
    SynapseByzantine,
    SynapseCrash,
    SynapseFault,
)
from faultbound.network.activations import Activation
from faultbound.network.core import Layer, Network
from faultbound.network.ops import Conv, Dense, Flatten

__all__ = [
    "BitFlip",
    "FaultSet",
    "Injection",
    "CleanPass",
    "ValueMode",
    "clean_pass",
    "differentiable_outputs",
    "initial_values",
    "inject",
    "faulty_forward",
    "sample_faults",
    "n_units",
    "layer_count",
    "MAX_ELEMENTS",
]

ValueMode = Literal["fixed", "random", "adversarial"]

#: Largest (T x B x N) state the engine holds at once; configurations are chunked to stay below.
MAX_ELEMENTS = 1 << 24



# ----------------------------------------------------------------------------------- fault sets
@dataclass(frozen=True, eq=False)
class FaultSet:
    """T fault configurations, as data.

    ``sites[i]`` is a ``(T, k)`` long tensor of failing units of layer ``i + 1`` (flattened neuron
    index; for synapses the index of the synapse among the layer's synapses, row-major in the
    effective matrix; for weight bit flips the flat index into the weight tensor), padded with -1
    after the valid entries; ``None`` when nothing fails there. ``bits`` holds the flipped bit of
    each site (bit flips only); ``values`` fixed Byzantine values ``(T, k)`` (optional).
    Precision faults have no sites (every neuron is off).
    """

    n_configs: int
    sites: tuple[Tensor | None, ...]
    bits: tuple[Tensor | None, ...] = ()
    values: tuple[Tensor | None, ...] = ()

    def select(self, index: Tensor | slice) -> FaultSet:
        """The configurations ``index`` (a slice or a long tensor)."""

        def pick(ts: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
            return tuple(None if t is None else t[index] for t in ts)

        n = len(range(self.n_configs)[index]) if isinstance(index, slice) else int(index.numel())
        return FaultSet(n, pick(self.sites), pick(self.bits), pick(self.values))

    def compact(self) -> FaultSet:
        """Drop trailing all-padding columns (and layers where nothing fails)."""

        def keep(s: Tensor | None) -> int:
            if s is None or s.shape[1] == 0:
                return 0
            anyv = (s >= 0).any(0).nonzero()
            return int(anyv.max()) + 1 if anyv.numel() else 0

        ks = [keep(s) for s in self.sites]

        def cut(ts: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
            return tuple(None if t is None or ks[i] == 0 else t[:, : ks[i]] for i, t in enumerate(ts))

        return FaultSet(self.n_configs, cut(self.sites), cut(self.bits), cut(self.values))

    def config(self, t: int) -> dict[str, Any]:
        """Configuration ``t`` as JSON-ready lists (layer numbers start at 1)."""
        out: dict[str, Any] = {"sites": {}, "bits": {}, "values": {}}
        for name, ts in (("sites", self.sites), ("bits", self.bits), ("values", self.values)):
            for i, ti in enumerate(ts):
                if ti is None:
                    continue
                s = self.sites[i]
                valid = s[t] >= 0 if s is not None else torch.ones(ti.shape[1], dtype=torch.bool)
                vals = ti[t][valid].tolist()
                if vals:
                    out[name][str(i + 1)] = vals
        return out

    @staticmethod
    def from_lists(n_layers: int, sites: dict[int, list[int]], bits: dict[int, list[int]] | None = None) -> FaultSet:
        """One configuration from ``{layer: [unit, ...]}`` (layers numbered from 1)."""
        st: list[Tensor | None] = [None] * n_layers
        bt: list[Tensor | None] = [None] * n_layers
        for l, units in sites.items():
            if not 1 <= l <= n_layers:
                raise InvalidArgumentError(f"Expected layers in 1..{n_layers}, but got {l}.")
            if units:
                st[l - 1] = torch.tensor([units], dtype=torch.long)
                if bits is not None:
                    bt[l - 1] = torch.tensor([bits[l]], dtype=torch.long)
        return FaultSet(1, tuple(st), tuple(bt) if bits is not None else ())


def layer_count(net: Network, fault: Fault) -> int:
    """How many layers carry failure counts: L for neuron faults, L+1 for synapse/weight faults."""
    if isinstance(fault, SynapseFault) or (isinstance(fault, BitFlip) and fault.target == "weight"):
        return net.L + 1
    return net.L


def _weighted_op(layer: Layer) -> Dense | Conv | None:
    """The layer's one dense/conv op when every other op is a flatten, else None."""
    ops = [o for o in layer.ops if not isinstance(o, Flatten)]
    if len(ops) == 1 and isinstance(ops[0], (Dense, Conv)):
        return ops[0]
    return None


def _single_weighted(layer: Layer) -> int | None:
    """Index in ``layer.ops`` of its only dense/conv op (other ops: flatten, pooling, affine), else None."""
    idx = [i for i, o in enumerate(layer.ops) if isinstance(o, (Dense, Conv))]
    return idx[0] if len(idx) == 1 else None


def n_units(net: Network, fault: Fault, l: int) -> int:
    """Number of units of layer ``l`` (1-based) that ``fault`` can hit."""
    layer = net.layers[l - 1]
    if isinstance(fault, SynapseFault):
        return layer.n_synapses
    if isinstance(fault, BitFlip) and fault.target == "weight":
        wi = _single_weighted(layer)
        if wi is None:
            raise UnsupportedModelError(
                f"Weight bit flips need layer {l} ({layer.source}) to hold exactly one dense or conv op, but it is "
                f"{layer.describe()}."
            )
        return int(layer.ops[wi].weight.numel())  # type: ignore[attr-defined]
    return layer.width


def _choose(n: int, k: int, t: int, g: torch.Generator) -> Tensor:
    """``t`` rows of ``k`` distinct draws from ``range(n)``."""
    if k == 0:
        return torch.empty((t, 0), dtype=torch.long)
    if t * n <= (1 << 23):
        return torch.rand((t, n), generator=g).topk(k, dim=1).indices
    return torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(t)])


def sample_faults(
    net: Network,
    fault: Fault,
    n_configs: int,
    failures: list[int] | tuple[int, ...] | None = None,
    rate: float | None = None,
    generator: torch.Generator | None = None,
) -> FaultSet:
    """Draw ``n_configs`` configurations: exactly ``failures[l]`` distinct units per layer (the
    paper's :math:`f_l`), or each unit independently with probability ``rate`` (Bernoulli).

    Byzantine values are drawn later by :func:`inject` (they depend on the value mode).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n_layers = layer_count(net, fault)
    if isinstance(fault, Precision):
        return FaultSet(n_configs, (None,) * n_layers)
    if (failures is None) == (rate is None):
        raise InvalidArgumentError("Expected exactly one of `failures` (counts per layer) or `rate`.")
    if n_configs < 0:
        raise InvalidArgumentError(f"Expected a number of configurations >= 0, but got {n_configs}.")
    if failures is not None:
        if len(failures) != n_layers:
            raise InvalidArgumentError(
                f"Expected `failures` to have one count per layer ({n_layers}), but got {len(failures)}."
            )
        for l, f in enumerate(failures, start=1):
            if f < 0 or f > n_units(net, fault, l):
                raise InvalidArgumentError(f"Expected 0 <= f_{l} <= {n_units(net, fault, l)}, but got {f}.")
    elif rate is not None and not (0.0 <= rate <= 1.0):
        raise InvalidArgumentError(f"Expected `rate` in [0, 1], but got {rate}.")
    sites: list[Tensor | None] = []
    bits: list[Tensor | None] = []
    for l in range(1, n_layers + 1):
        n = n_units(net, fault, l)
        if failures is not None:
            s = _choose(n, int(failures[l - 1]), n_configs, g) if failures[l - 1] else None
        else:
            assert rate is not None
            mask = torch.rand((n_configs, n), generator=g) < rate
            counts = mask.sum(1)
            k = int(counts.max()) if n_configs else 0
            if k == 0:
                s = None
            else:
                order = torch.sort(mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
                s = torch.where(torch.arange(k)[None, :] < counts[:, None], order, -1)
        sites.append(s)
        if isinstance(fault, BitFlip):
            if s is None:
                bits.append(None)
            else:
                choices = torch.tensor(fault.bits if fault.bits is not None else range(fault.n_bits))
                bits.append(choices[torch.randint(len(choices), s.shape, generator=g)])
    return FaultSet(n_configs, tuple(sites), tuple(bits) if isinstance(fault, BitFlip) else ())


# ----------------------------------------------------------------------------------- clean pass
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


def clean_pass(net: Network, x: Tensor, dtype: torch.dtype = torch.float32, grad: bool = False) -> CleanPass:
    """Run the clean network once on ``x`` (``(B, *input_shape)`` or ``(B, d)``), in ``dtype``
    (``grad=True`` keeps the graph, for gradients with respect to ``x``)."""
    x = torch.as_tensor(x)
    b = x.shape[0]
    if tuple(x.shape[1:]) != tuple(net.input_shape):
        if x[0].numel() != math.prod(net.input_shape):
            raise InvalidArgumentError(
                f"Expected inputs of shape (B, {', '.join(map(str, net.input_shape))}), but got {tuple(x.shape)}."
            )
        x = x.reshape(b, *net.input_shape)
    y = x.to(dtype)
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
@dataclass(eq=False)
class _Prep:
    net: Network
    dtype: torch.dtype
    cols: dict[int, Tensor] = field(default_factory=dict)
    syn: dict[int, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    impulses: dict[int, tuple[Tensor, Tensor | None]] = field(default_factory=dict)
    buffers: dict[tuple[int, int], Tensor] = field(default_factory=dict)

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


def _prep(net: Network, dtype: torch.dtype) -> _Prep:
    key = f"measure.prep.{dtype}"
    got = net._cache.get(key)
    if isinstance(got, _Prep):
        return got
    p = _Prep(net, dtype)
    net._cache[key] = p
    return p


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


def _sparse_ok(prep: _Prep, l: int, t: int, b: int, k: int, u: int) -> bool:
    """Is the low-rank update cheaper than recomputing layer l?"""
    layer = prep.net.layers[l - 1]
    full = t * b * _layer_flops(layer)
    cols = 0 if prep.dense_cols(l) is not None else u * _layer_flops(layer)
    sparse = t * b * k * layer.width + cols
    mem = t * k * layer.width + (0 if prep.dense_cols(l) is not None else u * (layer.width + layer.in_width))
    return sparse < full and mem <= MAX_ELEMENTS


def _columns(prep: _Prep, l: int, idx: Tensor) -> Tensor:
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


def _workspace(prep: _Prep, l: int, shape: tuple[int, ...]) -> Tensor | None:
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


def _activate_(act: Activation, s: Tensor, in_place: bool) -> Tensor:
    """The activation, in place on a workspace buffer where it has an in-place form (its ``apply_``)."""
    return act.apply_(s) if in_place else act(s)


def _sparsify(prep: _Prep, l_next: int, y_new: Tensor, y: Tensor) -> _State:
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


def _neuron_scale(net: Network, l: int) -> float:
    y = net.value_bound_domain(l)
    return (y if y > 0 else 1.0) / 127.0


# ----------------------------------------------------------------------------------- forward
def _first_layer(fault: Fault, fs: FaultSet, n_hidden: int) -> int:
    if isinstance(fault, Precision):
        nz = [l for l, e in enumerate(fault.errors, start=1) if e > 0]
        return nz[0] if nz else n_hidden + 2
    for i, s in enumerate(fs.sites):
        if s is not None and bool((s >= 0).any()):
            return i + 1
    return n_hidden + 2


def _first_per_config(fault: Fault, fs: FaultSet, n_hidden: int) -> Tensor:
    """First faulty layer of each configuration (``L + 2`` when none), ``(T,)``."""
    if isinstance(fault, Precision):
        return torch.full((fs.n_configs,), _first_layer(fault, fs, n_hidden), dtype=torch.long)
    out = torch.full((fs.n_configs,), n_hidden + 2, dtype=torch.long)
    for i in range(len(fs.sites) - 1, -1, -1):
        s = fs.sites[i]
        if s is not None and s.shape[1]:
            out = torch.where((s >= 0).any(1), i + 1, out)
    return out


def _place_values(
    fs: FaultSet, used: list[list[Tensor | None]], members: list[Tensor], t_all: int
) -> tuple[Tensor | None, ...]:
    """Values of every chunk back in configuration order (sites padded back to the full k)."""
    n = len(used[0]) if used else 0
    out: list[Tensor | None] = []
    for i in range(n):
        parts = [u[i] for u in used]
        shapes = [p for p in parts if p is not None]
        if not shapes:
            out.append(None)
            continue
        k_full = fs.sites[i].shape[1] if i < len(fs.sites) and fs.sites[i] is not None else shapes[0].shape[2]
        mid = max(p.shape[1] for p in shapes)
        full = torch.zeros((t_all, mid, k_full), dtype=shapes[0].dtype)
        for u, rows in zip(used, members, strict=True):
            p = u[i]
            if p is not None:
                full[rows, :, : p.shape[2]] = p
        out.append(full)
    return tuple(out)


def _neuron_new(
    fault: Fault, cur: Tensor, nominal: Tensor, vals: Tensor | None, bits: Tensor | None, net: Network, l: int
) -> Tensor:
    """What the failing units send, given their current (upstream-perturbed) value ``cur`` and their
    fault-free value ``nominal``: the fault model's own statement (:meth:`NeuronFault.sends`); a bit
    flip acts on the current value."""
    if isinstance(fault, NeuronFault):
        return fault.sends(cur, nominal, vals)
    if isinstance(fault, BitFlip):
        assert bits is not None
        bb = bits[:, None, :].expand_as(cur)
        return fault.flipped(cur, bb, _neuron_scale(net, l) if fault.format == "int8" else 1.0)
    raise InvalidArgumentError(f"Fault {fault.name!r} is not a neuron fault.")  # pragma: no cover


def _apply_neurons(
    prep: _Prep, fault: Fault, state: _State, y: Tensor, sites: Tensor, vals: Tensor | None, bits: Tensor | None, l: int
) -> _State:
    t = sites.shape[0]
    valid = sites >= 0
    if not bool(valid.any()):
        return state
    pidx = torch.where(valid, sites, sites[:, :1].clamp(min=0))
    cur = _gather(state, y, pidx, t)
    base = y.unsqueeze(0).expand(t, -1, -1).gather(2, pidx[:, None, :].expand_as(cur))
    new = _neuron_new(fault, cur, base, vals, bits, prep.net, l)
    vb = valid[:, None, :]
    if state is None:
        return _Sparse(pidx, torch.where(vb, new - base, torch.zeros_like(new)))
    if isinstance(state, _Sparse):
        # merge: earlier changes at the failing units are replaced by the new values
        hit = ((state.idx[:, :, None] == pidx[:, None, :]) & valid[:, None, :]).any(2)  # (T, k_old)
        old = torch.where(hit[:, None, :], torch.zeros_like(state.dval), state.dval)
        add = torch.where(vb, new - base, torch.zeros_like(new))
        return _Sparse(torch.cat([state.idx, pidx], 1), torch.cat([old, add], 2))
    full = _densify(state, y, t)
    fill = torch.where(valid[:, None, :1], new[..., :1], cur[..., :1])
    new = torch.where(vb, new, fill)
    index = pidx[:, None, :].expand_as(new)
    if state is full and not torch.is_grad_enabled() and _owns(full, y):
        return full.scatter_(2, index, new)  # the state is this chunk's own tensor: no copy
    return full.scatter(2, index, new)


def _owns(state: Tensor, y: Tensor) -> bool:
    """Is ``state`` a tensor of its own (not a view of the clean pass ``y``), safe to write in place?"""
    return state.is_contiguous() and state.untyped_storage().data_ptr() != y.untyped_storage().data_ptr()


def _apply_synapses(
    prep: _Prep,
    fault: Fault,
    state: _State,
    y_prev: Tensor,
    s: Tensor | None,
    s_clean: Tensor,
    sites: Tensor,
    vals: Tensor | None,
    l: int,
) -> Tensor | None:
    t = sites.shape[0]
    valid = sites >= 0
    if not bool(valid.any()):
        return s
    rows, cols, w = prep.synapses(l)
    p = sites.clamp(min=0)
    j, i, wji = rows[p], cols[p], w[p]  # (T, k)
    cur = _gather(state, y_prev, i, t)  # (T, B, k)
    old = wji[:, None, :] * cur
    if isinstance(fault, SynapseCrash):
        delta = -old
    elif isinstance(fault, SynapseByzantine):
        assert vals is not None
        delta = vals - old
    else:  # pragma: no cover - validated by inject
        raise InvalidArgumentError(f"Fault {fault.name!r} is not a synapse fault.")
    delta = torch.where(valid[:, None, :], delta, torch.zeros_like(delta))
    base = s if s is not None else s_clean.unsqueeze(0).expand(t, -1, -1).contiguous()
    return base.scatter_add(2, j[:, None, :].expand_as(delta), delta)


def _apply_weight_flips(
    prep: _Prep, fault: BitFlip, state: _State, y_prev: Tensor, s: Tensor | None, s_clean: Tensor,
    sites: Tensor, bits: Tensor, l: int,
) -> Tensor | None:
    t = sites.shape[0]
    valid = sites >= 0
    if not bool(valid.any()):
        return s
    layer = prep.net.layers[l - 1]
    wi = _single_weighted(layer)
    assert wi is not None
    op = layer.ops[wi]
    assert isinstance(op, (Dense, Conv))
    wflat = op.weight.reshape(-1)
    p = sites.clamp(min=0)
    w = wflat[p]
    if fault.format == "float32":
        dw = fault.change(w.to(torch.float64), bits, 1.0)
    else:
        dw = fault.change(w, bits, (float(op.weight.abs().max()) or 1.0) / 127.0)
    dw = torch.where(valid, dw, torch.zeros_like(dw)).to(prep.dtype)
    base = s if s is not None else s_clean.unsqueeze(0).expand(t, -1, -1).contiguous()
    b = y_prev.shape[0]
    if isinstance(op, Dense) and _weighted_op(layer) is op:
        # only flattens around the dense op: the flipped weight w_ji sees y'_i directly
        n_in = op.weight.shape[1]
        j, i = p // n_in, p % n_in
        cur = _gather(state, y_prev, i, t)
        return base.scatter_add(2, j[:, None, :].expand_as(cur), dw[:, None, :] * cur)
    # general chain ops[:wi] -> op -> ops[wi+1:]: the weighted op's input z is recomputed, its change
    # dW z goes through the linear parts of the ops after it
    z = _densify(state, y_prev, t).reshape(t * b, *layer.in_shape)
    for o in layer.ops[:wi]:
        z = o.forward(z)
    if isinstance(op, Dense):
        n_out, n_in = op.weight.shape
        zf = z.reshape(t, b, n_in)
        j, i = p // n_in, p % n_in
        cur = zf.gather(2, i[:, None, :].expand(t, b, i.shape[1]))
        ds = torch.zeros((t, b, n_out), dtype=prep.dtype)
        ds = ds.scatter_add(2, j[:, None, :].expand_as(cur), dw[:, None, :] * cur)
        ds = ds.reshape(t * b, n_out)
    else:
        # convolution: the weight is shared by every output position; convolve with the sparse kernel change
        co, ci, kh, kw = op.weight.shape
        dk = torch.zeros((t, co * ci * kh * kw), dtype=prep.dtype).scatter_add(1, p, dw).reshape(t * co, ci, kh, kw)
        zin = z.reshape(t, b, *z.shape[1:]).permute(1, 0, 2, 3, 4).reshape(b, t * ci, *z.shape[2:])
        ds = torch.nn.functional.conv2d(zin, dk, None, op.stride, op.padding, groups=t)
        ds = ds.reshape(b, t, co, *ds.shape[2:]).permute(1, 0, 2, 3, 4).reshape(t * b, co, *ds.shape[2:])
    for o in layer.ops[wi + 1 :]:
        ds = o.linear(ds)
    return base + ds.reshape(t, b, -1)


def _propagate(
    prep: _Prep, clean: CleanPass, fault: Fault, fs: FaultSet, vals: list[Tensor | None], first: int
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)`` for one chunk of configurations."""
    net = prep.net
    t, b = fs.n_configs, clean.batch
    n_hidden = net.L
    state: _State = None
    synapse = isinstance(fault, SynapseFault)
    weight_flip = isinstance(fault, BitFlip) and fault.target == "weight"
    for l in range(max(1, first), n_hidden + 2):
        layer = net.layers[l - 1]
        y_prev = clean.ys[l - 1]
        s: Tensor | None
        from_full = False
        in_place = False
        if state is None:
            s = None
        elif isinstance(state, _Sparse):
            k = state.idx.shape[1]
            u = 0 if prep.dense_cols(l) is not None else int(torch.unique(state.idx).numel())
            if _sparse_ok(prep, l, t, b, k, u):
                cols = _columns(prep, l, state.idx)
                local = l <= n_hidden and not ((synapse or weight_flip) and fs.sites[l - 1] is not None)
                sub = _support(cols) if local else None
                if sub is not None:
                    # the change stays inside the receptive fields: recompute only those units
                    idx2, valid2 = sub
                    k2 = idx2.shape[1]
                    ds = torch.bmm(state.dval, cols.gather(2, idx2[:, None, :].expand(t, k, k2)))
                    at = idx2[:, None, :].expand(t, b, k2)
                    s_sub = clean.ss[l].unsqueeze(0).expand(t, -1, -1).gather(2, at) + ds
                    y_old = clean.ys[l].unsqueeze(0).expand(t, -1, -1).gather(2, at)
                    assert layer.activation is not None
                    dy = layer.activation(s_sub) - y_old
                    state = _Sparse(idx2, torch.where(valid2[:, None, :], dy, torch.zeros_like(dy)))
                    state = _apply_layer_faults(prep, fault, fs, vals, state, clean.ys[l], l, t, weight_flip)
                    continue
                buf = _workspace(prep, l, (t, b, layer.width)) if l <= n_hidden else None
                s = _low_rank(clean.ss[l], state.dval, cols, buf)
                in_place = buf is not None
                from_full = sub is None and local  # most of the layer changed: no point re-sparsifying
            else:
                full = _densify(state, y_prev, t)
                s = layer.pre(full.reshape(t * b, *layer.in_shape)).reshape(t, b, -1)
                from_full = True
        else:
            s = layer.pre(state.reshape(t * b, *layer.in_shape)).reshape(t, b, -1)
            from_full = True
        if (synapse or weight_flip) and l - 1 < len(fs.sites) and fs.sites[l - 1] is not None:
            sites = fs.sites[l - 1]
            assert sites is not None
            if weight_flip:
                bits = fs.bits[l - 1]
                assert bits is not None and isinstance(fault, BitFlip)
                s = _apply_weight_flips(prep, fault, state, y_prev, s, clean.ss[l], sites, bits, l)
            else:
                s = _apply_synapses(prep, fault, state, y_prev, s, clean.ss[l], sites, vals[l - 1], l)
        if l == n_hidden + 1:
            if s is None:
                return clean.ss[l].unsqueeze(0).expand(t, -1, -1)
            return s
        assert layer.activation is not None
        if s is None:
            state = None
        else:
            y_new = _activate_(layer.activation, s, in_place)
            state = y_new if from_full else _sparsify(prep, l + 1, y_new, clean.ys[l])
        state = _apply_layer_faults(prep, fault, fs, vals, state, clean.ys[l], l, t, weight_flip)
    return clean.ss[-1].unsqueeze(0).expand(t, -1, -1)  # no layer was faulty


def _apply_layer_faults(
    prep: _Prep,
    fault: Fault,
    fs: FaultSet,
    vals: list[Tensor | None],
    state: _State,
    y: Tensor,
    l: int,
    t: int,
    weight_flip: bool,
) -> _State:
    """Neuron faults and precision offsets at the outputs of hidden layer l."""
    if isinstance(fault, Precision):
        v = vals[l - 1]
        if v is not None:
            state = _densify(state, y, t) + v
    elif isinstance(fault, (NeuronFault, BitFlip)) and not weight_flip and fs.sites[l - 1] is not None:
        sites = fs.sites[l - 1]
        assert sites is not None
        bits = fs.bits[l - 1] if fs.bits else None
        state = _apply_neurons(prep, fault, state, y, sites, vals[l - 1], bits, l)
    return state


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


# ----------------------------------------------------------------------------------- values
def _capacity(fault: Fault) -> float:
    c = float(getattr(fault, "capacity", 0.0))
    if not math.isfinite(c):
        raise InvalidArgumentError("Expected a finite capacity to measure Byzantine faults (Lemma 1: unbounded).")
    return c


def _has_values(fault: Fault) -> bool:
    return isinstance(fault, (Byzantine, ByzantineDeviation, SynapseByzantine, Precision))


def _init_values(
    net: Network, fault: Fault, fs: FaultSet, mode: ValueMode, b: int, g: torch.Generator, dtype: torch.dtype
) -> list[Tensor | None]:
    """Per layer: ``(T, 1, k)`` (Byzantine fixed/random), ``(T, B, k)`` (adversarial) or
    ``(T, B, N_l)`` (precision)."""
    t = fs.n_configs
    out: list[Tensor | None] = []
    if isinstance(fault, Precision):
        for l, lam in enumerate(fault.errors, start=1):
            if lam == 0:
                out.append(None)
                continue
            shape = (t, b, net.layers[l - 1].width)
            if mode == "random":
                out.append(((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * lam).to(dtype))
            elif mode == "fixed":
                out.append(torch.full(shape, lam, dtype=dtype))
            else:
                sign = torch.randint(0, 2, shape, generator=g).to(dtype) * 2 - 1
                out.append(sign * lam)
        return out
    if not _has_values(fault):
        return [None] * len(fs.sites)
    c = _capacity(fault)
    for i, s in enumerate(fs.sites):
        if s is None:
            out.append(None)
            continue
        k = s.shape[1]
        if mode == "fixed":
            given = fs.values[i] if i < len(fs.values) else None
            v = given.to(dtype).clamp(-c, c) if given is not None else torch.full((t, k), c, dtype=dtype)
            out.append(v[:, None, :])
        elif mode == "random":
            out.append(((torch.rand((t, 1, k), generator=g, dtype=torch.float64) * 2 - 1) * c).to(dtype))
        else:
            sign = torch.randint(0, 2, (t, b, k), generator=g).to(dtype) * 2 - 1
            out.append(sign * c)
    return out


def _magnitudes(fault: Fault, vals: list[Tensor | None]) -> list[float]:
    if isinstance(fault, Precision):
        return list(fault.errors)
    return [_capacity(fault)] * len(vals)


# ----------------------------------------------------------------------------------- public
@dataclass(frozen=True, eq=False)
class Injection:
    """Result of :func:`inject`.

    Attributes:
        outputs: faulty outputs ``(T, B, n_out)``.
        clean: clean outputs ``(B, n_out)``.
        errors: :math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty`, ``(T, B)`` (NaN counted as inf).
        values: the Byzantine / precision values used, per layer (``None`` where none), so that a
            run can be replayed with ``values="fixed"``.
    """

    outputs: Tensor
    clean: Tensor
    errors: Tensor
    values: tuple[Tensor | None, ...]


def _errors(out: Tensor, clean: Tensor) -> Tensor:
    e = (out - clean.unsqueeze(0)).abs().amax(-1)
    return torch.nan_to_num(e, nan=math.inf)


def _check(net: Network, fault: Fault, fs: FaultSet) -> None:
    if not isinstance(fault, (NeuronFault, SynapseFault, Precision, BitFlip)):
        raise InvalidArgumentError(f"Expected a fault model, but got {fault!r}.")
    if isinstance(fault, Precision):
        if len(fault.errors) != net.L:
            raise InvalidArgumentError(
                f"Expected precision errors for each hidden layer ({net.L}), but got {len(fault.errors)}."
            )
        return
    want = layer_count(net, fault)
    if len(fs.sites) != want:
        raise InvalidArgumentError(f"Expected a fault set with one entry per layer ({want}), but got {len(fs.sites)}.")
    if isinstance(fault, BitFlip) and len(fs.bits) != want:
        raise InvalidArgumentError("Expected the fault set of a bit flip to carry the flipped bits.")


def inject(
    net: Network,
    x: Tensor | CleanPass,
    fault: Fault,
    faults: FaultSet,
    *,
    values: ValueMode = "random",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    adversarial_steps: int = 2,
) -> Injection:
    """Evaluate every configuration of ``faults`` on every input of ``x``.

    Args:
        net: the network.
        x: inputs ``(B, *input_shape)``, or a :class:`CleanPass` already computed in ``dtype``.
        fault: the fault model (``Crash()``, ``Byzantine(C)``, ``SynapseCrash()``, ``Precision(lams)``,
            ``BitFlip(...)``, ...).
        faults: T configurations (:func:`sample_faults`, or built by hand).
        values: how Byzantine / precision values are chosen (see the module docstring).
        generator: seeds ``"random"`` values and the starting signs of ``"adversarial"``.
        dtype: ``torch.float32`` (default) or ``torch.float64``.
        adversarial_steps: sign-ascent steps after the first adversarial guess.

    Example:
        >>> import torch, faultbound as fb
        >>> from faultbound.measure import inject, sample_faults
        >>> torch.manual_seed(0) and None
        >>> net = fb.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(),
        ...                                                 torch.nn.Linear(4, 1)))
        >>> fs = sample_faults(net, fb.Crash(), 5, failures=[1])
        >>> inject(net, torch.rand(3, 2), fb.Crash(), fs).errors.shape
        torch.Size([5, 3])
    """
    _check(net, fault, faults)
    if values not in ("fixed", "random", "adversarial"):
        raise InvalidArgumentError(f"Expected `values` among fixed, random, adversarial, but got {values!r}.")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    clean = x if isinstance(x, CleanPass) else clean_pass(net, x, dtype)
    dtype = clean.ys[0].dtype
    prep = _prep(net, dtype)
    b = clean.batch
    t_all = faults.n_configs
    widest = max([layer.width for layer in net.layers] + [math.prod(net.input_shape)])
    per = max(1, MAX_ELEMENTS // max(1, b * widest))
    # group configurations by their first faulty layer: each group reuses its own clean prefix
    firsts = _first_per_config(fault, faults, net.L)
    order = torch.argsort(firsts, stable=True)
    chunks: list[tuple[Tensor, int]] = []
    for f in torch.unique(firsts).tolist():
        members = order[firsts[order] == f]
        chunks += [(members[i : i + per], int(f)) for i in range(0, members.numel(), per)]
    outs: list[Tensor] = []
    used: list[list[Tensor | None]] = []
    for members, first in chunks:
        fs = faults.select(members).compact()
        vals = _init_values(net, fault, fs, values, b, g, dtype)
        if values == "adversarial" and _has_values(fault) and any(v is not None for v in vals):
            out, vals = _adversarial(prep, clean, fault, fs, vals, first, adversarial_steps)
        else:
            with torch.no_grad():
                out = _propagate(prep, clean, fault, fs, vals, first)
        outs.append(out.detach())
        used.append([None if v is None else v.detach() for v in vals])
    n_out = clean.output.shape[1]
    placed = torch.cat([m for m, _ in chunks]) if chunks else torch.empty(0, dtype=torch.long)
    outputs = torch.empty((t_all, b, n_out), dtype=dtype)
    if outs:
        outputs[placed] = torch.cat(outs, 0)
    vals_cat = _place_values(faults, used, [m for m, _ in chunks], t_all)
    return Injection(outputs, clean.output, _errors(outputs, clean.output), vals_cat)


def _adversarial(
    prep: _Prep, clean: CleanPass, fault: Fault, fs: FaultSet, vals: list[Tensor | None], first: int, steps: int
) -> tuple[Tensor, list[Tensor | None]]:
    """Sign ascent on the values: :math:`v \\leftarrow m\\,\\mathrm{sign}(\\partial \\sigma (F'_o - F_o) / \\partial v)`
    with o the most deviated output and :math:`\\sigma` its sign; the best step per (t, b) is kept."""
    mags = _magnitudes(fault, vals)
    best_err: Tensor | None = None
    best_out: Tensor | None = None
    best_vals: list[Tensor | None] = list(vals)
    cur = [None if v is None else v.detach().clone() for v in vals]
    for step in range(steps + 1):
        leaves = [None if v is None else v.requires_grad_(True) for v in cur]
        with torch.enable_grad():
            out = _propagate(prep, clean, fault, fs, leaves, first)
            dev = out - clean.output.unsqueeze(0)
            err = _errors(out.detach(), clean.output)
            if best_err is None or best_out is None:
                best_err, best_out = err.clone(), out.detach().clone()
                best_vals = [None if v is None else v.detach().clone() for v in cur]
            else:
                better = err > best_err
                best_err = torch.where(better, err, best_err)
                best_out = torch.where(better[..., None], out.detach(), best_out)
                best_vals = [
                    None if bv is None or v is None else torch.where(better[..., None], v.detach(), bv)
                    for bv, v in zip(best_vals, cur, strict=True)
                ]
            if step == steps:
                break
            o = dev.detach().abs().argmax(-1, keepdim=True)
            sig = torch.sign(dev.detach().gather(-1, o))
            sig = torch.where(sig == 0, torch.ones_like(sig), sig)
            obj = (sig * dev.gather(-1, o)).sum()
            live = [v for v in leaves if v is not None]
            if not obj.requires_grad:
                break
            grads = torch.autograd.grad(obj, live, allow_unused=True)
        gi = iter(grads)
        nxt: list[Tensor | None] = []
        for v, m in zip(cur, mags, strict=True):
            if v is None:
                nxt.append(None)
                continue
            gr = next(gi)
            v = v.detach()
            nxt.append(v if gr is None else torch.where(gr != 0, torch.sign(gr) * m, v))
        cur = nxt
    assert best_out is not None
    return best_out, best_vals


def differentiable_outputs(
    net: Network, clean: CleanPass, fault: Fault, faults: FaultSet, values: list[Tensor | None]
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)`` with the autograd graph kept, so that gradients flow to the
    inputs (build ``clean`` with ``clean_pass(..., grad=True)``) and to ``values`` (Byzantine values
    ``(T, 1|B, k)`` or precision offsets ``(T, B, N_l)`` per layer). All T configurations are done in
    one piece (no chunking): keep T x B small."""
    _check(net, fault, faults)
    prep = _prep(net, clean.ys[0].dtype)
    with torch.enable_grad():
        return _propagate(prep, clean, fault, faults, values, _first_layer(fault, faults, net.L))


def initial_values(
    net: Network, fault: Fault, faults: FaultSet, mode: ValueMode, batch: int, generator: torch.Generator,
    dtype: torch.dtype,
) -> list[Tensor | None]:
    """Starting Byzantine / precision values for :func:`differentiable_outputs` (see :func:`inject`)."""
    return _init_values(net, fault, faults, mode, batch, generator, dtype)


def faulty_forward(
    net: Network,
    x: Tensor,
    fault: Fault,
    faults: FaultSet,
    *,
    values: ValueMode = "random",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)``: :func:`inject` without the bookkeeping."""
    return inject(net, x, fault, faults, values=values, generator=generator, dtype=dtype).outputs
