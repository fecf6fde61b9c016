"""The tight bound against brute force: every failure set of the given sizes, many inputs.

The brute force below is deliberately slow and plain: one failure configuration at a time, layer
by layer with ``Layer.pre`` and the activation, replacing what the failing units send.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import faultbound as fb
from faultbound.bounds import tight
from faultbound.bounds.tight import prepare, propagate, refined_intervals, tight_bound
from faultbound.faults import (
    Byzantine,
    ByzantineDeviation,
    Crash,
    Fault,
    NeuronFault,
    Precision,
    StuckAt,
    SynapseByzantine,
    SynapseCrash,
)
from faultbound.network.core import Network
from faultbound.nn import TunedSigmoid
from tests.hyp import examples, soundness

ACTS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tuned3": lambda: TunedSigmoid(3.0),
    "tuned05": lambda: TunedSigmoid(0.5),
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "hardtanh": nn.Hardtanh,
}
TOL = 1e-9


# --------------------------------------------------------------------------- networks


def make_net(
    seed: int, widths: Sequence[int], acts: Sequence[str], conv: bool, scale: float, d_in: int = 2, n_out: int = 2
) -> Network:
    g = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    if conv:
        # 1x3x3 input -> conv 2x2 (2 channels, 2x2 map = 8 neurons) -> dense widths[1:]
        mods += [nn.Conv2d(1, 2, 2), ACTS[acts[0]](), nn.Flatten()]
        prev, shape = 8, (1, 3, 3)
        rest = list(zip(widths[1:], acts[1:], strict=True))
    else:
        prev, shape = d_in, (d_in,)
        rest = list(zip(widths, acts, strict=True))
    for w, a in rest:
        mods += [nn.Linear(prev, w), ACTS[a]()]
        prev = w
    mods.append(nn.Linear(prev, n_out))
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)
    return fb.Network.from_torch(model, input_shape=shape)


def points(net: Network, n_random: int, seed: int, lo: Tensor | None = None, hi: Tensor | None = None) -> Tensor:
    """Every corner of the box (32 random corners above 5 inputs) and uniform random points."""
    lo = net.domain.lo if lo is None else lo
    hi = net.domain.hi if hi is None else hi
    d = lo.numel()
    g = torch.Generator().manual_seed(seed)
    if d <= 5:
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    else:
        bits = torch.randint(0, 2, (32, d), generator=g).to(torch.float64)
    corners = lo.flatten() + bits * (hi - lo).flatten()
    rand = lo.flatten() + torch.rand((n_random, d), dtype=torch.float64, generator=g) * (hi - lo).flatten()
    mid = ((lo + hi) / 2).flatten()[None]
    return torch.cat([corners, rand, mid]).reshape(-1, *net.input_shape)


# --------------------------------------------------------------------------- brute force


def faulty_forward(
    net: Network,
    x: Tensor,
    neurons: dict[int, dict[int, float]] | None = None,
    fault: Fault | None = None,
    synapses: dict[int, dict[tuple[int, int], float]] | None = None,
    noise: dict[int, Tensor] | None = None,
) -> Tensor:
    """One configuration. ``neurons[l][i] = v``: neuron i of hidden layer l fails, sending v
    (crash: 0; Byzantine: v; Byzantine-deviation: y + v; stuck-at: v). ``synapses[l][(j, i)] = v``:
    synapse i -> j into layer l sends v instead of A_ji y_i. ``noise[l]``: added to layer l's
    outputs (precision).

    Byzantine deviation: the failing neuron sends its *fault-free* value plus v (the documented
    statement of ``ByzantineDeviation``), so the clean network runs alongside."""
    y = y_clean = x
    B = x.shape[0]
    for idx, layer in enumerate(net.layers):
        l = idx + 1
        s = layer.pre(y).reshape(B, -1).clone()
        if layer.activation is not None:
            clean_out = layer.activation(layer.pre(y_clean).reshape(B, -1))
            y_clean = clean_out.reshape(B, *layer.out_shape)
        if synapses and synapses.get(l):
            A = layer.effective_matrix()
            yf = y.reshape(B, -1)
            for (j, i), v in synapses[l].items():
                s[:, j] = s[:, j] - A[j, i] * yf[:, i] + v
        if layer.activation is None:
            return s
        out = layer.activation(s).clone()
        if neurons and neurons.get(l):
            for i, v in neurons[l].items():
                if isinstance(fault, ByzantineDeviation):
                    out[:, i] = clean_out[:, i] + v
                else:
                    out[:, i] = v
        if noise is not None and l in noise:
            out = out + noise[l]
        y = out.reshape(B, *layer.out_shape)
    raise AssertionError("unreachable")


def neuron_value_choices(fault: NeuronFault, k: int, g: torch.Generator) -> Iterator[list[float]]:
    if isinstance(fault, Crash):
        yield [0.0] * k
        return
    if isinstance(fault, StuckAt):
        yield [fault.value] * k
        return
    c = fault.capacity  # type: ignore[attr-defined]
    for signs in itertools.product([-1.0, 1.0], repeat=k):
        yield [c * s for s in signs]
    for _ in range(2):
        yield [float((torch.rand((), generator=g, dtype=torch.float64) * 2 - 1) * c) for _ in range(k)]


def brute_neurons(net: Network, failures: Sequence[int], fault: NeuronFault, x: Tensor, seed: int = 0) -> Tensor:
    """Largest output error per input over every neuron failure set of exactly these sizes."""
    g = torch.Generator().manual_seed(seed)
    clean = net.forward(x)
    worst = torch.zeros(x.shape[0], dtype=torch.float64)
    per_layer = [list(itertools.combinations(range(lay.width), f)) for lay, f in zip(net.hidden, failures, strict=True)]
    for sets in itertools.product(*per_layer):
        flat = [(l + 1, i) for l, s in enumerate(sets) for i in s]
        for vals in neuron_value_choices(fault, len(flat), g):
            cfg: dict[int, dict[int, float]] = {}
            for (l, i), v in zip(flat, vals, strict=True):
                cfg.setdefault(l, {})[i] = v
            err = (faulty_forward(net, x, cfg, fault) - clean).abs().amax(1)
            worst = torch.maximum(worst, err)
    return worst


def structural_synapses(layer: fb.network.core.Layer) -> list[tuple[int, int]]:
    A = layer.effective_matrix()
    if layer.kind == "dense":
        return [(j, i) for j in range(A.shape[0]) for i in range(A.shape[1])]
    return [(int(j), int(i)) for j, i in torch.nonzero(A != 0)]


def brute_synapses(net: Network, failures: Sequence[int], fault: Fault, x: Tensor, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    clean = net.forward(x)
    worst = torch.zeros(x.shape[0], dtype=torch.float64)
    per_layer = [
        list(itertools.combinations(structural_synapses(lay), f)) for lay, f in zip(net.layers, failures, strict=True)
    ]
    for sets in itertools.product(*per_layer):
        flat = [(l + 1, ji) for l, s in enumerate(sets) for ji in s]
        if isinstance(fault, SynapseCrash):
            choices: list[list[float]] = [[0.0] * len(flat)]
        else:
            c = fault.capacity  # type: ignore[attr-defined]
            choices = [[c * s for s in signs] for signs in itertools.product([-1.0, 1.0], repeat=len(flat))]
            choices.append([float((torch.rand((), generator=g) * 2 - 1) * c) for _ in flat])
        for vals in choices:
            cfg: dict[int, dict[tuple[int, int], float]] = {}
            for (l, ji), v in zip(flat, vals, strict=True):
                cfg.setdefault(l, {})[ji] = v
            err = (faulty_forward(net, x, synapses=cfg) - clean).abs().amax(1)
            worst = torch.maximum(worst, err)
    return worst


def brute_precision(net: Network, lam: Sequence[float], x: Tensor, n_draws: int = 40, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    clean = net.forward(x)
    worst = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(n_draws):
        noise = {}
        for l, lay in enumerate(net.hidden, start=1):
            signs = torch.randint(0, 2, (x.shape[0], lay.width), generator=g).to(torch.float64) * 2 - 1
            noise[l] = signs * lam[l - 1]
        err = (faulty_forward(net, x, noise=noise) - clean).abs().amax(1)
        worst = torch.maximum(worst, err)
    return worst


# --------------------------------------------------------------------------- strategies

act_names = st.sampled_from(sorted(ACTS))


@st.composite
def networks(draw: st.DrawFn, max_layers: int = 3) -> Network:
    L = draw(st.integers(1, max_layers))
    conv = draw(st.booleans()) and L >= 2
    widths = [draw(st.integers(2, 4)) for _ in range(L)]
    if conv:
        widths[0] = 8
    acts = [draw(act_names) for _ in range(L)]
    scale = draw(st.sampled_from([0.5, 1.0, 2.0, 4.0]))
    seed = draw(st.integers(0, 10_000))
    return make_net(seed, widths, acts, conv, scale)


def neuron_failures(draw: st.DrawFn, net: Network, max_total: int = 4) -> list[int]:
    f = [draw(st.integers(0, min(2, w - 1))) for w in net.widths]
    while sum(f) > max_total:
        f[f.index(max(f))] -= 1
    return f


#: More examples under `make soundness` (FB_SOUNDNESS_SCALE, tests/hyp.py)
N_EXAMPLES = examples(60)
SETTINGS = settings(
    max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _check(measured: Tensor, bound: float, what: str) -> None:
    worst = float(measured.max())
    assert worst <= bound + TOL, f"{what}: measured {worst} > bound {bound}"


# --------------------------------------------------------------------------- properties


@soundness
@SETTINGS
@given(data=st.data(), net=networks())
def test_crash_and_byzantine_sound_and_below_paper(data: st.DataObject, net: Network) -> None:
    f = neuron_failures(data.draw, net)
    fault: NeuronFault = data.draw(
        st.sampled_from([Crash(), Byzantine(0.5), Byzantine(2.0), ByzantineDeviation(0.7), StuckAt(1.5)])
    )
    x = points(net, 40, seed=sum(f))
    measured = brute_neurons(net, f, fault, x)
    value, per = tight_bound(net, f, fault)
    _check(measured, value, f"{fault} f={f}")
    paper = fb.bound(net, f, fault, method="paper").value
    assert value <= paper * (1 + 1e-9) + 1e-12
    mono, _ = tight_bound(net, f, fault, monotone=True)
    assert value <= mono * (1 + 1e-12) + 1e-15
    assert all(0 <= p <= mono * (1 + 1e-12) + 1e-15 for p in per)


@soundness
@SETTINGS
@given(data=st.data(), net=networks(max_layers=2))
def test_synapse_faults_sound_and_below_paper(data: st.DataObject, net: Network) -> None:
    n = net.L + 1
    g = [0] * n
    for _ in range(data.draw(st.integers(1, 2))):
        g[data.draw(st.integers(0, n - 1))] += 1
    fault = data.draw(st.sampled_from([SynapseCrash(), SynapseByzantine(0.5), SynapseByzantine(1.5)]))
    x = points(net, 16, seed=1)
    measured = brute_synapses(net, g, fault, x)
    value, _ = tight_bound(net, g, fault)
    _check(measured, value, f"{fault} g={g}")
    assert value <= fb.bound(net, g, fault, method="paper").value * (1 + 1e-9) + 1e-12


@soundness
@SETTINGS
@given(data=st.data(), net=networks())
def test_precision_sound_and_below_paper(data: st.DataObject, net: Network) -> None:
    lam = [data.draw(st.sampled_from([0.0, 0.01, 0.1, 0.5])) for _ in range(net.L)]
    fault = Precision(lam)
    x = points(net, 24, seed=2)
    measured = brute_precision(net, lam, x)
    value, per = tight_bound(net, None, fault)
    _check(measured, value, f"precision {lam}")
    assert value <= fb.bound(net, None, fault, method="paper").value * (1 + 1e-9) + 1e-12
    assert len(per) == net.L


@soundness
@settings(max_examples=max(15, N_EXAMPLES // 2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), net=networks())
def test_monotone_in_every_count(data: st.DataObject, net: Network) -> None:
    fault = data.draw(st.sampled_from([Crash(), Byzantine(1.0)]))
    plan = prepare(net, fault)
    f = neuron_failures(data.draw, net)
    base = float(propagate(plan, f, monotone=True).amax())
    for l in range(net.L):
        if f[l] + 1 < net.widths[l]:
            up = list(f)
            up[l] += 1
            assert float(propagate(plan, up, monotone=True).amax()) >= base * (1 - 1e-12)


@soundness
@SETTINGS
@given(net=networks(max_layers=3), seed=st.integers(0, 1000))
def test_domain_intervals_contain_clean_values(net: Network, seed: int) -> None:
    """The refined (linear relaxation) intervals hold every clean pre-activation, inside IBP's."""
    lo, hi = net.domain.lo[None], net.domain.hi[None]
    refined = refined_intervals(net, lo, hi)
    ibp = refined_intervals(net, lo, hi, refine=False)
    x = points(net, 300, seed)
    y = x
    for l, layer in enumerate(net.layers, start=1):
        s = layer.pre(y).reshape(x.shape[0], -1)
        assert bool((s >= refined[l].s_lo - 1e-12).all() and (s <= refined[l].s_hi + 1e-12).all()), f"layer {l}"
        tol = 1e-9 * (1 + ibp[l].s_hi.abs() + ibp[l].s_lo.abs())  # the outward slack is relative
        assert bool((refined[l].s_lo >= ibp[l].s_lo - tol).all() and (refined[l].s_hi <= ibp[l].s_hi + tol).all())
        y = layer.forward(y)


