"""The canonical Network: hidden layers 1..L and the linear output layer L+1, as in the paper.

Every later stage (bounds, the fault-injection engine, the applications) reads only this object,
so there is exactly one definition of what the network computes:

.. math::

    y^{(0)} = x,\\qquad s^{(l)} = A^{(l)} y^{(l-1)} + b^{(l)},\\qquad
    y^{(l)} = \\varphi_l(s^{(l)})\\ (1 \\le l \\le L),\\qquad F(x) = s^{(L+1)}.

A *neuron* of layer l is one entry of :math:`y^{(l)}` (for a convolution, one
(channel, row, column)). Weights are stored in float64; the forward pass runs in the dtype of its
input. ``Network.dtype`` records the format the model computes in (float16, bfloat16, float32 or
float64, :mod:`faultbound.formats`): the measurement engine runs in it by default, and the bounds add
the rounding allowance of that format (:mod:`faultbound.bounds.rounding`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from faultbound.errors import InvalidArgumentError, ModelLoadError, UnboundedError, UnsupportedModelError
from faultbound.formats import format_dtype, format_name, unit_roundoff
from faultbound.network.activations import Activation
from faultbound.network.ops import Op
from faultbound.network.readers.module import warn_train_mode

__all__ = ["Box", "Layer", "Network", "LayerIntervals", "check_against", "read_inputs", "set_module_reader"]

#: Largest effective weight matrix (entries) that is materialised for w_m / fan-in / synapses.
MAX_EFFECTIVE_ENTRIES = 50_000_000


@dataclass(frozen=True, eq=False)
class Box:
    """An input domain :math:`\\prod_i [lo_i, hi_i]` (float64 tensors of the input shape)."""

    lo: Tensor
    hi: Tensor

    @staticmethod
    def make(domain: tuple[object, object] | None, shape: tuple[int, ...]) -> Box:
        """Build a box of ``shape`` from ``(lo, hi)`` scalars or arrays; ``None`` means [0, 1]^d.

        Any ``domain`` is accepted and checked here (a pair of numbers or arrays, else
        :class:`~faultbound.errors.InvalidArgumentError`): this is where user domains are validated.
        """
        if domain is None:
            domain = (0.0, 1.0)
        try:
            lo_raw, hi_raw = domain
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"Expected `domain` as a pair (lo, hi), but got {domain!r}.") from None
        lo = _as_box_side(lo_raw, shape, "lo")
        hi = _as_box_side(hi_raw, shape, "hi")
        if bool((lo > hi).any()):
            raise InvalidArgumentError("Expected `domain` with lo <= hi for every feature.")
        return Box(lo, hi)

    @property
    def center(self) -> Tensor:
        return (self.lo + self.hi) / 2

    @property
    def radius(self) -> Tensor:
        return (self.hi - self.lo) / 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` points drawn uniformly from the box, float64, shape ``(n, *shape)``."""
        u = torch.rand((n, *self.lo.shape), dtype=torch.float64, generator=generator)
        return self.lo + u * (self.hi - self.lo)

    def describe(self) -> str:
        lo, hi = float(self.lo.min()), float(self.hi.max())
        uniform = bool((self.lo == self.lo.flatten()[0]).all() and (self.hi == self.hi.flatten()[0]).all())
        return f"[{lo:g}, {hi:g}]^{self.lo.numel()}" if uniform else f"box in [{lo:g}, {hi:g}]"


def _as_box_side(v: object, shape: tuple[int, ...], name: str) -> Tensor:
    try:
        t = torch.as_tensor(np.asarray(v, dtype=np.float64))
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"Expected domain `{name}` to be numbers, but got {v!r}.") from None
    try:
        t = torch.broadcast_to(t, shape).clone()
    except RuntimeError:
        raise InvalidArgumentError(
            f"Expected domain `{name}` to be a scalar or to have the input shape {shape}, "
            f"but got shape {tuple(t.shape)}."
        ) from None
    if not bool(torch.isfinite(t).all()):
        raise InvalidArgumentError(f"Expected a finite domain, but `{name}` has NaN or inf.")
    return t


