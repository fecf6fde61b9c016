"""The same GraphNetwork from an nn.Module, a ``.pt2`` program (batch 1 and batch 2) and an ``.onnx``
file (issue 10).

For each model that is not a chain: the forward pass on probe inputs equals the module's (the
tolerance of ``check_against``), the fault sites agree (count and widths), and the tight bound of a
crash with one failure at the first site agrees within 1e-6 relative across the formats. The
reference forward is the module itself, run by torch in float32 (no faultbound code).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import faultbound as fb
from faultbound import models
from faultbound.bounds.graph_tight import graph_tight_bound
from faultbound.faults import Crash
from tests.hyp import examples, soundness

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


# ------------------------------------------------------------------------------------ models
class Residual(nn.Module):
    """x + fc2(relu(fc1(x))), then ReLU, with a Dropout and an Identity (eval mode: identities)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        self.drop, self.ident = nn.Dropout(0.3), nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.fc2(self.act1(self.fc1(x))))
        return self.out(self.act2(self.ident(h) + x))


class ConcatChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(5 * 6 * 6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.act(torch.cat([self.a(x), self.b(x)], 1)), 1))


class Gating(nn.Module):
    """relu(fc1 x) * sigmoid(fc2 x): an elementwise product of two computed values."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(5, 4), nn.Linear(5, 4), nn.Linear(4, 2)
        self.relu, self.gate = nn.ReLU(), nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.relu(self.fc1(x)) * self.gate(self.fc2(x)))


class AdaptivePool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(2), nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.act(self.conv(x))), 1))


class BNAfterAdd(nn.Module):
    """A batch norm of a sum (not foldable into one layer) and one after a conv (folded)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1)
        self.bn_conv, self.bn_add = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
        self.a1, self.a2 = nn.ReLU(), nn.ReLU()
        self.fc = nn.Linear(3 * 5 * 5, 2)
        for bn in (self.bn_conv, self.bn_add):
            bn.running_mean.copy_(torch.randn(3) * 0.3)
            bn.running_var.copy_(torch.rand(3) + 0.5)
            bn.weight.data.copy_(torch.rand(3) + 0.5)
            bn.bias.data.copy_(torch.randn(3) * 0.2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a1(self.bn_conv(self.c1(x)))
        return self.fc(torch.flatten(self.a2(self.bn_add(h + self.c2(x))), 1))


class LayerNormMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.ln, self.act, self.fc2 = nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.ln(self.fc1(x))))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.gn, self.act = nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Tanh()
        self.gn.weight.data.copy_(torch.rand(4) + 0.5)
        self.gn.bias.data.copy_(torch.randn(4) * 0.2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.act(self.gn(self.conv(x))), 1))


class Shapes(nn.Module):
    """Tokens (4 x 6): dense, permute, reshape, a slice of tokens and the first token selected."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(6, 8), nn.ReLU(), nn.Linear(8 + 2 * 8, 2)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        h = self.act(self.fc(x))  # (b, 4, 8)
        t = h.permute(0, 2, 1).reshape(b, 4, 8)  # a real reshuffle
        first = t[:, 0]  # (b, 8)
        rest = h[:, 1:3].reshape(b, 16)
        return self.out(torch.cat([first, rest], 1))


class SoftmaxMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2, self.fc3 = nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(torch.softmax(self.fc2(self.act(self.fc1(x))), -1))


class MatMulNet(nn.Module):
    """q k^T between two computed values on tokens (3 x 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.act, self.out = nn.Linear(4, 5), nn.Linear(4, 5), nn.ReLU(), nn.Linear(9, 2)

    def forward(self, x: Tensor) -> Tensor:
        s = self.act(self.q(x)) @ self.k(x).transpose(-2, -1)  # (b, 3, 3)
        return self.out(torch.flatten(s, 1))


def _vit(manual: bool) -> nn.Module:
    return models.small_vit(manual_attention=manual, image=8)


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "residual_dropout_identity": (Residual, (6,)),
    "concat_channels": (ConcatChannels, (1, 6, 6)),
    "gating": (Gating, (5,)),
    "lenet_maxpool": (models.lenet_maxpool, (1, 8, 8)),
    "adaptive_avgpool": (AdaptivePool, (1, 4, 4)),
    "batchnorm_after_add_and_conv": (BNAfterAdd, (2, 5, 5)),
    "layernorm": (LayerNormMLP, (6,)),
    "groupnorm": (GroupNormNet, (1, 6, 6)),
    "reshape_permute_slice_select": (Shapes, (4, 6)),
    "softmax": (SoftmaxMLP, (5,)),
    "matmul": (MatMulNet, (3, 4)),
    "vit_multihead_attention": (lambda: _vit(False), (1, 8, 8)),
    "vit_written_attention": (lambda: _vit(True), (1, 8, 8)),
    "small_resnet": (models.small_resnet, (1, 8, 8)),
}

