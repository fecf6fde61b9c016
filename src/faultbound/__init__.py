"""faultbound: certified and measured fault tolerance of neural networks.

Implements *When Neurons Fail* (El Mhamdi & Guerraoui, IPDPS 2017): the Forward Error
Propagation of crashed, Byzantine and imprecise neurons and synapses, tolerance search, and the
paper's applications, next to fault-injection measurements.
"""

from faultbound.bounds import (
    BoundResult,
    EpsPrime,
    ToleranceResult,
    bound,
    certified_accuracy,
    certify_inputs,
    compare_methods,
    corollary2_waits,
    estimate_eps_prime,
    estimate_eps_prime_fn,
    fep,
    fep_as_printed,
    theorem1_max_crashes,
    tolerate,
    tolerates,
)
from faultbound.errors import (
    FaultboundError,
    InvalidArgumentError,
    ModelLoadError,
    UnboundedError,
    UnsupportedModelError,
)
from faultbound.faults import (
    Byzantine,
    ByzantineDeviation,
    Crash,
    Precision,
    StuckAt,
    SynapseByzantine,
    SynapseCrash,
)
from faultbound.network import Network
from faultbound.network.readers.files import load

__version__ = "0.1.0"

__all__ = [
    "BoundResult",
    "Byzantine",
    "ByzantineDeviation",
    "Crash",
    "EpsPrime",
    "FaultboundError",
    "InvalidArgumentError",
    "ModelLoadError",
    "Network",
    "Precision",
    "StuckAt",
    "SynapseByzantine",
    "SynapseCrash",
    "ToleranceResult",
    "UnboundedError",
    "UnsupportedModelError",
    "bound",
    "certified_accuracy",
    "certify_inputs",
    "compare_methods",
    "corollary2_waits",
    "estimate_eps_prime",
    "estimate_eps_prime_fn",
    "fep",
    "fep_as_printed",
    "load",
    "theorem1_max_crashes",
    "tolerate",
    "tolerates",
]
