"""Application commands: precision, boost, train, sweep, figures (Section 5 of the paper)."""

from __future__ import annotations

import json as jsonlib
import math
from pathlib import Path
from typing import Any, cast

import typer
from rich.table import Table

from faultbound.cli._common import (
    DOMAIN,
    INPUT_SHAPE,
    JSON,
    MODEL,
    TRUST,
    app,
    console,
    err_console,
    load_model,
    parse_floats,
    parse_ints,
    print_json,
)
from faultbound.cli._data import DOMAIN_FROM_DATA, inputs_in_domain, say_widened
from faultbound.cli._sites import FAILURES_HELP, SITES, parse_failures
from faultbound.errors import InvalidArgumentError

EPS = typer.Option(None, "--eps", help="Accuracy to keep, epsilon.")
EPS_PRIME = typer.Option(None, "--eps-prime", help="Accuracy the network has, epsilon'.")
METHOD = typer.Option("auto", "--method", help="Bound: auto (tight when available), paper or tight.")


def _finite(name: str, v: float | None) -> None:
    if v is not None and not math.isfinite(v):
        raise InvalidArgumentError(f"Expected a finite --{name}, but got {v}.")


def _budget(
    eps: float | None, eps_prime: float | None, budget: float | None
) -> tuple[float, float | None, float | None]:
    for n, v in (("eps", eps), ("eps-prime", eps_prime), ("budget", budget)):
        _finite(n, v)
    if budget is not None:
        if eps is not None or eps_prime is not None:
            raise InvalidArgumentError("Expected either --budget or --eps with --eps-prime, not both.")
        if budget <= 0:
            raise InvalidArgumentError(f"Expected --budget > 0, but got {budget}.")
        return budget, None, None
    if eps is None or eps_prime is None:
        raise InvalidArgumentError("Expected --eps and --eps-prime (the budget is eps - eps'), or --budget.")
    from faultbound.bounds.api import check_eps

    check_eps(eps, eps_prime)
    if eps - eps_prime <= 0:
        raise InvalidArgumentError(f"Expected eps > eps', but got eps = {eps}, eps' = {eps_prime}.")
    return eps - eps_prime, eps, eps_prime


