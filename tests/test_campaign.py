"""Campaigns: statistics, mergeable state, replay, and resume after kill -9."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import faultbound as fb
from faultbound.errors import InvalidArgumentError
from faultbound.measure import (
    CampaignSpec,
    FaultSet,
    campaign_inputs,
    chunk_faults,
    inject,
    merge_states,
    run_campaign,
    wilson,
)
from faultbound.measure.stats import empty_state
from tests.measure_helpers import make_net

ROOT = Path(__file__).resolve().parents[1]


def _net() -> fb.Network:
    return make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1)


def test_statistics_match_direct_computation() -> None:
    net = _net()
    x = net.domain.sample(20, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(1))
    spec = CampaignSpec(fb.Crash(), trials=30, failures=(1, 2), chunk=7, dtype="float64", input_batch=8)
    res = run_campaign(net, x, spec, labels=labels)
    errs = res.state["errors"].astype(np.float64)
    assert errs.size == 30 * 20 == res.summary["evaluations"]
    assert res.summary["max_error"] == pytest.approx(errs.max(), rel=1e-6)
    assert res.summary["mean_error"] == pytest.approx(errs.mean(), rel=1e-6)
    assert res.summary["quantiles"]["0.5"] == pytest.approx(np.quantile(errs, 0.5), rel=1e-6)
    lo, hi = res.summary["accuracy_ci95"]
    assert lo <= res.summary["accuracy"] <= hi
    # the worst configuration replays to the same error, from the seed alone and from the record
    w = res.summary["worst"]
    regen = chunk_faults(net, spec, w["chunk"]).config(w["configuration"] - w["chunk"] * spec.chunk)
    assert regen == w["faults"]
    sites = {int(k): v for k, v in w["faults"]["sites"].items()}
    fs = FaultSet.from_lists(2, sites)
    xi = x[w["input_index"] : w["input_index"] + 1]
    again = inject(net, xi, fb.Crash(), fs, dtype=torch.float64).errors
    assert float(again[0, 0]) == pytest.approx(w["error"], rel=1e-9)
    assert float(again[0, 0]) == pytest.approx(res.summary["max_error"], rel=1e-9)


def test_rate_and_seed_reproducible() -> None:
    net = _net()
    x = net.domain.sample(5)
    spec = CampaignSpec(fb.Byzantine(1.0), trials=20, rate=0.3, chunk=6, seed=5)
    a = run_campaign(net, x, spec).to_dict()
    b = run_campaign(net, x, spec).to_dict()
    assert a == b
    c = run_campaign(net, x, CampaignSpec(fb.Byzantine(1.0), trials=20, rate=0.3, chunk=6, seed=6)).to_dict()
    assert c["mean_error"] != a["mean_error"]


def test_merge_is_order_preserving_concat_and_associative() -> None:
    def st(v: float, n: int) -> dict:
        s = empty_state()
        s.update(evaluations=n, error_sum=v * n, error_max=v, errors=np.full(n, v, np.float32), worst={"e": v})
        return s

    a, b, c = st(1.0, 2), st(3.0, 1), st(2.0, 3)
    left = merge_states(merge_states(a, b), c)
    right = merge_states(a, merge_states(b, c))
    assert left["error_sum"] == right["error_sum"] == 11.0
    assert left["worst"] == right["worst"] == {"e": 3.0}
    assert np.array_equal(left["errors"], right["errors"])


def test_wilson() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 0.0962, abs=2e-3)


def test_bad_specs() -> None:
    net = _net()
    x = net.domain.sample(3)
    with pytest.raises(InvalidArgumentError, match="trials"):
        run_campaign(net, x, CampaignSpec(fb.Crash(), trials=-1, failures=(1, 0)))
    with pytest.raises(InvalidArgumentError, match="rate"):
        run_campaign(net, x, CampaignSpec(fb.Crash(), trials=1, rate=2.0))
    with pytest.raises(InvalidArgumentError, match="one count per layer"):
        run_campaign(net, x, CampaignSpec(fb.Crash(), trials=1, failures=(1,)))
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        run_campaign(net, x, CampaignSpec(fb.Crash(), trials=1))
    with pytest.raises(InvalidArgumentError, match="not found"):
        campaign_inputs(net, data="/nonexistent/file.npz")


def test_inputs_sources(tmp_path: Path) -> None:
    net = _net()
    x, y = campaign_inputs(net, samples=7, seed=1)
    assert x.shape == (7, 4) and y is None
    np.savez(tmp_path / "d.npz", X=np.random.rand(5, 4), y=np.array([0, 1, 2, 1, 0]))
    x, y = campaign_inputs(net, data=tmp_path / "d.npz")
    assert x.shape == (5, 4) and y is not None and y.tolist() == [0, 1, 2, 1, 0]
    with pytest.raises(InvalidArgumentError, match="features"):
        campaign_inputs(net, digits=True)


def test_checkpoint_mismatch(tmp_path: Path) -> None:
    net = _net()
    x = net.domain.sample(4)
    ck = tmp_path / "ck.npz"
    run_campaign(net, x, CampaignSpec(fb.Crash(), trials=4, failures=(1, 0), chunk=2), checkpoint=ck)
    with pytest.raises(InvalidArgumentError, match="different campaign"):
        run_campaign(net, x, CampaignSpec(fb.Crash(), trials=4, failures=(1, 1), chunk=2), checkpoint=ck)


CHILD = """
import sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
import faultbound as fb
from faultbound.measure import CampaignSpec, run_campaign
from tests.measure_helpers import make_net
net = make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1)
x = net.domain.sample(16, generator=torch.Generator().manual_seed(0))
spec = CampaignSpec(fb.Byzantine(0.5), trials=400, failures=(2, 1), chunk=10, seed=11, values="adversarial")
run_campaign(net, x, spec, checkpoint=sys.argv[1], progress=lambda done, total: time.sleep(0.15))
"""


def _next_chunk(path: Path) -> int:
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            return int(json.loads(str(z["meta"]))["next_chunk"])
    except Exception:  # noqa: BLE001 - the file may be mid-replace
        return 0


def test_resume_after_sigkill_equals_uninterrupted(tmp_path: Path) -> None:
    ck = tmp_path / "campaign.ckpt.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), threads=torch.get_num_threads()))
    proc = subprocess.Popen([sys.executable, str(script), str(ck)], env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    try:
        while time.time() < deadline and _next_chunk(ck) < 5:
            time.sleep(0.05)
            assert proc.poll() is None, "the campaign finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _next_chunk(ck)
    assert 5 <= done < 40
    net = make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1)
    x = net.domain.sample(16, generator=torch.Generator().manual_seed(0))
    spec = CampaignSpec(fb.Byzantine(0.5), trials=400, failures=(2, 1), chunk=10, seed=11, values="adversarial")
    resumed = run_campaign(net, x, spec, checkpoint=ck)
    assert resumed.resumed_from >= 5
    full = run_campaign(net, x, spec)
    a, b = resumed.to_dict(), full.to_dict()
    a.pop("resumed_from_chunk"), b.pop("resumed_from_chunk")
    assert a == b
    assert np.array_equal(resumed.state["errors"], full.state["errors"])
    assert math.isfinite(a["max_error"])
