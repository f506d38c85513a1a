"""The model compiler: trained models -> float Network -> integer Network -> fit check.

Spec: ``docs/compiler.md`` (the flow, the NIR mapping table, what is refused and why),
``docs/neuron.md`` (the integer neuron) and ``spikeforge/network.py`` (the network description).

The flow (after Rockpool's Xylo flow)::

    model --from_nir / from_snntorch / from_sklearn / from_weights--> float Network
          --quantize--> integer Network --check_fit--> problems (FitError) --> chip image

:func:`compile` does all of it in one call.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, UnsupportedError
from ..network import INPUT, Network, NeuronParams, Population, Projection
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel
from .image import Fit, build_image, check_fit, fit_problems
from .nir_import import READOUT_THRESHOLD, Settings, from_nir, is_readout, read_nir
from .quantize import Quantized, QuantReport, compare, quantize

__all__ = [
    "Settings",
    "from_nir",
    "from_snntorch",
    "from_sklearn",
    "from_weights",
    "quantize",
    "Quantized",
    "compare",
    "QuantReport",
    "fit_problems",
    "check_fit",
    "compile",
    "Compiled",
    "load_model",
    "save_network",
    "load_network",
    "is_readout",
]


# --- snnTorch ------------------------------------------------------------------------------------
def from_snntorch(module, n_inputs: int, settings: Settings | None = None) -> Network:
    """Convert an snnTorch model through ``snntorch.export_to_nir``.

    The reset mechanism and ``reset_delay`` of every ``Leaky`` / ``Synaptic`` / ``RLeaky`` /
    ``RSynaptic`` are read from the modules themselves (NIR cannot carry them).  Neuron
    parameters must be per-neuron tensors (``beta=torch.full((n,), 0.9)``, same for
    ``threshold``) for snnTorch's exporter to type the graph.

    Parameters
    ----------
    module : torch.nn.Module
    n_inputs : int
        Size of one input sample (the exporter traces the model with ``zeros(n_inputs)``).
    settings : Settings, optional
        Defaults to ``Settings.snntorch()`` with the per-module resets filled in.
    """
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    settings = settings or Settings.snntorch()
    kinds = (snn.Leaky, snn.Synaptic, snn.RLeaky, snn.RSynaptic)
    resets, delays, rleaky_zero, dropped_reset = {}, {}, [], []
    for name, m in module.named_modules():
        if not isinstance(m, kinds):
            continue
        label = f"snnTorch module {name!r} ({type(m).__name__})"
        if getattr(m, "inhibition", False):
            raise UnsupportedError(f"{label}: inhibition=True is not supported by the chip")
        gsf = getattr(m, "graded_spikes_factor", 1.0)
        if not np.allclose(np.asarray(torch.as_tensor(gsf).detach()), 1.0):
            raise UnsupportedError(
                f"{label}: graded_spikes_factor={gsf!r} is not supported: spikes are single bits"
            )
        if getattr(m, "state_quant", False):
            raise UnsupportedError(f"{label}: state_quant is not supported (the compiler "
                                   f"quantizes)")
        resets[name] = m.reset_mechanism
        delays[name] = bool(m.reset_delay)
        if type(m) is snn.RSynaptic and not m.reset_delay:
            # snnTorch 1.0.0's RSynaptic.forward applies the immediate reset to a local copy of
            # the membrane and drops it (and fails with init_hidden=True): the module computes
            # the delayed reset, so that is what the chip must run (and what the export traces)
            delays[name] = True
            dropped_reset.append(m)
            warnings.warn(
                f"{label}: reset_delay=False has no effect in snnTorch {snn.__version__}'s "
                f"RSynaptic (its forward drops the immediate reset), so the network trained with "
                f"the delayed reset and is compiled with it; for an immediate reset, subclass "
                f"RSynaptic to apply it to self.mem (tests/data/make_rcuba_fixtures.py does)",
                stacklevel=2,
            )
        if isinstance(m, snn.RLeaky) and m.reset_mechanism == "zero":
            rleaky_zero.append(name)
    if isinstance(settings.reset, str) and resets:
        settings = Settings(dt=settings.dt, reset=resets, reset_delay=delays,
                            default_reset=settings.default_reset,
                            default_reset_delay=settings.default_reset_delay)
    was_training = module.training
    module.eval()
    for m in dropped_reset:
        m.reset_delay = True
    try:
        with warnings.catch_warnings():  # nirtorch's own deprecation notice, not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            graph = export_to_nir(module, torch.zeros(int(n_inputs)))
    finally:
        module.train(was_training)
        for m in dropped_reset:
            m.reset_delay = False
    # NIR node names are module names, or "name.lif" for a recurrent module
    flat_reset = {}
    flat_delay = {}
    for name in resets:
        for suffix in ("", ".lif"):
            flat_reset[name + suffix] = settings.for_node(name)[0]
            flat_delay[name + suffix] = settings.for_node(name)[1]
    if flat_reset:
        settings = Settings(dt=settings.dt, reset=flat_reset, reset_delay=flat_delay,
                            default_reset=settings.default_reset,
                            default_reset_delay=settings.default_reset_delay)
    net = from_nir(graph, settings)
    # snnTorch's RLeaky zero reset discards the input of the step after a spike too
    # ((1 - R) * (beta * U + X)), unlike Leaky's; that is the chip's CuBa zero reset with alpha = 0.
    for pop in net.populations:
        if any(pop.name in (name, name + ".lif") for name in rleaky_zero):
            pop.params.model = NeuronModel.CUBA
            pop.params.alpha = 0.0
    return net


# --- plain weights -------------------------------------------------------------------------------
def from_weights(
    weights,
    biases=None,
    *,
    n_inputs=None,
    neuron="lif",
    beta=0.9,
    alpha=0.0,
    threshold=1.0,
    reset="subtract",
    reset_delay=True,
    readout=False,
    names=None,
    delays=None,
) -> Network:
    """A feed-forward float network from a list of NumPy weight matrices.

    Parameters
    ----------
    weights : list of arrays, each (n_in, n_out)
        ``weights[k]`` connects layer ``k`` (layer 0 is the input) to layer ``k + 1``; the
        orientation of ``Projection`` and of scikit-learn's ``coefs_`` (a PyTorch ``Linear``'s
        ``weight`` is its transpose).
    biases : list of arrays (n_out,), optional
    neuron : {"lif", "if", "cuba"}
    beta, alpha, threshold, reset, reset_delay
        Neuron parameters (float, as snnTorch), applied to every layer.
    readout : bool
        Make the last layer a leaky-integrator readout (no reset, unreachable threshold; decode
        its membrane).
    names : list of str, optional
        Population names (default ``"layer1"``, ``"layer2"``, ...).
    delays : list of int, optional
        One synaptic delay per weight matrix, in timesteps (default 0 each): ``weights[k]``'s
        projection delivers a spike of step ``t`` in step ``t + delays[k]``
        (``docs/network.md``, "Synaptic delays").  The chip refuses a delayed input projection
        (``delays[0] > 0``); the golden model runs it.
    """
    ws = [np.asarray(w, dtype=np.float32) for w in weights]
    if not ws:
        raise ConfigError("weights is empty: at least one matrix is needed")
    for k, w in enumerate(ws):
        if w.ndim != 2:
            raise ConfigError(f"weights[{k}] has shape {w.shape}, expected (n_in, n_out)")
        if k and w.shape[0] != ws[k - 1].shape[1]:
            raise ConfigError(
                f"weights[{k}] has {w.shape[0]} rows but weights[{k - 1}] has "
                f"{ws[k - 1].shape[1]} columns"
            )
    if n_inputs is not None and n_inputs != ws[0].shape[0]:
        raise ConfigError(f"n_inputs={n_inputs} but weights[0] has {ws[0].shape[0]} rows")
    if biases is not None and len(biases) != len(ws):
        raise ConfigError(f"{len(biases)} biases for {len(ws)} weight matrices")
    if delays is None:
        delays = [0] * len(ws)
    delays = list(delays)
    if len(delays) != len(ws):
        raise ConfigError(f"{len(delays)} delays for {len(ws)} weight matrices")
    if neuron not in ("lif", "if", "cuba"):
        raise ConfigError(f"neuron={neuron!r} is not valid: allowed 'lif', 'if', 'cuba'")
    names = names or [f"layer{k + 1}" for k in range(len(ws))]
    pops, projs = [], []
    for k, w in enumerate(ws):
        n = w.shape[1]
        b = np.zeros(n, np.float32) if biases is None else np.asarray(biases[k], np.float32)
        if b.shape != (n,):
            raise ConfigError(f"biases[{k}] has shape {b.shape}, expected ({n},)")
        last = k == len(ws) - 1
        p = dict(
            model="cuba" if neuron == "cuba" else "lif",
            leak="none" if neuron == "if" else "mult",
            beta=1.0 if neuron == "if" else beta,
            alpha=alpha if neuron == "cuba" else 0.0,
            threshold=threshold, bias=b, reset=reset, reset_delay=reset_delay,
        )
        if readout and last:
            p.update(threshold=READOUT_THRESHOLD, reset="none", reset_delay=False)
        pops.append(Population(names[k], n, NeuronParams(**p)))
        projs.append(Projection(INPUT if k == 0 else names[k - 1], names[k], w, delays[k]))
    return Network(ws[0].shape[0], pops, projs, [names[-1]])


# --- scikit-learn (ANN-to-SNN conversion) --------------------------------------------------------
def from_sklearn(
    mlp,
    x_calibration,
    *,
    percentile=99.9,
    neuron="if",
    beta=0.95,
    readout="spikes",
    reset="subtract",
    reset_delay=False,
) -> Network:
    """Convert a trained ReLU ``MLPClassifier`` / ``MLPRegressor`` to a rate-coded SNN.

    Data-based normalisation (Diehl et al. 2015, Rueckauer et al. 2017): ``lambda_l`` is the
    ``percentile``-th percentile of layer ``l``'s ReLU activations on ``x_calibration``
    (``lambda_0 = 1``: inputs are spike probabilities in ``[0, 1]``); weights become
    ``W_l * lambda_{l-1} / lambda_l``, biases ``b_l / lambda_l``, thresholds 1, so a neuron's
    firing rate approximates its normalised activation.  Reset by subtraction keeps the
    residual charge.

    Parameters
    ----------
    mlp : sklearn.neural_network.MLPClassifier or MLPRegressor
        Trained with ``activation="relu"`` on inputs in ``[0, 1]`` (the rate-coding range).
    x_calibration : array (n_samples, n_inputs)
        Training inputs, for the activation statistics.
    percentile : float
        Robust maximum of the activations (100 = the true maximum).
    neuron : {"if", "lif"}
        Hidden (and spiking output) neuron: integrate-and-fire or leaky with ``beta``.
    readout : {"spikes", "membrane"}
        Decode the output layer's spike counts, or make it a non-leaky integrator readout whose
        membrane is proportional to the summed logits (decode with the ``membrane`` decoder).
    """
    coefs = getattr(mlp, "coefs_", None)
    if coefs is None:
        raise ConfigError("the scikit-learn model is not fitted (it has no coefs_)")
    if getattr(mlp, "activation", "relu") != "relu":
        raise UnsupportedError(
            f"MLP activation={mlp.activation!r} is not supported: ANN-to-SNN conversion needs "
            f"'relu' (a firing rate is never negative)"
        )
    if readout not in ("spikes", "membrane"):
        raise ConfigError(f"readout={readout!r} is not valid: allowed 'spikes', 'membrane'")
    if neuron not in ("if", "lif"):
        raise ConfigError(f"neuron={neuron!r} is not valid: allowed 'if', 'lif'")
    if not 0 < percentile <= 100:
        raise ConfigError(f"percentile={percentile!r} is out of range: allowed (0, 100]")
    x = np.asarray(x_calibration, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != coefs[0].shape[0]:
        raise ConfigError(
            f"x_calibration has shape {x.shape}, expected (n_samples, {coefs[0].shape[0]})"
        )
    if x.min() < 0 or x.max() > 1:
        raise ConfigError(
            f"x_calibration has values in {x.min():.3g}..{x.max():.3g}: rate coding needs inputs "
            f"in 0..1; train the MLP on scaled inputs"
        )
    ws, bs = [], []
    a, lam_prev = x, 1.0
    for k, (w, b) in enumerate(zip(coefs, mlp.intercepts_, strict=True)):
        z = a @ w + b
        a = np.maximum(z, 0)
        pos = a[a > 0]
        lam = float(np.percentile(pos, percentile)) if pos.size else 1.0
        if k == len(coefs) - 1 and readout == "membrane":
            lam = 1.0  # the readout integrates the logits themselves: v(T) ~ T * logits
        ws.append((w * lam_prev / lam).astype(np.float32))
        bs.append((b / lam).astype(np.float32))
        lam_prev = lam
    if readout == "membrane":
        # the readout integrates the (normalised) logits without leak
        net = from_weights(ws, bs, neuron=neuron, beta=beta, threshold=1.0, reset=reset,
                           reset_delay=reset_delay, readout=True)
        out = net.populations[-1].params
        out.leak, out.beta = LeakMode.NONE, 1.0
        return net
    return from_weights(ws, bs, neuron=neuron, beta=beta, threshold=1.0, reset=reset,
                        reset_delay=reset_delay)


# --- files ---------------------------------------------------------------------------------------
def save_network(net: Network, path) -> None:
    """Save a network (float or integer) to a ``.npz`` file (:func:`load_network` reads it)."""
    arrays, meta = {}, {"n_inputs": net.n_inputs, "outputs": list(net.outputs),
                        "populations": [], "projections": []}
    for k, pop in enumerate(net.populations):
        prm = pop.params
        entry = {"name": pop.name, "size": pop.size, "model": prm.model.name.lower(),
                 "leak": prm.leak.name.lower(), "reset": prm.reset.name.lower(),
                 "reset_delay": prm.reset_delay}
        for attr in ("beta", "alpha", "threshold", "bias"):
            arrays[f"pop{k}_{attr}"] = np.asarray(getattr(prm, attr))
        meta["populations"].append(entry)
    for k, proj in enumerate(net.projections):
        arrays[f"proj{k}_w"] = net.dense_weights(proj)
        meta["projections"].append({"src": proj.src, "dst": proj.dst, "delay": proj.delay})
    np.savez_compressed(path, spikeforge_network=np.array(json.dumps(meta)), **arrays)


def load_network(path) -> Network:
    """Read a network written by :func:`save_network`."""
    if not os.path.isfile(path):
        raise ConfigError(f"network file {path!r} does not exist")
    with np.load(path, allow_pickle=False) as z:
        if "spikeforge_network" not in z:
            raise ConfigError(f"{path!r} is not a spikeforge network file (no header)")
        meta = json.loads(str(z["spikeforge_network"]))
        pops = []
        for k, e in enumerate(meta["populations"]):
            vals = {a: z[f"pop{k}_{a}"] for a in ("beta", "alpha", "threshold", "bias")}
            vals = {a: (v.item() if v.ndim == 0 else v) for a, v in vals.items()}
            pops.append(Population(e["name"], e["size"], NeuronParams(
                model=e["model"], leak=e["leak"], reset=e["reset"],
                reset_delay=e["reset_delay"], **vals)))
        # files written before synaptic delays have no "delay": 0
        projs = [Projection(e["src"], e["dst"], z[f"proj{k}_w"], e.get("delay", 0))
                 for k, e in enumerate(meta["projections"])]
    return Network(meta["n_inputs"], pops, projs, meta["outputs"])


def load_model(path, settings: Settings | None = None) -> Network:
    """A float (or integer) network from a ``.nir`` graph or a ``.npz`` network file."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".nir":
        graph, stored = read_nir(path)
        return from_nir(graph, settings or stored)
    if ext == ".npz":
        return load_network(path)
    raise ConfigError(f"model file {path!r}: unknown extension {ext!r}: allowed .nir, .npz")


