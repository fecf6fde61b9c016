"""Failure counts, validated once at the edge: :func:`failure_counts` makes a :class:`FailureCounts`
that every function inside the library trusts.

A failure distribution counts failing units per layer (the paper's :math:`f_l`):

- neuron faults (and neuron bit flips): L counts, :math:`0 \\le f_l \\le N_l` for hidden layers 1..L;
- synapse faults (and weight bit flips): L+1 counts, synapses (weights) into layers 1..L+1;
- precision (every neuron of a layer off): no counts, one error :math:`\\lambda_l` per hidden layer.

Bounds need a correct neuron in every layer (Theorem 3, :math:`f_l < N_l`), which
``correct_neuron=True`` adds; a measurement may crash a whole layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faultbound.errors import InvalidArgumentError, UnsupportedModelError
from faultbound.faults import Fault, Precision
from faultbound.network.core import Layer, Network
from faultbound.network.gops import Affine
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Conv, Dense

#: A network the counts address: the paper's layers, or a graph's fault sites.
AnyNetwork = Network | GraphNetwork

__all__ = [
    "FailureCounts",
    "failure_counts",
    "hidden_counts",
    "layer_count",
    "max_counts",
    "n_units",
    "AnyNetwork",
    "weight_op_index",
]


class FailureCounts(tuple[int, ...]):
    """Per-layer failure counts, validated for one network and fault model by :func:`failure_counts`
    (a plain tuple of ints otherwise)."""

    __slots__ = ()


def layer_count(net: AnyNetwork, fault: Fault) -> int:
    """How many layers carry failure counts: L for neuron faults, L+1 for synapse and weight faults
    (every layer has its synapses), L for precision errors. On a graph: one count per fault site,
    or per weighted node for synapse and weight faults."""
    if isinstance(net, GraphNetwork):
        return len(net.weighted_nodes) if fault.site in ("synapse", "weight") else net.L
    return net.L + 1 if fault.site in ("synapse", "weight") else net.L


def weight_op_index(layer: Layer) -> int | None:
    """Index in ``layer.ops`` of its only dense/conv op (other ops: flatten, pooling, affine), else None."""
    idx = [i for i, o in enumerate(layer.ops) if isinstance(o, (Dense, Conv))]
    return idx[0] if len(idx) == 1 else None


def n_units(net: AnyNetwork, fault: Fault, l: int) -> int:
    """Number of units of layer ``l`` (1-based) that ``fault`` can hit: neurons, synapses into the
    layer, or entries of its weight tensor (on a graph: site l, or weighted node l)."""
    if isinstance(net, GraphNetwork):
        if fault.site in ("synapse", "weight"):
            node = net.nodes[net.weighted_nodes[l - 1]]
            assert isinstance(node.op, Affine)
            op = node.op.op
            assert isinstance(op, (Dense, Conv))
            if fault.site == "weight":
                return int(op.weight.numel())
            if isinstance(op, Dense):  # on the last axis: one copy of the matrix per token
                return int((op.weight != 0).sum()) * (net.nodes[node.inputs[0]].width // int(op.weight.shape[1]))
            got = op.n_synapses(net.nodes[node.inputs[0]].shape, True)
            assert got is not None  # a convolution counts its (output, input) pairs
            return got
        return net.widths[l - 1]
    layer = net.layers[l - 1]
    if fault.site == "synapse":
        return layer.n_synapses
    if fault.site == "weight":
        wi = weight_op_index(layer)
        if wi is None:
            raise UnsupportedModelError(
                f"Weight bit flips need layer {l} ({layer.source}) to hold exactly one dense or conv op, but it is "
                f"{layer.describe()}."
            )
        op = layer.ops[wi]
        assert isinstance(op, (Dense, Conv))
        return int(op.weight.numel())
    return layer.width


def failure_counts(
    net: AnyNetwork, fault: Fault, failures: Sequence[int] | None, *, correct_neuron: bool = False
) -> FailureCounts:
    """Validate ``failures`` for ``fault`` on ``net`` (see the module docstring).

    Args:
        net: the network.
        fault: the fault model; a :class:`~faultbound.faults.Precision` takes no counts (its
            errors are checked to have one value per hidden layer) and gives ``()``.
        failures: one non-negative integer per layer.
        correct_neuron: also require :math:`f_l < N_l` for neuron faults (the bounds' Theorem 3).

    Example:
        >>> import torch, faultbound as fb
        >>> net = fb.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(),
        ...                                                 torch.nn.Linear(3, 1)))
        >>> failure_counts(net, fb.Crash(), [2])
        (2,)
        >>> failure_counts(net, fb.SynapseCrash(), [1, 3])
        (1, 3)
    """
    if not isinstance(fault, Fault):
        raise InvalidArgumentError(f"Expected a fault model, but got {fault!r}.")
    if not fault.counted:
        errors = fault.errors if isinstance(fault, Precision) else ()
        if len(errors) != net.L:
            per = "fault site" if isinstance(net, GraphNetwork) else "hidden layer"
            raise InvalidArgumentError(
                f"Expected `errors` to have one value per {per} ({net.L}), but got {len(errors)}."
            )
        return FailureCounts(())
    return _counts(
        failures,
        fault.site,
        layer_count(net, fault),
        lambda l: n_units(net, fault, l),
        correct_neuron,
        graph=isinstance(net, GraphNetwork),
    )


def max_counts(net: AnyNetwork, fault: Fault, *, correct_neuron: bool = False) -> tuple[int, ...]:
    """The largest count per layer that :func:`failure_counts` accepts: every unit, or every neuron but
    one with ``correct_neuron`` (a fault with counts only)."""
    keep = 1 if correct_neuron and fault.site not in ("synapse", "weight") else 0
    return tuple(n_units(net, fault, l) - keep for l in range(1, layer_count(net, fault) + 1))


def hidden_counts(
    widths: Sequence[int], failures: Sequence[int] | None, *, correct_neuron: bool = False
) -> FailureCounts:
    """:func:`failure_counts` for a neuron fault given only the hidden widths :math:`N_1..N_L` (for
    code that holds weights but no :class:`Network`: the training regularisers).

    Example:
        >>> hidden_counts([4, 3], [1, 2], correct_neuron=True)
        (1, 2)
    """
    return _counts(failures, "neuron", len(widths), lambda l: int(widths[l - 1]), correct_neuron)


def _counts(
    failures: Sequence[int] | None,
    site: str,
    want: int,
    n_units_of: Callable[[int], int],
    correct_neuron: bool,
    graph: bool = False,
) -> FailureCounts:
    """The one set of rules behind :func:`failure_counts` and :func:`hidden_counts`: ``want``
    integers, :math:`0 \\le f_l \\le` ``n_units_of(l)`` (:math:`<` for neurons with ``correct_neuron``)."""
    if failures is None:
        raise InvalidArgumentError("Expected `failures`, one count per layer, but got None.")
    try:
        f = tuple(int(v) for v in failures)
        if any(float(a) != float(b) for a, b in zip(f, failures, strict=True)):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"Expected `failures` to be integers, but got {list(failures)!r}.") from None
    synapse = site in ("synapse", "weight")
    if graph:
        what = "weighted node (dense or convolution)" if synapse else "fault site"
    else:
        what = "layer 1..L+1 (synapses into each layer)" if synapse else "hidden layer"
    if len(f) != want:
        raise InvalidArgumentError(f"Expected `failures` to have one count per {what} ({want}), but got {len(f)}.")
    for l, v in enumerate(f, start=1):
        if v < 0:
            raise InvalidArgumentError(f"Expected failures >= 0, but got f_{l} = {v}.")
        n = n_units_of(l)
        if correct_neuron and not synapse and v >= n:
            raise InvalidArgumentError(
                f"Expected f_{l} < N_{l} = {n} (Theorem 3 needs a correct neuron in every "
                f"{'fault site' if graph else 'layer'}), but got {v}."
            )
        if v > n:
            unit = "the synapses into" if site == "synapse" else "the weights of" if synapse else "the neurons of"
            where = ("weighted node" if synapse else "site") if graph else "layer"
            raise InvalidArgumentError(f"Expected f_{l} <= {n} ({unit} {where} {l}), but got {v}.")
    return FailureCounts(f)
