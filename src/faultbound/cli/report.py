"""``faultbound report``: a self-contained HTML report (and its data as JSON) for one model.

A thin shell over :mod:`faultbound.report.build` and :mod:`faultbound.report.render`: parse the
options, validate them (including the output path) before any computation, show progress on stderr,
write the file, print its path.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

from faultbound.cli._common import (
    DOMAIN,
    FAULT_HELP,
    INPUT_SHAPE,
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
from faultbound.cli._sites import SITES, parse_failures
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault


def parse_distributions(
    text: str, net: object = None, fault: Fault | None = None
) -> tuple[tuple[int, ...], ...]:
    """Parse ``--failures "1,0;0,1;1,1"``: distributions separated by ``;``; with the network and a
    fault model each may also be ``all=K`` or ``NAME=K,...`` (:func:`faultbound.cli._sites.parse_failures`)."""
    parts = [p for p in text.split(";") if p.strip() != ""]
    if not parts:
        raise InvalidArgumentError(f"Expected --failures like '1,0;0,1;1,1', but got {text!r}.")
    out = []
    for p in parts:
        f = parse_ints(p, "failures") if net is None or fault is None else parse_failures(p, net, fault)
        if not f:
            raise InvalidArgumentError(f"Expected --failures like '1,0;0,1;1,1', but got {text!r}.")
        out.append(tuple(f))
    return tuple(out)


def check_out_path(out: Path) -> Path:
    """The output file's folder must exist and be writable, and the path must not be a folder."""
    if out.exists() and out.is_dir():
        raise InvalidArgumentError(f"Expected --out to be a file, but {out} is a folder.")
    parent = out.parent if str(out.parent) != "" else Path(".")
    if not parent.is_dir():
        raise InvalidArgumentError(f"Cannot write {out}: the folder {parent} does not exist.")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InvalidArgumentError(f"Cannot write {out}: permission denied.")
    return out


@app.command("report")
def report_cmd(
    model: Path = MODEL,
    out: Path | None = typer.Option(None, "--out", help="HTML file to write (default report.html; none with --json)."),
    failures: str | None = typer.Option(
        None,
        "--failures",
        help="Distributions 'f_1,...,f_L;...' (default: 1, 2, 4 per layer or fault site, then all ones); each may "
        "also be all=K or NAME=K,... (sites by node name or number, 0 elsewhere), as for `bound`.",
    ),
    fault: list[str] = typer.Option(["crash"], "--fault", help=FAULT_HELP + " Repeat for several."),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1; inf allowed)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    eps: float | None = typer.Option(None, "--eps", help="Accuracy to keep under failures (tolerance section)."),
    eps_prime: float | None = typer.Option(None, "--eps-prime", help="Accuracy the network has (sup error)."),
    data: Path | None = typer.Option(
        None, "--data", help=".npz with X (and y): probe inputs, campaign inputs, and eps' estimated from below."
    ),
    trials: int = typer.Option(0, "--trials", min=0, help="Random failure sets of a campaign (0: no campaign)."),
    campaign_failures: str | None = typer.Option(
        None, "--campaign-failures", help="The campaign's distribution f_1,...,f_L, all=K or NAME=K (default all ones)."
    ),
    samples: int = typer.Option(256, "--samples", help="Campaign inputs drawn from the domain (without --data)."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed of the worst-case search and the campaign."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Tables only (no matplotlib)."),
    domain: str | None = DOMAIN,
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = TRUST,
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = typer.Option(False, "--json", help="Print the report's data as one JSON object on stdout."),
) -> None:
    """Self-contained HTML report: certificates (paper, tight) next to the worst case found, tolerance, campaign."""
    from faultbound.report.build import ReportSpec, build_report
    from faultbound.report.render import render_html

    target = check_out_path(out if out is not None else Path("report.html")) if (out or not json) else None
    if failures is not None and "=" not in failures:
        parse_distributions(failures)  # plain counts are checked before the model loads
    faults: tuple[Fault, ...] = tuple(make_fault(name, capacity, value, errors) for name in fault)
    if eps_prime is not None and eps is None:
        raise InvalidArgumentError("Expected --eps with --eps-prime.")
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    dists = None if failures is None else parse_distributions(failures, net, faults[0])
    camp = (
        None
        if campaign_failures is None
        else tuple(parse_failures(campaign_failures, net, faults[0], "campaign-failures"))
    )
    inputs = None
    widened = None
    ep: object = eps_prime
    if data is not None:
        from faultbound.data import load_arrays

        X, y = load_arrays(str(data))
        net, widened = fit_domain(net, X, str(data), domain_from_data)
        inputs = X
        if eps is not None and eps_prime is None:
            if y is None:
                raise InvalidArgumentError(f"Expected targets 'y' in {data} to estimate eps'.")
            from faultbound.bounds.tolerance import estimate_eps_prime

            ep = estimate_eps_prime(net, X, y)
    if eps is not None and ep is None:
        raise InvalidArgumentError("Expected --eps-prime (or --data with targets) with --eps.")
    spec = ReportSpec(
        failures=dists,
        faults=faults,
        eps=eps,
        eps_prime=ep,
        trials=trials,
        campaign_failures=camp,
        samples=samples,
        seed=seed,
        title=model.name,
        command=shlex.join(["faultbound", *sys.argv[1:]]),
    )
    with err_console.status("building the report") as status:
        rep = build_report(net, spec, inputs=inputs, progress=lambda msg: status.update(msg))
        if target is not None:
            status.update("rendering")
            html = render_html(rep, figures=not no_plots)
            try:
                target.write_text(html, encoding="utf-8")
            except OSError as e:
                raise InvalidArgumentError(f"Cannot write {target}: {e.strerror or e}.") from None
    if json:
        d = rep.to_dict()
        d["out"] = None if target is None else str(target)
        d["domain_from_data"] = widened
        print_json(d)
        return
    say_widened(widened, json)
    if rep.violations:
        err_console.print(f"VIOLATION: {rep.violations} certificate(s) below a measurement (a bug).", style="red")
    if rep.outside is not None:
        err_console.print(
            f"note: {rep.outside.n_points} of the {rep.outside.n_given} data points lie outside the domain; "
            "they are reported apart, not checked against the certificates.",
            markup=False,
            highlight=False,
        )
    console.print(str(target), markup=False, highlight=False, soft_wrap=True)
