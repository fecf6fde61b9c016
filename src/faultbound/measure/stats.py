"""Campaign statistics as constant-size, mergeable state.

A state is a :class:`CampaignState`, whose size does not depend on the number of trials. Every field
declares beside it how two states merge (``field(metadata={"merge": ...})``, the way torchmetrics
declares ``add_state(..., dist_reduce_fx=...)``); :meth:`CampaignState.merge`,
:meth:`CampaignState.save` and :meth:`CampaignState.load` are derived from these declarations, so a
new field with a declared merge is merged, saved and loaded with no other code. The merges
(:data:`MERGE_RULES`):

* ``"sum"`` -- integer counts, and the exact sum of the errors (an integer, see :func:`exact_sum`);
* ``"max"`` -- the largest non-NaN error;
* ``"sum_by_key"`` -- the quantile sketch: ``{bin key: count}``, counts added bin by bin;
* ``"sum_array"`` -- the fixed-bin histogram, counts added bin by bin;
* ``"argmax"`` -- a payload (the worst configuration and input) taken from the state whose
  :func:`worst_key` is larger.

Every reduction is exact integer arithmetic or a max with a total order, so merging is associative
**and commutative**: a campaign cut into chunks, resumed after ``kill -9``, split into shards or
spread over Ray workers gives bit-for-bit the state of one uninterrupted run, in any merge order.

**Quantiles** come from a DDSketch (Masson, Rim & Lee, VLDB 2019; DataDog's ``ddsketch`` package
defines the bin mapping and answers the queries) with relative accuracy :data:`RELATIVE_ACCURACY`
:math:`\\alpha = 0.01`: bin :math:`k` holds the errors in :math:`(\\gamma^{k-1}, \\gamma^k]`,
:math:`\\gamma = (1+\\alpha)/(1-\\alpha)`, and a reported quantile :math:`\\tilde x_q` satisfies
:math:`|\\tilde x_q - x_q| \\le \\alpha x_q` for the exact order statistic :math:`x_q` of rank
:math:`\\lfloor q(n-1) \\rfloor`. DDSketch rather than KLL/REQ or a t-digest because (i) its
merge is bin-wise addition of counts, deterministic and order-independent, while KLL/REQ compactors
and t-digest centroids depend on insertion and merge order (randomly for KLL/REQ), which would break
"sharded = resumed = uninterrupted, bit for bit"; (ii) output errors span many orders of magnitude
(a crashed neuron with a tiny weight next to a bit flip in an exponent), where a relative guarantee
is the meaningful one and a rank guarantee is not; (iii) its size is bounded by the range of the
values, not their number: at most about 115 bins per decade, at most ~10^4 bins over all of float32.

**Intervals over the right unit.** In a campaign the fault configurations are the sampled unit and
the inputs are fixed, so the B evaluations of one configuration are not independent. For a rate
(changed predictions, accuracy, failures) the state keeps, per configuration :math:`t`, the count
:math:`k_t` of its B inputs that hit, as :math:`S_1 = \\sum_t k_t` and :math:`S_2 = \\sum_t k_t^2`.
With :math:`r_t = k_t/B`, :math:`\\hat p = S_1/(TB)` and the between-configuration variance
:math:`s^2 = (S_2 - S_1^2/T) / (B^2 (T-1))`, the variance of :math:`\\hat p` is estimated by
:math:`s^2/T` and the reported interval is the Wilson interval of :math:`\\hat p` with the Kish
effective sample size :math:`n_{\\mathrm{eff}} = \\hat p(1-\\hat p)\\,T/s^2`, clipped to
:math:`[T, TB]`. The lower clip is justified: for :math:`r_t \\in [0,1]`,
:math:`\\mathrm{Var}(r_t) \\le p(1-p)`, so the configurations carry at least as much information as
T Bernoulli trials; the upper clip is B independent inputs per configuration. The JSON says
``"interval": "wilson-design-effect-over-configurations"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import hashlib
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from statistics import NormalDist
from typing import Any, ClassVar, Literal, TypeVar, get_args

import numpy as np
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping
from torch import Tensor

from faultbound.errors import InvalidArgumentError

__all__ = [
    "CampaignState",
    "Merge",
    "Codec",
    "MERGE_RULES",
    "FORMAT",
    "state_field",
    "checkpoint_damaged",
    "RELATIVE_ACCURACY",
    "HIST_EDGES",
    "INTERVAL_METHOD",
    "chunk_state",
    "summarize",
    "wilson",
    "cluster_interval",
    "exact_sum",
    "sketch_keys",
    "worst_key",
    "histogram",
    "z_value",
]

RELATIVE_ACCURACY = 0.01
"""The DDSketch relative accuracy :math:`\\alpha` of the reported quantiles."""

_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_MULT = 1.0 / math.log(_MAPPING.gamma)

def _decade_edges() -> list[float]:
    """:math:`10^{k/10}`, k = -120..60, correctly rounded (decimal arithmetic: the same on every machine)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        return [float(decimal.Decimal(10) ** (decimal.Decimal(k) / 10)) for k in range(-120, 61)]


