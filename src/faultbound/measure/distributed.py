"""Ray backend: the shards of :func:`faultbound.measure.run_campaign`, and the failure-set scoring
of :func:`faultbound.measure.worst_case`, as Ray tasks.

Both use one cluster helper (:func:`ray_cluster`: start a local instance or connect to one) and one
scheduler (:func:`run_tasks`: at most K tasks at once, results in submission order, a task whose
worker dies retried by Ray).

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

Worst-case search (:class:`RayScorer`, :func:`worst_case_ray`): the exhaustive enumeration of failure
sets and the beam's candidates are scored in batches, each batch with its own seed drawn from the
search's generator (:func:`faultbound.measure.search.score_batches`); contiguous runs of batches are
the tasks, and their scores are concatenated in batch order, so the search continues on exactly the
tensors it would have computed itself (same sort, same ties, same gradient refinement, in the driver).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import AnyNetwork
from faultbound.faults import Fault
from faultbound.measure.campaign import (
    CampaignResult,
    CampaignSpec,
    _meta,
    _prepare,
    result_from_state,
    run_campaign,
)
from faultbound.measure.search import SearchSpec, SetTuple, WorstCase, score_batches, worst_case
from faultbound.measure.stats import CampaignState
from faultbound.network.core import Network

__all__ = ["run_ray", "ray_environment", "ray_cluster", "run_tasks", "RayScorer", "worst_case_ray"]

Progress = Callable[[int, int], None]


def ray_environment() -> dict[str, str]:
    """Environment for a Ray instance this process starts: no authentication token, every address
    on the loopback interface (Ray's switch for single-machine clusters), and worker processes at
    the driver's priority (Ray starts them at niceness 15, so on a machine with other busy
    processes a campaign's workers would get a small share of the cores)."""
    return {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0"}


def _shard_state(
    net: Network, x: Tensor, labels: Tensor | None, spec: CampaignSpec, shard: tuple[int, int], counter: Any
) -> CampaignState:
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


@contextmanager
def ray_cluster(address: str | None, workers: int) -> Iterator[Any]:
    """The ``ray`` module, connected to ``address`` (a running cluster, left running) or to a local
    instance with ``workers`` CPUs started here (loopback, no dashboard, authentication off) and shut
    down on exit. An instance this process already initialised is used as it is."""
    try:
        import ray
    except ModuleNotFoundError:
        raise InvalidArgumentError("The Ray backend needs the `ray` package (pip install 'faultbound[ray]').") from None
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
        yield ray
    finally:
        if started:
            ray.shutdown()


def run_tasks(
    ray: Any,
    fn: Callable[..., Any],
    args: list[tuple[Any, ...]],
    *,
    workers: int,
    max_retries: int = 3,
    poll: Callable[[], None] | None = None,
) -> list[Any]:
    """``[fn(*a) for a in args]`` as Ray tasks, at most ``workers`` at once, results in the order of
    ``args``. A task whose worker process dies is run again by Ray (``max_retries``), so ``fn`` must be
    a deterministic function of its arguments. ``poll()`` is called about 5 times a second."""
    task = ray.remote(num_cpus=1, max_retries=max_retries)(fn)
    queue = list(range(len(args)))
    running: dict[Any, int] = {}
    results: dict[int, Any] = {}
    while queue or running:
        while queue and len(running) < workers:
            i = queue.pop(0)
            running[task.remote(*args[i])] = i
        ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
        for ref in ready:
            results[running.pop(ref)] = ray.get(ref)
        if poll is not None:
            poll()
    return [results[i] for i in range(len(args))]


def run_ray(
    net: AnyNetwork,
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
    if workers < 1:
        raise InvalidArgumentError(f"Expected workers >= 1, but got {workers}.")
    if spec.margin is not None:
        raise InvalidArgumentError("Expected no sequential margin stop with the Ray backend (shards run a fixed 1/N).")
    spec = spec.resolved(net)  # dtype="model": the network's format, as run_campaign does
    p = _prepare(net, inputs, spec, labels)  # validates everything before a cluster starts
    n_chunks = math.ceil(spec.trials / spec.chunk)
    n_shards = max(1, min(n_chunks, 4 * workers))
    with ray_cluster(address, workers) as ray:
        counter = ray.remote(num_cpus=0)(_Counter).remote()
        net_ref, x_ref, y_ref = ray.put(net), ray.put(p.x), ray.put(labels)

        def poll() -> None:
            if on_poll is not None:
                on_poll(counter)
            if progress is not None:
                total: Any = ray.get(counter.total.remote())
                progress(min(spec.trials, int(total)), spec.trials)

        states = run_tasks(
            ray, _shard_state, [(net_ref, x_ref, y_ref, spec, (i, n_shards), counter) for i in range(n_shards)],
            workers=workers, max_retries=max_retries, poll=poll,
        )
    state = CampaignState()
    for st in states:
        state = state.merge(st)
    meta = _meta(p, n_chunks, (0, 1), n_chunks, False, extra)
    return result_from_state(state, meta, spec, n_chunks)


# ------------------------------------------------------------------------- worst-case search
def _score_shard(
    net: AnyNetwork, fault: Fault, sets: list[SetTuple], x: Tensor, dtype: torch.dtype, seeds: list[int], batch: int
) -> tuple[Tensor, Tensor]:
    """Consecutive scoring batches of :func:`faultbound.measure.worst_case`, inside a Ray worker."""
    torch.set_num_threads(1)
    return score_batches(net, fault, sets, x, dtype, seeds, batch)


class RayScorer:
    """Scores failure sets for :func:`faultbound.measure.worst_case` as Ray tasks.

    A call scores ``B = len(seeds)`` batches (batch i: ``sets[i*batch : (i+1)*batch]``, its adversarial
    starting values drawn from a generator seeded ``seeds[i]``). The batches are cut into
    ``S = min(B, 4 K)`` contiguous shards of :math:`\\lceil B/S \\rceil` or fewer batches, and the
    per-set scores are concatenated in batch order: exactly the tensors the in-process
    :func:`faultbound.measure.search.score_batches` returns, so the search's sort (stable, ties to the
    earlier set) and everything after it are unchanged. The cluster is reached at the first call,
    so that a search that fails its argument checks, or needs no scoring, starts none; :meth:`close`
    shuts down a local instance it started. The network goes into the object store once.
    """

    def __init__(self, address: str | None = None, workers: int = 2, max_retries: int = 3,
                 on_poll: Callable[[], None] | None = None) -> None:
        if workers < 1:
            raise InvalidArgumentError(f"Expected workers >= 1, but got {workers}.")
        self.address, self.workers, self.max_retries, self.on_poll = address, workers, max_retries, on_poll
        self._cm: Any = None
        self._ray: Any = None
        self._net: tuple[AnyNetwork, Any] | None = None
        self.tasks = 0

    def __call__(
        self, net: AnyNetwork, fault: Fault, sets: list[SetTuple], x: Tensor, dtype: torch.dtype, seeds: list[int],
        batch: int,
    ) -> tuple[Tensor, Tensor]:
        if not seeds:
            return score_batches(net, fault, sets, x, dtype, seeds, batch)
        if self._ray is None:
            self._cm = ray_cluster(self.address, self.workers)
            self._ray = self._cm.__enter__()
        ray = self._ray
        if self._net is None or self._net[0] is not net:
            self._net = (net, ray.put(net))
        x_ref = ray.put(x)
        n_b = len(seeds)
        n_s = min(n_b, 4 * self.workers)
        per = math.ceil(n_b / n_s)
        args = [
            (self._net[1], fault, sets[lo * batch : (lo + per) * batch], x_ref, dtype, seeds[lo : lo + per], batch)
            for lo in range(0, n_b, per)
        ]
        self.tasks += len(args)
        out = run_tasks(ray, _score_shard, args, workers=self.workers, max_retries=self.max_retries,
                        poll=self.on_poll)
        return torch.cat([s for s, _ in out]), torch.cat([a for _, a in out])

    def close(self) -> None:
        """Leave the cluster (shutting down a local instance this scorer started)."""
        if self._cm is not None:
            cm, self._cm, self._ray, self._net = self._cm, None, None, None
            cm.__exit__(None, None, None)


def worst_case_ray(
    net: AnyNetwork,
    fault: Fault,
    failures: list[int] | tuple[int, ...] | None = None,
    spec: SearchSpec | None = None,
    *,
    workers: int = 2,
    address: str | None = None,
    max_retries: int = 3,
    **kwargs: Any,
) -> WorstCase:
    """:func:`faultbound.measure.worst_case` with its scoring of failure sets (the exhaustive
    enumeration, the beam's candidates) as Ray tasks (:class:`RayScorer`); the result equals the
    in-process one, field for field. ``spec`` and ``kwargs`` are ``worst_case``'s."""
    scorer = RayScorer(address, workers, max_retries)
    try:
        return worst_case(net, fault, failures, spec, scorer=scorer, **kwargs)
    finally:
        scorer.close()
