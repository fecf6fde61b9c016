"""Fault sets: T fault configurations as data, and how they are drawn.

A configuration of a counted fault model (:attr:`~faultbound.faults.Fault.counted`) names the failing
units of every layer: neurons of hidden layers 1..L, or synapses / weights into layers 1..L+1
(:func:`~faultbound.failures.layer_count`). :func:`sample_faults` draws either exactly :math:`f_l`
distinct units of layer l (uniformly among the :math:`\\binom{N_l}{f_l}` subsets) or each unit
independently with probability p (Bernoulli). A bit-flip model also draws, per failing unit, which
bit flips (uniformly among :attr:`~faultbound.faults.Fault.flippable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from faultbound.errors import InvalidArgumentError
from faultbound.failures import AnyNetwork, failure_counts, layer_count, n_units
from faultbound.faults import Fault, for_dtype

__all__ = ["FaultSet", "sample_faults", "first_faulty_layer", "first_per_config"]


@dataclass(frozen=True, eq=False)
class FaultSet:
    """T fault configurations, as data.

    ``sites[i]`` is a ``(T, k)`` long tensor of failing units of layer ``i + 1`` (flattened neuron
    index; for synapses the index of the synapse among the layer's synapses, row-major in the
    effective matrix; for weight bit flips the flat index into the weight tensor), padded with -1
    after the valid entries; ``None`` when nothing fails there. ``bits`` holds the flipped bit of
    each site (bit flips only); ``values`` fixed Byzantine values ``(T, k)`` (optional).
    Precision faults have no sites (every neuron is off).
    """

    n_configs: int
    sites: tuple[Tensor | None, ...]
    bits: tuple[Tensor | None, ...] = ()
    values: tuple[Tensor | None, ...] = ()

    def select(self, index: Tensor | slice) -> FaultSet:
        """The configurations ``index`` (a slice or a long tensor)."""

        def pick(ts: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
            return tuple(None if t is None else t[index] for t in ts)

        n = len(range(self.n_configs)[index]) if isinstance(index, slice) else int(index.numel())
        return FaultSet(n, pick(self.sites), pick(self.bits), pick(self.values))

    def compact(self) -> FaultSet:
        """Drop trailing all-padding columns (and layers where nothing fails)."""

        def keep(s: Tensor | None) -> int:
            if s is None or s.shape[1] == 0:
                return 0
            anyv = (s >= 0).any(0).nonzero()
            return int(anyv.max()) + 1 if anyv.numel() else 0

        ks = [keep(s) for s in self.sites]

        def cut(ts: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
            return tuple(None if t is None or ks[i] == 0 else t[:, : ks[i]] for i, t in enumerate(ts))

        return FaultSet(self.n_configs, cut(self.sites), cut(self.bits), cut(self.values))

    def config(self, t: int) -> dict[str, Any]:
        """Configuration ``t`` as JSON-ready lists (layer numbers start at 1)."""
        out: dict[str, Any] = {"sites": {}, "bits": {}, "values": {}}
        for name, ts in (("sites", self.sites), ("bits", self.bits), ("values", self.values)):
            for i, ti in enumerate(ts):
                if ti is None:
                    continue
                s = self.sites[i]
                valid = s[t] >= 0 if s is not None else torch.ones(ti.shape[1], dtype=torch.bool)
                vals = ti[t][valid].tolist()
                if vals:
                    out[name][str(i + 1)] = vals
        return out

    @staticmethod
    def from_lists(n_layers: int, sites: dict[int, list[int]], bits: dict[int, list[int]] | None = None) -> FaultSet:
        """One configuration from ``{layer: [unit, ...]}`` (layers numbered from 1)."""
        st: list[Tensor | None] = [None] * n_layers
        bt: list[Tensor | None] = [None] * n_layers
        for l, units in sites.items():
            if not 1 <= l <= n_layers:
                raise InvalidArgumentError(f"Expected layers in 1..{n_layers}, but got {l}.")
            if units:
                st[l - 1] = torch.tensor([units], dtype=torch.long)
                if bits is not None:
                    bt[l - 1] = torch.tensor([bits[l]], dtype=torch.long)
        return FaultSet(1, tuple(st), tuple(bt) if bits is not None else ())

def _choose(n: int, k: int, t: int, g: torch.Generator) -> Tensor:
    """``t`` rows of ``k`` distinct draws from ``range(n)``."""
    if k == 0:
        return torch.empty((t, 0), dtype=torch.long)
    if t * n <= (1 << 23):
        return torch.rand((t, n), generator=g).topk(k, dim=1).indices
    return torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(t)])


def sample_faults(
    net: AnyNetwork,
    fault: Fault,
    n_configs: int,
    failures: list[int] | tuple[int, ...] | None = None,
    rate: float | None = None,
    generator: torch.Generator | None = None,
) -> FaultSet:
    """Draw ``n_configs`` configurations: exactly ``failures[l]`` distinct units per layer (the
    paper's :math:`f_l`), or each unit independently with probability ``rate`` (Bernoulli).

    The counts are validated once, by :func:`~faultbound.failures.failure_counts`. A fault model
    that is not counted (precision: every neuron is off) has no sites. Byzantine values are drawn
    later by :func:`~faultbound.measure.engine.inject` (they depend on the value mode). A
    ``BitFlip(format="native")`` draws bits of the network's own format (:attr:`net.dtype`).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    fault = for_dtype(fault, net.dtype)  # a native bit flip: the bits of the network's format
    n_layers = layer_count(net, fault)
    if not fault.counted:
        failure_counts(net, fault, None)
        return FaultSet(n_configs, (None,) * n_layers)
    if (failures is None) == (rate is None):
        raise InvalidArgumentError("Expected exactly one of `failures` (counts per layer) or `rate`.")
    if n_configs < 0:
        raise InvalidArgumentError(f"Expected a number of configurations >= 0, but got {n_configs}.")
    counts = failure_counts(net, fault, failures) if failures is not None else None
    if rate is not None and not (0.0 <= rate <= 1.0):
        raise InvalidArgumentError(f"Expected `rate` in [0, 1], but got {rate}.")
    choices = torch.tensor(fault.flippable) if fault.flippable else None
    sites: list[Tensor | None] = []
    bits: list[Tensor | None] = []
    for l in range(1, n_layers + 1):
        n = n_units(net, fault, l)
        if counts is not None:
            s = _choose(n, counts[l - 1], n_configs, g) if counts[l - 1] else None
        else:
            assert rate is not None
            mask = torch.rand((n_configs, n), generator=g) < rate
            per = mask.sum(1)
            k = int(per.max()) if n_configs else 0
            if k == 0:
                s = None
            else:
                order = torch.sort(mask.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
                s = torch.where(torch.arange(k)[None, :] < per[:, None], order, -1)
        sites.append(s)
        if choices is not None:
            bits.append(None if s is None else choices[torch.randint(len(choices), s.shape, generator=g)])
    return FaultSet(n_configs, tuple(sites), tuple(bits) if choices is not None else ())


def first_faulty_layer(fault: Fault, fs: FaultSet, n_hidden: int) -> int:
    """The first layer where any configuration of ``fs`` fails (``L + 2`` when none does); for a
    model that is not counted, the first hidden layer with a non-zero magnitude."""
    if not fault.counted:
        nz = [l for l, e in enumerate(fault.magnitudes(n_hidden), start=1) if e > 0]
        return nz[0] if nz else n_hidden + 2
    for i, s in enumerate(fs.sites):
        if s is not None and bool((s >= 0).any()):
            return i + 1
    return n_hidden + 2


def first_per_config(fault: Fault, fs: FaultSet, n_hidden: int) -> Tensor:
    """First faulty layer of each configuration (``L + 2`` when none), ``(T,)``."""
    if not fault.counted:
        return torch.full((fs.n_configs,), first_faulty_layer(fault, fs, n_hidden), dtype=torch.long)
    out = torch.full((fs.n_configs,), n_hidden + 2, dtype=torch.long)
    for i in range(len(fs.sites) - 1, -1, -1):
        s = fs.sites[i]
        if s is not None and s.shape[1]:
            out = torch.where((s >= 0).any(1), i + 1, out)
    return out
