"""The NumPy golden model: the bit-exact specification of the spikeforge chip.

Spec: ``docs/neuron.md`` (one neuron's timestep, integer arithmetic) and ``docs/network.md``
(populations, projections and when a spike arrives).  The RTL, the virtual board and a real board
must reproduce the *integer* mode of this model bit for bit.  The *float* mode runs the same
steps in floating point and reproduces snnTorch 1.0.0's ``Leaky`` and ``Synaptic`` (every
``reset_mechanism`` and ``reset_delay``), so a trained network can be compared with its quantized
version.

Everything is vectorised over neurons and over a batch of independent samples: state arrays have
shape ``(batch, n_neurons)``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode
from .network import INPUT, Network, NeuronParams

__all__ = [
    "GoldenChip",
    "neuron_update",
    "decay",
    "saturate",
    "validate_network",
    "population_arrays",
]

_ARITHMETICS = ("int", "float")


def _check_arithmetic(arithmetic):
    if arithmetic not in _ARITHMETICS:
        raise ConfigError(f"arithmetic={arithmetic!r} is not valid: allowed 'int', 'float'")


# --- the three primitive operations of docs/neuron.md -------------------------------------------
def saturate(x, fmt: Format = DEFAULT_FORMAT):
    """Clamp integers to the state range of ``fmt`` (``sat`` in ``docs/neuron.md``)."""
    lo, hi = fmt.state_range
    return np.clip(x, lo, hi)


def decay(x, code, leak: LeakMode, arithmetic: str = "int", fmt: Format = DEFAULT_FORMAT):
    """One timestep of decay of ``x`` (membrane or synaptic current).

    Integer: ``mult`` is ``x * q >> F`` rounded toward zero, ``shift`` is ``x - (x >> k)``
    (arithmetic shift), ``none`` is ``x``.  Float: ``mult`` is ``beta * x``, ``shift`` is
    ``x - x * 2**-k``, ``none`` is ``x``.
    """
    if leak == LeakMode.NONE:
        return x
    if arithmetic == "float":
        if leak == LeakMode.MULT:
            return code * x
        return x - x * np.exp2(-np.asarray(code, dtype=x.dtype), dtype=x.dtype)
    if leak == LeakMode.MULT:
        p = x * code
        return np.where(p >= 0, p >> fmt.decay_frac_bits, -((-p) >> fmt.decay_frac_bits))
    return x - (x >> code)


def neuron_update(v, i, acc, params, arithmetic="int", fmt: Format = DEFAULT_FORMAT):
    """Advance one population by one timestep (steps 1-7 of ``docs/neuron.md``).

    Parameters
    ----------
    v, i : ndarray, shape (batch, n)
        Membrane and synaptic current after the previous timestep (``i`` is ignored for LIF).
    acc : ndarray, shape (batch, n)
        Sum of the weights delivered to each neuron in this timestep.
    params : dict
        As returned by :func:`population_arrays`: ``model``, ``leak``, ``reset``,
        ``reset_delay`` and per-neuron arrays ``beta``, ``alpha``, ``threshold``, ``bias``.
    arithmetic : {"int", "float"}
    fmt : Format

    Returns
    -------
    v, i : ndarray
        The new state.
    s : ndarray of bool
        The spikes of this timestep.
    """
    is_int = arithmetic == "int"
    sat = (lambda x: saturate(x, fmt)) if is_int else (lambda x: x)
    thr, bias = params["threshold"], params["bias"]
    leak, reset = params["leak"], params["reset"]
    one = 1 if is_int else np.ones((), dtype=v.dtype)

    r = (v > thr).astype(v.dtype)  # 1. reset owed by the previous step
    x = acc + bias  # 2. input of this step
    if params["model"] == NeuronModel.CUBA:  # 3. synaptic current
        i = sat(decay(i, params["alpha"], leak, arithmetic, fmt) + x)
        cur = i
    else:
        cur = x
    # 4. state function
    if reset == ResetMode.SUBTRACT:
        u = decay(v, params["beta"], leak, arithmetic, fmt) + cur - r * thr
    elif reset == ResetMode.ZERO:
        if params["model"] == NeuronModel.CUBA:
            u = decay(v, params["beta"], leak, arithmetic, fmt) + cur
            u = u - u * r
        else:
            u = decay((one - r) * v, params["beta"], leak, arithmetic, fmt) + cur
    else:
        u = decay(v, params["beta"], leak, arithmetic, fmt) + cur
    u = sat(u)
    s = u > thr  # 5. strict threshold
    if not params["reset_delay"]:  # 6. immediate reset (snnTorch reset_delay=False)
        do_reset = s.astype(v.dtype) - r
        if reset == ResetMode.SUBTRACT:
            u = sat(u - do_reset * thr)
        elif reset == ResetMode.ZERO:
            u = sat(u - do_reset * u)
    return u, i, s


# --- parameters and validation ------------------------------------------------------------------
def _per_neuron(value, size, name, pop, dtype):
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(size, arr)
    if arr.shape != (size,):
        raise ConfigError(
            f"population {pop!r}: {name} has shape {np.shape(value)}, expected a scalar or "
            f"({size},) (one per neuron)"
        )
    if dtype is np.int64:
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(
                arr != np.round(arr)
            ):
                bad = arr.ravel()[0] if arr.size else value
                raise ConfigError(
                    f"population {pop!r}: {name}={bad!r} is not an integer (integer arithmetic "
                    f"takes integer codes; see docs/neuron.md)"
                )
    elif not np.all(np.isfinite(arr.astype(np.float64))):
        raise ConfigError(f"population {pop!r}: {name} has a non-finite value")
    return arr.astype(dtype)


def _check_range(arr, lo, hi, name, pop):
    bad = (arr < lo) | (arr > hi)
    if np.any(bad):
        k = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"population {pop!r}: {name}={arr[k]!r} (neuron {k}) is out of range: allowed "
            f"{lo}..{hi}"
        )


def population_arrays(
    params: NeuronParams, size: int, pop: str, arithmetic="int", fmt=DEFAULT_FORMAT, dtype=None
):
    """Check a population's parameters and broadcast them to per-neuron arrays.

    Raises :class:`~spikeforge.errors.ConfigError` naming the parameter, the value and the
    allowed range for anything out of range.  Nothing is clipped.
    """
    _check_arithmetic(arithmetic)
    is_int = arithmetic == "int"
    dt = np.int64 if is_int else (dtype or np.float32)
    out = {
        "model": params.model,
        "leak": params.leak,
        "reset": params.reset,
        "reset_delay": params.reset_delay,
    }
    decays = ["beta"] + (["alpha"] if params.model == NeuronModel.CUBA else [])
    for name in ("beta", "alpha", "threshold", "bias"):
        out[name] = _per_neuron(getattr(params, name), size, name, pop, dt)
    for name in decays:
        if params.leak == LeakMode.NONE:
            continue
        if params.leak == LeakMode.SHIFT:
            lo, hi = fmt.shift_range
            shift_int = _per_neuron(getattr(params, name), size, name, pop, np.int64)
            _check_range(shift_int, lo, hi, f"{name} (shift k)", pop)
        elif is_int:
            lo, hi = fmt.decay_range
            _check_range(out[name], lo, hi, f"{name} (decay code q, 1.0 = {hi})", pop)
        else:
            _check_range(out[name], 0.0, 1.0, name, pop)
    if is_int:
        _check_range(out["threshold"], *fmt.threshold_range, "threshold", pop)
        _check_range(out["bias"], *fmt.bias_range, "bias", pop)
    else:
        bad = out["threshold"] <= 0
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"population {pop!r}: threshold={out['threshold'][k]!r} (neuron {k}) is out of "
                f"range: allowed > 0"
            )
    if params.leak == LeakMode.SHIFT:
        for name in decays:
            out[name] = _per_neuron(getattr(params, name), size, name, pop, np.int64)
            if not is_int:
                out[name] = out[name].astype(dt)
    return out


def validate_network(net: Network, arithmetic="int", fmt: Format = DEFAULT_FORMAT):
    """Check every parameter and weight of ``net`` for ``arithmetic``.

    Integer mode also checks that no neuron's input accumulator can overflow:
    ``sum(|w|) + |bias|`` over a neuron's incoming synapses must fit ``fmt.acc_bits``.

    Returns the per-population arrays (a list of dicts, see :func:`population_arrays`).
    """
    _check_arithmetic(arithmetic)
    arrays = [
        population_arrays(p.params, p.size, p.name, arithmetic, fmt) for p in net.populations
    ]
    fan_in = [np.zeros(p.size, dtype=np.float64) for p in net.populations]
    for proj in net.projections:
        w = net.dense_weights(proj)
        label = f"projection {proj.src}->{proj.dst}"
        if not np.all(np.isfinite(w.astype(np.float64))):
            raise ConfigError(f"{label}: weights contain a non-finite value")
        if arithmetic == "int":
            if not np.issubdtype(w.dtype, np.integer) and np.any(w != np.round(w)):
                raise ConfigError(
                    f"{label}: weights must be integers in integer arithmetic (quantize first)"
                )
            lo, hi = fmt.weight_range
            bad = (w < lo) | (w > hi)
            if np.any(bad):
                r, c = np.argwhere(bad)[0]
                raise ConfigError(
                    f"{label}: weight[{r}, {c}]={w[r, c]!r} is out of range: allowed {lo}..{hi} "
                    f"({fmt.weight_bits}-bit signed)"
                )
        fan_in[net.index(proj.dst)] += np.abs(w.astype(np.float64)).sum(axis=0)
    if arithmetic == "int":
        acc_max = fmt.acc_range[1]
        for pop, arr, f in zip(net.populations, arrays, fan_in):
            worst = f + np.abs(arr["bias"])
            if np.any(worst > acc_max):
                k = int(np.argmax(worst))
                raise ConfigError(
                    f"population {pop.name!r}: neuron {k} can receive sum(|w|) + |bias| = "
                    f"{int(worst[k])} in one timestep, which overflows the {fmt.acc_bits}-bit "
                    f"accumulator (allowed up to {acc_max}); scale the weights down or split "
                    f"the fan-in"
                )
    return arrays


# --- the whole chip ------------------------------------------------------------------------------
class GoldenChip:
    """The golden model of a chip running ``net``.

    Parameters
    ----------
    net : Network
    arithmetic : {"int", "float"}
        ``"int"``: the hardware's arithmetic, bit-exact to ``docs/neuron.md``.
        ``"float"``: floating point, reproducing snnTorch 1.0.0.
    batch : int
        Number of independent samples run side by side.
    fmt : Format
        Integer widths (integer mode).
    dtype : numpy dtype
        Float mode's dtype (float32 as torch by default).

    Attributes
    ----------
    v, i, acc : ndarray, shape (batch, n_neurons)
        Membrane, synaptic current and input accumulator (global neuron order).
    t : int
        Number of timesteps run since the last reset.
    """

    def __init__(self, net: Network, arithmetic="int", batch=1, fmt=DEFAULT_FORMAT, dtype=None):
        _check_arithmetic(arithmetic)
        if not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ConfigError(f"batch={batch!r} is out of range: allowed >= 1")
        self.net, self.arithmetic, self.batch, self.fmt = net, arithmetic, int(batch), fmt
        self._is_int = arithmetic == "int"
        self._dtype = np.int64 if self._is_int else (dtype or np.float32)
        # Integer sums are done as float64 matrix products: exact, because every partial sum is
        # an integer far below 2**53 (validate_network bounds it by the accumulator width).
        self._mm_dtype = np.float64 if self._is_int else self._dtype
        self._params = validate_network(net, arithmetic, fmt)
        if not self._is_int:
            self._params = [
                {k: (v.astype(self._dtype) if isinstance(v, np.ndarray) else v) for k, v in p.items()}
                for p in self._params
            ]
        self._slices = [slice(net.base(p.name), net.base(p.name) + p.size) for p in net.populations]
        # projections grouped by when they deliver
        self._from_input, self._forward, self._recurrent = [], [], []
        for proj in net.projections:
            w = net.dense_weights(proj).astype(self._mm_dtype)
            dst = net.index(proj.dst)
            if proj.src == INPUT:
                self._from_input.append((dst, w))
            elif net.is_recurrent(proj):
                self._recurrent.append((net.index(proj.src), dst, w))
            else:
                self._forward.append((net.index(proj.src), dst, w))
        self.output_indices = np.concatenate(
            [np.arange(self._slices[net.index(o)].start, self._slices[net.index(o)].stop)
             for o in net.outputs]
        )
        self.reset()

    def reset(self):
        """Set every state (membrane, current, accumulator, pending spikes) to zero."""
        shape = (self.batch, self.net.n_neurons)
        self.v = np.zeros(shape, dtype=self._dtype)
        self.i = np.zeros(shape, dtype=self._dtype)
        self.acc = np.zeros(shape, dtype=self._dtype)
        self.t = 0

    def _add(self, dst, spikes, w):
        contrib = spikes.astype(self._mm_dtype) @ w
        sl = self._slices[dst]
        if self._is_int:
            self.acc[:, sl] += np.rint(contrib).astype(np.int64)
        else:
            self.acc[:, sl] += contrib

    def step(self, inputs=None):
        """Run one timestep.

        Parameters
        ----------
        inputs : array of 0/1, shape (batch, n_inputs) or (n_inputs,) when batch is 1
            The host's input events of this timestep (``None``: no input).

        Returns
        -------
        ndarray of bool, shape (batch, n_neurons)
            The spikes of every neuron in this timestep.
        """
        n_in = self.net.n_inputs
        if inputs is not None:
            inputs = np.asarray(inputs)
            if inputs.ndim == 1 and self.batch == 1:
                inputs = inputs[None, :]
            if inputs.shape != (self.batch, n_in):
                raise ConfigError(
                    f"inputs have shape {inputs.shape}, expected (batch, n_inputs) = "
                    f"({self.batch}, {n_in})"
                )
            for dst, w in self._from_input:
                self._add(dst, inputs, w)
        spikes = np.zeros((self.batch, self.net.n_neurons), dtype=bool)
        for k, sl in enumerate(self._slices):
            for src, dst, w in self._forward:
                if dst == k:
                    self._add(dst, spikes[:, self._slices[src]], w)
            v, i, s = neuron_update(
                self.v[:, sl], self.i[:, sl], self.acc[:, sl], self._params[k],
                self.arithmetic, self.fmt,
            )
            self.v[:, sl], self.i[:, sl], spikes[:, sl] = v, i, s
            self.acc[:, sl] = 0
        # Recurrent spikes arrive in the next step.  Their targets (same or earlier populations)
        # have already updated in this step, so their accumulators hold the next step's input.
        for src, dst, w in self._recurrent:
            self._add(dst, spikes[:, self._slices[src]], w)
        self.t += 1
        return spikes

    def run(self, raster, record_v=True):
        """Run ``T`` timesteps.

        Parameters
        ----------
        raster : array of 0/1, shape (T, batch, n_inputs) (or (T, n_inputs) when batch is 1)
        record_v : bool
            Also return the membrane after every step.

        Returns
        -------
        dict
            ``spikes``: bool array (T, batch, n_neurons); ``v``: membrane (T, batch, n_neurons)
            when ``record_v``.
        """
        raster = np.asarray(raster)
        if raster.ndim == 2 and self.batch == 1:
            raster = raster[:, None, :]
        if raster.ndim != 3:
            raise ConfigError(
                f"raster has shape {raster.shape}, expected (T, batch, n_inputs)"
            )
        n_steps = raster.shape[0]
        spikes = np.zeros((n_steps, self.batch, self.net.n_neurons), dtype=bool)
        vs = np.zeros((n_steps,) + self.v.shape, dtype=self._dtype) if record_v else None
        for t in range(n_steps):
            spikes[t] = self.step(raster[t])
            if record_v:
                vs[t] = self.v
        out = {"spikes": spikes}
        if record_v:
            out["v"] = vs
        return out

    def run_events(self, events):
        """Run one timestep per entry of ``events`` (batch 1), AER in and AER out.

        Parameters
        ----------
        events : iterable of iterables of int
            Input channel addresses for each timestep (a channel may appear more than once: each
            occurrence is one event).

        Returns
        -------
        list of list of int
            For each timestep, the global indices of the output populations' neurons that
            spiked, ascending.
        """
        if self.batch != 1:
            raise ConfigError(f"run_events needs batch=1, this chip has batch={self.batch}")
        n_in = self.net.n_inputs
        out = []
        for t, evs in enumerate(events):
            counts = np.zeros((1, n_in), dtype=np.int64)
            evs = np.asarray(list(evs), dtype=np.int64)
            if evs.size and (evs.min() < 0 or evs.max() >= n_in):
                bad = evs[(evs < 0) | (evs >= n_in)][0]
                raise ConfigError(
                    f"timestep {t}: input event address {bad} is out of range: allowed "
                    f"0..{n_in - 1}"
                )
            np.add.at(counts[0], evs, 1)
            spikes = self.step(counts)
            idx = self.output_indices
            out.append([int(n) for n in idx[spikes[0, idx]]])
        return out
