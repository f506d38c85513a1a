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

import contextlib
import time

import numpy as np

from ..errors import ConfigError
from ..network import INPUT, Conv, Network, NeuronParams
from ..progress import progress_bar
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode

__all__ = [
    "GoldenChip",
    "neuron_update",
    "decay",
    "saturate",
    "validate_network",
    "network_problems",
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


class _Work:
    """Scratch arrays of one shape, made on first use and reused (no allocation per step).

    Allocating and freeing the temporaries of a (batch, n) update costs page faults on every
    step (glibc returns large blocks to the system); the chip keeps one ``_Work`` per population.
    """

    def __init__(self, shape):
        self.shape = shape
        self._bufs = {}

    def __call__(self, name, dtype):
        key = (name, dtype)  # dtype as passed (a type or np.dtype): no conversion per call
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = np.empty(self.shape, dtype=dtype)
        return buf


def _narrow_dtype(fmt: Format):
    """The integer dtype of the integer state and update: int32 when every value provably fits.

    With ``S = state_bits``, ``A = acc_bits`` and ``F = decay_frac_bits``, every value of the
    update is bounded as follows (the fit check of :func:`network_problems` guarantees
    ``|acc| + |b| <= 2**(A-1) - 1``; ``v``, ``i`` and ``θ`` are in the state range):

    * the decay product ``|v·q| <= 2**(S-1) · 2**F``, and the rounding term adds ``< 2**F``:
      below ``2**31`` when ``S + F <= 31``;
    * ``x = acc + b``: ``|x| < 2**(A-1)``;
    * CuBa: ``|decay(i) + x| < 2**(S-1) + 2**(A-1)``;
    * step 4: ``|decay(v) + I - R·θ| < 3 · 2**(max(S, A) - 1)``, and after ``sat`` step 6 adds
      at most ``|θ|`` or ``|u|`` (``< 2**(S-1)``) once more;

    so ``max(S, A) <= 29`` keeps everything below ``2**30``.  The default format (16-bit state,
    12 fraction bits, 20-bit accumulator) qualifies; wider formats compute in int64, where the
    spec's own limit (``S + F + 1 <= 62``) bounds the product.

    Small arrays (see :data:`_SMALL`) compute in float64 instead, which is exact for *every*
    format: all values are integers below ``2**42`` (``A <= 40``), the product
    ``v · (q · 2**-F)`` has at most ``S + F + 1 <= 49`` significant bits and ``trunc`` /
    ``floor`` of it are exact, so the result equals the integer formula.  float64 needs fewer
    operations (``trunc(v · q/2**F)`` is two, the integer rounding five), and at small sizes the
    cost is the number of NumPy calls, not the bytes.
    """
    if fmt.state_bits + fmt.decay_frac_bits <= 31 and max(fmt.state_bits, fmt.acc_bits) <= 29:
        return np.int32
    return np.int64


# Below this many elements (batch × neurons), a population's integer update runs in float64
# (exact, fewer calls; see _narrow_dtype); above it, in int32 (half the bytes of float64).
_SMALL = 4096


def _clip(u, lo, hi):
    """``sat`` in place (``lo``, ``hi`` 0-d arrays or scalars of ``u``'s dtype).

    ``np.clip`` has a fixed overhead of several microseconds, ``minimum`` + ``maximum`` are two
    passes: the cheaper one is used for the array's size.
    """
    if u.size <= 8192:
        np.minimum(u, hi, out=u)
        np.maximum(u, lo, out=u)
    else:
        np.clip(u, lo, hi, out=u)
    return u


def _decay_int_into(x, code, leak, fmt, work, name, dt):
    """Integer ``decay(x)`` (``x`` in the state range, dtype ``dt``) into a scratch array.

    Same values as :func:`decay`; ``code`` comes from :func:`_int_consts` for ``dt``.  Integer
    ``dt``: rounding toward zero is ``(p + (2**F - 1)) >> F`` for a negative product ``p`` (the
    floor of ``(p + 2**F - 1) / 2**F`` is the ceiling of ``p / 2**F``); the correction is
    ``(p >> (bits - 1)) & (2**F - 1)`` (the sign smeared over the word, masked).  float64:
    ``trunc(x · q/2**F)`` and ``x - floor(x · 2**-k)``, exact (see :func:`_narrow_dtype`).
    ``leak = none`` returns ``x`` itself.
    """
    if leak == LeakMode.NONE:
        return x
    p = work(name, dt)
    if dt is np.float64:
        np.multiply(x, code, p)
        if leak == LeakMode.MULT:
            return np.trunc(p, p)
        np.floor(p, p)
        return np.subtract(x, p, p)
    t = work("sign", dt)
    if leak == LeakMode.MULT:
        np.multiply(x, code, p)
        np.right_shift(p, np.dtype(dt).itemsize * 8 - 1, t)
        np.bitwise_and(t, (1 << fmt.decay_frac_bits) - 1, t)
        np.add(p, t, p)
        return np.right_shift(p, fmt.decay_frac_bits, p)
    np.right_shift(x, code, t)
    return np.subtract(x, t, p)


def _int_consts(params, dt, fmt: Format = DEFAULT_FORMAT, shape=None):
    """The per-neuron integer parameters for computing in ``dt``, ``sat``'s bounds and the
    population's modes.

    float64: the decay codes become the factors ``q · 2**-F`` and ``2**-k`` (exact).
    ``shape``: the per-neuron arrays are made that (batch, n) shape, contiguous; at small sizes a
    ufunc with a broadcast operand costs about twice one with equal shapes.  ``sat``'s bounds
    are 0-d arrays (a NumPy scalar operand is converted on every call).
    """
    c = {k: np.asarray(params[k]).astype(dt) for k in ("threshold", "bias", "beta", "alpha")}
    if dt is np.float64:
        for k in ("beta", "alpha"):
            code = np.asarray(params[k]).astype(np.int64)
            if params["leak"] == LeakMode.SHIFT:
                c[k] = np.ldexp(1.0, -code)
            else:
                c[k] = np.ldexp(code.astype(np.float64), -fmt.decay_frac_bits)
    c["has_bias"] = bool(np.any(c["bias"]))
    if shape is not None:
        for k in ("threshold", "bias", "beta", "alpha"):
            c[k] = np.ascontiguousarray(np.broadcast_to(c[k], shape))
    lo, hi = fmt.state_range
    c["lo"], c["hi"], c["one"] = np.array(lo, dt), np.array(hi, dt), np.array(1, dt)
    c["leak"], c["reset"] = params["leak"], params["reset"]
    c["cuba"] = params["model"] == NeuronModel.CUBA
    c["reset_delay"] = bool(params["reset_delay"])
    return c


def _update_int(v, i, acc, params, fmt, v_out, i_out, s_out, work, dt=np.int64, consts=None,
                biased=False):
    """Integer steps 1-7 of docs/neuron.md, computed in ``dt`` (see :func:`_narrow_dtype`).

    ``v`` and ``i`` have dtype ``dt`` (int32, int64 or float64 holding integers); ``acc`` holds
    exact integers of any numeric dtype (the chip's float32 matrix products are converted here,
    in the same pass as the first use), or is ``None`` for no input; ``biased``: ``acc``
    already includes the bias.  ``v_out``/``i_out`` (dtype ``dt``) may be ``v``/``i``
    themselves: the chip updates its state in place.  ``s_out`` is a bool array (may be a
    strided view).
    """
    c = consts if consts is not None else _int_consts(params, dt, fmt)
    lo, hi = c["lo"], c["hi"]
    thr, leak, reset, cuba = c["threshold"], c["leak"], c["reset"], c["cuba"]
    # 1. R, owed by the previous step (0/1 in dt: it multiplies below; a masked ``where=``
    # operation is many times slower on a mask of spikes)
    r = np.greater(v, thr, work("r", dt)) if reset != ResetMode.NONE else None
    # 2. x = acc + b (float64: a float32 acc is used as it is, converted inside the next add)
    if acc is None:
        x = c["bias"]
    elif dt is np.float64 and (biased or not c["has_bias"]):
        x = acc
    else:
        x = work("x", dt)
        np.copyto(x, acc, casting="unsafe")  # exact: acc holds integers that fit dt
        if c["has_bias"] and not biased:
            np.add(x, c["bias"], x)
    if cuba:  # 3. i = sat(decay_α(i) + x)
        np.add(_decay_int_into(i, c["alpha"], leak, fmt, work, "p", dt), x, i_out)
        cur = _clip(i_out, lo, hi)
    else:
        cur = x
    # 4. state function (R is 0/1: multiplying by R or by 1 - R selects exactly)
    u = v_out
    d = _decay_int_into(v, c["beta"], leak, fmt, work, "p", dt)
    t = work("t", dt)
    if reset == ResetMode.ZERO and not cuba:  # LIF: (R ? 0 : decay(v)) + I
        np.subtract(c["one"], r, t)
        np.multiply(d, t, u)
        np.add(u, cur, u, casting="unsafe")
    else:
        np.add(d, cur, u, casting="unsafe")
        if reset == ResetMode.SUBTRACT:
            np.multiply(r, thr, t)
            np.subtract(u, t, u)
        elif reset == ResetMode.ZERO:  # CuBa: R ? 0 : decay(v) + I
            np.subtract(c["one"], r, t)
            np.multiply(u, t, u)
    _clip(u, lo, hi)
    np.greater(u, thr, s_out)  # 5. strict threshold
    if not c["reset_delay"] and reset != ResetMode.NONE:  # 6. u - (S - R)·θ or (S - R)·u
        np.subtract(s_out, r, t)
        if reset == ResetMode.SUBTRACT:
            np.multiply(t, thr, t)
        else:
            np.multiply(t, u, t)
        np.subtract(u, t, u)
        _clip(u, lo, hi)
    return v_out, (i_out if cuba else i), s_out  # 7. (acc = 0: the chip's job)


def _decay_float_into(x, code, leak, work, name):
    """Float ``decay(x)`` (``beta * x``; ``x - x * 2**-k``; ``x``) into a scratch array."""
    if leak == LeakMode.NONE:
        return x
    out = work(name, x.dtype)
    if leak == LeakMode.MULT:
        return np.multiply(code, x, out=out)
    factor = np.exp2(-np.asarray(code, dtype=x.dtype), dtype=x.dtype)
    np.multiply(x, factor, out=out)
    return np.subtract(x, out, out=out)


def _update_float(v, i, acc, params, v_out, i_out, s_out, work):
    """Float steps 1-7, the same float operations in the same order as snnTorch 1.0.0."""
    dt = v.dtype
    thr, leak, reset = params["threshold"], params["leak"], params["reset"]
    cuba = params["model"] == NeuronModel.CUBA
    r = np.greater(v, thr, out=work("r", dt))  # 1. R as 0.0 / 1.0
    x = np.add(acc, params["bias"], out=work("x", dt))  # 2. x = acc + b
    if cuba:  # 3. I = alpha·I + x
        d = _decay_float_into(i, params["alpha"], leak, work, "p")
        np.add(d, x, out=i_out)
        cur = i_out
    else:
        cur = x
    tmp = work("tmp", dt)
    # 4. state function
    if reset == ResetMode.ZERO and not cuba:  # Leaky: beta·((1 - R)·U) + X
        np.subtract(np.ones((), dtype=dt), r, out=tmp)
        tmp *= v
        d = _decay_float_into(tmp, params["beta"], leak, work, "p")
        np.add(d, cur, out=v_out)
    else:
        d = _decay_float_into(v, params["beta"], leak, work, "p")
        np.add(d, cur, out=v_out)
        if reset == ResetMode.SUBTRACT:  # (beta·U + X) - R·θ
            v_out -= np.multiply(r, thr, out=tmp)
        elif reset == ResetMode.ZERO:  # Synaptic: U - U·R
            v_out -= np.multiply(v_out, r, out=tmp)
    u = v_out
    np.greater(u, thr, out=s_out)  # 5.
    if not params["reset_delay"]:  # 6. do_reset = S - R;  U - do_reset·θ  or  U - do_reset·U
        np.subtract(s_out, r, out=tmp, dtype=dt)
        if reset == ResetMode.SUBTRACT:
            tmp *= thr
            u -= tmp
        elif reset == ResetMode.ZERO:
            tmp *= u
            u -= tmp
    return v_out, (i_out if cuba else i), s_out


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
    if arithmetic not in _ARITHMETICS:
        _check_arithmetic(arithmetic)
    v, i, acc = np.asarray(v), np.asarray(i), np.asarray(acc)
    shape = np.broadcast_shapes(v.shape, acc.shape)
    s_out = np.empty(shape, dtype=bool)
    work = _Work(shape)
    if arithmetic == "float":
        v_out = np.empty(shape, dtype=v.dtype)
        i_out = np.empty_like(v_out)
        return _update_float(v, i, acc, params, v_out, i_out, s_out, work)
    dt = _narrow_dtype(fmt)
    # The int32 bounds of _narrow_dtype assume the chip's invariants (state in the state range,
    # |acc| < 2**(acc_bits-1)); arbitrary arrays passed here are checked rather than trusted.
    lo, hi = fmt.state_range
    a_lo, a_hi = fmt.acc_range
    if dt is not np.int64 and any(
        a.size and (a.min() < bl or a.max() > bh)
        for a, bl, bh in ((v, lo, hi), (i, lo, hi), (acc, a_lo, a_hi))
    ):
        dt = np.int64
    vv = np.broadcast_to(v, shape).astype(dt)
    ii = np.broadcast_to(i, shape).astype(dt) if i.size else np.zeros(shape, dtype=dt)
    v_out, i_out = np.empty(shape, dtype=dt), np.empty(shape, dtype=dt)
    _update_int(vv, ii, acc, params, fmt, v_out, i_out, s_out, work, dt)
    cuba = params["model"] == NeuronModel.CUBA
    return v_out.astype(np.int64), (i_out.astype(np.int64) if cuba else i), s_out


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
                flat = arr.ravel()
                bad = value
                for item in flat:  # name the first offending value, not just the first one
                    try:
                        if not np.isfinite(item) or item != np.round(item):
                            bad = item.item() if hasattr(item, "item") else item
                            break
                    except TypeError:
                        bad = item
                        break
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
            f"population {pop!r}: {name}={arr[k].item()!r} (neuron {k}) is out of range: allowed "
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
                f"population {pop!r}: threshold={out['threshold'][k].item()!r} (neuron {k}) is "
                f"out of range: allowed > 0"
            )
    if params.leak == LeakMode.SHIFT:
        for name in decays:
            out[name] = _per_neuron(getattr(params, name), size, name, pop, np.int64)
            if not is_int:
                out[name] = out[name].astype(dt)
    return out


