"""Data passed with ``--data`` / ``--digits`` against the model's domain: refused, or the domain widened.

A certificate holds for inputs of the domain only, so a point outside it is never silently moved
(clipped) or measured as if it were inside. By default such data is refused in one line naming how
many points and which features fall outside; ``--domain-from-data`` widens the domain, per feature,
to the smallest box holding both the domain and the data, and every command says so in its output
(a ``domain_from_data`` object in JSON, a line of text otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from faultbound.cli._common import console
from faultbound.data import describe_outside, outside_box
from faultbound.errors import InvalidArgumentError

DOMAIN_FROM_DATA = typer.Option(
    False,
    "--domain-from-data",
    help="Widen the domain (per feature) to cover the data instead of refusing points outside it.",
)


def fit_domain(net: Any, x: Any, what: str, from_data: bool) -> tuple[Any, dict[str, Any] | None]:
    """``(network, note)``: the network unchanged when every point of ``x`` is in its domain.

    Otherwise, with ``from_data`` the network over the widened box ``[min(lo, x), max(hi, x)]`` and
    a note (points and features outside, the new box); without it an
    :class:`~faultbound.errors.InvalidArgumentError`.
    """
    xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    lo = net.domain.lo.detach().cpu().numpy().astype(np.float64).reshape(-1)
    hi = net.domain.hi.detach().cpu().numpy().astype(np.float64).reshape(-1)
    if xs.shape[1] != lo.size:
        raise InvalidArgumentError(
            f"Expected inputs with {lo.size} features in {what}, but got {xs.shape[1]}."
        )
    n_out, features = outside_box(xs, lo, hi)
    if n_out == 0:
        return net, None
    if not from_data:
        raise InvalidArgumentError(describe_outside(n_out, len(xs), features, what, float(lo.min()), float(hi.max())))
    new_lo = np.minimum(lo, xs.min(axis=0))
    new_hi = np.maximum(hi, xs.max(axis=0))
    shape = tuple(net.input_shape)
    widened = net.with_domain((new_lo.reshape(shape), new_hi.reshape(shape)))
    note = {
        "points_outside": n_out,
        "points": len(xs),
        "features": features,
        "lo": float(new_lo.min()),
        "hi": float(new_hi.max()),
        "text": (
            f"domain widened to the data (--domain-from-data): {n_out} of {len(xs)} points in {what} were outside "
            f"in {len(features)} feature(s); the domain is now [{float(new_lo.min()):g}, {float(new_hi.max()):g}] "
            "(per feature: the smallest box holding the old domain and the data); every certificate below is for it"
        ),
    }
    return widened, note


def say_widened(note: dict[str, Any] | None, json: bool) -> None:
    """Print the widening note as text (JSON output carries it as ``domain_from_data`` instead)."""
    if note is not None and not json:
        console.print(note["text"], markup=False, highlight=False)


def inputs_in_domain(net: Any, data: Path | None, from_data: bool) -> tuple[Any, Any, dict[str, Any] | None]:
    """``(network, X, note)`` for an optional ``--data`` file of inputs: X is ``None`` without one;
    otherwise the file's points are checked against (or widen) the domain as :func:`fit_domain` does."""
    if data is None:
        return net, None, None
    from faultbound.data import load_arrays

    X = load_arrays(str(data))[0]
    net, note = fit_domain(net, X, str(data), from_data)
    return net, X, note
