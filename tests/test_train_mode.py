"""Loading a module in training mode (issue 23): ``fb.load(module)`` and ``Network.from_torch``
read it with eval-mode semantics, leave the module exactly as it was (every submodule's training
flag, every parameter and running statistic), and say so with one ``UserWarning``; a module in
eval mode, or one whose function does not depend on the mode, gives no warning.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.models import small_resnet
from faultbound.network.readers.module import train_mode_modules


def _chain() -> nn.Sequential:
    """Linear, batch norm with running statistics moved off their defaults, Tanh, dropout, Linear;
    in training mode."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 2))
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(8, 3) * 4 - 1)  # training mode: updates the running statistics
    return m.train()


def _resnet() -> nn.Module:
    """A residual network with six batch norms, in training mode (a graph, not a chain)."""
    torch.manual_seed(0)
    m = small_resnet().train()
    with torch.no_grad():
        m(torch.rand(4, 1, 8, 8))
    return m.train()


def _state(m: nn.Module) -> tuple[list[tuple[str, bool]], dict[str, torch.Tensor]]:
    return [(n, s.training) for n, s in m.named_modules()], {k: v.clone() for k, v in m.state_dict().items()}


def _assert_unchanged(m: nn.Module, before: tuple[list[tuple[str, bool]], dict[str, torch.Tensor]]) -> None:
    flags, state = _state(m)
    assert flags == before[0]
    assert all(t for _, t in flags)  # every submodule is still in training mode
    assert state.keys() == before[1].keys()
    for k, v in state.items():
        assert torch.equal(v, before[1][k]), k


LOADERS: dict[str, Callable[[nn.Module], Any]] = {
    "fb.load": lambda m: fb.load(m),
    "Network.from_torch": lambda m: fb.Network.from_torch(m),
}


@pytest.mark.parametrize("how", sorted(LOADERS))
def test_a_chain_in_training_mode_is_read_in_eval_mode_and_left_as_it_was(how: str) -> None:
    m = _chain()
    before = _state(m)
    want_fn = copy.deepcopy(m).double().eval()
    with pytest.warns(UserWarning, match="in training mode") as rec:
        net = LOADERS[how](m)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "1, 3" in msg and "eval-mode semantics" in msg  # names the batch norm and the dropout
    _assert_unchanged(m, before)
    x = torch.rand(16, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net.forward(x), want_fn(x), rtol=1e-9, atol=1e-10)


def test_a_graph_module_in_training_mode_is_left_as_it_was() -> None:
    """The graph reader exported the user's module after switching it to eval mode for good."""
    m = _resnet()
    before = _state(m)
    want_fn = copy.deepcopy(m).eval()
    with pytest.warns(UserWarning, match="in training mode") as rec:
        net = fb.load(m, input_shape=(1, 8, 8))
    assert len(rec) == 1
    assert isinstance(net, fb.GraphNetwork)
    _assert_unchanged(m, before)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.forward(x.double()).float(), want_fn(x), rtol=1e-4, atol=1e-5)


def test_a_graph_module_that_fails_to_export_is_left_as_it_was() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.drop = nn.Linear(4, 2), nn.Dropout(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.export refuses it
                return self.drop(self.fc(x))
            return self.fc(x)

    m = Bad().train()
    with pytest.warns(UserWarning, match="in training mode"), pytest.raises(fb.errors.UnsupportedModelError):
        fb.load(m, input_shape=(4,))
    assert m.training and m.drop.training and m.fc.training


@pytest.mark.parametrize("how", sorted(LOADERS))
def test_no_warning_in_eval_mode_or_when_the_mode_changes_nothing(how: str) -> None:
    plain = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.0), nn.Linear(4, 1))  # training, same function
    assert plain.training and train_mode_modules(plain) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LOADERS[how](_chain().eval())
        LOADERS[how](plain)
        if how == "fb.load":
            fb.load(_resnet().eval(), input_shape=(1, 8, 8))


def test_train_mode_modules_names_what_changes_with_the_mode() -> None:
    m = nn.Sequential(
        nn.Linear(2, 2),
        nn.BatchNorm1d(2),
        nn.BatchNorm1d(2, track_running_stats=False),  # batch statistics in both modes
        nn.Dropout(0.1),
        nn.Sequential(nn.AlphaDropout(0.2), nn.InstanceNorm1d(2, track_running_stats=True)),
        nn.MultiheadAttention(2, 1, dropout=0.1),
        nn.MultiheadAttention(2, 1),
    )
    assert train_mode_modules(m) == ["1", "3", "4.0", "4.1", "5"]
    m[3].eval()
    assert train_mode_modules(m) == ["1", "4.0", "4.1", "5"]
    assert train_mode_modules(m.eval()) == []
