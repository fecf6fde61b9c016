"""Passes over a :class:`~faultbound.network.graph.GraphNetwork`: the paper's layered view.

Every reader builds the DAG; :func:`layered_view` gives the paper's layered
:class:`~faultbound.network.core.Network` of it when the DAG is layered, so the paper's formulas
(which read ``net.layers``) apply:

.. math::

    y^{(0)} = x,\\qquad y^{(l)} = \\varphi_l(A^{(l)} y^{(l-1)} + b^{(l)})\\ (1 \\le l \\le L),
    \\qquad F(x) = A^{(L+1)} y^{(L)} + b^{(L+1)}.

The DAG is layered when its nodes form one path from the input to the output (node i reads node
i - 1 alone), its fault sites are exactly its activation nodes, and each node is

* an affine node (dense, convolution, average pooling, an unfolded per-channel batch norm),
* a reshape of a sample to a flat vector (a ``Flatten``),
* a constant added right after a dense or convolution node (its bias: :meth:`Op.add_bias`), or
* an activation;

and the affine maps and activations then group into hidden layers as
:meth:`~faultbound.network.core.Network.from_chain` does: each hidden layer is the affine maps up
to and including one activation, and after the last activation comes at least one weighted map,
the linear output layer. Batch norms right after a dense or convolution node were folded into it
when the DAG was built (:func:`~faultbound.network.graph._fold_batch_norms`). A layer's ``source``
is the names of its nodes.
"""

from __future__ import annotations

import math

import numpy as np

from faultbound.errors import UnsupportedModelError
from faultbound.network.activations import Activation
from faultbound.network.core import Network
from faultbound.network.gops import Act, Affine, ConstAffine, Rearrange
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Flatten, Op

__all__ = ["layered_or_reason", "layered_view"]


def layered_view(graph: GraphNetwork) -> Network | None:
    """The paper's layered network of ``graph`` (the same function), or ``None`` when the DAG is not
    layered (see the module docstring)."""
    got = layered_or_reason(graph)
    return got if isinstance(got, Network) else None


def layered_or_reason(graph: GraphNetwork) -> Network | str:
    """:func:`layered_view`, or instead of ``None`` one sentence saying why the DAG is not layered."""
    items: list[tuple[str, Op | Activation]] = []
    nodes = graph.nodes
    acts = tuple(i for i, n in enumerate(nodes) if isinstance(n.op, Act))
    if graph.site_nodes != acts:
        extra = [nodes[i].name for i in graph.site_nodes if i not in acts]
        return f"Its fault sites include nodes that are not activations ({', '.join(extra)})."
    for i in range(1, len(nodes)):
        node = nodes[i]
        op = node.op
        where = f"node {node.name!r} ({op.describe()})"
        if node.inputs != (i - 1,):
            return f"The graph is not a chain: {where} reads {', '.join(nodes[j].name for j in node.inputs)}."
        if isinstance(op, Act):
            items.append((node.name, op.act))
        elif isinstance(op, Affine):
            items.append((node.name, op.op))
        elif isinstance(op, Rearrange) and op.kind == "view" and op.args == (math.prod(node.shape),):
            if len(nodes[i - 1].shape) != 1:
                items.append((node.name, Flatten()))
        elif isinstance(op, ConstAffine) and op.scale is None and op.shift is not None:
            prev = items[-1][1] if items else None
            biased = None
            if isinstance(prev, Op) and prev.weighted:
                try:
                    biased = prev.add_bias(np.asarray(op.shift.numpy(), dtype=np.float64))
                except ValueError:
                    biased = None
            if biased is None:
                return f"{where} adds a constant that is not the bias of a dense or convolution node."
            items[-1] = (f"{items[-1][0]}, {node.name}", biased)
        else:
            return f"{where} is neither an affine map nor an activation of the paper's layered form."
    domain = (graph.domain.lo, graph.domain.hi)
    try:
        return Network.from_chain(items, graph.input_shape, domain, graph.dtype)
    except UnsupportedModelError as e:
        return str(e)
