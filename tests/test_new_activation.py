"""Adding an activation touches one file: here a softsign :math:`x / (1 + |x|)` is defined entirely in
this test (its rules in one :class:`Activation` subclass, registered for a test-local ``nn.Module``),
and the whole library reads, bounds and measures networks that use it.

The references are written from the statement, not from library code: a crashed neuron sends 0
instead of its value (the paper's crash), the network's output moves by
:math:`\\max_o |F_{fail}(x)_o - F(x)_o|`, and the worst case over every failure set of the given sizes
is found by enumerating the sets on sample inputs (a lower bound of the true worst case, so every
certified bound must be at least as large).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import faultbound as fb
from faultbound.faults import Crash
from faultbound.measure import FaultSet, inject
from faultbound.network import activations
from faultbound.network.activations import Activation, register, unregister


class MySoftsign(nn.Module):
    """A test-local module: :math:`x / (1 + |x|)`."""

    def forward(self, x: Tensor) -> Tensor:
        return x / (1.0 + x.abs())


def _closest_to_zero(a: Tensor, b: Tensor) -> Tensor:
    return torch.clamp(torch.zeros_like(a), min=a, max=b)


@dataclass(frozen=True)
class Softsign(Activation):
    """:math:`\\varphi(x) = x / (1 + |x|)`: increasing, range (-1, 1),
    :math:`\\varphi'(x) = 1 / (1 + |x|)^2`, largest (1) at 0, so K = 1."""

    @property
    def K(self) -> float:  # noqa: N802
        return 1.0

    @property
    def lo(self) -> float:
        return -1.0

    @property
    def hi(self) -> float:
        return 1.0

    def __call__(self, x: Tensor) -> Tensor:
        return x / (1.0 + x.abs())

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        return 1.0 / (1.0 + _closest_to_zero(a, b).abs()) ** 2 * (1 + 1e-12)

    def _deriv(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor] | None:
        def d(x: Tensor) -> Tensor:
            return 1.0 / (1.0 + x.abs()) ** 2

        return torch.minimum(d(a), d(b)), d(_closest_to_zero(a, b))

    def torch_module(self) -> nn.Module:
        return MySoftsign()

    torch_modules = (MySoftsign,)


@pytest.fixture
def softsign() -> Iterator[type[Activation]]:
    register(Softsign)
    try:
        yield Softsign
    finally:
        unregister(Softsign)
    assert "Softsign" not in activations.ACTIVATIONS and MySoftsign not in activations.REGISTRY


def _model(seed: int, widths: tuple[int, ...] = (3, 4, 3, 2)) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(len(widths) - 1):
        lin = nn.Linear(widths[i], widths[i + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.rand(lin.weight.shape, generator=g) * 4 - 2)
            lin.bias.copy_(torch.rand(lin.bias.shape, generator=g) * 2 - 1)
        mods.append(lin)
        if i < len(widths) - 2:
            mods.append(MySoftsign())
    return nn.Sequential(*mods).to(torch.float64)


def _crashed_forward(model: nn.Sequential, x: Tensor, crashed: list[tuple[int, ...]]) -> Tensor:
    """The model with neurons ``crashed[l]`` of hidden layer l + 1 sending 0 (written from the
    statement: every softsign output is a neuron)."""
    h, layer = x, 0
    for m in model:
        h = m(h)
        if isinstance(m, MySoftsign):
            h = h.clone()
            h[:, list(crashed[layer])] = 0.0
            layer += 1
    return h


def _brute_crash(model: nn.Sequential, x: Tensor, widths: list[int], f: list[int]) -> float:
    with torch.no_grad():
        clean = model(x)
        worst = 0.0
        for sets in itertools.product(*[itertools.combinations(range(n), k) for n, k in zip(widths, f, strict=True)]):
            out = _crashed_forward(model, x, list(sets))
            worst = max(worst, float((out - clean).abs().amax()))
    return worst


def test_unknown_module_is_refused_until_registered() -> None:
    with pytest.raises(fb.errors.UnsupportedModelError, match="MySoftsign"):
        fb.Network.from_torch(_model(0))


def test_forward_equals_torch(softsign: type[Activation]) -> None:
    model = _model(1)
    net = fb.Network.from_torch(model, domain=(-2.0, 2.0))
    assert [type(layer.activation) for layer in net.hidden] == [Softsign, Softsign]
    x = torch.rand((64, 3), generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4 - 2
    with torch.no_grad():
        torch.testing.assert_close(net.forward(x), model(x), rtol=0, atol=1e-12)
    back = net.to_torch(torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=1e-12)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 1000), f1=st.integers(0, 2), f2=st.integers(0, 2))
def test_bounds_cover_brute_force_crashes(seed: int, f1: int, f2: int) -> None:
    register(Softsign)
    try:
        model = _model(seed)
        net = fb.Network.from_torch(model, domain=(-1.0, 1.0))
        grid = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
        x = torch.cartesian_prod(grid, grid, grid)  # the domain's corners, centre and a grid
        worst = _brute_crash(model, x, [4, 3], [f1, f2])
        paper = fb.bound(net, [f1, f2], Crash(), method="paper").value
        tight = fb.bound(net, [f1, f2], Crash(), method="tight").value
    finally:
        unregister(Softsign)
    assert tight >= worst * (1 - 1e-12)
    assert paper >= worst * (1 - 1e-12)
    assert tight <= paper * (1 + 1e-9)
    if f1 + f2 > 0:
        assert worst > 0  # the check is not vacuous


def test_engine_measures_crashes(softsign: type[Activation]) -> None:
    model = _model(3)
    net = fb.Network.from_torch(model, domain=(-1.0, 1.0))
    x = torch.rand((16, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2 - 1
    configs = [((0,), (2,)), ((1, 3), ()), ((), (0, 1)), ((2,), ())]
    for sets in configs:
        fs = FaultSet.from_lists(net.L, {1: list(sets[0]), 2: list(sets[1])})
        for dtype in (torch.float64, torch.float32):
            got = inject(net, x, Crash(), fs, dtype=dtype).errors[0]
            with torch.no_grad():
                ref = (_crashed_forward(model, x, list(sets)) - model(x)).abs().amax(1)
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(got.to(torch.float64), ref, rtol=0, atol=tol)
            assert bool((ref > 0).any())


def test_exact_refuses_a_non_piecewise_linear_activation(softsign: type[Activation]) -> None:
    net = fb.Network.from_torch(_model(5), domain=(-1.0, 1.0))
    with pytest.raises(fb.errors.UnsupportedModelError, match="Softsign"):
        fb.bound(net, [1, 0], Crash(), method="exact")


# ------------------------------------------------------------------ the built-in classes' rules
def _builtin_module(name: str) -> nn.Module:
    from tests.reference import ACTS

    return (ACTS[name]() if name != "leaky2" else nn.LeakyReLU(2.0)).to(torch.float64)


def _builtin(name: str) -> Activation:
    act = activations.activation_from_module(_builtin_module(name))
    assert act is not None
    return act


BUILTIN = ["sigmoid", "tuned2", "tuned05", "tanh", "relu", "leaky", "leaky2", "hardtanh", "softplus", "elu", "gelu"]
BUILTIN += ["silu"]


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(BUILTIN), a0=st.floats(-8, 8), width=st.floats(0.0, 10.0))
def test_relaxation_and_derivative_range_hold_on_the_interval(name: str, a0: float, width: float) -> None:
    """Every class's lines bracket phi on [l, u], its derivative range brackets the finite-difference
    slopes there, and its in-place form equals the function (checked on a dense grid)."""
    act = _builtin(name)
    module = _builtin_module(name)
    l = torch.tensor([a0], dtype=torch.float64)
    u = l + width
    xs = torch.linspace(a0, a0 + width, 2001, dtype=torch.float64)
    with torch.no_grad():
        ys = module(xs)  # torch's own module is the reference for phi
    y_lo, y_hi = act.image(l, u)
    a_lo, b_lo, a_hi, b_hi = act.relaxation(l, u, y_lo, y_hi)
    tol = 1e-9 * (1 + ys.abs())
    assert bool((a_lo * xs + b_lo <= ys + tol).all()), name
    assert bool((ys <= a_hi * xs + b_hi + tol).all()), name
    rng = act.deriv_range(l, u)
    if rng is not None and width > 1e-3:
        d = (ys[1:] - ys[:-1]) / (xs[1:] - xs[:-1])
        dmin, dmax = rng
        slack = 1e-6 + 0.02 * float(d.abs().max())  # finite differences average over a step
        assert float(d.min()) >= float(dmin) - slack and float(d.max()) <= float(dmax) + slack, name
    assert torch.equal(act.apply_(xs.clone()), act(xs)), name


def test_registry_names_each_builtin_once() -> None:
    seen: dict[object, str] = {}
    for cls in activations.ACTIVATIONS.values():
        for key in (*cls.torch_modules, *[f"onnx:{o}" for o in cls.onnx_ops], *[f"aten:{o}" for o in cls.aten_ops]):
            assert key not in seen, (key, seen.get(key), cls.__name__)
            seen[key] = cls.__name__
    assert activations.piecewise_linear_names() == ["ReLU", "LeakyReLU", "Hardtanh"]


# ------------------------------------------------------------------ the readers, with no reader edit
@dataclass(frozen=True)
class Hardswish(Activation):
    """:math:`x \\cdot \\mathrm{relu6}(x + 3) / 6`: 0 below -3, x above 3, :math:`x(x+3)/6` between
    (minimum -3/8 at -3/2); :math:`|\\varphi'| \\le 3/2` (reached at 3 from the left)."""

    @property
    def K(self) -> float:  # noqa: N802
        return 1.5

    @property
    def lo(self) -> float:
        return -0.375

    @property
    def hi(self) -> float:
        return float("inf")

    def __call__(self, x: Tensor) -> Tensor:
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0

    def image(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        low = self(torch.clamp(torch.full_like(a, -1.5), min=a, max=b))
        return low - 1e-12, torch.maximum(self(a), self(b)) + 1e-12

    def slope(self, a: Tensor, b: Tensor) -> Tensor:
        def d(x: Tensor) -> Tensor:
            return torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6)).abs()

        top = torch.where((a <= 3) & (b >= 3), torch.full_like(a, 1.5), torch.zeros_like(a))
        return torch.maximum(torch.maximum(d(a), d(b)), top) * (1 + 1e-12)

    def torch_module(self) -> nn.Module:
        return nn.Hardswish()

    torch_modules = (nn.Hardswish,)
    onnx_ops = ("HardSwish",)
    aten_ops = ("hardswish",)


def test_a_registered_activation_is_read_from_every_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import warnings

    pytest.importorskip("onnx")
    g = torch.Generator().manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 5), nn.Hardswish(), nn.Linear(5, 2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 4 - 2)
    x = torch.rand((2, 3), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_path = str(tmp_path / "m.onnx")
        torch.onnx.export(model, (x,), onnx_path, dynamo=False, do_constant_folding=False, opset_version=17)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "m.pt2"))
    for path in ("m.onnx", "m.pt2"):  # refused before registration
        with pytest.raises(fb.errors.UnsupportedModelError):
            fb.load(tmp_path / path, domain=(-3.0, 3.0))
    register(Hardswish)
    try:
        nets = [
            fb.Network.from_torch(model, domain=(-3.0, 3.0)),
            fb.load(tmp_path / "m.onnx", domain=(-3.0, 3.0)),
            fb.load(tmp_path / "m.pt2", domain=(-3.0, 3.0)),
        ]
        xs = torch.rand((32, 3), generator=g, dtype=torch.float64) * 6 - 3
        with torch.no_grad():
            ref = model.to(torch.float64)(xs)
        for net in nets:
            assert isinstance(net.hidden[0].activation, Hardswish)
            torch.testing.assert_close(net.forward(xs), ref, rtol=1e-5, atol=1e-5)  # float32 files
            worst = _brute_one_crash(model, xs)
            assert fb.bound(net, [1], method="tight").value >= worst * (1 - 1e-6)
    finally:
        unregister(Hardswish)


def _brute_one_crash(model: nn.Sequential, x: Tensor) -> float:
    """Worst output move over single crashed hidden neurons (sends 0), on inputs ``x``."""
    with torch.no_grad():
        h = model[1](model[0](x))
        clean = model[2](h)
        worst = 0.0
        for j in range(h.shape[1]):
            hc = h.clone()
            hc[:, j] = 0.0
            worst = max(worst, float((model[2](hc) - clean).abs().max()))
    return worst


def test_a_subclass_that_changes_phi_does_not_inherit_its_parents_rules() -> None:
    @dataclass(frozen=True)
    class ShiftedReLU(activations.ReLU):
        def __call__(self, x: Tensor) -> Tensor:
            return torch.relu(x - 1.0)

    act = ShiftedReLU()
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    assert torch.equal(act.apply_(x.clone()), torch.relu(x - 1.0))  # not ReLU's in-place relu_
    assert not act.piecewise_linear and act.deriv_range(x, x + 1) is None
    l, u = torch.tensor([-2.0]), torch.tensor([2.0])
    y_lo, y_hi = act.image(l, u)
    assert [float(t) for t in act.relaxation(l, u, y_lo, y_hi)] == [0.0, float(y_lo), 0.0, float(y_hi)]
    assert activations.ReLU().piecewise_linear  # the parent keeps its own
