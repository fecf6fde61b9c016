"""Batched faulty forward pass: T fault configurations x B inputs in one pass over the Network.

The engine never hooks into a user's module: it runs the :class:`~faultbound.network.Network`'s own
layers, so the function it perturbs is exactly the one the bounds reason about.

Notation: :math:`y^{(l)}` (flattened, ``(B, N_l)``) and :math:`s^{(l)}` are the clean outputs and
pre-activations of layer l; a primed quantity is faulty and carries a configuration axis,
``(T, B, N_l)``. The output error of configuration t on input b is

.. math::

    e_{t,b} = \\| F_t'(x_b) - F(x_b) \\|_\\infty .

**Clean prefix.** The clean pass is computed once per input batch
(:func:`~faultbound.measure.state.clean_pass`); configuration states start as "clean" and only
become tensors at the first faulty layer. Configurations are grouped by their first faulty layer.

**Low-rank update.** When layer l-1 differs from the clean pass on a few units only, the next
pre-activation is updated instead of recomputed (:mod:`faultbound.measure.state`). After the
activation, units whose value did not change are dropped again (a convolution's change stays inside
a receptive field), so sparsity is kept as long as it pays, by a flop count.

**Fault models.** Each layer applies the faults of its site through the rule table
:data:`~faultbound.measure.rules.RULES` (keyed by :attr:`~faultbound.faults.Fault.site`): a failing
neuron sends what its model states (:meth:`~faultbound.faults.NeuronFault.sends`), a failing synapse
transmits :meth:`~faultbound.faults.SynapseFault.transmits` instead of :math:`w_{ji} y_i`, precision
adds its offsets to every output of a layer, a :class:`~faultbound.faults.BitFlip` flips one bit of
a neuron's output or of a weight, in float32 or int8 fixed point.

**Values** of Byzantine and precision faults are ``"fixed"``, ``"random"`` or ``"adversarial"``
(:mod:`faultbound.measure.values`).

**One engine.** :func:`inject`, :func:`clean_pass`, :func:`differentiable_outputs` and
:func:`initial_values` run the graph engine (:mod:`faultbound.measure.graph_engine`) for every
network: a layered network through its node-for-node graph view (:func:`graph_view`,
:meth:`GraphNetwork.from_network <faultbound.network.graph.GraphNetwork.from_network>`, cached
beside it), where the refinements above are the graph engine's sparse states on chains of dense
nodes and its receptive-field windows on images. The layered path (:func:`layered_inject`) still
runs where the view does not address the layered fault set entry for entry (:func:`_view_fits`: a
layer without exactly one weighted op; synapse faults on a layer of more than one linear op, or on a
dense weight with exact zeros), and
``benchmarks/engine_parity.py`` times the two side by side.
"""

from __future__ import annotations

import math
import threading
import weakref
from functools import partial

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts, layer_count
from faultbound.faults import BitFlip, Fault, for_dtype
from faultbound.measure.faultset import FaultSet, first_faulty_layer, first_per_config
from faultbound.measure.graph_engine import (
    GraphClean,
    graph_clean_pass,
    graph_differentiable_outputs,
    graph_initial_values,
    graph_inject,
)
from faultbound.measure.injection import Injection
from faultbound.measure.rules import RULES, at_layer
from faultbound.measure.state import (
    MAX_ELEMENTS,
    CleanPass,
    Prepared,
    _columns,
    _densify,
    _errors,
    _low_rank,
    _Sparse,
    _sparse_ok,
    _sparsify,
    _State,
    _support,
    _weighted_op,
    _workspace,
    prepare,
)
from faultbound.measure.state import clean_pass as layered_clean_pass
from faultbound.measure.values import ValueMode, _adversarial, _init_values, _place_values, _ranges
from faultbound.network.activations import Activation
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense

__all__ = [
    "Injection",
    "differentiable_outputs",
    "initial_values",
    "inject",
    "faulty_forward",
]


