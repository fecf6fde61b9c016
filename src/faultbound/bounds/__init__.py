"""Certified bounds: the paper's formulas, tighter propagation, and tolerance search."""

from faultbound.bounds.api import METHODS, BoundResult, bound
from faultbound.bounds.paper import corollary2_waits, fep, theorem1_max_crashes
from faultbound.bounds.tolerance import (
    EpsPrime,
    ToleranceResult,
    estimate_eps_prime,
    estimate_eps_prime_fn,
    tolerate,
    tolerates,
)

__all__ = [
    "METHODS",
    "BoundResult",
    "EpsPrime",
    "ToleranceResult",
    "bound",
    "corollary2_waits",
    "estimate_eps_prime",
    "estimate_eps_prime_fn",
    "fep",
    "theorem1_max_crashes",
    "tolerate",
    "tolerates",
]