HIST_EDGES: np.ndarray = np.array([0.0, *_decade_edges(), math.inf])
"""Fixed histogram edges: ``[0, 1e-12)``, then ten log-spaced bins per decade up to ``1e6``, then
``[1e6, inf]``. Fixed in advance, so histograms merge by adding counts."""

INTERVAL_METHOD = "wilson-design-effect-over-configurations"

_EXACT_SHIFT = 1127
"""Errors are summed exactly as integers in units of :math:`2^{-1127}` (every finite float64 is an
integer multiple of :math:`2^{-1074}`; the extra 53 bits come from the mantissa scaling)."""

FORMAT = "faultbound-campaign-state/2"
"""The format of a state file (:meth:`CampaignState.save`); a file of another format is refused
with a message naming both."""

Merge = Literal["sum", "max", "sum_by_key", "sum_array", "argmax"]
"""How a field of two states merges (module docstring)."""

Codec = Literal["int", "hex", "float", "json", "sparse", "array"]
"""How a field is stored in a state file: in the JSON ``meta["state"]`` as a non-negative integer
(``"int"``), a hexadecimal string of one (``"hex"``, for integers beyond JSON's doubles), a float's
``repr`` (``"float"``) or as it is (``"json"``); or as int64 arrays of the ``.npz``: ``NAME_keys`` and
``NAME_counts`` for a ``{key: count}`` dict (``"sparse"``), ``NAME`` for a count array (``"array"``)."""

DEFAULT_CODECS: dict[str, Codec] = {
    "sum": "int", "max": "float", "sum_by_key": "sparse", "sum_array": "array", "argmax": "json",
}
"""The codec of a field that declares only its merge."""


def worst_key(payload: dict[str, Any] | None) -> tuple[float, float, int, int]:
    """Total order of worst-case payloads: NaN errors first, then the larger error, then the smaller
    configuration index, then the smaller input index (so every merge order picks the same one)."""
    if payload is None:
        return (-1.0, -math.inf, 0, 0)
    e = float(payload["error"])
    return (1.0 if math.isnan(e) else 0.0, -math.inf if math.isnan(e) else e,
            -int(payload["configuration"]), -int(payload["input_index"]))


def _merge_sum(a: Any, b: Any, _f: dataclasses.Field[Any]) -> Any:
    return a + b


def _merge_max(a: Any, b: Any, _f: dataclasses.Field[Any]) -> Any:
    return max(a, b)


def _merge_sum_by_key(a: Mapping[Any, int], b: Mapping[Any, int], _f: dataclasses.Field[Any]) -> dict[Any, int]:
    d = dict(a)
    for k, c in b.items():
        d[k] = d.get(k, 0) + c
    return dict(sorted(d.items()))


def _merge_argmax(a: Any, b: Any, f: dataclasses.Field[Any]) -> Any:
    order = f.metadata["order"]
    return b if order(b) > order(a) else a