_VIEWS: weakref.WeakKeyDictionary[Network, tuple[GraphNetwork, bool]] = weakref.WeakKeyDictionary()
_VIEWS_LOCK = threading.Lock()


def _view(net: Network) -> tuple[GraphNetwork, bool]:
    """The graph view of ``net``, and whether its synapses are numbered differently from the
    layered engine's (a dense weight exactly 0, or a layer that is more than one dense / conv op
    and flattens), made once and cached beside the network (by its identity, weakly: the entry goes
    with the network)."""
    with _VIEWS_LOCK:
        got = _VIEWS.get(net)
        if got is None:
            ops = [op for layer in net.layers for op in layer.ops]
            zeros = any(isinstance(op, Dense) and bool((op.weight == 0).any()) for op in ops)
            # the layered engine numbers a layer's synapses over its whole effective matrix: the same
            # as the graph's weighted node only where the layer is that one op (and flattens)
            alone = all(_weighted_op(layer) is not None for layer in net.layers)
            got = _VIEWS[net] = (GraphNetwork.from_network(net), zeros or not alone)
        return got


def graph_view(net: Network | GraphNetwork) -> GraphNetwork:
    """The graph the engine runs: a graph itself, or a layered network's node-for-node view
    (:meth:`GraphNetwork.from_network`), cached beside the network."""
    return net if isinstance(net, GraphNetwork) else _view(net)[0]


def _view_fits(net: Network, fault: Fault, faults: FaultSet | None = None) -> bool:
    """Does the graph view address ``net``'s fault sets entry for entry: one fault site per hidden
    layer, one weighted node per layer (synapse and weight faults), and for synapse faults every
    layer one dense or conv op (and flattens) without exact zeros in a dense weight (the layered
    engine numbers a layer's synapses over its effective matrix, a dense layer's over all its
    entries; the graph over the weighted node's non-zero entries)? Where not, the layered engine
    runs."""
    view, renumbered = _view(net)
    if fault.site in ("synapse", "weight"):
        return len(view.weighted_nodes) == net.L + 1 and not (fault.site == "synapse" and renumbered)
    return view.L == net.L


def _value_bounds(net: Network, fault: Fault) -> tuple[float, ...] | None:
    """The layered :math:`Y_l` (``value_bound_domain``) of every hidden layer where the fault model
    reads them (the int8 step of a neuron bit flip), so that the view flips the layered engine's
    bits."""
    if isinstance(fault, BitFlip) and fault.target == "neuron" and fault.format == "int8":
        return tuple(net.value_bound_domain(l) for l in range(1, net.L + 1))
    return None


def _as_graph_clean(view: GraphNetwork, clean: CleanPass) -> GraphClean:
    """The graph clean pass of a layered clean pass's inputs (same format; the autograd graph to the
    inputs is kept when they carry one)."""
    x = clean.ys[0]
    return graph_clean_pass(view, x, x.dtype, grad=x.requires_grad)


def clean_pass(
    net: Network | GraphNetwork, x: Tensor, dtype: torch.dtype | None = None, grad: bool = False
) -> GraphClean:
    """Run the clean network once on ``x`` (``(B, *input_shape)`` or ``(B, d)``), in ``dtype``
    (default: the network's own format, ``net.dtype``) (``grad=True`` keeps the graph, for gradients
    with respect to ``x``): every node's value of the graph the engine runs (:func:`graph_view`,
    :func:`~faultbound.measure.graph_engine.graph_clean_pass`)."""
    return graph_clean_pass(graph_view(net), x, net.dtype if dtype is None else dtype, grad)


# ----------------------------------------------------------------------------------- forward
def _activate_(act: Activation, s: Tensor, in_place: bool) -> Tensor:
    """The activation, in place on a workspace buffer where it has an in-place form (its ``apply_``)."""
    return act.apply_(s) if in_place else act(s)


