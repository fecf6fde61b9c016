"""Reading a ``torch.nn.Sequential`` (in memory, or pickled in a ``.pt`` / ``.pth`` file).

Nested ``nn.Sequential`` containers are flattened, and each leaf module is looked up by its exact
type in :data:`RULES`, then among the registered activations (a subclass with other behaviour is
never read as its parent). Supported modules (the keys of :data:`RULES`, and the activations):

* affine: ``Linear``, ``Conv2d`` (groups 1, dilation 1, ``padding_mode='zeros'``, numeric
  padding), ``AvgPool2d`` (``ceil_mode=False``, ``count_include_pad=True``, no
  ``divisor_override``), ``Flatten`` (``start_dim=1``, ``end_dim=-1``), ``BatchNorm1d`` /
  ``BatchNorm2d`` with running statistics (eval mode; folded by
  :func:`~faultbound.network.readers._common.batch_norm`);
* the identity: ``Identity``, ``Dropout``;
* activations: every module type in :data:`faultbound.network.activations.REGISTRY` (each
  activation class's ``torch_modules``, built by its ``from_module``), read when the module is
  looked up, so an activation registered later is read too. Built in: ``Sigmoid``,
  ``TunedSigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU`` (``negative_slope >= 0``), ``Hardtanh``,
  ``Softplus``, ``ELU``, ``GELU`` (``approximate='none'``), ``SiLU``.

Refused: a model that is not an ``nn.Sequential``; any other module (``ReLU6``, ``MaxPool2d``,
``Softmax``, residual blocks, ...); the settings excluded above. Every refused layer is named in
one :class:`~faultbound.errors.UnsupportedModelError`.

A ``.pt`` / ``.pth`` file is read by :func:`read_module`: with ``torch.load(weights_only=True)``
unless the caller trusts the file, because unpickling a whole module runs arbitrary code.

This module does not import :mod:`faultbound.network.core` (whose ``Network.from_torch`` uses
:func:`module_chain` and :func:`module_reference`), so there is no import cycle.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import REGISTRY, Activation
from faultbound.network.ops import AvgPool, Conv, Dense, Flatten, Op
from faultbound.network.readers._common import Item, batch_norm, first_line, fold_batch_norms, module_dtype

__all__ = [
    "RULES",
    "flatten_modules",
    "module_chain",
    "module_reference",
    "read_module",
    "train_mode_modules",
    "warn_train_mode",
]

#: A rule: the module -> its op, its activation, or ``None`` for the identity; raises
#: :class:`UnsupportedModelError` for settings it cannot represent.
Rule = Callable[[nn.Module], Op | Activation | None]


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
    if m.affine:
        return batch_norm(m.running_mean, m.running_var, m.eps, m.weight, m.bias)
    return batch_norm(m.running_mean, m.running_var, m.eps)


def _identity(m: nn.Module) -> None:
    return None


#: Module type (exact) -> rule, for the affine and identity modules. Adding a layer type is one
#: entry here; an activation is a class registered in :mod:`faultbound.network.activations`, whose
#: ``torch_modules`` are found through :data:`~faultbound.network.activations.REGISTRY`.
RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: _linear,
    nn.Conv2d: _conv,
    nn.AvgPool2d: _avgpool,
    nn.Flatten: _flatten,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.Identity: _identity,
    nn.Dropout: _identity,
}


def _rule(t: type[nn.Module]) -> Rule | None:
    """The rule of module type ``t``: :data:`RULES`, then the registered activations."""
    return RULES.get(t) or REGISTRY.get(t)


def _supported_text() -> str:
    acts = ", ".join(t.__name__ for t in REGISTRY)
    return (
        "Supported: Linear, Conv2d, Flatten, AvgPool2d, BatchNorm1d/2d, Dropout, Identity and the "
        f"activations {acts}."
    )


def flatten_modules(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf modules of nested ``nn.Sequential`` containers, with their dotted names."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out.extend(flatten_modules(child, f"{prefix}{name}."))
        return out
    return [(prefix.rstrip(".") or type(module).__name__, module)]


def module_chain(
    module: nn.Module,
    input_shape: Sequence[int] | None = None,
    domain: tuple[object, object] | None = None,
) -> tuple[list[Item], tuple[int, ...]]:
    """The named ops and activations of ``module`` (batch norms folded) and its input shape.

    ``Network.from_torch`` groups them into layers with ``Network.from_chain``.

    Raises:
        UnsupportedModelError: not an ``nn.Sequential``, or naming every unsupported layer at once.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedModelError(f"Expected a torch.nn.Module, but got {type(module).__name__}.")
    leaves = flatten_modules(module)
    if not isinstance(module, nn.Sequential):
        raise UnsupportedModelError(
            f"Expected an nn.Sequential (nested Sequentials are flattened), but got "
            f"{type(module).__name__}; wrap its layers in nn.Sequential."
        )
    unsupported: list[str] = []
    items: list[Item] = []
    for name, m in leaves:
        rule = _rule(type(m))
        if rule is None:
            unsupported.append(f"{name} ({type(m).__name__})")
            continue
        try:
            made = rule(m)
        except UnsupportedModelError as e:
            unsupported.append(f"{name} ({type(m).__name__}: {e})")
            continue
        if made is not None:
            items.append((name, made))
    if unsupported:
        raise UnsupportedModelError(
            f"Unsupported layers ({len(unsupported)}): {'; '.join(unsupported)}. {_supported_text()}"
        )
    return fold_batch_norms(items), _infer_input_shape(items, input_shape, domain)


