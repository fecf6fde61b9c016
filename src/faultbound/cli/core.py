"""Core commands: inspect, bound, tolerate, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import typer
from rich.table import Table

from faultbound.bounds.api import METHODS, BoundResult, Method, bound, default_method
from faultbound.bounds.tolerance import EpsPrime, MethodComparison, ToleranceResult, estimate_eps_prime, tolerate
from faultbound.cli._common import (
    DOMAIN,
    FAULT_HELP,
    INPUT_SHAPE,
    JSON,
    MODEL,
    TRUST,
    app,
    console,
    err_console,
    load_model,
    make_fault,
    print_json,
)
from faultbound.cli._data import DOMAIN_FROM_DATA, fit_domain, say_widened
from faultbound.cli._sites import FAILURES_HELP, SITES, parse_failures, site_names
from faultbound.errors import FaultboundError, InvalidArgumentError
from faultbound.faults import Fault, parse_fault
from faultbound.network.graph import GraphNetwork


def _methods(method: str, exact: bool = False) -> list[Method]:
    """``both`` is paper + tight; ``exact`` (opt-in, slow) only where the command supports it."""
    if method == "both":
        return ["paper", "tight"]
    if method == "exact" and exact:
        return ["exact"]
    if method not in METHODS:
        names = [*METHODS, *(["exact"] if exact else []), "both"]
        raise InvalidArgumentError(f"Expected --method to be one of {', '.join(names)}, but got {method!r}.")
    return [cast(Method, method)]  # a key of METHODS


def _network_table(net: Any, title: str) -> Table:
    """Per layer: N_l, fan-in, w_m, activation, K, range (the quantities the bounds read)."""
    t = Table(title=title)
    for col in ("layer", "ops", "N_l", "fan-in", "w_m", "activation", "K", "range"):
        t.add_column(col, justify="right" if col not in ("ops", "activation") else "left")
    for r in net.summary()["layers"]:
        t.add_row(
            str(r["layer"]),
            r["ops"],
            str(r["width"]),
            str(r["fan_in"]),
            f"{r['w_max']:.4g}",
            r["activation"] or "(linear output)",
            "" if r["K"] is None else f"{r['K']:.4g}",
            "" if r["range"] is None else f"[{r['range'][0]:.3g}, {r['range'][1]:.3g}]",
        )
    return t


def _range(r: Any) -> str:
    return "" if r is None else f"[{r[0]:.3g}, {r[1]:.3g}]"


def _sites_table(net: GraphNetwork, title: str) -> Table:
    """Per fault site, in the order --failures addresses them: node, N, fan-in, activation, K,
    range, Y (largest |value| over the domain, by interval propagation); shapes are in --nodes and
    --json."""
    t = Table(title=title)
    wide = min(48, max(len(s.name) for s in net.sites))  # names are what --sites/--failures take: never cut
    for col in ("site", "node", "N", "fan-in", "activation", "K", "range", "Y"):
        t.add_column(
            col,
            justify="left" if col in ("node", "activation") else "right",
            min_width=wide if col == "node" else None,
            overflow="fold",
        )
    for r in net.summary()["sites"]:  # type: ignore[attr-defined]
        t.add_row(
            str(r["site"]),
            r["node"],
            str(r["width"]),
            "" if r["fan_in"] is None else str(r["fan_in"]),
            r["activation"] or "(named)",
            "" if r["K"] is None else f"{r['K']:.4g}",
            _range(r["range"]),
            f"{r['Y']:.4g}",
        )
    return t


def _nodes_table(net: GraphNetwork, title: str) -> Table:
    """Every node of the graph: number, name, operator, inputs, output shape, fault site."""
    t = Table(title=title)
    wide = min(48, max(len(n.name) for n in net.nodes))
    for col in ("#", "node", "op", "inputs", "shape", "site"):
        t.add_column(
            col,
            justify="right" if col in ("#", "site") else "left",
            min_width=wide if col == "node" else None,
            overflow="fold",
        )
    site_of = {s.node: s.index for s in net.sites}
    for i, n in enumerate(net.nodes):
        t.add_row(
            str(i),
            n.name,
            n.op.describe(),
            ", ".join(net.nodes[j].name for j in n.inputs),
            "x".join(str(v) for v in n.shape),
            str(site_of.get(i, "")),
        )
    return t


@app.command()
def inspect(
    model: Path = MODEL,
    domain: str | None = DOMAIN,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    nodes: bool = typer.Option(False, "--nodes", help="Graphs: also list every node with its operator and inputs."),
    json: bool = JSON,
) -> None:
    """Show the extracted Network: per layer (or, for a graph, per fault site in the order --failures
    addresses them) width N, fan-in, activation, K, range; --nodes lists a graph's nodes."""
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    info = net.summary()
    if json:
        print_json(info)
        return
    if isinstance(net, GraphNetwork):
        console.print(
            _sites_table(
                net,
                f"{model.name}: a graph of {len(net.nodes)} nodes, S = {net.L} fault sites, domain {info['domain']}, "
                f"{net.n_params} parameters, {net.n_outputs} outputs, format {info['format']}",
            )
        )
        if nodes:
            console.print(_nodes_table(net, f"{model.name}: nodes in topological order"))
        return
    if nodes:
        raise InvalidArgumentError(f"Expected --nodes only for a graph network, but {model.name} is a chain of layers.")
    console.print(
        _network_table(
            net,
            f"{model.name}: L = {net.L} hidden layers, domain {info['domain']}, "
            f"{net.n_params} parameters, format {info['format']}",
        )
    )


