"""``Op.transpose`` (the back-substitution's :math:`vA`, :math:`v|A|`) and ``Affine.top_terms``,
checked against the matrix A written out column by column from the op's linear part (slow and
obvious)."""

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


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("name", ["dense", "dense-tokens", "conv", "conv-stride2-odd"])
def test_top_terms_against_the_written_out_matrix(name: str, k: int) -> None:
    """``Affine.top_terms(d, k)`` of a weighted op: for every output unit j, the bound the forward
    rule uses for what k failing inputs add, min(sum_i |A_ji| d_i, k max_i |A_ji| d_i) for a
    convolution and the exact sum of the k largest terms for a dense op; never below that sum."""
    from faultbound.network.gops import Affine

    make, in_shape = CASES[name]
    g = torch.Generator().manual_seed(k + len(name))
    op = make(g)
    a = _matrix(op, in_shape, absolute=True)  # |A|, outputs x inputs
    batch = 3
    d = torch.rand((batch, *in_shape), generator=g, dtype=torch.float64)
    got = Affine(op).top_terms(d, k).reshape(batch, -1)
    for b in range(batch):
        terms = a * d[b].reshape(1, -1)
        top = terms.topk(min(k, terms.shape[1]), dim=1).values.sum(1)
        assert (got[b] >= top * (1 - 1e-12)).all()  # sound: covers any k failing inputs
        if isinstance(op, Conv):
            want = torch.minimum(terms.sum(1), k * terms.amax(1))
        else:
            want = top
        torch.testing.assert_close(got[b], want, rtol=1e-12, atol=1e-14)
