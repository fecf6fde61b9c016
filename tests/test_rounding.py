"""The rounding allowance of a network run in float16 or bfloat16 (:mod:`faultbound.bounds.rounding`).

* ``test_reference_*``: the allowance of small explicit networks against the arithmetic model
  re-implemented from its statement (docs/formats.md) with plain Python floats, interval boxes
  written out by hand; it never imports the code it checks.
* ``test_model_*``: the facts about torch's CPU kernels that the arithmetic model rests on, measured.
* ``test_certificate_sound_in_format`` (and ``_cnn``, convolution chains measured by the engine): on
  random float16 and bfloat16 networks (chains of depth 1 to
  4 and residual blocks; ReLU, tanh, sigmoid), the measured :math:`|\\tilde F_{fmt}(x) - F_{fmt}(x)|`
  (brute force with forward hooks on the torch module in that format, every failure set of the given
  sizes, corners, centre and random points of the domain) never exceeds ``fb.bound``'s certificate.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import faultbound as fb
from faultbound.errors import UnboundedError, UnsupportedModelError
from faultbound.faults import Byzantine, Crash, Fault
from tests.hyp import examples, soundness

U = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
U32 = 2.0**-24
ETA = {torch.float16: 2.0**-25, torch.bfloat16: 2.0**-134}
ETA32 = 2.0**-150


def gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def linear(w: list[list[float]], b: list[float], dtype: torch.dtype) -> nn.Linear:
    m = nn.Linear(len(w[0]), len(w))
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w))
        m.bias.copy_(torch.tensor(b))
    return m.to(dtype)


# ------------------------------------------------------------------------------------ reference
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_dense_tanh_dense(dtype: torch.dtype) -> None:
    """x in [0, 1]^2, s = W1 x + b1 with W1 >= 0 (so the interval box of s is exact:
    [b1, b1 + row sums]), y = tanh(s), out = w2 . y + b2; float16 weights (exact in the format).

    Statement: r_x = u|x| + eta; a dense node of n inputs (n + 1 terms with the bias) adds
    c1 (|W| M_in + |b|) + (n + 1) eta_acc + 2 eta + n M_in eta, c1 = 2u + (1 + u)^2 gamma_{n+1}(u_32),
    and carries |W| r_in (its deviation rule); tanh adds u M_out + u^2 + 8 u_32 (M_out + M_in) + eta
    and carries K r_in with K the largest slope over the widened box; everything times 1 + 1e-9.
    """
    u, eta = U[dtype], ETA[dtype]
    w1, b1 = [[0.5, 0.25], [1.0, 0.75]], [0.125, -0.5]
    w2, b2 = [1.0, -0.5], 0.25
    model = nn.Sequential(linear(w1, b1, dtype), nn.Tanh(), linear([w2], [b2], dtype)).eval()
    net = fb.Network.from_torch(model)
    assert net.dtype == dtype
    got = fb.bounds.rounding.rounding_bound(net, Crash(), [0], net.domain.lo[None], net.domain.hi[None])

    safety = 1 + 1e-9
    eta_acc = ETA32
    c1 = 2 * u + (1 + u) ** 2 * gamma(3, U32)
    r_x = u * 1.0 + eta  # |x| <= 1
    m_x = 1.0 + r_x
    r_s, s_lo, s_hi = [], [], []
    for row, bias in zip(w1, b1, strict=True):
        prop = sum(abs(w) for w in row) * r_x
        local = c1 * (sum(abs(w) for w in row) * m_x + abs(bias)) + 3 * eta_acc + 2 * eta + 2 * m_x * eta
        r_s.append((prop + local) * safety)
        s_lo.append(bias)
        s_hi.append(bias + sum(row))
    r_y, m_y = [], []
    for k in range(2):
        lo, hi = s_lo[k] - r_s[k], s_hi[k] + r_s[k]
        slope = max(1 - math.tanh(v) ** 2 for v in ((lo, hi) if lo > 0 or hi < 0 else (0.0,)))
        m_out = max(abs(math.tanh(lo)), abs(math.tanh(hi)))
        m_in = max(abs(lo), abs(hi))
        local = u * m_out + u * u + 8 * U32 * (m_out + m_in) + eta
        r_y.append((slope * r_s[k] + local) * safety)
        m_y.append(max(abs(math.tanh(s_lo[k])), abs(math.tanh(s_hi[k]))) + r_y[-1])
    prop = sum(abs(w) * r for w, r in zip(w2, r_y, strict=True))
    local = c1 * (sum(abs(w) * m for w, m in zip(w2, m_y, strict=True)) + abs(b2)) + 3 * eta_acc + 2 * eta
    local += 2 * max(m_y) * eta
    want = (prop + local) * safety
    assert float(got.clean[0, 0]) == pytest.approx(want, rel=1e-6)

    # and it holds: the model in the format against float64 on many inputs
    x = torch.rand(4096, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_fmt = model(x.to(dtype)).double()
        y_exact = model.double()(x)
    assert float((y_fmt - y_exact).abs().max()) <= want


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_residual_relu_faulty_pass(dtype: torch.dtype) -> None:
    """x in [0, 1]^2, fc = I (no bias), r = relu(fc x) (the site), out = r + x summed by a dense
    [1, 1]. One crash: the faulty boxes of r are [0 - 1, 1 + 1] (the tight deviation of a crash is
    |y| <= 1), a failing unit sends 0 (exact), so the faulty pass carries r through the identity
    (c1 terms on |x| <= 1), the ReLU (slope 1, exact), the sum (gamma_2 (M_r + M_x)) and the output."""
    u, eta = U[dtype], ETA[dtype]

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.out = (
                linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], dtype),
                nn.ReLU(),
                linear([[1.0, 1.0]], [0.0], dtype),
            )

        def forward(self, x: Tensor) -> Tensor:
            return self.out(self.act(self.fc(x)) + x)

    net = fb.load(Block().eval(), input_shape=(2,))
    assert isinstance(net, fb.GraphNetwork) and net.dtype == dtype
    got = fb.bounds.rounding.rounding_bound(net, Crash(), [1], net.domain.lo[None], net.domain.hi[None])
    safety = 1 + 1e-9
    c1 = 2 * u + (1 + u) ** 2 * gamma(3, U32)
    r_x = u + eta

    def run(t: float) -> float:
        """The pass with the site's boxes widened by t (0: clean; 1: one crash)."""
        m_x = 1 + r_x
        r_fc = (r_x + c1 * m_x + 3 * ETA32 + 2 * eta + 2 * m_x * eta) * safety
        r_act = r_fc * safety  # ReLU: slope 1 over [0 - t - r, 1 + t + r], exact
        m_act = 1 + t + r_act
        r_add = (r_act + r_x + gamma(2, u) * (m_act + m_x)) * safety
        m_add = 2 + t + r_add
        return (2 * r_add + c1 * 2 * m_add + 3 * ETA32 + 2 * eta + 2 * m_add * eta) * safety

    assert float(got.clean[0, 0]) == pytest.approx(run(0.0), rel=1e-6)
    assert float(got.faulty[0, 0]) == pytest.approx(run(1.0), rel=1e-6)