def _infer_input_shape(
    items: list[Item],
    input_shape: Sequence[int] | None,
    domain: tuple[object, object] | None,
) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise UnsupportedModelError(f"Expected a positive `input_shape`, but got {shape}.")
        return shape
    for name, it in items:
        if not isinstance(it, Op):
            continue
        implied = it.implied_input_shape
        if implied is not None:
            return implied
        if domain is not None and not isinstance(domain, str):
            lo = torch.as_tensor(domain[0]) if not isinstance(domain[0], (int, float)) else None
            if lo is not None and lo.dim() > 1:
                return tuple(lo.shape)
        raise UnsupportedModelError(
            f"Expected `input_shape` for a model whose first layer is {name} "
            "(for example input_shape=(1, 28, 28))."
        )
    raise UnsupportedModelError("Expected at least one Linear or Conv2d layer, but found none.")


def module_reference(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The module's own forward pass, on an eval-mode copy in the module's own format
    (:func:`~faultbound.network.readers._common.module_dtype`), as float64 ``(batch, outputs)``."""
    dtype = module_dtype(module)
    ref = copy.deepcopy(module).eval()

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return ref(x.to(dtype)).reshape(x.shape[0], -1).to(torch.float64)

    return run


def train_mode_modules(module: nn.Module) -> list[str]:
    """The submodules of ``module`` (``""`` for itself) in training mode whose forward pass torch
    changes with the mode: dropout of any kind with ``p > 0``, batch and instance norms that keep running
    statistics (they use the batch's statistics in training mode), and ``MultiheadAttention``
    with ``dropout > 0``. Other modules in training mode (a fresh ``Linear``) compute the same
    function in both modes; a custom module that branches on ``self.training`` is not detected."""
    found = []
    for name, m in module.named_modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            found.append(name)
        elif isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            found.append(name)
        elif isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            found.append(name)
    return found


def warn_train_mode(module: nn.Module, stacklevel: int = 2) -> None:
    """Warn (``UserWarning``) when ``module`` is in training mode in a way that changes its
    function (:func:`train_mode_modules`): faultbound analyses every module with eval-mode
    semantics (dropout off, batch norms folded from their running statistics), and leaves the
    module's own mode untouched. ``stacklevel`` is that of :func:`warnings.warn`, seen from the caller."""
    names = train_mode_modules(module)
    if not names:
        return
    shown = ", ".join(n or type(module).__name__ for n in names[:4])
    shown += f", ... ({len(names)} in all)" if len(names) > 4 else ""
    warnings.warn(
        f"{type(module).__name__} is in training mode ({shown}); faultbound analyses it with eval-mode "
        "semantics (dropout off, batch norms with their running statistics) and leaves the module in "
        "training mode. Call module.eval() first to analyse the same function without this warning.",
        UserWarning,
        stacklevel=stacklevel + 1,
    )


# ------------------------------------------------------------------------------------ pickles
def read_module(
    path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None = None
) -> nn.Module:
    """The ``nn.Module`` pickled in ``path`` (a ``torch.save`` file), for ``Network.from_torch``.

    Raises:
        ModelLoadError: the file is unreadable, holds only weights (a state dict) or something
            other than a module, holds pickled objects and ``trust_pickle`` is false, or holds a
            module whose input shape is unknown (first layer not ``Linear``, and neither
            ``input_shape`` nor an array ``domain``).
    """
    if trust_pickle:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelLoadError(
                f"Cannot read torch.save file {str(path)!r}: {type(e).__name__}: {first_line(e)}"
            ) from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only load failed" in str(e).lower() and _holds_pickle(path):
                raise ModelLoadError(
                    f"{str(path)!r} holds pickled Python objects (such as a whole nn.Module), and "
                    "unpickling runs arbitrary code; pass trust_pickle=True (CLI: --trust-pickle) "
                    "only if you trust the file, or save the model with torch.export.save as .pt2."
                ) from None
            raise ModelLoadError(
                f"{str(path)!r} is not a readable torch file (torch.save output): it holds neither "
                "tensors nor a well-formed pickle."
            ) from None
        except Exception as e:
            raise ModelLoadError(
                f"{str(path)!r} is not a readable torch file: {type(e).__name__}: {first_line(e)}"
            ) from None
    if isinstance(obj, torch.nn.Module):
        if input_shape is None and not _has_shape(domain) and not _starts_with_linear(obj):
            raise ModelLoadError(
                f"The module in {str(path)!r} does not start with a Linear layer, so its input shape is "
                "unknown: pass input_shape=(C, H, W) (CLI: --input-shape C,H,W), or save the model with "
                "torch.export.save (.pt2) or as ONNX, which record it."
            )
        return obj
    if _is_state_dict(obj):
        raise ModelLoadError(
            f"{str(path)!r} holds only weights (a state dict), not an architecture: build the module in "
            "Python and call load_state_dict, then either Network.from_torch(module, input_shape=...) or, for "
            "the CLI, torch.export.save(torch.export.export(module, (example,)), 'model.pt2')."
        )
    raise ModelLoadError(f"Expected {str(path)!r} to hold an nn.Module, but it holds a {type(obj).__name__}.")


def _holds_pickle(path: Path) -> bool:
    """True when ``path`` holds a complete pickle stream (torch's zip ``data.pkl`` or a legacy file).

    Only parsed with :func:`pickletools.genops`, which reads opcodes and runs nothing; random bytes
    almost never parse to a ``STOP``. This tells "a pickle of Python objects that the weights-only
    reader refused" apart from "not a torch file at all".
    """
    import pickletools
    import zipfile

    try:
        data = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                if not names:
                    return False
                data = z.read(names[0])
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return True
    except Exception:
        return False


def _has_shape(domain: Any) -> bool:
    """True when ``domain`` is ``(lo, hi)`` with an array bound (which then carries the input shape)."""
    return domain is not None and any(np.ndim(b) > 0 for b in domain)


def _starts_with_linear(module: torch.nn.Module) -> bool:
    for _, m in flatten_modules(module):
        if isinstance(m, torch.nn.Linear):
            return True
        if isinstance(
            m, (torch.nn.Conv2d, torch.nn.Flatten, torch.nn.AvgPool2d, torch.nn.modules.batchnorm._BatchNorm)
        ):
            return False
    return True  # let the extraction name what is wrong


def _is_state_dict(obj: object) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    if all(isinstance(v, Tensor) for v in obj.values()):
        return True
    return any(k in obj for k in ("state_dict", "model_state_dict"))
