"""``faultbound certify``: per-input certificates on a labelled set, beside measured accuracy.

Reports, for a classifier and a failure distribution:

* clean accuracy;
* certified accuracy: inputs classified correctly whose class provably survives every failure set
  of the given sizes (:func:`faultbound.bounds.certify.certified_accuracy`);
* accuracy measured under random failure sets (mean over sampled sets and inputs), and under the
  worst failure set found per input (every set when there are few, else the sampled ones, with
  adversarial Byzantine values), both with :mod:`faultbound.measure`.

Certified <= measured worst-case <= measured random accuracy, up to sampling.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import typer
from rich.table import Table

from faultbound.bounds.certify import CertifyMethod, certified_accuracy
from faultbound.cli._common import INPUT_SHAPE, app, console, err_console, load_model, make_fault, print_json
from faultbound.cli._data import DOMAIN_FROM_DATA, fit_domain, say_widened
from faultbound.cli._sites import FAILURES_HELP, SITES, parse_failures
from faultbound.errors import InvalidArgumentError
from faultbound.failures import failure_counts
from faultbound.faults import FAULT_NAMES, Fault
from faultbound.network.core import Network

__all__ = ["certify_cmd", "measured_accuracy"]


def _all_sets(net: Network, fault: Fault, failures: tuple[int, ...], limit: int) -> Any:
    """Every failure set of the given sizes as one FaultSet, or ``None`` above ``limit`` sets."""
    from faultbound.failures import n_units
    from faultbound.measure import FaultSet

    sizes = [n_units(net, fault, l + 1) for l in range(len(failures))]
    total = math.prod(math.comb(n, f) for n, f in zip(sizes, failures, strict=True))
    if total > limit:
        return None
    per_layer = [list(itertools.combinations(range(n), f)) for n, f in zip(sizes, failures, strict=True)]
    rows = list(itertools.product(*per_layer))
    sites = []
    for l, f in enumerate(failures):
        sites.append(None if f == 0 else torch.tensor([r[l] for r in rows], dtype=torch.long).reshape(len(rows), f))
    return FaultSet(len(rows), tuple(sites))


def measured_accuracy(
    net: Network,
    x: torch.Tensor,
    labels: np.ndarray,
    fault: Fault,
    failures: tuple[int, ...],
    samples: int = 200,
    exhaustive_limit: int = 2000,
    seed: int = 0,
    chunk: int = 64,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Accuracy under sampled failure sets (random values) and under the worst set found per input.

    The worst case enumerates every failure set when there are at most ``exhaustive_limit``, else
    uses the ``samples`` random sets; Byzantine and precision values are adversarial there. The
    faulty networks run in ``dtype`` (by default the model's own format, as ``inject`` runs them: a
    measurement of the model as it is deployed; float64 convolutions are several times slower on CPU).
    """
    dtype = net.dtype if dtype is None else dtype
    from faultbound.measure import inject, sample_faults

    g = torch.Generator().manual_seed(int(seed))
    y = torch.as_tensor(labels, dtype=torch.long)
    if not fault.counted:  # precision: every neuron is off, no sets to enumerate
        random_sets = sample_faults(net, fault, samples, generator=g)
        every = None
    else:
        random_sets = sample_faults(net, fault, samples, failures=list(failures), generator=g)
        every = _all_sets(net, fault, failures, exhaustive_limit)
    worst_sets = random_sets if every is None else every
    adversarial = fault.chooses_values
    # a fault that sends fixed values (crash, stuck-at) gives the same outputs on the same sets:
    # the worst case over the random sets is read from their one pass
    same = every is None and not adversarial and not fault.flippable
    correct_sum = 0.0
    survives = torch.ones(x.shape[0], dtype=torch.bool)
    for t0 in range(0, random_sets.n_configs, chunk):
        fs = random_sets.select(slice(t0, t0 + chunk))
        out = inject(net, x, fault, fs, values="random", generator=g, dtype=dtype).outputs
        hit = out.argmax(-1) == y[None]
        correct_sum += float(hit.double().sum())
        if same:
            survives &= hit.all(0)
    random_acc = correct_sum / max(1, random_sets.n_configs * x.shape[0])
    for t0 in range(0, 0 if same else worst_sets.n_configs, chunk):
        fs = worst_sets.select(slice(t0, t0 + chunk))
        out = inject(
            net, x, fault, fs, values="adversarial" if adversarial else "random", generator=g, dtype=dtype
        ).outputs
        survives &= (out.argmax(-1) == y[None]).all(0)
    return {
        "random_accuracy": random_acc,
        "random_sets": int(random_sets.n_configs),
        "worst_accuracy": float(survives.double().mean()),
        "worst_sets": int(worst_sets.n_configs),
        "worst_exhaustive": every is not None,
        "seed": int(seed),
        "dtype": str(dtype).removeprefix("torch."),
    }


