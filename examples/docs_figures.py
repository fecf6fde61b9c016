"""Print the tables and findings that docs/applications.md quotes, from the outputs of applications.sh.

Usage::

    python examples/docs_figures.py [OUT]                    # print every quoted block (markdown)
    python examples/docs_figures.py [OUT] --check DOC.md     # exit 1 if a block in DOC.md differs
    python examples/docs_figures.py [OUT] --write DOC.md     # replace the blocks in DOC.md

``OUT`` (default ``examples/output``) is the folder ``bash examples/applications.sh OUT`` wrote:
``*/summary.json`` (train), ``json/*.json`` (precision and boost), ``json/*.args`` (the arguments
of each command, the folder written as OUT), ``sweep/sweep.csv`` and ``figures/figure3.csv``. Every
number below is read from those files and formatted here; nothing is typed in by hand. In the page,
a block is delimited by ``<!-- quoted:NAME -->`` and ``<!-- /quoted -->``.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BLOCK = re.compile(r"<!-- quoted:(?P<name>[a-z0-9_]+) -->\n(?P<body>.*?)<!-- /quoted -->", re.S)


def g(v: float, digits: int = 4) -> str:
    """The page's number format: ``digits`` significant digits, no exponent for ordinary sizes."""
    return f"{v:.{digits}g}"


def _json(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / "json" / f"{name}.json").read_text())


