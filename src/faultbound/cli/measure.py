"""Measurement commands: ``inject`` (fault-injection campaigns) and ``worst`` (worst-case search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from faultbound.cli._common import FAULT_HELP as COMMON_FAULT_HELP
from faultbound.cli._common import (
    INPUT_SHAPE,
    MODEL,
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
from faultbound.faults import Fault, Precision
from faultbound.measure import BitFlip, CampaignSpec, campaign_inputs, run_campaign, worst_case

FAULT_HELP = f"{COMMON_FAULT_HELP[:-1]}, bitflip-neuron, bitflip-weight."


def _fault(name: str, capacity: float | None, value: float | None, errors: str | None, fmt: str) -> Fault:
    """:func:`make_fault` plus the single-bit-flip models of the engine."""
    if name in ("bitflip-neuron", "bitflip-weight"):
        if fmt not in ("float32", "int8"):
            raise InvalidArgumentError(f"Expected --format float32 or int8, but got {fmt!r}.")
        return BitFlip("neuron" if name == "bitflip-neuron" else "weight", fmt)  # type: ignore[arg-type]
    return make_fault(name, capacity, value, errors)


def _summary_table(d: dict[str, Any], title: str) -> Table:
    t = Table(title=title)
    t.add_column("figure")
    t.add_column("value", justify="right")

    def fmt(v: Any) -> str:
        return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)

    for key in ("evaluations", "max_error", "mean_error"):
        t.add_row(key, fmt(d.get(key)))
    for q, v in (d.get("quantiles") or {}).items():
        t.add_row(f"error quantile {q}", fmt(v))
    for key in ("changed_rate", "accuracy", "clean_accuracy"):
        if key in d:
            ci = d.get(f"{key}_ci95")
            t.add_row(key, fmt(d[key]) + (f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
    return t


@app.command("inject")
def inject_cmd(
    model: Path = MODEL,
    data: Path | None = typer.Option(None, "--data", help="Inputs: .npz (X, optional integer labels y), .npy or .csv."),
    digits: bool = typer.Option(False, "--digits", help="Inputs: scikit-learn's digits (labels included)."),
    samples: int | None = typer.Option(None, "--samples", help="Inputs: N points drawn uniformly from the domain."),
    fault: str = typer.Option("crash", "--fault", help=FAULT_HELP),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    fmt: str = typer.Option("float32", "--format", help="Bit-flip number format: float32 or int8."),
    failures: str | None = typer.Option(None, "--failures", help="Failing units per layer f_1,...,f_L."),
    rate: float | None = typer.Option(None, "--rate", help="Each unit fails independently with probability p."),
    trials: int = typer.Option(100, "--trials", min=0, help="Number of fault configurations."),
    batch: int = typer.Option(64, "--batch", min=1, help="Configurations per chunk (the checkpoint granularity)."),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Seed of every random choice (recorded in the result)."
    ),
    values: str = typer.Option("random", "--values", help="Byzantine/precision values: random, adversarial, fixed."),
    float64: bool = typer.Option(False, "--float64", help="Run the engine in float64 (default float32)."),
    resume: Path | None = typer.Option(None, "--resume", help="Checkpoint file: written as the run goes, resumed."),
    domain: str | None = typer.Option(None, "--domain", help="Input box LO,HI for every feature (default 0,1)."),
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling a full torch module."),
    input_shape: str | None = INPUT_SHAPE,
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run a fault-injection campaign: TRIALS sampled fault configurations on every input."""
    f = _fault(fault, capacity, value, errors, fmt)
    if trials < 0:
        raise InvalidArgumentError(f"Expected --trials >= 0, but got {trials}.")
    if batch < 1:
        raise InvalidArgumentError(f"Expected --batch >= 1, but got {batch}.")
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise InvalidArgumentError(f"Expected --rate in [0, 1], but got {rate}.")
    if samples is not None and samples < 1:
        raise InvalidArgumentError(f"Expected --samples >= 1, but got {samples}.")
    if data is not None and not data.exists():
        raise InvalidArgumentError(f"Data file not found: {data}")
    if sum([data is not None, digits, samples is not None]) != 1:
        raise InvalidArgumentError("Expected exactly one of --data FILE, --digits or --samples N.")
    if not isinstance(f, Precision) and (failures is None) == (rate is None):
        raise InvalidArgumentError("Expected exactly one of --failures f1,f2,... or --rate p.")
    net = load_model(model, domain, trust_pickle, input_shape)
    x, labels = campaign_inputs(net, data=data, digits=digits, samples=samples, seed=seed)
    widened = None
    if samples is None:
        net, widened = fit_domain(net, x, str(data) if data is not None else "the digits", domain_from_data)
    spec = CampaignSpec(
        f,
        trials,
        failures=None if failures is None or isinstance(f, Precision) else tuple(parse_ints(failures)),
        rate=None if isinstance(f, Precision) else rate,
        seed=seed,
        chunk=batch,
        values=values,  # type: ignore[arg-type]
        dtype="float64" if float64 else "float32",
    )
    spec.check(net)
    show = trials > batch and err_console.is_terminal
    with Progress(
        TextColumn("[bold]inject"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=True, disable=not show,
    ) as bar:
        task = bar.add_task("configurations", total=trials)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done)

        res = run_campaign(net, x, spec, labels=labels, checkpoint=resume, progress=tick)
    d = res.to_dict()
    d["model"] = str(model)
    d["domain_from_data"] = widened
    if json:
        print_json(d)
        return
    say_widened(widened, json)
    console.print(_summary_table(d, f"{model.name}: {f.name}, {trials} configurations x {res.n_inputs} inputs"))
    w = d.get("worst")
    if w:
        console.print(
            f"worst: error {w['error']:.6g} at configuration {w['configuration']} "
            f"(failing units {w['faults']['sites']}), input #{w['input_index']}; seed {seed}"
        )


