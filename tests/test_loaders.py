"""``faultbound.load``: the same network as a module, an ONNX file and a torch.export program.

Every loader must give the same Network (widths, activations, weights, forward pass, bound), and
every bad file must fail with one clear :class:`~faultbound.errors.ModelLoadError` or an
:class:`~faultbound.errors.UnsupportedModelError` that names every unsupported node.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.network.activations import ELU, GELU, Hardtanh, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from faultbound.network.core import check_against
from faultbound.nn import TunedSigmoid

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

HAS_ONNXSCRIPT = importlib.util.find_spec("onnxscript") is not None


# ----------------------------------------------------------------------------------- models
def mlp_tuned() -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 5), TunedSigmoid(2.0), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)), (3,)


def cnn() -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(2)
    m = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12, 2),
    )
    bn = m[4]
    with torch.no_grad():  # non-trivial statistics, so a wrong fold shows
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return m, (1, 8, 8)


def mlp_mixed() -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(3)
    return (
        nn.Sequential(
            nn.Linear(3, 6),
            nn.GELU(),
            nn.Linear(6, 6),
            nn.SiLU(),
            nn.Linear(6, 6),
            nn.ELU(0.7),
            nn.Linear(6, 6),
            nn.LeakyReLU(0.1),
            nn.Linear(6, 6),
            nn.Softplus(),
            nn.Linear(6, 6),
            nn.Hardtanh(-0.5, 2.0),
            nn.Dropout(0.3),
            nn.Linear(6, 1),
        ),
        (3,),
    )


MODELS: dict[str, Callable[[], tuple[nn.Module, tuple[int, ...]]]] = {
    "mlp_tuned": mlp_tuned,
    "cnn": cnn,
    "mlp_mixed": mlp_mixed,
}

EXPECTED_ACTIVATIONS = {
    "mlp_tuned": [Sigmoid(2.0), Tanh()],
    "cnn": [ReLU(), ReLU()],
    "mlp_mixed": [GELU(), SiLU(), ELU(0.7), LeakyReLU(0.1), Softplus(1.0, 20.0), Hardtanh(-0.5, 2.0)],
}


def save_onnx(m: nn.Module, shape: tuple[int, ...], path: Path, exporter: str) -> None:
    x = torch.rand(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(m.eval(), (x,), str(path), dynamo=True, optimize=False, verbose=False)
        else:  # keep BatchNormalization as a node instead of folding it in float32
            torch.onnx.export(
                m.eval(),
                (x,),
                str(path),
                dynamo=False,
                do_constant_folding=False,
                training=torch.onnx.TrainingMode.PRESERVE,
                opset_version=17 if exporter == "torchscript-opset17" else None,
            )


def save_pt2(m: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    ep = torch.export.export(m.eval(), (torch.rand(2, *shape),))
    torch.export.save(ep, str(path))


def failures(net: fb.Network) -> list[int]:
    return [1] + [0] * (net.L - 1)


def assert_same_network(a: fb.Network, b: fb.Network) -> None:
    """Same structure, weights, forward pass and bound."""
    assert a.input_shape == b.input_shape
    assert a.widths == b.widths
    assert [layer.activation for layer in a.layers] == [layer.activation for layer in b.layers]
    np.testing.assert_allclose(a.w_max, b.w_max, rtol=1e-12, atol=0)
    x = a.domain.sample(64, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a.forward(x), b.forward(x), rtol=1e-10, atol=1e-12)
    ba = fb.bound(a, failures(a), fb.Crash()).value
    bb = fb.bound(b, failures(b), fb.Crash()).value
    assert np.isfinite(ba) and ba > 0
    assert ba == pytest.approx(bb, rel=1e-10)


EXPORTERS = [
    "torchscript",
    "torchscript-opset17",  # GELU as x (1 + erf(x / sqrt 2)) / 2
    pytest.param(
        "dynamo",
        marks=[pytest.mark.slow, pytest.mark.skipif(not HAS_ONNXSCRIPT, reason="the dynamo exporter needs onnxscript")],
    ),
]


# ----------------------------------------------------------------------- same network, 3 ways
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_onnx_equals_module(tmp_path: Path, name: str, exporter: str) -> None:
    m, shape = MODELS[name]()
    ref = fb.Network.from_torch(m, input_shape=shape)
    path = tmp_path / f"{name}.onnx"
    save_onnx(m, shape, path, exporter)
    if exporter == "torchscript-opset17" and name == "mlp_mixed":
        kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "Erf" in kinds and "Gelu" not in kinds  # the erf pattern is really exercised
    net = fb.load(path)
    assert [layer.activation for layer in net.hidden] == EXPECTED_ACTIVATIONS[name]
    assert_same_network(net, ref)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("decompose", [False, True])
def test_pt2_equals_module(tmp_path: Path, name: str, decompose: bool) -> None:
    m, shape = MODELS[name]()
    ref = fb.Network.from_torch(m, input_shape=shape)
    ep = torch.export.export(m.eval(), (torch.rand(2, *shape),))
    if decompose:  # core aten: addmm / permute / batch-norm tuple / decomposed softplus
        ep = ep.run_decompositions()
    path = tmp_path / f"{name}.pt2"
    torch.export.save(ep, str(path))
    net = fb.load(path)
    assert [layer.activation for layer in net.hidden] == EXPECTED_ACTIVATIONS[name]
    assert_same_network(net, ref)


def test_pt2_with_dynamic_batch(tmp_path: Path) -> None:
    m, shape = cnn()
    ep = torch.export.export(m.eval(), (torch.rand(4, *shape),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    assert_same_network(fb.load(tmp_path / "m.pt2"), fb.Network.from_torch(m, input_shape=shape))


def test_module_network_matches_the_module_itself() -> None:
    """The reference Network used above is itself right: it equals the torch module."""
    for name, make in MODELS.items():
        m, shape = make()
        net = fb.Network.from_torch(m, input_shape=shape)
        x = torch.rand(16, *shape, dtype=torch.float64)
        with torch.no_grad():
            want = m.double().eval()(x)
        torch.testing.assert_close(net.forward(x), want, rtol=1e-9, atol=1e-10, msg=name)


class _ViewNet(nn.Module):
    """Not an nn.Sequential: flattens with ``x.view(x.size(0), -1)``, which exports shape arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        return self.fc(h.view(h.size(0), -1))

    def as_sequential(self) -> nn.Sequential:
        return nn.Sequential(self.conv, nn.Tanh(), nn.Flatten(), self.fc)


