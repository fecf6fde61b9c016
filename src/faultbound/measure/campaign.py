"""Fault-injection campaigns: many fault configurations on a set of inputs, with constant-size
mergeable statistics, a checkpoint that survives ``kill -9``, statistical sample sizes,
exhaustive enumeration, and deterministic shards.

A campaign of ``trials`` configurations is cut into chunks of ``chunk`` configurations. Chunk c draws
its fault sets and values from a generator seeded by ``(seed, c)`` only (or, with ``exhaustive``,
enumerates configurations ``c * chunk`` onwards), so chunks are independent: whichever chunks were
done before an interruption, by whichever process, merging their states (:mod:`.stats`, exact and
order-independent) gives exactly the result of an uninterrupted run. Shard ``i`` of ``n`` runs the
chunks ``c = i, i + n, i + 2n, ...``. The merged state is written to the checkpoint file atomically
(temporary file + ``os.replace``) at most every ``checkpoint_seconds`` and at the end; it holds
counts, exact sums and a quantile sketch, so its size does not grow with the number of trials.

Every configuration is evaluated on every input; the figure of a configuration t on input b is
:math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty`.

**Statistical fault injection** (Leveugle, Calvez, Maistri, Vanhauwaert, DATE 2009): to estimate a
failure proportion within a margin :math:`e` at confidence level with normal quantile :math:`t`,
from a population of :math:`N` possible fault configurations, sample

.. math::

    n = \\left\\lceil \\frac{N}{1 + e^2 (N-1) / (t^2 p (1-p))} \\right\\rceil, \\qquad p = 1/2
    \\text{ (the worst case)}

configurations without replacement. :func:`population` computes :math:`N` exactly (Python integers):
:math:`\\prod_l \\binom{N_l}{f_l}` failure sets for exactly :math:`f_l` failing units per layer (times
:math:`b^{f_l}` bit choices for bit flips over :math:`b` allowed bits), and :math:`\\prod_l 2^{N_l}`
(:math:`(1+b)^{N_l}` for bit flips) subsets for Bernoulli rates. The values of Byzantine units are
drawn per configuration and are not part of :math:`N`.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import AnyNetwork, failure_counts, layer_count, n_units
from faultbound.faults import Fault, Precision, fault_from_record, for_dtype
from faultbound.formats import FORMATS, format_name
from faultbound.measure.engine import clean_pass, inject
from faultbound.measure.faultset import FaultSet, sample_faults
from faultbound.measure.graph_engine import GraphClean
from faultbound.measure.stats import (
    CampaignState,
    checkpoint_damaged,
    chunk_state,
    summarize,
    z_value,
)
from faultbound.measure.values import ValueMode
from faultbound.network.graph import GraphNetwork

__all__ = [
    "CampaignSpec",
    "CampaignMode",
    "CampaignDtype",
    "CampaignResult",
    "run_campaign",
    "campaign_inputs",
    "chunk_seed",
    "chunk_faults",
    "population",
    "leveugle_trials",
    "shard_chunks",
    "load_state",
    "merge_campaign_states",
    "result_from_state",
    "spec_from_dict",
    "inputs_fingerprint",
    "permuted_index",
]

Progress = Callable[[int, int], None]

CampaignMode = Literal["sampled", "exhaustive", "without-replacement"]
"""How a campaign draws its configurations (:attr:`CampaignSpec.mode`): independently at random
(``"sampled"``: exact failure counts or a Bernoulli rate), every one of the population
(``"exhaustive"``), or ``trials`` distinct ones (``"without-replacement"``, :func:`permuted_index`)."""

CampaignDtype = Literal["model", "float16", "bfloat16", "float32", "float64"]
"""The floating-point type a campaign evaluates in; ``"model"``: the network's own format."""


