"""Number formats (issue 23): every float format loads, chain and graph, from a module, a ``.pt2``
and an ONNX file; the network records the model's format and runs in it.

The reference forward is the torch module itself, run by torch in the model's format (no faultbound
code); the extracted network, run in the same format, must agree within 4 units of the format's
unit roundoff u times the output scale (measured: 0 or 1 u on these models).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import faultbound as fb
from faultbound.errors import ModelLoadError
from faultbound.network.core import check_against
from tests.cli_run import run

U = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8, torch.float32: 2.0**-24, torch.float64: 2.0**-53}


class Residual(nn.Module):
    """out(relu(fc2(tanh(fc1(x)))) + x): a graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(4, 8), nn.Linear(8, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.fc2(torch.tanh(self.fc1(x)))) + x)


def model(kind: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)) if kind == "chain" else Residual()
    return m.to(dtype).eval()


def saved(m: nn.Module, dtype: torch.dtype, how: str, path: Path) -> object:
    x = torch.rand(1, 4).to(dtype)
    if how == "module":
        return m
    if how == "pt2":
        torch.export.save(torch.export.export(m, (x,)), str(path / "m.pt2"))
        return str(path / "m.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path / "m.onnx"), dynamo=False)
    return str(path / "m.onnx")


CASES = [
    (dt, kind, how)
    for dt in (torch.float16, torch.bfloat16, torch.float64)
    for kind in ("chain", "graph")
    for how in ("module", "pt2", "onnx")
]


@pytest.mark.parametrize(("dtype", "kind", "how"), CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_every_float_format_loads_and_runs_in_it(tmp_path: Path, dtype: torch.dtype, kind: str, how: str) -> None:
    if how == "onnx":
        pytest.importorskip("onnx")
    m = model(kind, dtype)
    src = saved(m, dtype, how, tmp_path)
    net = fb.load(src, input_shape=(4,)) if how == "module" else fb.load(src)  # type: ignore[arg-type]
    assert isinstance(net, fb.Network if kind == "chain" else fb.GraphNetwork)
    assert net.dtype == dtype
    assert net.summary()["format"] == str(dtype).replace("torch.", "")
    ops = [op for layer in net.layers for op in layer.ops] if isinstance(net, fb.Network) else [n.op for n in net.nodes]
    assert all(t.dtype == torch.float64 for op in ops for t in op.tensors())  # weights stay float64
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        want = m(x).to(torch.float64)
    got = net.forward(x)
    assert got.dtype == dtype
    scale = max(1.0, float(want.abs().max()))
    assert float((got.to(torch.float64) - want).abs().max()) <= 4 * U[dtype] * scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_wrong_extraction_is_still_refused_in_a_short_format(dtype: torch.dtype) -> None:
    """A model whose one weight moved by 0.25 (a wrong reading) differs by more than the probe
    tolerance (32 u of the scale) and is refused."""
    m = model("graph", dtype)
    net = fb.load(m, input_shape=(4,))
    wrong = model("graph", dtype)
    with torch.no_grad():
        wrong.out.bias[0] += 0.25  # type: ignore[index, operator, union-attr]

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return wrong(x.to(dtype)).to(torch.float64)

    check_against(net, lambda x: model("graph", dtype)(x.to(dtype)).detach().to(torch.float64), "the model")
    with pytest.raises(ModelLoadError, match="differs from the model on probe inputs in"):
        check_against(net, run, "the model")


def test_inspect_shows_the_format(tmp_path: Path) -> None:
    m = model("graph", torch.float16)
    torch.export.save(torch.export.export(m, (torch.rand(1, 4).half(),)), str(tmp_path / "m.pt2"))
    code, out, err = run("inspect", str(tmp_path / "m.pt2"))
    assert code == 0, err
    assert "format float16" in " ".join(str(out).split())
    code, out, err = run("inspect", str(tmp_path / "m.pt2"), "--json")
    assert code == 0, err
    assert json.loads(str(out))["format"] == "float16"


# ------------------------------------------------------------------------------------ the engine
def by_hand(m: nn.Module, x: Tensor, site: nn.Module, unit: int, bit: int | None) -> Tensor:
    """The module's output with unit ``unit`` of ``site``'s output crashed (sent 0) or, with ``bit``,
    that bit of its float word flipped (the word reinterpreted as an integer of the same width, the
    bit XORed), by a forward hook; plain torch in the module's format."""
    itype = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}

    def hook(_m: nn.Module, _i: object, y: Tensor) -> Tensor:
        y = y.clone()
        if bit is None:
            y[:, unit] = 0
        else:
            word = y[:, unit].contiguous().view(itype[y.dtype])
            mask = torch.tensor(1 << bit if bit < 15 else -(1 << 15), dtype=torch.int16)
            y[:, unit] = (word ^ mask).view(y.dtype)
        return y

    h = site.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return m(x)
    finally:
        h.remove()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["chain", "graph"])
