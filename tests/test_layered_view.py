"""The layered view of the DAG (:func:`faultbound.network.passes.layered_view`) is exactly the
layered network that the chain readers gave before there was one reader per format.

``tests/fixtures/chain_views.pt`` was recorded with those chain readers (``python -m
tests.chain_cases``, before they were deleted): for every chain the reader tests load from a
module, a ``.pt2`` and an ``.onnx`` file, its widths, and per layer the op kinds, their
descriptions, the activation, the shapes, the source and the parameters, and the forward pass on
probe inputs. Each case is loaded again through today's one reader and the pass and compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.network.passes import layered_or_reason, layered_view
from tests.chain_cases import CASES, FIXTURE, load, record

pytest.importorskip("onnx")

BEFORE = torch.load(FIXTURE, weights_only=True)

#: Cases whose layer sources differ from the chain readers': those named each node by its operator
#: and graph name (``aten.linear.default 'linear'``, ``Gemm '/0/Gemm'``), the DAG by the module it
#: comes from; and a batch norm folded into the node before it keeps that node's name.
SAME_SOURCE = {c for c in CASES if c.startswith("module-") and c != "module-cnn" and c != "module-bn1d"}


@pytest.mark.parametrize("case", list(CASES))
def test_layered_view_is_the_chain_readers_network(tmp_path: Path, case: str) -> None:
    got = load(case, tmp_path)
    assert isinstance(got, fb.Network), case
    now, before = record(got), BEFORE[case]
    for key in ("type", "dtype", "input_shape", "widths", "n_outputs"):
        assert now[key] == before[key], (case, key)
    assert len(now["layers"]) == len(before["layers"])
    for a, b in zip(now["layers"], before["layers"], strict=True):
        for key in ("ops", "describe", "activation", "in_shape", "out_shape"):
            assert a[key] == b[key], (case, key, a[key], b[key])
        if case in SAME_SOURCE:
            assert a["source"] == b["source"], (case, a["source"], b["source"])
        assert len(a["params"]) == len(b["params"])
        for p, q in zip(a["params"], b["params"], strict=True):
            # the same float64 numbers, but for float rounding of folds and scalings done in another order
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(now["forward"], before["forward"], rtol=1e-9, atol=1e-9)


def test_a_dag_that_is_not_layered_has_no_view() -> None:
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.tanh(self.fc1(x)) + x)

    g = fb.load(Skip().eval(), input_shape=(3,), sites=["fc1"])
    assert isinstance(g, fb.GraphNetwork)
    assert layered_view(g) is None
    assert "not a chain" in str(layered_or_reason(g)) or "fault sites" in str(layered_or_reason(g))
    assert isinstance(fb.load(Skip().eval()), fb.GraphNetwork)  # no input_shape: the first Linear's
