"""Import NIR graphs into a float :class:`~spikeforge.network.Network`.

Spec: the NIR node definitions (``nir`` 1.0.8), the integer neuron of ``docs/neuron.md`` and
``docs/compiler.md`` (the mapping table and what is refused).

NIR neurons are continuous-time (``tau * dv/dt = (v_leak - v) + r * I``); the chip is discrete.
With the time step ``dt`` (a :class:`Settings` field, because a NIR graph does not store it) a
LIF becomes ``v[t] = beta * v[t-1] + g * I[t] + b`` with ``beta = 1 - dt / tau``, input gain
``g = r * dt / tau`` (folded into the incoming weights and biases) and bias
``b = v_leak * dt / tau``.  This inverts ``snntorch.export_to_nir`` exactly: snnTorch writes
``tau = dt / (1 - beta)`` and ``r = tau / dt`` with ``dt = 1e-4`` (so ``g = 1``).  The reset
mode and whether the reset is delayed by a step are not in the graph either; they are settings
too (NIR's own definition, ``v <- v_reset`` right after the spike, is ``reset="zero",
reset_delay=False``; snnTorch's ``Leaky`` default is ``reset="subtract", reset_delay=True``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, UnsupportedError
from ..network import (
    INPUT,
    AvgPool2d,
    Conv,
    Conv1d,
    Conv2d,
    Network,
    NeuronParams,
    Population,
    Projection,
    SumPool2d,
)

__all__ = [
    "NIRTypeWarning",
    "Settings",
    "from_nir",
    "read_nir",
    "READOUT_THRESHOLD",
    "is_readout",
    "SUPPORTED_NODES",
]

class NIRTypeWarning(UserWarning):
    """A NIR file failed ``nir``'s strict type check and was read with the check relaxed."""


READOUT_THRESHOLD = 1e30
"""Float threshold of a leaky-integrator readout (LI / CubaLI): never reached."""

SUPPORTED_NODES = (
    "Input", "Output", "Affine", "Linear", "Scale", "Delay", "Conv1d", "Conv2d", "SumPool2d",
    "AvgPool2d", "Flatten", "LIF", "IF", "CubaLIF", "LI", "CubaLI",
    "NIRGraph (subgraphs, e.g. snnTorch's RLeaky/RSynaptic)",
)
_SUPPORTED_TEXT = ", ".join(SUPPORTED_NODES)
_GAIN_SNAP = 1e-5  # |gain - 1| below this is float32 round-off of an exporter: taken as 1
_RESETS = ("subtract", "zero", "none")
_DELAY_TOL = 1e-6  # |delay/dt - round(delay/dt)| <= this * max(1, delay/dt): a whole number


def is_readout(params: NeuronParams) -> bool:
    """True for a leaky-integrator readout population (no reset, unreachable threshold)."""
    thr = np.asarray(params.threshold, dtype=np.float64)
    return params.reset.name == "NONE" and bool(np.all(thr >= READOUT_THRESHOLD))


@dataclass
class Settings:
    """What a NIR graph cannot carry, needed to run it on a discrete-time chip.

    Parameters
    ----------
    dt : float
        Time step used to discretise ``tau`` (seconds, as the graph's ``tau``).  snnTorch
        exports with ``dt = 1e-4``.
    reset : str or dict
        ``"subtract"``, ``"zero"`` or ``"none"``; or a dict from NIR node name to one of these
        (nodes not in the dict take ``default_reset``).
    reset_delay : bool or dict
        ``True``: the reset of a spike happens at the start of the next step (snnTorch's
        default); ``False``: immediately (NIR's definition).  Or a dict per node name.
    default_reset, default_reset_delay
        Used for nodes missing from a ``reset`` / ``reset_delay`` dict.
    """

    dt: float = 1e-4
    reset: object = "zero"
    reset_delay: object = False
    default_reset: str = "zero"
    default_reset_delay: bool = False

    def __post_init__(self):
        if not isinstance(self.dt, (int, float, np.floating)) or not np.isfinite(self.dt) or (
            self.dt <= 0
        ):
            raise ConfigError(f"Settings.dt={self.dt!r} is out of range: allowed a float > 0")
        self.dt = float(self.dt)
        for name in ("reset", "default_reset"):
            values = getattr(self, name)
            for v in values.values() if isinstance(values, dict) else [values]:
                if v not in _RESETS:
                    raise ConfigError(
                        f"Settings.{name}={v!r} is not valid: allowed {', '.join(_RESETS)}"
                    )
        for name in ("reset_delay", "default_reset_delay"):
            values = getattr(self, name)
            for v in values.values() if isinstance(values, dict) else [values]:
                if not isinstance(v, (bool, np.bool_)):
                    raise ConfigError(
                        f"Settings.{name}={v!r} is not valid: allowed True, False"
                    )

    @classmethod
    def snntorch(cls, **kw):
        """The settings of a model exported by ``snntorch.export_to_nir`` with its defaults."""
        kw.setdefault("dt", 1e-4)
        kw.setdefault("reset", "subtract")
        kw.setdefault("reset_delay", True)
        kw.setdefault("default_reset", "subtract")
        kw.setdefault("default_reset_delay", True)
        return cls(**kw)

    @classmethod
    def from_dict(cls, d):
        """Settings from a dict such as a model's JSON metadata (unknown keys are ignored)."""
        keys = ("dt", "reset", "reset_delay", "default_reset", "default_reset_delay")
        kw = {k: d[k] for k in keys if k in d}
        if isinstance(kw.get("reset"), str):
            kw.setdefault("default_reset", kw["reset"])
        if isinstance(kw.get("reset_delay"), bool):
            kw.setdefault("default_reset_delay", kw["reset_delay"])
        return cls(**kw)

    def to_dict(self):
        return {
            "dt": self.dt, "reset": self.reset, "reset_delay": self.reset_delay,
            "default_reset": self.default_reset, "default_reset_delay": self.default_reset_delay,
        }

    def for_node(self, name):
        """``(reset, reset_delay)`` of the NIR node ``name``."""
        reset = (
            self.reset.get(name, self.default_reset) if isinstance(self.reset, dict)
            else self.reset
        )
        delay = (
            self.reset_delay.get(name, self.default_reset_delay)
            if isinstance(self.reset_delay, dict) else self.reset_delay
        )
        return reset, bool(delay)


