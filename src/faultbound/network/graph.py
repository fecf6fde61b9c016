"""Graph networks: a DAG of operators (residual sums, concatenation, pooling, normalisation,
attention), as ``torch.export`` and ONNX give it.

The paper's layered network (:class:`~faultbound.network.Network`) is the special case of a chain;
every reader returns a :class:`~faultbound.network.Network` when the model is a chain, so all its
bounds apply, and a :class:`GraphNetwork` otherwise. :meth:`GraphNetwork.from_network` views a
layered network as a graph (the same function, node for node).

Node 0 is the input; node i applies ``nodes[i].op`` (:mod:`faultbound.network.gops`) to the
outputs of ``nodes[i].inputs`` (all earlier: the node list is in topological order); the last node
is the output, flattened to ``(B, n_outputs)``.

**Fault sites.** A fault site is a node whose output units can fail, as the neurons of a hidden
layer of the paper: every activation node, plus the nodes named by the user
(:meth:`GraphNetwork.with_sites`: the output of a residual block, an attention output). Failure
counts :math:`f_1, \\dots, f_S` address the sites in topological order (the paper's
:math:`f_1..f_L` for a chain). Synapse faults strike the weighted operators (dense and
convolution nodes), in topological order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError, UnboundedError, UnsupportedModelError
from faultbound.formats import format_dtype, format_name
from faultbound.network.activations import Activation
from faultbound.network.core import Box, Network, read_inputs
from faultbound.network.gops import Act, Affine, Box2, Const, GOp, Input
from faultbound.network.ops import ChannelAffine, Conv, Dense

__all__ = ["Node", "Site", "GraphNetwork", "LINEAR_MACS"]

#: Most work of the linear refinement of one network's domain boxes
#: (:meth:`GraphNetwork.linear_box_intervals`), summed over the nodes it refines: a node costs
#: 2 x its width x the multiply-adds of the nodes up to it, and one that would exceed what is left
#: keeps its interval box (on the CIFAR ResNet-18 every node does; the small ResNet of the digits
#: spends 7.4e8, a fraction of a second).
LINEAR_MACS = 2**32


@dataclass(frozen=True, eq=False)
class Node:
    """One node: ``op`` applied to the outputs of the nodes ``inputs``; ``shape`` is the per-sample
    output shape and ``name`` where it comes from in the model."""

    name: str
    op: GOp
    inputs: tuple[int, ...]
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        return math.prod(self.shape)


def _fold_batch_norms(nodes: Sequence[Node], named: set[str]) -> list[tuple[str, GOp, Sequence[int]]] | None:
    """Batch norms (per-channel affine nodes) folded into the dense or convolution node before them
    when nothing else reads that node (and it is not a named site): :meth:`Op.fold`. ``None`` when
    there is nothing to fold; a batch norm elsewhere stays a per-channel affine node."""
    readers: list[int] = [0] * len(nodes)
    for n in nodes:
        for j in n.inputs:
            readers[j] += 1
    fold_into: dict[int, int] = {}
    for i, n in enumerate(nodes):
        op = n.op
        if not (isinstance(op, Affine) and isinstance(op.op, ChannelAffine)):
            continue
        j = n.inputs[0]
        prev = nodes[j].op
        if not (isinstance(prev, Affine) and isinstance(prev.op, (Conv, Dense))) or readers[j] != 1:
            continue
        if nodes[j].name in named or (isinstance(prev.op, Dense) and len(nodes[j].shape) != 1):
            continue  # a dense op on tokens: the norm's channel axis is not its output axis
        fold_into[j] = i
    if not fold_into:
        return None
    out: list[tuple[str, GOp, Sequence[int]]] = []
    new_index: dict[int, int] = {}
    skip = set(fold_into)
    for i, n in enumerate(nodes):
        if i in skip:
            continue
        op = n.op
        inputs = n.inputs
        if i in fold_into.values():
            j = n.inputs[0]
            prev = nodes[j].op
            assert isinstance(prev, Affine) and isinstance(op, Affine) and isinstance(op.op, ChannelAffine)
            folded = prev.op.fold(op.op.scale, op.op.shift)
            assert folded is not None
            op, inputs = Affine(folded), nodes[j].inputs
        new_index[i] = len(out)
        out.append((n.name, op, tuple(new_index[k] for k in inputs)))
    return out


@dataclass(frozen=True)
class Site:
    """A fault site: position ``index`` (1-based, topological) and the node it is."""

    index: int
    node: int
    name: str
    width: int
    fan_in: int | None
    activation: Activation | None


@dataclass(frozen=True, eq=False)
class GraphNetwork:
    """A feed-forward network as a DAG of operators (see the module docstring).

    Build one with :meth:`build`, a reader (:func:`faultbound.load`), or :meth:`from_network`.
    """

    nodes: tuple[Node, ...]
    domain: Box
    input_shape: tuple[int, ...]
    site_nodes: tuple[int, ...]
    #: The floating format the model computes in (set by every reader; weights stay float64).
    dtype: torch.dtype = torch.float32

    # ----------------------------------------------------------------- construction
    @staticmethod
    def build(
        nodes: Sequence[tuple[str, GOp, Sequence[int]]],
        input_shape: tuple[int, ...],
        domain: tuple[object, object] | None,
        sites: Sequence[str] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> GraphNetwork:
        """Check a node list and compute its shapes; ``dtype`` is the model's format.

        ``nodes[0]`` must be the :class:`~faultbound.network.gops.Input`; every node reads earlier
        nodes only; nodes that the output does not read are dropped; a batch norm right after a
        dense or convolution node that nothing else reads is folded into it. ``sites`` names extra
        fault sites besides the activations.

        Raises:
            UnsupportedModelError: a node that reads a later node, the wrong number of inputs,
                shapes that do not fit (naming the node), NaN or infinite weights, a node of width 0, no activation.
        """
        if not nodes or not isinstance(nodes[0][1], Input):
            raise UnsupportedModelError("Expected the graph to start with its input node.")
        # keep only what the output reads
        live = {len(nodes) - 1}
        for i in range(len(nodes) - 1, -1, -1):
            if i in live:
                live.update(int(j) for j in nodes[i][2])
        keep = [i for i in range(len(nodes)) if i in live]
        remap = {old: new for new, old in enumerate(keep)}
        built: list[Node] = []
        x0 = torch.zeros((1, *input_shape), dtype=torch.float64)
        vals: list[Tensor] = []
        for old in keep:
            name, op, inputs = nodes[old]
            ins = tuple(int(j) for j in inputs)
            if any(j >= old or j < 0 for j in ins):
                raise UnsupportedModelError(f"Node {name} reads a node that comes after it; expected a DAG.")
            if op.arity >= 0 and len(ins) != op.arity:
                raise UnsupportedModelError(f"Node {name} ({op.describe()}) expects {op.arity} inputs, got {len(ins)}.")
            for t in op.tensors():
                if not bool(torch.isfinite(t).all()):
                    raise UnsupportedModelError(f"Node {name} ({op.describe()}) has NaN or infinite weights.")
            new_ins = tuple(remap[j] for j in ins)
            try:
                if isinstance(op, Input):
                    v = x0
                elif isinstance(op, Const):
                    v = op.make(1, torch.float64)
                else:
                    v = op.forward(*(vals[j] for j in new_ins))
            except (RuntimeError, ValueError, IndexError) as e:
                shapes = ", ".join(str(tuple(vals[j].shape[1:])) for j in new_ins)
                raise UnsupportedModelError(
                    f"Shapes do not fit at node {name} ({op.describe()}) with inputs of shape {shapes}: "
                    f"{str(e).splitlines()[0]}"
                ) from None
            if v.dim() < 1 or v.shape[0] != 1:
                raise UnsupportedModelError(f"Node {name} ({op.describe()}) does not keep the batch axis first.")
            if v[0].numel() == 0:
                raise UnsupportedModelError(
                    f"Node {name} ({op.describe()}) has 0 neurons (width 0, output shape {tuple(v.shape[1:])}): "
                    "a node without units computes nothing and has no fraction to fail."
                )
            vals.append(v)
            built.append(Node(name, op, new_ins, tuple(v.shape[1:])))
        if built[-1].width == 0:
            raise UnsupportedModelError("The graph's output has no units.")
        folded = _fold_batch_norms(built, set(sites or ()))
        if folded is not None:
            return GraphNetwork.build(folded, input_shape, domain, sites, dtype)
        net = GraphNetwork(tuple(built), Box.make(domain, input_shape), tuple(input_shape), (), format_dtype(dtype))
        return net.with_sites(sites or ())

    @staticmethod
    def from_network(net: Network) -> GraphNetwork:
        """The layered network as a graph: one node per op and per activation, in order."""
        nodes: list[tuple[str, GOp, Sequence[int]]] = [("x", Input(), ())]
        for layer in net.layers:
            for k, op in enumerate(layer.ops):
                nodes.append((f"layer{layer.index}.op{k}", Affine(op), (len(nodes) - 1,)))
            if layer.activation is not None:
                nodes.append((f"layer{layer.index}.act", Act(layer.activation), (len(nodes) - 1,)))
        return GraphNetwork.build(nodes, net.input_shape, (net.domain.lo, net.domain.hi), dtype=net.dtype)

    def with_sites(self, names: Sequence[str]) -> GraphNetwork:
        """The same graph with fault sites = every activation plus the nodes ``names``.

        Raises:
            InvalidArgumentError: a name that is no node of the graph (the message lists some).
        """
        by_name = {n.name: i for i, n in enumerate(self.nodes)}
        extra = set()
        for name in names:
            if name not in by_name:
                known = ", ".join(n.name for n in self.nodes[1:][:12])
                raise InvalidArgumentError(
                    f"Expected --sites to name nodes of the graph, but {name!r} is none (nodes: {known}, ...; "
                    "`faultbound inspect` lists them)."
                )
            if by_name[name] == 0:
                raise InvalidArgumentError("The input cannot be a fault site: inputs never fail.")
            extra.add(by_name[name])
        sites = tuple(i for i, n in enumerate(self.nodes) if n.op.default_site or i in extra)
        if not sites:
            raise UnsupportedModelError(
                "Expected at least one fault site (an activation, or a node named with --sites), "
                "but the graph has no activation and no named site."
            )
        return GraphNetwork(self.nodes, self.domain, self.input_shape, sites, self.dtype)

    def with_domain(self, domain: tuple[object, object] | None) -> GraphNetwork:
        """The same graph over another input domain."""
        return GraphNetwork(
            self.nodes, Box.make(domain, self.input_shape), self.input_shape, self.site_nodes, self.dtype
        )

    def with_dtype(self, dtype: torch.dtype) -> GraphNetwork:
        """The same graph computing in another floating format."""
        return GraphNetwork(self.nodes, self.domain, self.input_shape, self.site_nodes, format_dtype(dtype))

    # ----------------------------------------------------------------- shape
    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def n_outputs(self) -> int:
        return self.output.width

    @property
    def n_params(self) -> int:
        return sum(n.op.n_params for n in self.nodes)

    @cached_property
    def sites(self) -> tuple[Site, ...]:
        """The fault sites in topological order, with width, fan-in and activation."""
        out = []
        for k, i in enumerate(self.site_nodes, start=1):
            node = self.nodes[i]
            act = node.op.act if isinstance(node.op, Act) else None
            out.append(Site(k, i, node.name, node.width, self._fan_in(i), act))
        return tuple(out)

    @property
    def layers(self) -> None:
        """The paper's layered view: ``None`` for a graph network (the formulas that read
        ``net.layers``, the paper's Theorem 2 among them, refuse it in one line)."""
        return None

    @property
    def L(self) -> int:  # noqa: N802 - the paper's notation
        """Number of fault sites (the hidden layers of a chain)."""
        return len(self.site_nodes)

    @property
    def widths(self) -> list[int]:
        """:math:`[N_1, \\dots, N_S]`: units per fault site."""
        return [s.width for s in self.sites]

    @cached_property
    def weighted_nodes(self) -> tuple[int, ...]:
        """Dense and convolution nodes in topological order: where synapse faults strike."""
        return tuple(i for i, n in enumerate(self.nodes) if n.op.weighted)

    def _fan_in(self, i: int) -> int | None:
        """Inputs of the nearest weighted operator upstream through elementwise ops (+1 per other
        summand of a residual sum); ``None`` when there is none."""
        seen = 0
        stack = [i]
        best: int | None = None
        while stack:
            j = stack.pop()
            node = self.nodes[j]
            op = node.op
            if isinstance(op, Affine) and op.weighted:
                fi = op.op.fan_in(math.prod(self.nodes[node.inputs[0]].shape))
                best = (best or 0) + (fi or 0)
                continue
            if j == 0 or (j != i and j in self.site_nodes):
                best = (best or 0) + 1
                continue
            seen += 1
            if seen > 64:
                break
            stack.extend(node.inputs)
        return best

    @cached_property
    def site_predecessors(self) -> tuple[tuple[int, ...], ...]:
        """For each fault site s (0-based, topological), the sites :math:`P(s)` whose values reach it
        through non-site nodes only (0-based, ascending): the sites s waits for. A site fed by the
        input alone (the input never fails) has none. On a chain, site l has site l-1."""
        return tuple(self._sites_reaching(i, itself=False) for i in self.site_nodes)

    @cached_property
    def output_sites(self) -> tuple[int, ...]:
        """The fault sites (0-based, ascending) whose values reach the output through non-site nodes
        only; the output node itself when it is a site."""
        return self._sites_reaching(len(self.nodes) - 1, itself=True)

    def _sites_reaching(self, i: int, itself: bool) -> tuple[int, ...]:
        """The sites met first on the backward paths from node i (i included when ``itself``)."""
        pos = {node: k for k, node in enumerate(self.site_nodes)}
        found: set[int] = set()
        seen: set[int] = set()
        stack = [i] if itself else list(self.nodes[i].inputs)
        while stack:
            j = stack.pop()
            if j in seen:
                continue
            seen.add(j)
            if j in pos:
                found.add(pos[j])
            else:
                stack.extend(self.nodes[j].inputs)
        return tuple(sorted(found))

    def consumers(self) -> list[list[int]]:
        """For each node, the nodes that read it."""
        out: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for j in n.inputs:
                out[j].append(i)
        return out

    def downstream(self, starts: Sequence[int]) -> list[bool]:
        """Which nodes depend on any of the nodes ``starts`` (those included)."""
        hit = [False] * len(self.nodes)
        for s in starts:
            hit[s] = True
        for i, n in enumerate(self.nodes):
            if not hit[i] and any(hit[j] for j in n.inputs):
                hit[i] = True
        return hit

    # ----------------------------------------------------------------- forward
    def values(self, x: Tensor, at_site: Callable[[int, Tensor], Tensor] | None = None) -> list[Tensor]:
        """Every node's output for a batch ``(B, *input_shape)``, in ``x``'s dtype.

        ``at_site(s, y)``, when given, replaces the output ``y`` of fault site ``s`` (0-based, in
        :attr:`sites` order) by what it returns before any consumer reads it (a rounding, a mask).
        """
        return self._walk(x, at_site, keep=True)

    def forward(self, x: Tensor, at_site: Callable[[int, Tensor], Tensor] | None = None) -> Tensor:
        """:math:`F(x)` for a batch, shape ``(B, n_outputs)`` (``at_site`` as in :meth:`values`);
        each node's value is freed after its last reader."""
        y = self._walk(x, at_site, keep=False)[-1]
        return y.reshape(y.shape[0], -1)

    @cached_property
    def _last_reader(self) -> list[int]:
        """For each node, the last node that reads it (itself when none does)."""
        last = list(range(len(self.nodes)))
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                last[j] = i
        return last

    def _walk(self, x: Tensor, at_site: Callable[[int, Tensor], Tensor] | None, keep: bool) -> list[Tensor]:
        """The one interpreter of the DAG: every node's value in order (``keep=False``: a value is
        dropped, as an empty tensor, once its last reader has run; the output is always kept)."""
        vals: list[Tensor] = []
        site_of = {n: s for s, n in enumerate(self.site_nodes)} if at_site is not None else {}
        last = self._last_reader
        empty = x.new_empty(0)
        for i, node in enumerate(self.nodes):
            op = node.op
            if isinstance(op, Input):
                v = x
            elif isinstance(op, Const):
                v = op.make(x.shape[0], x.dtype)
            else:
                v = op.forward(*(vals[j] for j in node.inputs))
            if at_site is not None and i in site_of:
                v = at_site(site_of[i], v)
            vals.append(v)
            if not keep:
                for j in node.inputs:
                    if last[j] == i:
                        vals[j] = empty
        return vals

    __call__ = forward

    def as_inputs(self, X: Any) -> Tensor:
        """User inputs as a float64 batch ``(n, *input_shape)`` (:func:`~faultbound.network.core.read_inputs`)."""
        return read_inputs(X, self.input_shape)

    # ----------------------------------------------------------------- intervals
    def box_intervals(self, lo: Tensor, hi: Tensor) -> list[Box2]:
        """Interval propagation of a batch of input boxes through every node (each operator's
        :meth:`~faultbound.network.gops.GOp.interval`); a list aligned with :attr:`nodes`."""
        boxes: list[Box2] = []
        with torch.no_grad():
            for i in range(len(self.nodes)):
                boxes.append(self._node_box(i, boxes, lo, hi))
        return boxes

    def _node_box(self, i: int, boxes: Sequence[Box2], lo: Tensor, hi: Tensor) -> Box2:
        """Node i's interval box from the boxes of the nodes before it (``[lo, hi]`` for the input)."""
        node = self.nodes[i]
        op = node.op
        if isinstance(op, Input):
            return lo, hi
        if isinstance(op, Const):
            v = op.make(lo.shape[0], torch.float64)
            return v, v
        return op.interval(*(boxes[j] for j in node.inputs))

    def linear_box_intervals(self, lo: Tensor, hi: Tensor) -> list[Box2]:
        """:meth:`box_intervals` of one input box (a batch of one), each node's box then intersected
        with a linear bound (the back-substitution of CROWN / DeepPoly):

        for node v with n units, the 2n functions :math:`\\pm y_{v,j}` are written as linear
        functions of the nodes before it, operator by operator in reverse topological order
        (:meth:`~faultbound.network.gops.GOp.linear_back`: linear operators exactly, activations by
        their relaxation on the input's box, the coefficients reaching a node from several consumers
        summed), until they reach the input, where
        :math:`\\Lambda \\cdot x \\le \\Lambda^+ \\cdot \\overline x + \\Lambda^- \\cdot \\underline x`; an operator
        without a rule (products, norms, softmax) is bounded by its own box there.
        Every step is a valid inequality for every input of the box, so the result bounds
        :math:`\\pm y_{v,j}` over it; it is widened by a relative :math:`10^{-8}` for the rounding of
        the float64 arithmetic. Nodes are refined in topological order, so the relaxations of later
        nodes use the refined boxes. A node whose operator has a rule costs :math:`2n` times the
        multiply-adds (at least the width) of the nodes up to it; it is refined while the total stays
        within :data:`LINEAR_MACS` (else it keeps its interval box)."""
        boxes: list[Box2] = []
        cum = 0
        left = LINEAR_MACS
        with torch.no_grad():
            for i, node in enumerate(self.nodes):
                op = node.op
                boxes.append(self._node_box(i, boxes, lo, hi))
                cum += max(self.node_macs[i], node.width)
                cost = 2 * node.width * cum
                has_rule = type(op).linear_back is not GOp.linear_back
                if lo.shape[0] == 1 and has_rule and cost <= left:
                    left -= cost
                    refined = self._linear_refine(boxes, i)
                    if refined is not None:
                        boxes[i] = refined
        return boxes

    def _linear_refine(self, boxes: list[Box2], i: int) -> Box2 | None:
        """Node i's box intersected with its linear bound (:meth:`linear_box_intervals`); ``None``
        when its own operator has no linear rule or a box on the way is not finite."""
        lo_i, hi_i = boxes[i]
        n = lo_i[0].numel()
        shape = tuple(lo_i.shape[1:])
        eye = torch.eye(n, dtype=torch.float64)
        ms: dict[int, Tensor] = {i: torch.cat([eye, -eye]).reshape((2 * n,) + shape)}
        total = torch.zeros(2 * n, dtype=torch.float64)
        scale = torch.zeros(2 * n, dtype=torch.float64)
        for k in range(i, -1, -1):
            lam = ms.pop(k, None)
            if lam is None:
                continue
            node = self.nodes[k]
            op = node.op
            flat = lam.reshape(2 * n, -1)
            back = None
            if not isinstance(op, (Input, Const)):
                back = op.linear_back([boxes[j] for j in node.inputs], boxes[k], lam)
                if back is None and k == i:
                    return None
            if back is None:  # the input, a constant, or no rule: the node's own box
                blo, bhi = boxes[k][0].reshape(1, -1), boxes[k][1].reshape(1, -1)
                if not bool(torch.isfinite(blo).all() & torch.isfinite(bhi).all()):
                    return None
                total = total + (flat.clamp(min=0) * bhi + flat.clamp(max=0) * blo).sum(1)
                scale = scale + (flat.abs() * torch.maximum(blo.abs(), bhi.abs())).sum(1)
                continue
            gs, c = back
            total = total + c
            scale = scale + c.abs()
            for j, g in zip(node.inputs, gs, strict=True):
                if g is not None:
                    ms[j] = ms[j] + g if j in ms else g
        mag = torch.maximum(lo_i.abs(), hi_i.abs()).reshape(-1)
        up = total + 1e-8 * (scale + total.abs() + mag.repeat(2)) + 1e-300
        if not bool(torch.isfinite(up).all()):
            return None
        new_hi = torch.minimum(hi_i, up[:n].reshape(hi_i.shape))
        new_lo = torch.maximum(lo_i, -up[n:].reshape(lo_i.shape))
        if bool((new_lo > new_hi).any()):
            return None
        return new_lo, new_hi

    @cached_property
    def node_macs(self) -> list[int]:
        """Multiply-adds per input of every node: a convolution's or dense node's products
        (weights x output positions or tokens), 0 elsewhere."""
        out = []
        for node in self.nodes:
            op = node.op.op if isinstance(node.op, Affine) else None
            if isinstance(op, (Conv, Dense)):
                out.append(int(op.weight.numel()) * (node.width // int(op.weight.shape[0])))
            else:
                out.append(0)
        return out

    @cached_property
    def _domain_boxes(self) -> list[Box2]:
        return self.linear_box_intervals(self.domain.lo.unsqueeze(0), self.domain.hi.unsqueeze(0))

    def intervals(self) -> list[Box2]:
        """:meth:`linear_box_intervals` over the domain (a batch of one), cached."""
        return self._domain_boxes

    def value_bound(self, l: int) -> float:
        """:math:`Y_l = \\max_j \\sup_x |y_j|` at fault site l (1-based) over the domain; l = 0: the inputs."""
        if l == 0:
            return float(torch.maximum(self.domain.lo.abs(), self.domain.hi.abs()).max())
        lo, hi = self.intervals()[self.site_nodes[l - 1]]
        return float(torch.maximum(lo.abs(), hi.abs()).max())

    def require_bounded_values(self) -> None:
        """Raise :class:`UnboundedError` if some node has no finite bound over the domain."""
        for node, (lo, hi) in zip(self.nodes, self.intervals(), strict=True):
            if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
                raise UnboundedError(f"Node {node.name} ({node.op.describe()}) is unbounded over the domain.")

    # ----------------------------------------------------------------- description
    def summary(self) -> dict[str, object]:
        """A JSON-ready description: the fault sites (in the order failures address them) and the
        nodes."""
        sites = []
        for s in self.sites:
            act = s.activation
            sites.append(
                {
                    "site": s.index,
                    "node": s.name,
                    "width": s.width,
                    "shape": list(self.nodes[s.node].shape),
                    "fan_in": s.fan_in,
                    "activation": None if act is None else act.name,
                    "K": None if act is None else act.K,
                    "range": None if act is None else [act.lo, act.hi],
                    "Y": self.value_bound(s.index),
                }
            )
        nodes = [
            {
                "node": n.name,
                "op": n.op.describe(),
                "inputs": [self.nodes[j].name for j in n.inputs],
                "shape": list(n.shape),
            }
            for n in self.nodes
        ]
        return {
            "graph": True,
            "input_shape": list(self.input_shape),
            "domain": self.domain.describe(),
            "format": format_name(self.dtype),
            "sites": sites,
            "n_sites": self.L,
            "widths": self.widths,
            "n_outputs": self.n_outputs,
            "n_params": self.n_params,
            "nodes": nodes,
        }
