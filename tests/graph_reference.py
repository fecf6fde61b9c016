"""Small random graph networks and a brute-force faulty forward, for the graph soundness tests.

Every test graph is a list of :class:`RNode`: the graph operator handed to
:meth:`GraphNetwork.build` (what the bound reads) **and** a reference function written here with
plain torch calls (``F.linear``, ``F.conv2d``, ``F.max_pool2d``, ``F.layer_norm``, ...). The brute
force (:func:`brute_force`) evaluates only the reference functions and applies the documented fault
statements itself (``faultbound/faults.py``):

* a failing neuron sends :math:`g\\,y + v` with y its fault-free value: crash (g, v) = (0, 0),
  Byzantine(C) (0, v in [-C, C]), Byzantine deviation (1, u in [-C, C]), stuck-at (0, value);
* a failing synapse j <- i transmits v (crash 0, Byzantine v in [-C, C]) instead of
  :math:`w_{ji} \\tilde y_i`; a synapse is a non-zero entry of the weighted node's matrix (per
  output unit, per input unit: a dense op on tokens has one matrix per token);
* precision: every unit of site l sends its value plus u, :math:`|u| \\le \\lambda_l`.

It never imports the engine or the bound code.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from faultbound.network import gops
from faultbound.network.activations import activation_from_module
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten

Ref = Callable[..., Tensor]

ACTS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "hardtanh": nn.Hardtanh,
}


@dataclass
class RNode:
    """A node of a test graph: its operator, its inputs, the plain-torch reference, and whether it
    is a fault site / a weighted node (``weighted``: synapse faults strike it)."""

    name: str
    op: gops.GOp
    inputs: tuple[int, ...]
    ref: Ref
    site: bool = False
    weighted: bool = False


@dataclass
class RGraph:
    nodes: list[RNode]
    input_shape: tuple[int, ...]
    lo: Tensor  # domain, (*input_shape)
    hi: Tensor

    def build(self) -> GraphNetwork:
        named = [n.name for n in self.nodes if n.site and not isinstance(n.op, gops.Act)]
        net = GraphNetwork.build(
            [(n.name, n.op, n.inputs) for n in self.nodes], self.input_shape, (self.lo, self.hi), sites=named
        )
        assert len(net.nodes) == len(self.nodes), "the test graph must not be rewritten (folding, dead nodes)"
        return net

    @property
    def site_ids(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.site]

    @property
    def weighted_ids(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.weighted]


# ------------------------------------------------------------------------- graph builder
class Builder:
    """Appends nodes with random weights drawn from a seeded generator."""

    def __init__(self, seed: int, input_shape: tuple[int, ...], scale: float = 1.0) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.scale = scale
        self.nodes: list[RNode] = [RNode("x", gops.Input(), (), lambda: torch.zeros(0))]
        self.input_shape = input_shape

    def rand(self, *shape: int, scale: float | None = None) -> Tensor:
        s = self.scale if scale is None else scale
        return ((torch.rand(shape, generator=self.g, dtype=torch.float64) * 2 - 1) * s).to(torch.float64)

    def add(
        self, name: str, op: gops.GOp, inputs: Sequence[int], ref: Ref, site: bool = False, weighted: bool = False
    ) -> int:
        self.nodes.append(RNode(name, op, tuple(inputs), ref, site, weighted))
        return len(self.nodes) - 1

    def dense(self, x: int, n_in: int, n_out: int) -> int:
        w, b = self.rand(n_out, n_in), self.rand(n_out, scale=0.3)
        return self.add(f"fc{len(self.nodes)}", gops.Affine(Dense(w, b)), [x], lambda t: t @ w.T + b, weighted=True)

    def conv(self, x: int, ci: int, co: int, k: int, stride: int = 1, pad: int = 0) -> int:
        w, b = self.rand(co, ci, k, k), self.rand(co, scale=0.3)
        op = gops.Affine(Conv(w, b, (stride, stride), (pad, pad)))
        return self.add(
            f"conv{len(self.nodes)}", op, [x], lambda t: F.conv2d(t, w, b, stride=stride, padding=pad), weighted=True
        )

    def act(self, x: int, name: str) -> int:
        mod = ACTS[name]()
        a = activation_from_module(mod)
        assert a is not None
        return self.add(f"{name}{len(self.nodes)}", gops.Act(a), [x], lambda t: mod(t), site=True)

    def avgpool(self, x: int, k: int, s: int, p: int) -> int:
        return self.add(
            f"avg{len(self.nodes)}",
            gops.Affine(AvgPool((k, k), (s, s), (p, p))),
            [x],
            lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=True),
        )

    def chaffine(self, x: int, c: int) -> int:
        a, t0 = self.rand(c), self.rand(c, scale=0.3)
        return self.add(
            f"bn{len(self.nodes)}",
            gops.Affine(ChannelAffine(a, t0)),
            [x],
            lambda t: t * a.view(1, -1, *([1] * (t.dim() - 2))) + t0.view(1, -1, *([1] * (t.dim() - 2))),
        )

    def flatten(self, x: int) -> int:
        return self.add(f"flat{len(self.nodes)}", gops.Affine(Flatten()), [x], lambda t: t.reshape(t.shape[0], -1))

    def build(self, lo: float = 0.0, hi: float = 1.0) -> RGraph:
        lo_t = torch.full(self.input_shape, lo, dtype=torch.float64)
        hi_t = torch.full(self.input_shape, hi, dtype=torch.float64)
        return RGraph(self.nodes, self.input_shape, lo_t, hi_t)


# ------------------------------------------------------------------------- templates
def residual(seed: int, acts: Sequence[str], depth: int = 2, sign: int = 1, named: bool = False) -> RGraph:
    """dense -> act, then ``depth`` residual blocks ``act(h +- act(dense(h)))`` (Add / Sub), dense out."""
    d, h = 2, 3
    b = Builder(seed, (d,))
    x = b.act(b.dense(0, d, h), acts[0])
    for k in range(depth):
        inner = b.act(b.dense(x, h, h), acts[(k + 1) % len(acts)])
        signs = (1, sign)
        s = b.add(
            f"add{k}",
            gops.Add(signs),
            [x, inner],
            (lambda u, v: u + v) if sign > 0 else (lambda u, v: u - v),
            site=named and k == 0,
        )
        x = b.act(s, acts[(k + 2) % len(acts)]) if k == depth - 1 else s
    b.dense(x, h, 2)
    return b.build(-1.0, 1.0)


def concat_gate(seed: int, acts: Sequence[str]) -> RGraph:
    """Two branches concatenated, an elementwise sigmoid gate (Mul), a constant affine, dense out."""
    b = Builder(seed, (2,))
    a = b.act(b.dense(0, 2, 2), acts[0])
    c = b.act(b.dense(0, 2, 2), acts[1 % len(acts)])
    cat = b.add("cat", gops.Concat(1), [a, c], lambda u, v: torch.cat([u, v], 1))
    h = b.act(b.dense(cat, 4, 3), acts[2 % len(acts)])
    gate = b.act(b.dense(a, 2, 3), "sigmoid")
    m = b.add("gate", gops.Mul(), [h, gate], lambda u, v: u * v)
    sc, sh = b.rand(3), b.rand(3, scale=0.5)
    ca = b.add("caff", gops.ConstAffine(sc, sh), [m], lambda u: u * sc + sh)
    b.dense(ca, 3, 2)
    return b.build(0.0, 1.0)


def cnn_maxpool(seed: int, acts: Sequence[str], k: int = 2, s: int = 1, p: int = 0, avg: bool = False) -> RGraph:
    """conv -> act -> MaxPool(k, s, p) (overlapping when s < k, padded when p > 0) -> channel affine
    (or average pooling) -> act -> flatten -> dense."""
    b = Builder(seed, (1, 4, 4))
    y = b.act(b.conv(0, 1, 2, 2), acts[0])  # 2 x 3 x 3
    mp = b.add("pool", gops.MaxPool((k, k), (s, s), (p, p)), [y], lambda t: F.max_pool2d(t, k, s, p))
    hw = (3 + 2 * p - k) // s + 1
    z = b.avgpool(mp, 2, 1, 0) if avg and hw >= 2 else b.chaffine(mp, 2)
    z = b.act(z, acts[1 % len(acts)])
    f = b.flatten(z)
    n = 2 * ((hw - 1) if avg and hw >= 2 else hw) ** 2
    b.dense(f, n, 2)
    return b.build(0.0, 1.0)


def gap_norm(seed: int, acts: Sequence[str], groups: int = 2, affine: bool = True) -> RGraph:
    """conv -> act -> GroupNorm -> act -> global average pooling (Mean over space) -> dense."""
    b = Builder(seed, (1, 3, 3))
    y = b.act(b.conv(0, 1, 4, 2), acts[0])  # 4 x 2 x 2
    w = b.rand(4) if affine else None
    bb = b.rand(4, scale=0.3) if affine else None
    gn = b.add("gn", gops.Norm(None, groups, 1e-5, w, bb), [y], lambda t: F.group_norm(t, groups, w, bb, 1e-5))
    z = b.act(gn, acts[1 % len(acts)])
    m = b.add("gap", gops.Mean((2, 3)), [z], lambda t: t.mean((2, 3)))
    b.dense(m, 4, 2)
    return b.build(0.0, 1.0)


def layernorm_mlp(seed: int, acts: Sequence[str], affine: bool = True, named: bool = False) -> RGraph:
    """dense -> act -> LayerNorm -> dense -> act -> dense; the norm's output may be a named site."""
    b = Builder(seed, (2,))
    y = b.act(b.dense(0, 2, 4), acts[0])
    w = b.rand(4) if affine else None
    bb = b.rand(4, scale=0.3) if affine else None
    ln = b.add("ln", gops.Norm((4,), 1, 1e-5, w, bb), [y], lambda t: F.layer_norm(t, (4,), w, bb, 1e-5), site=named)
    z = b.act(b.dense(ln, 4, 3), acts[1 % len(acts)])
    b.dense(z, 3, 2)
    return b.build(-1.0, 1.0)


