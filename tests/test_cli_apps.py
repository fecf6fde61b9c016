"""CLI tests for precision / boost / train / sweep / figures: outputs, files, and bad input (exit 2)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from tests.cli_run import Result, run


def assert_bad(r: Result) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:")
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.Sigmoid(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 1)).eval()
    p = tmp_path_factory.mktemp("m") / "mlp.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 3),)), str(p))
    return p


def test_subprocess_bad_input_one_line() -> None:
    cmd = [sys.executable, "-c", "from faultbound.cli import main; main()", "precision", "/nonexistent.pt2",
           "--budget", "0.1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_precision_json_and_table(model_file: Path) -> None:
    r = run("precision", str(model_file), "--eps", "0.05", "--eps-prime", "0.01", "--json", "--samples", "256")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["budget"] == pytest.approx(0.04)
    assert out["certified"] <= 0.04 and out["measured"] <= out["certified"] and out["within_budget"]
    assert out["measured"] <= out["searched_lambda_model"] <= out["certified"]
    assert len(out["activation_formats"]) == 2 and out["weight_formats"] is None
    assert 0 < out["memory_saved"] < 1
    r = run("precision", str(model_file), "--budget", "0.01", "--weights", "--method", "paper", "--samples", "64")
    assert r.returncode == 0, r.stderr
    assert "certified error" in r.stdout and "float32" in r.stdout and "weights:" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--samples", "16"],
        ["--budget", "0.1", "--eps", "0.2", "--eps-prime", "0.1"],
        ["--eps", "0.1", "--eps-prime", "0.2"],
        ["--eps", "0.1"],
        ["--budget", "-1"],
        ["--budget", "nan"],
        ["--budget", "1e-30", "--max-frac-bits", "8"],
        ["--budget", "0.1", "--method", "exact"],
        ["--budget", "0.1", "--data", "/nonexistent.npz"],
    ],
)
def test_precision_bad_input(model_file: Path, args: list[str]) -> None:
    assert_bad(run("precision", str(model_file), *args))


def test_precision_missing_model() -> None:
    assert_bad(run("precision", "/nonexistent.pt2", "--budget", "0.1"))


def test_boost_json_and_table(model_file: Path) -> None:
    r = run("boost", str(model_file), "--failures", "2,1", "--latency", "lognormal", "--params", "0,0.5",
            "--runs", "3000", "--error-runs", "50", "--seed", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["failures"] == [2, 1] and out["waits"] == [3, 6, 5] and out["seed"] == 3
    assert out["within_bound"]
    assert out["measured_max_error"] <= out["certified"]
    assert out["speedup"]["median"] > 1
    r = run("boost", str(model_file), "--eps", "2", "--eps-prime", "0.5", "--latency", "pareto", "--runs", "2000",
            "--error-runs", "20")
    assert r.returncode == 0, r.stderr
    assert "speed-up" in r.stdout and "certified" in r.stdout and "tolerate" in r.stdout


def test_boost_delays_and_data(model_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((7, 3)))
    common = ["--failures", "2,1", "--runs", "500", "--error-runs", "20", "--samples", "9", "--json"]
    r = run("boost", str(model_file), *common, "--data", str(data))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["delays"] == "per-synapse" and out["method"] in ("per-receiver", "paper")
    assert out["n_inputs"] == 9 + 8 + 7
    assert out["inputs"] == "9 uniform domain samples, all 8 domain corners, 7 data points"
    assert out["measured_max_error"] <= out["certified"] and out["crash_certified"] is not None
    r = run("boost", str(model_file), *common, "--delays", "per-sender")
    assert r.returncode == 0, r.stderr
    sender = json.loads(r.stdout)
    assert sender["delays"] == "per-sender" and sender["crash_certified"] is None
    assert sender["n_inputs"] == 9 + 8 and sender["within_bound"]
    r = run("boost", str(model_file), "--failures", "2,1", "--runs", "300", "--error-runs", "5")
    assert r.returncode == 0 and "per-synapse delays" in r.stdout and "all 8 domain corners" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--failures", "1,x"],
        ["--failures", "8,0"],
        ["--failures", "1"],
        ["--failures", "1,0", "--latency", "gamma"],
        ["--failures", "1,0", "--latency", "pareto", "--params", "1"],
        ["--failures", "1,0", "--latency", "exponential", "--params", "-1"],
        ["--failures", "1,0", "--runs", "0"],
        ["--eps", "1"],
        ["--failures", "1,0", "--eps", "1", "--eps-prime", "0.1"],
        ["--eps", "0.1", "--eps-prime", "0.5"],
        ["--failures", "1,0", "--delays", "per-neuron"],
        ["--failures", "1,0", "--samples", "-1"],
        ["--failures", "1,0", "--data", "/nonexistent.npy"],
    ],
)
def test_boost_bad_input(model_file: Path, args: list[str]) -> None:
    assert_bad(run("boost", str(model_file), *args))


def test_train_writes_model_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = run("train", "--dataset", "synthetic", "--K", "2", "--widths", "6,5", "--epochs", "2", "--fep-weight", "0.01",
            "--weight-cap", "1.0", "--failures", "1,1", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["failures"] == [1, 1] and s["config"]["K"] == 2.0
    assert s["measured_max_error"] <= s["bound_paper"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bound_paper"] == s["bound_paper"]
    net = fb.load(out / "model.pt2")
    assert net.widths == [6, 5] and net.K == [2.0, 2.0] and max(net.w_max) <= 1.0 + 1e-6
    r = run("train", "--dataset", "synthetic", "--widths", "4", "--epochs", "1", "--out", str(out))
    assert r.returncode == 0 and "Fep" in r.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--dataset", "mnist"],
        ["--K", "0"],
        ["--K", "nan"],
        ["--fep-kind", "exact"],
        ["--fep-weight", "-1"],
        ["--widths", "4", "--failures", "4"],
        ["--widths", "a"],
        ["--epochs", "0"],
    ],
)
def test_train_bad_input(tmp_path: Path, args: list[str]) -> None:
    assert_bad(run("train", "--out", str(tmp_path / "x"), *args))


def test_sweep_and_figures(tmp_path: Path) -> None:
    r = run("sweep", "--dataset", "synthetic", "--Ks", "0.5,2", "--fep-weights", "0", "--widths", "5,4",
            "--epochs", "1", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "s" / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(x["K"]) for x in rows] == [0.5, 2.0]
    assert (tmp_path / "s" / "sweep.png").stat().st_size > 0
    r = run("figures", "--out", str(tmp_path / "f"), "--Ks", "1", "--epochs", "1", "--json")
    assert r.returncode == 0, r.stderr
    paths = json.loads(r.stdout)
    assert all(Path(p).exists() for p in paths.values()) and len(paths) == 5
    assert json.loads(Path(paths["figure3_config"]).read_text())["epochs"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "--Ks", "0,1"],
        ["sweep", "--fep-weights", "-1"],
        ["sweep", "--Ks", "x"],
        ["figures", "--Ks", "-1"],
        ["figures", "--epochs", "0"],
        ["figures", "--target", "1.5"],
    ],
)
def test_sweep_figures_bad_input(tmp_path: Path, args: list[str]) -> None:
    assert_bad(run(*args, "--out", str(tmp_path / "o")))


@pytest.mark.parametrize("cmd", ["train", "sweep", "figures"])
def test_unwritable_out_dir(tmp_path: Path, cmd: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_bad(run(cmd, "--out", str(blocker / "sub")))
