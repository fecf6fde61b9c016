"""Train the graph models of faultbound.models on the bundled digits and save them for the CLI.

    python examples/digit_models.py --out digit_models

writes ``lenet.pt2``, ``resnet.pt2`` and ``vit.pt2`` (torch.export programs with a batch of 1),
``digits8.npz`` and ``digits16.npz`` (the test split as ``X``, ``y``: 8x8 for the LeNet and the
ResNet, 16x16 for the ViT) and prints one JSON object: per model its test accuracy, training
seconds and parameter count. Training is seeded (:func:`faultbound.models.train_digits`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from faultbound.models import DIGITS_RECIPES, digits_split, trained_digits_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("digit_models"))
    ap.add_argument("--kinds", default="lenet,resnet,vit")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {"threads": torch.get_num_threads(), "models": {}}
    for image in (8, 16):
        _, _, x_te, y_te = digits_split(image)
        np.savez(args.out / f"digits{image}.npz", X=x_te.numpy().astype(np.float64), y=y_te.numpy())
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        model, acc = trained_digits_model(kind)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        image = DIGITS_RECIPES[kind].image
        path = args.out / f"{kind}.pt2"
        torch.export.save(torch.export.export(model, (torch.rand(1, 1, image, image),)), str(path))
        out["models"][kind] = {  # type: ignore[index]
            "file": str(path),
            "test_accuracy": acc,
            "test_images": int(digits_split(image)[3].numel()),
            "train_seconds": round(seconds, 2),
            "epochs": DIGITS_RECIPES[kind].epochs,
            "params": sum(p.numel() for p in model.parameters()),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