@dataclass(frozen=True)
class LayerIntervals:
    """Interval propagation of the clean network over the domain, for one layer.

    ``s_lo, s_hi`` bound the pre-activations :math:`s^{(l)}`, ``y_lo, y_hi`` the outputs.
    """

    s_lo: Tensor
    s_hi: Tensor
    y_lo: Tensor
    y_hi: Tensor

    @property
    def y_abs(self) -> Tensor:
        """:math:`\\max |y_j|` over the domain, per neuron."""
        return torch.maximum(self.y_lo.abs(), self.y_hi.abs())


@dataclass(frozen=True, eq=False)
class Layer:
    """Layer l: an affine chain ``ops`` then ``activation`` (``None`` for the output layer L+1)."""

    index: int
    ops: tuple[Op, ...]
    activation: Activation | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    source: str = ""

    @property
    def width(self) -> int:
        """:math:`N_l`, the number of neurons (output units for the output layer)."""
        return math.prod(self.out_shape)

    @property
    def in_width(self) -> int:
        return math.prod(self.in_shape)

    @property
    def kind(self) -> str:
        return "conv" if any(o.kind == "conv" for o in self.ops) else "dense"

    def pre(self, y_prev: Tensor) -> Tensor:
        """:math:`s^{(l)} = A^{(l)} y^{(l-1)} + b^{(l)}` on a batch ``(B, *in_shape)``."""
        for op in self.ops:
            y_prev = op.forward(y_prev)
        return y_prev

    def linear(self, y_prev: Tensor) -> Tensor:
        """:math:`A^{(l)} y^{(l-1)}` (no bias)."""
        for op in self.ops:
            y_prev = op.linear(y_prev)
        return y_prev

    def abs_linear(self, e: Tensor) -> Tensor:
        """An upper bound of :math:`|A^{(l)}|\\,e` for ``e >= 0`` (exact for a single weighted op)."""
        for op in self.ops:
            e = op.abs_linear(e)
        return e

    def forward(self, y_prev: Tensor) -> Tensor:
        s = self.pre(y_prev)
        return s if self.activation is None else self.activation(s)

    @property
    def _simple(self) -> Op | None:
        """The single weighted op when the chain is that op plus flattens, else ``None``."""
        weighted = [o for o in self.ops if not o.reshape_only]
        if len(weighted) == 1 and weighted[0].weighted:
            return weighted[0]
        return None

    @property
    def weighted_op(self) -> Op | None:
        """The single weighted op (dense or convolution) when the chain is that op plus flattens."""
        return self._simple

    def effective_matrix(self) -> Tensor:
        """:math:`A^{(l)}` as a dense (N_l, N_{l-1}) float64 matrix (materialised once, cached)."""
        return self._effective_matrix

    @cached_property
    def _effective_matrix(self) -> Tensor:
        simple = self._simple
        dense = None if simple is None else simple.dense_weight
        if dense is not None:
            return dense
        n_in, n_out = self.in_width, self.width
        if n_in * n_out > MAX_EFFECTIVE_ENTRIES:
            raise InvalidArgumentError(
                f"Layer {self.index} ({self.source}) has an effective weight matrix of "
                f"{n_out} x {n_in} entries, above the limit of {MAX_EFFECTIVE_ENTRIES}."
            )
        cols = []
        for start in range(0, n_in, 4096):
            stop = min(n_in, start + 4096)
            eye = torch.zeros((stop - start, n_in), dtype=torch.float64)
            eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            cols.append(self.linear(eye.reshape(-1, *self.in_shape)).reshape(stop - start, -1))
        return torch.cat(cols, 0).T.contiguous()

    @cached_property
    def w_max(self) -> float:
        """:math:`w_m^{(l)} = \\max_{j,i} |w_{ji}^{(l)}|` over the synapses into layer l."""
        simple = self._simple
        if simple is not None:
            return simple.abs_max()
        return float(self.effective_matrix().abs().max())

    @cached_property
    def fan_in(self) -> int:
        """:math:`R(l)`: how many neurons of layer l-1 feed one neuron of layer l, at most."""
        simple = self._simple
        got = None if simple is None else simple.fan_in(self.in_width)
        if got is not None:
            return got
        return int((self.effective_matrix() != 0).sum(1).max())

    @cached_property
    def n_synapses(self) -> int:
        """Number of synapses into layer l: the non-zero entries of :math:`A^{(l)}` (counted by the
        single weighted op without a matrix where it can, :meth:`Op.n_synapses`)."""
        simple = self._simple
        got = None if simple is None else simple.n_synapses(self.in_shape, self.ops[0] is simple)
        if got is not None:
            return got
        return int((self.effective_matrix() != 0).sum())

    def describe(self) -> str:
        parts = [d for d in (o.describe() for o in self.ops) if d is not None]
        return " + ".join(parts) or "identity"


