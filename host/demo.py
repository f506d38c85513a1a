"""The main demo: a bundled, trained spiking network classifies real data on the chip.

Spec: ``docs/compiler.md`` (the flow) and the backend interface of
``spikeforge.host.backends``.

:func:`run_demo` loads the bundled digit classifier (``spikeforge/data/digits.nir``, trained
by ``examples/train_snntorch_digits.py`` on scikit-learn's real 8x8 handwritten digits), compiles
it, rate-codes the test split, and runs it three ways: the float model (golden float mode, equal
to snnTorch), the integer model (golden int mode, the chip's specification) and the chip through
a :class:`~spikeforge.host.backends.Backend`.  It reports the three accuracies, how often the
chip's output spikes agree with the golden model's, the speed at which this PC simulated the
chip, and, on the virtual board, the speed a real board would have (``docs/projection.md``,
:mod:`spikeforge.host.projection`).

With ``on_chip=True`` (``spikeforge demo --on-chip``) the host sends the digits' intensities
instead of their spikes: the chip encodes them (``docs/encoding.md``) and returns the output
neurons' spike counts, which must equal the golden model's for the same encoding
(:func:`~spikeforge.host.coding.chip_encode`); a chip without encoders gets the same spikes
encoded on the host, and the result's ``encoding`` says which happened.

:func:`run_model` is ``spikeforge run``: it compiles a model file and runs an input raster on a
backend.  The command checks every file and option before it opens a board
(:func:`load_inputs`, :func:`check_inputs`, :func:`check_plot_path`): a user mistake ends in one
:class:`~spikeforge.errors.SpikeforgeError` line.

:func:`register` adds the ``demo`` and ``run`` subcommands to an ``argparse`` subparsers object.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import zipfile
import zlib

import numpy as np

from ..errors import ConfigError, SpikeforgeError
from ..progress import progress_bar
from ..sim.golden import GoldenChip
from .backends import Backend, GoldenBackend, check_raster, open_backend
from .coding import predict, rate_encode

__all__ = [
    "N_TEST",
    "MODELS",
    "load_digits_split",
    "data_path",
    "load_bundled",
    "run_demo",
    "run_model",
    "load_inputs",
    "check_inputs",
    "check_plot_path",
    "check_intensities",
    "check_encoding",
    "host_encode",
    "delta_ramp",
    "ENCODINGS",
    "nir_settings",
    "PlotError",
    "LinkCounts",
    "board_speed",
    "register",
]


class PlotError(SpikeforgeError):
    """``--plot`` cannot be honoured (matplotlib missing, bad path or format, plotting failed)."""

N_TEST = 360
"""The test split is the last ``N_TEST`` samples of ``sklearn.datasets.load_digits``."""

MODELS = {"snntorch": "digits.nir", "sklearn": "digits_sklearn.npz",
          "digits-conv": "digits_conv.nir"}
"""Bundled models: snnTorch-trained (the default), converted from a scikit-learn MLP, and a
convolutional snnTorch network (``digits-conv``: two 3x3 convolutions with average pooling; the
``ulx3s-85f-conv`` board keeps them as weight-shared blocks, every other board unrolls each into
a dense block, ``docs/network.md``)."""

_TRAINERS = {"snntorch": "examples/train_snntorch_digits.py",
             "sklearn": "examples/train_sklearn_digits.py",
             "digits-conv": "examples/train_snntorch_conv_digits.py"}
"""The script that writes each bundled model."""


def load_digits_split():
    """scikit-learn's digits as ``((x_train, y_train), (x_test, y_test))``, pixels 0..16."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    return (x[:-N_TEST], y[:-N_TEST]), (x[-N_TEST:], y[-N_TEST:])


def data_path(name: str) -> str:
    """Path of a file bundled in ``spikeforge/data``."""
    pkg = sys.modules[__name__.rsplit(".", 2)[0]]  # the top package (spikeforge/ holds data/)
    return os.path.join(os.path.dirname(os.path.abspath(pkg.__file__)), "data", name)


def load_bundled(model: str = "snntorch"):
    """``(path, metadata)`` of a bundled model (see :data:`MODELS`)."""
    if model not in MODELS:
        raise ConfigError(f"model={model!r} is not valid: allowed {', '.join(MODELS)}")
    path = data_path(MODELS[model])
    meta_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(path) or not os.path.isfile(meta_path):
        raise ConfigError(
            f"the bundled model {path!r} is missing; run {_TRAINERS[model]}"
        )
    with open(meta_path) as f:
        return path, json.load(f)


def _progress(enabled, total, label):
    """A rich progress bar (or a no-op) with an ``advance(n)`` method."""
    return progress_bar(enabled, total, label)


def _run_backend(backend: Backend, raster, chunk, progress, label):
    """Run ``raster`` through ``backend`` in chunks of samples; returns (spikes, seconds)."""
    batch = raster.shape[1]
    out = []
    bar = _progress(progress, batch, label)
    start = time.perf_counter()
    try:
        for k in range(0, batch, chunk):
            part = raster[:, k:k + chunk]
            spikes = np.asarray(backend.run(part), dtype=bool)
            want = (part.shape[0], part.shape[1], backend.net.n_neurons)
            if spikes.shape != want:
                raise ConfigError(
                    f"backend {backend.name!r} returned spikes of shape {spikes.shape}, expected "
                    f"{want}"
                )
            out.append(spikes)
            if bar is not None:
                bar.update(bar.task, advance=part.shape[1])
    finally:
        if bar is not None:
            bar.stop()
    return np.concatenate(out, axis=1), time.perf_counter() - start


# --- what a run cost on the link, and what a board would take ------------------------------------
def _is_board_url(port) -> bool:
    return isinstance(port, str) and (port.startswith("/dev/") or port.upper().startswith("COM"))


def _streamed_frames(dev):
    """RUN and SAMPLE request frames a device sent (both are streamed), or None."""
    frames = [getattr(dev, k, None) for k in ("run_frames", "sample_frames")]
    frames = [f for f in frames if isinstance(f, int)]
    return sum(frames) if frames else None