@pytest.mark.parametrize("path", ["unfold", "fallback"])
def test_large_layer_paths_sound(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """The unfold (plain convolutions) and fallback (other chains) rules, forced on a small net."""
    monkeypatch.setattr(tight, "_MATRIX_ENTRIES", 0)
    monkeypatch.setattr(tight, "_LOCAL_ENTRIES", 0)
    torch.manual_seed(3)
    if path == "unfold":
        model = nn.Sequential(
            nn.Conv2d(1, 2, 2, padding=1),
            nn.Tanh(),
            nn.Conv2d(2, 2, 2, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8, 2),
        )
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 2, 2), nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)
        )
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    net = fb.Network.from_torch(model, input_shape=(1, 2, 2) if path == "unfold" else (1, 3, 3))
    x = points(net, 40, seed=4)
    twos = [tuple(2 if i == l else 0 for i in range(net.L)) for l in range(net.L)]
    counts = [*itertools.product(*[range(2) for _ in net.widths]), *twos]
    for f in counts:
        for fault in (Crash(), Byzantine(1.0)):
            value, _ = tight_bound(net, list(f), fault)
            _check(brute_neurons(net, list(f), fault, x), value, f"{path} {fault} f={f}")
    g = [1] + [0] * net.L
    for fault in (SynapseCrash(), SynapseByzantine(1.0)):
        for pos in range(net.L + 1):
            gg = [1 if i == pos else 0 for i in range(net.L + 1)]
            value, _ = tight_bound(net, gg, fault)
            _check(brute_synapses(net, gg, fault, x), value, f"{path} {fault} g={g}")


