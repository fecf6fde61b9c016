"""Progress callbacks (issue 23): every long library computation takes ``progress=`` and calls it
with str messages without changing its result; the CLI shows them in a status line on stderr
while ``--json`` keeps stdout one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.apps.boosting import LatencyModel, simulate_boost
from faultbound.apps.precision import plan_precision
from faultbound.bounds.certify import certified_accuracy, certify
from faultbound.bounds.tolerance import tolerate
from faultbound.cli._common import err_console
from faultbound.measure import worst_case
from faultbound.progress import prefixed, say
from tests.cli_run import run


def _module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def net() -> fb.Network:
    return fb.Network.from_torch(_module())


def _messages() -> tuple[list[Any], Any]:
    got: list[Any] = []
    return got, got.append


def _same(a: Any, b: Any) -> None:
    """Equal results: their dicts (numbers exactly, arrays element by element)."""
    da, db = a.to_dict(), b.to_dict()
    assert json.dumps(da, sort_keys=True, default=str) == json.dumps(db, sort_keys=True, default=str)


def _check(got: list[Any]) -> None:
    assert got and all(isinstance(m, str) and m and "\n" not in m for m in got), got


def test_say_and_prefixed() -> None:
    got, cb = _messages()
    say(None, "nothing")  # no callback: nothing happens
    say(cb, "a")
    prefixed(cb, "[1/2] ")("b")
    assert got == ["a", "[1/2] b"]


def test_worst_case_progress(net: fb.Network) -> None:
    got, cb = _messages()
    for kw in ({}, {"exhaustive_limit": 0}):  # every set scored, and the beam search
        got.clear()
        with_cb = worst_case(net, fb.Crash(), [1, 1], seed=1, steps=5, progress=cb, **kw)
        _check(got)
        _same(with_cb, worst_case(net, fb.Crash(), [1, 1], seed=1, steps=5, **kw))
        assert any("gradient ascent" in m for m in got)
        assert any(("beam" if kw else "all 20 failure sets") in m for m in got)  # C(5,1) C(4,1) = 20


def test_certify_progress(net: fb.Network) -> None:
    x = torch.rand(7, 3, generator=torch.Generator().manual_seed(2))
    got, cb = _messages()
    with_cb = certify(net, x, [1, 1], batch_size=3, progress=cb)
    assert got == ["certifying inputs 1-3 of 7", "certifying inputs 4-6 of 7", "certifying inputs 7-7 of 7"]
    np.testing.assert_array_equal(with_cb.per_output, certify(net, x, [1, 1], batch_size=3).per_output)
    got.clear()
    y = np.array([0, 1, 0, 1, 1, 0, 0])
    acc = certified_accuracy(net, x, y, [1, 1], batch_size=4, progress=cb)
    assert got == ["certifying inputs 1-4 of 7", "certifying inputs 5-7 of 7"]
    _same(acc, certified_accuracy(net, x, y, [1, 1], batch_size=4))


@pytest.mark.parametrize("method", ["paper", "tight"])
def test_tolerate_progress(net: fb.Network, method: str) -> None:
    got, cb = _messages()
    with_cb = tolerate(net, 2.0, 0.1, fb.Crash(), method, progress=cb)  # type: ignore[arg-type]
    _check(got)
    assert f"{method}: largest count of {'layer' if method == 'paper' else 'site'} 2 of 2" in got
    _same(with_cb, tolerate(net, 2.0, 0.1, fb.Crash(), method))  # type: ignore[arg-type]


def test_plan_precision_progress(net: fb.Network) -> None:
    got, cb = _messages()
    with_cb = plan_precision(net, budget=0.05, method="tight", progress=cb)
    _check(got)
    assert got[0] == "paper-bound coefficients of 2 layers"
    assert any(m.startswith("branch and bound: certificate evaluation 1 ") for m in got)
    _same(with_cb, plan_precision(net, budget=0.05, method="tight"))


def test_plan_precision_progress_on_a_graph() -> None:
    g = fb.load(_module(), input_shape=(3,), sites=["0"])  # a graph network: one format per site
    assert isinstance(g, fb.GraphNetwork)
    got, cb = _messages()
    with_cb = plan_precision(g, budget=0.05, progress=cb)
    n_sites = len(g.sites)
    assert [m for m in got if m.startswith("coefficient")] == [
        f"coefficient of fault site {s + 1} of {n_sites}" for s in range(n_sites)
    ]
    _same(with_cb, plan_precision(g, budget=0.05))


@pytest.mark.parametrize("delays", ["per-sender", "per-synapse"])
def test_simulate_boost_progress(net: fb.Network, delays: str) -> None:
    got, cb = _messages()
    lat = LatencyModel.make("exponential")
    with_cb = simulate_boost(net, [1, 1], lat, runs=200, error_runs=20, n_inputs=8, delays=delays, progress=cb)
    assert got[0] == "certified crash bound"
    assert any(m.startswith("simulating") and delays in m for m in got)
    assert got[-1].startswith("output error of the first 20 runs")
    _same(with_cb, simulate_boost(net, [1, 1], lat, runs=200, error_runs=20, n_inputs=8, delays=delays))


# ------------------------------------------------------------------------------------------ CLI
class _Status:
    """Stands in for ``err_console.status``: records the first message and every update."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, status: Any, **_: Any) -> _Status:
        self.messages.append(str(status))
        return self

    def __enter__(self) -> _Status:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def update(self, status: Any = None, **_: Any) -> None:
        if status is not None:
            self.messages.append(str(status))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("progress")
    torch.export.save(torch.export.export(_module(), (torch.rand(1, 3),)), str(d / "m.pt2"))
    rng = np.random.default_rng(0)
    np.savez(d / "d.npz", X=rng.random((12, 3)).astype(np.float32), y=rng.integers(0, 2, 12))
    return {"model": d / "m.pt2", "data": d / "d.npz", "dir": d}


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [
        ("worst", ["--failures", "1,1"], "gradient ascent"),
        ("certify", ["--data", "{data}", "--failures", "1,1", "--samples", "4"], "certifying inputs 1-12 of 12"),
        ("tolerate", ["--eps", "2", "--eps-prime", "0.1"], "tight: largest count of site 1 of 2"),
        ("report", ["--out", "{dir}/r.html", "--no-plots"], "gradient ascent"),
        ("precision", ["--budget", "0.05", "--samples", "64"], "branch and bound: certificate evaluation 1 "),
        ("boost", ["--failures", "1,1", "--runs", "200", "--error-runs", "10"], "certified crash bound"),
    ],
)
def test_cli_progress_on_stderr_json_on_stdout(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, command: str, args: list[str], needle: str
) -> None:
    status = _Status()
    monkeypatch.setattr(err_console, "status", status)
    argv = [a.format(data=files["data"], dir=files["dir"]) for a in args]
    code, out, err = run(command, str(files["model"]), *argv, "--json")
    assert code == 0, err
    assert isinstance(json.loads(str(out)), dict)  # stdout is exactly one JSON object
    assert any(needle in m for m in status.messages), status.messages
