"""The golden model's fast paths: dataset evaluation in chunks, and exact narrow dtypes.

``GoldenChip.evaluate`` must give exactly what one ``run`` over all samples gives; the integer
update computes in int32 (large populations) or float64 (small ones) instead of int64, which
must be exact at the extremes of every format (the hypothesis edge tests of
``test_golden_int.py`` cover ``neuron_update``; here the chip's own paths are compared).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_loop import ReferenceChip
from test_golden_int import FORMATS, _params, edgy

from spikeforge.errors import ConfigError
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.sim import golden
from spikeforge.sim.golden import GoldenChip, _int_consts, _update_int, _Work
from spikeforge.spec import DEFAULT_FORMAT, LeakMode, NeuronModel, ResetMode


def _net(arithmetic="int", n_in=12, hidden=40, out=6, recurrent=True, seed=0):
    rng = np.random.default_rng(seed)
    if arithmetic == "int":
        w = lambda a, b: rng.integers(-60, 61, (a, b))  # noqa: E731
        hp = NeuronParams(beta=3900, threshold=90, bias=rng.integers(-5, 6, hidden))
        op = NeuronParams(model="cuba", beta=3500, alpha=2000, threshold=70, reset="zero",
                          reset_delay=False)
    else:
        w = lambda a, b: rng.normal(0, 0.5, (a, b)).astype(np.float32)  # noqa: E731
        hp = NeuronParams(beta=0.95, threshold=1.0, bias=rng.normal(0, 0.05, hidden))
        op = NeuronParams(model="cuba", beta=0.9, alpha=0.5, threshold=0.8, reset="zero",
                          reset_delay=False)
    projs = [Projection(INPUT, "h", w(n_in, hidden)), Projection("h", "o", w(hidden, out))]
    if recurrent:
        projs.append(Projection("o", "h", w(out, hidden)))
    return Network(n_in, [Population("h", hidden, hp), Population("o", out, op)], projs)


def _raster(t, n, n_in=12, seed=1, p=0.3):
    return np.random.default_rng(seed).random((t, n, n_in)) < p


# --- evaluate: chunked == one shot ---------------------------------------------------------------
@pytest.mark.parametrize("arithmetic", ["int", "float"])
def test_evaluate_equals_one_run(arithmetic):
    net = _net(arithmetic)
    raster = _raster(20, 70)
    whole = GoldenChip(net, arithmetic, batch=70).run(raster, record_v=False)["spikes"]
    chip = GoldenChip(net, arithmetic, batch=32)  # 32 + 32 + 6 samples
    assert np.array_equal(chip.evaluate(raster, "spikes"), whole)
    counts = chip.evaluate(raster)
    assert counts.shape == (70, net.n_neurons) and counts.dtype == np.int32
    assert np.array_equal(counts, whole.sum(axis=0))
    assert chip.batch == 32 and chip.t == 0  # back to its batch, reset


def test_evaluate_iterable_of_uneven_chunks_with_progress(capsys):
    net = _net()
    raster = _raster(15, 50)
    whole = GoldenChip(net, batch=50).run(raster, record_v=False)["spikes"]
    chip = GoldenChip(net, batch=16)
    edges = [0, 5, 5, 40, 50]  # an empty chunk, a chunk larger than the batch
    chunks = (raster[:, a:b] for a, b in zip(edges, edges[1:], strict=False))
    got = chip.evaluate(chunks, "spikes", total=50, progress=True)
    assert np.array_equal(got, whole)
    got = chip.evaluate([raster[:, :20], raster[:, 20:]], progress=False)
    assert np.array_equal(got, whole.sum(axis=0))
    capsys.readouterr()


def test_evaluate_counts_allow_different_lengths():
    net = _net()
    a, b = _raster(10, 3), _raster(30, 4, seed=2)
    chip = GoldenChip(net, batch=8)
    got = chip.evaluate([a, b])
    ref_a = GoldenChip(net, batch=3).run(a, record_v=False)["spikes"].sum(axis=0)
    ref_b = GoldenChip(net, batch=4).run(b, record_v=False)["spikes"].sum(axis=0)
    assert np.array_equal(got, np.concatenate([ref_a, ref_b]))


def _refused(fn, *words):
    with pytest.raises(ConfigError) as e:
        fn()
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_evaluate_refuses_bad_input():
    chip = GoldenChip(_net(), batch=4)
    _refused(lambda: chip.evaluate(np.zeros((5, 3, 11), bool)), "(5, 3, 11)", "12")
    _refused(lambda: chip.evaluate(np.zeros((5, 0, 12), bool)), "no samples")
    _refused(lambda: chip.evaluate(np.zeros((0, 3, 12), bool)), "no timesteps")
    _refused(lambda: chip.evaluate(np.full((5, 3, 12), 2)), "[0, 0, 0]=2", "0 or 1")
    _refused(lambda: chip.evaluate(_raster(5, 3), "membranes"), "'membranes'", "'counts'")
    _refused(lambda: chip.evaluate(_raster(5, 3), total=-1), "total=-1")
    _refused(lambda: chip.evaluate(5), "iterable", "int")
    _refused(lambda: chip.evaluate(iter([])), "no samples")
    _refused(lambda: chip.evaluate([_raster(5, 2), _raster(6, 2)], "spikes"),
             "chunk 1", "6 timesteps", "5")
    _refused(lambda: chip.evaluate([_raster(5, 2), np.zeros((5, 2))]), "chunk 1", "(5, 2)")
    assert chip.batch == 4 and chip.t == 0  # an error leaves the chip usable
    assert chip.evaluate(_raster(5, 1)[:, 0]).shape == (1, chip.net.n_neurons)  # (T, n_in)


def test_run_and_batch_refuse_bad_input():
    chip = GoldenChip(_net(), batch=4)
    _refused(lambda: chip.run(np.zeros((5, 3, 12), bool)), "(5, 3, 12)", "(T, 4, 12)")
    _refused(lambda: chip.run(np.full((2, 4, 12), 0.5)), "raster[0, 0, 0]=0.5", "0 or 1")
    for bad in (0, -3, True, 2.0):
        _refused(lambda b=bad: GoldenChip(_net(), batch=b), "batch", ">= 1")


# --- the chip's narrow dtypes are exact ----------------------------------------------------------
def _extreme_net(size):
    """Weights and biases at the fit check's limit, thresholds at both ends of their range."""
    fmt = DEFAULT_FORMAT
    wmax = fmt.weight_range[1]
    n_in = (fmt.acc_range[1] - 2000) // wmax  # sum(|w|) + |b| just below 2**19
    thr = np.array([1, 2, 100, fmt.threshold_range[1], 5000, 32766])[:size % 6 or 6]
    thr = np.resize(thr, size)
    bias = np.resize([2000, -2000, 0, 1999, -1], size)
    signs = np.where(np.arange(size) % 2, -1, 1)
    w = np.tile(signs * wmax, (n_in, 1))
    p = NeuronParams(model="cuba", beta=4095, alpha=4096, threshold=thr, bias=bias,
                     reset="subtract", reset_delay=False)
    return Network(n_in, [Population("a", size, p)], [Projection(INPUT, "a", w)])


