"""Reading an ONNX graph that is not a chain into a :class:`~faultbound.network.graph.GraphNetwork`.

The companion of :mod:`faultbound.network.readers.graph_export` for ``.onnx`` files, read the same
way: as the computation of **one sample**. The model is run once with
:class:`onnx.reference.ReferenceEvaluator` on an example input of the model's batch (1 when the
batch axis is symbolic), keeping every intermediate value; that run gives each value's shape (the
model shape, batch axis included) and the value of every node that does not depend on the input's
*values*: nodes whose inputs are all constants, and ``Shape`` of a variable. So the shape
arithmetic that torch's exporters emit around reshapes and attention (``Shape``, ``Gather``,
``Unsqueeze``, ``Concat``, ``Cast``, ``ConstantOfShape``, ``Range``, ``Expand``, ``Where``,
``Equal`` ... on constants) is folded to constants, exactly as the one-sample program computes it.
Each variable is then held in graph_export's *squeezed* or *full* form, and the rules of
graph_export build its nodes.

Supported op types (the keys of :data:`RULES`, then every activation registered in
:mod:`faultbound.network.activations` through its ``onnx_ops`` / ``from_onnx``):

* ``Conv`` (2-D, ``group=1``, ``dilations=1``, symmetric explicit pads, ``auto_pad`` NOTSET or
  VALID), ``Gemm`` (``transA=0``), ``MatMul`` (variable x constant matrix: a dense node; variable x
  variable: :class:`~faultbound.network.gops.MatMul`), ``BatchNormalization`` (inference),
  ``LayerNormalization``, ``InstanceNormalization`` (a group norm with one group per channel),
  ``GroupNormalization`` (opset 18: a scale and bias per group; opset 21: per channel);
* ``Add`` / ``Sub`` / ``Mul`` / ``Div`` (with a constant: an affine node; between variables:
  ``Add`` / ``Mul``), ``Sigmoid``, ``Softplus``, ``Softmax`` (opset 13+, or the last axis);
* ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, ``ReduceMean``;
* shapes: ``Flatten``, ``Reshape`` (a constant or folded target shape, with ONNX's 0 / -1 sizes:
  the reference run gives the result's shape), ``Transpose``, ``Squeeze``, ``Unsqueeze``,
  ``Expand`` to the same size, ``Concat``, ``Slice`` (constant starts/ends/axes/steps, positive
  steps), ``Gather`` with a constant scalar index (a select);
* identities: ``Identity``, ``Dropout`` (inference), ``Cast`` to a float type, ``CastLike``;
* ``Erf``, ``Exp``, ``Greater`` (with a scalar) and ``Where`` as parts of an activation written out
  as algebra (:mod:`~faultbound.network.readers._fuse`: the ``x (1 + erf(x / sqrt 2)) / 2`` of
  GELU that opsets before 20 write, ``x * Sigmoid(x)`` (SiLU), ``Sigmoid(c x)`` (a tuned sigmoid),
  a softplus with its threshold switch).

Refused (named as unsupported): ``Equal`` / ``Pow`` / ``Sqrt`` on values computed from the input,
``Erf`` / ``Exp`` / ``Greater`` / ``Where`` outside the activations above, ``Gather`` with a list
of indices, negative ``Slice`` steps (``torch.flip``).

Anything else is refused in one :class:`~faultbound.errors.UnsupportedModelError` line
(:func:`~faultbound.network.readers._common.unsupported_line`): each distinct unsupported op type
(or refused setting) once, with the first node it sits at, the node whose value that one reads
(``after ...``) and how many more nodes have it; the consumers of a refused node are only blamed
when their op type is unknown too. The GraphNetwork is checked against the reference evaluator
on probe inputs (:func:`~faultbound.network.core.check_against`). The file is read with the
``onnx`` package only; nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import Sigmoid, Softplus, onnx_activation_ops
from faultbound.network.core import check_against
from faultbound.network.gops import Act, Norm
from faultbound.network.graph import GraphNetwork
from faultbound.network.readers._common import batched_reference, clean_float, first_line, unsupported_line
from faultbound.network.readers._fuse import fuse_activations
from faultbound.network.readers.graph_export import (
    _V,
    _bn,
    _Builder,
    _cat,
    _dense,
    _elementwise,
    _gt,
    _layer_norm,
    _matmul,
    _mean,
    _permute_to,
    _pool_adaptive,
    _pool_avg,
    _pool_max,
    _Refuse,
    _select,
    _shape_op,
    _slice,
    _softmax,
    _where,
)
from faultbound.network.readers.graph_export import _binary as _aten_binary
from faultbound.network.readers.graph_export import _conv as _aten_conv

__all__ = ["RULES", "ReferenceRunError", "graph_from_onnx", "load_graph_onnx"]


# ------------------------------------------------------------------- reading a file
_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
        import onnx.reference  # noqa: F401
    except ImportError:
        raise ModelLoadError("Reading .onnx files needs the onnx package: pip install 'faultbound[onnx]'.") from None
    return onnx


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


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


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



class ReferenceRunError(ModelLoadError):
    """The reference evaluator cannot run the model on an example input (a malformed model, or an
    operator it lacks): the graph reader then knows no shapes."""


class _Poison:
    """The output of a refused node: its consumers are skipped without being blamed."""


class _Dead:
    """An output that is not modelled (a dropout mask, the indices of a max pool)."""

    def __init__(self, what: str) -> None:
        self.what = what


#: what a rule sees: the builder, the graph-node name, the node's attributes, its inputs (a
#: variable, a constant array, or None when absent) and the model shapes of its outputs.
Rule = Callable[[_Builder, str, dict[str, Any], list[Any], list[tuple[int, ...]]], Any]


def load_graph_onnx(path: Path, domain: Any = None, sites: list[str] | None = None) -> GraphNetwork:
    """Read ``path`` with :func:`onnx.load` and extract its GraphNetwork (:func:`graph_from_onnx`)."""
    onnx = _import_onnx()
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ModelLoadError(
            f"Cannot read {str(path)!r} as an ONNX model: {type(e).__name__}: {first_line(e)}"
        ) from None
    if len(model.graph.node) == 0:
        raise ModelLoadError(f"Cannot read {str(path)!r} as an ONNX model: its graph is empty.")
    return graph_from_onnx(model, domain, sites)


def graph_from_onnx(model: Any, domain: Any = None, sites: list[str] | None = None, check: bool = True) -> GraphNetwork:
    """The GraphNetwork of an in-memory ``onnx.ModelProto`` (see the module docstring).

    Args:
        model: the ONNX model (one float input with a batch axis first, one output).
        domain: the input domain ``(lo, hi)``; default [0, 1]^d.
        sites: extra fault sites (graph node names) besides the activations.
        check: compare the GraphNetwork with ``onnx.reference.ReferenceEvaluator`` on probe inputs.

    Raises:
        UnsupportedModelError: naming each distinct unsupported op type, its first node, what
            that node reads and how many more nodes have it.
        ReferenceRunError: the reference evaluator cannot run the model.
        ModelLoadError: the GraphNetwork differs from the model on probe inputs.
    """
    onnx = _import_onnx()
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    arrays, inp = graph_parts(model)
    consts: dict[str, Any] = dict(arrays)
    input_shape, batch = _input_shape(inp)
    example_batch = batch or 1
    from onnx import helper

    np_dtype = helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
    example = np.random.default_rng(0).random((example_batch, *input_shape)).astype(np_dtype)
    run_error = ""  # why the reference evaluator cannot run the model (then no shapes are known)
    try:
        seen = ReferenceEvaluator(model).run(None, {inp.name: example}, intermediate=True)
    except Exception as e:
        seen, run_error = {}, f"The ONNX reference evaluator cannot run the model: {type(e).__name__}: {first_line(e)}"
    assert isinstance(seen, dict)

    opset = max((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=17)
    rules = _rules(opset)
    b = _Builder(example_batch)
    values: dict[str, Any] = dict(consts)
    values[inp.name] = _V(0, True, (example_batch, *input_shape))
    producer: dict[str, str] = {inp.name: "the input"}
    problems: list[tuple[tuple[str, str], str]] = []
    for node in graph.node:
        label = f"{node.op_type} {(node.name or (node.output[0] if node.output else '?'))!r}"
        args = [values.get(n, _Poison()) if n else None for n in node.input]
        variables = [a for a in args if isinstance(a, _V)]
        after = next(
            (producer.get(n, repr(n)) for n, a in zip(node.input, args, strict=False) if isinstance(a, (_V, _Poison))),
            "",
        )
        if any(isinstance(a, _Poison) for a in args) and node.op_type != "Shape":
            rule = rules.get(node.op_type) or _registered(node.op_type)
            if rule is None:
                problems.append(((node.op_type, ""), f"{label} after {after}"))  # unknown whatever it reads
            else:  # a known operator after a refused one: its own settings are checked all the same
                why = _settings(b, rule, node, args, seen)
                if why:
                    problems.append(((node.op_type, why), f"{label} ({why}) after {after}"))
            outs: list[Any] = [_Poison()] * len(node.output)
        elif (
            not variables
            or node.op_type in ("Shape", "Size")
            or (node.op_type == "CastLike" and not isinstance(args[0], _V))
        ):
            # independent of the input's values: the example run computed it
            outs = [_folded(seen, o, label) for o in node.output]
        else:
            dead = next((a for a in args if isinstance(a, _Dead)), None)
            shapes = [tuple(int(s) for s in np.shape(seen[o])) if o in seen else () for o in node.output]
            try:
                if dead is not None:
                    raise _Refuse(f"it reads {dead.what}, which is not modelled")
                rule = rules.get(node.op_type) or _registered(node.op_type)
                if rule is None:
                    raise _Refuse("")
                res = rule(b, _node_name(node), _attrs(node), args, shapes)
                outs = list(res) if isinstance(res, (list, tuple)) else [res]
            except _Refuse as r:
                why = f" ({r})" if str(r) else ""
                problems.append(((node.op_type, str(r)), f"{label}{why} after {after}"))
                outs = [_Poison()] * len(node.output)
            except Exception:
                if not run_error:
                    raise
                outs = [_Poison()] * len(node.output)  # no shapes known: only refusals are collected
            for i in range(len(outs), len(node.output)):
                outs.append(_Dead(f"output {i} of {label}"))
        for o, v in zip(node.output, outs, strict=False):
            if o:
                values[o] = v
                producer[o] = label
    if problems:
        also = f" ({run_error})" if run_error else ""
        raise UnsupportedModelError(unsupported_line("ONNX operators", problems) + also)
    if run_error:
        raise ReferenceRunError(run_error)
    out_name = graph.output[0].name
    final = values.get(out_name)
    if not isinstance(final, _V):
        raise UnsupportedModelError(f"Expected the ONNX graph output {out_name!r} to be computed from its input.")
    final = b.normal(final, "output")
    if not final.squeezed:
        raise UnsupportedModelError("Expected the ONNX graph output to keep the batch axis first.")
    nodes = fuse_activations(b.nodes[: final.idx + 1], final.idx)
    net = GraphNetwork.build(nodes, input_shape, domain, sites, input_dtype(inp))
    if check:
        check_against(net, _reference(onnx, model, inp, batch), "the ONNX model")
    return net


def _settings(b: _Builder, rule: Rule, node: Any, args: list[Any], seen: dict[str, Any]) -> str:
    """Why ``rule`` refuses ``node``'s settings (``""`` when it does not), for a node that reads a
    refused value: the rule is run on stand-ins of that value's shape (what it adds to the graph
    is never used: the model is refused). Only the rule's refusals count, not other failures of
    the stand-ins."""
    stand = [
        _V(0, True, tuple(int(s) for s in np.shape(seen[n])) if n in seen else ()) if isinstance(a, _Poison) else a
        for n, a in zip(node.input, args, strict=False)
    ]
    shapes = [tuple(int(s) for s in np.shape(seen[o])) if o in seen else () for o in node.output]
    try:
        rule(b, _node_name(node), _attrs(node), stand, shapes)
    except _Refuse as r:
        return str(r)
    except Exception:
        return ""
    return ""


def _folded(seen: dict[str, Any], name: str, label: str) -> Any:
    if not seen:  # the reference evaluator could not run the model: no value is known
        return _Poison()
    if name not in seen:
        raise ModelLoadError(f"The ONNX reference evaluator gave no value for {name!r} of {label}.")
    return np.asarray(seen[name])


def _node_name(node: Any) -> str:
    """A module path from the names torch's exporter gives (``/layers/layers.0/conv1/Conv`` ->
    ``layers.0.conv1``), else the node's name or first output."""
    name = str(node.name or (node.output[0] if node.output else node.op_type))
    if name.startswith("/") and name.count("/") >= 2:
        path = ""
        for part in name.strip("/").split("/")[:-1]:
            path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
        if path:
            return path
    return name


