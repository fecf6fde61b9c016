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
        (["--samples", "4", "--failures", "1", "--trials", "3"], "one count per hidden layer"),
        (["--data", "/nonexistent.npz", "--failures", "1,1"], "not found"),
        (["--samples", "0", "--failures", "1,1"], "samples"),
        (["--failures", "1,1"], "exactly one of --data"),
        (["--samples", "3"], "--failures"),
        (["--samples", "3", "--failures", "1,1", "--fault", "nope"], "fault"),
        (["--samples", "3", "--failures", "1,1", "--seed", "-1"], "seed"),
        (["--samples", "3", "--failures", "1,1", "--seed", "1180591620717411303424"], "seed"),
        (["--samples", "3", "--failures", "1,1", "--margin", "0.7"], "margin"),
        (["--samples", "3", "--failures", "1,1", "--until-margin"], "--margin"),
        (["--samples", "3", "--failures", "1,1", "--margin", "0.1", "--trials", "5"], "not both"),
        (["--samples", "3", "--failures", "1,1", "--shard", "3/3", "--state", "s.npz"], "shard"),
        (["--samples", "3", "--failures", "1,1", "--shard", "1/3"], "--state"),
        (["--samples", "3", "--rate", "0.1", "--exhaustive"], "exact counts"),
        (["--samples", "3", "--failures", "1,1", "--backend", "spark"], "backend"),
        (["--samples", "3", "--failures", "1,1", "--replay", "/nonexistent.json"], "Manifest not found"),
    ],
)
def test_inject_bad_input(model: Path, args: list[str], msg: str) -> None:
    code, out, err = run("inject", str(model), *args)
    assert code == 2
    assert msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_worst_bad_input(model: Path) -> None:
    code, _, err = run("worst", str(model), "--failures", "1,1,1")
    assert code == 2 and "one count per hidden layer" in err
    for args, msg in ((["--backend", "spark"], "backend"), (["--exhaustive-limit", "-1"], "exhaustive-limit"),
                      (["--backend", "ray", "--workers", "0"], "workers")):
        code, _, err = run("worst", str(model), "--failures", "1,1", *args)
        assert code == 2 and msg in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_worst_exhaustive_limit_switches_to_beam(model: Path) -> None:
    base = ["worst", str(model), "--failures", "1,1", "--probes", "4", "--json"]
    assert json.loads(run(*base).stdout)["exhaustive"] is True
    assert json.loads(run(*base, "--exhaustive-limit", "0").stdout)["exhaustive"] is False


def test_worst_max_units_ranks_a_sample(model: Path) -> None:
    """--max-units 1 ranks one unit per faulty layer: fewer evaluations than ranking every unit."""
    base = ["worst", str(model), "--failures", "1,1", "--probes", "4", "--exhaustive-limit", "0", "--json"]
    every, sampled = json.loads(run(*base).stdout), json.loads(run(*base, "--max-units", "1").stdout)
    assert sampled["evaluations"] < every["evaluations"]
    assert [len(sampled["failure_set"][k]) for k in ("1", "2")] == [1, 1]


def _checkpoint_error(model: Path, ck: Path, msg: str) -> None:
    code, out, err = run("inject", str(model), "--samples", "4", "--failures", "1,1", "--trials", "8", "--resume",
                         str(ck))
    assert code == 2, (out, err)
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_inject_bad_checkpoints(model: Path, tmp_path: Path) -> None:
    """Issue 12: empty, truncated, tampered and unwritable checkpoints are one line and exit 2."""
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _checkpoint_error(model, empty, "empty")
    good = tmp_path / "good.npz"
    assert run("inject", str(model), "--samples", "4", "--failures", "1,1", "--trials", "8", "--resume",
               str(good)).returncode == 0
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:200])
    _checkpoint_error(model, cut, "Cannot read checkpoint")
    raw = bytearray(good.read_bytes())
    old, new = '"next_chunk": 1'.encode("utf-32-le"), '"next_chunk": 9'.encode("utf-32-le")  # numpy str arrays
    i = raw.find(old)
    assert i > 0
    raw[i : i + len(old)] = new
    edited = tmp_path / "edited.npz"
    edited.write_bytes(bytes(raw))
    _checkpoint_error(model, edited, "Bad CRC-32")  # the zip's own check; edits that keep it: test_campaign
    (tmp_path / "afile").write_text("x")
    _checkpoint_error(model, tmp_path / "afile" / "ck.npz", "Cannot write checkpoint")


