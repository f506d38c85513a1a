"""Integer arithmetic of the golden model at its saturation and rounding edges.

Every test compares ``spikeforge.sim.golden`` against either a value worked out by hand from
``docs/neuron.md`` or the plain per-neuron reference in ``tests/reference_loop.py``.
"""

from fractions import Fraction
from math import trunc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_loop import ref_decay, ref_neuron_step

from spikeforge.sim.golden import decay, neuron_update, population_arrays, saturate
from spikeforge.sim.network import NeuronParams
from spikeforge.spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

FORMATS = [
    DEFAULT_FORMAT,
    # tiny: saturation and rounding happen all the time
    Format(weight_bits=4, state_bits=8, acc_bits=12, threshold_bits=8, bias_bits=8,
           decay_frac_bits=4),
    # the widest the spec allows: products near the top of the int64 intermediate
    Format(weight_bits=16, state_bits=32, acc_bits=40, threshold_bits=32, bias_bits=40,
           decay_frac_bits=16),
    Format(state_bits=24, acc_bits=28, threshold_bits=24, bias_bits=24, decay_frac_bits=12),
]

MODELS = list(NeuronModel)
LEAKS = list(LeakMode)
RESETS = list(ResetMode)


def edgy(lo, hi):
    """Integers in ``lo..hi``, with the edges and the neighbourhood of 0 drawn often."""
    specials = sorted({x for x in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= x <= hi})
    return st.one_of(st.integers(lo, hi), st.sampled_from(specials))


def arr(values):
    return np.asarray(values, dtype=np.int64)


# --- decay, multiplicative ----------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_mult_decay_rounds_toward_zero(data):
    fmt = data.draw(st.sampled_from(FORMATS))
    lo, hi = fmt.state_range
    xs = data.draw(st.lists(edgy(lo, hi), min_size=1, max_size=16))
    qs = data.draw(st.lists(edgy(0, fmt.decay_one), min_size=len(xs), max_size=len(xs)))
    x, q = arr(xs), arr(qs)
    got = decay(x, q, LeakMode.MULT, "int", fmt)
    for xv, qv, g in zip(xs, qs, got.tolist(), strict=True):
        exact = Fraction(xv * qv, fmt.decay_one)
        assert g == trunc(exact)  # toward zero, not floor
        assert abs(g) <= abs(xv)
        assert g == 0 or (g > 0) == (xv > 0)  # never changes sign
        assert lo <= g <= hi
    # an odd function: decay(-x) == -decay(x) (except -2**(n-1), which has no positive twin)
    ok = x > lo
    assert np.array_equal(decay(-x[ok], q[ok], LeakMode.MULT, "int", fmt), -got[ok])


