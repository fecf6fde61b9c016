"""Each graph operator's rules alone: ``interval`` against sampled points of the input boxes, and
``deviation`` against sampled pairs (clean, faulty) of points inside the boxes whose difference obeys
the input :class:`Dev` bounds (a dense part and sparse parts of f units). The outputs are computed
with plain torch calls, not with the operators' ``forward``. The sparse claims of a rule's output
are checked through a non-negative dense layer after it (which sums the f largest terms of each row
for a part of f units), so a part that claims fewer units than it touches is caught.

Also hand-worked values for the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from faultbound.network import gops
from faultbound.network.activations import activation_from_module
from faultbound.network.gops import Dev
from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten
from tests.hyp import examples, soundness

D = torch.float64


def _r(g: torch.Generator, *shape: int, s: float = 1.0) -> Tensor:
    return (torch.rand(shape, generator=g, dtype=D) * 2 - 1) * s


@dataclass
class Case:
    op: gops.GOp
    shapes: list[tuple[int, ...]]  # per-sample input shapes
    ref: Callable[..., Tensor]


def cases(g: torch.Generator) -> dict[str, Case]:
    w, b = _r(g, 3, 4), _r(g, 3)
    cw, cb = _r(g, 2, 2, 2, 2), _r(g, 2)
    sc, sh = _r(g, 2), _r(g, 2)
    ln_w, ln_b = _r(g, 4), _r(g, 4)
    gn_w, gn_b = _r(g, 4), _r(g, 4)
    ca_s, ca_t = _r(g, 3, 1), _r(g, 3, 1)
    out: dict[str, Case] = {
        "dense": Case(gops.Affine(Dense(w, b)), [(4,)], lambda x: x @ w.T + b),
        "dense_tokens": Case(gops.Affine(Dense(w, b)), [(2, 4)], lambda x: x @ w.T + b),
        "conv_pad_stride": Case(
            gops.Affine(Conv(cw, cb, (2, 2), (1, 1))), [(2, 4, 4)], lambda x: F.conv2d(x, cw, cb, stride=2, padding=1)
        ),
        "avgpool": Case(
            gops.Affine(AvgPool((2, 2), (1, 1), (1, 1))),
            [(1, 3, 3)],
            lambda x: F.avg_pool2d(x, 2, 1, 1, count_include_pad=True),
        ),
        "chaffine": Case(
            gops.Affine(ChannelAffine(sc, sh)), [(2, 2, 2)], lambda x: x * sc.view(1, 2, 1, 1) + sh.view(1, 2, 1, 1)
        ),
        "flatten": Case(gops.Affine(Flatten()), [(2, 2, 2)], lambda x: x.reshape(x.shape[0], -1)),
        "add": Case(gops.Add((1, 1)), [(5,), (5,)], lambda a, c: a + c),
        "sub": Case(gops.Add((1, -1)), [(5,), (5,)], lambda a, c: a - c),
        "neg_add3": Case(gops.Add((-1, 1, -1)), [(4,), (4,), (4,)], lambda a, c, d: -a + c - d),
        "add_broadcast": Case(gops.Add((1, 1)), [(3, 2), (1, 2)], lambda a, c: a + c),
        "add_broadcast_first": Case(gops.Add((1, -1)), [(1, 2), (3, 2)], lambda a, c: a - c),
        "mul": Case(gops.Mul(), [(4,), (4,)], lambda a, c: a * c),
        "mul_broadcast": Case(gops.Mul(), [(3, 2), (1, 2)], lambda a, c: a * c),
        "const_affine": Case(
            gops.ConstAffine(ca_s.reshape(3), ca_t.reshape(3)), [(3,)], lambda x: x * ca_s.reshape(3) + ca_t.reshape(3)
        ),
        "const_affine_broadcast": Case(gops.ConstAffine(ca_s, None), [(1, 2)], lambda x: x * ca_s),
        "const_shift_only": Case(gops.ConstAffine(None, ca_t.reshape(3)), [(3,)], lambda x: x + ca_t.reshape(3)),
        "matmul": Case(gops.MatMul(), [(3, 2), (2, 3)], lambda a, c: a @ c),
        "concat": Case(gops.Concat(1), [(2, 2), (1, 2)], lambda a, c: torch.cat([a, c], 1)),
        "concat_last": Case(gops.Concat(-1), [(2, 1), (2, 3)], lambda a, c: torch.cat([a, c], -1)),
        "view": Case(gops.Rearrange("view", (3, 2)), [(2, 3)], lambda x: x.reshape(x.shape[0], 3, 2)),
        "permute": Case(gops.Rearrange("permute", (0, 2, 1)), [(2, 3)], lambda x: x.permute(0, 2, 1)),
        "slice": Case(gops.Rearrange("slice", (1, 1, 4, 2)), [(5, 2)], lambda x: x[:, 1:4:2]),
        "select": Case(gops.Rearrange("select", (2, 1)), [(2, 3)], lambda x: x[:, :, 1]),
        "maxpool2": Case(gops.MaxPool((2, 2), (2, 2)), [(1, 4, 4)], lambda x: F.max_pool2d(x, 2, 2)),
        "maxpool_overlap": Case(gops.MaxPool((3, 3), (1, 1), (1, 1)), [(2, 3, 3)], lambda x: F.max_pool2d(x, 3, 1, 1)),
        "maxpool_pad_stride": Case(
            gops.MaxPool((2, 2), (2, 2), (1, 1)), [(1, 3, 3)], lambda x: F.max_pool2d(x, 2, 2, 1)
        ),
        "mean_space": Case(gops.Mean((2, 3)), [(2, 3, 3)], lambda x: x.mean((2, 3))),
        "mean_tokens_keep": Case(gops.Mean((1,), True), [(4, 2)], lambda x: x.mean(1, keepdim=True)),
        "layernorm": Case(gops.Norm((4,), 1, 1e-5, None, None), [(4,)], lambda x: F.layer_norm(x, (4,), eps=1e-5)),
        "layernorm_affine_tokens": Case(
            gops.Norm((4,), 1, 1e-5, ln_w, ln_b), [(2, 4)], lambda x: F.layer_norm(x, (4,), ln_w, ln_b, 1e-5)
        ),
        "layernorm_2d": Case(
            gops.Norm((2, 2), 1, 1e-3, None, None), [(2, 2)], lambda x: F.layer_norm(x, (2, 2), eps=1e-3)
        ),
        "groupnorm": Case(gops.Norm(None, 2, 1e-5, None, None), [(4, 2, 1)], lambda x: F.group_norm(x, 2, eps=1e-5)),
        "groupnorm_affine": Case(
            gops.Norm(None, 1, 1e-5, gn_w, gn_b), [(4, 1, 2)], lambda x: F.group_norm(x, 1, gn_w, gn_b, 1e-5)
        ),
        "softmax": Case(gops.Softmax(-1), [(4,)], lambda x: torch.softmax(x, -1)),
        "softmax_dim1": Case(gops.Softmax(1), [(3, 2)], lambda x: torch.softmax(x, 1)),
    }
    for name, mod in [
        ("sigmoid", nn.Sigmoid()),
        ("tanh", nn.Tanh()),
        ("relu", nn.ReLU()),
        ("gelu", nn.GELU()),
        ("silu", nn.SiLU()),
        ("elu", nn.ELU()),
        ("softplus", nn.Softplus()),
    ]:
        a = activation_from_module(mod)
        assert a is not None
        out["act_" + name] = Case(gops.Act(a), [(4,)], mod)
    return out


NAMES = sorted(cases(torch.Generator().manual_seed(0)))


def _boxes(g: torch.Generator, shapes: list[tuple[int, ...]], spread: float) -> list[tuple[Tensor, Tensor]]:
    out = []
    for s in shapes:
        c = _r(g, 1, *s, s=spread)
        r = torch.rand((1, *s), generator=g, dtype=D) * spread
        out.append((c - r, c + r))
    return out


def _points(g: torch.Generator, box: tuple[Tensor, Tensor], n: int) -> Tensor:
    lo, hi = box
    u = torch.rand((n, *lo.shape[1:]), generator=g, dtype=D)
    corner = torch.randint(0, 2, (n, *lo.shape[1:]), generator=g).to(D)
    pick = (torch.arange(n) % 3 == 0).reshape(n, *([1] * (lo.dim() - 1)))  # a third at corners
    u = torch.where(pick, corner, u)
    return lo + u * (hi - lo)


@soundness
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), spread=st.sampled_from([0.3, 1.0, 4.0]))
def test_interval_contains_samples(name: str, seed: int, spread: float) -> None:
    g = torch.Generator().manual_seed(seed)
    case = cases(g)[name]
    boxes = _boxes(g, case.shapes, spread)
    lo, hi = case.op.interval(*boxes)
    xs = [_points(g, b, 400) for b in boxes]
    y = case.ref(*xs)
    assert bool((y >= lo - 1e-12).all()) and bool((y <= hi + 1e-12).all()), (name, y.amin(0), lo, y.amax(0), hi)


def _sample_dev(g: torch.Generator, x: Tensor, box: tuple[Tensor, Tensor], dev: Dev) -> Tensor:
    """A faulty point: x + dense part (random or at +-e) + each sparse part on f random units (at
    +-d, signs mostly aligned), clamped into the box (which only shrinks each unit's change)."""
    n = x.shape[0]
    shape = x.shape[1:]
    e = dev.e.expand(n, *shape)
    sign = torch.where(torch.rand((n, 1), generator=g, dtype=D) < 0.5, -1.0, 1.0).to(D).reshape(n, *([1] * len(shape)))
    mode = torch.rand((n, *([1] * len(shape))), generator=g, dtype=D)
    rnd = _r(g, n, *shape)
    delta = torch.where(mode < 0.5, sign * e, rnd * e)
    for f, d in dev.parts:
        d = d.expand(n, *shape).reshape(n, -1)
        m = d.shape[1]
        keys = torch.rand((n, m), generator=g)
        idx = keys.argsort(1)[:, :f]
        mask = torch.zeros((n, m), dtype=torch.bool).scatter(1, idx, True)
        s = torch.where(torch.rand((n, m), generator=g) < 0.85, sign.reshape(n, 1), -sign.reshape(n, 1))
        delta = delta + torch.where(mask, s * d, torch.zeros_like(d)).reshape(n, *shape)
    lo, hi = box
    return torch.minimum(torch.maximum(x + delta, lo), hi)


def _dev_for(g: torch.Generator, shape: tuple[int, ...], spread: float) -> Dev:
    e = torch.rand((1, *shape), generator=g, dtype=D) * spread * 0.2
    if torch.rand((), generator=g) < 0.3:
        e = torch.zeros_like(e)
    n = math.prod(shape)
    parts = []
    for f in (1, 2):
        if f < n and torch.rand((), generator=g) < 0.7:
            parts.append((f, torch.rand((1, *shape), generator=g, dtype=D) * spread))
    return Dev(e, parts)


@soundness
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), spread=st.sampled_from([0.3, 1.0, 3.0]))
def test_deviation_covers_sampled_pairs(name: str, seed: int, spread: float) -> None:
    """|ref(x~) - ref(x)| <= the rule's bound per unit, and through a non-negative dense layer after
    it (Flatten + Dense with |W|: the sparse parts' counts are used there)."""
    g = torch.Generator().manual_seed(seed)
    case = cases(g)[name]
    boxes = _boxes(g, case.shapes, spread)
    devs = [_dev_for(g, s, spread) for s in case.shapes]
    n = 600
    clean = None
    if seed % 2:  # as graph_propagate: clean boxes given, the boxes are them widened by the deviation
        clean = boxes
        boxes = [(lo - dv.total(), hi + dv.total()) for (lo, hi), dv in zip(clean, devs, strict=True)]
        xs = [_points(g, b, n) for b in clean]
    else:
        xs = [_points(g, b, n) for b in boxes]
    xt = [_sample_dev(g, x, b, dv) for x, b, dv in zip(xs, boxes, devs, strict=True)]
    out = case.op.deviation(boxes, devs, clean)
    y, yt = case.ref(*xs), case.ref(*xt)
    got = (yt - y).abs()
    bound = out.total().expand_as(got)
    assert bool((got <= bound * (1 + 1e-9) + 1e-12).all()), (name, (got - bound).amax())
    # the sparse claims, through a non-negative dense layer over the flattened output
    m = got[0].numel()
    wpos = torch.rand((3, m), generator=g, dtype=D) + 0.1
    flat = gops.Affine(Flatten()).deviation([], [out])
    box_out = case.op.interval(*boxes)
    lin = gops.Affine(Dense(wpos, torch.zeros(3, dtype=D)))
    down = lin.deviation([(box_out[0].reshape(1, -1), box_out[1].reshape(1, -1))], [flat]).total()
    moved = ((yt - y).reshape(n, -1) @ wpos.T).abs()
    assert bool((moved <= down * (1 + 1e-9) + 1e-12).all()), (name, (moved - down).amax())


