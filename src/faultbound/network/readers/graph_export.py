"""Reading a ``torch.export`` program into a :class:`~faultbound.network.graph.GraphNetwork`.

Used for models that are not a chain (residual blocks, concatenation, attention) and for chains
with operators the layered reader refuses (max pooling, layer norm, ...). The program is read as
the computation of **one sample**: a module is exported with an example batch of 1, so the model's
own batch axis is an axis of size 1 that may be reshaped, transposed or merged freely (as
``nn.MultiheadAttention`` does), and the GraphNetwork puts its own batch axis in front. A program
saved with a larger fixed batch is read as long as its batch axis stays first (else the message
says to export it with a batch of one). A program exported with a dynamic batch
(``dynamic_shapes={"x": {0: Dim("batch")}}``) is read as one sample as well: every size that is an
expression in the batch symbol :math:`s` (``view(x, [s, -1])``, the ``s * heads`` of attention) is
read at :math:`s = 1` (:func:`_sym_value`), and the probe check runs the program with real batches
(:func:`probe_batch`). A dynamic size other than the batch is
refused in one line.

Each value of the program is held as a graph node in one of two forms: *squeezed*, the node holds
``(B, *model_shape[1:])`` (the model's leading size-1 axis is the batch axis; a model axis d is
the node's axis d), used whenever ``model_shape[0] == 1``; or *full*, ``(B, *model_shape)`` (model
axis d is the node's axis d + 1). Convolutions, pooling and batch/group norms read the squeezed
form; shape operations (view, reshape, flatten, unflatten, squeeze, unsqueeze, transpose, permute,
slice, select) become :class:`~faultbound.network.gops.Rearrange` nodes.

Supported aten operators (:data:`GRAPH_RULES`, any overload; an in-place ``name_`` as ``name``):
``conv2d`` / ``convolution`` / ``_convolution`` (groups 1, dilation 1), ``linear``, ``addmm`` /
``matmul`` / ``mm`` / ``bmm`` (with a constant right side: a dense node; between two variables:
:class:`~faultbound.network.gops.MatMul`), ``batch_norm`` and its inference forms
``_native_batch_norm_legit_no_training`` / ``native_batch_norm`` (the one map of
:func:`~faultbound.network.readers._common.batch_norm`), ``layer_norm`` / ``native_layer_norm``,
``group_norm``, ``add`` / ``sub`` / ``rsub`` / ``mul`` / ``div`` (with a constant:
:class:`~faultbound.network.gops.ConstAffine`; between variables: ``Add`` or ``Mul``; no rounding
mode), ``max_pool2d`` / ``max_pool2d_with_indices``, ``avg_pool2d``, ``adaptive_avg_pool2d`` /
``_adaptive_avg_pool2d``, ``mean``, ``cat`` / ``concat``, ``softmax`` / ``_softmax``,
``scaled_dot_product_attention`` (no mask, no dropout: written as matmul, softmax, matmul), the
shape operations ``view``, ``reshape``, ``_unsafe_view``, ``flatten``, ``unflatten``,
``squeeze``, ``unsqueeze``, ``expand`` (to the same size), ``permute``, ``transpose``, ``t``,
``slice``, ``select``, the identities (``dropout`` / ``native_dropout`` / ``feature_dropout`` in
eval, ``clone``, ``contiguous``, ``alias``, ``detach``, ``lift_fresh_copy``, float ``_to_copy`` /
``to``), ``sigmoid`` and the ``aten_ops`` of every registered activation, and ``erf``, ``exp``,
``log1p``, ``gt`` (with a scalar) and ``where`` as parts of an activation written out as algebra
(:mod:`~faultbound.network.readers._fuse`: ``x * sigmoid(x)``, the erf form of GELU, torch's
decomposed softplus, ``sigmoid(c x)``). Refused: every other operator. Nodes whose
inputs are all constants are evaluated once (only aten/prims operators are ever called). Anything
else is refused in one line (:func:`~faultbound.network.readers._common.unsupported_line`) naming
each distinct unsupported operator once, at the first node it sits at, with how many more nodes
use it; the nodes that read a refused value are not built, and only named when their own operator
is unsupported too.
"""

from __future__ import annotations

import copy
import io
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import Activation, Sigmoid, aten_activation_ops
from faultbound.network.core import check_against
from faultbound.network.gops import (
    Act,
    Add,
    Affine,
    Concat,
    Const,
    ConstAffine,
    GOp,
    Input,
    MatMul,
    MaxPool,
    Mean,
    Mul,
    Norm,
    Rearrange,
    Softmax,
)
from faultbound.network.graph import GraphNetwork
from faultbound.network.ops import AvgPool, Conv, Dense
from faultbound.network.readers._common import (
    batch_norm,
    batched_reference,
    first_line,
    module_dtype,
    unsupported_line,
)
from faultbound.network.readers._fuse import Elem, fuse_activations
from faultbound.network.readers.module import module_input_shape, module_leaves
from faultbound.network.readers.pt2_guard import quiet_torch_logging, read_checked_archive

__all__ = ["GRAPH_RULES", "graph_from_exported", "graph_from_module"]


# ------------------------------------------------------------------- reading a program
def read_exported(path: Path) -> Any:
    """The ``ExportedProgram`` in ``path``, read by torch from bytes that
    :func:`~faultbound.network.readers.pt2_guard.read_checked_archive` has checked."""
    with quiet_torch_logging():
        data = read_checked_archive(path)
    try:
        with quiet_torch_logging():
            return torch.export.load(io.BytesIO(data))
    except Exception as e:
        raise ModelLoadError(
            f"Cannot read {str(path)!r} as a torch.export program: {type(e).__name__}: {first_line(e)}"
        ) from None