def _weight_problem(w, label, arithmetic, fmt):
    """Why the dense weights ``w`` of a projection are not valid (``None``: they are)."""
    if not np.all(np.isfinite(w.astype(np.float64))):
        return f"{label}: weights contain a non-finite value"
    if arithmetic != "int":
        return None
    lo, hi = fmt.weight_range
    if not np.issubdtype(w.dtype, np.integer) and np.any(w != np.round(w)):
        r, c = np.argwhere(w != np.round(w))[0]
        return (
            f"{label}: weights must be integers: weight[{r}, {c}]={w[r, c].item()!r} is not an "
            f"integer; integer arithmetic takes integer weights in {lo}..{hi} (quantize the "
            f"float network first)"
        )
    bad = (w < lo) | (w > hi)
    if np.any(bad):
        r, c = np.argwhere(bad)[0]
        more = int(bad.sum()) - 1
        return (
            f"{label}: weight[{r}, {c}]={w[r, c].item()!r} is out of range: allowed "
            f"{lo}..{hi} ({fmt.weight_bits}-bit signed)"
            + (f"; {more} more weights are out of range" if more else "")
        )
    return None


def network_problems(net: Network, arithmetic="int", fmt: Format = DEFAULT_FORMAT):
    """Every reason why ``net`` is not a valid network for ``arithmetic`` and ``fmt``.

    Checks every population's parameters (:func:`population_arrays`) and every projection's
    weights (shape, finite, and in integer mode integers within ``fmt.weight_range``), then in
    integer mode, if all of that passed, that no neuron's input accumulator can overflow:
    ``sum(|w|) + |bias|`` over a neuron's incoming synapses must fit ``fmt.acc_bits``.

    Returns
    -------
    problems : list of str
        One message per problem (empty: the network is valid), in population then projection
        order.
    arrays : list of dict or None
        The per-population arrays (see :func:`population_arrays`) when there is no problem.
    """
    _check_arithmetic(arithmetic)
    problems, arrays = [], []
    for p in net.populations:
        try:
            arrays.append(population_arrays(p.params, p.size, p.name, arithmetic, fmt))
        except ConfigError as exc:
            problems.append(str(exc))
    fan_in = [np.zeros(p.size, dtype=np.float64) for p in net.populations]
    for proj in net.projections:
        conv = proj.weights if isinstance(proj.weights, Conv) else None
        try:
            if conv is not None:  # checked on its kernel, without unrolling it
                conv.check_sizes(net.source_size(proj.src), net.population(proj.dst).size,
                                 f"Projection {proj.src}->{proj.dst}")
                k = conv.kernel
                w = k.reshape(k.shape[0], -1)
            else:
                w = net.dense_weights(proj)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        label = f"projection {proj.src}->{proj.dst}" + (
            f" ({conv.kind} kernel, [out channel, flat tap])" if conv is not None else "")
        problem = _weight_problem(w, label, arithmetic, fmt)
        if problem:
            problems.append(problem)
            continue
        if conv is not None:
            _, cols, kidx = conv._synapse_index()
            fan_in[net.index(proj.dst)] += np.bincount(
                cols, weights=np.abs(conv.kernel.reshape(-1)[kidx].astype(np.float64)),
                minlength=conv.n_dst)
        else:
            fan_in[net.index(proj.dst)] += np.abs(w.astype(np.float64)).sum(axis=0)
    if problems:
        return problems, None
    if arithmetic == "int":
        acc_max = fmt.acc_range[1]
        for pop, arr, f in zip(net.populations, arrays, fan_in, strict=True):
            worst = f + np.abs(arr["bias"])
            if np.any(worst > acc_max):
                k = int(np.argmax(worst))
                problems.append(
                    f"population {pop.name!r}: neuron {k} can receive sum(|w|) + |bias| = "
                    f"{int(worst[k])} in one timestep, which overflows the {fmt.acc_bits}-bit "
                    f"accumulator (allowed up to {acc_max}); scale the weights down or split "
                    f"the fan-in"
                )
    return problems, (None if problems else arrays)


