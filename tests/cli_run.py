"""Run the CLI in-process exactly as the console script does: argv, exit status, stdout, stderr."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from faultbound.cli import main


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def __iter__(self) -> Iterator[int | str]:
        """``code, out, err = run(...)``."""
        return iter((self.returncode, self.stdout, self.stderr))


def run(*args: str) -> Result:
    """``faultbound ARGS...`` in this process; SystemExit becomes ``returncode``."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["faultbound", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    return Result(code, out.getvalue(), err.getvalue())