class LinkCounts:
    """The counters of a backend's link and chip, read before and after a run.

    ``delta()`` gives what the run cost: ``cycles`` (chip clock cycles, from the virtual board),
    ``bytes_to_chip``, ``bytes_to_host`` (the transport's byte counters), ``round_trips``
    (``Device.round_trips`` where the device counts them, else the transport's turnarounds:
    one per request of a stop-and-wait host) and ``pipelined`` (the device streamed RUN or
    SAMPLE requests).  A counter the backend does not have is ``None``.
    """

    def __init__(self, backend):
        self.backend = backend
        self.device = getattr(backend, "device", None)
        self.transport = getattr(self.device, "transport", None)
        self.vb = getattr(backend, "vb", None)
        self._before = self._read()

    def _cycles(self):
        if self.vb is None:
            return None
        try:
            return int(self.vb.stats().cycles)
        except Exception:  # a board that stopped: no count, the projection says n/a
            return None

    def _read(self):
        dev, tr = self.device, self.transport
        rt = getattr(dev, "round_trips", None)
        source = "device" if isinstance(rt, int) else None
        if source is None and isinstance(getattr(tr, "turnarounds", None), int):
            rt, source = tr.turnarounds, "transport turnarounds"
        return {
            "cycles": self._cycles(),
            "bytes_to_chip": getattr(tr, "bytes_written", None),
            "bytes_to_host": getattr(tr, "bytes_read", None),
            "round_trips": rt if source else None,
            "round_trips_source": source,
            "run_frames": _streamed_frames(dev),
        }

    def delta(self) -> dict:
        """What the run cost since this object was made (``None`` where unknown)."""
        after, before = self._read(), self._before
        out = {}
        for k in ("cycles", "bytes_to_chip", "bytes_to_host", "round_trips"):
            a, b = after[k], before[k]
            out[k] = a - b if isinstance(a, int) and isinstance(b, int) else None
        out["round_trips_source"] = after["round_trips_source"]
        frames = after["run_frames"], before["run_frames"]
        out["pipelined"] = bool(isinstance(frames[0], int) and isinstance(frames[1], int)
                                and frames[0] > frames[1])
        return out


def board_speed(backend, counts: dict, samples: int) -> dict:
    """What a real board would take for a run: :func:`~spikeforge.host.projection.project_board`
    at the board's clock and baud rate, for 1 ms and 16 ms of USB latency per round trip.

    Returns a JSON-ready dict: ``available``; with it ``board``, ``clock_hz``, ``baud``,
    ``mode`` (``"pipelined"`` or ``"stop-and-wait"``), ``counts`` and ``latencies`` (one
    :meth:`~spikeforge.host.projection.Projection.to_dict` per latency); without it ``reason``.
    """
    from .projection import board_link, project_board

    board = getattr(backend, "board", None)
    if board is None:
        if _is_board_url(getattr(backend, "url", None)):
            why = "this is a real board: its measured speed is the speed"
        elif getattr(backend, "vb", None) is None and getattr(backend, "device", None) is None:
            why = (f"the {backend.name} backend simulates no clock cycles; run on the virtual "
                   "board (--port virtual) for a projection")
        else:
            why = ("a virtual board started elsewhere does not tell its board nor its cycles; "
                   "run with --port virtual for a projection")
        return {"available": False, "reason": why}
    missing = [k for k in ("cycles", "bytes_to_chip", "bytes_to_host", "round_trips")
               if counts.get(k) is None]
    if missing:
        return {"available": False, "reason": f"the backend does not count {', '.join(missing)}"}
    clock_hz, baud = board_link(board)
    kw = {k: counts[k] for k in ("cycles", "bytes_to_chip", "bytes_to_host", "round_trips")}
    identity = getattr(getattr(backend, "device", None), "identity", None)
    window = getattr(identity, "rx_window", None) if counts["pipelined"] else None
    ps = project_board(board, pipelined=counts["pipelined"], samples=samples,
                       window_bytes=window, **kw)
    return {
        "available": True,
        "board": ps[0].board,
        "clock_hz": clock_hz,
        "baud": baud,
        "mode": "pipelined" if counts["pipelined"] else "stop-and-wait",
        "counts": dict(counts),
        "latencies": [p.to_dict() for p in ps],
    }


def _speed_kind(backend) -> str:
    """What the wall-clock speed of a run measures."""
    if _is_board_url(getattr(backend, "url", None)):
        return "board speed (measured, this board)"
    return "simulation speed (this PC)"


ENCODINGS = ("rate", "latency", "delta")
"""Spike codes of ``--encode``: ``rate`` and ``latency`` exist on the host and on the chip
(``--on-chip``, ``docs/encoding.md``); ``delta`` only on the host."""


def delta_ramp(x, timesteps):
    """Delta coding of static samples in ``[0, 1]`` (``(batch, n)``): each sample fades in
    linearly from 0 over ``timesteps`` steps, and :func:`~spikeforge.host.coding.delta_encode`
    (ON events only, threshold ``0.5 / T``) turns the ramp into events, so a channel fires about
    every ``1 / x`` steps.  Returns ``(T, batch, n)`` uint8."""
    from .coding import delta_encode

    x = np.asarray(x, dtype=np.float64)
    ramp = np.arange(timesteps + 1, dtype=np.float64)[:, None, None] / timesteps * x[None]
    return delta_encode(ramp, 0.5 / timesteps, off_spikes=False)[1:]


def host_encode(x, timesteps, encoder, *, x_max=1.0, seed=0):
    """The host encoders of ``--encode`` (floating point, NumPy's generator): ``rate``
    (:func:`~spikeforge.host.coding.rate_encode`), ``latency``
    (:func:`~spikeforge.host.coding.latency_encode`) or ``delta`` (:func:`delta_ramp`) of samples
    in ``[0, x_max]``; ``(T, batch, n_inputs)`` uint8."""
    from .coding import latency_encode

    if encoder == "rate":
        return rate_encode(x, timesteps, seed=seed, x_max=x_max)
    if encoder == "latency":
        return latency_encode(x, timesteps, x_max=x_max)
    if encoder == "delta":
        return delta_ramp(np.asarray(x, dtype=np.float64) / x_max, timesteps)
    raise ConfigError(f"encoder={encoder!r} is not valid: allowed {', '.join(ENCODINGS)}")


def check_encoding(encode, on_chip, timesteps):
    """Check ``--encode``/``--on-chip``/``--timesteps`` together (before a board is opened).

    Raises
    ------
    ConfigError
        An unknown code, ``delta`` on the chip, or on the chip more than ``MAX_SAMPLE_STEPS``
        timesteps (one line each).
    """
    from ..protocol import MAX_SAMPLE_STEPS

    if encode is not None and encode not in ENCODINGS:
        raise ConfigError(f"--encode {encode!r} is not valid: allowed {', '.join(ENCODINGS)}")
    if on_chip and encode == "delta":
        raise ConfigError("--encode delta --on-chip: delta coding has no on-chip form (it needs "
                          "new intensities every timestep, docs/encoding.md); drop --on-chip to "
                          "encode on the host")
    if on_chip and timesteps is not None and not 1 <= timesteps <= MAX_SAMPLE_STEPS:
        raise ConfigError(f"--timesteps {timesteps} is out of range for --on-chip: allowed "
                          f"1..{MAX_SAMPLE_STEPS}")


