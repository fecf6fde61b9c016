"""The CLI items of issue 23, one row each: ways the command line used to mislead.

* ``numbers_whole_on_a_narrow_pipe``: ``inspect`` with stdout a pipe and 40 columns prints
  every table number whole (each cell equals the ``--json`` value formatted as the table does);
* ``repeated_site_refused``: ``--failures r2=1,r2=2`` ends in one line naming ``r2``, exit status 2;
* ``train_mode_module_left_in_train_mode``: ``fb.load(module)`` on a module in training mode warns
  once and leaves every flag and tensor as it was;
* ``default_method_same_in_library_and_cli``: ``bound`` without ``--method`` reports what
  ``fb.bound`` without ``method`` returns, on a chain (paper) and on a graph (tight);
* ``unsupported_operators_each_named_once``: a refused model gets one line, the library's message,
  naming every distinct unsupported operator exactly once;
* ``progress_on_stderr_json_on_stdout``: a long command (``worst``) shows progress in its stderr
  status line while ``--json`` stdout stays one JSON object.

The thorough tests of each item stay where they are (``test_cli_tables.py``, ``test_cli_graph.py``,
``test_train_mode.py``, ``test_cli_core.py``, ``test_graph_formats.py``, ``test_progress.py``); the
rows reuse their helpers and models and check each item once, end to end, on small models.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import faultbound as fb
from faultbound.cli._common import console, err_console
from tests.cli_run import run
from tests.test_cli_tables import _rows, layer_cells
from tests.test_graph_formats import TwoUnsupported
from tests.test_progress import _Status
from tests.test_train_mode import _assert_unchanged, _chain, _state


class TwoReLUs(nn.Module):
    """A residual graph whose fault sites are the ReLUs ``r1`` and ``r2``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.r1, self.fc2, self.r2, self.out = (
            nn.Linear(4, 6),
            nn.ReLU(),
            nn.Linear(6, 6),
            nn.ReLU(),
            nn.Linear(6, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.r1(self.fc1(x))
        return self.out(self.r2(self.fc2(h)) + h)


def _save(m: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.export.save(torch.export.export(m.eval(), (torch.rand(1, *shape),)), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("misleads")
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 100), nn.LeakyReLU(0.01))
    wide.append(nn.Linear(100, 3))
    with torch.no_grad():
        wide[3].weight.mul_(12345.678)  # long w_m, range and Y numbers
    return {
        "wide": _save(wide, (1, 6, 6), d / "wide.pt2"),
        "chain": _save(
            nn.Sequential(nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)),
            (3,),
            d / "chain.pt2",
        ),
        "graph": _save(TwoReLUs(), (4,), d / "graph.pt2"),
        "unsupported": _save(TwoUnsupported(), (2, 6), d / "unsupported.pt2"),
    }


def _one_line_error(code: int, out: str, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and "Traceback" not in err, (code, out, err)
    return lines[0]


def numbers_whole_on_a_narrow_pipe(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(files["wide"])
    monkeypatch.setattr(console, "width", 40)  # what COLUMNS=40 sets; stdout is a pipe (a StringIO)
    code, table, err = run("inspect", path, "--domain=-1000,1000")
    assert code == 0, err
    code, js, err = run("inspect", path, "--domain=-1000,1000", "--json")
    assert code == 0, err
    layers = json.loads(js)["layers"]
    assert "…" not in table and max(map(len, table.splitlines())) > 40  # wider than the terminal, not cut
    assert _rows(table) == [layer_cells(r) for r in layers]


def repeated_site_refused(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    line = _one_line_error(*run("bound", str(files["graph"]), "--failures", "r2=1,r2=2"))
    assert "`r2` is given twice" in line


def train_mode_module_left_in_train_mode(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    m = _chain()
    before = _state(m)
    want = copy.deepcopy(m).double().eval()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        net = fb.load(m)
    assert [w.category for w in rec] == [UserWarning] and "training mode" in str(rec[0].message)
    _assert_unchanged(m, before)
    x = torch.rand(8, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net.forward(x), want(x), rtol=1e-9, atol=1e-10)


def default_method_same_in_library_and_cli(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    methods = set()
    for name in ("chain", "graph"):
        want = fb.bound(fb.load(files[name]), [1, 1])
        code, out, err = run("bound", str(files[name]), "--failures", "1,1", "--json")
        assert code == 0, err
        d = json.loads(out)
        assert (d["method"], d["value"]) == (want.method, want.value), name
        methods.add(want.method)
    assert methods == {"paper", "tight"}  # the two defaults differ, so agreeing is not an accident


def unsupported_operators_each_named_once(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(fb.errors.UnsupportedModelError) as info:
        fb.load(files["unsupported"])
    line = _one_line_error(*run("inspect", str(files["unsupported"])))
    assert str(info.value) in line
    assert line.count("aten.cumsum") == 1 and line.count("aten.pad") == 1


def progress_on_stderr_json_on_stdout(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    status = _Status()
    monkeypatch.setattr(err_console, "status", status)
    code, out, err = run("worst", str(files["graph"]), "--failures", "r2=1", "--json")
    assert code == 0, err
    assert isinstance(json.loads(out), dict)  # stdout is exactly one JSON object
    assert status.messages and all(isinstance(m, str) and m for m in status.messages)


ROWS: dict[str, Callable[[dict[str, Path], pytest.MonkeyPatch], None]] = {
    f.__name__: f
    for f in (
        numbers_whole_on_a_narrow_pipe,
        repeated_site_refused,
        train_mode_module_left_in_train_mode,
        default_method_same_in_library_and_cli,
        unsupported_operators_each_named_once,
        progress_on_stderr_json_on_stdout,
    )
}


@pytest.mark.parametrize("row", list(ROWS))
def test_cli_does_not_mislead(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, row: str) -> None:
    ROWS[row](files, monkeypatch)