@app.command()
def precision(
    model: Path = MODEL,
    eps: float | None = EPS,
    eps_prime: float | None = EPS_PRIME,
    budget: float | None = typer.Option(None, "--budget", help="Allowed output error (instead of eps, eps')."),
    weights: bool = typer.Option(False, "--weights", help="Also plan the weights' fixed-point formats."),
    method: str = METHOD,
    max_frac_bits: int = typer.Option(40, "--max-frac-bits", min=0, help="Most fractional bits per format."),
    data: Path | None = typer.Option(None, "--data", help="Inputs (.npz/.npy/.csv) to measure on, besides samples."),
    samples: int = typer.Option(2048, "--samples", help="Uniform domain samples to measure on."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    domain: str | None = DOMAIN,
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    json: bool = JSON,
) -> None:
    """Theorem 5: cheapest per-layer fixed-point formats whose certified output error fits the budget.

    Prints the formats, the certified error and the error measured by running the quantized network.
    """
    from faultbound.apps.precision import PlanMethod, measure_plan, plan_precision, probe_description, search_plan

    b, e, ep = _budget(eps, eps_prime, budget)
    if samples < 0:
        raise InvalidArgumentError(f"Expected --samples >= 0, but got {samples}.")
    net, X, widened = inputs_in_domain(load_model(model, domain, trust_pickle, input_shape), data, domain_from_data)
    m = cast(PlanMethod, method)  # plan_precision checks it
    with err_console.status("planning the formats") as status:
        plan = plan_precision(net, budget=b, weights=weights, method=m, max_frac_bits=max_frac_bits,
                              progress=status.update)
        status.update("measuring the quantized network")
        measured = measure_plan(net, plan, X, samples, seed)
        status.update("searching inputs for the largest quantization error")
        searched = search_plan(net, plan, X, seed)
    out = {"model": str(model), "eps": e, "eps_prime": ep, **plan.to_dict(), "measured": measured,
           "measured_on": probe_description(net, X, samples),
           "searched_lambda_model": searched,
           "within_budget": measured <= plan.certified + 1e-12 and plan.certified <= plan.budget, "seed": seed,
           "domain_from_data": widened}
    if json:
        print_json(out)
        return
    say_widened(widened, json)
    t = Table(title=f"Precision plan for {model.name}: budget {b:.4g}, certified by the {plan.method} bound")
    graph = net.layers is None
    for col in ("site" if graph else "layer", "neurons", "format", "word bits", "lambda_l (per neuron)"):
        t.add_column(col, justify="right")
    names = [s.name for s in net.sites] if graph else [str(l) for l in range(1, net.L + 1)]
    for name, n, fmt, lam in zip(names, net.widths, plan.act_formats, plan.lambdas, strict=True):
        t.add_row(name, str(n), fmt.name, str(fmt.word_bits), f"{lam:.3g}")
    console.print(t)
    if plan.weight_formats is not None:
        console.print("weights: " + ", ".join(f"layer {i}: {f.name}" for i, f in enumerate(plan.weight_formats, 1)))
    console.print(
        f"certified error {plan.certified:.4g}"
        + ("" if plan.certified_paper is None else f" (paper bound {plan.certified_paper:.4g})")
        + f" <= budget {b:.4g}; "
        f"measured with rounding {measured:.4g}; worst found for neurons off by +-lambda_l {searched:.4g}"
    )
    console.print(
        f"memory {plan.memory_bits} bits vs float32 {plan.float32_bits} bits: {100 * plan.memory_saved:.1f}% saved; "
        + f"{'optimal' if plan.optimal else 'not proven optimal'} under the {plan.method} bound (objective "
        f"{plan.frac_bits_cost} fractional bits, lower bound {plan.lower_bound})"
    )
    console.print(f"measured on: {out['measured_on']}")
    for n in plan.notes:
        console.print(f"note: {n}")


@app.command()
def boost(
    model: Path = MODEL,
    eps: float | None = EPS,
    eps_prime: float | None = EPS_PRIME,
    failures: str | None = typer.Option(None, "--failures", help="Crash distribution to tolerate. " + FAILURES_HELP),
    latency: str = typer.Option("exponential", "--latency", help="exponential, lognormal or pareto."),
    params: str | None = typer.Option(
        None, "--params", help="Latency parameters: scale | mu,sigma | alpha,x_m (defaults 1 | 0,1 | 2.5,1)."
    ),
    runs: int = typer.Option(10_000, "--runs", min=1, help="Simulated executions."),
    error_runs: int = typer.Option(500, "--error-runs", min=0, help="Runs that also measure the output error."),
    delays: str = typer.Option(
        "auto", "--delays",
        help="per-synapse (each neuron waits for its own first N - f inputs; layered networks of dense layers), "
        "per-sender (one delay per neuron; graphs: per fault site) or auto (per-synapse where it applies, "
        "else per-sender).",
    ),
    data: Path | None = typer.Option(None, "--data", help="Inputs (.npz/.npy/.csv) to measure the error on, too."),
    samples: int = typer.Option(256, "--samples", min=0, help="Uniform domain samples to measure the error on."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    domain_from_data: bool = DOMAIN_FROM_DATA,
    method: str = METHOD,
    domain: str | None = DOMAIN,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = JSON,
) -> None:
    """Corollary 2: wait for only N - f signals per layer; latency and error, simulated.

    per-synapse: every synapse has its own delay and each neuron drops its own late inputs;
    per-sender: each layer's (fault site's) f_l latest neurons are dropped (value 0) for every
    receiver; on a graph a site starts once the sites it reads are available. auto (the default):
    per-synapse on a layered network of dense layers, per-sender otherwise.
    """
    from faultbound.apps.boosting import DELAY_CHOICES, LatencyModel, choose_failures, resolve_delays, simulate_boost
    from faultbound.faults import Crash

    lat = LatencyModel.make(latency, parse_floats(params, "params") if params else None)
    if runs < 1 or error_runs < 0:
        raise InvalidArgumentError(f"Expected --runs >= 1 and --error-runs >= 0, but got {runs} and {error_runs}.")
    if delays not in DELAY_CHOICES:
        raise InvalidArgumentError(f"Expected --delays among {', '.join(DELAY_CHOICES)}, but got {delays!r}.")
    if samples < 0:
        raise InvalidArgumentError(f"Expected --samples >= 0, but got {samples}.")
    net, X, widened = inputs_in_domain(
        load_model(model, domain, trust_pickle, input_shape, sites), data, domain_from_data
    )
    delays = resolve_delays(net, delays)
    notes: list[str] = []
    if failures is not None:
        if eps is not None or eps_prime is not None:
            raise InvalidArgumentError("Expected either --failures or --eps with --eps-prime, not both.")
        f = tuple(parse_failures(failures, net, Crash()))
    else:
        if eps is None or eps_prime is None:
            raise InvalidArgumentError(
                "Expected --eps and --eps-prime (to choose a tolerated distribution), or --failures."
            )
        _finite("eps", eps)
        _finite("eps-prime", eps_prime)
        with err_console.status("choosing a tolerated failure distribution"):
            f, notes = choose_failures(net, eps, eps_prime, lat, method, seed, delays=delays)
    with err_console.status(f"simulating {runs} runs") as status:
        r = simulate_boost(net, f, lat, runs, seed, method, error_runs, X=X, n_inputs=samples, eps=eps,
                           eps_prime=eps_prime, delays=delays, progress=status.update)
    out = {"model": str(model), **r.to_dict(), "domain_from_data": widened}
    out["notes"] = notes + out["notes"]
    if json:
        print_json(out)
        return
    say_widened(widened, json)
    t = Table(title=f"Boosting {model.name}: f = {list(r.failures)}, waits {list(r.waits)}, {lat.kind} {lat.params}, "
                    f"{delays} delays, {runs} runs, seed {seed}")
    for col in ("latency", "wait for all", "wait for N - f", "speed-up"):
        t.add_column(col, justify="right")
    for k in ("mean", "median", "p99", "p99.9"):
        t.add_row(k, f"{r.wait_all[k]:.4g}", f"{r.boosted[k]:.4g}", f"{r.speedup[k]:.3g}x")
    console.print(t)
    console.print(
        f"output error with the late signals dropped ({r.error_runs} runs, {r.n_inputs} inputs): "
        f"max {r.measured_max:.4g}, median {r.measured_median:.4g}; certified ({r.method}) {r.certified:.4g}"
        + ("" if r.within_bound else "  EXCEEDED")
        + ("" if r.crash_certified is None else f"; crash bound ({method}) {r.crash_certified:.4g}")
    )
    console.print(f"inputs: {r.probe}")
    for n in out["notes"]:
        console.print(f"note: {n}")


def _make_dir(out: Path) -> None:
    """Create the output directory up front, so that a bad path fails before any training."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidArgumentError(f"Cannot write to {out}: {e.strerror or e}") from None


def _train_config(**kw: Any) -> Any:
    from faultbound.apps.training import TrainConfig

    widths = tuple(parse_ints(kw.pop("widths"), "widths"))
    fails = kw.pop("failures")
    f = tuple(parse_ints(fails)) if fails else None
    cfg = TrainConfig(widths=widths, failures=f, **kw)
    cfg.check()
    return cfg


DATASET = typer.Option("digits", "--dataset", help="digits (classification) or synthetic (regression of wave).")
WIDTHS = typer.Option("32", "--widths", help="Hidden widths, comma-separated.")
EPOCHS = typer.Option(30, "--epochs", min=1)
FAILS = typer.Option(None, "--failures", help="Fixed crash distribution for bounds and measurement (default 10%).")


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", help="Directory for model.pt2, model.onnx and summary.json."),
    dataset: str = DATASET,
    K: float = typer.Option(1.0, "--K", "-K", help="Lipschitz constant of the TunedSigmoid neurons."),  # noqa: N803
    widths: str = WIDTHS,
    weight_cap: float | None = typer.Option(None, "--weight-cap", help="Clamp weights to [-cap, cap]."),
    fep_weight: float = typer.Option(0.0, "--fep-weight", help="Weight of the Fep regulariser in the loss."),
    fep_kind: str = typer.Option("neuron", "--fep-kind", help="Regulariser: paper or neuron (per-neuron bound)."),
    failures: str | None = FAILS,
    epochs: int = EPOCHS,
    target: float = typer.Option(0.9, "--target", help="Target accuracy for epochs-to-target."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    json: bool = JSON,
) -> None:
    """Train a TunedSigmoid(K) network (optionally Fep-regularised, weight-clipped) and write it."""
    from faultbound.apps.training import export_model, train

    if fep_kind not in ("paper", "neuron"):
        raise InvalidArgumentError(f"Expected --fep-kind paper or neuron, but got {fep_kind!r}.")
    for n, v in (("K", K), ("fep-weight", fep_weight), ("target", target)):
        _finite(n, v)
    cfg = _train_config(dataset=dataset, K=K, widths=widths, weight_cap=weight_cap, fep_weight=fep_weight,
                        fep_kind=fep_kind, failures=failures, epochs=epochs, target=target, seed=seed)
    _make_dir(out)
    res = train(cfg)
    d_in = res.network.input_shape[0]
    try:
        files = export_model(res.model, out, d_in)
    except OSError as e:
        raise InvalidArgumentError(f"Cannot write to {out}: {e}") from None
    summary = {**res.summary, "files": files, "history": res.history}
    (Path(out) / "summary.json").write_text(jsonlib.dumps(summary, indent=2))
    if json:
        print_json(summary)
        return
    s = res.summary
    console.print(
        f"{dataset}, K = {K:g}, widths {list(cfg.widths)}: {s['metric']} {s['accuracy']:.3f}, epochs to "
        f"{target:g}: {s['epochs_to_target']}"
    )
    tight = "n/a" if s["bound_tight"] is None else f"{s['bound_tight']:.4g}"
    console.print(
        f"crashes {s['failures']}: Fep {s['fep_printed']:.4g}, tight bound {tight}, "
        f"measured {s['measured_max_error']:.4g}"
    )
    console.print(f"wrote {', '.join(v for k, v in files.items() if v and not k.endswith('error'))} and "
                  f"{Path(out) / 'summary.json'}")


@app.command("sweep")
def sweep_cmd(
    out: Path = typer.Option(..., "--out", help="Directory for sweep.csv and sweep.png."),
    ks: str = typer.Option("0.25,1,4", "--Ks", help="Values of K, comma-separated."),
    fep_weights: str = typer.Option("0,0.05", "--fep-weights", help="Regulariser weights, comma-separated."),
    dataset: str = DATASET,
    widths: str = typer.Option("16,16", "--widths", help="Hidden widths, comma-separated."),
    failures: str | None = FAILS,
    epochs: int = typer.Option(10, "--epochs", min=1),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    json: bool = JSON,
) -> None:
    """Learning cost (accuracy, epochs to target) against certified and measured robustness."""
    from faultbound.apps.training import sweep, write_csv
    from faultbound.report.figures import sweep_figure

    Ks = parse_floats(ks, "Ks")
    lams = parse_floats(fep_weights, "fep-weights")
    if any(not (math.isfinite(k) and k > 0) for k in Ks) or any(not (math.isfinite(v) and v >= 0) for v in lams):
        raise InvalidArgumentError("Expected --Ks > 0 and --fep-weights >= 0, all finite.")
    cfg = _train_config(dataset=dataset, widths=widths, failures=failures, epochs=epochs, seed=seed)
    _make_dir(out)
    rows = sweep(Ks, lams, cfg)
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_csv(rows, Path(out) / "sweep.csv")
        fig = sweep_figure(rows)
        fig.savefig(Path(out) / "sweep.png", dpi=120)
    except OSError as e:
        raise InvalidArgumentError(f"Cannot write to {out}: {e}") from None
    if json:
        print_json({"rows": rows, "csv": str(Path(out) / "sweep.csv"), "png": str(Path(out) / "sweep.png")})
        return
    t = Table(title=f"Sweep on {dataset}, widths {list(cfg.widths)}, crashes {rows[0]['failures']}, {epochs} epochs")
    for col in ("K", "fep-weight", "accuracy", "epochs to target", "Fep (paper)", "tight", "measured"):
        t.add_column(col, justify="right")
    for r in rows:
        tight = "" if r["bound_tight"] is None else f"{r['bound_tight']:.4g}"
        t.add_row(f"{r['K']:g}", f"{r['fep_weight']:g}", f"{r['accuracy']:.3f}", str(r["epochs_to_target"]),
                  f"{r['bound_paper']:.4g}", tight, f"{r['measured_max_error']:.4g}")
    console.print(t)
    console.print(f"wrote {Path(out) / 'sweep.csv'} and {Path(out) / 'sweep.png'}")


@app.command()
def figures(
    out: Path = typer.Option(..., "--out", help="Directory for figure2/3 .png and .csv."),
    ks: str = typer.Option("0.125,0.25,0.5,1,2,4,8", "--Ks", help="Values of K for Figure 3."),
    epochs: int = typer.Option(200, "--epochs", min=1, help="Most training epochs per Figure 3 network."),
    target: float = typer.Option(0.9, "--target", help="Each Figure 3 network trains until it reaches this accuracy."),
    json: bool = JSON,
) -> None:
    """Write the paper's Figure 2 (tuned sigmoids) and Figure 3 (error against K) as PNG and CSV."""
    from dataclasses import replace

    from faultbound.report.figures import figure3_config, write_figures

    Ks = parse_floats(ks, "Ks")
    if not Ks or any(not (math.isfinite(k) and k > 0) for k in Ks):
        raise InvalidArgumentError(f"Expected --Ks > 0, finite, but got {ks!r}.")
    if epochs < 1:
        raise InvalidArgumentError(f"Expected --epochs >= 1, but got {epochs}.")
    if not (math.isfinite(target) and 0 < target <= 1):
        raise InvalidArgumentError(f"Expected --target in (0, 1], but got {target}.")
    _make_dir(out)
    try:
        paths = write_figures(out, Ks, replace(figure3_config(), epochs=epochs, target=target))
    except OSError as e:
        raise InvalidArgumentError(f"Cannot write to {out}: {e}") from None
    if json:
        print_json(paths)
        return
    for v in paths.values():
        console.print(f"wrote {v}")
