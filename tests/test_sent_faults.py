"""A fault model defined here, outside the library, gets sound paper, tight and exact bounds.

Each model below only states what a failing unit sends (:class:`~faultbound.faults.Sent`: the
fault-free value y times a gain g, plus a v of [lo, hi] the adversary picks); no code of the library
knows it. The bounds must cover a brute force written from that statement alone: a numpy forward
pass where a failing neuron sends g * (its fault-free value) + v, every failure set of the drawn
sizes enumerated, v at every vertex of [lo, hi]^k and at random, inputs at the domain's corners, at
random and at the exact method's witness.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import faultbound as fb
from faultbound.errors import UnsupportedModelError
from faultbound.faults import NeuronFault, Sent, SynapseFault
from tests.hyp import examples, soundness

TOL = 1e-9


@dataclass(frozen=True)
class SignFlip(NeuronFault):
    """A failing neuron sends minus its fault-free value (g = -1)."""

    @property
    def name(self) -> str:
        return "sign-flip"

    @property
    def sent(self) -> Sent:
        return Sent(-1.0, 0.0, 0.0)


@dataclass(frozen=True)
class Skewed(NeuronFault):
    """A failing neuron sends any value of [-0.2, 0.7] (g = 0, an asymmetric range)."""

    @property
    def name(self) -> str:
        return "skewed"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, -0.2, 0.7)


@dataclass(frozen=True)
class HalfNoisy(NeuronFault):
    """A failing neuron sends half its fault-free value plus any v of [-0.1, 0.3] (g = 0.5)."""

    @property
    def name(self) -> str:
        return "half-noisy"

    @property
    def sent(self) -> Sent:
        return Sent(0.5, -0.1, 0.3)


@dataclass(frozen=True)
class SynapseHalf(SynapseFault):
    """A failing synapse transmits half its fault-free w y (g = 0.5)."""

    @property
    def name(self) -> str:
        return "synapse-half"

    @property
    def sent(self) -> Sent:
        return Sent(0.5, 0.0, 0.0)


# ----------------------------------------------------------------------------- reference
# (g, lo, hi) of each model, restated here so that the reference reads no library code.
STATED = {SignFlip: (-1.0, 0.0, 0.0), Skewed: (0.0, -0.2, 0.7), HalfNoisy: (0.5, -0.1, 0.3)}
ACT = {
    "relu": lambda s: np.maximum(s, 0.0),
    "leaky": lambda s: np.where(s >= 0, s, 0.1 * s),
    "hardtanh": lambda s: np.clip(s, -1.0, 1.0),
    "tanh": np.tanh,
    "sigmoid": lambda s: 1.0 / (1.0 + np.exp(-s)),
}
MODULE = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.1), "hardtanh": nn.Hardtanh, "tanh": nn.Tanh,
          "sigmoid": nn.Sigmoid}


def make_net(widths: list[int], act: str, d_in: int, n_out: int, seed: int) -> tuple[fb.Network, list]:
    """A random MLP on [-1, 1]^d_in and its layers as (W, b, activation name or None) in float64."""
    g = np.random.default_rng(seed)
    layers, mods, prev = [], [], d_in
    for n in [*widths, n_out]:
        W, b = g.normal(0.0, 1.0, (n, prev)), g.normal(0.0, 0.3, n)
        lin = nn.Linear(prev, n).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        last = len(layers) == len(widths)
        layers.append((W, b, None if last else act))
        mods += [lin] if last else [lin, MODULE[act]()]
        prev = n
    return fb.Network.from_torch(nn.Sequential(*mods).double(), domain=(-1.0, 1.0)), layers


def forward(layers: list, X: np.ndarray, sent: tuple[float, float, float],
            fail: dict[int, tuple[tuple[int, ...], np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Clean and faulty outputs for inputs ``X`` (n, d): ``fail[l] = (units, v)`` of hidden layer l send
    g * (their fault-free value) + v."""
    g = sent[0]
    y, yc = X.T.copy(), X.T.copy()
    for l, (W, b, act) in enumerate(layers, start=1):
        sc, s = W @ yc + b[:, None], W @ y + b[:, None]
        if act is None:
            return sc.T, s.T
        yc, y = ACT[act](sc), ACT[act](s)
        units, v = fail.get(l, ((), np.zeros(0)))
        for j, vj in zip(units, v, strict=True):
            y[j] = g * yc[j] + vj
    raise AssertionError("no output layer")