def _run_encoded_backend(backend, x, t, encoder, seed, readout, chunk, progress, label):
    """:meth:`Backend.run_encoded` in chunks of samples (sample ``b`` keeps seed ``seed + b``);
    returns (result, seconds)."""
    batch = x.shape[0]
    out = []
    bar = _progress(progress, batch, label)
    start = time.perf_counter()
    try:
        for k in range(0, batch, chunk):
            out.append(backend.run_encoded(x[k:k + chunk], t, encoder, seed=seed + k,
                                           readout=readout, on_chip=None))
            if bar is not None:
                bar.update(bar.task, advance=min(chunk, batch - k))
    finally:
        if bar is not None:
            bar.stop()
    return np.concatenate(out, axis=0 if readout == "counts" else 1), \
        time.perf_counter() - start


def run_demo(backend=None, samples=None, timesteps=None, progress=True, *, model="snntorch",
             config=None, chunk=32, encode=None, on_chip=False) -> dict:
    """Classify the digits test split with the bundled model on ``backend``.

    Parameters
    ----------
    backend : Backend, optional
        The chip (default: :class:`GoldenBackend`, the integer golden model).
    samples : int, optional
        Use the first ``samples`` test samples (default: all 360).
    timesteps : int, optional
        Default: the model's (its metadata's ``timesteps``).
    progress : bool
        Show a progress bar while the chip runs.
    model : {"snntorch", "sklearn", "digits-conv"}
        Which bundled model (:data:`MODELS`).
    config
        Chip configuration for the fit check (default: the backend's ``config`` attribute, if
        it has one).
    chunk : int
        Samples per ``backend.run`` call.
    encode : {"rate", "latency", "delta"}, optional
        The spike code (default: the model's, rate coding).  On the host: :func:`host_encode`.
    on_chip : bool
        Send intensities instead of spikes: the digits scaled to 0..255
        (:func:`~spikeforge.host.coding.chip_intensities`), encoded by the chip's ``rate`` or
        ``latency`` encoder (:meth:`Backend.run_encoded`; a chip without encoders, or a
        backend that is not a chip, falls back to the same encoding on the host).  When the
        model decodes by spike count the chip returns only the output neurons' counts.

    Returns
    -------
    dict
        ``accuracy_float``, ``accuracy_golden``, ``accuracy_chip``, ``spike_agreement`` (share of
        output-population entries (step, sample, neuron) on which chip and golden int agree),
        ``identical`` (every neuron's spikes equal; only the output populations' when the
        backend's ``reports_all_neurons`` is False), ``samples``, ``timesteps``,
        ``throughput`` (``kind``: what was measured, "simulation speed (this PC)" unless the
        backend is a real board; ``samples_per_s``, ``events_per_s``: input events plus output
        spikes per second of wall-clock time, ``seconds``), ``board_projection`` (what a real
        board would do, :func:`board_speed`), ``backend``, ``model``, the network's size and
        ``encoding`` (``encoder``, ``on_chip``, ``path``: who encoded, ``"host"`` or
        ``"chip"``, ``reason``, ``readout``).  With ``on_chip``: ``accuracy_float`` and
        ``accuracy_golden`` are host-encoded (the model's host encoder), ``accuracy_chip`` and
        ``accuracy_golden_chip_encoding`` (the golden model fed the chip's own encoding,
        :func:`~spikeforge.host.coding.chip_encode`) are encoded as the chip does; ``identical``
        and ``spike_agreement`` compare the chip with the latter (``count_agreement`` too when
        the chip returned counts).
    """
    from .compiler import compile

    backend = GoldenBackend() if backend is None else backend
    path, meta = load_bundled(model)
    (_, _), (x_test, y_test) = load_digits_split()
    if samples is not None:
        if not isinstance(samples, (int, np.integer)) or not 1 <= samples <= len(x_test):
            raise ConfigError(f"samples={samples!r} is out of range: allowed 1..{len(x_test)}")
        x_test, y_test = x_test[:samples], y_test[:samples]
    t = meta["timesteps"] if timesteps is None else timesteps
    enc = meta["encoder"]
    encoder = enc.get("kind", "rate") if encode is None else encode
    check_encoding(encoder, on_chip, t)
    raster = host_encode(x_test, t, encoder, x_max=enc["x_max"], seed=enc["seed"])
    config = getattr(backend, "config", None) if config is None else config
    compiled = compile(path, config)
    net, fnet = compiled.net, compiled.float_net
    out_pop = net.outputs[0]
    sl = slice(net.base(out_pop), net.base(out_pop) + net.population(out_pop).size)
    decoder = meta.get("decoder", "count")

    batch = raster.shape[1]
    float_spikes = GoldenChip(fnet, "float", batch=batch).run(raster, record_v=False)["spikes"]
    golden_spikes = GoldenChip(net, "int", batch=batch, fmt=compiled.fmt).run(
        raster, record_v=False)["spikes"]

    def acc(spikes):
        return float(np.mean(predict(decoder, spikes=spikes[..., sl]) == y_test))

    encoding = {"encoder": encoder, "on_chip": bool(on_chip), "path": "host",
                "reason": "--on-chip not given", "readout": "spikes"}
    extra = {}
    backend.load(net)
    meter = LinkCounts(backend)
    if not on_chip:
        chip_spikes, seconds = _run_backend(backend, raster, chunk, progress,
                                            f"{backend.name}: {batch} samples")
        golden_ref = golden_spikes
        n_events = int(raster.sum()) + int(chip_spikes[..., sl].sum())
        accuracy_chip = acc(chip_spikes)
    else:
        from .coding import chip_encode, chip_intensities

        x8 = chip_intensities(x_test, enc["x_max"])
        seed = int(enc["seed"])
        chip_raster = chip_encode(x8, t, encoder, seed=seed)
        golden_ref = GoldenChip(net, "int", batch=batch, fmt=compiled.fmt).run(
            chip_raster, record_v=False)["spikes"]
        readout = "counts" if decoder == "count" else "spikes"
        result, seconds = _run_encoded_backend(backend, x8, t, encoder, seed, readout, chunk,
                                               progress, f"{backend.name}: {batch} samples")
        encoding.update(path=backend.encoding_path, reason=backend.encoding_reason,
                        readout=getattr(backend, "encoding_readout", None) or "spikes",
                        intensities=f"chip_intensities(x, x_max={enc['x_max']:g}): 0..255",
                        gain=16, seed=seed)
        extra["accuracy_golden_chip_encoding"] = acc(golden_ref)
        if readout == "counts":
            from .backend import output_counts

            n_first = net.population(out_pop).size
            golden_counts = output_counts(golden_ref, net.output_indices())
            # counts decoder: most spikes wins, ties to the lowest index (no first-spike times)
            extra["accuracy_golden_chip_encoding"] = float(
                np.mean(golden_counts[:, :n_first].argmax(axis=1) == y_test))
            accuracy_chip = float(np.mean(result[:, :n_first].argmax(axis=1) == y_test))
            extra["count_agreement"] = float(np.mean(result == golden_counts))
            extra["decoder_on_chip"] = "spike count (ties to the lowest index)"
            # comparisons of spikes are not possible: counts stand for them
            chip_spikes = None
            identical = bool(np.array_equal(result, golden_counts))
            agreement = extra["count_agreement"]
            n_events = int(chip_raster.sum()) + int(result.sum())
        else:
            chip_spikes = result
            accuracy_chip = acc(chip_spikes)
            n_events = int(chip_raster.sum()) + int(chip_spikes[..., sl].sum())
    counts = meter.delta()
    if chip_spikes is not None:
        agreement = float(np.mean(chip_spikes[..., sl] == golden_ref[..., sl]))
        identical = bool(np.array_equal(chip_spikes, golden_ref)
                         if getattr(backend, "reports_all_neurons", True)
                         else np.array_equal(chip_spikes[..., sl], golden_ref[..., sl]))
    return {
        "model": meta.get("name", model),
        "backend": backend.name,
        "samples": int(batch),
        "timesteps": int(t),
        "neurons": int(net.n_neurons),
        "synapses": int(net.n_synapses),
        "accuracy_float": acc(float_spikes),
        "accuracy_golden": acc(golden_spikes),
        "accuracy_chip": accuracy_chip,
        **extra,
        "spike_agreement": agreement,
        "identical": identical,
        "encoding": encoding,
        "throughput": {
            "kind": _speed_kind(backend),
            "samples_per_s": batch / seconds if seconds > 0 else float("inf"),
            "events_per_s": n_events / seconds if seconds > 0 else float("inf"),
            "seconds": seconds,
            "events": n_events,
        },
        "board_projection": board_speed(backend, counts, int(batch)),
        "chip_link": getattr(backend, "device", None) is not None,
    }


