"""A self-contained HTML report for one network: every certificate next to a measured worst case.

The report is data first. :func:`build_report` computes everything (certificates with
``method="paper"`` and ``method="tight"``, the worst case found by
:func:`faultbound.measure.worst_case`, optionally the tolerance search and a random fault-injection
campaign) into a frozen :class:`ReportData`; :meth:`ReportData.to_dict` is the JSON form and
:func:`render_html` turns it into one HTML page with inline CSS and base64 PNG plots (no external
URLs, no JavaScript).

For each fault model and failure distribution :math:`(f_1, \\dots, f_L)` the report shows

.. math::

    \\text{ratio} = \\frac{\\text{certificate}}{\\text{worst case found}} \\ge 1,

since the worst case found is a lower bound on :math:`\\sup_x \\|F_{neu}(x) - F_{fail}(x)\\|_\\infty`
and a sound certificate is an upper bound on it. A certificate below a measurement is a bug; it is
flagged as a ``"VIOLATION"`` in the data and shown in red, never as fine.

**The verdict's colour** (:func:`verdict_level`). A finite certificate is *informative* when it is 0,
or at most :data:`INFORMATIVE_RATIO` times the worst case found (the true worst case is then pinned
within that factor), or, with ε given, at most the budget ε − ε' (it proves the setting tolerated).
The verdict is ``"violation"`` (red) when a certificate lies below a measurement, ``"informative"``
(green) when there is a finite certificate and every finite certificate is informative, and
``"loose"`` (amber) otherwise: sound, but it says little about this network.

**Data outside the domain.** The certificates cover the network's domain only. Given data points
outside it are never compared with them: the worst-case search and the campaign use the points
inside, and the points outside are counted, measured with the campaign's random failure sets, and
reported as *outside the domain* (``ReportData.outside``), never as a violation.

Example:
    >>> import torch, faultbound as fb
    >>> from faultbound.report.html import ReportSpec, build_report, render_html
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

import base64
import datetime as _dt
import io
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from faultbound.errors import FaultboundError, InvalidArgumentError
from faultbound.faults import (
    Byzantine,
    ByzantineDeviation,
    Crash,
    Fault,
    Precision,
    StuckAt,
    SynapseByzantine,
    SynapseFault,
)
from faultbound.network.core import Network

__all__ = [
    "BoundRow",
    "ReportData",
    "ReportSpec",
    "Status",
    "build_report",
    "default_failures",
    "describe_failures",
    "plot_campaign",
    "plot_certificates",
    "render_html",
    "verdict_level",
]

Status = Literal["ok", "VIOLATION", "unbounded"]
Level = Literal["informative", "loose", "violation"]
Progress = Callable[[str], None]

#: Failure counts tried per layer by default (capped below each layer's width).
DEFAULT_COUNTS = (1, 2, 4)
#: A certificate at most this many times the worst case found is informative (:func:`verdict_level`).
INFORMATIVE_RATIO = 10.0
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
        measured: the :func:`~faultbound.measure.worst_case` dictionary.
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
        tolerance: per fault model, ``{"paper": ..., "tight": ...}`` tolerance results, or None.
        campaign: per fault model, a campaign summary with a histogram of errors, or None.
        notes: caveats collected from the bounds and the report itself.
        level: the verdict's colour, :func:`verdict_level`.
        outside: the given data points outside the domain (count, how far, what failures did to
            them), or None when every point lies inside or no data was given.
    """

    title: str
    meta: dict[str, Any]
    spec: dict[str, Any]
    network: dict[str, Any]
    rows: tuple[BoundRow, ...]
    verdict: str
    violations: int
    tolerance: tuple[dict[str, Any], ...] | None = None
    campaign: tuple[dict[str, Any], ...] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    level: Level = "informative"
    outside: dict[str, Any] | None = None

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
                "tolerance": None if self.tolerance is None else list(self.tolerance),
                "campaign": None if self.campaign is None else list(self.campaign),
                "notes": list(self.notes),
                "outside": self.outside,
            }
        )


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


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
    from faultbound.bounds.api import fault_dict

    return _finite(fault_dict(fault)) | {"label": fault_label(fault)}


def fault_label(fault: Fault) -> str:
    """A short human name: ``crash``, ``Byzantine (C = 1)``, ``stuck-at 0.5``, ..."""
    if isinstance(fault, Byzantine | SynapseByzantine | ByzantineDeviation):
        c = "inf" if fault.capacity == math.inf else f"{fault.capacity:g}"
        return f"{fault.name} (C = {c})"
    if isinstance(fault, StuckAt):
        return f"stuck-at {fault.value:g}"
    if isinstance(fault, Precision):
        return "precision (" + ", ".join(f"λ{i}={e:g}" for i, e in enumerate(fault.errors, 1)) + ")"
    return fault.name


def _unit_words(fault: Fault | str, n: int) -> str:
    name = fault if isinstance(fault, str) else fault.name
    unit = "synapse" if name.startswith("synapse") else "neuron"
    adj = {
        "crash": "crashed",
        "synapse-crash": "crashed",
        "byzantine": "Byzantine",
        "synapse-byzantine": "Byzantine",
        "byzantine-deviation": "Byzantine (deviation-bounded)",
        "stuck-at": "stuck-at",
    }.get(name, "failing")
    return f"{n} {adj} {unit}{'' if n == 1 else 's'}"