# --------------------------------------------------------------------------- hand-worked


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_hand_worked_saturated_sigmoid() -> None:
    """x in [0, 1]; h = relu((1, 2) x); z = sigmoid(h_1 + h_2 + 10); F = 5 z. One crash in layer 1.

    * Delta = max |h| = (1, 2); layer 2: t = top-1 of (1 * 1, 1 * 2) = 2.
    * s in [10, 13], widened to [8, 15]: slope sigma'(8) = 3.3535e-4, so K t = 6.7070e-4; the image
      cap is max(sigma(15) - sigma(10), sigma(13) - sigma(8)) = 3.3311e-4 (smaller).
    * bound = 5 * 3.3311e-4 = 1.6656e-3; the paper: w_m^(3) K w_m^(2) Delta = 5 * 0.25 * 1 * 2 = 2.5.
    """
    l1, l2, l3 = nn.Linear(1, 2), nn.Linear(2, 1), nn.Linear(1, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0], [2.0]]))
        l1.bias.zero_()
        l2.weight.fill_(1.0)
        l2.bias.fill_(10.0)
        l3.weight.fill_(5.0)
        l3.bias.zero_()
    net = fb.Network.from_torch(nn.Sequential(l1, nn.ReLU(), l2, nn.Sigmoid(), l3))
    value, per = tight_bound(net, [1, 0], Crash())
    expected = 5 * (_sig(13) - _sig(8))
    assert value == pytest.approx(expected, rel=1e-9)
    assert value == pytest.approx(1.6656e-3, rel=1e-4)
    assert per == pytest.approx([expected, 0.0], rel=1e-9)
    assert fb.bound(net, [1, 0], Crash(), method="paper").value == pytest.approx(2.5)
    assert fb.bound(net, [1, 0], Crash(), method="tight").value == pytest.approx(expected, rel=1e-9)
    # and it holds: crashing h_2 moves F by 5 (sigma(10 + 3x) - sigma(10 + x)), largest near x = 0.55
    # (8.74e-5); crashing h_1 moves it less.
    x = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    measured = float(brute_neurons(net, [1, 0], Crash(), x).max())
    assert measured == pytest.approx(max(5 * (_sig(10 + 3 * v) - _sig(10 + v)) for v in x.flatten().tolist()))
    assert measured == pytest.approx(8.74e-5, rel=1e-2)
    assert measured <= value