# ----------------------------------------------------------------------------- hand-worked values
def _box(lo: list[float], hi: list[float]) -> tuple[Tensor, Tensor]:
    return torch.tensor([lo], dtype=D), torch.tensor([hi], dtype=D)


def test_add_signs_and_parts_by_hand() -> None:
    a = Dev(torch.tensor([[0.1, 0.2]], dtype=D), [(1, torch.tensor([[1.0, 0.0]], dtype=D))])
    b = Dev(torch.tensor([[0.3, 0.0]], dtype=D))
    out = gops.Add((1, -1)).deviation([_box([0, 0], [1, 1]), _box([0, 0], [1, 1])], [a, b])
    assert out.total().tolist() == [[pytest.approx(1.4), pytest.approx(0.2)]]
    assert [f for f, _ in out.parts] == [1]


def test_maxpool_by_hand() -> None:
    # one 2x2 window; deviations 0.5 on unit (0,0), 0.1 elsewhere: the max moves by at most 0.5
    op = gops.MaxPool((2, 2), (2, 2))
    box = (torch.zeros(1, 1, 2, 2, dtype=D), torch.ones(1, 1, 2, 2, dtype=D))
    e = torch.full((1, 1, 2, 2), 0.1, dtype=D)
    e[0, 0, 0, 0] = 0.5
    assert float(op.deviation([box], [Dev(e)]).total()) == pytest.approx(0.5)


