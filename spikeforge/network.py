"""A whole chip configuration: populations, projections, inputs and outputs.

Spec: ``docs/neuron.md`` (one neuron's timestep) and ``docs/network.md`` (how spikes travel).

This is what the compiler (``spikeforge.host.compiler``) produces, what the golden model
(``spikeforge.sim.golden``) runs, what the partitioner (``spikeforge.host.partition``) splits
over cores and what the image builder (``spikeforge.host.image``) turns into the chip's memory
image.  It depends only on ``spikeforge.errors`` and ``spikeforge.spec``, so every one of them
imports it without a cycle.  ``spikeforge.sim.network`` re-exports it (the older import path).

Timing of connections (the routing semantics):

* the host's input events of timestep ``t`` arrive before any population updates in ``t``;
* populations update in the order they are listed;
* a projection from the input or from an *earlier* population delivers in the same timestep
  (feed-forward: ``spk1 = lif1(fc1(x)); spk2 = lif2(fc2(spk1))`` as in snnTorch);
* a projection from the *same or a later* population is recurrent: spikes of timestep ``t``
  arrive in timestep ``t + 1`` (as snnTorch's ``RLeaky``);
* a projection's ``delay`` ``d`` adds ``d`` timesteps to either (``docs/network.md``, "Synaptic
  delays").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError
from .spec import LeakMode, NeuronModel, ResetMode

__all__ = [
    "NeuronParams", "Population", "Sparse", "Conv", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
    "Projection", "Network", "INPUT",
]

INPUT = "input"
"""The name of the host's input channels as a projection source."""


def _enum(value, cls, name):
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            pass
    allowed = ", ".join(m.name.lower() for m in cls)
    raise ConfigError(f"{name}={value!r} is not valid: allowed {allowed}")


@dataclass
class NeuronParams:
    """Parameters of a population's neurons.

    ``beta``, ``alpha``, ``threshold`` and ``bias`` may each be a scalar (one per population) or
    an array with one value per neuron.  In *integer* arithmetic they are integer codes
    (see ``docs/neuron.md``); in *float* arithmetic they are the float values snnTorch uses.

    Parameters
    ----------
    model : NeuronModel or str
        ``"lif"`` (membrane only) or ``"cuba"`` (current-based, with synaptic current).
    leak : LeakMode or str
        ``"mult"`` (``beta`` is a decay: integer code ``q`` of ``q / 2**frac`` or a float in
        ``[0, 1]``), ``"shift"`` (integer only: ``beta`` is ``k`` of ``v - (v >> k)``) or
        ``"none"`` (integrate-and-fire; ``beta`` is ignored).
    beta : int, float or array
        Membrane decay.
    alpha : int, float or array
        Synaptic-current decay (CuBa only), encoded as ``beta``.
    threshold : int, float or array
        Firing threshold (strict: a neuron spikes when ``v > threshold``).
    bias : int, float or array
        Added to the input of every neuron every timestep.
    reset : ResetMode or str
        ``"subtract"``, ``"zero"`` or ``"none"``.
    reset_delay : bool
        ``True``: the reset of a spike is applied in the next timestep (snnTorch's default).
        ``False``: also applied immediately in the timestep of the spike.
    """

    model: NeuronModel | str = NeuronModel.LIF
    leak: LeakMode | str = LeakMode.MULT
    beta: object = 1.0
    alpha: object = 0.0
    threshold: object = 1.0
    bias: object = 0.0
    reset: ResetMode | str = ResetMode.SUBTRACT
    reset_delay: bool = True

    def __post_init__(self):
        self.model = _enum(self.model, NeuronModel, "model")
        self.leak = _enum(self.leak, LeakMode, "leak")
        self.reset = _enum(self.reset, ResetMode, "reset")
        if not isinstance(self.reset_delay, (bool, np.bool_)):
            raise ConfigError(f"reset_delay={self.reset_delay!r} is not valid: allowed True, False")
        self.reset_delay = bool(self.reset_delay)