def test_graph_formats_accept_any_chain_module_with_dynamic_batch(tmp_path: Path) -> None:
    m = _ViewNet().eval()
    ref = fb.Network.from_torch(m.as_sequential(), input_shape=(1, 6, 6))
    x = torch.rand(3, 1, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, (x,), str(tmp_path / "m.onnx"), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}}
        )
    kinds = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Shape" in kinds and "Reshape" in kinds  # the pattern under test is really there
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(ep, str(tmp_path / "m.pt2"))
    for path in (tmp_path / "m.onnx", tmp_path / "m.pt2"):
        assert_same_network(fb.load(path), ref)


def test_trusted_pickle_equals_module(tmp_path: Path) -> None:
    m, shape = mlp_tuned()
    torch.save(m, tmp_path / "m.pt")
    assert_same_network(fb.load(tmp_path / "m.pt", trust_pickle=True), fb.Network.from_torch(m))


def test_domain_is_passed_on(tmp_path: Path) -> None:
    m, shape = mlp_tuned()
    save_pt2(m, shape, tmp_path / "m.pt2")
    save_onnx(m, shape, tmp_path / "m.onnx", "torchscript")
    for path in (tmp_path / "m.pt2", tmp_path / "m.onnx"):
        net = fb.load(path, domain=(-1.0, 2.0))
        assert torch.equal(net.domain.lo, torch.full(shape, -1.0, dtype=torch.float64))
        assert torch.equal(net.domain.hi, torch.full(shape, 2.0, dtype=torch.float64))


def test_load_accepts_str_and_upper_case_extension(tmp_path: Path) -> None:
    m, shape = mlp_tuned()
    save_pt2(m, shape, tmp_path / "M.PT2")
    assert fb.load(str(tmp_path / "M.PT2")).widths == [5, 4]


# ---------------------------------------------------------------- hand-built ONNX patterns
def _model(nodes: list, inits: dict[str, np.ndarray], in_shape: list, out: str = "y", opset: int = 17):  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _save(model, path: Path) -> Path:  # type: ignore[no-untyped-def]
    onnx.save(model, str(path))
    return path


