"""Model builders, weight clipping and the seeded training loop of Section 5.3.

* :func:`mlp` / :func:`tuned_mlp` -- ``Linear -> act -> ... -> Linear`` networks; with a
  ``generator`` their parameters are drawn from it (never from torch's global generator);
* :func:`clip_weights` -- :math:`w_m^{(l)} \\le cap` for every layer, the "trade-off on synaptic
  weights" of 5.3;
* :func:`fit` -- a small mini-batch Adam trainer (MSE or cross-entropy) with an optional penalty.

**Randomness.** No function here changes torch's global random state. :func:`init_linear_` draws
exactly what ``nn.Linear.reset_parameters`` draws (:math:`W, b \\sim U(-1/\\sqrt{n_{in}},
1/\\sqrt{n_{in}})`, through the same ``kaiming_uniform_(a=\\sqrt 5)`` call), but from the given
generator, so ``mlp(..., generator=torch.Generator().manual_seed(s))`` has the very weights that
``torch.manual_seed(s); mlp(...)`` has. :func:`fit` shuffles with its own generator seeded by
``seed``, and runs the model's own random draws (e.g. dropout) inside
``torch.random.fork_rng`` seeded by ``seed``, which restores the global state on return.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from faultbound.errors import InvalidArgumentError

__all__ = ["mlp", "tuned_mlp", "init_linear_", "clip_weights", "fit"]


def init_linear_(layer: nn.Linear, generator: torch.Generator) -> None:
    """Re-draw ``layer``'s parameters in place as ``nn.Linear.reset_parameters`` does, from ``generator``.

    :math:`W \\sim U(-b, b)` through ``kaiming_uniform_(a=\\sqrt 5)`` (so :math:`b = 1/\\sqrt{n_{in}}`
    up to rounding, computed exactly as torch computes it) and the bias :math:`\\sim U(-b, b)`,
    :math:`b = 1/\\sqrt{n_{in}}`; weight first, then bias, as torch draws them.
    """
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        if layer.bias is not None:
            fan_in = layer.weight.shape[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def mlp(
    d_in: int,
    widths: list[int],
    d_out: int,
    activation: Callable[[], nn.Module],
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` with the given hidden widths.

    Without ``generator`` the layers initialise themselves as torch does (from the global
    generator); with one, they are built on the ``meta`` device (drawing nothing) and every
    ``Linear`` is then initialised from ``generator`` in order (:func:`init_linear_`).
    """
    device = None if generator is None else torch.device("meta")
    mods: list[nn.Module] = []
    prev = d_in
    for w in widths:
        mods += [nn.Linear(prev, w, device=device), activation()]
        prev = w
    mods.append(nn.Linear(prev, d_out, device=device))
    model = nn.Sequential(*mods)
    if generator is not None:
        model = model.to_empty(device="cpu")
        for mod in model:
            if isinstance(mod, nn.Linear):
                init_linear_(mod, generator)
    return model


def tuned_mlp(
    d_in: int,
    widths: Sequence[int],
    d_out: int,
    K: float,  # noqa: N803
    generator: torch.Generator | None = None,
) -> nn.Sequential:
    """An MLP of :class:`~faultbound.nn.TunedSigmoid` (K) neurons: :math:`\\varphi(x) = \\sigma(4Kx)`."""
    from faultbound.nn import TunedSigmoid

    if not (isinstance(K, (int, float)) and math.isfinite(K) and K > 0):
        raise InvalidArgumentError(f"Expected K > 0, but got {K}.")
    return mlp(d_in, list(widths), d_out, lambda: TunedSigmoid(float(K)), generator)


def clip_weights(model: nn.Module, cap: float) -> None:
    """Clamp every ``nn.Linear`` weight to :math:`[-cap, cap]` in place (biases are left free).

    This bounds every :math:`w_m^{(l)}` by ``cap``, the "trade-off on synaptic weights" of 5.3.
    """
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.clamp_(-cap, cap)


def fit(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 256,
    penalty: Callable[[nn.Module], Tensor] | None = None,
    weight_cap: float | None = None,
    loss: Literal["mse", "cross_entropy"] = "mse",
    on_epoch: Callable[[int, nn.Module], bool | None] | None = None,
    threads: int | None = 1,
) -> list[float]:
    """Mini-batch training with Adam, seeded; returns the loss per epoch.

    The batches are a fresh permutation per epoch from ``torch.Generator().manual_seed(seed)``;
    any random draw of the model itself happens inside a ``fork_rng`` seeded by ``seed``. Torch's
    global random state is the same after the call as before it.

    Args:
        penalty: added to every batch loss (e.g. ``lambda m: 0.01 * fep_regulariser(m, [2])``).
        weight_cap: clamp the weights to [-cap, cap] after every step (:func:`clip_weights`).
        loss: ``"mse"`` (``Y`` are targets) or ``"cross_entropy"`` (``Y`` are class labels).
        on_epoch: called as ``on_epoch(epoch, model)`` (1-based) after each epoch, in eval mode;
            training stops early when it returns True.
        threads: torch intra-op threads during the call (restored afterwards); small networks train
            fastest on one thread. ``None`` leaves the setting alone.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _fit(model, X, Y, epochs, lr, seed, batch_size, penalty, weight_cap, loss, on_epoch)
    finally:
        torch.set_num_threads(before)


def _fit(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int,
    penalty: Callable[[nn.Module], Tensor] | None,
    weight_cap: float | None,
    loss: str,
    on_epoch: Callable[[int, nn.Module], bool | None] | None,
) -> list[float]:
    x = torch.as_tensor(X, dtype=torch.float32)
    if loss == "cross_entropy":
        y = torch.as_tensor(Y, dtype=torch.int64).reshape(len(x))
    else:
        y = torch.as_tensor(Y, dtype=torch.float32).reshape(len(x), -1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    if weight_cap is not None:
        clip_weights(model, weight_cap)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            out = model(x[idx])
            if loss == "cross_entropy":
                batch_loss = nn.functional.cross_entropy(out, y[idx])
            else:
                batch_loss = ((out - y[idx]) ** 2).mean()
            if penalty is not None:
                batch_loss = batch_loss + penalty(model)
            opt.zero_grad()
            batch_loss.backward()
            opt.step()
            if weight_cap is not None:
                clip_weights(model, weight_cap)
            total += float(batch_loss.detach()) * len(idx)
        losses.append(total / len(x))
        model.eval()
        if on_epoch is not None:
            with torch.no_grad():
                if on_epoch(epoch + 1, model) is True:
                    break
    model.eval()
    return losses
