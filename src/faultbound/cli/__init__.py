"""The ``faultbound`` command line: a thin Typer shell over the library.

Each family of commands lives in its own module and registers itself on :data:`app`:
``core`` (inspect, bound, tolerate, demo), and further modules for measurement, certification and
the applications. Library errors become one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

from faultbound.cli._common import app, run_app

# Importing a command module registers its commands on `app`.
from faultbound.cli import core  # noqa: E402,F401  isort: skip

for _name in ("measure", "certify", "apps", "report"):
    try:
        __import__(f"faultbound.cli.{_name}")
    except ModuleNotFoundError as _e:  # a command family not written yet
        if _e.name != f"faultbound.cli.{_name}":
            raise

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_app())