@dataclass
class Population:
    """A group of neurons sharing a neuron model.

    Parameters
    ----------
    name : str
        Unique name (``"input"`` is reserved).
    size : int
        Number of neurons (>= 1).
    params : NeuronParams
        Their parameters.
    """

    name: str
    size: int
    params: NeuronParams = field(default_factory=NeuronParams)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name == INPUT:
            raise ConfigError(
                f"Population.name={self.name!r} is not valid: a non-empty string other than "
                f"{INPUT!r}"
            )
        if not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ConfigError(f"Population {self.name!r}: size={self.size!r} must be >= 1")
        self.size = int(self.size)


@dataclass
class Sparse:
    """Sparse connections: ``weights[k]`` from source ``rows[k]`` to target ``cols[k]``."""

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64).ravel()
        self.cols = np.asarray(self.cols, dtype=np.int64).ravel()
        self.weights = np.asarray(self.weights).ravel()
        if not len(self.rows) == len(self.cols) == len(self.weights):
            raise ConfigError(
                f"Sparse: rows, cols and weights must have the same length, got "
                f"{len(self.rows)}, {len(self.cols)}, {len(self.weights)}"
            )


# --- weight-shared projections (docs/network.md, "Convolution and pooling") ---------------------
def _per_axis(value, nd, name, owner, minimum):
    """``value`` (an int or one int per spatial axis) as a tuple of ``nd`` ints >= ``minimum``."""
    a = np.asarray(value)
    if a.ndim == 0:
        a = np.full(nd, a)
    a = a.reshape(-1)
    ok = a.size == nd and all(
        isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)) and x >= minimum
        for x in a.tolist()
    )
    if not ok:
        raise ConfigError(
            f"{owner}: {name}={value!r} is not valid: allowed an integer >= {minimum} or "
            f"{nd} of them (one per spatial axis)"
        )
    return tuple(int(x) for x in a.tolist())


