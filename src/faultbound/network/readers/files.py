"""Loading a model file into a Network: the reader is picked by the file extension.

* ``.onnx`` -- :func:`faultbound.network.readers.onnx.load_onnx` (needs the ``onnx`` package), and
  :func:`faultbound.network.readers.graph_onnx.load_graph_onnx` when the model is not a chain;
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

import torch

from faultbound.errors import FaultboundError, InvalidArgumentError, ModelLoadError, UnsupportedModelError
from faultbound.network.core import Network, network_of_module
from faultbound.network.graph import GraphNetwork
from faultbound.network.readers._common import first_line
from faultbound.network.readers.export import load_exported, read_exported
from faultbound.network.readers.graph_export import graph_from_exported, graph_from_module
from faultbound.network.readers.graph_onnx import ReferenceRunError, load_graph_onnx
from faultbound.network.readers.module import read_module, warn_train_mode
from faultbound.network.readers.onnx import load_onnx

__all__ = ["EXTENSIONS", "from_module", "load"]


AnyNetwork = Network | GraphNetwork


def _load_pickled(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
    module = read_module(path, domain, trust_pickle, input_shape)
    module.eval()  # our own unpickled copy: a file is read with eval-mode semantics, without a warning
    return from_module(module, domain=domain, input_shape=input_shape)


def _load_onnx(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
    try:
        return load_onnx(path, domain)
    except UnsupportedModelError as e:
        chain_error = e  # not a chain (or an operator only the graph reader knows): read it as a graph
    try:
        return load_graph_onnx(path, domain)
    except ReferenceRunError as e:  # no shapes to read a graph with: the chain reader's findings stand
        raise UnsupportedModelError(f"{first_line(chain_error)} Read as a graph: {first_line(e)}") from None


def _load_pt2(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
    try:
        return load_exported(path, domain)
    except UnsupportedModelError:
        pass  # not a chain (or an operator only the graph reader knows): read it as a graph
    return graph_from_exported(read_exported(path), domain)


def from_module(
    module: torch.nn.Module,
    domain: Any = None,
    input_shape: tuple[int, ...] | None = None,
    sites: list[str] | None = None,
    stacklevel: int = 2,
) -> AnyNetwork:
    """The Network of an ``nn.Module``: the layered :class:`Network` when it is a chain the paper's
    form covers (``Network.from_torch``), else the :class:`GraphNetwork` of its ``torch.export``
    program (residual blocks, max pooling, normalisation, attention; needs ``input_shape``).

    The module is read with eval-mode semantics and not changed: one in training mode stays so,
    with a ``UserWarning`` when that mode changes its function
    (:func:`~faultbound.network.readers.module.warn_train_mode`)."""
    warn_train_mode(module, stacklevel=stacklevel)
    if not sites:
        try:
            return network_of_module(module, domain=domain, input_shape=input_shape)
        except UnsupportedModelError as chain_error:
            if input_shape is None:
                raise UnsupportedModelError(
                    f"{first_line(chain_error)} To read it as a graph, give `input_shape` (the shape of one input)."
                ) from None
    if input_shape is None:
        raise InvalidArgumentError("Expected `input_shape` (the shape of one input) to read a module as a graph.")
    return graph_from_module(module, tuple(input_shape), domain, sites)


#: File extension -> (what the file holds, its reader).
READERS: dict[str, tuple[str, Callable[[Path, Any, bool, tuple[int, ...] | None], AnyNetwork]]] = {
    ".onnx": ("ONNX model", _load_onnx),
    ".pt2": ("torch.export program", _load_pt2),
    ".pt": ("torch.save file", _load_pickled),
    ".pth": ("torch.save file", _load_pickled),
}

#: File extensions :func:`load` understands, and what each holds.
EXTENSIONS: dict[str, str] = {ext: what for ext, (what, _) in READERS.items()}


def load(
    path: str | Path | torch.nn.Module,
    domain: Any = None,
    trust_pickle: bool = False,
    input_shape: tuple[int, ...] | None = None,
    sites: list[str] | None = None,
) -> AnyNetwork:
    """Load a model file (or an ``nn.Module``) as a :class:`~faultbound.network.core.Network` when it
    is a chain, else as a :class:`~faultbound.network.graph.GraphNetwork`, checked on probe inputs.

    Args:
        path: a ``.onnx`` file, a ``.pt2`` file written by ``torch.export.save``, or a ``.pt`` /
            ``.pth`` file holding a whole ``nn.Sequential`` (only with ``trust_pickle=True``).
        domain: the input domain ``(lo, hi)`` (scalars or arrays of the input shape); default
            :math:`[0, 1]^d` as in the paper.
        trust_pickle: allow unpickling a full module from a ``.pt`` / ``.pth`` file. Unpickling
            runs arbitrary code; only pass ``True`` for files from a trusted source.
        input_shape: the shape of one input (without the batch), for a module (or pickled module)
            that is not a chain of ``Linear`` layers; ``.onnx`` and ``.pt2`` files record it themselves.
        sites: extra fault sites (graph node names) besides the activations; the model is then read
            as a GraphNetwork.

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
    if isinstance(path, torch.nn.Module):
        return from_module(path, domain=domain, input_shape=input_shape, sites=sites, stacklevel=3)
    net = _load_file(Path(path), domain, trust_pickle, input_shape)
    if sites:
        g = GraphNetwork.from_network(net) if isinstance(net, Network) else net
        return g.with_sites(sites)
    return net


def _load_file(p: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
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
