"""The paper's bounds against hand-worked examples and the printed formulas (tests/reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.bounds.paper import printed_fep as lib_printed_fep
from tests.reference import (
    brute_force,
    byzantine_deviation_forward_worst,
    printed_fep,
    printed_theorem5,
    probe_points,
    random_network,
    synapse_reference,
)


def _set(model: nn.Sequential, values: list[list[float] | float]) -> nn.Sequential:
    params = list(model.parameters())
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(torch.as_tensor(v, dtype=p.dtype).expand_as(p))
    return model


def errata5_network() -> fb.Network:
    """ERRATA 5's network: N = (3, 3), w_m = (1, 2, 1), Hardtanh (K = 1, max|phi| = C = 1)."""
    model = _set(
        nn.Sequential(nn.Linear(2, 3), nn.Hardtanh(), nn.Linear(3, 3), nn.Hardtanh(), nn.Linear(3, 1)),
        [1.0, 0.0, 2.0, 0.0, 1.0, 0.0],
    )
    return fb.Network.from_torch(model)


def test_fep_hand_worked_errata5() -> None:
    # Hand-worked: f = (1, 0): C f_1 K w_3 (N_2 - 0) w_2 = 1*1*1*1*3*2 = 6.
    # f = (1, 1): 1*1*1*(3-1)*2 + 1*1*1 = 4 + 1 = 5 -- the printed Fep decreases (ERRATA 5).
    net = errata5_network()
    assert net.w_max == [1.0, 2.0, 1.0]
    assert fb.fep_as_printed(net, [1, 0]) == pytest.approx(6.0)
    assert fb.fep_as_printed(net, [1, 1]) == pytest.approx(5.0)
    assert fb.fep_as_printed(net, [0, 2]) == pytest.approx(2.0)


def test_fep_equals_printed_formula_and_paper_method_on_dense_sigmoid() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        L = int(rng.integers(1, 5))
        widths = [int(v) for v in rng.integers(2, 6, size=L)]
        net = random_network(widths, ["sigmoid"] * L, d_in=3, seed=seed)
        f = [int(rng.integers(0, w)) for w in widths]
        ref = printed_fep(widths, net.w_max, 0.25, f, 1.0)
        assert fb.fep_as_printed(net, f) == pytest.approx(ref, rel=1e-12)
        assert lib_printed_fep(widths, net.w_max, 0.25, f, 1.0) == pytest.approx(ref, rel=1e-12)
        # the sound derivation equals the printed Fep for crashes on a dense sigmoid network
        assert fb.bound(net, f).value == pytest.approx(ref, rel=1e-12)


def test_byzantine_uses_c_plus_max_phi() -> None:
    for seed in range(10):
        net = random_network([3, 4], ["tanh", "tanh"], seed=seed)
        f = [1, 2]
        ref = printed_fep([3, 4], net.w_max, 1.0, f, 0.5 + 1.0)  # C + max|tanh|
        assert fb.bound(net, f, fb.Byzantine(0.5)).value == pytest.approx(ref, rel=1e-12)
        printed = printed_fep([3, 4], net.w_max, 1.0, f, 0.5)
        assert fb.bound(net, f, fb.ByzantineDeviation(0.5)).value == pytest.approx(printed, rel=1e-12)


def test_printed_byzantine_variant_is_exceeded_errata2() -> None:
    # One sigmoid neuron saturated near 1 sending -C: the error is w (1 + C) > f w C.
    lin1, lin2 = nn.Linear(1, 2), nn.Linear(2, 1)
    _set(nn.Sequential(lin1, lin2), [20.0, 0.0, 1.0, 0.0])
    net = fb.Network.from_torch(nn.Sequential(lin1, nn.Sigmoid(), lin2))
    x = torch.ones((1, 1), dtype=torch.float64)
    measured = brute_force(net, [1], fb.Byzantine(1.0), x)
    printed = fb.bound(net, [1], fb.ByzantineDeviation(1.0)).value
    assert printed == pytest.approx(1.0)
    assert measured > printed + 0.9  # ~ 2.0: the printed C-only bound is exceeded
    assert measured <= fb.bound(net, [1], fb.Byzantine(1.0)).value + 1e-12
    # under its own reading (deviation <= C) the printed bound holds
    assert byzantine_deviation_forward_worst(net, [1], 1.0, x) <= printed + 1e-12


