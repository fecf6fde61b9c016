"""Measurement: batched fault injection, campaigns and worst-case search.

Public API (all typed; see each function's docstring for the math):

* ``inject(net, x, fault, faults, *, values="random", generator=None, dtype=None,
  adversarial_steps=2) -> Injection`` (``dtype=None``: the network's own format, ``net.dtype``) --
  T configurations x B inputs at once; ``Injection.errors`` is
  ``(T, B)`` with :math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty`.
* ``faulty_forward(net, x, fault, faults, ...) -> Tensor`` -- the faulty outputs ``(T, B, n_out)``.
* ``sample_faults(net, fault, n_configs, failures=None, rate=None, generator=None) -> FaultSet`` --
  exactly ``failures[l]`` failing units per layer, or Bernoulli(``rate``) per unit.
* ``run_campaign(net, inputs, spec: CampaignSpec, *, labels=None, checkpoint=None, progress=None)
  -> CampaignResult`` -- chunked, seeded, resumable campaign; ``result.to_dict()`` has ``max_error``,
  ``mean_error``, ``quantiles``, ``trials``, ``seed``, ``worst`` (and ``changed_rate`` / ``accuracy``
  with intervals over configurations for classifiers; see :mod:`faultbound.measure.stats`).
* ``run_campaign(..., shard=(i, n), checkpoint_seconds=1.0)`` runs chunks ``i, i+n, ...`` only;
  ``merge_campaign_states(paths) -> CampaignResult`` merges the shards' state files into exactly the
  unsharded result; ``load_state(path) -> (state, meta)`` reads and validates one (never unpickles).
  The state is a :class:`~faultbound.measure.stats.CampaignState` whose fields declare how they merge;
  ``state.merge(other)``, ``state.save(path, meta)`` and
  ``CampaignState.load(path)`` follow from those declarations.
* ``faultbound.measure.distributed.run_ray(net, inputs, spec, *, labels=None, workers=2, address=None,
  progress=None) -> CampaignResult`` -- the shards as Ray tasks (needs the ``ray`` extra); the
  result equals ``run_campaign``'s, also when a worker dies and its shard is retried.
* ``population(net, fault, failures=None, rate=None) -> int | None`` -- the exact number of
  configurations; ``leveugle_trials(population, margin, confidence) -> int`` -- Leveugle et al.'s
  sample size with the finite-population correction.
* ``campaign_inputs(net, data=None, digits=False, samples=None, seed=0) -> (inputs, labels)``.
* ``worst_case(net, fault, failures=None, spec=None, *, inputs=None, scorer=None, **settings) ->
  WorstCase`` -- the largest output error found (a lower bound on the true worst case, never above a
  sound certificate). ``spec`` is a :class:`SearchSpec` (``n_probe=32, exhaustive_limit=200_000,
  beam=4, beam_probes=8, refine=4, rounds=1, candidates=64, max_evaluations=400_000, restarts=8,
  steps=30, seed=0, dtype=None, batch=2048, strategy="auto"``; ``dtype=None``: a float16 or bfloat16
  network's own format, float64 otherwise); keyword ``settings`` replace
  its fields. ``WorstCase`` has ``max_error``, ``exhaustive``, ``failure_set`` ({layer: units}),
  ``input``, ``values`` (Byzantine values used), ``evaluations``, ``sets_total``,
  ``probe_max_error``, ``probes``, ``seed``, ``fault``, ``failures``; ``to_dict()`` is its JSON.
  ``distributed.worst_case_ray(net, fault, failures, spec=None, workers=2, address=None, **settings)``
  scores the failure sets as Ray tasks, with the same result.

``CampaignSpec(fault, trials, failures=None, rate=None, seed=0, chunk=64, values="random",
dtype="model", input_batch=1024, quantiles=(0.5, 0.9, 0.99), exhaustive=False, threshold=None,
margin=None, confidence=0.95)`` holds a campaign's settings; chunk c
draws from ``campaign.chunk_seed(seed, c)``, so a resumed campaign equals an uninterrupted one, and
``chunk_faults(net, spec, c)`` regenerates that chunk's configurations (replay of any configuration).

Fault models: those of :mod:`faultbound.faults`, :class:`~faultbound.faults.BitFlip` (single-event
upsets) included; the summary statistics are in :mod:`faultbound.measure.stats`.
"""

from faultbound.measure.campaign import (
    CampaignResult,
    CampaignSpec,
    campaign_inputs,
    chunk_faults,
    leveugle_trials,
    load_state,
    merge_campaign_states,
    population,
    run_campaign,
)
from faultbound.measure.engine import Injection, clean_pass, faulty_forward, inject
from faultbound.measure.faultset import FaultSet, sample_faults
from faultbound.measure.search import SearchSpec, WorstCase, worst_case
from faultbound.measure.state import CleanPass

__all__ = [
    "CampaignResult",
    "CampaignSpec",
    "CleanPass",
    "FaultSet",
    "Injection",
    "campaign_inputs",
    "chunk_faults",
    "clean_pass",
    "faulty_forward",
    "inject",
    "leveugle_trials",
    "load_state",
    "merge_campaign_states",
    "population",
    "run_campaign",
    "sample_faults",
    "worst_case",
    "SearchSpec",
    "WorstCase",
]