@dataclass(frozen=True)
class CampaignSpec:
    """What to inject.

    Attributes:
        fault: the fault model.
        trials: number of fault configurations T (with ``margin``: the most that may be run).
        failures: exact failing units per layer (the paper's :math:`f_l`), or
        rate: each unit fails independently with this probability (Bernoulli).
        seed: the seed of everything random.
        chunk: configurations per chunk (the checkpoint and shard granularity).
        values: how Byzantine / precision values are chosen (``"random"``, ``"adversarial"``, ``"fixed"``).
        dtype: ``"model"`` (default: the network's own format, ``net.dtype``), ``"float16"``,
            ``"bfloat16"``, ``"float32"`` or ``"float64"``; :meth:`resolved` names it before a run.
        input_batch: inputs evaluated at once (bounds memory).
        quantiles: reported quantiles of the output error.
        exhaustive: enumerate every failure set (``trials`` must be :func:`population`) instead of sampling.
        without_replacement: draw ``trials`` distinct failure sets (a keyed pseudo-random permutation
            of the enumeration, :func:`permuted_index`), as Leveugle's formula assumes; the rate
            intervals then carry the finite-population correction.
        threshold: an evaluation *fails* when its error exceeds this (default for classifiers: the
            prediction changes); the failure rate is what ``margin`` controls.
        margin: stop sequentially, after a chunk, once the failure-rate interval's half-width is <= this.
        confidence: the confidence level of every reported interval.
    """

    fault: Fault
    trials: int
    failures: tuple[int, ...] | None = None
    rate: float | None = None
    seed: int = 0
    chunk: int = 64
    values: ValueMode = "random"
    dtype: CampaignDtype = "model"
    input_batch: int = 1024
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)
    exhaustive: bool = False
    threshold: float | None = None
    margin: float | None = None
    confidence: float = 0.95
    without_replacement: bool = False

    def resolved(self, net: AnyNetwork) -> CampaignSpec:
        """This spec as it runs on ``net``: ``dtype="model"`` made the network's format, and a
        ``BitFlip(format="native")`` the bit flip of that format's word
        (:func:`~faultbound.faults.for_dtype`)."""
        name = format_name(net.dtype) if self.dtype == "model" else self.dtype
        if name not in FORMATS:
            return self  # refused by :meth:`check`
        return replace(self, dtype=cast(CampaignDtype, name), fault=for_dtype(self.fault, FORMATS[name]))

    def check(self, net: AnyNetwork) -> None:
        """Validate everything up front (fail at construction, never at chunk 10,000)."""
        if not isinstance(self.trials, int) or self.trials < 0:
            raise InvalidArgumentError(f"Expected `trials` >= 0, but got {self.trials}.")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise InvalidArgumentError(f"Expected a seed in 0..2**64-1, but got {self.seed}.")
        if self.chunk < 1 or self.input_batch < 1:
            raise InvalidArgumentError(
                f"Expected chunk and input_batch >= 1, but got {self.chunk}, {self.input_batch}."
            )
        if self.dtype not in get_args(CampaignDtype):
            raise InvalidArgumentError(
                f"Expected dtype among {', '.join(get_args(CampaignDtype))}, but got {self.dtype!r}."
            )
        if self.values not in get_args(ValueMode):
            raise InvalidArgumentError(
                f"Expected values among {', '.join(get_args(ValueMode))}, but got {self.values!r}."
            )
        if not 0.0 < self.confidence < 1.0:
            raise InvalidArgumentError(f"Expected a confidence in (0, 1), but got {self.confidence}.")
        if self.margin is not None and not 0.0 < self.margin < 0.5:
            raise InvalidArgumentError(f"Expected a margin in (0, 0.5), but got {self.margin}.")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise InvalidArgumentError(f"Expected a threshold >= 0, but got {self.threshold}.")
        if self.margin is not None and self.threshold is None and net.n_outputs < 2:
            raise InvalidArgumentError(
                "Expected a failure threshold with a margin on a single-output network (a failure is an error "
                "above the threshold; classifiers default to a changed prediction)."
            )
        if any(not 0.0 <= q <= 1.0 for q in self.quantiles):
            raise InvalidArgumentError(f"Expected quantiles in [0, 1], but got {self.quantiles}.")
        if not self.fault.counted:
            failure_counts(net, self.fault, None)  # the errors: one per hidden layer
            if self.exhaustive:
                raise InvalidArgumentError("Expected sampled (not exhaustive) precision campaigns: they have no sites.")
            return
        if (self.failures is None) == (self.rate is None):
            raise InvalidArgumentError("Expected exactly one of `failures` (counts per layer) or `rate`.")
        if self.rate is not None and not (0.0 <= self.rate <= 1.0):
            raise InvalidArgumentError(f"Expected `rate` in [0, 1], but got {self.rate}.")
        if self.failures is not None:
            failure_counts(net, self.fault, self.failures)
        if self.without_replacement:
            n = population(net, self.fault, failures=self.failures) if self.failures is not None else None
            if n is None or self.exhaustive or n > 2**62 or self.trials > n:
                raise InvalidArgumentError(
                    "Expected exact failure counts, a population of at most 2**62 and trials <= population "
                    "for sampling without replacement."
                )
        if self.exhaustive:
            if self.failures is None:
                raise InvalidArgumentError("Expected exact failure counts (not a rate) for an exhaustive campaign.")
            n = population(net, self.fault, failures=self.failures)
            if self.trials != n:
                raise InvalidArgumentError(f"Expected trials = the population ({n}) for an exhaustive campaign.")

    @property
    def mode(self) -> CampaignMode:
        """How the configurations are drawn (:data:`CampaignMode`)."""
        if self.exhaustive:
            return "exhaustive"
        return "without-replacement" if self.without_replacement else "sampled"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault.to_dict() | {"repr": repr(self.fault)} | self.fault.to_record(),
            "trials": self.trials,
            "failures": None if self.failures is None else list(self.failures),
            "rate": self.rate,
            "seed": self.seed,
            "chunk": self.chunk,
            "values": self.values,
            "dtype": self.dtype,
            "input_batch": self.input_batch,
            "quantiles": list(self.quantiles),
            "exhaustive": self.exhaustive,
            "threshold": self.threshold,
            "margin": self.margin,
            "confidence": self.confidence,
            "without_replacement": self.without_replacement,
        }


