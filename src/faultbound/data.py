"""Embedded data: scikit-learn's bundled digits and synthetic target functions on [0, 1]^d.

Nothing is downloaded: ``load_digits`` ships inside scikit-learn, and the synthetic targets are
closed-form functions mapping [0, 1]^d to [0, 1], as in the paper's Definition 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import FaultboundError, InvalidArgumentError

__all__ = ["Dataset", "digits", "synthetic", "TARGETS", "load_arrays"]


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` (float64, in [0, 1]) and targets ``y`` (class labels or regression values)."""

    X: np.ndarray
    y: np.ndarray
    name: str
    n_classes: int = 0

    @property
    def is_classification(self) -> bool:
        return self.n_classes > 0

    def onehot(self) -> np.ndarray:
        """One-hot targets of a classification set."""
        out = np.zeros((len(self.y), self.n_classes))
        out[np.arange(len(self.y)), self.y.astype(int)] = 1.0
        return out


def digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), pixels scaled from 0..16 to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - data extra installed by make
        raise FaultboundError("The digits data needs scikit-learn: pip install 'faultbound[data]'.") from e
    d = load_digits()
    return Dataset(d.data.astype(np.float64) / 16.0, d.target.astype(np.int64), "digits", 10)


def _bump(x: Tensor) -> Tensor:
    return torch.exp(-8.0 * ((x - 0.5) ** 2).sum(-1))


def _wave(x: Tensor) -> Tensor:
    return 0.5 + 0.4 * torch.sin(2 * math.pi * x[..., 0]) * x[..., 1:].mean(-1) if x.shape[-1] > 1 else (
        0.5 + 0.4 * torch.sin(2 * math.pi * x[..., 0])
    )


def _ridge(x: Tensor) -> Tensor:
    return torch.sigmoid(6.0 * (x.mean(-1) - 0.5))


#: Synthetic targets F: [0, 1]^d -> [0, 1] (Definition 1), evaluated on tensors (..., d).
TARGETS: dict[str, Callable[[Tensor], Tensor]] = {"bump": _bump, "wave": _wave, "ridge": _ridge}


def synthetic(name: str = "wave", d: int = 2, n: int = 2048, seed: int = 0) -> Dataset:
    """``n`` uniform samples of a named target on [0, 1]^d (seeded)."""
    if name not in TARGETS:
        raise InvalidArgumentError(f"Expected a target among {', '.join(TARGETS)}, but got {name!r}.")
    if d < 1 or n < 1:
        raise InvalidArgumentError(f"Expected d >= 1 and n >= 1, but got d={d}, n={n}.")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, d), dtype=torch.float64, generator=g)
    return Dataset(x.numpy(), TARGETS[name](x).numpy(), f"synthetic-{name}-{d}d")


def load_arrays(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read inputs (and targets when present) from ``.npz`` (keys ``X``/``y``), ``.npy`` or CSV.

    A CSV holds one input per row; no targets. Pickled object arrays are refused.
    """
    import os

    if not os.path.exists(path):
        raise InvalidArgumentError(f"Data file not found: {path}")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                if "X" not in z:
                    raise InvalidArgumentError(f"Expected an array named 'X' in {path}, but got {sorted(z.files)}.")
                X = np.asarray(z["X"], dtype=np.float64)
                y = np.asarray(z["y"]) if "y" in z else None
        elif path.endswith(".npy"):
            X, y = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64), None
        elif path.endswith(".csv"):
            X, y = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2), None
        else:
            raise InvalidArgumentError(f"Expected a .npz, .npy or .csv data file, but got {path}.")
    except (ValueError, OSError) as e:
        if isinstance(e, InvalidArgumentError):
            raise
        raise InvalidArgumentError(f"Cannot read data file {path}: {str(e).splitlines()[0]}") from None
    if not np.isfinite(X).all():
        raise InvalidArgumentError(f"Expected finite inputs, but {path} has NaN or inf.")
    return X, y
