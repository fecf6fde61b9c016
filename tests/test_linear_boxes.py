"""The linear refinement of a graph's domain boxes (``GraphNetwork.linear_box_intervals``).

* against a slow reference written here from the documented statement (numpy matrices, a
  residual ReLU network, every node's box = interval box intersected with the back-substituted
  linear bound, ReLU relaxed by its chord above and by slope 1 when ``u >= -l``, else 0, below);
* sound and never looser than the interval boxes (up to rounding) on random graphs of every template (the values
  of the reference forward at corners, the centre and random points of the domain lie inside);
* exact where the interval boxes are not (a difference of a value with itself);
* the nodes past the work limit keep their interval box.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultbound.network import gops
from faultbound.network import graph as graph_mod
from faultbound.network.activations import ReLU
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense
from tests.graph_reference import ACTS, TEMPLATES, corners_and_points, forward_all
from tests.hyp import examples, soundness


# ------------------------------------------------------------------------- the reference
def _ref_boxes(
    spec: list[tuple[str, list[int], object]], lo: np.ndarray, hi: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every node's box of a graph of ``("input" | "dense" | "relu" | "add", inputs, (W, b))``
    nodes over ``[lo, hi]``: the interval box, then for each unit j the bounds of :math:`\\pm y_j`
    obtained by writing them as linear functions of earlier nodes, node by node backwards (a
    dense node: :math:`\\lambda W` and :math:`\\lambda b`; an add: :math:`\\lambda` to both inputs;
    a ReLU on [l, u]: where l >= 0 the identity, where u <= 0 zero, else the chord
    :math:`u(s - l)/(u - l)` for a positive coefficient and :math:`s` (if u >= -l) or 0 for a
    negative one), down to the input (:math:`\\lambda^+ \\overline x + \\lambda^- \\underline x`);
    the box is intersected with them."""
    boxes: list[tuple[np.ndarray, np.ndarray]] = []
    for v, (kind, ins, par) in enumerate(spec):
        if kind == "input":
            boxes.append((lo.copy(), hi.copy()))
            continue
        if kind == "dense":
            w, b = par  # type: ignore[misc]
            l0, u0 = boxes[ins[0]]
            c, r = (l0 + u0) / 2, (u0 - l0) / 2
            box = (w @ c + b - np.abs(w) @ r, w @ c + b + np.abs(w) @ r)
        elif kind == "relu":
            box = (np.maximum(boxes[ins[0]][0], 0), np.maximum(boxes[ins[0]][1], 0))
        else:
            box = (boxes[ins[0]][0] + boxes[ins[1]][0], boxes[ins[0]][1] + boxes[ins[1]][1])
        n = box[0].size
        boxes.append(box)
        best_hi, best_lo = box[1].copy(), box[0].copy()
        for j in range(n):
            for sign in (1.0, -1.0):
                lam: dict[int, np.ndarray] = {v: np.eye(n)[j] * sign}
                const = 0.0
                for k in range(v, -1, -1):
                    if k not in lam:
                        continue
                    g = lam.pop(k)
                    kk, kins, kpar = spec[k]
                    if kk == "input":
                        const += float(np.maximum(g, 0) @ boxes[k][1] + np.minimum(g, 0) @ boxes[k][0])
                        continue
                    if kk == "dense":
                        w, b = kpar  # type: ignore[misc]
                        const += float(g @ b)
                        outs = [g @ w]
                    elif kk == "add":
                        outs = [g, g]
                    else:
                        l, u = boxes[kins[0]]
                        new = np.zeros_like(g)
                        for t in range(g.size):
                            if l[t] >= 0:
                                new[t] = g[t]
                            elif u[t] <= 0:
                                new[t] = 0.0
                            elif g[t] >= 0:
                                a = u[t] / (u[t] - l[t])
                                new[t] = g[t] * a
                                const += g[t] * (-a * l[t])
                            else:
                                new[t] = g[t] * (1.0 if u[t] >= -l[t] else 0.0)
                        outs = [new]
                    for i_in, gi in zip(kins, outs, strict=True):
                        lam[i_in] = lam[i_in] + gi if i_in in lam else gi
                if sign > 0:
                    best_hi[j] = min(best_hi[j], const)
                else:
                    best_lo[j] = max(best_lo[j], -const)
        boxes[-1] = (best_lo, best_hi)
    return boxes