# --- fit check: spikeforge.host.image.fit_problems / check_fit ----------------------------------
def _is_integer(net):
    for proj in net.projections:
        if not np.issubdtype(np.asarray(net.dense_weights(proj)).dtype, np.integer):
            return False
    return True


# --- all in one ----------------------------------------------------------------------------------
@dataclass
class Compiled:
    """The result of :func:`compile`.

    Attributes
    ----------
    net : Network
        Integer network for the chip.
    float_net : Network
        The float network as trained.
    scales : dict
        Per population: integer state = scale * float state.
    settings : Settings or None
        The NIR settings used.
    notes : list of str
        Quantization notes.
    config : object
        The chip configuration it was checked against.
    fit : Fit or None
        The passed fit check (:func:`~spikeforge.host.image.check_fit`) that :meth:`image`
        reuses for ``config``.
    calibration : dict or None
        What the quantizer's calibration tried and kept (``Quantized.calibration``).
    """

    net: Network
    float_net: Network
    scales: dict
    settings: Settings | None = None
    notes: list = field(default_factory=list)
    config: object = None
    fmt: Format = DEFAULT_FORMAT
    fit: Fit | None = field(default=None, repr=False, compare=False)
    calibration: dict | None = field(default=None, repr=False, compare=False)

    @property
    def quantized(self) -> Quantized:
        return Quantized(self.net, self.float_net, self.scales, self.fmt, self.notes,
                         self.calibration)

    def image(self, config=None):
        """The chip's memory image: ``spikeforge.host.image.build_image(net, config)``.

        ``config`` defaults to the one the network was checked against (then it is not checked
        and compiled again).
        """
        config = self.config if config is None else config
        if config is None:
            raise ConfigError("Compiled.image() needs a chip configuration (a CoreConfig)")
        fit = self.fit if self.fit is not None and self.fit.config == config else None
        return build_image(self.net, config, fit)

    def report(self, raster, labels=None, decoder="count", *,
               min_agreement=0.99) -> QuantReport:
        """Quantization report on ``raster`` (see :func:`compare`)."""
        return compare(self.quantized, raster, labels, decoder, min_agreement=min_agreement)