def test_theorem5_matches_printed_formula() -> None:
    for seed in range(10):
        net = random_network([3, 2, 4], ["sigmoid"] * 3, seed=seed)
        lam = [0.01, 0.02, 0.005]
        ref = printed_theorem5([3, 2, 4], net.w_max, 0.25, lam)
        res = fb.bound(net, fault=fb.Precision(lam))
        assert res.value == pytest.approx(ref, rel=1e-12)
        assert sum(res.per_layer) == pytest.approx(res.value, rel=1e-12)


def test_synapse_bound_matches_lemma2_reference() -> None:
    for seed in range(10):
        net = random_network([3, 4], ["sigmoid", "sigmoid"], d_in=2, seed=seed)
        g = [2, 1, 3]
        # crash: delta_l = w_m^(l) * Y_{l-1}; Y_0 = 1 (domain [0,1]), Y_1 = Y_2 = 1 (sigmoid)
        delta = [net.w_max[0] * 1.0, net.w_max[1] * 1.0, net.w_max[2] * 1.0]
        ref = synapse_reference(2, [3, 4], net.w_max, 0.25, g, delta)
        assert fb.bound(net, g, fb.SynapseCrash()).value == pytest.approx(ref, rel=1e-12)
        c = 0.7
        delta_b = [c + d for d in delta]
        ref_b = synapse_reference(2, [3, 4], net.w_max, 0.25, g, delta_b)
        assert fb.bound(net, g, fb.SynapseByzantine(c)).value == pytest.approx(ref_b, rel=1e-12)


def test_printed_theorem4_is_degenerate_for_output_synapses() -> None:
    # ERRATA 3: the printed Theorem 4 multiplies by (N_{L+1} - f_{L+1}) = 1 - 1 = 0, so one failing
    # output synapse would give a bound of 0; the sound bound is positive and brute force agrees.
    net = random_network([2], ["sigmoid"], d_in=1, seed=3)
    x = probe_points(net)
    measured = brute_force(net, [0, 1], fb.SynapseCrash(), x)
    assert measured > 0
    assert measured <= fb.bound(net, [0, 1], fb.SynapseCrash()).value + 1e-12


def test_theorem1_tightness_saturating_sigmoids() -> None:
    # Single layer, N = 6 sigmoids with large input weights (saturated near 1 at x = 1) and equal
    # positive output weights 0.1: crashing f of them removes ~ f * 0.1, the bound is f * 0.1 * 1.
    n, w = 6, 0.1
    model = _set(nn.Sequential(nn.Linear(2, n), nn.Linear(n, 1)), [30.0, 0.0, w, 0.0])
    lin1, lin2 = model[0], model[1]
    net = fb.Network.from_torch(nn.Sequential(lin1, nn.Sigmoid(), lin2))
    x = probe_points(net)
    for f in (1, 3, 5):
        b = fb.bound(net, [f]).value
        assert b == pytest.approx(f * w)
        assert brute_force(net, [f], fb.Crash(), x) >= 0.99 * b
    # Theorem 1: N_fail <= (eps - eps') / w_m = (0.36 - 0.05) / 0.1 = 3.1, so 3
    assert fb.bounds.theorem1_max_crashes(net, 0.36, 0.05) == 3
    assert fb.bounds.theorem1_max_crashes(net, 10.0, 0.0) == n
    with pytest.raises(fb.errors.InvalidArgumentError):
        fb.bounds.theorem1_max_crashes(random_network([2, 2], ["sigmoid"] * 2), 1.0, 0.1)


