"""Measurement: batched fault injection, campaigns and worst-case search (placeholder)."""

from faultbound.measure.engine import (
    BitFlip,
    CleanPass,
    FaultSet,
    Injection,
    clean_pass,
    faulty_forward,
    inject,
    sample_faults,
)

__all__ = ["BitFlip", "CleanPass", "FaultSet", "Injection", "clean_pass", "faulty_forward", "inject", "sample_faults"]