def brute_force(layers: list, X: np.ndarray, sent: tuple[float, float, float], counts: list[int],
                rng: np.random.Generator) -> float:
    """max over failure sets of the sizes ``counts``, values (vertices and random) and inputs."""
    _, lo, hi = sent
    widths = [W.shape[0] for W, _, _ in layers[:-1]]
    per_layer = [list(itertools.combinations(range(n), f)) for n, f in zip(widths, counts, strict=True)]
    worst = 0.0
    for sets in itertools.product(*per_layer):
        k = sum(len(s) for s in sets)
        choices = [np.array(c) for c in itertools.product(*[sorted({lo, hi})] * k)]
        choices += [rng.uniform(lo, hi, k) for _ in range(3)] if lo < hi else []
        for v in choices:
            fail, at = {}, 0
            for l, units in enumerate(sets, start=1):
                fail[l] = (units, v[at : at + len(units)])
                at += len(units)
            clean, bad = forward(layers, X, sent, fail)
            worst = max(worst, float(np.abs(bad - clean).max()))
    return worst


def probe(d: int, rng: np.random.Generator, n: int = 40) -> np.ndarray:
    corners = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))
    return np.concatenate([corners, rng.uniform(-1.0, 1.0, (n, d))])


def replayed(layers: list, sent: tuple[float, float, float], w: dict) -> float:
    """The reference's error at the exact method's witness (its input, failure set and values)."""
    fail = {}
    for key, units in w["failure_set"].items():
        v = w.get("values", {}).get(key, [sent[1]] * len(units))
        fail[int(key)] = (tuple(units), np.asarray(v, dtype=np.float64))
    clean, bad = forward(layers, np.asarray(w["input"])[None], sent, fail)
    return float(np.abs(bad - clean).max())


# ----------------------------------------------------------------------------- properties
@st.composite
def cases(draw: st.DrawFn, acts: tuple[str, ...]) -> tuple:
    L = draw(st.integers(1, 2))
    widths = [draw(st.integers(2, 3)) for _ in range(L)]
    act = draw(st.sampled_from(acts))
    net, layers = make_net(widths, act, draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(0, 10_000)))
    cls = draw(st.sampled_from(sorted(STATED, key=lambda c: c.__name__)))
    counts = [draw(st.integers(0, min(2, n - 1))) for n in widths]
    return net, layers, cls, counts, draw(st.integers(0, 2**32 - 1))


@soundness
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(("relu", "leaky", "hardtanh")))
def test_exact_tight_paper_cover_brute_force_piecewise_linear(case: tuple) -> None:
    net, layers, cls, counts, seed = case
    fault, sent = cls(), STATED[cls]
    rng = np.random.default_rng(seed)
    ex = fb.bound(net, counts, fault, method="exact")
    tight = fb.bound(net, counts, fault, method="tight").value
    paper = fb.bound(net, counts, fault, method="paper").value
    assert ex.optimal and ex.witness is not None and ex.lower is not None
    # the witness is a configuration of the statement: the reference reaches what exact says
    assert replayed(layers, sent, ex.witness) == pytest.approx(ex.lower, abs=1e-7)
    X = np.concatenate([probe(net.input_shape[0], rng), np.asarray(ex.witness["input"])[None]])
    worst = brute_force(layers, X, sent, counts, rng)
    assert worst <= ex.value * (1 + TOL) + TOL, (worst, ex.value)
    assert max(worst, ex.lower) <= tight * (1 + TOL) + TOL, (worst, ex.lower, tight)
    assert tight <= paper * (1 + TOL) + 1e-12, (tight, paper)