def test_corollary2_waits_hand_worked() -> None:
    net = errata5_network()  # inputs 2, N = (3, 3), output 1
    # layer 1 waits for every input (2); layer 2 for N_1 - f_1 = 3 - 1; output for N_2 - f_2 = 3 - 2
    assert fb.bounds.corollary2_waits(net, [1, 2]) == [2, 2, 1]


def test_lemma1_unbounded_capacity() -> None:
    net = random_network([3, 3], ["sigmoid"] * 2)
    res = fb.bound(net, [1, 0], fb.Byzantine(math.inf))
    assert res.unbounded and res.value == math.inf
    assert res.to_dict()["value"] is None
    assert "Lemma 1" in res.notes[0]
    assert fb.bound(net, [0, 0], fb.Byzantine(math.inf)).value == 0.0
    tol = fb.tolerate(net, 1.0, 0.0, fb.Byzantine(math.inf))
    assert tol.per_layer_max == (0, 0) and tol.maximal == ((0, 0),)


def test_unbounded_activation_needs_capacity_for_printed_fep() -> None:
    net = random_network([3], ["relu"])
    with pytest.raises(fb.errors.UnboundedError):
        fb.fep_as_printed(net, [1])
    assert fb.fep_as_printed(net, [1], capacity=2.0) == pytest.approx(2.0 * net.w_max[1])
    # bound() uses interval propagation over the domain (ERRATA 7): finite, and sound
    b = fb.bound(net, [1]).value
    assert math.isfinite(b)
    assert brute_force(net, [1], fb.Crash(), probe_points(net)) <= b + 1e-12


def test_conv_uses_fan_in_not_width() -> None:
    # ERRATA 6: a conv neuron of layer 2 reads at most C_in k^2 = 1*3*3 inputs (here 8 exist), so
    # the count of correct neurons is min(N_1 - f_1, R).
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid(), nn.Conv2d(1, 1, 3, padding=1), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(16, 1),
    )
    net = fb.Network.from_torch(model, input_shape=(1, 4, 4))
    assert net.layers[1].fan_in == 9
    f = [2, 0]
    N = net.widths
    w = net.w_max
    # hand: T_2 = min(2, 9) * 1 + min(16 - 2, 9) * 0 = 2; D_2 = K w_2 * 2; T_3 = min(16, 16) * D_2
    expected = w[2] * 16 * (0.25 * w[1] * 2)
    assert fb.bound(net, f).value == pytest.approx(expected, rel=1e-12)
    assert fb.fep_as_printed(net, f) == pytest.approx(w[2] * (N[1] - 0) * w[1] * 0.25 * 2, rel=1e-12)


def test_failures_validation() -> None:
    net = random_network([3, 2], ["sigmoid"] * 2)
    for bad in ([1], [1, 2], [-1, 0], [3, 0], [0.5, 0]):
        with pytest.raises(fb.errors.InvalidArgumentError):
            fb.bound(net, bad)  # type: ignore[arg-type]
    with pytest.raises(fb.errors.InvalidArgumentError):
        fb.bound(net, [1, 1], fb.SynapseCrash())  # needs L+1 entries
    with pytest.raises(fb.errors.InvalidArgumentError):
        fb.bound(net, [1, 0], method="nope")  # type: ignore[arg-type]
    with pytest.raises(fb.errors.InvalidArgumentError):
        fb.Byzantine(-1.0)
    with pytest.raises(fb.errors.InvalidArgumentError):
        fb.bound(net, fault=fb.Precision([0.1]))



def test_fep_is_a_deprecated_alias_of_fep_as_printed() -> None:
    net = errata5_network()
    with pytest.warns(DeprecationWarning, match="fep_as_printed"):
        assert fb.fep(net, [1, 0]) == pytest.approx(6.0)