def _ms(seconds):
    return f"{1e3 * seconds:.3g} ms"


def _projection_lines(proj):
    """The ``board speed (projected)`` lines of the demo and ``spikeforge run``."""
    if not proj["available"]:
        return [f"board speed (projected)     n/a: {proj['reason']}"]
    c = proj["counts"]
    lines = [
        f"board speed (projected)     {proj['board']}: chip clock {proj['clock_hz'] / 1e6:g} MHz, "
        f"UART {proj['baud']:,} baud, {proj['mode']} link (docs/projection.md)"
    ]
    for p in proj["latencies"]:
        lines.append(
            f"  USB latency {1e3 * p['latency_s']:>4g} ms       {p['samples_per_s']:,.1f} "
            f"samples/s ({_ms(p['per_sample_s'])} a sample: chip {_ms(p['core_s'] / p['samples'])}"
            f", wire {_ms(p['wire_s'] / p['samples'])}, "
            f"latency {_ms(p['latency_total_s'] / p['samples'])})"
        )
    ub = proj["latencies"][0]["uart_bound_samples_per_s"]
    lines.append(
        f"  UART bound                {'n/a' if ub is None else f'{ub:,.1f}'} samples/s (the "
        f"busier direction's bytes at {proj['baud']:,} baud, nothing else)"
    )
    lines.append(
        f"  from the run's counts     {c['cycles']:,} chip cycles, {c['bytes_to_chip']:,} bytes to "
        f"the chip, {c['bytes_to_host']:,} back, {c['round_trips']:,} round trips"
    )
    return lines


def _acc_line(label, value, width=53):
    return f"  {label}".ljust(width) + f"{100 * value:6.2f} %"


def _encoding_line(e):
    """The ``encoding`` line of the demo and ``spikeforge run``: the code and who encoded."""
    if e["path"] == "chip":
        where = "on the chip (SAMPLE: the host sends intensities"
        where += ", the chip returns output spike counts)" if e["readout"] == "counts" else ")"
    elif e.get("on_chip"):
        where = f"on the host, bit for bit as the chip would (chip_encode): {e['reason']}"
    else:
        where = "on the host"
    return f"encoding   {e['encoder']} coding, {where}"


def _print_demo(res, file=None):
    file = file or sys.stdout
    tp = res["throughput"]
    chip = res["backend"]
    enc = res.get("encoding", {"encoder": "rate", "path": "host", "on_chip": False})
    on_chip = enc.get("on_chip", False)
    host = " (host-encoded)" if on_chip else ""
    chip_label = (f"chip (integer model on the {chip})" if res.get("chip_link", True)
                  else f"backend {chip!r} (instead of a chip)")
    accs = [
        (f"float model (as trained, floating point){host}", res["accuracy_float"]),
        (f"golden integer model (the chip's specification){host}", res["accuracy_golden"]),
    ]
    if on_chip:
        accs.append(("golden integer model, encoded as the chip encodes",
                     res["accuracy_golden_chip_encoding"]))
        accs.append((f"{chip_label}, {'on-chip' if enc['path'] == 'chip' else 'host'} encoding",
                     res["accuracy_chip"]))
    else:
        accs.append((chip_label, res["accuracy_chip"]))
    width = max(len(label) for label, _ in accs) + 5
    if "count_agreement" in res:
        agree = (f"agreement  {100 * res['count_agreement']:.3f} % of output spike counts "
                 "(sample, neuron) equal chip vs golden integer model (same encoding)"
                 + ("  (all counts identical)" if res["identical"] else ""))
    else:
        agree = (f"agreement  {100 * res['spike_agreement']:.3f} % of output spikes (step, "
                 f"sample, neuron) equal chip vs golden integer model"
                 + (" (same encoding)" if on_chip else "")
                 + ("  (all spikes identical)" if res["identical"] else ""))
    lines = [
        f"model      {res['model']}  ({res['neurons']} neurons, {res['synapses']} synapses)",
        f"backend    {chip}",
        f"samples    {res['samples']} test digits x {res['timesteps']} steps",
        _encoding_line(enc),
        "accuracy   share of test digits classified right:",
        *(_acc_line(label, value, width) for label, value in accs),
        agree,
        f"{tp.get('kind', 'simulation speed (this PC)'):28s}{tp['samples_per_s']:,.1f} samples/s, "
        f"{tp['events_per_s']:,.0f} events/s (input events + output spikes per second of wall "
        "clock)",
    ]
    if "board_projection" in res:
        lines += _projection_lines(res["board_projection"])
    print("\n".join(lines), file=file)


