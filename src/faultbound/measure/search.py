"""Worst-case search: failure sets, inputs and Byzantine values that maximise the output error.

The quantity searched is

.. math::

    \\max_{S,\\ x \\in \\mathcal{D},\\ v \\in [-C, C]^{|S|}} \\|F_{S,v}(x) - F(x)\\|_\\infty

over failure sets S with :math:`f_l` units in layer l. Every value returned was actually evaluated on
a valid faulty network at a point of the domain, so it is a *lower bound* on the true worst case
(and must never exceed a certified bound).

* **Failure sets.** If (number of failure sets) x (probe inputs) is at most ``exhaustive_limit``, all
  sets are enumerated on all probe inputs (``exhaustive=True``: exhaustive over failure sets, the
  inputs are still probes). Otherwise a beam search adds one failing unit at a time, keeping the
  ``beam`` partial sets with the largest error over the probe inputs.
* **Inputs.** Projected gradient ascent on :math:`\\sigma (F'_o(x) - F_o(x))` (o the most deviated
  output, :math:`\\sigma` its sign), :math:`x \\leftarrow \\Pi_{\\mathcal D}(x + \\eta\\,
  \\mathrm{sign}\\nabla_x)`, from several restarts: the best probes, domain corners and random points.
* **Byzantine values / precision offsets.** :math:`\\pm C` (resp. :math:`\\pm\\lambda_l`) by the sign of
  the downstream gradient, updated jointly with x.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import AnyNetwork, failure_counts, layer_count, n_units
from faultbound.faults import BitFlip, Fault, NeuronFault, Precision, SynapseFault
from faultbound.measure.engine import clean_pass, differentiable_outputs, initial_values, inject
from faultbound.measure.faultset import FaultSet
from faultbound.network.graph import GraphNetwork
from faultbound.progress import Progress, say

__all__ = [
    "worst_case",
    "WorstCase",
    "SearchSpec",
    "SearchStrategy",
    "search_spec",
    "corners_and_uniform",
    "score_batches",
]


def corners_and_uniform(net: AnyNetwork, n: int, generator: torch.Generator, max_corners: int = 32) -> Tensor:
    """The search's probe inputs: domain corners (all when :math:`2^d \\le` ``max_corners``, else
    ``max_corners`` random ones) then ``n`` uniform points, float64 ``(m, *input_shape)``."""
    lo, hi = net.domain.lo.reshape(-1), net.domain.hi.reshape(-1)
    d = lo.numel()
    if 2**d <= max_corners:
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    else:
        bits = (torch.rand((max_corners, d), generator=generator) < 0.5).to(torch.float64)
    corners = lo + bits * (hi - lo)
    rand = lo + torch.rand((n, d), generator=generator, dtype=torch.float64) * (hi - lo)
    return torch.cat([corners, rand]).reshape(-1, *net.input_shape)


def _sets_tensor(sets: list[tuple[tuple[int, ...], ...]], n_layers: int) -> FaultSet:
    sites: list[Tensor | None] = []
    for i in range(n_layers):
        k = max((len(s[i]) for s in sets), default=0)
        if k == 0:
            sites.append(None)
            continue
        rows = [list(s[i]) + [-1] * (k - len(s[i])) for s in sets]
        sites.append(torch.tensor(rows, dtype=torch.long))
    return FaultSet(len(sets), tuple(sites))


SetTuple = tuple[tuple[int, ...], ...]
"""A failure set: per layer, the sorted failing units."""

Scorer = Callable[[AnyNetwork, Fault, list[SetTuple], Tensor, torch.dtype, list[int], int], tuple[Tensor, Tensor]]
"""``scorer(net, fault, sets, x, dtype, seeds, batch)``: what :func:`score_batches` returns, computed
anywhere (in this process, or as Ray tasks: :class:`faultbound.measure.distributed.RayScorer`)."""

SearchStrategy = Literal["auto", "exhaustive", "beam"]
"""How failure sets are searched: ``"exhaustive"`` enumerates them all, ``"beam"`` runs the beam
search, ``"auto"`` enumerates when (#sets x #probes) is at most ``exhaustive_limit``."""


@dataclass(frozen=True)
class SearchSpec:
    """The settings of :func:`worst_case`, validated once at construction.

    Attributes:
        n_probe: uniform probe inputs (domain corners are always added, and ``inputs`` if given).
        exhaustive_limit: with ``strategy="auto"``, enumerate every failure set when (#sets x #probes)
            is at most this.
        beam: partial failure sets kept by the beam search.
        beam_probes: probe inputs the beam search scores candidates on (those where some single
            failure hurts most).
        refine: failure sets whose inputs are then optimised by projected gradient ascent.
        rounds: beam search + ascent rounds (round r > 1 searches failure sets again at the inputs
            the previous ascent found); exhaustive enumeration needs one.
        candidates: the beam only adds units whose single failure ranks among the ``candidates``
            worst of their layer.
        max_evaluations: budget (configurations x inputs) of the single-failure ranking; fewer probe
            inputs are used when a network has many units.
        max_units: at most this many units of each faulty layer (site) are ranked, a uniform sample
            drawn from ``seed`` (at least the layer's failure count); ``None`` (the default) ranks
            every unit. The beam then only adds sampled units, so the search is cheaper and still
            returns a lower bound on the worst case.
        restarts, steps: restarts and steps of the gradient ascent.
        seed: seeds the probes, restarts and starting values.
        dtype: the format the search measures in; ``None`` (the default): the network's own format
            when it is float16 or bfloat16 (whose certificates include the rounding allowance of
            that format, :mod:`faultbound.bounds.rounding`), float64 otherwise.
        batch: failure sets scored per batch; batch i draws its adversarial starting values from
            its own generator (seeded from ``seed``), so the result does not depend on where a
            batch is evaluated.
        strategy: :data:`SearchStrategy` (``"auto"`` by default).
    """

    n_probe: int = 32
    exhaustive_limit: int = 200_000
    beam: int = 4
    beam_probes: int = 8
    refine: int = 4
    rounds: int = 1
    candidates: int = 64
    max_evaluations: int = 400_000
    max_units: int | None = None
    restarts: int = 8
    steps: int = 30
    seed: int = 0
    dtype: torch.dtype | None = None
    batch: int = 2048
    strategy: SearchStrategy = "auto"

    def __post_init__(self) -> None:
        if (
            self.n_probe < 0
            or self.beam < 1
            or self.refine < 1
            or self.restarts < 1
            or self.steps < 0
            or self.rounds < 1
            or self.batch < 1
            or (self.max_units is not None and self.max_units < 1)
        ):
            raise InvalidArgumentError(
                "Expected n_probe, steps >= 0 and beam, refine, restarts, rounds, batch, max_units >= 1."
            )
        if self.strategy not in get_args(SearchStrategy):
            raise InvalidArgumentError(
                f"Expected `strategy` to be one of {', '.join(get_args(SearchStrategy))}, but got {self.strategy!r}."
            )
        if self.dtype is not None and (not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point):
            raise InvalidArgumentError(f"Expected a floating-point torch dtype, but got {self.dtype!r}.")


#: Multiply-adds per input above which :func:`default_spec` scales the search down.
LARGE_NETWORK_MACS = 5e7
#: Evaluations x multiply-adds per input that the default search of a large network allows its
#: single-failure ranking (720 evaluations of the CIFAR ResNet-18); it ranks a sample of half that
#: many units per faulty site (360 of ResNet-18's 65,536 at the stem: scoring all of them once took
#: about 9 minutes on one core).
LARGE_NETWORK_BUDGET = 4e11


def _macs(net: AnyNetwork) -> float:
    """Multiply-adds of one clean forward pass (``GraphNetwork.node_macs``; 0 for a layered
    network: its default search is never scaled)."""
    return float(sum(net.node_macs)) if isinstance(net, GraphNetwork) else 0.0


def default_spec(net: AnyNetwork) -> SearchSpec:
    """The default search settings for ``net``: :class:`SearchSpec()`, except on a graph of more than
    :data:`LARGE_NETWORK_MACS` multiply-adds per input (the CIFAR ResNet-18: 5.6e8), where the
    single-failure ranking gets :math:`E` = :data:`LARGE_NETWORK_BUDGET` / macs evaluations (at
    least 256) over a uniform sample of :math:`E/2` units per faulty site (``max_units``), with 2
    restarts of 10 ascent steps and 8 uniform probes. Any setting given explicitly replaces these."""
    macs = _macs(net)
    if macs <= LARGE_NETWORK_MACS:
        return SearchSpec()
    evals = max(256, int(LARGE_NETWORK_BUDGET / macs))
    return SearchSpec(max_evaluations=evals, max_units=evals // 2, restarts=2, steps=10, n_probe=8)


def search_spec(spec: SearchSpec | None = None, **settings: Any) -> SearchSpec:
    """``spec`` (default :class:`SearchSpec()`) with the keyword ``settings`` replacing its fields:
    the one place where :func:`worst_case`'s keyword arguments become a spec (and are validated)."""
    base = SearchSpec() if spec is None else spec
    if not isinstance(base, SearchSpec):
        raise InvalidArgumentError(f"Expected a SearchSpec, but got {type(base).__name__}.")
    names = {f.name for f in dataclasses.fields(SearchSpec)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise InvalidArgumentError(
            f"Expected worst-case settings among {', '.join(sorted(names))}, but got {', '.join(unknown)}."
        )
    return dataclasses.replace(base, **settings) if settings else base


@dataclass(frozen=True)
class WorstCase:
    """The largest output error :func:`worst_case` found, and where: a *lower bound* on the true
    worst case (every value was evaluated on a valid faulty network at a point of the domain).

    Attributes:
        max_error: :math:`\\|F_{S,v}(x) - F(x)\\|_\\infty` at the failure set, input and values below.
        failure_set: ``{layer l (from 1): failing units}``, layers without failures left out (empty
            for precision faults, which have no sites).
        input: the input ``x``, flattened.
        values: ``{layer l: values sent by its failing units}`` when they were chosen by gradient
            ascent (Byzantine models; empty for crashes), None when the worst came from scoring the
            probes or for precision faults.
        probe_max_error: the largest error on the probe inputs before the ascent over inputs.
        exhaustive: every failure set was scored (else beam search); see :attr:`strategy`.
        evaluations: configurations x inputs evaluated (gradient steps included).
        sets_total: the number of failure sets there are.
        seed: the seed of the search.
        fault: the fault model.
        failures: failing units per layer (None for precision faults).
        probes: the probe inputs at the end of the search.
    """

    max_error: float
    failure_set: dict[int, tuple[int, ...]]
    input: tuple[float, ...]
    values: dict[int, tuple[float, ...]] | None
    probe_max_error: float | None
    exhaustive: bool
    evaluations: int
    sets_total: int
    seed: int
    fault: Fault
    failures: tuple[int, ...] | None
    probes: int

    @property
    def strategy(self) -> Literal["exhaustive", "beam"]:
        """The search that ran: ``"exhaustive"`` over failure sets, or ``"beam"``."""
        return "exhaustive" if self.exhaustive else "beam"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"max_error", "failure_set" ({"l": [units]}), "input", "values" ({"l": [values]}
        or None), "probe_max_error", "exhaustive", "evaluations", "sets_total", "seed", "fault"
        (:meth:`Fault.to_dict`), "failures", "probes"}`` (what the CLI's ``worst --json`` prints)."""
        return {
            "max_error": self.max_error,
            "failure_set": {str(l): list(u) for l, u in self.failure_set.items()},
            "input": list(self.input),
            "values": None if self.values is None else {str(l): list(v) for l, v in self.values.items()},
            "probe_max_error": self.probe_max_error,
            "exhaustive": self.exhaustive,
            "evaluations": self.evaluations,
            "sets_total": self.sets_total,
            "seed": self.seed,
            "fault": self.fault.to_dict(),
            "failures": None if self.failures is None else list(self.failures),
            "probes": self.probes,
        }


def score_batches(
    net: AnyNetwork, fault: Fault, sets: list[SetTuple], x: Tensor, dtype: torch.dtype, seeds: list[int], batch: int
) -> tuple[Tensor, Tensor]:
    """Error of each set (max over the inputs ``x``) and the index of the input reaching it.

    The sets are evaluated in batches, batch i being ``sets[i*batch : (i+1)*batch]`` with its
    adversarial starting values drawn from a generator seeded ``seeds[i]``: a batch's scores depend on
    that batch alone, so any split of the batches (shards, Ray tasks) concatenates to the same result.
    """
    if len(seeds) != math.ceil(len(sets) / batch):
        raise InvalidArgumentError(f"Expected one seed per batch of {batch} sets, but got {len(seeds)}.")
    n_layers = layer_count(net, fault)
    cp = clean_pass(net, x, dtype)
    best, arg = [torch.empty(0, dtype=dtype)], [torch.empty(0, dtype=torch.long)]
    for i, sd in enumerate(seeds):
        fs = _sets_tensor(sets[i * batch : (i + 1) * batch], n_layers)
        gb = torch.Generator().manual_seed(int(sd))
        e = inject(net, cp, fault, fs, values="adversarial", generator=gb, dtype=dtype).errors
        m, a = e.max(1)
        best.append(m)
        arg.append(a)
    return torch.cat(best), torch.cat(arg)


def _score_sets(
    net: AnyNetwork,
    fault: Fault,
    sets: list[SetTuple],
    x: Tensor,
    dtype: torch.dtype,
    g: torch.Generator,
    batch: int = 2048,
    scorer: Scorer | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`score_batches` on ``sets``, with one seed per batch drawn from ``g`` (whatever the
    scorer, ``g`` advances by exactly one draw of ``ceil(len(sets) / batch)`` numbers)."""
    n_b = math.ceil(len(sets) / batch)
    seeds = torch.randint(0, 2**62, (n_b,), generator=g).tolist() if n_b else []
    return (scorer or score_batches)(net, fault, sets, x, dtype, seeds, batch)


def _pgd(
    net: AnyNetwork, fault: Fault, fs: FaultSet, starts: Tensor, steps: int, dtype: torch.dtype, g: torch.Generator
) -> tuple[float, Tensor, list[Tensor | None], int]:
    """Projected sign-gradient ascent over inputs (and values) for one failure set; returns the best
    error, its input, its values and the number of evaluations."""
    lo = net.domain.lo.to(dtype).unsqueeze(0)
    hi = net.domain.hi.to(dtype).unsqueeze(0)
    x = starts.to(dtype).clone()
    r = x.shape[0]
    vals = initial_values(net, fault, fs, "adversarial", r, g, dtype)
    ranges = fault.value_ranges(len(vals))  # the values the model lets the adversary choose, per layer
    best_e, best_x, best_v = -math.inf, x[0].clone(), [None if v is None else v[:, :1].clone() for v in vals]
    evals = 0
    width = (hi - lo).clamp(min=0)
    for step in range(steps + 1):
        xv = x.clone().requires_grad_(True)
        leaves = [None if v is None else v.clone().requires_grad_(True) for v in vals]
        cp = clean_pass(net, xv, dtype, grad=True)
        out = differentiable_outputs(net, cp, fault, fs, leaves)  # (1, r, n_out)
        dev = out - cp.output.unsqueeze(0)
        err = dev.detach().abs().amax(-1)[0]  # (r,)
        evals += r
        err = torch.nan_to_num(err, nan=math.inf)
        i = int(err.argmax())
        if float(err[i]) > best_e:
            best_e = float(err[i])
            best_x = x[i].detach().clone()
            best_v = [None if v is None else v[:, i : i + 1].detach().clone() for v in vals]
        if step == steps or not math.isfinite(best_e):
            break
        o = dev.detach().abs().argmax(-1, keepdim=True)
        sig = torch.sign(dev.detach().gather(-1, o))
        sig = torch.where(sig == 0, torch.ones_like(sig), sig)
        obj = (sig * dev.gather(-1, o)).sum()
        live = [xv] + [v for v in leaves if v is not None]
        if not obj.requires_grad:
            break
        grads = torch.autograd.grad(obj, live, allow_unused=True)
        gx = grads[0]
        eta = 0.25 * (1 - step / (steps + 1)) + 0.01
        if gx is not None:
            x = torch.minimum(torch.maximum(x + eta * width * torch.sign(gx.detach()), lo), hi)
        gi = iter(grads[1:])
        nv: list[Tensor | None] = []
        for v, (v_lo, v_hi) in zip(vals, ranges, strict=True):
            if v is None:
                nv.append(None)
                continue
            gv = next(gi)  # the ends of the range, by the sign of the gradient
            nv.append(v if gv is None else torch.where(gv > 0, v_hi, torch.where(gv < 0, v_lo, v)).detach())
        vals = nv
    return best_e, best_x, best_v, evals


def _n_sets(net: AnyNetwork, fault: Fault, failures: tuple[int, ...]) -> int:
    n = 1
    for l, f in enumerate(failures, start=1):
        n *= math.comb(n_units(net, fault, l), f)
    return n


def _all_sets(net: AnyNetwork, fault: Fault, failures: tuple[int, ...]) -> list[tuple[tuple[int, ...], ...]]:
    per = [list(itertools.combinations(range(n_units(net, fault, l)), f)) for l, f in enumerate(failures, start=1)]
    return list(itertools.product(*per))


def _ranked_units(
    net: AnyNetwork, fault: Fault, failures: tuple[int, ...], max_units: int | None, g: torch.Generator
) -> list[list[int]]:
    """The units of each layer that the single-failure ranking scores: every unit of a layer with
    failures, or, with ``max_units``, a uniform sample of ``max(max_units, f_l)`` of them (drawn
    from ``g``, ascending); none of a layer without failures."""
    out: list[list[int]] = []
    for l, f in enumerate(failures, start=1):
        n = n_units(net, fault, l)
        if f == 0:
            out.append([])
        elif max_units is None or n <= max(max_units, f):
            out.append(list(range(n)))
        else:
            out.append(sorted(int(u) for u in torch.randperm(n, generator=g)[: max(max_units, f)]))
    return out


def _beam(
    net: AnyNetwork,
    fault: Fault,
    failures: tuple[int, ...],
    x: Tensor,
    beam: int,
    dtype: torch.dtype,
    g: torch.Generator,
    allowed: list[list[int]] | None = None,
    batch: int = 2048,
    scorer: Scorer | None = None,
) -> tuple[list[tuple[tuple[int, ...], ...]], Tensor, Tensor, int]:
    """Beam search over failure sets, one failing unit (among ``allowed[l]``) at a time."""
    n_layers = len(failures)
    states: list[tuple[tuple[int, ...], ...]] = [tuple(() for _ in range(n_layers))]
    evals = 0
    scores = torch.zeros(1, dtype=dtype)
    args = torch.zeros(1, dtype=torch.long)
    for _ in range(sum(failures)):
        cands: dict[tuple[tuple[int, ...], ...], None] = {}
        for st in states:
            for i in range(n_layers):
                if len(st[i]) >= failures[i]:
                    continue
                for u in allowed[i] if allowed is not None else range(n_units(net, fault, i + 1)):
                    if u in st[i]:
                        continue
                    new = tuple(tuple(sorted(s + (u,))) if j == i else s for j, s in enumerate(st))
                    cands[new] = None
        cl = list(cands)
        sc, ar = _score_sets(net, fault, cl, x, dtype, g, batch, scorer)
        evals += len(cl) * x.shape[0]
        top = torch.argsort(sc, descending=True, stable=True)[:beam]
        states = [cl[int(i)] for i in top]
        scores, args = sc[top], ar[top]
    return states, scores, args, evals


class _Best(NamedTuple):
    """The largest error found so far, with its failure set, input and values."""

    error: float
    failure_set: dict[int, tuple[int, ...]]
    input: tuple[float, ...]
    values: dict[int, tuple[float, ...]] | None


def _refine(
    net: AnyNetwork,
    fault: Fault,
    sets: list[tuple[tuple[int, ...], ...]],
    scores: Tensor,
    args: Tensor,
    x: Tensor,
    n_layers: int,
    restarts: int,
    steps: int,
    dtype: torch.dtype,
    g: torch.Generator,
    best: _Best | None,
    found: list[Tensor],
) -> tuple[_Best | None, int]:
    """Gradient ascent over inputs for each of ``sets``; appends each set's best input to ``found``."""
    evals = 0
    lo, hi = net.domain.lo.reshape(-1), net.domain.hi.reshape(-1)
    cp = clean_pass(net, x, dtype)
    for s, sc, a in zip(sets, scores.tolist(), args.tolist(), strict=True):
        fs = _sets_tensor([s], n_layers)
        # restarts: the probes this set hurts most, then random points
        e = inject(net, cp, fault, fs, values="adversarial", generator=g, dtype=dtype).errors[0]
        evals += x.shape[0]
        order = torch.argsort(e, descending=True)[: max(1, restarts // 2)]
        rnd = lo + torch.rand((restarts - order.numel(), lo.numel()), generator=g, dtype=torch.float64) * (hi - lo)
        starts = torch.cat([x[order].reshape(order.numel(), -1), rnd]).reshape(-1, *net.input_shape)
        val, xb, vb, ev = _pgd(net, fault, fs, starts, steps, dtype, g)
        evals += ev
        found.append(xb.reshape(-1).to(torch.float64))
        cand = [(val, xb, vb), (float(sc), x[int(a)].to(dtype), None)]
        for v_err, v_x, v_vals in cand:
            if v_err > (-math.inf if best is None else best.error):
                best = _Best(
                    float(v_err),
                    {i + 1: tuple(u) for i, u in enumerate(s) if u},
                    tuple(v_x.reshape(-1).double().tolist()),
                    None
                    if v_vals is None or not fault.counted
                    else {i + 1: tuple(v.reshape(-1).tolist()) for i, v in enumerate(v_vals) if v is not None},
                )
    return best, evals


def search_dtype(net: AnyNetwork, dtype: torch.dtype | None) -> torch.dtype:
    """The format a search measures in: ``dtype``, or for ``None`` the network's own format when it
    is float16 or bfloat16, else float64 (:class:`SearchSpec`)."""
    if dtype is not None:
        return dtype
    return net.dtype if net.dtype in (torch.float16, torch.bfloat16) else torch.float64


def worst_case(
    net: AnyNetwork,
    fault: Fault,
    failures: list[int] | tuple[int, ...] | None = None,
    spec: SearchSpec | None = None,
    *,
    inputs: Tensor | None = None,
    scorer: Scorer | None = None,
    progress: Progress | None = None,
    **settings: Any,
) -> WorstCase:
    """Search failure sets, inputs in the domain and Byzantine values that maximise the output error.

    Args:
        net: the network (its domain bounds the inputs).
        fault: ``Crash()``, ``StuckAt(v)``, ``Byzantine(C)``, ``ByzantineDeviation(C)``,
            ``SynapseCrash()``, ``SynapseByzantine(C)`` or ``Precision(lams)``.
        failures: failing units per layer (L for neurons, L+1 for synapses; ignored for precision).
        spec: the search's settings (:class:`SearchSpec`; default :func:`default_spec`, which is
            ``SearchSpec()`` except on large graphs).
        inputs: extra probe inputs (e.g. a data set); domain corners and ``spec.n_probe`` uniform
            points are always added.
        scorer: evaluates the batches (default :func:`score_batches`, in this process);
            :func:`faultbound.measure.distributed.worst_case_ray` passes a Ray one. The result is the
            same whatever the scorer.
        progress: called with a message at each stage (scoring the failure sets, each beam round,
            each gradient-ascent round); see :mod:`faultbound.progress`.
        settings: fields of :class:`SearchSpec` replacing those of ``spec``
            (``worst_case(net, fault, f, steps=5)`` is ``worst_case(net, fault, f, SearchSpec(steps=5))``).

    Returns:
        A :class:`WorstCase`; its ``max_error`` is a lower bound on the true worst case.

    Example:
        >>> import torch, faultbound as fb
        >>> from faultbound.measure import SearchSpec, worst_case
        >>> torch.manual_seed(0) and None
        >>> net = fb.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(),
        ...                                                 torch.nn.Linear(4, 1)))
        >>> r = worst_case(net, fb.Crash(), [1], SearchSpec(steps=5))
        >>> r.exhaustive, r.max_error <= fb.bound(net, [1], fb.Crash()).value
        (True, True)
    """
    if isinstance(fault, BitFlip) or (isinstance(fault, Fault) and fault.flippable):
        raise InvalidArgumentError("Worst-case search does not cover bit flips; run a campaign instead.")
    if not isinstance(fault, (NeuronFault, SynapseFault, Precision)):
        raise InvalidArgumentError(f"Expected a fault model, but got {fault!r}.")
    if fault.unbounded:
        raise InvalidArgumentError("Unbounded capacity: the worst case is infinite (Lemma 1).")
    sp = search_spec(spec if spec is not None else default_spec(net), **settings)
    n_probe, exhaustive_limit, beam, beam_probes = sp.n_probe, sp.exhaustive_limit, sp.beam, sp.beam_probes
    refine, rounds, candidates, max_evaluations = sp.refine, sp.rounds, sp.candidates, sp.max_evaluations
    restarts, steps, seed, batch = sp.restarts, sp.steps, sp.seed, sp.batch
    dtype = search_dtype(net, sp.dtype)
    g = torch.Generator().manual_seed(int(seed))
    x = corners_and_uniform(net, n_probe, g)
    if inputs is not None:
        xi = net.as_inputs(inputs)
        x = torch.cat([x, torch.minimum(torch.maximum(xi, net.domain.lo), net.domain.hi)])
    n_layers = layer_count(net, fault)
    evals = 0
    f_tuple: tuple[int, ...] | None = None
    allowed: list[list[int]] | None = None
    counts = failure_counts(net, fault, failures)  # the one validation; () for precision
    if not fault.counted:
        fs0 = FaultSet(1, (None,) * n_layers)
        sets: list[tuple[tuple[int, ...], ...]] = [tuple(() for _ in range(n_layers))]
        exhaustive, total = True, 1
        say(progress, f"scoring {x.shape[0]} probe inputs")
        e0 = inject(net, x, fault, fs0, values="adversarial", generator=g, dtype=dtype).errors[0]
        evals += x.shape[0]
        scores, args = e0.max().reshape(1), e0.argmax().reshape(1)
    else:
        f = tuple(counts)
        f_tuple = f
        total = _n_sets(net, fault, f)
        exhaustive = sp.strategy == "exhaustive" or (sp.strategy == "auto" and total * x.shape[0] <= exhaustive_limit)
        if exhaustive:
            say(progress, f"scoring all {total} failure sets on {x.shape[0]} probe inputs")
            sets = _all_sets(net, fault, f)
            scores, args = _score_sets(net, fault, sets, x, dtype, g, batch, scorer)
            evals += len(sets) * x.shape[0]
            top = torch.argsort(scores, descending=True, stable=True)[:refine]
            sets = [sets[int(i)] for i in top]
            scores, args = scores[top], args[top]
        else:
            # score partial sets on the probes where some single failure (of the allowed layers) hurts most
            say(progress, f"beam search over {total} failure sets: scoring single failures")
            ranked = _ranked_units(net, fault, f, sp.max_units, g)
            singles: list[SetTuple] = [
                tuple((u,) if j == i else () for j in range(n_layers)) for i in range(n_layers) for u in ranked[i]
            ]
            fs1 = _sets_tensor(singles, n_layers)
            # within the budget: the first probes (domain corners come first) when units are many
            p1 = max(1, min(x.shape[0], (max_evaluations // 2) // max(1, len(singles))))
            e1 = torch.cat(
                [
                    inject(
                        net,
                        x[:p1],
                        fault,
                        fs1.select(slice(i, i + 2048)),
                        values="adversarial",
                        generator=g,
                        dtype=dtype,
                    ).errors
                    for i in range(0, len(singles), 2048)
                ]
            )
            evals += len(singles) * p1
            keep = torch.argsort(e1.amax(0), descending=True, stable=True)[: max(1, beam_probes)]
            # the beam only adds units whose single failure ranks among the `candidates` worst of their layer
            unit_score = e1.amax(1)
            allowed = []
            pos = 0
            for i in range(n_layers):
                units = ranked[i]
                sc_i = unit_score[pos : pos + len(units)]
                pos += len(units)
                top_i = torch.argsort(sc_i, descending=True, stable=True)[: max(candidates, f[i])]
                allowed.append(sorted(units[int(u)] for u in top_i))
            say(progress, f"beam search over {total} failure sets: growing the beam of {beam}")
            sets, scores, args, e = _beam(net, fault, f, x[keep], beam, dtype, g, allowed, batch, scorer)
            args = keep[args]
            evals += e
            sets, scores, args = sets[:refine], scores[:refine], args[:refine]
    best: _Best | None = None
    probe_best = float(scores.max()) if scores.numel() else None
    found: list[Tensor] = []
    n_rounds = rounds if not exhaustive else 1
    for rnd_i in range(n_rounds):
        if rnd_i > 0:
            # coordinate ascent: search failure sets again at the inputs gradient ascent found
            x_new = torch.stack(found).reshape(-1, *net.input_shape).to(torch.float64)
            x = torch.cat([x, x_new])
            if f_tuple is None:  # pragma: no cover - rounds > 1 only for beam search
                break
            sets, scores, args, e = _beam(net, fault, f_tuple, x_new, beam, dtype, g, allowed, batch, scorer)
            evals += e
            args = args + (x.shape[0] - x_new.shape[0])
            sets, scores, args = sets[:refine], scores[:refine], args[:refine]
        found = []
        say(progress, f"gradient ascent on the {len(sets)} worst failure sets (round {rnd_i + 1} of {n_rounds})")
        best, ev = _refine(net, fault, sets, scores, args, x, n_layers, restarts, steps, dtype, g, best, found)
        evals += ev

    if best is None:  # pragma: no cover - every search refines at least one failure set
        raise InvalidArgumentError("The search evaluated no failure set.")
    return WorstCase(
        max_error=best.error,
        failure_set=best.failure_set,
        input=best.input,
        values=best.values,
        probe_max_error=probe_best,
        exhaustive=bool(exhaustive),
        evaluations=int(evals),
        sets_total=int(total),
        seed=int(seed),
        fault=fault,
        failures=None if not fault.counted else f_tuple,
        probes=int(x.shape[0]),
    )
