"""Configured training runs of Section 5.3: learning cost against certified and measured robustness.

* :class:`TrainConfig` / :func:`train` -- one seeded run of a TunedSigmoid(K) MLP, optionally with a
  Fep regulariser (:mod:`faultbound.apps.training.regularisers`) and a weight cap, summarised as
  JSON-ready numbers (accuracy, epochs to target, printed Fep, ``paper`` and ``tight`` bounds,
  measured worst error under random crashes);
* :func:`sweep` -- a grid over K and the regulariser weight, one row per run;
* :func:`split_dataset`, :func:`export_model`, :func:`write_csv` -- the data and the files around it.

A run never changes torch's global random state: the initial weights come from
``torch.Generator().manual_seed(config.seed)`` (the very weights ``torch.manual_seed(seed)`` would
give, see :mod:`faultbound.apps.training.fit`) and the measurement draws its own generator.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from faultbound.apps.training.fit import fit, tuned_mlp
from faultbound.apps.training.regularisers import fep_regulariser
from faultbound.errors import InvalidArgumentError
from faultbound.failures import FailureCounts, hidden_counts

__all__ = ["TrainConfig", "TrainResult", "split_dataset", "train", "sweep", "export_model", "write_csv"]

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
        self.crash_failures()

    def crash_failures(self) -> FailureCounts:
        """The fixed crash distribution: ``failures``, or 10% of each hidden layer (at least 1),
        validated for the widths (:func:`~faultbound.failures.hidden_counts`)."""
        f = self.failures if self.failures is not None else [max(1, n // 10) if n > 1 else 0 for n in self.widths]
        return hidden_counts(self.widths, f, correct_neuron=True)


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

    config.check()
    Xtr, ytr, Xte, yte, n_out, classify = split_dataset(config)
    failures = config.crash_failures()
    init = torch.Generator().manual_seed(config.seed)
    model = tuned_mlp(Xtr.shape[1], config.widths, n_out, config.K, generator=init)
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
    tight = fb.bound(net, list(failures), fb.Crash(), method="tight").value
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
    example = (torch.rand(2, d_in, generator=torch.Generator().manual_seed(0)),)
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