def validate_network(net: Network, arithmetic="int", fmt: Format = DEFAULT_FORMAT):
    """Check every parameter and weight of ``net`` for ``arithmetic`` (:func:`network_problems`).

    Returns the per-population arrays (a list of dicts, see :func:`population_arrays`); raises
    :class:`~spikeforge.errors.ConfigError` with the first problem otherwise.
    """
    problems, arrays = network_problems(net, arithmetic, fmt)
    if problems:
        raise ConfigError(problems[0])
    return arrays


# --- the whole chip ------------------------------------------------------------------------------
# OpenBLAS runs a matrix product on several threads above m*n*k = 4 * 65536; on a busy machine
# (more runnable threads than cores) those threads make a 60 us product take milliseconds.  The
# chip's products are small: GoldenChip.run limits OpenBLAS to one thread for the run (with
# threadpoolctl), and without that, products are cut into row blocks that each run on one thread.
_GEMM_SINGLE_THREAD = 4 * 65536

# Timesteps of input converted and multiplied at once by GoldenChip.run: about this many
# elements per block (16 MiB of float32), so a long raster never makes one giant product.
_BLOCK_ELEMENTS = 1 << 22

_BLAS = None  # threadpoolctl controller of NumPy's BLAS, False when there is none


def _blas():
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController().select(user_api="blas")
            _BLAS = ctl if ctl.lib_controllers else False
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive
            _BLAS = False
    return _BLAS


