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

Every activation is its own module instance, so that a hook-based injector (PyTorchFI) can address
each fault site, and the modules run in eval mode once built.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "ResNet", "resnet18_cifar", "small_resnet", "small_vit", "lenet_maxpool", "ViT"]


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
            assert mod.running_mean is not None and mod.running_var is not None  # tracked by default
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
