"""Reference architectures built in the repository (no downloads): the networks fault-tolerance
studies use, as plain ``torch.nn`` modules.

* :func:`resnet18_cifar` -- the CIFAR-style ResNet-18 (3x32x32 input, 11.2M parameters): a 3x3
  stem, four stages of two basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), global
  average pooling and a linear classifier.
* :func:`small_resnet` -- a small ResNet for the bundled 8x8 digits.
* :func:`small_vit` -- a small vision transformer (patch 4 on digits upsampled to 16x16, class
  token, position embedding, pre-norm blocks with multi-head self-attention and a GELU MLP), with
  attention as ``nn.MultiheadAttention`` or written out (q/k/v, softmax, matmul).
* :func:`lenet_maxpool` -- a LeNet with max pooling for the 8x8 digits.

Training on the bundled digits (scikit-learn's ``load_digits``, nothing downloaded):
:func:`digits_split` (pixels scaled to [0, 1], a fixed 80/20 split, images upsampled to 16x16 for
the ViT), :func:`train_digits` (Adam, cross-entropy, seeded: the same weights on every run of one
machine) and :func:`trained_digits_model` (an architecture trained with the recorded settings of
:data:`DIGITS_RECIPES`, in seconds on two CPU cores).

Every activation is its own module instance, so that a hook-based injector (PyTorchFI) can address
each fault site, and the modules run in eval mode once built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "DIGITS_RECIPES",
    "DigitsKind",
    "DigitsRecipe",
    "ResNet",
    "ViT",
    "digits_split",
    "lenet_maxpool",
    "resnet18_cifar",
    "small_resnet",
    "small_vit",
    "train_digits",
    "trained_digits_model",
]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norms; the input is added back (through a 1x1 convolution
    and a batch norm when the shape changes), then a ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages for small images."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for k in range(n):
                layers.append(BasicBlock(c, w, (1 if i == 0 else 2) if k == 0 else 1))
                c = w
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet18_cifar(n_classes: int = 10, seed: int = 0) -> ResNet:
    """The CIFAR-style ResNet-18 (input 3x32x32), random init from ``seed``, eval mode.

    Example:
        >>> m = resnet18_cifar()
        >>> sum(p.numel() for p in m.parameters())
        11173962
    """
    torch.manual_seed(seed)
    m = ResNet(3, (64, 128, 256, 512), (2, 2, 2, 2), n_classes)
    # random but not degenerate batch-norm statistics, as a trained network has
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            assert mod.running_mean is not None and mod.running_var is not None  # track_running_stats
            mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return m.eval()


def small_resnet(n_classes: int = 10, seed: int = 0) -> ResNet:
    """A small ResNet for 1x8x8 digits: a 3x3 stem of 8 channels, two stages of one basic block
    (8 and 16 channels, the second with stride 2), global average pooling, a linear classifier."""
    torch.manual_seed(seed)
    return ResNet(1, (8, 16), (1, 1), n_classes).eval()


class _ManualAttention(nn.Module):
    """Multi-head self-attention written out: q, k, v projections, softmax(q k^T / sqrt(d)) v, and
    the output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, t, h, d // h).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, t, h, d // h).permute(0, 2, 1, 3)
        v = self.v(x).reshape(b, t, h, d // h).permute(0, 2, 1, 3)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)
        out = (att @ v).permute(0, 2, 1, 3).reshape(b, t, d)
        return self.proj(out)


class _Block(nn.Module):
    """A pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, hidden: int, manual: bool) -> None:
        super().__init__()
        self.manual = manual
        self.norm1 = nn.LayerNorm(dim)
        self.attn: nn.Module = (
            _ManualAttention(dim, heads) if manual else nn.MultiheadAttention(dim, heads, batch_first=True)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        if self.manual:
            x = x + self.attn(y)
        else:
            x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """A small vision transformer (see :func:`small_vit`)."""

    def __init__(
        self,
        image: int,
        patch: int,
        channels: int,
        dim: int,
        depth: int,
        heads: int,
        hidden: int,
        n_classes: int,
        manual: bool,
    ) -> None:
        super().__init__()
        n = (image // patch) ** 2
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n + 1, dim))
        self.blocks = nn.Sequential(*[_Block(dim, heads, hidden, manual) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        z = self.embed(x).flatten(2).transpose(1, 2)
        z = torch.cat([self.cls.expand(z.shape[0], -1, -1), z], 1) + self.pos
        z = self.norm(self.blocks(z))
        return self.head(z[:, 0])


def small_vit(
    n_classes: int = 10, seed: int = 0, manual_attention: bool = False, image: int = 16, channels: int = 1
) -> ViT:
    """A small ViT: patch 4 on ``image`` x ``image`` inputs (the 8x8 digits upsampled to 16x16: 16
    tokens and a class token), width 32, 2 blocks of 2 heads, MLP 64 with GELU.
    ``manual_attention`` writes the attention out instead of ``nn.MultiheadAttention``."""
    torch.manual_seed(seed)
    return ViT(image, 4, channels, 32, 2, 2, 64, n_classes, manual_attention).eval()


def lenet_maxpool(n_classes: int = 10, seed: int = 0) -> nn.Sequential:
    """A LeNet for 1x8x8 digits: conv 3x3 (6) + ReLU + max pool 2, conv 3x3 (16) + ReLU + max
    pool 2, dense 64 -> 32 + ReLU, dense 32 -> 10."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, n_classes),
    ).eval()


