"""Shared pieces of the CLI: the Typer app, error handling, model loading, output helpers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from faultbound.errors import FaultboundError, InvalidArgumentError
from faultbound.failures import AnyNetwork
from faultbound.faults import FAULT_NAMES, Fault, Precision, parse_fault

app = typer.Typer(
    name="faultbound",
    help="Certified and measured fault tolerance of neural networks (When Neurons Fail).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Option declarations shared by the command modules.
MODEL = typer.Argument(..., help="Model file: .onnx, .pt2 (torch.export), or a pickled module with --trust-pickle.")
DOMAIN = typer.Option(None, "--domain", help="Input box LO,HI for every feature (default 0,1).")
TRUST = typer.Option(False, "--trust-pickle", help="Allow unpickling a full torch module (runs its code).")
JSON = typer.Option(False, "--json", help="Print one JSON object instead of tables.")
INPUT_SHAPE = typer.Option(
    None,
    "--input-shape",
    help="Shape of one input, e.g. 1,28,28: needed for a .pt/.pth pickled module that is not a chain of Linear "
    "layers (a convolution, a residual block, attention); .onnx and .pt2 files record it.",
)
FAULT_HELP = f"Fault model: {', '.join(FAULT_NAMES)}, precision."



class TableConsole(Console):
    """The CLI's stdout console: a rich :class:`~rich.console.Console` that never cuts a table cell.

    rich fits a table to the console's width (80 columns when stdout is a file or a pipe) by
    shrinking columns, then ellipsising cells (``312.``, ``5.712e+0``) and cropping whatever is
    still too wide: numbers that look like numbers but are not the numbers. Every table printed
    through this console is laid out so that no cell is shortened:

    * stdout not a terminal: the table takes its natural width (no cell wraps), however wide;
    * a terminal: the terminal's width, or the least width at which every cell fits by wrapping
      only at spaces (every number and name whole) when the terminal is narrower than that; the
      terminal then wraps the long lines instead of a number being cut.

    Lines wider than the console are not cropped (``crop=False``) when a table is printed.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        tables = [o for o in objects if isinstance(o, Table)]
        for t in tables:
            self.fit_table(t)
        if tables:
            kwargs.setdefault("crop", False)
        super().print(*objects, **kwargs)

    def fit_table(self, table: Table) -> None:
        """Set ``table.width`` (when the console is too narrow) to a width at which no cell is cut."""
        if table.width is not None:
            return
        need = Measurement.get(self, self.options.update_width(_NO_LIMIT), table)
        width = max(self.width, need.minimum) if self.is_terminal else need.maximum
        if width > self.width or not self.is_terminal:
            table.width = width


#: A width no table reaches: to measure a table's natural width.
_NO_LIMIT = 1 << 20

console = TableConsole()
err_console = Console(stderr=True)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Click's exception bases: the copy that typer >= 0.2x vendors and the ``click`` package.

    Both, when both are installed: typer 0.29 raises its vendored ``typer._click`` exceptions even
    when a separate ``click`` is importable, and catching only one of them let a bad ``--seed x``
    end in a traceback.
    """
    types: list[type[BaseException]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(__import__(module, fromlist=["ClickException"]).ClickException)
        except (ModuleNotFoundError, AttributeError):
            pass
    return tuple(types)


def run_app() -> int:
    """Run the app; a library error or a bad option prints one line and returns 2."""
    try:
        result = app(standalone_mode=False)
    except FaultboundError as e:
        err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("error: aborted", markup=False, highlight=False)
        return 130
    except typer.Exit as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except _usage_error_types() as e:
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        if type(e).__name__ == "NoArgsIsHelpError":  # `faultbound` alone: show the help
            console.print(msg, markup=False, highlight=False)
            return 0
        err_console.print(f"error: {msg}", markup=False, highlight=False, soft_wrap=True)
        return 2
    return int(result) if isinstance(result, int) else 0


def parse_ints(text: str, what: str = "failures") -> list[int]:
    """Parse ``"1,0,2"``."""
    try:
        return [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise InvalidArgumentError(
            f"Expected --{what} as comma-separated integers like 1,0,2, but got {text!r}."
        ) from None


def parse_floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise InvalidArgumentError(
            f"Expected --{what} as comma-separated numbers, but got {text!r}."
        ) from None
    if any(math.isnan(v) for v in vals):
        raise InvalidArgumentError(f"Expected --{what} without NaN, but got {text!r}.")
    return vals


def make_fault(name: str, capacity: float | None, value: float | None, errors: str | None) -> Fault:
    """The fault model named on the command line (``precision`` takes ``--errors l1,...,lL``)."""
    if name == "precision":
        if errors is None:
            raise InvalidArgumentError("Expected --errors l1,l2,... (one per hidden layer) with --fault precision.")
        return Precision(parse_floats(errors, "errors"))
    return parse_fault(name, capacity, value)


def parse_domain(text: str | None) -> tuple[float, float] | None:
    """Parse ``--domain LO,HI``."""
    if text is None:
        return None
    vals = parse_floats(text, "domain")
    if len(vals) != 2:
        raise InvalidArgumentError(f"Expected --domain as LO,HI, but got {text!r}.")
    return vals[0], vals[1]


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """Parse ``--input-shape C,H,W`` (positive integers)."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise InvalidArgumentError(f"Expected --input-shape as positive integers like 1,28,28, but got {text!r}.")
    return shape


def load_model(
    path: Path,
    domain: str | None = None,
    trust_pickle: bool = False,
    input_shape: str | None = None,
    sites: str | None = None,
) -> AnyNetwork:
    """Load a model file into a Network, or a GraphNetwork when it is not a chain or ``sites``
    (``--sites NAME,...``) names extra fault sites (errors are library errors)."""
    from faultbound.network.readers.files import load

    return load(
        path,
        domain=parse_domain(domain),
        trust_pickle=trust_pickle,
        input_shape=parse_shape(input_shape),
        sites=parse_sites(sites),
    )


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def print_json(obj: dict[str, Any]) -> None:
    """Print one JSON object (non-finite floats become null) on stdout."""
    sys.stdout.write(json.dumps(_clean(obj), indent=2) + "\n")


def parse_sites(text: str | None) -> list[str] | None:
    """``--sites a,b`` as a list of node names (``None`` when not given)."""
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip() != ""]
    if not names:
        raise InvalidArgumentError(f"Expected --sites as comma-separated node names, but got {text!r}.")
    return names
