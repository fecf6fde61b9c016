"""Campaigns: statistics, mergeable state, replay, and resume after kill -9."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
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
    run_campaign,
)
from faultbound.measure.stats import wilson
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
    # reference: every configuration replayed through the engine on all inputs at once
    errs_t, preds = [], []
    for c in range(math.ceil(30 / 7)):
        inj = inject(net, x, fb.Crash(), chunk_faults(net, spec, c), dtype=torch.float64)
        errs_t.append(inj.errors)
        preds.append(inj.outputs.argmax(-1))
    errs = torch.cat(errs_t).numpy()
    pred = torch.cat(preds)
    assert errs.size == 30 * 20 == res.summary["evaluations"]
    assert res.summary["max_error"] == pytest.approx(errs.max(), rel=1e-12)
    ref_mean = float(sum((Fraction(float(v)) for v in errs.reshape(-1)), Fraction(0)) / errs.size)
    assert res.summary["mean_error"] == pytest.approx(ref_mean, rel=1e-12)
    s = np.sort(errs.reshape(-1))
    r = math.floor(0.5 * (errs.size - 1))
    assert 0.99 * s[r] <= res.summary["quantiles"]["0.5"] <= 1.01 * s[r + 1]
    acc = float((pred == labels[None]).double().mean())
    assert res.summary["accuracy"] == pytest.approx(acc, abs=1e-12)
    changed = float((pred != net.forward(x).argmax(-1)[None]).double().mean())
    assert res.summary["changed_rate"] == pytest.approx(changed, abs=1e-12)
    lo, hi = res.summary["accuracy_ci95"]
    assert lo <= res.summary["accuracy"] <= hi
    assert res.to_dict()["interval"] == "wilson-design-effect-over-configurations"
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
    with pytest.raises(InvalidArgumentError, match="one count per hidden layer"):
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}  # this tree's code
    proc = subprocess.Popen([sys.executable, str(script), str(ck)], env=env)
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
    for k in (f.name for f in dataclasses.fields(full.state)):
        v, r = getattr(full.state, k), getattr(resumed.state, k)
        assert np.array_equal(r, v) if isinstance(v, np.ndarray) else r == v, k
    assert math.isfinite(a["max_error"])
    assert not list(tmp_path.glob("campaign.ckpt.npz.tmp*"))


# ----------------------------------------------------------------------------- checkpoint safety
def _small_run(ck: Path, **kw: object) -> tuple:
    net = _net()
    x = net.domain.sample(6, generator=torch.Generator().manual_seed(0))
    spec = CampaignSpec(fb.Crash(), trials=40, failures=(1, 1), chunk=5, seed=2, **kw)  # type: ignore[arg-type]
    return net, x, spec, run_campaign(net, x, spec, checkpoint=ck)


def _rewrite(src: Path, dst: Path, edit_meta=None, edit_arrays=None, fix_digest: bool = True) -> None:
    """Edit a checkpoint as a tamperer would, recomputing its digest (sha256 of meta, then each
    array's name and bytes in name order) so that only the consistency checks can catch it."""
    import hashlib
    import json

    with np.load(src, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: np.asarray(z[k]) for k in z.files if k not in ("meta", "digest")}
        digest = str(z["digest"])
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    mj = json.dumps(meta, sort_keys=True)
    if fix_digest:
        h = hashlib.sha256(mj.encode())
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
        digest = h.hexdigest()
    np.savez(dst, meta=np.array(mj), digest=np.array(digest), **arrays)


def test_checkpoint_is_small_and_constant(tmp_path: Path) -> None:
    sizes = []
    for trials in (40, 4000):
        ck = tmp_path / f"c{trials}.npz"
        net = _net()
        x = net.domain.sample(6, generator=torch.Generator().manual_seed(0))
        run_campaign(net, x, CampaignSpec(fb.Byzantine(1.0), trials=trials, failures=(1, 1), chunk=20), checkpoint=ck)
        sizes.append(ck.stat().st_size)
    assert sizes[1] < 64_000 and sizes[1] < 2 * sizes[0]


@pytest.mark.parametrize(
    "edit_meta, edit_arrays, fix_digest, msg",
    [
        (lambda m: m.update(next_chunk=999), None, True, "next chunk 999"),
        (lambda m: m.update(next_chunk=3), None, True, "configurations"),
        (None, lambda a: a.update(sketch_counts=a["sketch_counts"][:-1], sketch_keys=a["sketch_keys"][:-1]), True,
         "sketch"),
        (None, lambda a: a.update(histogram=a["histogram"][:50]), True, "histogram of 50 bins"),
        (lambda m: m["state"].update(changed=10**9), None, True, "changed"),
        (lambda m: m["state"]["worst"].update(configuration=10**6), None, True, "worst case"),
        (lambda m: m.update(next_chunk=3), None, False, "digest"),
        (None, lambda a: a.update(histogram=a["histogram"].astype(np.float64)), True, "histogram is float64"),
    ],
)
def test_tampered_checkpoint_is_refused(tmp_path: Path, edit_meta, edit_arrays, fix_digest, msg) -> None:  # noqa: ANN001
    ck = tmp_path / "ck.npz"
    net, x, spec, _ = _small_run(ck)
    bad = tmp_path / "bad.npz"
    _rewrite(ck, bad, edit_meta, edit_arrays, fix_digest)
    with pytest.raises(InvalidArgumentError, match=msg):
        run_campaign(net, x, spec, checkpoint=bad)


def test_unreadable_checkpoints_are_one_error(tmp_path: Path) -> None:
    ck = tmp_path / "ck.npz"
    net, x, spec, _ = _small_run(ck)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(InvalidArgumentError, match="empty"):
        run_campaign(net, x, spec, checkpoint=empty)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    with pytest.raises(InvalidArgumentError, match="Cannot read checkpoint"):
        run_campaign(net, x, spec, checkpoint=cut)
    pickled = tmp_path / "p.npz"
    np.savez(pickled, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidArgumentError, match="Cannot read checkpoint|damaged"):
        run_campaign(net, x, spec, checkpoint=pickled)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_checkpoint_in_read_only_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        net = _net()
        x = net.domain.sample(3)
        with pytest.raises(InvalidArgumentError, match="Cannot write checkpoint"):
            run_campaign(net, x, CampaignSpec(fb.Crash(), trials=4, failures=(1, 0)), checkpoint=ro / "ck.npz")
    finally:
        ro.chmod(0o700)


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    ck = tmp_path / "ck.npz"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"ck.npz.tmp{dead.pid}"
    stale.write_bytes(b"partial write")
    alive = tmp_path / f"ck.npz.tmp{os.getppid()}"  # a live process: maybe still writing, kept
    alive.write_bytes(b"x")
    _small_run(ck)
    assert not stale.exists() and alive.exists()


# ----------------------------------------------------------------------------- shards, margin, exhaustive
def test_shards_merge_to_the_unsharded_result(tmp_path: Path) -> None:
    from faultbound.measure import merge_campaign_states

    net = _net()
    x = net.domain.sample(9, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(9) % 3
    spec = CampaignSpec(fb.Byzantine(0.7), trials=53, failures=(2, 1), chunk=4, seed=9)
    full = run_campaign(net, x, spec, labels=labels).to_dict()
    files = [tmp_path / f"s{i}.npz" for i in range(3)]
    for i in (2, 0, 1):
        run_campaign(net, x, spec, labels=labels, checkpoint=files[i], shard=(i, 3))
    merged = merge_campaign_states([files[1], files[2], files[0]]).to_dict()
    assert merged == full
    with pytest.raises(InvalidArgumentError, match="missing"):
        merge_campaign_states(files[:2])
    with pytest.raises(InvalidArgumentError, match="twice"):
        merge_campaign_states([files[0], files[0], files[1]])


def test_population_and_exhaustive_enumeration_by_brute_force() -> None:
    import itertools

    from faultbound.measure import population

    net = _net()  # 6 and 5 hidden neurons
    assert population(net, fb.Crash(), failures=(2, 1)) == 15 * 5
    assert population(net, fb.Crash(), rate=0.1) == 2**11
    bf = fb.BitFlip("neuron", "int8", bits=(0, 7))
    assert population(net, bf, failures=(1, 2)) == 6 * 2 * 10 * 4
    spec = CampaignSpec(bf, trials=480, failures=(1, 2), chunk=7, exhaustive=True)
    seen = []
    for c in range(math.ceil(480 / 7)):
        fs = chunk_faults(net, spec, c)
        for t in range(fs.n_configs):
            cfg = fs.config(t)
            seen.append((tuple(cfg["sites"]["1"]), tuple(cfg["bits"]["1"]), tuple(cfg["sites"]["2"]),
                         tuple(cfg["bits"]["2"])))
    ref = {
        (a, ab, b, bb)
        for a in itertools.combinations(range(6), 1)
        for ab in itertools.product((0, 7), repeat=1)
        for b in itertools.combinations(range(5), 2)
        for bb in itertools.product((0, 7), repeat=2)
    }
    assert len(seen) == len(set(seen)) == 480 and set(seen) == ref
    x = net.domain.sample(4)
    with pytest.raises(InvalidArgumentError, match="population"):
        run_campaign(net, x, CampaignSpec(bf, trials=479, failures=(1, 2), exhaustive=True))
    # exhaustive crash campaign: the max is the brute-force max over all 75 sets
    spec = CampaignSpec(fb.Crash(), trials=75, failures=(2, 1), chunk=8, exhaustive=True, dtype="float64")
    res = run_campaign(net, x, spec)
    best = 0.0
    for a in itertools.combinations(range(6), 2):
        for b in range(5):
            fs = FaultSet.from_lists(2, {1: list(a), 2: [b]})
            best = max(best, float(inject(net, x, fb.Crash(), fs, dtype=torch.float64).errors.max()))
    assert res.summary["max_error"] == pytest.approx(best, rel=1e-12)


def test_leveugle_sample_size_by_hand() -> None:
    from faultbound.measure import leveugle_trials

    # t = 1.959964, p = 1/2: infinite population 0.960365 / 1e-4 = 9603.6 -> 9604
    assert leveugle_trials(None, 0.01, 0.95) == 9604
    # N = 10000: 10000 / (1 + 1e-4 * 9999 / 0.960365) = 4899.2 -> 4900
    assert leveugle_trials(10_000, 0.01, 0.95) == 4900
    # 99%: t = 2.575829, 1.658724 / 1e-4 -> 16588; N = 1000, e = 5%: 1000 / (1 + 0.0025*999/1.658724) = 399.0
    assert leveugle_trials(None, 0.01, 0.99) == 16588
    assert leveugle_trials(1000, 0.05, 0.99) == 400
    # a population far above any float: the formula still holds (tends to the infinite one)
    assert leveugle_trials(math.comb(4000, 2000), 0.01, 0.95) == 9604
    assert leveugle_trials(5, 0.01, 0.95) == 5
    # the README's example: 2^24 subsets, +-0.02 at 95%: 0.960365 / 0.0004 = 2400.9 -> 2401
    assert leveugle_trials(2**24, 0.02, 0.95) == 2401


def test_until_margin_stops_at_the_first_chunk_that_meets_it() -> None:
    net = _net()
    x = net.domain.sample(12, generator=torch.Generator().manual_seed(0))
    spec = CampaignSpec(fb.Byzantine(2.0), trials=5000, failures=(2, 2), chunk=10, margin=0.05)
    res = run_campaign(net, x, spec)
    d = res.to_dict()
    assert d["stopped_early"] and d["margin_achieved"] <= 0.05
    used = d["configurations"]
    assert used < 5000 and used % 10 == 0
    before = run_campaign(net, x, CampaignSpec(fb.Byzantine(2.0), trials=used - 10, failures=(2, 2), chunk=10))
    assert before.to_dict()["margin_achieved"] > 0.05


def test_unwritable_checkpoint_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the OS refuses (a parent that is a file, a permission), one error, no temporary left."""
    (tmp_path / "file").write_text("x")
    net = _net()
    x = net.domain.sample(3)
    spec = CampaignSpec(fb.Crash(), trials=4, failures=(1, 0))
    with pytest.raises(InvalidArgumentError, match="Cannot write checkpoint"):
        run_campaign(net, x, spec, checkpoint=tmp_path / "file" / "ck.npz")

    def deny(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", deny)
    with pytest.raises(InvalidArgumentError, match="Permission denied"):
        run_campaign(net, x, spec, checkpoint=tmp_path / "ck.npz")
    assert not list(tmp_path.glob("ck.npz*"))


def test_sampling_without_replacement_is_a_permutation() -> None:
    from faultbound.measure.campaign import permuted_index

    for n in (1, 2, 3, 7, 64, 100, 1000, 4097):
        for key in (0, 5, 2**63 + 1):
            assert sorted(permuted_index(j, n, key) for j in range(n)) == list(range(n))
    assert [permuted_index(j, 1000, 1) for j in range(20)] != list(range(20))
    assert [permuted_index(j, 1000, 1) for j in range(20)] != [permuted_index(j, 1000, 2) for j in range(20)]
    net = _net()  # C(6,2) * C(5,2) = 150 failure sets; 120 drawn must all differ
    spec = CampaignSpec(fb.Crash(), trials=120, failures=(2, 2), chunk=16, seed=3, without_replacement=True)
    seen = []
    for c in range(math.ceil(120 / 16)):
        fs = chunk_faults(net, spec, c)
        seen += [(tuple(fs.config(t)["sites"]["1"]), tuple(fs.config(t)["sites"]["2"])) for t in range(fs.n_configs)]
    assert len(seen) == len(set(seen)) == 120
    x = net.domain.sample(5)
    with pytest.raises(InvalidArgumentError, match="without replacement"):
        run_campaign(net, x, CampaignSpec(fb.Crash(), trials=151, failures=(2, 2), without_replacement=True))


def test_finite_population_correction_by_hand() -> None:
    from faultbound.measure.stats import cluster_interval

    # 4 configurations x 10 inputs, hits 0, 10, 0, 10 (n_eff = 4 without correction), drawn from N = 6:
    # n_eff = 4 * (6 - 1) / (6 - 4) = 10
    assert cluster_interval(20, 200, 4, 10, population=6) == pytest.approx(wilson(5.0, 10.0))
    assert cluster_interval(20, 200, 4, 10, population=4) == (0.5, 0.5)  # every configuration: exact
    assert cluster_interval(20, 200, 4, 10, population=10**30) == pytest.approx(cluster_interval(20, 200, 4, 10))


def test_campaign_mode_names_how_configurations_are_drawn() -> None:
    """``spec.mode`` is one of the CampaignMode names; an exhaustive chunk is the enumeration, a
    chunk without replacement a permutation of it."""
    from typing import get_args

    from faultbound.measure import chunk_faults
    from faultbound.measure.campaign import CampaignMode

    net = _net()  # 6 units in layer 1: 6 sets with one failure there
    base = CampaignSpec(fb.Crash(), trials=6, failures=(1, 0), chunk=6, seed=4)
    ex = dataclasses.replace(base, exhaustive=True)
    wr = dataclasses.replace(base, without_replacement=True)
    assert (base.mode, ex.mode, wr.mode) == ("sampled", "exhaustive", "without-replacement")
    assert {base.mode, ex.mode, wr.mode} == set(get_args(CampaignMode))
    for spec in (ex, wr):
        spec.check(net)
    ex_sites, wr_sites = chunk_faults(net, ex, 0).sites[0], chunk_faults(net, wr, 0).sites[0]
    assert ex_sites is not None and ex_sites[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert wr_sites is not None and sorted(wr_sites[:, 0].tolist()) == [0, 1, 2, 3, 4, 5]