def read_nir(path):
    """Read a ``.nir`` file, with the settings stored beside it if any.

    Settings come from the graph's ``metadata["spikeforge"]`` (a JSON string) or from a JSON
    file with the same stem (``model.nir`` -> ``model.json``) holding ``dt``, ``reset`` and
    ``reset_delay``.

    Returns
    -------
    graph : nir.NIRGraph
    settings : Settings or None
    """
    import nir

    if not os.path.isfile(path):
        raise ConfigError(f"NIR file {path!r} does not exist")
    errors = (ValueError, KeyError, TypeError, OSError, NotImplementedError)
    try:
        graph = nir.read(path)
    except errors as strict:  # nir's own checks, a bad HDF5 file
        # A graph whose node types only disagree with nir's strict type check (e.g. an Output
        # typed with extra unit dimensions, as some Rockpool exports are) is read without it;
        # from_nir checks the sizes it uses itself (and the Input / Output types, unit
        # dimensions aside).  A file nir cannot read even then is refused.
        try:
            graph = nir.read(path, type_check=False)
        except errors:
            raise ConfigError(f"NIR file {path!r} cannot be read by nir.read: {strict}") \
                from strict
        warnings.warn(
            f"NIR file {path!r} fails nir's strict type check ({strict}); read with the check "
            f"relaxed: spikeforge checks the sizes it uses itself",
            NIRTypeWarning, stacklevel=1,  # one place: shown once per file, however often read
        )
    settings = _settings_from_metadata(graph)
    side = os.path.splitext(path)[0] + ".json"
    if settings is None and os.path.isfile(side):
        with open(side) as f:
            settings = Settings.from_dict(json.load(f))
    return graph, settings


def _settings_from_metadata(graph):
    meta = getattr(graph, "metadata", None) or {}
    raw = meta.get("spikeforge")
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    return Settings.from_dict(json.loads(raw) if isinstance(raw, str) else dict(raw))


# --- graph flattening ----------------------------------------------------------------------------
@dataclass
class _Flat:
    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # top-level Input node names
    outputs: list = field(default_factory=list)  # top-level Output node names


def _flatten(graph, prefix="", flat=None, top=True):
    """Inline nested NIRGraphs: subgraph Input/Output nodes become pass-through nodes."""
    import nir

    flat = flat or _Flat()
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            _flatten(node, full + ".", flat, top=False)
            # edges to/from the subgraph node go to its Input/Output nodes
            sub_in = [k for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            sub_out = [k for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            flat.nodes[full] = ("subgraph", [full + "." + k for k in sub_in],
                                [full + "." + k for k in sub_out])
            continue
        if isinstance(node, nir.Input):
            flat.nodes[full] = ("input", node) if top else ("pass", node)
            if top:
                flat.inputs.append(full)
        elif isinstance(node, nir.Output):
            flat.nodes[full] = ("output", node) if top else ("pass", node)
            if top:
                flat.outputs.append(full)
        else:
            flat.nodes[full] = ("node", node)
    for src, dst in graph.edges:
        flat.edges.append((prefix + src, prefix + dst))
    if top:
        _resolve_subgraphs(flat)
    return flat


def _resolve_subgraphs(flat):
    edges = []
    for src, dst in flat.edges:
        srcs = flat.nodes[src][2] if src in flat.nodes and flat.nodes[src][0] == "subgraph" \
            else [src]
        dsts = flat.nodes[dst][1] if dst in flat.nodes and flat.nodes[dst][0] == "subgraph" \
            else [dst]
        edges += [(s, d) for s in srcs for d in dsts]
    for s, d in edges:
        for end in (s, d):
            if end not in flat.nodes:
                raise ConfigError(f"NIR edge ({s!r}, {d!r}) names a node {end!r} not in the graph")
    flat.nodes = {k: v for k, v in flat.nodes.items() if v[0] != "subgraph"}
    # bypass pass-through nodes (Input/Output of subgraphs)
    for name in [k for k, v in flat.nodes.items() if v[0] == "pass"]:
        preds = [s for s, d in edges if d == name]
        succs = [d for s, d in edges if s == name]
        edges = [(s, d) for s, d in edges if name not in (s, d)]
        edges += [(p, q) for p in preds for q in succs]
        del flat.nodes[name]
    seen, flat.edges = set(), []
    for e in edges:  # keep order, drop duplicates
        if e not in seen:
            seen.add(e)
            flat.edges.append(e)


# --- node parameters -----------------------------------------------------------------------------
def _arr(node, attr):
    v = getattr(node, attr)
    return None if v is None else np.asarray(v, dtype=np.float64).reshape(-1)


def _kind(node):
    return type(node).__name__


def _neuron_size(name, node):
    sizes = set()
    for attr in ("tau", "tau_mem", "tau_syn", "r", "v_threshold", "v_leak", "v_reset", "w_in"):
        if hasattr(node, attr) and getattr(node, attr) is not None:
            a = np.asarray(getattr(node, attr))
            if a.size > 1:
                sizes.add(a.size)
    if len(sizes) > 1:
        raise ConfigError(
            f"NIR node {name!r} ({_kind(node)}): parameters have different sizes {sorted(sizes)}"
        )
    return sizes.pop() if sizes else None


def _bcast(a, n):
    return np.broadcast_to(a, (n,)).astype(np.float64) if a.size == 1 else a


def _decay(name, node, attr, tau, dt):
    if np.any(tau <= 0) or not np.all(np.isfinite(tau)):
        raise ConfigError(f"NIR node {name!r} ({_kind(node)}): {attr}={tau} must be > 0")
    if np.any(tau < dt):
        raise ConfigError(
            f"NIR node {name!r} ({_kind(node)}): {attr}={float(tau.min())!r} is shorter than "
            f"dt={dt!r}: beta = 1 - dt/tau would be negative (allowed tau >= dt; set "
            f"Settings.dt to the step the model was trained with)"
        )
    return 1.0 - dt / tau


def _snap(g):
    return np.where(np.abs(g - 1.0) < _GAIN_SNAP, 1.0, g)


def _neuron(name, node, n, settings):
    """Float NeuronParams, the input gain per neuron and the extra bias per neuron."""
    kind = _kind(node)
    dt = settings.dt
    reset, delay = settings.for_node(name)
    zero = np.zeros(n)
    g = lambda a: _bcast(_arr(node, a), n)  # noqa: E731
    readout = kind in ("LI", "CubaLI")
    if not readout:
        thr = g("v_threshold")
        if np.any(thr <= 0):
            raise UnsupportedError(
                f"NIR node {name!r} ({kind}): v_threshold={float(thr.min())!r} is not supported: "
                f"the chip needs thresholds > 0"
            )
        if node.v_reset is not None and np.any(g("v_reset") != 0):
            vr = g("v_reset")
            raise UnsupportedError(
                f"NIR node {name!r} ({kind}): v_reset={float(vr[vr != 0][0])!r} is not supported: "
                f"the chip resets to 0 (reset='zero') or subtracts the threshold "
                f"(reset='subtract'); allowed v_reset = 0"
            )
    else:
        thr = np.full(n, READOUT_THRESHOLD)
        reset, delay = "none", False
    if kind == "IF":
        params = NeuronParams(model="lif", leak="none", beta=1.0, threshold=thr, bias=zero,
                              reset=reset, reset_delay=delay)
        return params, _snap(g("r")), zero
    if kind in ("LIF", "LI"):
        tau = g("tau")
        beta = _decay(name, node, "tau", tau, dt)
        gain = _snap(g("r") * dt / tau)
        bias = g("v_leak") * dt / tau
        params = NeuronParams(model="lif", leak="mult", beta=beta, threshold=thr, bias=zero,
                              reset=reset, reset_delay=delay)
        return params, gain, bias
    if kind in ("CubaLIF", "CubaLI"):
        tau_syn, tau_mem = g("tau_syn"), g("tau_mem")
        alpha = _decay(name, node, "tau_syn", tau_syn, dt)
        beta = _decay(name, node, "tau_mem", tau_mem, dt)
        if np.any(g("v_leak") != 0):
            raise UnsupportedError(
                f"NIR node {name!r} ({kind}): v_leak={float(g('v_leak')[0])!r} is not supported: "
                f"a CuBa neuron's bias enters the synaptic current, not the membrane; allowed "
                f"v_leak = 0"
            )
        gain = _snap(_snap(g("w_in") * dt / tau_syn) * _snap(g("r") * dt / tau_mem))
        params = NeuronParams(model="cuba", leak="mult", beta=beta, alpha=alpha, threshold=thr,
                              bias=zero, reset=reset, reset_delay=delay)
        return params, gain, zero
    raise AssertionError(kind)


def _uniform(a):
    """A scalar when every neuron has the same value (one register per population)."""
    a = np.asarray(a)
    return a.reshape(-1)[0].item() if a.size and np.all(a == a.reshape(-1)[0]) else a


_NEURONS = ("LIF", "IF", "CubaLIF", "LI", "CubaLI")
_LINEAR = ("Affine", "Linear", "Scale")


# --- convolution, pooling, flatten (docs/network.md, "Convolution and pooling") ----------------
_CONV = ("Conv1d", "Conv2d", "SumPool2d", "AvgPool2d")
_SHAPED = _CONV + ("Flatten",)


class _Eye:
    """The identity on ``n`` values (a direct edge, a Flatten): composes without a matrix."""

    def __init__(self, n):
        self.n = int(n)


def _n_in(op):
    return op.n if isinstance(op, _Eye) else op.n_src if isinstance(op, Conv) else op.shape[0]


def _n_out(op):
    return op.n if isinstance(op, _Eye) else op.n_dst if isinstance(op, Conv) else op.shape[1]


def _as_dense(op):
    if isinstance(op, _Eye):
        return np.eye(op.n)
    if isinstance(op, Conv):
        return op.dense().astype(np.float64)
    return op


def _times(m, op):
    """``m`` then ``op`` (each an ``_Eye``, a dense ``(n_in, n_out)`` matrix or a ``Conv``)."""
    if isinstance(m, _Eye):
        return op
    if isinstance(op, _Eye):
        return m
    if isinstance(m, Conv) and isinstance(op, Conv):
        folded = _fold_pool_conv(m, op)
        if folded is not None:
            return folded
    if isinstance(op, Conv):
        return op.apply(_as_dense(m).T).T if isinstance(m, Conv) else op.apply(m.T).T
    return _as_dense(m) @ op


def _gained(m, gain):
    """``m`` with every target's input gain folded in (a Conv stays one when the gain is the same
    within each output channel)."""
    if isinstance(m, Conv):
        per_c = gain.reshape(m.out_channels, -1)
        if np.all(per_c == 1):
            return m
        if np.all(per_c == per_c[:, :1]):
            g = per_c[:, 0].reshape(-1, *([1] * (m.kernel.ndim - 1)))
            return m.with_kernel(m.kernel * g)
    return _as_dense(m) * gain[None, :]


def _float32(w):
    if isinstance(w, (SumPool2d, AvgPool2d)):
        return w
    if isinstance(w, Conv):
        return w.with_kernel(w.kernel.astype(np.float32))
    return np.asarray(w).astype(np.float32)


def _apply(b, op):
    """A bias vector through ``op``."""
    if isinstance(op, _Eye):
        return b
    if isinstance(op, Conv):
        return op.apply(b.astype(np.float64))
    return b @ op


def _is_pool(op):
    """A 2-d depthwise window sum with one value, no padding and stride = window."""
    k = op.kernel
    return (isinstance(op, Conv2d) and k.shape[1] == 1 and op.groups == k.shape[0]
            and np.all(k == k.reshape(-1)[0]) and op.dilation == (1, 1)
            and op.stride == op.kernel_size and all(p == (0, 0) for p in op.padding)
            and op.extent == op.in_shape)


def _fold_pool_conv(pool, conv):
    """``pool`` then ``conv`` as one strided :class:`Conv2d` on the pool's input, or None.

    Exact when the pool is a non-overlapping window sum (stride = window, no padding):
    pooled pixel ``p`` is the window at ``p * k``, so the conv's tap ``j`` (dilation ``D``)
    becomes ``k`` taps at ``j * D * k + i``, its stride ``S * k`` and its padding ``P * k`` (a
    padded pooled pixel is a window of zeros).  A remainder the pool drops (``H % k`` rows) is
    cropped: the folded conv reads only ``extent = (H // k) * k`` rows.
    """
    if not (_is_pool(pool) and isinstance(conv, Conv2d)):
        return None
    if pool.dst_shape != conv.src_shape:
        return None
    kh, kw = pool.kernel_size
    value = pool.kernel.reshape(-1)[0]
    c_out, c_in_g, qh, qw = conv.kernel.shape
    dh, dw = conv.dilation
    big = np.zeros((c_out, c_in_g, (qh - 1) * dh * kh + kh, (qw - 1) * dw * kw + kw),
                   dtype=np.result_type(conv.kernel.dtype, np.float64))
    for jy in range(qh):
        for jx in range(qw):
            y0, x0 = jy * dh * kh, jx * dw * kw
            big[:, :, y0:y0 + kh, x0:x0 + kw] = (conv.kernel[:, :, jy, jx] * value)[:, :, None,
                                                                                     None]
    pad = [[p0 * k, p1 * k] for (p0, p1), k in zip(conv.padding, (kh, kw), strict=True)]
    extent = tuple(o * k for o, k in zip(pool.out_shape, (kh, kw), strict=True))
    return Conv2d(big, pool.in_shape, (conv.stride[0] * kh, conv.stride[1] * kw), pad, 1,
                  conv.groups, extent=extent)


def _ints(v, what, name, node):
    a = np.asarray(v).reshape(-1)
    if a.size == 0 or not np.all(np.mod(a, 1) == 0):
        raise ConfigError(f"NIR node {name!r} ({_kind(node)}): {what}={v!r} is not valid: "
                          f"allowed whole numbers")
    return [int(x) for x in a]


def _padding(v, name, node):
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "SU":
        v = str(v.reshape(-1)[0] if v.ndim else v.item())
        v = v.decode() if isinstance(v, bytes) else v
    if isinstance(v, str):
        return v
    a = _ints(v, "padding", name, node)
    return a[0] if len(a) == 1 else a


def _conv_op(name, node, in_shape):
    """``(Conv, bias per target neuron)`` of a Conv1d / Conv2d / SumPool2d / AvgPool2d node whose
    source has the channel-first shape ``in_shape`` (None: unknown)."""
    kind = _kind(node)
    want = 2 if kind == "Conv1d" else 3
    while in_shape is not None and len(in_shape) > want and in_shape[0] == 1:
        in_shape = in_shape[1:]  # leading batch / time dimensions of an exporter's type
    try:
        if kind in ("Conv1d", "Conv2d"):
            w = np.asarray(node.weight, dtype=np.float64)
            nd = 1 if kind == "Conv1d" else 2
            spatial = None
            if getattr(node, "input_shape", None) is not None:
                spatial = _ints(node.input_shape, "input_shape", name, node)
            if in_shape is not None and len(in_shape) == nd + 1:
                if spatial is not None and list(in_shape[1:]) != spatial:
                    raise ConfigError(
                        f"NIR node {name!r} ({kind}): input_shape={spatial} but its source "
                        f"gives {list(in_shape[1:])}"
                    )
                spatial = list(in_shape[1:])
                c_in = in_shape[0]
            else:
                c_in = None
            if spatial is None:
                raise ConfigError(
                    f"NIR node {name!r} ({kind}): cannot tell the spatial size of its input "
                    f"(no input_shape and no shaped source)"
                )
            groups = _ints(node.groups, "groups", name, node)[0]
            stride = _ints(node.stride, "stride", name, node)
            dilation = _ints(node.dilation, "dilation", name, node)
            cls = Conv1d if nd == 1 else Conv2d
            op = cls(w, spatial, stride if len(stride) > 1 else stride[0],
                     _padding(node.padding, name, node),
                     dilation if len(dilation) > 1 else dilation[0], groups, c_in)
            b = np.asarray(node.bias, dtype=np.float64).reshape(-1)
            if b.size == 1:
                b = np.full(op.out_channels, float(b[0]))
            if b.size != op.out_channels:
                raise ConfigError(
                    f"NIR node {name!r} ({kind}): bias has {b.size} entries for "
                    f"{op.out_channels} output channels"
                )
            return op, np.repeat(b, int(np.prod(op.out_shape)))
        # pooling: channels and size from the source
        if in_shape is None or len(in_shape) != 3:
            t = next(iter((getattr(node, "input_type", None) or {}).values()), None)
            in_shape = None if t is None else [int(x) for x in np.asarray(t).reshape(-1)]
        if in_shape is None or len(in_shape) != 3:
            raise ConfigError(
                f"NIR node {name!r} ({kind}): cannot tell the (C, H, W) shape of its input "
                f"(got {in_shape}); pooling needs a channel-first 2-d source"
            )
        cls = SumPool2d if kind == "SumPool2d" else AvgPool2d
        op = cls(in_shape[0], _ints(node.kernel_size, "kernel_size", name, node),
                 in_shape[1:], _ints(node.stride, "stride", name, node),
                 _ints(node.padding, "padding", name, node))
        return op, np.zeros(op.n_dst)
    except ConfigError as e:
        msg = str(e)
        if msg.startswith("NIR node"):
            raise
        raise ConfigError(f"NIR node {name!r} ({kind}): {msg}") from None


_NOT_PARAMETERS = ("input_type", "output_type", "metadata")


def _non_finite(name, node):
    """A message per numeric parameter of ``node`` holding NaN or infinity (named, with where)."""
    import dataclasses

    out = []
    if not dataclasses.is_dataclass(node):
        return out
    for f in dataclasses.fields(node):
        v = getattr(node, f.name, None)
        if f.name in _NOT_PARAMETERS or v is None:
            continue
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            continue  # not numeric (e.g. a padding mode string)
        bad = ~np.isfinite(a)
        if np.any(bad):
            where = tuple(int(j) for j in np.argwhere(bad)[0]) if a.ndim else ()
            at = f" at [{', '.join(map(str, where))}]" if where else ""
            count = int(bad.sum())
            out.append(
                f"NIR node {name!r} ({_kind(node)}): {f.name} has {count} non-finite "
                f"value{'s' if count > 1 else ''} (first: {a[where]!r}{at}); every parameter "
                f"must be a finite number (check the training run that exported it)"
            )
    return out


def _refusal(name, node):
    return f"NIR node {name!r} of type {_kind(node)} is not supported by spikeforge"


def _raise_all(problems, unsupported=True, footer=""):
    """Raise one error naming every problem (a list of messages); nothing when empty."""
    if not problems:
        return
    cls = UnsupportedError if unsupported else ConfigError
    if len(problems) == 1:
        raise cls(problems[0] + (f"; {footer}" if footer else ""))
    lines = "\n".join(f"  - {p}" for p in problems)
    raise cls(f"the NIR graph has {len(problems)} problems spikeforge cannot get past:\n{lines}"
              + (f"\n{footer}" if footer else ""))


def _linear(name, node):
    """(W as (n_in, n_out), bias (n_out,)) of a linear node."""
    kind = _kind(node)
    if kind == "Scale":
        s = np.asarray(node.scale, dtype=np.float64).reshape(-1)
        return np.diag(s), np.zeros(s.size)
    w = np.asarray(node.weight, dtype=np.float64)
    if w.ndim != 2:
        raise UnsupportedError(
            f"NIR node {name!r} ({kind}): weight of shape {w.shape} is not supported: allowed a "
            f"2-D (n_out, n_in) matrix"
        )
    b = np.zeros(w.shape[0]) if kind == "Linear" else np.asarray(node.bias,
                                                                  dtype=np.float64).reshape(-1)
    if b.size == 1 and w.shape[0] > 1:
        b = np.full(w.shape[0], float(b[0]))
    if b.shape != (w.shape[0],):
        raise ConfigError(
            f"NIR node {name!r} ({kind}): bias has {b.size} entries, weight has {w.shape[0]} rows"
        )
    return w.T.copy(), b


def _delay_steps(name, node, dt):
    """A ``Delay`` node's delays in timesteps (int array, one per element or one for all).

    ``delay / dt`` must be a whole number of steps (within ``_DELAY_TOL``, relative) and >= 0.
    """
    sec = np.asarray(node.delay, dtype=np.float64).reshape(-1)
    if sec.size == 0:
        raise ConfigError(f"NIR node {name!r} (Delay): delay is empty")
    steps = sec / dt
    rounded = np.round(steps)
    bad = np.abs(steps - rounded) > _DELAY_TOL * np.maximum(1.0, np.abs(steps))
    if np.any(bad):
        k = int(np.flatnonzero(bad)[0])
        raise UnsupportedError(
            f"NIR node {name!r} (Delay): delay[{k}]={sec[k]!r} s is {steps[k]:.6g} timesteps of "
            f"dt={dt!r} s: the chip delays by whole timesteps only (check Settings.dt)"
        )
    if np.any(rounded < 0):
        k = int(np.flatnonzero(rounded < 0)[0])
        raise ConfigError(
            f"NIR node {name!r} (Delay): delay[{k}]={sec[k]!r} s is negative: allowed >= 0"
        )
    return rounded.astype(np.int64)


def _check_output_type(name, node, n):
    """An Output's declared type must hold the ``n`` values that reach it, unit dimensions
    aside (nir's strict check, relaxed by :func:`read_nir`, also compares those)."""
    types = [t for t in (getattr(node, "output_type", None) or {}).values() if t is not None]
    for t in types:
        shape = [int(d) for d in np.asarray(t).reshape(-1)]
        if shape and int(np.prod(shape)) != n:
            raise ConfigError(
                f"NIR Output {name!r} is typed {shape} ({int(np.prod(shape))} values) but the "
                f"neurons feeding it have {n}: fix the Output's type in the exporter"
            )


def from_nir(graph, settings: Settings | None = None) -> Network:
    """Convert a NIR graph to a float :class:`Network` (weights and parameters as trained).

    Parameters
    ----------
    graph : nir.NIRGraph or str
        A graph, or the path of a ``.nir`` file (its settings are read as :func:`read_nir` does
        when ``settings`` is None).
    settings : Settings, optional
        ``dt`` and reset behaviour.  Default: the graph's stored settings if any, else
        ``Settings()`` (NIR's own semantics: zero reset, immediately).

    Returns
    -------
    Network
        Float network: one population per neuron node (named as the node, in feed-forward
        order), one projection per (source, target) pair with every chain of Affine / Linear /
        Scale nodes between them multiplied out, biases and ``v_leak`` as neuron biases, input
        gains folded into the weights.  Edges that close a cycle deliver in the next step.
        ``Delay`` nodes on the way add up to the projection's ``delay`` (``delay / dt``
        timesteps, whole within a relative 1e-6); a Delay with different values per element
        splits the projection, one per distinct delay (``docs/compiler.md``, "Delays").

    Raises
    ------
    UnsupportedError
        A node type or parameter the chip does not have (named, with what is supported).
    ConfigError
        An inconsistent graph (shapes, missing nodes) or an invalid setting.
    """
    if isinstance(graph, (str, os.PathLike)):
        graph, stored = read_nir(os.fspath(graph))
        settings = settings or stored
    settings = settings or _settings_from_metadata(graph) or Settings()
    flat = _flatten(graph)
    if len(flat.inputs) != 1:
        raise UnsupportedError(
            f"the NIR graph has {len(flat.inputs)} Input nodes ({flat.inputs}): spikeforge "
            f"supports exactly one (the host's input channels)"
        )
    in_name = flat.inputs[0]
    in_type = flat.nodes[in_name][1].input_type
    n_inputs = int(np.prod(next(iter(in_type.values())))) if in_type else 0
    if not n_inputs:  # untyped Input: take the width of the first matrix after it
        for s, d in flat.edges:
            node = flat.nodes[d][1] if s == in_name and flat.nodes[d][0] == "node" else None
            if node is not None and _kind(node) in ("Affine", "Linear"):
                n_inputs = int(np.asarray(node.weight).shape[1])
                break
            if node is not None and _kind(node) in ("Conv1d", "Conv2d") and getattr(
                    node, "input_shape", None) is not None:
                w = np.asarray(node.weight)
                n_inputs = int(w.shape[1] * int(np.asarray(node.groups).reshape(-1)[0])
                               * np.prod(np.asarray(node.input_shape)))
                break
    kinds, refused, non_finite = {}, [], []
    for name, (role, node) in flat.nodes.items():
        non_finite += _non_finite(name, node)
        if role != "node":
            kinds[name] = role
        elif _kind(node) in _NEURONS:
            kinds[name] = "neuron"
        elif _kind(node) in _LINEAR:
            kinds[name] = "linear"
        elif _kind(node) == "Delay":
            kinds[name] = "delay"
        elif _kind(node) in _CONV:
            kinds[name] = "conv"
        elif _kind(node) == "Flatten":
            kinds[name] = "flatten"
        else:
            refused.append(_refusal(name, node))
    # every unsupported node and every non-finite parameter at once
    _raise_all(refused + non_finite, unsupported=bool(refused),
               footer=f"supported node types: {_SUPPORTED_TEXT}" if refused else "")
    preds = {k: [] for k in flat.nodes}
    succs = {k: [] for k in flat.nodes}
    for s, d in flat.edges:
        preds[d].append(s)
        succs[s].append(d)

    neurons = [k for k in flat.nodes if kinds[k] == "neuron"]
    if not neurons:
        raise UnsupportedError("the NIR graph has no neuron node (LIF, IF, CubaLIF, LI, CubaLI)")
    linear = {k: _linear(k, flat.nodes[k][1]) for k in flat.nodes if kinds[k] == "linear"}
    delays = {k: _delay_steps(k, flat.nodes[k][1], settings.dt)
              for k in flat.nodes if kinds[k] == "delay"}

    # channel-first shapes of what each node passes on (for convolutions and pooling)
    in_dims = next(iter(in_type.values()), None) if in_type else None
    shapes = {in_name: tuple(int(x) for x in np.asarray(in_dims).reshape(-1))
              if in_dims is not None else ((n_inputs,) if n_inputs else None)}
    convs = {}

    def pred_shape(p, seen):
        for q in preds[p]:
            if q not in seen:
                sh = shape_of(q, seen + (p,))
                if sh is not None:
                    return sh
        return None

    def conv_of(p, seen=()):
        if p not in convs:
            convs[p] = _conv_op(p, flat.nodes[p][1], pred_shape(p, seen))
        return convs[p]

    def shape_of(p, seen=()):
        """The shape of what node ``p`` passes on (None: cannot tell)."""
        if shapes.get(p) is not None:
            return shapes[p]
        kind, res = kinds[p], None
        if kind == "linear":
            res = (linear[p][0].shape[1],)
        elif kind == "conv":
            res = conv_of(p, seen)[0].dst_shape
        elif kind == "flatten":
            sh = pred_shape(p, seen)
            res = None if sh is None else (int(np.prod(sh)),)
        elif kind in ("neuron", "delay"):
            own = (_neuron_size(p, flat.nodes[p][1]) if kind == "neuron"
                   else (delays[p].size if delays[p].size > 1 else None))
            sh = pred_shape(p, seen)
            if sh is not None and (own is None or int(np.prod(sh)) == own):
                res = sh
            elif own is not None:
                res = (own,)
        if res is not None:
            shapes[p] = res
        return res

    def width(p, seen=()):
        """How many values node ``p`` passes on (None: cannot tell)."""
        if p in linear:
            return linear[p][0].shape[1]
        if kinds[p] in ("conv", "flatten"):
            sh = shape_of(p, seen)
            return None if sh is None else int(np.prod(sh))
        if p in delays:
            if delays[p].size > 1:
                return delays[p].size
            for q in preds[p]:
                if q not in seen:
                    n = width(q, seen + (p,))
                    if n:
                        return n
            return None
        return sizes.get(p)

    # sizes: from parameters, else from the linear node that feeds the neuron
    sizes = {in_name: n_inputs}
    for k in neurons:
        sizes[k] = _neuron_size(k, flat.nodes[k][1])
    for k in neurons:
        if sizes[k] is None:
            for p in preds[k]:
                if width(p):
                    sizes[k] = width(p)
            if not sizes[k]:
                raise ConfigError(
                    f"NIR node {k!r}: cannot tell how many neurons it has (scalar parameters "
                    f"and no Affine/Linear before it)"
                )

    # contributions into each node: list of (source, W (n_src, n_node), bias (n_node,), delay)
    # with delay the sum of the Delay nodes on the way (timesteps); bias entries have source
    # None.  A Delay is elementwise and linear, so it commutes with the matrices around it; a
    # non-zero bias before it is refused (in the first d steps the delayed bias would be
    # missing, which a neuron bias cannot express)
    memo = {}

    def contrib(node, stack=()):
        if node in memo:
            return memo[node]
        if node in stack:
            raise UnsupportedError(
                f"NIR nodes {list(stack)} form a cycle without a neuron: not supported (every "
                f"cycle must pass through a neuron node)"
            )
        out = []
        for p in preds[node]:
            if kinds[p] in ("neuron", "input"):
                n = sizes[p]
                out.append((p, _Eye(n), np.zeros(n), 0))
            elif kinds[p] in ("linear", "conv", "flatten"):
                if kinds[p] == "linear":
                    w, b = linear[p]
                elif kinds[p] == "conv":
                    w, b = conv_of(p)
                else:  # Flatten: channel-first C-order flattening keeps every index
                    n = width(p)
                    if n is None:
                        raise ConfigError(f"NIR node {p!r} (Flatten): cannot tell its size")
                    w, b = _Eye(n), np.zeros(n)
                for src, m, bb, d in contrib(p, stack + (node,)):
                    if src is None:
                        out.append((None, None, _apply(bb, w), 0))
                        continue
                    if _n_out(m) != _n_in(w):
                        raise ConfigError(
                            f"NIR node {p!r} ({_kind(flat.nodes[p][1])}) expects {_n_in(w)} "
                            f"inputs but {src!r} gives {_n_out(m)}"
                        )
                    out.append((src, _times(m, w), _apply(bb, w), d))
                out.append((None, None, b, 0))  # the node's own bias, counted once
            elif kinds[p] == "delay":
                steps = delays[p]
                for src, m, bb, d in contrib(p, stack + (node,)):
                    if src is None:
                        if np.any(bb != 0):
                            raise UnsupportedError(
                                f"NIR node {p!r} (Delay) delays a non-zero Affine bias: not "
                                f"supported (the chip adds a neuron's bias in every step, but a "
                                f"delayed bias would be missing in the first {int(steps.max())} "
                                f"steps); put the Delay before the Affine, or use a Linear"
                            )
                        continue
                    if steps.size not in (1, _n_out(m)):
                        raise ConfigError(
                            f"NIR node {p!r} (Delay) has {steps.size} delays but {src!r} gives "
                            f"it {_n_out(m)} values"
                        )
                    per = np.broadcast_to(steps, (_n_out(m),))
                    values = np.unique(per)
                    if values.size == 1:
                        out.append((src, m, bb, d + int(values[0])))
                        continue
                    for v in values:  # one projection per distinct delay
                        mask = (per == v).astype(np.float64)
                        out.append((src, _as_dense(m) * mask[None, :], bb * mask, d + int(v)))
            else:
                raise UnsupportedError(
                    f"NIR node {p!r} ({kinds[p]}) feeds {node!r}: not supported"
                )
        memo[node] = out
        return out

    populations, proj_w = {}, {}
    refused = []  # unsupported neuron parameters, all named at once
    for k in neurons:
        node = flat.nodes[k][1]
        n = sizes[k]
        try:
            params, gain, extra_bias = _neuron(k, node, n, settings)
        except UnsupportedError as e:
            refused.append(str(e))
            continue
        bias = extra_bias.copy()
        for src, m, b, d in contrib(k):
            if b.shape != (n,):
                raise ConfigError(
                    f"NIR node {k!r} has {n} neurons but receives {b.shape[0]} values"
                    + (f" from {src!r}" if src else "")
                )
            bias += gain * b
            if src is None:
                continue
            w = _gained(m, gain)
            key = (src, k, d)
            proj_w[key] = w if key not in proj_w else _as_dense(proj_w[key]) + _as_dense(w)
        params.bias = bias
        populations[k] = Population(k, n, params)
    _raise_all(refused)

    # update order: reverse DFS postorder from the input; edges that close a cycle are recurrent
    adj = {k: [] for k in neurons + [in_name]}
    for src, dst, _ in proj_w:
        if dst not in adj[src]:
            adj[src].append(dst)
    order, state = [], {}

    def dfs(u):
        state[u] = 1
        for v in adj[u]:
            if state.get(v) is None:
                dfs(v)
        state[u] = 2
        order.append(u)

    dfs(in_name)
    for k in neurons:
        if state.get(k) is None:
            dfs(k)
    order = [k for k in reversed(order) if k != in_name]

    outputs = []
    for o in flat.outputs:
        for p in preds[o]:
            if kinds[p] == "delay":
                raise UnsupportedError(
                    f"NIR node {p!r} (Delay) feeds the Output {o!r}: not supported; the chip "
                    f"sends a population's spikes to the host in the step they happen (a Delay "
                    f"is the delay of a projection between neuron nodes): delay the output "
                    f"spikes on the host"
                )
            if kinds[p] != "neuron":
                raise UnsupportedError(
                    f"NIR node {p!r} ({_kind(flat.nodes[p][1]) if kinds[p] != 'input' else 'Input'}"
                    f") feeds the Output {o!r}: not supported; the chip sends spikes of neuron "
                    f"populations to the host, so end the graph with a neuron node (an LI / "
                    f"CubaLI node is a membrane readout)"
                )
            if p not in outputs:
                outputs.append(p)
        _check_output_type(o, flat.nodes[o][1], sum(sizes[p] for p in preds[o]))
    projections = [
        Projection(INPUT if src == in_name else src, dst, _float32(w), d)
        for (src, dst, d), w in proj_w.items()
    ]
    for p in populations.values():
        prm = p.params
        prm.bias = _uniform(np.asarray(prm.bias, dtype=np.float32))
        prm.beta, prm.alpha, prm.threshold = (
            _uniform(prm.beta), _uniform(prm.alpha), _uniform(prm.threshold))
    return Network(
        n_inputs=n_inputs,
        populations=[populations[k] for k in order],
        projections=projections,
        outputs=outputs or [order[-1]],
    )
