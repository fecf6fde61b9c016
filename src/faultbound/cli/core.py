"""Core commands: inspect, bound, tolerate, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import typer
from rich.table import Table

from faultbound.bounds.api import METHODS, BoundResult, Method, bound
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
    parse_ints,
    print_json,
)
from faultbound.cli._data import DOMAIN_FROM_DATA, fit_domain, say_widened
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault, parse_fault


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


@app.command()
def inspect(
    model: Path = MODEL,
    domain: str | None = DOMAIN,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    json: bool = JSON,
) -> None:
    """Show the extracted Network: per layer width N_l, fan-in, w_m, activation, K, range."""
    net = load_model(model, domain, trust_pickle, input_shape)
    info = net.summary()
    if json:
        print_json(info)
        return
    console.print(_network_table(net, f"{model.name}: L = {net.L} hidden layers, domain {info['domain']}, "
                                      f"{net.n_params} parameters"))


def _bound_table(results: list[BoundResult], title: str) -> Table:
    n = max(len(r.per_layer) for r in results)
    t = Table(title=title)
    t.add_column("method")
    t.add_column("bound", justify="right")
    for l in range(1, n + 1):
        t.add_column(f"layer {l}", justify="right")
    for r in results:
        t.add_row(
            r.method,
            "unbounded" if r.unbounded else f"{r.value:.6g}",
            *[f"{v:.4g}" for v in r.per_layer],
        )
    return t


@app.command("bound")
def bound_cmd(
    model: Path = MODEL,
    failures: str | None = typer.Option(None, "--failures", help="f_1,...,f_L (L+1 entries for synapse faults)."),
    fault: str = typer.Option("crash", "--fault", help=FAULT_HELP),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1; inf allowed)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    method: str = typer.Option(
        "both", "--method", help="paper, tight, both (paper + tight), or exact (MILP; piecewise-linear networks)."
    ),
    time_limit: float | None = typer.Option(
        None, "--time-limit", help="Seconds for --method exact; past it the solver's bound is reported, with the gap."
    ),
    measure: bool = typer.Option(False, "--measure", help="Also search for the worst case and print the ratio."),
    domain: str | None = DOMAIN,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    json: bool = JSON,
) -> None:
    """Certified bound on the output error (inf-norm) for a failure distribution (Theorem 2)."""
    net = load_model(model, domain, trust_pickle, input_shape)
    flt = make_fault(fault, capacity, value, errors)
    if flt.counted and failures is None:
        raise InvalidArgumentError("Expected --failures f_1,...,f_L.")
    f = parse_ints(failures, "failures") if flt.counted and failures is not None else None
    methods = _methods(method, exact=True)
    if time_limit is not None and methods != ["exact"]:
        raise InvalidArgumentError("Expected --time-limit only with --method exact.")
    results = [
        bound(net, f, flt, m, time_limit=time_limit) if m == "exact" else bound(net, f, flt, m)
        for m in methods
    ]
    best = min(results, key=lambda r: r.value)
    out: dict[str, Any] = best.to_dict()
    out["results"] = [r.to_dict() for r in results]
    if measure:
        out["measured"] = _measure(net, flt, f, best.value)
    if json:
        print_json(out)
        return
    console.print(_bound_table(results, f"{flt.name} bound for failures {list(best.failures)}"))
    for note in dict.fromkeys(n for r in results for n in r.notes):
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
    method: str = typer.Option("both", "--method", help="paper, tight, or both."),
    domain: str | None = DOMAIN,
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    json: bool = JSON,
) -> None:
    """Largest tolerated failure distributions: Fep <= eps - eps' (Theorem 3)."""
    if (eps_prime is None) == (data is None):
        raise InvalidArgumentError("Expected exactly one of --eps-prime and --data.")
    net = load_model(model, domain, trust_pickle, input_shape)
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
    results = [tolerate(net, eps, ep, flt, m) for m in _methods(method)]
    if json:
        out = results[-1].to_dict()
        out["domain_from_data"] = widened
        out["results"] = [r.to_dict() for r in results]
        if len(results) == 2:
            cmp = MethodComparison(results[0], results[1]).to_dict()
            out["comparison"] = {k: cmp[k] for k in ("per_layer_gain", "uniform_gain", "tolerated_gain")}
        print_json(out)
        return
    say_widened(widened, json)
    _tolerance_tables(results)


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