def describe_failures(fault: Fault, failures: Sequence[int]) -> str:
    """The distribution in words: ``"1 crashed neuron in layer 1"``, ``"2 crashed neurons in layer 1
    and 1 in layer 2"``; synapses are counted into the layer that receives them."""
    if isinstance(fault, Precision):
        return "every hidden neuron off by its layer's precision error"
    into = " into" if isinstance(fault, SynapseFault) else " in"
    parts = [(l, n) for l, n in enumerate(failures, start=1) if n > 0]
    if not parts:
        return "no failure"
    if len(set(n for _, n in parts)) == 1 and len(parts) > 1:
        return f"{_unit_words(fault, parts[0][1])}{into} each of layers {layer_list([l for l, _ in parts])}"
    words = [f"{_unit_words(fault, parts[0][1])}{into} layer {parts[0][0]}"]
    words += [f"{n}{into} layer {l}" for l, n in parts[1:]]
    if len(words) > 6:  # a long network: the first ones, then a count
        return f"{', '.join(words[:4])} and {len(words) - 4} more layers ({sum(n for _, n in parts)} in all)"
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else words[0]


def layer_list(layers: Sequence[int]) -> str:
    """``[1, 2]`` -> ``"1 and 2"``; runs of three or more consecutive layers as ranges:
    ``[1, 2, 3, 4, 7]`` -> ``"1–4 and 7"``."""
    runs: list[list[int]] = []
    for l in sorted(layers):
        if runs and l == runs[-1][-1] + 1:
            runs[-1].append(l)
        else:
            runs.append([l])
    items: list[str] = []
    for r in runs:
        if len(r) >= 3:
            items.append(f"{r[0]}–{r[-1]}")
        else:
            items.extend(str(v) for v in r)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


def short_failures(failures: Sequence[int]) -> str:
    """A distribution as a table label: the list up to 8 layers, else ``"1 × 40"`` (every layer
    equal) or the non-zero layers only, ``"f3=2, f7=1"``."""
    f = list(failures)
    if not f:
        return "—"
    if len(f) <= 8:
        return str(f)
    if len(set(f)) == 1:
        return f"{f[0]} × {len(f)} layers"
    nz = [(l, n) for l, n in enumerate(f, start=1) if n]
    shown = ", ".join(f"f{l}={n}" for l, n in nz[:6])
    return shown + (f", … ({len(nz)} layers)" if len(nz) > 6 else "") + f" (of {len(f)})"


def _unbounded(fault: Fault) -> bool:
    """Unbounded transmission capacity (Lemma 1)."""
    cap = getattr(fault, "capacity", None)
    return isinstance(cap, float) and math.isinf(cap)


def _limits(net: Network, fault: Fault) -> list[int]:
    """Largest admissible count per layer (f_l < N_l for neurons, <= synapses for synapses)."""
    if isinstance(fault, SynapseFault):
        return [lay.n_synapses for lay in net.layers]
    return [w - 1 for w in net.widths]


def default_failures(net: Network, fault: Fault) -> tuple[tuple[int, ...], ...]:
    """For each layer l, :math:`f_l \\in \\{1, 2, 4\\}` capped by the layer's limit (other layers
    0), then all ones; duplicates and impossible distributions are dropped."""
    if isinstance(fault, Precision):
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


def _informative(tight: dict[str, Any], worst: float, budget: float | None) -> bool:
    """The rule of the module docstring: a finite tight certificate that is 0, at most
    :data:`INFORMATIVE_RATIO` times the worst case found, or within the budget."""
    v = tight.get("value")
    if v is None or not math.isfinite(float(v)):
        return False
    v = float(v)
    if v == 0.0 or (budget is not None and v <= budget):
        return True
    return worst > 0 and v <= INFORMATIVE_RATIO * worst


def verdict_level(rows: Sequence[BoundRow], violations: int) -> Level:
    """``"violation"`` if any certificate lies below a measurement; ``"informative"`` if some row
    has a finite certificate and every such row is informative; else ``"loose"``."""
    if violations:
        return "violation"
    finite = [r for r in rows if r.tight.get("value") is not None]
    return "informative" if finite and all(r.informative for r in finite) else "loose"


def _status(paper: dict[str, Any], tight: dict[str, Any], worst: float) -> Status:
    vals = [d.get("value") for d in (paper, tight)]
    if any(v is not None and worst > float(v) for v in vals):
        return "VIOLATION"
    if any(v is None for v in vals):
        return "unbounded"
    return "ok"


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞"
        return f"{v:.{digits}g}"
    return str(v)


