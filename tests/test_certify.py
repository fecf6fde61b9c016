"""Per-input certificates: sound at the input (brute force over every failure set), batched equals
one at a time, never above the whole-domain bound; certified accuracy and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import faultbound as fb
from faultbound.bounds.certify import certified_accuracy, certified_mask, certify
from faultbound.bounds.tight import tight_bound
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Byzantine, Crash, Precision, SynapseByzantine, SynapseCrash
from tests.hyp import soundness
from tests.test_tight import (
    N_EXAMPLES,
    brute_neurons,
    brute_precision,
    brute_synapses,
    networks,
    neuron_failures,
    points,
)

SETTINGS = settings(
    max_examples=max(10, N_EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@soundness
@SETTINGS
@given(data=st.data(), net=networks())
def test_per_input_certificate_sound(data: st.DataObject, net: fb.Network) -> None:
    kind = data.draw(st.sampled_from(["crash", "byz", "syn", "prec"]))
    x = points(net, 12, seed=5)
    if kind in ("crash", "byz"):
        f: list[int] | None = neuron_failures(data.draw, net, max_total=3)
        fault: fb.faults.Fault = Crash() if kind == "crash" else Byzantine(1.0)
        measured = brute_neurons(net, f, fault, x)  # type: ignore[arg-type]
    elif kind == "syn":
        f = [0] * (net.L + 1)
        f[data.draw(st.integers(0, net.L))] = 1
        fault = data.draw(st.sampled_from([SynapseCrash(), SynapseByzantine(0.5)]))
        measured = brute_synapses(net, f, fault, x)
    else:
        f = None
        fault = Precision([0.05] * net.L)
        measured = brute_precision(net, [0.05] * net.L, x, n_draws=20)
    cert = certify(net, x, f, fault)
    bounds = torch.as_tensor(cert.bounds)
    bad = measured > bounds + 1e-9
    assert not bool(bad.any()), f"{kind} f={f}: measured {measured[bad]} > certified {bounds[bad]}"
    # never above the whole-domain bound (x lies in the domain)
    glob = tight_bound(net, f, fault)[0]
    assert float(bounds.max()) <= glob * (1 + 1e-9) + 1e-12
    # batched equals one at a time
    one = np.array([certify(net, x[i : i + 1], f, fault).bounds[0] for i in (0, len(x) // 2, len(x) - 1)])
    assert one == pytest.approx(cert.bounds[[0, len(x) // 2, len(x) - 1]], rel=1e-12, abs=1e-15)
    small = certify(net, x, f, fault, batch_size=3)
    assert small.bounds == pytest.approx(cert.bounds, rel=1e-12, abs=1e-15)


@soundness
@settings(max_examples=max(8, N_EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), net=networks(max_layers=2))
def test_box_certificate_sound_inside_the_box(data: st.DataObject, net: fb.Network) -> None:
    r = data.draw(st.sampled_from([0.01, 0.1]))
    f = neuron_failures(data.draw, net, max_total=2)
    centre = points(net, 3, seed=6)[-4:]
    cert = certify(net, centre, f, Crash(), radius=r)
    for i in range(centre.shape[0]):
        c = centre[i]
        inside = points(net, 10, seed=i, lo=c - r, hi=c + r)
        measured = brute_neurons(net, f, Crash(), inside)
        assert float(measured.max()) <= cert.bounds[i] + 1e-9
    at_centre = certify(net, centre, f, Crash())
    assert np.all(at_centre.bounds <= cert.bounds * (1 + 1e-9) + 1e-15)


def _classifier(seed: int = 0) -> fb.Network:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return fb.Network.from_torch(model)


def test_certified_inputs_keep_their_class_under_every_failure_set() -> None:
    net = _classifier(3)  # certifies about 10% of its inputs: a mix
    x = torch.rand((200, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = net.forward(x).argmax(1).numpy()
    y[:20] = (y[:20] + 1) % 3  # some wrong labels
    res = certified_accuracy(net, x.numpy(), y, [1, 0], Crash())
    assert res.clean_accuracy == pytest.approx(0.9)
    assert 0 < res.certified_accuracy < res.clean_accuracy
    assert not res.certified[:20].any()
    # brute force: a certified input's class never changes under any single crash in layer 1
    clean = net.forward(x)
    for i in range(net.widths[0]):
        from tests.test_tight import faulty_forward

        out = faulty_forward(net, x, {1: {i: 0.0}}, Crash())
        same = out.argmax(1) == clean.argmax(1)
        assert bool(same[torch.as_tensor(res.certified)].all())
    d = res.to_dict()
    assert d["n"] == 200 and d["n_certified"] == int(res.certified.sum())


def test_certified_mask_by_hand() -> None:
    z = np.array([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0], [0.0, 2.0, 1.9]])
    t = np.array([[0.9, 0.9, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    # row 0: 3 - 0.9 = 2.1 > 1.9 and > 0: certified; row 1: 2 > 2 fails; row 2: margin 0.1 > 0.
    assert certified_mask(z, t).tolist() == [True, False, True]


def test_certify_errors() -> None:
    net = _classifier()
    with pytest.raises(InvalidArgumentError):
        certify(net, np.zeros((2, 5)), [1, 0])
    with pytest.raises(InvalidArgumentError):
        certify(net, np.zeros((2, 3)), [1])
    with pytest.raises(InvalidArgumentError):
        certify(net, np.zeros((2, 3)), [1, 0], radius=-1.0)
    with pytest.raises(InvalidArgumentError):
        certified_accuracy(net, np.zeros((2, 3)), [0, 7], [1, 0])
    inf = certify(net, np.zeros((2, 3)), [1, 0], Byzantine(float("inf")))
    assert np.isinf(inf.bounds).all() and not inf.robust().any()


def test_cli_certify(tmp_path: object) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from faultbound.cli import app

    tmp = Path(str(tmp_path))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3))
    path = tmp / "m.pt"
    torch.save(model, path)
    x = np.random.default_rng(0).random((30, 3))
    with torch.no_grad():
        y = model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    data = tmp / "d.npz"
    np.savez(data, X=x, y=y)
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["certify", str(path), "--data", str(data), "--failures", "1", "--json", "--samples", "8", "--trust-pickle"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["clean_accuracy"] == pytest.approx(1.0)
    assert out["certified_accuracy"] <= out["clean_accuracy"]
    assert out["measured"]["random_accuracy"] >= out["certified_accuracy"] - 1e-12
    assert out["measured"]["worst_accuracy"] >= out["certified_accuracy"] - 1e-12
    assert out["measured"]["dtype"] == "float32"  # as inject; --float64 measures in float64
    res64 = runner.invoke(
        app,
        ["certify", str(path), "--data", str(data), "--failures", "1", "--json", "--samples", "8", "--trust-pickle",
         "--float64"],
    )
    out64 = json.loads(res64.stdout)
    assert out64["measured"]["dtype"] == "float64"
    assert out64["measured"]["worst_accuracy"] == pytest.approx(out["measured"]["worst_accuracy"])


def test_cli_certify_bad_input_is_one_line_exit_2(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    from faultbound.cli._common import run_app

    tmp = Path(str(tmp_path))
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 3))
    path = tmp / "m.pt"
    torch.save(model, path)
    data = tmp / "d.npz"
    np.savez(data, X=np.zeros((4, 3)), y=np.zeros(4, dtype=np.int64))
    for args in (
        ["--failures", "1,2"],  # one count too many
        ["--failures", "1", "--radius", "-1"],
        ["--failures", "1", "--digits"],  # two data sources
    ):
        monkeypatch.setattr(
            "sys.argv", ["faultbound", "certify", str(path), "--data", str(data), "--trust-pickle", *args]
        )
        assert run_app() == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("fault", [Crash(), fb.StuckAt(2.0), Byzantine(1.0)], ids=["crash", "stuck-at", "byzantine"])
def test_measured_accuracy_on_sampled_sets_matches_a_plain_loop(fault: fb.Fault, dtype: torch.dtype) -> None:
    """Above the enumeration limit the worst case runs over the sampled sets; for a fault that sends
    fixed values it is read from the random pass. Checked against the definition: an input survives
    when every sampled set (its own forward pass, one set at a time) keeps its label."""
    from faultbound.cli.certify import measured_accuracy
    from faultbound.measure import inject, sample_faults

    torch.manual_seed(3)
    net = fb.Network.from_torch(nn.Sequential(nn.Linear(3, 9), nn.Tanh(), nn.Linear(9, 4)))
    x = torch.rand(40, 3, dtype=torch.float64)
    y = net.forward(x).argmax(-1).numpy()
    m = measured_accuracy(net, x, y, fault, (3,), samples=30, exhaustive_limit=5, seed=4, chunk=7, dtype=dtype)
    assert not m["worst_exhaustive"] and m["worst_sets"] == 30 and m["dtype"] == str(dtype)[6:]
    g = torch.Generator().manual_seed(4)
    sets = sample_faults(net, fault, 30, failures=[3], generator=g)
    hits = []
    for t in range(30):
        out = inject(net, x, fault, sets.select(slice(t, t + 1)), values="random", generator=g,
                     dtype=dtype).outputs[0]
        hits.append(out.argmax(-1).numpy() == y)
    if not fault.chooses_values:  # Byzantine values are drawn per chunk there, per set here
        assert m["random_accuracy"] == pytest.approx(float(np.mean(hits)))
        assert m["worst_accuracy"] == pytest.approx(float(np.all(hits, 0).mean()))
    assert m["worst_accuracy"] <= m["random_accuracy"] + 1e-12
    assert 0.0 < m["random_accuracy"] < 1.0  # the sets change some labels: the comparison means something
