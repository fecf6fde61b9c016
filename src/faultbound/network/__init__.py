"""The canonical Network, its layers and activations, and the loaders."""

from faultbound.network.activations import REGISTRY, Activation
from faultbound.network.core import Box, Layer, Network
from faultbound.network.graph import GraphNetwork

__all__ = ["Activation", "Box", "GraphNetwork", "Layer", "Network", "REGISTRY"]