#: models whose program moves the batch axis when exported with a batch of 2 (nn.MultiheadAttention
#: puts the sequence first): the graph reader must refuse them and say to export with a batch of one.
MOVES_BATCH = {"vit_multihead_attention"}

#: an op type each model's ONNX export must hold (so the pattern under test is really there)
ONNX_OPS = {
    "residual_dropout_identity": "Add",
    "concat_channels": "Concat",
    "gating": "Mul",
    "lenet_maxpool": "MaxPool",
    "adaptive_avgpool": "AveragePool",
    "batchnorm_after_add_and_conv": "BatchNormalization",
    "layernorm": "LayerNormalization",
    "groupnorm": "InstanceNormalization",
    "reshape_permute_slice_select": "Gather",
    "softmax": "Softmax",
    "matmul": "MatMul",
    "vit_multihead_attention": "Softmax",
    "vit_written_attention": "Softmax",
    "small_resnet": "GlobalAveragePool",
}

#: also exported without constant folding: the batch norm after the conv stays an ONNX node
UNFOLDED = {"batchnorm_after_add_and_conv"}

#: models that some format writes as a plain chain (read as the layered Network, compared as a graph)
CHAIN_IN_SOME_FORMAT = {"adaptive_avgpool"}


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    make, shape = CASES[name]
    torch.manual_seed(sum(map(ord, name)))
    return make().eval(), shape


def save_pt2(m: nn.Module, shape: tuple[int, ...], path: Path, batch: int) -> Path:
    ep = torch.export.export(m, (torch.rand(batch, *shape),))
    torch.export.save(ep, str(path))
    return path


