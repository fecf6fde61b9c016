"""Torch modules that faultbound adds: the paper's sigmoid tuned to a Lipschitz constant K."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TunedSigmoid"]


class TunedSigmoid(nn.Module):
    """The paper's K-Lipschitz sigmoid :math:`x \\mapsto \\sigma(4 K x)` (Section 2.1, Figure 2).

    :math:`\\sigma'(0) = 1/4`, so scaling the input by :math:`4K` makes the Lipschitz constant
    exactly K. ``TunedSigmoid(0.25)`` is the plain sigmoid.

    Example:
        >>> import torch
        >>> TunedSigmoid(2.0)(torch.tensor([0.0])).item()
        0.5
    """

    def __init__(self, K: float = 0.25) -> None:  # noqa: N803 - the paper's notation
        super().__init__()
        if not K > 0:
            from faultbound.errors import InvalidArgumentError

            raise InvalidArgumentError(f"Expected K > 0, but got {K}.")
        self.K = float(K)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x * (4.0 * self.K))

    def extra_repr(self) -> str:
        return f"K={self.K:g}"