def test_maxpool_dominated_input_is_ignored() -> None:
    """An input whose box (clean and faulty) lies below another's lower end is never the max, so its
    deviation does not count: unit (0,0) in [0, 0.2] with deviation 5 (the box already holds the
    faulty values), unit (0,1) in [0.5, 1] with deviation 0.3."""
    op = gops.MaxPool((1, 2), (1, 2))
    box = (torch.tensor([[[[0.0, 0.5]]]], dtype=D), torch.tensor([[[[0.2, 1.0]]]], dtype=D))
    e = torch.tensor([[[[5.0, 0.3]]]], dtype=D)
    got = float(op.deviation([box], [Dev(e)]).total())
    assert got == pytest.approx(0.3)


def test_softmax_by_hand() -> None:
    # two logits in [0, 0]: p = 1/2 each; deviation t = (0.1, 0): |dp_j| <= p_hi (t_j + max t)
    op = gops.Softmax(-1)
    lo, hi = op.interval(_box([0.0, 0.0], [0.0, 0.0]))
    assert lo.tolist()[0] == [pytest.approx(0.5)] * 2 and hi.tolist()[0] == [pytest.approx(0.5)] * 2
    wide = _box([-0.1, 0.0], [0.1, 0.0])
    got = op.deviation([wide], [Dev(torch.tensor([[0.1, 0.0]], dtype=D))]).total()
    p_hi = 1 / (1 + math.exp(-0.1))  # first unit at its largest: e^0.1 / (e^0.1 + 1)
    p_lo = 1 / (1 + math.exp(0.1))
    assert float(got[0, 0]) <= p_hi - p_lo + 1e-9  # capped by the output interval's width
    # unit 1: p_hi_1 (0 + min(max t, sum_i p_hi_i t_i)) = p_hi (p_hi 0.1), p_hi_1 = p_hi by symmetry
    assert float(got[0, 1]) == pytest.approx(min(p_hi * p_hi * 0.1, p_hi - p_lo), rel=1e-6)


