"""The main demo: a bundled, trained spiking network classifies real data on the chip.

Spec: ``docs/compiler.md`` (the flow) and the backend interface of
``spikeforge.host.backends``.

:func:`run_demo` loads the bundled digit classifier (``spikeforge/data/digits.nir``, trained
by ``examples/train_snntorch_digits.py`` on scikit-learn's real 8x8 handwritten digits), compiles
it, rate-codes the test split, and runs it three ways: the float model (golden float mode, equal
to snnTorch), the integer model (golden int mode, the chip's specification) and the chip through
a :class:`~spikeforge.host.backends.Backend`.  It reports the three accuracies, how often the
chip's output spikes agree with the golden model's, and the chip's throughput.

:func:`register` adds the ``demo`` and ``run`` subcommands to an ``argparse`` subparsers object.
"""

from __future__ import annotations

import json
import os
import sys
import time

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
    "register",
]

N_TEST = 360
"""The test split is the last ``N_TEST`` samples of ``sklearn.datasets.load_digits``."""

MODELS = {"snntorch": "digits.nir", "sklearn": "digits_sklearn.npz"}
"""Bundled models: snnTorch-trained (the default) and converted from a scikit-learn MLP."""


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
            f"the bundled model {path!r} is missing; run examples/train_{model}_digits.py"
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