def program_weights(ep: Any) -> tuple[dict[str, Any], str]:
    """The values of an exported program's lifted parameters, buffers and constants, by the name of
    the placeholder that carries them, and the name of its one user input (both readers of
    ``torch.export`` programs start here).

    Raises:
        UnsupportedModelError: a program with other than one input and one output.
        ModelLoadError: a lifted placeholder without a value.
    """
    sig = ep.graph_signature
    state = dict(ep.state_dict)
    constants = dict(getattr(ep, "constants", {}) or {})
    user_inputs = list(sig.user_inputs)
    if len(user_inputs) != 1 or len(sig.user_outputs) != 1:
        raise UnsupportedModelError(
            f"Expected a program with one input and one output, but got {len(user_inputs)} inputs "
            f"and {len(sig.user_outputs)} outputs."
        )
    weights: dict[str, Any] = {}
    for mapping in ("inputs_to_parameters", "inputs_to_buffers", "inputs_to_lifted_tensor_constants"):
        for name, target in (getattr(sig, mapping, {}) or {}).items():
            t = state.get(target, constants.get(target))
            if t is None:
                raise ModelLoadError(f"The program has no value for its parameter {target!r}.")
            weights[name] = t.detach() if isinstance(t, Tensor) else t
    return weights, str(user_inputs[0])


def attr_value(gm: Any, target: Any) -> Any:
    """The value a ``get_attr`` node reads from the program's graph module (detached)."""
    obj: Any = gm
    for part in str(target).split("."):
        obj = getattr(obj, part)
    return obj.detach() if isinstance(obj, Tensor) else obj


def input_spec(node: Any) -> tuple[tuple[int, ...], int | None, torch.dtype]:
    """The shape of one input (without the batch axis), the example batch (``None`` when symbolic)
    and the floating dtype the program computes in (float32 for an integer input) of a program's
    user-input placeholder; both readers of ``torch.export`` programs read it here.

    The batch axis (the first) may be dynamic (``dynamic_shapes={"x": {0: Dim("batch")}}``): each
    sample's computation does not depend on it. Every other size must be fixed.

    Raises:
        UnsupportedModelError: no recorded shape, no batch axis, or a dynamic non-batch size.
    """
    val = node.meta.get("val")
    if val is None or not hasattr(val, "shape"):
        raise UnsupportedModelError(f"The program's input {node.name!r} has no recorded shape.")
    dims = list(val.shape)
    if len(dims) < 2:
        raise UnsupportedModelError(
            f"Expected the input {node.name!r} to have a batch dimension and at least one more, "
            f"but its shape is {tuple(dims)}."
        )
    shape = []
    for axis, d in enumerate(dims[1:], start=1):
        if not isinstance(d, int):
            raise UnsupportedModelError(
                f"The program's input {node.name!r} has a dynamic size ({d}) in dimension {axis}, and dynamic "
                "shapes other than the batch are not supported: export it with fixed sizes but for dimension 0."
            )
        shape.append(d)
    batch = dims[0] if isinstance(dims[0], int) else None
    if batch is None and batch_symbol(node) is None:
        raise UnsupportedModelError(
            f"The program's input {node.name!r} has a batch size {dims[0]} that is an expression, not one dynamic "
            "dimension; export it with `dynamic_shapes={'x': {0: Dim('batch')}}` or a fixed batch."
        )
    dtype = val.dtype if val.dtype.is_floating_point else torch.float32
    return tuple(shape), batch, dtype


def batch_symbol(node: Any) -> Any:
    """The sympy symbol of the dynamic batch size of a program's input placeholder, or ``None``
    when its batch is fixed (or is an expression rather than one symbol)."""
    val = node.meta.get("val")
    d = val.shape[0] if val is not None and hasattr(val, "shape") and len(val.shape) else None
    expr = getattr(getattr(d, "node", None), "expr", None)
    return expr if expr is not None and getattr(expr, "is_Symbol", False) else None


#: The batch the probe check runs a dynamic-batch program with, when its recorded range allows it.
PROBE_BATCH = 64


def probe_batch(ep: Any, node: Any) -> int | None:
    """The batch size the probe check runs the program of input placeholder ``node`` with: its
    fixed example batch, or for a dynamic batch :math:`s` with recorded range :math:`[lo, hi]`,
    :math:`\\max(lo, 1, \\min(hi, 64))` (the probes are cut into chunks of that size, the last one
    padded; see :func:`~faultbound.network.readers._common.batched_reference`)."""
    val = node.meta.get("val")
    if val is not None and hasattr(val, "shape") and len(val.shape) and isinstance(val.shape[0], int):
        return int(val.shape[0])
    sym = batch_symbol(node)
    vr = (getattr(ep, "range_constraints", None) or {}).get(sym)
    lo, hi = 1, PROBE_BATCH
    if vr is not None:
        lo = max(1, _finite(vr.lower, 1))
        hi = _finite(vr.upper, PROBE_BATCH)
    return max(lo, min(hi, PROBE_BATCH))


def _finite(v: Any, default: int) -> int:
    """``int(v)``, or ``default`` for an infinite bound of a value range."""
    if not getattr(v, "is_finite", True):  # sympy's oo / torch's int_oo
        return default
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return default


def _op_name(target: Any) -> str:
    if hasattr(target, "name") and callable(target.name):
        try:
            return str(target.name()).replace("::", ".")
        except Exception:  # pragma: no cover - defensive
            pass
    return getattr(target, "__name__", str(target))


def _packet(target: Any) -> str:
    """``linear`` for ``aten.linear.default``; the builtin's name otherwise."""
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return str(getattr(packet, "__name__", "")).split(".")[-1]
    return getattr(target, "__name__", str(target))


