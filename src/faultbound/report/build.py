"""The report's data: everything a report shows, computed before anything is drawn or said.

:func:`build_report` computes certificates with ``method="paper"`` and ``method="tight"``, the worst
case found by :func:`faultbound.measure.worst_case`, optionally the tolerance search and a random
fault-injection campaign, into a frozen :class:`ReportData`; :meth:`ReportData.to_dict` is the JSON
form (``faultbound report --json``). The sentences come from :mod:`faultbound.report.words`, the
page from :mod:`faultbound.report.render`.

For each fault model and failure distribution :math:`(f_1, \\dots, f_L)` the report shows

.. math::

    \\text{ratio} = \\frac{\\text{certificate}}{\\text{worst case found}} \\ge 1,

since the worst case found is a lower bound on :math:`\\sup_x \\|F_{neu}(x) - F_{fail}(x)\\|_\\infty`
and a sound certificate is an upper bound on it. A certificate below a measurement is a bug; it is
flagged as a ``"VIOLATION"`` in the data and shown in red, never as fine.

**Data outside the domain.** The certificates cover the network's domain only. Given data points
outside it are never compared with them: the worst-case search and the campaign use the points
inside, and the points outside are counted, measured with the campaign's random failure sets, and
reported as *outside the domain* (``ReportData.outside``), never as a violation.

Example:
    >>> import torch, faultbound as fb
    >>> from faultbound.report.build import ReportSpec, build_report
    >>> from faultbound.report.render import render_html
    >>> torch.manual_seed(0) and None
    >>> net = fb.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(),
    ...                                                 torch.nn.Linear(4, 1)))
    >>> data = build_report(net, ReportSpec(failures=((1,),)))
    >>> [row.status for row in data.rows]
    ['ok']
    >>> "<html" in render_html(data, figures=False)
    True
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts, max_counts
from faultbound.faults import Crash, Fault
from faultbound.network.core import Network
from faultbound.network.graph import GraphNetwork
from faultbound.progress import Progress, prefixed
from faultbound.report.words import (
    INFORMATIVE_RATIO,
    Level,
    describe_failures,
    informative,
    verdict,
    verdict_level,
)

if TYPE_CHECKING:
    from faultbound.bounds.api import Method

__all__ = [
    "DEFAULT_COUNTS",
    "OUTSIDE_TRIALS",
    "BoundRow",
    "CampaignSummary",
    "OutsideMeasurement",
    "OutsideSummary",
    "ReportData",
    "ReportSpec",
    "Status",
    "ToleranceEntry",
    "build_report",
    "default_failures",
]

Status = Literal["ok", "VIOLATION", "unbounded"]

#: The two certificates every row shows.
METHODS: tuple[Method, ...] = ("paper", "tight")
#: Failure counts tried per layer by default (capped below each layer's width).
DEFAULT_COUNTS = (1, 2, 4)
#: Trials of the random campaign at data points outside the domain when the report runs no campaign.
OUTSIDE_TRIALS = 64


# ----------------------------------------------------------------------------------------------
# Settings and data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportSpec:
    """What a report computes.

    Attributes:
        failures: failure distributions (one count per layer each); ``None`` for the defaults of
            :func:`default_failures`. Ignored for :class:`~faultbound.faults.Precision`.
        faults: the fault models (crash by default).
        eps, eps_prime: the tolerance section is computed when both are given (``eps_prime`` a
            number, or an :class:`~faultbound.bounds.tolerance.EpsPrime` estimated from data).
        trials: random failure sets of the campaign (0: no campaign).
        campaign_failures: the distribution the campaign samples from; ``None``: all ones.
        samples: inputs drawn uniformly from the domain for the campaign (when no inputs are given).
        seed: the seed of every random choice (worst-case search and campaign).
        title: the report's title (usually the model file name).
        command: the command line that produced it, recorded verbatim.
    """

    failures: tuple[tuple[int, ...], ...] | None = None
    faults: tuple[Fault, ...] = (Crash(),)
    eps: float | None = None
    eps_prime: Any = None
    trials: int = 0
    campaign_failures: tuple[int, ...] | None = None
    samples: int = 256
    seed: int = 0
    title: str = "model"
    command: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        ep = self.eps_prime
        return {
            "failures": None if self.failures is None else [list(f) for f in self.failures],
            "faults": [_fault_info(f) for f in self.faults],
            "eps": self.eps,
            "eps_prime": ep.to_dict() if hasattr(ep, "to_dict") else ep,
            "trials": self.trials,
            "campaign_failures": None if self.campaign_failures is None else list(self.campaign_failures),
            "samples": self.samples,
            "seed": self.seed,
            "title": self.title,
            "command": self.command,
        }


@dataclass(frozen=True)
class BoundRow:
    """One fault model and failure distribution: both certificates and the worst case found.

    Attributes:
        fault: JSON description of the fault model (``name``, parameters, ``label``).
        failures: :math:`(f_1, \\dots)` (empty for precision).
        description: the distribution in words ("1 crashed neuron in layer 1").
        paper, tight: :meth:`BoundResult.to_dict` of each certificate (``value`` None if unbounded).
        measured: the :func:`~faultbound.measure.worst_case` result's ``to_dict()``.
        ratio_paper, ratio_tight: certificate / worst case (None when either is 0 or unbounded).
        status: ``"ok"``, ``"unbounded"`` (Lemma 1), or ``"VIOLATION"`` (a certificate below the
            measurement: a bug).
        informative: the tight certificate is finite and informative (module docstring: 0, at most
            :data:`INFORMATIVE_RATIO` times the worst case found, or within the budget ε − ε').
    """

    fault: dict[str, Any]
    failures: tuple[int, ...]
    description: str
    paper: dict[str, Any]
    tight: dict[str, Any]
    measured: dict[str, Any]
    ratio_paper: float | None
    ratio_tight: float | None
    status: Status
    informative: bool = False

    @property
    def worst(self) -> float:
        """The worst case found."""
        return float(self.measured["max_error"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        return {
            "fault": self.fault,
            "failures": list(self.failures),
            "description": self.description,
            "paper": self.paper,
            "tight": self.tight,
            "measured": self.measured,
            "ratio_paper": self.ratio_paper,
            "ratio_tight": self.ratio_tight,
            "status": self.status,
            "informative": self.informative,
        }


@dataclass(frozen=True)
class ToleranceEntry:
    """The tolerance search of one fault model (Theorem 3), both methods.

    Attributes:
        fault: JSON description of the fault model (``name``, parameters, ``label``).
        paper, tight: :meth:`~faultbound.bounds.tolerance.ToleranceResult.to_dict` of each method
            (``eps``, ``eps_prime``, ``budget``, ``per_layer_max``, ``uniform_fraction``, ...).
    """

    fault: dict[str, Any]
    paper: dict[str, Any]
    tight: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready entry."""
        return {"fault": self.fault, "paper": self.paper, "tight": self.tight}


@dataclass(frozen=True)
class CampaignSummary:
    """A random fault-injection campaign of one fault model, next to the certificates.

    Attributes:
        fault: JSON description of the fault model.
        failures: the distribution sampled from (None for precision).
        description: the distribution in words.
        inputs: where the inputs came from, in words.
        trials, seed, evaluations: the campaign's size (``evaluations = trials × inputs``) and seed.
        max_error, mean_error, quantiles: statistics of the output error :math:`\\|\\cdot\\|_\\infty`.
        changed_rate: the fraction of changed predictions (classifiers), else None.
        worst: where the campaign's largest error was found.
        search_worst: the worst case found by search for the same distribution, when it was searched.
        certificate_paper, certificate_tight: the certificates' values (None if unbounded).
        status: ``"ok"``, ``"unbounded"`` or ``"VIOLATION"`` (a certificate below ``max_error``).
        histogram: ``{"edges": [...], "counts": [...]}`` of the errors.
    """

    fault: dict[str, Any]
    failures: list[int] | None
    description: str
    inputs: str
    trials: int
    seed: int
    evaluations: int
    max_error: float | None
    mean_error: float | None
    quantiles: dict[str, Any]
    changed_rate: float | None
    worst: Any
    search_worst: float | None
    certificate_paper: float | None
    certificate_tight: float | None
    status: Status
    histogram: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the keys in the order of the fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OutsideMeasurement:
    """What random failure sets of one fault model did at the data points outside the domain
    (never compared with the certificate, which covers the domain only).

    Attributes:
        fault, failures, description: the fault model and distribution, as in :class:`CampaignSummary`.
        trials: random failure sets.
        max_error: the largest output error measured there.
        certificate_tight: the tight certificate over the domain, shown for scale.
        status: always ``"outside-domain"``.
    """

    fault: dict[str, Any]
    failures: list[int] | None
    description: str
    trials: int
    max_error: float | None
    certificate_tight: float | None
    status: Literal["outside-domain"] = "outside-domain"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready measurement (the keys in the order of the fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OutsideSummary:
    """The given data points outside the domain.

    Attributes:
        n_points: how many points lie outside; ``n_given``: how many were given.
        features_outside: how many features lie outside the domain at some point.
        max_excess: the largest distance of a feature beyond the domain.
        domain: the domain in words.
        measured: one :class:`OutsideMeasurement` per fault model with finite capacity.
    """

    n_points: int
    n_given: int
    features_outside: int
    max_excess: float | None
    domain: str
    measured: tuple[OutsideMeasurement, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "n_points": self.n_points,
            "n_given": self.n_given,
            "features_outside": self.features_outside,
            "max_excess": self.max_excess,
            "domain": self.domain,
            "measured": [m.to_dict() for m in self.measured],
        }


@dataclass(frozen=True)
class ReportData:
    """Everything a report shows. :func:`render_html` is a pure rendering of it.

    Attributes:
        title: the report's title.
        meta: faultbound / torch / Python versions, creation time (UTC), seed, command line.
        spec: the settings (:meth:`ReportSpec.to_dict`).
        network: :meth:`Network.summary`.
        rows: one :class:`BoundRow` per fault model and failure distribution.
        verdict: a plain-language paragraph.
        violations: how many rows have a certificate below the measurement (should be 0).
        tolerance: per fault model, a :class:`ToleranceEntry`, or None.
        campaign: per fault model, a :class:`CampaignSummary`, or None.
        notes: caveats collected from the bounds and the report itself.
        level: the verdict's colour, :func:`verdict_level`.
        outside: the given data points outside the domain (:class:`OutsideSummary`: count, how far,
            what failures did to them), or None when every point lies inside or no data was given.
    """

    title: str
    meta: dict[str, Any]
    spec: dict[str, Any]
    network: dict[str, Any]
    rows: tuple[BoundRow, ...]
    verdict: str
    violations: int
    tolerance: tuple[ToleranceEntry, ...] | None = None
    campaign: tuple[CampaignSummary, ...] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    level: Level = "informative"
    outside: OutsideSummary | None = None

    def to_dict(self) -> dict[str, Any]:
        """One JSON-ready object (non-finite floats are None)."""
        return _finite(
            {
                "title": self.title,
                "meta": self.meta,
                "spec": self.spec,
                "network": self.network,
                "verdict": self.verdict,
                "level": self.level,
                "informative_ratio": INFORMATIVE_RATIO,
                "violations": self.violations,
                "rows": [r.to_dict() for r in self.rows],
                "tolerance": None if self.tolerance is None else [t.to_dict() for t in self.tolerance],
                "campaign": None if self.campaign is None else [c.to_dict() for c in self.campaign],
                "notes": list(self.notes),
                "outside": None if self.outside is None else self.outside.to_dict(),
            }
        )


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.generic):
        return _finite(o.item())
    return o


def _fault_info(fault: Fault) -> dict[str, Any]:

    return _finite(fault.to_dict()) | {"label": fault.label()}


def _limits(net: Network | GraphNetwork, fault: Fault) -> list[int]:
    """Largest admissible count per layer (f_l < N_l for neurons, <= synapses for synapses)."""
    return list(max_counts(net, fault, correct_neuron=True))


def default_failures(net: Network | GraphNetwork, fault: Fault) -> tuple[tuple[int, ...], ...]:
    """For each layer l, :math:`f_l \\in \\{1, 2, 4\\}` capped by the layer's limit (other layers
    0), then all ones; duplicates and impossible distributions are dropped."""
    if not fault.counted:  # precision
        return ((),)
    limits = _limits(net, fault)
    out: list[tuple[int, ...]] = []
    for l, cap in enumerate(limits):
        for n in DEFAULT_COUNTS:
            if n <= cap:
                f = [0] * len(limits)
                f[l] = n
                out.append(tuple(f))
    ones = tuple(1 if cap >= 1 else 0 for cap in limits)
    if sum(ones) > 1:
        out.append(ones)
    return tuple(dict.fromkeys(out))


def _ratio(cert: dict[str, Any], worst: float) -> float | None:
    v = cert.get("value")
    if v is None or not worst > 0:
        return None
    return float(v) / worst


#: What the report says once when the network is a graph: the paper's bound is not computed there.
GRAPH_NOTE = (
    "This network is a graph (residual sums, pooling, norms or attention): the paper's bound (Theorem 2) is "
    "defined for layered networks, so only the tight certificate is computed; the paper columns show —."
)


def _undefined(method: str) -> dict[str, Any]:
    """The entry of a method that is not defined for this network (the paper's, on a graph)."""
    return {"value": None, "unbounded": False, "method": method, "undefined": True, "notes": []}


def _certificates(net: Any, fl: list[int] | None, fault: Fault) -> dict[str, dict[str, Any]]:
    """:func:`bound` for each of :data:`METHODS` as dictionaries; on a graph network the paper's
    entry is :func:`_undefined` (the paper bound is defined for layered networks only)."""
    from faultbound.bounds.api import bound

    return {
        m: _undefined(m) if m == "paper" and isinstance(net, GraphNetwork) else bound(net, fl, fault, m).to_dict()
        for m in METHODS
    }


def _status(paper: dict[str, Any], tight: dict[str, Any], worst: float) -> Status:
    vals = [d.get("value") for d in (paper, tight) if not d.get("undefined")]
    if any(v is not None and worst > float(v) for v in vals):
        return "VIOLATION"
    if any(v is None for v in vals):
        return "unbounded"
    return "ok"


def _validate(net: Network | GraphNetwork, spec: ReportSpec) -> list[tuple[Fault, tuple[tuple[int, ...], ...]]]:
    """Check every setting before any computation; returns the distributions per fault."""
    from faultbound.bounds.api import check_eps

    if not spec.faults:
        raise InvalidArgumentError("Expected at least one fault model, but got none.")
    if spec.trials < 0:
        raise InvalidArgumentError(f"Expected trials >= 0, but got {spec.trials}.")
    if spec.samples < 1:
        raise InvalidArgumentError(f"Expected samples >= 1, but got {spec.samples}.")
    if (spec.eps is None) != (spec.eps_prime is None):
        raise InvalidArgumentError("Expected both eps and eps_prime for the tolerance section, or neither.")
    if spec.eps is not None:
        ep = spec.eps_prime
        check_eps(float(spec.eps), float(getattr(ep, "value", ep)))
    if spec.failures is not None and len(spec.failures) == 0:
        raise InvalidArgumentError("Expected at least one failure distribution, but got none.")
    plan = []
    for fault in spec.faults:
        if not fault.counted:  # precision
            dists: tuple[tuple[int, ...], ...] = ((),)
        else:
            dists = spec.failures if spec.failures is not None else default_failures(net, fault)
        if not dists:
            raise InvalidArgumentError(
                f"The network has no room for {fault.name} failures (every layer has a single unit)."
            )
        dists = tuple(failure_counts(net, fault, f, correct_neuron=True) for f in dists)
        if spec.trials > 0 and spec.campaign_failures is not None and fault.counted:
            failure_counts(net, fault, spec.campaign_failures, correct_neuron=True)
        plan.append((fault, dists))
    return plan


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def build_report(
    net: Network | GraphNetwork,
    spec: ReportSpec | None = None,
    *,
    inputs: Any = None,
    progress: Progress | None = None,
) -> ReportData:
    """Compute a report: certificates (paper and tight), worst cases found, tolerance, campaign.

    Args:
        net: the network.
        spec: the settings (:class:`ReportSpec`; defaults: crash, the default distributions).
        inputs: optional data points ``(n, *input_shape)``: extra probes for the worst-case search
            and the campaign's inputs (otherwise ``spec.samples`` uniform points of the domain).
        progress: called with a short message before each step (the library never prints).

    Returns:
        A :class:`ReportData`. Every setting is validated before anything is computed.
    """
    import torch

    import faultbound
    from faultbound.measure import worst_case

    spec = spec or ReportSpec()
    say = progress or (lambda _msg: None)
    plan = _validate(net, spec)
    probes = outside_x = None
    n_given = 0
    if inputs is not None:
        given = net.as_inputs(inputs)
        n_given = int(given.shape[0])
        inside = _inside(net, given)
        probes = given[inside] if bool(inside.any()) else None
        outside_x = given[~inside] if not bool(inside.all()) else None
    budget = None if spec.eps is None else float(spec.eps) - float(getattr(spec.eps_prime, "value", spec.eps_prime))
    rows: list[BoundRow] = []
    notes: list[str] = [GRAPH_NOTE] if isinstance(net, GraphNetwork) else []
    total = sum(len(d) for _, d in plan)
    done = 0
    for fault, dists in plan:
        for f in dists:
            done += 1
            fl: list[int] | None = list(f) if fault.counted else None
            say(f"[{done}/{total}] {fault.label()} {list(f) if f else ''}: certificates and worst-case search")
            certs = _certificates(net, fl, fault)
            for c in certs.values():
                notes.extend(c["notes"])
            if fault.unbounded:  # Lemma 1: nothing to search, the error is unbounded
                measured: dict[str, Any] = {
                    "max_error": math.inf if sum(f) > 0 else 0.0,
                    "exhaustive": True,
                    "failure_set": {},
                    "input": [],
                    "evaluations": 0,
                    "seed": spec.seed,
                }
            else:
                head = f"[{done}/{total}] {fault.label()} {list(f) if f else ''}: "
                wc = worst_case(
                    net,
                    fault,
                    fl,
                    inputs=None if probes is None else probes[:256],
                    seed=spec.seed,
                    progress=prefixed(say, head),
                )
                measured = _finite(wc.to_dict())
            worst = float(measured["max_error"])
            rows.append(
                BoundRow(
                    fault=_fault_info(fault),
                    failures=tuple(f),
                    description=describe_failures(fault, f),
                    paper=certs["paper"],
                    tight=certs["tight"],
                    measured=measured,
                    ratio_paper=_ratio(certs["paper"], worst),
                    ratio_tight=_ratio(certs["tight"], worst),
                    status=_status(certs["paper"], certs["tight"], worst),
                    informative=informative(certs["tight"], worst, budget),
                )
            )
    tolerance = _tolerance(net, spec, float(spec.eps), say, notes) if spec.eps is not None else None
    campaign = _campaigns(net, spec, plan, probes, rows, say) if spec.trials > 0 else None
    outside = None
    if outside_x is not None:
        outside = _outside(net, spec, plan, outside_x, n_given, rows, say)
    violations = sum(r.status == "VIOLATION" for r in rows)
    violations += sum(c.status == "VIOLATION" for c in campaign or ())
    meta = {
        "faultbound_version": faultbound.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "seed": spec.seed,
        "command": spec.command,
    }
    return ReportData(
        title=spec.title,
        meta=meta,
        spec=spec.to_dict(),
        network=_finite(net.summary()),
        rows=tuple(rows),
        verdict=verdict(rows, tolerance, violations, outside),
        violations=violations,
        tolerance=tolerance,
        campaign=campaign,
        notes=tuple(dict.fromkeys(notes)),
        level=verdict_level(rows, violations),
        outside=outside,
    )


def _inside(net: Network | GraphNetwork, x: Any) -> Any:
    """Which points of ``x`` (``(n, *input_shape)``) lie in the domain box (every feature)."""
    lo, hi = net.domain.lo.to(x.dtype), net.domain.hi.to(x.dtype)
    return ((x >= lo) & (x <= hi)).reshape(x.shape[0], -1).all(1)


def _outside(
    net: Network | GraphNetwork,
    spec: ReportSpec,
    plan: list[tuple[Fault, tuple[tuple[int, ...], ...]]],
    x: Any,
    n_given: int,
    rows: Sequence[BoundRow],
    say: Progress,
) -> OutsideSummary:
    """The given points outside the domain: how many, which features, how far, and the largest
    output error random failure sets cause at them (never compared with the certificates)."""
    import torch

    from faultbound.bounds.api import bound
    from faultbound.measure import CampaignSpec, run_campaign

    lo, hi = net.domain.lo.reshape(1, -1), net.domain.hi.reshape(1, -1)
    flat = x.reshape(x.shape[0], -1)
    excess = torch.maximum(lo - flat, flat - hi).clamp_min(0.0)
    measured = []
    trials = int(spec.trials) if spec.trials > 0 else OUTSIDE_TRIALS
    for fault, _dists in plan:
        if fault.unbounded:
            continue
        f: tuple[int, ...] | None = None
        if fault.counted:
            f = spec.campaign_failures or tuple(1 if cap >= 1 else 0 for cap in _limits(net, fault))
        say(f"outside the domain {fault.label()}: {trials} failure sets on {int(x.shape[0])} points")
        cs = CampaignSpec(fault, trials=trials, failures=f, seed=spec.seed, dtype="float64")
        d = run_campaign(net, x, cs).to_dict()
        cert = bound(net, None if f is None else list(f), fault, "tight").to_dict()["value"]
        measured.append(
            OutsideMeasurement(
                fault=_fault_info(fault),
                failures=None if f is None else list(f),
                description=describe_failures(fault, f or ()),
                trials=d["trials"],
                max_error=_finite(d["max_error"]),
                certificate_tight=_finite(cert),
            )
        )
    return OutsideSummary(
        n_points=int(x.shape[0]),
        n_given=n_given,
        features_outside=int((excess > 0).any(0).sum()),
        max_excess=_finite(float(excess.max())),
        domain=net.domain.describe(),
        measured=tuple(measured),
    )


def _tolerance(
    net: Network | GraphNetwork, spec: ReportSpec, eps: float, say: Progress, notes: list[str]
) -> tuple[ToleranceEntry, ...]:
    from faultbound.bounds.tolerance import tolerate

    out = []
    for fault in spec.faults:
        if not fault.counted:
            notes.append("Tolerance counts failing units; it is not computed for precision faults.")
            continue
        say(f"tolerance search: {fault.label()}")
        res = {
            m: _undefined(m) if m == "paper" and isinstance(net, GraphNetwork)
            else tolerate(
                net, eps, spec.eps_prime, fault, m, progress=prefixed(say, f"{fault.label()}: ")
            ).to_dict()
            for m in METHODS
        }
        for r in res.values():
            notes.extend(r["notes"])
        out.append(ToleranceEntry(fault=_fault_info(fault), paper=res["paper"], tight=res["tight"]))
    return tuple(out)


def _campaigns(
    net: Network | GraphNetwork,
    spec: ReportSpec,
    plan: list[tuple[Fault, tuple[tuple[int, ...], ...]]],
    probes: Any,
    rows: Sequence[BoundRow],
    say: Progress,
) -> tuple[CampaignSummary, ...]:
    from faultbound.measure import CampaignSpec, campaign_inputs, run_campaign
    from faultbound.measure.stats import histogram as campaign_histogram

    if probes is not None:
        x = probes
        source = f"{int(x.shape[0])} given inputs"
    else:
        x, _ = campaign_inputs(net, samples=spec.samples, seed=spec.seed)
        source = f"{spec.samples} inputs drawn uniformly from the domain (seed {spec.seed})"
    search = {(r.fault["label"], r.failures): r.worst for r in rows}
    out = []
    for fault, _dists in plan:
        if fault.unbounded:
            continue  # Lemma 1: random values in [-inf, inf] mean nothing
        precision = not fault.counted
        f: tuple[int, ...] | None = None
        if not precision:
            f = spec.campaign_failures or tuple(1 if cap >= 1 else 0 for cap in _limits(net, fault))
        cs = CampaignSpec(fault, trials=int(spec.trials), failures=f, seed=spec.seed, dtype="float64")

        def tick(done: int, total: int, _label: str = fault.label()) -> None:
            say(f"campaign {_label}: {done}/{total} failure sets")

        say(f"campaign {fault.label()}: {spec.trials} failure sets on {int(x.shape[0])} inputs")
        res = run_campaign(net, x, cs, progress=tick)
        d = res.to_dict()
        certs = _certificates(net, None if f is None else list(f), fault)
        worst = float(d["max_error"] or 0.0)
        out.append(
            CampaignSummary(
                **_finite(
                    {
                        "fault": _fault_info(fault),
                        "failures": None if f is None else list(f),
                        "description": describe_failures(fault, f or ()),
                        "inputs": source,
                        "trials": d["trials"],
                        "seed": d["seed"],
                        "evaluations": d["evaluations"],
                        "max_error": d["max_error"],
                        "mean_error": d["mean_error"],
                        "quantiles": d["quantiles"],
                        "changed_rate": d.get("changed_rate"),
                        "worst": d.get("worst"),
                        "search_worst": search.get((fault.label(), tuple(f or ()))),
                        "certificate_paper": certs["paper"]["value"],
                        "certificate_tight": certs["tight"]["value"],
                        "status": _status(certs["paper"], certs["tight"], worst),
                        "histogram": campaign_histogram(res.state),
                    }
                )
            )
        )
    return tuple(out)