def test_layernorm_interval_by_hand() -> None:
    """n = 2, x1 in [1, 2], x2 in [0, 0.5]: z1 = +1 for every point (z = +-1 when n = 2). The rule:
    x1 - mu = (x1 - x2)/2 in [0.25, 1]; var <= mean of max((x - c)^2) over the ends with c = 0.875
    (the mean of the centres): (1.265625 + 0.765625) / 2 = 1.015625; so z1 >= 0.25 / sqrt(1.015625),
    and z1 <= sqrt(n - 1) = 1."""
    op = gops.Norm((2,), 1, 1e-12, None, None)
    lo, hi = op.interval(_box([1.0, 0.0], [2.0, 0.5]))
    assert float(lo[0, 0]) == pytest.approx(0.25 / math.sqrt(1.015625), rel=1e-6)
    assert float(hi[0, 0]) == pytest.approx(1.0, rel=1e-6)
    assert float(hi[0, 1]) == pytest.approx(-0.25 / math.sqrt(1.015625), rel=1e-6)
    assert float(lo[0, 1]) == pytest.approx(-1.0, rel=1e-6)


def test_var_min_matches_brute_force() -> None:
    from faultbound.network.gops import _var_min

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        c = _r(g, 3)
        r = torch.rand(3, generator=g, dtype=D)
        lo, hi = c - r, c + r
        grid = torch.linspace(0, 1, 41, dtype=D)
        pts = torch.cartesian_prod(grid, grid, grid)
        xs = lo + pts * (hi - lo)
        brute = float(xs.var(1, unbiased=False).min())
        got = float(_var_min(lo[None], hi[None]))
        assert got <= brute + 1e-12
        assert got >= brute - 0.02 * (float((hi - lo).max()) ** 2)  # the grid's resolution


