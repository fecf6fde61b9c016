"""Reading a ``torch.export`` program (``.pt2``) into a Network, without unpickling user code.

``torch.export.load`` restores the graph of aten operators and the weights; the graph is walked as
a chain (see :class:`~faultbound.network.readers._common.ChainTracer`), each call looked up by its
aten op name in :data:`RULES`. Parameters, buffers and lifted constants come from the program's
graph signature and state dict. Supported aten ops (the keys of :data:`RULES`, any overload):

* affine: ``linear``, ``addmm`` / ``mm`` / ``matmul`` with constant weights, ``add`` / ``sub`` of a
  bias right after them, ``conv2d`` / ``convolution`` / ``_convolution`` (2-D, groups 1, dilation
  1, not transposed), ``avg_pool2d`` (``count_include_pad`` or no padding, floor mode, no divisor
  override), ``flatten`` from dim 1, ``view`` / ``reshape`` / ``_unsafe_view`` to ``(batch, -1)``,
  ``batch_norm`` / ``_native_batch_norm_legit_no_training`` / ``native_batch_norm`` in inference
  (folded by :func:`~faultbound.network.readers._common.batch_norm`);
* the identity: ``dropout`` (not training), ``native_dropout``, ``clone``, ``alias``, ``detach``,
  ``contiguous``, float ``_to_copy``;
* algebra that forms a bias or an activation: ``add``, ``sub``, ``mul``, ``div`` (no rounding
  mode), ``gt``, ``where``, ``exp``, ``log1p``, ``erf``;
* activations: the ``aten_ops`` of every activation registered in
  :mod:`faultbound.network.activations` (read when a call is looked up, after :data:`RULES`); built
  in: ``sigmoid``, ``tanh``, ``relu``, ``relu6``, ``leaky_relu`` (slope >= 0),
  ``hardtanh``, ``softplus``, ``elu`` (not SELU/CELU scales), ``gelu`` (exact), ``silu``, and the
  tuned sigmoid ``sigmoid(mul(x, c))`` as ``Sigmoid(k=c/4)``; decomposed forms
  (``x * sigmoid(x)``, the erf form of GELU, torch's softplus with its threshold switch) are
  recognised too. In-place variants (``relu_``, ``hardtanh_``, ``leaky_relu_``, ``silu_``,
  ``elu_``, ``dropout_``, ...), as ``inplace=True`` modules export, are read as the op itself.

Refused, each node named in one :class:`~faultbound.errors.UnsupportedModelError`: every other aten
op (``max_pool2d``, ``softmax``, ``cat``, ...); a call target that is not an ``aten`` / ``prims``
operator, an ``operator`` / ``math`` function or a ``torch.sym_*`` helper (a program can name any
``torch`` attribute as a target; nothing else is ever called); graphs that are not a chain
(residual additions, reuse of an earlier layer's output); other than one input and one output;
dynamic input sizes other than the batch (a dynamic batch is read: size arithmetic on it only
feeds ``view`` / ``reshape`` sizes, and the probe check runs the program in batches its recorded
range allows, :func:`probe_batch`); the settings excluded above. Before torch reads a file,
:mod:`~faultbound.network.readers.pt2_guard` refuses any archive that could run code.

Nodes whose inputs are all constants (``t`` / ``permute`` of a weight, ...) are evaluated once.
The Network is checked against ``ep.module()`` on probe inputs.
"""

from __future__ import annotations

import io
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import Activation, aten_activation_ops
from faultbound.network.core import Network, check_against
from faultbound.network.ops import AvgPool, Conv, Dense, Flatten, Op
from faultbound.network.readers._common import (
    Act,
    ChainTracer,
    Dead,
    Expr,
    Gt,
    Poison,
    Value,
    batch_norm,
    batched_reference,
    first_line,
)
from faultbound.network.readers.pt2_guard import quiet_torch_logging, read_checked_archive

__all__ = [
    "RULES",
    "attr_value",
    "batch_symbol",
    "input_spec",
    "load_exported",
    "network_from_exported",
    "probe_batch",
    "program_weights",
    "read_exported",
]


def load_exported(path: Path, domain: Any = None) -> Network:
    """Read ``path`` with :func:`torch.export.load` and extract its Network.

    The archive is first checked by :func:`~faultbound.network.readers.pt2_guard.read_checked_archive`
    (nothing in it can run code when torch reads it), and torch reads those checked bytes with its
    logging kept off stderr.
    """
    return network_from_exported(read_exported(path), domain)


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


class _Shape:
    """A symbolic size computed from the layer input (``sym_size``); only used in view sizes."""


