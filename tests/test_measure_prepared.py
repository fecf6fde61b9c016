"""Prepared engine data belongs to the caller: ``prepare(net, dtype)`` and the engine's graph view of a
layered network (``graph_view(net)``) are cached beside the network, never written into the frozen
Network, and do not keep the network alive."""

from __future__ import annotations

import functools
import gc
import weakref

import torch

import faultbound as fb
from faultbound.measure import inject, sample_faults
from faultbound.measure.engine import graph_view
from faultbound.measure.state import prepare
from tests.measure_helpers import make_net


def test_prepare_is_cached_per_network_and_dtype() -> None:
    net = make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1)
    other = make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=1)
    p = prepare(net, torch.float64)
    assert prepare(net, torch.float64) is p
    assert prepare(net, torch.float32) is not p
    assert prepare(other, torch.float64) is not p
    assert p.net is net and p.dtype == torch.float64


def test_inject_writes_nothing_into_the_network() -> None:
    net = make_net([16, 8], ["relu", "sigmoid"], d_in=5, n_out=2, seed=4)
    before = set(vars(net))
    fs = sample_faults(net, fb.SynapseCrash(), 6, failures=[1, 1, 1])
    inject(net, net.domain.sample(3), fb.SynapseCrash(), fs)
    fs = sample_faults(net, fb.Crash(), 6, failures=[1, 0])
    inject(net, net.domain.sample(3), fb.Crash(), fs, dtype=torch.float64)
    own = {k for k, v in vars(type(net)).items() if isinstance(v, functools.cached_property)}
    assert set(vars(net)) - before <= own  # at most the Network's own cached properties appeared
    assert graph_view(net) is graph_view(net)  # the engine's graph view was made once, outside the network


def test_prepared_data_does_not_keep_the_network_alive() -> None:
    net = make_net([6, 5], ["sigmoid", "tanh"], d_in=4, n_out=3, seed=2)
    inject(net, net.domain.sample(2), fb.Crash(), sample_faults(net, fb.Crash(), 3, failures=[1, 1]))
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None
