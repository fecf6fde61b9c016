"""``.pt2`` programs exported with a dynamic batch (issue 23).

``torch.export.export(m, (x,), dynamic_shapes=({0: Dim("batch")},))`` records the batch size as a
symbol, and ``view`` / ``reshape`` sizes as arithmetic on it. Such a program loads like the same
model exported with a fixed batch of one: the same kind of Network, a forward pass equal to the module's
on probe batches of several sizes (the ``check_against`` tolerance), the same fault sites and the
same crash bound. A dynamic size other than the batch is refused in one
line, and so is a model whose per-sample function uses the batch size. References: the module
itself (run by torch), its fixed-batch export and ``fb.load(module)``; nothing here is a stored
number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim

import faultbound as fb
from faultbound.bounds.graph_tight import graph_tight_bound
from faultbound.faults import Crash
from tests.cli_run import run
from tests.test_graph_formats import CASES as GRAPH_CASES
from tests.test_graph_formats import build as build_graph

DYNAMIC = "dynamic shapes other than the batch are not supported"


class ConvView(nn.Module):
    """conv -> tanh -> ``view(x.size(0), -1)`` -> linear: the view size is the symbolic batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 3, 3), nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.conv(x))
        return self.fc(h.view(x.size(0), -1))


class ResidualConvView(nn.Module):
    """A residual conv block, then ``view(batch, -1)``: a graph whose view reads the symbolic batch."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.c1(x))
        z = torch.relu(self.c2(y)) + y
        return self.fc(z.view(z.shape[0], -1))


class TimesBatch(nn.Module):
    """Multiplies a hidden value by the batch size: its per-sample function depends on the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.relu(self.a(x)) * x.shape[0])


def _graph(name: str) -> Callable[[], tuple[nn.Module, tuple[int, ...]]]:
    return lambda: build_graph(name)


def _seeded(make: Callable[[], nn.Module], shape: tuple[int, ...]) -> Callable[[], tuple[nn.Module, tuple[int, ...]]]:
    def build() -> tuple[nn.Module, tuple[int, ...]]:
        torch.manual_seed(0)
        return make().eval(), shape

    return build


MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]] = {
    "mlp": _seeded(
        lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2)), (5,)
    ),
    "conv_flatten": _seeded(
        lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)), (1, 8, 8)
    ),
    "conv_view": _seeded(ConvView, (1, 8, 8)),
    "residual_conv_view": _seeded(ResidualConvView, (1, 6, 6)),
    "small_resnet": _graph("small_resnet"),
    "lenet_maxpool": _graph("lenet_maxpool"),
}
assert set(GRAPH_CASES) >= {"small_resnet", "lenet_maxpool", "vit_multihead_attention"}


def export(m: nn.Module, shape: tuple[int, ...], path: Path, batch: object = None, example: int = 3) -> Path:
    """``m`` exported with an example batch of ``example`` and the batch axis dynamic (``batch``:
    a ``Dim``, default ``Dim("batch")``)."""
    ep = torch.export.export(m, (torch.rand(example, *shape),), dynamic_shapes=({0: batch or Dim("batch")},))
    assert not isinstance(ep.graph_module.graph.find_nodes(op="placeholder")[-1].meta["val"].shape[0], int)
    torch.export.save(ep, str(path))
    return path


def crash_bound(net: fb.Network | fb.GraphNetwork) -> float:
    g = fb.GraphNetwork.from_network(net) if isinstance(net, fb.Network) else net
    return graph_tight_bound(g, [1] + [0] * (g.L - 1), Crash())[0]


def assert_same_forward(net: fb.Network | fb.GraphNetwork, m: nn.Module, shape: tuple[int, ...]) -> None:
    """|net(x) - m(x)| <= 1e-4 max(1, max |m(x)|) on probe batches of 1, 5 and 70 inputs."""
    for n in (1, 5, 70):
        x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = m(x).double().reshape(n, -1)
        got = net.forward(x.double()).reshape(n, -1)
        assert got.shape == want.shape, n
        assert float((got - want).abs().max()) <= 1e-4 * max(1.0, float(want.abs().max())), n


