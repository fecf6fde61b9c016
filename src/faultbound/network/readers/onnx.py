"""Reading an ONNX model (with the ``onnx`` package only) into a Network.

The graph is walked in topological order as a chain (see
:class:`~faultbound.network.readers._common.ChainTracer`); each node with a traced input is looked
up by its op type in :data:`RULES`. Supported op types (the keys of :data:`RULES`):

* affine: ``Gemm`` (``transA=0``, any ``alpha``, ``beta``, ``transB``), ``MatMul`` with a constant
  right operand followed by an ``Add`` of a bias, ``Conv`` (2-D, ``group=1``, ``dilations=1``,
  symmetric explicit pads), ``AveragePool`` (``count_include_pad=1`` or no padding,
  ``ceil_mode=0``), ``Flatten`` (``axis=1``), ``Reshape`` to ``(batch, -1)``, inference
  ``BatchNormalization`` (folded by :func:`~faultbound.network.readers._common.batch_norm`);
* the identity: ``Identity``, ``Dropout`` (not training), ``Cast`` to a float type, ``CastLike``;
* algebra that forms a bias or an activation: ``Add`` / ``Sub`` of a constant, ``Mul`` / ``Div``
  by a scalar, ``Greater``, ``Where``, ``Exp``, ``Erf``;
* activations: the ``onnx_ops`` of every activation registered in
  :mod:`faultbound.network.activations` (read when a node is looked up, after :data:`RULES`); built
  in: ``Sigmoid``, ``Tanh``, ``Relu``, ``LeakyRelu`` (``alpha >= 0``), ``Clip``
  (hardtanh; bounds from inputs or attributes), ``Softplus`` (also ``softplus(b x) / b`` and
  torch's threshold switch ``Where(b x > t, x, ...)``), ``Elu``, ``Gelu`` (opset 20,
  ``approximate='none'``) and the ``x (1 + erf(x / sqrt 2)) / 2`` pattern of older opsets, SiLU as
  ``x * Sigmoid(x)``, and the tuned sigmoid ``Sigmoid(c x)`` (``Mul`` by a scalar ``c = 4K``
  feeding a ``Sigmoid``) as ``Sigmoid(k=c/4)``.

Refused, each node named in one :class:`~faultbound.errors.UnsupportedModelError`: every other op
type (``MaxPool``, ``Softmax``, ``Concat``, ...); graphs that are not a chain (residual ``Add`` of
two computed values, reuse of an earlier layer's output); other than one input and one output;
non-float or non-fixed input sizes; the settings excluded above (grouped or dilated convolution,
``auto_pad``, asymmetric pads, ``ceil_mode=1``, training-mode batch norm or dropout, ...); an
algebraic pattern that is not one of the activations above.

Nodes whose inputs are all constants (``Constant``, shape arithmetic, transposed weights) are
evaluated once with :class:`onnx.reference.ReferenceEvaluator`, which is also the reference that
the extracted Network is checked against on probe inputs.

A plain ``Softplus`` node has no threshold; it becomes torch's ``Softplus(beta, threshold=20)``,
which differs from it by less than ``3e-9 / beta`` above the threshold (far below the probe
tolerance, and covered by the activation's outward margin).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import Activation, onnx_activation_ops
from faultbound.network.core import Network, check_against
from faultbound.network.ops import AvgPool, Conv, Dense, Flatten, Op
from faultbound.network.readers._common import (
    ChainTracer,
    Dead,
    Value,
    batch_norm,
    batched_reference,
    clean_float,
    first_line,
)

__all__ = ["RULES", "load_onnx", "network_from_onnx"]

_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def load_onnx(path: Path, domain: Any = None) -> Network:
    """Read ``path`` with :func:`onnx.load` and extract its Network (see :func:`network_from_onnx`)."""
    onnx = _import_onnx()
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelLoadError(
            f"Cannot read {str(path)!r} as an ONNX model: {type(e).__name__}: {first_line(e)}"
        ) from None
    if len(model.graph.node) == 0:
        raise ModelLoadError(f"Cannot read {str(path)!r} as an ONNX model: its graph is empty.")
    return network_from_onnx(model, domain)


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
        import onnx.reference  # noqa: F401
    except ImportError:
        raise ModelLoadError("Reading .onnx files needs the onnx package: pip install 'faultbound[onnx]'.") from None
    return onnx


def network_from_onnx(model: Any, domain: Any = None, check: bool = True) -> Network:
    """Extract the Network of an in-memory ``onnx.ModelProto``.

    Args:
        model: the ONNX model.
        domain: the input domain ``(lo, hi)``; default [0, 1]^d.
        check: compare the Network with ``onnx.reference.ReferenceEvaluator`` on probe inputs.

    Raises:
        UnsupportedModelError: listing every unsupported node (op type and node name).
        ModelLoadError: when the Network differs from the model on probe inputs.
    """
    onnx = _import_onnx()
    graph = model.graph
    consts, inp = graph_parts(model)
    input_shape, batch = _input_shape(inp)

    tracer = ChainTracer("ONNX operators")
    values: dict[str, Any] = dict(consts)
    values[inp.name] = tracer.start()
    for node in graph.node:
        label = f"{node.op_type} {node.name or (node.output[0] if node.output else '?')!r}"
        names = list(node.input)
        missing = [n for n in names if n and n not in values]
        if missing:
            out: Value = tracer.fail(label, f"input {missing[0]!r} is not produced by an earlier node")
            for o in node.output:
                values[o] = out
            continue
        args: list[Any] = [values[n] if n else None for n in names]
        if node.op_type == "Shape" or (
            any(isinstance(a, _Shape) for a in args)
            and all(a is None or isinstance(a, (np.ndarray, _Shape)) for a in args)
        ):
            for o in node.output:  # shape arithmetic on the layer input (x.view(x.size(0), -1))
                values[o] = _Shape()
            continue
        if node.op_type == "Constant" or all(a is None or isinstance(a, np.ndarray) for a in args):
            folded = _fold(onnx, node, args, label)
            for o, v in zip(node.output, folded, strict=False):
                values[o] = v
            continue
        outs = _convert(tracer, node, label, args)
        for i, o in enumerate(node.output):
            if o:
                values[o] = outs[i] if i < len(outs) else Dead(f"output {i} of {label}")

    out_name = graph.output[0].name
    final = values.get(out_name)
    if final is None:
        raise UnsupportedModelError(f"The ONNX graph output {out_name!r} is not produced by any node.")
    items = tracer.finish(final, f"graph output {out_name!r}")
    net = Network.from_chain(items, input_shape, domain, input_dtype(inp))
    if check:
        check_against(net, _reference(onnx, model, inp, batch), "the ONNX model")
    return net


class _Shape:
    """A shape computed from the layer input (``Shape`` and arithmetic on it); only used by Reshape."""


def graph_parts(model: Any) -> tuple[dict[str, np.ndarray], Any]:
    """An ONNX model's initializers (by name, as arrays) and its one non-initializer input (both
    readers of ONNX graphs start here).

    Raises:
        UnsupportedModelError: a graph with other than one input and one output.
    """
    from onnx import numpy_helper

    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedModelError(
            f"Expected an ONNX graph with one input and one output, but got {len(inputs)} inputs "
            f"and {len(graph.output)} outputs."
        )
    return consts, inputs[0]


#: ONNX element types (TensorProto numbers) of the floating formats a network computes in.
_ONNX_FORMATS = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


def input_dtype(inp: Any) -> torch.dtype:
    """The floating format an ONNX model computes in: that of its input (float32 for another type)."""
    return _ONNX_FORMATS.get(int(inp.type.tensor_type.elem_type), torch.float32)


def _input_shape(inp: Any) -> tuple[tuple[int, ...], int | None]:
    """The input shape without the batch dimension, and the batch size when it is fixed."""
    tt = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or tt.elem_type not in _FLOAT_TYPES:
        raise UnsupportedModelError(f"Expected a floating-point tensor input, but {inp.name!r} is not one.")
    dims = list(tt.shape.dim)
    if len(dims) < 2:
        raise UnsupportedModelError(
            f"Expected the ONNX input {inp.name!r} to have a batch dimension and at least one more, "
            f"but it has {len(dims)} dimensions."
        )
    shape = []
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise UnsupportedModelError(
                f"Expected fixed sizes for every non-batch dimension of the ONNX input {inp.name!r}, "
                f"but one is {d.dim_param or 'unknown'!r}."
            )
        shape.append(int(d.dim_value))
    b = dims[0]
    batch = int(b.dim_value) if b.HasField("dim_value") and b.dim_value > 0 else None
    return tuple(shape), batch


def _fold(onnx: Any, node: Any, args: list[Value | None], label: str) -> list[Value]:
    """Evaluate a node whose inputs are all constants."""
    from onnx.reference import ReferenceEvaluator

    feeds = {n: a for n, a in zip(node.input, args, strict=False) if n and isinstance(a, np.ndarray)}
    try:
        return list(ReferenceEvaluator(node).run(None, feeds))
    except Exception as e:
        raise ModelLoadError(
            f"Cannot evaluate the constant node {label}: {type(e).__name__}: {first_line(e)}"
        ) from None


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _f64(a: np.ndarray) -> Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float64))


def _const(v: Value | None) -> np.ndarray | None:
    return v if isinstance(v, np.ndarray) else None


def _scalar_arg(v: Value | None) -> float | None:
    if isinstance(v, np.ndarray) and v.size == 1:
        return clean_float(float(v.reshape(())), v.dtype)
    return None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


#: A rule: ``(tracer, label, attributes, inputs) -> output values`` for one node whose first input
#: is traced (nodes with only constant inputs are evaluated instead). A rule may raise
#: :class:`_Reject` for settings it cannot represent; the node is then reported.
Rule = Callable[[ChainTracer, str, dict[str, Any], list[Value | None]], list[Value]]


def _convert(tracer: ChainTracer, node: Any, label: str, args: list[Value | None]) -> list[Value]:
    """Map one node with at least one non-constant input through :data:`RULES`, then the
    registered activations."""
    rule = RULES.get(node.op_type) or _registered(node.op_type)
    if not args or args[0] is None:
        return [tracer.fail(label, "its first input is missing")]
    if rule is None:
        return [tracer.fail(label)]
    if any(isinstance(a, _Shape) for a in args[: 1 if node.op_type == "Reshape" else None]):
        return [tracer.fail(label, "computes with the input's shape")]  # (graph reader: folded per sample)
    try:
        return rule(tracer, label, _attrs(node), args)
    except _Reject as r:
        return [tracer.fail(label, str(r))]


class _Reject(Exception):
    """A supported node type with settings we cannot represent."""


def _x(args: list[Value | None]) -> Value:
    x = args[0]
    assert x is not None  # checked by _convert
    return x


# ------------------------------------------------------------------------- identity and algebra
def _identity(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
    """``Identity`` and inference ``Dropout`` (its mask output is not modelled)."""
    if len(args) > 2 and _const(args[2]) is not None and bool(np.asarray(args[2]).any()):
        raise _Reject("training_mode=1")
    return [_x(args), Dead(f"the mask of {label}")]


def _same(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
    """``CastLike``: the data cast to its own float type."""
    return [_x(args)]


def _cast(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
    if at.get("to") not in _FLOAT_TYPES:
        raise _Reject("casts to a non-float type")
    return [_x(args)]


def _add(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
    return _add_sub(tr, label, args, subtract=False)


def _sub(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
    return _add_sub(tr, label, args, subtract=True)


def _add_sub(tr: ChainTracer, label: str, args: list[Value | None], subtract: bool) -> list[Value]:
    a, b = args[0], args[1] if len(args) > 1 else None
    if isinstance(a, np.ndarray) and not subtract:
        a, b = b, a
    if isinstance(b, np.ndarray) and a is not None:
        return [tr.add_const(label, a, -b if subtract else b)]
    raise _Reject("is not a constant bias added to a layer's output (residual graphs are not supported)")


def _binary(method: str) -> Rule:
    """``Mul``, ``Div``, ``Greater``: the tracer's algebra of the same name."""

    def rule(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
        if len(args) < 2 or args[1] is None:
            raise _Reject("its second input is missing")
        return [getattr(tr, method)(label, _x(args), args[1])]

    return rule


def _unary(name: str) -> Rule:
    """``name(c x)``: ``Sigmoid``, ``Erf``, ``Softplus``, ``Exp`` of a multiple of the layer input."""

    def rule(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
        return [tr.unary(label, name, _x(args))]

    return rule


def _where(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
    if len(args) != 3 or args[1] is None or args[2] is None:
        raise _Reject("expected a condition and two values")
    return [tr.where(label, _x(args), args[1], args[2])]


# -------------------------------------------------------------------------------------- affine
def _affine(make: Callable[[dict[str, Any], list[Value | None]], Op]) -> Rule:
    """A rule appending the affine op that ``make`` builds from the node's attributes and inputs."""

    def rule(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
        try:
            op = make(at, args)
        except _Reject as r:
            return [tr.fail(label, str(r)), Dead(f"extra output of {label}")]
        return [tr.affine(label, _x(args), op), Dead(f"extra output of {label}")]

    return rule


def _gemm(at: dict[str, Any], args: list[Value | None]) -> Op:
    w, c = _const(args[1]) if len(args) > 1 else None, _const(args[2]) if len(args) > 2 else None
    if w is None or w.ndim != 2 or (len(args) > 2 and args[2] is not None and c is None):
        raise _Reject("needs constant weights and bias")
    if at.get("transA", 0):
        raise _Reject("transA=1")
    weight = (w if at.get("transB", 0) else w.T) * float(at.get("alpha", 1.0))
    out = weight.shape[0]
    bias = np.zeros(out) if c is None else float(at.get("beta", 1.0)) * np.asarray(c, np.float64)
    try:
        bias = np.broadcast_to(bias.reshape(-1) if bias.ndim <= 2 else bias, (out,))
    except ValueError:
        raise _Reject(f"bias of shape {tuple(np.asarray(c).shape)} does not fit {out} outputs") from None
    return Dense(_f64(weight), _f64(bias))


def _matmul(at: dict[str, Any], args: list[Value | None]) -> Op:
    w = _const(args[1]) if len(args) > 1 else None
    if w is None or w.ndim != 2:
        raise _Reject("needs a constant 2-D right operand")
    return Dense(_f64(w.T), torch.zeros(w.shape[1], dtype=torch.float64))


def _pads(at: dict[str, Any]) -> tuple[int, int]:
    if _text(at.get("auto_pad", "NOTSET")) not in ("NOTSET", ""):
        raise _Reject(f"auto_pad={_text(at['auto_pad'])}")
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Reject(f"pads={pads} (expected symmetric 2-D padding)")
    return int(pads[0]), int(pads[1])


def _conv(at: dict[str, Any], args: list[Value | None]) -> Op:
    w = _const(args[1]) if len(args) > 1 else None
    b = _const(args[2]) if len(args) > 2 and args[2] is not None else None
    if w is None or w.ndim != 4 or (len(args) > 2 and args[2] is not None and b is None):
        raise _Reject("needs constant 2-D convolution weights and bias")
    problems = []
    if int(at.get("group", 1)) != 1:
        problems.append(f"group={at['group']}")
    if any(int(d) != 1 for d in at.get("dilations", [1, 1])):
        problems.append(f"dilations={list(at['dilations'])}")
    if problems:
        raise _Reject(", ".join(problems))
    padding = _pads(at)
    strides = [int(s) for s in at.get("strides", [1, 1])]
    bias = np.zeros(w.shape[0]) if b is None else b
    return Conv(_f64(w), _f64(bias), (strides[0], strides[1]), padding)


def _avgpool(at: dict[str, Any], args: list[Value | None]) -> Op:
    k = [int(v) for v in at.get("kernel_shape", [])]
    if len(k) != 2:
        raise _Reject(f"kernel_shape={k} (expected 2-D pooling)")
    padding = _pads(at)
    if int(at.get("ceil_mode", 0)):
        raise _Reject("ceil_mode=1")
    if padding != (0, 0) and not int(at.get("count_include_pad", 0)):
        raise _Reject("count_include_pad=0 with padding")
    if any(int(d) != 1 for d in at.get("dilations", [1, 1])):
        raise _Reject("dilations")
    s = [int(v) for v in at.get("strides", [1, 1])]
    return AvgPool((k[0], k[1]), (s[0], s[1]), padding)


def _flatten(at: dict[str, Any], args: list[Value | None]) -> Op:
    if int(at.get("axis", 1)) != 1:
        raise _Reject(f"axis={at['axis']} (expected 1)")
    return Flatten()


def _reshape(at: dict[str, Any], args: list[Value | None]) -> Op:
    if len(args) > 1 and isinstance(args[1], _Shape):
        return Flatten()  # computed from the input's shape; the probe check confirms (batch, -1)
    shape = _const(args[1]) if len(args) > 1 else None
    if shape is None or shape.ndim != 1 or len(shape) != 2:
        raise _Reject("expected a constant target shape (batch, -1)")
    first = int(shape[0])
    if first == 0 and int(at.get("allowzero", 0)):
        raise _Reject("allowzero=1 with a zero size")
    if first not in (0, -1) and first < 1:
        raise _Reject(f"target shape {shape.tolist()}")
    return Flatten()  # the batch is kept; the probe check confirms (batch, -1)


def _batchnorm(at: dict[str, Any], args: list[Value | None]) -> Op:
    parts = [_const(a) for a in args[1:5]]
    if len(parts) != 4 or any(p is None for p in parts):
        raise _Reject("needs constant scale, bias, mean and variance")
    if int(at.get("training_mode", 0)):
        raise _Reject("training_mode=1")
    gamma, beta, mean, var = (_f64(p) for p in parts)  # type: ignore[arg-type]  # None excluded above
    return batch_norm(mean, var, float(at.get("epsilon", 1e-5)), gamma, beta)


# --------------------------------------------------------------------------------- activations
def _act(make: Callable[[dict[str, Any], list[Value | None]], Activation | None]) -> Rule:
    """A rule applying the activation that ``make`` builds (``None``: the identity, Clip without bounds)."""

    def rule(tr: ChainTracer, label: str, at: dict[str, Any], args: list[Value | None]) -> list[Value]:
        act = make(at, args)
        if act is None:
            return [_x(args)]
        return [tr.activation(label, _x(args), act)]

    return rule


def _registered(op: str) -> Rule | None:
    """The rule of a registered activation whose ``onnx_ops`` name ``op`` (read at lookup time).

    The activation's ``from_onnx`` sees float attributes and scalar constant inputs as their
    shortest float32 decimal (ONNX stores float attributes as float32), string attributes decoded.
    """
    cls = onnx_activation_ops().get(op)
    if cls is None:
        return None

    def make(at: dict[str, Any], args: list[Value | None]) -> Activation | None:
        attrs = {
            k: clean_float(v, np.float32) if isinstance(v, float) else _text(v) if isinstance(v, bytes) else v
            for k, v in at.items()
        }
        inputs: list[float | None] = []
        for arg in args[1:]:
            v = None if arg is None else _scalar_arg(arg)
            if arg is not None and v is None:
                raise _Reject("needs scalar constant inputs")
            inputs.append(None if v is None else clean_float(v, np.float32))
        try:
            return cls.from_onnx(op, attrs, inputs)
        except UnsupportedModelError as e:
            raise _Reject(str(e)) from None

    return _act(make)


#: ONNX op type -> rule, for the affine, identity and algebra nodes; the module docstring lists what
#: each accepts. Adding an operator is one entry here (and its rule function beside it); an
#: activation is a class registered in :mod:`faultbound.network.activations` (its ``onnx_ops``).
RULES: dict[str, Rule] = {
    "Identity": _identity,
    "Dropout": _identity,
    "CastLike": _same,
    "Cast": _cast,
    "Gemm": _affine(_gemm),
    "MatMul": _affine(_matmul),
    "Conv": _affine(_conv),
    "AveragePool": _affine(_avgpool),
    "Flatten": _affine(_flatten),
    "Reshape": _affine(_reshape),
    "BatchNormalization": _affine(_batchnorm),
    "Add": _add,
    "Sub": _sub,
    "Mul": _binary("mul"),
    "Div": _binary("div"),
    "Greater": _binary("greater"),
    "Where": _where,
    "Sigmoid": _unary("sigmoid"),
    "Erf": _unary("erf"),
    "Softplus": _unary("softplus"),
    "Exp": _unary("exp"),
}


def _reference(onnx: Any, model: Any, inp: Any, batch: int | None) -> Any:
    """Run the ONNX model with ``onnx.reference.ReferenceEvaluator`` (float64 in, float64 out)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    try:
        sess = ReferenceEvaluator(model)
    except Exception as e:
        raise ModelLoadError(
            f"The ONNX reference evaluator cannot run the model: {type(e).__name__}: {first_line(e)}"
        ) from None
    np_dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)

    def run(x: Tensor) -> Tensor:
        try:
            outs: Any = sess.run(None, {inp.name: x.numpy().astype(np_dtype)})
            out = outs[0]
        except Exception as e:
            raise ModelLoadError(f"The ONNX model fails on probe inputs: {type(e).__name__}: {first_line(e)}") from None
        return torch.as_tensor(np.asarray(out, dtype=np.float64)).reshape(x.shape[0], -1)

    return batched_reference(run, batch)