@contextlib.contextmanager
def _one_blas_thread():
    """Run the block with NumPy's BLAS on one thread; yields whether it could be limited."""
    ctl = _blas()
    if not ctl:
        yield False
        return
    with ctl.limit(limits=1):
        yield True


def _check_batch(batch):
    if isinstance(batch, (bool, np.bool_)) or not isinstance(batch, (int, np.integer)) \
            or batch < 1:
        raise ConfigError(f"batch={batch!r} is out of range: allowed an integer >= 1")


_CONV_DIRECT = 1 << 20
"""A convolution whose unrolled matrix has at least this many entries is computed directly
(:meth:`spikeforge.network.Conv.apply`), not as a product with the unrolled matrix."""


class _ConvMatrix:
    """A large :class:`Conv` projection standing in for its unrolled ``(n_src, n_dst)`` matrix.

    Integer mode stays exact: every partial sum of 0/1 spikes times integer weights is an
    integer bounded by ``sum(|w|)`` (the fit check), as for the matrix product.  Float mode
    adds the taps in another order than a matrix product would (a few ulps, as torch's own
    convolution does).
    """

    def __init__(self, conv, dtype):
        self.conv = conv.with_kernel(conv.kernel.astype(dtype))
        self.shape = (conv.src_total, conv.n_dst)
        self.size = conv.src_total * conv.n_dst

    def product(self, a):
        return self.conv.apply(a)


