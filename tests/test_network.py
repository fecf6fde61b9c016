"""Network extraction: layers, folding, shapes, effective matrices, and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import faultbound as fb
import faultbound.nn  # noqa: F401
from faultbound.network.core import check_against


def test_layers_follow_the_paper_numbering_and_stats() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Sequential(nn.Linear(4, 3), nn.Tanh()), nn.Linear(3, 2))
    net = fb.Network.from_torch(m)
    assert net.L == 2 and net.widths == [4, 3] and net.n_outputs == 2
    assert [lay.index for lay in net.layers] == [1, 2, 3]
    with torch.no_grad():
        wm = [float(m[0].weight.abs().max()), float(m[2][0].weight.abs().max()), float(m[3].weight.abs().max())]
    assert net.w_max == pytest.approx(wm)
    assert net.K == [0.25, 1.0]
    assert [lay.fan_in for lay in net.layers] == [5, 4, 3]
    x = torch.rand(7, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net.forward(x), m.double()(x), atol=1e-12)


def test_conv_pool_batchnorm_fold_and_effective_matrix() -> None:
    torch.manual_seed(1)
    m = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(12, 1),
    )
    with torch.no_grad():
        m[1].running_mean.uniform_(-1, 1)
        m[1].running_var.uniform_(0.5, 2)
    m.eval()
    net = fb.Network.from_torch(m, input_shape=(1, 8, 8))
    assert net.widths == [2 * 8 * 8, 3 * 2 * 2]
    assert len(net.layers[0].ops) == 1  # batch norm folded into the conv
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(net.forward(x), m.double()(x).reshape(4, -1), atol=1e-10)
    # layer 2 = AvgPool then Conv: its effective matrix equals the Jacobian of that affine map
    lay = net.layers[1]
    A = lay.effective_matrix()
    y = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda v: lay.pre(v.reshape(1, 2, 8, 8)).reshape(-1), y.reshape(-1))
    assert torch.allclose(A, J, atol=1e-12)
    assert lay.w_max == pytest.approx(float(J.abs().max()))
    assert lay.fan_in == int((J != 0).sum(1).max())
    # |A| e is bounded by abs_linear (exact up to rounding for non-negative pooling)
    e = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    assert torch.all(J.abs() @ e.reshape(-1) <= lay.abs_linear(e).reshape(-1) + 1e-12)


def test_unsupported_layers_are_all_listed() -> None:
    m = nn.Sequential(
        nn.Linear(2, 3), nn.Hardshrink(), nn.Linear(3, 3), nn.ReLU6(), nn.MaxPool1d(1), nn.Linear(3, 1), nn.Softsign()
    )
    with pytest.raises(fb.errors.UnsupportedModelError) as e:
        fb.Network.from_torch(m)
    msg = str(e.value)
    assert "Hardshrink" in msg and "MaxPool1d" in msg and "Softsign" in msg and "(3)" in msg and "\n" not in msg
    assert "ReLU6" not in msg  # read as hardtanh(0, 6)
    # a DAG that is not of the paper's layered form: a Network refuses it, fb.load gives the graph
    m = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.Softmax(dim=1), nn.Linear(3, 1))
    with pytest.raises(fb.errors.UnsupportedModelError, match="not a layered network.*softmax"):
        fb.Network.from_torch(m)
    assert isinstance(fb.load(m), fb.GraphNetwork)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        (nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()), "linear output"),
        (nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)), "no activation"),
        (nn.Sequential(nn.Sigmoid(), nn.Linear(2, 1)), "linear layer before"),
        (nn.Sequential(nn.Linear(2, 2), nn.GELU(approximate="tanh"), nn.Linear(2, 1)), "approximate"),
        (nn.Sequential(nn.Conv2d(1, 1, 5, dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(1, 1)), "dilation"),
        (nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1)), "input_shape"),
    ],
)
def test_clear_errors(model: nn.Module, needle: str) -> None:
    conv = isinstance(model[0], nn.Conv2d) and needle != "input_shape"
    with pytest.raises(fb.errors.UnsupportedModelError, match=needle):
        fb.Network.from_torch(model, input_shape=(1, 9, 9) if conv else None)


def test_not_sequential_and_nan_and_domain_errors() -> None:
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    with pytest.raises(fb.errors.UnsupportedModelError, match="Sequential"):
        fb.Network.from_torch(Net())
    m = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1))
    with torch.no_grad():
        m[2].bias[0] = float("inf")
    with pytest.raises(fb.errors.UnsupportedModelError, match="NaN or infinite"):
        fb.Network.from_torch(m)
    ok = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1))
    for bad in ((1.0, 0.0), (0.0, float("nan")), ([0.0, 0.0, 0.0], 1.0), "ab"):
        with pytest.raises(fb.errors.InvalidArgumentError):
            fb.Network.from_torch(ok, domain=bad)  # type: ignore[arg-type]
    net = fb.Network.from_torch(ok, domain=([0.0, -1.0], [1.0, 2.0]))
    assert net.domain.lo.tolist() == [0.0, -1.0] and net.domain.hi.tolist() == [1.0, 2.0]


def test_probe_check_refuses_a_different_model() -> None:
    net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 1)))
    with pytest.raises(fb.errors.ModelLoadError, match="differs"):
        check_against(net, lambda x: net.forward(x) + 1e-2, "the model")
    check_against(net, net.forward, "the model")  # itself: no error


def test_interval_propagation_contains_sampled_values() -> None:
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 4), nn.ELU(), nn.Linear(4, 2))
    net = fb.Network.from_torch(m, domain=(-1.0, 2.0))
    x = net.domain.sample(5000, torch.Generator().manual_seed(0))
    acts = net.activations(x)
    for l, iv in enumerate(net.intervals(), start=1):
        y = acts[l].reshape(len(x), -1)
        assert torch.all(y >= iv.y_lo - 1e-12) and torch.all(y <= iv.y_hi + 1e-12)
    assert net.value_bound(0) == 2.0


def test_to_torch_round_trip() -> None:
    torch.manual_seed(4)
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3), fb.nn.TunedSigmoid(2.0),
                      nn.Linear(3, 1))
    net = fb.Network.from_torch(m, input_shape=(1, 4, 4))
    again = fb.Network.from_torch(net.to_torch(torch.float64), input_shape=(1, 4, 4))
    assert again.widths == net.widths and again.w_max == pytest.approx(net.w_max)
    assert again.K == net.K == [1.0, 2.0]


def test_n_synapses_counts_nonzero_effective_weights() -> None:
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                      nn.Linear(12, 4), nn.Sigmoid(), nn.Linear(4, 1))
    with torch.no_grad():
        m[0].weight[0, 0, 1, 1] = 0.0  # a pruned tap
        m[4].weight[2, 3] = 0.0
    net = fb.Network.from_torch(m, input_shape=(2, 7, 7))
    for lay in net.layers:
        assert lay.n_synapses == int((lay.effective_matrix() != 0).sum())
