"""Campaign statistics as constant-size, mergeable state.

A state is a plain ``dict[str, Any]`` whose size does not depend on the number of trials. Every key
declares in :data:`REDUCTIONS` how two states merge (the way torchmetrics declares
``dist_reduce_fx``):

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

import decimal
import math
from fractions import Fraction
from statistics import NormalDist
from typing import Any

import numpy as np
from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping
from torch import Tensor

__all__ = [
    "REDUCTIONS",
    "RELATIVE_ACCURACY",
    "HIST_EDGES",
    "INTERVAL_METHOD",
    "empty_state",
    "chunk_state",
    "merge_states",
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

REDUCTIONS: dict[str, str] = {
    "evaluations": "sum",
    "configurations": "sum",
    "nan_count": "sum",
    "inf_count": "sum",
    "error_sum_exact": "sum",
    "error_max": "max",
    "sketch": "sum_by_key",
    "sketch_zero": "sum",
    "histogram": "sum_array",
    "changed": "sum",
    "changed_sq": "sum",
    "correct": "sum",
    "correct_sq": "sum",
    "labeled": "sum",
    "failed": "sum",
    "failed_sq": "sum",
    "worst": "argmax",
}


def empty_state() -> dict[str, Any]:
    """The neutral element of :func:`merge_states`."""
    return {
        "evaluations": 0,
        "configurations": 0,
        "nan_count": 0,
        "inf_count": 0,
        "error_sum_exact": 0,
        "error_max": -math.inf,
        "sketch": {},
        "sketch_zero": 0,
        "histogram": np.zeros(len(HIST_EDGES) - 1, dtype=np.int64),
        "changed": 0,
        "changed_sq": 0,
        "correct": 0,
        "correct_sq": 0,
        "labeled": 0,
        "failed": 0,
        "failed_sq": 0,
        "worst": None,
    }


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


def worst_key(payload: dict[str, Any] | None) -> tuple[float, float, int, int]:
    """Total order of worst-case payloads: NaN errors first, then the larger error, then the smaller
    configuration index, then the smaller input index (so every merge order picks the same one)."""
    if payload is None:
        return (-1.0, -math.inf, 0, 0)
    e = float(payload["error"])
    return (1.0 if math.isnan(e) else 0.0, -math.inf if math.isnan(e) else e,
            -int(payload["configuration"]), -int(payload["input_index"]))


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
) -> dict[str, Any]:
    """State of one chunk: ``errors`` ``(T, B)``, faulty ``outputs`` ``(T, B, n_out)``, ``clean``
    outputs ``(B, n_out)``, integer ``labels`` ``(B,)`` or None. ``worst_payload`` describes the
    configuration/input of the largest error. An evaluation *fails* when its error exceeds
    ``threshold`` (or, without one, when a classifier's prediction changes)."""
    e = errors.detach().double().reshape(errors.shape[0], -1)
    flat = e.reshape(-1).numpy()
    st = empty_state()
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
    return st


def merge_states(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Merge two states key by key, as :data:`REDUCTIONS` declares (associative and commutative)."""
    out: dict[str, Any] = {}
    for key, how in REDUCTIONS.items():
        if how == "sum":
            out[key] = a[key] + b[key]
        elif how == "max":
            out[key] = max(a[key], b[key])
        elif how == "sum_by_key":
            d = dict(a[key])
            for k, c in b[key].items():
                d[k] = d.get(k, 0) + c
            out[key] = dict(sorted(d.items()))
        elif how == "sum_array":
            out[key] = a[key] + b[key]
        else:
            out[key] = b[key] if worst_key(b[key]) > worst_key(a[key]) else a[key]
    return out


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


def _quantile(state: dict[str, Any], q: float) -> float:
    """The DDSketch estimate of the order statistic of rank ``floor(q (n - 1))`` (NaN ranked above
    +inf above every finite error)."""
    n = int(state["evaluations"])
    n_fin = n - int(state["nan_count"]) - int(state["inf_count"])
    rank = math.floor(q * (n - 1))
    if rank >= n - int(state["nan_count"]):
        return math.nan
    if rank >= n_fin:
        return math.inf
    sk = DDSketch(RELATIVE_ACCURACY)
    if state["sketch_zero"]:
        sk.add(0.0, float(state["sketch_zero"]))
    for k, c in state["sketch"].items():
        sk.add(_MAPPING.value(int(k)), float(c))
    v = sk.get_quantile_value(min(1.0, rank / (n_fin - 1)) if n_fin > 1 else 0.0)
    assert v is not None  # the sketch is not empty and the quantile is in [0, 1]
    return float(v)


def histogram(state: dict[str, Any]) -> dict[str, list[float]]:
    """The fixed-bin histogram, cut to the span of non-empty bins: ``{"edges", "counts"}`` (for a
    plot: the open top bin ``[1e6, inf]`` ends at the largest finite error, or at 1e7)."""
    h = np.asarray(state["histogram"])
    nz = np.flatnonzero(h)
    if nz.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = int(nz[0]), int(nz[-1]) + 1
    edges = [float(v) for v in HIST_EDGES[lo : hi + 1]]
    if math.isinf(edges[-1]):
        top = float(state["error_max"])
        edges[-1] = top if math.isfinite(top) and top > edges[-2] else 10 * edges[-2]
    return {"edges": edges, "counts": [int(v) for v in h[lo:hi]]}


def summarize(
    state: dict[str, Any],
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
    n = int(state["evaluations"])
    t = int(state["configurations"])
    b = n // t if t else 0
    z = z_value(confidence)
    nan, inf = int(state["nan_count"]), int(state["inf_count"])
    if not n:
        mx = mean = None
    elif nan:
        mx = mean = math.nan
    else:
        mx = float(state["error_max"])
        mean = math.inf if inf else float(Fraction(int(state["error_sum_exact"]), n << _EXACT_SHIFT))
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
        out["changed_rate"] = state["changed"] / n if n else None
        out[f"changed_rate_{ci}"] = list(cluster_interval(state["changed"], state["changed_sq"], t, b, z, population))
    if state["labeled"]:
        out["accuracy"] = state["correct"] / state["labeled"]
        out[f"accuracy_{ci}"] = list(cluster_interval(state["correct"], state["correct_sq"], t, b, z, population))
    if failure is not None:
        lo, hi = cluster_interval(state["failed"], state["failed_sq"], t, b, z, population)
        out["failure"] = failure
        out["failure_rate"] = state["failed"] / n if n else None
        out[f"failure_rate_{ci}"] = [lo, hi]
        out["margin_achieved"] = (hi - lo) / 2
    out["worst"] = state["worst"]
    return out