def network_from_exported(ep: Any, domain: Any = None, check: bool = True) -> Network:
    """Extract the Network of an in-memory ``torch.export.ExportedProgram``.

    Raises:
        UnsupportedModelError: listing every unsupported aten node.
        ModelLoadError: when the Network differs from ``ep.module()`` on probe inputs.
    """
    weights, user_input = program_weights(ep)
    gm = ep.graph_module
    tracer = ChainTracer("aten operators")
    env: dict[Any, Any] = {}  # fx Node -> Tensor constant, Value, tuple, or _Shape
    input_shape: tuple[int, ...] = ()
    batch: int | None = None
    in_dtype = torch.float32
    final: Any = None
    for node in gm.graph.nodes:
        label = f"{_op_name(node.target) if node.op == 'call_function' else node.op} {node.name!r}"
        if node.op == "placeholder":
            if node.name in weights:
                env[node] = weights[node.name]
            elif node.name == user_input:
                input_shape, _, in_dtype = input_spec(node)
                batch = probe_batch(ep, node)
                env[node] = tracer.start()
            else:
                env[node] = tracer.fail(label, "an input that is not the model input or a weight")
        elif node.op == "get_attr":
            env[node] = attr_value(gm, node.target)
        elif node.op == "call_function":
            env[node] = _call(tracer, node, label, env)
        elif node.op == "output":
            outs = node.args[0]
            out_node = outs[0] if isinstance(outs, (tuple, list)) else outs
            final = env.get(out_node)
        else:
            env[node] = tracer.fail(label)
    if final is None or isinstance(final, (Tensor, tuple, _Shape)):
        raise UnsupportedModelError("Expected the program's output to be computed from its input.")
    items = tracer.finish(final, "the program output")
    net = Network.from_chain(items, input_shape, domain, in_dtype)
    if check:
        module = ep.module()

        def run(x: Tensor) -> Tensor:
            with torch.no_grad():
                y = module(x.to(in_dtype))
            y = y[0] if isinstance(y, (tuple, list)) else y
            return y.detach().to(torch.float64).reshape(x.shape[0], -1)

        check_against(net, batched_reference(run, batch), "the torch.export program")
    return net


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


def _flat(a: Any) -> list[Any]:
    if isinstance(a, (list, tuple)):
        return [y for x in a for y in _flat(x)]
    return [a]


def _is_const(a: Any) -> bool:
    if isinstance(a, (list, tuple)):
        return all(_is_const(x) for x in a)
    return not isinstance(a, (Expr, Act, Gt, Dead, Poison, _Shape))


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


def _call(tracer: ChainTracer, node: Any, label: str, env: dict[Any, Any]) -> Any:
    args = _map(node.args, env)
    kwargs = {k: _map(v, env) for k, v in node.kwargs.items()}
    target = node.target
    if not _safe_target(target):
        return tracer.fail(label, f"calls {str(target)[:80]!r}, which is not an aten operator")
    if target is operator.getitem:
        seq, i = args
        if isinstance(seq, (tuple, list)) and not _is_const(seq):
            return seq[i] if i < len(seq) else Dead(f"output {i} of a node")
        if _is_const(seq):
            return seq[i]
        return tracer.fail(label)
    flat = [*_flat(args), *_flat(list(kwargs.values()))]
    if any(isinstance(v, _Shape) for v in flat) and not any(isinstance(v, (Expr, Act, Gt, Dead, Poison)) for v in flat):
        return _Shape()  # size arithmetic on the layer input, used only in view sizes
    name = _packet(target)
    if name.startswith("_assert") or name in ("sym_constrain_range_for_size", "sym_constrain_range"):
        return None
    if name == "sym_size":
        return _Shape()
    if _is_const(list(args)) and _is_const(list(kwargs.values())):
        try:
            with torch.no_grad():
                return target(*args, **kwargs)
        except Exception as e:
            raise ModelLoadError(
                f"Cannot evaluate the constant node {label}: {type(e).__name__}: {first_line(e)}"
            ) from None
    if not hasattr(target, "_schema"):
        return tracer.fail(label)
    if name not in _SIZED and any(isinstance(v, _Shape) for v in flat):
        return tracer.fail(label, "computes with the dynamic batch size")
    a = _bind(target, tuple(args), kwargs)
    rule = RULES.get(name) or _registered(name)
    if rule is None and name.endswith("_") and not name.startswith("_"):
        # in-place variant (relu_, hardtanh_, leaky_relu_, silu_, elu_, dropout_, ...) of a supported
        # op, as nn.ReLU(inplace=True) exports: same value; a later use of the overwritten input is
        # an earlier layer's value, which the chain refuses, and the probe check compares the outputs.
        rule = RULES.get(name[:-1]) or _registered(name[:-1])
    if rule is None:
        return tracer.fail(label)
    try:
        return rule(tracer, label, a)
    except _Reject as r:
        return tracer.fail(label, str(r))


