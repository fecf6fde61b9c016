"""The paper's applications (Section 5): precision planning, boosting, robust training.

* :mod:`faultbound.apps.quantize` -- fixed-point formats and the quantized forward pass;
* :mod:`faultbound.apps.precision` -- Theorem 5: the cheapest per-layer bit widths within a budget;
* :mod:`faultbound.apps.boosting` -- Corollary 2: waiting for only N - f signals, simulated;
* :mod:`faultbound.apps.faulty` -- a small crash-mask forward pass used for validation;
* :mod:`faultbound.apps.training` -- Section 5.3: training with a Fep regulariser and weight caps.
"""

from faultbound.apps.boosting import BoostResult, LatencyModel, simulate_boost
from faultbound.apps.precision import PrecisionPlan, measure_plan, plan_precision
from faultbound.apps.quantize import FixedPoint, quantized_forward

__all__ = [
    "BoostResult",
    "FixedPoint",
    "LatencyModel",
    "PrecisionPlan",
    "measure_plan",
    "plan_precision",
    "quantized_forward",
    "simulate_boost",
]