@app.command("worst")
def worst_cmd(
    model: Path = MODEL,
    fault: str = typer.Option("crash", "--fault", help=FAULT_HELP),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    failures: str | None = typer.Option(None, "--failures", help="Failing units per layer f_1,...,f_L."),
    probes: int = typer.Option(32, "--probes", min=0, help="Random probe inputs (domain corners are added)."),
    data: Path | None = typer.Option(None, "--data", help="Extra probe inputs (.npz/.npy/.csv)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed of the search."),
    domain: str | None = typer.Option(None, "--domain", help="Input box LO,HI for every feature (default 0,1)."),
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling a full torch module."),
    input_shape: str | None = INPUT_SHAPE,
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Search failure sets, inputs and Byzantine values for the largest output error (a lower bound
    on the true worst case)."""
    f = _fault(fault, capacity, value, errors, "float32")
    if isinstance(f, BitFlip):
        raise InvalidArgumentError("Expected a fault other than bit flips for `worst`; use `inject`.")
    if probes < 0:
        raise InvalidArgumentError(f"Expected --probes >= 0, but got {probes}.")
    if not isinstance(f, Precision) and failures is None:
        raise InvalidArgumentError("Expected --failures f1,f2,... (one count per layer).")
    if data is not None and not data.exists():
        raise InvalidArgumentError(f"Data file not found: {data}")
    net = load_model(model, domain, trust_pickle, input_shape)
    extra = campaign_inputs(net, data=data)[0] if data is not None else None
    widened = None
    if extra is not None:
        net, widened = fit_domain(net, extra, str(data), domain_from_data)
    fl = None if isinstance(f, Precision) or failures is None else parse_ints(failures)
    r = worst_case(net, f, fl, inputs=extra, n_probe=probes, seed=seed)
    r["model"] = str(model)
    r["domain_from_data"] = widened
    if json:
        print_json(r)
        return
    say_widened(widened, json)
    how = "exhaustive over failure sets" if r["exhaustive"] else "beam search over failure sets"
    console.print(
        f"worst case found: error {r['max_error']:.6g} ({how}, {r['evaluations']} evaluations, seed {seed})\n"
        f"failing units {r.get('failure_set')}\ninput {[round(v, 4) for v in r['input'][:16]]}"
        + (" ..." if len(r["input"]) > 16 else "")
    )
