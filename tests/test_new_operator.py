"""Adding a graph operator touches one file: here a clamp :math:`y = \\min(\\max(x, a), b)` (range
restriction) is defined entirely in this test, as one :class:`~faultbound.network.gops.GOp`
subclass holding its rules (forward, interval, deviation, MILP encoding), and ``bound`` (tight and
exact) and the measurement engine run on a graph that uses it.

The reference is written from the statement, not from library code: a crashed unit of the ReLU
site sends 0 instead of its value, the output moves by :math:`|F_{fail}(x) - F(x)|`, and the worst
case over every failure set of the given size is found by enumerating the sets on a fine grid of the
one-dimensional input (a lower bound of the true worst case, within the grid's resolution of it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor

import faultbound as fb
from faultbound.faults import Crash
from faultbound.measure import FaultSet, inject
from faultbound.network.activations import MilpModel, ReLU
from faultbound.network.gops import Act, Affine, Box2, Dev, GOp, Input
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense


@dataclass(frozen=True, eq=False)
class Clamp(GOp):
    """:math:`\\min(\\max(x, a), b)` elementwise (a <= b): monotone and 1-Lipschitz, so the interval
    is the clamp of the bounds and a deviation does not grow (each part keeps its units); and
    :math:`y = a + \\operatorname{relu}(x - a) - \\operatorname{relu}(x - b)`, two exact ReLU splits."""

    a: float
    b: float
    piecewise_linear: ClassVar[bool] = True

    def forward(self, *xs: Tensor) -> Tensor:
        return xs[0].clamp(self.a, self.b)

    def interval(self, *boxes: Box2) -> Box2:
        lo, hi = boxes[0]
        return lo.clamp(self.a, self.b), hi.clamp(self.a, self.b)

    def deviation(self, boxes: Sequence[Box2], devs: Sequence[Dev], clean: Sequence[Box2] | None = None) -> Dev:
        return devs[0]

    def milp(self, m: MilpModel, ins: Sequence[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
        x = ins[0].reshape(-1)
        xl, xu = np.asarray(m.lb)[x], np.asarray(m.ub)[x]
        out = []
        for j, v in enumerate(x.tolist()):
            r1 = m.leaky(v, self.a, float(xl[j]), float(xu[j]), 0.0)
            r2 = m.leaky(v, self.b, float(xl[j]), float(xu[j]), 0.0)
            y = m.var(float(lo[j]), float(hi[j]))
            m.eq([y, r1, r2], [1.0, -1.0, 1.0], self.a)
            out.append(y)
        return np.asarray(out, dtype=np.int64).reshape(ins[0].shape), True

    def describe(self) -> str:
        return f"clamp({self.a:g}, {self.b:g})"


W1 = torch.tensor([[1.5], [-2.0], [0.7], [1.1]], dtype=torch.float64)
B1 = torch.tensor([0.1, 0.3, -0.2, 0.0], dtype=torch.float64)
W2 = torch.tensor([[0.9, -1.3, 2.1, 0.6]], dtype=torch.float64)
B2 = torch.tensor([0.05], dtype=torch.float64)
A, B = 0.1, 0.8


def _graph() -> GraphNetwork:
    nodes = [
        ("x", Input(), ()),
        ("fc1", Affine(Dense(W1, B1)), (0,)),
        ("relu", Act(ReLU()), (1,)),
        ("clamp", Clamp(A, B), (2,)),
        ("out", Affine(Dense(W2, B2)), (3,)),
    ]
    return GraphNetwork.build(nodes, (1,), (-1.0, 1.0))


def _reference(x: Tensor, crashed: Sequence[int]) -> Tensor:
    """Plain torch: relu(W1 x + b1), crashed units send 0, clamp to [A, B], then W2 . + b2."""
    h = torch.relu(x @ W1.T + B1)
    h[:, list(crashed)] = 0.0
    return h.clamp(A, B) @ W2.T + B2


def _brute(f: int, x: Tensor) -> float:
    clean = _reference(x, [])
    return max(
        float((_reference(x, s) - clean).abs().max()) for s in itertools.combinations(range(W1.shape[0]), f)
    )


def test_forward_equals_reference() -> None:
    net = _graph()
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)[:, None]
    assert torch.allclose(net.forward(x), _reference(x, []), atol=1e-12)


@pytest.mark.parametrize("f", [1, 2])
def test_tight_and_exact_cover_brute_force(f: int) -> None:
    net = _graph()
    x = torch.linspace(-1, 1, 2001, dtype=torch.float64)[:, None]
    brute = _brute(f, x)
    tight = fb.bound(net, [f], Crash(), method="tight").value
    exact = fb.bound(net, [f], Crash(), method="exact")
    assert exact.optimal
    # the grid's resolution: the output is Lipschitz in x with constant sum |W2| |W1| (<= 6)
    lip = float((W2.abs() @ W1.abs()).sum())
    assert brute - 1e-9 <= exact.value <= brute + lip * 2.0 / 2000 + 1e-6
    assert exact.value <= tight + 1e-9


def test_engine_measures_the_clamped_graph() -> None:
    net = _graph()
    x = torch.linspace(-1, 1, 41, dtype=torch.float64)[:, None]
    for unit in range(W1.shape[0]):
        fs = FaultSet.from_lists(net.L, {1: [unit]})
        got = inject(net, x, Crash(), fs, dtype=torch.float64).errors[0]
        want = (_reference(x, [unit]) - _reference(x, [])).abs().amax(1)
        assert torch.allclose(got, want, atol=1e-12), unit