def test_mul_and_matmul_by_hand() -> None:
    a = Dev(torch.tensor([[0.1, 0.0]], dtype=D))
    b = Dev(torch.tensor([[0.0, 0.2]], dtype=D))
    box_a, box_b = _box([-1.0, 2.0], [1.0, 3.0]), _box([0.0, -4.0], [0.5, 1.0])
    got = gops.Mul().deviation([box_a, box_b], [a, b]).total()
    assert got.tolist()[0] == [pytest.approx(0.1 * 0.5), pytest.approx(3.0 * 0.2)]
    # (1x2) @ (2x1): |dA| |B| + |A| |dB| = 0.1*0.5 + 3*0.2
    ma = (
        gops.MatMul()
        .deviation(
            [(box_a[0][:, None, :], box_a[1][:, None, :]), (box_b[0][:, :, None], box_b[1][:, :, None])],
            [Dev(a.e[:, None, :]), Dev(b.e[:, :, None])],
        )
        .total()
    )
    assert float(ma) == pytest.approx(0.1 * 0.5 + 3.0 * 0.2)


def test_broadcast_part_counts() -> None:
    """Found by the sampled test above: an input of shape (1, 2) broadcast over 3 tokens copies each
    unit 3 times, so its part of 1 unit is a part of 3 units of the sum (it was kept at 1)."""
    z = torch.zeros((1, 3, 2), dtype=D)
    small = (torch.zeros((1, 1, 2), dtype=D), torch.ones((1, 1, 2), dtype=D))
    part = torch.tensor([[[0.5, 0.25]]], dtype=D)
    out = gops.Add((1, 1)).deviation([(z, z + 1), small], [Dev(torch.zeros_like(z)), Dev(part * 0, [(1, part)])])
    assert [k for k, _ in out.parts] == [3]
    # a non-negative dense layer over the 6 units: all three copies of unit 0 move together
    flat = gops.Affine(Flatten()).deviation([], [out])
    lin = gops.Affine(Dense(torch.ones((1, 6), dtype=D), torch.zeros(1, dtype=D)))
    got = float(lin.deviation([(z.reshape(1, -1), z.reshape(1, -1) + 2)], [flat]).total())
    assert got == pytest.approx(1.5)  # 3 copies x 0.5
    scaled = gops.ConstAffine(torch.full((3, 1), 2.0, dtype=D), None).deviation([small], [Dev(part * 0, [(1, part)])])
    assert [k for k, _ in scaled.parts] == [3]