@dataclass(frozen=True, eq=False)
class Network:
    """A feed-forward network in the paper's form (see the module docstring).

    Build one with :meth:`from_torch` or :func:`faultbound.load`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import faultbound as fb
        >>> torch.manual_seed(0) and None
        >>> net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)))
        >>> net.L, net.widths
        (1, [3])
    """

    layers: tuple[Layer, ...]
    domain: Box
    input_shape: tuple[int, ...]
    #: The floating format the model computes in (set by every reader; weights stay float64).
    dtype: torch.dtype = torch.float32
    # Nothing outside this class writes into a Network: its derived values are its own cached
    # properties, and the engine's and tight's prepared data are kept by them (weakly keyed).

    # ----------------------------------------------------------------- construction
    @staticmethod
    def from_torch(
        module: nn.Module,
        domain: tuple[object, object] | None = None,
        input_shape: Sequence[int] | None = None,
        check: bool = True,
    ) -> Network:
        """The layered Network of an ``nn.Module`` whose computation is of the paper's form.

        The module is read by the one module reader, :func:`faultbound.load`'s: exported with
        ``torch.export`` into the DAG
        (:func:`~faultbound.network.readers.graph_export.graph_from_module`), whose layered view
        (:func:`~faultbound.network.passes.layered_view`) this is.

        The module itself is not changed: a module in training mode is read with eval-mode
        semantics (dropout off, batch norms folded from their running statistics), stays in
        training mode, and a ``UserWarning`` says so when the mode changes its function
        (:func:`~faultbound.network.readers.module.train_mode_modules`).

        Args:
            module: the model; analysed with eval-mode semantics (batch norms folded).
            domain: ``(lo, hi)`` scalars or arrays of the input shape; default [0, 1]^d.
            input_shape: the shape of one input, required unless the first layer is a ``Linear``
                (e.g. ``(1, 28, 28)``).
            check: compare the Network's forward pass with the module's on probe inputs.

        Raises:
            UnsupportedModelError: naming every unsupported operator at once, or why the module is
                not a layered network.
            ModelLoadError: when the extracted Network disagrees with the module.
        """
        warn_train_mode(module, stacklevel=2)
        if _MODULE_READER is None:  # pragma: no cover - set when faultbound.network.readers.files is imported
            raise ModelLoadError("No module reader: import faultbound first.")
        return _MODULE_READER(module, domain, None if input_shape is None else tuple(input_shape), check)

    @staticmethod
    def from_chain(
        items: Sequence[tuple[str, Op | Activation]],
        input_shape: tuple[int, ...],
        domain: tuple[object, object] | None,
        dtype: torch.dtype = torch.float32,
    ) -> Network:
        """Group a flat list of named ops and activations into layers 1..L+1 and check them.

        The layered view of a DAG (:func:`faultbound.network.passes.layered_view`) ends here, so
        there is one grouping rule: a hidden layer is the chain of affine ops up to and including an
        activation; what follows the last activation is the linear output layer L+1. Ops are taken
        as given (batch norms are folded when the DAG is built).

        Raises:
            UnsupportedModelError: no activation, an activation without a linear op before it, no
                weighted op after the last activation, shapes that do not fit, NaN or infinite
                weights, or a layer of width 0.
        """
        groups: list[tuple[list[Op], Activation | None, list[str]]] = []
        ops: list[Op] = []
        names: list[str] = []
        for name, it in items:
            if isinstance(it, Activation):
                if not ops:
                    prev = groups[-1][2][-1] if groups else "the input"
                    raise UnsupportedModelError(
                        f"Expected a linear layer before activation {name}, but it follows {prev} directly."
                    )
                groups.append((ops, it, names + [name]))
                ops, names = [], []
            else:
                ops.append(it)
                names.append(name)
        if not groups:
            raise UnsupportedModelError(
                "Expected at least one hidden layer (a linear layer followed by an activation), "
                "but the model has no activation."
            )
        if not any(o.weighted for o in ops):
            last = groups[-1][2][-1]
            raise UnsupportedModelError(
                f"Expected a linear output layer after the last activation ({last}), as in the paper; "
                "apply any final activation outside the model."
            )
        groups.append((ops, None, names))

        layers: list[Layer] = []
        x = torch.zeros((1, *input_shape), dtype=torch.float64)
        for index, (gops, act, gnames) in enumerate(groups, start=1):
            in_shape = tuple(x.shape[1:])
            try:
                for op in gops:
                    x = op.forward(x)
            except RuntimeError as e:
                raise UnsupportedModelError(
                    f"Shapes do not fit at layer {index} ({', '.join(gnames)}) with input shape "
                    f"{in_shape}: {str(e).splitlines()[0]}"
                ) from None
            for op in gops:
                for t in op.tensors():
                    if not bool(torch.isfinite(t).all()):
                        raise UnsupportedModelError(f"Layer {index} ({', '.join(gnames)}) has NaN or infinite weights.")
            if x[0].numel() == 0 or any(s == 0 for s in in_shape):
                raise UnsupportedModelError(
                    f"Layer {index} ({', '.join(gnames)}) has 0 neurons (width 0, output shape "
                    f"{tuple(x.shape[1:])}): a layer without neurons computes nothing and has no fraction to fail."
                )
            if act is not None and x.dim() > 2 and x.dim() != 4:
                raise UnsupportedModelError(f"Unexpected activation shape {tuple(x.shape)}.")
            layers.append(Layer(index, tuple(gops), act, in_shape, tuple(x.shape[1:]), ", ".join(gnames)))
        return Network(tuple(layers), Box.make(domain, input_shape), input_shape, format_dtype(dtype))

    def with_domain(self, domain: tuple[object, object] | None) -> Network:
        """The same network over another input domain."""
        return Network(self.layers, Box.make(domain, self.input_shape), self.input_shape, self.dtype)

    def with_dtype(self, dtype: torch.dtype) -> Network:
        """The same network computing in another floating format."""
        return Network(self.layers, self.domain, self.input_shape, format_dtype(dtype))

    # ----------------------------------------------------------------- shape
    @property
    def L(self) -> int:  # noqa: N802 - the paper's notation
        """Number of hidden layers."""
        return len(self.layers) - 1

    @property
    def hidden(self) -> tuple[Layer, ...]:
        return self.layers[:-1]

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    @property
    def widths(self) -> list[int]:
        """:math:`[N_1, \\dots, N_L]`."""
        return [layer.width for layer in self.hidden]

    @property
    def n_outputs(self) -> int:
        return self.output.width

    @property
    def site_predecessors(self) -> tuple[tuple[int, ...], ...]:
        """For each hidden layer (0-based), the hidden layers it reads: none for layer 1 (it reads
        the inputs), layer l-1 for layer l (the chain case of
        :attr:`GraphNetwork.site_predecessors <faultbound.network.graph.GraphNetwork.site_predecessors>`)."""
        return ((),) + tuple((l,) for l in range(self.L - 1))

    @property
    def output_sites(self) -> tuple[int, ...]:
        """The hidden layers the output layer reads: the last one (0-based)."""
        return (self.L - 1,)

    @property
    def n_params(self) -> int:
        n = 0
        for layer in self.layers:
            for op in layer.ops:
                n += op.n_params
        return n

    @property
    def w_max(self) -> list[float]:
        """:math:`[w_m^{(1)}, \\dots, w_m^{(L+1)}]`."""
        return [layer.w_max for layer in self.layers]

    @property
    def K(self) -> list[float]:  # noqa: N802
        """Lipschitz constant of each hidden layer's activation."""
        return [cast(Activation, layer.activation).K for layer in self.hidden]  # hidden layers have one

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """:math:`F(x)` for a batch ``(B, *input_shape)``, in ``x``'s dtype, shape (B, n_outputs)."""
        for layer in self.layers:
            x = layer.forward(x)
        return x.reshape(x.shape[0], -1)

    __call__ = forward

    def activations(self, x: Tensor) -> list[Tensor]:
        """``[y^(0) = x, y^(1), ..., y^(L), F(x)]`` for a batch."""
        ys = [x]
        for layer in self.layers:
            ys.append(layer.forward(ys[-1]))
        ys[-1] = ys[-1].reshape(x.shape[0], -1)
        return ys

    # ----------------------------------------------------------------- intervals
    def intervals(self) -> list[LayerIntervals]:
        """Interval propagation over the domain, for layers 1..L+1 (cached); see :meth:`box_intervals`."""
        return self._domain_intervals

    @cached_property
    def _domain_intervals(self) -> list[LayerIntervals]:
        return [
            LayerIntervals(iv.s_lo[0], iv.s_hi[0], iv.y_lo[0], iv.y_hi[0])
            for iv in self.box_intervals(self.domain.lo.unsqueeze(0), self.domain.hi.unsqueeze(0))
        ]

    def as_inputs(self, X: Any) -> Tensor:
        """The one reading of user inputs (:func:`read_inputs`)."""
        return read_inputs(X, self.input_shape)

    def box_intervals(self, lo: Tensor, hi: Tensor) -> list[LayerIntervals]:
        """Interval propagation of a batch of input boxes ``[lo, hi]`` (``(B, *input_shape)``, float64).

        With centre c and radius r of the previous layer's box,
        :math:`s \\in [A c + b - |A| r,\\ A c + b + |A| r]` (widened outward by a relative 1e-12 for
        rounding); the activation's exact image gives the outputs' box. Returns layers 1..L+1, each
        with a leading batch dimension.
        """
        out: list[LayerIntervals] = []
        with torch.no_grad():
            for layer in self.layers:
                c, r = (lo + hi) / 2, (hi - lo) / 2
                sc = layer.pre(c)
                sr = layer.abs_linear(r)
                slack = 1e-12 * (sc.abs() + sr)
                s_lo, s_hi = sc - sr - slack, sc + sr + slack
                if layer.activation is None:
                    y_lo, y_hi = s_lo, s_hi
                else:
                    y_lo, y_hi = layer.activation.image(s_lo, s_hi)
                out.append(LayerIntervals(s_lo, s_hi, y_lo, y_hi))
                lo, hi = y_lo, y_hi
        return out

    def value_bound(self, l: int) -> float:
        """:math:`Y_l = \\max_j \\sup_x |y_j^{(l)}(x)|` for l = 0..L (l = 0: the inputs).

        For a bounded activation this is :math:`\\max|\\varphi|` (the paper's C for crashes); for
        an unbounded one it comes from interval propagation over the domain (ERRATA 7).
        """
        if l == 0:
            return float(torch.maximum(self.domain.lo.abs(), self.domain.hi.abs()).max())
        act = self.layers[l - 1].activation
        assert act is not None
        if act.bounded:
            return act.max_abs
        return float(self.intervals()[l - 1].y_abs.max())

    def value_bound_domain(self, l: int) -> float:
        """Like :meth:`value_bound` but always from interval propagation (never above it)."""
        if l == 0:
            return self.value_bound(0)
        return min(self.value_bound(l), float(self.intervals()[l - 1].y_abs.max()))

    def require_bounded_values(self) -> None:
        """Raise :class:`UnboundedError` if some hidden value has no finite bound."""
        for l in range(1, self.L + 1):
            if not math.isfinite(self.value_bound(l)):
                act = self.layers[l - 1].activation
                assert act is not None  # a hidden layer
                raise UnboundedError(
                    f"Layer {l} ({act.name}) is unbounded over the domain; give a bounded input domain."
                )

    # ----------------------------------------------------------------- export
    def to_torch(self, dtype: torch.dtype = torch.float32) -> nn.Sequential:
        """An ``nn.Sequential`` computing the same function (flatten/pool/affine as modules)."""
        mods: list[nn.Module] = []
        for layer in self.layers:
            for op in layer.ops:
                mods.append(op.to_module(dtype))
            if layer.activation is not None:
                mods.append(layer.activation.torch_module())
        return nn.Sequential(*mods).to(dtype).eval()

    def summary(self) -> dict[str, object]:
        """A JSON-ready description: per layer width, fan-in, w_m, activation, K, range."""
        rows = []
        for layer in self.layers:
            act = layer.activation
            rows.append(
                {
                    "layer": layer.index,
                    "kind": "output" if act is None else layer.kind,
                    "ops": layer.describe(),
                    "width": layer.width,
                    "shape": list(layer.out_shape),
                    "fan_in": layer.fan_in,
                    "w_max": layer.w_max,
                    "activation": None if act is None else act.name,
                    "K": None if act is None else act.K,
                    "range": None if act is None else [act.lo, act.hi],
                }
            )
        return {
            "input_shape": list(self.input_shape),
            "domain": self.domain.describe(),
            "format": format_name(self.dtype),
            "L": self.L,
            "widths": self.widths,
            "n_outputs": self.n_outputs,
            "n_params": self.n_params,
            "layers": rows,
        }