def test_hand_worked_single_layer_exact() -> None:
    """One ReLU layer h = relu((1, 2) x), F = 3 h_1 - h_2 on [0, 1]: a crash moves F by at most
    max(3 * 1, 1 * 2) = 3 (crash h_1 at x = 1: exact); the paper says w_m Y = 3 * 2 = 6."""
    l1, l2 = nn.Linear(1, 2), nn.Linear(2, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor([[1.0], [2.0]]))
        l1.bias.zero_()
        l2.weight.copy_(torch.tensor([[3.0, -1.0]]))
        l2.bias.zero_()
    net = fb.Network.from_torch(nn.Sequential(l1, nn.ReLU(), l2))
    assert tight_bound(net, [1], Crash())[0] == pytest.approx(3.0, rel=1e-9)
    assert fb.bound(net, [1], Crash(), method="paper").value == pytest.approx(6.0)
    # Byzantine(C=1): deviations (1 + 1, 1 + 2) -> max(3 * 2, 1 * 3) = 6.
    assert tight_bound(net, [1], Byzantine(1.0))[0] == pytest.approx(6.0, rel=1e-9)
    # one crashed synapse into the output: max(3 * 1, 1 * 2) = 3 as well.
    assert tight_bound(net, [0, 1], SynapseCrash())[0] == pytest.approx(3.0, rel=1e-9)


