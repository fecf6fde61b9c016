"""Campaigns on a Ray cluster: the shards of :func:`faultbound.measure.run_campaign` as Ray tasks.

A campaign of C chunks is cut into ``S = min(C, 4 K)`` shards (shard i runs chunks i, i + S, ...),
at most K of them running at once. The network, the inputs and the labels go into the object store
once (``ray.put``) and every task reads them from there. Each task computes its shard's mergeable
state (:mod:`faultbound.measure.stats`: exact integer sums, a DDSketch, a fixed histogram), so the
driver's merge is exact and order-independent: the result is bit for bit the single-process result,
whatever the number of workers and whichever task ran where. A task whose worker process dies is
retried by Ray (``max_retries``); since a shard is a deterministic function of ``(spec, shard)``, the
retried shard gives the same state. Tasks report their progress to one small actor, which the
driver polls for its single progress bar.

With ``address=None`` a local Ray instance is started (loopback only, no dashboard, authentication
off) and shut down at the end; with an address (``ray start --head`` on the user's machines), the
driver connects to that cluster and leaves it running.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.measure.campaign import (
    CampaignResult,
    CampaignSpec,
    _meta,
    _prepare,
    result_from_state,
    run_campaign,
)
from faultbound.measure.stats import empty_state, merge_states
from faultbound.network.core import Network

__all__ = ["run_ray", "ray_environment"]

Progress = Callable[[int, int], None]


def ray_environment() -> dict[str, str]:
    """Environment for a Ray instance this process starts: no authentication token, and every
    address on the loopback interface (Ray's switch for single-machine clusters)."""
    return {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _shard_state(
    net: Network, x: Tensor, labels: Tensor | None, spec: CampaignSpec, shard: tuple[int, int], counter: Any
) -> dict[str, Any]:
    """One shard, inside a Ray worker: its state (progress goes to ``counter``)."""
    torch.set_num_threads(1)

    def tick(done: int, _total: int) -> None:
        counter.update.remote(shard[0], done, os.getpid())

    tick(0, spec.trials)
    return run_campaign(net, x, spec, labels=labels, progress=tick, shard=shard).state


class _Counter:
    """Configurations done per shard (a retried shard starts again from 0) and the worker PIDs."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}
        self.pids: dict[int, int] = {}

    def update(self, shard: int, done: int, pid: int) -> None:
        self.done[shard] = done
        self.pids[shard] = pid

    def total(self) -> int:
        return sum(self.done.values())

    def workers(self) -> dict[int, int]:
        return dict(self.pids)


def run_ray(
    net: Network,
    inputs: Tensor,
    spec: CampaignSpec,
    *,
    labels: Tensor | None = None,
    workers: int = 2,
    address: str | None = None,
    progress: Progress | None = None,
    extra: dict[str, Any] | None = None,
    max_retries: int = 3,
    on_poll: Callable[[Any], None] | None = None,
) -> CampaignResult:
    """Run a campaign as Ray tasks (module docstring); the result equals :func:`run_campaign`'s.

    Args:
        net, inputs, spec, labels: as :func:`faultbound.measure.run_campaign` (no sequential margin stop).
        workers: shard tasks running at once.
        address: a Ray cluster (``host:port``); None starts a local one for this call.
        progress: ``progress(configurations_done, trials)``, polled about 5 times a second.
        extra: JSON-ready facts recorded with the result (as ``run_campaign``).
        max_retries: how often a shard whose worker died is run again.
        on_poll: called with the progress actor at every poll (tests use it to find worker PIDs).
    """
    try:
        import ray
    except ModuleNotFoundError:
        raise InvalidArgumentError("The Ray backend needs the `ray` package (pip install 'faultbound[ray]').") from None
    if workers < 1:
        raise InvalidArgumentError(f"Expected workers >= 1, but got {workers}.")
    if spec.margin is not None:
        raise InvalidArgumentError("Expected no sequential margin stop with the Ray backend (shards run a fixed 1/N).")
    p = _prepare(net, inputs, spec, labels)  # validates everything before a cluster starts
    n_chunks = math.ceil(spec.trials / spec.chunk)
    n_shards = max(1, min(n_chunks, 4 * workers))
    started = False
    if not ray.is_initialized():
        for k, v in ray_environment().items():
            os.environ.setdefault(k, v)
        try:
            if address is None:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = address or "a local instance"
            raise InvalidArgumentError(f"Cannot start or reach a Ray cluster ({where}): {first}") from None
        started = True
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries)(_shard_state)
        counter = ray.remote(num_cpus=0)(_Counter).remote()
        net_ref, x_ref, y_ref = ray.put(net), ray.put(p.x), ray.put(labels)
        queue = list(range(n_shards))
        running: dict[Any, int] = {}
        states: dict[int, dict[str, Any]] = {}
        while queue or running:
            while queue and len(running) < workers:
                i = queue.pop(0)
                running[task.remote(net_ref, x_ref, y_ref, spec, (i, n_shards), counter)] = i
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for ref in ready:
                states[running.pop(ref)] = ray.get(ref)
            if on_poll is not None:
                on_poll(counter)
            if progress is not None:
                total: Any = ray.get(counter.total.remote())  # type: ignore[attr-defined]
                progress(min(spec.trials, int(total)), spec.trials)
    finally:
        if started:
            ray.shutdown()
    state = empty_state()
    for i in range(n_shards):
        state = merge_states(state, states[i])
    meta = _meta(p, n_chunks, (0, 1), n_chunks, False, extra)
    return result_from_state(state, meta, spec, n_chunks)