def test_shards_merge_prints_the_unsharded_output(model: Path, tmp_path: Path) -> None:
    base = ["inject", str(model), "--samples", "7", "--fault", "byzantine", "--failures", "2,1", "--trials", "50",
            "--batch", "6", "--seed", "4"]
    for fmt in ([], ["--json"]):
        full = run(*base, *fmt)
        assert full.returncode == 0, full.stderr
        files = [str(tmp_path / f"s{i}{len(fmt)}.npz") for i in range(4)]
        for i in (3, 1, 0, 2):
            r = run(*base, "--shard", f"{i}/4", "--state", files[i])
            assert r.returncode == 0, r.stderr
        merged = run("merge", *reversed(files), *fmt)
        assert merged.returncode == 0, merged.stderr
        assert merged.stdout == full.stdout
    code, _, err = run("merge", files[0], files[1])
    assert code == 2 and "missing" in err


def test_manifest_replays_the_same_configurations(model: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=np.random.default_rng(1).random((9, 4)), y=np.arange(9) % 3)
    man = tmp_path / "m.json"
    a = run("inject", str(model), "--data", str(tmp_path / "d.npz"), "--fault", "byzantine", "--failures", "1,2",
            "--margin", "0.1", "--until-margin", "--batch", "8", "--seed", "7", "--manifest", str(man), "--json")
    assert a.returncode == 0, a.stderr
    da = json.loads(a.stdout)
    assert da["stopped_early"] and da["margin_achieved"] <= 0.1
    m = json.loads(man.read_text())
    assert m["configurations"] == da["configurations"] and m["chunks"] == [[0, da["configurations"] // 8]]
    b = run("inject", str(model), "--replay", str(man), "--json")
    assert b.returncode == 0, b.stderr
    db = json.loads(b.stdout)
    for key in ("evaluations", "max_error", "mean_error", "quantiles", "changed_rate", "accuracy", "worst"):
        assert db[key] == da[key], key
    code, _, err = run("inject", str(model), "--replay", str(man), "--samples", "9")
    assert code == 2 and "differ" in err


def test_margin_sets_trials_by_leveugle(model: Path) -> None:
    import math

    code, out, err = run("inject", str(model), "--samples", "5", "--fault", "byzantine", "--failures", "3,3",
                         "--margin", "0.05", "--confidence", "0.9", "--json")
    assert code == 0, err
    d = json.loads(out)
    n_pop = math.comb(6, 3) * math.comb(5, 3)  # 200 failure sets
    t2 = 1.6448536269514722**2 * 0.25
    n = math.ceil(n_pop / (1 + 0.05**2 * (n_pop - 1) / t2))
    assert d["population"] == n_pop and d["trials"] == d["configurations"] == n
    assert d["sample_size"]["margin"] == 0.05 and "failure_rate_ci90" in d
    # drawn without replacement (distinct sets), so the interval carries the finite-population
    # correction and Leveugle's n guarantees the margin (Wilson at p = 1/2 is narrower than Wald)
    assert d["spec"]["without_replacement"] and d["margin_achieved"] <= 0.05
    assert d["interval"] == "wilson-design-effect-over-configurations with finite-population correction"


def test_exhaustive_is_the_default_when_it_fits(model: Path) -> None:
    code, out, err = run("inject", str(model), "--samples", "5", "--failures", "1,1", "--trials", "100", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["exhaustive"] and d["population"] == 30 and d["configurations"] == 30
    code, out, err = run("inject", str(model), "--samples", "5", "--failures", "1,1", "--trials", "20", "--json")
    d = json.loads(out)
    assert not d["exhaustive"] and d["configurations"] == 20