def save_onnx(
    m: nn.Module, shape: tuple[int, ...], path: Path, dynamo: bool = False, batch: int = 1, fold: bool = True
) -> Path:
    """torch's ONNX export: the TorchScript exporter (fast, offline), or the dynamo one."""
    x = torch.rand(batch, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(m, (x,), str(path), dynamo=True, optimize=False, verbose=False)
        else:
            torch.onnx.export(m, (x,), str(path), dynamo=False, do_constant_folding=fold)
    return path


def check_forward(net: fb.GraphNetwork, m: nn.Module, shape: tuple[int, ...]) -> None:
    """|net(x) - m(x)| <= 1e-4 max(1, max |m(x)|) on probe inputs (the check_against tolerance)."""
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = m(x).double().reshape(16, -1)
    got = net.forward(x.double())
    assert got.shape == want.shape
    scale = max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= 1e-4 * scale


def crash_bound(net: fb.GraphNetwork) -> float:
    return graph_tight_bound(net, [1] + [0] * (net.L - 1), Crash())[0]


@pytest.mark.parametrize("name", list(CASES))
def test_same_graph_network_from_module_pt2_and_onnx(tmp_path: Path, name: str) -> None:
    m, shape = build(name)
    onnx_path = save_onnx(m, shape, tmp_path / "m.onnx")
    assert ONNX_OPS[name] in {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    nets = {
        "module": fb.load(m, input_shape=shape),
        "pt2 batch 1": fb.load(save_pt2(m, shape, tmp_path / "b1.pt2", 1)),
        "onnx": fb.load(onnx_path),
    }
    for fmt, path in (
        ("pt2 batch 2", save_pt2(m, shape, tmp_path / "b2.pt2", 2)),
        ("onnx batch 2", save_onnx(m, shape, tmp_path / "b2.onnx", batch=2)),
    ):
        if name in MOVES_BATCH:
            with pytest.raises(fb.errors.UnsupportedModelError, match="example batch of one"):
                fb.load(path)
        else:
            nets[fmt] = fb.load(path)
    if name in UNFOLDED:
        path = save_onnx(m, shape, tmp_path / "unfolded.onnx", fold=False)
        assert [n.op_type for n in onnx.load(str(path)).graph.node].count("BatchNormalization") == 2
        nets["onnx unfolded"] = fb.load(path)
    for fmt, net in nets.items():
        if isinstance(net, fb.Network):  # layered in this format (adaptive pooling to a divisor: an average pool)
            assert name in CHAIN_IN_SOME_FORMAT, fmt
            nets[fmt] = fb.GraphNetwork.from_network(net)
    ref = nets["module"]
    ref_bound = crash_bound(ref)
    assert ref_bound > 0 and math.isfinite(ref_bound)
    for fmt, net in nets.items():
        assert isinstance(net, fb.GraphNetwork), fmt
        assert net.input_shape == shape, fmt
        check_forward(net, m, shape)
        assert [s.width for s in net.sites] == [s.width for s in ref.sites], fmt
        assert crash_bound(net) == pytest.approx(ref_bound, rel=1e-6), fmt


@pytest.mark.parametrize("name", ["residual_dropout_identity", "groupnorm", "small_resnet", "vit_multihead_attention"])
def test_float64_graph_loads_from_module_pt2_and_onnx(tmp_path: Path, name: str) -> None:
    """A float64 model that is not a chain loads in every format, computes in float64 (its forward
    equals the float64 module's to 1e-10, far below float32's rounding) and gives the float32-format
    nets' graph, with the same crash bound to 1e-6 relative (the weights are the float32 ones, widened)."""
    m32, shape = build(name)
    m = copy.deepcopy(m32).double()
    x = torch.rand(1, *shape, dtype=torch.float64)
    ep = torch.export.export(m, (x,))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(tmp_path / "m.onnx"), dynamo=False)
    ref = crash_bound(fb.load(m32, input_shape=shape))
    probe = torch.rand(16, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = m(probe).reshape(16, -1)
    for fmt, net in (("module", fb.load(m, input_shape=shape)), ("pt2", fb.load(str(tmp_path / "m.pt2"))),
                     ("onnx", fb.load(str(tmp_path / "m.onnx")))):
        assert isinstance(net, fb.GraphNetwork), fmt
        assert float((net.forward(probe) - want).abs().max()) <= 1e-10 * max(1.0, float(want.abs().max())), fmt
        assert crash_bound(net) == pytest.approx(ref, rel=1e-6), fmt


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_multihead_attention", "small_resnet"])
def test_dynamo_onnx_exporter_gives_the_same_graph(tmp_path: Path, name: str) -> None:
    pytest.importorskip("onnxscript")
    m, shape = build(name)
    ref = fb.load(m, input_shape=shape)
    net = fb.load(save_onnx(m, shape, tmp_path / "m.onnx", dynamo=True))
    assert isinstance(net, fb.GraphNetwork)
    check_forward(net, m, shape)
    assert [s.width for s in net.sites] == [s.width for s in ref.sites]
    assert crash_bound(net) == pytest.approx(crash_bound(ref), rel=1e-6)


def test_onnx_with_dynamic_batch_reads_as_one_sample(tmp_path: Path) -> None:
    # torch's exporter writes Shape/Gather/Concat around reshapes when the batch is symbolic
    m, shape = build("vit_written_attention")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.rand(2, *shape),),
            str(tmp_path / "m.onnx"),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "b"}},
        )
    assert "Shape" in {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    net = fb.load(tmp_path / "m.onnx")
    check_forward(net, m, shape)
    assert crash_bound(net) == pytest.approx(crash_bound(fb.load(m, input_shape=shape)), rel=1e-6)


def test_chain_models_still_load_as_layered_networks(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 1)).eval()
    shape = (1, 4, 4)
    ref = fb.Network.from_torch(m, input_shape=shape)
    for net in (
        fb.load(m, input_shape=shape),
        fb.load(save_pt2(m, shape, tmp_path / "m.pt2", 1)),
        fb.load(save_onnx(m, shape, tmp_path / "m.onnx")),
    ):
        assert type(net) is fb.Network
        assert net.widths == ref.widths
        assert [layer.activation for layer in net.layers] == [layer.activation for layer in ref.layers]
        x = ref.domain.sample(8, torch.Generator().manual_seed(1))
        torch.testing.assert_close(net.forward(x), ref.forward(x), rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------------- unsupported ops
class Flip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.flip(self.act(self.fc(x)), [1]) + x)