def _validate(net: Network, spec: ReportSpec) -> list[tuple[Fault, tuple[tuple[int, ...], ...]]]:
    """Check every setting before any computation; returns the distributions per fault."""
    from faultbound.bounds.api import check_eps, check_failures

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
        if isinstance(fault, Precision):
            dists: tuple[tuple[int, ...], ...] = ((),)
        else:
            dists = spec.failures if spec.failures is not None else default_failures(net, fault)
        if not dists:
            raise InvalidArgumentError(
                f"The network has no room for {fault.name} failures (every layer has a single unit)."
            )
        dists = tuple(check_failures(net, f, fault) for f in dists)
        if spec.trials > 0 and spec.campaign_failures is not None and not isinstance(fault, Precision):
            check_failures(net, spec.campaign_failures, fault)
        plan.append((fault, dists))
    return plan


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def build_report(
    net: Network,
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
    from faultbound.bounds.api import bound
    from faultbound.measure import worst_case

    spec = spec or ReportSpec()
    say = progress or (lambda _msg: None)
    plan = _validate(net, spec)
    probes = outside_x = None
    n_given = 0
    if inputs is not None:
        given = torch.as_tensor(inputs, dtype=torch.float64).reshape(-1, *net.input_shape)
        n_given = int(given.shape[0])
        inside = _inside(net, given)
        probes = given[inside] if bool(inside.any()) else None
        outside_x = given[~inside] if not bool(inside.all()) else None
    budget = None if spec.eps is None else float(spec.eps) - float(getattr(spec.eps_prime, "value", spec.eps_prime))
    rows: list[BoundRow] = []
    notes: list[str] = []
    total = sum(len(d) for _, d in plan)
    done = 0
    for fault, dists in plan:
        for f in dists:
            done += 1
            fl: list[int] | None = None if isinstance(fault, Precision) else list(f)
            say(f"[{done}/{total}] {fault_label(fault)} {list(f) if f else ''}: certificates and worst-case search")
            certs = {m: bound(net, fl, fault, m).to_dict() for m in ("paper", "tight")}  # type: ignore[arg-type]
            for c in certs.values():
                notes.extend(c["notes"])
            if _unbounded(fault):  # Lemma 1: nothing to search, the error is unbounded
                measured: dict[str, Any] = {
                    "max_error": math.inf if sum(f) > 0 else 0.0,
                    "exhaustive": True,
                    "failure_set": {},
                    "input": [],
                    "evaluations": 0,
                    "seed": spec.seed,
                }
            else:
                wc = worst_case(net, fault, fl, inputs=None if probes is None else probes[:256], seed=spec.seed)
                measured = _finite(dict(wc))
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
                    informative=_informative(certs["tight"], worst, budget),
                )
            )
    tolerance = _tolerance(net, spec, say, notes) if spec.eps is not None else None
    campaign = _campaigns(net, spec, plan, probes, rows, say) if spec.trials > 0 else None
    outside = None
    if outside_x is not None:
        outside = _outside(net, spec, plan, outside_x, n_given, rows, say)
    violations = sum(r.status == "VIOLATION" for r in rows)
    violations += sum(c["status"] == "VIOLATION" for c in campaign or ())
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
        verdict=_verdict(rows, tolerance, violations, outside),
        violations=violations,
        tolerance=tolerance,
        campaign=campaign,
        notes=tuple(dict.fromkeys(notes)),
        level=verdict_level(rows, violations),
        outside=outside,
    )


def _inside(net: Network, x: Any) -> Any:
    """Which points of ``x`` (``(n, *input_shape)``) lie in the domain box (every feature)."""
    lo, hi = net.domain.lo.to(x.dtype), net.domain.hi.to(x.dtype)
    return ((x >= lo) & (x <= hi)).reshape(x.shape[0], -1).all(1)


def _outside(
    net: Network,
    spec: ReportSpec,
    plan: list[tuple[Fault, tuple[tuple[int, ...], ...]]],
    x: Any,
    n_given: int,
    rows: Sequence[BoundRow],
    say: Progress,
) -> dict[str, Any]:
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
        if _unbounded(fault):
            continue
        f: tuple[int, ...] | None = None
        if not isinstance(fault, Precision):
            f = spec.campaign_failures or tuple(1 if cap >= 1 else 0 for cap in _limits(net, fault))
        say(f"outside the domain {fault_label(fault)}: {trials} failure sets on {int(x.shape[0])} points")
        cs = CampaignSpec(fault, trials=trials, failures=f, seed=spec.seed, dtype="float64")
        d = run_campaign(net, x, cs).to_dict()
        cert = bound(net, None if f is None else list(f), fault, "tight").to_dict()["value"]
        measured.append(
            {
                "fault": _fault_info(fault),
                "failures": None if f is None else list(f),
                "description": describe_failures(fault, f or ()),
                "trials": d["trials"],
                "max_error": d["max_error"],
                "certificate_tight": cert,
                "status": "outside-domain",
            }
        )
    return _finite(
        {
            "n_points": int(x.shape[0]),
            "n_given": n_given,
            "features_outside": int((excess > 0).any(0).sum()),
            "max_excess": float(excess.max()),
            "domain": net.domain.describe(),
            "measured": measured,
        }
    )


def _tolerance(net: Network, spec: ReportSpec, say: Progress, notes: list[str]) -> tuple[dict[str, Any], ...]:
    from faultbound.bounds.tolerance import tolerate

    out = []
    for fault in spec.faults:
        if isinstance(fault, Precision):
            notes.append("Tolerance counts failing units; it is not computed for precision faults.")
            continue
        say(f"tolerance search: {fault_label(fault)}")
        res = {m: tolerate(net, float(spec.eps), spec.eps_prime, fault, m).to_dict() for m in ("paper", "tight")}  # type: ignore[arg-type]
        for r in res.values():
            notes.extend(r["notes"])
        out.append({"fault": _fault_info(fault), **res})
    return tuple(out)


def _histogram(errors: np.ndarray, bins: int = 30) -> dict[str, list[float]]:
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(e, bins=bins)
    return {"edges": [float(v) for v in edges], "counts": [int(v) for v in counts]}


def _campaigns(
    net: Network,
    spec: ReportSpec,
    plan: list[tuple[Fault, tuple[tuple[int, ...], ...]]],
    probes: Any,
    rows: Sequence[BoundRow],
    say: Progress,
) -> tuple[dict[str, Any], ...]:
    from faultbound.bounds.api import bound
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
        if _unbounded(fault):
            continue  # Lemma 1: random values in [-inf, inf] mean nothing
        precision = isinstance(fault, Precision)
        f: tuple[int, ...] | None = None
        if not precision:
            f = spec.campaign_failures or tuple(1 if cap >= 1 else 0 for cap in _limits(net, fault))
        cs = CampaignSpec(fault, trials=int(spec.trials), failures=f, seed=spec.seed, dtype="float64")

        def tick(done: int, total: int, _label: str = fault_label(fault)) -> None:
            say(f"campaign {_label}: {done}/{total} failure sets")

        say(f"campaign {fault_label(fault)}: {spec.trials} failure sets on {int(x.shape[0])} inputs")
        res = run_campaign(net, x, cs, progress=tick)
        d = res.to_dict()
        certs = {m: bound(net, None if f is None else list(f), fault, m).to_dict() for m in ("paper", "tight")}  # type: ignore[arg-type]
        worst = float(d["max_error"] or 0.0)
        out.append(
            _finite(
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
                    "search_worst": search.get((fault_label(fault), tuple(f or ()))),
                    "certificate_paper": certs["paper"]["value"],
                    "certificate_tight": certs["tight"]["value"],
                    "status": _status(certs["paper"], certs["tight"], worst),
                    "histogram": campaign_histogram(res.state),
                }
            )
        )
    return tuple(out)


