"""A fault model defined only here (a :class:`NeuronFault` / :class:`SynapseFault` of the ``Sent`` shape)
is measured by ``inject`` exactly as a plain numpy forward pass computes it: the engine applies what
the model states, with no table or dispatch of its own to extend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.faults import NeuronFault, Sent, SynapseFault
from faultbound.measure import FaultSet, inject, sample_faults


@dataclass(frozen=True)
class SignFlip(NeuronFault):
    """A failing neuron sends the negation of its fault-free value: :math:`-y`."""

    @property
    def name(self) -> str:
        return "sign-flip"

    @property
    def sent(self) -> Sent:
        return Sent(-1.0, 0.0, 0.0)


@dataclass(frozen=True)
class HalfPlus(NeuronFault):
    """A failing neuron sends half its fault-free value plus ``offset``: :math:`y/2 + c`."""

    offset: float = 0.25

    @property
    def name(self) -> str:
        return "half-plus"

    @property
    def sent(self) -> Sent:
        return Sent(0.5, self.offset, self.offset)


@dataclass(frozen=True)
class SynapseSignFlip(SynapseFault):
    """A failing synapse transmits :math:`-w_{ji} y_i` (y_i fault-free) instead of :math:`w_{ji} y_i`."""

    @property
    def name(self) -> str:
        return "synapse-sign-flip"

    @property
    def sent(self) -> Sent:
        return Sent(-1.0, 0.0, 0.0)


def _model(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 2)).double()


def _weights(model: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in model if isinstance(m, nn.Linear)]


ACTS = [np.tanh, lambda s: 1.0 / (1.0 + np.exp(-s))]


def np_neuron_faults(model: nn.Sequential, x: np.ndarray, sites: list[list[int]], gain: float, v: float) -> np.ndarray:
    """Outputs with the neurons ``sites[l-1]`` of hidden layer l sending ``gain * y + v``, y their
    fault-free value (one configuration), computed one layer at a time in numpy."""
    ws = _weights(model)
    clean, y = x, x
    for (w, b), act, failing in zip(ws[:-1], ACTS, sites, strict=True):
        clean_next = act(clean @ w.T + b)
        y = act(y @ w.T + b)
        for j in failing:
            y[:, j] = gain * clean_next[:, j] + v
        clean = clean_next
    w, b = ws[-1]
    return y @ w.T + b


def np_synapse_faults(model: nn.Sequential, x: np.ndarray, sites: list[list[int]], gain: float) -> np.ndarray:
    """Outputs with the synapses ``sites[l-1]`` (index ``j * n_in + i``) into layer l transmitting
    ``gain * w_ji * y_i`` (y_i fault-free) instead of ``w_ji * y'_i``."""
    ws = _weights(model)
    acts = [*ACTS, lambda s: s]
    clean, y = x, x
    for (w, b), act, failing in zip(ws, acts, sites, strict=True):
        s = y @ w.T + b
        n_in = w.shape[1]
        for p in failing:
            j, i = divmod(p, n_in)
            s[:, j] += gain * w[j, i] * clean[:, i] - w[j, i] * y[:, i]
        clean = act(clean @ w.T + b)
        y = act(s)
    return y


def _configs(fs: FaultSet, t: int) -> list[list[int]]:
    return [[] if s is None else [int(u) for u in s[t] if u >= 0] for s in fs.sites]


@pytest.mark.parametrize("fault, gain, v", [(SignFlip(), -1.0, 0.0), (HalfPlus(0.3), 0.5, 0.3)])
def test_new_neuron_fault_measured_as_stated(fault: NeuronFault, gain: float, v: float) -> None:
    model = _model(1)
    net = fb.Network.from_torch(model)
    g = torch.Generator().manual_seed(5)
    fs = sample_faults(net, fault, 12, failures=[2, 1], generator=g)
    x = net.domain.sample(7, generator=g).to(torch.float64)
    res = inject(net, x, fault, fs, dtype=torch.float64)
    xn = x.numpy()
    clean = np_neuron_faults(model, xn, [[], []], gain, v)
    moved = 0
    for t in range(fs.n_configs):
        want = np_neuron_faults(model, xn, _configs(fs, t), gain, v)
        np.testing.assert_allclose(res.outputs[t].numpy(), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.errors[t].numpy(), np.abs(want - clean).max(-1), rtol=1e-12, atol=1e-12)
        moved += int(np.abs(want - clean).max() > 1e-6)
    assert moved > 0  # the fault does change the outputs, so the comparison can fail