def test_onnx_matmul_add_gemm_options_clip_and_tuned_sigmoid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w1, b1 = rng.normal(size=(3, 4)), rng.normal(size=(4,))
    w2, b2 = rng.normal(size=(4, 5)), rng.normal(size=(1, 5))  # transB=0: (in, out)
    w3 = rng.normal(size=(2, 5))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm"),
        helper.make_node("Add", ["b1", "h1"], ["h2"], name="bias"),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(1.2, np.float32))),
        helper.make_node("Mul", ["h2", "c"], ["h3"], name="scale"),
        helper.make_node("Sigmoid", ["h3"], ["h4"], name="sig"),
        helper.make_node("Gemm", ["h4", "w2", "b2"], ["h5"], name="gemm", alpha=0.5, beta=2.0, transB=0),
        helper.make_node("Clip", ["h5", "lo", "hi"], ["h6"], name="clip"),
        helper.make_node("Gemm", ["h6", "w3"], ["y"], name="out", transB=1),
    ]
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3, "lo": np.array(-0.25), "hi": np.array(0.75)}
    model = _model(nodes, inits, ["N", 3])
    net = fb.load(_save(model, tmp_path / "m.onnx"))
    assert [layer.activation for layer in net.hidden] == [Sigmoid(0.3), Hardtanh(-0.25, 0.75)]
    assert net.widths == [4, 5]
    x = net.domain.sample(10, torch.Generator().manual_seed(0))
    want = ReferenceEvaluator(model).run(None, {"x": x.numpy().astype(np.float32)})[0]
    np.testing.assert_allclose(net.forward(x).numpy(), want, rtol=1e-5, atol=1e-5)
    # alpha scales the Gemm weight: w_max of layer 2 is 0.5 max|w2|
    assert net.w_max[1] == pytest.approx(0.5 * float(np.abs(w2.astype(np.float32)).max()), rel=1e-12)


def test_onnx_clip_with_attributes_and_relu_clip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w1, w2, w3 = rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=(1, 4))
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["a"], transB=1),
        helper.make_node("Clip", ["a"], ["b"], name="clip6", min=-2.0, max=3.0),
        helper.make_node("Gemm", ["b", "w2"], ["c"], transB=1),
        helper.make_node("Clip", ["c"], ["d"], name="relu", min=0.0),
        helper.make_node("Gemm", ["d", "w3"], ["y"], transB=1),
    ]
    model = _model(nodes, {"w1": w1, "w2": w2, "w3": w3}, [1, 3], opset=6)
    net = fb.load(_save(model, tmp_path / "m.onnx"))
    assert [layer.activation for layer in net.hidden] == [Hardtanh(-2.0, 3.0), ReLU()]


def test_onnx_unsupported_nodes_are_all_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("LpPool", ["b"], ["c"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["c"], ["d"], name="flat"),
        helper.make_node("Gemm", ["d", "w"], ["e"], name="fc", transB=1),
        helper.make_node("Hardmax", ["e"], ["y"], name="soft"),
    ]
    model = _model(nodes, {"k": rng.normal(size=(2, 1, 3, 3)), "w": rng.normal(size=(3, 8))}, [1, 1, 4, 4])
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(_save(model, tmp_path / "m.onnx"))
    msg = str(info.value)
    # (MaxPool and Softmax were refused here before the graph reader read them: issue 10)
    assert "LpPool 'pool'" in msg and "Hardmax 'soft'" in msg
    assert "(2)" in msg  # exactly those two; the Flatten after the LpPool is not blamed
    assert "'flat'" not in msg and "\n" not in msg