@dataclass(frozen=True)
class CampaignResult:
    """Summary of a campaign (see :func:`faultbound.measure.stats.summarize`) plus its settings."""

    summary: dict[str, Any]
    spec: CampaignSpec
    n_inputs: int
    chunks_done: int
    resumed_from: int = 0
    state: CampaignState = field(default_factory=CampaignState, repr=False)
    population: int | None = None
    stopped_early: bool = False
    fingerprint_inputs: str = ""
    chunks_run: int = 0

    @property
    def max_error(self) -> float:
        return float(self.summary["max_error"]) if self.summary["max_error"] is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary,
            "trials": self.spec.trials,
            "seed": self.spec.seed,
            "inputs": self.n_inputs,
            "population": self.population,
            "exhaustive": self.spec.exhaustive,
            "stopped_early": self.stopped_early,
            "spec": self.spec.to_dict(),
            "chunks": self.chunks_done,
            "resumed_from_chunk": self.resumed_from,
        }


def population(
    net: AnyNetwork, fault: Fault, failures: Sequence[int] | None = None, rate: float | None = None
) -> int | None:
    """The exact number of fault configurations the campaign draws from (module docstring); None
    for precision faults (no sites: every neuron is off by a random amount)."""
    if not fault.counted:
        return None
    fault = for_dtype(fault, net.dtype)
    bits = len(fault.flippable) or 1  # a failing unit's choices: 1, or the bits it may flip
    sizes = [n_units(net, fault, l) for l in range(1, layer_count(net, fault) + 1)]
    if failures is not None:
        failures = failure_counts(net, fault, failures)
        return math.prod(math.comb(n, int(f)) * bits ** int(f) for n, f in zip(sizes, failures, strict=True))
    return math.prod((1 + bits) ** n for n in sizes)


def leveugle_trials(pop: int | None, margin: float, confidence: float, p: float = 0.5) -> int:
    """Leveugle et al. (DATE 2009) sample size with the finite-population correction (module
    docstring), computed in exact rational arithmetic (the population may exceed any float);
    ``pop=None`` means an infinite population."""
    if not 0.0 < margin < 1.0 or not 0.0 < confidence < 1.0:
        raise InvalidArgumentError(f"Expected margin and confidence in (0, 1), but got {margin}, {confidence}.")
    t = Fraction(z_value(confidence))
    a = t * t * Fraction(p) * (1 - Fraction(p))
    e2 = Fraction(margin) ** 2
    if pop is None:
        return math.ceil(a / e2)
    n = Fraction(pop) * a / (a + e2 * (pop - 1))
    return min(pop, math.ceil(n))


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk``: a hash of ``(seed, chunk)``, independent across chunks."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, int(chunk)]).generate_state(1)[0])


def _unrank_combination(n: int, k: int, r: int) -> list[int]:
    """The ``r``-th ``k``-subset of ``range(n)`` in lexicographic order (``0 <= r < C(n, k)``)."""
    out: list[int] = []
    x = 0
    for i in range(k):
        while True:
            c = math.comb(n - x - 1, k - i - 1)
            if r < c:
                break
            r -= c
            x += 1
        out.append(x)
        x += 1
    return out