def attention(seed: int, acts: Sequence[str], named: bool = False) -> RGraph:
    """A class token (Const) concatenated to 2 tokens of width 2, LayerNorm, single-head attention
    (q k^T via a permute, scaled, softmax, times v), a residual sum, an activation, the class token
    selected, a dense head. Also a view and a slice (tokens 0..1) on the way."""
    b = Builder(seed, (4,))
    tok = b.add("tokens", gops.Rearrange("view", (2, 2)), [0], lambda t: t.reshape(t.shape[0], 2, 2))
    cls_v = b.rand(1, 1, 2)
    c = b.add("cls", gops.Const(cls_v), [], lambda: cls_v)
    seq = b.add("seq", gops.Concat(1), [c, tok], lambda u, v: torch.cat([u.expand(v.shape[0], 1, 2), v], 1))
    ln = b.add("ln", gops.Norm((2,), 1, 1e-5, None, None), [seq], lambda t: F.layer_norm(t, (2,), None, None, 1e-5))
    q = b.act(b.dense(ln, 2, 2), acts[0])
    k = b.dense(ln, 2, 2)
    v = b.dense(ln, 2, 2)
    kt = b.add("kT", gops.Rearrange("permute", (0, 2, 1)), [k], lambda t: t.permute(0, 2, 1))
    sc = b.add("scores", gops.MatMul(), [q, kt], lambda u, w: u @ w)
    scale = torch.tensor(1 / math.sqrt(2), dtype=torch.float64)
    ss = b.add("scaled", gops.ConstAffine(scale, None), [sc], lambda u: u * scale)
    p = b.add("attn", gops.Softmax(-1), [ss], lambda u: torch.softmax(u, -1))
    o = b.add("av", gops.MatMul(), [p, v], lambda u, w: u @ w, site=named)
    r = b.add("res", gops.Add((1, 1)), [seq, b.dense(o, 2, 2)], lambda u, w: u + w)
    a = b.act(r, acts[1 % len(acts)])
    sl = b.add("first2", gops.Rearrange("slice", (1, 0, 2, 1)), [a], lambda t: t[:, 0:2])
    sel = b.add("clsout", gops.Rearrange("select", (1, 0)), [sl], lambda t: t.select(1, 0))
    b.dense(sel, 2, 2)
    return b.build(-1.0, 1.0)