def test_unsupported_op_is_named_in_one_line_in_every_format(tmp_path: Path) -> None:
    m = Flip().eval()
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(m, input_shape=(4,))
    assert "aten.flip" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(save_pt2(m, (4,), tmp_path / "m.pt2", 1))
    assert "aten.flip" in str(info.value) and "after act" in str(info.value) and "\n" not in str(info.value)
    # torch exports flip as a Slice with step -1: refused with its node and the node it reads
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(save_onnx(m, (4,), tmp_path / "m.onnx"))
    msg = str(info.value)
    assert "\n" not in msg and "Slice '" in msg and "step -1" in msg and "after Relu '/act/Relu'" in msg


def test_onnx_unsupported_op_named_with_its_place_and_consumers_not_blamed(tmp_path: Path) -> None:
    w = numpy_helper.from_array(torch.randn(3, 3).numpy(), "w")
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], name="fc1", transB=1),
        helper.make_node("Relu", ["a"], ["b"], name="act"),
        helper.make_node("Sin", ["b"], ["c"], name="weird"),
        helper.make_node("Add", ["c", "a"], ["d"], name="skip"),
        helper.make_node("Gemm", ["d", "w"], ["y"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(tmp_path / "m.onnx")
    msg = str(info.value)
    assert msg == "Unsupported ONNX operators (1): Sin 'weird' after Relu 'act'."


class TwoUnsupported(nn.Module):
    """Two operators no reader supports, each used twice: cumsum (module 'fc1' -> 'act1' first) and
    reflection padding; the adds and the linear / relu between them are supported."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act1 = nn.Linear(6, 6), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(8, 6), nn.ReLU()
        self.out = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.fc1(x))
        h = torch.cumsum(h, -1) + torch.cumsum(h, -2)
        h = self.act2(self.fc2(nn.functional.pad(h, (1, 1), mode="reflect")))
        return self.out(nn.functional.pad(h, (1, 1), mode="reflect"))


def test_every_distinct_unsupported_op_is_named_once_with_its_first_place(tmp_path: Path) -> None:
    """Reading goes on past a refused node: each distinct operator is named once, at its first node
    (and what that node reads), with the number of further places; the supported nodes that read a
    refused value (the add, fc2, act2, out) are not blamed."""
    m = TwoUnsupported().eval()
    want = (
        "Unsupported operators (2): aten.cumsum at node 'cumsum' (cumsum, after act1 (relu)) and 1 more place; "
        "aten.pad at node 'pad' (pad, after add (add)) and 1 more place."
    )
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(m, input_shape=(2, 6))
    assert str(info.value) == want
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(save_pt2(m, (2, 6), tmp_path / "m.pt2", 1))
    assert str(info.value) == want
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(save_onnx(m, (2, 6), tmp_path / "m.onnx"))
    assert str(info.value) == (
        "Unsupported ONNX operators (2): CumSum '/CumSum' after Relu '/act1/Relu' and 1 more place; "
        "Pad '/Pad' after Add '/Add' and 1 more place."
    )


# The CLI's one line naming every unsupported operator once: tests/test_cli_misleads.py.


def test_unsupported_line_counts_each_key_once() -> None:
    from faultbound.network.readers._common import unsupported_line

    found = [(("a", ""), "a at 1"), (("b", "why"), "b at 2 (why)"), (("a", ""), "a at 3"), (("a", ""), "a at 4")]
    found.append((("b", "other"), "b at 5 (other)"))
    want = "Unsupported ops (3): a at 1 and 2 more places; b at 2 (why); b at 5 (other)."
    assert unsupported_line("ops", found) == want


@pytest.mark.slow
def test_resnet18_cifar_loads_from_onnx(tmp_path: Path) -> None:
    """The CIFAR ResNet-18 from .onnx (once; about 20 s of CPU): its 17 ReLU sites, widths counted
    by hand from the architecture, and its forward pass."""
    m = models.resnet18_cifar()
    net = fb.load(save_onnx(m, (3, 32, 32), tmp_path / "r18.onnx"))
    assert isinstance(net, fb.GraphNetwork)
    stages = [64 * 32 * 32, 128 * 16 * 16, 256 * 8 * 8, 512 * 4 * 4]
    assert [s.width for s in net.sites] == [stages[0]] + [w for w in stages for _ in range(4)]
    check_forward(net, m, (3, 32, 32))


def test_onnx_dropout_identity_nodes_in_a_residual_graph(tmp_path: Path) -> None:
    """Dropout (inference) and Identity nodes, as other exporters write them, are identities."""
    from onnx.reference import ReferenceEvaluator

    rng = torch.Generator().manual_seed(5)
    w1, w2 = torch.randn(4, 4, generator=rng), torch.randn(2, 4, generator=rng)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["a"], name="fc1", transB=1),
        helper.make_node("Relu", ["a"], ["b"], name="act"),
        helper.make_node("Dropout", ["b", "ratio"], ["c", "mask"], name="drop"),
        helper.make_node("Identity", ["c"], ["d"], name="ident"),
        helper.make_node("Add", ["d", "x"], ["e"], name="skip"),
        helper.make_node("Tanh", ["e"], ["f"], name="t"),
        helper.make_node("Gemm", ["f", "w2"], ["y"], name="fc2", transB=1),
    ]
    inits = [
        numpy_helper.from_array(w1.numpy(), "w1"),
        numpy_helper.from_array(w2.numpy(), "w2"),
        numpy_helper.from_array(torch.tensor(0.5).numpy(), "ratio"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    net = fb.load(tmp_path / "m.onnx")
    assert isinstance(net, fb.GraphNetwork) and net.widths == [4, 4]
    x = net.domain.sample(8, torch.Generator().manual_seed(0))
    run = ReferenceEvaluator(model)
    want = torch.cat([torch.as_tensor(run.run(None, {"x": x[i : i + 1].float().numpy()})[0]) for i in range(8)])
    torch.testing.assert_close(net.forward(x), want.double(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------- hand-built ONNX operators
def _c(name: str, a: object, dtype: object = None) -> object:
    import numpy as np

    return numpy_helper.from_array(np.asarray(a, dtype=dtype or np.float32), name)


def _i64(name: str, a: object) -> object:
    import numpy as np

    return _c(name, a, np.int64)


#: one snippet per operator setting: nodes reading "h" (relu of the (1, 4, 4, 4) input) and writing
#: "y"; initializers; opset.
SNIPPETS: dict[str, tuple[list[object], list[object], int]] = {
    "reshape_zero_minus_one": ([helper.make_node("Reshape", ["h", "s"], ["y"])], [_i64("s", [0, -1, 8])], 17),
    "squeeze_unsqueeze": (
        [helper.make_node("Unsqueeze", ["h", "ax"], ["u"]), helper.make_node("Squeeze", ["u", "ax"], ["y"])],
        [_i64("ax", [2])],
        17,
    ),
    "slice_two_axes_step_2": (
        [helper.make_node("Slice", ["h", "st", "en", "ax", "sp"], ["y"])],
        [_i64("st", [1, -3]), _i64("en", [4, 2**62]), _i64("ax", [2, 3]), _i64("sp", [1, 2])],
        17,
    ),
    "gather_scalar_index": (
        [helper.make_node("Gather", ["h", "i"], ["y"], axis=2)],
        [_i64("i", -1)],
        17,
    ),
    "group_norm_opset18": (
        [helper.make_node("GroupNormalization", ["h", "g", "b"], ["y"], num_groups=2, epsilon=1e-3)],
        [_c("g", [0.5, 2.0]), _c("b", [0.1, -0.3])],
        18,
    ),
    "group_norm_opset21": (
        [helper.make_node("GroupNormalization", ["h", "g", "b"], ["y"], num_groups=2)],
        [_c("g", [0.5, 2.0, 1.0, 1.5]), _c("b", [0.1, -0.3, 0.0, 0.2])],
        21,
    ),
    "instance_norm": (
        [helper.make_node("InstanceNormalization", ["h", "g", "b"], ["y"])],
        [_c("g", [0.5, 2.0, 1.0, 1.5]), _c("b", [0.1, -0.3, 0.0, 0.2])],
        17,
    ),
    "reduce_mean_axes_input": (
        [helper.make_node("ReduceMean", ["h", "ax"], ["y"], keepdims=0)],
        [_i64("ax", [2, 3])],
        18,
    ),
    "reduce_mean_axes_attribute": ([helper.make_node("ReduceMean", ["h"], ["y"], axes=[1])], [], 17),
    "average_pool_padded": (
        [helper.make_node("AveragePool", ["h"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)],
        [],
        17,
    ),
    "average_pool_strided": (
        [helper.make_node("AveragePool", ["h"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
        [],
        17,
    ),
    "global_average_pool": ([helper.make_node("GlobalAveragePool", ["h"], ["y"])], [], 17),
    "max_pool_padded": (
        [helper.make_node("MaxPool", ["h"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])],
        [],
        17,
    ),
    "sub_div_constants": (
        [helper.make_node("Sub", ["c", "h"], ["a"]), helper.make_node("Div", ["a", "d"], ["y"])],
        [_c("c", 0.5), _c("d", [[[2.0]], [[4.0]], [[-1.0]], [[0.5]]])],
        17,
    ),
    "sigmoid_softplus_product": (
        [
            helper.make_node("Sigmoid", ["h"], ["s"]),
            helper.make_node("Softplus", ["h"], ["p"]),
            helper.make_node("Mul", ["s", "p"], ["y"]),
        ],
        [],
        17,
    ),
    "expand_same_shape": ([helper.make_node("Expand", ["h", "s"], ["y"])], [_i64("s", [1, 4, 4, 4])], 17),
    "matmul_constant_3d": ([helper.make_node("MatMul", ["h", "w"], ["y"])], [_c("w", [[[1.0, -2.0, 0.5]] * 4])], 17),
    "transpose_softmax": (
        [helper.make_node("Transpose", ["h"], ["t"], perm=[0, 2, 3, 1]), helper.make_node("Softmax", ["t"], ["y"])],
        [],
        13,
    ),
    "concat_with_constant": (
        [helper.make_node("Concat", ["h", "k"], ["y"], axis=1)],
        [_c("k", [[[[0.25] * 4] * 4]])],
        17,
    ),
}


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_onnx_operator_read_as_graph(name: str) -> None:
    from onnx.reference import ReferenceEvaluator

    from faultbound.network.readers.graph_onnx import graph_from_onnx

    nodes, inits, opset = SNIPPETS[name]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "k0"], ["a0"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a0"], ["h"])]
        + nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [_c("k0", torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(9)).numpy())] + inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    net = graph_from_onnx(model, check=False)
    x = torch.rand(6, 2, 4, 4, generator=torch.Generator().manual_seed(1)).double()
    run = ReferenceEvaluator(model)
    want = torch.cat(
        [torch.as_tensor(run.run(None, {"x": x[i : i + 1].float().numpy()})[0]).reshape(1, -1) for i in range(6)]
    )
    torch.testing.assert_close(net.forward(x), want.double(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------- soundness
class _Res(nn.Module):
    """out(act2(fc2(act1(fc1 x)) + x)): the crash mask multiplies act1's output."""

    def __init__(self, d: int, h: int, act: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(d, h), nn.Linear(h, d), nn.Linear(d, 2)
        make = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}[act]
        self.act1, self.act2 = make(), make()
        self.mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        h = self.act1(self.fc1(x))
        if self.mask is not None:
            h = h * self.mask
        return self.out(self.act2(self.fc2(h) + x))


@soundness
@given(seed=st.integers(0, 10_000), act=st.sampled_from(["tanh", "relu", "sigmoid"]), f=st.integers(1, 2))
@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_onnx_graph_crash_bound_holds_by_brute_force(seed: int, act: str, f: int) -> None:
    """Soundness through the ONNX graph reader: every crash of f units at the first site, on random
    inputs of the domain, moves the output by at most the tight bound of the graph read from .onnx."""
    import io
    import itertools

    from faultbound.network.readers.graph_onnx import graph_from_onnx

    torch.manual_seed(seed)
    d, h = 3, 4
    m = _Res(d, h, act).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.rand(1, d),), buf, dynamo=False)
    net = graph_from_onnx(onnx.load_from_string(buf.getvalue()))
    assert [s.width for s in net.sites] == [h, d]
    bound = graph_tight_bound(net, [f, 0], Crash())[0]
    x = torch.rand(256, d, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        clean = m(x)
        worst = 0.0
        for units in itertools.combinations(range(h), f):
            mask = torch.ones(h)
            mask[list(units)] = 0.0
            m.mask = mask
            worst = max(worst, float((m(x) - clean).abs().max()))
        m.mask = None
    assert worst <= bound * (1 + 1e-6) + 1e-6
