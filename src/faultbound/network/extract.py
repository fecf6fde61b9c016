"""Extraction of a :class:`~faultbound.network.core.Network` from a ``torch.nn.Sequential``.

Per-layer rules live in one explicit registry (:data:`LAYER_RULES`, a dict from module type to a
function that turns the module into an affine op); activations come from
:data:`faultbound.network.activations.REGISTRY`. Unsupported modules are all collected first and
reported in one error.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import Activation, activation_from_module
from faultbound.network.core import Box, Layer, Network
from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten, Op

__all__ = ["LAYER_RULES", "extract_torch", "build_network", "check_against", "flatten_modules"]


def _f64(t: Tensor | None, n: int) -> Tensor:
    if t is None:
        return torch.zeros(n, dtype=torch.float64)
    return t.detach().to(torch.float64).clone()


def _pair(v: int | tuple[int, ...] | str) -> tuple[int, int]:
    if isinstance(v, str):
        raise UnsupportedModelError(f"Expected numeric padding, but got padding={v!r}.")
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def _linear(m: nn.Module) -> Op:
    assert isinstance(m, nn.Linear)
    return Dense(_f64(m.weight, 0), _f64(m.bias, m.out_features))


def _conv(m: nn.Module) -> Op:
    assert isinstance(m, nn.Conv2d)
    problems = []
    if m.groups != 1:
        problems.append(f"groups={m.groups}")
    if tuple(m.dilation) != (1, 1):
        problems.append(f"dilation={tuple(m.dilation)}")
    if m.padding_mode != "zeros":
        problems.append(f"padding_mode={m.padding_mode!r}")
    if problems:
        raise UnsupportedModelError(
            f"Expected Conv2d with groups=1, dilation=1, zero padding, but got {', '.join(problems)}."
        )
    return Conv(_f64(m.weight, 0), _f64(m.bias, m.out_channels), _pair(m.stride), _pair(m.padding))


def _avgpool(m: nn.Module) -> Op:
    assert isinstance(m, nn.AvgPool2d)
    if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
        raise UnsupportedModelError(
            "Expected AvgPool2d with ceil_mode=False, count_include_pad=True and no "
            "divisor_override."
        )
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    return AvgPool(k, s, _pair(m.padding))


def _flatten(m: nn.Module) -> Op:
    assert isinstance(m, nn.Flatten)
    if m.start_dim != 1 or m.end_dim != -1:
        raise UnsupportedModelError(
            f"Expected Flatten(start_dim=1, end_dim=-1), but got ({m.start_dim}, {m.end_dim})."
        )
    return Flatten()


def _batchnorm(m: nn.Module) -> Op:
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    if m.running_mean is None or m.running_var is None:
        raise UnsupportedModelError("Expected BatchNorm with running statistics.")
    inv = 1.0 / torch.sqrt(m.running_var.detach().to(torch.float64) + m.eps)
    gamma = _f64(m.weight, m.num_features) if m.affine else torch.ones(m.num_features, dtype=torch.float64)
    beta = _f64(m.bias, m.num_features) if m.affine else torch.zeros(m.num_features, dtype=torch.float64)
    scale = gamma * inv
    shift = beta - m.running_mean.detach().to(torch.float64) * scale
    return ChannelAffine(scale, shift)


#: Module type -> rule producing the affine op. Activations are in the activation registry.
LAYER_RULES: dict[type[nn.Module], Callable[[nn.Module], Op]] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv,
    nn.AvgPool2d: _avgpool,
    nn.Flatten: _flatten,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
}

#: Modules that are the identity in eval mode.
_IDENTITY: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout)


def flatten_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf modules of nested ``nn.Sequential`` containers, with their dotted names."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out.extend(flatten_modules(child, f"{prefix}{name}."))
        return out
    return [(prefix.rstrip(".") or type(module).__name__, module)]


def _fold(ops: list[Op], bn: ChannelAffine) -> bool:
    """Fold a batch norm into the weighted op just before it; False when not directly after one."""
    if not ops or not isinstance(ops[-1], (Dense, Conv)):
        return False
    prev = ops[-1]
    a, t = bn.scale, bn.shift
    if isinstance(prev, Dense):
        ops[-1] = Dense(prev.weight * a[:, None], prev.bias * a + t)
    else:
        ops[-1] = Conv(prev.weight * a[:, None, None, None], prev.bias * a + t, prev.stride, prev.padding)
    return True


def extract_torch(
    module: nn.Module,
    domain: tuple[object, object] | None = None,
    input_shape: Sequence[int] | None = None,
    check: bool = True,
) -> Network:
    """See :meth:`Network.from_torch`."""
    if not isinstance(module, nn.Module):
        raise UnsupportedModelError(f"Expected a torch.nn.Module, but got {type(module).__name__}.")
    leaves = flatten_modules(module)
    if not isinstance(module, nn.Sequential):
        raise UnsupportedModelError(
            f"Expected an nn.Sequential (nested Sequentials are flattened), but got "
            f"{type(module).__name__}; wrap its layers in nn.Sequential."
        )
    unsupported: list[str] = []
    items: list[tuple[str, Op | Activation]] = []
    for name, m in leaves:
        if isinstance(m, _IDENTITY):
            continue
        try:
            act = activation_from_module(m)
            if act is not None:
                items.append((name, act))
                continue
            rule = LAYER_RULES.get(type(m))
            if rule is None:
                unsupported.append(f"{name} ({type(m).__name__})")
                continue
            items.append((name, rule(m)))
        except UnsupportedModelError as e:
            unsupported.append(f"{name} ({type(m).__name__}: {e})")
    if unsupported:
        raise UnsupportedModelError(
            f"Unsupported layers ({len(unsupported)}): {'; '.join(unsupported)}. Supported: "
            "Linear, Conv2d, Flatten, AvgPool2d, BatchNorm1d/2d, Dropout, Identity and the "
            "activations Sigmoid, TunedSigmoid, Tanh, ReLU, LeakyReLU, Hardtanh, Softplus, ELU, "
            "GELU, SiLU."
        )
    shape = _infer_input_shape(items, input_shape, domain)
    net = build_network(items, shape, domain)
    if check:
        check_against(net, _reference_forward(module), "the torch module")
    return net


def _infer_input_shape(
    items: list[tuple[str, Op | Activation]],
    input_shape: Sequence[int] | None,
    domain: tuple[object, object] | None,
) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise UnsupportedModelError(f"Expected a positive `input_shape`, but got {shape}.")
        return shape
    for name, it in items:
        if isinstance(it, Dense):
            return (int(it.weight.shape[1]),)
        if isinstance(it, (Conv, Flatten, AvgPool, ChannelAffine)):
            if domain is not None and not isinstance(domain, str):
                lo = torch.as_tensor(domain[0]) if not isinstance(domain[0], (int, float)) else None
                if lo is not None and lo.dim() > 1:
                    return tuple(lo.shape)
            raise UnsupportedModelError(
                f"Expected `input_shape` for a model whose first layer is {name} "
                "(for example input_shape=(1, 28, 28))."
            )
    raise UnsupportedModelError("Expected at least one Linear or Conv2d layer, but found none.")


def build_network(
    items: list[tuple[str, Op | Activation]],
    input_shape: tuple[int, ...],
    domain: tuple[object, object] | None,
) -> Network:
    """Group a flat list of ops and activations into layers 1..L+1 and check shapes and values.

    Used by every loader (torch module, ONNX, torch.export), so there is one grouping rule: a
    hidden layer is the chain of affine ops up to and including an activation; what follows the
    last activation is the linear output layer L+1.
    """
    groups: list[tuple[list[Op], Activation | None, list[str]]] = []
    ops: list[Op] = []
    names: list[str] = []
    for name, it in items:
        if isinstance(it, Activation):
            if not ops:
                prev = groups[-1][2][-1] if groups else "the input"
                raise UnsupportedModelError(
                    f"Expected a linear layer before activation {name}, but it follows {prev} "
                    "directly."
                )
            groups.append((ops, it, names + [name]))
            ops, names = [], []
        else:
            if isinstance(it, ChannelAffine) and _fold(ops, it):
                names.append(name)
                continue
            ops.append(it)
            names.append(name)
    if not groups:
        raise UnsupportedModelError(
            "Expected at least one hidden layer (a linear layer followed by an activation), "
            "but the model has no activation."
        )
    if not any(o.weighted for o in ops):
        last = groups[-1][2][-1]
        raise UnsupportedModelError(
            f"Expected a linear output layer after the last activation ({last}), as in the paper; "
            "apply any final activation outside the model."
        )
    groups.append((ops, None, names))

    layers: list[Layer] = []
    x = torch.zeros((1, *input_shape), dtype=torch.float64)
    for index, (gops, act, gnames) in enumerate(groups, start=1):
        in_shape = tuple(x.shape[1:])
        try:
            for op in gops:
                x = op.forward(x)
        except RuntimeError as e:
            raise UnsupportedModelError(
                f"Shapes do not fit at layer {index} ({', '.join(gnames)}) with input shape "
                f"{in_shape}: {str(e).splitlines()[0]}"
            ) from None
        for op in gops:
            for t in _op_tensors(op):
                if not bool(torch.isfinite(t).all()):
                    raise UnsupportedModelError(
                        f"Layer {index} ({', '.join(gnames)}) has NaN or infinite weights."
                    )
        if x[0].numel() == 0 or any(s == 0 for s in in_shape):
            raise UnsupportedModelError(
                f"Layer {index} ({', '.join(gnames)}) has 0 neurons (width 0, output shape "
                f"{tuple(x.shape[1:])}): a layer without neurons computes nothing and has no fraction to fail."
            )
        if act is not None and x.dim() > 2 and x.dim() != 4:
            raise UnsupportedModelError(f"Unexpected activation shape {tuple(x.shape)}.")
        layers.append(Layer(index, tuple(gops), act, in_shape, tuple(x.shape[1:]), ", ".join(gnames)))
    return Network(tuple(layers), Box.make(domain, input_shape), input_shape)  # type: ignore[arg-type]


def _op_tensors(op: Op) -> list[Tensor]:
    if isinstance(op, (Dense, Conv)):
        return [op.weight, op.bias]
    if isinstance(op, ChannelAffine):
        return [op.scale, op.shift]
    return []


def _reference_forward(module: nn.Module) -> Callable[[Tensor], Tensor]:
    ref = copy.deepcopy(module).to(torch.float64).eval()

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return ref(x).reshape(x.shape[0], -1)

    return run


def probe_inputs(net: Network, n: int = 16, seed: int = 0) -> Tensor:
    """Probe inputs: the domain's two extreme corners, its centre, and uniform samples."""
    g = torch.Generator().manual_seed(seed)
    d = net.domain
    return torch.cat([d.lo[None], d.hi[None], d.center[None], d.sample(n, g)], 0)


def check_against(net: Network, reference: Callable[[Tensor], Tensor], what: str) -> None:
    """Fail with :class:`ModelLoadError` unless ``net`` equals ``reference`` on probe inputs."""
    x = probe_inputs(net)
    with torch.no_grad():
        mine = net.forward(x)
    theirs = reference(x).to(torch.float64)
    if tuple(mine.shape) != tuple(theirs.shape):
        raise ModelLoadError(
            f"The extracted network outputs shape {tuple(mine.shape[1:])}, but {what} outputs "
            f"{tuple(theirs.shape[1:])}."
        )
    scale = max(1.0, float(theirs.abs().max()))
    err = float((mine - theirs).abs().max())
    if not math.isfinite(err) or err > 1e-4 * scale:
        raise ModelLoadError(
            f"The extracted network differs from {what} on probe inputs (max difference {err:.3g});"
            " refusing to analyse a network that does not compute what the model computes."
        )
