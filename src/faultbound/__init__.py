"""faultbound: certified and measured fault tolerance of neural networks.

Implements *When Neurons Fail* (El Mhamdi & Guerraoui, IPDPS 2017): the Forward Error
Propagation of crashed, Byzantine and imprecise neurons and synapses, tolerance search, and the
paper's applications, next to fault-injection measurements.

The top level is small: a :class:`Network` (built with :meth:`Network.from_torch` or :func:`load`),
the fault models, and four verbs, :func:`bound`, :func:`tolerate`, :func:`certify` and
:func:`fep_as_printed`. Everything else lives in the subpackages:

- :mod:`faultbound.bounds` -- the bound methods and results (``BoundResult``, ``compare_methods``,
  ``corollary2_waits``, ``estimate_eps_prime``, ``certified_accuracy``, ...);
- :mod:`faultbound.measure` -- fault injection, campaigns and worst-case search;
- :mod:`faultbound.apps` -- the paper's applications (precision, boosting, training);
- :mod:`faultbound.report` -- HTML/JSON reports;
- :mod:`faultbound.faults`, :mod:`faultbound.failures`, :mod:`faultbound.errors`.
"""

from faultbound.bounds import bound, certify, fep_as_printed, tolerate
from faultbound.bounds import fep as fep  # the deprecated alias of fep_as_printed (warns when called)
from faultbound.errors import FaultboundError
from faultbound.faults import (
    BitFlip,
    Byzantine,
    ByzantineDeviation,
    Crash,
    Precision,
    StuckAt,
    SynapseByzantine,
    SynapseCrash,
)
from faultbound.network import GraphNetwork, Network
from faultbound.network.readers.files import load

__version__ = "0.1.0"

__all__ = [
    "BitFlip",
    "Byzantine",
    "ByzantineDeviation",
    "Crash",
    "FaultboundError",
    "GraphNetwork",
    "Network",
    "Precision",
    "StuckAt",
    "SynapseByzantine",
    "SynapseCrash",
    "bound",
    "certify",
    "fep_as_printed",
    "load",
    "tolerate",
]