def _site_bound_table(results: list[BoundResult], names: list[str], title: str) -> Table:
    """A graph's bound: one row per fault site (its node, its count, each method's contribution),
    then the total."""
    t = Table(title=title)
    wide = min(48, max((len(n) for n in names), default=4))
    for col in ("site", "node", "f", *(r.method for r in results)):
        t.add_column(col, justify="left" if col == "node" else "right", min_width=wide if col == "node" else None)
    counts = list(results[0].failures)
    for k, name in enumerate(names):
        t.add_row(
            str(k + 1),
            name,
            str(counts[k]) if k < len(counts) else "",
            *[f"{r.per_layer[k]:.4g}" if k < len(r.per_layer) else "" for r in results],
        )
    if any(r.rounding for r in results):  # a float16 / bfloat16 model: the allowance inside the bound
        t.add_row("", "rounding", "", *[f"{r.rounding:.4g}" for r in results])
    t.add_row("", "bound", "", *["unbounded" if r.unbounded else f"{r.value:.6g}" for r in results])
    return t


def _bounds(
    net: Any, f: list[int] | None, flt: Fault, methods: list[Method], method: str
) -> tuple[list[BoundResult], list[str]]:
    """:func:`bound` for each method; on a graph with ``--method both``, a paper bound that the
    library refuses is left out with a note (``tight`` is defined on every graph)."""
    results: list[BoundResult] = []
    notes: list[str] = []
    for m in methods:
        try:
            results.append(bound(net, f, flt, m))
        except FaultboundError as e:
            if not (isinstance(net, GraphNetwork) and method == "both" and m == "paper"):
                raise
            notes.append(f"paper bound not computed on this graph: {str(e).splitlines()[0]}")
    return results, notes


def _bound_table(results: list[BoundResult], title: str) -> Table:
    n = max(len(r.per_layer) for r in results)
    t = Table(title=title)
    t.add_column("method")
    t.add_column("bound", justify="right")
    for l in range(1, n + 1):
        t.add_column(f"layer {l}", justify="right")
    rounding = any(r.rounding for r in results)  # a float16 / bfloat16 model: the allowance inside the bound
    if rounding:
        t.add_column("rounding", justify="right")
    for r in results:
        t.add_row(
            r.method,
            "unbounded" if r.unbounded else f"{r.value:.6g}",
            *[f"{v:.4g}" for v in r.per_layer],
            *([f"{r.rounding:.4g}"] if rounding else []),
        )
    return t


