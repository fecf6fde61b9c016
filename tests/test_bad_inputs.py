"""Every command x every kind of bad input: exit status 2, exactly one line on stderr, no traceback.

The table crosses the commands with bad seeds, counts, domains, rates, accuracies and data files
(wrong shape, wrong dtype, NaN, empty, no rows, a CSV header, labels out of range or of the wrong
length, missing files, a directory instead of a file). Checkpoint (``--resume``) rows belong to
the campaign tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.cli_run import run

BIG = str(2**70)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    torch.export.save(torch.export.export(m, (torch.zeros(1, 3),)), str(d / "m.pt2"))
    zero = nn.Sequential(nn.Linear(3, 0), nn.Tanh(), nn.Linear(0, 2))
    torch.export.save(torch.export.export(zero, (torch.zeros(1, 3),)), str(d / "zero.pt2"))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 3))
    y = np.array([0, 1, 0, 1, 1, 0])
    np.savez(d / "ok.npz", X=x, y=y)
    with torch.no_grad():
        fx = m(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
    np.savez(d / "reg.npz", X=x, y=fx + 0.01)
    np.savez(d / "reg_short.npz", X=x, y=rng.uniform(-1, 1, (4, 2)))
    np.savez(d / "norows.npz", X=np.zeros((0, 3)), y=np.zeros(0, dtype=np.int64))
    np.savez(d / "wide.npz", X=rng.uniform(0, 1, (6, 5)), y=y)
    np.savez(d / "nan.npz", X=np.where(np.eye(6, 3) > 0, np.nan, x), y=y)
    np.savez(d / "labels_out.npz", X=x, y=np.array([0, 1, 7, 1, 1, 0]))
    np.savez(d / "labels_neg.npz", X=x, y=np.array([0, -1, 0, 1, 1, 0]))
    np.savez(d / "labels_short.npz", X=x, y=y[:4])
    np.savez(d / "labels_frac.npz", X=x, y=np.array([0, 0.5, 0, 1, 1, 0]))
    np.savez(d / "noX.npz", A=x)
    np.savez(d / "strings.npz", X=np.array([["a", "b", "c"]] * 6), y=y)
    np.save(d / "flat.npy", np.zeros(3))
    np.save(d / "strings.npy", np.array([["a", "b", "c"]] * 2))
    (d / "empty.npy").write_bytes(b"")
    (d / "empty.npz").write_bytes(b"")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("a,b,c\n0.1,0.2,0.3\n")
    (d / "ragged.csv").write_text("0.1,0.2,0.3\n0.1,0.2\n")
    (d / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    (d / "adir.npz").mkdir()
    (d / "data.txt").write_text("0.1,0.2,0.3\n")
    locked = d / "locked.npz"
    np.savez(locked, X=x, y=y)
    locked.chmod(0)  # unreadable, except for root (then the row below is skipped)
    extra = {"missing.npz": str(d / "missing.npz"), "dir": str(d), "out.html": str(d / "out.html")}
    return {p.name: str(p) for p in d.iterdir()} | extra


#: Options that make each command run on the small model, cheaply.
BASE: dict[str, list[str]] = {
    "inspect": [],
    "bound": ["--failures", "1"],
    "tolerate": ["--eps", "0.5", "--eps-prime", "0.05"],
    "inject": ["--failures", "1", "--samples", "4", "--trials", "3"],
    "worst": ["--failures", "1", "--probes", "2"],
    "certify": ["--failures", "1", "--samples", "3", "--data", "@ok.npz"],
    "precision": ["--budget", "0.5", "--samples", "16"],
    "boost": ["--eps", "0.5", "--eps-prime", "0.05", "--runs", "20", "--error-runs", "2"],
    "report": ["--no-plots", "--out", "@out.html"],
}

#: Bad options, each with the commands that take it.
BAD_OPTIONS: list[tuple[list[str], tuple[str, ...]]] = [
    (["--seed", "-1"], ("inject", "worst", "certify", "precision", "boost", "report")),
    (["--seed", BIG], ("inject", "worst", "certify", "precision", "boost", "report")),
    (["--seed", "x"], ("inject", "worst", "certify", "precision", "boost", "report")),
    (["--domain", "1,0"], tuple(BASE)),
    (["--domain", "nan,1"], tuple(BASE)),
    (["--domain", "0,inf"], tuple(BASE)),
    (["--domain", "0"], tuple(BASE)),
    (["--domain", "a,b"], tuple(BASE)),
    (["--samples", "0"], ("inject", "certify", "report")),
    (["--samples", "-1"], ("inject", "certify", "precision", "report")),
    (["--trials", "-5"], ("inject", "report")),
    (["--batch", "0"], ("inject",)),
    (["--probes", "-1"], ("worst",)),
    (["--max-units", "0"], ("worst",)),
    (["--max-inputs", "0"], ("certify",)),
    (["--exhaustive-limit", "-1"], ("certify",)),
    (["--runs", "0"], ("boost",)),
    (["--error-runs", "-1"], ("boost",)),
    (["--max-frac-bits", "-1"], ("precision",)),
    (["--input-shape", "0,3"], tuple(BASE)),
    (["--input-shape", "a"], tuple(BASE)),
    (["--radius", "-0.1"], ("certify",)),
    (["--radius", "nan"], ("certify",)),
    (["--fault", "byzantine", "--capacity", "nan"], ("bound", "inject", "worst", "certify")),
    (["--fault", "byzantine", "--capacity", "-1"], ("bound", "inject", "worst", "certify")),
    (["--fault", "nonsense"], ("bound", "inject", "worst", "certify")),
]

#: Bad replacements of one option's value in BASE (command, option, value).
BAD_VALUES: list[tuple[str, str, str]] = [
    ("bound", "--failures", "9"),
    ("bound", "--failures", "-1"),
    ("bound", "--failures", "1,1"),
    ("bound", "--failures", "a"),
    ("bound", "--failures", "1=1,1=0"),  # a fault site given twice
    ("bound", "--failures", "all=1,all=0"),
    ("bound", "--failures", "1=0,all=1"),  # all=K after a named site
    ("tolerate", "--eps", "-1"),
    ("tolerate", "--eps", "nan"),
    ("tolerate", "--eps-prime", "0.9"),
    ("inject", "--failures", "6"),
    ("inject", "--failures", "1=1,1=1"),
    ("worst", "--failures", "-2"),
    ("worst", "--failures", "all=1,1=0,1=1"),
    ("certify", "--failures", "x"),
    ("certify", "--failures", "1=1,1=2"),
    ("precision", "--budget", "-1"),
    ("precision", "--budget", "0"),
    ("precision", "--budget", "nan"),
    ("boost", "--eps", "nan"),
    ("boost", "--eps-prime", "1"),
    ("report", "--no-plots", "--eps=-1"),
    ("report", "--no-plots", "--failures=1=1,1=0"),
    ("report", "--no-plots", "--campaign-failures=all=1,all=1"),
]

RATES = ["-0.1", "1.5", "nan"]

#: Data files that every --data command must refuse.
BAD_DATA = [
    "norows.npz",
    "wide.npz",
    "nan.npz",
    "noX.npz",
    "strings.npz",
    "flat.npy",
    "strings.npy",
    "empty.npy",
    "empty.npz",
    "empty.csv",
    "header.csv",
    "ragged.csv",
    "garbage.npz",
    "adir.npz",
    "missing.npz",
    "data.txt",
]

#: Labelled data that commands reading labels must refuse.
BAD_LABELS = ["labels_out.npz", "labels_neg.npz", "labels_short.npz", "labels_frac.npz"]

#: Commands with --data, and the extra options they need with it.
DATA_COMMANDS: dict[str, list[str]] = {
    "tolerate": ["--eps", "0.5"],  # ok data: reg.npz (targets, not labels)
    "inject": ["--failures", "1", "--trials", "3"],
    "worst": ["--failures", "1", "--probes", "2"],
    "certify": ["--failures", "1", "--samples", "3"],
    "precision": ["--budget", "0.5", "--samples", "16"],
    "report": ["--no-plots", "--out", "@out.html"],
}
LABEL_COMMANDS = ("inject", "certify")  # report reads y only as regression targets for eps'



def _cases() -> list[tuple[str, list[str]]]:
    cases: list[tuple[str, list[str]]] = []
    for opt, cmds in BAD_OPTIONS:
        for c in cmds:
            cases.append((c, [*BASE[c], *opt]))
    for c, opt, val in BAD_VALUES:
        args = list(BASE[c])
        if opt in args and not val.startswith("--"):
            args[args.index(opt) + 1] = val
        else:
            args.append(val)
        cases.append((c, args))
    for r in RATES:
        cases.append(("inject", ["--rate", r, "--samples", "4", "--trials", "3"]))
    for f in BAD_DATA:
        for c, extra in DATA_COMMANDS.items():
            cases.append((c, [*extra, "--data", f"@{f}"]))
    for f in BAD_LABELS:
        for c in LABEL_COMMANDS:
            cases.append((c, [*DATA_COMMANDS[c], "--data", f"@{f}"]))
    cases.append(("tolerate", [*DATA_COMMANDS["tolerate"], "--data", "@reg_short.npz"]))
    cases.append(("tolerate", [*DATA_COMMANDS["tolerate"], "--data", "@ok.npz"]))  # labels where targets belong
    for c in BASE:
        cases.append((c, ["@missing.pt2", *BASE[c]]))
        cases.append((c, ["@dir", *BASE[c]]))
        cases.append((c, ["@data.txt", *BASE[c]]))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("command", "args"), CASES, ids=[f"{c} {' '.join(a)}" for c, a in CASES])
def test_bad_input_is_one_line(files: dict[str, str], command: str, args: list[str]) -> None:
    argv = [a if not a.startswith("@") else files.get(a[1:], a[1:]) for a in args]
    bad_model = bool(args) and args[0][1:] in ("missing.pt2", "dir", "data.txt")
    model = argv.pop(0) if bad_model else files["m.pt2"]
    code, out, err = run(command, model, *argv)
    assert "Traceback" not in err + out, err
    assert code == 2, (code, err, out[-500:])
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without permission")
@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_unreadable_data_file(files: dict[str, str], command: str) -> None:
    code, out, err = run(command, files["m.pt2"], *DATA_COMMANDS[command], "--data", files["locked.npz"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files without permission")
def test_unreadable_model_file(files: dict[str, str], tmp_path: Path) -> None:
    p = tmp_path / "locked.pt2"
    p.write_bytes(Path(files["m.pt2"]).read_bytes())
    p.chmod(0)
    for c in BASE:
        code, out, err = run(c, str(p), *[files[a[1:]] if a.startswith("@") else a for a in BASE[c]])
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (c, err)


def test_zero_width_layer_refused_at_load(files: dict[str, str]) -> None:
    for c in ("inspect", "bound", "tolerate"):
        code, out, err = run(c, files["zero.pt2"], *BASE[c])
        assert code == 2 and len(err.strip().splitlines()) == 1, (c, err)
        assert "0 neurons" in err or "width 0" in err, err


def test_good_inputs_pass(files: dict[str, str]) -> None:
    """The base options are valid: every refusal above is due to the one bad value."""
    for c, args in BASE.items():
        code, out, err = run(c, files["m.pt2"], *[files[a[1:]] if a.startswith("@") else a for a in args])
        assert code == 0, (c, err)
    for c, extra in DATA_COMMANDS.items():
        extra = [files[a[1:]] if a.startswith("@") else a for a in extra]
        code, out, err = run(c, files["m.pt2"], *extra, "--data", files["reg.npz" if c == "tolerate" else "ok.npz"])
        assert code == 0, (c, err)