MERGE_RULES: dict[str, Callable[[Any, Any, dataclasses.Field[Any]], Any]] = {
    "sum": _merge_sum,
    "max": _merge_max,
    "sum_by_key": _merge_sum_by_key,
    "sum_array": _merge_sum,
    "argmax": _merge_argmax,
}
"""``rule(a, b, field) -> merged`` for each :data:`Merge` (``"argmax"`` reads the field's
``metadata["order"]``, a key function)."""


def state_field(
    merge: Merge,
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    codec: Codec | None = None,
    order: Callable[[Any], Any] | None = None,
) -> Any:
    """A :class:`CampaignState` field with its merge declared beside it (``order``: the key of an
    ``"argmax"``; ``codec``: how it is saved, by default :data:`DEFAULT_CODECS` of its merge)."""
    meta: dict[str, Any] = {"merge": merge}
    if codec is not None:
        meta["codec"] = codec
    if order is not None:
        meta["order"] = order
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _empty_histogram() -> np.ndarray:
    return np.zeros(len(HIST_EDGES) - 1, dtype=np.int64)


def checkpoint_damaged(path: Path | str, why: str) -> InvalidArgumentError:
    """The one error for a state file that is readable but inconsistent."""
    return InvalidArgumentError(f"Checkpoint {path} is damaged or was edited ({why}); delete it to start again.")


_DECLARED: dict[type, tuple[tuple[dataclasses.Field[Any], Merge, Codec], ...]] = {}


def _declared(cls: type) -> tuple[tuple[dataclasses.Field[Any], Merge, Codec], ...]:
    """Every field of ``cls`` with its declared merge and codec (checked once per class)."""
    if cls in _DECLARED:
        return _DECLARED[cls]
    out = []
    for f in dataclasses.fields(cls):
        merge = f.metadata.get("merge")
        if merge not in MERGE_RULES:
            raise TypeError(f"{cls.__name__}.{f.name} declares merge {merge!r}, not one of {sorted(MERGE_RULES)}.")
        codec = f.metadata.get("codec", DEFAULT_CODECS[merge])
        if codec not in get_args(Codec):
            raise TypeError(f"{cls.__name__}.{f.name} declares codec {codec!r}, not one of {get_args(Codec)}.")
        if merge == "argmax" and not callable(f.metadata.get("order")):
            raise TypeError(f"{cls.__name__}.{f.name} merges by argmax but declares no `order` key.")
        out.append((f, merge, codec))
    _DECLARED[cls] = tuple(out)
    return _DECLARED[cls]


