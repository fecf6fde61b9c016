"""The activation registry against numerical references: K, range, slope on intervals, image."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from faultbound.network.activations import activation_from_module
from tests.reference import ACTS

GRID = torch.linspace(-30, 30, 600_001, dtype=torch.float64)


def _act(name: str):  # type: ignore[no-untyped-def]
    a = activation_from_module(ACTS[name]())
    assert a is not None
    return a


@pytest.mark.parametrize("name", sorted(ACTS))
def test_lipschitz_constant_and_range(name: str) -> None:
    a = _act(name)
    y = a(GRID)
    slopes = (y[1:] - y[:-1]).abs() / (GRID[1:] - GRID[:-1])
    # K is the sup of |phi'|: never below the finite-difference slopes, and close to their max
    assert float(slopes.max()) <= a.K * (1 + 1e-9)
    assert float(slopes.max()) >= a.K * (1 - 1e-3)
    assert float(y.min()) >= a.lo - 1e-12
    assert float(y.max()) <= a.hi + 1e-12
    if math.isfinite(a.lo):
        assert float(y.min()) <= a.lo + 1e-3 or name in ("relu", "softplus")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(ACTS)), st.floats(-12, 12), st.one_of(st.just(0.0), st.floats(1e-3, 10)))
def test_slope_and_image_on_intervals(name: str, a0: float, width: float) -> None:
    a = _act(name)
    lo = torch.tensor([a0], dtype=torch.float64)
    hi = lo + width
    xs = torch.linspace(a0, a0 + width, max(2, min(20_001, int(width / 1e-4))), dtype=torch.float64)
    ys = a(xs)
    s = float(a.slope(lo, hi)[0])
    if width > 0:
        fd = float(((ys[1:] - ys[:-1]).abs() / (xs[1:] - xs[:-1])).max())
        assert fd <= s * (1 + 1e-7) + 1e-9  # sound: never below the true local slope
        assert s <= a.K * (1 + 1e-9)  # and never worse than the global constant
    ilo, ihi = a.image(lo, hi)
    assert float(ilo[0]) <= float(ys.min()) + 1e-12
    assert float(ihi[0]) >= float(ys.max()) - 1e-12
    assert float(ys.min()) - float(ilo[0]) <= 1e-6 and float(ihi[0]) - float(ys.max()) <= 1e-6  # exact