TEMPLATES: dict[str, Callable[..., RGraph]] = {
    "residual": residual,
    "concat_gate": concat_gate,
    "cnn_maxpool": cnn_maxpool,
    "gap_norm": gap_norm,
    "layernorm_mlp": layernorm_mlp,
    "attention": attention,
}


# ------------------------------------------------------------------------- forward
def forward_all(tg: RGraph, x: Tensor) -> list[Tensor]:
    vals: list[Tensor] = []
    for i, n in enumerate(tg.nodes):
        if i == 0:
            vals.append(x)
        elif not n.inputs:
            v = n.ref()
            vals.append(v.expand(x.shape[0], *v.shape[1:]))
        else:
            vals.append(n.ref(*(vals[j] for j in n.inputs)))
    return vals


def effective_matrix(tg: RGraph, i: int, in_shape: tuple[int, ...]) -> Tensor:
    """The weighted node's linear map as a matrix (out units x in units): its reference applied to
    the basis vectors, minus its value at 0."""
    n_in = math.prod(in_shape)
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    ref = tg.nodes[i].ref
    base = ref(torch.zeros((1, *in_shape), dtype=torch.float64))
    cols = (ref(eye) - base).reshape(n_in, -1)
    return cols.T.contiguous()


# ------------------------------------------------------------------------- faults
@dataclass
class FaultSpec:
    """A fault model in the words of faults.py: ``kind`` in crash / byzantine / byzdev / stuck /
    syn-crash / syn-byzantine / precision; ``c`` the capacity, stuck-at value, or the precision
    errors' common value."""

    kind: str
    c: float = 1.0

    @property
    def synapse(self) -> bool:
        return self.kind.startswith("syn")