def test_onnx_reader_names_each_unsupported_op_once(tmp_path: Path) -> None:
    """The one ONNX reader names each distinct unsupported op type once, at its first node, with
    its further places; the nodes after a refused one are not blamed."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], name="fc1", transB=1),
        helper.make_node("Sin", ["a"], ["b"], name="sin1"),
        helper.make_node("Gemm", ["b", "w"], ["c"], name="fc2", transB=1),
        helper.make_node("Sin", ["c"], ["d"], name="sin2"),
        helper.make_node("Gemm", ["d", "w"], ["e"], name="fc3", transB=1),
        helper.make_node("Hardmax", ["e"], ["y"], name="hm"),
    ]
    model = _model(nodes, {"w": rng.normal(size=(3, 3))}, [1, 3])
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(_save(model, tmp_path / "m.onnx"))
    msg = str(info.value)
    assert msg.startswith("Unsupported ONNX operators (2): Sin 'sin1' after Gemm 'fc1' and 1 more place; Hardmax 'hm'")
    assert "\n" not in msg and "sin2" not in msg and "fc2" not in msg


def test_onnx_with_max_pool_and_softmax_loads_as_a_graph(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("MaxPool", ["b"], ["c"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["c"], ["d"], name="flat"),
        helper.make_node("Gemm", ["d", "w"], ["e"], name="fc", transB=1),
        helper.make_node("Softmax", ["e"], ["y"], name="soft"),
    ]
    model = _model(nodes, {"k": rng.normal(size=(2, 1, 3, 3)), "w": rng.normal(size=(3, 8))}, [1, 1, 4, 4])
    net = fb.load(_save(model, tmp_path / "m.onnx"))
    assert isinstance(net, fb.GraphNetwork) and net.widths == [32]
    x = net.domain.sample(10, torch.Generator().manual_seed(0))
    want = ReferenceEvaluator(model).run(None, {"x": x.numpy().astype(np.float32)})[0]
    np.testing.assert_allclose(net.forward(x).numpy(), want, rtol=1e-5, atol=1e-6)


def test_onnx_unsupported_settings_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["a"], name="grouped", group=2),
        helper.make_node("Tanh", ["a"], ["b"], name="t"),
        helper.make_node("Conv", ["b", "k2"], ["c"], name="asym", pads=[0, 0, 1, 1]),
        helper.make_node("Flatten", ["c"], ["d"], name="flat"),
        helper.make_node("Gemm", ["d", "w"], ["y"], name="fc", transB=1),
    ]
    inits = {"k": rng.normal(size=(2, 1, 3, 3)), "k2": rng.normal(size=(1, 2, 1, 1)), "w": rng.normal(size=(1, 9))}
    model = _model(nodes, inits, [1, 2, 5, 5])
    with pytest.raises(fb.errors.UnsupportedModelError, match=r"Conv 'grouped' \(group=2\).*Conv 'asym' \(pads="):
        fb.load(_save(model, tmp_path / "m.onnx"))


def test_onnx_residual_graph_loads_as_a_graph(tmp_path: Path) -> None:
    # not layered: the DAG itself (issue 10)
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["a"], name="fc1", transB=1),
        helper.make_node("Tanh", ["a"], ["b"], name="t1"),
        helper.make_node("Gemm", ["b", "w2"], ["c"], name="fc2", transB=1),
        helper.make_node("Add", ["c", "b"], ["d"], name="skip"),
        helper.make_node("Tanh", ["d"], ["e"], name="t2"),
        helper.make_node("Gemm", ["e", "w3"], ["y"], name="fc3", transB=1),
    ]
    inits = {"w1": rng.normal(size=(3, 3)), "w2": rng.normal(size=(3, 3)), "w3": rng.normal(size=(1, 3))}
    model = _model(nodes, inits, [1, 3])
    net = fb.load(_save(model, tmp_path / "m.onnx"))
    assert isinstance(net, fb.GraphNetwork) and net.widths == [3, 3]
    x = net.domain.sample(10, torch.Generator().manual_seed(0))
    want = ReferenceEvaluator(model).run(None, {"x": x.numpy().astype(np.float32)})[0]
    np.testing.assert_allclose(net.forward(x).numpy(), want, rtol=1e-5, atol=1e-6)


def test_onnx_scalar_mul_not_before_sigmoid_is_a_graph_node(tmp_path: Path) -> None:
    # not of the layered form: the DAG scales the layer's output (issue 10)
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["a"], name="fc1", transB=1),
        helper.make_node("Mul", ["a", "c"], ["b"], name="scale"),
        helper.make_node("Tanh", ["b"], ["e"], name="t"),
        helper.make_node("Gemm", ["e", "w2"], ["y"], name="fc2", transB=1),
    ]
    inits = {"w1": rng.normal(size=(3, 3)), "w2": rng.normal(size=(1, 3)), "c": np.array(3.0)}
    model = _model(nodes, inits, [1, 3])
    net = fb.load(_save(model, tmp_path / "m.onnx"))
    assert isinstance(net, fb.GraphNetwork) and net.widths == [3]
    x = net.domain.sample(10, torch.Generator().manual_seed(0))
    want = ReferenceEvaluator(model).run(None, {"x": x.numpy().astype(np.float32)})[0]
    np.testing.assert_allclose(net.forward(x).numpy(), want, rtol=1e-5, atol=1e-6)


def test_pt2_with_max_pool_and_softmax_loads_as_a_graph(tmp_path: Path) -> None:
    # max pooling and softmax were refused by the chain reader; the graph reader reads them (issue 10)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3), nn.Softmax(-1))
    save_pt2(m, (1, 6, 6), tmp_path / "m.pt2")
    net = fb.load(tmp_path / "m.pt2")
    assert isinstance(net, fb.GraphNetwork)
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        assert torch.allclose(net(x.double()).float(), m(x), atol=1e-5)


def test_pt2_unsupported_op_is_named_with_its_place(tmp_path: Path) -> None:
    class Flip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.act = nn.ReLU()
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.flip(self.act(self.fc(x)), [1]) + x)

    ep = torch.export.export(Flip().eval(), (torch.zeros(1, 4),))
    torch.export.save(ep, tmp_path / "m.pt2")
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(tmp_path / "m.pt2")
    msg = str(info.value)
    assert "aten.flip" in msg and "after act" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- probe checks
def test_onnx_probe_check_catches_a_wrong_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faultbound.network.readers import graph_onnx

    m, shape = mlp_tuned()
    save_onnx(m, shape, tmp_path / "m.onnx", "torchscript")
    monkeypatch.setattr(graph_onnx, "onnx_activation_ops", lambda: {"Tanh": ReLU})
    with pytest.raises(fb.errors.ModelLoadError, match="differs from the ONNX model"):
        fb.load(tmp_path / "m.onnx")


def test_pt2_probe_check_catches_a_wrong_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faultbound.network.readers import graph_export

    m, shape = mlp_tuned()
    save_pt2(m, shape, tmp_path / "m.pt2")
    monkeypatch.setattr(graph_export, "aten_activation_ops", lambda: {"tanh": ReLU})
    with pytest.raises(fb.errors.ModelLoadError, match="differs from the torch.export program"):
        fb.load(tmp_path / "m.pt2")


def test_check_against_refuses_a_different_reference() -> None:
    m, _ = mlp_tuned()
    net = fb.Network.from_torch(m)
    check_against(net, net.forward, "itself")  # no error when equal
    with pytest.raises(fb.errors.ModelLoadError, match="differs"):
        check_against(net, lambda x: net.forward(x) + 1e-3, "a shifted copy")


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(fb.errors.ModelLoadError, match="does not exist"):
        fb.load(tmp_path / "nope.onnx")


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(fb.errors.ModelLoadError, match=r"\.onnx, \.pt2, \.pt, \.pth"):
        fb.load(tmp_path / "m.h5")


def test_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(fb.errors.ModelLoadError, match="not a regular file"):
        fb.load(tmp_path / "d.onnx")


@pytest.mark.parametrize("ext", [".onnx", ".pt2", ".pt", ".pth"])
def test_corrupt_bytes(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"bad{ext}"
    path.write_bytes(b"\x00\x01garbage\xff" * 10)
    with pytest.raises(fb.errors.ModelLoadError) as info:
        fb.load(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("ext", [".onnx", ".pt2"])
def test_truncated_file(tmp_path: Path, ext: str) -> None:
    m, shape = mlp_tuned()
    full = tmp_path / f"full{ext}"
    if ext == ".onnx":
        save_onnx(m, shape, full, "torchscript")
    else:
        save_pt2(m, shape, full)
    data = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(fb.errors.ModelLoadError) as info:
        fb.load(cut)
    assert "\n" not in str(info.value)


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    m, _ = mlp_tuned()
    torch.save(m, tmp_path / "m.pth")
    with pytest.raises(fb.errors.ModelLoadError) as info:
        fb.load(tmp_path / "m.pth")
    assert "trust_pickle=True" in str(info.value) and "--trust-pickle" in str(info.value)
    assert fb.load(tmp_path / "m.pth", trust_pickle=True).widths == [5, 4]


def test_pickled_cnn_needs_a_shaped_domain(tmp_path: Path) -> None:
    m, shape = cnn()
    torch.save(m, tmp_path / "c.pt")
    with pytest.raises(fb.errors.ModelLoadError, match="input shape is unknown"):
        fb.load(tmp_path / "c.pt", trust_pickle=True)
    lo, hi = np.zeros(shape), np.ones(shape)
    assert_same_network(
        fb.load(tmp_path / "c.pt", domain=(lo, hi), trust_pickle=True), fb.Network.from_torch(m, input_shape=shape)
    )


def test_state_dict_is_refused_with_advice(tmp_path: Path) -> None:
    m, _ = mlp_tuned()
    torch.save(m.state_dict(), tmp_path / "w.pt")
    for trust in (False, True):
        with pytest.raises(fb.errors.ModelLoadError, match="state dict.*Network.from_torch"):
            fb.load(tmp_path / "w.pt", trust_pickle=trust)


def test_other_object_in_pt_is_refused(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "l.pt")
    with pytest.raises(fb.errors.ModelLoadError, match="nn.Module, but it holds a list"):
        fb.load(tmp_path / "l.pt")


def test_weights_only_load_never_runs_pickled_code(tmp_path: Path) -> None:
    """A pickle that would run code when unpickled is refused without running it."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    buf = io.BytesIO()
    torch.save(Evil(), buf)
    (tmp_path / "evil.pt").write_bytes(buf.getvalue())
    with pytest.raises(fb.errors.ModelLoadError, match="trust_pickle"):
        fb.load(tmp_path / "evil.pt")
    assert not marker.exists()