def test_registered_in_bound_api() -> None:
    assert "tight" in fb.bounds.METHODS
    net = make_net(0, [3, 3], ["tanh", "relu"], False, 1.0)
    res = fb.bound(net, [1, 1], Crash(), method="tight")
    assert res.method == "tight" and res.value > 0 and len(res.per_layer) == 2


def test_regression_leaky_slope_kept_in_float64() -> None:
    """Found by the thorough run: a LeakyReLU(0.2) derivative range built from float32 scalars
    (0.2000000030) excluded the true slope 0.2 and the bound fell 1e-9 below the measured error."""
    net = make_net(1, [2, 3], ["elu", "leaky"], False, 2.0)
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    measured = float(brute_neurons(net, [1, 0], Crash(), x).max())
    assert measured == pytest.approx(3.70700933097, rel=1e-9)
    plan = prepare(net, Crash(), x, x)
    assert float(propagate(plan, [1, 0]).amax()) >= measured * (1 - 1e-14)


# --------------------------------------------------------------------------- regression: issue 8, case B

CASE_B = {
    "W1": [[0.8822612115715436], [0.3092959134123521]],
    "b1": [0.7057653684286047, 0.2863711624565486],
    "W2": [
        [-0.4766106663496148, -0.994103929983456],
        [-0.2933060088625663, 0.2210644727906168],
        [0.7513763380959928, -0.3163447297270987],
    ],
    "b2": [0.2050721585623676, 0.4315978783224421, -0.18105090390529743],
    "W3": [[0.20689873227932898, 0.8191920934213794, 0.8105561985520378]],
    "b3": [0.49950594970360385],
}


def _case_b_module() -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 2), nn.Tanh(), nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        for lin, k in zip((model[0], model[2], model[4]), ("1", "2", "3"), strict=True):
            lin.weight.copy_(torch.tensor(CASE_B["W" + k], dtype=torch.float64))
            lin.bias.copy_(torch.tensor(CASE_B["b" + k], dtype=torch.float64))
    return model


