"""The ``faultbound`` command line: a thin Typer shell over the library.

Each family of commands lives in its own module and registers itself on :data:`app`:
``core`` (inspect, bound, tolerate, demo), and further modules for measurement, certification and
the applications. Library errors become one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from faultbound.cli._common import app, run_app

# Importing a command module registers its commands on `app`, in this order (the order of --help).
from faultbound.cli import core  # noqa: E402,F401  isort: skip
from faultbound.cli import measure  # noqa: E402,F401  isort: skip
from faultbound.cli import certify  # noqa: E402,F401  isort: skip
from faultbound.cli import apps  # noqa: E402,F401  isort: skip
from faultbound.cli import report  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_app())