def test_new_neuron_fault_upstream_of_another() -> None:
    """Two failing neurons in consecutive layers: the downstream one sends -y of its *fault-free* value
    (the model's statement), not of its upstream-perturbed one."""
    model = _model(2)
    net = fb.Network.from_torch(model)
    fs = FaultSet.from_lists(2, {1: [0, 3], 2: [1]})
    x = net.domain.sample(5, generator=torch.Generator().manual_seed(0)).to(torch.float64)
    res = inject(net, x, SignFlip(), fs, dtype=torch.float64)
    want = np_neuron_faults(model, x.numpy(), [[0, 3], [1]], -1.0, 0.0)
    np.testing.assert_allclose(res.outputs[0].numpy(), want, rtol=1e-12, atol=1e-12)


def test_new_synapse_fault_measured_as_stated() -> None:
    model = _model(3)
    net = fb.Network.from_torch(model)
    g = torch.Generator().manual_seed(9)
    fs = sample_faults(net, SynapseSignFlip(), 10, failures=[2, 3, 1], generator=g)
    x = net.domain.sample(6, generator=g).to(torch.float64)
    res = inject(net, x, SynapseSignFlip(), fs, dtype=torch.float64)
    xn = x.numpy()
    for t in range(fs.n_configs):
        want = np_synapse_faults(model, xn, _configs(fs, t), -1.0)
        np.testing.assert_allclose(res.outputs[t].numpy(), want, rtol=1e-12, atol=1e-12)


@dataclass(frozen=True)
class StuckInRange(NeuronFault):
    """A failing neuron sends any value in [lo, hi] that the adversary picks (an interval that is not
    symmetric about 0)."""

    lo: float = 0.5
    hi: float = 2.0

    @property
    def name(self) -> str:
        return "stuck-in-range"

    @property
    def sent(self) -> Sent:
        return Sent(0.0, self.lo, self.hi)


def np_neuron_values(
    model: nn.Sequential, x: np.ndarray, sites: list[list[int]], values: list[np.ndarray]
) -> np.ndarray:
    """Outputs with neuron ``sites[l-1][n]`` of hidden layer l sending ``values[l-1][:, n]`` (per input)."""
    ws = _weights(model)
    y = x
    for (w, b), act, failing, v in zip(ws[:-1], ACTS, sites, values, strict=True):
        y = act(y @ w.T + b)
        for n, j in enumerate(failing):
            y[:, j] = v[:, n]
    w, b = ws[-1]
    return y @ w.T + b


@pytest.mark.parametrize("mode", ["random", "adversarial", "fixed"])
def test_new_valued_neuron_fault_sends_values_in_its_range(mode: str) -> None:
    model = _model(4)
    net = fb.Network.from_torch(model)
    fault = StuckInRange(0.5, 2.0)
    g = torch.Generator().manual_seed(2)
    fs = sample_faults(net, fault, 9, failures=[2, 1], generator=g)
    x = net.domain.sample(5, generator=g).to(torch.float64)
    res = inject(net, x, fault, fs, values=mode, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for v, s in zip(res.values, fs.sites, strict=True):
        assert v is not None and s is not None
        used = v.expand(-1, x.shape[0], -1)[(s >= 0)[:, None, :].expand(-1, x.shape[0], -1)]
        assert bool(((used >= 0.5) & (used <= 2.0)).all())
        if mode == "fixed":
            assert bool((used == 2.0).all())
        if mode == "adversarial":
            assert bool(((used == 0.5) | (used == 2.0)).all())
    for t in range(fs.n_configs):
        vals = [v[t].expand(x.shape[0], -1).numpy() for v in res.values if v is not None]
        want = np_neuron_values(model, x.numpy(), _configs(fs, t), vals)
        np.testing.assert_allclose(res.outputs[t].numpy(), want, rtol=1e-12, atol=1e-12)
