"""Measurement commands: ``inject`` (fault-injection campaigns) and ``worst`` (worst-case search)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal, cast, get_args

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
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
    make_fault,
    print_json,
)
from faultbound.cli._common import FAULT_HELP as COMMON_FAULT_HELP
from faultbound.cli._data import DOMAIN_FROM_DATA, fit_domain, say_widened
from faultbound.cli._sites import FAILURES_HELP, SITES, parse_failures
from faultbound.errors import InvalidArgumentError
from faultbound.faults import BitFlip, BitFormat, Fault, fault_from_record
from faultbound.measure import (
    CampaignSpec,
    campaign_inputs,
    load_state,
    merge_campaign_states,
    run_campaign,
    worst_case,
)
from faultbound.measure.campaign import inputs_fingerprint, shard_chunks, spec_from_dict
from faultbound.measure.values import ValueMode

FAULT_HELP = f"{COMMON_FAULT_HELP[:-1]}, bitflip-neuron, bitflip-weight."

Backend = Literal["local", "ray"]
"""Where ``inject`` and ``worst`` evaluate: in this process, or as Ray tasks."""


def _fault(name: str, capacity: float | None, value: float | None, errors: str | None, fmt: str) -> Fault:
    """:func:`make_fault` plus the single-bit-flip models of the engine."""
    if name in ("bitflip-neuron", "bitflip-weight"):
        if fmt not in get_args(BitFormat):
            raise InvalidArgumentError(f"Expected --format among {', '.join(get_args(BitFormat))}, but got {fmt!r}.")
        target: Literal["neuron", "weight"] = "neuron" if name == "bitflip-neuron" else "weight"
        return BitFlip(target, cast(BitFormat, fmt))  # one of BitFormat's, checked above
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


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InvalidArgumentError(f"Expected --shard I/N (e.g. 0/4), but got {text!r}.") from None
    if not (n >= 1 and 0 <= i < n):
        raise InvalidArgumentError(f"Expected --shard I/N with 0 <= I < N, but got {text!r}.")
    return i, n


def _read_manifest(path: Path) -> dict[str, Any]:
    import json as _json

    if not path.exists():
        raise InvalidArgumentError(f"Manifest not found: {path}")
    try:
        m = _json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InvalidArgumentError(f"Cannot read manifest {path}: {str(e).splitlines()[0] if str(e) else e}.") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise InvalidArgumentError(f"Expected a faultbound manifest ({MANIFEST_FORMAT}) in {path}.")
    for key, kind in (("spec", dict), ("inputs", dict), ("shard", list), ("chunks", list), ("fingerprint", str)):
        if not isinstance(m.get(key), kind):
            raise InvalidArgumentError(f"Manifest {path} has no valid {key!r}.")
    return m


MANIFEST_FORMAT = "faultbound-manifest/1"


def _print_result(d: dict[str, Any], model_name: str, fault_name: str, json: bool) -> None:
    """What ``inject`` and ``merge`` print for a campaign result (the same for both)."""
    if json:
        print_json(d)
        return
    how = "exhaustive: every configuration" if d.get("exhaustive") else f"seed {d['seed']}"
    title = f"{model_name}: {fault_name}, {d['configurations']} configurations x {d['inputs']} inputs ({how})"
    console.print(_summary_table(d, title))
    if d.get("population") is not None:
        console.print(f"population: {d['population']} possible configurations")
    if d.get("failure_rate") is not None:
        ci = next(v for k, v in d.items() if k.startswith("failure_rate_ci"))
        console.print(
            f"failure rate ({d['failure']}): {d['failure_rate']:.6g}  [{ci[0]:.4g}, {ci[1]:.4g}] at "
            f"{d['confidence']:g} confidence, over configurations; margin achieved {d['margin_achieved']:.4g}"
        )
    w = d.get("worst")
    if w:
        console.print(
            f"worst: error {w['error']:.6g} at configuration {w['configuration']} "
            f"(failing units {w['faults']['sites']}), input #{w['input_index']}"
        )


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
    fmt: str = typer.Option(
        "native",
        "--format",
        help="Bit-flip word: native (the model's format), float16, bfloat16, float32 or int8.",
    ),
    failures: str | None = typer.Option(None, "--failures", help=FAILURES_HELP),
    rate: float | None = typer.Option(
        None, "--rate", help="Each unit (of every layer, or of every fault site of a graph) fails with probability p."
    ),
    trials: int | None = typer.Option(
        None, "--trials", min=0, help="Number of fault configurations (default 100; with --until-margin: the most)."
    ),
    margin: float | None = typer.Option(
        None, "--margin", help="Set the trials by Leveugle et al. (DATE 2009) for this margin of the failure rate."
    ),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of --margin and every interval."),
    until_margin: bool = typer.Option(
        False, "--until-margin", help="Stop once the failure rate's interval half-width is <= --margin."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="A failure is an error above this (default for classifiers: a changed prediction)."
    ),
    exhaustive: bool = typer.Option(
        False, "--exhaustive", help="Enumerate every failure set (the default when there are no more than trials)."
    ),
    batch: int = typer.Option(64, "--batch", min=1, help="Configurations per chunk (the checkpoint granularity)."),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**63 - 1, help="Seed of every random choice (recorded in the result)."
    ),
    values: str = typer.Option("random", "--values", help="Byzantine/precision values: random, adversarial, fixed."),
    float64: bool = typer.Option(False, "--float64", help="Run the engine in float64 (default: the model's format)."),
    resume: Path | None = typer.Option(None, "--resume", help="Checkpoint file: written as the run goes, resumed."),
    shard: str | None = typer.Option(None, "--shard", help="Run only shard I of N (I/N); needs --state."),
    state: Path | None = typer.Option(None, "--state", help="Shard state file (resumable); merge with `merge`."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Write the seeds and chunk ranges evaluated."),
    replay: Path | None = typer.Option(None, "--replay", help="Re-run exactly the configurations of a manifest."),
    backend: str = typer.Option("local", "--backend", help="local (this process) or ray."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: start a local one)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray: parallel shard tasks."),
    domain: str | None = DOMAIN,
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = JSON,
) -> None:
    """Run a fault-injection campaign: sampled (or all) fault configurations on every input."""
    import json as _json

    from faultbound.measure import leveugle_trials, population

    rec: dict[str, Any] | None = None
    if replay is not None:
        rec = _read_manifest(replay)
        sd = rec["spec"]
        f = fault_from_record(sd["fault"])
        src = rec["inputs"]
        if data is None and not digits and samples is None:
            data = None if src.get("data") is None else Path(src["data"])
            digits = bool(src.get("digits"))
            samples = src.get("samples")
        seed = int(sd["seed"])
    else:
        f = _fault(fault, capacity, value, errors, fmt)
    if not 0 <= seed < 2**64:
        raise InvalidArgumentError(f"Expected --seed in 0..2**64-1, but got {seed}.")
    if trials is not None and trials < 0:
        raise InvalidArgumentError(f"Expected --trials >= 0, but got {trials}.")
    if batch < 1:
        raise InvalidArgumentError(f"Expected --batch >= 1, but got {batch}.")
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise InvalidArgumentError(f"Expected --rate in [0, 1], but got {rate}.")
    if samples is not None and samples < 1:
        raise InvalidArgumentError(f"Expected --samples >= 1, but got {samples}.")
    if not 0.0 < confidence < 1.0:
        raise InvalidArgumentError(f"Expected --confidence in (0, 1), but got {confidence}.")
    if margin is not None and not 0.0 < margin < 0.5:
        raise InvalidArgumentError(f"Expected --margin in (0, 0.5), but got {margin}.")
    if until_margin and margin is None:
        raise InvalidArgumentError("Expected --margin E with --until-margin.")
    if until_margin and exhaustive:
        raise InvalidArgumentError("Expected either --exhaustive or --until-margin, not both.")
    if data is not None and not data.exists():
        raise InvalidArgumentError(f"Data file not found: {data}")
    if sum([data is not None, digits, samples is not None]) != 1:
        raise InvalidArgumentError("Expected exactly one of --data FILE, --digits or --samples N.")
    if rec is None and f.counted and (failures is None) == (rate is None):
        raise InvalidArgumentError("Expected exactly one of --failures f1,f2,... or --rate p.")
    sh = _shard(shard)
    if (sh is None) != (state is None):
        raise InvalidArgumentError("Expected --shard I/N and --state FILE together.")
    if sh is not None and (resume is not None or until_margin):
        raise InvalidArgumentError("Expected no --resume or --until-margin with --shard (--state is resumable).")
    if backend not in get_args(Backend):
        raise InvalidArgumentError(f"Expected --backend local or ray, but got {backend!r}.")
    if backend == "ray" and (sh is not None or resume is not None or until_margin):
        raise InvalidArgumentError("Expected no --shard, --resume or --until-margin with --backend ray.")
    if workers < 1:
        raise InvalidArgumentError(f"Expected --workers >= 1, but got {workers}.")
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    x, labels = campaign_inputs(net, data=data, digits=digits, samples=samples, seed=seed)
    widened = None
    if samples is None:
        net, widened = fit_domain(net, x, str(data) if data is not None else "the digits", domain_from_data)
    if rec is not None:
        if inputs_fingerprint(net, x, labels) != rec["fingerprint"]:
            raise InvalidArgumentError(
                f"The network or inputs differ from those manifest {replay} recorded; give the same model and inputs."
            )
        spec = spec_from_dict(rec["spec"])
        sh = (int(rec["shard"][0]), int(rec["shard"][1]))
        spec = dataclasses.replace(spec, trials=int(rec["configurations_trials"]), margin=None)
    else:
        fl = None if failures is None or not f.counted else tuple(parse_failures(failures, net, f))
        rt = rate if f.counted else None
        pop = population(net, f, failures=fl, rate=rt)
        n_trials = 100 if trials is None else trials
        if margin is not None and not until_margin:
            if trials is not None:
                raise InvalidArgumentError("Expected either --trials or --margin (which sets the trials), not both.")
            n_trials = leveugle_trials(pop, margin, confidence)
        elif until_margin and trials is None:
            # the most a sequential run may need: no finite-population correction, since the
            # configurations are drawn independently (with replacement)
            assert margin is not None  # --until-margin needs --margin, checked above
            n_trials = leveugle_trials(None, margin, confidence)
        deterministic = not f.chooses_values or values == "fixed"
        fits = fl is not None and pop is not None and pop <= n_trials and deterministic and not until_margin
        if exhaustive:
            if fl is None or pop is None:
                raise InvalidArgumentError("Expected --failures f1,f2,... (exact counts) with --exhaustive.")
            if pop > EXHAUSTIVE_LIMIT:
                raise InvalidArgumentError(
                    f"Expected a population of at most {EXHAUSTIVE_LIMIT} for --exhaustive, but it is {pop}; "
                    "use --margin E to sample."
                )
        exhaustive = exhaustive or fits
        # Leveugle's formula counts distinct configurations: draw them without replacement
        distinct = margin is not None and not exhaustive and fl is not None and pop is not None and pop <= 2**62
        spec = CampaignSpec(
            f,
            int(pop) if exhaustive and pop is not None else n_trials,
            failures=fl,
            rate=rt,
            seed=seed,
            chunk=batch,
            values=cast(ValueMode, values),  # spec.check checks it
            dtype="float64" if float64 else "model",
            exhaustive=exhaustive,
            threshold=threshold,
            margin=margin if until_margin else None,
            confidence=confidence,
            without_replacement=distinct and pop is not None and n_trials <= pop,  # distinct implies pop
        )
    spec.check(net)
    total = spec.trials
    show = total > spec.chunk and err_console.is_terminal
    with Progress(
        TextColumn("[bold]inject"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=True, disable=not show,
    ) as bar:
        task = bar.add_task("configurations", total=total)

        def tick(done: int, _total: int) -> None:
            bar.update(task, completed=done)

        extra: dict[str, Any] = {"model": str(model), "fault_name": f.name, "domain_from_data": widened}
        if margin is not None:
            extra["sample_size"] = {
                "formula": "Leveugle et al., DATE 2009, finite-population correction, p = 0.5",
                "margin": margin,
                "confidence": confidence,
                "sequential": until_margin,
            }
        if backend == "ray":
            from faultbound.measure.distributed import run_ray

            res = run_ray(net, x, spec, labels=labels, workers=workers, address=address, progress=tick, extra=extra)
        else:
            res = run_campaign(
                net, x, spec, labels=labels, checkpoint=state if sh is not None else resume, progress=tick,
                shard=sh or (0, 1), extra=extra,
            )
    if manifest is not None:
        own = list(shard_chunks(math.ceil(spec.trials / spec.chunk), sh or (0, 1)))[: res.chunks_run]
        m = {
            "format": MANIFEST_FORMAT,
            "model": str(model),
            "fingerprint": res.fingerprint_inputs,
            "spec": spec.to_dict(),
            "shard": list(sh or (0, 1)),
            "inputs": {
                "data": None if data is None else str(data.resolve()),
                "digits": digits,
                "samples": samples,
                "seed": seed,
            },
            "configurations": res.summary["configurations"],
            "configurations_trials": min(spec.trials, (max(own) + 1) * spec.chunk) if own else 0,
            "chunks": _ranges(own),
            "how": "chunk c holds configurations c*chunk.. c*chunk+chunk-1, regenerated from (seed, c) "
            "(or enumerated when exhaustive); see faultbound.measure.chunk_faults",
        }
        try:
            manifest.write_text(_json.dumps(m, indent=1) + "\n")
        except OSError as e:
            raise InvalidArgumentError(f"Cannot write manifest {manifest}: {e.strerror or e}.") from None
    d = _with_extra(res.to_dict(), extra)
    if sh is not None and sh[1] > 1:
        done = res.summary["configurations"]
        if json:
            print_json({"shard": list(sh), "state": str(state), "configurations": done, "trials": spec.trials})
        else:
            console.print(f"shard {sh[0]}/{sh[1]}: {done} configurations written to {state}; "
                          "`faultbound merge` the state files of every shard")
        return
    say_widened(widened, json)
    _print_result(d, model.name, f.name, json)


EXHAUSTIVE_LIMIT = 10**8


def _with_extra(d: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The result as printed: plus the model path and, with --margin, how the sample size was set."""
    d["model"] = str(extra.get("model", ""))
    d["domain_from_data"] = extra.get("domain_from_data")
    if "sample_size" in extra:
        d["sample_size"] = extra["sample_size"]
    return d