def _digest(meta_json: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(meta_json.encode())
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


_S = TypeVar("_S", bound="CampaignState")


@dataclass(frozen=True, eq=False)
class CampaignState:
    """The constant-size, mergeable state of a campaign (module docstring).

    Every field declares its merge (and optionally its codec) in its metadata; :meth:`merge`,
    :meth:`save`, :meth:`load` and ``==`` read the declarations, so a subclass that adds a field
    with ``field(default=..., metadata={"merge": "sum"})`` is merged, saved and loaded with no other
    code (declare subclasses ``@dataclass(frozen=True, eq=False)`` to keep the array-aware ``==``).
    ``CampaignState()`` is the neutral element of :meth:`merge`.

    Attributes:
        evaluations, configurations: counts (configurations x inputs, and configurations).
        nan_count, inf_count: evaluations whose error is NaN, +inf.
        error_sum_exact: the exact sum of the finite errors, in units of :math:`2^{-1127}`
            (:func:`exact_sum`).
        error_max: the largest non-NaN error (``-inf`` when none).
        sketch: DDSketch bins ``{key: count}`` of the positive finite errors; ``sketch_zero`` counts
            the rest of the finite ones.
        histogram: counts in the bins of :data:`HIST_EDGES`.
        changed, changed_sq, correct, correct_sq, failed, failed_sq: :math:`S_1`, :math:`S_2` of
            the per-configuration hit counts (module docstring); ``labeled``: evaluations with a label.
        worst: the worst configuration and input (``error``, ``configuration``, ``input_index``,
            ...), or None.
    """

    format: ClassVar[str] = FORMAT

    evaluations: int = state_field("sum", 0)
    configurations: int = state_field("sum", 0)
    nan_count: int = state_field("sum", 0)
    inf_count: int = state_field("sum", 0)
    error_sum_exact: int = state_field("sum", 0, codec="hex")
    error_max: float = state_field("max", -math.inf)
    sketch: dict[int, int] = state_field("sum_by_key", factory=dict)
    sketch_zero: int = state_field("sum", 0)
    histogram: np.ndarray = state_field("sum_array", factory=_empty_histogram)
    changed: int = state_field("sum", 0)
    changed_sq: int = state_field("sum", 0)
    correct: int = state_field("sum", 0)
    correct_sq: int = state_field("sum", 0)
    labeled: int = state_field("sum", 0)
    failed: int = state_field("sum", 0)
    failed_sq: int = state_field("sum", 0)
    worst: dict[str, Any] | None = state_field("argmax", None, order=worst_key)

    def merge(self: _S, other: _S) -> _S:
        """The state of both runs: every field merged as it declares (associative and commutative)."""
        if type(other) is not type(self):
            raise InvalidArgumentError(f"Expected two {type(self).__name__}s, but got a {type(other).__name__}.")
        return type(self)(**{
            f.name: MERGE_RULES[merge](getattr(self, f.name), getattr(other, f.name), f)
            for f, merge, _codec in _declared(type(self))
        })

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f, _merge, _codec in _declared(type(self)):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if not (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable payloads (dicts, arrays): not hashable

    def _encode(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The JSON fields and the int64 arrays of a state file, by each field's codec."""
        js: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        for f, _merge, codec in _declared(type(self)):
            v = getattr(self, f.name)
            if codec == "int":
                js[f.name] = int(v)
            elif codec == "hex":
                js[f.name] = hex(int(v))
            elif codec == "float":
                js[f.name] = repr(float(v))
            elif codec == "json":
                js[f.name] = v
            elif codec == "sparse":
                arrays[f.name + "_keys"] = np.array(list(v.keys()), dtype=np.int64)
                arrays[f.name + "_counts"] = np.array(list(v.values()), dtype=np.int64)
            else:
                arrays[f.name] = np.asarray(v, np.int64)
        return js, arrays

    @classmethod
    def _array_names(cls) -> set[str]:
        names: set[str] = set()
        for f, _merge, codec in _declared(cls):
            if codec == "sparse":
                names |= {f.name + "_keys", f.name + "_counts"}
            elif codec == "array":
                names.add(f.name)
        return names

    @classmethod
    def _decode(cls: type[_S], path: Path, js: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> _S:
        """The state a file's JSON fields and arrays hold, each field checked by its codec."""
        kw: dict[str, Any] = {}
        try:
            for f, _merge, codec in _declared(cls):
                if codec in ("int", "json", "float", "hex"):
                    v = js[f.name]
                if codec == "int":
                    if not isinstance(v, int) or isinstance(v, bool):
                        raise TypeError(f.name)
                    kw[f.name] = int(v)
                elif codec == "hex":
                    kw[f.name] = int(v, 16)
                elif codec == "float":
                    kw[f.name] = float(v)
                elif codec == "json":
                    kw[f.name] = v
        except (ValueError, KeyError, TypeError) as e:
            raise checkpoint_damaged(
                path, f"unreadable field {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        for f, _merge, codec in _declared(cls):
            if codec == "sparse":
                keys, counts = arrays[f.name + "_keys"], arrays[f.name + "_counts"]
                if keys.shape != counts.shape or (keys.size > 1 and np.any(np.diff(keys) <= 0)):
                    raise checkpoint_damaged(path, f"{f.name} keys and counts do not match")
                if np.any(counts <= 0):
                    raise checkpoint_damaged(path, "negative counts")
                kw[f.name] = {int(k): int(c) for k, c in zip(keys.tolist(), counts.tolist(), strict=True)}
            elif codec == "array":
                a = arrays[f.name]
                if np.any(a < 0):
                    raise checkpoint_damaged(path, "negative counts")
                want = np.shape(getattr(cls(), f.name))
                if a.shape != want:
                    raise checkpoint_damaged(path, f"{f.name} of {a.size} bins, expected {math.prod(want)}")
                kw[f.name] = a.astype(np.int64)
            elif codec in ("int", "hex") and kw[f.name] < 0:
                raise checkpoint_damaged(path, "negative counts")
        return cls(**kw)

    def save(self, path: str | Path, meta: Mapping[str, Any]) -> None:
        """Write the state and ``meta`` (JSON-ready) to ``path`` atomically: a temporary sibling
        ``PATH.tmpPID``, fsync, ``os.replace``; the temporary file is removed if anything fails.

        The file is an ``.npz`` (no pickles) holding ``meta`` (JSON: ``meta`` plus ``format`` and
        ``state``, the JSON-coded fields), one int64 array per array-coded field, and ``digest``, the
        SHA-256 of the JSON then of each array's name and bytes in name order.
        """
        path = Path(path)
        js, arrays = self._encode()
        meta_json = json.dumps({**meta, "format": self.format, "state": js})
        payload = {"meta": np.array(meta_json), "digest": np.array(_digest(meta_json, arrays)), **arrays}
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)  # type: ignore[arg-type]  # mypy also matches **payload against the stub's `allow_pickle: bool`
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as e:
            _discard(tmp)
            raise InvalidArgumentError(f"Cannot write checkpoint {path}: {e.strerror or e}.") from None
        except BaseException:
            _discard(tmp)
            raise

    @classmethod
    def load(cls: type[_S], path: str | Path) -> tuple[_S, dict[str, Any]]:
        """Read a file :meth:`save` wrote (never unpickles: ``allow_pickle=False``, JSON), checking
        its entries, digest, format and every field's codec; any damage or edit gives one
        :class:`InvalidArgumentError`. Returns ``(state, meta)``."""
        path = Path(path)
        names = cls._array_names()
        try:
            with np.load(path, allow_pickle=False) as z:
                files = set(z.files)
                if files != {"meta", "digest"} | names:
                    raise checkpoint_damaged(path, f"entries {sorted(files)}")
                meta_json = str(z["meta"])
                digest = str(z["digest"])
                arrays = {k: np.asarray(z[k]) for k in sorted(names)}
        except InvalidArgumentError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if isinstance(e, EOFError) or (path.exists() and path.stat().st_size == 0):
                msg = "the file is empty"
            raise InvalidArgumentError(f"Cannot read checkpoint {path}: {msg}.") from None
        for k, a in arrays.items():
            if a.dtype != np.int64 or a.ndim != 1:
                raise checkpoint_damaged(path, f"{k} is {a.dtype} with shape {a.shape}")
        if _digest(meta_json, arrays) != digest:
            raise checkpoint_damaged(path, "its digest does not match its contents")
        try:
            meta = json.loads(meta_json)
            js = meta["state"]
            if not isinstance(js, dict):
                raise TypeError("state")
        except (ValueError, KeyError, TypeError) as e:
            why = str(e).splitlines()[0] if str(e) else "state"
            raise checkpoint_damaged(path, f"unreadable field {why}") from None
        if meta.get("format") != cls.format:
            raise checkpoint_damaged(path, f"format {meta.get('format')!r}, expected {cls.format!r}")
        return cls._decode(path, js, arrays), meta


def exact_sum(values: np.ndarray) -> int:
    """:math:`\\sum_i v_i \\cdot 2^{1127}` exactly, as a Python integer, for finite float64 ``values``.

    Each :math:`v = f\\,2^E` (``np.frexp``) is :math:`m\\,2^{E-53}` with the integer
    :math:`m = f\\,2^{53}`, :math:`|m| < 2^{53}`, and :math:`E \\ge -1073`, so :math:`v\\,2^{1127} =
    m\\,2^{E+1074}` is an integer. The mantissas are split in 26-bit halves and summed per exponent
    with ``np.bincount`` (float64 sums of integers below :math:`2^{53}` are exact), then shifted and
    added as Python integers. The result does not depend on the order of the values.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return 0
    frac, exp = np.frexp(v)
    m = np.rint(frac * 2.0**53).astype(np.int64)
    sh = (exp + 1074).astype(np.int64)
    sh[m == 0] = 0
    hi = (m >> 26).astype(np.float64)
    lo = (m & ((1 << 26) - 1)).astype(np.float64)
    total = 0
    step = 1 << 20  # |hi|, lo < 2^27 and 2^20 of them: partial sums < 2^47, exact in float64
    for s in range(0, v.size, step):
        bh = np.bincount(sh[s : s + step], weights=hi[s : s + step])
        bl = np.bincount(sh[s : s + step], weights=lo[s : s + step])
        for k in np.flatnonzero((bh != 0) | (bl != 0)):
            total += ((int(bh[k]) << 26) + int(bl[k])) << int(k)
    return total


def sketch_keys(values: np.ndarray) -> np.ndarray:
    """DDSketch bin keys of positive finite values: :math:`k = \\lceil \\log_\\gamma v \\rceil`
    (the ``LogarithmicMapping`` of ``ddsketch``, vectorized)."""
    v = np.asarray(values, dtype=np.float64)
    return (np.ceil(np.log(v) * _MULT) + _MAPPING._offset).astype(np.int64)


def _hist_counts(values: np.ndarray, log_values: np.ndarray) -> np.ndarray:
    """Counts of positive finite ``values`` (with their natural logs) in the bins of
    :data:`HIST_EDGES` (``[e_i, e_{i+1})``). The bin is guessed from :math:`10 \\log_{10} v` and
    corrected against the edges themselves, so it is exactly the bin ``searchsorted`` would give."""
    nb = len(HIST_EDGES) - 1
    guess = np.floor(log_values * (10.0 / math.log(10.0))) + 121
    idx = np.clip(guess, 0, nb - 1).astype(np.int64)
    idx -= (values < HIST_EDGES[idx]).astype(np.int64)
    idx += (values >= HIST_EDGES[np.minimum(idx + 1, nb)]) & (idx < nb - 1)
    return np.bincount(np.clip(idx, 0, nb - 1), minlength=nb).astype(np.int64)


def _rate_counts(hits: Tensor) -> tuple[int, int]:
    """``(sum_t k_t, sum_t k_t^2)`` of per-configuration hit counts of a ``(T, B)`` boolean tensor."""
    k = hits.sum(1).long()
    return int(k.sum()), int((k * k).sum())


def chunk_state(
    errors: Tensor,
    outputs: Tensor,
    clean: Tensor,
    labels: Tensor | None,
    worst_payload: dict[str, Any] | None = None,
    threshold: float | None = None,
) -> CampaignState:
    """State of one chunk: ``errors`` ``(T, B)``, faulty ``outputs`` ``(T, B, n_out)``, ``clean``
    outputs ``(B, n_out)``, integer ``labels`` ``(B,)`` or None. ``worst_payload`` describes the
    configuration/input of the largest error. An evaluation *fails* when its error exceeds
    ``threshold`` (or, without one, when a classifier's prediction changes)."""
    e = errors.detach().double().reshape(errors.shape[0], -1)
    flat = e.reshape(-1).numpy()
    st: dict[str, Any] = {}  # the fields of the CampaignState; those left out keep their (empty) default
    st["evaluations"] = int(flat.size)
    st["configurations"] = int(e.shape[0])
    finite = np.isfinite(flat)
    if finite.all():  # the common case: no copies
        fin = notnan = flat
        n_nan = n_inf = 0
    else:
        nan = np.isnan(flat)
        fin, notnan = flat[finite], flat[~nan]
        n_nan = int(nan.sum())
        n_inf = int(flat.size - n_nan - fin.size)
    st["nan_count"], st["inf_count"] = n_nan, n_inf
    st["error_sum_exact"] = exact_sum(fin)
    st["error_max"] = float(notnan.max()) if notnan.size else -math.inf
    pos = fin[fin > _MAPPING.min_possible]
    st["sketch_zero"] = int(fin.size - pos.size)
    nb = len(HIST_EDGES) - 1
    hist = np.zeros(nb, dtype=np.int64)
    hist[0] += st["sketch_zero"]  # zeros and values below ~2e-308: all in [0, 1e-12)
    hist[nb - 1] += n_inf
    if pos.size:
        lg = np.log(pos)  # shared by the sketch keys and the histogram bins
        keys = (np.ceil(lg * _MULT) + _MAPPING._offset).astype(np.int64)
        k0 = int(keys.min())
        counts = np.bincount(keys - k0)
        nz = np.flatnonzero(counts)
        st["sketch"] = {int(k) + k0: int(c) for k, c in zip(nz.tolist(), counts[nz].tolist(), strict=True)}
        hist += _hist_counts(pos, lg)
    st["histogram"] = hist
    if outputs.shape[-1] > 1:
        pred = outputs.argmax(-1)
        st["changed"], st["changed_sq"] = _rate_counts(pred != clean.argmax(-1).unsqueeze(0))
        if labels is not None:
            st["correct"], st["correct_sq"] = _rate_counts(pred == labels.unsqueeze(0))
            st["labeled"] = int(pred.numel())
    if threshold is not None:
        st["failed"], st["failed_sq"] = _rate_counts(e.nan_to_num(nan=math.inf) > threshold)
    elif outputs.shape[-1] > 1:
        st["failed"], st["failed_sq"] = st["changed"], st["changed_sq"]
    st["worst"] = worst_payload
    return CampaignState(**st)


def z_value(confidence: float) -> float:
    """The two-sided normal quantile :math:`z = \\Phi^{-1}((1+c)/2)`."""
    return NormalDist().inv_cdf((1 + confidence) / 2)


def wilson(k: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n``:

    .. math::

        \\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}.
    """
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(max(0.0, p * (1 - p) / n + z * z / (4 * n * n))) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def cluster_interval(
    s1: int,
    s2: int,
    configs: int,
    per_config: int,
    z: float = 1.959963984540054,
    population: int | None = None,
) -> tuple[float, float]:
    """Interval for the rate :math:`\\hat p = S_1/(TB)` when configurations are the sampled unit
    (module docstring): Wilson with :math:`n_{\\mathrm{eff}} = \\hat p(1-\\hat p)T/s^2 \\in [T, TB]`.

    With ``population`` N (T distinct configurations drawn without replacement), the variance of
    :math:`\\hat p` carries the finite-population correction :math:`(N-T)/(N-1)`: :math:`n_{\\mathrm{eff}}`
    is divided by it, and at T = N the rate is exact (the interval is the point)."""
    t, b = configs, per_config
    if t == 0 or b == 0:
        return 0.0, 1.0
    n = t * b
    p = s1 / n
    if population is not None and population > 1 and t >= population:
        return p, p
    if t == 1:
        return wilson(p, 1.0, z)
    var = Fraction(s2 * t - s1 * s1, t * (t - 1) * b * b)  # s^2, exact
    pq = p * (1 - p)
    n_eff = float(t) if var <= 0 or pq == 0 else min(float(n), max(float(t), pq * t / float(var)))
    if population is not None and population > 1:
        n_eff *= (population - 1) / (population - t)
    return wilson(p * n_eff, n_eff, z)


def _quantile(state: CampaignState, q: float) -> float:
    """The DDSketch estimate of the order statistic of rank ``floor(q (n - 1))`` (NaN ranked above
    +inf above every finite error)."""
    n = int(state.evaluations)
    n_fin = n - int(state.nan_count) - int(state.inf_count)
    rank = math.floor(q * (n - 1))
    if rank >= n - int(state.nan_count):
        return math.nan
    if rank >= n_fin:
        return math.inf
    sk = DDSketch(RELATIVE_ACCURACY)
    if state.sketch_zero:
        sk.add(0.0, float(state.sketch_zero))
    for k, c in state.sketch.items():
        sk.add(_MAPPING.value(int(k)), float(c))
    v = sk.get_quantile_value(min(1.0, rank / (n_fin - 1)) if n_fin > 1 else 0.0)
    assert v is not None  # the sketch is not empty and the quantile is in [0, 1]
    return float(v)


def histogram(state: CampaignState) -> dict[str, list[float]]:
    """The fixed-bin histogram, cut to the span of non-empty bins: ``{"edges", "counts"}`` (for a
    plot: the open top bin ``[1e6, inf]`` ends at the largest finite error, or at 1e7)."""
    h = np.asarray(state.histogram)
    nz = np.flatnonzero(h)
    if nz.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    edges = [float(v) for v in HIST_EDGES[lo : hi + 1]]
    if math.isinf(edges[-1]):
        top = float(state.error_max)
        edges[-1] = top if math.isfinite(top) and top > edges[-2] else 10 * edges[-2]
    return {"edges": edges, "counts": [int(v) for v in h[lo:hi]]}


def summarize(
    state: CampaignState,
    quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
    classifier: bool = False,
    confidence: float = 0.95,
    failure: str | None = None,
    population: int | None = None,
) -> dict[str, Any]:
    """The figures a user reads: exact max and mean of the output error, DDSketch quantiles,
    and for rates (changed predictions, accuracy, failures) the interval over configurations.

    NaN errors make ``max_error`` and ``mean_error`` NaN and rank above every other error in the
    quantiles; ``nan_evaluations`` counts them. ``failure`` says what a failing evaluation is
    (``"error > T"`` or ``"changed prediction"``); with it, ``failure_rate`` and its interval are
    reported, with ``margin_achieved`` its half-width. ``population``: the configurations were
    distinct draws from this many (finite-population correction, :func:`cluster_interval`).
    """
    n = int(state.evaluations)
    t = int(state.configurations)
    b = n // t if t else 0
    z = z_value(confidence)
    nan, inf = int(state.nan_count), int(state.inf_count)
    if not n:
        mx = mean = None
    elif nan:
        mx = mean = math.nan
    else:
        mx = float(state.error_max)
        mean = math.inf if inf else float(Fraction(int(state.error_sum_exact), n << _EXACT_SHIFT))
    out: dict[str, Any] = {
        "evaluations": n,
        "configurations": t,
        "max_error": mx,
        "mean_error": mean,
        "nan_evaluations": nan,
        "quantiles": {str(q): _quantile(state, q) if n else None for q in quantiles},
        "quantile_relative_accuracy": RELATIVE_ACCURACY,
        "interval": INTERVAL_METHOD + (" with finite-population correction" if population else ""),
        "confidence": confidence,
    }
    ci = f"ci{confidence * 100:g}"
    if classifier:
        out["changed_rate"] = state.changed / n if n else None
        out[f"changed_rate_{ci}"] = list(cluster_interval(state.changed, state.changed_sq, t, b, z, population))
    if state.labeled:
        out["accuracy"] = state.correct / state.labeled
        out[f"accuracy_{ci}"] = list(cluster_interval(state.correct, state.correct_sq, t, b, z, population))
    if failure is not None:
        lo, hi = cluster_interval(state.failed, state.failed_sq, t, b, z, population)
        out["failure"] = failure
        out["failure_rate"] = state.failed / n if n else None
        out[f"failure_rate_{ci}"] = [lo, hi]
        out["margin_achieved"] = (hi - lo) / 2
    out["worst"] = state.worst
    return out
