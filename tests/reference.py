"""Slow, obviously-correct references used by the tests.

* :func:`random_network` builds small random networks (dense or conv, any registered activation).
* :func:`faulty_forward` runs ONE failure configuration, layer by layer, replacing the outputs of
  failing neurons (or the contributions of failing synapses) exactly as the fault table says.
* :func:`brute_force` enumerates every failure set of the given sizes and several value
  assignments, over a batch of inputs, and returns the largest output error seen.
* :func:`printed_*` are the paper's printed formulas, written out term by term.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

import faultbound as fb
from faultbound.faults import Fault, Precision, SynapseFault
from faultbound.network.core import Network
from faultbound.nn import TunedSigmoid

ACTS = {
    "sigmoid": nn.Sigmoid,
    "tuned2": lambda: TunedSigmoid(2.0),
    "tuned05": lambda: TunedSigmoid(0.5),
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky": lambda: nn.LeakyReLU(0.1),
    "hardtanh": nn.Hardtanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def random_network(
    widths: Sequence[int],
    acts: Sequence[str],
    d_in: int = 3,
    n_out: int = 1,
    conv: bool | str = False,
    seed: int = 0,
    scale: float = 1.5,
    domain: tuple[float, float] = (0.0, 1.0),
) -> Network:
    """A random dense network d_in -> widths -> n_out; with ``conv`` a conv front end on 1x4x4:
    ``True`` / ``"stride"``: conv 3x3 stride 2 (8 neurons); ``"pool"``: conv 3x3 (32 neurons) whose
    outputs reach the next layer through AvgPool2d(2) (so that layer's map is a pool-then-linear chain).
    """
    g = torch.Generator().manual_seed(seed)
    mods: list[nn.Module] = []
    if conv == "pool":
        mods += [nn.Conv2d(1, 2, 3, padding=1), ACTS[acts[0]](), nn.AvgPool2d(2), nn.Flatten()]
        prev = 2 * 2 * 2
        rest_w, rest_a = widths[1:], acts[1:]
        shape: tuple[int, ...] = (1, 4, 4)
    elif conv:
        c = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        mods += [c, ACTS[acts[0]](), nn.Flatten()]
        prev = 2 * 2 * 2
        rest_w, rest_a = widths[1:], acts[1:]
        shape = (1, 4, 4)
    else:
        prev = d_in
        rest_w, rest_a = widths, acts
        shape = (d_in,)
    for w, a in zip(rest_w, rest_a, strict=True):
        mods += [nn.Linear(prev, w), ACTS[a]()]
        prev = w
    mods.append(nn.Linear(prev, n_out))
    model = nn.Sequential(*mods)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * scale)
    return fb.Network.from_torch(model, domain=domain, input_shape=shape)


def probe_points(net: Network, n_random: int = 24, seed: int = 0, max_corners: int = 64) -> Tensor:
    """Domain corners (all of them when few, else a random subset) and uniform random points."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = net.domain.lo.flatten(), net.domain.hi.flatten()
    d = lo.numel()
    if 2**d <= max_corners:
        bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)
    else:
        bits = (torch.rand((max_corners, d), generator=g) < 0.5).to(torch.float64)
    corners = lo + bits * (hi - lo)
    rand = lo + torch.rand((n_random, d), generator=g, dtype=torch.float64) * (hi - lo)
    return torch.cat([corners, rand]).reshape(-1, *net.input_shape)


def faulty_forward(
    net: Network,
    x: Tensor,
    neuron_faults: dict[int, dict[int, float | None]] | None = None,
    synapse_faults: dict[int, dict[tuple[int, int], float | None]] | None = None,
    offsets: dict[int, Tensor] | None = None,
) -> Tensor:
    """One configuration, the obvious way.

    Args:
        neuron_faults: ``{layer l (1..L): {neuron j: value sent (None = crash = 0)}}``.
        synapse_faults: ``{layer l (1..L+1): {(j, i): value transmitted instead of w_ji y_i}}``
            (None = crash = 0).
        offsets: ``{layer l: tensor of per-neuron offsets}`` added to layer l's outputs (precision).
    """
    neuron_faults = neuron_faults or {}
    synapse_faults = synapse_faults or {}
    offsets = offsets or {}
    y = x
    for layer in net.layers:
        l = layer.index
        s = layer.pre(y)
        if l in synapse_faults:
            A = layer.effective_matrix()
            yp = y.reshape(y.shape[0], -1)
            s_flat = s.reshape(s.shape[0], -1).clone()
            for (j, i), v in synapse_faults[l].items():
                sent = 0.0 if v is None else v
                s_flat[:, j] = s_flat[:, j] - A[j, i] * yp[:, i] + sent
            s = s_flat.reshape(s.shape)
        if layer.activation is None:
            y = s
            break
        y = layer.activation(s)
        flat = y.reshape(y.shape[0], -1).clone()
        for j, v in neuron_faults.get(l, {}).items():
            flat[:, j] = 0.0 if v is None else v
        if l in offsets:
            flat = flat + offsets[l]
        y = flat.reshape(y.shape)
    return y.reshape(x.shape[0], -1)


def _value_choices(fault: Fault, k: int, g: torch.Generator, n_random: int = 2) -> Iterator[tuple[float | None, ...]]:
    if isinstance(fault, (fb.Crash, fb.SynapseCrash, fb.StuckAt)):
        yield (None,) * k
        return
    c = float(fault.capacity)  # type: ignore[attr-defined]
    if k <= 3:
        yield from itertools.product([-c, c], repeat=k)
    else:
        yield (c,) * k
        yield (-c,) * k
    for _ in range(n_random):
        yield tuple(float(v) for v in (torch.rand(k, generator=g, dtype=torch.float64) * 2 - 1) * c)


