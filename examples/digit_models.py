"""Train the graph models of faultbound.models on the bundled digits and save them for the CLI.

    python examples/digit_models.py                       # rewrites examples/models/
    python examples/digit_models.py --out digit_models --data

writes ``lenet.pt2``, ``resnet.pt2`` and ``vit.pt2`` (torch.export programs with a batch of 1) and
``models.json`` (per model: the file, its test accuracy, the number of test images, training
seconds, epochs and parameter count, and the torch version and thread count that trained them),
and prints the same JSON. With ``--data`` it also writes ``digits8.npz`` and ``digits16.npz`` (the
test split as ``X``, ``y``: 8x8 for the LeNet and the ResNet, 16x16 for the ViT).

The repository holds the three programs in ``examples/models/`` (about 350 kB) so that the README's
walk-through needs no training. Training is seeded (:func:`faultbound.models.train_digits`): one
machine with the same torch and thread count writes the same weights on every run; another CPU
may round differently and train slightly different weights (``tests/test_example_models.py``
checks the committed files against this script within a stated tolerance).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from faultbound.models import DIGITS_RECIPES, digits_split, trained_digits_model

#: Where the repository keeps the programs this script writes.
MODELS_DIR = Path(__file__).resolve().parent / "models"


def export_program(model: torch.nn.Module, image: int, path: Path) -> None:
    """Save ``model`` as a ``torch.export`` program with an example batch of one ``1 x image x image`` input."""
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, image, image),)), str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=MODELS_DIR)
    ap.add_argument("--kinds", default="lenet,resnet,vit")
    ap.add_argument("--data", action="store_true", help="also write the test split as digits8.npz, digits16.npz")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "models": {}}
    if args.data:
        for image in (8, 16):
            _, _, x_te, y_te = digits_split(image)
            np.savez(args.out / f"digits{image}.npz", X=x_te.numpy().astype(np.float64), y=y_te.numpy())
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        model, acc = trained_digits_model(kind)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        image = DIGITS_RECIPES[kind].image
        path = args.out / f"{kind}.pt2"
        export_program(model, image, path)
        out["models"][kind] = {  # type: ignore[index]
            "file": path.name,
            "test_accuracy": acc,
            "test_images": int(digits_split(image)[3].numel()),
            "train_seconds": round(seconds, 2),
            "epochs": DIGITS_RECIPES[kind].epochs,
            "params": sum(p.numel() for p in model.parameters()),
        }
    text = json.dumps(out, indent=1)
    (args.out / "models.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
