"""The library's single exception family.

Every error a user can cause (a bad file, an unsupported layer, failures of the wrong length, ...)
is a :class:`FaultboundError`. The CLI turns each into one line on stderr and exit status 2.
"""

from __future__ import annotations

__all__ = [
    "FaultboundError",
    "UnsupportedModelError",
    "ModelLoadError",
    "InvalidArgumentError",
    "UnboundedError",
]


class FaultboundError(Exception):
    """Base class of every error raised by faultbound on bad input."""


class UnsupportedModelError(FaultboundError):
    """The model contains layers or structures that faultbound cannot analyse."""


class ModelLoadError(FaultboundError):
    """A model file is missing, corrupt, or its extracted Network disagrees with the source."""


class InvalidArgumentError(FaultboundError, ValueError):
    """An argument (failures, epsilon, domain, capacity, ...) is out of range or malformed."""


class UnboundedError(FaultboundError):
    """A bound needs a bounded quantity (a domain, a capacity) that was not given."""