def permuted_index(j: int, n: int, key: int) -> int:
    """The image of ``j`` under a keyed pseudo-random permutation of ``range(n)`` (``n <= 2**62``):
    a 4-round Feistel network on ``2h`` bits (``4**h >= n``) with BLAKE2b round functions, with cycle
    walking back into ``range(n)``. A bijection by construction, computable for any ``j`` alone, so
    the chunks of a campaign without replacement stay independent."""
    if not 0 <= j < n:
        raise InvalidArgumentError(f"Expected an index in 0..{n - 1}, but got {j}.")
    h = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = (1 << h) - 1
    kb = int(key).to_bytes(16, "little", signed=False)
    x = j
    while True:
        left, right = x >> h, x & mask
        for r in range(4):
            digest = hashlib.blake2b(bytes([r]) + right.to_bytes(8, "little"), digest_size=8, key=kb).digest()
            f = int.from_bytes(digest, "little") & mask
            left, right = right, left ^ f
        x = (left << h) | right
        if x < n:
            return x


def _enumerate_faults(net: AnyNetwork, spec: CampaignSpec, start: int, count: int) -> FaultSet:
    """Configurations ``start .. start + count - 1`` of the full enumeration (or, without
    replacement, of its keyed permutation :func:`permuted_index`): a mixed-radix index
    over layers (layer 1 most significant), each layer's failure sets in lexicographic order, then
    (bit flips) the flipped bit of each failing unit, first unit most significant."""
    assert spec.failures is not None
    fault = spec.fault
    n_layers = layer_count(net, fault)
    choices = list(fault.flippable) or [0]
    nb = len(choices)
    sizes = [n_units(net, fault, l) for l in range(1, n_layers + 1)]
    radix = [math.comb(n, f) * nb**f for n, f in zip(sizes, spec.failures, strict=True)]
    sites: list[list[list[int]]] = [[] for _ in range(n_layers)]
    bits: list[list[list[int]]] = [[] for _ in range(n_layers)]
    total = math.prod(radix)
    for j in range(start, start + count):
        i = permuted_index(j, total, spec.seed) if spec.without_replacement else j
        digits = []
        for rdx in reversed(radix):
            i, d = divmod(i, rdx)
            digits.append(d)
        digits.reverse()
        for l, (d, n, f) in enumerate(zip(digits, sizes, spec.failures, strict=True)):
            set_rank, bit_rank = divmod(d, nb**f)
            sites[l].append(_unrank_combination(n, f, set_rank))
            bl = []
            for _ in range(f):
                bit_rank, j = divmod(bit_rank, nb)
                bl.append(choices[j])
            bits[l].append(bl[::-1])
    st = tuple(
        torch.tensor(sites[l], dtype=torch.long) if spec.failures[l] else None for l in range(n_layers)
    )
    if fault.flippable:
        bt = tuple(torch.tensor(bits[l], dtype=torch.long) if spec.failures[l] else None for l in range(n_layers))
        return FaultSet(count, st, bt)
    return FaultSet(count, st)


def chunk_faults(net: AnyNetwork, spec: CampaignSpec, chunk: int) -> FaultSet:
    """The fault configurations of chunk ``chunk`` (configurations ``chunk * spec.chunk`` onwards),
    regenerated from ``(spec.seed, chunk)`` alone (or enumerated): this is how any configuration of
    a campaign replays."""
    spec = spec.resolved(net)
    n_chunks = math.ceil(spec.trials / spec.chunk)
    if not 0 <= chunk < n_chunks:
        raise InvalidArgumentError(f"Expected a chunk in 0..{n_chunks - 1}, but got {chunk}.")
    n = min(spec.chunk, spec.trials - chunk * spec.chunk)
    if spec.mode != "sampled":
        return _enumerate_faults(net, spec, chunk * spec.chunk, n)
    g = torch.Generator().manual_seed(chunk_seed(spec.seed, chunk))
    failures = None if spec.failures is None else list(spec.failures)
    return sample_faults(net, spec.fault, n, failures=failures, rate=spec.rate, generator=g)


def shard_chunks(n_chunks: int, shard: tuple[int, int] = (0, 1)) -> range:
    """The chunks of shard ``i`` of ``n``: ``i, i + n, i + 2n, ...`` (round robin, so shards are
    balanced and a sequential stop is not needed to know them)."""
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
        raise InvalidArgumentError(f"Expected a shard I/N with 0 <= I < N, but got {i}/{n}.")
    return range(i, n_chunks, n)


def _fingerprint(net: AnyNetwork, x: Tensor, labels: Tensor | None, spec: CampaignSpec | None) -> str:
    """SHA-256 of the spec (if given), the network's parameters, the inputs and the labels."""
    h = hashlib.sha256()
    if spec is not None:
        h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    if isinstance(net, GraphNetwork):
        # a graph: its structure (names, operators, inputs) and every operator's tensors
        for node in net.nodes:
            h.update(f"{node.name}|{node.op.describe()}|{node.inputs}|{node.shape};".encode())
            for tensor in node.op.tensors():
                h.update(tensor.detach().double().contiguous().numpy().tobytes())
        h.update(repr(net.site_nodes).encode())
    else:
        for layer in net.layers:
            for op in layer.ops:
                for name in ("weight", "bias", "scale", "shift"):
                    t = getattr(op, name, None)
                    if isinstance(t, Tensor):
                        h.update(t.detach().double().contiguous().numpy().tobytes())
    h.update(x.detach().double().contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.detach().long().contiguous().numpy().tobytes())
    return h.hexdigest()


