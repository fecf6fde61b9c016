"""A small crash-mask forward pass: many failure sets on many inputs at once (float64).

A crashed neuron sends 0 (Definition 2), so a failure set of hidden layer l is a 0/1 mask
:math:`m^{(l)}` and the faulty network computes :math:`y^{(l)} = m^{(l)} \\odot \\varphi(s^{(l)})`.
The applications use it to measure errors next to certified bounds; it reads only the network.
On a :class:`~faultbound.network.graph.GraphNetwork` the masks address its fault sites (in
topological order) and :func:`graph_crash_forward` multiplies each site node's output by its mask,
so every node that reads a site sees the crashed units as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork

__all__ = [
    "crash_forward",
    "random_crash_masks",
    "late_masks",
    "crash_errors",
    "graph_crash_forward",
    "graph_crash_errors",
]

#: Most float64 values one chunk of :func:`graph_crash_forward` holds per node (32 MB).
GRAPH_CHUNK_ELEMENTS = 1 << 22


def random_crash_masks(net: Network, failures: Sequence[int], runs: int, generator: torch.Generator) -> list[Tensor]:
    """``runs`` uniformly random failure sets with exactly ``failures[l]`` crashed neurons in layer l.

    Returns one float64 mask ``(runs, N_l)`` per hidden layer (1 = correct, 0 = crashed).
    """
    masks = []
    for layer, f in zip(net.hidden, failures, strict=True):
        n = layer.width
        order = torch.rand((runs, n), generator=generator, dtype=torch.float64).argsort(1)
        m = torch.ones((runs, n), dtype=torch.float64)
        if f > 0:
            m.scatter_(1, order[:, :f], 0.0)
        masks.append(m)
    return masks


def late_masks(delays: Sequence[Tensor], failures: Sequence[int]) -> list[Tensor]:
    """Masks that crash, in each run, the ``failures[l]`` neurons with the largest delays of layer l."""
    masks = []
    for d, f in zip(delays, failures, strict=True):
        m = torch.ones_like(d, dtype=torch.float64)
        if f > 0:
            idx = d.topk(f, dim=1).indices
            m.scatter_(1, idx, 0.0)
        masks.append(m)
    return masks


def crash_forward(net: Network, x: Tensor, masks: Sequence[Tensor], chunk: int = 64) -> Tensor:
    """:math:`F_{fail}(x)` for every failure set and input: shape ``(runs, B, n_outputs)``.

    Args:
        x: inputs ``(B, *input_shape)``.
        masks: one ``(runs, N_l)`` mask per hidden layer (1 keeps the neuron, 0 crashes it).
    """
    if len(masks) != net.L:
        raise InvalidArgumentError(f"Expected one mask per hidden layer ({net.L}), but got {len(masks)}.")
    runs = int(masks[0].shape[0]) if masks else 1
    B = int(x.shape[0])
    x = x.to(torch.float64)
    outs = []
    for start in range(0, runs, chunk):
        stop = min(runs, start + chunk)
        r = stop - start
        y = x.unsqueeze(0).expand(r, *x.shape).reshape(r * B, *x.shape[1:])
        for idx, layer in enumerate(net.layers):
            y = layer.forward(y)
            if layer.activation is not None:
                m = masks[idx][start:stop].reshape(r, 1, *layer.out_shape)
                y = (y.reshape(r, B, *layer.out_shape) * m).reshape(r * B, *layer.out_shape)
        outs.append(y.reshape(r, B, -1))
    return torch.cat(outs, 0)


def crash_errors(net: Network, x: Tensor, masks: Sequence[Tensor], chunk: int = 64) -> Tensor:
    """Per run, :math:`\\max_x \\|F_{fail}(x) - F(x)\\|_\\infty` over the batch: shape ``(runs,)``."""
    with torch.no_grad():
        ref = net.forward(x.to(torch.float64))
        out = crash_forward(net, x, masks, chunk)
        return (out - ref.unsqueeze(0)).abs().amax(dim=(1, 2))


def graph_crash_forward(net: GraphNetwork, x: Tensor, masks: Sequence[Tensor]) -> Tensor:
    """:math:`F_{fail}(x)` of a graph for every failure set and input: shape ``(runs, B, n_outputs)``.

    ``masks[s]`` is ``(runs, N_s)`` for fault site s+1 (1 keeps the unit, 0 crashes it: it sends 0
    to every node that reads the site). Runs are evaluated in chunks of at most
    :data:`GRAPH_CHUNK_ELEMENTS` values per node; a node's value is freed after its last reader.
    """
    if len(masks) != net.L:
        raise InvalidArgumentError(f"Expected one mask per fault site ({net.L}), but got {len(masks)}.")
    runs = int(masks[0].shape[0])
    B = int(x.shape[0])
    x = x.to(torch.float64)
    widest = max(n.width for n in net.nodes)
    chunk = max(1, GRAPH_CHUNK_ELEMENTS // max(1, B * widest))
    outs = []
    with torch.no_grad():
        for start in range(0, runs, chunk):
            stop = min(runs, start + chunk)
            r = stop - start

            def crash(k: int, v: Tensor, start: int = start, stop: int = stop, r: int = r) -> Tensor:
                shape = net.nodes[net.site_nodes[k]].shape
                m = masks[k][start:stop].to(torch.float64).reshape(r, 1, *shape)
                return (v.reshape(r, B, *shape) * m).reshape(r * B, *shape)

            xr = x.unsqueeze(0).expand(r, *x.shape).reshape(r * B, *x.shape[1:])
            outs.append(net.forward(xr, crash).reshape(r, B, -1))
    return torch.cat(outs, 0)


def graph_crash_errors(net: GraphNetwork, x: Tensor, masks: Sequence[Tensor]) -> Tensor:
    """Per run, :math:`\\max_x \\|F_{fail}(x) - F(x)\\|_\\infty` of a graph over the batch: ``(runs,)``."""
    with torch.no_grad():
        ref = net.forward(x.to(torch.float64))
        out = graph_crash_forward(net, x, masks)
        return (out - ref.unsqueeze(0)).abs().amax(dim=(1, 2))