def _verdict(
    rows: Sequence[BoundRow],
    tolerance: Sequence[dict[str, Any]] | None,
    violations: int,
    outside: dict[str, Any] | None = None,
) -> str:
    """One plain-language paragraph, of bounded length however many layers the network has."""
    parts: list[str] = []
    if violations:
        parts.append(
            f"VIOLATION: {violations} certificate(s) lie below a measured error. That is a bug in faultbound "
            "(a certificate must hold for every input and failure set); do not rely on these numbers and "
            "please report it."
        )
    first = rows[0]
    tight = first.tight.get("value")
    label = "" if first.fault["name"] in ("crash", "synapse-crash") else f" ({first.fault['label']})"
    if tight is None:
        parts.append(
            f"Under {first.description}{label}, no finite certificate exists: with unbounded transmission a "
            "single Byzantine unit can move the output arbitrarily far (Lemma 1)."
        )
    else:
        ratio = "" if first.ratio_tight is None else f" (ratio {_fmt(first.ratio_tight, 3)})"
        subject = "with" if isinstance(first.fault.get("errors"), list) else "under any"
        parts.append(
            f"{subject.capitalize()} {first.description}{label}, the output moves by at most "
            f"{_fmt(tight)} (tight certificate; the paper's bound gives {_fmt(first.paper.get('value'))}); "
            f"the worst case found is {_fmt(first.worst)}{ratio}."
        )
    ok = [r for r in rows if r.status == "ok"]
    if len(rows) > 1 and ok:
        rt = [r.ratio_tight for r in ok if r.ratio_tight is not None]
        span = ""
        if rt:
            span = f" (tight certificate / worst case between {_fmt(min(rt), 3)} and {_fmt(max(rt), 3)})"
        what = "every certificate lies above" if not violations else "the other certificates lie above"
        scope = f"all {len(rows)}" if len(ok) + violations == len(rows) else f"the {len(ok) + violations}"
        parts.append(
            f"Over {scope} fault settings checked with a finite certificate, {what} the worst case found{span}."
        )
    loose = [r for r in rows if r.tight.get("value") is not None and not r.informative]
    if loose and not violations:
        worst_row = max(loose, key=lambda r: r.ratio_tight or math.inf)
        ratio = "" if worst_row.ratio_tight is None else f"up to {_fmt(worst_row.ratio_tight, 3)} times, "
        parts.append(
            f"Not informative: {len(loose)} of the {sum(r.tight.get('value') is not None for r in rows)} "
            f"certificates are more than {INFORMATIVE_RATIO:g} times the worst case found"
            f"{'' if tolerance is None else ' and above the budget ε − ε′'} ({ratio}under "
            f"{worst_row.description}). They are sound but say little about this network: the true "
            "worst case may lie anywhere between the worst case found and the certificate."
        )
    n_unb = sum(r.status == "unbounded" for r in rows)
    if n_unb and rows[0].status != "unbounded":
        parts.append(f"{n_unb} setting(s) have no finite certificate (unbounded Byzantine capacity, Lemma 1).")
    for t in (tolerance or ())[:1]:
        tt, tp = t["tight"], t["paper"]
        ep = tt["eps_prime"]
        src = "given" if not ep["estimated"] else "estimated from below"
        fault = t["fault"]
        into = "into" if fault["name"].startswith("synapse") else "in"
        cap = "" if "capacity" not in fault else f" (C = {_fmt(fault['capacity'])})"
        head = (
            f"To keep the error within ε = {_fmt(tt['eps'])} (ε' = {_fmt(ep['value'])}, {src}), the tight certificate"
        )
        per, per_p = list(tt["per_layer_max"]), list(tp["per_layer_max"])
        if len(per) <= 6:
            counts = [f"{n} {into} layer {l}" for l, n in enumerate(per, start=1)]
            counts[0] = f"{_unit_words(fault['name'], per[0])} {into} layer 1"
            paper = ", ".join(str(n) for n in per_p)
            parts.append(
                f"{head} allows up to {', or '.join(counts)}{cap}, one layer at a time (the paper's bound: {paper})."
            )
        else:
            zero = [l for l, n in enumerate(per, start=1) if n == 0]
            none = "" if not zero else f"; none in {len(zero)} of the {len(per)} layers ({layer_list(zero)})"
            parts.append(
                f"{head} allows, one layer at a time, between {min(per)} and {max(per)} "
                f"{'synapses' if into == 'into' else 'neurons'} per layer{cap}{none}; the paper's bound between "
                f"{min(per_p)} and {max(per_p)} (every layer in the tolerance table)."
            )
    if outside is not None:
        worst_out = [m["max_error"] for m in outside["measured"] if m.get("max_error") is not None]
        err = "" if not worst_out else f"; random failures there moved the output by up to {_fmt(max(worst_out))}"
        parts.append(
            f"{outside['n_points']} of the {outside['n_given']} given data points lie outside the domain "
            f"{outside['domain']}: the certificates do not cover them, so they are reported apart, never as "
            f"violations{err}."
        )
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, no pyplot): take an optional ``ax`` and return ``(fig, ax)``
# ----------------------------------------------------------------------------------------------


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - report extra
        raise FaultboundError("Reports need matplotlib: pip install 'faultbound[report]'.") from e
    if ax is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    return ax.figure, ax


