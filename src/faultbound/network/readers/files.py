"""Loading a model file into a network: one reader per format, picked by the file extension, each
building the DAG (:class:`~faultbound.network.graph.GraphNetwork`); the paper's layered
:class:`~faultbound.network.core.Network` is then the DAG's layered view
(:func:`~faultbound.network.passes.layered_view`) when it has one.

* ``.onnx`` -- :func:`faultbound.network.readers.graph_onnx.load_graph_onnx` (needs the ``onnx``
  package);
* ``.pt2`` -- a ``torch.export`` program, :func:`faultbound.network.readers.graph_export.read_exported`
  (no user code is unpickled) then :func:`~faultbound.network.readers.graph_export.graph_from_exported`;
* ``.pt`` / ``.pth`` -- :func:`faultbound.network.readers.module.read_module`:
  ``torch.load(weights_only=True)``; a full pickled ``nn.Module`` is only unpickled when
  ``trust_pickle=True``, because unpickling runs arbitrary code; then :func:`from_module`;
* an ``nn.Module`` -- :func:`~faultbound.network.readers.graph_export.graph_from_module`
  (``torch.export``).

Refused with one :class:`~faultbound.errors.ModelLoadError` line: any other extension, a missing
path or a directory, and anything a reader raises that is not ours (a malformed file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from faultbound.errors import FaultboundError, ModelLoadError, UnsupportedModelError
from faultbound.network.core import Network, set_module_reader
from faultbound.network.graph import GraphNetwork
from faultbound.network.passes import layered_or_reason, layered_view
from faultbound.network.readers._common import first_line
from faultbound.network.readers.graph_export import graph_from_exported, graph_from_module, read_exported
from faultbound.network.readers.graph_onnx import load_graph_onnx
from faultbound.network.readers.module import read_module, warn_train_mode

__all__ = ["EXTENSIONS", "from_module", "load", "network_from_module"]


AnyNetwork = Network | GraphNetwork


def _view(graph: GraphNetwork) -> AnyNetwork:
    """The layered view of ``graph`` when it has one, else ``graph``."""
    return layered_view(graph) or graph


def _load_pickled(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
    module = read_module(path, domain, trust_pickle, input_shape)
    module.eval()  # our own unpickled copy: a file is read with eval-mode semantics, without a warning
    return from_module(module, domain=domain, input_shape=input_shape)


def _load_onnx(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
    return _view(load_graph_onnx(path, domain))


def _load_pt2(path: Path, domain: Any, trust_pickle: bool, input_shape: tuple[int, ...] | None) -> AnyNetwork:
    return _view(graph_from_exported(read_exported(path), domain))


def from_module(
    module: torch.nn.Module,
    domain: Any = None,
    input_shape: tuple[int, ...] | None = None,
    sites: list[str] | None = None,
    stacklevel: int = 2,
) -> AnyNetwork:
    """The network of an ``nn.Module``: the DAG of its ``torch.export`` program
    (:func:`~faultbound.network.readers.graph_export.graph_from_module`; ``input_shape`` may be left
    out when the first layer is a ``Linear``), as the layered :class:`Network` when it is layered
    and no ``sites`` are named.

    The module is read with eval-mode semantics and not changed: one in training mode stays so,
    with a ``UserWarning`` when that mode changes its function
    (:func:`~faultbound.network.readers.module.warn_train_mode`)."""
    warn_train_mode(module, stacklevel=stacklevel)
    graph = graph_from_module(module, input_shape, domain, sites)
    return graph if sites else _view(graph)


def network_from_module(
    module: torch.nn.Module,
    domain: Any = None,
    input_shape: tuple[int, ...] | None = None,
    check: bool = True,
) -> Network:
    """``Network.from_torch``: the layered network of a module whose DAG is layered (the module's
    training mode warned about by the caller).

    Raises:
        UnsupportedModelError: naming every unsupported operator at once, or saying why the DAG is
            not of the paper's layered form.
    """
    got = layered_or_reason(graph_from_module(module, input_shape, domain, check=check))
    if isinstance(got, str):
        raise UnsupportedModelError(f"{type(module).__name__} is not a layered network: {got}")
    return got


set_module_reader(network_from_module)


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