# ----------------------------------------------------------------------------- training on digits
DigitsKind = Literal["resnet", "vit", "lenet"]
"""The trained digit models: :func:`small_resnet`, :func:`small_vit`, :func:`lenet_maxpool`."""


@dataclass(frozen=True)
class DigitsRecipe:
    """How one digit model is trained: input side (8, or 16 for the ViT), epochs, Adam's learning
    rate, batch size."""

    image: int
    epochs: int
    lr: float
    batch: int = 64


#: The recorded settings of :func:`trained_digits_model`.
DIGITS_RECIPES: dict[str, DigitsRecipe] = {
    "resnet": DigitsRecipe(image=8, epochs=15, lr=3e-3),
    "vit": DigitsRecipe(image=16, epochs=40, lr=2e-3),
    "lenet": DigitsRecipe(image=8, epochs=20, lr=3e-3),
}


def digits_split(image: int = 8, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits as ``(x_train, y_train, x_test, y_test)``: images ``(n, 1, image,
    image)`` with pixels scaled from 0..16 to [0, 1], a seeded 80/20 split (1438 / 359 images).

    ``image=16`` repeats each pixel 2x2 (nearest upsampling), the ViT's input; the pixel values
    and so the domain [0, 1] stay the same.
    """
    from faultbound.data import digits

    if image % 8 != 0 or image < 8:
        raise ValueError(f"Expected image to be a multiple of 8, but got {image}.")
    ds = digits()
    x = torch.as_tensor(ds.X, dtype=torch.float32).reshape(-1, 1, 8, 8)
    r = image // 8
    x = x.repeat_interleave(r, dim=2).repeat_interleave(r, dim=3)
    y = torch.as_tensor(ds.y, dtype=torch.long)
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(len(y)))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).double().mean())


def train_digits(
    model: nn.Module,
    kind: DigitsKind,
    epochs: int | None = None,
    seed: int = 0,
    lr: float | None = None,
) -> tuple[nn.Module, float]:
    """Train ``model`` on the digits' training split; return it (in eval mode) and its accuracy on
    the test split.

    Minimises the cross-entropy :math:`-\\frac1n \\sum_i \\log \\mathrm{softmax}(F(x_i))_{y_i}` with
    Adam over shuffled mini-batches; the shuffling and the split are seeded by ``seed``, so one
    machine gives the same weights on every run. ``kind`` picks the input size (16x16 for
    ``"vit"``, 8x8 otherwise) and the default epochs and learning rate (:data:`DIGITS_RECIPES`).

    Example:
        >>> m, acc = train_digits(lenet_maxpool(), "lenet", epochs=1)
        >>> 0.0 <= acc <= 1.0
        True
    """
    if kind not in DIGITS_RECIPES:
        raise ValueError(f"Expected kind to be one of {', '.join(DIGITS_RECIPES)}, but got {kind!r}.")
    rec = DIGITS_RECIPES[kind]
    n_epochs = rec.epochs if epochs is None else int(epochs)
    x_tr, y_tr, x_te, y_te = digits_split(rec.image, seed=0)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=rec.lr if lr is None else lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(n_epochs):
        order = torch.randperm(len(y_tr), generator=g)
        for i in range(0, len(order), rec.batch):
            idx = order[i : i + rec.batch]
            opt.zero_grad()
            loss_fn(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
    model.eval()
    return model, _accuracy(model, x_te, y_te)


def trained_digits_model(kind: DigitsKind, seed: int = 0) -> tuple[nn.Module, float]:
    """The small ResNet (``"resnet"``), ViT (``"vit"``, input 1x16x16) or max-pool LeNet
    (``"lenet"``) built from ``seed`` and trained on the digits with :data:`DIGITS_RECIPES`; returns
    the module in eval mode and its test accuracy (:func:`train_digits`)."""
    builders: dict[str, Callable[..., nn.Module]] = {"resnet": small_resnet, "vit": small_vit, "lenet": lenet_maxpool}
    if kind not in builders:
        raise ValueError(f"Expected kind to be one of {', '.join(builders)}, but got {kind!r}.")
    return train_digits(builders[kind](seed=seed), kind, seed=seed)
