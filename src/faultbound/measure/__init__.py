"""Measurement: batched fault injection, campaigns and worst-case search.

Public API (all typed; see each function's docstring for the math):

* ``inject(net, x, fault, faults, *, values="random", generator=None, dtype=torch.float32,
  adversarial_steps=2) -> Injection`` -- T configurations x B inputs at once; ``Injection.errors`` is
  ``(T, B)`` with :math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty`.
* ``faulty_forward(net, x, fault, faults, ...) -> Tensor`` -- the faulty outputs ``(T, B, n_out)``.
* ``sample_faults(net, fault, n_configs, failures=None, rate=None, generator=None) -> FaultSet`` --
  exactly ``failures[l]`` failing units per layer, or Bernoulli(``rate``) per unit.
* ``run_campaign(net, inputs, spec: CampaignSpec, *, labels=None, checkpoint=None, progress=None)
  -> CampaignResult`` -- chunked, seeded, resumable campaign; ``result.to_dict()`` has ``max_error``,
  ``mean_error``, ``quantiles``, ``trials``, ``seed``, ``worst`` (and ``changed_rate`` / ``accuracy``
  with Wilson intervals for classifiers).
* ``campaign_inputs(net, data=None, digits=False, samples=None, seed=0) -> (inputs, labels)``.
* ``worst_case(net, fault, failures, *, inputs=None, ...) -> dict`` -- the largest output error found
  (a lower bound on the true worst case): keys ``max_error``, ``exhaustive``, ``failure_set``,
  ``input``, ``values``, ``evaluations``, ``seed``.

Fault models: those of :mod:`faultbound.faults` plus :class:`BitFlip` (single-event upsets).
"""

from faultbound.measure.campaign import CampaignResult, CampaignSpec, campaign_inputs, chunk_seed, run_campaign
from faultbound.measure.engine import (
    BitFlip,
    CleanPass,
    FaultSet,
    Injection,
    clean_pass,
    faulty_forward,
    inject,
    sample_faults,
)
from faultbound.measure.search import probe_inputs, worst_case
from faultbound.measure.stats import merge_states, summarize, wilson

__all__ = [
    "BitFlip",
    "CampaignResult",
    "CampaignSpec",
    "CleanPass",
    "FaultSet",
    "Injection",
    "campaign_inputs",
    "chunk_seed",
    "clean_pass",
    "faulty_forward",
    "inject",
    "merge_states",
    "run_campaign",
    "sample_faults",
    "summarize",
    "wilson",
    "worst_case",
    "probe_inputs",
]