@pytest.mark.parametrize(
    "name",
    [
        *(name for name in MODELS if name != "small_resnet"),
        *(pytest.param(name, marks=pytest.mark.slow) for name in ("small_resnet", "vit_multihead_attention")),
    ],
)
def test_dynamic_batch_program_loads_like_the_module(tmp_path: Path, name: str) -> None:
    m, shape = (MODELS.get(name) or _graph(name))()
    net = fb.load(export(m, shape, tmp_path / "dyn.pt2"))
    torch.export.save(torch.export.export(m, (torch.rand(1, *shape),)), str(tmp_path / "fixed.pt2"))
    ref = fb.load(tmp_path / "fixed.pt2")  # the same model exported with a fixed batch of one
    assert type(net) is type(ref)
    assert net.input_shape == ref.input_shape == shape
    assert net.widths == ref.widths
    assert_same_forward(net, m, shape)
    bound = crash_bound(net)
    assert math.isfinite(bound) and bound > 0
    assert bound == pytest.approx(crash_bound(ref), rel=1e-6)


def test_a_batch_range_is_respected_by_the_probe_check(tmp_path: Path) -> None:
    # Dim("batch", min=2, max=4): the program refuses a batch of 5 or more, so the probes run in chunks of 4
    m, shape = MODELS["residual_conv_view"]()
    path = export(m, shape, tmp_path / "dyn.pt2", Dim("batch", min=2, max=4))
    program = torch.export.load(str(path)).module()
    with pytest.raises(Exception, match="4"):  # the program's own guard, whatever torch calls it
        program(torch.rand(5, *shape))
    assert_same_forward(fb.load(path), m, shape)


def test_cli_inspect_and_bound_on_a_dynamic_batch_program(tmp_path: Path) -> None:
    m, shape = MODELS["residual_conv_view"]()
    path = export(m, shape, tmp_path / "dyn.pt2")
    code, out, err = run("inspect", str(path), "--json")
    assert code == 0, err
    want = fb.load(m, input_shape=shape)
    got = json.loads(out)
    assert got["input_shape"] == list(shape) and got["widths"] == want.widths
    code, out, err = run("bound", str(path), "--failures", "all=1", "--json")
    assert code == 0, err
    assert json.loads(out)["value"] == pytest.approx(fb.bound(want, [1] * want.L).value, rel=1e-9)


def _non_batch_dynamic(tmp_path: Path) -> Path:
    """Global average pooling over a dynamic height: the program runs for any height in 4..16."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    ep = torch.export.export(
        m, (torch.rand(3, 1, 8, 8),), dynamic_shapes=({0: Dim("batch"), 2: Dim("height", min=4, max=16)},)
    )
    torch.export.save(ep, str(tmp_path / "hw.pt2"))
    return tmp_path / "hw.pt2"


def test_dynamic_size_other_than_the_batch_is_refused(tmp_path: Path) -> None:
    path = _non_batch_dynamic(tmp_path)
    with pytest.raises(fb.errors.UnsupportedModelError, match=DYNAMIC):
        fb.load(path)
    for command in (["inspect", str(path)], ["bound", str(path), "--failures", "all=1"]):
        code, out, err = run(*command)
        assert code == 2 and out == "", (command, out)
        assert len(err.strip().splitlines()) == 1 and DYNAMIC in err and "Traceback" not in err, (command, err)


def test_a_model_that_computes_with_the_batch_size_is_refused(tmp_path: Path) -> None:
    # read as one sample, x.shape[0] would be 1; the probe check runs real batches and sees the difference
    torch.manual_seed(0)
    path = export(TimesBatch().eval(), (3,), tmp_path / "times.pt2")
    with pytest.raises(fb.errors.ModelLoadError, match="differs from the torch.export program"):
        fb.load(path)