#: The module reader behind :meth:`Network.from_torch`
#: (:func:`faultbound.network.readers.files.network_from_module`), set by that module when it is
#: imported (as :mod:`faultbound` does): the reader builds on this module, so this module does
#: not import it.
_MODULE_READER: Callable[..., Network] | None = None


def set_module_reader(reader: Callable[..., Network]) -> None:
    """Install ``reader(module, domain, input_shape, check) -> Network`` behind :meth:`Network.from_torch`."""
    global _MODULE_READER
    _MODULE_READER = reader


def _check_points(net: Any, n: int = 16, seed: int = 0) -> Tensor:
    """Where a reader compares a Network with its model: the domain's two extreme corners, its
    centre, and ``n`` uniform samples (from a generator of its own)."""
    g = torch.Generator().manual_seed(seed)
    d = net.domain
    return torch.cat([d.lo[None], d.hi[None], d.center[None], d.sample(n, g)], 0)


#: How far a model and its extracted network, both run in the model's format, may differ on a probe
#: input, in units of the format's unit roundoff u times the output scale (at least 1e-4 of the scale,
#: the float32/float64 tolerance): two evaluation orders of the same network differ by a few
#: roundings per node, amplified by the layers after it; a wrong extraction differs by the size of a
#: weight.
PROBE_ULPS = 32


