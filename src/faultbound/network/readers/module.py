"""Reading an ``nn.Module`` (in memory, or pickled in a ``.pt`` / ``.pth`` file): what comes
before and around its one reader, :func:`~faultbound.network.readers.graph_export.graph_from_module`
(``torch.export``, then the graph reader of the program).

* :func:`module_input_shape`: the shape of one input when the caller gives none: that of the first
  ``Linear`` (its ``in_features``), when the first layer of the module (in its registration order,
  activations, dropout and identities skipped) is one; else the shape of an array domain;
* :func:`module_leaves`: the submodules whose exact type is a registered activation
  (:data:`faultbound.network.activations.REGISTRY`, each activation's ``torch_modules``), read as
  that activation whatever operators they export to (a subclass with other behaviour is never
  read as its parent: it is read from its operators);
* :func:`train_mode_modules` / :func:`warn_train_mode`: a module in training mode is read with
  eval-mode semantics and left as it is;
* :func:`read_module`: a ``.pt`` / ``.pth`` file, with ``torch.load(weights_only=True)`` unless the
  caller trusts the file, because unpickling a whole module runs arbitrary code.

This module imports no other reader and not :mod:`faultbound.network.core`.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from faultbound.errors import ModelLoadError, UnsupportedModelError
from faultbound.network.activations import REGISTRY, Activation
from faultbound.network.readers._common import first_line

__all__ = [
    "first_layer",
    "module_input_shape",
    "module_leaves",
    "read_module",
    "train_mode_modules",
    "warn_train_mode",
]

#: Leaf modules that compute nothing of their own shape (skipped when looking for the first layer).
_PASS_THROUGH = (nn.Dropout, nn.Identity)


def first_layer(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The first leaf submodule of ``module`` in registration order that is not an activation,
    a dropout or an identity (``None`` when there is none)."""
    for name, m in module.named_modules():
        if next(m.children(), None) is not None or type(m) in REGISTRY or isinstance(m, _PASS_THROUGH):
            continue
        if name or not isinstance(module, nn.Sequential):
            return name or type(m).__name__, m
    return None


def module_input_shape(
    module: nn.Module, input_shape: Sequence[int] | None, domain: Any = None
) -> tuple[int, ...]:
    """The shape of one input of ``module`` (without the batch), see the module docstring.

    Raises:
        UnsupportedModelError: a non-positive ``input_shape``, or no way to tell the shape.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedModelError(f"Expected a torch.nn.Module, but got {type(module).__name__}.")
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if not shape or any(s <= 0 for s in shape):
            raise UnsupportedModelError(f"Expected a positive `input_shape`, but got {shape}.")
        return shape
    first = first_layer(module)
    if first is not None and isinstance(first[1], nn.Linear):
        return (int(first[1].in_features),)
    if domain is not None and not isinstance(domain, str):
        try:
            lo = np.asarray(domain[0], dtype=np.float64)
        except (TypeError, ValueError, IndexError, KeyError):
            lo = np.zeros(())
        if lo.ndim > 1:
            return tuple(int(s) for s in lo.shape)
    what = "no layer" if first is None else f"{first[0]} ({type(first[1]).__name__})"
    raise UnsupportedModelError(
        f"Expected `input_shape` (the shape of one input, for example input_shape=(1, 28, 28)) for "
        f"{type(module).__name__}, whose first layer is {what}: only a model whose first layer is a Linear "
        "(such as an nn.Sequential starting with nn.Linear) is read without it."
    )


def module_leaves(module: nn.Module) -> dict[str, Activation]:
    """The registered activation of each submodule (by its dotted name) whose exact type is in
    :data:`~faultbound.network.activations.REGISTRY` and whose settings it represents."""
    out: dict[str, Activation] = {}
    for name, m in module.named_modules():
        rule = REGISTRY.get(type(m))
        if rule is None or not name:
            continue
        try:
            out[name] = rule(m)
        except UnsupportedModelError:
            continue  # read from its operators, which name what is refused
    return out


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
    first = first_layer(module)
    return first is None or isinstance(first[1], torch.nn.Linear)


def _is_state_dict(obj: object) -> bool:
    if not isinstance(obj, dict) or not obj:
        return False
    if all(isinstance(v, Tensor) for v in obj.values()):
        return True
    return any(k in obj for k in ("state_dict", "model_state_dict"))