def test_float64_and_unsupported_and_overflow() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    net64 = fb.Network.from_torch(m.double())
    r = fb.bounds.rounding.rounding_bound(net64, Crash(), [1], net64.domain.lo[None], net64.domain.hi[None])
    assert float(r.total.max()) == 0.0
    assert fb.bound(net64, [1]).rounding == 0.0
    # float32: computed on request, not added
    net32 = fb.Network.from_torch(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    assert 0 < fb.bounds.rounding.rounding_allowance(net32, Crash(), [1]) < 1e-4
    assert fb.bound(net32, [1]).rounding == 0.0
    # an operator without a rule: one line naming it
    ln = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 1)).half().eval()
    gnet = fb.load(ln, input_shape=(3,))
    with pytest.raises(UnsupportedModelError, match="No rounding rule for LayerNorm"):
        fb.bound(gnet, [1], method="tight")
    # values beyond float16's range
    big = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).half().eval()
    bnet = fb.Network.from_torch(big).with_domain((0, 60000))
    with pytest.raises(UnboundedError, match="largest number"):
        fb.bound(bnet, [1], method="tight")


# ------------------------------------------------------------------------------------ the model's facts
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_model_sums_accumulate_wider_than_the_format(dtype: torch.dtype) -> None:
    """1 + 2^-14 - 1 is 0 in a float16 or bfloat16 accumulator and 2^-14 in float32: torch's CPU
    dense, convolution and matrix products accumulate wider (the u_acc = 2^-24 of the model), and a
    random product's error stays within the model's c1 * sum |w x|."""
    x = torch.tensor([[1.0, 2.0**-14, -1.0]]).to(dtype)
    w = torch.ones(1, 3).to(dtype)
    assert float(F.linear(x, w)) == 2.0**-14
    assert float(x @ w.T) == 2.0**-14
    assert float(F.conv2d(x.reshape(1, 3, 1, 1), w.reshape(1, 3, 1, 1))) == 2.0**-14
    g = torch.Generator().manual_seed(0)
    for n in (3, 64, 1024):
        wt = torch.randn(32, n, generator=g).to(dtype)
        xs = torch.randn(256, n, generator=g).to(dtype)
        b = torch.randn(32, generator=g).to(dtype)
        got = F.linear(xs, wt, b).double()
        exact = F.linear(xs.double(), wt.double(), b.double())
        s = F.linear(xs.double().abs(), wt.double().abs(), b.double().abs())
        c1 = 2 * U[dtype] + (1 + U[dtype]) ** 2 * gamma(n + 1, U32)
        assert bool(((got - exact).abs() <= c1 * s).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_model_activations_within_their_allowance(dtype: torch.dtype) -> None:
    """Every smooth activation's result in the format is within u|y| + u^2 + 8 u_32 (|y| + |s|) + eta of
    the exact value, on a fine grid of [-20, 20] and near 0 (the model's activation rule)."""
    fi = torch.finfo(dtype)
    u, eta = float(fi.eps) / 2, float(fi.smallest_normal) * float(fi.eps) / 2
    grid = torch.linspace(-20, 20, 200001, dtype=torch.float64)
    tiny = torch.logspace(-9, 1.3, 20000, dtype=torch.float64)
    s = torch.cat([grid, tiny, -tiny]).to(dtype)
    fns = [torch.tanh, torch.sigmoid, F.gelu, F.silu, F.elu, F.softplus, F.leaky_relu]
    for fn in fns:
        got = fn(s).double()
        exact = fn(s.double())
        allow = u * exact.abs() + u * u + 8 * U32 * (exact.abs() + s.double().abs()) + eta
        assert bool(((got - exact).abs() <= allow).all()), fn


# ------------------------------------------------------------------------------------ soundness
ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class Residual(nn.Module):
    """x -> act1(fc1 x) -> act2(fc2 .) + x -> out: two sites."""

    def __init__(self, d: int, h: int, acts: tuple[str, str]) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(d, h), nn.Linear(h, d), nn.Linear(d, 2)
        self.act1, self.act2 = ACTS[acts[0]](), ACTS[acts[1]]()

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))) + x)