def _residual_spec(seed: int) -> list[tuple[str, list[int], object]]:
    rng = np.random.default_rng(seed)
    w1, b1 = rng.uniform(-1, 1, (4, 3)), rng.uniform(-0.3, 0.3, 4)
    w2, b2 = rng.uniform(-1, 1, (4, 4)), rng.uniform(-0.3, 0.3, 4)
    w3, b3 = rng.uniform(-1, 1, (2, 4)), rng.uniform(-0.3, 0.3, 2)
    return [
        ("input", [], None),
        ("dense", [0], (w1, b1)),
        ("relu", [1], None),
        ("dense", [2], (w2, b2)),
        ("relu", [3], None),
        ("add", [2, 4], None),
        ("relu", [5], None),
        ("dense", [6], (w3, b3)),
    ]


def _build(spec: list[tuple[str, list[int], object]], lo: np.ndarray, hi: np.ndarray) -> GraphNetwork:
    nodes: list[tuple[str, gops.GOp, list[int]]] = []
    for v, (kind, ins, par) in enumerate(spec):
        if kind == "input":
            nodes.append(("x", gops.Input(), []))
        elif kind == "dense":
            w, b = par  # type: ignore[misc]
            nodes.append((f"fc{v}", gops.Affine(Dense(torch.tensor(w), torch.tensor(b))), ins))
        elif kind == "relu":
            nodes.append((f"relu{v}", gops.Act(ReLU()), ins))
        else:
            nodes.append((f"add{v}", gops.Add((1, 1)), ins))
    return GraphNetwork.build(nodes, (lo.size,), (torch.tensor(lo), torch.tensor(hi)))


@pytest.mark.parametrize("seed", range(8))
def test_linear_boxes_match_the_reference(seed: int) -> None:
    spec = _residual_spec(seed)
    lo, hi = np.full(3, -1.0), np.array([1.0, 0.5, 2.0])
    net = _build(spec, lo, hi)
    assert len(net.nodes) == len(spec)
    got = net.linear_box_intervals(torch.tensor(lo)[None], torch.tensor(hi)[None])
    want = _ref_boxes(spec, lo, hi)
    for (gl, gh), (wl, wh) in zip(got, want, strict=True):
        scale = 1.0 + np.abs(wl).max() + np.abs(wh).max()
        assert np.allclose(gl[0].numpy(), wl, rtol=0, atol=1e-7 * scale)
        assert np.allclose(gh[0].numpy(), wh, rtol=0, atol=1e-7 * scale)
        assert bool((gl[0].numpy() <= wl + 1e-12 * scale).all()) and bool((gh[0].numpy() >= wh - 1e-12 * scale).all())


def test_reference_is_tighter_than_intervals_somewhere() -> None:
    """The refinement is not vacuous on these networks: some box is strictly tighter than the
    interval box."""
    gained = 0
    for seed in range(8):
        spec = _residual_spec(seed)
        lo, hi = np.full(3, -1.0), np.array([1.0, 0.5, 2.0])
        net = _build(spec, lo, hi)
        lin = net.linear_box_intervals(torch.tensor(lo)[None], torch.tensor(hi)[None])
        ibp = net.box_intervals(torch.tensor(lo)[None], torch.tensor(hi)[None])
        for (a, b), (c, d) in zip(lin, ibp, strict=True):
            gained += int(bool(((b - a) < 0.99 * (d - c)).any()))
    assert gained > 0


def test_difference_with_itself_is_exact() -> None:
    """:math:`(Wx + b) - (Wx + b)` is 0: the linear bound sees it, the interval box does not."""
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    b = torch.tensor([0.1, -0.2], dtype=torch.float64)
    nodes: list[tuple[str, gops.GOp, list[int]]] = [
        ("x", gops.Input(), []),
        ("fc", gops.Affine(Dense(w, b)), [0]),
        ("diff", gops.Add((1, -1)), [1, 1]),
        ("relu", gops.Act(ReLU()), [2]),
    ]
    lo, hi = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    net = GraphNetwork.build(nodes, (2,), (lo, hi))
    lin = net.linear_box_intervals(lo[None], hi[None])[2]
    ibp = net.box_intervals(lo[None], hi[None])[2]
    assert float(lin[1].abs().max()) < 1e-6 and float(lin[0].abs().max()) < 1e-6
    assert float(ibp[1].max()) > 1.0