def _propagate(
    prep: Prepared, clean: CleanPass, fault: Fault, fs: FaultSet, vals: list[Tensor | None], first: int
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)`` for one chunk of configurations, from layer ``first`` on;
    each layer applies the faults of its site through :data:`~faultbound.measure.rules.RULES`."""
    net = prep.net
    t, b = fs.n_configs, clean.batch
    n_hidden = net.L
    state: _State = None
    rule = RULES[fault.site]
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
                local = l <= n_hidden and not (rule.on_sum is not None and fs.sites[l - 1] is not None)
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
                    if rule.on_output is not None:
                        state = rule.on_output(prep, fault, at_layer(fs, vals, l), state, clean.ys[l], t)
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
        if rule.on_sum is not None and l - 1 < len(fs.sites) and fs.sites[l - 1] is not None:
            s = rule.on_sum(prep, fault, at_layer(fs, vals, l), state, y_prev, s, clean.ss[l])
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
        if rule.on_output is not None:
            state = rule.on_output(prep, fault, at_layer(fs, vals, l), state, clean.ys[l], t)
    return clean.ss[-1].unsqueeze(0).expand(t, -1, -1)  # no layer was faulty


def _check(net: Network, fault: Fault, fs: FaultSet) -> None:
    """A fault model the engine has a rule for, and a fault set of its shape."""
    if getattr(fault, "site", None) not in RULES:
        raise InvalidArgumentError(f"Expected a fault model, but got {fault!r}.")
    if not fault.counted:
        failure_counts(net, fault, None)  # one error per hidden layer
        return
    want = layer_count(net, fault)
    if len(fs.sites) != want:
        raise InvalidArgumentError(f"Expected a fault set with one entry per layer ({want}), but got {len(fs.sites)}.")
    if fault.flippable and len(fs.bits) != want:
        raise InvalidArgumentError("Expected the fault set of a bit flip to carry the flipped bits.")


def inject(
    net: Network | GraphNetwork,
    x: Tensor | CleanPass | GraphClean,
    fault: Fault,
    faults: FaultSet,
    *,
    values: ValueMode = "random",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
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
        dtype: the format the engine runs in; default the network's own (``net.dtype``: float16,
            bfloat16, float32 or float64), where a failing unit's value, a bit flip (of that format's
            word, :meth:`~faultbound.faults.BitFlip.in_format`) and every sum are those of the format.
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

    On a :class:`~faultbound.network.graph.GraphNetwork` the fault set addresses its fault sites
    (or weighted nodes) in topological order and the graph engine runs
    (:mod:`faultbound.measure.graph_engine`).
    """
    if isinstance(net, GraphNetwork):
        if isinstance(x, CleanPass):
            raise InvalidArgumentError("Expected the clean pass of a graph (graph_clean_pass), not a layered one.")
        return graph_inject(
            net, x, fault, faults, values=values, generator=generator, dtype=dtype, adversarial_steps=adversarial_steps
        )
    if isinstance(x, GraphClean):
        run_dtype = x.vals[0].dtype
    else:
        run_dtype = x.ys[0].dtype if isinstance(x, CleanPass) else (net.dtype if dtype is None else dtype)
    _check(net, for_dtype(fault, run_dtype), faults)  # the layered statement of a fault set's shape
    if not _view_fits(net, fault, faults):
        if isinstance(x, GraphClean):
            x = layered_clean_pass(net, x.vals[0], x.vals[0].dtype)
        return layered_inject(
            net, x, fault, faults, values=values, generator=generator, dtype=dtype, adversarial_steps=adversarial_steps
        )
    view = graph_view(net)
    if isinstance(x, CleanPass):
        x = _as_graph_clean(view, x)
    return graph_inject(
        view,
        x,
        fault,
        faults,
        values=values,
        generator=generator,
        dtype=dtype,
        adversarial_steps=adversarial_steps,
        value_bounds=_value_bounds(net, fault),
    )