def brute_force(model: nn.Module, sites: list[nn.Module], counts: list[int], fault: Fault, x: Tensor) -> float:
    """max over every failure set of the given sizes (Byzantine: every sign pattern of +-C) and
    every input of |F~(x) - F(x)|, both run by the torch module in its format; failing units are
    replaced by forward hooks on the activation modules."""
    with torch.no_grad():
        clean = model(x).double()
    widths = [int(model_out_width(model, s, x)) for s in sites]
    per_site = [list(itertools.combinations(range(w), k)) for w, k in zip(widths, counts, strict=True)]
    worst = 0.0
    for choice in itertools.product(*per_site):
        n_fail = sum(len(c) for c in choice)
        values = (
            [[0.0] * n_fail]
            if isinstance(fault, Crash)
            else itertools.product(*[[-fault.capacity, fault.capacity]] * n_fail)
        )
        for vals in values:
            it = iter(vals)
            hooks = []
            for mod, units in zip(sites, choice, strict=True):
                assigned = [(j, next(it)) for j in units]

                def hook(_m: nn.Module, _i: object, y: Tensor, assigned: list[tuple[int, float]] = assigned) -> Tensor:
                    y = y.clone()
                    for j, v in assigned:
                        y[:, j] = v
                    return y

                hooks.append(mod.register_forward_hook(hook))
            try:
                with torch.no_grad():
                    faulty = model(x).double()
            finally:
                for h in hooks:
                    h.remove()
            worst = max(worst, float((faulty - clean).abs().max()))
    return worst


def model_out_width(model: nn.Module, site: nn.Module, x: Tensor) -> int:
    seen: list[int] = []
    h = site.register_forward_hook(lambda _m, _i, y: seen.append(y.shape[1]))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        h.remove()
    return seen[0]