@pytest.mark.parametrize("fmt", FORMATS)
def test_mult_decay_exact_values(fmt):
    lo, hi = fmt.state_range
    one = fmt.decay_one
    x = arr([lo, lo + 1, -3, -1, 0, 1, 3, hi - 1, hi])
    # q = 1.0 is the identity, q = 0 is zero
    assert np.array_equal(decay(x, one, LeakMode.MULT, "int", fmt), x)
    assert np.array_equal(decay(x, 0, LeakMode.MULT, "int", fmt), np.zeros_like(x))
    # q = 0.5: -3 * 0.5 = -1.5 -> -1 (toward zero; floor would give -2)
    half = decay(x, one // 2, LeakMode.MULT, "int", fmt)
    assert half.tolist() == [lo // 2, -((-(lo + 1)) // 2), -1, 0, 0, 0, 1, (hi - 1) // 2, hi // 2]
    # the largest q below 1.0 takes exactly 1 off any |x| < 2**F, and -1 -> 0, 1 -> 0
    d = decay(x, one - 1, LeakMode.MULT, "int", fmt)
    assert d[x == 1][0] == 0 and d[x == -1][0] == 0 and d[x == 3][0] == 2 and d[x == -3][0] == -2


@pytest.mark.parametrize("fmt", FORMATS[:2])
def test_mult_decay_reaches_zero_at_rest(fmt):
    """With q < 1.0 every resting value reaches exactly 0 (|x| shrinks by >= 1 per step)."""
    lo, hi = fmt.state_range
    x = np.arange(lo, hi + 1, max(1, (hi - lo) // 4000), dtype=np.int64)
    x = np.concatenate([x, arr([lo, hi, -1, 1])])
    for q in (0, 1, fmt.decay_one // 2, fmt.decay_one - 1):
        v = x.copy()
        for _ in range(hi + 2):
            nv = decay(v, q, LeakMode.MULT, "int", fmt)
            assert np.all((np.abs(nv) < np.abs(v)) | (v == 0))
            v = nv
            if not v.any():
                break
        assert not v.any(), f"q={q}: a resting value did not decay to 0"


# --- decay, shift -------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data())
def test_shift_decay(data):
    fmt = data.draw(st.sampled_from(FORMATS))
    lo, hi = fmt.state_range
    klo, khi = fmt.shift_range
    xs = data.draw(st.lists(edgy(lo, hi), min_size=1, max_size=16))
    ks = data.draw(st.lists(edgy(klo, khi), min_size=len(xs), max_size=len(xs)))
    got = decay(arr(xs), arr(ks), LeakMode.SHIFT, "int", fmt).tolist()
    for xv, k, g in zip(xs, ks, got, strict=True):
        assert g == xv - (xv // 2**k)  # arithmetic (floor) shift, negatives included
        assert lo <= g <= hi
        assert abs(g) <= abs(xv) and (g == 0 or (g > 0) == (xv > 0))


def test_shift_decay_exact_values():
    x = arr([-32768, -5, -1, 0, 1, 5, 7, 32767])
    assert decay(x, 1, LeakMode.SHIFT, "int").tolist() == [-16384, -2, 0, 0, 1, 3, 4, 16384]
    assert decay(x, 2, LeakMode.SHIFT, "int").tolist() == [-24576, -3, 0, 0, 1, 4, 6, 24576]
    assert decay(x, 15, LeakMode.SHIFT, "int").tolist() == [-32767, -4, 0, 0, 1, 5, 7, 32767]
    # the shift leak is floor-based: small positives never leak away, negatives do
    v = arr([3, -3])
    for _ in range(10):
        v = decay(v, 2, LeakMode.SHIFT, "int")
    assert v.tolist() == [3, 0]


def test_leak_none_is_identity():
    x = arr([-32768, -1, 0, 1, 32767])
    assert np.array_equal(decay(x, 123, LeakMode.NONE, "int"), x)


@pytest.mark.parametrize("fmt", FORMATS)
def test_saturate(fmt):
    lo, hi = fmt.state_range
    x = arr([lo - 10**6, lo - 1, lo, 0, hi, hi + 1, hi + 10**6])
    assert saturate(x, fmt).tolist() == [lo, lo, lo, 0, hi, hi, hi]


# --- neuron_update against the reference ---------------------------------------------------------
def _params(fmt, model, leak, reset, reset_delay, beta, alpha, thr, bias):
    p = NeuronParams(model=model, leak=leak, reset=reset, reset_delay=reset_delay,
                     beta=beta, alpha=alpha, threshold=thr, bias=bias)
    return population_arrays(p, len(thr), "pop", "int", fmt)


def _run_both(fmt, pa, v0, i0, accs):
    """Run neuron_update and the reference on (T, n) accumulator values; compare every step."""
    n = len(v0)
    v, i = arr(v0)[None, :], arr(i0)[None, :]
    rv, ri = list(v0), list(i0)
    for t, acc in enumerate(accs):
        v, i, s = neuron_update(v, i, arr(acc)[None, :], pa, "int", fmt)
        for k in range(n):
            p = {key: (pa[key][k] if isinstance(pa[key], np.ndarray) else pa[key]) for key in pa}
            p = {key: (int(val) if isinstance(val, np.integer) else val) for key, val in p.items()}
            rv[k], ri[k], rs = ref_neuron_step(rv[k], ri[k], acc[k], p, fmt)
            assert (int(v[0, k]), int(i[0, k]), bool(s[0, k])) == (rv[k], ri[k], bool(rs)), (
                f"step {t} neuron {k}"
            )
    return v, i


@pytest.mark.slow  # 200 random cases; the fixed-value tests below stay in the fast loop
@SETTINGS
@given(data=st.data())
def test_neuron_update_matches_reference(data):
    fmt = data.draw(st.sampled_from(FORMATS))
    model = data.draw(st.sampled_from(MODELS))
    leak = data.draw(st.sampled_from(LEAKS))
    reset = data.draw(st.sampled_from(RESETS))
    reset_delay = data.draw(st.booleans())
    n = data.draw(st.integers(1, 6))
    slo, shi = fmt.state_range
    if leak == LeakMode.MULT:
        decays = edgy(*fmt.decay_range)
    elif leak == LeakMode.SHIFT:
        decays = edgy(*fmt.shift_range)
    else:
        decays = st.just(0)
    per = lambda s: st.lists(s, min_size=n, max_size=n)  # noqa: E731
    beta = data.draw(per(decays))
    alpha = data.draw(per(decays))
    thr = data.draw(per(st.one_of(edgy(*fmt.threshold_range), st.integers(1, 64))))
    blo, bhi = fmt.bias_range
    amax = fmt.acc_range[1]
    bias = data.draw(per(edgy(max(blo, -amax), min(bhi, amax))))
    v0 = data.draw(per(st.one_of(edgy(slo, shi), st.sampled_from([-1, 0, 1]))))
    i0 = data.draw(per(edgy(slo, shi))) if model == NeuronModel.CUBA else [0] * n
    steps = data.draw(st.integers(1, 8))
    accs = []
    for _ in range(steps):
        row = []
        for k in range(n):
            room = amax - abs(bias[k])  # the fit check: |acc| + |bias| <= acc max
            row.append(data.draw(st.one_of(edgy(-room, room), st.integers(-300, 300).map(
                lambda a, r=room: max(-r, min(r, a))))))
        accs.append(row)
    pa = _params(fmt, model, leak, reset, reset_delay, beta, alpha, thr, bias)
    _run_both(fmt, pa, v0, i0, accs)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("leak", LEAKS)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("reset_delay", [True, False])
def test_every_mode_long_run_matches_reference(model, leak, reset, reset_delay):
    """Every reset mode x reset_delay x model x leak, 60 steps of inputs that spike often."""
    rng = np.random.default_rng(hash((model.value, leak.value, reset.value, reset_delay)) % 2**32)
    n = 12
    beta = {LeakMode.MULT: rng.integers(0, 4097, n), LeakMode.SHIFT: rng.integers(1, 16, n),
            LeakMode.NONE: np.zeros(n, dtype=np.int64)}[leak]
    alpha = {LeakMode.MULT: rng.integers(0, 4097, n), LeakMode.SHIFT: rng.integers(1, 16, n),
             LeakMode.NONE: np.zeros(n, dtype=np.int64)}[leak]
    thr = rng.integers(1, 3000, n)
    bias = rng.integers(-200, 400, n)
    accs = rng.integers(-2000, 6000, (60, n))
    accs[::7] = 30000  # drive into saturation now and then
    accs[3::11] = -40000
    pa = _params(DEFAULT_FORMAT, model, leak, reset, reset_delay, beta, alpha, thr, bias)
    v0 = rng.integers(-32768, 32768, n)
    i0 = rng.integers(-32768, 32768, n) if model == NeuronModel.CUBA else np.zeros(n, np.int64)
    _run_both(DEFAULT_FORMAT, pa, v0.tolist(), i0.tolist(), accs.tolist())


# --- hand-computed cases from docs/neuron.md ---------------------------------------------------
def one_neuron(v, acc, *, i=0, model="lif", leak="none", reset="subtract", reset_delay=True,
               beta=0, alpha=0, thr=10, bias=0, fmt=DEFAULT_FORMAT):
    pa = _params(fmt, model, leak, reset, reset_delay, [beta], [alpha], [thr], [bias])
    nv, ni, s = neuron_update(arr([[v]]), arr([[i]]), arr([[acc]]), pa, "int", fmt)
    return int(nv[0, 0]), int(ni[0, 0]), bool(s[0, 0])


def test_threshold_is_strict():
    assert one_neuron(0, 10, thr=10) == (10, 0, False)  # v == θ: no spike
    assert one_neuron(0, 11, thr=10) == (11, 0, True)
    # v == θ owes no reset in the next step either
    assert one_neuron(10, 0, thr=10) == (10, 0, False)
    assert one_neuron(11, 0, thr=10) == (1, 0, False)  # subtract the owed reset
    # θ = 1, the smallest threshold
    assert one_neuron(0, 1, thr=1) == (1, 0, False)
    assert one_neuron(0, 2, thr=1) == (2, 0, True)


def test_saturation_of_membrane():
    hi = 32767
    assert one_neuron(hi, 1, thr=hi) == (hi, 0, False)  # saturates at θ = max: never spikes
    assert one_neuron(30000, 5000, thr=100, reset="none") == (hi, 0, True)
    assert one_neuron(-30000, -5000, thr=100) == (-32768, 0, False)
    # the immediate reset saturates too: R=1, S=0 gives u - (0 - 1)·u = 2u
    assert one_neuron(20000, -19990, thr=5, reset="zero", reset_delay=False) == (-32768, 0, False)


def test_immediate_reset_undoes_owed_reset():
    # zero + reset_delay=False: R=1 (v > θ), the input keeps u below θ: u - (0 - 1)·u = 2u
    assert one_neuron(20, 4, thr=10, reset="zero", reset_delay=False) == (8, 0, False)
    # and that doubling saturates
    assert one_neuron(30001, 20000, thr=30000, reset="zero", reset_delay=False) == (
        32767, 0, False)
    # subtract + reset_delay=False, R=1 and S=0: u = v + x - θ, then + θ again
    assert one_neuron(25, -20, thr=10, reset_delay=False) == (5, 0, False)
    # R=1 and S=1: nothing more happens in step 6
    assert one_neuron(25, 0, thr=10, reset_delay=False) == (15, 0, True)
    # R=0 and S=1: immediate subtraction of θ
    assert one_neuron(5, 10, thr=10, reset_delay=False) == (5, 0, True)
    assert one_neuron(5, 10, thr=10, reset="zero", reset_delay=False) == (0, 0, True)
    assert one_neuron(5, 10, thr=10, reset="none", reset_delay=False) == (15, 0, True)


def test_reset_modes_lif_and_cuba():
    # LIF zero reset keeps the input, CuBa zero reset zeroes everything
    assert one_neuron(50, 7, thr=10, reset="zero") == (7, 0, False)
    assert one_neuron(50, 7, i=3, thr=10, reset="zero", model="cuba") == (0, 10, False)
    # CuBa: i = decay_α(i) + x first, then u = decay_β(v) + i
    assert one_neuron(4, 7, i=3, thr=100, model="cuba") == (14, 10, False)
    assert one_neuron(4, 7, i=3, thr=100, model="cuba", leak="shift", beta=1, alpha=1) == (
        2 + 2 + 7, 2 + 7, False)
    # mult leak, q = 0.5: v = -3 -> -1, i = -5 -> -2
    assert one_neuron(-3, 1, i=-5, thr=100, model="cuba", leak="mult", beta=2048, alpha=2048) == (
        -1 - 1, -1, False)
    # the synaptic current saturates
    assert one_neuron(0, 30000, i=30000, thr=32767, model="cuba") == (32767, 32767, False)
    assert one_neuron(0, -30000, i=-30000, thr=32767, model="cuba") == (-32768, -32768, False)


def test_bias_drives_an_if_neuron():
    pa = _params(DEFAULT_FORMAT, "lif", "none", "subtract", True, [0], [0], [10], [3])
    v, i = arr([[0]]), arr([[0]])
    spikes = []
    for _ in range(12):
        v, i, s = neuron_update(v, i, arr([[0]]), pa, "int")
        spikes.append(int(s[0, 0]))
    # v: 3 6 9 12* (then -10) 5 8 11* 4 7 10 13* 6
    assert spikes == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    assert int(v[0, 0]) == 6


def test_reference_decay_agrees_with_hand_values():
    """The reference itself is checked on hand values (so the two cannot share a mistake)."""
    assert ref_decay(-3, 2048, LeakMode.MULT) == -1
    assert ref_decay(3, 2048, LeakMode.MULT) == 1
    assert ref_decay(-5, 2, LeakMode.SHIFT) == -3
    assert ref_decay(5, 2, LeakMode.SHIFT) == 4
