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

__all__ = ["Dataset", "digits", "synthetic", "TARGETS", "load_arrays", "check_labels", "outside_box"]


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

    A CSV holds one input per row of numbers (no header); no targets. Pickled object arrays are
    refused, and so are files that are empty, unreadable, hold no rows, or hold non-numbers.
    """
    import os
    import zipfile

    if not os.path.exists(path):
        raise InvalidArgumentError(f"Data file not found: {path}")
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"Expected a data file, but {path} is not a regular file.")
    if not path.endswith((".npz", ".npy", ".csv")):
        raise InvalidArgumentError(f"Expected a .npz, .npy or .csv data file, but got {path}.")
    if os.path.getsize(path) == 0:
        raise InvalidArgumentError(f"Data file {path} is empty.")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                if "X" not in z:
                    raise InvalidArgumentError(f"Expected an array named 'X' in {path}, but got {sorted(z.files)}.")
                X_raw = np.asarray(z["X"])
                y = np.asarray(z["y"]) if "y" in z else None
        elif path.endswith(".npy"):
            X_raw, y = np.asarray(np.load(path, allow_pickle=False)), None
        else:
            X_raw, y = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2), None
    except InvalidArgumentError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError) as e:
        # EOFError must not escape: click would turn it into "Aborted" (exit 130)
        msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidArgumentError(f"Cannot read data file {path}: {msg}") from None
    if not (np.issubdtype(X_raw.dtype, np.number) or X_raw.dtype == np.bool_):
        raise InvalidArgumentError(f"Expected numeric inputs X in {path}, but they have dtype {X_raw.dtype}.")
    X = X_raw.astype(np.float64)
    if X.ndim < 2:
        raise InvalidArgumentError(f"Expected inputs X in {path} with one row per point, but got shape {X.shape}.")
    if X.shape[0] == 0:
        raise InvalidArgumentError(f"Data file {path} holds no rows (X has shape {X.shape}).")
    if not np.isfinite(X).all():
        raise InvalidArgumentError(f"Expected finite inputs, but {path} has NaN or inf.")
    if y is not None and not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise InvalidArgumentError(f"Expected numeric targets y in {path}, but they have dtype {y.dtype}.")
    if y is not None and len(y) != len(X):
        raise InvalidArgumentError(f"Expected one target per input in {path}, but X has {len(X)} rows and y {len(y)}.")
    return X, y


def check_labels(y: np.ndarray, n_outputs: int, what: str) -> np.ndarray:
    """Class labels ``y`` as int64, refused unless they are integers in ``0 .. n_outputs - 1``.

    ``what`` names the source in the error (a file name).
    """
    yf = np.asarray(y)
    if yf.ndim != 1:
        raise InvalidArgumentError(f"Expected class labels y of shape (n,) in {what}, but got shape {yf.shape}.")
    if yf.size and not np.all(np.equal(np.mod(yf, 1), 0)):
        raise InvalidArgumentError(f"Expected integer class labels y in {what}, but some are fractional.")
    bad = (yf < 0) | (yf >= n_outputs)
    if bad.any():
        raise InvalidArgumentError(
            f"Expected class labels in 0..{n_outputs - 1} (the network has {n_outputs} outputs), but "
            f"{int(bad.sum())} labels in {what} are outside, e.g. {yf[bad][0]:g}."
        )
    return yf.astype(np.int64)


def outside_box(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[int, list[int]]:
    """How many rows of ``x`` (n, d) leave the box ``[lo, hi]`` (d,), and which features do."""
    out = (x < lo) | (x > hi)
    return int(out.any(axis=1).sum()), [int(i) for i in np.flatnonzero(out.any(axis=0))]


def describe_outside(n_out: int, n: int, features: list[int], what: str, lo: float, hi: float) -> str:
    """The one-line refusal for data outside the domain."""
    shown = ", ".join(str(f) for f in features[:8]) + (f" (and {len(features) - 8} more)" if len(features) > 8 else "")
    return (
        f"{n_out} of {n} points in {what} fall outside the domain [{lo:g}, {hi:g}] in features {shown}; "
        "the certificates hold only inside the domain and the points are never clipped: pass --domain LO,HI "
        "that covers them, or --domain-from-data to widen the domain to the data."
    )
