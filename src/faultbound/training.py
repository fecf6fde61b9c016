"""Training helpers (robustness versus ease of learning, Section 5.3).

:func:`fit` is a small, seeded full-batch trainer used by the demo and the applications.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["fit", "mlp"]


def mlp(d_in: int, widths: list[int], d_out: int, activation: Callable[[], nn.Module]) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` with the given hidden widths."""
    mods: list[nn.Module] = []
    prev = d_in
    for w in widths:
        mods += [nn.Linear(prev, w), activation()]
        prev = w
    mods.append(nn.Linear(prev, d_out))
    return nn.Sequential(*mods)


def fit(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 256,
    penalty: Callable[[nn.Module], Tensor] | None = None,
) -> list[float]:
    """Mean-squared-error training with Adam, seeded; returns the loss per epoch.

    ``penalty(model)`` is added to the loss when given (e.g. a differentiable Fep regulariser).
    """
    torch.manual_seed(seed)
    x = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(Y, dtype=torch.float32).reshape(len(x), -1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = ((model(x[idx]) - y[idx]) ** 2).mean()
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        losses.append(total / len(x))
    model.eval()
    return losses