@app.command("bound")
def bound_cmd(
    model: Path = MODEL,
    failures: str | None = typer.Option(None, "--failures", help=FAILURES_HELP),
    fault: str = typer.Option("crash", "--fault", help=FAULT_HELP),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1; inf allowed)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    method: str | None = typer.Option(
        None,
        "--method",
        help="paper, tight, both (paper + tight, the value is the smaller; on a graph, paper only where the "
        "library defines it), or exact (MILP; piecewise-linear networks). Default, as faultbound.bound: paper "
        "on a layered network, tight on a graph.",
    ),
    time_limit: float | None = typer.Option(
        None, "--time-limit", help="Seconds for --method exact; past it the solver's bound is reported, with the gap."
    ),
    measure: bool = typer.Option(False, "--measure", help="Also search for the worst case and print the ratio."),
    domain: str | None = DOMAIN,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = JSON,
) -> None:
    """Certified bound on the output error (inf-norm) for a failure distribution (Theorem 2); by default
    the method faultbound.bound uses (paper on a layered network, tight on a graph), --method both
    for both."""
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    flt = make_fault(fault, capacity, value, errors)
    if flt.counted and failures is None:
        raise InvalidArgumentError("Expected --failures f_1,...,f_L.")
    f = parse_failures(failures, net, flt) if flt.counted and failures is not None else None
    method = default_method(net) if method is None else method
    methods = _methods(method, exact=True)
    if time_limit is not None and methods != ["exact"]:
        raise InvalidArgumentError("Expected --time-limit only with --method exact.")
    skipped: list[str] = []
    if methods == ["exact"]:
        results = [bound(net, f, flt, "exact", time_limit=time_limit)]
    else:
        results, skipped = _bounds(net, f, flt, methods, method)
    best = min(results, key=lambda r: r.value)
    out: dict[str, Any] = best.to_dict()
    out["results"] = [r.to_dict() for r in results]
    if skipped:
        out["notes"] = [*out.get("notes", []), *skipped]
    if measure:
        out["measured"] = _measure(net, flt, f, best.value)
    if json:
        print_json(out)
        return
    if isinstance(net, GraphNetwork) and not best.per_layer:
        console.print(_bound_table(results, f"{flt.name} bound for failures {list(best.failures)}"))
    elif isinstance(net, GraphNetwork):
        names = site_names(net, flt)
        console.print(_site_bound_table(results, names, f"{flt.name} bound, per fault site"))
    else:
        console.print(_bound_table(results, f"{flt.name} bound for failures {list(best.failures)}"))
    for note in dict.fromkeys([*(n for r in results for n in r.notes), *skipped]):
        console.print(f"note: {note}", style="dim")
    for r in results:
        if r.method == "exact" and r.witness is not None:
            state = "optimal" if r.optimal else "time limit: the worst case lies in between"
            console.print(
                f"exact: witness reaches {r.lower:.6g}, certificate {r.value:.6g} ({state}); "
                f"failure set {r.witness['failure_set']}"
            )
    if measure:
        m = out["measured"]
        console.print(
            f"worst case found: {m['max_error']:.6g} ({'exhaustive' if m['exhaustive'] else 'search'}, "
            f"{m['evaluations']} evaluations); certificate / worst case = {m['ratio']:.3g}"
        )


def _measure(net: Any, fault: Fault, failures: list[int] | None, certificate: float) -> dict[str, Any]:
    from faultbound.measure import worst_case

    d = worst_case(net, fault, failures).to_dict()
    worst = float(d["max_error"])
    d["certificate"] = certificate
    d["ratio"] = certificate / worst if worst > 0 else None
    d.setdefault("evaluations", None)
    return d


def _tolerance_tables(results: list[ToleranceResult]) -> None:
    r0 = results[0]
    ep = r0.eps_prime
    src = f"estimated from {ep.n_samples} samples ({ep.source}), from below" if ep.estimated else "given"
    console.print(
        f"eps = {r0.eps:g}, eps' = {ep.value:.4g} ({src}), budget eps - eps' = {r0.budget:.4g}, fault {r0.fault.name}"
    )
    t = Table(title="Largest tolerated failures (Theorem 3)")
    t.add_column("method")
    t.add_column("per layer (others 0)", justify="right")
    t.add_column("uniform fraction p", justify="right")
    t.add_column("f at p", justify="right")
    t.add_column("maximal distributions", justify="left")
    for r in results:
        maximal = "not enumerated" if r.maximal is None else ", ".join(str(list(m)) for m in r.maximal[:8])
        if r.maximal is not None and len(r.maximal) > 8:
            maximal += f", ... ({len(r.maximal)} in all)"
        t.add_row(
            r.method, str(list(r.per_layer_max)), f"{r.uniform_fraction:.3g}", str(list(r.uniform_failures)), maximal
        )
    console.print(t)
    by = {r.method: r for r in results}
    if "paper" in by and "tight" in by:
        cmp = MethodComparison(by["paper"], by["tight"])
        rp, rt = by["paper"], by["tight"]
        parts = [f"per-layer maxima {list(rp.per_layer_max)} -> {list(rt.per_layer_max)}"]
        if rt.n_tolerated is not None and rp.n_tolerated is not None:
            gain = cmp.tolerated_gain
            parts.append(
                f"{rt.n_tolerated} tolerated distributions vs {rp.n_tolerated}"
                + (f" ({gain:.3g}x)" if gain is not None else "")
            )
        console.print("tight vs paper: " + "; ".join(parts))
    for note in dict.fromkeys(n for r in results for n in r.notes):
        console.print(f"note: {note}", style="dim")


