"""Silent wrong answers at the edges: data outside the domain, labels out of range, in-place
activations, pickled CNNs without an input shape, and error advice that names real options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.errors import InvalidArgumentError
from tests.cli_run import run


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("edges")
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    torch.export.save(torch.export.export(m, (torch.zeros(1, 3),)), str(d / "m.pt2"))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 3))
    y = np.array([0, 1] * 4)
    x_out = x.copy()
    x_out[2, 1] = 3.0  # two points leave [0, 1]: point 2 in feature 1, point 5 in feature 2
    x_out[5, 2] = -0.5
    np.savez(d / "in.npz", X=x, y=y)
    np.savez(d / "out.npz", X=x_out, y=y)
    with torch.no_grad():
        fx = m(torch.as_tensor(x_out, dtype=torch.float32)).double().numpy()
    np.savez(d / "out_reg.npz", X=x_out, y=fx)
    with torch.no_grad():
        np.savez(d / "in_reg.npz", X=x, y=m(torch.as_tensor(x, dtype=torch.float32)).double().numpy())
    return {p.name: str(p) for p in d.iterdir()} | {"report.html": str(d / "report.html")}


#: Every command with --data and the options it needs (tolerate reads regression targets).
DATA_COMMANDS = {
    "tolerate": (["--eps", "0.5"], "out_reg.npz"),
    "inject": (["--failures", "1", "--trials", "3"], "out.npz"),
    "worst": (["--failures", "1", "--probes", "2"], "out.npz"),
    "certify": (["--failures", "1", "--samples", "3"], "out.npz"),
    "precision": (["--budget", "0.5", "--samples", "16"], "out.npz"),
    "report": (["--no-plots", "--out", "@report.html"], "out.npz"),
    "boost": (["--failures", "1", "--runs", "50", "--error-runs", "5", "--samples", "4"], "out.npz"),
}


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_data_outside_domain_refused(setup: dict[str, str], command: str) -> None:
    extra, data = DATA_COMMANDS[command]
    extra = [setup[a[1:]] if a.startswith("@") else a for a in extra]
    code, out, err = run(command, setup["m.pt2"], *extra, "--data", setup[data])
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1
    assert "2 of 8 points" in err and "features 1, 2" in err, err
    assert "--domain-from-data" in err
    assert "--domain-from-data" in run(command, "--help").stdout  # the advised option exists


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_domain_from_data_widens_and_says_so(setup: dict[str, str], command: str) -> None:
    extra, data = DATA_COMMANDS[command]
    extra = [setup[a[1:]] if a.startswith("@") else a for a in extra]
    code, out, err = run(command, setup["m.pt2"], *extra, "--data", setup[data], "--domain-from-data", "--json")
    assert code == 0, err
    note = json.loads(out)["domain_from_data"]
    assert note["points_outside"] == 2 and note["features"] == [1, 2]
    assert note["lo"] == -0.5 and note["hi"] == 3.0
    code, out, err = run(command, setup["m.pt2"], *extra, "--data", setup[data], "--domain-from-data")
    assert code == 0, err
    assert "domain widened to the data" in " ".join(out.split())


@pytest.mark.parametrize("command", sorted(DATA_COMMANDS))
def test_data_inside_domain_has_no_note(setup: dict[str, str], command: str) -> None:
    extra = [setup[a[1:]] if a.startswith("@") else a for a in DATA_COMMANDS[command][0]]
    data = "in_reg.npz" if command == "tolerate" else "in.npz"
    code, out, err = run(command, setup["m.pt2"], *extra, "--data", setup[data], "--json")
    assert code == 0, err
    assert json.loads(out)["domain_from_data"] is None


def test_digits_outside_domain_refused(tmp_path: Path) -> None:
    """--digits on a model whose domain does not hold the digits' pixel values [0, 1]."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10))
    p = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 64),)), str(p))
    code, out, err = run("inject", str(p), "--digits", "--failures", "1", "--trials", "2", "--domain", "0,0.5")
    assert code == 2 and "points in the digits fall outside" in err, err


def test_widened_domain_is_the_box_of_data_and_domain(setup: dict[str, str]) -> None:
    """The widened certificate equals the bound computed directly on the hand-built box."""
    code, out, err = run("worst", setup["m.pt2"], "--failures", "1", "--probes", "2", "--data", setup["out.npz"],
                         "--domain-from-data", "--json")
    assert code == 0, err
    net = fb.load(setup["m.pt2"])
    lo = np.array([0.0, 0.0, -0.5])
    hi = np.array([1.0, 3.0, 1.0])
    wide = net.with_domain((lo, hi))
    assert torch.equal(wide.domain.lo.flatten(), torch.as_tensor(lo, dtype=wide.domain.lo.dtype))
    # the worst input found lies in the widened box, and may lie outside the original one
    x = np.array(json.loads(out)["input"])
    assert np.all(x >= lo - 1e-9) and np.all(x <= hi + 1e-9)


