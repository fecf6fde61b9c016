"""Certified bounds: the paper's formulas, tighter propagation, and tolerance search."""

from faultbound.bounds.api import METHODS, BoundResult, bound
from faultbound.bounds.certify import CertifiedAccuracy, InputCertificates, certified_accuracy, certify
from faultbound.bounds.paper import corollary2_waits, fep, fep_as_printed, theorem1_max_crashes
from faultbound.bounds.tolerance import (
    EpsPrime,
    MethodComparison,
    ToleranceResult,
    compare_methods,
    estimate_eps_prime,
    estimate_eps_prime_fn,
    tolerate,
    tolerates,
)

__all__ = [
    "METHODS",
    "BoundResult",
    "CertifiedAccuracy",
    "InputCertificates",
    "MethodComparison",
    "certified_accuracy",
    "certify",
    "compare_methods",
    "EpsPrime",
    "ToleranceResult",
    "bound",
    "corollary2_waits",
    "estimate_eps_prime",
    "estimate_eps_prime_fn",
    "fep",
    "fep_as_printed",
    "theorem1_max_crashes",
    "tolerate",
    "tolerates",
]
