"""Tolerance search against brute-force enumeration with bound(), and eps' estimation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import faultbound as fb
from faultbound.bounds.tolerance import maximal_elements
from tests.reference import random_network
from tests.test_paper_bounds import errata5_network


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.integers(0, 10_000), st.floats(0.1, 0.9))
def test_maximal_elements_brute_force(shape: list[int], seed: int, p: float) -> None:
    ok = np.random.default_rng(seed).random(shape) < p
    got = {tuple(int(v) for v in i) for i in np.argwhere(maximal_elements(ok))}
    cells = [tuple(int(v) for v in i) for i in np.argwhere(ok)]
    want = {
        c for c in cells
        if not any(d != c and all(a >= b for a, b in zip(d, c, strict=True)) for d in cells)
    }
    assert got == want


def test_tolerate_matches_enumeration_with_bound() -> None:
    for seed in range(6):
        net = random_network([3, 4, 2], ["sigmoid", "tanh", "sigmoid"], seed=seed, scale=1.0)
        eps, ep = 2.0, 0.5
        res = fb.tolerate(net, eps, ep)
        ok = {
            f for f in itertools.product(*[range(n) for n in net.widths])
            if fb.bound(net, list(f)).value <= eps - ep
        }
        maximal = {f for f in ok if not any(g != f and all(a >= b for a, b in zip(g, f, strict=True)) for g in ok)}
        assert set(res.maximal or ()) == maximal
        for l in range(net.L):
            single = [f[l] for f in ok if all(v == 0 for i, v in enumerate(f) if i != l)]
            assert res.per_layer_max[l] == max(single)
        assert fb.bound(net, list(res.uniform_failures)).value <= eps - ep
        assert all(fb.bounds.tolerates(net, list(m), eps, ep) for m in res.maximal or ())


def test_tolerate_non_monotone_printed_fep_errata5() -> None:
    # Budget 5.5: f = (1, 0) has Fep 6 (not tolerated) but f = (1, 1) has 5 and f = (1, 2) has
    # 1*1*(3-2)*2 + 2*1 = 4 (tolerated), so (1, 2) is maximal although (1, 0) below it is not
    # tolerated. Our paper bound equals the printed one here (Hardtanh, dense, crash); the search
    # must not assume monotonicity.
    net = errata5_network()
    assert fb.bound(net, [1, 0]).value == pytest.approx(6.0)
    assert fb.bound(net, [1, 1]).value == pytest.approx(5.0)
    res = fb.tolerate(net, 5.5, 0.0)
    assert res.maximal == ((1, 2),)
    assert fb.bound(net, [1, 2]).value == pytest.approx(4.0)
    assert fb.bounds.tolerates(net, [1, 1], 5.5, 0.0) and not fb.bounds.tolerates(net, [1, 0], 5.5, 0.0)


def test_tolerate_validation_and_eps_prime_estimate() -> None:
    net = random_network([3], ["sigmoid"], d_in=2)
    for eps, ep in ((-1.0, 0.0), (0.1, 0.2), (float("nan"), 0.0)):
        with pytest.raises(fb.errors.InvalidArgumentError):
            fb.tolerate(net, eps, ep)
    X = np.random.default_rng(0).random((50, 2))
    y = np.zeros(50)
    est = fb.bounds.estimate_eps_prime(net, X, y)
    with torch.no_grad():
        manual = float(net.forward(torch.as_tensor(X)).abs().max())
    assert est.estimated and est.value == pytest.approx(manual) and est.n_samples == 50
    res = fb.tolerate(net, manual + 1.0, est)
    assert "estimate" in res.notes[0]
    with pytest.raises(fb.errors.InvalidArgumentError):
        fb.bounds.estimate_eps_prime(net, X, np.zeros((50, 3)))
    target_est = fb.bounds.estimate_eps_prime_fn(net, lambda x: torch.zeros(x.shape[0]), n_samples=256)
    assert target_est.estimated and target_est.value >= est.value - 0.5