#: the ops whose arguments may hold a size read from the layer input (:class:`_Shape`)
_SIZED = frozenset({"view", "reshape", "_unsafe_view"})


class _Reject(Exception):
    """A supported op with settings we cannot represent."""


def _np(t: Any) -> np.ndarray:
    if isinstance(t, Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)


def _f64(t: Any, n: int | None = None) -> Tensor:
    if t is None:
        return torch.zeros(n or 0, dtype=torch.float64)
    if not isinstance(t, Tensor):
        raise _Reject("expected constant weights")
    return t.detach().to(torch.float64).clone()


def _data(a: dict[str, Any], key: str) -> Value:
    v = a[key]
    if isinstance(v, Tensor):
        raise _Reject(f"expected the layer input as `{key}`")
    return v


def _affine(tracer: ChainTracer, label: str, v: Value, op: Op) -> Value:
    return tracer.affine(label, v, op)


def _linear(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    w = _f64(a["weight"])
    return _affine(tr, label, _data(a, "input"), Dense(w, _f64(a.get("bias"), w.shape[0])))


def _addmm(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    wt, b = _f64(a["mat2"]), a["self"]
    if wt.dim() != 2:
        raise _Reject("expected a 2-D weight")
    w = wt.T * float(a.get("alpha", 1))
    bias = _f64(b).reshape(-1) * float(a.get("beta", 1)) if isinstance(b, Tensor) else None
    if bias is None or bias.numel() not in (1, w.shape[0]):
        raise _Reject("expected a constant bias")
    return _affine(tr, label, _data(a, "mat1"), Dense(w.contiguous(), bias.expand(w.shape[0]).clone()))


def _mm(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    key = "mat2" if "mat2" in a else "other"
    wt = _f64(a[key])
    if wt.dim() != 2:
        raise _Reject("expected a constant 2-D right operand")
    return _affine(tr, label, _data(a, "self"), Dense(wt.T.contiguous(), _f64(None, wt.shape[1])))


def _pair(v: Any, default: tuple[int, int] | None = None) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v) if v is not None else []
    if not v and default is not None:
        return default
    if len(v) == 1:
        return (int(v[0]), int(v[0]))
    if len(v) != 2:
        raise _Reject(f"expected 2-D settings, got {v}")
    return (int(v[0]), int(v[1]))


def _conv(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    w = _f64(a["weight"])
    if w.dim() != 4 or a.get("transposed", False):
        raise _Reject("expected a 2-D, non-transposed convolution")
    if isinstance(a.get("padding"), str):
        if a["padding"] != "valid":
            raise _Reject(f"padding={a['padding']!r}")
        a = {**a, "padding": [0, 0]}
    problems = []
    if int(a.get("groups", 1)) != 1:
        problems.append(f"groups={a['groups']}")
    if _pair(a.get("dilation", 1)) != (1, 1):
        problems.append(f"dilation={list(a['dilation'])}")
    if any(int(p) != 0 for p in (a.get("output_padding") or [])):
        problems.append("output_padding")
    if problems:
        raise _Reject(", ".join(problems))
    op = Conv(w, _f64(a.get("bias"), w.shape[0]), _pair(a.get("stride", 1)), _pair(a.get("padding", 0)))
    return _affine(tr, label, _data(a, "input"), op)


def _avgpool(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    k = _pair(a["kernel_size"])
    s = _pair(a.get("stride"), default=k)
    p = _pair(a.get("padding", 0))
    if a.get("ceil_mode", False) or a.get("divisor_override") is not None:
        raise _Reject("ceil_mode or divisor_override")
    if p != (0, 0) and not a.get("count_include_pad", True):
        raise _Reject("count_include_pad=False with padding")
    return _affine(tr, label, _data(a, "self"), AvgPool(k, s, p))


def _flatten(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    if int(a.get("start_dim", 0)) != 1 or int(a.get("end_dim", -1)) != -1:
        raise _Reject(f"start_dim={a.get('start_dim')}, end_dim={a.get('end_dim')} (expected 1, -1)")
    return _affine(tr, label, _data(a, "self"), Flatten())


def _view(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    size = a.get("size", a.get("shape"))
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise _Reject(f"expected a view to (batch, -1), but got size {size}")
    return _affine(tr, label, _data(a, "self"), Flatten())  # the probe check confirms (batch, -1)


def _bn(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    if a.get("training", False):
        raise _Reject("training=True")
    mean, var = a["running_mean"], a["running_var"]
    if not isinstance(mean, Tensor) or not isinstance(var, Tensor):
        raise _Reject("expected running statistics")
    gamma = _f64(a["weight"]) if a.get("weight") is not None else None
    beta = _f64(a["bias"]) if a.get("bias") is not None else None
    return _affine(tr, label, _data(a, "input"), batch_norm(mean, var, float(a["eps"]), gamma, beta))


def _bn_tuple(tr: ChainTracer, label: str, a: dict[str, Any]) -> tuple[Value, ...]:
    out = _bn(tr, label, a)
    return (out, Dead(f"the statistics of {label}"), Dead(f"the statistics of {label}"))


def _identity(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    if a.get("train", False):
        raise _Reject("dropout in training mode")
    dtype = a.get("dtype")
    if dtype is not None and not dtype.is_floating_point:
        raise _Reject(f"casts to {dtype}")
    return _data(a, "input" if "input" in a else "self")


def _dropout_tuple(tr: ChainTracer, label: str, a: dict[str, Any]) -> tuple[Value, ...]:
    return (_identity(tr, label, a), Dead(f"the mask of {label}"))


def _act(make: Callable[[dict[str, Any]], Activation]) -> Callable[[ChainTracer, str, dict[str, Any]], Value]:
    def rule(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
        return tr.activation(label, _data(a, "self"), make(a))

    return rule


def _registered(name: str) -> Callable[[ChainTracer, str, dict[str, Any]], Value] | None:
    """The rule of a registered activation whose ``aten_ops`` name ``name`` (read at lookup time)."""
    cls = aten_activation_ops().get(name)
    if cls is None:
        return None

    def make(a: dict[str, Any]) -> Activation:
        try:
            return cls.from_aten(name, a)
        except UnsupportedModelError as e:
            raise _Reject(str(e)) from None

    return _act(make)


def _binary(kind: str) -> Callable[[ChainTracer, str, dict[str, Any]], Value]:
    def rule(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
        x, y = a["self"], a["other"]
        if kind in ("add", "sub"):
            alpha = float(a.get("alpha", 1))
            if isinstance(x, Tensor) or isinstance(x, (int, float)):
                if kind == "sub":
                    raise _Reject("subtracts the layer input from a constant")
                x, y = y, x
            if isinstance(y, (Tensor, int, float)):
                c = _np(y).astype(np.float64) * alpha
                return tr.add_const(label, x, -c if kind == "sub" else c)
            raise _Reject("adds two computed values (residual or non-chain graphs are not supported)")
        if a.get("rounding_mode") is not None:
            raise _Reject(f"rounding_mode={a['rounding_mode']!r}")
        cx = _np(x) if isinstance(x, (Tensor, int, float)) else x
        cy = _np(y) if isinstance(y, (Tensor, int, float)) else y
        if kind == "mul":
            return tr.mul(label, cx, cy)
        if kind == "div":
            return tr.div(label, cx, cy)
        return tr.greater(label, cx, cy)

    return rule


def _where(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
    return tr.where(label, a["condition"], a["self"], a["other"])


def _unary(name: str) -> Callable[[ChainTracer, str, dict[str, Any]], Value]:
    def rule(tr: ChainTracer, label: str, a: dict[str, Any]) -> Value:
        return tr.unary(label, name, _data(a, "self"))

    return rule


#: aten op name (the overload packet, any overload) -> rule ``(tracer, label, bound arguments) ->
#: value``, for the affine, identity and algebra ops. An in-place variant ``name_`` uses the rule of
#: ``name``. Adding an operator is one entry here (and its rule function beside it); an activation
#: is a class registered in :mod:`faultbound.network.activations` (its ``aten_ops``).
RULES: dict[str, Callable[[ChainTracer, str, dict[str, Any]], Any]] = {
    "linear": _linear,
    "addmm": _addmm,
    "mm": _mm,
    "matmul": _mm,
    "conv2d": _conv,
    "convolution": _conv,
    "_convolution": _conv,
    "avg_pool2d": _avgpool,
    "flatten": _flatten,
    "view": _view,
    "reshape": _view,
    "_unsafe_view": _view,
    "batch_norm": _bn,
    "_native_batch_norm_legit_no_training": _bn_tuple,
    "native_batch_norm": _bn_tuple,
    "dropout": _identity,
    "native_dropout": _dropout_tuple,
    "clone": _identity,
    "alias": _identity,
    "detach": _identity,
    "contiguous": _identity,
    "_to_copy": _identity,
    "sigmoid": _unary("sigmoid"),
    "erf": _unary("erf"),
    "exp": _unary("exp"),
    "log1p": lambda tr, label, a: tr.log1p(label, _data(a, "self")),
    "mul": _binary("mul"),
    "div": _binary("div"),
    "add": _binary("add"),
    "sub": _binary("sub"),
    "gt": _binary("gt"),
    "where": _where,
}