# ----------------------------------------------------------------------------------- helpers
def _t(a: Any) -> Tensor:
    """A constant input as a float64 tensor."""
    if isinstance(a, _V):
        raise _Refuse("expected a constant, got a value computed from the input")
    if a is None:
        raise _Refuse("a needed input is missing")
    if isinstance(a, _Dead):
        raise _Refuse(f"it reads {a.what}")
    return torch.as_tensor(np.array(a, dtype=np.float64))


def _ints(a: Any) -> list[int]:
    if isinstance(a, _V):
        raise _Refuse("a size computed from the input's values")
    return [int(v) for v in np.asarray(a).reshape(-1)]


def _var(a: Any, what: str = "its first input") -> _V:
    if not isinstance(a, _V):
        raise _Refuse(f"{what} is not computed from the input")
    return a


def _pads(at: dict[str, Any], rank: int = 2) -> tuple[int, int]:
    auto = _text(at.get("auto_pad", "NOTSET"))
    if auto == "VALID":
        return (0, 0)
    if auto not in ("NOTSET", ""):
        raise _Refuse(f"auto_pad={auto}")
    pads = [int(p) for p in at.get("pads", [0] * (2 * rank))]
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Refuse(f"pads={pads} (expected symmetric 2-D padding)")
    return pads[0], pads[1]