def _value_draws(n_cfg: int, width: int, c: float, g: torch.Generator) -> list[Tensor]:
    """Values an adversary may choose in [-c, c]: all +c, all -c, random signs x2, uniform."""
    return [
        torch.full((n_cfg, width), c, dtype=torch.float64),
        torch.full((n_cfg, width), -c, dtype=torch.float64),
        (torch.randint(0, 2, (n_cfg, width), generator=g) * 2 - 1).to(torch.float64) * c,
        (torch.randint(0, 2, (n_cfg, width), generator=g) * 2 - 1).to(torch.float64) * c,
        (torch.rand((n_cfg, width), generator=g, dtype=torch.float64) * 2 - 1) * c,
    ]


def failure_sets(
    sizes: Sequence[int], counts: Sequence[int], cap: int, g: torch.Generator
) -> list[list[tuple[int, ...]]]:
    """Every failure set (one combination per site), or ``cap`` random ones when there are more."""
    per = [list(itertools.combinations(range(n), f)) for n, f in zip(sizes, counts, strict=True)]
    total = math.prod(len(p) for p in per)
    if total <= cap:
        return [list(c) for c in itertools.product(*per)]
    out = []
    for _ in range(cap):
        out.append([p[int(torch.randint(0, len(p), (1,), generator=g))] for p in per])
    return out


