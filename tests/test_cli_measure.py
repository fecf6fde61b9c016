"""CLI tests for ``inject`` and ``worst``: JSON on stdout, one-line errors and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from tests.cli_run import run


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    path = tmp_path_factory.mktemp("m") / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 4),)), str(path))
    return path


def test_inject_json(model: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(0).random((10, 4)), y=np.arange(10) % 3)
    code, out, err = run("inject", str(model), "--data", str(tmp_path / "d.npz"), "--fault", "byzantine",
                         "--capacity", "0.5", "--failures", "1,1", "--trials", "20", "--batch", "8",
                         "--seed", "3", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["trials"] == 20 and d["seed"] == 3 and d["evaluations"] == 200
    assert 0 <= d["mean_error"] <= d["max_error"]
    assert d["worst"]["error"] == d["max_error"]
    assert "accuracy" in d and "changed_rate" in d
    bound = fb.bound(fb.load(model), [1, 1], fb.Byzantine(0.5)).value
    assert d["max_error"] <= bound + 1e-6


def test_inject_resume_and_rate(model: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck.npz"
    args = ["inject", str(model), "--samples", "8", "--rate", "0.2", "--trials", "12", "--batch", "4", "--json"]
    c1, o1, _ = run(*args, "--resume", str(ck))
    c2, o2, _ = run(*args, "--resume", str(ck))  # already complete: same answer
    c3, o3, _ = run(*args)
    assert c1 == c2 == c3 == 0 and ck.exists()
    a, b, c = json.loads(o1), json.loads(o2), json.loads(o3)
    for d in (a, b, c):
        d.pop("resumed_from_chunk")
    assert a == b == c


def test_inject_table_and_precision_and_bitflip(model: Path) -> None:
    code, out, err = run("inject", str(model), "--samples", "4", "--fault", "precision", "--errors", "0.01,0.02",
                         "--trials", "3")
    assert code == 0, err
    assert "max_error" in out
    code, out, err = run("inject", str(model), "--samples", "4", "--fault", "bitflip-weight", "--format", "int8",
                         "--failures", "1,0,0", "--trials", "5", "--json")
    assert code == 0, err
    assert json.loads(out)["evaluations"] == 20


def test_worst_json(model: Path) -> None:
    code, out, err = run("worst", str(model), "--fault", "crash", "--failures", "1,1", "--probes", "8", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["exhaustive"] is True and d["evaluations"] > 0 and len(d["input"]) == 4
    assert d["max_error"] <= fb.bound(fb.load(model), [1, 1], fb.Crash()).value + 1e-9


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--samples", "4", "--rate", "1.5", "--trials", "3"], "rate"),
        (["--samples", "4", "--failures", "1,1", "--trials", "-1"], "trials"),
        (["--samples", "4", "--failures", "1", "--trials", "3"], "one count per layer"),
        (["--data", "/nonexistent.npz", "--failures", "1,1"], "not found"),
        (["--samples", "0", "--failures", "1,1"], "samples"),
        (["--failures", "1,1"], "exactly one of --data"),
        (["--samples", "3"], "--failures"),
        (["--samples", "3", "--failures", "1,1", "--fault", "nope"], "fault"),
    ],
)
def test_inject_bad_input(model: Path, args: list[str], msg: str) -> None:
    code, out, err = run("inject", str(model), *args)
    assert code == 2
    assert msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_worst_bad_input(model: Path) -> None:
    code, _, err = run("worst", str(model), "--failures", "1,1,1")
    assert code == 2 and "one count per layer" in err