def _pair(at: dict[str, Any], key: str, default: int) -> tuple[int, int]:
    v = [int(s) for s in at.get(key, [default, default])]
    if len(v) != 2:
        raise _Refuse(f"{key}={v} (expected 2-D)")
    return v[0], v[1]


# ------------------------------------------------------------------------------------- rules
def _conv(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    problems = []
    if int(at.get("group", 1)) != 1:
        problems.append(f"group={at['group']}")
    if _pair(at, "dilations", 1) != (1, 1):
        problems.append(f"dilations={list(at['dilations'])}")
    if problems:
        raise _Refuse(", ".join(problems))
    w = _t(args[1])
    if w.dim() != 4:
        raise _Refuse("only 2-D convolutions")
    bias = _t(args[2]) if len(args) > 2 and args[2] is not None else None
    a = {"input": _var(args[0]), "weight": w, "bias": bias, "stride": _pair(at, "strides", 1), "padding": _pads(at)}
    return _aten_conv(b, name, a, outs[0])


def _gemm(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    if int(at.get("transA", 0)):
        raise _Refuse("transA=1")
    w = _t(args[1])
    if w.dim() != 2:
        raise _Refuse("expected a constant weight matrix")
    weight = (w if int(at.get("transB", 0)) else w.T) * float(at.get("alpha", 1.0))
    n = weight.shape[0]
    bias = None
    if len(args) > 2 and args[2] is not None:
        c = _t(args[2]) * float(at.get("beta", 1.0))
        try:
            bias = torch.broadcast_to(c.reshape(-1) if c.dim() <= 2 else c, (n,)).clone()
        except RuntimeError:
            raise _Refuse(f"bias of shape {tuple(c.shape)} does not fit {n} outputs") from None
    return _dense(b, name, _var(args[0]), weight.contiguous(), bias, outs[0])


def _matmul_rule(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x, y = args[0], args[1]
    if isinstance(x, _V) and isinstance(y, _V):
        return _matmul(b, name, {"self": x, "other": y}, outs[0])
    if not isinstance(x, _V):
        raise _Refuse("a matrix product with a constant on the left")
    w = _t(y)
    while w.dim() > 2 and w.shape[0] == 1:
        w = w[0]
    if w.dim() != 2:
        raise _Refuse(f"a matrix product with a constant of shape {tuple(w.shape)}")
    return _dense(b, name, x, w.T.contiguous(), None, outs[0])


def _binary(kind: str) -> Rule:
    rule = _aten_binary(kind)

    def apply(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
        x, y = (a if isinstance(a, _V) else _t(a) for a in args[:2])
        return rule(b, name, {"self": x, "other": y}, outs[0])

    return apply


def _act_rule(make: Callable[[dict[str, Any], list[Any]], Any]) -> Rule:
    def apply(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
        x = _var(args[0])
        act = make(at, args)
        if act is None:  # the identity (a Clip without bounds)
            return x
        return _V(b.add(name, Act(act), x.idx), x.squeezed, outs[0])

    return apply


def _registered(op: str) -> Rule | None:
    """A registered activation whose ``onnx_ops`` name ``op`` (float attributes and scalar inputs as
    their shortest float32 decimal)."""
    cls = onnx_activation_ops().get(op)
    if cls is None:
        return None

    def make(at: dict[str, Any], args: list[Any]) -> Any:
        attrs = {
            k: clean_float(v, np.float32) if isinstance(v, float) else _text(v) if isinstance(v, bytes) else v
            for k, v in at.items()
        }
        inputs: list[float | None] = []
        for arg in args[1:]:
            if arg is None:
                inputs.append(None)
                continue
            if isinstance(arg, _V) or np.asarray(arg).size != 1:
                raise _Refuse("needs scalar constant inputs")
            inputs.append(clean_float(float(np.asarray(arg).reshape(())), np.float32))
        try:
            return cls.from_onnx(op, attrs, inputs)
        except UnsupportedModelError as e:
            raise _Refuse(str(e)) from None

    return _act_rule(make)


def _maxpool(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> list[Any]:
    if int(at.get("storage_order", 0)):
        raise _Refuse("storage_order=1")
    k = _pair(at, "kernel_shape", 0)
    a = {
        "self": _var(args[0]),
        "kernel_size": k,
        "stride": _pair(at, "strides", 1),
        "padding": _pads(at),
        "ceil_mode": bool(int(at.get("ceil_mode", 0))),
        "dilation": _pair(at, "dilations", 1),
    }
    return [_pool_max(b, name, a, outs[0]), _Dead("the indices of a max pool")]


def _avgpool(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    if _pair(at, "dilations", 1) != (1, 1):
        raise _Refuse("dilations")
    a = {
        "self": _var(args[0]),
        "kernel_size": _pair(at, "kernel_shape", 0),
        "stride": _pair(at, "strides", 1),
        "padding": _pads(at),
        "ceil_mode": bool(int(at.get("ceil_mode", 0))),
        "count_include_pad": bool(int(at.get("count_include_pad", 0))),
    }
    return _pool_avg(b, name, a, outs[0])


def _global_avg(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x = _var(args[0])
    if len(x.mshape) != 4:
        raise _Refuse("expected a 4-D input")
    return _pool_adaptive(b, name, {"self": x, "output_size": 1}, outs[0])


def _reduce_mean(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x = _var(args[0])
    axes = list(at.get("axes", []))
    if len(args) > 1 and args[1] is not None:
        axes = _ints(args[1])
    if not axes:
        if int(at.get("noop_with_empty_axes", 0)):
            return x
        raise _Refuse("a mean over every axis (the batch too)")
    return _mean(b, name, {"self": x, "dim": axes, "keepdim": bool(int(at.get("keepdims", 1)))}, outs[0])


def _reshape_like(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    """Flatten, Reshape, Squeeze, Unsqueeze, Expand: the result's shape is the reference run's (which
    applies ONNX's 0 / -1 rules); the shape operand must not depend on the input's values."""
    for a in args[1:]:
        if isinstance(a, _V):
            raise _Refuse("a target shape computed from the input's values")
    return _shape_op(b, name, {"self": _var(args[0])}, outs[0])


def _transpose(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x = _var(args[0])
    perm = [int(p) for p in at.get("perm", list(range(len(x.mshape)))[::-1])]
    return _permute_to(b, name, x, perm, outs[0])


def _concat(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    items = [a if isinstance(a, _V) else _t(a) for a in args]
    return _cat(b, name, {"tensors": items, "dim": int(at["axis"])}, outs[0])


def _slice_rule(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x = _var(args[0])
    if len(args) > 1:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    else:  # opset < 10: attributes
        starts, ends = [int(v) for v in at["starts"]], [int(v) for v in at["ends"]]
        axes = [int(v) for v in at.get("axes", range(len(starts)))]
        steps = [1] * len(starts)
    r = len(x.mshape)
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        if st <= 0:
            raise _Refuse(f"step {st} (only positive steps)")
        d = ax % r
        size = x.mshape[d]
        lo, hi, _ = slice(s, e, st).indices(size)
        n = len(range(lo, hi, st))
        shape = x.mshape[:d] + (n,) + x.mshape[d + 1 :]
        if n == size:
            continue
        x = _slice(b, name, {"self": x, "dim": d, "start": lo, "end": max(hi, lo), "step": st}, shape)
    if x.mshape != outs[0]:
        raise _Refuse(f"the slice gives {x.mshape}, the model {outs[0]}")
    return x


def _gather(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x = _var(args[0])
    if isinstance(args[1], _V):
        raise _Refuse("indices computed from the input")
    idx = np.asarray(args[1])
    if idx.ndim != 0:
        raise _Refuse(f"indices of shape {idx.shape} (only a constant scalar index)")
    return _select(b, name, {"self": x, "dim": int(at.get("axis", 0)), "index": int(idx)}, outs[0])


def _softmax_rule(opset: int) -> Rule:
    def apply(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
        x = _var(args[0])
        r = len(x.mshape)
        axis = int(at.get("axis", -1 if opset >= 13 else 1)) % r
        if opset < 13 and axis != r - 1:
            raise _Refuse(f"axis={axis} under opset {opset} (softmax of the flattened trailing axes)")
        return _softmax(b, name, {"self": x, "dim": axis}, outs[0])

    return apply


def _layernorm(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> list[Any]:
    x = _var(args[0])
    if int(at.get("stash_type", 1)) != 1:
        raise _Refuse("stash_type other than float")
    axis = int(at.get("axis", -1)) % len(x.mshape)
    shape = x.mshape[axis:]
    w = _t(args[1]).reshape(shape) if len(args) > 1 and args[1] is not None else None
    bias = _t(args[2]).reshape(shape) if len(args) > 2 and args[2] is not None else None
    a = {"input": x, "normalized_shape": shape, "weight": w, "bias": bias, "eps": float(at.get("epsilon", 1e-5))}
    return [_layer_norm(b, name, a, outs[0]), _Dead(f"the mean of {name}"), _Dead(f"the inverse deviation of {name}")]


def _batchnorm(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> list[Any]:
    if int(at.get("training_mode", 0)):
        raise _Refuse("training_mode=1")
    a = {
        "input": _var(args[0]),
        "weight": _t(args[1]),
        "bias": _t(args[2]),
        "running_mean": _t(args[3]),
        "running_var": _t(args[4]),
        "eps": float(at.get("epsilon", 1e-5)),
    }
    return [_bn(b, name, a, outs[0])]


def _norm_groups(
    b: _Builder, name: str, x: _V, groups: int, eps: float, w: Tensor, bias: Tensor, out: tuple[int, ...]
) -> _V:
    x = b.squeezed(x, name, "a group norm")
    if len(x.mshape) < 3:
        raise _Refuse("expected a batch axis, channels and at least one more axis")
    return _V(b.add(name, Norm(None, groups, eps, w, bias), x.idx), True, out)


def _instance_norm(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    x = _var(args[0])
    c = x.mshape[1]
    w, bias = _t(args[1]).reshape(-1), _t(args[2]).reshape(-1)
    return _norm_groups(b, name, x, c, float(at.get("epsilon", 1e-5)), w, bias, outs[0])


def _group_norm_rule(opset: int) -> Rule:
    def apply(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
        x = _var(args[0])
        g, c = int(at["num_groups"]), x.mshape[1]
        w, bias = _t(args[1]).reshape(-1), _t(args[2]).reshape(-1)
        if w.numel() != c or bias.numel() != c:
            if opset >= 21 or c % g:
                raise _Refuse(f"scale of {w.numel()} values for {c} channels")
            # opset 18: one scale and bias per group, the same for the group's channels
            w, bias = w.repeat_interleave(c // g), bias.repeat_interleave(c // g)
        return _norm_groups(b, name, x, g, float(at.get("epsilon", 1e-5)), w, bias, outs[0])

    return apply


def _identity(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> list[Any]:
    """Identity, inference Dropout (its mask output is not modelled), CastLike."""
    if len(args) > 2 and args[2] is not None and bool(np.asarray(args[2]).any()):
        raise _Refuse("training_mode=1")
    return [_var(args[0]), _Dead("a dropout mask")]


def _cast(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    if at.get("to") not in _FLOAT_TYPES:
        raise _Refuse("a cast to a non-float type")
    return _var(args[0])


def _onnx_elementwise(fn: str) -> Rule:
    """``Erf``, ``Exp``: kept only as part of an activation (:mod:`~faultbound.network.readers._fuse`)."""
    rule = _elementwise(fn)

    def apply(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
        return rule(b, name, {"self": _var(args[0])}, outs[0])

    return apply


def _greater(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    """``Greater(x, t)`` for a scalar constant t (the threshold switch of a softplus)."""
    return _gt(b, name, {"self": _var(args[0]), "other": _t(args[1])}, outs[0])


def _onnx_where(b: _Builder, name: str, at: dict[str, Any], args: list[Any], outs: list[tuple[int, ...]]) -> _V:
    """``Where(cond, a, b)`` of three computed values (a softplus with its threshold switch)."""
    return _where(b, name, {"condition": args[0], "self": args[1], "other": args[2]}, outs[0])


def _rules(opset: int) -> dict[str, Rule]:
    return {
        "Conv": _conv,
        "Gemm": _gemm,
        "MatMul": _matmul_rule,
        "Add": _binary("add"),
        "Sub": _binary("sub"),
        "Mul": _binary("mul"),
        "Div": _binary("div"),
        "Sigmoid": _act_rule(lambda at, args: Sigmoid()),
        "Softplus": _act_rule(lambda at, args: Softplus(1.0, 20.0)),
        "MaxPool": _maxpool,
        "AveragePool": _avgpool,
        "GlobalAveragePool": _global_avg,
        "ReduceMean": _reduce_mean,
        "Flatten": _reshape_like,
        "Reshape": _reshape_like,
        "Squeeze": _reshape_like,
        "Unsqueeze": _reshape_like,
        "Expand": _reshape_like,
        "Transpose": _transpose,
        "Concat": _concat,
        "Slice": _slice_rule,
        "Gather": _gather,
        "Softmax": _softmax_rule(opset),
        "LayerNormalization": _layernorm,
        "BatchNormalization": _batchnorm,
        "InstanceNormalization": _instance_norm,
        "GroupNormalization": _group_norm_rule(opset),
        "Identity": _identity,
        "Dropout": _identity,
        "CastLike": _identity,
        "Cast": _cast,
        "Erf": _onnx_elementwise("erf"),
        "Exp": _onnx_elementwise("exp"),
        "Greater": _greater,
        "Where": _onnx_where,
    }


#: ONNX op type -> rule (for the default opset 17+ semantics); registered activations come after.
RULES: dict[str, Rule] = _rules(17)
