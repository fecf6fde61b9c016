"""The readers' shared pieces: the one batch-norm map and its fold into the node before it, the
rules dicts and their docstrings, and an import graph without cycles through ``faultbound.network``.

References: torch's own ``F.batch_norm`` / ``F.linear`` / ``F.conv2d`` in float64, never the fold
under test.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import faultbound as fb
from faultbound.network.activations import ReLU
from faultbound.network.gops import Act, Affine, Input
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import ChannelAffine, Conv, Dense
from faultbound.network.readers._common import batch_norm
from tests import import_cycles
from tests.test_loaders import save_onnx, save_pt2

F64 = torch.float64


def _stats(c: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(c, generator=g, dtype=F64)
    var = torch.rand(c, generator=g, dtype=F64) + 0.1
    gamma = torch.randn(c, generator=g, dtype=F64)
    beta = torch.randn(c, generator=g, dtype=F64)
    return mean, var, gamma, beta


# ------------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_batch_norm_is_torch_eval_batch_norm(affine: bool, seed: int) -> None:
    mean, var, gamma, beta = _stats(4, seed)
    eps = 1e-3
    x = torch.randn(9, 4, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(100 + seed))
    if affine:
        bn = batch_norm(mean, var, eps, gamma, beta)
        ref = F.batch_norm(x, mean, var, gamma, beta, training=False, eps=eps)
    else:
        bn = batch_norm(mean, var, eps)
        ref = F.batch_norm(x, mean, var, None, None, training=False, eps=eps)
    assert isinstance(bn, ChannelAffine)
    torch.testing.assert_close(bn.forward(x), ref, rtol=1e-12, atol=1e-12)


def _folded(items: list, shape: tuple[int, ...]) -> GraphNetwork:  # type: ignore[type-arg]
    """A graph of a chain of (name, op) items (ops wrapped as affine or activation nodes), built."""
    nodes: list = [("x", Input(), ())]  # type: ignore[type-arg]
    for name, op in items:
        nodes.append((name, Act(op) if isinstance(op, ReLU) else Affine(op), (len(nodes) - 1,)))
    return GraphNetwork.build(nodes, shape, None)


def test_fold_into_dense_and_twice_in_a_row() -> None:
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64)
    m1, v1, g1, b1 = _stats(5, 1)
    m2, v2, g2, b2 = _stats(5, 2)
    items = [("lin", Dense(w, b)), ("bn1", batch_norm(m1, v1, 1e-5, g1, b1)), ("bn2", batch_norm(m2, v2, 1e-5))]
    net = _folded([*items, ("act", ReLU())], (3,))
    assert len(net.nodes) == 3  # the two batch norms folded into the dense node
    op = net.nodes[1].op
    assert isinstance(op, Affine) and isinstance(op.op, Dense)
    x = torch.randn(7, 3, generator=g, dtype=F64)
    ref = F.linear(x, w, b)
    ref = F.batch_norm(ref, m1, v1, g1, b1, training=False, eps=1e-5)
    ref = F.batch_norm(ref, m2, v2, None, None, training=False, eps=1e-5)
    torch.testing.assert_close(op.op.forward(x), ref, rtol=1e-12, atol=1e-12)


def test_fold_into_conv() -> None:
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(4, 2, 3, 3, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    mean, var, gamma, beta = _stats(4, 4)
    conv = Conv(w, b, (2, 1), (1, 0))
    net = _folded([("conv", conv), ("bn", batch_norm(mean, var, 1e-5, gamma, beta)), ("act", ReLU())], (2, 7, 6))
    assert len(net.nodes) == 3
    op = net.nodes[1].op
    assert isinstance(op, Affine) and isinstance(op.op, Conv)
    assert op.op.stride == (2, 1) and op.op.padding == (1, 0)
    x = torch.randn(3, 2, 7, 6, generator=g, dtype=F64)
    ref = F.batch_norm(F.conv2d(x, w, b, (2, 1), (1, 0)), mean, var, gamma, beta, training=False, eps=1e-5)
    torch.testing.assert_close(op.op.forward(x), ref, rtol=1e-12, atol=1e-12)


def test_batch_norm_not_after_a_weighted_op_stays() -> None:
    mean, var, gamma, beta = _stats(3, 5)
    bn = batch_norm(mean, var, 1e-5, gamma, beta)
    dense = Dense(torch.eye(3, dtype=F64), torch.zeros(3, dtype=F64))
    net = _folded([("bn0", bn), ("lin", dense), ("act", ReLU()), ("bn1", bn)], (3,))
    assert [n.name for n in net.nodes] == ["x", "bn0", "lin", "act", "bn1"]


def test_every_reader_folds_batch_norm_the_same(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        bn = m[1]
        assert isinstance(bn, nn.BatchNorm1d)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    save_onnx(m, (3,), tmp_path / "m.onnx", "torchscript")
    save_pt2(m, (3,), tmp_path / "m.pt2")
    nets = [fb.Network.from_torch(m), fb.load(tmp_path / "m.onnx"), fb.load(tmp_path / "m.pt2")]
    x = torch.rand(16, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m.to(F64)(x)
    for net in nets:
        first = net.layers[0]
        assert len(first.ops) == 1 and isinstance(first.ops[0], Dense)  # folded into the Linear
        torch.testing.assert_close(net.forward(x), ref, rtol=1e-9, atol=1e-9)
    for net in nets[1:]:
        a, b = net.layers[0].ops[0], nets[0].layers[0].ops[0]
        assert isinstance(a, Dense) and isinstance(b, Dense)
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-6, atol=1e-6)  # float32 files
        torch.testing.assert_close(a.bias, b.bias, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------ rules and docstrings
@pytest.mark.parametrize("reader", ["graph_onnx", "graph_export"])
def test_docstring_lists_every_rule(reader: str) -> None:
    mod = importlib.import_module(f"faultbound.network.readers.{reader}")
    doc = mod.__doc__ or ""
    rules = mod.RULES if hasattr(mod, "RULES") and reader == "graph_onnx" else mod.GRAPH_RULES
    missing = [n for n in rules if f"``{n}``" not in doc]
    assert not missing, f"{reader}: the docstring does not name {missing}"


def test_a_module_subclass_is_read_from_what_it_computes() -> None:
    """A subclass of a registered activation module is not read by its parent's rule (which only
    matches exact types): it is exported, and read from the operators it computes."""

    class Shifted(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x)

    m = nn.Sequential(nn.Linear(2, 2), Shifted(), nn.Linear(2, 1))
    net = fb.Network.from_torch(m)
    assert [layer.activation for layer in net.hidden] == [fb.network.activations.Tanh()]


# -------------------------------------------------------------------------------- import graph
def test_no_import_cycle_through_network() -> None:
    found = import_cycles.cycles(import_cycles.graph())
    through = [c for c in found if any(m.startswith("faultbound.network") for m in c)]
    assert not through, through
    g = import_cycles.graph()
    assert not any(m.startswith("faultbound.network.readers") for m in g["faultbound.network.readers.module"] - {
        "faultbound.network.readers._common"
    })
    assert "faultbound.network.core" not in g["faultbound.network.readers._common"]


def test_import_cycles_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "faultbound"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from faultbound.sub import b\n")  # lazy: counted
    (pkg / "sub" / "b.py").write_text("from . import a\nfrom typing import TYPE_CHECKING\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from faultbound.sub import a\n"
    )
    g = import_cycles.graph(pkg)
    assert g["faultbound.sub.a"] == {"faultbound.sub.b"}
    assert g["faultbound.sub.b"] == {"faultbound.sub.a"}
    assert g["faultbound.c"] == set()  # type-only imports never run
    assert import_cycles.cycles(g) == [["faultbound.sub.a", "faultbound.sub.b", "faultbound.sub.a"]]