@soundness
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_certificate_sound_in_format(dtype: torch.dtype, data: st.DataObject) -> None:
    seed = data.draw(st.integers(0, 10**6), label="seed")
    kind = data.draw(st.sampled_from(["chain", "residual"]), label="kind")
    torch.manual_seed(seed)
    d = data.draw(st.integers(2, 4), label="d")
    if kind == "chain":
        depth = data.draw(st.integers(1, 4), label="depth")
        widths = [data.draw(st.integers(2, 5), label="width") for _ in range(depth)]
        acts = [data.draw(st.sampled_from(sorted(ACTS)), label="act") for _ in range(depth)]
        mods: list[nn.Module] = []
        prev = d
        for w, a in zip(widths, acts, strict=True):
            mods += [nn.Linear(prev, w), ACTS[a]()]
            prev = w
        model: nn.Module = nn.Sequential(*mods, nn.Linear(prev, 2))
        sites = [m for m in mods if not isinstance(m, nn.Linear)]
    else:
        acts2 = (data.draw(st.sampled_from(sorted(ACTS))), data.draw(st.sampled_from(sorted(ACTS))))
        model = Residual(d, data.draw(st.integers(2, 5), label="h"), acts2)
        sites = [model.act1, model.act2]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(data.draw(st.sampled_from([1.0, 2.0, 4.0]), label="scale"))
    model = model.to(dtype).eval()
    net = fb.load(model, input_shape=(d,))
    assert net.dtype == dtype and net.L == len(sites)
    byz = data.draw(st.booleans(), label="byzantine")
    counts = [0] * len(sites)
    for _ in range(data.draw(st.integers(1, 1 if byz else 2), label="failures")):
        counts[data.draw(st.integers(0, len(sites) - 1), label="site")] += 1
    counts = [min(c, net.widths[k] - 1) for k, c in enumerate(counts)]
    fault: Fault = Byzantine(data.draw(st.sampled_from([0.5, 2.0]), label="C")) if byz else Crash()
    cert = fb.bound(net, counts, fault, method="tight")
    assert cert.rounding > 0
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    x = torch.cat(
        [corners, torch.full((1, d), 0.5, dtype=torch.float64), torch.rand(300, d, dtype=torch.float64, generator=g)]
    )
    measured = brute_force(model, sites, counts, fault, x.to(dtype))
    assert measured <= cert.value, (measured, cert.value, cert.rounding)
    engine = engine_worst(net, counts, fault, x)
    assert engine <= cert.value, (engine, cert.value, cert.rounding)


def engine_worst(net: fb.Network | fb.GraphNetwork, counts: list[int], fault: Fault, x: Tensor) -> float:
    """What the engine measures in the network's format (its default dtype) over every failure set
    of the given sizes, with its adversarial values: the largest output error."""
    from faultbound.measure import inject
    from faultbound.measure.faultset import FaultSet

    combos = [list(itertools.combinations(range(w), k)) for w, k in zip(net.widths, counts, strict=True)]
    sets = list(itertools.product(*combos))
    sites = tuple(
        torch.tensor([list(c[l]) for c in sets], dtype=torch.long) if counts[l] else None for l in range(len(counts))
    )
    res = inject(net, x, fault, FaultSet(len(sets), sites), values="adversarial")
    assert res.outputs.dtype == net.dtype
    return float(res.errors.max())


@soundness
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_certificate_sound_in_format_cnn(dtype: torch.dtype, data: st.DataObject) -> None:
    """Convolution chains (a 3x3 convolution, ReLU or tanh, average pooling or not, then a dense
    tanh layer): what the engine measures in the format over every failure set of one unit, on
    corners, the centre and random inputs, never exceeds the certificate."""
    seed = data.draw(st.integers(0, 10**6), label="seed")
    torch.manual_seed(seed)
    act = ACTS[data.draw(st.sampled_from(["relu", "tanh"]), label="act")]
    pool = data.draw(st.booleans(), label="pool")
    mods: list[nn.Module] = [nn.Conv2d(1, 3, 3, padding=1), act()]
    if pool:
        mods.append(nn.AvgPool2d(2))
    mods += [nn.Flatten(), nn.Linear(3 * (9 if pool else 36), 4), nn.Tanh(), nn.Linear(4, 2)]
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(data.draw(st.sampled_from([1.0, 2.0]), label="scale"))
    net = fb.Network.from_torch(model.to(dtype).eval(), input_shape=(1, 6, 6))
    assert net.dtype == dtype
    counts = data.draw(st.sampled_from([[1, 0], [0, 1]]), label="counts")
    fault: Fault = data.draw(st.sampled_from([Crash(), Byzantine(1.0)]), label="fault")
    cert = fb.bound(net, counts, fault, method="tight")
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6), torch.rand(62, 1, 6, 6, generator=g)]).double()
    measured = engine_worst(net, counts, fault, x)
    assert measured <= cert.value, (measured, cert.value, cert.rounding)