PAPER_COLOR, TIGHT_COLOR, MEASURED_COLOR = "#8c6bb1", "#2b8cbe", "#e6550d"


def _plain_log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Log-axis tick labels as plain numbers (0.2, 0.5, 1, 2); minor ones only over a short range."""
    from matplotlib.ticker import FuncFormatter

    few_decades = hi / lo < 300

    def label(v: float, _pos: Any) -> str:
        if v <= 0:
            return ""
        mant = v / 10 ** math.floor(math.log10(v) + 1e-9)
        major = abs(mant - 1) < 1e-6
        shown = (2, 3, 5) if hi / lo < 10 else (2, 5)
        keep = major or (few_decades and any(abs(mant - m) < 1e-6 for m in shown))
        return f"{v:g}" if keep else ""

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(label))


def plot_certificates(rows: Sequence[BoundRow | dict[str, Any]], ax: Any = None) -> tuple[Any, Any]:
    """Dot chart (log scale): paper bound, tight bound and worst case found, one line per
    distribution. A grey bar spans worst case to tight certificate; violations are marked red."""
    rs = [r.to_dict() if isinstance(r, BoundRow) else r for r in rows]
    n = max(len(rs), 1)
    # 0.42 in per row up to 20 rows, then 0.16 in: a long network stays one readable chart
    fig, ax = _axes(ax, (8.0, 0.9 + 0.42 * min(n, 20) + 0.16 * max(0, n - 20)))
    small = n > 20
    ys = np.arange(len(rs))[::-1]
    vals = []
    for y, r in zip(ys, rs, strict=True):
        p, t, m = r["paper"].get("value"), r["tight"].get("value"), r["measured"]["max_error"]
        if m is not None and m > 0 and t is not None:
            ax.plot([m, t], [y, y], color="0.85", lw=3 if small else 6, solid_capstyle="round", zorder=1)
        for v, color, marker in ((p, PAPER_COLOR, "s"), (t, TIGHT_COLOR, "D"), (m, MEASURED_COLOR, "o")):
            if v is not None and v > 0:
                ax.plot([v], [y], marker=marker, color=color, ms=4 if small else 7, ls="none", zorder=3)
                vals.append(v)
        if r["status"] == "VIOLATION":
            ax.annotate(
                "VIOLATION",
                (m, y),
                xytext=(6, 4),
                textcoords="offset points",
                color="red",
                fontsize=8,
                fontweight="bold",
            )
        if r["status"] == "unbounded":
            ax.annotate(
                "unbounded (Lemma 1)",
                (1, y),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                color="0.4",
                fontsize=8,
            )
    labels = [short_failures(r["failures"]) if r["failures"] else r["fault"]["label"] for r in rs]
    ax.set_yticks(ys, labels, fontsize=7 if small else None)
    ax.set_ylim(-0.7, len(rs) - 0.3)
    if vals:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis, min(vals), max(vals))
    ax.set_xlabel("output error, ∞-norm (log scale)")
    ax.set_ylabel("failures per layer")
    few = bool(vals) and max(vals) / min(vals) < 300
    ax.grid(axis="x", which="both" if few else "major", color="0.92", lw=0.6)
    ax.set_axisbelow(True)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    handles = [
        ax.plot([], [], marker="s", color=PAPER_COLOR, ls="none", label="certificate: paper")[0],
        ax.plot([], [], marker="D", color=TIGHT_COLOR, ls="none", label="certificate: tight")[0],
        ax.plot([], [], marker="o", color=MEASURED_COLOR, ls="none", label="worst case found")[0],
    ]
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    return fig, ax


def plot_campaign(campaign: dict[str, Any], ax: Any = None) -> tuple[Any, Any]:
    """Histogram of a campaign's output errors, with its worst case and the certificates as lines.

    The x-axis spans the measurements (campaign and search). A certificate more than 4 times
    beyond them would squeeze every bar into one: it is then listed at the right edge with its
    value and its ratio to the largest measurement, instead of being drawn to scale.
    """
    fig, ax = _axes(ax, (9.0, 2.8))
    h = campaign["histogram"]
    measured = [v for v in (campaign.get("max_error"), campaign.get("search_worst")) if v is not None]
    if h["counts"]:
        measured.append(float(h["edges"][-1]))
    top = max(measured, default=0.0)
    if h["counts"]:
        edges = np.asarray(h["edges"])
        ax.bar(
            edges[:-1],
            h["counts"],
            width=np.diff(edges),
            align="edge",
            color="#fdae6b",
            edgecolor="white",
            lw=0.5,
            label="random failure sets × inputs",
        )
    off: list[str] = []
    right = top
    for key, color, label in (
        ("max_error", "#fd8d3c", "campaign max"),
        ("search_worst", MEASURED_COLOR, "worst case found by search"),
        ("certificate_tight", TIGHT_COLOR, "certificate: tight"),
        ("certificate_paper", PAPER_COLOR, "certificate: paper"),
    ):
        v = campaign.get(key)
        if v is None:
            continue
        if top > 0 and v > 4 * top:
            off.append(label)
            ax.plot(
                [],
                [],
                color=color,
                lw=1.5,
                ls="--",
                label=f"{label} {v:.3g}\n(off scale: {v / top:.3g}× the largest measured)",
            )
            continue
        ls = "-" if key in ("max_error", "search_worst") else "--"
        ax.axvline(v, color=color, lw=1.5, ls=ls, label=f"{label} {v:.3g}")
        right = max(right, v)
    if top > 0 and off:
        ax.set_xlim(0.0, 1.08 * right)
    ax.set_xlabel("output error, ∞-norm" + (" (scale of the measurements)" if off else ""))
    ax.set_ylabel("count")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)
    for s in ("top", "right"):
        ax.spines[s].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig, ax


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="faultbound {{ d.meta.faultbound_version }}">
<title>faultbound report: {{ d.title }}</title>
<style>
:root { --ink:#1d2433; --muted:#5b6475; --line:#e3e6ec; --bg:#f6f7f9; --card:#fff;
        --paper:#8c6bb1; --tight:#2b8cbe; --meas:#e6550d; --ok:#2f8f4e; --bad:#c62828; --warn:#b26a00; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1080px; margin:0 auto; padding:28px 28px 60px; }
header h1 { font-size:26px; margin:0 0 4px; letter-spacing:-0.01em; }
header .sub { color:var(--muted); font-size:14px; }
h2 { font-size:19px; margin:34px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:16px; margin:22px 0 8px; }
p.lead { color:var(--muted); margin:4px 0 12px; font-size:14px; }
.verdict { background:var(--card); border:1px solid var(--line); border-left:6px solid var(--ok);
           border-radius:8px; padding:16px 20px; margin:20px 0 8px; font-size:16px; }
.verdict.bad { border-left-color:var(--bad); background:#fff5f5; }
.verdict .tag { display:inline-block; font-weight:700; font-size:12px; letter-spacing:.06em; color:#fff;
                background:var(--ok); border-radius:4px; padding:1px 8px; margin-right:8px; vertical-align:2px; }
.verdict.bad .tag { background:var(--bad); }
.verdict.loose { border-left-color:var(--warn); background:#fffaf0; }
.verdict.loose .tag { background:var(--warn); }
.tscroll { overflow-x:auto; max-width:100%; margin:0 0 4px; }
td.mono { overflow-wrap:anywhere; }
.card .v { overflow-wrap:anywhere; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:14px 0 0; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:150px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
.card .v { font-size:20px; font-weight:600; font-variant-numeric:tabular-nums; }
table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line);
        border-radius:8px; overflow:hidden; font-size:14px; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
th { white-space:nowrap; background:#eef1f5; font-weight:600; font-size:13px; color:#38404f; }
td.n, th.n { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:last-child td { border-bottom:none; }
tr.violation td { background:#fdecea; }
.pill { display:inline-block; border-radius:10px; padding:0 8px; font-size:12px; font-weight:600; white-space:nowrap; }
.pill.ok { background:#e3f3e8; color:var(--ok); }
.pill.bad { background:var(--bad); color:#fff; }
.pill.unb { background:#eceff3; color:var(--muted); }
.pill.out, .pill.loose { background:#fff1d6; color:var(--warn); }
.dot { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:4px; vertical-align:0; }
.figure { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:8px; margin:10px 0; }
.figure img { max-width:100%; height:auto; display:block; margin:0 auto; }
.small { color:var(--muted); font-size:13px; }
td.nw { white-space:nowrap; }
code, .mono { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:13px; }
pre { background:#eef1f5; border-radius:6px; padding:10px 12px; overflow-x:auto; white-space:pre-wrap;
      word-break:break-all; }
dl.kv { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; font-size:14px; }
dl.kv dt { color:var(--muted); }
dl.kv dd { margin:0; }
ul.notes { font-size:13px; color:var(--muted); padding-left:20px; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
</style>
</head>
<body>
<main>
<header>
  <h1>Fault-tolerance report: {{ d.title }}</h1>
  <div class="sub">faultbound {{ d.meta.faultbound_version }} · {{ d.meta.created_utc }} · seed {{ d.meta.seed }}
  · after “When Neurons Fail” (El Mhamdi &amp; Guerraoui, IPDPS 2017)</div>
</header>

<div class="verdict{% if d.level == "violation" %} bad{% elif d.level == "loose" %} loose{% endif %}">
  <span class="tag">{% if d.level == "violation" %}VIOLATION{% elif d.level == "loose" %}SOUND BUT LOOSE{% else
  %}INFORMATIVE{% endif %}</span>{{ d.verdict }}
</div>
<div class="cards">
  <div class="card"><div class="k">hidden layers</div><div class="v">{{ d.network.L }}</div></div>
  <div class="card"><div class="k">widths</div><div class="v">{{ d.network.widths | widths }}</div></div>
  <div class="card"><div class="k">parameters</div><div class="v">{{ d.network.n_params }}</div></div>
  <div class="card"><div class="k">input domain</div><div class="v">{{ d.network.domain }}</div></div>
  <div class="card"><div class="k">settings checked</div><div class="v">{{ d.rows | length }}</div></div>
  <div class="card"><div class="k">violations</div><div class="v" style="color:{{ 'var(--bad)' if d.violations
    else 'var(--ok)' }}">{{ d.violations }}</div></div>
</div>

<h2>Certificates next to the worst case found</h2>
<p class="lead">A <b>certificate</b> bounds the output error (∞-norm) for <i>every</i> input of the domain and
<i>every</i> failure set of the given sizes. The <b>worst case found</b> is a real failure set and input found by
search (exhaustive over failure sets when feasible): a lower bound on the true worst case. The true worst case lies
between them, so each <b>ratio</b> certificate / worst case is at least 1; the closer to 1, the tighter.
<span class="dot" style="background:var(--paper)"></span><b>paper</b>: the paper's Theorem 2 bound (made sound, see
docs/errata.md); <span class="dot" style="background:var(--tight)"></span><b>tight</b>: per-neuron propagation;
<span class="dot" style="background:var(--meas)"></span><b>measured</b>.</p>
{% for g in groups %}
<h3>{{ g.label }}</h3>
{% if g.figure %}<div class="figure"><img alt="certificates and worst case found for {{ g.label }}"
  src="data:image/png;base64,{{ g.figure }}"></div>{% endif %}
<div class="tscroll"><table>
<tr><th>failures f<sub>l</sub></th><th>in words</th><th class="n">paper</th><th class="n">tight</th>
<th class="n">worst case found</th><th class="n">paper / worst</th><th class="n">tight / worst</th>
<th>search</th><th>status</th></tr>
{% for r in g.rows %}
<tr{% if r.status == "VIOLATION" %} class="violation"{% endif %}>
<td class="mono nw">{{ r.failures | flist }}</td>
<td>{{ r.description }}</td>
<td class="n">{{ "∞" if r.paper.unbounded else r.paper.value | num }}</td>
<td class="n">{{ "∞" if r.tight.unbounded else r.tight.value | num }}</td>
<td class="n">{% if r.status == "unbounded" and r.measured.max_error is none %}∞ (Lemma 1){% else
  %}{{ r.measured.max_error | num }}{% endif %}</td>
<td class="n">{{ r.ratio_paper | ratio }}</td>
<td class="n">{{ r.ratio_tight | ratio }}</td>
<td class="small">{% if r.status == "unbounded" and r.measured.evaluations == 0 %}not searched{% else
  %}{{ "exhaustive" if r.measured.exhaustive else "search" }}, {{ r.measured.evaluations | int_ }} evals{% endif %}</td>
<td>{% if r.status == "VIOLATION" %}<span class="pill bad">VIOLATION</span>{% elif r.status == "unbounded"
  %}<span class="pill unb">unbounded</span>{% elif not r.informative
  %}<span class="pill loose" title="sound, but more than {{ d.informative_ratio | num }}× the worst case found"
  >loose</span>{% else %}<span class="pill ok">ok</span>{% endif %}</td>
</tr>
{% endfor %}
</table></div>
<details class="small"><summary>Where the worst cases were found</summary>
<div class="tscroll"><table>
<tr><th>failures f<sub>l</sub></th><th>failing units (layer: indices)</th><th>input (first values)</th></tr>
{% for r in g.rows %}
<tr><td class="mono nw">{{ r.failures | flist }}</td>
<td class="mono">{{ r.measured.failure_set | units }}</td>
<td class="mono">{{ r.measured.input | vec }}</td></tr>
{% endfor %}
</table></div>
</details>
{% endfor %}

{% if d.tolerance %}
<h2>Tolerance: how many failures keep the error within ε</h2>
{% for t in d.tolerance %}
{% set ep = t.tight.eps_prime %}
<h3>{{ t.fault.label }}</h3>
<p class="lead">ε = {{ t.tight.eps | num }}, ε' = {{ ep.value | num }}
({% if ep.estimated %}estimated from below on {{ ep.n_samples }} samples ({{ ep.source }}), so the true ε' may be
larger{% else %}given{% endif %}), budget ε − ε' = {{ t.tight.budget | num }}. A distribution is tolerated when its
certificate is at most the budget (Theorem 3).</p>
<div class="tscroll"><table>
<tr><th>method</th><th>largest f<sub>l</sub> per layer (others 0)</th><th class="n">uniform fraction p</th>
<th>f at p</th><th>maximal tolerated distributions</th></tr>
{% for m in ("paper", "tight") %}{% set r = t[m] %}
<tr><td>{{ m }}</td><td class="mono">{{ r.per_layer_max }}</td><td class="n">{{ r.uniform_fraction | num(3) }}</td>
<td class="mono">{{ r.uniform_failures }}</td>
<td class="mono">{% if r.maximal is none %}not enumerated{% else %}{{ r.maximal[:12] | map("string") | join(", ") }}
{% if r.maximal | length > 12 %} … ({{ r.maximal | length }} in all){% endif %}{% endif %}</td></tr>
{% endfor %}
</table></div>
{% endfor %}
{% endif %}

{% if d.campaign %}
<h2>Random fault-injection campaign</h2>
{% for c in campaigns %}
<h3>{{ c.fault.label }}: {{ c.description }}</h3>
<p class="lead">{{ c.trials }} random failure sets × {{ c.inputs }} ({{ c.evaluations | int_ }} evaluations).
Random failure sets on random inputs usually stay well below the worst case; the certificates cover all of them.</p>
{% if c.figure %}<div class="figure"><img alt="campaign error histogram" src="data:image/png;base64,{{ c.figure }}">
</div>{% endif %}
<div class="tscroll"><table>
<tr><th class="n">max</th><th class="n">mean</th>{% for q in c.quantiles %}<th class="n">q{{ q }}</th>{% endfor %}
{% if c.changed_rate is not none %}<th class="n">changed predictions</th>{% endif %}
<th class="n">worst case found by search</th>
<th class="n">tight certificate</th><th class="n">paper certificate</th><th>status</th></tr>
<tr><td class="n">{{ c.max_error | num }}</td><td class="n">{{ c.mean_error | num }}</td>
{% for q, v in c.quantiles.items() %}<td class="n">{{ v | num }}</td>{% endfor %}
{% if c.changed_rate is not none %}<td class="n">{{ (100 * c.changed_rate) | num(3) }} %</td>{% endif %}
<td class="n">{{ c.search_worst | num }}</td>
<td class="n">{{ c.certificate_tight | num }}</td><td class="n">{{ c.certificate_paper | num }}</td>
<td>{% if c.status == "VIOLATION" %}<span class="pill bad">VIOLATION</span>{% elif c.status == "unbounded"
  %}<span class="pill unb">unbounded</span>{% else %}<span class="pill ok">ok</span>{% endif %}</td></tr>
</table></div>
{% endfor %}
{% endif %}

{% if d.outside %}
<h2>Data outside the domain</h2>
<p class="lead">{{ d.outside.n_points }} of the {{ d.outside.n_given }} given data points lie outside the domain
{{ d.outside.domain }} ({{ d.outside.features_outside }} feature(s) outside, by up to {{ d.outside.max_excess | num }}).
The certificates hold over the domain only, so these points were left out of the worst-case search and the campaign,
and what failures do to them is shown here apart: <b>not covered by any certificate, and never a violation</b>.</p>
<div class="tscroll"><table>
<tr><th>fault</th><th>failures</th><th class="n">random failure sets</th><th class="n">largest error measured there</th>
<th class="n">tight certificate (domain only)</th><th>status</th></tr>
{% for m in d.outside.measured %}
<tr><td>{{ m.fault.label }}</td><td>{{ m.description }}</td><td class="n">{{ m.trials }}</td>
<td class="n">{{ m.max_error | num }}</td><td class="n">{{ m.certificate_tight | num }}</td>
<td><span class="pill out">outside the domain</span></td></tr>
{% endfor %}
</table></div>
{% endif %}

<h2>The network</h2>
<p class="lead">Input shape {{ d.network.input_shape }}, domain {{ d.network.domain }}, {{ d.network.n_outputs }}
output(s). Layers are numbered as in the paper: hidden layers 1..L, then the linear output L+1.</p>
<div class="tscroll"><table>
<tr><th class="n">layer</th><th>kind</th><th>operations</th><th class="n">width N<sub>l</sub></th>
<th class="n">fan-in</th><th class="n">w<sub>m</sub></th><th>activation</th><th class="n">K</th><th>range</th></tr>
{% for l in d.network.layers %}
<tr><td class="n">{{ l.layer }}</td><td>{{ l.kind }}</td><td class="mono">{{ l.ops }}</td>
<td class="n">{{ l.width }}</td>
<td class="n">{{ l.fan_in }}</td><td class="n">{{ l.w_max | num }}</td><td>{{ l.activation or "(linear output)" }}</td>
<td class="n">{{ l.K | num }}</td>
<td class="mono">{% if l.range %}[{{ "−∞" if l.range[0] is none else l.range[0] | num(3)
  }}, {{ "∞" if l.range[1] is none else l.range[1] | num(3) }}]{% endif %}</td></tr>
{% endfor %}
</table></div>

{% if d.notes %}
<h2>Notes</h2>
<ul class="notes">{% for n in d.notes %}<li>{{ n }}</li>{% endfor %}</ul>
{% endif %}

<h2>Reproducibility</h2>
<dl class="kv">
<dt>command</dt><dd><pre>{{ d.meta.command or "(library call)" }}</pre></dd>
<dt>seed</dt><dd>{{ d.meta.seed }}</dd>
<dt>faultbound</dt><dd>{{ d.meta.faultbound_version }}</dd>
<dt>torch / Python</dt><dd>{{ d.meta.torch_version }} / {{ d.meta.python_version }}</dd>
<dt>created</dt><dd>{{ d.meta.created_utc }}</dd>
<dt>fault models</dt><dd>{{ d.spec.faults | map(attribute="label") | join(", ") }}</dd>
</dl>
<footer>Generated by faultbound {{ d.meta.faultbound_version }}. The same data is available as JSON
(<code>faultbound report … --json</code>).</footer>
</main>
</body>
</html>
"""


