"""The digit models of :mod:`faultbound.models`: the split, seeded training, and the accuracies the
README and ``examples/digit_models.py`` state (LeNet 0.969, small ResNet 0.989, ViT 0.978 on the
359 test images on the 2-core reference machine; the thresholds leave room for another machine's
floating-point order)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from faultbound.models import digits_split, lenet_maxpool, train_digits, trained_digits_model


def test_split_is_the_digits_scaled_and_partitioned() -> None:
    x_tr, y_tr, x_te, y_te = digits_split(8)
    d = load_digits()
    assert x_tr.shape == (1438, 1, 8, 8) and x_te.shape == (359, 1, 8, 8)
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0
    # train + test is the dataset (pixels / 16, each image with its own label), as multisets of rows
    ours = np.concatenate(
        [torch.cat([x_tr, x_te]).reshape(-1, 64).numpy() * 16, torch.cat([y_tr, y_te]).numpy()[:, None]], axis=1
    )
    ref = np.concatenate([d.data, d.target[:, None]], axis=1)
    assert sorted(map(tuple, np.rint(ours).astype(int).tolist())) == sorted(map(tuple, ref.astype(int).tolist()))


def test_vit_split_repeats_each_pixel_two_by_two() -> None:
    x8 = digits_split(8)[0]
    x16 = digits_split(16)[0]
    assert x16.shape == (1438, 1, 16, 16)
    for i in range(2):
        for j in range(2):
            assert torch.equal(x16[:, :, i::2, j::2], x8)


def test_training_is_seeded() -> None:
    a, acc_a = train_digits(lenet_maxpool(seed=3), "lenet", epochs=1, seed=5)
    b, acc_b = train_digits(lenet_maxpool(seed=3), "lenet", epochs=1, seed=5)
    c, _ = train_digits(lenet_maxpool(seed=3), "lenet", epochs=1, seed=6)
    assert acc_a == acc_b
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_accuracy_is_measured_on_the_test_split() -> None:
    m, acc = train_digits(lenet_maxpool(), "lenet", epochs=2)
    _, _, x_te, y_te = digits_split(8)
    with torch.no_grad():
        assert acc == float((m(x_te).argmax(-1) == y_te).double().mean())
    assert not m.training


@pytest.mark.parametrize(("kind", "least"), [("lenet", 0.95), ("resnet", 0.97)])
def test_trained_models_reach_the_stated_accuracy(kind: str, least: float) -> None:
    _, acc = trained_digits_model(kind)  # type: ignore[arg-type]
    assert acc >= least


@pytest.mark.slow
def test_trained_vit_reaches_the_stated_accuracy() -> None:
    m, acc = trained_digits_model("vit")
    assert acc >= 0.95
    assert m(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="one of"):
        trained_digits_model("mlp")  # type: ignore[arg-type]