# --- `spikeforge run MODEL`: the files, checked before a board is opened ------------------------
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def _magic(path):
    with open(path, "rb") as f:
        return f.read(8)


def _kind(head):
    if head.startswith(_NPY_MAGIC):
        return "a NumPy .npy array"
    if head.startswith(_ZIP_MAGICS):
        return "an .npz archive (a zip file)"
    if not head:
        return "an empty file"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "an unknown binary file"


def _load_npy(path, what="input file"):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise ConfigError(
                f"{what} {path!r} holds Python objects (dtype=object), not numbers: save the "
                "raster as a numeric array (numpy.save(path, raster.astype(numpy.uint8)))"
            ) from None
        raise ConfigError(f"{what} {path!r} is corrupt or truncated ({e})") from None
    except (EOFError, OSError) as e:
        raise ConfigError(f"{what} {path!r} is corrupt or truncated ({e})") from None


def load_inputs(path, key="raster"):
    """``(raster, labels or None)`` from a ``.npy`` raster or an ``.npz`` with ``raster`` (the
    array named ``key``: ``"intensities"`` for ``--encode``).

    The file's content must match its extension (a renamed file is refused); the arrays are
    loaded without pickle.  Shapes and values are checked by :func:`check_inputs`.

    Raises
    ------
    ConfigError
        One line: a missing, unreadable, renamed, corrupt or truncated file, an object array, an
        ``.npz`` without ``key`` (the message lists its arrays).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"input file {path!r} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"input file {path!r} is a directory, not a .npy or .npz file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".npz"):
        raise ConfigError(f"input file {path!r}: unknown extension {ext or '(none)'!r}: "
                          "allowed .npy (a raster) or .npz (raster[, labels])")
    try:
        head = _magic(path)
    except OSError as e:
        raise ConfigError(f"input file {path!r} cannot be read: {e.strerror or e}") from None
    kind = _kind(head)
    if ext == ".npy":
        if not head.startswith(_NPY_MAGIC):
            raise ConfigError(
                f"input file {path!r} is {kind}, not a NumPy .npy array"
                + (" (renamed? give it the .npz extension)" if "zip" in kind else
                   " (write rasters with numpy.save)")
            )
        return _load_npy(path), None
    if not head.startswith(_ZIP_MAGICS):
        raise ConfigError(
            f"input file {path!r} is {kind}, not an .npz archive"
            + (" (renamed? give it the .npy extension)" if "npy" in kind else
               " (write inputs with numpy.savez(path, raster=..., labels=...))")
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.keys())
            if key not in names:
                raise ConfigError(
                    f"input file {path!r} has no array named {key!r} (it has "
                    f"{', '.join(names) if names else 'no arrays'})"
                )
            raster = z[key]
            labels = z["labels"] if "labels" in names else None
    except SpikeforgeError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ConfigError(
                f"input file {path!r}: an array holds Python objects (dtype=object), not numbers"
            ) from None
        raise ConfigError(f"input file {path!r} is corrupt or truncated ({e})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
        raise ConfigError(
            f"input file {path!r} is not a valid .npz archive (bad zip header, corrupt or "
            f"truncated: {e})"
        ) from None
    return raster, labels


def check_inputs(raster, labels, n_inputs, path="inputs", model="the model"):
    """Check a raster (and its labels) for a model with ``n_inputs`` input channels.

    Returns ``(raster, labels)`` with the raster as ``(T, batch, n_inputs)`` ``uint8`` (a 2-D
    raster is one sample) and the labels as a 1-D integer array or ``None``.

    Raises
    ------
    ConfigError
        One line: a raster that is not numeric, has not 2 or 3 dimensions, is empty (T = 0, or
        no sample), has another number of inputs than the model (both numbers given), has
        entries other than 0 and 1; labels that do not match the batch.
    """
    r = np.asarray(raster)
    if r.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: the raster has dtype {r.dtype}, expected 0/1 numbers")
    if r.ndim not in (2, 3):
        raise ConfigError(
            f"{path}: the raster has shape {r.shape} ({r.ndim} dimensions), expected "
            f"(T, batch, n_inputs) or (T, n_inputs) for one sample"
        )
    if r.ndim == 2:
        r = r[:, None, :]
    t, batch, n = r.shape
    if t == 0:
        raise ConfigError(f"{path}: the raster is empty: T = 0 timesteps (shape {r.shape})")
    if batch == 0:
        raise ConfigError(f"{path}: the batch is empty: 0 samples (shape {r.shape})")
    if n != n_inputs:
        raise ConfigError(
            f"{path}: the raster has {n} inputs per timestep (last axis of shape {r.shape}), "
            f"{model} has {n_inputs} inputs"
        )
    bad = ~((r == 0) | (r == 1))
    if bad.any():
        v = r[bad].flat[0].item()
        raise ConfigError(
            f"{path}: raster entries must be 0 or 1 (one input spike per channel and step), "
            f"found {v!r} ({int(bad.sum())} such entries)"
        )
    r = r.astype(np.uint8)
    labels = _check_labels(labels, batch, path)
    return r, labels


def _check_labels(labels, batch, path):
    """``labels`` as int64, or None; a :class:`ConfigError` unless they are ``batch``
    integers."""
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.dtype.kind not in "biu" or lab.ndim != 1 or lab.shape[0] != batch:
        raise ConfigError(
            f"{path}: 'labels' must be {batch} integers (one per sample), got shape "
            f"{lab.shape} dtype {lab.dtype}"
        )
    return lab.astype(np.int64)


def check_intensities(x, labels, n_inputs, path="inputs", model="the model"):
    """Check the samples of ``--encode`` (one intensity 0..255 per input channel) and labels.

    Returns ``(x, labels)`` with ``x`` as ``(batch, n_inputs)`` ``uint8`` (a 1-D array is one
    sample) and the labels as a 1-D integer array or ``None``.

    Raises
    ------
    ConfigError
        One line: not numeric, not 1 or 2 dimensions, no sample, another number of inputs than
        the model (both given), a value that is not an integer 0..255, labels that do not match.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: the intensities have dtype {a.dtype}, expected integers "
                          "0..255")
    if a.ndim not in (1, 2):
        raise ConfigError(
            f"{path}: with --encode the inputs are intensities (n_samples, n_inputs) or "
            f"(n_inputs,), not shape {a.shape} (a raster? drop --encode)"
        )
    if a.ndim == 1:
        a = a[None, :]
    batch, n = a.shape
    if batch == 0:
        raise ConfigError(f"{path}: no samples (shape {a.shape})")
    if n != n_inputs:
        raise ConfigError(f"{path}: the samples have {n} intensities (last axis of shape "
                          f"{a.shape}), {model} has {n_inputs} inputs")
    bad = ~((a >= 0) & (a <= 255) & (a == np.round(a)))
    if bad.any():
        raise ConfigError(
            f"{path}: intensities must be integers 0..255 (one byte per input channel), found "
            f"{a[bad].flat[0].item()!r} ({int(bad.sum())} such entries; scale with "
            "chip_intensities)"
        )
    labels = _check_labels(labels, batch, path)
    return a.astype(np.uint8), labels