@pytest.mark.parametrize("batch, dt", [(1, np.float64), (300, np.int32)])
def test_chip_dtypes_exact_at_the_accumulator_limit(batch, dt):
    net = _extreme_net(16)
    chip = GoldenChip(net, batch=batch)
    assert chip._dts == [dt]  # the small and the large update
    rng = np.random.default_rng(3)
    raster = rng.random((12, batch, net.n_inputs)) < 0.5
    raster[:4] = True  # every input: |acc| reaches sum(|w|), the membranes saturate
    raster[6:8] = False
    out = chip.run(raster)
    assert out["v"].dtype == np.int64 and chip.v.dtype == np.int64
    lo, hi = DEFAULT_FORMAT.state_range
    assert out["v"].min() == lo and out["v"].max() == hi
    for b in range(0, batch, max(1, batch // 3)):
        ref = ReferenceChip(net)
        for t in range(raster.shape[0]):
            spikes, v = ref.step(raster[t, b].astype(int))
            assert out["spikes"][t, b].astype(int).tolist() == spikes["a"], (t, b)
            assert out["v"][t, b].tolist() == v["a"], (t, b)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=st.data())
def test_float64_and_int32_updates_equal_int64(data):
    """_update_int in float64 (and int32 where _narrow_dtype allows it) == int64, edge values."""
    fmt = data.draw(st.sampled_from(FORMATS))
    model = data.draw(st.sampled_from(list(NeuronModel)))
    leak = data.draw(st.sampled_from(list(LeakMode)))
    reset = data.draw(st.sampled_from(list(ResetMode)))
    reset_delay = data.draw(st.booleans())
    n = data.draw(st.integers(1, 6))
    slo, shi = fmt.state_range
    decays = {LeakMode.MULT: edgy(*fmt.decay_range), LeakMode.SHIFT: edgy(*fmt.shift_range),
              LeakMode.NONE: st.just(0)}[leak]
    per = lambda s: st.lists(s, min_size=n, max_size=n)  # noqa: E731
    amax = fmt.acc_range[1]
    blo, bhi = fmt.bias_range
    bias = data.draw(per(edgy(max(blo, -amax), min(bhi, amax))))
    pa = _params(fmt, model, leak, reset, reset_delay, data.draw(per(decays)),
                 data.draw(per(decays)), data.draw(per(edgy(*fmt.threshold_range))), bias)
    v = np.array([data.draw(per(edgy(slo, shi)))], dtype=np.int64)
    i = np.array([data.draw(per(edgy(slo, shi)))], dtype=np.int64)
    room = [amax - abs(b) for b in bias]
    acc = np.array([[data.draw(edgy(-r, r)) for r in room]], dtype=np.int64)
    results = {}
    dts = [np.int64, np.float64] + ([np.int32] if golden._narrow_dtype(fmt) is np.int32 else [])
    for dt in dts:
        vo, io, so = np.empty(v.shape, dt), np.empty(v.shape, dt), np.empty(v.shape, bool)
        # acc as the chip passes it: the float product (float64 holds every format's sums)
        _update_int(v.astype(dt), i.astype(dt), acc.astype(np.float64), pa, fmt, vo, io, so,
                    _Work(v.shape), dt, _int_consts(pa, dt, fmt))
        cur = io.astype(np.int64).tolist() if model == NeuronModel.CUBA else None  # LIF: unused
        results[dt] = (vo.astype(np.int64).tolist(), cur, so.tolist())
    for dt in dts[1:]:
        assert results[dt] == results[np.int64], dt
