"""Training for robustness versus ease of learning (Section 5.3).

* :func:`fit` -- a small, seeded mini-batch trainer (MSE or cross-entropy), with an optional
  penalty and weight clipping;
* :func:`tuned_mlp` -- networks of the paper's K-Lipschitz sigmoids (:class:`~faultbound.nn.TunedSigmoid`);
* :func:`fep_paper_torch` / :func:`fep_neuron_torch` -- differentiable certified bounds, as functions
  of the weights, used as regularisers (:func:`fep_regulariser`);
* :func:`train` -- one configured run with a JSON-ready summary; :func:`sweep` -- a grid over K and
  the regulariser weight.

**The paper regulariser** is the sound recursion behind Theorem 2 (``method="paper"``,
:mod:`faultbound.bounds.paper`) written in torch, for crashes of dense networks:

.. math::

    T_l = f_{l-1} Y_{l-1} + (N_{l-1} - f_{l-1}) D_{l-1},\\quad D_l = K_l\\, w_m^{(l)} T_l,\\quad
    \\mathrm{Fep} = w_m^{(L+1)} T_{L+1},

with :math:`w_m^{(l)} = \\max |W^{(l)}|` (exact; or, with ``smooth = t``, the upper bound
:math:`t \\log \\sum e^{|w|/t} \\ge \\max |w|`, so the smoothed value is still a certified bound).

**The per-neuron regulariser** propagates one deviation per neuron. Neuron j of layer l receives
at most :math:`\\sum_i |w_{ji}| d_i` from correct neurons and, if f of its inputs crash, at most the
f largest :math:`|w_{ji}|\\,(Y - d_i)` more; a correct neuron's deviation is also at most the width of
its activation's range (ERRATA 5):

.. math::

    d^{(l)}_j = \\min\\Big(K_l \\big[\\textstyle\\sum_i |w_{ji}| d^{(l-1)}_i
        + \\operatorname{top}_{f_{l-1}}\\, |w_{ji}| (Y_{l-1} - d^{(l-1)}_i)\\big],\\ \\mathrm{width}_l\\Big),

and the output error is the same sum at the output, maximised over outputs. Each receiver picks its
own worst failure set, so this is an upper bound of the worst case (sound) and never above the paper
recursion; it is differentiable almost everywhere (``torch.topk``, ``abs``, ``min``).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from faultbound.errors import InvalidArgumentError

__all__ = [
    "fit",
    "mlp",
    "tuned_mlp",
    "clip_weights",
    "fep_paper_torch",
    "fep_neuron_torch",
    "fep_regulariser",
    "TrainConfig",
    "TrainResult",
    "train",
    "sweep",
    "export_model",
    "write_csv",
    "split_dataset",
]


def mlp(d_in: int, widths: list[int], d_out: int, activation: Callable[[], nn.Module]) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` with the given hidden widths."""
    mods: list[nn.Module] = []
    prev = d_in
    for w in widths:
        mods += [nn.Linear(prev, w), activation()]
        prev = w
    mods.append(nn.Linear(prev, d_out))
    return nn.Sequential(*mods)


def tuned_mlp(d_in: int, widths: Sequence[int], d_out: int, K: float) -> nn.Sequential:  # noqa: N803
    """An MLP of :class:`~faultbound.nn.TunedSigmoid` (K) neurons: :math:`\\varphi(x) = \\sigma(4Kx)`."""
    from faultbound.nn import TunedSigmoid

    if not (isinstance(K, (int, float)) and math.isfinite(K) and K > 0):
        raise InvalidArgumentError(f"Expected K > 0, but got {K}.")
    return mlp(d_in, list(widths), d_out, lambda: TunedSigmoid(float(K)))


def clip_weights(model: nn.Module, cap: float) -> None:
    """Clamp every ``nn.Linear`` weight to :math:`[-cap, cap]` in place (biases are left free).

    This bounds every :math:`w_m^{(l)}` by ``cap``, the "trade-off on synaptic weights" of 5.3.
    """
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.clamp_(-cap, cap)


