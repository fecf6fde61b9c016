"""A small crash-mask forward pass: many failure sets on many inputs at once (float64).

A crashed neuron sends 0 (Definition 2), so a failure set of hidden layer l is a 0/1 mask
:math:`m^{(l)}` and the faulty network computes :math:`y^{(l)} = m^{(l)} \\odot \\varphi(s^{(l)})`.
The applications use it to measure errors next to certified bounds; it reads only the Network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.network.core import Network

__all__ = ["crash_forward", "random_crash_masks", "late_masks", "crash_errors"]


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