class Conv:
    """A weight-shared convolution from a channel-first ``(C_in, *in_shape)`` source to a
    channel-first ``(C_out, *out_shape)`` target (``docs/network.md``, "Convolution and pooling").

    Neurons are numbered channel-first, ``(c, y, x)`` flattened in C order (as ``torch.flatten``
    and NIR's ``Flatten`` of a ``(C, H, W)`` tensor); the target neuron ``(co, oy, ox)`` receives

    ``sum over ci in co's group, ky, kx of kernel[co, ci', ky, kx] * src[ci, oy*sy - py0 + ky*dy,
    ox*sx - px0 + kx*dx]``

    with sources outside the input being zeros (no synapse).  This is PyTorch's ``conv1d`` /
    ``conv2d`` (cross-correlation, ``padding_mode="zeros"``).

    Parameters
    ----------
    kernel : array (C_out, C_in / groups, K1 [, K2])
        The shared weights (NIR's and PyTorch's layout).
    in_shape : int or tuple
        Spatial size of the source, ``(H, W)`` for 2-d, ``(L,)`` or ``L`` for 1-d.
    stride, dilation : int or one per axis (>= 1)
    padding : int, one per axis, one ``(before, after)`` pair per axis, ``"valid"`` or ``"same"``
        Zeros added around the input.  ``"valid"`` is 0; ``"same"`` (stride 1 only) pads
        ``dilation * (K - 1)`` per axis, ``floor`` of half before and the rest after (as
        PyTorch), so the output has the input's size.
    groups : int
        ``C_in`` and ``C_out`` are split into ``groups`` equal groups; output channel ``co``
        sees the input channels of its group only.
    in_channels : int, optional
        ``C_in`` (default ``kernel.shape[1] * groups``; given, it is checked).
    extent : int or one per axis, optional
        Only source positions ``< extent`` are read (default ``in_shape``): the convolution of
        the input cropped to ``extent``, the sources beyond it have no synapse.  This is what
        a pooling layer that drops a remainder (``floor``) folded into the next convolution
        needs (``docs/network.md``).
    src_offset : int, optional
        The convolution's source ``(ci, y, x)`` is neuron ``src_offset + ravel(ci, y, x)`` of
        the projection's source (default 0).
    src_total : int, optional
        Neurons of the projection's source (default ``src_offset + n_src``); those outside
        ``src_offset .. src_offset + n_src - 1`` have no synapse.  The partitioner
        (``host/partition.py``) places a convolution that enters a core from another core this
        way, in a block of the core's input channels.
    """

    ndim = None  # spatial dimensions: 1 or 2 (None: taken from the kernel)
    kind = "Conv"

    def __init__(self, kernel, in_shape, stride=1, padding=0, dilation=1, groups=1,
                 in_channels=None, extent=None, src_offset=0, src_total=None):
        k = np.asarray(kernel)
        nd = self.ndim or k.ndim - 2
        name = self.kind
        if k.ndim != nd + 2 or nd not in (1, 2) or k.size == 0:
            raise ConfigError(
                f"{name}: kernel of shape {k.shape} is not valid: allowed (C_out, C_in/groups, "
                + ("K)" if nd == 1 else "KH, KW)" if nd == 2 else "K) or (C_out, C_in/groups, KH, "
                   "KW)")
            )
        if not (np.issubdtype(k.dtype, np.number) and np.all(np.isfinite(k))):
            raise ConfigError(f"{name}: the kernel must hold finite numbers")
        self.kernel = k
        self.in_shape = _per_axis(in_shape, nd, "in_shape", name, 1)
        self.extent = self.in_shape if extent is None else _per_axis(extent, nd, "extent",
                                                                     name, 1)
        if any(e > n for e, n in zip(self.extent, self.in_shape, strict=True)):
            raise ConfigError(f"{name}: extent={self.extent} is larger than in_shape="
                              f"{self.in_shape}")
        self.stride = _per_axis(stride, nd, "stride", name, 1)
        self.dilation = _per_axis(dilation, nd, "dilation", name, 1)
        if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)) or (
                groups < 1):
            raise ConfigError(f"{name}: groups={groups!r} is not valid: allowed an integer >= 1")
        self.groups = int(groups)
        c_out, c_in_g = k.shape[:2]
        if c_out % self.groups:
            raise ConfigError(
                f"{name}: {c_out} output channels do not split into groups={self.groups}"
            )
        self.in_channels = c_in_g * self.groups
        if in_channels is not None and int(in_channels) != self.in_channels:
            raise ConfigError(
                f"{name}: the source has {in_channels} channels but the kernel takes "
                f"{c_in_g} per group x groups={self.groups} = {self.in_channels}"
            )
        self.out_channels = c_out
        ksize = k.shape[2:]
        span = [d * (kk - 1) + 1 for d, kk in zip(self.dilation, ksize, strict=True)]
        if isinstance(padding, str):
            if padding == "valid":
                pads = ((0, 0),) * nd
            elif padding == "same":
                if any(s != 1 for s in self.stride):
                    raise ConfigError(
                        f"{name}: padding='same' needs stride 1 (got stride={self.stride}), as "
                        f"in PyTorch"
                    )
                pads = tuple(((sp - 1) // 2, sp - 1 - (sp - 1) // 2) for sp in span)
            else:
                raise ConfigError(
                    f"{name}: padding={padding!r} is not valid: allowed 'valid', 'same' or "
                    f"integers >= 0"
                )
        else:
            a = np.asarray(padding)
            if a.ndim == 2 and a.shape == (nd, 2):
                flat = _per_axis(a.reshape(-1), 2 * nd, "padding", name, 0)
                pads = tuple((flat[2 * j], flat[2 * j + 1]) for j in range(nd))
            else:
                one = _per_axis(padding, nd, "padding", name, 0)
                pads = tuple((p, p) for p in one)
        self.padding = pads
        out = []
        for n, (p0, p1), sp, s in zip(self.extent, pads, span, self.stride, strict=True):
            o = (n + p0 + p1 - sp) // s + 1
            if o < 1:
                raise ConfigError(
                    f"{name}: the kernel (span {sp} with dilation) is larger than the padded "
                    f"input ({n} + {p0} + {p1}): no output"
                )
            out.append(o)
        self.out_shape = tuple(out)
        self._index = None
        if isinstance(src_offset, (bool, np.bool_)) or not isinstance(
                src_offset, (int, np.integer)) or src_offset < 0:
            raise ConfigError(f"{name}: src_offset={src_offset!r} is not valid: allowed an "
                              f"integer >= 0")
        self.src_offset = int(src_offset)
        end = self.src_offset + self.n_src
        if src_total is None:
            src_total = end
        if isinstance(src_total, (bool, np.bool_)) or not isinstance(
                src_total, (int, np.integer)) or src_total < end:
            raise ConfigError(
                f"{name}: src_total={src_total!r} is not valid: the convolution reads sources "
                f"{self.src_offset}..{end - 1}, so allowed an integer >= {end}"
            )
        self.src_total = int(src_total)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def kernel_size(self):
        return tuple(self.kernel.shape[2:])

    @property
    def n_src(self) -> int:
        """Source neurons: ``C_in * prod(in_shape)``."""
        return self.in_channels * int(np.prod(self.in_shape))

    @property
    def placed(self) -> bool:
        """Whether the convolution reads a block of a larger source (``src_offset`` /
        ``src_total``)."""
        return self.src_offset != 0 or self.src_total != self.n_src

    def place(self, src_offset: int, src_total: int) -> Conv:
        """The same convolution reading sources ``src_offset .. src_offset + n_src - 1`` of a
        source of ``src_total`` neurons."""
        return self._copy(self.kernel, src_offset, src_total)

    @property
    def n_dst(self) -> int:
        """Target neurons: ``C_out * prod(out_shape)``."""
        return self.out_channels * int(np.prod(self.out_shape))

    @property
    def src_shape(self):
        return (self.in_channels, *self.in_shape)

    @property
    def dst_shape(self):
        return (self.out_channels, *self.out_shape)

    @property
    def n_weights(self) -> int:
        """Distinct (shared) weights: the kernel's entries."""
        return int(self.kernel.size)

    @property
    def n_synapses(self) -> int:
        """Synapses of the unrolled projection (pairs of an in-range source and a target; zero
        kernel entries included)."""
        return int(self._synapse_index()[0].size)

    @property
    def dtype(self):
        return self.kernel.dtype

    def __repr__(self):
        pad = tuple(p if p[0] != p[1] else p[0] for p in self.padding)
        ext = f", extent={self.extent}" if self.extent != self.in_shape else ""
        if self.placed:
            ext += f", src_offset={self.src_offset}, src_total={self.src_total}"
        return (f"{self.kind}(kernel{self.kernel.shape}, in_shape={self.in_shape}{ext}, "
                f"stride={self.stride}, padding={pad}, dilation={self.dilation}, "
                f"groups={self.groups}) -> {self.dst_shape}")

    # --- unrolling -----------------------------------------------------------------------------
    def _synapse_index(self):
        """``(rows, cols, k)``: source (the convolution's own, without ``src_offset``), target
        and flat kernel index of every synapse."""
        if self._index is not None:
            return self._index
        nd = len(self.in_shape)
        c_out, c_in_g = self.kernel.shape[:2]
        per_group = c_out // self.groups
        # every (co, ci_g, k..., o...) combination, then drop out-of-range sources
        grids = np.meshgrid(
            np.arange(c_out), np.arange(c_in_g),
            *[np.arange(k) for k in self.kernel_size], *[np.arange(o) for o in self.out_shape],
            indexing="ij",
        )
        co, cig = grids[0].ravel(), grids[1].ravel()
        ks = [g.ravel() for g in grids[2:2 + nd]]
        os_ = [g.ravel() for g in grids[2 + nd:]]
        ci = (co // per_group) * c_in_g + cig
        keep = np.ones(co.shape, dtype=bool)
        pos = []
        for j in range(nd):
            p = os_[j] * self.stride[j] - self.padding[j][0] + ks[j] * self.dilation[j]
            keep &= (p >= 0) & (p < self.extent[j])
            pos.append(p)
        rows = np.ravel_multi_index((ci[keep], *[p[keep] for p in pos]), self.src_shape)
        cols = np.ravel_multi_index((co[keep], *[o[keep] for o in os_]), self.dst_shape)
        kidx = np.ravel_multi_index((co[keep], cig[keep], *[k[keep] for k in ks]),
                                    self.kernel.shape)
        self._index = (rows.astype(np.int64), cols.astype(np.int64), kidx.astype(np.int64))
        return self._index

    def to_sparse(self) -> Sparse:
        """The unrolled synapses as a :class:`Sparse` (zero kernel entries left out)."""
        rows, cols, kidx = self._synapse_index()
        w = self.kernel.reshape(-1)[kidx]
        nz = w != 0
        return Sparse(rows[nz] + self.src_offset, cols[nz], w[nz])

    def check_sizes(self, n_src, n_dst, owner="Conv"):
        if (n_src, n_dst) != (self.src_total, self.n_dst):
            where = (f" (sources {self.src_offset}..{self.src_offset + self.n_src - 1} of "
                     f"{self.src_total})" if self.placed else "")
            raise ConfigError(
                f"{owner}: {self!r} connects {self.src_total} sources "
                f"{self.src_shape}{where} to {self.n_dst} targets {self.dst_shape}, but the "
                f"projection is ({n_src}, {n_dst})"
            )

    def dense(self, n_src=None, n_dst=None) -> np.ndarray:
        """The unrolled ``(src_total, n_dst)`` weight matrix (exact: every kernel entry in
        place)."""
        n_src = self.src_total if n_src is None else n_src
        n_dst = self.n_dst if n_dst is None else n_dst
        self.check_sizes(n_src, n_dst)
        rows, cols, kidx = self._synapse_index()
        dtype = self.kernel.dtype
        if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
            dtype = np.int64
        out = np.zeros((n_src, n_dst), dtype=dtype)
        # each (source, target) pair occurs once (distinct kernel taps reach distinct sources)
        out[rows + self.src_offset, cols] = self.kernel.reshape(-1)[kidx]
        return out

    def apply(self, x) -> np.ndarray:
        """``x @ self.dense()`` for ``x`` of shape ``(..., src_total)``, computed directly."""
        x = np.asarray(x)
        lead = x.shape[:-1]
        if x.shape[-1] != self.src_total:
            raise ConfigError(f"{self.kind}.apply: x has {x.shape[-1]} values, expected "
                              f"{self.src_total}")
        if self.placed:
            x = x[..., self.src_offset:self.src_offset + self.n_src]
        nd = len(self.in_shape)
        b = int(np.prod(lead)) if lead else 1
        xs = x.reshape(b, *self.src_shape)
        xs = xs[(slice(None), slice(None), *[slice(0, e) for e in self.extent])]
        xp = np.pad(xs, [(0, 0), (0, 0), *self.padding])
        c_out, c_in_g = self.kernel.shape[:2]
        g = self.groups
        pg = c_out // g
        dtype = np.result_type(x.dtype, self.kernel.dtype)
        out = np.zeros((b, c_out, *self.out_shape), dtype=dtype)
        kern = self.kernel.reshape(g, pg, c_in_g, *self.kernel_size)
        for kpos in np.ndindex(*self.kernel_size):
            sl = tuple(
                slice(kpos[j] * self.dilation[j],
                      kpos[j] * self.dilation[j] + self.stride[j] * (self.out_shape[j] - 1) + 1,
                      self.stride[j])
                for j in range(nd)
            )
            patch = xp[(slice(None), slice(None), *sl)]  # (b, C_in, *out_shape)
            patch = patch.reshape(b, g, c_in_g, *self.out_shape)
            w = kern[(Ellipsis, *kpos)]  # (g, pg, c_in_g)
            out += np.einsum("bgi...,goi->bgo...", patch, w).reshape(out.shape)
        return out.reshape(*lead, self.n_dst)

    def with_kernel(self, kernel) -> Conv:
        """The same geometry (and placement) with another kernel (e.g. the quantized one)."""
        return self._copy(kernel, self.src_offset, self.src_total)

    def _copy(self, kernel, src_offset, src_total):
        cls = Conv1d if len(self.in_shape) == 1 else Conv2d
        return cls(kernel, self.in_shape, self.stride, [list(p) for p in self.padding],
                   self.dilation, self.groups, extent=self.extent, src_offset=src_offset,
                   src_total=src_total)


class Conv1d(Conv):
    """A 1-d :class:`Conv`: kernel ``(C_out, C_in / groups, K)``, source ``(C_in, L)``."""

    ndim = 1
    kind = "Conv1d"


class Conv2d(Conv):
    """A 2-d :class:`Conv`: kernel ``(C_out, C_in / groups, KH, KW)``, source ``(C_in, H, W)``."""

    ndim = 2
    kind = "Conv2d"


class SumPool2d(Conv2d):
    """Sum pooling of each channel over ``kernel_size`` windows: a depthwise :class:`Conv2d`
    with a kernel of ones (``groups = channels``).

    Parameters
    ----------
    channels : int
    kernel_size : int or (KH, KW)
    in_shape : (H, W)
    stride : int or (SH, SW), default ``kernel_size``
    padding : int or (PH, PW), default 0 (zeros, which add nothing to a sum)
    """

    kind = "SumPool2d"
    _scale = None  # the value of every kernel entry: 1, or 1 / (KH * KW) for an average

    def __init__(self, channels, kernel_size, in_shape, stride=None, padding=0):
        if isinstance(channels, (bool, np.bool_)) or not isinstance(
                channels, (int, np.integer)) or channels < 1:
            raise ConfigError(f"{self.kind}: channels={channels!r} must be an integer >= 1")
        ks = _per_axis(kernel_size, 2, "kernel_size", self.kind, 1)
        stride = ks if stride is None else stride
        value = self._value(ks)
        super().__init__(np.full((int(channels), 1, *ks), value), in_shape, stride, padding,
                         1, int(channels))

    def _value(self, ks):
        return 1.0

    @property
    def n_weights(self) -> int:
        """One shared value."""
        return 1


class AvgPool2d(SumPool2d):
    """Average pooling: :class:`SumPool2d` times ``1 / (KH * KW)``.  Padded zeros count in the
    divisor (PyTorch's ``count_include_pad=True``), so every window has the same weight."""

    kind = "AvgPool2d"

    def _value(self, ks):
        return 1.0 / (ks[0] * ks[1])


@dataclass
class Projection:
    """Synapses from a source (``"input"`` or a population) to a target population.

    Parameters
    ----------
    src : str
        ``"input"`` or the name of a population.
    dst : str
        The name of a population.
    weights : array of shape (n_src, n_dst), Sparse or Conv
        Dense weights (zero entries are no synapse), sparse connections, or a weight-shared
        convolution / pooling (:class:`Conv`, :class:`Conv1d`, :class:`Conv2d`,
        :class:`SumPool2d`, :class:`AvgPool2d`; ``docs/network.md``, "Convolution and
        pooling"), which :meth:`dense` unrolls.
    delay : int
        Synaptic delay in timesteps, >= 0: a spike of step ``t`` arrives in step ``t + d`` (a
        feed-forward projection) or ``t + 1 + d`` (a recurrent one); ``docs/network.md``,
        "Synaptic delays".
    """

    src: str
    dst: str
    weights: object
    delay: int = 0

    def __post_init__(self):
        d = self.delay
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ConfigError(
                f"Projection {self.src}->{self.dst}: delay={d!r} is not valid: allowed an "
                f"integer number of timesteps >= 0"
            )
        self.delay = int(d)

    def dense(self, n_src: int, n_dst: int) -> np.ndarray:
        """Return the weights as a dense ``(n_src, n_dst)`` array (checked)."""
        w = self.weights
        if isinstance(w, Conv):
            w.check_sizes(n_src, n_dst, f"Projection {self.src}->{self.dst}")
            return w.dense(n_src, n_dst)
        if isinstance(w, Sparse):
            if len(w.rows) and (w.rows.min() < 0 or w.rows.max() >= n_src):
                raise ConfigError(
                    f"Projection {self.src}->{self.dst}: a sparse row index is outside 0..{n_src-1}"
                )
            if len(w.cols) and (w.cols.min() < 0 or w.cols.max() >= n_dst):
                raise ConfigError(
                    f"Projection {self.src}->{self.dst}: a sparse col index is outside 0..{n_dst-1}"
                )
            # Duplicate (row, col) entries add up; sum integers in int64 so that e.g. two int8
            # weights of 100 give 200 (refused by the range check), not a wrapped-around -56.
            dtype = w.weights.dtype
            if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                dtype = np.int64
            out = np.zeros((n_src, n_dst), dtype=dtype)
            np.add.at(out, (w.rows, w.cols), w.weights)
            return out
        w = np.asarray(w)
        if w.shape != (n_src, n_dst):
            raise ConfigError(
                f"Projection {self.src}->{self.dst}: weights have shape {w.shape}, expected "
                f"(n_src, n_dst) = ({n_src}, {n_dst})"
            )
        return w


@dataclass
class Network:
    """A whole network as the chip runs it.

    Parameters
    ----------
    n_inputs : int
        Number of input channels (AER source addresses ``0 .. n_inputs-1`` from the host).
    populations : list of Population
        Updated in this order every timestep.
    projections : list of Projection
        Connections; see the module docstring for their timing.
    outputs : list of str
        Names of the populations whose spikes are sent to the host.
    """

    n_inputs: int
    populations: list
    projections: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.n_inputs, (int, np.integer)) or self.n_inputs < 0:
            raise ConfigError(f"Network.n_inputs={self.n_inputs!r} must be an integer >= 0")
        self.n_inputs = int(self.n_inputs)
        names = [p.name for p in self.populations]
        if not names:
            raise ConfigError("Network.populations is empty: at least one population is needed")
        if len(set(names)) != len(names):
            raise ConfigError(f"Network.populations: names must be unique, got {names}")
        for proj in self.projections:
            if proj.src != INPUT and proj.src not in names:
                raise ConfigError(
                    f"Projection src={proj.src!r} is not {INPUT!r} or a population ({names})"
                )
            if proj.dst not in names:
                raise ConfigError(f"Projection dst={proj.dst!r} is not a population ({names})")
            if proj.src == INPUT and self.n_inputs == 0:
                raise ConfigError("a projection comes from 'input' but Network.n_inputs is 0")
        if not self.outputs:
            self.outputs = [names[-1]]
        for o in self.outputs:
            if o not in names:
                raise ConfigError(f"Network.outputs: {o!r} is not a population ({names})")

    # --- addressing -----------------------------------------------------------------------
    def index(self, name: str) -> int:
        """Position of population ``name`` in the update order."""
        for k, p in enumerate(self.populations):
            if p.name == name:
                return k
        raise ConfigError(f"no population named {name!r}")

    def population(self, name: str) -> Population:
        return self.populations[self.index(name)]

    @property
    def n_neurons(self) -> int:
        return sum(p.size for p in self.populations)

    def base(self, name: str) -> int:
        """Global index of the first neuron of population ``name``."""
        k = self.index(name)
        return sum(p.size for p in self.populations[:k])

    def output_indices(self) -> np.ndarray:
        """Global indices of the output populations' neurons, in ``outputs`` order."""
        return np.concatenate(
            [np.arange(self.base(o), self.base(o) + self.population(o).size)
             for o in self.outputs]
        ).astype(np.int64)

    def source_size(self, src: str) -> int:
        return self.n_inputs if src == INPUT else self.population(src).size

    def is_recurrent(self, proj: Projection) -> bool:
        """True when ``proj`` delivers in the next timestep (source not before target)."""
        return proj.src != INPUT and self.index(proj.src) >= self.index(proj.dst)

    def dense_weights(self, proj: Projection) -> np.ndarray:
        return proj.dense(self.source_size(proj.src), self.population(proj.dst).size)

    @property
    def n_synapses(self) -> int:
        """Number of non-zero synapses."""
        return int(sum(
            len(p.weights.to_sparse().rows) if isinstance(p.weights, Conv)
            else np.count_nonzero(self.dense_weights(p)) for p in self.projections))
