"""Quantize a float :class:`~spikeforge.network.Network` to the chip's integer format.

Spec: ``docs/neuron.md`` (the integer neuron and its widths), ``spikeforge.spec.Format`` and
``docs/compiler.md``.

Spikes are single bits, so every target population (or every target neuron) can have its own
scale ``s``: the weights *into* it, its bias and its threshold are multiplied by ``s`` together,
its membrane (and CuBa current) become ``s`` times the float ones, and its spikes do not change
apart from rounding.  ``s`` is at most the value that puts the largest incoming weight at the
edge of the weight range (``127 / max|w|`` for 8-bit weights), lowered when the threshold would
leave too little headroom in the state range or the bias would not fit.  Which scales keep the
spikes best (per population or per neuron, the whole weight range or a quarter of it) is found by
calibration: the float and the integer network run on a calibration input, the closest wins.
Decays become ``q = round(beta * 2**F)`` (``leak="mult"``) or the nearest ``k`` of ``v - (v >>
k)`` (``leak="shift"``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ConfigError, UnsupportedError
from ..network import Conv, Network, NeuronParams, Population, Projection
from ..sim.golden import GoldenChip, validate_network
from ..spec import DEFAULT_FORMAT, WIDE_FORMAT, Format, LeakMode
from .nir_import import is_readout

__all__ = [
    "Quantized",
    "quantize",
    "QuantReport",
    "compare",
    "agreement",
    "precision",
    "QuantizationWarning",
    "calibration_raster",
]


class QuantizationWarning(UserWarning):
    """The integer network's spikes moved away from the float network's (:func:`compare`)."""


@dataclass
class Quantized:
    """The result of :func:`quantize`.

    Attributes
    ----------
    net : Network
        The integer network (integer codes, ready for the golden int mode and the chip).
    float_net : Network
        The float network it came from.
    scales : dict of str to ndarray
        Per population, the per-neuron scale: integer membrane = scale * float membrane.
    fmt : Format
    notes : list of str
        What rounding did (decay errors, threshold rounding), one line each.
    calibration : dict or None
        What the calibration tried and kept (:func:`quantize`): ``input`` (what it ran on),
        ``per_neuron``, ``weight_fill``, ``agreement`` (per population, on that input) and
        ``tried`` (every choice and its lowest agreement); None without calibration.
    """

    net: Network
    float_net: Network
    scales: dict
    fmt: Format = DEFAULT_FORMAT
    notes: list = field(default_factory=list)
    calibration: dict | None = None


def _per(value, n):
    a = np.asarray(value, dtype=np.float64)
    return np.full(n, float(a)) if a.ndim == 0 else a.reshape(-1)


def _scalar_if_uniform(a):
    a = np.asarray(a)
    return a.flat[0].item() if a.size and np.all(a == a.flat[0]) else a


def _decay_codes(name, pop, beta, leak, fmt, notes):
    if leak == LeakMode.MULT:
        q = np.rint(beta * fmt.decay_one).astype(np.int64)
        err = np.abs(q / fmt.decay_one - beta).max()
        if err > 0:
            notes.append(f"{pop}: {name} rounded to q/{fmt.decay_one}, max error {err:.2e}")
        return q
    # shift: beta = 1 - 2**-k
    with np.errstate(divide="ignore"):
        k = np.rint(-np.log2(np.maximum(1.0 - beta, 1e-300)))
    lo, hi = fmt.shift_range
    bad = (k < lo) | (k > hi)
    if np.any(bad):
        b = float(beta[bad][0])
        raise UnsupportedError(
            f"population {pop!r}: {name}={b!r} has no shift leak v - (v >> k) with k in {lo}..{hi}"
            f" (beta = 1 - 2**-k is 0.5 .. {1 - 2.0 ** -hi:.6f}); use leak='mult'"
        )
    err = np.abs((1 - np.exp2(-k)) - beta).max()
    if err > 0:
        notes.append(f"{pop}: {name} approximated by a shift leak, max beta error {err:.2e}")
    return k.astype(np.int64)


CALIBRATION_STEPS = 50
"""Timesteps of the random calibration input (``quantize(calibrate="random")``)."""

CALIBRATION_SAMPLES = 64
"""Samples of the random calibration input."""

CALIBRATION_SEED = 0
"""Seed of the random calibration input: the same network always gets the same scales."""

WEIGHT_FILLS = (1.0, 0.25)
"""The share of the weight range the largest weight into a population may take, tried by the
calibration: 1 gives the weights every bit; a quarter leaves the state room for sums of large
weights (a narrow state saturates before a wide weight range is used up)."""


def calibration_raster(n_inputs: int, rate: float = 0.1, *, steps: int = CALIBRATION_STEPS,
                       samples: int = CALIBRATION_SAMPLES, seed: int = CALIBRATION_SEED):
    """The random calibration input: every channel spikes with probability ``rate`` in every
    step, independently; an array ``(steps, samples, n_inputs)`` of 0/1."""
    if not 0 < rate <= 1:
        raise ConfigError(f"rate={rate!r} is out of range: allowed 0 < rate <= 1")
    rng = np.random.default_rng(seed)
    return (rng.random((steps, samples, n_inputs)) < rate).astype(np.uint8)


def quantize(
    net: Network,
    fmt: Format = DEFAULT_FORMAT,
    *,
    per_neuron: bool | None = None,
    leak: str = "mult",
    headroom: float = 4.0,
    calibrate="random",
    rate: float = 0.1,
    min_agreement: float | None = 0.99,
) -> Quantized:
    """Quantize a float network (as trained) to integer codes for the chip, choosing the scales
    that keep its spikes.

    Every population gets a scale ``s``: integer membrane = ``s`` x float membrane
    (``docs/compiler.md``).  The largest ``s`` the format allows is limited by the weights (the
    largest incoming weight takes the whole weight range), the threshold (``headroom``) and the
    bias.  With calibration (the default), a few choices are tried -- one scale per population or
    one per neuron, the largest weight at the full weight range or at a quarter of it
    (:data:`WEIGHT_FILLS`) -- by running the float and the integer network (golden model) on the
    calibration input, and the one whose lowest per-population spike agreement is highest is
    kept (the first, per population and full range, unless another is better by more than
    0.05 points).  ``Quantized.calibration`` says what was tried and what each population
    reached.

    Parameters
    ----------
    net : Network
        Float network (e.g. from :func:`~spikeforge.host.nir_import.from_nir`).
    fmt : Format
        Target widths (``spikeforge.spec.DEFAULT_FORMAT``, ``WIDE_FORMAT``).
    per_neuron : bool or None
        One scale per neuron (Xylo style; needs per-neuron thresholds on the chip) or one per
        population (Speck style); None: the calibration chooses (per population without it).
        Readout populations (LI/CubaLI) always get one scale, so their membranes stay comparable.
    leak : {"mult", "shift"}
        How leaky populations decay on the chip.
    headroom : float
        The scaled threshold is kept below ``state_max / headroom`` so the membrane can overshoot
        the threshold without saturating.
    calibrate : "random", array or None
        The calibration input: ``"random"`` (:func:`calibration_raster`: every channel spikes
        with probability ``rate`` each step, 50 steps x 64 samples, fixed seed); the user's own
        input raster ``(T, batch, n_inputs)`` (what the network will see: better); None: no
        calibration, per-population scales at the full weight range.
    rate : float
        Spike probability per channel and step of the random calibration input.
    min_agreement : float or None
        Warn (:class:`QuantizationWarning`, naming each population, its agreement on the
        calibration input and the parameter that lost most precision, and a wider format if
        there is one) when the best choice leaves a population below this spike agreement.

    Returns
    -------
    Quantized

    Raises
    ------
    ConfigError, UnsupportedError
        A parameter the format cannot represent (named, with the allowed range), a calibration
        input of the wrong shape.
    """
    if leak not in ("mult", "shift"):
        raise ConfigError(f"leak={leak!r} is not valid: allowed 'mult', 'shift'")
    if not headroom >= 1:
        raise ConfigError(f"headroom={headroom!r} is out of range: allowed >= 1")
    if per_neuron not in (None, False, True):
        raise ConfigError(f"per_neuron={per_neuron!r} is not valid: allowed True, False, None")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise ConfigError(f"min_agreement={min_agreement!r} is out of range: allowed 0..1 or None")
    validate_network(net, "float")
    if calibrate is None:
        return _quantize_once(net, fmt, bool(per_neuron), leak, headroom, 1.0)
    if isinstance(calibrate, str):
        if calibrate != "random":
            raise ConfigError(
                f"calibrate={calibrate!r} is not valid: allowed 'random', an input raster "
                f"(T, batch, {net.n_inputs}) or None"
            )
        raster = calibration_raster(net.n_inputs, rate)
        source = (f"random input, spike probability {rate:g} per channel and step, "
                  f"{CALIBRATION_STEPS} steps x {CALIBRATION_SAMPLES} samples")
    else:
        raster = np.asarray(calibrate)
        if raster.ndim != 3 or raster.shape[2] != net.n_inputs or 0 in raster.shape[:2]:
            raise ConfigError(
                f"calibration input has shape {raster.shape}: expected (T, batch, "
                f"{net.n_inputs}) spike counts with T, batch >= 1"
            )
        source = f"the given input, {raster.shape[0]} steps x {raster.shape[1]} samples"
    modes = (False, True) if per_neuron is None else (per_neuron,)
    float_spikes = _run(net, "float", raster, fmt)[0]
    tried, best = [], None
    for pn in modes:
        for fill in WEIGHT_FILLS:
            try:
                q = _quantize_once(net, fmt, pn, leak, headroom, fill)
            except (ConfigError, UnsupportedError):
                if best is None and fill == WEIGHT_FILLS[0] and pn == modes[0]:
                    raise  # the first choice fails: say why
                continue
            agree = _agreements(q.net, float_spikes, _run(q.net, "int", raster, fmt)[0])
            score = min(agree.values(), default=1.0)
            tried.append({"per_neuron": pn, "weight_fill": fill, "lowest_agreement": score})
            if best is None or score > best[0] + 5e-4:
                best = (score, q, agree, pn, fill)
    score, q, agree, pn, fill = best
    q.calibration = {"input": source, "per_neuron": pn, "weight_fill": fill,
                     "agreement": agree, "tried": tried}
    q.notes.append(
        f"calibration on {source}: {'per-neuron' if pn else 'per-population'} scales, largest "
        f"weight at {fill:g} of the weight range; lowest spike agreement "
        f"{100 * score:.2f} %"
    )
    if min_agreement is not None:
        low = {k: a for k, a in agree.items() if a < min_agreement}
        if low:
            _warn_low(q, low, min_agreement, " on the calibration input")
    return q


def _run(net, mode, raster, fmt, record_v=False, batch_size=512):
    """``(spikes, v)`` of ``net`` (golden model) on ``raster``, ``batch_size`` samples at a
    time: arrays ``(T, batch, n_neurons)``; ``v`` is None unless ``record_v``."""
    spikes, vs = [], []
    for k in range(0, raster.shape[1], batch_size):
        chunk = raster[:, k:k + batch_size]
        out = GoldenChip(net, mode, batch=chunk.shape[1], fmt=fmt).run(chunk, record_v=record_v)
        spikes.append(out["spikes"])
        if record_v:
            vs.append(out["v"])
    return np.concatenate(spikes, axis=1), (np.concatenate(vs, axis=1) if record_v else None)


def _agreements(net, a, b):
    """Per population of ``net``, the spike agreement of spike arrays ``a`` and ``b``."""
    out = {}
    for pop in net.populations:
        sl = slice(net.base(pop.name), net.base(pop.name) + pop.size)
        out[pop.name] = agreement(a[..., sl], b[..., sl])
    return out


def _warn_low(q, low, min_agreement, where):
    """Warn that populations ``low`` ({name: agreement}) are below ``min_agreement``."""
    prec = precision(q)
    parts = []
    for k, a in low.items():
        errs = prec.get(k) or {"-": 0.0}
        name = max(errs, key=errs.get)
        parts.append(f"{k!r} {100 * a:.2f} % (most precision lost: {name}, "
                     f"{100 * errs[name]:.2f} %)")
    advice = "QuantReport.precision has every parameter's rounding error"
    if q.fmt.weight_bits < WIDE_FORMAT.weight_bits or q.fmt.state_bits < WIDE_FORMAT.state_bits:
        advice = (f"a chip with {WIDE_FORMAT.weight_bits}-bit weights and "
                  f"{WIDE_FORMAT.state_bits}-bit state (spikeforge.spec.WIDE_FORMAT, board "
                  f"ulx3s-85f-wide) keeps more; " + advice)
    warnings.warn(
        QuantizationWarning(
            f"the integer network's spikes agree with the float network's on less than "
            f"{100 * min_agreement:.0f} % of entries{where} in population(s) "
            + "; ".join(parts)
            + f": the chip will not behave like the trained network there ({advice})"
        ),
        stacklevel=3,
    )


def _quantize_once(net, fmt, per_neuron, leak, headroom, fill) -> Quantized:
    """One choice of scales (:func:`quantize` without calibration): ``fill`` is the share of the
    weight range the largest weight into a population takes."""
    w_max = fmt.weight_range[1]
    state_max = fmt.state_range[1]
    thr_lo, thr_hi = fmt.threshold_range
    bias_hi = fmt.bias_range[1]
    notes = []
    scales, pops = {}, []
    dense = {id(p): net.dense_weights(p).astype(np.float64) for p in net.projections}
    for pop in net.populations:
        n = pop.size
        prm = pop.params
        colmax = np.zeros(n)
        for proj in net.projections:
            if proj.dst == pop.name:
                colmax = np.maximum(colmax, np.abs(dense[id(proj)]).max(axis=0))
        thr = _per(prm.threshold, n)
        bias = _per(prm.bias, n)
        readout = is_readout(prm)
        if readout or not per_neuron:
            cm = np.full(n, colmax.max())
        else:
            cm = colmax
        with np.errstate(divide="ignore"):
            s = np.where(cm > 0, fill * w_max / cm, np.inf)
            if not readout:
                s = np.minimum(s, (state_max / headroom) / thr)
            s = np.minimum(s, np.where(np.abs(bias) > 0, bias_hi / np.abs(bias), np.inf))
        if readout:
            s = np.full(n, s.min())
        channels = {proj.weights.out_channels for proj in net.projections
                    if proj.dst == pop.name and isinstance(proj.weights, Conv)}
        if per_neuron and len(channels) == 1 and np.all(np.isfinite(s)):
            # a convolution's target: one scale per output channel (the smallest of its
            # neurons'), so that the scaled kernel stays shared (docs/network.md)
            c = channels.pop()
            s = np.repeat(s.reshape(c, -1).min(axis=1), n // c)
        if not np.all(np.isfinite(s)):
            # no input and no bias: any scale; keep thresholds exact-ish
            s = np.where(np.isfinite(s), s, (state_max / headroom) / np.maximum(thr, 1e-30))
            if readout:
                s = np.where(np.isfinite(s), s, 1.0)
        if not readout:
            t_int = np.rint(thr * s)
            if np.any(t_int < thr_lo):
                k = int(np.argmax(t_int < thr_lo))
                raise ConfigError(
                    f"population {pop.name!r}: threshold {float(thr[k])!r} (neuron {k}) rounds to "
                    f"{int(t_int[k])} at scale {s[k]:.4g}; allowed {thr_lo}..{thr_hi}: the "
                    f"incoming weights are too large relative to the threshold for "
                    f"{fmt.weight_bits}-bit weights"
                )
            rel = np.abs(t_int / s - thr) / thr
            if rel.max() > 1e-3:
                notes.append(
                    f"{pop.name}: threshold rounding moved it by up to {100 * rel.max():.2f} %"
                )
        else:
            t_int = np.full(n, thr_hi)
            if fmt.threshold_bits < fmt.state_bits:
                notes.append(
                    f"{pop.name}: readout threshold {thr_hi} is reachable with "
                    f"{fmt.state_bits}-bit state; the readout may spike"
                )
        b_int = np.rint(bias * s)
        params = {
            "model": prm.model, "reset": prm.reset, "reset_delay": prm.reset_delay,
            "threshold": _scalar_if_uniform(t_int.astype(np.int64)),
            "bias": _scalar_if_uniform(b_int.astype(np.int64)),
        }
        if prm.leak == LeakMode.NONE:
            params.update(leak="none", beta=0, alpha=0)
        elif prm.leak == LeakMode.SHIFT:
            raise ConfigError(
                f"population {pop.name!r}: the float network already uses leak='shift'; pass "
                f"a float network with multiplicative decays (beta) and leak='shift' here"
            )
        else:
            mode = LeakMode.MULT if leak == "mult" else LeakMode.SHIFT
            beta = _per(prm.beta, n)
            params["leak"] = mode
            params["beta"] = _scalar_if_uniform(
                _decay_codes("beta", pop.name, beta, mode, fmt, notes))
            if prm.model.name == "CUBA":
                alpha = _per(prm.alpha, n)
                params["alpha"] = _scalar_if_uniform(
                    _decay_codes("alpha", pop.name, alpha, mode, fmt, notes))
            else:
                params["alpha"] = 0
        scales[pop.name] = s
        pops.append(Population(pop.name, n, NeuronParams(**params)))
    projections = []
    lo, hi = fmt.weight_range
    for proj in net.projections:
        s = scales[proj.dst]
        conv = proj.weights if isinstance(proj.weights, Conv) else None
        if conv is not None:
            per_c = s.reshape(conv.out_channels, -1)
            if np.all(per_c == per_c[:, :1]):
                # one scale per output channel: the kernel is scaled and stays shared
                # (docs/network.md, "Convolution and pooling")
                g = per_c[:, 0].reshape(-1, *([1] * (conv.kernel.ndim - 1)))
                k = np.clip(np.rint(conv.kernel.astype(np.float64) * g), lo, hi).astype(np.int64)
                projections.append(Projection(proj.src, proj.dst, conv.with_kernel(k),
                                              proj.delay))
                continue
        w = np.rint(dense[id(proj)] * s[None, :]).astype(np.int64)
        if w.size and (w.min() < lo or w.max() > hi):  # only by float round-off at the edge
            w = np.clip(w, lo, hi)
        projections.append(Projection(proj.src, proj.dst, w, proj.delay))
    qnet = Network(net.n_inputs, pops, projections, list(net.outputs))
    validate_network(qnet, "int", fmt)
    return Quantized(net=qnet, float_net=net, scales=scales, fmt=fmt, notes=notes)


# --- how much precision did each parameter lose -------------------------------------------------
def _decay_value(code, leak, fmt):
    """The decay factor an integer decay code stands for."""
    code = np.asarray(code, dtype=np.float64)
    if leak == LeakMode.MULT:
        return code / fmt.decay_one
    return 1.0 - np.exp2(-code)


def precision(q: Quantized) -> dict:
    """Per population, how much each of its parameters moved in rounding, as a fraction.

    For a spiking population everything is measured against its float threshold, the scale on
    which the spikes are decided: ``threshold`` is the largest ``|threshold_int / s -
    threshold| / threshold`` over its neurons, ``bias`` and ``weights from SRC`` the largest
    rounding error of a bias or of one incoming weight (``|w_int / s - w|``), divided by the
    threshold (with few threshold levels, one weight's rounding is a large share of a spike).
    For a readout (no threshold) the bias and weights are measured against the largest
    incoming weight.  ``beta`` and ``alpha`` are the relative error of the leak per step,
    ``|q - beta| / (1 - beta)`` (0 for an exact code, or where the float decay is 1).
    ``membrane step`` (spiking populations) is one integer step of the membrane against the
    threshold, ``1 / threshold_int``: the integer decay rounds toward zero, so a membrane can
    lose up to that much of the threshold every timestep, and a threshold with few levels
    (large weights scaled to the 8-bit range) makes it large.

    Returns
    -------
    dict of str to dict of str to float
        ``{population: {parameter: fraction}}``, in network order.
    """
    fmt = q.fmt
    out = {}
    # by position: two projections between one pair (e.g. with different delays) stay apart
    dense_f = {(k, p.src, p.dst): q.float_net.dense_weights(p).astype(np.float64)
               for k, p in enumerate(q.float_net.projections)}
    dense_i = {(k, p.src, p.dst): q.net.dense_weights(p).astype(np.float64)
               for k, p in enumerate(q.net.projections)}
    for fpop, ipop in zip(q.float_net.populations, q.net.populations, strict=True):
        n = fpop.size
        s = np.asarray(q.scales[fpop.name], dtype=np.float64).reshape(-1)
        s = np.broadcast_to(s, (n,))
        fp, ip = fpop.params, ipop.params
        readout = is_readout(fp)
        errs = {}
        w_errs = {}
        w_max = 0.0
        for (k, src, dst), wf in dense_f.items():
            if dst != fpop.name:
                continue
            wi = dense_i[(k, src, dst)] / s[None, :]
            err = np.abs(wi - wf).max(axis=0) if wf.size else np.zeros(n)
            name = f"weights from {src}"
            w_errs[name] = np.maximum(w_errs[name], err) if name in w_errs else err
            w_max = max(w_max, float(np.abs(wf).max()) if wf.size else 0.0)
        if readout:
            ref = np.full(n, w_max if w_max > 0 else 1.0)
        else:
            thr = _per(fp.threshold, n)
            ref = np.abs(thr)
            thr_int = np.abs(_per(ip.threshold, n))
            errs["threshold"] = float(np.max(np.abs(thr_int / s - thr) / ref))
            # one integer step of the membrane: what a decay rounded toward zero can lose per
            # timestep (docs/neuron.md), against the threshold
            errs["membrane step"] = float(np.max(1.0 / np.maximum(thr_int, 1)))
        bias_f = _per(fp.bias, n)
        errs["bias"] = float(np.max(np.abs(_per(ip.bias, n) / s - bias_f) / ref))
        for name, e in w_errs.items():
            errs[name] = float(np.max(e / ref))
        if fp.leak != LeakMode.NONE:
            decays = [("beta", fp.beta, ip.beta)]
            if fp.model.name == "CUBA":
                decays.append(("alpha", fp.alpha, ip.alpha))
            for name, fv, code in decays:
                fv = _per(fv, n)
                qv = _decay_value(_per(code, n), ip.leak, fmt)
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.where(fv < 1, np.abs(qv - fv) / (1 - fv), np.abs(qv - fv))
                errs[name] = float(np.max(rel))
        out[fpop.name] = errs
    return out


# --- how far did quantization move the spikes -----------------------------------------------------
def agreement(a, b):
    """Share of entries (step, sample, neuron) on which two spike arrays agree."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ConfigError(f"spike arrays have shapes {a.shape} and {b.shape}")
    return float(np.mean(a == b)) if a.size else 1.0


@dataclass
class QuantReport:
    """How far the integer network's behaviour moved from the float one.

    Attributes
    ----------
    agreement : dict of str to float
        Per population, the share of (step, sample, neuron) spike entries that are equal.
    rates_float, rates_int : dict of str to float
        Per population, mean spikes per neuron per step.
    accuracy_float, accuracy_int : float or None
        With labels: the accuracies of the two networks (same decoder).
    accuracy_delta : float or None
        ``accuracy_int - accuracy_float``.
    precision : dict of str to dict of str to float
        Per population, how much each parameter moved in rounding (:func:`precision`).
    """

    agreement: dict
    rates_float: dict
    rates_int: dict
    accuracy_float: float | None = None
    accuracy_int: float | None = None
    precision: dict = field(default_factory=dict)

    def worst(self, pop: str):
        """``(parameter, fraction)``: the parameter of ``pop`` that lost most precision, or
        None without a precision table."""
        errs = self.precision.get(pop)
        if not errs:
            return None
        name = max(errs, key=errs.get)
        return name, errs[name]

    @property
    def accuracy_delta(self):
        if self.accuracy_float is None:
            return None
        return self.accuracy_int - self.accuracy_float

    def __str__(self):
        lines = [f"{'population':<16}{'agreement':>10}{'rate float':>12}{'rate int':>10}"
                 "  most precision lost"]
        for k in self.agreement:
            worst = self.worst(k)
            lost = f"  {worst[0]}: {100 * worst[1]:.2f} %" if worst else ""
            lines.append(f"{k:<16}{self.agreement[k]:>10.4f}{self.rates_float[k]:>12.4f}"
                         f"{self.rates_int[k]:>10.4f}{lost}")
        if self.accuracy_float is not None:
            lines.append(f"accuracy float {self.accuracy_float:.4f}  int {self.accuracy_int:.4f}  "
                         f"delta {100 * self.accuracy_delta:+.2f} pp")
        return "\n".join(lines)


def compare(q: Quantized, raster, labels=None, decoder="count", batch_size=512, *,
            min_agreement=0.99):
    """Run the float and the integer network on ``raster`` and compare them.

    Warns (:class:`QuantizationWarning`), naming each population and the parameter that lost
    most precision, when a population's spike agreement is below ``min_agreement`` (None: never
    warn).

    Parameters
    ----------
    q : Quantized
    raster : array (T, batch, n_inputs)
    labels : array (batch,), optional
        True classes, for the accuracies.
    decoder : str
        See :func:`spikeforge.host.coding.predict`; ``"membrane"`` decodes the first output
        population's membrane (divided by its scale for the integer network).

    min_agreement : float or None
        The spike agreement below which a population is reported (default 0.99).

    Returns
    -------
    QuantReport
    """
    from .coding import predict

    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise ConfigError(f"min_agreement={min_agreement!r} is out of range: allowed 0..1 or None")

    raster = np.asarray(raster)
    results = {mode: _run(net, mode, raster, q.fmt, decoder == "membrane", batch_size)
               for mode, net in (("float", q.float_net), ("int", q.net))}
    agree = _agreements(q.net, results["float"][0], results["int"][0])
    rf, ri = {}, {}
    for pop in q.net.populations:
        sl = slice(q.net.base(pop.name), q.net.base(pop.name) + pop.size)
        rf[pop.name] = float(results["float"][0][..., sl].mean())
        ri[pop.name] = float(results["int"][0][..., sl].mean())
    rep = QuantReport(agree, rf, ri, precision=precision(q))
    if min_agreement is not None:
        low = {k: a for k, a in agree.items() if a < min_agreement}
        if low:
            _warn_low(q, low, min_agreement, "")
    if labels is not None:
        out_pop = q.net.outputs[0]
        sl = slice(q.net.base(out_pop), q.net.base(out_pop) + q.net.population(out_pop).size)
        labels = np.asarray(labels)
        accs = []
        for mode in ("float", "int"):
            spikes, v = results[mode]
            scale = q.scales[out_pop] if mode == "int" else 1.0
            pred = predict(decoder, spikes=spikes[..., sl],
                           v=None if v is None else v[..., sl], scale=scale)
            accs.append(float(np.mean(pred == labels)))
        rep = replace(rep, accuracy_float=accs[0], accuracy_int=accs[1])
    return rep
