"""The chains the reader tests load (modules, ``.pt2`` and ``.onnx`` files), by name, for the
layered-view regression test (:mod:`tests.test_layered_view`).

Each case writes its file (when it has one) into a directory and returns what ``fb.load`` is called
with. ``tests/fixtures/chain_views.pt`` holds what the chain readers of before the one-reader change
gave for each (written by ``python -m tests.chain_cases``, before those readers were deleted).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import faultbound as fb
from tests.test_loaders import MODELS, _ViewNet, save_onnx

FIXTURE = Path(__file__).parent / "fixtures" / "chain_views.pt"

Case = Callable[[Path], tuple[Any, dict[str, Any]]]


def _module(name: str) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        m, shape = MODELS[name]()
        return m.eval(), {"input_shape": shape}

    return make


def _pt2(name: str, decompose: bool, dynamic: bool = False) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        m, shape = MODELS[name]()
        if dynamic:
            ep = torch.export.export(m.eval(), (torch.rand(4, *shape),), dynamic_shapes=({0: torch.export.Dim("b")},))
        else:
            ep = torch.export.export(m.eval(), (torch.rand(2, *shape),))
        if decompose:
            ep = ep.run_decompositions()
        torch.export.save(ep, str(d / "m.pt2"))
        return d / "m.pt2", {}

    return make


def _onnx(name: str, exporter: str) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        m, shape = MODELS[name]()
        save_onnx(m, shape, d / "m.onnx", exporter)
        return d / "m.onnx", {}

    return make


def _viewnet(fmt: str) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        m = _ViewNet().eval()
        if fmt == "module":
            return m.as_sequential(), {"input_shape": (1, 6, 6)}
        x = torch.rand(3, 1, 6, 6)
        if fmt == "onnx":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    m, (x,), str(d / "m.onnx"), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}}
                )
            return d / "m.onnx", {}
        ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
        torch.export.save(ep, str(d / "m.pt2"))
        return d / "m.pt2", {}

    return make


def _dtype_chain(dtype: torch.dtype, how: str) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype).eval()
        x = torch.rand(1, 4).to(dtype)
        if how == "module":
            return m, {}  # no input_shape: read from the first Linear
        if how == "pt2":
            torch.export.save(torch.export.export(m, (x,)), str(d / "m.pt2"))
            return d / "m.pt2", {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (x,), str(d / "m.onnx"), dynamo=False)
        return d / "m.onnx", {}

    return make


def _onnx_hand(which: str) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        if which == "gemm":
            rng = np.random.default_rng(0)
            w1, b1 = rng.normal(size=(3, 4)), rng.normal(size=(4,))
            w2, b2 = rng.normal(size=(4, 5)), rng.normal(size=(1, 5))
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
            shape, opset = ["N", 3], 17
        else:
            rng = np.random.default_rng(1)
            w1, w2, w3 = rng.normal(size=(4, 3)), rng.normal(size=(4, 4)), rng.normal(size=(1, 4))
            nodes = [
                helper.make_node("Gemm", ["x", "w1"], ["a"], transB=1),
                helper.make_node("Clip", ["a"], ["b"], name="clip6", min=-2.0, max=3.0),
                helper.make_node("Gemm", ["b", "w2"], ["c"], transB=1),
                helper.make_node("Clip", ["c"], ["d"], name="relu", min=0.0),
                helper.make_node("Gemm", ["d", "w3"], ["y"], transB=1),
            ]
            inits, shape, opset = {"w1": w1, "w2": w2, "w3": w3}, [1, 3], 6
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(d / "m.onnx"))
        return d / "m.onnx", {}

    return make


def _bn1d(how: str) -> Case:
    def make(d: Path) -> tuple[Any, dict[str, Any]]:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).eval()
        with torch.no_grad():
            bn = m[1]
            assert isinstance(bn, nn.BatchNorm1d)
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(-2, 2)
            bn.bias.uniform_(-1, 1)
        if how == "module":
            return m, {}
        if how == "onnx":
            save_onnx(m, (3,), d / "m.onnx", "torchscript")
            return d / "m.onnx", {}
        torch.export.save(torch.export.export(m, (torch.rand(2, 3),)), str(d / "m.pt2"))
        return d / "m.pt2", {}

    return make


CASES: dict[str, Case] = {}
for _n in MODELS:
    CASES[f"module-{_n}"] = _module(_n)
    CASES[f"pt2-{_n}"] = _pt2(_n, False)
    CASES[f"pt2-decomposed-{_n}"] = _pt2(_n, True)
    CASES[f"onnx-torchscript-{_n}"] = _onnx(_n, "torchscript")
    CASES[f"onnx-opset17-{_n}"] = _onnx(_n, "torchscript-opset17")
CASES["pt2-dynamic-cnn"] = _pt2("cnn", False, dynamic=True)
for _f in ("module", "pt2", "onnx"):
    CASES[f"{_f}-viewnet"] = _viewnet(_f)
    CASES[f"{_f}-bn1d"] = _bn1d(_f)
    for _dt in (torch.float16, torch.bfloat16, torch.float64):
        CASES[f"{_f}-{str(_dt).replace('torch.', '')}"] = _dtype_chain(_dt, _f)
CASES["onnx-hand-gemm-clip-tuned"] = _onnx_hand("gemm")
CASES["onnx-hand-clip-attributes"] = _onnx_hand("clip")


def load(name: str, d: Path) -> Any:
    """``fb.load`` of case ``name`` (its file written into ``d``)."""
    src, kwargs = CASES[name](d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fb.load(src, **kwargs)


def probe(net: fb.Network) -> torch.Tensor:
    """32 inputs of the case's domain (float64) from a generator of its own."""
    return net.domain.sample(32, torch.Generator().manual_seed(0))


def record(net: fb.Network) -> dict[str, Any]:
    """What the layered network is: shapes, per layer its op kinds, descriptions, activation, source
    and parameters, and its forward on :func:`probe` inputs run in the network's format."""
    x = probe(net)
    with torch.no_grad():
        y = net.forward(x.to(net.dtype)).to(torch.float64)
    return {
        "type": type(net).__name__,
        "dtype": str(net.dtype),
        "input_shape": list(net.input_shape),
        "widths": list(net.widths),
        "n_outputs": net.n_outputs,
        "layers": [
            {
                "ops": [type(op).__name__ for op in layer.ops],
                "describe": layer.describe(),
                "activation": repr(layer.activation),
                "in_shape": list(layer.in_shape),
                "out_shape": list(layer.out_shape),
                "source": layer.source,
                "params": [t.clone() for op in layer.ops for t in op.tensors()],
            }
            for layer in net.layers
        ],
        "forward": y,
    }


if __name__ == "__main__":  # record the fixture (run once, with the chain readers of before)
    import tempfile

    out: dict[str, Any] = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            got = load(case, Path(tmp))
        assert isinstance(got, fb.Network), (case, type(got))
        out[case] = record(got)
        print(case, out[case]["widths"], [lay["activation"] for lay in out[case]["layers"]])
    torch.save(out, FIXTURE)