def _num(v: Any, digits: int = 4) -> str:
    return _fmt(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v, digits)


def _ratio_fmt(v: Any) -> str:
    return "—" if v is None else f"{float(v):.3g}×"


def _units(fs: Any) -> str:
    if not fs:
        return "—"
    if isinstance(fs, dict):
        return "; ".join(f"{k}: {list(v)}" for k, v in fs.items())
    return str(fs)


def _vec(v: Any, n: int = 8) -> str:
    if not v:
        return "—"
    vals = [f"{float(x):.3g}" for x in list(v)[:n]]
    more = f", … ({len(v)} values)" if len(v) > n else ""
    return "[" + ", ".join(vals) + more + "]"


def _widths(ws: Sequence[int]) -> str:
    """The widths card: every width up to 8 layers, else ``"6 × 40"`` or ``"4–64 (40 layers)"``."""
    ws = list(ws)
    if len(ws) <= 8:
        return " · ".join(str(w) for w in ws)
    if len(set(ws)) == 1:
        return f"{ws[0]} × {len(ws)}"
    return f"{min(ws)}–{max(ws)} ({len(ws)} layers)"


def render_html(data: ReportData, figures: bool = True) -> str:
    """The report as one self-contained HTML page (inline CSS, plots as base64 PNG, no scripts).

    Args:
        data: from :func:`build_report`.
        figures: draw the plots (needs matplotlib); False renders tables only.
    """
    try:
        import jinja2
    except ImportError as e:  # pragma: no cover - report extra
        raise FaultboundError("HTML reports need jinja2: pip install 'faultbound[report]'.") from e
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        num=_num,
        ratio=_ratio_fmt,
        units=_units,
        vec=_vec,
        int_=lambda v: f"{int(v):,}" if v else "0",
        flist=short_failures,
        widths=_widths,
    )
    d = data.to_dict()
    groups: list[dict[str, Any]] = []
    for row in d["rows"]:
        label = row["fault"]["label"]
        if not groups or groups[-1]["label"] != label:
            groups.append({"label": label, "rows": [], "figure": None})
        groups[-1]["rows"].append(row)
    campaigns = [dict(c, figure=None) for c in d["campaign"] or ()]
    if figures:
        for g in groups:
            if any(r["tight"].get("value") or r["paper"].get("value") for r in g["rows"]):
                g["figure"] = _png(plot_certificates(g["rows"])[0])
        for c in campaigns:
            c["figure"] = _png(plot_campaign(c)[0])
    return env.from_string(TEMPLATE).render(d=d, groups=groups, campaigns=campaigns)
