"""The report's words: labels of fault models and failure distributions, the verdict's colour
and the plain-language verdict.

**The verdict's colour** (:func:`verdict_level`). A finite certificate is *informative* when it is 0,
or at most :data:`INFORMATIVE_RATIO` times the worst case found (the true worst case is then pinned
within that factor), or, with ε given, at most the budget ε − ε' (it proves the setting tolerated).
The verdict is ``"violation"`` (red) when a certificate lies below a measurement, ``"informative"``
(green) when there is a finite certificate and every finite certificate is informative, and
``"loose"`` (amber) otherwise: sound, but it says little about this network.

Example:
    >>> from faultbound.faults import Crash
    >>> describe_failures(Crash(), (2, 1))
    '2 crashed neurons in layer 1 and 1 in layer 2'
    >>> layer_list([1, 2, 3, 4, 7])
    '1–4 and 7'
    >>> informative({"value": 9.9}, 1.0, None), informative({"value": 10.1}, 1.0, None)
    (True, False)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from faultbound.faults import FAULTS, Fault

if TYPE_CHECKING:
    from faultbound.report.build import BoundRow, OutsideSummary, ToleranceEntry

__all__ = [
    "INFORMATIVE_RATIO",
    "Level",
    "describe_failures",
    "fmt",
    "informative",
    "layer_list",
    "short_failures",
    "unit_words",
    "verdict",
    "verdict_level",
]

Level = Literal["informative", "loose", "violation"]

#: A certificate at most this many times the worst case found is informative (:func:`verdict_level`).
INFORMATIVE_RATIO = 10.0


def unit_words(fault: Fault | str, n: int) -> str:
    """``"2 crashed neurons"``; ``fault`` is a model or its CLI name (from a JSON record)."""
    model = FAULTS[fault](1.0, 0.0) if isinstance(fault, str) and fault in FAULTS else fault
    adj = model.adjective if isinstance(model, Fault) else "failing"
    unit = "synapse" if isinstance(model, Fault) and model.site == "synapse" else "neuron"
    return f"{n} {adj} {unit}{'' if n == 1 else 's'}"


def describe_failures(fault: Fault, failures: Sequence[int]) -> str:
    """The distribution in words: ``"1 crashed neuron in layer 1"``, ``"2 crashed neurons in layer 1
    and 1 in layer 2"``; synapses are counted into the layer that receives them."""
    if not fault.counted:
        return "every hidden neuron off by its layer's precision error"
    into = " into" if fault.site == "synapse" else " in"
    parts = [(l, n) for l, n in enumerate(failures, start=1) if n > 0]
    if not parts:
        return "no failure"
    if len(set(n for _, n in parts)) == 1 and len(parts) > 1:
        return f"{unit_words(fault, parts[0][1])}{into} each of layers {layer_list([l for l, _ in parts])}"
    words = [f"{unit_words(fault, parts[0][1])}{into} layer {parts[0][0]}"]
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


def informative(tight: dict[str, Any], worst: float, budget: float | None) -> bool:
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


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "∞"
        return f"{v:.{digits}g}"
    return str(v)


def verdict(
    rows: Sequence[BoundRow],
    tolerance: Sequence[ToleranceEntry] | None,
    violations: int,
    outside: OutsideSummary | None = None,
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
        ratio = "" if first.ratio_tight is None else f" (ratio {fmt(first.ratio_tight, 3)})"
        subject = "with" if isinstance(first.fault.get("errors"), list) else "under any"
        pcert = first.paper
        paper_says = "" if pcert.get("undefined") else f"; the paper's bound gives {fmt(pcert.get('value'))}"
        parts.append(
            f"{subject.capitalize()} {first.description}{label}, the output moves by at most "
            f"{fmt(tight)} (tight certificate{paper_says}); "
            f"the worst case found is {fmt(first.worst)}{ratio}."
        )
    ok = [r for r in rows if r.status == "ok"]
    if len(rows) > 1 and ok:
        rt = [r.ratio_tight for r in ok if r.ratio_tight is not None]
        span = ""
        if rt:
            span = f" (tight certificate / worst case between {fmt(min(rt), 3)} and {fmt(max(rt), 3)})"
        what = "every certificate lies above" if not violations else "the other certificates lie above"
        scope = f"all {len(rows)}" if len(ok) + violations == len(rows) else f"the {len(ok) + violations}"
        parts.append(
            f"Over {scope} fault settings checked with a finite certificate, {what} the worst case found{span}."
        )
    loose = [r for r in rows if r.tight.get("value") is not None and not r.informative]
    if loose and not violations:
        worst_row = max(loose, key=lambda r: r.ratio_tight or math.inf)
        ratio = "" if worst_row.ratio_tight is None else f"up to {fmt(worst_row.ratio_tight, 3)} times, "
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
        tt, tp = t.tight, t.paper
        ep = tt["eps_prime"]
        src = "given" if not ep["estimated"] else "estimated from below"
        fault = t.fault
        into = "into" if fault["name"].startswith("synapse") else "in"
        cap = "" if "capacity" not in fault else f" (C = {fmt(fault['capacity'])})"
        head = f"To keep the error within ε = {fmt(tt['eps'])} (ε' = {fmt(ep['value'])}, {src}), the tight certificate"
        per = list(tt["per_layer_max"])
        per_p = None if tp.get("undefined") else list(tp["per_layer_max"])
        if len(per) <= 6:
            counts = [f"{n} {into} layer {l}" for l, n in enumerate(per, start=1)]
            counts[0] = f"{unit_words(fault['name'], per[0])} {into} layer 1"
            paper = "" if per_p is None else f" (the paper's bound: {', '.join(str(n) for n in per_p)})"
            parts.append(f"{head} allows up to {', or '.join(counts)}{cap}, one layer at a time{paper}.")
        elif per_p is None:
            zero = [l for l, n in enumerate(per, start=1) if n == 0]
            none = "" if not zero else f"; none in {len(zero)} of the {len(per)} layers ({layer_list(zero)})"
            parts.append(
                f"{head} allows, one layer at a time, between {min(per)} and {max(per)} "
                f"{'synapses' if into == 'into' else 'neurons'} per layer{cap}{none} (every layer in the tolerance "
                "table)."
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
        worst_out = [m.max_error for m in outside.measured if m.max_error is not None]
        err = "" if not worst_out else f"; random failures there moved the output by up to {fmt(max(worst_out))}"
        parts.append(
            f"{outside.n_points} of the {outside.n_given} given data points lie outside the domain "
            f"{outside.domain}: the certificates do not cover them, so they are reported apart, never as "
            f"violations{err}."
        )
    return " ".join(parts)