def layered_inject(
    net: Network,
    x: Tensor | CleanPass,
    fault: Fault,
    faults: FaultSet,
    *,
    values: ValueMode = "random",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    adversarial_steps: int = 2,
) -> Injection:
    """The layered engine (:func:`_propagate` over ``net.layers``): :func:`inject`'s semantics on a
    layered network, kept for the networks whose graph view counts its fault sites differently
    (:func:`_view_fits`) and for side-by-side timing (``benchmarks/engine_parity.py``)."""
    dtype = x.ys[0].dtype if isinstance(x, CleanPass) else (net.dtype if dtype is None else dtype)
    fault = for_dtype(fault, dtype)
    _check(net, fault, faults)
    if values not in ("fixed", "random", "adversarial"):
        raise InvalidArgumentError(f"Expected `values` among fixed, random, adversarial, but got {values!r}.")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    clean = x if isinstance(x, CleanPass) else layered_clean_pass(net, x, dtype)
    dtype = clean.ys[0].dtype
    prep = prepare(net, dtype)
    b = clean.batch
    t_all = faults.n_configs
    widest = max([layer.width for layer in net.layers] + [math.prod(net.input_shape)])
    per = max(1, MAX_ELEMENTS // max(1, b * widest))
    # group configurations by their first faulty layer: each group reuses its own clean prefix
    firsts = first_per_config(fault, faults, net.L)
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
        if values == "adversarial" and fault.chooses_values and any(v is not None for v in vals):
            out, vals = _adversarial(
                partial(_propagate, prep, clean, fault, fs, first=first),
                clean.output,
                _ranges(fault, len(vals)),
                vals,
                adversarial_steps,
            )
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




def differentiable_outputs(
    net: Network | GraphNetwork,
    clean: CleanPass | GraphClean,
    fault: Fault,
    faults: FaultSet,
    values: list[Tensor | None],
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)`` with the autograd graph kept, so that gradients flow to the
    inputs (build ``clean`` with ``clean_pass(..., grad=True)``) and to ``values`` (Byzantine values
    ``(T, 1|B, k)`` or precision offsets ``(T, B, N_l)`` per layer). All T configurations are done in
    one piece (no chunking): keep T x B small."""
    if isinstance(net, GraphNetwork):
        assert isinstance(clean, GraphClean)
        return graph_differentiable_outputs(net, clean, fault, faults, values)
    if _view_fits(net, fault, faults):
        view = graph_view(net)
        gclean = _as_graph_clean(view, clean) if isinstance(clean, CleanPass) else clean
        return graph_differentiable_outputs(view, gclean, fault, faults, values, _value_bounds(net, fault))
    if isinstance(clean, GraphClean):
        x = clean.vals[0]
        clean = layered_clean_pass(net, x, x.dtype, grad=x.requires_grad)
    _check(net, fault, faults)
    prep = prepare(net, clean.ys[0].dtype)
    with torch.enable_grad():
        return _propagate(prep, clean, fault, faults, values, first_faulty_layer(fault, faults, net.L))


def initial_values(
    net: Network | GraphNetwork,
    fault: Fault,
    faults: FaultSet,
    mode: ValueMode,
    batch: int,
    generator: torch.Generator,
    dtype: torch.dtype,
) -> list[Tensor | None]:
    """Starting Byzantine / precision values for :func:`differentiable_outputs` (see
    :mod:`faultbound.measure.values`)."""
    if isinstance(net, GraphNetwork) or _view_fits(net, fault, faults):
        return graph_initial_values(graph_view(net), fault, faults, mode, batch, generator, dtype)
    return _init_values(net, fault, faults, mode, batch, generator, dtype)


def faulty_forward(
    net: Network | GraphNetwork,
    x: Tensor,
    fault: Fault,
    faults: FaultSet,
    *,
    values: ValueMode = "random",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Faulty outputs ``(T, B, n_out)``: :func:`inject` without the bookkeeping."""
    return inject(net, x, fault, faults, values=values, generator=generator, dtype=dtype).outputs
