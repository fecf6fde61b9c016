"""The README's examples run as written (Python blocks, then every `$ faultbound ...` line)."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tests.cli_run import run

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_and_cli_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cwd = os.getcwd()
    (tmp_path / "examples").symlink_to(README.parent / "examples")  # the shipped models, as from the repo root
    os.chdir(tmp_path)
    try:
        py = _blocks("python")
        assert py, "README has no Python example"
        for code in py:
            exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
        lines = [ln[2:] for block in _blocks("console") for ln in block.splitlines() if ln.startswith("$ faultbound")]
        assert len(lines) >= 4
        for line in lines:
            args = shlex.split(line)[1:]
            if "--backend" in args and args[args.index("--backend") + 1] == "ray":
                continue  # starts a Ray cluster; tests/test_ray.py runs these forms (inject, worst) on a real one
            if args[0] == "demo":
                args += ["--epochs", "30"]
            r = run(*args)
            assert r.returncode == 0, (line, r.stderr)
            assert r.stdout.strip(), line
    finally:
        os.chdir(cwd)