def test_engine_runs_in_the_models_format(dtype: torch.dtype, kind: str) -> None:
    """A crash and a bit flip of one tanh unit, injected by hand with a forward hook on the torch
    module in its format, against ``inject`` with its default dtype (the network's format) and the
    default ``BitFlip()`` (the format's own 16-bit word): the outputs agree within 2 units of the
    format's unit roundoff times the output's scale (the engine and the module evaluate the same
    operators in the same format; a float32 engine would differ by up to a rounding per node), and the
    faulty outputs are numbers of the format."""
    from faultbound.measure import inject
    from faultbound.measure.faultset import FaultSet

    m = model(kind, dtype)
    net = fb.load(m, input_shape=(4,))
    site = m[1] if kind == "chain" else None
    x = torch.rand(64, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    for unit in (0, 5):
        for bit in (None, 3, 10, 14, 15):
            if kind == "graph":  # the graph's first site is tanh(fc1 x): hook the function's module
                site = _TanhSite(m)
            fault = fb.Crash() if bit is None else fb.BitFlip()
            fs = FaultSet.from_lists(net.L, {1: [unit]}, None if bit is None else {1: [bit]})
            got = inject(net, x, fault, fs).outputs[0]
            assert got.dtype == dtype
            want = by_hand(site.model if kind == "graph" else m, x, site.module if kind == "graph" else site, unit, bit)  # type: ignore[union-attr, arg-type]
            scale = max(1.0, float(want.abs().max()))
            assert float((got.double() - want.double()).abs().max()) <= 2 * U[dtype] * scale, (unit, bit)
            assert torch.equal(got, got.to(dtype))


class _TanhSite:
    """The residual model with its tanh as a module (so a hook can reach it): the same function."""

    def __init__(self, m: nn.Module) -> None:
        self.module = nn.Tanh()
        outer = self

        class Wrapped(nn.Module):
            def forward(self, x: Tensor) -> Tensor:
                return m.out(torch.relu(m.fc2(outer.module(m.fc1(x)))) + x)  # type: ignore[operator]

        self.model = Wrapped()


def test_native_bit_flips_have_the_formats_width() -> None:
    flip = fb.BitFlip()
    assert flip.in_format(torch.float16).flippable == tuple(range(16))
    assert flip.in_format(torch.bfloat16).flippable == tuple(range(16))
    assert flip.in_format(torch.float32).flippable == tuple(range(32))
    with pytest.raises(fb.FaultboundError, match="native"):
        _ = flip.n_bits
    from faultbound.measure import sample_faults

    net = fb.load(model("graph", torch.float16), input_shape=(4,))
    fs = sample_faults(net, flip, 400, failures=[1, 0], generator=torch.Generator().manual_seed(0))
    bits = fs.bits[0]
    assert bits is not None and int(bits.max()) == 15 and int(bits.min()) == 0
    # bit 14 of a float16 word is the top exponent bit: 0.5 becomes 32768
    v = torch.tensor([0.5], dtype=torch.float16)
    assert float(fb.BitFlip(format="float16").flipped(v, torch.tensor([14]), 1.0)) == 32768.0
    assert float(fb.BitFlip(format="bfloat16").flipped(v.bfloat16(), torch.tensor([15]), 1.0)) == -0.5


def test_bound_reports_the_rounding_allowance(tmp_path: Path) -> None:
    """A float16 model's certificate is the exact-arithmetic bound (the same network in float64)
    plus the allowance, reported apart, by ``fb.bound`` and ``faultbound bound --json``."""
    m = model("graph", torch.float16)
    torch.export.save(torch.export.export(m, (torch.rand(1, 4).half(),)), str(tmp_path / "m.pt2"))
    net = fb.load(str(tmp_path / "m.pt2"))
    exact = fb.bound(net.with_dtype(torch.float64), [1, 0])
    res = fb.bound(net, [1, 0])
    assert exact.rounding == 0.0 and res.rounding > 0
    assert res.value == pytest.approx(exact.value + res.rounding, rel=1e-12)
    assert any("rounding allowance" in n for n in res.notes)
    code, out, err = run("bound", str(tmp_path / "m.pt2"), "--failures", "1,0", "--json")
    assert code == 0, err
    d = json.loads(str(out))
    assert d["rounding"] == pytest.approx(res.rounding) and d["value"] == pytest.approx(res.value)