def _ranges(chunks: list[int]) -> list[list[int]]:
    """``[[first, last + 1], ...]`` runs of consecutive chunk numbers (or of stride-N shard chunks)."""
    out: list[list[int]] = []
    for c in chunks:
        if out and c == out[-1][1]:
            out[-1][1] = c + 1
        else:
            out.append([c, c + 1])
    return out


@app.command("merge")
def merge_cmd(
    files: list[Path] = typer.Argument(..., help="The --state files of every shard of one campaign."),
    json: bool = JSON,
) -> None:
    """Merge the state files of the shards of one campaign: prints exactly what the unsharded
    `inject` prints."""
    for p in files:
        if not p.exists():
            raise InvalidArgumentError(f"State file not found: {p}")
    res = merge_campaign_states(files)
    extra = load_state(files[0])[1].get("extra") or {}
    d = _with_extra(res.to_dict(), extra)
    _print_result(d, Path(d["model"]).name, str(extra.get("fault_name", "")), json)


@app.command("worst")
def worst_cmd(
    model: Path = MODEL,
    fault: str = typer.Option("crash", "--fault", help=FAULT_HELP),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    failures: str | None = typer.Option(None, "--failures", help=FAILURES_HELP),
    probes: int | None = typer.Option(
        None,
        "--probes",
        min=0,
        help="Random probe inputs (domain corners are added; default 32, or 8 on graphs above 5e7 multiply-adds).",
    ),
    data: Path | None = typer.Option(None, "--data", help="Extra probe inputs (.npz/.npy/.csv)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed of the search."),
    exhaustive_limit: int = typer.Option(
        200_000, "--exhaustive-limit", min=0, help="Enumerate every failure set when sets x probes is at most this."
    ),
    max_units: int | None = typer.Option(
        None,
        "--max-units",
        min=1,
        help="Rank at most N units of each faulty layer or site (a random sample) before the beam search "
        "(default: every unit; a sample on graphs above 5e7 multiply-adds, e.g. 360 on ResNet-18).",
    ),
    backend: str = typer.Option("local", "--backend", help="local (this process) or ray (scoring as Ray tasks)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: start a local one)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Ray: parallel scoring tasks."),
    domain: str | None = typer.Option(None, "--domain", help="Input box LO,HI for every feature (default 0,1)."),
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling a full torch module."),
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Search failure sets, inputs and Byzantine values for the largest output error (a lower bound
    on the true worst case)."""
    f = _fault(fault, capacity, value, errors, "float32")
    if f.flippable:
        raise InvalidArgumentError("Expected a fault other than bit flips for `worst`; use `inject`.")
    if probes is not None and probes < 0:
        raise InvalidArgumentError(f"Expected --probes >= 0, but got {probes}.")
    if f.counted and failures is None:
        raise InvalidArgumentError("Expected --failures f1,f2,... (one count per layer).")
    if data is not None and not data.exists():
        raise InvalidArgumentError(f"Data file not found: {data}")
    if exhaustive_limit < 0:
        raise InvalidArgumentError(f"Expected --exhaustive-limit >= 0, but got {exhaustive_limit}.")
    if backend not in get_args(Backend):
        raise InvalidArgumentError(f"Expected --backend local or ray, but got {backend!r}.")
    if max_units is not None and max_units < 1:
        raise InvalidArgumentError(f"Expected --max-units >= 1, but got {max_units}.")
    if workers < 1:
        raise InvalidArgumentError(f"Expected --workers >= 1, but got {workers}.")
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    extra = campaign_inputs(net, data=data)[0] if data is not None else None
    widened = None
    if extra is not None:
        net, widened = fit_domain(net, extra, str(data), domain_from_data)
    fl = None if not f.counted or failures is None else parse_failures(failures, net, f)
    # --probes and --max-units only when given: otherwise the network's defaults (default_spec)
    given: dict[str, Any] = {k: v for k, v in (("n_probe", probes), ("max_units", max_units)) if v is not None}
    if backend == "ray":
        from faultbound.measure.distributed import worst_case_ray

        with err_console.status(f"worst-case search on {workers} Ray workers"):
            r = worst_case_ray(net, f, fl, workers=workers, address=address, inputs=extra, seed=seed,
                               exhaustive_limit=exhaustive_limit, **given)
    else:
        with err_console.status("worst-case search") as status:
            r = worst_case(net, f, fl, inputs=extra, seed=seed, exhaustive_limit=exhaustive_limit,
                           progress=status.update, **given)
    d = r.to_dict()
    d["model"] = str(model)
    d["domain_from_data"] = widened
    if json:
        print_json(d)
        return
    say_widened(widened, json)
    how = "exhaustive over failure sets" if r.exhaustive else "beam search over failure sets"
    console.print(
        f"worst case found: error {r.max_error:.6g} ({how}, {r.evaluations} evaluations, seed {seed})\n"
        f"failing units {d['failure_set']}\ninput {[round(v, 4) for v in r.input[:16]]}"
        + (" ..." if len(r.input) > 16 else "")
    )