def check_against(net: Any, reference: Callable[[Tensor], Tensor], what: str) -> None:
    """Fail with :class:`ModelLoadError` unless ``net`` equals ``reference`` on check points.

    Both run in the network's format (``net.dtype``): the probe points of :func:`_check_points`
    are rounded to it, ``reference`` receives them as float64 and runs the model in its own format,
    and ``net`` runs in ``net.dtype``. Equal means

    .. math:: \\max |F(x) - G(x)| \\le \\max(10^{-4},\\ 32\\,u) \\cdot \\max(1, \\max |G(x)|)

    with u the format's unit roundoff (:func:`~faultbound.formats.unit_roundoff`: 0.016 of the scale
    for float16, 0.125 for bfloat16, 1e-4 for float32 and float64), and the same output shape.
    """
    dtype = net.dtype
    x = _check_points(net).to(dtype).to(torch.float64)
    with torch.no_grad():
        mine = net.forward(x.to(dtype)).to(torch.float64)
    theirs = reference(x).to(torch.float64)
    if tuple(mine.shape) != tuple(theirs.shape):
        raise ModelLoadError(
            f"The extracted network outputs shape {tuple(mine.shape[1:])}, but {what} outputs "
            f"{tuple(theirs.shape[1:])}."
        )
    scale = max(1.0, float(theirs.abs().max()))
    err = float((mine - theirs).abs().max())
    tol = max(1e-4, PROBE_ULPS * unit_roundoff(dtype))
    if not math.isfinite(err) or err > tol * scale:
        raise ModelLoadError(
            f"The extracted network differs from {what} on probe inputs in {format_name(dtype)} "
            f"(max difference {err:.3g}, tolerance {tol * scale:.3g});"
            " refusing to analyse a network that does not compute what the model computes."
        )


def read_inputs(X: Any, input_shape: tuple[int, ...]) -> Tensor:
    """The one reading of user inputs: ``X`` (an array, tensor or nested list of
    ``(n, *input_shape)`` or flat rows ``(n, d)``, or one flat input ``(d,)``) as a float64
    batch ``(n, *input_shape)``; refused in one line when the shape does not fit or a value is
    not finite."""
    try:
        x = torch.as_tensor(np.asarray(X.detach().cpu() if isinstance(X, Tensor) else X, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"Expected numeric inputs, but got {type(X).__name__}: {e}.") from None
    d = math.prod(input_shape)
    if x.dim() == 1 and x.numel() == d:
        x = x[None]
    if x.dim() >= 1 and x.numel() == x.shape[0] * d:
        x = x.reshape(x.shape[0], *input_shape)
    if x.dim() < 1 or tuple(x.shape[1:]) != input_shape:
        raise InvalidArgumentError(
            f"Expected inputs of shape (n, {', '.join(map(str, input_shape))}) ({d} features each), "
            f"but got {tuple(x.shape)}."
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError("Expected finite inputs, but the data has NaN or inf.")
    return x