def _cmd(out: Path, name: str) -> str:
    """The recorded command (applications.sh writes the output folder as OUT)."""
    return "faultbound " + (out / "json" / f"{name}.args").read_text().strip()


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def models(out: Path) -> str:
    rows = [
        "| command | fraction of test points within 0.05 | epochs to 0.9 | crashes | Fep | tight bound | "
        "measured (200 random crash sets) | ε′ estimate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("wave", "wave_robust"):
        s = json.loads((out / name / "summary.json").read_text())
        rows.append(
            f"| `{_cmd(out, name)}` | {s['accuracy']:.3f} | {s['epochs_to_target']} | {s['failures']} | "
            f"{g(s['fep_printed'])} | {g(s['bound_tight'])} | {g(s['measured_max_error'])} | "
            f"{g(s['eps_prime_estimate'], 3)} |"
        )
    return "\n".join(rows) + "\n"


def _formats(fs: list[dict[str, Any]]) -> str:
    return ", ".join(f["format"] for f in fs)


def precision(out: Path) -> str:
    rows = [
        "| command | formats (layer 1, layer 2) | certified | measured with rounding | worst found (±λ model) | "
        "memory vs float32 | optimality |",
        "|---|---|---|---|---|---|---|",
    ]
    found = []
    for name in ("precision_paper", "precision_tight", "precision_weights"):
        p = _json(out, name)
        fmts = _formats(p["activation_formats"])
        if p["weight_formats"]:
            fmts += "; weights " + _formats(p["weight_formats"])
        cert = f"{g(p['certified'])} ({p['method']})"
        if p["method"] != "paper":
            cert = f"{g(p['certified'])} ({p['method']}; paper bound of this plan {g(p['certified_paper'])})"
        lb = p["objective_lower_bound"]
        opt = (
            f"optimal under the {p['method']} bound (objective {p['objective_frac_bits']} = lower bound {lb})"
            if p["optimal"]
            else f"objective {p['objective_frac_bits']}, " + ("no lower bound" if lb is None else f"lower bound {lb}")
        )
        rows.append(
            f"| `{_cmd(out, name)}` | {fmts} | {cert} | {g(p['measured'])} | {g(p['searched_lambda_model'])} | "
            f"{p['memory_bits']} vs {p['float32_bits']} bits, {100 * p['memory_saved']:.1f}% saved | {opt} |"
        )
        if p["method"] != "paper":
            found.append(p["searched_lambda_model"] / p["certified"])
    paper, tight = _json(out, "precision_paper"), _json(out, "precision_tight")
    text = "\n".join(rows) + "\n\nWhat the table shows:\n"
    text += (
        f"- Under the tight bound the same budget costs {tight['objective_frac_bits']} fractional bits instead of "
        f"{paper['objective_frac_bits']}; memory falls from {paper['memory_bits']} to {tight['memory_bits']} bits.\n"
    )
    if found:
        text += (
            f"- The adversarial search for neurons off by ±λ_l reaches {100 * min(found):.0f} to "
            f"{100 * max(found):.0f}% of the tight certificate, so most of the slack left is the difference "
            "between the ±λ fault model and real rounding, not the bound.\n"
        )
    return text


BOOST_RUNS = ("boost_chosen", "boost_33_exponential", "boost_33_pareto", "boost_33_per_sender")


def _triple(d: dict[str, float]) -> str:
    return " / ".join(g(d[k]) for k in ("median", "p99", "p99.9"))


def boost(out: Path) -> str:
    rows = [
        "| command | f | delays | wait all: median / p99 / p99.9 | boosted: median / p99 / p99.9 | "
        "speed-up: median / p99 / p99.9 | error measured max (median) | certified |",
        "|---|---|---|---|---|---|---|---|",
    ]
    res = {}
    for name in BOOST_RUNS:
        if not (out / "json" / f"{name}.json").exists():
            continue
        r = res[name] = _json(out, name)
        sp = " / ".join(f"{r['speedup'][k]:.3g}x" for k in ("median", "p99", "p99.9"))
        f = f"{r['failures']}" + (" (chosen)" if name == "boost_chosen" else "")
        rows.append(
            f"| `{_cmd(out, name)}` | {f} | {r['delays']} | {_triple(r['latency_wait_all'])} | "
            f"{_triple(r['latency_boosted'])} | {sp} | {g(r['measured_max_error'])} "
            f"({g(r['measured_median_error'])}) | {g(r['certified'])} ({r['method']}) |"
        )
    text = "\n".join(rows) + "\n\nWhat the table shows:\n"
    p = res["boost_33_pareto"]
    n = p["waits"]
    text += (
        f"- With a heavy-tailed latency (Pareto) and per-synapse delays, each neuron waiting for {n[1]} of its "
        f"{n[1] + p['failures'][0]} inputs cuts the p99.9 latency by {p['speedup']['p99.9']:.3g}x.\n"
    )
    c = res["boost_chosen"]
    ratio = c["measured_max_error"] / c["certified"]
    text += (
        f"- At ε − ε′ = {g(c['eps'])} − {g(c['eps_prime'])}, the distribution chosen is f = {c['failures']} "
        f"({c['delays']} delays); its measured error is {100 * ratio:.1f}% of its certificate "
        f"({g(c['measured_max_error'])} of {g(c['certified'])}).\n"
    )
    e = res["boost_33_exponential"]
    text += (
        f"- Per synapse, f = {e['failures']} is certified for {g(e['certified'])} ({e['method']}), beside the "
        f"crash bound {g(e['crash_certified'])}; so it keeps the network an ε-approximation for every "
        f"ε ≥ {g(c['eps_prime'])} + {g(e['certified'])}. The worst measured error is "
        f"{100 * e['measured_max_error'] / e['certified']:.0f}% of the certificate.\n"
    )
    if "boost_33_per_sender" in res:
        s = res["boost_33_per_sender"]
        text += (
            f"- Per sender (a slow neuron is late for every receiver), the same Pareto delays give a p99.9 "
            f"speed-up of {s['speedup']['p99.9']:.3g}x instead of {p['speedup']['p99.9']:.3g}x: waiting for every "
            f"signal is slower per synapse, where a receiver waits for the slowest of its own "
            f"{n[1] + p['failures'][0]} synapses. The measured error is {g(s['measured_max_error'])} against the "
            f"crash certificate {g(s['certified'])} ({s['method']}).\n"
        )
    return text


def sweep(out: Path) -> str:
    rs = _csv(out / "sweep" / "sweep.csv")
    rows = [
        "| K | fep-weight | accuracy | epochs to 0.9 | Fep (paper) | tight | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        rows.append(
            f"| {float(r['K']):g} | {float(r['fep_weight']):g} | {float(r['accuracy']):.3f} | "
            f"{r['epochs_to_target'] or 'never'} | {g(float(r['bound_paper']))} | {g(float(r['bound_tight']))} | "
            f"{g(float(r['measured_max_error']))} |"
        )
    plain = sorted((r for r in rs if float(r["fep_weight"]) == 0), key=lambda r: float(r["K"]))
    lo, hi = plain[0], plain[-1]
    text = "\n".join(rows) + "\n\nWhat the table shows:\n"
    text += (
        f"- **Larger K learns faster but is less robust.** Without the regulariser, K = {float(lo['K']):g} needs "
        f"{lo['epochs_to_target']} epochs to reach 90% and K = {float(hi['K']):g} needs {hi['epochs_to_target']}, "
        f"while Fep grows from {g(float(lo['bound_paper']))} to {g(float(hi['bound_paper']))} and the measured "
        f"error from {g(float(lo['measured_max_error']))} to {g(float(hi['measured_max_error']))}.\n"
    )
    one = [r for r in rs if float(r["K"]) == 1.0]
    if len(one) >= 2:
        a, b = sorted(one, key=lambda r: float(r["fep_weight"]))[:2]
        text += (
            f"- **The Fep regulariser buys robustness with learning.** At K = 1 it cuts Fep from "
            f"{g(float(a['bound_paper']))} to {g(float(b['bound_paper']))} and the measured error from "
            f"{g(float(a['measured_max_error']))} to {g(float(b['measured_max_error']))}, for "
            f"{100 * (float(a['accuracy']) - float(b['accuracy'])):.1f} points of accuracy.\n"
        )
    return text


def _trend(values: list[float]) -> str:
    """How a series moves as K grows: by its end points and the direction of most of its steps."""
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    up, down = sum(d > 0 for d in steps), sum(d < 0 for d in steps)
    if values[-1] > values[0] and up > down:
        return "grows" if down == 0 else "mostly grows"
    if values[-1] < values[0] and down > up:
        return "falls" if up == 0 else "mostly falls"
    return "shows no steady trend"


def figure3(out: Path) -> str:
    rs = _csv(out / "figures" / "figure3.csv")
    ks = [float(r["K"]) for r in rs]

    def k_name(k: float) -> str:
        return f"1/{round(1 / k)}" if k < 1 and abs(1 / k - round(1 / k)) < 1e-9 else f"{k:g}"

    def line(label: str, col: str, fmt: Callable[[float], str] = lambda v: g(v, 3)) -> str:
        return f"| {label} | " + " | ".join(fmt(float(r[col])) if r[col] != "" else "" for r in rs) + " |"

    rows = ["| K | " + " | ".join(k_name(k) for k in ks) + " |", "|---|" + "---|" * len(ks)]
    rows.append(line("trained per K: accuracy (within 0.05)", "accuracy"))
    rows.append(line("trained per K: epochs trained", "epochs_trained", lambda v: f"{v:.0f}"))
    rows.append(line("trained per K: worst error, all crash sets", "measured_max_error"))
    rows.append(line("trained per K: Fep (paper)", "bound_paper"))
    rows.append(line("trained per K: tight bound", "bound_tight"))
    rows.append(line("K = 1 weights, retuned: worst error, all crash sets", "retuned_measured_max_error"))
    rows.append(line("K = 1 weights, retuned: Fep (paper)", "retuned_bound_paper"))
    rows.append(line("K = 1 weights, retuned: tight bound", "retuned_bound_tight"))
    text = "\n".join(rows) + "\n\n"
    methods = sorted({r["measure"] for r in rs})
    sets = sorted({int(r["crash_sets"]) for r in rs})
    target = json.loads((out / "figures" / "figure3_config.json").read_text())
    text += (
        f"Measured: {' and '.join(methods)} over {', '.join(map(str, sets))} crash sets of "
        f"f = ({', '.join(rs[0]['failures'].split())}) "
        f"on the test inputs. Each network trained until its accuracy reached {g(target['target'])}, "
        f"for at most {target['epochs']} epochs.\n\n"
    )
    reached = [k_name(k) for k, r in zip(ks, rs, strict=True) if r["reached_target"] == "True"]
    missed = [k_name(k) for k, r in zip(ks, rs, strict=True) if r["reached_target"] != "True"]
    trained = [float(r["measured_max_error"]) for r in rs]
    fep = [float(r["bound_paper"]) for r in rs]
    ret = [float(r["retuned_measured_max_error"]) for r in rs]
    ret_fep = [float(r["retuned_bound_paper"]) for r in rs]
    growth = [b / a for a, b in zip(ret_fep, ret_fep[1:], strict=False)]
    text += "What the figure shows, beside the paper's claim (5.3: the smaller K, the more robust the network):\n"
    text += (
        f"- **Same weights, K retuned: the claim holds.** The worst measured error {_trend(ret)} with K, "
        f"from {g(ret[0], 3)} at K = {k_name(ks[0])} to {g(ret[-1], 3)} at K = {k_name(ks[-1])}; Fep grows by a "
        f"factor of {min(growth):.2g} to {max(growth):.2g} per step of K.\n"
    )
    text += (
        f"- **The printed Fep of the trained networks** {_trend(fep)} with K, from {g(fep[0], 3)} to "
        f"{g(fep[-1], 3)}: as a certificate, the claim holds there too.\n"
    )
    status = (
        "every network reached the target" if not missed
        else f"the networks with K = {', '.join(missed)} did not reach the target; those with K = "
        f"{', '.join(reached) or 'none'} did"
    )
    holds = _trend(trained) in ("grows", "mostly grows")
    text += (
        f"- **Independently trained networks: the measured error {_trend(trained)} as K grows**, from "
        f"{g(trained[0], 3)} at K = {k_name(ks[0])} to {g(trained[-1], 3)} at K = {k_name(ks[-1])} ({status}). "
        + ("Here the claim holds for trained networks too.\n" if holds else
           "So the claim holds for K with the weights held fixed and for the printed Fep, not for networks "
           "trained independently to the same accuracy.\n")
    )
    return text


BLOCKS: dict[str, Callable[[Path], str]] = {
    "models": models,
    "precision": precision,
    "boost": boost,
    "sweep": sweep,
    "figure3": figure3,
}


def render(out: Path) -> dict[str, str]:
    """Every quoted block, by name."""
    return {name: fn(out) for name, fn in BLOCKS.items()}


def check(doc: str, blocks: dict[str, str]) -> list[str]:
    """The problems of ``doc``: blocks that differ from ``blocks``, and blocks missing from it."""
    problems = []
    seen = set()
    for m in BLOCK.finditer(doc):
        name = m["name"]
        seen.add(name)
        if name not in blocks:
            problems.append(f"unknown block {name!r}")
        elif m["body"] != blocks[name]:
            problems.append(f"block {name!r} differs from the script's output")
    problems += [f"block {n!r} missing from the page" for n in blocks if n not in seen]
    return problems


def write(doc: str, blocks: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: f"<!-- quoted:{m['name']} -->\n{blocks[m['name']]}<!-- /quoted -->", doc)


def main(argv: list[str]) -> int:
    args = list(argv)
    mode, doc_path = None, None
    for flag in ("--check", "--write"):
        if flag in args:
            i = args.index(flag)
            mode, doc_path = flag, Path(args[i + 1])
            del args[i : i + 2]
    out = Path(args[0]) if args else Path("examples/output")
    blocks = render(out)
    if mode is None:
        for name, body in blocks.items():
            print(f"<!-- quoted:{name} -->\n{body}<!-- /quoted -->\n")
        return 0
    assert doc_path is not None
    doc = doc_path.read_text()
    if mode == "--write":
        doc_path.write_text(write(doc, blocks))
        return 0
    problems = check(doc, blocks)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