def test_case_b_byzantine_deviation_tight_covers_the_true_error() -> None:
    """Issue 8, case B: tight under Byzantine deviation was 0.6029 below a true error of 0.6705.

    The true error is recomputed here with plain Python floats from the statement "a failing unit
    sends its fault-free value + u": layer 1 unit 0 and layer 2 unit 1 fail with u = -0.5, x = 1."""
    x, u = 1.0, -0.5
    W1, b1, W2, b2, W3, b3 = (CASE_B[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    h1 = [math.tanh(W1[j][0] * x + b1[j]) for j in range(2)]
    h2 = [math.tanh(sum(W2[j][i] * h1[i] for i in range(2)) + b2[j]) for j in range(3)]
    out = sum(W3[0][i] * h2[i] for i in range(3)) + b3[0]
    g1 = list(h1)
    g1[0] = h1[0] + u
    g2 = [math.tanh(sum(W2[j][i] * g1[i] for i in range(2)) + b2[j]) for j in range(3)]
    g2[1] = h2[1] + u
    out_f = sum(W3[0][i] * g2[i] for i in range(3)) + b3[0]
    true_error = abs(out_f - out)
    assert true_error == pytest.approx(0.670471, abs=1e-6)

    net = Network.from_torch(_case_b_module())
    fault = ByzantineDeviation(0.5)
    tight_value = fb.bound(net, [1, 1], fault, method="tight").value
    paper_value = fb.bound(net, [1, 1], fault, method="paper").value
    assert true_error <= tight_value <= paper_value
    # and against the brute force over every failure set, sign and a grid of the domain
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    assert float(brute_neurons(net, [1, 1], fault, grid).max()) <= tight_value + TOL

# --------------------------------------------------------------------------- conv / pool chains


@st.composite
def conv_chains(draw: st.DrawFn) -> Network:
    """Conv -> act -> [AvgPool] -> Conv (strides, paddings, overlapping pools) -> act -> Linear."""
    H = draw(st.integers(4, 6))
    c1, c2 = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k1, p1, s1 = draw(st.integers(2, 3)), draw(st.integers(0, 1)), draw(st.integers(1, 2))
    pool = draw(st.sampled_from([None, (2, 2, 0), (2, 1, 0), (3, 2, 1)]))
    k2, p2, s2 = draw(st.integers(1, 3)), draw(st.integers(0, 1)), draw(st.integers(1, 2))
    act = draw(st.sampled_from(["relu", "tanh", "sigmoid", "leaky"]))
    scale = draw(st.sampled_from([0.5, 1.0, 2.0]))
    seed = draw(st.integers(0, 10_000))
    side = (H + 2 * p1 - k1) // s1 + 1
    mods: list[nn.Module] = [nn.Conv2d(1, c1, k1, stride=s1, padding=p1), ACTS[act]()]
    if pool is not None:
        pk, ps, pp = pool
        if side + 2 * pp < pk:
            pool = None
        else:
            mods.append(nn.AvgPool2d(pk, ps, pp))
            side = (side + 2 * pp - pk) // ps + 1
    side2 = (side + 2 * p2 - k2) // s2 + 1
    if side2 < 1 or side < 1:  # no room for the second conv: a 1x1 one
        k2, p2, s2, side2 = 1, 0, 1, side
    mods += [nn.Conv2d(c1, c2, k2, stride=s2, padding=p2), ACTS[act](), nn.Flatten(), nn.Linear(c2 * side2 * side2, 2)]
    model = nn.Sequential(*mods)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)
    return fb.Network.from_torch(model, input_shape=(1, H, H))


def _dense_band(layer: fb.network.core.Layer, loc: tight._Local) -> Tensor:
    A = torch.zeros((layer.width, layer.in_width), dtype=torch.float64)
    rows = torch.arange(layer.width)[:, None].expand_as(loc.index)
    A[rows[loc.valid], loc.index[loc.valid]] = loc.values[loc.valid]
    return A


@soundness
@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=conv_chains(), seed=st.integers(0, 100), k=st.integers(1, 5))
def test_local_band_is_the_effective_matrix(net: Network, seed: int, k: int) -> None:
    """The receptive-field band holds exactly the entries of A (every non-zero, each once), and its
    sums and signed / clamped top-k equal those of the materialised matrix."""
    g = torch.Generator().manual_seed(seed)
    for layer in net.hidden:
        loc = tight._local_rows(layer)
        assert loc is not None
        A = layer.effective_matrix()
        assert torch.allclose(_dense_band(layer, loc), A, rtol=0, atol=1e-12)
        # each input position appears at most once per row
        for j in range(layer.width):
            idx = loc.index[j][loc.valid[j]]
            assert idx.unique().numel() == idx.numel()
        local = tight._Rows(layer, "local", local=loc)
        dense = tight._Rows(layer, "matrix", A.abs(), A != 0)
        e = torch.rand((2, layer.in_width), generator=g, dtype=torch.float64)
        u = torch.rand((2, layer.in_width), generator=g, dtype=torch.float64) * 2 - 1
        assert torch.allclose(local.abs_mul(e), dense.abs_mul(e), rtol=1e-12, atol=1e-14)
        for signed in (True, False):
            got = local.topk(k, lambda w, v: w * v, [u], signed)
            ref = dense.topk(k, lambda w, v: w * v, [u], signed)
            assert torch.allclose(got, ref, rtol=1e-12, atol=1e-14), (signed, got, ref)
        M = torch.rand((3, layer.width), generator=g, dtype=torch.float64) * 2 - 1
        assert torch.allclose(local.vjp(M, absolute=False), M @ A, rtol=1e-12, atol=1e-13)
        assert torch.allclose(local.vjp(M.abs(), absolute=True), M.abs() @ A.abs(), rtol=1e-12, atol=1e-13)


