"""No number in a CLI table is ever cut (issue 23).

rich fits a table to 80 columns when stdout is not a terminal, and used to ellipsise or crop the
cells that did not fit (``312.``, ``5.712e+0``). Each test prints a table wider than 80 columns
with stdout a pipe (``tests.cli_run.run`` captures it in a StringIO) and checks every cell against
the command's ``--json`` output formatted as the table formats it: a cut number fails the
comparison. The last test checks the same on a narrow terminal.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.table import Table
from torch import nn

from faultbound.cli._common import TableConsole
from faultbound.models import small_resnet
from tests.cli_run import run


def _rows(out: str) -> list[list[str]]:
    """The body rows of the tables in ``out``, one list of stripped cells per row."""
    lines = [line for line in out.splitlines() if line.startswith("│")]
    return [[c.strip() for c in line.strip().strip("│").split("│")] for line in lines]


def _range(r: list[float | None] | None) -> str:
    """A range as the tables print it (JSON writes the infinite ends as null)."""
    if r is None:
        return ""
    lo = -math.inf if r[0] is None else r[0]
    hi = math.inf if r[1] is None else r[1]
    return f"[{lo:.3g}, {hi:.3g}]"


def layer_cells(r: dict[str, Any]) -> list[str]:
    """The cells of the chain ``inspect`` table's row for ``r``, a layer of ``inspect --json``,
    formatted as the table formats them."""
    return [
        str(r["layer"]),
        r["ops"],
        str(r["width"]),
        str(r["fan_in"]),
        f"{r['w_max']:.4g}",
        r["activation"] or "(linear output)",
        "" if r["K"] is None else f"{r['K']:.4g}",
        _range(r["range"]),
    ]


def _wide(out: str) -> None:
    """The table is wider than rich's 80 columns (else the test would not test anything) and
    nothing is ellipsised."""
    assert max(len(line) for line in out.splitlines()) > 80, out
    assert "…" not in out, out


@pytest.fixture(scope="module")
def deep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain of 12 Tanh layers: the bound table has 14 columns."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 6)]
    for _ in range(11):
        layers += [nn.Tanh(), nn.Linear(6, 6)]
    layers += [nn.Tanh(), nn.Linear(6, 2)]
    p = tmp_path_factory.mktemp("tables") / "deep.pt2"
    torch.export.save(torch.export.export(nn.Sequential(*layers), (torch.rand(1, 4),)), str(p))
    return p


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("tables") / "small_resnet.pt2"
    torch.export.save(torch.export.export(small_resnet(), (torch.rand(1, 1, 8, 8),)), str(p))
    return p


def _both(*args: str) -> tuple[str, dict[str, Any]]:
    code, out, err = run(*args)
    assert code == 0, err
    code, js, err = run(*args, "--json")
    assert code == 0, err
    return str(out), json.loads(str(js))


def test_bound_table_prints_every_per_layer_number_whole(deep_file: Path) -> None:
    out, d = _both("bound", str(deep_file), "--failures", "all=2", "--domain=-100,100", "--method", "both")
    _wide(out)
    rows = {r[0]: r[1:] for r in _rows(out)}
    assert set(rows) == {"paper", "tight"}
    for r in d["results"]:
        assert rows[r["method"]] == [f"{r['value']:.6g}", *[f"{v:.4g}" for v in r["per_layer"]]]


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chain with a convolution, 1000 neurons and large weights: long ops, widths and w_m."""
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 1000), nn.LeakyReLU(0.01), nn.Linear(1000, 3)
    )
    with torch.no_grad():
        m[3].weight.mul_(12345.678)
    p = tmp_path_factory.mktemp("tables") / "conv.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 1, 8, 8),)), str(p))
    return p


def test_inspect_chain_table_prints_every_cell_whole(conv_file: Path) -> None:
    out, d = _both("inspect", str(conv_file), "--domain=-1000,1000")
    _wide(out)
    rows = _rows(out)
    assert len(rows) == len(d["layers"]) == 3
    for cells, r in zip(rows, d["layers"], strict=True):
        assert cells == layer_cells(r)


def test_inspect_graph_table_prints_every_number_whole(resnet_file: Path) -> None:
    """Extra sites (convolutions, residual sums, the pooling) and a wide domain: Y runs to 1e4."""
    sites = "bn1,layers.0.0,layers.1.0.shortcut.1,layers.1.0,pool"
    out, d = _both("inspect", str(resnet_file), "--domain=-1000,1000", "--sites", sites)
    _wide(out)
    rows = _rows(out)
    assert len(rows) == len(d["sites"]) == 10
    for cells, s in zip(rows, d["sites"], strict=True):
        want = [
            str(s["site"]),
            s["node"],
            str(s["width"]),
            "" if s["fan_in"] is None else str(s["fan_in"]),
            s["activation"] or "(named)",
            "" if s["K"] is None else f"{s['K']:.4g}",
            _range(s["range"]),
            f"{s['Y']:.4g}",
        ]
        assert cells == want
    # the title names the domain whole too (it was cropped at column 80)
    assert "[-1000, 1000]^64" in out


def test_a_narrow_terminal_wraps_cells_at_spaces_but_never_cuts_a_number() -> None:
    """On a terminal of 40 columns a table of 8 long numbers cannot fit: its lines grow to the least
    width at which every number is whole (the terminal wraps them) instead of ellipsising."""
    numbers = [f"{-1.2345678e5 * 7.0**k:.6e}" for k in range(8)]
    t = Table(title="eight long numbers")
    for k in range(8):
        t.add_column(f"column {k + 1}", justify="right")
    t.add_row(*numbers)
    buf = io.StringIO()
    TableConsole(file=buf, width=40, force_terminal=True, color_system=None).print(t)
    out = buf.getvalue()
    assert "…" not in out
    printed = re.findall(r"-?\d\.\d+e[+-]\d+", out)
    assert printed == numbers
    # the same console on a roomy terminal keeps the table at its natural width (not widened)
    buf = io.StringIO()
    t2 = Table()
    t2.add_column("x")
    t2.add_row("1.5")
    TableConsole(file=buf, width=40, force_terminal=True, color_system=None).print(t2)
    assert max(len(line) for line in buf.getvalue().splitlines()) == len("│ 1.5 │") and t2.width is None
