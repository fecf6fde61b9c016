"""Campaign statistics as mergeable state.

A state is a plain ``dict[str, Any]``; every key declares in :data:`REDUCTIONS` how two states merge:

* ``"sum"`` -- counts and sums (:math:`n`, :math:`\\sum e`, changed predictions, correct predictions);
* ``"max"`` -- the largest error;
* ``"concat"`` -- the individual errors (for quantiles), in configuration order;
* ``"argmax:<key>"`` -- a payload (the worst configuration and input) taken from the state whose
  ``<key>`` is larger (the first one on ties).

Merging is associative, so a campaign split into chunks (resumed, or spread over workers) gives
exactly the state of one uninterrupted run when the chunks are merged in order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["REDUCTIONS", "empty_state", "chunk_state", "merge_states", "summarize", "wilson"]

REDUCTIONS: dict[str, str] = {
    "evaluations": "sum",
    "error_sum": "sum",
    "error_max": "max",
    "errors": "concat",
    "changed": "sum",
    "correct": "sum",
    "labeled": "sum",
    "worst": "argmax:error_max",
}


def empty_state() -> dict[str, Any]:
    """The neutral element of :func:`merge_states`."""
    return {
        "evaluations": 0,
        "error_sum": 0.0,
        "error_max": -math.inf,
        "errors": np.zeros(0, dtype=np.float32),
        "changed": 0,
        "correct": 0,
        "labeled": 0,
        "worst": None,
    }


def chunk_state(
    errors: Tensor,
    outputs: Tensor,
    clean: Tensor,
    labels: Tensor | None,
    worst_payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """State of one chunk: ``errors`` ``(T, B)``, faulty ``outputs`` ``(T, B, n_out)``, ``clean``
    outputs ``(B, n_out)``, integer ``labels`` ``(B,)`` or None. ``worst_payload`` describes the
    configuration/input at ``errors.argmax()`` (flattened row-major)."""
    e = errors.double()
    st = empty_state()
    st["evaluations"] = int(e.numel())
    st["error_sum"] = float(e.sum()) if e.numel() else 0.0
    st["error_max"] = float(e.max()) if e.numel() else -math.inf
    st["errors"] = e.reshape(-1).float().numpy().copy()
    if outputs.shape[-1] > 1:
        pred = outputs.argmax(-1)
        st["changed"] = int((pred != clean.argmax(-1).unsqueeze(0)).sum())
        if labels is not None:
            st["correct"] = int((pred == labels.unsqueeze(0)).sum())
            st["labeled"] = int(pred.numel())
    st["worst"] = worst_payload
    return st


def merge_states(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Merge two states key by key, as :data:`REDUCTIONS` declares (``a`` comes first)."""
    out: dict[str, Any] = {}
    for key, how in REDUCTIONS.items():
        if how == "sum":
            out[key] = a[key] + b[key]
        elif how == "max":
            out[key] = max(a[key], b[key])
        elif how == "concat":
            out[key] = np.concatenate([a[key], b[key]])
        else:
            ref = how.split(":", 1)[1]
            take_b = a[key] is None or (b[key] is not None and b[ref] > a[ref])
            out[key] = b[key] if take_b else a[key]
    return out


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n``:

    .. math::

        \\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}.
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(
    state: dict[str, Any], quantiles: tuple[float, ...] = (0.5, 0.9, 0.99), classifier: bool = False
) -> dict[str, Any]:
    """The figures a user reads: max, mean and quantiles of the output error, and for classifiers
    the rate of changed predictions and the faulty accuracy with 95% Wilson intervals."""
    n = int(state["evaluations"])
    errs = state["errors"]
    out: dict[str, Any] = {
        "evaluations": n,
        "max_error": float(state["error_max"]) if n else None,
        "mean_error": float(state["error_sum"]) / n if n else None,
        "quantiles": {
            str(q): float(np.quantile(errs.astype(np.float64), q)) if errs.size else None for q in quantiles
        },
    }
    if classifier:
        out["changed_rate"] = state["changed"] / n if n else None
        out["changed_rate_ci95"] = list(wilson(int(state["changed"]), n))
    if state["labeled"]:
        out["accuracy"] = state["correct"] / state["labeled"]
        out["accuracy_ci95"] = list(wilson(int(state["correct"]), int(state["labeled"])))
    out["worst"] = state["worst"]
    return out