def fit(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 256,
    penalty: Callable[[nn.Module], Tensor] | None = None,
    weight_cap: float | None = None,
    loss: Literal["mse", "cross_entropy"] = "mse",
    on_epoch: Callable[[int, nn.Module], bool | None] | None = None,
    threads: int | None = 1,
) -> list[float]:
    """Mini-batch training with Adam, seeded; returns the loss per epoch.

    Args:
        penalty: added to every batch loss (e.g. ``lambda m: 0.01 * fep_regulariser(m, [2])``).
        weight_cap: clamp the weights to [-cap, cap] after every step (:func:`clip_weights`).
        loss: ``"mse"`` (``Y`` are targets) or ``"cross_entropy"`` (``Y`` are class labels).
        on_epoch: called as ``on_epoch(epoch, model)`` (1-based) after each epoch, in eval mode;
            training stops early when it returns True.
        threads: torch intra-op threads during the call (restored afterwards); small networks train
            fastest on one thread. ``None`` leaves the setting alone.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _fit(model, X, Y, epochs, lr, seed, batch_size, penalty, weight_cap, loss, on_epoch)
    finally:
        torch.set_num_threads(before)


def _fit(
    model: nn.Module,
    X: np.ndarray,
    Y: np.ndarray,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int,
    penalty: Callable[[nn.Module], Tensor] | None,
    weight_cap: float | None,
    loss: str,
    on_epoch: Callable[[int, nn.Module], bool | None] | None,
) -> list[float]:
    torch.manual_seed(seed)
    x = torch.as_tensor(X, dtype=torch.float32)
    if loss == "cross_entropy":
        y = torch.as_tensor(Y, dtype=torch.int64).reshape(len(x))
    else:
        y = torch.as_tensor(Y, dtype=torch.float32).reshape(len(x), -1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    if weight_cap is not None:
        clip_weights(model, weight_cap)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            out = model(x[idx])
            if loss == "cross_entropy":
                batch_loss = nn.functional.cross_entropy(out, y[idx])
            else:
                batch_loss = ((out - y[idx]) ** 2).mean()
            if penalty is not None:
                batch_loss = batch_loss + penalty(model)
            opt.zero_grad()
            batch_loss.backward()
            opt.step()
            if weight_cap is not None:
                clip_weights(model, weight_cap)
            total += float(batch_loss.detach()) * len(idx)
        losses.append(total / len(x))
        model.eval()
        if on_epoch is not None:
            with torch.no_grad():
                if on_epoch(epoch + 1, model) is True:
                    break
    model.eval()
    return losses


# ------------------------------------------------------------------ differentiable bounds
def _check_reg_args(weights: Sequence[Tensor], K: Sequence[float], failures: Sequence[int]) -> int:
    L = len(weights) - 1
    if L < 1:
        raise InvalidArgumentError("Expected at least one hidden layer (two weight matrices).")
    if len(K) != L or len(failures) != L:
        raise InvalidArgumentError(
            f"Expected one K and one failure count per hidden layer ({L}), but got {len(K)} and {len(failures)}."
        )
    for l, (w, f) in enumerate(zip(weights[:-1], failures, strict=True), start=1):
        if not 0 <= int(f) < w.shape[0]:
            raise InvalidArgumentError(f"Expected 0 <= f_{l} < N_{l} = {w.shape[0]}, but got {f}.")
    return L


def _wmax(w: Tensor, smooth: float | None) -> Tensor:
    a = w.abs().flatten()
    if smooth is None:
        return a.max()
    return smooth * torch.logsumexp(a / smooth, 0)


def fep_paper_torch(
    weights: Sequence[Tensor],
    K: Sequence[float],  # noqa: N803
    failures: Sequence[int],
    Y: Sequence[float] | float = 1.0,  # noqa: N803
    smooth: float | None = None,
) -> Tensor:
    """The paper recursion (module docstring) as a differentiable function of the weights.

    Args:
        weights: :math:`W^{(1)}, \\dots, W^{(L+1)}`, shapes ``(N_l, N_{l-1})``.
        K: the Lipschitz constant of each hidden layer.
        failures: crashed neurons per hidden layer.
        Y: the largest value a neuron of each hidden layer sends (1 for a sigmoid).
        smooth: temperature of the smooth max (``None``: exact max).

    For a dense network this equals ``faultbound.bound(net, failures, method="paper")`` (exact max).
    """
    L = _check_reg_args(weights, K, failures)
    ys = [float(Y)] * L if isinstance(Y, (int, float)) else [float(v) for v in Y]
    d_ok = torch.zeros((), dtype=weights[0].dtype)
    d_fail = 0.0
    f_prev = 0
    for l, w in enumerate(weights):
        n_prev = w.shape[1]
        T = f_prev * d_fail + (n_prev - f_prev) * d_ok
        if l == L:
            return _wmax(w, smooth) * T
        d_ok = K[l] * _wmax(w, smooth) * T
        f_prev, d_fail = int(failures[l]), ys[l]
    raise AssertionError("unreachable")  # pragma: no cover


def fep_neuron_torch(
    weights: Sequence[Tensor],
    K: Sequence[float],  # noqa: N803
    failures: Sequence[int],
    Y: Sequence[float] | float = 1.0,  # noqa: N803
    width: Sequence[float] | float = 1.0,
) -> Tensor:
    """The per-neuron propagation (module docstring), differentiable in the weights.

    ``width`` is the width of each hidden activation's range (1 for a sigmoid), a cap on a correct
    neuron's deviation; ``Y`` must be at least every |value| a neuron sends, and at least ``width``.
    """
    L = _check_reg_args(weights, K, failures)
    ys = [float(Y)] * L if isinstance(Y, (int, float)) else [float(v) for v in Y]
    ws = [float(width)] * L if isinstance(width, (int, float)) else [float(v) for v in width]
    d = torch.zeros(weights[0].shape[1], dtype=weights[0].dtype)
    f_prev, y_prev = 0, 0.0
    for l, w in enumerate(weights):
        a = w.abs()
        t = a @ d
        if f_prev > 0:
            t = t + torch.topk(a * (y_prev - d).clamp_min(0.0), f_prev, dim=1).values.sum(1)
        if l == L:
            return t.max()
        d = torch.minimum(K[l] * t, torch.full_like(t, ws[l]))
        f_prev, y_prev = int(failures[l]), ys[l]
    raise AssertionError("unreachable")  # pragma: no cover


def _dense_weights(model: nn.Module) -> tuple[list[Tensor], list[float], list[float], list[float]]:
    """Weights, K, Y (max |value|) and range widths of an MLP ``Linear -> act -> ... -> Linear``."""
    from faultbound.nn import TunedSigmoid

    weights: list[Tensor] = []
    K: list[float] = []
    Y: list[float] = []
    width: list[float] = []
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            weights.append(mod.weight)
        elif isinstance(mod, TunedSigmoid):
            K.append(mod.K)
            Y.append(1.0)
            width.append(1.0)
        elif isinstance(mod, nn.Sigmoid):
            K.append(0.25)
            Y.append(1.0)
            width.append(1.0)
        elif isinstance(mod, nn.Tanh):
            K.append(1.0)
            Y.append(1.0)
            width.append(2.0)
        elif not isinstance(mod, nn.Sequential):
            raise InvalidArgumentError(
                f"The Fep regulariser supports Linear, Sigmoid, TunedSigmoid and Tanh, but got {type(mod).__name__}."
            )
    if len(K) != len(weights) - 1:
        raise InvalidArgumentError("Expected an MLP alternating Linear and bounded activations, ending with Linear.")
    return weights, K, Y, width


def fep_regulariser(
    model: nn.Module,
    failures: Sequence[int],
    kind: Literal["paper", "neuron"] = "neuron",
    smooth: float | None = None,
) -> Tensor:
    """A certified crash bound of ``model`` as a differentiable function of its weights.

    ``kind="paper"``: :func:`fep_paper_torch`; ``kind="neuron"``: :func:`fep_neuron_torch`.
    """
    weights, K, Y, width = _dense_weights(model)
    if kind == "paper":
        return fep_paper_torch(weights, K, failures, Y, smooth)
    if kind == "neuron":
        return fep_neuron_torch(weights, K, failures, Y, [min(a, b) for a, b in zip(width, Y, strict=True)])
    raise InvalidArgumentError(f"Expected kind 'paper' or 'neuron', but got {kind!r}.")


# ------------------------------------------------------------------ configured runs
@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    ``dataset`` is ``"digits"`` (classification, cross-entropy, accuracy) or ``"synthetic"``
    (regression of ``target_fn`` on [0, 1]^d, MSE; its "accuracy" is the fraction of test points
    predicted within ``tol``). ``failures`` (default: 10% of each hidden layer, at least 1) is the
    fixed crash distribution the bounds and the measurement use. With ``stop_at_target``, training
    stops after the first epoch whose test accuracy reaches ``target`` (``epochs`` is then the most).
    """

    dataset: Literal["digits", "synthetic"] = "digits"
    K: float = 1.0
    widths: tuple[int, ...] = (32,)
    weight_cap: float | None = None
    fep_weight: float = 0.0
    fep_kind: Literal["paper", "neuron"] = "neuron"
    failures: tuple[int, ...] | None = None
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 64
    target: float = 0.9
    tol: float = 0.05
    target_fn: str = "wave"
    d: int = 2
    n_samples: int = 2048
    seed: int = 0
    measure_runs: int = 200
    stop_at_target: bool = False

    def check(self) -> None:
        if self.dataset not in ("digits", "synthetic"):
            raise InvalidArgumentError(f"Expected dataset digits or synthetic, but got {self.dataset!r}.")
        if not (math.isfinite(self.K) and self.K > 0):
            raise InvalidArgumentError(f"Expected K > 0, but got {self.K}.")
        if self.weight_cap is not None and not (math.isfinite(self.weight_cap) and self.weight_cap > 0):
            raise InvalidArgumentError(f"Expected weight_cap > 0, but got {self.weight_cap}.")
        if not (math.isfinite(self.fep_weight) and self.fep_weight >= 0):
            raise InvalidArgumentError(f"Expected fep_weight >= 0, but got {self.fep_weight}.")
        if self.epochs < 1 or self.batch_size < 1 or not self.widths or min(self.widths) < 1:
            raise InvalidArgumentError("Expected epochs >= 1, batch_size >= 1 and non-empty positive widths.")
        if not 0 < self.target <= 1:
            raise InvalidArgumentError(f"Expected target accuracy in (0, 1], but got {self.target}.")
        if self.failures is not None:
            if len(self.failures) != len(self.widths):
                raise InvalidArgumentError(
                    f"Expected one failure count per hidden layer ({len(self.widths)}), but got {len(self.failures)}."
                )
            for l, (f, n) in enumerate(zip(self.failures, self.widths, strict=True), start=1):
                if not 0 <= f < n:
                    raise InvalidArgumentError(f"Expected 0 <= f_{l} < N_{l} = {n}, but got {f}.")

    def crash_failures(self) -> tuple[int, ...]:
        if self.failures is not None:
            return tuple(self.failures)
        return tuple(max(1, n // 10) if n > 1 else 0 for n in self.widths)


@dataclass
class TrainResult:
    """A trained model, its Network and a JSON-ready summary."""

    model: nn.Module
    network: Any
    summary: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def split_dataset(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, bool]:
    """Seeded 80/20 split of ``config``'s data: ``(X_train, y_train, X_test, y_test, n_out, classify)``."""
    from faultbound.data import digits, synthetic

    if config.dataset == "digits":
        ds = digits()
        n_out, classify = 10, True
    else:
        ds = synthetic(config.target_fn, d=config.d, n=config.n_samples, seed=config.seed)
        n_out, classify = 1, False
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(len(ds.X))
    n_test = len(perm) // 5
    te, tr = perm[:n_test], perm[n_test:]
    return ds.X[tr], ds.y[tr], ds.X[te], ds.y[te], n_out, classify


def _score(model: nn.Module, X: np.ndarray, y: np.ndarray, classify: bool, tol: float) -> float:
    with torch.no_grad():
        out = model(torch.as_tensor(X, dtype=torch.float32))
    if classify:
        return float((out.argmax(1).numpy() == y).mean())
    return float((np.abs(out[:, 0].numpy() - y) <= tol).mean())


def train(config: TrainConfig) -> TrainResult:
    """Train one TunedSigmoid(K) MLP and summarise learning cost against robustness.

    The summary holds: test accuracy, epochs to reach ``config.target`` (``None`` if never), for
    regression :math:`\\epsilon'` estimated as the largest test error (an estimate from below), the
    printed Fep (Theorem 2), the ``paper`` and ``tight`` bounds and the regulariser's value for the
    fixed crash distribution, and the measured worst output error over ``measure_runs`` random
    failure sets of that distribution on the test inputs (same seed for every configuration).
    """
    import faultbound as fb
    from faultbound.apps.faulty import crash_errors, random_crash_masks
    from faultbound.bounds.api import METHODS

    config.check()
    Xtr, ytr, Xte, yte, n_out, classify = split_dataset(config)
    failures = config.crash_failures()
    torch.manual_seed(config.seed)
    model = tuned_mlp(Xtr.shape[1], config.widths, n_out, config.K)
    history: list[dict[str, float]] = []
    reached: list[int] = []

    def on_epoch(epoch: int, m: nn.Module) -> bool:
        acc = _score(m, Xte, yte, classify, config.tol)
        history.append({"epoch": float(epoch), "accuracy": acc})
        if acc >= config.target and not reached:
            reached.append(epoch)
        return config.stop_at_target and bool(reached)

    penalty = None
    if config.fep_weight > 0:
        w = config.fep_weight

        def penalty(m: nn.Module) -> Tensor:
            return w * fep_regulariser(m, failures, config.fep_kind)

    t0 = time.perf_counter()
    losses = fit(
        model,
        Xtr,
        ytr,
        epochs=config.epochs,
        lr=config.lr,
        seed=config.seed,
        batch_size=config.batch_size,
        penalty=penalty,
        weight_cap=config.weight_cap,
        loss="cross_entropy" if classify else "mse",
        on_epoch=on_epoch,
    )
    seconds = time.perf_counter() - t0
    net = fb.Network.from_torch(model, domain=(0.0, 1.0))
    paper = fb.bound(net, list(failures), fb.Crash(), method="paper").value
    tight = fb.bound(net, list(failures), fb.Crash(), method="tight").value if "tight" in METHODS else None
    with torch.no_grad():
        reg_paper = float(fep_regulariser(model.double(), failures, "paper"))
        reg_neuron = float(fep_regulariser(model, failures, "neuron"))
    model.float()
    g = torch.Generator().manual_seed(12345)
    masks = random_crash_masks(net, failures, config.measure_runs, g)
    x_te = torch.as_tensor(Xte, dtype=torch.float64)
    errs = crash_errors(net, x_te, masks)
    eps_prime = None
    if not classify:
        with torch.no_grad():
            eps_prime = float((net.forward(x_te)[:, 0] - torch.as_tensor(yte)).abs().max())
    summary: dict[str, Any] = {
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "failures": list(failures),
        "accuracy": history[-1]["accuracy"],
        "metric": "accuracy" if classify else f"fraction of test points within {config.tol}",
        "target": config.target,
        "epochs_to_target": reached[0] if reached else None,
        "epochs_trained": len(history),
        "final_loss": losses[-1],
        "eps_prime_estimate": eps_prime,
        "train_seconds": seconds,
        "fep_printed": fb.fep_as_printed(net, list(failures)),
        "bound_paper": paper,
        "bound_tight": tight,
        "regulariser_paper": reg_paper,
        "regulariser_neuron": reg_neuron,
        "measured_max_error": float(errs.max()),
        "measured_mean_error": float(errs.mean()),
        "measure_runs": config.measure_runs,
        "w_max": net.w_max,
    }
    return TrainResult(model, net, summary, history)


def export_model(model: nn.Module, out_dir: str | Path, d_in: int, stem: str = "model") -> dict[str, str | None]:
    """Write ``stem.pt2`` (``torch.export.save``) and ``stem.onnx``; returns the paths written.

    A format that fails to export is reported as ``None`` with the reason under ``"<fmt>_error"``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.float().eval()
    example = (torch.rand(2, d_in),)
    paths: dict[str, str | None] = {}
    try:
        ep = torch.export.export(model, example)
        p = out / f"{stem}.pt2"
        torch.export.save(ep, str(p))
        paths["pt2"] = str(p)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        paths["pt2"], paths["pt2_error"] = None, str(e).splitlines()[0][:200]
    try:
        import io
        import warnings
        from contextlib import redirect_stderr, redirect_stdout

        p = out / f"{stem}.onnx"
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(p), dynamo=False, input_names=["x"], output_names=["y"])
        paths["onnx"] = str(p)
    except Exception as e:  # noqa: BLE001
        paths["onnx"], paths["onnx_error"] = None, str(e).splitlines()[0][:200]
    return paths


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write dict rows (same keys) to a CSV file."""
    rows = list(rows)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0].keys()) if rows else [])
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def sweep(
    Ks: Sequence[float],  # noqa: N803
    fep_weights: Sequence[float],
    base: TrainConfig | None = None,
) -> list[dict[str, Any]]:
    """Train one network per (K, regulariser weight) and return one table row each.

    Every row has the learning cost (``accuracy``, ``epochs_to_target``) beside the certified
    (``bound_paper``, ``bound_tight``) and measured (``measured_max_error``) robustness.
    """
    base = base or TrainConfig()
    if not Ks or not fep_weights:
        raise InvalidArgumentError("Expected at least one K and one regulariser weight.")
    rows = []
    for K in Ks:
        for lam in fep_weights:
            s = train(replace(base, K=float(K), fep_weight=float(lam))).summary
            rows.append(
                {
                    "K": float(K),
                    "fep_weight": float(lam),
                    "accuracy": s["accuracy"],
                    "epochs_to_target": s["epochs_to_target"],
                    "final_loss": s["final_loss"],
                    "fep_printed": s["fep_printed"],
                    "bound_paper": s["bound_paper"],
                    "bound_tight": s["bound_tight"],
                    "measured_max_error": s["measured_max_error"],
                    "failures": " ".join(map(str, s["failures"])),
                }
            )
    return rows