@soundness
@settings(max_examples=max(10, N_EXAMPLES // 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=conv_chains(), data=st.data())
def test_conv_pool_chains_sound(net: Network, data: st.DataObject) -> None:
    """Brute force over every failure set on Conv -> [AvgPool] -> Conv chains, with the band rows
    forced (no matrix), and with the default rule choice."""
    forced = data.draw(st.booleans())
    with pytest.MonkeyPatch.context() as m:
        if forced:
            m.setattr(tight, "_MATRIX_ENTRIES", 0)
            if data.draw(st.booleans()):  # the second bound pulls back through the ops, not the band
                m.setattr(tight, "_VJP_ENTRIES", 0)
        x = points(net, 24, seed=1)
        widths = net.widths
        counts = [[1, 0], [0, 1], [1, 1]] + ([[0, 2]] if widths[1] >= 2 else [])
        for f in counts:
            for fault in (Crash(), Byzantine(1.0)):
                value, _ = tight_bound(net, f, fault)
                _check(brute_neurons(net, f, fault, x), value, f"forced={forced} {fault} f={f}")
        plan = prepare(net, Crash())
        if forced:
            assert [r.kind for r in plan.rows] == ["local", "local", "matrix"]


def _abs_jacobian_range(net: Network, k: int, f: int, capacity: float | None) -> float:
    """Reference: per output, top_f over the neurons i of hidden layer k of |J|_{oi} Delta_i with
    |J| = |A_{L+1}| K_L |A_L| ... K_{k+1} |A_{k+1}| (dense effective matrices) and Delta_i the
    neuron's range max|y_i| over interval propagation (+ C for Byzantine)."""
    J = net.layers[-1].effective_matrix().abs()
    for l in range(net.L, k, -1):  # hidden layer l (1-based) sits between A_l and A_{l+1}
        act = net.layers[l - 1].activation
        assert act is not None
        J = (J * act.K) @ net.layers[l - 1].effective_matrix().abs()
    iv = net.intervals()[k - 1]
    delta = torch.maximum(iv.y_lo.abs(), iv.y_hi.abs()).reshape(-1)
    if capacity is not None:
        delta = delta + capacity
    terms = J * delta[None]
    return float(torch.topk(terms, min(f, terms.shape[1]), dim=1).values.sum(1).max())


@soundness
@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net=conv_chains(), forced=st.booleans(), f=st.integers(1, 3))
def test_tight_never_above_jacobian_times_range(net: Network, forced: bool, f: int) -> None:
    """One failing layer: tight <= top_f(|J| Delta), the simple sound bound (issue 12)."""
    with pytest.MonkeyPatch.context() as m:
        if forced:
            m.setattr(tight, "_MATRIX_ENTRIES", 0)
        for k in (1, 2):
            counts = [f if i == k - 1 else 0 for i in range(net.L)]
            for fault, cap in ((Crash(), None), (Byzantine(1.0), 1.0)):
                value, _ = tight_bound(net, counts, fault)
                ref = _abs_jacobian_range(net, k, f, cap)
                assert value <= ref * (1 + 1e-9) + 1e-300, (k, f, fault, value, ref)