def brute_force(net: Network, failures: Sequence[int] | None, fault: Fault, x: Tensor, seed: int = 0) -> float:
    """Largest :math:`\\|F(x) - F_{fail}(x)\\|_\\infty` over every failure set of the given sizes, several
    value assignments (all sign patterns at +-C when few, random values), and all inputs ``x``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean = net.forward(x)
        worst = 0.0
        if isinstance(fault, Precision):
            for _ in range(16):
                offs = {}
                for l, lam in enumerate(fault.errors, start=1):
                    n = net.layers[l - 1].width
                    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
                    offs[l] = sign * lam
                worst = max(worst, float((faulty_forward(net, x, offsets=offs) - clean).abs().max()))
            # and every offset at +lambda / -lambda
            for sgn in (1.0, -1.0):
                offs = {
                    l: torch.full((net.layers[l - 1].width,), sgn * lam, dtype=torch.float64)
                    for l, lam in enumerate(fault.errors, start=1)
                }
                worst = max(worst, float((faulty_forward(net, x, offsets=offs) - clean).abs().max()))
            return worst
        assert failures is not None
        per_layer_sets = []
        for l, f in enumerate(failures, start=1):
            layer = net.layers[l - 1]
            if isinstance(fault, SynapseFault):
                A = layer.effective_matrix()
                units = [tuple(int(v) for v in idx) for idx in torch.nonzero(A)]
            else:
                units = list(range(layer.width))
            per_layer_sets.append(list(itertools.combinations(units, f)))
        for choice in itertools.product(*per_layer_sets):
            flat_units = [(l, u) for l, us in enumerate(choice, start=1) for u in us]
            k = len(flat_units)
            for values in _value_choices(fault, k, g):
                nf: dict[int, dict[int, float | None]] = {}
                sf: dict[int, dict[tuple[int, int], float | None]] = {}
                for (l, u), v in zip(flat_units, values, strict=True):
                    if isinstance(fault, fb.StuckAt):
                        v = fault.value
                    if isinstance(fault, SynapseFault):
                        sf.setdefault(l, {})[u] = v  # type: ignore[index]
                    else:
                        nf.setdefault(l, {})[u] = v  # type: ignore[index]
                out = faulty_forward(net, x, nf, sf)
                worst = max(worst, float((out - clean).abs().max()))
        return worst


def byzantine_deviation_forward_worst(net: Network, failures: Sequence[int], capacity: float, x: Tensor) -> float:
    """Worst error when failing neurons send y + lambda with |lambda| <= C (the printed reading)."""
    with torch.no_grad():
        clean_acts = net.activations(x)
        clean = clean_acts[-1]
        worst = 0.0
        sets = [list(itertools.combinations(range(net.layers[l].width), f)) for l, f in enumerate(failures)]
        for choice in itertools.product(*sets):
            units = [(l + 1, u) for l, us in enumerate(choice) for u in us]
            for signs in itertools.product([-1.0, 1.0], repeat=len(units)):
                y = x
                for layer in net.layers:
                    s = layer.pre(y)
                    if layer.activation is None:
                        y = s
                        break
                    flat = layer.activation(s).reshape(x.shape[0], -1).clone()
                    nominal = clean_acts[layer.index].reshape(x.shape[0], -1)
                    for (l, u), sg in zip(units, signs, strict=True):
                        if l == layer.index:
                            flat[:, u] = nominal[:, u] + sg * capacity
                    y = flat.reshape(s.shape)
                worst = max(worst, float((y.reshape(x.shape[0], -1) - clean).abs().max()))
        return worst


def printed_fep(N: Sequence[int], w: Sequence[float], K: float, f: Sequence[int], C: float) -> float:  # noqa: N803
    """Theorem 2 as printed, term by term: C sum_l f_l K^(L-l) w_m^(L+1) prod_{l'>l} (N_l' - f_l') w_m^(l')."""
    L = len(N)
    total = 0.0
    for l in range(1, L + 1):
        prod = 1.0
        for lp in range(l + 1, L + 1):
            prod *= (N[lp - 1] - f[lp - 1]) * w[lp - 1]
        total += C * f[l - 1] * K ** (L - l) * w[L] * prod
    return total


def printed_theorem5(N: Sequence[int], w: Sequence[float], K: float, lam: Sequence[float]) -> float:  # noqa: N803
    """Theorem 5 as printed: sum_l K^(L-l) lambda_l prod_{l'=l..L} N_l' w_m^(l'+1)."""
    L = len(N)
    total = 0.0
    for l in range(1, L + 1):
        prod = 1.0
        for lp in range(l, L + 1):
            prod *= N[lp - 1] * w[lp]
        total += K ** (L - l) * lam[l - 1] * prod
    return total


def synapse_reference(  # noqa: N803
    N_in: int, N: Sequence[int], w: Sequence[float], K: float, g: Sequence[int], delta: Sequence[float]
) -> float:
    """The Lemma 2 reduction for dense networks, term by term: a layer-l synapse adds delta_l to one
    sum, becomes K delta_l at its neuron (l <= L), then is multiplied by K w_m N at every later layer."""
    L = len(N)
    total = 0.0
    for l in range(1, L + 2):
        if l == L + 1:
            total += g[l - 1] * delta[l - 1]
            continue
        term = g[l - 1] * delta[l - 1] * K
        for lp in range(l + 1, L + 1):
            term *= K * w[lp - 1]
        # the mass at layer l reaches each later layer's sums through all its neurons
        mult = 1.0
        for lp in range(l + 1, L + 1):
            mult *= N[lp - 1]
        total += term * mult * w[L]
    return total


def math_isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
