"""The canonical Network, its layers and activations, and the loaders."""

from faultbound.network.activations import REGISTRY, Activation
from faultbound.network.core import Box, Layer, Network

__all__ = ["Activation", "Box", "Layer", "Network", "REGISTRY"]