@app.command("tolerate")
def tolerate_cmd(
    model: Path = MODEL,
    eps: float = typer.Option(..., "--eps", help="Accuracy to keep under failures."),
    eps_prime: float | None = typer.Option(None, "--eps-prime", help="Accuracy the network has (sup error)."),
    data: Path | None = typer.Option(None, "--data", help=".npz with X and y to estimate eps' from (from below)."),
    fault: str = typer.Option("crash", "--fault", help=FAULT_HELP),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    method: str = typer.Option(
        "both", "--method", help="paper, tight, or both (on a graph, paper only where the library defines it)."
    ),
    domain: str | None = DOMAIN,
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = JSON,
) -> None:
    """Largest tolerated failure distributions: Fep <= eps - eps' (Theorem 3); on a graph, per
    fault site in the order `inspect` lists them."""
    if (eps_prime is None) == (data is None):
        raise InvalidArgumentError("Expected exactly one of --eps-prime and --data.")
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    widened = None
    if data is not None:
        from faultbound.data import load_arrays

        X, y = load_arrays(str(data))
        if y is None:
            raise InvalidArgumentError(f"Expected targets 'y' in {data} to estimate eps'.")
        net, widened = fit_domain(net, X, str(data), domain_from_data)
        ep: EpsPrime | float = estimate_eps_prime(net, X, y)
    else:
        assert eps_prime is not None  # exactly one of --eps-prime and --data, checked above
        ep = float(eps_prime)
    flt = parse_fault(fault, capacity, value)
    results: list[ToleranceResult] = []
    skipped: list[str] = []
    for m in _methods(method):
        try:
            with err_console.status(f"{m}: tolerance search") as status:
                results.append(tolerate(net, eps, ep, flt, m, progress=status.update))
        except FaultboundError as e:
            if not (isinstance(net, GraphNetwork) and method == "both" and m == "paper"):
                raise
            skipped.append(f"paper tolerance not computed on this graph: {str(e).splitlines()[0]}")
    if json:
        out = results[-1].to_dict()
        if skipped:
            out["notes"] = [*out.get("notes", []), *skipped]
        out["domain_from_data"] = widened
        out["results"] = [r.to_dict() for r in results]
        if len(results) == 2:
            cmp = MethodComparison(results[0], results[1]).to_dict()
            out["comparison"] = {k: cmp[k] for k in ("per_layer_gain", "uniform_gain", "tolerated_gain")}
        print_json(out)
        return
    say_widened(widened, json)
    _tolerance_tables(results)
    if isinstance(net, GraphNetwork):
        names = site_names(net, flt)
        console.print("sites: " + ", ".join(f"{k + 1} {n}" for k, n in enumerate(names)), style="dim")
    for note in skipped:
        console.print(f"note: {note}", style="dim")


@app.command()
def demo(
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Random seed."),
    epochs: int = typer.Option(300, "--epochs", min=1, help="Training epochs per network."),
    json: bool = JSON,
) -> None:
    """Train small TunedSigmoid MLPs on an embedded target and certify them (seconds)."""
    from faultbound.demo import run_demo

    if epochs < 1:
        raise InvalidArgumentError(f"Expected --epochs >= 1, but got {epochs}.")
    with err_console.status("starting") as status:
        nets = run_demo(seed=seed, epochs=epochs, progress=lambda msg: status.update(msg))
    if json:
        print_json(
            {
                "seed": seed,
                "networks": [
                    {
                        "name": d.name,
                        "summary": d.net.summary(),
                        "eps": d.eps,
                        "eps_prime": d.eps_prime.to_dict(),
                        "bounds": [{"failures": list(f), **v} for f, v in d.bounds],
                        "tolerance": {m: r.to_dict() for m, r in d.tolerance.items()},
                        "theorem1": d.theorem1,
                    }
                    for d in nets
                ],
            }
        )
        return
    console.print(
        "[bold]faultbound demo[/bold]: MLPs with the paper's tuned sigmoid, trained on the target "
        "F(x) = 0.5 + 0.4 sin(2 pi x1) x2 over [0,1]^2; crash faults."
    )
    for d in nets:
        console.rule(f"{d.name}: widths {d.net.widths}, trained in {d.train_seconds:.1f} s")
        console.print(_network_table(d.net, f"{d.name}: the Network the bounds read"))
        methods = list(d.bounds[0][1])
        t = Table(title="Certified output error for failure distributions (crash)")
        t.add_column("failures f_l")
        for m in methods:
            t.add_column(m, justify="right")
        if len(methods) == 2:
            t.add_column("paper / tight", justify="right")
        for f, vals in d.bounds:
            row = [str(list(f)), *[f"{vals[m]:.4g}" for m in methods]]
            if len(methods) == 2:
                row.append(f"{vals['paper'] / vals['tight']:.3g}" if vals["tight"] > 0 else "-")
            t.add_row(*row)
        console.print(t)
        if d.theorem1 is not None:
            console.print(
                f"Theorem 1: this single-layer network tolerates {d.theorem1} crashed neurons "
                f"(N_fail <= (eps - eps') / w_m)."
            )
        _tolerance_tables(list(d.tolerance.values()))