@app.command("certify")
def certify_cmd(
    model: Path = typer.Argument(..., help="Model file (.onnx, .pt2, or a pickled module with --trust-pickle)."),
    data: Path | None = typer.Option(None, "--data", help="Labelled inputs: .npz with arrays X and y."),
    digits: bool = typer.Option(False, "--digits", help="Use scikit-learn's bundled digits."),
    failures: str | None = typer.Option(None, "--failures", help=FAILURES_HELP),
    fault: str = typer.Option("crash", "--fault", help=f"Fault model: {', '.join(FAULT_NAMES)}, precision."),
    capacity: float | None = typer.Option(None, "--capacity", help="C for Byzantine faults (default 1)."),
    value: float | None = typer.Option(None, "--value", help="Value sent by a stuck-at neuron."),
    errors: str | None = typer.Option(None, "--errors", help="lambda_1,...,lambda_L for --fault precision."),
    radius: float = typer.Option(
        0.0, "--radius", help="Certify the whole box x +- r around each input (default 0: the input itself)."
    ),
    samples: int = typer.Option(200, "--samples", help="Random failure sets for the measured accuracy."),
    exhaustive_limit: int = typer.Option(
        2000, "--exhaustive-limit", min=0, help="Enumerate every set up to this many."
    ),
    max_inputs: int | None = typer.Option(None, "--max-inputs", min=1, help="Use only the first N inputs."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed of the sampled failure sets and values."),
    float64: bool = typer.Option(
        False, "--float64", help="Measure the faulty networks in float64 (default: the model's format, as inject)."
    ),
    method: str = typer.Option(
        "tight", "--method", help="tight (propagation) or exact (MILP per input and output; piecewise-linear nets)."
    ),
    time_limit: float | None = typer.Option(None, "--time-limit", help="Seconds per MILP with --method exact."),
    domain: str | None = typer.Option(None, "--domain", help="Input box LO,HI (default 0,1)."),
    domain_from_data: bool = DOMAIN_FROM_DATA,
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow unpickling a full torch module."),
    input_shape: str | None = INPUT_SHAPE,
    sites: str | None = SITES,
    json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Certified accuracy under failures, beside clean and measured (random, worst-case) accuracy."""
    from faultbound.measure import campaign_inputs

    if (data is None) == (not digits):
        raise InvalidArgumentError("Expected exactly one of --data FILE.npz or --digits.")
    if samples < 1 or exhaustive_limit < 0:
        raise InvalidArgumentError("Expected --samples >= 1 and --exhaustive-limit >= 0.")
    net = load_model(model, domain, trust_pickle, input_shape, sites)
    flt = make_fault(fault, capacity, value, errors)
    if flt.counted and failures is None:
        raise InvalidArgumentError("Expected --failures f_1,...,f_L.")
    # validated here, before the data are read (the library call below trusts nothing it is given)
    f = failure_counts(net, flt, None if failures is None else parse_failures(failures, net, flt), correct_neuron=True)
    if flt.unbounded:
        raise InvalidArgumentError("Unbounded capacity: nothing can be certified or measured (Lemma 1).")
    x, labels = campaign_inputs(net, data=data, digits=digits)
    net, widened = fit_domain(net, x, str(data) if data is not None else "the digits", domain_from_data)
    if labels is None:
        raise InvalidArgumentError("Expected integer class labels `y` in the data, for a classifier.")
    if max_inputs is not None:
        if max_inputs < 1:
            raise InvalidArgumentError(f"Expected --max-inputs >= 1, but got {max_inputs}.")
        x, labels = x[:max_inputs], labels[:max_inputs]
    y = labels.numpy()
    if method not in ("tight", "exact"):
        raise InvalidArgumentError(f"Expected --method tight or exact, but got {method!r}.")
    if time_limit is not None and method != "exact":
        raise InvalidArgumentError("Expected --time-limit only with --method exact.")
    with err_console.status("certifying") as status:
        res = certified_accuracy(
            net, x, y, None if not f else list(f), flt, radius, method=cast(CertifyMethod, method),
            time_limit=time_limit, progress=status.update,
        )
        status.update(f"measured accuracy under failures ({samples} random sets, up to {exhaustive_limit} enumerated)")
        measured = measured_accuracy(
            net, x, y, flt, f, samples, exhaustive_limit, seed, dtype=torch.float64 if float64 else net.dtype
        )
    out = res.to_dict()
    out["method"] = method
    out["measured"] = measured
    out["domain_from_data"] = widened
    if json:
        print_json(out)
        return
    say_widened(widened, json)
    m = out["measured"]
    t = Table(title=f"{model.name}: {flt.name}, failures {list(f)}, {res.n} inputs")
    t.add_column("accuracy")
    t.add_column("value", justify="right")
    t.add_row("clean", f"{res.clean_accuracy:.4f}")
    t.add_row(f"certified ({method}, per input)", f"{res.certified_accuracy:.4f}")
    worst_how = "every set" if m["worst_exhaustive"] else f"{m['worst_sets']} sampled sets"
    t.add_row(f"measured, worst case ({worst_how})", f"{m['worst_accuracy']:.4f}")
    t.add_row(f"measured, random ({m['random_sets']} sets)", f"{m['random_accuracy']:.4f}")
    console.print(t)
    if out.get("bound_median") is not None:
        console.print(f"median per-input bound b(x) = {out['bound_median']:.4g}")
