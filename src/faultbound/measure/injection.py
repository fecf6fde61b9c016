"""The result of a fault injection (:func:`faultbound.measure.inject`), layered or graph."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["Injection"]


@dataclass(frozen=True, eq=False)
class Injection:
    """Result of :func:`inject`.

    Attributes:
        outputs: faulty outputs ``(T, B, n_out)``.
        clean: clean outputs ``(B, n_out)``.
        errors: :math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty`, ``(T, B)`` (NaN counted as inf).
        values: the Byzantine / precision values used, per layer (``None`` where none), so that a
            run can be replayed with ``values="fixed"``.
    """

    outputs: Tensor
    clean: Tensor
    errors: Tensor
    values: tuple[Tensor | None, ...]
