"""``Op.transpose``: the back-substitution's :math:`vA` and :math:`v|A|`, checked against the matrix
A written out column by column from the op's linear part (slow and obvious)."""

from __future__ import annotations

import pytest
import torch

from faultbound.network.ops import AvgPool, ChannelAffine, Conv, Dense, Flatten, Op


def _matrix(op: Op, in_shape: tuple[int, ...], absolute: bool) -> torch.Tensor:
    """A (outputs x inputs) of the linear part: the image of every unit vector (|A| entrywise)."""
    n = 1
    for s in in_shape:
        n *= s
    cols = [op.linear(torch.eye(n, dtype=torch.float64)[i].reshape((1, *in_shape))).reshape(-1) for i in range(n)]
    a = torch.stack(cols, 1)
    return a.abs() if absolute else a


CASES = {
    "dense": (lambda g: Dense(torch.randn(5, 7, generator=g), torch.randn(5, generator=g)), (7,)),
    "dense-tokens": (lambda g: Dense(torch.randn(4, 3, generator=g), torch.randn(4, generator=g)), (2, 3)),
    "conv": (lambda g: Conv(torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, generator=g), (1, 1), (1, 1)),
             (2, 5, 5)),
    "conv-stride2-odd": (lambda g: Conv(torch.randn(3, 2, 3, 2, generator=g), torch.randn(3, generator=g), (2, 2),
                                        (1, 0)), (2, 6, 5)),
    "avgpool": (lambda g: AvgPool((2, 2), (2, 2), (0, 0)), (2, 5, 4)),
    "flatten": (lambda g: Flatten(), (2, 3, 2)),
    "channel-affine": (lambda g: ChannelAffine(torch.randn(3, generator=g), torch.randn(3, generator=g)), (3, 2, 2)),
}


@pytest.mark.parametrize("absolute", [False, True], ids=["A", "|A|"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_transpose_is_v_times_the_matrix(name: str, absolute: bool) -> None:
    make, in_shape = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    op = make(g)
    a = _matrix(op, in_shape, absolute)
    out_shape = op.linear(torch.zeros((1, *in_shape), dtype=torch.float64)).shape[1:]
    rows = 3
    v = torch.randn((rows, *out_shape), generator=g, dtype=torch.float64)
    got = op.transpose(v, (rows, *in_shape), absolute=absolute)
    assert got.shape == (rows, *in_shape)
    want = (v.reshape(rows, -1) @ a).reshape(rows, *in_shape)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