def brute_force(
    tg: RGraph, fault: FaultSpec, counts: Sequence[int], x: Tensor, *, cap: int = 600, seed: int = 0
) -> Tensor:
    """Per input and output, the largest :math:`|F_{fail}(x) - F(x)|` over the failure sets
    (every one when at most ``cap``) and adversary values tried. ``x``: ``(n, *input_shape)``;
    returns ``(n, n_outputs)``."""
    g = torch.Generator().manual_seed(seed)
    clean = forward_all(tg, x)
    n_x = x.shape[0]
    sites, weighted = tg.site_ids, tg.weighted_ids
    if fault.kind == "precision":
        sets: list[list[tuple[int, ...]]] = [[()] * len(sites)]
    elif fault.synapse:
        mats = [effective_matrix(tg, i, tuple(clean[tg.nodes[i].inputs[0]].shape[1:])) for i in weighted]
        syn = [torch.nonzero(m, as_tuple=False) for m in mats]
        sets = failure_sets([len(s) for s in syn], counts, cap, g)
    else:
        widths = [clean[i][0].numel() for i in sites]
        sets = failure_sets(widths, counts, cap, g)
    n_sets = len(sets)
    choose = fault.kind in ("byzantine", "byzdev", "syn-byzantine", "precision")
    draws = 5 if choose else 1
    n_cfg = n_sets * draws
    n = n_cfg * n_x
    rep = [v.repeat(n_cfg, *([1] * (v.dim() - 1))) for v in clean]  # config-major
    vals: list[Tensor] = []
    where = {i: k for k, i in enumerate(sites)}
    wpos = {i: k for k, i in enumerate(weighted)}
    for i, node in enumerate(tg.nodes):
        if i == 0:
            vals.append(rep[0])
            continue
        if not node.inputs:
            vals.append(rep[i])
            continue
        out = node.ref(*(vals[j] for j in node.inputs))
        if fault.synapse and i in wpos:
            k = wpos[i]
            m = mats[k]
            pairs = syn[k]
            y_in = vals[node.inputs[0]].reshape(n, -1)
            flat = out.reshape(n, -1).clone()
            f = counts[k]
            if f > 0:
                if fault.kind == "syn-byzantine":
                    v = torch.cat(_value_draws(n_sets, f, fault.c, g), 0)  # (n_cfg, f)
                else:
                    v = torch.zeros((n_cfg, f), dtype=torch.float64)
                idx = torch.tensor([list(s[k]) for s in sets] * draws)  # (n_cfg, f) synapse numbers
                jj, ii = pairs[idx, 0], pairs[idx, 1]  # (n_cfg, f)
                jj_n = jj.repeat_interleave(n_x, 0)
                ii_n = ii.repeat_interleave(n_x, 0)
                w = m[jj_n, ii_n]
                cur = y_in.gather(1, ii_n)
                delta = v.repeat_interleave(n_x, 0) - w * cur
                flat = flat.scatter_add(1, jj_n, delta)
            out = flat.reshape(out.shape)
        if i in where:
            k = where[i]
            flat = out.reshape(n, -1).clone()
            cl = rep[i].reshape(n, -1)
            width = flat.shape[1]
            if fault.kind == "precision":
                u = torch.cat(_value_draws(1, width, fault.c, g), 0).repeat_interleave(n_x, 0)  # (5 * n_x, width)
                flat = flat + u
            elif not fault.synapse and counts[k] > 0:
                mask = torch.zeros((n_sets, width), dtype=torch.bool)
                for r, s in enumerate(sets):
                    mask[r, list(s[k])] = True
                mask = mask.repeat(draws, 1).repeat_interleave(n_x, 0)
                if fault.kind == "crash":
                    sent = torch.zeros_like(flat)
                elif fault.kind == "stuck":
                    sent = torch.full_like(flat, fault.c)
                else:
                    v = torch.cat(_value_draws(n_sets, width, fault.c, g), 0).repeat_interleave(n_x, 0)
                    sent = v if fault.kind == "byzantine" else cl + v
                flat = torch.where(mask, sent, flat)
            out = flat.reshape(out.shape)
        vals.append(out)
    dev = (vals[-1].reshape(n, -1) - rep[-1].reshape(n, -1)).abs()
    return dev.reshape(n_cfg, n_x, -1).amax(0)


def corners_and_points(tg: RGraph, n_random: int, seed: int, max_corners: int = 16) -> Tensor:
    """Random corners of the domain box, its centre, and uniform points."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(tg.input_shape)
    lo, hi = tg.lo.reshape(-1), tg.hi.reshape(-1)
    if 2**d <= max_corners:
        bits = torch.tensor(list(itertools.product([0, 1], repeat=d)), dtype=torch.float64)
    else:
        bits = torch.randint(0, 2, (max_corners, d), generator=g).to(torch.float64)
    corners = lo + bits * (hi - lo)
    rand = lo + torch.rand((n_random, d), generator=g, dtype=torch.float64) * (hi - lo)
    pts = torch.cat([corners, ((lo + hi) / 2)[None], rand], 0)
    return pts.reshape(-1, *tg.input_shape)