@soundness
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(("tanh", "sigmoid", "relu")))
def test_tight_paper_cover_brute_force_smooth(case: tuple) -> None:
    net, layers, cls, counts, seed = case
    fault, sent = cls(), STATED[cls]
    rng = np.random.default_rng(seed)
    tight = fb.bound(net, counts, fault, method="tight").value
    paper = fb.bound(net, counts, fault, method="paper").value
    worst = brute_force(layers, probe(net.input_shape[0], rng, 80), sent, counts, rng)
    assert worst <= tight * (1 + TOL) + TOL, (worst, tight)
    assert tight <= paper * (1 + TOL) + 1e-12, (tight, paper)


# ----------------------------------------------------------------------------- examples
def test_statement_read_by_every_method() -> None:
    """The deviation the paper method reads is |g - 1| Y + max(|lo|, |hi|), Y = max|sigmoid| = 1: one
    failing sigmoid behind a weight of 0.5 gives 0.5 * 2 for a sign flip, 0.5 * (1 + 0.7) for
    Skewed; tight reads the same per neuron with |y| <= sigmoid(1) on the inputs [0, 1]."""
    lin1, lin2 = nn.Linear(1, 2), nn.Linear(2, 1)
    with torch.no_grad():
        lin1.weight.fill_(1.0), lin1.bias.zero_(), lin2.weight.fill_(0.5), lin2.bias.zero_()
    net = fb.Network.from_torch(nn.Sequential(lin1, nn.Sigmoid(), lin2))
    y_max = 1.0 / (1.0 + np.exp(-1.0))
    assert fb.bound(net, [1], SignFlip(), method="paper").value == pytest.approx(0.5 * 2, rel=1e-12)
    assert fb.bound(net, [1], Skewed(), method="paper").value == pytest.approx(0.5 * 1.7, rel=1e-12)
    assert fb.bound(net, [1], SignFlip(), method="tight").value == pytest.approx(0.5 * 2 * y_max, rel=1e-9)
    assert fb.bound(net, [1], Skewed(), method="tight").value == pytest.approx(0.5 * (y_max + 0.7), rel=1e-9)


def test_exact_refuses_synapse_gain() -> None:
    """A synapse model whose failing synapse sends a multiple of what it carries has no exact encoding:
    a clear refusal, never a number; paper and tight bound it."""
    net, layers = make_net([3], "relu", 2, 1, 0)
    with pytest.raises(UnsupportedModelError, match="gain 0"):
        fb.bound(net, [1, 1], SynapseHalf(), method="exact")
    tight = fb.bound(net, [1, 1], SynapseHalf(), method="tight").value
    paper = fb.bound(net, [1, 1], SynapseHalf(), method="paper").value
    # reference: the worst single synapse per layer transmits half its w y (clean y)
    X = probe(2, np.random.default_rng(0), 200)
    worst = 0.0
    for j1, i1 in itertools.product(range(3), range(2)):
        for i2 in range(3):
            W1, b1, _ = layers[0]
            W2, b2, _ = layers[1]
            y = np.maximum(W1 @ X.T + b1[:, None], 0.0)
            s1 = W1 @ X.T + b1[:, None]
            s1[j1] -= 0.5 * W1[j1, i1] * X.T[i1]
            yf = np.maximum(s1, 0.0)
            out, outf = W2 @ y + b2[:, None], W2 @ yf + b2[:, None]
            outf[0] -= W2[0, i2] * yf[i2] - 0.5 * W2[0, i2] * y[i2]
            worst = max(worst, float(np.abs(outf - out).max()))
    assert 0 < worst <= tight * (1 + TOL) + TOL
    assert tight <= paper * (1 + TOL) + 1e-12
