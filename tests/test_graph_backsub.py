"""The back-substitution bound on graphs (``graph_backsub``) alone, and its minimum with the forward
rule (``graph_propagate``).

* each operator's :meth:`GOp.secant_back` against sampled pairs (x, x~) of points in the boxes, the
  outputs computed with plain torch calls (the cases of ``tests/test_graph_rules.py``): for a random
  row vector m of the output, m (f(x~) - f(x)) must equal sum_k G_k (x~_k - x_k) for some G_k in the
  returned interval matrices, so it lies within sum_k G_c,k d_k +- sum_k G_r,k |d_k|;
* the bound alone (not its minimum with the forward rule, which could hide an unsound one) against
  the brute force of ``tests/graph_reference.py`` on every template, every neuron fault model and
  precision, over the domain and per input, with and without ``refine_rows`` (which caps every
  node's forward bound by its own back-substitution: the forward bound is checked there too);
* hand-worked values: a crash that reaches the output along two paths of opposite signs;
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from faultbound.bounds.graph_tight import graph_backsub, graph_forward, graph_propagate
from faultbound.faults import Crash
from faultbound.network import gops
from faultbound.network.activations import activation_from_module
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import Dense
from tests.graph_reference import ACTS, TEMPLATES, FaultSpec, brute_force, corners_and_points
from tests.hyp import examples, soundness
from tests.test_graph_rules import NAMES, _boxes, _points, _r, cases
from tests.test_graph_soundness import template_kwargs, to_fault

D = torch.float64
NEURON_KINDS = ["crash", "byzantine", "byzdev", "stuck", "precision"]


@soundness
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), spread=st.sampled_from([0.3, 1.0, 3.0]), n_rows=st.sampled_from([1, 3]))
def test_secant_back_covers_sampled_pairs(name: str, seed: int, spread: float, n_rows: int) -> None:
    g = torch.Generator().manual_seed(seed)
    case = cases(g)[name]
    boxes = _boxes(g, case.shapes, spread)
    n_pairs = 300
    xs = [_points(g, b, n_pairs) for b in boxes]
    # the faulty points: often equal to the clean one on some units (a crash touches few units)
    ys = []
    for b, x in zip(boxes, xs, strict=True):
        y = _points(g, b, n_pairs)
        keep = torch.rand(x.shape, generator=g) < 0.4
        ys.append(torch.where(keep, x, y))
    out_shape = case.ref(*[x[:1] for x in xs]).shape[1:]
    m = _r(g, n_rows, *out_shape)  # n_rows rows of one input box
    back = case.op.secant_back(boxes, (m, torch.zeros_like(m)), n_rows)
    if back is None:
        raise AssertionError(f"{name}: no linear rule")
        return
    lhs = ((case.ref(*ys) - case.ref(*xs))[:, None] * m[None]).reshape(n_pairs, n_rows, -1).sum(-1)
    centre = torch.zeros_like(lhs)
    slack = torch.zeros_like(lhs)
    for mk, x, y in zip(back, xs, ys, strict=True):
        if mk is None:
            continue
        gc, gr = mk
        assert bool((gr >= 0).all())
        d = (y - x)[:, None]  # (pairs, 1, *in)
        centre = centre + (gc.expand(n_rows, *x.shape[1:])[None] * d).reshape(n_pairs, n_rows, -1).sum(-1)
        slack = slack + (gr.expand(n_rows, *x.shape[1:])[None] * d.abs()).reshape(n_pairs, n_rows, -1).sum(-1)
    err = (lhs - centre).abs() - slack
    assert bool((err <= 1e-9 * (1 + lhs.abs() + centre.abs())).all()), (name, float(err.max()))


def draw_neuron_case(data: st.DataObject, template: str) -> tuple[object, FaultSpec, list[int], int]:
    seed = data.draw(st.integers(0, 10**6), label="seed")
    acts = data.draw(st.lists(st.sampled_from(sorted(ACTS)), min_size=3, max_size=3), label="acts")
    tg = TEMPLATES[template](seed, acts, **data.draw(template_kwargs(template), label="kwargs"))
    kind = data.draw(st.sampled_from(NEURON_KINDS), label="fault")
    c = data.draw(st.sampled_from([-1.5, 0.5, 2.0] if kind == "stuck" else [0.05, 0.5, 2.0]), label="c")
    n = len(tg.site_ids)
    counts = (
        [] if kind == "precision" else data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n), label="counts")
    )
    return tg, FaultSpec(kind, c), counts, seed


@soundness
@pytest.mark.parametrize("template", sorted(TEMPLATES))
@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_backsub_alone_sound_against_brute_force(template: str, data: st.DataObject) -> None:
    tg, spec, counts, seed = draw_neuron_case(data, template)
    net = tg.build()  # type: ignore[attr-defined]
    fault = to_fault(spec, net.L)
    x = corners_and_points(tg, 8, seed)  # type: ignore[arg-type]
    measured = brute_force(tg, spec, counts, x, seed=seed)  # type: ignore[arg-type]
    cnt = counts if counts else None
    refine = data.draw(st.sampled_from([0, 10**6]), label="refine_rows")
    for lo, hi in ((tg.lo[None], tg.hi[None]), (x, x)):  # type: ignore[attr-defined]
        gp = graph_forward(net, fault, cnt, lo, hi, refine_rows=refine)
        fwd = gp.devs[-1].total().reshape(measured.shape[0] if lo.shape[0] > 1 else 1, -1)
        assert bool((measured <= fwd + 1e-9 * (1 + fwd.abs())).all()), (template, spec, counts, "forward", refine)
        lin = graph_backsub(net, gp)
        if lin is None:
            assert not any(cnt or [1.0])
            continue
        assert bool((measured <= lin + 1e-9 * (1 + lin.abs())).all()), (template, spec, counts, measured, lin)


def _two_paths() -> GraphNetwork:
    """x in [1, 2]; s = relu(x) (the only site, 1 unit); h = (s, s) (dense, no activation between);
    out = h1 - h2, which is 0 for every x and every fault of s."""
    relu = activation_from_module(nn.ReLU())
    assert relu is not None
    one = torch.ones(1, 1, dtype=D)
    return GraphNetwork.build(
        [
            ("x", gops.Input(), ()),
            ("fc1", gops.Affine(Dense(one, torch.zeros(1, dtype=D))), (0,)),
            ("s", gops.Act(relu), (1,)),
            ("h", gops.Affine(Dense(torch.ones(2, 1, dtype=D), torch.zeros(2, dtype=D))), (2,)),
            ("out", gops.Affine(Dense(torch.tensor([[1.0, -1.0]], dtype=D), torch.zeros(1, dtype=D))), (3,)),
        ],
        (1,),
        (torch.ones(1, dtype=D), torch.full((1,), 2.0, dtype=D)),
    )


def test_two_paths_of_opposite_signs_cancel() -> None:
    """By hand: one crash of s moves h by (2, 2) at most, so the forward rule gives 2 + 2 = 4 (times
    1 + 1e-9 per node); the back-substitution sees d out / d s = 1 - 1 = 0: the bound is 0, which is
    exact (out = 0 whatever s sends)."""
    net = _two_paths()
    lo, hi = net.domain.lo[None], net.domain.hi[None]
    fwd = graph_propagate(net, Crash(), [1], lo, hi, linear=False)
    assert float(fwd.max()) == pytest.approx(4.0, rel=1e-8)
    lin = graph_backsub(net, graph_forward(net, Crash(), [1], lo, hi))
    assert lin is not None and float(lin.max()) == 0.0
    assert float(graph_propagate(net, Crash(), [1], lo, hi).max()) == 0.0


def test_no_failure_gives_no_linear_bound() -> None:
    net = _two_paths()
    lo, hi = net.domain.lo[None], net.domain.hi[None]
    assert graph_backsub(net, graph_forward(net, Crash(), [0], lo, hi)) is None


def test_forward_pass_refactor_keeps_the_forward_rule() -> None:
    """``linear=False`` is the forward rule alone: the total of the output node's Dev."""
    tg = TEMPLATES["residual"](4, ["tanh", "relu", "elu"], depth=2, sign=-1)
    net = tg.build()
    x = corners_and_points(tg, 4, 4)
    gp = graph_forward(net, Crash(), [1] * net.L, x, x)
    fwd = graph_propagate(net, Crash(), [1] * net.L, x, x, linear=False)
    assert torch.equal(gp.devs[-1].total().reshape(fwd.shape), fwd)
    both = graph_propagate(net, Crash(), [1] * net.L, x, x)
    assert bool((both <= fwd).all())