def test_past_the_limit_the_interval_box_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _residual_spec(0)
    lo, hi = np.full(3, -1.0), np.array([1.0, 0.5, 2.0])
    net = _build(spec, lo, hi)
    monkeypatch.setattr(graph_mod, "LINEAR_MACS", 0)
    lin = net.linear_box_intervals(torch.tensor(lo)[None], torch.tensor(hi)[None])
    ibp = net.box_intervals(torch.tensor(lo)[None], torch.tensor(hi)[None])
    for (a, b), (c, d) in zip(lin, ibp, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_domain_boxes_are_the_refined_ones() -> None:
    spec = _residual_spec(1)
    lo, hi = np.full(3, -1.0), np.array([1.0, 0.5, 2.0])
    net = _build(spec, lo, hi)
    lin = net.linear_box_intervals(torch.tensor(lo)[None], torch.tensor(hi)[None])
    for (a, b), (c, d) in zip(net.intervals(), lin, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)


# ------------------------------------------------------------------------- soundness
@soundness
@pytest.mark.parametrize("template", sorted(TEMPLATES))
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), acts=st.lists(st.sampled_from(sorted(ACTS)), min_size=3, max_size=3))
def test_linear_boxes_hold_every_value(template: str, seed: int, acts: list[str]) -> None:
    """Every node's value (plain torch reference forward) at corners, the centre and random points
    of the domain lies in its refined box, which lies in the interval box."""
    tg = TEMPLATES[template](seed, acts)
    net = tg.build()
    lin = net.linear_box_intervals(tg.lo[None], tg.hi[None])
    ibp = net.box_intervals(tg.lo[None], tg.hi[None])
    x = corners_and_points(tg, 64, seed, max_corners=64)
    vals = forward_all(tg, x)
    for k, (v, (a, b), (c, d)) in enumerate(zip(vals, lin, ibp, strict=True)):
        v = v.reshape(x.shape[0], -1)
        a, b, c, d = (t.reshape(1, -1) for t in (a, b, c, d))
        assert bool((v >= a).all() and (v <= b).all()), (template, k, float((a - v).max()), float((v - b).max()))
        # never looser than the interval box, up to the rounding of interval arithmetic on other boxes
        slack = 1e-9 * (1.0 + c.abs() + d.abs())
        assert bool((a >= c - slack).all() and (b <= d + slack).all()), (template, k)


# ------------------------------------------------------------------------- one operator's rule
def _rule_holds(op: gops.GOp, lo: torch.Tensor, hi: torch.Tensor, seed: int) -> None:
    """``op.linear_back`` on the box [lo, hi] (batch 1) and random coefficients: for sampled inputs
    of the box (corners included), :math:`\\Lambda \\cdot y \\le \\Lambda_{in} \\cdot x + c`."""
    g = torch.Generator().manual_seed(seed)
    out = op.interval((lo, hi))
    lam = torch.randn((5,) + tuple(out[0].shape[1:]), generator=g, dtype=torch.float64)
    got = op.linear_back([(lo, hi)], out, lam)
    assert got is not None
    (gin,), c = got
    assert gin is not None
    u = torch.rand((400,) + tuple(lo.shape[1:]), generator=g, dtype=torch.float64)
    u[:100] = (u[:100] > 0.5).double()
    x = lo + u * (hi - lo)
    y = op.forward(x)
    lhs = torch.einsum("r...,n...->nr", lam, y)
    rhs = torch.einsum("r...,n...->nr", gin, x) + c[None]
    assert bool((lhs <= rhs + 1e-9 * (1 + rhs.abs())).all()), float((lhs - rhs).max())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kp", [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 1))])
def test_maxpool_rule_holds(seed: int, kp: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    centre = torch.randn((1, 2, 5, 5), generator=g, dtype=torch.float64)
    rad = torch.rand((1, 2, 5, 5), generator=g, dtype=torch.float64) * (0.05 if seed % 2 else 1.0)
    _rule_holds(gops.MaxPool(*kp), centre - rad, centre + rad, seed)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("act", sorted(ACTS))
def test_activation_rule_holds(seed: int, act: str) -> None:
    from faultbound.network.activations import activation_from_module

    a = activation_from_module(ACTS[act]())
    assert a is not None
    g = torch.Generator().manual_seed(200 + seed)
    centre = torch.randn((1, 12), generator=g, dtype=torch.float64) * 2
    rad = torch.rand((1, 12), generator=g, dtype=torch.float64) * 2
    _rule_holds(gops.Act(a), centre - rad, centre + rad, seed)


def test_maxpool_dominating_input_is_exact() -> None:
    """A window whose first input lies above all the others: the max is that input, for both signs."""
    lo = torch.tensor([[[[5.0, 0.0], [1.0, -1.0]]]], dtype=torch.float64)
    hi = lo + torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]], dtype=torch.float64)
    op = gops.MaxPool((2, 2), (2, 2))
    lam = torch.tensor([[1.0], [-1.0]], dtype=torch.float64).reshape(2, 1, 1, 1)
    (g,), c = op.linear_back([(lo, hi)], op.interval((lo, hi)), lam)  # type: ignore[misc]
    assert torch.equal(g[:, 0, 0, 0], torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert float(g[:, 0].abs().sum()) == 2.0 and bool((c == 0).all())