def inputs_fingerprint(net: AnyNetwork, inputs: Tensor, labels: Tensor | None = None) -> str:
    """SHA-256 of the network's parameters, the inputs and the labels (what a manifest must match)."""
    return _fingerprint(net, torch.as_tensor(inputs), labels, None)


# ----------------------------------------------------------------------------------- state files
def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _remove_stale_temporaries(path: Path) -> None:
    """Remove ``PATH.tmpPID`` files left by a process that was killed while writing (its PID is gone)."""
    for name in glob.glob(glob.escape(str(path)) + ".tmp*"):
        pid = name.rsplit(".tmp", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _discard(Path(name))
        except (PermissionError, OSError):
            pass


def load_state(path: str | Path) -> tuple[CampaignState, dict[str, Any]]:
    """Read a campaign state file (:meth:`CampaignState.load`: never unpickles, checks the digest,
    the format and every field) and check that it is consistent with the campaign it records; any
    damage or edit gives one :class:`InvalidArgumentError`.

    Returns:
        ``(state, meta)``.
    """
    st, meta = CampaignState.load(path)
    _check_state(path, st, meta)
    return st, meta


def _check_state(path: Path | str, st: CampaignState, meta: dict[str, Any]) -> None:
    """Consistency of a state with its meta: counts against configurations and inputs."""
    try:
        n_chunks, chunk, trials = int(meta["n_chunks"]), int(meta["spec"]["chunk"]), int(meta["spec"]["trials"])
        n_inputs, nxt = int(meta["n_inputs"]), int(meta["next_chunk"])
        shard = (int(meta["shard"][0]), int(meta["shard"][1]))
        own = shard_chunks(n_chunks, shard)
    except (KeyError, TypeError, ValueError, IndexError, InvalidArgumentError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise checkpoint_damaged(path, f"unreadable settings: {why}") from None
    if n_chunks != math.ceil(trials / chunk) or n_inputs < 1:
        raise checkpoint_damaged(path, "inconsistent chunk count")
    if not 0 <= nxt <= len(own):
        raise checkpoint_damaged(path, f"next chunk {nxt} outside 0..{len(own)}")
    configs = sum(min(chunk, trials - c * chunk) for c in own[:nxt])
    n = st.evaluations
    if st.configurations != configs or n != configs * n_inputs:
        raise checkpoint_damaged(
            path, f"{st.configurations} configurations and {n} evaluations recorded, {configs} expected"
        )
    fin = n - st.nan_count - st.inf_count
    if fin < 0 or sum(st.sketch.values()) + st.sketch_zero != fin:
        raise checkpoint_damaged(path, "the quantile sketch does not count every evaluation")
    if int(st.histogram.sum()) != n - st.nan_count:
        raise checkpoint_damaged(path, "the histogram does not count every evaluation")
    for k, kk in (("changed", "changed_sq"), ("correct", "correct_sq"), ("failed", "failed_sq")):
        s1, s2 = getattr(st, k), getattr(st, kk)
        if s1 > n or s2 > s1 * n_inputs or (configs and s1 * s1 > s2 * configs):
            raise checkpoint_damaged(path, f"impossible {k} counts")
    if st.labeled not in (0, n) or not (st.correct <= st.labeled):
        raise checkpoint_damaged(path, "impossible label counts")
    w = st.worst
    if (w is None) != (n == 0) or (w is not None and not (isinstance(w, dict) and "error" in w)):
        raise checkpoint_damaged(path, "worst case missing")
    if w is not None:
        try:
            cfg = int(w["configuration"])
            ok = cfg // chunk in own[:nxt] and 0 <= int(w["input_index"]) < n_inputs
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise checkpoint_damaged(path, "worst case outside the campaign")
    if st.error_sum_exact < 0 or (fin and math.isnan(st.error_max)):
        raise checkpoint_damaged(path, "impossible error sums")


def campaign_inputs(
    net: AnyNetwork,
    data: str | Path | None = None,
    digits: bool = False,
    samples: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """Inputs (float64, ``(n, *input_shape)``) and integer labels (or None) for a campaign: from a
    data file (.npz with ``X``/``y``, .npy, .csv), scikit-learn's digits, or ``samples`` points drawn
    uniformly from the network's domain (seeded)."""
    chosen = sum([data is not None, bool(digits), samples is not None])
    if chosen != 1:
        raise InvalidArgumentError("Expected exactly one input source: a data file, digits, or a number of samples.")
    y: np.ndarray | None
    if data is not None:
        from faultbound.data import load_arrays

        x_np, y = load_arrays(str(data))
        source = str(data)
    elif digits:
        from faultbound.data import digits as load_digits

        ds = load_digits()
        x_np, y = ds.X, ds.y
        source = "the digits"
    else:
        assert samples is not None
        if samples < 1:
            raise InvalidArgumentError(f"Expected --samples >= 1, but got {samples}.")
        g = torch.Generator().manual_seed(int(seed))
        return net.domain.sample(int(samples), generator=g), None
    if x_np.ndim < 2:
        raise InvalidArgumentError(f"Expected rows of inputs in {source}, but got shape {x_np.shape}.")
    x = net.as_inputs(x_np)
    labels = None
    if y is not None and len(y) != len(x):
        raise InvalidArgumentError(f"Expected one label per input in {source}, but got {len(y)} for {len(x)} inputs.")
    if y is not None and y.ndim == 1 and net.n_outputs > 1:
        from faultbound.data import check_labels

        labels = torch.as_tensor(check_labels(y, net.n_outputs, source))
    return x, labels


@dataclass
class _Prepared:
    """Everything a chunk needs, computed once per process: the clean passes and their outputs."""

    net: AnyNetwork
    x: Tensor
    labels: Tensor | None
    spec: CampaignSpec
    dtype: torch.dtype
    cleans: list[GraphClean]
    clean_out: Tensor
    fingerprint: str
    fingerprint_inputs: str


def _prepare(net: AnyNetwork, inputs: Tensor, spec: CampaignSpec, labels: Tensor | None) -> _Prepared:
    spec.check(net)
    x = torch.as_tensor(inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidArgumentError("Expected at least one input.")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != x.shape[0]):
        raise InvalidArgumentError(f"Expected one label per input ({x.shape[0]}), but got {tuple(labels.shape)}.")
    dtype = FORMATS[spec.dtype]
    cleans = [clean_pass(net, x[i : i + spec.input_batch], dtype) for i in range(0, x.shape[0], spec.input_batch)]
    clean_out = torch.cat([cp.output for cp in cleans])
    return _Prepared(
        net, x, labels, spec, dtype, cleans, clean_out, _fingerprint(net, x, labels, spec),
        _fingerprint(net, x, labels, None),
    )


def _failure(net: AnyNetwork, spec: CampaignSpec) -> str | None:
    if spec.threshold is not None:
        return f"error > {spec.threshold:g}"
    return "changed prediction" if net.n_outputs > 1 else None


def _chunk(p: _Prepared, c: int) -> CampaignState:
    """The state of chunk ``c``: inject its configurations on every input batch."""
    spec, net = p.spec, p.net
    fs = chunk_faults(net, spec, c)
    errs, outs = [], []
    vals_per_batch = []
    per_input = isinstance(spec.fault, Precision) or spec.values == "adversarial"
    for bi, cp in enumerate(p.cleans):
        # values per configuration are the same for every input batch; per-input ones are not
        gv = torch.Generator().manual_seed(chunk_seed(spec.seed, c) + 1 + (bi if per_input else 0))
        inj = inject(net, cp, spec.fault, fs, values=spec.values, generator=gv, dtype=p.dtype)
        errs.append(inj.errors)
        outs.append(inj.outputs)
        vals_per_batch.append(inj.values)
    errors = torch.cat(errs, 1)
    outputs = torch.cat(outs, 1)
    worst = None
    if errors.numel():
        flat = int(torch.argmax(torch.nan_to_num(errors, nan=math.inf)))
        t, b = divmod(flat, errors.shape[1])
        bi, bb = divmod(b, spec.input_batch)
        vals = {
            str(i + 1): v[t, 0 if v.shape[1] == 1 else bb].tolist()
            for i, v in enumerate(vals_per_batch[bi])
            if v is not None and not isinstance(spec.fault, Precision)
        }
        worst = {
            "error": float(errors[t, b]),
            "chunk": c,
            "configuration": c * spec.chunk + t,
            "input_index": b,
            "input": p.x[b].reshape(-1).double().tolist(),
            "faults": fs.config(t),
            "values": vals,
            "output": outputs[t, b].double().tolist(),
            "clean_output": p.clean_out[b].double().tolist(),
        }
    return chunk_state(errors, outputs, p.clean_out, p.labels, worst, spec.threshold)


def _stop(state: CampaignState, spec: CampaignSpec, failure: str | None, pop: int | None = None) -> bool:
    """Sequential stop: the failure-rate interval's half-width is at most the margin."""
    if spec.margin is None or state.configurations < 2:
        return False
    s = summarize(state, (), False, spec.confidence, failure, population=pop)
    return bool(s["margin_achieved"] <= spec.margin)


def _meta(
    p: _Prepared, n_chunks: int, shard: tuple[int, int], nxt: int, stopped: bool, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "extra": extra or {},
        "fingerprint_inputs": p.fingerprint_inputs,
        "fingerprint": p.fingerprint,
        "next_chunk": nxt,
        "n_chunks": n_chunks,
        "shard": list(shard),
        "n_inputs": int(p.x.shape[0]),
        "n_outputs": int(p.net.n_outputs),
        "labeled": p.labels is not None,
        "stopped": stopped,
        "spec": p.spec.to_dict(),
        "population": _pop_str(p.net, p.spec),
        "failure": _failure(p.net, p.spec),
        "clean_accuracy": _clean_accuracy(p),
    }


def _pop_str(net: AnyNetwork, spec: CampaignSpec) -> str | None:
    n = population(net, spec.fault, failures=spec.failures, rate=spec.rate)
    return None if n is None else str(n)


def _clean_accuracy(p: _Prepared) -> float | None:
    if p.labels is None:
        return None
    return float((p.clean_out.argmax(-1) == p.labels).double().mean())


def result_from_state(
    state: CampaignState, meta: dict[str, Any], spec: CampaignSpec, chunks_done: int, resumed_from: int = 0
) -> CampaignResult:
    """The :class:`CampaignResult` of a (merged) state and the meta its file or run recorded."""
    pop = meta.get("population")
    fpc = int(pop) if spec.without_replacement and pop is not None else None
    summary = summarize(
        state, spec.quantiles, int(meta["n_outputs"]) > 1, spec.confidence, meta.get("failure"), population=fpc
    )
    if meta.get("clean_accuracy") is not None:
        summary["clean_accuracy"] = float(meta["clean_accuracy"])
    return CampaignResult(
        summary, spec, int(meta["n_inputs"]), chunks_done, resumed_from, state,
        None if pop is None else int(pop), bool(meta.get("stopped", False)), str(meta.get("fingerprint_inputs", "")),
        int(meta.get("next_chunk", 0)),
    )


def run_campaign(
    net: AnyNetwork,
    inputs: Tensor,
    spec: CampaignSpec,
    *,
    labels: Tensor | None = None,
    checkpoint: str | Path | None = None,
    progress: Progress | None = None,
    shard: tuple[int, int] = (0, 1),
    checkpoint_seconds: float = 1.0,
    extra: dict[str, Any] | None = None,
) -> CampaignResult:
    """Run (or resume) a campaign, or one shard of it.

    Args:
        net: the network.
        inputs: ``(n, *input_shape)``.
        spec: what to inject (validated before anything runs).
        labels: integer class labels ``(n,)`` for the faulty accuracy (classifiers only).
        checkpoint: a file to write the state to (at most every ``checkpoint_seconds``, and at the
            end); if it exists and was written by the same campaign and shard, the run resumes from it.
        progress: called as ``progress(configurations_done, trials)`` after each chunk.
        shard: ``(i, n)``: run only the chunks ``i, i + n, ...`` (see :func:`merge_campaign_states`).
        checkpoint_seconds: the longest time between two checkpoint writes.
        extra: JSON-ready facts to record in the state file (the CLI keeps the model path there).

    Returns:
        A :class:`CampaignResult`; identical whether or not the run was interrupted and resumed.

    Example:
        >>> import torch, faultbound as fb
        >>> from faultbound.measure import CampaignSpec, run_campaign
        >>> torch.manual_seed(0) and None
        >>> net = fb.Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(),
        ...                                                 torch.nn.Linear(4, 1)))
        >>> res = run_campaign(net, net.domain.sample(8), CampaignSpec(fb.Crash(), trials=10, failures=(1,)))
        >>> res.summary["evaluations"]
        80
    """
    spec = spec.resolved(net)
    p = _prepare(net, inputs, spec, labels)
    if spec.margin is not None and shard != (0, 1):
        raise InvalidArgumentError("Expected no sequential margin stop in a shard (shards run a fixed 1/N).")
    n_chunks = math.ceil(spec.trials / spec.chunk)
    own = shard_chunks(n_chunks, shard)
    failure = _failure(net, spec)
    fpc = population(net, spec.fault, failures=spec.failures) if spec.without_replacement else None
    state = CampaignState()
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None:
        _remove_stale_temporaries(path)
        if path.exists():
            state, meta = load_state(path)
            if meta.get("fingerprint") != p.fingerprint:
                raise InvalidArgumentError(
                    f"Checkpoint {path} was written by a different campaign (network, inputs or settings differ)."
                )
            if tuple(meta["shard"]) != tuple(shard):
                raise InvalidArgumentError(
                    f"Checkpoint {path} holds shard {meta['shard'][0]}/{meta['shard'][1]}, not {shard[0]}/{shard[1]}."
                )
            start = int(meta["next_chunk"])
        else:
            state.save(path, _meta(p, n_chunks, shard, 0, False, extra))  # fail now if the file cannot be written
    resumed_from = own[start] if start < len(own) else n_chunks
    stopped = False
    last = time.monotonic()
    done = start
    for k in range(start, len(own)):
        if _stop(state, spec, failure, fpc):
            stopped = True
            break
        state = state.merge(_chunk(p, own[k]))
        done = k + 1
        if path is not None and (time.monotonic() - last >= checkpoint_seconds or done == len(own)):
            state.save(path, _meta(p, n_chunks, shard, done, False, extra))
            last = time.monotonic()
        if progress is not None:
            progress(min(spec.trials, state.configurations), spec.trials)
    else:
        stopped = _stop(state, spec, failure, fpc) and done < len(own)
    if path is not None:
        state.save(path, _meta(p, n_chunks, shard, done, stopped, extra))
    meta = _meta(p, n_chunks, shard, done, stopped, extra)
    return result_from_state(state, meta, spec, done if shard == (0, 1) else n_chunks, resumed_from)


def spec_from_dict(d: dict[str, Any]) -> CampaignSpec:
    """The :class:`CampaignSpec` that :meth:`CampaignSpec.to_dict` described (manifests, state files)."""
    try:
        return CampaignSpec(
            fault_from_record(d["fault"]),
            int(d["trials"]),
            failures=None if d["failures"] is None else tuple(int(v) for v in d["failures"]),
            rate=None if d["rate"] is None else float(d["rate"]),
            seed=int(d["seed"]),
            chunk=int(d["chunk"]),
            values=d["values"],
            dtype=d["dtype"],
            input_batch=int(d["input_batch"]),
            quantiles=tuple(float(q) for q in d["quantiles"]),
            exhaustive=bool(d["exhaustive"]),
            threshold=None if d["threshold"] is None else float(d["threshold"]),
            margin=None if d["margin"] is None else float(d["margin"]),
            confidence=float(d["confidence"]),
            without_replacement=bool(d.get("without_replacement", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidArgumentError(f"Expected a campaign spec, but a field is missing or wrong: {e}.") from None


def merge_campaign_states(paths: Sequence[str | Path]) -> CampaignResult:
    """Merge the state files of the shards ``0/N .. N-1/N`` of one campaign (each complete) into
    the result the unsharded run gives: the merge is exact and order-independent (:mod:`.stats`)."""
    if not paths:
        raise InvalidArgumentError("Expected at least one state file.")
    loaded = [load_state(p) for p in paths]
    first = loaded[0][1]
    n = int(first["shard"][1])
    seen: dict[int, Path | str] = {}
    for path, (_st, meta) in zip(paths, loaded, strict=True):
        if meta["fingerprint"] != first["fingerprint"]:
            raise InvalidArgumentError(f"State file {path} belongs to a different campaign than {paths[0]}.")
        i, ni = int(meta["shard"][0]), int(meta["shard"][1])
        if ni != n:
            raise InvalidArgumentError(f"State file {path} is shard {i}/{ni}, but {paths[0]} is from a {n}-way split.")
        if i in seen:
            raise InvalidArgumentError(f"Shard {i}/{n} given twice: {seen[i]} and {path}.")
        if int(meta["next_chunk"]) != len(shard_chunks(int(meta["n_chunks"]), (i, n))):
            raise InvalidArgumentError(f"State file {path} (shard {i}/{n}) is not finished; run it again to resume.")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise InvalidArgumentError(f"Expected every shard of {n}, but shards {missing} are missing.")
    state = CampaignState()
    for st, _meta_i in loaded:
        state = state.merge(st)
    spec = spec_from_dict(first["spec"])
    meta = dict(first, shard=[0, 1], stopped=False)
    return result_from_state(state, meta, spec, int(first["n_chunks"]))