def test_precision_measures_the_data_it_was_given(setup: dict[str, str]) -> None:
    """Never clipped: the library refuses data outside the domain instead of moving it."""
    from faultbound.apps.precision import samples_corners_and_data

    net = fb.load(setup["m.pt2"])
    x_out = np.load(setup["out.npz"])["X"]
    with pytest.raises(InvalidArgumentError, match="2 of 8 points"):
        samples_corners_and_data(net, x_out, 4)
    pts = samples_corners_and_data(
        net.with_domain((x_out.min(0).clip(max=0), x_out.max(0).clip(min=1))), x_out, 4
    )
    # the data rows are present unchanged (same values, not clipped)
    assert any(torch.allclose(p, torch.as_tensor(x_out[2])) for p in pts.reshape(-1, 3))


@pytest.mark.parametrize("name", ["labels_out", "labels_short", "labels_frac"])
def test_inject_refuses_bad_labels(setup: dict[str, str], tmp_path: Path, name: str) -> None:
    x = np.load(setup["in.npz"])["X"]
    y = {"labels_out": np.array([0, 1, 2, 1, 0, 1, 0, 5]), "labels_short": np.array([0, 1, 0]),
         "labels_frac": np.array([0, 1, 0.5, 1, 0, 1, 0, 1])}[name]
    p = tmp_path / f"{name}.npz"
    np.savez(p, X=x, y=y)
    for cmd in ("inject", "certify"):
        code, out, err = run(cmd, setup["m.pt2"], "--data", str(p), "--failures", "1", "--samples" if cmd == "certify"
                             else "--trials", "3")
        assert code == 2 and len(err.strip().splitlines()) == 1, (cmd, err)
        assert "label" in err or "target" in err, err


def test_inject_labels_count_accuracy(setup: dict[str, str]) -> None:
    """Valid labels give the clean accuracy of a hand count over the network's argmax."""
    code, out, err = run("inject", setup["m.pt2"], "--data", setup["in.npz"], "--failures", "0", "--trials", "2",
                         "--json")
    assert code == 0, err
    z = np.load(setup["in.npz"])
    net = fb.load(setup["m.pt2"])
    pred = net.forward(torch.as_tensor(z["X"])).argmax(1).numpy()
    expected = float(np.mean(pred == z["y"]))
    d = json.loads(out)
    acc = d["accuracy"]
    assert (acc["value"] if isinstance(acc, dict) else acc) == pytest.approx(expected)


INPLACE = [
    nn.ReLU(inplace=True),
    nn.ReLU6(inplace=True),
    nn.Hardtanh(-0.5, 0.5, inplace=True),
    nn.LeakyReLU(0.2, inplace=True),
    nn.SiLU(inplace=True),
    nn.ELU(0.7, inplace=True),
]


@pytest.mark.parametrize("act", INPLACE, ids=lambda a: type(a).__name__)
def test_inplace_activation_exports_load(tmp_path: Path, act: nn.Module) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 6), act, nn.Linear(6, 2)).eval()
    ep = torch.export.export(m, (torch.zeros(1, 3),))
    assert any(str(n.target).endswith("_.default") for n in ep.graph.nodes if n.op == "call_function")
    p = tmp_path / "ip.pt2"
    torch.export.save(ep, str(p))
    net = fb.load(p)
    x = torch.rand(50, 3, dtype=torch.float64) * 4 - 2
    with torch.no_grad():
        ref = m.double()(x.clone())
    assert torch.allclose(net.forward(x), ref, atol=1e-9)


def test_inplace_relu_in_a_cnn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    p = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 1, 6, 6),)), str(p))
    code, out, err = run("inspect", str(p), "--json")
    assert code == 0, err
    assert json.loads(out)["widths"] == [32]


def test_pickled_cnn_needs_and_takes_input_shape(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    p = tmp_path / "cnn.pt"
    torch.save(m, p)
    code, out, err = run("inspect", str(p), "--trust-pickle")
    assert code == 2 and "--input-shape" in err, err
    code, out, err = run("inspect", str(p), "--trust-pickle", "--input-shape", "1,6,6", "--json")
    assert code == 0, err
    assert json.loads(out)["input_shape"] == [1, 6, 6]


COMMANDS = ["inspect", "bound", "tolerate", "inject", "worst", "certify", "precision", "boost", "report"]


def test_every_advised_option_exists() -> None:
    """Grep the sources for `--option` advice in messages; each command offering advice must have it.

    Every `--name` quoted anywhere in a message of the library or the CLI must be an option of at
    least one command, and the options a loader advises (--trust-pickle, --input-shape,
    --domain-from-data, --domain) must be options of every command that loads a model.
    """
    src = Path(__file__).resolve().parents[1] / "src" / "faultbound"
    helps = {c: run(c, "--help").stdout for c in [*COMMANDS, "train", "sweep", "figures", "demo"]}
    all_help = " ".join(helps.values())
    advised = set()
    for f in src.rglob("*.py"):
        for s in re.findall(r'"([^"\n]*)"', f.read_text()):
            advised.update(re.findall(r"(?<![\w(-])(--[a-z][a-z0-9-]+)", s))  # not CSS var(--x)
    missing = sorted(o for o in advised if o not in all_help)
    assert not missing, missing
    for c in COMMANDS:
        for opt in ("--trust-pickle", "--input-shape", "--domain"):
            assert opt in helps[c], (c, opt)


def test_state_dict_pt_says_how_to_get_a_model(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    p = tmp_path / "sd.pt"
    torch.save(m.state_dict(), p)
    code, out, err = run("inspect", str(p))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "state dict" in err and "torch.export.save" in err
    assert "pickled Python objects" not in err
