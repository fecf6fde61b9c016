"""Differentiable certified crash bounds, as functions of the weights, used as regularisers.

The constants of each hidden layer (its Lipschitz constant :math:`K_l`, the largest value a neuron
sends :math:`Y_l = \\max|\\varphi|` and the width of its range) are read off the activation
registry (:func:`faultbound.network.activations.activation_from_module`), the same objects that a
:class:`~faultbound.network.core.Network` holds, so the regulariser and ``faultbound.bound`` agree on
them by construction; the widths :math:`N_l` are the weights' shapes.

**The paper regulariser** (:func:`fep_paper_torch`) is the sound recursion behind Theorem 2
(``method="paper"``, :mod:`faultbound.bounds.paper`) for crashes of dense networks, where the fan-in
is :math:`R_l = N_{l-1}`, so :math:`\\min(f_{l-1}, R_l) = f_{l-1}`:

.. math::

    T_l = f_{l-1} Y_{l-1} + (N_{l-1} - f_{l-1}) D_{l-1},\\quad D_l = K_l\\, w_m^{(l)} T_l,\\quad
    \\mathrm{Fep} = w_m^{(L+1)} T_{L+1},

with :math:`w_m^{(l)} = \\max |W^{(l)}|` (exact; or, with ``smooth = t``, the upper bound
:math:`t \\log \\sum e^{|w|/t} \\ge \\max |w|`, so the smoothed value is still a certified bound).
It *is* the recursion of :mod:`faultbound.bounds.paper` (:func:`~faultbound.bounds.paper.neuron_recursion`,
written once for numpy and torch) on the same numbers; the tests pin the two (and, with one
activation, the printed Theorem 2) to each other on random networks.

**The per-neuron regulariser** (:func:`fep_neuron_torch`) propagates one deviation per neuron.
Neuron j of layer l receives at most :math:`\\sum_i |w_{ji}| d_i` from correct neurons and, if f of
its inputs crash, at most the f largest :math:`|w_{ji}|\\,(Y - d_i)` more; a correct neuron's
deviation is also at most the width of its activation's range (ERRATA 5):

.. math::

    d^{(l)}_j = \\min\\Big(K_l \\big[\\textstyle\\sum_i |w_{ji}| d^{(l-1)}_i
        + \\operatorname{top}_{f_{l-1}}\\, |w_{ji}| (Y_{l-1} - d^{(l-1)}_i)\\big],\\ \\mathrm{width}_l\\Big),

and the output error is the same sum at the output, maximised over outputs. Each receiver picks its
own worst failure set, so this is an upper bound of the worst case (sound) and never above the paper
recursion; it is differentiable almost everywhere (``torch.topk``, ``abs``, ``min``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from faultbound.bounds.paper import neuron_recursion
from faultbound.errors import InvalidArgumentError
from faultbound.failures import hidden_counts
from faultbound.network.activations import Activation, activation_from_module

__all__ = ["DenseConstants", "dense_constants", "fep_paper_torch", "fep_neuron_torch", "fep_regulariser"]


@dataclass(frozen=True)
class DenseConstants:
    """An MLP ``Linear -> act -> ... -> Linear`` as the regularisers read it.

    ``weights`` are the live ``nn.Linear`` weights :math:`W^{(1)}, \\dots, W^{(L+1)}` (gradients flow
    through them); ``activations`` the registry's value for each hidden layer, whose ``K``,
    ``max_abs`` (:math:`Y_l`) and ``width`` are the per-layer constants.
    """

    weights: tuple[Tensor, ...]
    activations: tuple[Activation, ...]

    @property
    def K(self) -> list[float]:  # noqa: N802 - the paper's notation
        return [a.K for a in self.activations]

    @property
    def Y(self) -> list[float]:  # noqa: N802
        return [a.max_abs for a in self.activations]

    @property
    def width(self) -> list[float]:
        return [a.width for a in self.activations]


_SHAPE = "Expected an MLP alternating Linear and bounded activations, ending with Linear."


def dense_constants(model: nn.Module) -> DenseConstants:
    """Read an MLP's weights and per-layer constants, the activations through the registry.

    Raises:
        InvalidArgumentError: for a module that is neither ``nn.Linear``, a container, nor a
            registered activation with a bounded range, or when Linear and activations do not
            alternate as ``Linear -> act -> ... -> Linear``.
    """
    weights: list[Tensor] = []
    acts: list[Activation] = []
    for mod in model.modules():
        if type(mod) is nn.Linear:
            weights.append(mod.weight)
            continue
        if type(mod) is nn.Sequential:
            continue
        act = activation_from_module(mod)
        if act is None or not act.bounded:
            raise InvalidArgumentError(
                "The Fep regulariser needs Linear layers and bounded registered activations, but got "
                f"{type(mod).__name__}{'' if act is None else ' (unbounded)'}."
            )
        if len(acts) != len(weights) - 1:
            raise InvalidArgumentError(_SHAPE)
        acts.append(act)
    if len(acts) != len(weights) - 1:
        raise InvalidArgumentError(_SHAPE)
    return DenseConstants(tuple(weights), tuple(acts))


def _check_reg_args(weights: Sequence[Tensor], K: Sequence[float], failures: Sequence[int]) -> int:  # noqa: N803
    L = len(weights) - 1
    if L < 1:
        raise InvalidArgumentError("Expected at least one hidden layer (two weight matrices).")
    if len(K) != L:
        raise InvalidArgumentError(f"Expected one K per hidden layer ({L}), but got {len(K)}.")
    hidden_counts([w.shape[0] for w in weights[:-1]], failures, correct_neuron=True)
    return L


def _per_layer(v: Sequence[float] | float, L: int) -> list[float]:
    return [float(v)] * L if isinstance(v, (int, float)) else [float(x) for x in v]


def _wmax(w: Tensor, smooth: float | None) -> Tensor:
    a = w.abs().flatten()
    if smooth is None:
        return a.max()
    return smooth * torch.logsumexp(a / smooth, 0)


def fep_paper_torch(
    weights: Sequence[Tensor],
    K: Sequence[float],  # noqa: N803
    failures: Sequence[int],
    Y: Sequence[float] | float = 1.0,  # noqa: N803
    smooth: float | None = None,
) -> Tensor:
    """The paper recursion (module docstring) as a differentiable function of the weights.

    Args:
        weights: :math:`W^{(1)}, \\dots, W^{(L+1)}`, shapes ``(N_l, N_{l-1})``.
        K: the Lipschitz constant of each hidden layer.
        failures: crashed neurons per hidden layer.
        Y: the largest value a neuron of each hidden layer sends (1 for a sigmoid).
        smooth: temperature of the smooth max (``None``: exact max).

    For a dense network this equals ``faultbound.bound(net, failures, method="paper")`` (exact max).
    """
    L = _check_reg_args(weights, K, failures)
    n_prev = [int(w.shape[1]) for w in weights]  # dense: the fan-in is the previous width
    wm = [_wmax(w, smooth) for w in weights]
    out = neuron_recursion(n_prev, n_prev, wm, list(K), [int(f) for f in failures], _per_layer(Y, L), _mul_counts)
    return torch.as_tensor(out, dtype=weights[0].dtype)


def _mul_counts(count: Any, value: Any) -> Any:
    """``count * value`` for an integer count, 0 when the count is 0."""
    return 0.0 if int(count) == 0 else float(count) * value


def fep_neuron_torch(
    weights: Sequence[Tensor],
    K: Sequence[float],  # noqa: N803
    failures: Sequence[int],
    Y: Sequence[float] | float = 1.0,  # noqa: N803
    width: Sequence[float] | float = 1.0,
) -> Tensor:
    """The per-neuron propagation (module docstring), differentiable in the weights.

    ``width`` is the width of each hidden activation's range (1 for a sigmoid), a cap on a correct
    neuron's deviation; ``Y`` must be at least every |value| a neuron sends, and at least ``width``.
    """
    L = _check_reg_args(weights, K, failures)
    ys = _per_layer(Y, L)
    ws = _per_layer(width, L)
    d = torch.zeros(weights[0].shape[1], dtype=weights[0].dtype)
    f_prev, y_prev = 0, 0.0
    for l, w in enumerate(weights):
        a = w.abs()
        t = a @ d
        if f_prev > 0:
            t = t + torch.topk(a * (y_prev - d).clamp_min(0.0), f_prev, dim=1).values.sum(1)
        if l == L:
            return t.max()
        d = torch.minimum(K[l] * t, torch.full_like(t, ws[l]))
        f_prev, y_prev = int(failures[l]), ys[l]
    raise AssertionError("unreachable")  # pragma: no cover


def fep_regulariser(
    model: nn.Module,
    failures: Sequence[int],
    kind: Literal["paper", "neuron"] = "neuron",
    smooth: float | None = None,
) -> Tensor:
    """A certified crash bound of ``model`` as a differentiable function of its weights.

    ``kind="paper"``: :func:`fep_paper_torch`; ``kind="neuron"``: :func:`fep_neuron_torch`; the
    constants come from :func:`dense_constants`.
    """
    if kind not in ("paper", "neuron"):
        raise InvalidArgumentError(f"Expected kind 'paper' or 'neuron', but got {kind!r}.")
    c = dense_constants(model)
    if kind == "paper":
        return fep_paper_torch(c.weights, c.K, failures, c.Y, smooth)
    return fep_neuron_torch(c.weights, c.K, failures, c.Y, [min(a, b) for a, b in zip(c.width, c.Y, strict=True)])
