"""The Ray backend on a real local cluster (a head node and one worker node, loopback only, no
authentication): results identical to the single-process run, also when a worker process is killed
in the middle of the campaign. Ray start-up is slow, so there are few tests and one cluster."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.measure import CampaignSpec, run_campaign
from faultbound.measure.distributed import ray_environment, run_ray
from tests.cli_run import run
from tests.measure_helpers import make_net

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    saved = {k: os.environ.get(k) for k in ray_environment()}
    os.environ.update(ray_environment())
    c = None
    for attempt in range(2):  # a loaded machine can miss Ray's start-up deadline once
        try:
            c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
            c.add_node(num_cpus=1)
            c.wait_for_nodes()
            break
        except Exception:  # noqa: BLE001 - retried once, then raised
            if c is not None:
                c.shutdown()
                c = None
            if attempt == 1:
                raise
    assert c is not None
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _descends_from_me(pid: int) -> bool:
    """Is ``pid`` a process this test started (a descendant of this process)?"""
    me = os.getpid()
    for _ in range(10):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
        if pid <= 1:
            return False
    return False


def test_ray_equals_single_process_even_when_a_worker_dies(cluster: Cluster) -> None:
    net = make_net([64, 32], ["relu", "tanh"], d_in=8, n_out=3, seed=1)
    x = net.domain.sample(48, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(48) % 3
    spec = CampaignSpec(fb.Byzantine(0.8), trials=3000, failures=(3, 2), chunk=40, seed=3)
    ref = run_campaign(net, x, spec, labels=labels).to_dict()
    killed: list[int] = []
    seen: list[int] = []

    def kill_one(counter: object) -> None:
        """At the first poll where a shard task reports from a live worker process: SIGKILL it."""
        if killed:
            return
        pids = ray.get(counter.workers.remote())  # type: ignore[attr-defined]
        for pid in sorted(set(pids.values())):
            seen.append(pid)
            if _descends_from_me(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return

    got = run_ray(net, x, spec, labels=labels, workers=2, address=cluster.address, on_poll=kill_one)
    assert killed, f"no worker of this test was found to kill (reported: {seen})"
    d = got.to_dict()
    assert d == ref
    assert d["evaluations"] == 3000 * 48


def test_cli_ray_prints_the_local_output(cluster: Cluster, tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 4),)), str(path))
    args = ["inject", str(path), "--samples", "20", "--fault", "byzantine", "--failures", "2,2", "--trials", "500",
            "--batch", "25", "--seed", "8", "--json"]
    local = run(*args)
    remote = run(*args, "--backend", "ray", "--address", cluster.address, "--workers", "2")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout


@pytest.mark.parametrize("limit", [10**9, 0], ids=["exhaustive", "beam"])
def test_worst_case_on_ray_equals_in_process(cluster: Cluster, limit: int) -> None:
    """The failure sets scored as Ray tasks (several shards of several batches): the same worst case,
    failure set, input and values as in this process."""
    from faultbound.measure import worst_case
    from faultbound.measure.distributed import RayScorer

    net = make_net([16, 12], ["relu", "tanh"], d_in=3, n_out=2, seed=5)
    kw = {"n_probe": 8, "steps": 3, "batch": 64, "exhaustive_limit": limit, "seed": 4}
    ref = worst_case(net, fb.Byzantine(0.8), [2, 1], **kw)
    scorer = RayScorer(cluster.address, workers=2)
    try:
        got = worst_case(net, fb.Byzantine(0.8), [2, 1], scorer=scorer, **kw)
    finally:
        scorer.close()
    assert scorer.tasks >= 2
    assert got == ref
    assert ref.exhaustive == (limit > 0)
    if limit:
        assert ref.sets_total == 120 * 12  # C(16, 2) x 12, i.e. 23 batches of 64 in 8 shards


def test_cli_worst_ray_prints_the_local_output(cluster: Cluster, tmp_path: Path) -> None:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(4, 24), nn.Tanh(), nn.Linear(24, 16), nn.Sigmoid(), nn.Linear(16, 2))
    path = tmp_path / "w.pt2"
    torch.export.save(torch.export.export(m, (torch.zeros(1, 4),)), str(path))
    args = ["worst", str(path), "--fault", "byzantine", "--failures", "2,1", "--probes", "4", "--seed", "3", "--json"]
    local = run(*args)
    assert local.returncode == 0, local.stderr
    assert '"exhaustive": true' in local.stdout  # 276 x 16 = 4416 sets: 3 batches of 2048
    remote = run(*args, "--backend", "ray", "--address", cluster.address, "--workers", "2")
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout
