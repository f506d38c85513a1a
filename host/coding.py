"""Spike coding: turn real-valued samples into input spikes, and output spikes into predictions.

Spec: the spike codes of the seed documents (rate, time to first spike, delta) and the raster
convention of the golden model (``spikeforge.sim.golden``): a raster is an array of shape
``(T, batch, n_inputs)`` of 0/1 (one input event per set entry), the spikes a chip returns have
shape ``(T, batch, n_neurons)``.

Encoders
    :func:`rate_encode` (Bernoulli per step, seeded), :func:`latency_encode` (one spike per
    channel, earlier for larger values) and :func:`delta_encode` (ON/OFF events when a signal
    changes by more than a threshold).  :func:`raster_to_events` / :func:`events_to_raster`
    convert between rasters and AER event lists (one list of channel addresses per timestep).
Decoders
    :func:`spike_count`, :func:`first_spike` and :func:`membrane_readout` turn the output of a
    run into class scores or predictions.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..protocol import SAMPLE_SEED_ZERO

__all__ = [
    "rate_encode",
    "latency_encode",
    "delta_encode",
    "chip_encode",
    "chip_levels",
    "chip_seeds",
    "chip_counts",
    "chip_intensities",
    "xorshift32",
    "SEED_ZERO_STATE",
    "raster_to_events",
    "events_to_raster",
    "encode_events",
    "encode_images",
    "spike_count",
    "first_spike",
    "membrane_readout",
    "predict",
    "DECODERS",
]


def _samples(x, name="x"):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ConfigError(f"{name} has shape {x.shape}, expected (batch, n_inputs) or (n_inputs,)")
    if not np.all(np.isfinite(x)):
        raise ConfigError(f"{name} contains a non-finite value")
    return x


def _timesteps(timesteps):
    if not isinstance(timesteps, (int, np.integer)) or timesteps < 1:
        raise ConfigError(f"timesteps={timesteps!r} is out of range: allowed an integer >= 1")
    return int(timesteps)


def _intensities(x, x_max, who):
    """Samples scaled by ``x_max`` and checked to lie in 0..1 (``who`` names the encoder)."""
    x = _normalise(_samples(x), x_max)
    if np.any(x < 0) or np.any(x > 1):
        bad = float(x[(x < 0) | (x > 1)][0])
        raise ConfigError(
            f"{who}: intensity {bad!r} is out of range: allowed 0..1 (pass x_max to scale)"
        )
    return x


def _normalise(x, x_max):
    if x_max is None:
        return x
    if not np.isscalar(x_max) or not np.isfinite(x_max) or x_max <= 0:
        raise ConfigError(f"x_max={x_max!r} is out of range: allowed a finite number > 0")
    return x / float(x_max)


def rate_encode(x, timesteps, *, seed=0, x_max=None, gain=1.0):
    """Rate coding: every channel spikes with probability ``gain * x`` at every step.

    Parameters
    ----------
    x : array, shape (batch, n_inputs) or (n_inputs,)
        Intensities in ``[0, 1]`` (or in ``[0, x_max]`` when ``x_max`` is given).
    timesteps : int
        Number of steps ``T``.
    seed : int or numpy.random.Generator
        Seed of the Bernoulli draws (the same seed gives the same raster).
    x_max : float, optional
        Divide ``x`` by this first (e.g. 16 for scikit-learn's digits).
    gain : float
        Multiplies the probabilities (clipped to 1).

    Returns
    -------
    ndarray of uint8, shape (T, batch, n_inputs)
    """
    x = _intensities(x, x_max, "rate_encode")
    t = _timesteps(timesteps)
    p = np.clip(gain * x, 0.0, 1.0)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return (rng.random((t,) + p.shape) < p).astype(np.uint8)


def latency_encode(x, timesteps, *, x_max=None, threshold=0.01, linear=True, tau=None):
    """Time-to-first-spike coding: one spike per channel, earlier for larger values.

    With ``linear=True`` the spike time is ``round((1 - x) * (T - 1))``; otherwise it is the
    RC-circuit time ``tau * ln(x / (x - threshold))`` (snnTorch's ``spikegen.latency``), clipped
    to ``T - 1``.  Channels with ``x <= threshold`` never spike.

    Returns
    -------
    ndarray of uint8, shape (T, batch, n_inputs)
    """
    x = _intensities(x, x_max, "latency_encode")
    t = _timesteps(timesteps)
    if not 0 <= threshold < 1:
        raise ConfigError(f"latency_encode: threshold={threshold!r} is out of range: allowed 0..1")
    fire = x > threshold
    if linear:
        times = np.rint((1.0 - x) * (t - 1))
    else:
        tau = float(t - 1) / 5.0 if tau is None else float(tau)
        if tau <= 0:
            raise ConfigError(f"latency_encode: tau={tau!r} is out of range: allowed > 0")
        with np.errstate(divide="ignore", invalid="ignore"):
            times = tau * np.log(x / np.where(fire, x - threshold, 1.0))
        times = np.rint(np.clip(times, 0, t - 1))
    times = np.where(fire, times, t).astype(np.int64)
    raster = np.zeros((t,) + x.shape, dtype=np.uint8)
    b, n = np.nonzero(fire)
    raster[times[b, n], b, n] = 1
    return raster


def delta_encode(signal, threshold, *, off_spikes=True):
    """Delta coding: an event when a signal moved by more than ``threshold`` since the last event.

    Parameters
    ----------
    signal : array, shape (T, batch, n_channels) or (T, n_channels)
        A time series per channel.
    threshold : float
        Change that produces an event (> 0).
    off_spikes : bool
        ``True``: two output channels per input channel, ``2c`` for increases (ON) and
        ``2c + 1`` for decreases (OFF).  ``False``: one channel, increases only.

    Returns
    -------
    ndarray of uint8, shape (T, batch, n_channels * (2 if off_spikes else 1))
        The first step never spikes (it sets the reference).
    """
    s = np.asarray(signal, dtype=np.float64)
    if s.ndim == 2:
        s = s[:, None, :]
    if s.ndim != 3:
        raise ConfigError(
            f"delta_encode: signal has shape {s.shape}, expected (T, batch, n_channels)"
        )
    if not np.isscalar(threshold) or not threshold > 0:
        raise ConfigError(f"delta_encode: threshold={threshold!r} is out of range: allowed > 0")
    t, batch, n = s.shape
    ref = s[0].copy()
    on = np.zeros((t, batch, n), dtype=np.uint8)
    off = np.zeros((t, batch, n), dtype=np.uint8)
    for k in range(1, t):
        d = s[k] - ref
        up, down = d > threshold, d < -threshold
        on[k], off[k] = up, down
        moved = up | (down if off_spikes else False)
        ref = np.where(moved, s[k], ref)
    if not off_spikes:
        return on
    out = np.zeros((t, batch, 2 * n), dtype=np.uint8)
    out[:, :, 0::2], out[:, :, 1::2] = on, off
    return out


# --- the chip's own encoders (docs/encoding.md): integer, bit for bit what SAMPLE generates -----
#: The xorshift32 state used for seed 0 (xorshift32 never leaves 0).
SEED_ZERO_STATE = SAMPLE_SEED_ZERO
_MASK32 = 0xFFFFFFFF
_ENCODERS = ("rate", "latency")


def xorshift32(state):
    """One step of Marsaglia's xorshift32 (13, 17, 5) on a u32 (or a uint32 array, elementwise)."""
    if isinstance(state, np.ndarray):
        state = state ^ (state << np.uint32(13))
        state = state ^ (state >> np.uint32(17))
        return state ^ (state << np.uint32(5))
    state ^= (state << 13) & _MASK32
    state ^= state >> 17
    return state ^ ((state << 5) & _MASK32)


def _u8(x, name):
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ConfigError(f"{name} has shape {a.shape}, expected (batch, n_inputs) or (n_inputs,)")
    if a.size and (not np.issubdtype(a.dtype, np.number) or np.any(a != np.round(a))
                   or a.min() < 0 or a.max() > 255):
        raise ConfigError(f"{name}: intensities must be integers 0..255 (u8 on the wire); scale "
                          f"them first (e.g. chip_intensities)")
    return a.astype(np.int64)


def _u8_param(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 0 <= value <= 255:
        raise ConfigError(f"{name}={value!r} is out of range: allowed an integer 0..255")
    return int(value)


def chip_levels(x, gain=16):
    """Each channel's level: ``min(255, (x * gain) >> 4)`` (``gain`` has 4 fraction bits)."""
    return np.minimum(255, (_u8(x, "x") * _u8_param(gain, "gain")) >> 4)


def chip_seeds(seed, batch):
    """The seed of each of ``batch`` samples: ``seed + b`` (mod 2**32) for an int ``seed``, or
    ``seed`` itself as a sequence of ``batch`` u32 values."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if not 0 <= seed <= _MASK32:
            raise ConfigError(f"seed={seed!r} is out of range: allowed 0..2**32-1")
        return (int(seed) + np.arange(batch, dtype=np.uint64)) & _MASK32
    s = np.asarray(seed)
    if s.shape != (batch,) or not np.issubdtype(s.dtype, np.integer) or s.min() < 0 \
            or s.max() > _MASK32:
        raise ConfigError(f"seed must be an int or {batch} integers 0..2**32-1 (one per sample)")
    return s.astype(np.uint64)


def chip_encode(x, timesteps, encoder="rate", *, gain=16, threshold=1, seed=1):
    """The chip's on-chip encoders (``SAMPLE``), bit for bit: intensities -> input raster.

    Parameters
    ----------
    x : array of integers 0..255, shape (batch, n_inputs) or (n_inputs,)
        The intensities sent to the chip (one u8 per input channel).
    timesteps : int
        ``T``, 1 .. 255.
    encoder : {"rate", "latency"}
        ``rate``: every timestep ``t`` and channel ``c`` (``c`` ascending within ``t``) draw
        the next state of a xorshift32 generator; ``c`` fires when its top byte is below the
        channel's level.  ``latency``: ``c`` fires once, at ``((255 - level) * T) >> 8``, if
        ``level >= threshold``.
    gain : int 0..255
        ``level = min(255, (x * gain) >> 4)``: 16 is 1.0.
    threshold : int 0..255
        Latency coding's smallest level that fires.
    seed : int or sequence of int
        The generator's seed per sample (``seed + b`` for sample ``b`` when an int); seed 0
        starts from :data:`SEED_ZERO_STATE`.

    Returns
    -------
    ndarray of uint8, shape (T, batch, n_inputs)
        Exactly the input events the chip generates (``docs/encoding.md``).
    """
    from ..protocol import MAX_SAMPLE_STEPS

    t = _timesteps(timesteps)
    if t > MAX_SAMPLE_STEPS:
        raise ConfigError(f"timesteps={t} is out of range for on-chip encoding: allowed "
                          f"1..{MAX_SAMPLE_STEPS}")
    if encoder not in _ENCODERS:
        raise ConfigError(f"encoder={encoder!r} is not valid: allowed {', '.join(_ENCODERS)}")
    level = chip_levels(x, gain)
    threshold = _u8_param(threshold, "threshold")
    batch, n = level.shape
    raster = np.zeros((t, batch, n), dtype=np.uint8)
    if encoder == "latency":
        when = ((255 - level) * t) >> 8
        b, c = np.nonzero(level >= threshold)
        raster[when[b, c], b, c] = 1
        return raster
    state = chip_seeds(seed, batch).astype(np.uint32)
    state[state == 0] = SEED_ZERO_STATE
    level32 = level.astype(np.uint32)
    top = np.empty((n, batch), dtype=np.uint32)
    for k in range(t):
        for c in range(n):
            state = xorshift32(state)
            top[c] = state
        np.less(top.T >> np.uint32(24), level32, out=raster[k], casting="unsafe")
    return raster


def chip_counts(spikes, first, count):
    """The ``COUNTS`` readout: spikes of neurons ``first .. first + count - 1`` summed over the
    timesteps, saturating at 255; ``spikes`` is (T, batch, n_neurons) -> (batch, count) uint8."""
    s = np.asarray(spikes)
    return np.minimum(s[:, :, first:first + count].sum(axis=0), 255).astype(np.uint8)


def chip_intensities(x, x_max):
    """Scale samples in ``[0, x_max]`` to the u8 intensities the chip takes (``round(255·x /
    x_max)``)."""
    x = _normalise(_samples(x), x_max)
    if np.any(x < 0) or np.any(x > 1):
        raise ConfigError("chip_intensities: a value is outside 0..x_max")
    return np.rint(x * 255).astype(np.uint8)


def raster_to_events(raster):
    """Convert a raster of one sample to AER events.

    Parameters
    ----------
    raster : array, shape (T, n_inputs) or (T, 1, n_inputs)
        Non-negative integer event counts (a count of 2 gives the address twice).

    Returns
    -------
    list of list of int
        The input channel addresses of each timestep, ascending.
    """
    r = np.asarray(raster)
    if r.ndim == 3:
        if r.shape[1] != 1:
            raise ConfigError(
                f"raster_to_events takes one sample: raster has batch {r.shape[1]}, expected 1"
            )
        r = r[:, 0, :]
    if r.ndim != 2:
        raise ConfigError(f"raster has shape {r.shape}, expected (T, n_inputs)")
    if np.any(r < 0) or np.any(r != np.round(r)):
        raise ConfigError("raster entries must be non-negative integer event counts")
    r = r.astype(np.int64)
    return [np.repeat(np.arange(r.shape[1]), row).tolist() for row in r]


def events_to_raster(events, n_inputs):
    """Inverse of :func:`raster_to_events`: events per step -> ``(T, n_inputs)`` counts."""
    if not isinstance(n_inputs, (int, np.integer)) or n_inputs < 1:
        raise ConfigError(f"n_inputs={n_inputs!r} is out of range: allowed an integer >= 1")
    events = list(events)
    out = np.zeros((len(events), n_inputs), dtype=np.int64)
    for t, evs in enumerate(events):
        evs = np.asarray(list(evs), dtype=np.int64)
        if evs.size and (evs.min() < 0 or evs.max() >= n_inputs):
            raise ConfigError(
                f"timestep {t}: event address {int(evs[(evs < 0) | (evs >= n_inputs)][0])} is "
                f"out of range: allowed 0..{n_inputs - 1}"
            )
        np.add.at(out[t], evs, 1)
    return out


# --- event cameras and images: a CNN's (C, H, W) input -------------------------------------------
_EVENT_FIELDS = ("x", "y", "p", "t")


def _event_fields(ev, k):
    """``x, y, p, t`` of sample ``k``'s events as int64 arrays (a structured array with those
    fields, as tonic's, or a mapping of them)."""
    names = getattr(getattr(ev, "dtype", None), "names", None)
    if names is not None:
        have = names
    elif isinstance(ev, dict):
        have = tuple(ev)
    else:
        raise ConfigError(
            f"encode_events: sample {k} is a {type(ev).__name__}: expected a structured array "
            f"with fields x, y, p, t (as tonic's) or a dict of those arrays"
        )
    missing = [f for f in _EVENT_FIELDS if f not in have]
    if missing:
        raise ConfigError(
            f"encode_events: sample {k} has no field {', '.join(missing)} (it has "
            f"{', '.join(have) or 'none'}): expected x, y, p, t"
        )
    out = []
    for f in _EVENT_FIELDS:
        a = np.asarray(ev[f])
        if a.ndim != 1:
            raise ConfigError(f"encode_events: sample {k}: field {f} has shape {a.shape}, "
                              f"expected one value per event")
        if a.dtype == np.bool_:
            a = a.astype(np.int64)
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise ConfigError(f"encode_events: sample {k}: field {f} has dtype {a.dtype}, "
                              f"expected numbers")
        if f == "t":  # times may be float (seconds) or integer (tonic: microseconds)
            if not np.all(np.isfinite(a)):
                raise ConfigError(f"encode_events: sample {k}: a time t is not finite")
            out.append(a)
            continue
        if np.issubdtype(a.dtype, np.floating) and (
                not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
            i = int(np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))[0])
            raise ConfigError(f"encode_events: sample {k}, event {i}: {f}={float(a[i])!r} is not a "
                              f"whole number")
        out.append(a.astype(np.int64))
    if len({a.size for a in out}) > 1:
        raise ConfigError(f"encode_events: sample {k}: fields x, y, p, t have different lengths "
                          f"{[a.size for a in out]}")
    return out


def encode_events(events, sensor_size, time_window, *, steps=None, t_start=None,
                  n_inputs=None):
    """Bin event streams (an event camera's ``x, y, p, t``) into an input raster.

    Step ``k`` of a sample holds the events with ``t_start + k * time_window <= t <
    t_start + (k + 1) * time_window``; event ``(x, y, p)`` is input channel ``(p * H + y) * W +
    x``, the channel-first ``(C, H, W)`` = ``(polarity, y, x)`` layout of a CNN's input
    (``docs/network.md``, "Index order"; tonic's ``ToFrame`` frames ``(T, P, H, W)`` flattened).
    A channel fires at most once per step on the chip, so several events of one pixel and
    polarity in one step are one input spike.

    Parameters
    ----------
    events : structured array, dict, or a list of them
        One sample's events, a structured array with fields ``x``, ``y``, ``p`` (whole
        numbers; ``p`` may be bool) and ``t`` (tonic's ``events``) or a dict of four equally
        long arrays; or a list of samples (the batch).  Events need not be sorted.
    sensor_size : (W, H, P)
        tonic's ``sensor_size`` (width, height, polarities), e.g. ``(34, 34, 2)`` for N-MNIST:
        ``0 <= x < W``, ``0 <= y < H``, ``0 <= p < P``.
    time_window : int or float
        Length of one step, in the unit of ``t`` (tonic: microseconds), > 0.
    steps : int, optional
        Number of steps ``T``; events from step ``T`` on are left out.  Default: as many as the
        sample with the longest stream needs (its last, incomplete window included).
    t_start : int or float, optional
        Start of step 0 for every sample; events before it are left out.  Default: each
        sample's first event.
    n_inputs : int, optional
        The network's input channels (``net.n_inputs``): checked to be ``P * H * W``.

    Returns
    -------
    ndarray of uint8, shape (T, batch, P * H * W)

    Raises
    ------
    ConfigError
        A sample without the four fields or with fields of different lengths, a coordinate or
        polarity outside ``sensor_size`` (the first offending event is named), a non-integer
        coordinate, a bad ``sensor_size`` / ``time_window`` / ``steps``, an empty batch, no
        events at all and no ``steps``, ``n_inputs`` different from ``P * H * W``.
    """
    size = tuple(np.atleast_1d(np.asarray(sensor_size)).tolist()) if not isinstance(
        sensor_size, (int, np.integer)) else (sensor_size,)
    if len(size) != 3 or not all(isinstance(v, int) and v >= 1 for v in size):
        raise ConfigError(
            f"encode_events: sensor_size={sensor_size!r} is not valid: allowed (W, H, P), three "
            f"integers >= 1 (tonic's sensor_size, e.g. (34, 34, 2))"
        )
    w, h, n_pol = size
    n_ch = n_pol * h * w
    if n_inputs is not None and n_inputs != n_ch:
        raise ConfigError(
            f"encode_events: sensor_size (W, H, P) = {size} gives {n_ch} input channels "
            f"(P * H * W), but the network has n_inputs={n_inputs}"
        )
    if (isinstance(time_window, (bool, np.bool_)) or not np.isscalar(time_window)
            or not np.isfinite(time_window) or time_window <= 0):
        raise ConfigError(f"encode_events: time_window={time_window!r} is out of range: allowed "
                          f"a number > 0 (in the unit of t)")
    if steps is not None and (isinstance(steps, (bool, np.bool_)) or
                              not isinstance(steps, (int, np.integer)) or steps < 1):
        raise ConfigError(f"encode_events: steps={steps!r} is out of range: allowed an integer "
                          f">= 1")
    if t_start is not None and (not np.isscalar(t_start) or not np.isfinite(t_start)):
        raise ConfigError(f"encode_events: t_start={t_start!r} is not valid: allowed a number")
    single = isinstance(events, dict) or getattr(getattr(events, "dtype", None), "names",
                                                 None) is not None
    samples = [events] if single else list(events)
    if not samples:
        raise ConfigError("encode_events: the batch is empty")
    binned = []
    for k, ev in enumerate(samples):
        x, y, p, t = _event_fields(ev, k)
        for name, a, hi in (("x", x, w), ("y", y, h), ("p", p, n_pol)):
            bad = np.flatnonzero((a < 0) | (a >= hi))
            if bad.size:
                i = int(bad[0])
                raise ConfigError(
                    f"encode_events: sample {k}, event {i} (x={int(x[i])}, y={int(y[i])}, "
                    f"p={int(p[i])}, t={t[i]}): {name}={int(a[i])} is outside the sensor: "
                    f"allowed 0..{hi - 1} (sensor_size (W, H, P) = {size}; {bad.size} such "
                    f"event(s))" + ("; map polarities -1/+1 to 0/1 first"
                                    if name == "p" and a[i] < 0 else "")
                )
        start = (t.min() if t.size else 0) if t_start is None else t_start
        step = np.floor((t - start) / float(time_window)).astype(np.int64)
        binned.append((step, (p * h + y) * w + x))
    if steps is None:
        last = max((int(s.max()) for s, _ in binned if s.size), default=-1)
        if last < 0:
            raise ConfigError("encode_events: no events at or after t_start and no steps given: "
                              "pass steps")
        steps = last + 1
    steps = int(steps)
    raster = np.zeros((steps, len(samples), n_ch), dtype=np.uint8)
    for b, (step, ch) in enumerate(binned):
        keep = (step >= 0) & (step < steps)
        raster[step[keep], b, ch[keep]] = 1
    return raster


def encode_images(images, timesteps, code="rate", *, in_shape=None, layout="NCHW", seed=0,
                  x_max=None, gain=1.0):
    """Rate- or latency-code an image batch into the input raster of a CNN.

    The images are flattened channel-first, pixel ``(c, y, x)`` being input channel ``(c * H +
    y) * W + x`` (``docs/network.md``, "Index order"), then coded as :func:`rate_encode` or
    :func:`latency_encode` (linear) code the flattened intensities.

    Parameters
    ----------
    images : array, shape (N, C, H, W), (N, H, W) or (C, H, W) / (H, W) with ``in_shape``
        Intensities in ``[0, 1]`` (``[0, x_max]`` with ``x_max``).  ``(N, H, W)`` is one
        channel.  A single image needs ``in_shape`` (else ``(N, H, W)`` and ``(C, H, W)`` look
        alike).
    timesteps : int
        Number of steps ``T``.
    code : {"rate", "latency"}
    in_shape : (C, H, W), optional
        The network's input shape (a NIR graph's ``Input`` type): the images must have it.
    layout : {"NCHW", "NHWC"}
        Where the channel axis of a 4-d batch is; ``"NHWC"`` (image libraries' order) is
        transposed to channel-first.
    seed, x_max, gain
        As :func:`rate_encode` (``seed`` and ``gain`` for rate coding only).

    Returns
    -------
    ndarray of uint8, shape (T, N, C * H * W)
    """
    x = np.asarray(images, dtype=np.float64)
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"encode_images: layout={layout!r} is not valid: allowed 'NCHW', "
                          f"'NHWC'")
    if code not in ("rate", "latency"):
        raise ConfigError(f"encode_images: code={code!r} is not valid: allowed 'rate', "
                          f"'latency'")
    if in_shape is not None:
        in_shape = tuple(int(v) for v in np.atleast_1d(in_shape))
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ConfigError(f"encode_images: in_shape={in_shape!r} is not valid: allowed "
                              f"(C, H, W)")
        if x.ndim in (2, 3) and x.shape == in_shape[3 - x.ndim:]:
            x = x.reshape((1, *in_shape) if layout == "NCHW" else
                          (1, *in_shape[1:], in_shape[0]))  # one image
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W): one channel
    elif x.ndim == 4:
        if layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
    else:
        raise ConfigError(
            f"encode_images: images have shape {x.shape}: expected (N, C, H, W) or (N, H, W) "
            f"(a single (C, H, W) or (H, W) image with in_shape)"
        )
    if x.shape[0] == 0 or 0 in x.shape[1:]:
        raise ConfigError(f"encode_images: images have shape {x.shape}: an empty batch or image")
    if in_shape is not None and x.shape[1:] != in_shape:
        raise ConfigError(
            f"encode_images: images are {x.shape[1:]} (C, H, W) after layout {layout!r}, the "
            f"network's input is {in_shape}"
        )
    flat = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    if code == "rate":
        return rate_encode(flat, timesteps, seed=seed, x_max=x_max, gain=gain)
    return latency_encode(flat, timesteps, x_max=x_max)


# --- decoders ------------------------------------------------------------------------------------
def _spikes(spikes):
    s = np.asarray(spikes)
    if s.ndim == 2:
        s = s[:, None, :]
    if s.ndim != 3:
        raise ConfigError(f"spikes have shape {s.shape}, expected (T, batch, n_neurons)")
    return s


def spike_count(spikes):
    """Scores = number of spikes of each neuron: ``(T, batch, n) -> (batch, n)``."""
    return _spikes(spikes).astype(np.int64).sum(axis=0)


def first_spike(spikes):
    """Time of each neuron's first spike (``T`` when it never spikes): ``(batch, n)``.

    For a prediction, the earliest neuron wins: use ``-first_spike(spikes)`` as the score.
    """
    s = _spikes(spikes).astype(bool)
    t = s.shape[0]
    any_spike = s.any(axis=0)
    return np.where(any_spike, s.argmax(axis=0), t)


def membrane_readout(v, scale=1.0, reduce="max"):
    """Scores from a (leaky-integrator) readout membrane ``v`` of shape ``(T, batch, n)``.

    Parameters
    ----------
    v : array, shape (T, batch, n)
        Membrane trace (integer codes from the chip or floats).
    scale : float or array of shape (n,)
        The quantization scale of the population (integer code = scale * float value), so scores
        of a quantized network are comparable with the float network's.
    reduce : {"max", "last", "mean"}
        Maximum over time (snnTorch tutorials), the last step, or the mean.
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 2:
        v = v[:, None, :]
    if v.ndim != 3:
        raise ConfigError(f"v has shape {v.shape}, expected (T, batch, n_neurons)")
    v = v / np.asarray(scale, dtype=np.float64)
    if reduce == "max":
        return v.max(axis=0)
    if reduce == "last":
        return v[-1]
    if reduce == "mean":
        return v.mean(axis=0)
    raise ConfigError(f"reduce={reduce!r} is not valid: allowed 'max', 'last', 'mean'")


DECODERS = ("count", "first", "membrane")


def predict(decoder, spikes=None, v=None, scale=1.0):
    """Class predictions ``(batch,)`` with ``decoder`` in :data:`DECODERS`.

    ``count``: most spikes wins, ties go to the earliest first spike, then to the lowest index.
    ``first``: earliest first spike wins, ties go to the most spikes.  ``membrane``: largest
    readout (:func:`membrane_readout`, ``reduce="max"``).
    """
    if decoder == "membrane":
        if v is None:
            raise ConfigError("decoder 'membrane' needs the membrane trace v")
        return membrane_readout(v, scale).argmax(axis=1)
    if decoder not in DECODERS:
        raise ConfigError(f"decoder={decoder!r} is not valid: allowed {', '.join(DECODERS)}")
    if spikes is None:
        raise ConfigError(f"decoder {decoder!r} needs the spikes")
    count = spike_count(spikes)
    first = first_spike(spikes)
    t = _spikes(spikes).shape[0]
    if decoder == "count":
        score = count * (t + 1) + (t - first)
    else:
        score = (t - first) * (t + 1) + count
    return score.argmax(axis=1)