def check_plot_path(path):
    """Check ``--plot`` before a run: matplotlib importable, a writable directory, a format
    matplotlib writes (from the suffix).

    Raises
    ------
    PlotError
        One line saying which.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError as e:
        raise PlotError(
            f"--plot needs matplotlib ({e}): pip install 'spikeforge[models]'"
        ) from None
    path = os.fspath(path)
    if os.path.isdir(path):
        raise PlotError(f"--plot {path!r} is a directory: give a file name such as raster.png")
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if not ext or ext not in formats:
        raise PlotError(
            f"--plot {path!r}: unknown image format {ext or '(no suffix)'!r}: allowed "
            f"{', '.join('.' + f for f in formats)}"
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PlotError(f"--plot {path!r}: the directory {folder!r} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PlotError(f"--plot {path!r}: no permission to write there")
    return path


def nir_settings(model, dt=None, reset=None, reset_delay=None):
    """The NIR import :class:`~spikeforge.host.nir_import.Settings` of the command line.

    Starts from the settings stored with the graph (metadata or a ``.json`` beside it) or the
    defaults, and replaces what the options give.  ``None`` everywhere: ``None`` (the importer
    decides).  ``dt``, ``reset``, ``reset_delay`` are strings as typed.

    Raises
    ------
    ConfigError
        A value that is not valid (named, with the allowed ones), or an option given for a
        model that is not a NIR graph.
    """
    given = {k: v for k, v in (("--dt", dt), ("--reset", reset), ("--reset-delay", reset_delay))
             if v is not None}
    if not given:
        return None
    if os.path.splitext(os.fspath(model))[1].lower() != ".nir":
        raise ConfigError(
            f"{', '.join(given)} only apply to NIR graphs (.nir); {model!r} is not one"
        )
    from .nir_import import Settings, read_nir

    kw = {}
    if dt is not None:
        try:
            kw["dt"] = float(dt)
        except ValueError:
            kw["dt"] = None
        if kw["dt"] is None or not math.isfinite(kw["dt"]) or kw["dt"] <= 0:
            raise ConfigError(f"--dt {dt!r} is not valid: allowed a time step in seconds > 0")
    if reset is not None:
        if reset not in ("zero", "subtract", "none"):
            raise ConfigError(f"--reset {reset!r} is not valid: allowed zero, subtract, none")
        kw["reset"] = kw["default_reset"] = reset
    if reset_delay is not None:
        value = {"next-step": True, "delayed": True, "immediate": False, "none": False}.get(
            reset_delay)
        if value is None:
            raise ConfigError(
                f"--reset-delay {reset_delay!r} is not valid: allowed immediate (NIR's "
                "definition), next-step (snnTorch's)"
            )
        kw["reset_delay"] = kw["default_reset_delay"] = value
    _, stored = read_nir(model)
    base = stored.to_dict() if stored is not None else Settings().to_dict()
    base.update(kw)
    return Settings(**base)


def _cli_wording(e: SpikeforgeError) -> ConfigError:
    """An importer's message with the command line's option names."""
    msg = str(e).replace("set Settings.dt", "set --dt").replace("Settings.dt", "--dt")
    return type(e)(msg) if type(e) is ConfigError else e


def run_model(model, inputs, backend=None, *, config=None, progress=True, chunk=32,
              decoder="count", settings=None, per_neuron=None, leak="mult", encoding=None):
    """Compile ``model`` (path or object), run ``inputs`` (raster) on ``backend``.

    Parameters
    ----------
    settings : Settings, optional
        NIR import settings (``dt``, reset mode and timing), :func:`nir_settings`.
    per_neuron, leak
        Quantization options of :func:`~spikeforge.host.compiler.compile`.
    encoding : dict, optional
        ``inputs`` are intensities ``(n_samples, n_inputs)``, integers 0..255, to encode with
        ``encoder`` (``"rate"``, ``"latency"``, ``"delta"``) into ``timesteps`` steps (keys
        ``gain``, ``threshold``, ``seed`` as :func:`~spikeforge.host.coding.chip_encode`).
        ``on_chip``: the chip encodes (:meth:`Backend.run_encoded`; the host does, bit for bit
        the same, on a chip without encoders); otherwise ``rate``/``latency`` are encoded on the
        host by :func:`~spikeforge.host.coding.chip_encode` and ``delta`` by :func:`delta_ramp`
        of ``x / 255``.

    Returns a dict with ``spikes`` (T, batch, n_neurons), ``predictions`` (decoded from the
    first output population), ``seconds``, ``counts`` (:class:`LinkCounts`),
    ``board_projection`` (:func:`board_speed`), ``encoding`` (``path``: who encoded, and why;
    ``None`` without ``encoding``) and the ``compiled`` network.
    """
    from .compiler import compile

    backend = GoldenBackend() if backend is None else backend
    compiled = compile(model, getattr(backend, "config", None) if config is None else config,
                       settings=settings, per_neuron=per_neuron, leak=leak)
    net = compiled.net
    info = None
    if encoding is not None:
        e = dict(encoding)
        check_encoding(e["encoder"], e.get("on_chip"), e["timesteps"])
        x, _ = check_intensities(inputs, None, net.n_inputs)
        info = {"encoder": e["encoder"], "on_chip": bool(e.get("on_chip")), "path": "host",
                "reason": "--on-chip not given", "readout": "spikes"}
        kw = {k: e[k] for k in ("gain", "threshold", "seed") if e.get(k) is not None}
        if not e.get("on_chip"):
            if e["encoder"] == "delta":
                inputs = delta_ramp(x / 255.0, e["timesteps"])
            else:
                from .coding import chip_encode

                inputs = chip_encode(x, e["timesteps"], e["encoder"], **kw)
    if info is not None and info["on_chip"]:
        backend.load(net)
        meter = LinkCounts(backend)
        start = time.perf_counter()
        spikes = backend.run_encoded(x, e["timesteps"], e["encoder"], readout="spikes", **kw)
        seconds = time.perf_counter() - start
        info.update(path=backend.encoding_path, reason=backend.encoding_reason)
        batch = x.shape[0]
    else:
        raster = check_raster(inputs, net.n_inputs)
        backend.load(net)
        meter = LinkCounts(backend)
        spikes, seconds = _run_backend(backend, raster, chunk, progress,
                                       f"{backend.name}: {raster.shape[1]} samples")
        batch = raster.shape[1]
    counts = meter.delta()
    out_pop = net.outputs[0]
    sl = slice(net.base(out_pop), net.base(out_pop) + net.population(out_pop).size)
    return {
        "compiled": compiled,
        "spikes": spikes,
        "predictions": predict(decoder, spikes=spikes[..., sl]),
        "seconds": seconds,
        "counts": counts,
        "board_projection": board_speed(backend, counts, int(batch)),
        "encoding": info,
    }


def _plot(spikes, net, path, sample=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = spikes[:, sample, :]
    fig, ax = plt.subplots(figsize=(8, 4))
    try:
        t, n = np.nonzero(s)
        ax.scatter(t, n, s=4, marker="|", color="k")
        for pop in net.populations[1:]:
            ax.axhline(net.base(pop.name) - 0.5, color="0.7", lw=0.5)
        ax.set_xlabel("timestep")
        ax.set_ylabel("neuron (global index)")
        ax.set_title(f"spike raster, sample {sample}")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


# --- command line --------------------------------------------------------------------------------
def _cmd_demo(args):
    # The options are checked before a (virtual) board is started.
    if args.samples is not None and not 1 <= args.samples <= N_TEST:
        raise ConfigError(f"--samples {args.samples} is out of range: allowed 1..{N_TEST}")
    if args.timesteps is not None and args.timesteps < 1:
        raise ConfigError(f"--timesteps {args.timesteps} is out of range: allowed >= 1")
    check_encoding(args.encode, args.on_chip, args.timesteps)
    backend = open_backend(args.port)
    with backend:
        res = run_demo(backend, samples=args.samples, timesteps=args.timesteps,
                       progress=not args.json and sys.stderr.isatty(), model=args.model,
                       encode=args.encode, on_chip=args.on_chip)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_demo(res)
    return 0


def _compile_checked(args, settings):
    """Compile the model without a chip (the checks that need no board); one-line errors."""
    from .compiler import compile

    model = args.model
    if not os.path.exists(model):
        raise ConfigError(f"model file {model!r} does not exist")
    try:
        # no calibration here: the compile for the chip's own format (run_model) calibrates
        return compile(model, settings=settings, per_neuron=args.per_neuron, leak=args.leak,
                       calibrate=None, min_agreement=None)
    except SpikeforgeError as e:
        raise _cli_wording(e) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise ConfigError(f"model file {model!r} cannot be read ({type(e).__name__}: {e})") \
            from None


def _run_encoding(args):
    """The ``encoding`` of :func:`run_model` from ``spikeforge run``'s options (or None),
    checked: ``--on-chip`` and ``--timesteps`` need ``--encode``, ``--encode`` needs
    ``--timesteps``."""
    if args.encode is None:
        if args.on_chip:
            raise ConfigError("--on-chip needs --encode rate or --encode latency (INPUTS then "
                              "holds intensities 0..255, one per input channel)")
        if args.timesteps is not None:
            raise ConfigError("--timesteps needs --encode: a raster's first axis is its "
                              "timesteps")
        return None
    if args.timesteps is None:
        raise ConfigError(f"--encode {args.encode} needs --timesteps T (timesteps per sample)")
    if args.timesteps < 1:
        raise ConfigError(f"--timesteps {args.timesteps} is out of range: allowed >= 1")
    check_encoding(args.encode, args.on_chip, args.timesteps)
    from ..protocol import MAX_SAMPLE_STEPS

    if args.encode != "delta" and args.timesteps > MAX_SAMPLE_STEPS:
        raise ConfigError(f"--timesteps {args.timesteps} is out of range for --encode "
                          f"{args.encode}: allowed 1..{MAX_SAMPLE_STEPS} (the chip's encoder)")
    for name in ("gain", "threshold"):
        v = getattr(args, name)
        if not 0 <= v <= 255:
            raise ConfigError(f"--{name} {v} is out of range: allowed 0..255")
    if not 0 <= args.seed <= 0xFFFFFFFF:
        raise ConfigError(f"--seed {args.seed} is out of range: allowed 0..4294967295")
    return {"encoder": args.encode, "timesteps": args.timesteps, "on_chip": args.on_chip,
            "gain": args.gain, "threshold": args.threshold, "seed": args.seed}


def _cmd_run(args):
    # Everything that can be checked without a board is checked first.
    if args.leak not in ("mult", "shift"):
        raise ConfigError(f"--leak {args.leak!r} is not valid: allowed mult, shift")
    encoding = _run_encoding(args)
    plot = check_plot_path(args.plot) if args.plot else None
    raster, labels = load_inputs(args.inputs, "raster" if encoding is None else "intensities")
    settings = nir_settings(args.model, args.dt, args.reset, args.reset_delay)
    compiled = _compile_checked(args, settings)
    model = f"the model {args.model!r}"
    if encoding is None:
        raster, labels = check_inputs(raster, labels, compiled.net.n_inputs, path=args.inputs,
                                      model=model)
    else:
        raster, labels = check_intensities(raster, labels, compiled.net.n_inputs,
                                           path=args.inputs, model=model)
    backend = open_backend(args.port)
    with backend:
        try:
            res = run_model(args.model, raster, backend, settings=settings,
                            per_neuron=args.per_neuron, leak=args.leak,
                            progress=not args.json and sys.stderr.isatty(), encoding=encoding)
        except SpikeforgeError as e:
            raise _cli_wording(e) from None
    n_samples = res["spikes"].shape[1]
    preds = res["predictions"]
    out = {"predictions": preds.tolist(), "seconds": res["seconds"],
           "samples_per_s": n_samples / res["seconds"] if res["seconds"] > 0 else None,
           "speed_kind": _speed_kind(backend),
           "output_spikes": int(res["spikes"].sum()),
           "board_projection": res["board_projection"]}
    if res["encoding"] is not None:
        out["encoding"] = res["encoding"]
    if labels is not None:
        out["accuracy"] = float(np.mean(preds == labels))
    if plot:
        out["plot"] = plot
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"predictions {' '.join(map(str, preds.tolist()))}")
        if res["encoding"] is not None:
            print(_encoding_line(res["encoding"]))
        if "accuracy" in out:
            print(f"accuracy {100 * out['accuracy']:.2f} % (predictions equal to the labels)")
        if out["samples_per_s"] is not None:
            print(f"{out['speed_kind']:28s}{out['samples_per_s']:,.1f} samples/s")
        print("\n".join(_projection_lines(res["board_projection"])))
    sys.stdout.flush()
    if plot:
        # The results are printed already: a plotting failure loses none of them.
        try:
            _plot(res["spikes"], res["compiled"].net, plot)
        except Exception as e:  # matplotlib raises many kinds; none may hide the results
            raise PlotError(
                f"the results above are complete, but the plot {plot!r} could not be written "
                f"({type(e).__name__}: {e})"
            ) from None
        if not args.json:
            print(f"spike raster written to {plot}")
    return 0


def register(subparsers):
    """Add the ``demo`` and ``run`` subcommands to an ``argparse`` subparsers object.

    Each sets ``func`` (``args.func(args)`` returns the exit code; user mistakes raise a
    :class:`~spikeforge.errors.SpikeforgeError`, which ``spikeforge.cli.main`` prints as one
    line).
    """
    p = subparsers.add_parser(
        "demo", help="classify real handwritten digits with the bundled network on the chip",
        description="Run the bundled digit classifier on the test split: float model, golden "
        "integer model and the chip; print the accuracies, the spike agreement, the speed at "
        "which this PC simulates the chip and the speed projected for a real board.")
    p.add_argument("--port", default=None,
                   help="chip URL (serial device such as /dev/ttyUSB1, socket://host:port) or "
                   "backend name (virtual, virtual:BOARD, golden, golden-float); default: "
                   "virtual, the chip RTL of the ULX3S on a virtual board")
    p.add_argument("--samples", type=int, default=None, help="number of test samples (max 360)")
    p.add_argument("--timesteps", type=int, default=None, help="timesteps per sample")
    p.add_argument("--model", choices=sorted(MODELS), default="snntorch",
                   help="bundled model: snntorch (the default, a 64-128-10 LIF network), "
                   "sklearn (a converted scikit-learn MLP) or digits-conv (a spiking CNN: "
                   "two 3x3 convolutions, unrolled into dense blocks on the chip)")
    p.add_argument("--encode", choices=ENCODINGS, default=None,
                   help="spike code (default: the model's, rate); on the host unless --on-chip")
    p.add_argument("--on-chip", action="store_true",
                   help="send intensities, let the chip encode them (rate or latency; "
                   "a chip without encoders falls back to the same encoding on the host, and "
                   "the demo says so)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_cmd_demo)

    r = subparsers.add_parser(
        "run", help="compile a model and run an input raster on the chip",
        description="Compile MODEL (.nir graph or .npz network) and run INPUTS (a .npy raster "
        "(T, batch, n_inputs) of 0/1 or an .npz with 'raster' and optional 'labels').  The "
        "files and options are checked before a board is opened.")
    r.add_argument("model", help="model file (.nir or .npz)")
    r.add_argument("inputs", help="input raster (.npy) or .npz with raster[, labels]")
    r.add_argument("--port", default=None,
                   help="chip URL (/dev/ttyUSB1, socket://host:port) or backend name (virtual, "
                   "virtual:BOARD such as virtual:ulx3s-85f-wide, golden, golden-float); "
                   "default: virtual")
    r.add_argument("--plot", default=None, metavar="OUT.png",
                   help="save a spike raster plot of the first sample (format from the suffix)")
    r.add_argument("--json", action="store_true", help="print the results as JSON")
    e = r.add_argument_group(
        "spike encoding (INPUTS then holds intensities: (n_samples, n_inputs) integers 0..255, "
        "an .npy or an .npz with 'intensities' and optional 'labels')")
    e.add_argument("--encode", choices=ENCODINGS, default=None,
                   help="encode the intensities: rate, latency (docs/encoding.md: on the host "
                   "with chip_encode, or on the chip with --on-chip: the same spikes) or delta "
                   "(host only)")
    e.add_argument("--on-chip", action="store_true",
                   help="the chip encodes (SAMPLE); a chip without encoders falls back to the "
                   "host, and the output says which")
    e.add_argument("--timesteps", type=int, default=None, help="timesteps per sample")
    e.add_argument("--gain", type=int, default=16,
                   help="level = min(255, (x * gain) >> 4): 16 is 1.0 (default)")
    e.add_argument("--threshold", type=int, default=1,
                   help="latency coding's least level that fires (default 1)")
    e.add_argument("--seed", type=int, default=1,
                   help="rate coding's seed of the first sample (sample b: seed + b; default 1)")
    g = r.add_argument_group(
        "NIR import (a NIR graph stores neither its time step nor its reset; default: the "
        "settings stored with the graph, else dt=1e-4 s, reset zero, immediate)")
    g.add_argument("--dt", default=None, metavar="SECONDS",
                   help="time step that discretises the graph's tau (snnTorch exports 1e-4, "
                   "Rockpool 1e-3; norse 1.1 writes tau scaled so that 1e-6 is right)")
    g.add_argument("--reset", default=None, metavar="{zero,subtract,none}",
                   help="what a spike does to the membrane")
    g.add_argument("--reset-delay", default=None, metavar="{immediate,next-step}",
                   help="when the reset happens: right after the spike (NIR) or at the start of "
                   "the next step (snnTorch)")
    q = r.add_argument_group("quantization")
    q.add_argument("--per-neuron", action="store_const", const=True, default=None,
                   help="one scale per neuron (default: the quantizer's calibration chooses "
                   "per neuron or per population, docs/compiler.md)")
    q.add_argument("--leak", default="mult", metavar="{mult,shift}",
                   help="how leaky populations decay on the chip (default mult)")
    r.set_defaults(func=_cmd_run)
    return p, r