def _to_float_network(model, settings, n_inputs, calibration, sklearn_kw):
    if isinstance(model, Network):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, settings)
    mod = type(model).__module__
    if mod.startswith("nir"):
        return from_nir(model, settings)
    if mod.startswith("sklearn"):
        if calibration is None:
            raise ConfigError("a scikit-learn model needs calibration= (training inputs in 0..1)")
        return from_sklearn(model, calibration, **sklearn_kw)
    try:
        import torch

        if isinstance(model, torch.nn.Module):
            if n_inputs is None:
                raise ConfigError("an snnTorch model needs n_inputs= (size of one sample)")
            return from_snntorch(model, n_inputs, settings)
    except ImportError:
        pass
    if isinstance(model, (list, tuple)):
        return from_weights(model)
    raise UnsupportedError(
        f"cannot compile a {type(model).__name__}: allowed a Network, a .nir/.npz path, a NIR "
        f"graph, an snnTorch module, a scikit-learn MLP or a list of weight matrices"
    )


def compile(
    model,
    config=None,
    *,
    settings: Settings | None = None,
    fmt: Format | None = None,
    per_neuron: bool | None = None,
    leak: str = "mult",
    n_inputs: int | None = None,
    calibration=None,
    calibrate="random",
    rate: float = 0.1,
    min_agreement: float | None = 0.99,
    **sklearn_kw,
) -> Compiled:
    """Compile ``model`` for the chip: import, quantize, check that it fits.

    Parameters
    ----------
    model
        A float :class:`Network`, a ``.nir`` / ``.npz`` path, a ``nir.NIRGraph``, an snnTorch
        module (with ``n_inputs``), a scikit-learn MLP (with ``calibration``) or a list of
        weight matrices.  An already integer ``Network`` is checked, not quantized again.
    config
        Chip configuration (a ``spikeforge.hw.image.CoreConfig``) to check the network against
        with :func:`~spikeforge.host.image.check_fit`; without it only the number format is
        checked.
    settings : Settings
        NIR settings (``dt``, reset).
    fmt, per_neuron, leak, calibrate, rate, min_agreement
        See :func:`quantize`.  ``fmt`` defaults to the chip's (``config.fmt``) or
        ``DEFAULT_FORMAT``; a ``fmt`` the chip does not have is refused.  ``calibrate``:
        the inputs the quantizer checks its choice of scales on (default: random spikes at
        ``rate``); ``per_neuron`` None lets it choose, but never per-neuron scales on a chip with
        one threshold per population.
    calibration
        A scikit-learn model's training inputs (for its rate conversion).

    Raises
    ------
    FitError
        With every problem found by :func:`~spikeforge.host.image.check_fit`.
    UnsupportedError, ConfigError
        From the importers and the quantizer.
    """
    chip_fmt = getattr(config, "fmt", None)
    if fmt is not None and chip_fmt is not None and fmt != chip_fmt:
        raise ConfigError(
            f"the network was asked for {fmt.weight_bits}-bit weights and {fmt.state_bits}-bit "
            f"state but the chip reports {chip_fmt.weight_bits}-bit weights and "
            f"{chip_fmt.state_bits}-bit state: compile for the chip's format (leave fmt out), "
            f"or use a board that carries the format (spikeforge build --list)"
        )
    fmt = chip_fmt or fmt or DEFAULT_FORMAT
    float_net = _to_float_network(model, settings, n_inputs, calibration, sklearn_kw)
    if _is_integer(float_net) and isinstance(model, (str, os.PathLike, Network)) and all(
        np.issubdtype(np.asarray(p.params.threshold).dtype, np.integer)
        for p in float_net.populations
    ):
        scales = {p.name: np.ones(p.size) for p in float_net.populations}
        int_net, notes = float_net, ["network is already integer: not quantized"]
        calibration = None
    else:
        if per_neuron is None and not getattr(config, "per_neuron_threshold", True):
            per_neuron = False  # one threshold per population on this chip
        q = quantize(float_net, fmt, per_neuron=per_neuron, leak=leak, calibrate=calibrate,
                     rate=rate, min_agreement=min_agreement)
        int_net, scales, notes = q.net, q.scales, q.notes
        calibration = q.calibration
    fit = check_fit(int_net, config, fmt=fmt)
    return Compiled(int_net, float_net, scales, settings, notes, config, fmt, fit, calibration)
