"""Loading model files into a Network: ``.onnx``, ``.pt2`` (torch.export), trusted pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faultbound.errors import ModelLoadError
from faultbound.network.core import Network

__all__ = ["load"]


def load(path: str | Path, domain: Any = None, trust_pickle: bool = False) -> Network:
    """Load a model file. (Placeholder body replaced by the loaders module.)"""
    raise ModelLoadError(f"Cannot load {path}: loaders are not implemented yet.")
