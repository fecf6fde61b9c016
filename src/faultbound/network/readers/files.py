"""Loading a model file into a Network: the reader is picked by the file extension.

* ``.onnx`` -- :func:`faultbound.network.readers.onnx.load_onnx` (needs the ``onnx`` package);
* ``.pt2`` -- a ``torch.export`` program, :func:`faultbound.network.readers.export.load_exported`;
  no user code is unpickled;
* ``.pt`` / ``.pth`` -- :func:`faultbound.network.readers.module.read_module`:
  ``torch.load(weights_only=True)``; a full pickled ``nn.Module`` is only unpickled when
  ``trust_pickle=True``, because unpickling runs arbitrary code; then ``Network.from_torch``.

Refused with one :class:`~faultbound.errors.ModelLoadError` line: any other extension, a missing
path or a directory, and anything a reader raises that is not ours (a malformed file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from faultbound.errors import FaultboundError, ModelLoadError
from faultbound.network.core import Network
from faultbound.network.readers._common import first_line
from faultbound.network.readers.export import load_exported
from faultbound.network.readers.module import read_module
from faultbound.network.readers.onnx import load_onnx

__all__ = ["EXTENSIONS", "load"]


def _load_pickled(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> Network:
    module = read_module(path, domain, trust_pickle, input_shape)
    return Network.from_torch(module, domain=domain, input_shape=input_shape)


def _load_onnx(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> Network:
    return load_onnx(path, domain)


def _load_pt2(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> Network:
    return load_exported(path, domain)


#: File extension -> (what the file holds, its reader).
READERS: dict[str, tuple[str, Callable[[Path, Any, bool, tuple[int, ...] | None], Network]]] = {
    ".onnx": ("ONNX model", _load_onnx),
    ".pt2": ("torch.export program", _load_pt2),
    ".pt": ("torch.save file", _load_pickled),
    ".pth": ("torch.save file", _load_pickled),
}

#: File extensions :func:`load` understands, and what each holds.
EXTENSIONS: dict[str, str] = {ext: what for ext, (what, _) in READERS.items()}


def load(
    path: str | Path, domain: Any = None, trust_pickle: bool = False, input_shape: tuple[int, ...] | None = None
) -> Network:
    """Load a model file as a :class:`~faultbound.network.core.Network`, checked on probe inputs.

    Args:
        path: a ``.onnx`` file, a ``.pt2`` file written by ``torch.export.save``, or a ``.pt`` /
            ``.pth`` file holding a whole ``nn.Sequential`` (only with ``trust_pickle=True``).
        domain: the input domain ``(lo, hi)`` (scalars or arrays of the input shape); default
            :math:`[0, 1]^d` as in the paper.
        trust_pickle: allow unpickling a full module from a ``.pt`` / ``.pth`` file. Unpickling
            runs arbitrary code; only pass ``True`` for files from a trusted source.
        input_shape: the shape of one input (without the batch), for a pickled module whose first
            layer is not ``Linear`` (a CNN); ``.onnx`` and ``.pt2`` files record it themselves.

    Returns:
        The extracted Network; its forward pass equals the model's on probe inputs.

    Raises:
        ModelLoadError: the file is missing, unreadable, holds only weights, needs
            ``trust_pickle=True``, or its Network disagrees with the model.
        UnsupportedModelError: naming every unsupported node or layer at once.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> import faultbound as fb
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     ep = torch.export.export(m, (torch.zeros(1, 2),))
        ...     torch.export.save(ep, f"{d}/m.pt2")
        ...     fb.load(f"{d}/m.pt2").widths
        [3]
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in READERS:
        raise ModelLoadError(f"Expected a model file ending in {', '.join(EXTENSIONS)}, but got {str(p)!r}.")
    if not p.exists():
        raise ModelLoadError(f"Model file {str(p)!r} does not exist.")
    if not p.is_file():
        raise ModelLoadError(f"Expected {str(p)!r} to be a model file, but it is not a regular file.")
    what, reader = READERS[ext]
    try:
        return reader(p, domain, trust_pickle, input_shape)
    except FaultboundError:
        raise
    except Exception as e:  # anything onnx/torch raise on a malformed model, as one sentence
        raise ModelLoadError(f"Cannot load {what} {str(p)!r}: {type(e).__name__}: {first_line(e)}") from None