def run_demo(backend=None, samples=None, timesteps=None, progress=True, *, model="snntorch",
             config=None, chunk=32) -> dict:
    """Classify the digits test split with the bundled model on ``backend``.

    Parameters
    ----------
    backend : Backend, optional
        The chip (default: :class:`GoldenBackend`, the integer golden model).
    samples : int, optional
        Use the first ``samples`` test samples (default: all 360).
    timesteps : int, optional
        Default: the model's (25).
    progress : bool
        Show a progress bar while the chip runs.
    model : {"snntorch", "sklearn"}
        Which bundled model.
    config
        Chip configuration for the fit check (default: the backend's ``config`` attribute, if
        it has one).
    chunk : int
        Samples per ``backend.run`` call.

    Returns
    -------
    dict
        ``accuracy_float``, ``accuracy_golden``, ``accuracy_chip``, ``spike_agreement`` (share of
        output-population entries (step, sample, neuron) on which chip and golden int agree),
        ``identical`` (every neuron's spikes equal; only the output populations' when the
        backend's ``reports_all_neurons`` is False), ``samples``, ``timesteps``,
        ``throughput`` (``samples_per_s``, ``events_per_s``: input events plus output spikes
        per second of chip time, ``seconds``), ``backend``, ``model`` and the network's size.
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
    raster = rate_encode(x_test, t, seed=enc["seed"], x_max=enc["x_max"])
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
    backend.load(net)
    chip_spikes, seconds = _run_backend(backend, raster, chunk, progress,
                                        f"{backend.name}: {batch} samples")

    def acc(spikes):
        return float(np.mean(predict(decoder, spikes=spikes[..., sl]) == y_test))

    n_events = int(raster.sum()) + int(chip_spikes[..., sl].sum())
    return {
        "model": meta.get("name", model),
        "backend": backend.name,
        "samples": int(batch),
        "timesteps": int(t),
        "neurons": int(net.n_neurons),
        "synapses": int(net.n_synapses),
        "accuracy_float": acc(float_spikes),
        "accuracy_golden": acc(golden_spikes),
        "accuracy_chip": acc(chip_spikes),
        "spike_agreement": float(np.mean(chip_spikes[..., sl] == golden_spikes[..., sl])),
        "identical": bool(np.array_equal(chip_spikes, golden_spikes)
                          if getattr(backend, "reports_all_neurons", True)
                          else np.array_equal(chip_spikes[..., sl], golden_spikes[..., sl])),
        "throughput": {
            "samples_per_s": batch / seconds if seconds > 0 else float("inf"),
            "events_per_s": n_events / seconds if seconds > 0 else float("inf"),
            "seconds": seconds,
            "events": n_events,
        },
    }


def _print_demo(res, file=None):
    file = file or sys.stdout
    tp = res["throughput"]
    lines = [
        f"model      {res['model']}  ({res['neurons']} neurons, {res['synapses']} synapses)",
        f"backend    {res['backend']}",
        f"samples    {res['samples']} test digits x {res['timesteps']} steps",
        f"accuracy   float {100 * res['accuracy_float']:.2f} %   golden int "
        f"{100 * res['accuracy_golden']:.2f} %   chip {100 * res['accuracy_chip']:.2f} %",
        f"agreement  {100 * res['spike_agreement']:.3f} % of output spikes equal to the golden "
        f"model" + ("  (all spikes identical)" if res["identical"] else ""),
        f"throughput {tp['samples_per_s']:.1f} samples/s, {tp['events_per_s']:.0f} events/s",
    ]
    print("\n".join(lines), file=file)


# --- `spikeforge run MODEL` ----------------------------------------------------------------------
def _load_inputs(path):
    """``(raster, labels or None)`` from a ``.npy`` raster or an ``.npz`` with ``raster``."""
    if not os.path.isfile(path):
        raise ConfigError(f"input file {path!r} does not exist")
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if "raster" not in z:
                raise ConfigError(f"{path!r} has no array named 'raster' (has {list(z.keys())})")
            return z["raster"], (z["labels"] if "labels" in z else None)
    raise ConfigError(f"input file {path!r}: unknown extension: allowed .npy, .npz")


def run_model(model, inputs, backend=None, *, config=None, progress=True, chunk=32,
              decoder="count"):
    """Compile ``model`` (path or object), run ``inputs`` (raster) on ``backend``.

    Returns a dict with ``spikes`` (T, batch, n_neurons), ``predictions`` (decoded from the
    first output population), ``golden_agreement`` and the compiled network.
    """
    from .compiler import compile

    backend = GoldenBackend() if backend is None else backend
    compiled = compile(model, getattr(backend, "config", None) if config is None else config)
    net = compiled.net
    raster = check_raster(inputs, net.n_inputs)
    backend.load(net)
    spikes, seconds = _run_backend(backend, raster, chunk, progress,
                                   f"{backend.name}: {raster.shape[1]} samples")
    out_pop = net.outputs[0]
    sl = slice(net.base(out_pop), net.base(out_pop) + net.population(out_pop).size)
    return {
        "compiled": compiled,
        "spikes": spikes,
        "predictions": predict(decoder, spikes=spikes[..., sl]),
        "seconds": seconds,
    }


def _plot(spikes, net, path, sample=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = spikes[:, sample, :]
    fig, ax = plt.subplots(figsize=(8, 4))
    t, n = np.nonzero(s)
    ax.scatter(t, n, s=4, marker="|", color="k")
    for pop in net.populations[1:]:
        ax.axhline(net.base(pop.name) - 0.5, color="0.7", lw=0.5)
    ax.set_xlabel("timestep")
    ax.set_ylabel("neuron (global index)")
    ax.set_title(f"spike raster, sample {sample}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- command line --------------------------------------------------------------------------------
def _cmd_demo(args):
    try:
        backend = open_backend(args.port)
        with backend:
            res = run_demo(backend, samples=args.samples, timesteps=args.timesteps,
                           progress=not args.json and sys.stderr.isatty(), model=args.model)
    except SpikeforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print_demo(res)
    return 0


def _cmd_run(args):
    try:
        raster, labels = _load_inputs(args.inputs)
        backend = open_backend(args.port)
        with backend:
            res = run_model(args.model, raster, backend,
                            progress=not args.json and sys.stderr.isatty())
        if args.plot:
            _plot(res["spikes"], res["compiled"].net, args.plot)
    except SpikeforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    preds = res["predictions"]
    out = {"predictions": preds.tolist(), "seconds": res["seconds"],
           "output_spikes": int(res["spikes"].sum())}
    if labels is not None:
        out["accuracy"] = float(np.mean(preds == np.asarray(labels)))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"predictions {' '.join(map(str, preds.tolist()))}")
        if "accuracy" in out:
            print(f"accuracy {100 * out['accuracy']:.2f} %")
        if args.plot:
            print(f"spike raster written to {args.plot}")
    return 0


def register(subparsers):
    """Add the ``demo`` and ``run`` subcommands to an ``argparse`` subparsers object.

    Each sets ``func`` (``args.func(args)`` returns the exit code).
    """
    p = subparsers.add_parser(
        "demo", help="classify real handwritten digits with the bundled network on the chip",
        description="Run the bundled digit classifier on the test split: float model, golden "
        "integer model and the chip; print accuracies, spike agreement and throughput.")
    p.add_argument("--port", default=None,
                   help="chip URL (serial device such as /dev/ttyUSB1, socket://host:port) or "
                   "backend name (virtual, golden, golden-float); default: virtual, the chip "
                   "RTL on a virtual board")
    p.add_argument("--samples", type=int, default=None, help="number of test samples (max 360)")
    p.add_argument("--timesteps", type=int, default=None, help="timesteps per sample")
    p.add_argument("--model", choices=sorted(MODELS), default="snntorch",
                   help="bundled model (default snntorch)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_cmd_demo)

    r = subparsers.add_parser(
        "run", help="compile a model and run an input raster on the chip",
        description="Compile MODEL (.nir graph or .npz network) and run INPUTS (a .npy raster "
        "(T, batch, n_inputs) or an .npz with 'raster' and optional 'labels').")
    r.add_argument("model", help="model file (.nir or .npz)")
    r.add_argument("inputs", help="input raster (.npy) or .npz with raster[, labels]")
    r.add_argument("--port", default=None,
                   help="chip URL (/dev/ttyUSB1, socket://host:port) or backend name (virtual, "
                   "golden, golden-float); default: virtual")
    r.add_argument("--plot", default=None, metavar="OUT.png", help="save a spike raster plot")
    r.add_argument("--json", action="store_true", help="print the results as JSON")
    r.set_defaults(func=_cmd_run)
    return p, r
