"""Fault-injection campaigns: many sampled fault configurations on a set of inputs, with
mergeable statistics and a checkpoint that survives ``kill -9``.

A campaign of ``trials`` configurations is cut into chunks of ``chunk`` configurations. Chunk c draws
its fault sets and values from a generator seeded by ``(seed, c)`` only, so chunks are independent:
whichever chunks were done before an interruption, resuming finishes with exactly the result of an
uninterrupted run. After every chunk the merged state is written to the checkpoint file atomically
(temporary file + ``os.replace``).

Every configuration is evaluated on every input; the figure of a configuration t on input b is
:math:`e_{t,b} = \\|F'_t(x_b) - F(x_b)\\|_\\infty`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault, Precision
from faultbound.measure.engine import FaultSet, ValueMode, clean_pass, inject, layer_count, sample_faults
from faultbound.measure.stats import chunk_state, empty_state, merge_states, summarize
from faultbound.network.core import Network

__all__ = ["CampaignSpec", "CampaignResult", "run_campaign", "campaign_inputs", "chunk_seed", "chunk_faults"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CampaignSpec:
    """What to inject.

    Attributes:
        fault: the fault model.
        trials: number of fault configurations T.
        failures: exact failing units per layer (the paper's :math:`f_l`), or
        rate: each unit fails independently with this probability (Bernoulli).
        seed: the seed of everything random.
        chunk: configurations per chunk (the checkpoint granularity).
        values: how Byzantine / precision values are chosen (``"random"``, ``"adversarial"``, ``"fixed"``).
        dtype: ``"float32"`` (default) or ``"float64"``.
        input_batch: inputs evaluated at once (bounds memory).
        quantiles: reported quantiles of the output error.
    """

    fault: Fault
    trials: int
    failures: tuple[int, ...] | None = None
    rate: float | None = None
    seed: int = 0
    chunk: int = 64
    values: ValueMode = "random"
    dtype: Literal["float32", "float64"] = "float32"
    input_batch: int = 1024
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)

    def check(self, net: Network) -> None:
        """Validate everything up front (fail at construction, never at chunk 10,000)."""
        if not isinstance(self.trials, int) or self.trials < 0:
            raise InvalidArgumentError(f"Expected `trials` >= 0, but got {self.trials}.")
        if self.chunk < 1 or self.input_batch < 1:
            raise InvalidArgumentError(
                f"Expected chunk and input_batch >= 1, but got {self.chunk}, {self.input_batch}."
            )
        if self.dtype not in ("float32", "float64"):
            raise InvalidArgumentError(f"Expected dtype float32 or float64, but got {self.dtype!r}.")
        if self.values not in ("fixed", "random", "adversarial"):
            raise InvalidArgumentError(f"Expected values among fixed, random, adversarial, but got {self.values!r}.")
        if isinstance(self.fault, Precision):
            if len(self.fault.errors) != net.L:
                raise InvalidArgumentError(
                    f"Expected precision errors for each hidden layer ({net.L}), but got {len(self.fault.errors)}."
                )
            return
        if (self.failures is None) == (self.rate is None):
            raise InvalidArgumentError("Expected exactly one of `failures` (counts per layer) or `rate`.")
        if self.rate is not None and not (0.0 <= self.rate <= 1.0):
            raise InvalidArgumentError(f"Expected `rate` in [0, 1], but got {self.rate}.")
        if self.failures is not None:
            want = layer_count(net, self.fault)
            if len(self.failures) != want:
                raise InvalidArgumentError(
                    f"Expected `failures` to have one count per layer ({want}), but got {len(self.failures)}."
                )
            sample_faults(net, self.fault, 0, failures=list(self.failures))  # validates the counts

    def to_dict(self) -> dict[str, Any]:
        from faultbound.bounds.api import fault_dict

        return {
            "fault": fault_dict(self.fault) | {"repr": repr(self.fault)},
            "trials": self.trials,
            "failures": None if self.failures is None else list(self.failures),
            "rate": self.rate,
            "seed": self.seed,
            "chunk": self.chunk,
            "values": self.values,
            "dtype": self.dtype,
            "input_batch": self.input_batch,
        }


@dataclass(frozen=True)
class CampaignResult:
    """Summary of a campaign (see :func:`faultbound.measure.stats.summarize`) plus its settings."""

    summary: dict[str, Any]
    spec: CampaignSpec
    n_inputs: int
    chunks_done: int
    resumed_from: int = 0
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def max_error(self) -> float:
        return float(self.summary["max_error"]) if self.summary["max_error"] is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary,
            "trials": self.spec.trials,
            "seed": self.spec.seed,
            "inputs": self.n_inputs,
            "spec": self.spec.to_dict(),
            "chunks": self.chunks_done,
            "resumed_from_chunk": self.resumed_from,
        }


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk``: a hash of ``(seed, chunk)``, independent across chunks."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, int(chunk)]).generate_state(1)[0])


def chunk_faults(net: Network, spec: CampaignSpec, chunk: int) -> FaultSet:
    """The fault configurations of chunk ``chunk`` (configurations ``chunk * spec.chunk`` onwards),
    regenerated from ``(spec.seed, chunk)`` alone: this is how any configuration of a campaign replays."""
    n_chunks = math.ceil(spec.trials / spec.chunk)
    if not 0 <= chunk < n_chunks:
        raise InvalidArgumentError(f"Expected a chunk in 0..{n_chunks - 1}, but got {chunk}.")
    g = torch.Generator().manual_seed(chunk_seed(spec.seed, chunk))
    n = min(spec.chunk, spec.trials - chunk * spec.chunk)
    failures = None if spec.failures is None else list(spec.failures)
    return sample_faults(net, spec.fault, n, failures=failures, rate=spec.rate, generator=g)


def _fingerprint(net: Network, x: Tensor, labels: Tensor | None, spec: CampaignSpec) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
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


def _save(path: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    payload = {
        "meta": np.array(json.dumps(meta)),
        "worst": np.array(json.dumps(state["worst"])),
        "errors": state["errors"],
        "ints": np.array([state["evaluations"], state["changed"], state["correct"], state["labeled"]], dtype=np.int64),
        "floats": np.array([state["error_sum"], state["error_max"]], dtype=np.float64),
    }
    with open(tmp, "wb") as fh:
        np.savez(fh, **payload)  # type: ignore[arg-type]
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            st = empty_state()
            st["worst"] = json.loads(str(z["worst"]))
            st["errors"] = np.asarray(z["errors"], dtype=np.float32)
            ints, floats = z["ints"], z["floats"]
    except (OSError, ValueError, KeyError) as e:
        raise InvalidArgumentError(f"Cannot read checkpoint {path}: {str(e).splitlines()[0]}") from None
    st["evaluations"], st["changed"], st["correct"], st["labeled"] = (int(v) for v in ints)
    st["error_sum"], st["error_max"] = float(floats[0]), float(floats[1])
    return st, meta


def campaign_inputs(
    net: Network,
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
    d = math.prod(net.input_shape)
    if x_np.ndim < 2 or x_np[0].size != d:
        raise InvalidArgumentError(
            f"Expected inputs with {d} features (input shape {tuple(net.input_shape)}), but got shape {x_np.shape}."
        )
    x = torch.as_tensor(x_np, dtype=torch.float64).reshape(-1, *net.input_shape)
    labels = None
    if y is not None and len(y) != len(x):
        raise InvalidArgumentError(f"Expected one label per input in {source}, but got {len(y)} for {len(x)} inputs.")
    if y is not None and y.ndim == 1 and net.n_outputs > 1:
        from faultbound.data import check_labels

        labels = torch.as_tensor(check_labels(y, net.n_outputs, source))
    return x, labels


def run_campaign(
    net: Network,
    inputs: Tensor,
    spec: CampaignSpec,
    *,
    labels: Tensor | None = None,
    checkpoint: str | Path | None = None,
    progress: Progress | None = None,
) -> CampaignResult:
    """Run (or resume) a campaign.

    Args:
        net: the network.
        inputs: ``(n, *input_shape)``.
        spec: what to inject (validated before anything runs).
        labels: integer class labels ``(n,)`` for the faulty accuracy (classifiers only).
        checkpoint: a file to write progress to after each chunk; if it exists and was written by the
            same campaign (same network, inputs and spec), the run resumes from it.
        progress: called as ``progress(configurations_done, trials)`` after each chunk.

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
    spec.check(net)
    x = torch.as_tensor(inputs)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InvalidArgumentError("Expected at least one input.")
    if labels is not None and (labels.ndim != 1 or labels.shape[0] != x.shape[0]):
        raise InvalidArgumentError(f"Expected one label per input ({x.shape[0]}), but got {tuple(labels.shape)}.")
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    cleans = [clean_pass(net, x[i : i + spec.input_batch], dtype) for i in range(0, x.shape[0], spec.input_batch)]
    clean_out = torch.cat([cp.output for cp in cleans])
    n_chunks = math.ceil(spec.trials / spec.chunk)
    fp = _fingerprint(net, x, labels, spec)
    state = empty_state()
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        state, meta = _load(path)
        if meta.get("fingerprint") != fp:
            raise InvalidArgumentError(
                f"Checkpoint {path} was written by a different campaign (network, inputs or settings differ)."
            )
        start = int(meta["next_chunk"])
    resumed_from = start
    classifier = net.n_outputs > 1
    for c in range(start, n_chunks):
        fs = chunk_faults(net, spec, c)
        errs, outs = [], []
        vals_per_batch = []
        per_input = isinstance(spec.fault, Precision) or spec.values == "adversarial"
        for bi, cp in enumerate(cleans):
            # values per configuration are the same for every input batch; per-input ones are not
            gv = torch.Generator().manual_seed(chunk_seed(spec.seed, c) + 1 + (bi if per_input else 0))
            inj = inject(net, cp, spec.fault, fs, values=spec.values, generator=gv, dtype=dtype)
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
                "input": x[b].reshape(-1).double().tolist(),
                "faults": fs.config(t),
                "values": vals,
                "output": outputs[t, b].double().tolist(),
                "clean_output": clean_out[b].double().tolist(),
            }
        st = chunk_state(errors, outputs, clean_out, labels, worst)
        state = merge_states(state, st)
        if path is not None:
            _save(path, state, {"fingerprint": fp, "next_chunk": c + 1, "spec": spec.to_dict()})
        if progress is not None:
            progress(min(spec.trials, (c + 1) * spec.chunk), spec.trials)
    summary = summarize(state, spec.quantiles, classifier)
    if labels is not None:
        clean_pred = clean_out.argmax(-1)
        summary["clean_accuracy"] = float((clean_pred == labels).double().mean())
    return CampaignResult(summary, spec, int(x.shape[0]), n_chunks, resumed_from, state)