def _bind(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Arguments by schema name, with the schema's defaults filled in."""
    schema = target._schema
    out: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(args):
            out[a.name] = args[i]
        elif a.name in kwargs:
            out[a.name] = kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
    return out


def _map(a: Any, env: dict[Any, Any]) -> Any:
    if isinstance(a, torch.fx.Node):
        return env[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_map(x, env) for x in a)
    return a


def _safe_target(target: Any) -> bool:
    """True for a target that only computes: an ``aten`` / ``prims`` operator, an ``operator`` or
    ``math`` function, or one of torch's ``sym_*`` size helpers.

    A program's JSON may name any attribute path under ``torch`` (``torch.os.system`` included) as a
    node's target, and this loader evaluates nodes with constant inputs; only these targets are
    ever called.
    """
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in ("aten", "prims")
    module = getattr(target, "__module__", None)
    if module in ("_operator", "operator", "math"):
        return True
    name = getattr(target, "__name__", "")
    return module == "torch" and isinstance(name, str) and name.startswith("sym_") and callable(target)



@dataclass(frozen=True)
class _V:
    """A variable of the program: graph node ``idx`` holding it in squeezed or full form, and its
    shape in the model (batch axis of size 1 included)."""

    idx: int
    squeezed: bool
    mshape: tuple[int, ...]

    def axis(self, d: int) -> int:
        """The node axis of model axis ``d``."""
        d = d % len(self.mshape)
        return d if self.squeezed else d + 1


class _Refuse(Exception):
    """An operator or setting the graph reader cannot represent."""


class _Poison:
    """The value of a refused node: the nodes reading it are not built, and only blamed when their
    own operator is unsupported too."""


class _Found(Exception):
    """A refused node: ``key`` (the operator, and the reason for a refused setting) and its place."""

    def __init__(self, key: tuple[str, str], text: str) -> None:
        super().__init__(text)
        self.key, self.text = key, text


class _Builder:
    """Collects graph nodes while the program is walked."""

    def __init__(self, batch: int = 1) -> None:
        self.nodes: list[tuple[str, GOp, tuple[int, ...]]] = [("x", Input(), ())]
        self.names: set[str] = {"x"}
        #: the program's example batch: 1, or a fixed size whose axis must then stay first
        self.batch = batch
        #: the sympy symbol of a dynamic batch size (read as 1: one sample), or None when fixed
        self.batch_symbol: Any = None

    def add(self, name: str, op: GOp, *inputs: int) -> int:
        base, k = name, 1
        while name in self.names:
            k += 1
            name = f"{base}:{k}"
        self.names.add(name)
        self.nodes.append((name, op, tuple(inputs)))
        return len(self.nodes) - 1

    def full(self, v: _V, name: str) -> _V:
        """``v`` in full form."""
        if not v.squeezed:
            return v
        if self.batch != 1:
            raise _Refuse(
                f"it moves the batch axis of a program exported with a batch of {self.batch}; "
                "export the model with an example batch of one input"
            )
        return _V(self.add(f"{name}/unsqueeze", Rearrange("view", v.mshape), v.idx), False, v.mshape)

    def normal(self, v: _V, name: str) -> _V:
        """``v`` squeezed when its model batch axis has size 1."""
        if v.squeezed or not v.mshape or v.mshape[0] != 1:
            return v
        return _V(self.add(f"{name}/squeeze", Rearrange("view", v.mshape[1:]), v.idx), True, v.mshape)

    def squeezed(self, v: _V, name: str, what: str) -> _V:
        v = self.normal(v, name)
        if not v.squeezed:
            raise _Refuse(f"{what} needs the batch axis first (model shape {v.mshape})")
        return v

    def const(self, t: Tensor, like: _V, name: str) -> int:
        """A constant as a Const node in ``like``'s form (broadcast against it)."""
        t = t.detach().to(torch.float64)
        r = len(like.mshape)
        if t.dim() < r:
            t = t.reshape((1,) * (r - t.dim()) + tuple(t.shape))
        if like.squeezed:
            if t.shape[0] != 1:
                if not bool((t == t[:1]).all()):
                    raise _Refuse("a constant that differs along the batch axis")
                t = t[:1]  # a constant expanded to the example batch (a class token)
            value = t  # (1, *rest): the Const's leading axis is the batch axis
        else:
            value = t[None]
        return self.add(f"{name}/const", Const(value.contiguous()))


def _f64(t: Any) -> Tensor:
    if not isinstance(t, Tensor):
        raise _Refuse("expected constant weights")
    return t.detach().to(torch.float64).clone()


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if v else (0, 0)


Rule = Callable[[_Builder, str, dict[str, Any], tuple[int, ...]], Any]


def _same_form(b: _Builder, name: str, *vs: _V) -> list[_V]:
    """Variables in one form with equal model rank (right-aligned, as broadcasting reads them)."""
    r = max(len(v.mshape) for v in vs)
    if all(v.squeezed for v in vs) and all(len(v.mshape) == r for v in vs):
        return list(vs)
    out = []
    for v in vs:
        v = b.full(v, name)
        if len(v.mshape) < r:
            shape = (1,) * (r - len(v.mshape)) + v.mshape
            v = _V(b.add(f"{name}/pad", Rearrange("view", shape), v.idx), False, shape)
        out.append(v)
    return out


def _conv(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = b.squeezed(a["input"], name, "a convolution")
    if int(a.get("groups", 1)) != 1 or _pair(a.get("dilation", 1)) != (1, 1) or a.get("transposed", False):
        raise _Refuse("only 2-D convolutions with groups 1 and dilation 1")
    if isinstance(a.get("padding"), str):
        raise _Refuse("string padding")
    w = _f64(a["weight"])
    if w.dim() != 4:
        raise _Refuse("only 2-D convolutions")
    bias = torch.zeros(w.shape[0], dtype=torch.float64) if a.get("bias") is None else _f64(a["bias"])
    op = Conv(w, bias, _pair(a.get("stride", 1)), _pair(a.get("padding", 0)))
    return _V(b.add(name, Affine(op), x.idx), True, out)


def _dense(b: _Builder, name: str, x: _V, w: Tensor, bias: Tensor | None, out: tuple[int, ...]) -> _V:
    """``x @ w.T + bias`` on the last axis."""
    bias_ = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias
    return _V(b.add(name, Affine(Dense(w, bias_.reshape(-1))), x.idx), x.squeezed, out)


def _linear(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    bias = a.get("bias")
    return _dense(b, name, a["input"], _f64(a["weight"]), None if bias is None else _f64(bias), out)


def _addmm(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x, w = a["mat1"], a["mat2"]
    if not isinstance(x, _V) or isinstance(w, _V) or float(a.get("beta", 1)) != 1 or float(a.get("alpha", 1)) != 1:
        raise _Refuse("addmm with a constant right side only")
    return _dense(b, name, x, _f64(w).T.contiguous(), _f64(a["self"]), out)


def _matmul(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a.get("self", a.get("input"))
    y = a.get("other", a.get("mat2"))
    if isinstance(x, _V) and isinstance(y, _V):
        x, y = _same_form(b, name, x, y)
        return b.normal(_V(b.add(name, MatMul(), x.idx, y.idx), x.squeezed, out), name)
    if isinstance(x, _V) and isinstance(y, Tensor) and y.dim() == 2:
        return _dense(b, name, x, _f64(y).T.contiguous(), None, out)
    raise _Refuse("a matrix product with a constant on the left")


def _bn(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    if a.get("training", False) is True:
        raise _Refuse("batch norm in training mode")
    x = b.squeezed(a["input"], name, "a batch norm")
    mean, var = _f64(a["running_mean"]), _f64(a["running_var"])
    w = None if a.get("weight") is None else _f64(a["weight"])
    bias = None if a.get("bias") is None else _f64(a["bias"])
    return _V(b.add(name, Affine(batch_norm(mean, var, float(a["eps"]), w, bias)), x.idx), True, out)


def _layer_norm(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["input"]
    shape = tuple(int(s) for s in a["normalized_shape"])
    w = None if a.get("weight") is None else _f64(a["weight"])
    bias = None if a.get("bias") is None else _f64(a["bias"])
    return _V(b.add(name, Norm(shape, 1, float(a.get("eps", 1e-5)), w, bias), x.idx), x.squeezed, out)


def _group_norm(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = b.squeezed(a["input"], name, "a group norm")
    w = None if a.get("weight") is None else _f64(a["weight"])
    bias = None if a.get("bias") is None else _f64(a["bias"])
    op = Norm(None, int(a["num_groups"]), float(a.get("eps", 1e-5)), w, bias)
    return _V(b.add(name, op, x.idx), True, out)


def _binary(kind: str) -> Rule:
    def rule(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
        x, y = a["self"], a["other"]
        alpha = float(a.get("alpha", 1))
        if a.get("rounding_mode") is not None:
            raise _Refuse(f"rounding_mode={a['rounding_mode']!r}")
        if isinstance(x, _V) and isinstance(y, _V):
            if kind in ("add", "sub"):
                if alpha != 1:
                    raise _Refuse("add/sub with alpha != 1 between variables")
                x, y = _same_form(b, name, x, y)
                v = _V(b.add(name, Add((1, 1 if kind == "add" else -1)), x.idx, y.idx), x.squeezed, out)
                return b.normal(v, name)
            if kind == "mul":
                x, y = _same_form(b, name, x, y)
                return b.normal(_V(b.add(name, Mul(), x.idx, y.idx), x.squeezed, out), name)
            raise _Refuse("division by a variable")
        var, const, var_first = (x, y, True) if isinstance(x, _V) else (y, x, False)
        if not isinstance(var, _V):
            raise _Refuse("no variable input")
        c = torch.as_tensor(const, dtype=torch.float64) if not isinstance(const, Tensor) else _f64(const)
        c = _as_node_const(c, var)
        if kind == "add":
            op = ConstAffine(None, c * alpha)
        elif kind == "sub":
            op = ConstAffine(None, -c * alpha) if var_first else ConstAffine(-torch.ones(()), c)
            if not var_first and alpha != 1:
                raise _Refuse("rsub with alpha")
        elif kind == "mul":
            op = ConstAffine(c, None)
        else:
            if not var_first:
                raise _Refuse("division by a variable")
            op = ConstAffine(1 / c, None)
        if len(out) > len(var.mshape) or math.prod(out) != math.prod(var.mshape):
            raise _Refuse("a constant that broadcasts the variable to a larger shape")
        unit = bool((c == 1).all()) if kind in ("mul", "div") else var_first and bool((c == 0).all())
        if unit and tuple(out) == tuple(var.mshape):
            return var  # x * 1, x / 1, x + 0, x - 0 (an exporter's unit scales, e.g. around ONNX's Elu): no node
        return _V(b.add(name, op, var.idx), var.squeezed, out)

    return rule


def _as_node_const(c: Tensor, like: _V) -> Tensor:
    """A constant broadcast against a model value, as it broadcasts against the node."""
    r = len(like.mshape)
    if c.dim() == 0:
        return c
    if c.dim() < r:
        return c
    if c.dim() == r:
        if like.squeezed and c.shape[0] != 1 and not bool((c == c[:1]).all()):
            raise _Refuse("a constant that differs along the batch axis")
        return c[0] if like.squeezed else c
    raise _Refuse("a constant of higher rank than the variable")


def _pool_max(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = b.squeezed(a["self"], name, "max pooling")
    if a.get("ceil_mode", False) or _pair(a.get("dilation", 1)) != (1, 1):
        raise _Refuse("max pooling with ceil_mode or dilation")
    k = _pair(a["kernel_size"])
    st = _pair(a.get("stride") or k)
    return _V(b.add(name, MaxPool(k, st, _pair(a.get("padding", 0))), x.idx), True, out)


def _pool_avg(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = b.squeezed(a["self"], name, "average pooling")
    pad = _pair(a.get("padding", 0))
    if a.get("ceil_mode", False) or a.get("divisor_override") is not None:
        raise _Refuse("average pooling with ceil_mode or a divisor override")
    if pad != (0, 0) and not a.get("count_include_pad", True):
        raise _Refuse("padded average pooling without count_include_pad")
    k = _pair(a["kernel_size"])
    st = _pair(a.get("stride") or k)
    return _V(b.add(name, Affine(AvgPool(k, st, pad)), x.idx), True, out)


def _pool_adaptive(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = b.squeezed(a["self"], name, "adaptive pooling")
    h, w = x.mshape[-2], x.mshape[-1]
    oh, ow = _pair(a["output_size"])
    if (oh, ow) == (1, 1):
        return _V(b.add(name, Mean((2, 3), True), x.idx), True, out)
    if h % oh or w % ow:
        raise _Refuse(f"adaptive average pooling from {h}x{w} to {oh}x{ow} (not a divisor)")
    k = (h // oh, w // ow)
    return _V(b.add(name, Affine(AvgPool(k, k)), x.idx), True, out)


def _mean(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["self"]
    dims = a.get("dim")
    if not dims:
        raise _Refuse("a mean over every axis (the batch too)")
    axes = tuple(sorted(x.axis(int(d)) for d in dims))
    if 0 in axes:
        raise _Refuse("a mean over the batch axis")
    if a.get("dtype") is not None:
        raise _Refuse("a mean with a dtype")
    return b.normal(_V(b.add(name, Mean(axes, bool(a.get("keepdim", False))), x.idx), x.squeezed, out), name)


def _cat(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    items = list(a["tensors"])
    vars_ = [t for t in items if isinstance(t, _V)]
    if not vars_:
        raise _Refuse("no variable input")
    ref = vars_[0]
    ids: list[int] = []
    forms = _same_form(b, name, *vars_)
    squeezed = forms[0].squeezed
    like = _V(-1, squeezed, forms[0].mshape)
    k = 0
    for t in items:
        if isinstance(t, _V):
            ids.append(forms[k].idx)
            k += 1
        else:
            ids.append(b.const(_f64(t), like, name))
    dim = like.axis(int(a.get("dim", 0)))
    if dim == 0:
        raise _Refuse("concatenation along the batch axis")
    del ref
    return b.normal(_V(b.add(name, Concat(dim), *ids), squeezed, out), name)


def _softmax(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["self"]
    dim = x.axis(int(a["dim"]))
    if dim == 0:
        raise _Refuse("softmax over the batch axis")
    return _V(b.add(name, Softmax(dim), x.idx), x.squeezed, out)


def _sdpa(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    q, k, v = a["query"], a["key"], a["value"]
    if a.get("attn_mask") is not None or float(a.get("dropout_p", 0.0)) != 0.0 or a.get("is_causal", False):
        raise _Refuse("attention with a mask, dropout or causal masking")
    if not all(isinstance(t, _V) for t in (q, k, v)):
        raise _Refuse("attention on constants")
    q, k, v = _same_form(b, name, q, k, v)
    r = len(k.mshape)
    perm = list(range(r + (0 if k.squeezed else 1)))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    kshape = k.mshape[:-2] + (k.mshape[-1], k.mshape[-2])
    kt = _V(b.add(f"{name}/kT", Rearrange("permute", tuple(perm)), k.idx), k.squeezed, kshape)
    scale = a.get("scale")
    scale = 1 / math.sqrt(q.mshape[-1]) if scale is None else float(scale)
    s = b.add(f"{name}/scores", MatMul(), q.idx, kt.idx)
    s = b.add(f"{name}/scale", ConstAffine(torch.tensor(scale, dtype=torch.float64), None), s)
    p = b.add(f"{name}/softmax", Softmax(-1), s)
    return b.normal(_V(b.add(name, MatMul(), p, v.idx), q.squeezed, out), name)


def _shape_op(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    """view / reshape / flatten / unflatten / squeeze / unsqueeze / expand (to the same size): a
    row-major reshape of the per-sample values (the size-1 batch axis does not change the order)."""
    x: _V = a["self"] if "self" in a else a["input"]
    if math.prod(out) != math.prod(x.mshape):
        raise _Refuse(f"a broadcast from {x.mshape} to {out}")
    if out == x.mshape:
        return x
    if x.squeezed and out and out[0] == b.batch:
        return _V(b.add(name, Rearrange("view", out[1:]), x.idx), True, out)
    return b.normal(_V(b.add(name, Rearrange("view", out), x.idx), False, out), name)


def _permute_to(b: _Builder, name: str, x: _V, p: list[int], out: tuple[int, ...]) -> _V:
    r = len(x.mshape)
    p = [d % r for d in p]
    if p == list(range(r)):
        return x
    if x.squeezed and p[0] == 0:
        return _V(b.add(name, Rearrange("permute", tuple(p)), x.idx), True, out)
    x = b.full(x, name)
    return b.normal(_V(b.add(name, Rearrange("permute", (0, *[d + 1 for d in p])), x.idx), False, out), name)


def _permute(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    return _permute_to(b, name, a["self"], [int(d) for d in a["dims"]], out)


def _transpose(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["self"]
    r = len(x.mshape)
    p = list(range(r))
    d0, d1 = int(a["dim0"]) % r, int(a["dim1"]) % r
    p[d0], p[d1] = p[d1], p[d0]
    return _permute_to(b, name, x, p, out)


def _t(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["self"]
    return _permute_to(b, name, x, list(range(len(x.mshape)))[::-1], out)


def _slice(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["self"]
    if out == x.mshape:
        return x
    r = len(x.mshape)
    d = int(a.get("dim", 0)) % r
    size = x.mshape[d]
    start, stop, step = a.get("start"), a.get("end"), int(a.get("step", 1))
    start = 0 if start is None else int(start)
    stop = size if stop is None else min(int(stop), size)
    start, stop = (start + size if start < 0 else start), (stop + size if stop < 0 else stop)
    if d == 0 and x.squeezed:
        raise _Refuse("slicing the batch axis")
    return _V(b.add(name, Rearrange("slice", (x.axis(d), start, stop, step)), x.idx), x.squeezed, out)


def _select(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x = a["self"]
    r = len(x.mshape)
    d = int(a["dim"]) % r
    idx = int(a["index"]) % x.mshape[d]
    if d == 0 and x.squeezed:  # selecting the only sample: the node now holds the full form
        if b.batch != 1:
            raise _Refuse("selecting along the batch axis")
        return _V(x.idx, False, out)
    return b.normal(_V(b.add(name, Rearrange("select", (x.axis(d), idx)), x.idx), x.squeezed, out), name)


def _identity(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    x: _V = a["self"] if "self" in a else a["input"]
    if a.get("train", False) is True:
        raise _Refuse("dropout in training mode")
    dt = a.get("dtype")
    if dt is not None and not (isinstance(dt, torch.dtype) and dt.is_floating_point):
        raise _Refuse(f"a cast to {dt}")
    return x


def _sigmoid(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    """``sigmoid``: the logistic activation (``Sigmoid(k=1/4)``); ``sigmoid(c x)`` becomes a tuned
    sigmoid when the node list is fused (:mod:`~faultbound.network.readers._fuse`), so it is not
    among the registered ``aten_ops``."""
    x = a["self"]
    return _V(b.add(name, Act(Sigmoid()), x.idx), x.squeezed, out)


def _elementwise(fn: str) -> Rule:
    """``erf``, ``exp``, ``log1p``: a transient :class:`~faultbound.network.readers._fuse.Elem` node,
    kept only as part of an activation (:func:`~faultbound.network.readers._fuse.fuse_activations`)."""

    def rule(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
        x = a["self"]
        return _V(b.add(name, Elem(fn), x.idx), x.squeezed, out)

    return rule


def _gt(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    """``x > t`` for a scalar constant t (the threshold switch of a decomposed softplus)."""
    x, t = a["self"], a["other"]
    if not isinstance(x, _V) or isinstance(t, _V) or (isinstance(t, Tensor) and t.numel() != 1):
        raise _Refuse("a comparison other than of a value with a scalar")
    return _V(b.add(name, Elem("gt", float(t)), x.idx), x.squeezed, out)


def _where(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
    """``where(cond, a, b)`` of three computed values (a decomposed softplus)."""
    vs = (a["condition"], a["self"], a["other"])
    if not all(isinstance(v, _V) and v.mshape == out for v in vs):
        raise _Refuse("a selection other than between two computed values of its shape")
    c, x, y = _same_form(b, name, *vs)
    return _V(b.add(name, Elem("where"), c.idx, x.idx, y.idx), c.squeezed, out)


def _dropout_tuple(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> tuple[Any, ...]:
    if a.get("train", False) is True:
        raise _Refuse("dropout in training mode")
    return (a["input"], None)


def _bn_tuple(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> tuple[Any, ...]:
    a = dict(a)
    a.setdefault("training", False)
    return (_bn(b, name, a, out), None, None)


def _ln_tuple(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> tuple[Any, ...]:
    return (_layer_norm(b, name, a, out), None, None)


def _maxpool_tuple(b: _Builder, name: str, a: dict[str, Any], out: tuple[int, ...]) -> tuple[Any, ...]:
    return (_pool_max(b, name, a, out), None)


#: aten operator (overload packet name) -> rule building its node(s).
GRAPH_RULES: dict[str, Rule] = {
    "conv2d": _conv,
    "convolution": _conv,
    "_convolution": _conv,
    "linear": _linear,
    "addmm": _addmm,
    "matmul": _matmul,
    "mm": _matmul,
    "bmm": _matmul,
    "batch_norm": _bn,
    "_native_batch_norm_legit_no_training": _bn_tuple,
    "native_batch_norm": _bn_tuple,
    "layer_norm": _layer_norm,
    "native_layer_norm": _ln_tuple,
    "group_norm": _group_norm,
    "add": _binary("add"),
    "sub": _binary("sub"),
    "rsub": _binary("sub"),
    "mul": _binary("mul"),
    "div": _binary("div"),
    "max_pool2d": _pool_max,
    "max_pool2d_with_indices": _maxpool_tuple,
    "avg_pool2d": _pool_avg,
    "adaptive_avg_pool2d": _pool_adaptive,
    "_adaptive_avg_pool2d": _pool_adaptive,
    "mean": _mean,
    "cat": _cat,
    "concat": _cat,
    "softmax": _softmax,
    "_softmax": _softmax,
    "sigmoid": _sigmoid,
    "erf": _elementwise("erf"),
    "exp": _elementwise("exp"),
    "log1p": _elementwise("log1p"),
    "gt": _gt,
    "where": _where,
    "scaled_dot_product_attention": _sdpa,
    "view": _shape_op,
    "reshape": _shape_op,
    "_unsafe_view": _shape_op,
    "flatten": _shape_op,
    "unflatten": _shape_op,
    "squeeze": _shape_op,
    "unsqueeze": _shape_op,
    "expand": _shape_op,
    "permute": _permute,
    "transpose": _transpose,
    "t": _t,
    "slice": _slice,
    "select": _select,
    "dropout": _identity,
    "native_dropout": _dropout_tuple,
    "feature_dropout": _identity,
    "clone": _identity,
    "contiguous": _identity,
    "alias": _identity,
    "detach": _identity,
    "_to_copy": _identity,
    "to": _identity,
    "lift_fresh_copy": _identity,
}


def _module_name(node: Any) -> str:
    """The module path a program node comes from (``layers.0.0.relu1``), else the node's name."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        path = str(path).replace("L['self'].", "").replace("L__self___", "")
        if path:
            return path
    return str(node.name)


def _module_type(node: Any) -> str:
    """The class name of the submodule a program node comes from (``"ReLU: "``), else ``""``."""
    stack = node.meta.get("nn_module_stack")
    if not stack or _module_name(node) == str(node.name):  # the model's own forward: no submodule
        return ""
    kind = list(stack.values())[-1][1]
    name = getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1].strip("'>")
    return f"{name}: " if name else ""


def _activation_rule(name: str) -> Rule | None:
    cls = aten_activation_ops().get(name)
    if cls is None:
        return None

    def rule(b: _Builder, label: str, a: dict[str, Any], out: tuple[int, ...]) -> _V:
        x = a["self"]
        try:
            act = cls.from_aten(name, a)
        except UnsupportedModelError as e:
            raise _Refuse(str(e)) from None
        return _V(b.add(label, Act(act), x.idx), x.squeezed, out)

    return rule


def _out_shape(node: Any, batch: Any = None) -> tuple[int, ...]:
    """The model shape of a node's value (:func:`_sym_value` of each size)."""
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = val[0]
    if val is None or not hasattr(val, "shape"):
        return ()
    return tuple(int(_sym_value(s, batch)) for s in val.shape)


def _sym_value(v: Any, batch: Any) -> Any:
    """A recorded size (or size arithmetic: ``sym_size``, ``s0 * 4``, ``s0 >= 2``) as a plain value
    for one sample: the dynamic batch size :math:`s` (``batch``, a sympy symbol) is read as
    :math:`s = 1`, as the size-1 batch axis of a program exported with one example. The probe check
    runs the program with real batches, so a model whose per-sample function does depend on
    :math:`s` is refused there.

    Raises:
        _Refuse: the size depends on a dynamic dimension other than the batch.
    """
    if isinstance(v, (bool, int, float)):
        return v
    expr = getattr(getattr(v, "node", None), "expr", None)
    if expr is None:
        raise _Refuse(f"a size {v} that is not fixed")
    if batch is not None:
        expr = expr.subs(batch, 1)
    if expr.free_symbols:
        raise _Refuse(
            f"a size ({expr}) of a dynamic dimension other than the batch; "
            "dynamic shapes other than the batch are not supported"
        )
    if isinstance(v, torch.SymBool):
        return bool(expr)
    return float(expr) if isinstance(v, torch.SymFloat) else int(expr)


def graph_from_exported(
    ep: Any,
    domain: Any = None,
    sites: list[str] | None = None,
    check: bool = True,
    leaves: dict[str, Activation] | None = None,
) -> GraphNetwork:
    """The GraphNetwork of an exported program whose example batch is 1 (see the module docstring).

    ``leaves`` (module path -> activation, from
    :func:`~faultbound.network.readers.module.module_leaves`) reads each leaf_run of consecutive nodes
    that one such module computes as that activation, applied to the first computed value the leaf_run
    reads, whatever operators the module exports to (the probe check then compares).

    Raises:
        UnsupportedModelError: naming each distinct unsupported operator, the first node it sits
            at and how many more nodes use it.
        ModelLoadError: when the graph differs from the program on probe inputs.
    """
    weights, user_input = program_weights(ep)
    b = _Builder(_example_batch(ep, user_input))
    env: dict[Any, Any] = {}
    input_shape: tuple[int, ...] = ()
    in_dtype = torch.float32
    final: Any = None
    found: list[tuple[tuple[str, str], str]] = []
    ref_batch: int | None = b.batch
    leaf_run: tuple[str, Any] | None = None  # the leaf module being read as one activation, and its value
    for node in ep.graph_module.graph.nodes:
        if node.op == "placeholder":
            if node.name in weights:
                env[node] = weights[node.name]
            elif node.name == user_input:
                input_shape, _, in_dtype = input_spec(node)
                b.batch_symbol, ref_batch = batch_symbol(node), probe_batch(ep, node)
                env[node] = _V(0, True, (b.batch, *input_shape))
            else:
                raise UnsupportedModelError(f"The program has an input {node.name!r} besides the model input.")
        elif node.op == "get_attr":
            env[node] = attr_value(ep.graph_module, node.target)
        elif node.op == "call_function":
            path = _module_name(node) if leaves else ""
            if path in (leaves or {}):
                if leaf_run is None or leaf_run[0] != path:
                    x = next((a for a in _flat_args(node, env) if isinstance(a, (_V, _Poison))), None)
                    if isinstance(x, _V):
                        act = (leaves or {})[path]
                        leaf_run = (path, _V(b.add(path, Act(act), x.idx), x.squeezed, x.mshape))
                    elif isinstance(x, _Poison):
                        leaf_run = (path, x)
                    else:
                        leaf_run = None
                if leaf_run is not None:
                    env[node] = leaf_run[1]
                    continue
            leaf_run = None
            try:
                env[node] = _call(b, node, env, _reads(node, env))
            except _Found as f:
                found.append((f.key, f.text))
                env[node] = _Poison()
        elif node.op == "output":
            outs = node.args[0]
            final = env.get(outs[0] if isinstance(outs, (tuple, list)) else outs)
        else:
            raise UnsupportedModelError(f"Unsupported program node {node.op} {node.name!r}.")
    if found:
        raise UnsupportedModelError(unsupported_line("operators", found))
    if not isinstance(final, _V):
        raise UnsupportedModelError("Expected the program's output to be computed from its input.")
    final = b.normal(final, "output")
    nodes = fuse_activations(b.nodes[: final.idx + 1], final.idx)
    net = GraphNetwork.build(nodes, input_shape, domain, sites, in_dtype)
    if check:
        module = ep.module()

        def run(x: Tensor) -> Tensor:
            with torch.no_grad():
                y = module(x.to(in_dtype))
            y = y[0] if isinstance(y, (tuple, list)) else y
            return y.detach().to(torch.float64).reshape(x.shape[0], -1)

        check_against(net, batched_reference(run, ref_batch), "the torch.export program")
    return net


def _flat_args(node: Any, env: dict[Any, Any]) -> list[Any]:
    """The values of a node's arguments, nested lists flattened."""
    out: list[Any] = []
    stack = [*node.args, *node.kwargs.values()]
    while stack:
        a = stack.pop(0)
        if isinstance(a, (list, tuple)):
            stack[:0] = list(a)
        elif isinstance(a, torch.fx.Node):
            out.append(env.get(a))
    return out


def _has(a: Any, kind: type) -> bool:
    """Whether ``a`` (or an item of a nested list / tuple) is a ``kind``."""
    if isinstance(a, (list, tuple)):
        return any(_has(x, kind) for x in a)
    return isinstance(a, kind)


def _rule(name: str) -> Rule | None:
    """The rule of an aten operator (overload packet name; in-place ``relu_`` as ``relu``), or None."""
    rule = GRAPH_RULES.get(name) or _activation_rule(name)
    if rule is None and name.endswith("_") and not name.startswith("_"):
        rule = GRAPH_RULES.get(name[:-1]) or _activation_rule(name[:-1])
    return rule


def _reads(node: Any, env: dict[Any, Any]) -> str:
    """The first value computed from the input that ``node`` reads: ``"act (relu)"`` or ``"the input"``."""
    for n in node.all_input_nodes:
        if isinstance(env.get(n), (_V, _Poison)):
            return f"{_module_name(n)} ({_packet(n.target)})" if n.op == "call_function" else "the input"
    return "the input"


def _call(b: _Builder, node: Any, env: dict[Any, Any], prev: str) -> Any:
    """The value of one ``call_function`` node: a variable, a constant, or a :class:`_Poison` when
    it reads a refused value.

    Raises:
        _Found: the node's operator (or its setting) is unsupported.
    """
    args = _map(node.args, env)
    kwargs = {k: _map(v, env) for k, v in node.kwargs.items()}
    target = node.target
    where = f"node {_module_name(node)!r} ({_module_type(node)}{node.name}, after {prev})"
    if not _safe_target(target):
        call = f"call {str(target)[:80]!r}"
        raise _Found((call, ""), f"{call} at {where[:-1]}; not an aten operator)")
    poisoned = _has(list(args), _Poison) or _has(list(kwargs.values()), _Poison)
    val = node.meta.get("val")
    if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):  # size arithmetic (sym_size, ...)
        try:
            return _sym_value(val, b.batch_symbol)
        except _Refuse as r:
            call = _op_name(target)
            raise _Found((call, str(r)), f"{call} at {where[:-1]}; {r})") from None
    if target is operator.getitem:
        seq, i = args
        return _Poison() if isinstance(seq, _Poison) else seq[i]
    name = _packet(target)
    if name.startswith("_assert") or name.startswith("sym_"):
        return None
    rule = _rule(name)
    if rule is None or not hasattr(target, "_schema"):
        if poisoned or _has(list(args), _V) or _has(list(kwargs.values()), _V):
            raise _Found((_op_name(target), ""), f"{_op_name(target)} at {where}")
    if poisoned:  # a supported operator reading a refused value: not built, not blamed
        return _Poison()
    if not _has(list(args), _V) and not _has(list(kwargs.values()), _V):
        try:
            with torch.no_grad():
                return target(*args, **kwargs)
        except Exception as e:
            raise ModelLoadError(
                f"Cannot evaluate the constant node {where}: {type(e).__name__}: {first_line(e)}"
            ) from None
    assert rule is not None
    a = _bind(target, tuple(args), kwargs)
    try:
        return rule(b, _module_name(node), a, _out_shape(node, b.batch_symbol))
    except _Refuse as r:
        raise _Found((_op_name(target), str(r)), f"{_op_name(target)} at {where[:-1]}; {r})") from None


def _example_batch(ep: Any, name: str) -> int:
    """The program's (fixed) example batch size; 1 when it is symbolic."""
    for node in ep.graph_module.graph.nodes:
        if node.op == "placeholder" and node.name == name:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape") and len(val.shape) and isinstance(val.shape[0], int):
                return int(val.shape[0])
    return 1


def graph_from_module(
    module: torch.nn.Module,
    input_shape: tuple[int, ...] | None = None,
    domain: Any = None,
    sites: list[str] | None = None,
    check: bool = True,
) -> GraphNetwork:
    """The one reader of an ``nn.Module``: export it with ``torch.export`` (eval mode, an example
    batch of one input of ``input_shape``, :func:`~faultbound.network.readers.module.module_input_shape`
    when not given) and read the program as a GraphNetwork, its registered activation modules read
    by their type (:func:`~faultbound.network.readers.module.module_leaves`). The user's own module
    runs in this process (nothing is unpickled); the DAG is checked against an eval-mode copy of
    the module on probe inputs (one batch). It is exported in eval mode and then given back
    its own training flags, submodule by submodule: the module is left as it was (no warning here;
    the callers, :func:`faultbound.load` and ``Network.from_torch``, warn)."""
    shape = module_input_shape(module, input_shape, domain)
    example = torch.zeros((1, *shape), dtype=module_dtype(module))
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with quiet_torch_logging():
            ep = torch.export.export(module, (example,))
    except Exception as e:
        raise UnsupportedModelError(
            f"torch.export cannot trace {type(module).__name__}: {type(e).__name__}: {first_line(e)}"
        ) from None
    finally:
        for m, training in flags:
            m.training = training
    net = graph_from_exported(ep, domain, sites, False, module_leaves(module))
    if check:  # against the module itself (an eval-mode copy, in its own format), all probes in one batch
        ref = copy.deepcopy(module).eval()
        dtype = module_dtype(module)

        def run(x: Tensor) -> Tensor:
            with torch.no_grad():
                y = ref(x.to(dtype))
            y = y[0] if isinstance(y, (tuple, list)) else y
            return y.detach().to(torch.float64).reshape(x.shape[0], -1)

        def probe(x: Tensor) -> Tensor:
            try:
                return run(x)
            except Exception:  # a module that only takes the batch it was exported with: one by one
                return batched_reference(run, 1)(x)

        check_against(net, probe, "the torch module")
    return net