def _matmul(a, w, out, one_thread=False):
    """``a @ w`` into ``out``: one product when ``one_thread`` (BLAS on one thread), else in
    row blocks that each stay below OpenBLAS's threading threshold.

    Only for exact (integer-valued) products may ``one_thread`` be true: OpenBLAS may sum a
    float product in a different order when the rows are split differently.
    """
    if isinstance(w, _ConvMatrix):
        out[...] = w.product(a)
        return out
    m, k = a.shape
    n = w.shape[1]
    rows = max(1, _GEMM_SINGLE_THREAD // max(1, k * n))
    if one_thread or m <= rows:
        return np.matmul(a, w, out=out)
    for r in range(0, m, rows):
        np.matmul(a[r:r + rows], w, out=out[r:r + rows])
    return out


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
        Membrane, synaptic current and input accumulator (global neuron order): a copy of the
        state, int64 in integer mode (the chip itself keeps each population's state in the
        narrowest exact dtype, see :func:`_narrow_dtype`).
    t : int
        Number of timesteps run since the last reset.

    Notes
    -----
    Integer sums are done as floating-point matrix products, exactly: with 0/1 spikes every
    partial sum is an integer of magnitude ``<= sum(|w|) < 2**(acc_bits-1)`` (the fit check
    bounds it), so float32 (24-bit significand) is exact when ``acc_bits <= 25`` and float64
    always.  The accumulator is the product's output buffer itself, and in :meth:`run` the
    input projections of many timesteps are one product.  The float mode keeps the products of
    one timestep at a time (the same calls as snnTorch's ``Linear``) and the additions of
    several projections in projection order.

    A projection with a synaptic delay ``d > 0`` (``docs/network.md``, "Synaptic delays")
    delivers from a ring of its source's last spikes (the input's for an input projection), at
    the start of the step ``t + a + d``, before any population updates; a network without
    delays keeps no history and runs exactly as it did before delays existed.
    """

    def __init__(self, net: Network, arithmetic="int", batch=1, fmt=DEFAULT_FORMAT, dtype=None):
        _check_arithmetic(arithmetic)
        _check_batch(batch)
        self.net, self.arithmetic, self.fmt = net, arithmetic, fmt
        self._is_int = arithmetic == "int"
        self._dtype = np.int64 if self._is_int else (dtype or np.float32)
        if self._is_int:
            self._mm_dtype = np.float32 if fmt.acc_bits <= 25 else np.float64
            self._int_dtype = _narrow_dtype(fmt)
            self._state_dtype = self._int_dtype
        else:
            self._mm_dtype = self._state_dtype = self._dtype
        self._params = validate_network(net, arithmetic, fmt)
        if not self._is_int:
            # Convert the user's values straight to the chip's dtype (not via float32, which
            # would round e.g. beta = 0.9 before a float64 run).
            self._params = [
                population_arrays(p.params, p.size, p.name, arithmetic, fmt, dtype=self._dtype)
                for p in net.populations
            ]
        self._slices = [slice(net.base(p.name), net.base(p.name) + p.size) for p in net.populations]
        # projections grouped by when they deliver
        self._from_input, self._recurrent = [], []
        self._forward_to = [[] for _ in net.populations]  # same-step projections per target
        # projections with a synaptic delay d > 0 (docs/network.md, "Synaptic delays"):
        # (source, target, w, lag) with source -1 for the input and lag = a + d >= 1 steps; they
        # deliver from a history of their source's last spikes at the start of a step
        self._delayed = []
        for proj in net.projections:
            conv = proj.weights if isinstance(proj.weights, Conv) else None
            if conv is not None and conv.src_total * conv.n_dst >= _CONV_DIRECT:
                w = _ConvMatrix(conv, self._mm_dtype)  # direct convolution, no matrix
            else:
                w = net.dense_weights(proj).astype(self._mm_dtype)
            dst = net.index(proj.dst)
            if proj.delay:
                src = -1 if proj.src == INPUT else net.index(proj.src)
                lag = proj.delay + (1 if net.is_recurrent(proj) else 0)
                self._delayed.append((src, dst, w, lag))
            elif proj.src == INPUT:
                self._from_input.append((dst, w))
            elif net.is_recurrent(proj):
                self._recurrent.append((net.index(proj.src), dst, w))
            else:
                self._forward_to[dst].append((net.index(proj.src), w))
        # populations whose spikes feed a projection (kept as 0.0/1.0 for the products)
        self._sources = sorted({src for fw in self._forward_to for src, _ in fw}
                               | {src for src, _, _ in self._recurrent})
        # history length per delayed source: its longest lag (a ring of that many steps)
        self._hist_len = {}
        for src, _, _, lag in self._delayed:
            self._hist_len[src] = max(lag, self._hist_len.get(src, 0))
        if self._is_int:
            self._bias_mm = [p["bias"].astype(self._mm_dtype) for p in self._params]
        self.output_indices = net.output_indices()
        self._alloc(int(batch))

    def _alloc(self, batch):
        """(Re)make every per-batch buffer for ``batch`` samples and reset the state."""
        self.batch = batch
        shapes = [(batch, p.size) for p in self.net.populations]
        if self._is_int:  # each population's compute dtype (see _narrow_dtype and _SMALL)
            self._dts = [np.float64 if batch * p.size <= _SMALL else self._int_dtype
                         for p in self.net.populations]
            # small populations get their constants at the state's shape (see _int_consts)
            self._consts = [_int_consts(p, dt, self.fmt, s if dt is np.float64 else None)
                            for p, dt, s in zip(self._params, self._dts, shapes, strict=True)]
        else:
            self._dts = [self._dtype] * len(shapes)
        self._v = [np.zeros(s, dtype=dt) for s, dt in zip(shapes, self._dts, strict=True)]
        self._i = [np.zeros(s, dtype=dt) for s, dt in zip(shapes, self._dts, strict=True)]
        self._acc = [np.zeros(s, dtype=self._mm_dtype) for s in shapes]
        self._live = [False] * len(shapes)  # does _acc[k] hold this step's input?
        self._sf = {k: np.zeros(shapes[k], dtype=self._mm_dtype) for k in self._sources}
        # spike histories of the delayed projections' sources: (steps, batch, n) rings, slot
        # t % steps holding step t's spikes (0/1 in the product dtype); only slots written since
        # the last reset are read (see _step), so a reset forgets every spike in flight
        self._hist = {src: np.zeros((n, batch, self.net.n_inputs if src < 0 else shapes[src][1]),
                                    dtype=self._mm_dtype)
                      for src, n in self._hist_len.items()}
        self._hist_pop = [self._hist.get(k) for k in range(len(shapes))]
        self._hist_in = self._hist.get(-1)
        self._work = [_Work(s) for s in shapes]
        self._scratch_bufs = {}
        self._one_thread = False  # BLAS limited to one thread (inside run)
        self.reset()

    def _scratch(self, key, shape, dtype):
        buf = self._scratch_bufs.get(key)
        if buf is None or buf.shape != shape:
            buf = self._scratch_bufs[key] = np.empty(shape, dtype=dtype)
        return buf

    def reset(self):
        """Set every state (membrane, current, accumulator, pending spikes) to zero.

        Spikes still on their way through a synaptic delay are forgotten as well.
        """
        for a in (*self._v, *self._i):
            a.fill(0)
        self._live = [False] * len(self._live)
        self.t = 0

    def _gather(self, arrays):
        if len(arrays) == 1:
            return arrays[0].astype(self._dtype)
        return np.concatenate(arrays, axis=1).astype(self._dtype, copy=False)

    @property
    def v(self):
        """Membrane of every neuron, shape (batch, n_neurons) (a copy)."""
        return self._gather(self._v)

    @property
    def i(self):
        """Synaptic current of every neuron, shape (batch, n_neurons) (a copy; 0 for LIF)."""
        return self._gather(self._i)

    @property
    def acc(self):
        """Input already delivered for the next timestep (recurrent spikes), (batch, n_neurons).

        Spikes arriving through a synaptic delay are not in it: they are added at the start of
        the step they arrive in.
        """
        return self._gather([a if live else np.zeros_like(a)
                             for a, live in zip(self._acc, self._live, strict=True)])

    # --- one timestep ----------------------------------------------------------------------
    def _deliver(self, k, a, w):
        """Add the product ``a @ w`` to population ``k``'s accumulator."""
        acc = self._acc[k]
        if self._live[k]:
            out = self._scratch(("out", k), acc.shape, acc.dtype)
            acc += _matmul(a, w, out, self._one_thread)
        else:  # the accumulator is the product's output (no zeroing, no copy)
            _matmul(a, w, acc, self._one_thread)
            self._live[k] = True

    def _step(self, spikes, inputs=None, pre=None, raw=None):
        """One timestep, spikes written into ``spikes`` (bool, (batch, n_neurons)).

        ``inputs``: this step's input in the product dtype, or ``pre``: per population, the
        input projections' sum for this step already computed (integer mode), or ``None``.
        ``raw``: this step's input in the product dtype for the history of delayed input
        projections when ``inputs`` is not given (``None``: no input events).
        """
        if self._delayed:
            self._deliver_delayed(inputs if inputs is not None else raw)
        if inputs is not None:
            for dst, w in self._from_input:
                self._deliver(dst, inputs, w)
        for k, sl in enumerate(self._slices):
            acc, biased = None, False
            if pre is not None and pre[k] is not None:
                biased = True  # _run added the bias to the block's products
                if self._live[k] or self._forward_to[k]:
                    if self._live[k]:
                        self._acc[k] += pre[k]
                    else:
                        np.copyto(self._acc[k], pre[k])
                        self._live[k] = True
                else:
                    acc = pre[k]  # used as it is
            for src, w in self._forward_to[k]:
                self._deliver(k, self._sf[src], w)
            if acc is None and self._live[k]:
                acc = self._acc[k]
            v, i, s = self._v[k], self._i[k], spikes[:, sl]
            if self._is_int:  # no input at all: acc None, x = b
                _update_int(v, i, acc, self._params[k], self.fmt, v, i, s, self._work[k],
                            self._dts[k], self._consts[k], biased)
            else:
                if acc is None:  # x = 0 + b, as with an emptied accumulator
                    acc = self._acc[k]
                    acc.fill(0)
                _update_float(v, i, acc, self._params[k], v, i, s, self._work[k])
            self._live[k] = False
            if k in self._sf:
                np.copyto(self._sf[k], s)
            h = self._hist_pop[k]
            if h is not None:
                np.copyto(h[self.t % h.shape[0]], s)
        # Recurrent spikes arrive in the next step.  Their targets (same or earlier populations)
        # have already updated in this step, so their accumulators hold the next step's input.
        for src, dst, w in self._recurrent:
            self._deliver(dst, self._sf[src], w)
        self.t += 1

    def _deliver_delayed(self, inputs):
        """The arrivals of this step through delayed projections (before any update), then
        this step's input into the input history."""
        t = self.t
        for src, dst, w, lag in self._delayed:
            if t >= lag:  # sent in step t - lag >= 0, after the last reset
                h = self._hist[src]
                self._deliver(dst, h[(t - lag) % h.shape[0]], w)
        h = self._hist_in
        if h is not None:
            slot = h[t % h.shape[0]]
            if inputs is None:
                slot.fill(0)
            else:
                np.copyto(slot, inputs, casting="unsafe")

    def _check_values(self, x, what):
        """Integer mode: every input is 0 or 1 (an input channel fires at most once a step)."""
        if not self._is_int or x.dtype == np.bool_:
            return
        if not (np.issubdtype(x.dtype, np.number)):
            raise ConfigError(f"{what} has dtype {x.dtype}, expected 0/1 numbers or bool")
        bad = (x != 0) & (x != 1)
        if np.any(bad):
            idx = tuple(int(j) for j in np.argwhere(bad)[0])
            where = ", ".join(str(j) for j in idx)
            raise ConfigError(
                f"{what}[{where}]={x[idx].item()!r} is not valid: allowed 0 or 1 (an input "
                f"channel fires at most once per timestep)"
            )

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
        a = None
        if inputs is not None:
            inputs = np.asarray(inputs)
            if inputs.ndim == 1 and self.batch == 1:
                inputs = inputs[None, :]
            if inputs.shape != (self.batch, n_in):
                raise ConfigError(
                    f"inputs have shape {inputs.shape}, expected (batch, n_inputs) = "
                    f"({self.batch}, {n_in})"
                )
            self._check_values(inputs, "inputs")
            if self._from_input or self._hist_in is not None:
                a = self._scratch("inputs", inputs.shape, self._mm_dtype)
                np.copyto(a, inputs, casting="unsafe")
        spikes = np.empty((self.batch, self.net.n_neurons), dtype=bool)
        self._step(spikes, inputs=a)
        return spikes

    def _check_raster(self, raster):
        raster = np.asarray(raster)
        if raster.ndim == 2 and self.batch == 1:
            raster = raster[:, None, :]
        n_in = self.net.n_inputs
        if raster.ndim != 3 or raster.shape[1:] != (self.batch, n_in):
            raise ConfigError(
                f"raster has shape {raster.shape}, expected (T, batch, n_inputs) = "
                f"(T, {self.batch}, {n_in})"
            )
        self._check_values(raster, "raster")
        return raster

    def run(self, raster, record_v=True):
        """Run ``T`` timesteps.

        Parameters
        ----------
        raster : array of 0/1, shape (T, batch, n_inputs) (or (T, n_inputs) when batch is 1)
        record_v : bool
            Also return the membrane after every step.

        The run continues from the chip's state, as :meth:`step` does: membranes, and spikes
        still on their way (recurrent, or through a synaptic delay) arrive in the steps of this
        run.  Call :meth:`reset` first for a fresh start (a new chip, :meth:`evaluate` and the
        golden backend always start from it).

        Returns
        -------
        dict
            ``spikes``: bool array (T, batch, n_neurons); ``v``: membrane (T, batch, n_neurons)
            when ``record_v``.
        """
        raster = self._check_raster(raster)
        spikes = np.empty((raster.shape[0], self.batch, self.net.n_neurons), dtype=bool)
        vs = np.empty(spikes.shape, dtype=self._dtype) if record_v else None
        # Integer products are exact in any order: with BLAS on one thread they are done whole.
        # Float products keep their row blocks (a float sum depends on how BLAS splits it).
        # (Not worth its ~30 us for a short run whose products are all small: row blocks.)
        macs = max([0] + [raster.shape[0] * self.batch * w.size for _, w in self._from_input]
                   + [self.batch * w.size for fw in self._forward_to for _, w in fw]
                   + [self.batch * w.size for _, _, w in self._recurrent]
                   + [self.batch * w.size for _, _, w, _ in self._delayed])
        limit = self._is_int and macs > 4 * _GEMM_SINGLE_THREAD
        with _one_blas_thread() if limit else contextlib.nullcontext(False) as one:
            self._one_thread = one
            try:
                self._run(raster, spikes, vs)
            finally:
                self._one_thread = False
        out = {"spikes": spikes}
        if record_v:
            out["v"] = vs
        return out

    def _run(self, raster, spikes, vs):
        n_steps, n_in = raster.shape[0], self.net.n_inputs
        width = max([n_in] + [w.shape[1] for _, w in self._from_input])
        # timesteps per block: the block's inputs and products stay under _BLOCK_ELEMENTS
        block = max(1, _BLOCK_ELEMENTS // max(1, self.batch * width * len(self._from_input)))
        n_pop = len(self._slices)
        for t0 in range(0, n_steps, block):
            part = raster[t0:t0 + block]
            a = part.astype(self._mm_dtype)  # one conversion per block, not per step
            pre = None
            if self._is_int and self._from_input:
                # the input projections of the whole block as one product (exact: integers)
                flat = a.reshape(-1, n_in)
                pre = [None] * n_pop
                for dst, w in self._from_input:
                    out = np.empty((flat.shape[0], w.shape[1]), self._mm_dtype)
                    out = _matmul(flat, w, out, self._one_thread)
                    out = out.reshape(part.shape[0], self.batch, w.shape[1])
                    pre[dst] = out if pre[dst] is None else np.add(pre[dst], out, out=pre[dst])
                for k, p in enumerate(pre):
                    if p is not None:  # exact: |acc| + |b| < 2**(acc_bits-1) (fit check)
                        p += self._bias_mm[k]
                        if self._dts[k] is np.float64 and p.dtype != np.float64:
                            # a float64 update adds it without a per-step conversion
                            pre[k] = p.astype(np.float64)
            for dt in range(part.shape[0]):
                t = t0 + dt
                if pre is not None:
                    self._step(spikes[t], pre=[None if p is None else p[dt] for p in pre],
                               raw=a[dt] if self._hist_in is not None else None)
                else:
                    self._step(spikes[t], inputs=a[dt] if self._from_input else None,
                               raw=a[dt] if self._hist_in is not None else None)
                if vs is not None:
                    for sl, v in zip(self._slices, self._v, strict=True):
                        vs[t, :, sl] = v

    def evaluate(self, data, output="counts", *, total=None, progress=None):
        """Run a whole dataset, ``self.batch`` samples at a time, with bounded memory.

        Every sample starts from the reset state (samples are independent, as in :meth:`run`
        with a fresh chip); the chip is reset afterwards.  Only one chunk of samples is
        simulated at a time, so memory is that of :meth:`run` at ``batch`` samples plus the
        result; an iterable of chunks means the whole input raster never exists at once::

            chip = GoldenChip(net, "int", batch=256)
            chunks = (rate_encode(x[k:k + 256], 25) for k in range(0, len(x), 256))
            counts = chip.evaluate(chunks, total=len(x))   # (len(x), n_neurons)

        Parameters
        ----------
        data : array of 0/1, shape (T, n_samples, n_inputs), or iterable of such arrays
            The input rasters; an iterable may yield chunks of any size (each is split into
            runs of at most ``self.batch`` samples).
        output : {"counts", "spikes"}
            ``"counts"``: each neuron's number of spikes per sample, int32
            ``(n_samples, n_neurons)``; ``"spikes"``: every spike, bool
            ``(T, n_samples, n_neurons)`` (every chunk must have the same ``T``).
        total : int, optional
            Number of samples an iterable will yield, for the progress bar.
        progress : bool, optional
            Show a progress bar (``rich``).  Default: only when the run is long (the first
            chunk predicts more than two seconds in all).

        Returns
        -------
        ndarray
            As chosen by ``output``.
        """
        if output not in ("counts", "spikes"):
            raise ConfigError(f"output={output!r} is not valid: allowed 'counts', 'spikes'")
        if total is not None and (isinstance(total, bool) or not isinstance(
                total, (int, np.integer)) or total < 0):
            raise ConfigError(f"total={total!r} is out of range: allowed an integer >= 0")
        if isinstance(data, np.ndarray) or (
                isinstance(data, (list, tuple)) and data and not isinstance(data[0], np.ndarray)):
            data = np.asarray(data)
            if data.ndim == 2:  # (T, n_inputs): one sample
                data = data[:, None, :]
            self._check_dataset_chunk(data, 0)
            if data.shape[1] == 0:
                raise ConfigError(f"data has shape {data.shape}: no samples to evaluate")
            total = data.shape[1]
            chunks = [data]
        else:
            try:
                chunks = iter(data)
            except TypeError:
                raise ConfigError(
                    f"data must be an array (T, n_samples, n_inputs) or an iterable of such "
                    f"arrays, not {type(data).__name__}"
                ) from None
            if total is None and hasattr(data, "__len__"):
                total = sum(np.shape(c)[1] for c in data) if all(
                    np.ndim(c) == 3 for c in data) else None
        batch, results, steps, done = self.batch, [], None, 0
        bar, start = None, time.perf_counter()
        try:
            for n, chunk in enumerate(chunks):
                chunk = np.asarray(chunk)
                self._check_dataset_chunk(chunk, n)
                if output == "spikes" and steps is not None and chunk.shape[0] != steps:
                    raise ConfigError(
                        f"data chunk {n} has {chunk.shape[0]} timesteps, the first had {steps}: "
                        f"output='spikes' needs the same T throughout (or use 'counts')"
                    )
                steps = chunk.shape[0]
                for k in range(0, chunk.shape[1], batch):
                    part = chunk[:, k:k + batch]
                    if part.shape[1] != self.batch:
                        self._alloc(part.shape[1])
                    else:
                        self.reset()
                    spikes = self.run(part, record_v=False)["spikes"]
                    results.append(spikes.sum(axis=0, dtype=np.int32) if output == "counts"
                                   else spikes)
                    done += part.shape[1]
                    if bar is None and progress is not False:
                        elapsed = time.perf_counter() - start
                        left = (total - done) / done * elapsed if total else 0.0
                        if progress or left > 2.0:
                            bar = progress_bar(True, total, "golden model")
                    if bar is not None:
                        bar.update(bar.task, completed=done)
        finally:
            if bar is not None:
                bar.stop()
            self._alloc(batch)
        if not results:
            raise ConfigError("data yielded no samples to evaluate")
        return np.concatenate(results, axis=0 if output == "counts" else 1)

    def _check_dataset_chunk(self, chunk, n):
        n_in = self.net.n_inputs
        if chunk.ndim != 3 or chunk.shape[2] != n_in:
            raise ConfigError(
                f"data chunk {n} has shape {chunk.shape}, expected (T, n_samples, n_inputs) = "
                f"(T, n_samples, {n_in})"
            )
        if chunk.shape[0] == 0:
            raise ConfigError(f"data chunk {n} has shape {chunk.shape}: no timesteps")
        self._check_values(chunk, f"data chunk {n}: raster")

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
            if len(np.unique(evs)) != evs.size:
                uniq, n = np.unique(evs, return_counts=True)
                raise ConfigError(
                    f"timestep {t}: input channel {uniq[n > 1][0]} appears {n[n > 1][0]} times: "
                    f"a channel fires at most once per timestep"
                )
            counts[0, evs] = 1
            spikes = self.step(counts)
            idx = self.output_indices
            out.append([int(n) for n in idx[spikes[0, idx]]])
        return out
