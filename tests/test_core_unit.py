# Amaranth-simulator unit tests of the neuron core (spec: docs/neuron.md, docs/core.md).
import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator
from core_golden import assert_core_run_matches_golden

from spikeforge.errors import ConfigError, FitError
from spikeforge.host.image import (
    Block,
    build_image,
    check_fit,
    compile_blocks,
    decode_state,
    fit_problems,
)
from spikeforge.hw.core import CoreOptions, NeuronCore
from spikeforge.hw.core_neuron import NeuronDatapath
from spikeforge.hw.core_sim import (
    bus_read,
    bus_read_block,
    bus_write,
    bus_write_block,
    run_network,
    send_event,
)
from spikeforge.hw.image import (
    ConfigWord,
    CoreConfig,
    DescWord,
    PopFlag,
    PopWord,
    Region,
    StatusWord,
    address,
    decode_signed,
    pop_options,
    region_size,
)
from spikeforge.sim.golden import GoldenChip, neuron_update
from spikeforge.sim.network import INPUT, Network, NeuronParams, Population, Projection, Sparse
from spikeforge.spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode

FMT = DEFAULT_FORMAT
S_LO, S_HI = FMT.state_range


# --- neuron datapath ---------------------------------------------------------------------------
def _datapath_vectors(rng, n):
    """Random states plus the saturation and threshold edges."""
    v = rng.integers(S_LO, S_HI + 1, n)
    i = rng.integers(S_LO, S_HI + 1, n)
    acc = rng.integers(-(1 << 18), 1 << 18, n)
    acc[: n // 2] = rng.integers(-300, 300, n // 2)
    thr = rng.integers(1, FMT.threshold_range[1] + 1, n)
    thr[: n // 4] = rng.integers(1, 200, n // 4)
    bias = rng.integers(*FMT.bias_range, n)
    bias[: n // 2] = rng.integers(-50, 50, n // 2)
    edges = [
        (S_HI, S_HI, (1 << 19) - 1, 1, S_HI),
        (S_LO, S_LO, -(1 << 19), 1, S_LO),
        (S_HI, 0, 0, S_HI, 0),
        (S_HI, 0, 1, S_HI - 1, 0),
        (S_LO, S_HI, 1000, FMT.threshold_range[1], -1000),
        (101, 50, 0, 100, 0),
        (100, -50, 1, 100, 0),
        (-1, -1, 0, 1, 0),
        (S_HI, S_HI, S_HI, 1, 0),
        (S_LO, S_LO, 0, 1, S_LO),
    ]
    for k, (a, b, c, d, e) in enumerate(edges):
        v[k], i[k], acc[k], thr[k], bias[k] = a, b, c, d, e
    return v, i, acc, thr, bias


def _run_datapath(params, v, i, acc, thr, bias):
    dp = NeuronDatapath(FMT, tag_bits=8)
    n = len(v)
    out = {}

    async def bench(ctx):
        ctx.set(dp.model, params["model"])
        ctx.set(dp.leak, params["leak"])
        ctx.set(dp.reset, params["reset"])
        ctx.set(dp.reset_delay, params["reset_delay"])
        ctx.set(dp.beta, int(params["beta"][0]))
        ctx.set(dp.alpha, int(params["alpha"][0]))
        for cycle in range(n + NeuronDatapath.LATENCY + 2):
            k = cycle
            if k < n:
                ctx.set(dp.i_valid, 1)
                ctx.set(dp.i_tag, k)
                for port, arr in (
                    (dp.i_v, v), (dp.i_i, i), (dp.i_acc, acc), (dp.i_thr, thr), (dp.i_bias, bias)
                ):
                    ctx.set(port, int(arr[k]))
            else:
                ctx.set(dp.i_valid, 0)
            await ctx.tick()
            if ctx.get(dp.o_valid):
                tag = ctx.get(dp.o_tag)
                out[tag] = (ctx.get(dp.o_v), ctx.get(dp.o_i), ctx.get(dp.o_spike))
                # fixed latency: output LATENCY clock edges after the input
                assert tag == cycle + 1 - NeuronDatapath.LATENCY

    sim = Simulator(dp)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sorted(out) == list(range(n))
    return (
        np.array([out[k][0] for k in range(n)]),
        np.array([out[k][1] for k in range(n)]),
        np.array([out[k][2] for k in range(n)], dtype=bool),
    )


_COMBOS = [
    (model, leak, reset, delay)
    for model, leak, reset, delay in itertools.product(
        NeuronModel, LeakMode, ResetMode, (True, False)
    )
]


@pytest.mark.parametrize("model,leak,reset,delay", _COMBOS, ids=lambda x: str(x).split(".")[-1])
def test_datapath_matches_neuron_update(model, leak, reset, delay):
    rng = np.random.default_rng(hash((model.value, leak.value, reset.value, delay)) % 2**32)
    n = 48
    v, i, acc, thr, bias = _datapath_vectors(rng, n)
    if leak == LeakMode.MULT:
        beta, alpha = int(rng.integers(0, FMT.decay_one + 1)), int(rng.integers(0, 4097))
    elif leak == LeakMode.SHIFT:
        beta, alpha = int(rng.integers(1, 16)), int(rng.integers(1, 16))
    else:
        beta = alpha = 0
    params = {
        "model": model, "leak": leak, "reset": reset, "reset_delay": delay,
        "beta": np.full(n, beta), "alpha": np.full(n, alpha), "threshold": thr, "bias": bias,
    }
    got_v, got_i, got_s = _run_datapath(params, v, i, acc, thr, bias)
    ref_v, ref_i, ref_s = neuron_update(v[None], i[None], acc[None], params, "int", FMT)
    np.testing.assert_array_equal(got_v, ref_v[0])
    np.testing.assert_array_equal(got_s, ref_s[0])
    if model == NeuronModel.CUBA:
        np.testing.assert_array_equal(got_i, ref_i[0])
    else:
        np.testing.assert_array_equal(got_i, i)  # LIF leaves i alone


@pytest.mark.parametrize("beta", [0, 1, 2048, 4095, 4096])
def test_datapath_mult_decay_edges(beta):
    """Rounding toward zero at every decay code edge, both signs, at the state extremes."""
    n = 16
    v = np.array([S_HI, S_LO, 1, -1, 4095, -4095, 4097, -4097, 2, -2, 3, -3, 0, 12345, -12345, 7])
    zeros = np.zeros(n, dtype=np.int64)
    params = {
        "model": NeuronModel.CUBA, "leak": LeakMode.MULT, "reset": ResetMode.NONE,
        "reset_delay": True, "beta": np.full(n, beta), "alpha": np.full(n, 4096 - beta),
        "threshold": np.full(n, FMT.threshold_range[1]), "bias": zeros,
    }
    got_v, got_i, _ = _run_datapath(params, v, v[::-1].copy(), zeros, params["threshold"], zeros)
    ref_v, ref_i, _ = neuron_update(v[None], v[::-1][None], zeros[None], params, "int", FMT)
    np.testing.assert_array_equal(got_v, ref_v[0])
    np.testing.assert_array_equal(got_i, ref_i[0])


# --- the whole core: helpers -------------------------------------------------------------------
def _simulate(core, bench):
    sim = Simulator(core)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _pop_entry(base, size, params, output=False, forward=False, beta=0, alpha=0, fwd=0, rec=0,
               threshold=0):
    words = {
        PopWord.BASE: base,
        PopWord.SIZE: size,
        PopWord.OPTIONS: pop_options(params, output, forward),
        PopWord.BETA: beta,
        PopWord.ALPHA: alpha,
        PopWord.FORWARD: fwd,
        PopWord.RECURRENT: rec,
        PopWord.THRESHOLD: threshold,
    }
    return [words[w] for w in PopWord]


# --- accumulation pipeline ---------------------------------------------------------------------
@pytest.mark.parametrize(("weight_banks", "fast"), [(1, False), (2, True)])
def test_accumulation_back_to_back_same_neuron(weight_banks, fast):
    """Hand-made blocks hit one neuron on consecutive clocks (read-after-write at distance 1, 2
    and 3 across segment boundaries, which follow each other without a bubble); the sums must be
    exact and the operations one per clock.  The fast build (registered state) forwards from
    three stages instead of two."""
    cfg = CoreConfig(n_neurons=32, n_inputs=4, n_populations=2, synapse_words=128, descriptors=8)
    core = NeuronCore(cfg, CoreOptions(weight_banks=weight_banks, fast=fast))
    rng = np.random.default_rng(7)
    slots = [int(x) for x in rng.integers(-128, 128, 2 * cfg.synapse_words)]
    words = [(slots[2 * k] & 0xFF) | (slots[2 * k + 1] & 0xFF) << 8 for k in range(128)]
    # targets 2..8, 8..14 (distance 1), 13..18 (distance 2), 18..23 (distance 1, only for
    # sources 1..2), 21..23 (distance 3 after the block before)
    blocks = [Block(2, 7, 0, 0, 4), Block(8, 7, 28, 0, 4), Block(13, 6, 56, 0, 4),
              Block(18, 6, 80, 1, 2), Block(21, 3, 92, 0, 4)]
    events = [0, 0, 1, 2, 1, 0, 2, 3, 3, 1]
    expect = np.zeros(32, dtype=np.int64)
    ops = 0
    for e in events:
        for b in blocks:
            if b.first <= e < b.first + b.count:
                row = b.slot + (e - b.first) * b.length
                expect[b.target : b.target + b.length] += slots[row : row + b.length]
                ops += b.length

    async def bench(ctx):
        await bus_write_block(ctx, core, address(Region.WEIGHT), words)
        desc = [w for b in blocks for w in b.words()]
        await bus_write_block(ctx, core, address(Region.DESC), desc)
        await bus_write(ctx, core, address(Region.CONFIG, ConfigWord.INPUT_LIST.value),
                        0 | len(blocks) << 8)
        await bus_write_block(ctx, core, address(Region.ACC), [0] * 32)
        for e in events:
            await send_event(ctx, core, e)
        got = await bus_read_block(ctx, core, address(Region.ACC), 32)
        got = [decode_signed(w, FMT.acc_bits) for w in got]
        np.testing.assert_array_equal(got, expect)
        assert await bus_read_block(ctx, core, address(Region.DESC), len(desc)) == desc
        assert await bus_read(ctx, core, address(Region.CONFIG, ConfigWord.INPUT_LIST.value)) == (
            len(blocks) << 8
        )

    _simulate(core, bench)


@pytest.mark.parametrize(
    "lanes", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)]
)
def test_dense_event_stream_initiation_interval(lanes):
    """A dense fan-out of 64 runs at one operation group (``lanes`` synapses) per clock: events
    back to back cost 64 / lanes + a small constant clocks each."""
    cfg = CoreConfig(n_neurons=64, n_inputs=4, n_populations=1, synapse_words=256, lanes=lanes)
    w = np.ones((4, 64), dtype=np.int64)
    net = Network(4, [Population("p", 64, NeuronParams(leak="none", threshold=30000))],
                  [Projection(INPUT, "p", w)])
    res = run_network(net, cfg, [[0, 1, 2, 3] * 4, []], read_v=True)
    busy = res["event_cycles"][0] + res["step_cycles"][0] - res["step_cycles"][1]
    # 16 events x 64 / lanes groups, about one clock per event to hand it over (the first
    # event a few more: it cannot overlap a previous one)
    groups = 64 // lanes
    assert 16 * groups <= busy <= 16 * (groups + 1) + 8, busy
    np.testing.assert_array_equal(res["v"][0], np.full(64, 16))


# --- bus, status and robustness ----------------------------------------------------------------
def test_bus_refusals_and_status():
    cfg = CoreConfig(n_neurons=8, n_inputs=4, n_populations=2, synapse_words=8, descriptors=4)
    core = NeuronCore(cfg)

    async def bench(ctx):
        assert await bus_write(ctx, core, address(Region.V, 8), 1)  # beyond the region
        assert await bus_write(ctx, core, address(Region.STATUS, 0), 1)  # read-only
        assert await bus_write(ctx, core, 15 << 20, 1)  # unknown region
        assert await bus_read(ctx, core, address(Region.DESC, 16)) == 0  # refused read
        assert not await bus_write(ctx, core, address(Region.BIAS, 3), -5 & 0xFFFFFFFF)
        assert await bus_read(ctx, core, address(Region.BIAS, 3)) == -5 & 0xFFFFFFFF
        assert not await bus_write(ctx, core, address(Region.THR, 7), 40000)
        assert await bus_read(ctx, core, address(Region.THR, 7)) == 40000
        assert not await bus_write(ctx, core, address(Region.POP, 15), 0x1234)
        assert await bus_read(ctx, core, address(Region.POP, 15)) == 0x1234
        assert not await bus_write(ctx, core, address(Region.CONFIG, ConfigWord.N_INPUTS.value), 3)
        await send_event(ctx, core, 3)  # beyond N_INPUTS
        await send_event(ctx, core, 60000)
        await send_event(ctx, core, 2)  # accepted, empty fan-out
        status = await bus_read_block(ctx, core, address(Region.STATUS), len(StatusWord))
        assert status[StatusWord.BUS_REFUSED.value] == 4
        assert status[StatusWord.EVENTS_REFUSED.value] == 2
        assert status[StatusWord.CAP_NEURONS.value] == 8
        assert status[StatusWord.CAP_DESCRIPTORS.value] == 4
        assert status[StatusWord.LANES.value] == 1
        assert status[StatusWord.FEATURES.value] == 1

    _simulate(core, bench)


def _run_and_compare(net, cfg, events):
    """Run ``net`` on the core and check every step's spikes (all populations are outputs) and
    membranes against the golden model; returns the run."""
    res = run_network(net, cfg, events, read_v=True)
    gold = GoldenChip(net, "int")
    for t, ev in enumerate(events):
        inp = np.zeros(net.n_inputs, dtype=np.uint8)
        inp[ev] = 1
        spk = gold.step(inp)[0]
        assert res["spikes"][t] == list(np.flatnonzero(spk)), t
        np.testing.assert_array_equal(res["v"][t], gold.v[0])
    return res


def test_population_thresholds_when_not_per_neuron():
    """Without per-neuron thresholds the THR region is absent (refused) and the population
    word THRESHOLD is used: bit-exact with the golden model."""
    cfg = CoreConfig(n_neurons=24, n_inputs=6, n_populations=2, synapse_words=128,
                     per_neuron_threshold=False)
    assert region_size(Region.THR, cfg) == 0
    rng = np.random.default_rng(3)
    net = Network(
        6,
        [Population("a", 16, NeuronParams(leak="shift", beta=3, threshold=37)),
         Population("b", 8, NeuronParams(leak="none", threshold=90, reset="zero"))],
        [Projection(INPUT, "a", rng.integers(-20, 40, (6, 16))),
         Projection("a", "b", rng.integers(-10, 30, (16, 8)))],
        outputs=["a", "b"],
    )
    events = [list(np.flatnonzero(rng.random(6) < 0.5)) for _ in range(8)]
    res = _run_and_compare(net, cfg, events)
    assert res["status"]["FEATURES"] == 0
    per_neuron = Network(2, [Population("a", 4, NeuronParams(threshold=[5, 6, 7, 8]))])
    assert "per-neuron threshold" in "\n".join(fit_problems(per_neuron, cfg))
    core = NeuronCore(cfg)

    async def bench(ctx):
        assert await bus_write(ctx, core, address(Region.THR, 0), 10)

    _simulate(core, bench)


def test_bad_parameters_are_skipped_and_counted():
    """Populations with out-of-range options, a block past the neurons, an empty block and an
    input list past the descriptor table are counted and skipped; the good population still
    runs exactly."""
    cfg = CoreConfig(n_neurons=16, n_inputs=2, n_populations=4, synapse_words=16, descriptors=8)
    core = NeuronCore(cfg)
    good = NeuronParams(leak="none", threshold=10)
    pops = (
        _pop_entry(0, 4, good, output=True)  # fine
        + _pop_entry(4, 4, NeuronParams(leak="mult"), beta=5000)  # decay > 1.0
        + _pop_entry(12, 8, good)  # past the neurons
        + _pop_entry(8, 4, good, fwd=6 | 3 << 8)  # its list runs past the descriptor table
    )

    async def bench(ctx):
        await bus_write_block(ctx, core, address(Region.POP), pops)
        await bus_write_block(ctx, core, address(Region.THR), [10] * 16)
        await bus_write_block(ctx, core, address(Region.WEIGHT), [0x0B0B] * 16)
        # blocks: 0 fine (neurons 0..3, source 0 only), 1 runs past the neurons, 2 has length 0
        desc = Block(0, 4, 0, 0, 1).words() + Block(14, 4, 0, 0, 2).words()
        desc += Block(2, 0, 0, 0, 2).words()
        await bus_write_block(ctx, core, address(Region.DESC), desc)
        input_list = address(Region.CONFIG, ConfigWord.INPUT_LIST.value)
        await bus_write(ctx, core, input_list, 6 | 5 << 8)  # past the table: stored empty
        assert await bus_read(ctx, core, input_list) == 0
        await bus_write(ctx, core, input_list, 0 | 3 << 8)
        await bus_write(ctx, core, address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), 4)
        await send_event(ctx, core, 0)
        await send_event(ctx, core, 1)
        ctx.set(core.spikes.ready, 1)
        ctx.set(core.step, 1)
        await ctx.tick()
        ctx.set(core.step, 0)
        spikes = []
        while not ctx.get(core.done):
            if ctx.get(core.spikes.valid):
                spikes.append(ctx.get(core.spikes.payload))
            await ctx.tick()
        assert spikes == [0, 1, 2, 3]  # 11 > 10
        v = await bus_read_block(ctx, core, address(Region.V), 16)
        assert v == [11] * 4 + [0] * 12
        errors = await bus_read(ctx, core, address(Region.STATUS, StatusWord.PARAM_ERRORS.value))
        assert errors == 1 + 2 * 2 + 3  # the list, two bad blocks per event, three populations

    _simulate(core, bench)


# --- whole networks against the golden model ---------------------------------------------------
def _random_net(rng, n_inputs=10, per_neuron_threshold=True):
    thr1 = rng.integers(40, 200, 12)
    if not per_neuron_threshold:  # (the same draws either way)
        thr1 = int(thr1[0])
    p1 = NeuronParams(model="lif", leak="mult", beta=int(rng.integers(2000, 4097)),
                      threshold=thr1, bias=rng.integers(-5, 6, 12),
                      reset="subtract", reset_delay=False)
    p2 = NeuronParams(model="cuba", leak="shift", beta=3, alpha=2, threshold=90,
                      reset="zero", reset_delay=True)
    p3 = NeuronParams(model="cuba", leak="mult", beta=3900, alpha=3000, threshold=150,
                      reset="none")
    sparse = Sparse(rows=rng.integers(0, 12, 20), cols=rng.integers(0, 7, 20),
                    weights=rng.integers(-128, 128, 20))
    return Network(
        n_inputs,
        [Population("a", 12, p1), Population("b", 7, p2), Population("c", 5, p3)],
        [
            Projection(INPUT, "a", rng.integers(-40, 100, (n_inputs, 12))),
            Projection("a", "b", sparse),
            Projection("b", "c", rng.integers(-128, 128, (7, 5))),
            Projection("c", "a", rng.integers(-60, 60, (5, 12))),  # recurrent, to an earlier pop
            Projection("b", "b", rng.integers(-30, 30, (7, 7))),  # self-recurrent
            Projection(INPUT, "c", rng.integers(-20, 20, (n_inputs, 5))),
        ],
        outputs=["a", "c"],
    )


#: every legal combination of the core's options (docs/core.md, "Timing options")
OPTION_MATRIX = list(itertools.product([1, 2, 4], [1, 3], [False, True], [True, False]))
#: the combinations in the fast loop (pytest -m "not slow"; the others take 4-14 s each):
#: every value of every option but lanes > 1
FAST_OPTIONS = {(1, 1, False, True), (1, 3, True, False)}


@pytest.mark.parametrize(
    ("lanes", "weight_banks", "fast", "per_neuron_threshold"),
    [o if o in FAST_OPTIONS else pytest.param(*o, marks=pytest.mark.slow) for o in OPTION_MATRIX],
)
@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_core_matches_golden(seed, lanes, weight_banks, fast, per_neuron_threshold):
    """The option matrix: lanes x weight banks x fast build x threshold mode, each against the
    golden model.  Populations of 12, 7 and 5 neurons: with several lanes their bases are not
    aligned to a neuron group, so the first and last groups run with some lanes masked.  With
    weight banks the weight word arrives a clock later (and bus reads take a clock more); with
    registered state the datapaths see the neuron memories a clock later."""
    rng = np.random.default_rng(seed)
    net = _random_net(rng, per_neuron_threshold=per_neuron_threshold)
    cfg = CoreConfig(n_neurons=32, n_inputs=12, n_populations=4, synapse_words=256,
                     lanes=lanes, per_neuron_threshold=per_neuron_threshold)
    # each channel at most once per timestep (docs/network.md), in random order
    events = [list(rng.permutation(net.n_inputs)[: rng.integers(0, 11)]) for _ in range(10)]
    events[3] = list(range(net.n_inputs))  # every channel, back to back
    res = run_network(net, cfg, events, weight_banks=weight_banks,
                      fast=fast)
    assert_core_run_matches_golden(res, net, events)
    assert res["status"]["PARAM_ERRORS"] == 0
    assert res["status"]["STEPS"] == len(events)


@pytest.mark.parametrize(
    "lanes", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow)]
)
def test_idle_step_costs_one_clock_per_neuron(lanes):
    cfg = CoreConfig(n_neurons=64, n_inputs=4, n_populations=2, synapse_words=1024,
                     lanes=lanes)
    net = Network(4, [Population("a", 40, NeuronParams(threshold=100)),
                      Population("b", 24, NeuronParams(threshold=100))],
                  [Projection(INPUT, "a", np.ones((4, 40), dtype=int)),
                   Projection("a", "b", np.ones((40, 24), dtype=int))])
    res = run_network(net, cfg, [[]] * 2, read_v=False)
    # one clock per neuron group (lanes neurons) plus a small constant per population
    # (docs/core.md); population b starts inside a group with 4 lanes: one group more
    assert 64 // lanes <= res["step_cycles"][1] <= 64 // lanes + 1 + 24 * 2 + 8
    assert res["spikes"] == [[], []]


# --- image and configuration -------------------------------------------------------------------
def test_config_errors():
    with pytest.raises(ConfigError, match="n_neurons=0"):
        CoreConfig(n_neurons=0)
    with pytest.raises(ConfigError, match="lanes=3"):
        CoreConfig(lanes=3)
    with pytest.raises(ConfigError, match="multiple of lanes=4"):
        CoreConfig(n_neurons=10, lanes=4)
    with pytest.raises(ConfigError, match="weight_bits=16"):
        CoreConfig(lanes=4, fmt=Format(weight_bits=16))
    with pytest.raises(ConfigError, match="descriptors"):
        CoreConfig(descriptors=257)
    with pytest.raises(ConfigError, match="per_neuron_threshold"):
        CoreConfig(per_neuron_threshold="yes")


def test_fit_problems_lists_every_reason():
    net = Network(
        20,
        [Population("a", 30, NeuronParams(beta=np.arange(30) + 3000, threshold=10)),
         Population("b", 10, NeuronParams(threshold=np.arange(10) + 5)),
         Population("c", 10, NeuronParams(threshold=10))],
        [Projection(INPUT, "a", np.ones((20, 30), dtype=int)),
         Projection("a", "b", np.ones((30, 10), dtype=int))],
    )
    cfg = CoreConfig(n_neurons=32, n_inputs=16, n_populations=2, synapse_words=100)
    problems = fit_problems(net, cfg)
    text = "\n".join(problems)
    assert "50 neurons" in text and "20 input channels" in text and "3 populations" in text
    assert "per-neuron beta" in text and "threshold" not in text
    with pytest.raises(FitError):
        check_fit(net, cfg)
    small = CoreConfig(n_neurons=64, n_inputs=32, n_populations=4, synapse_words=100,
                       descriptors=1, per_neuron_threshold=False)
    text = "\n".join(fit_problems(net, small))
    assert "2 block descriptor entries" in text and "synapse words" in text
    assert "per-neuron threshold" in text


def test_compile_blocks_dense_and_sparse():
    cfg = CoreConfig(n_neurons=32, n_inputs=4, n_populations=2, synapse_words=128)
    w = np.arange(1, 33).reshape(4, 8) % 7 + 1
    sparse = Sparse(rows=[1, 1, 1, 2], cols=[2, 3, 15, 5], weights=[5, 6, 7, -8])
    net = Network(4, [Population("a", 8), Population("b", 16)],
                  [Projection(INPUT, "a", w), Projection("a", "b", sparse),
                   Projection("b", "a", np.zeros((16, 8), dtype=int))])
    lists, blocks, slots = compile_blocks(net, cfg)[:3]
    assert lists[("input", None)] == (0, 1)
    assert blocks[0] == Block(target=0, length=8, slot=0, first=0, count=4)
    assert slots[:32] == list(w.ravel())
    # the sparse projection: rows 1..2, columns 2..15 of b (neurons 8 + 2 ..)
    assert lists[("forward", "a")] == (1, 1)
    assert blocks[1] == Block(target=10, length=14, slot=32, first=1, count=2)
    box = np.zeros((2, 14), dtype=int)
    box[0, [0, 1, 13]] = [5, 6, 7]
    box[1, 3] = -8
    assert slots[32:] == list(box.ravel())
    assert lists[("recurrent", "b")] == (2, 0)  # all-zero projection: no block
    image = dict(build_image(net, cfg))
    pops = image[address(Region.POP)]
    opts_a, opts_b = pops[PopWord.OPTIONS.value], pops[8 + PopWord.OPTIONS.value]
    assert opts_a & PopFlag.FORWARD and not opts_a & PopFlag.OUTPUT
    assert opts_b & PopFlag.OUTPUT and not opts_b & PopFlag.RECURRENT
    assert pops[PopWord.FORWARD.value] == 1 | 1 << 8
    assert image[address(Region.CONFIG, ConfigWord.INPUT_LIST.value)] == [1 << 8]
    assert image[address(Region.DESC)][: 4] == blocks[0].words()
    assert blocks[1].words()[DescWord.SOURCES.value] == 1 | 2 << 16


def test_step_pulse_while_busy_is_remembered():
    """A second step pulse during a timestep runs one more timestep; busy covers both."""
    cfg = CoreConfig(n_neurons=8, n_inputs=2, n_populations=1, synapse_words=8)
    net = Network(2, [Population("a", 8, NeuronParams(leak="none", threshold=5, bias=2))])
    image = build_image(net, cfg)
    core = NeuronCore(cfg)

    async def bench(ctx):
        for addr, words in image:
            await bus_write_block(ctx, core, addr, words)
        ctx.set(core.spikes.ready, 1)
        assert not ctx.get(core.busy)
        ctx.set(core.step, 1)
        await ctx.tick()
        ctx.set(core.step, 0)
        await ctx.tick().repeat(3)
        assert ctx.get(core.busy)
        ctx.set(core.step, 1)  # while the first timestep runs
        await ctx.tick()
        ctx.set(core.step, 0)
        dones, busy_cycles, spikes = 0, 0, []
        for _ in range(200):
            dones += ctx.get(core.done)
            busy_cycles += ctx.get(core.busy)
            if ctx.get(core.spikes.valid):
                spikes.append(ctx.get(core.spikes.payload))
            await ctx.tick()
        assert dones == 2 and not ctx.get(core.busy)
        assert spikes == []  # v = 2, then 4: below the threshold 5
        assert await bus_read(ctx, core, address(Region.STATUS, StatusWord.STEPS.value)) == 2
        v = await bus_read_block(ctx, core, address(Region.V), 8)
        assert v == [4] * 8

    _simulate(core, bench)


def test_address_map_and_decoders():
    cfg = CoreConfig(n_neurons=100, n_inputs=10, n_populations=3, synapse_words=50,
                     descriptors=20)
    assert address(Region.V, 5) == 3 << 20 | 5
    assert Region.WEIGHT.base == 9 << 20
    sizes = {r: region_size(r, cfg) for r in Region}
    assert sizes[Region.DESC] == 80 and sizes[Region.THR] == 100
    assert sizes[Region.POP] == 24 and sizes[Region.WEIGHT] == 50
    assert cfg.bitmap_words == 8 and CoreConfig(n_neurons=1).bitmap_words == 2
    assert decode_signed(0xFFFF8000, 16) == -32768 and decode_signed(0x7FFF, 16) == 32767
    np.testing.assert_array_equal(decode_state([0xFFFFFFFF, 5, 0x8000]), [-1, 5, -32768])


def test_populations_sharing_one_bitmap_word():
    """Four neurons in three populations share one spike-bitmap word (and neuron_bits < 4):
    each walk sees only its own population's spikes, forward and recurrent."""
    cfg = CoreConfig(n_neurons=4, n_inputs=2, n_populations=3, synapse_words=16)
    p = NeuronParams(leak="none", threshold=3)
    net = Network(
        2,
        [Population("a", 2, p), Population("b", 1, p), Population("c", 1, p)],
        [Projection(INPUT, "a", np.array([[5, 0], [0, 5]])),
         Projection(INPUT, "b", np.array([[5], [0]])),
         Projection("a", "c", np.array([[4], [0]])),
         Projection("b", "a", np.array([[0, 4]]))],
        outputs=["a", "b", "c"],
    )
    _run_and_compare(net, cfg, [[0], [1], [0, 1], [], [0], []])


@pytest.mark.parametrize(
    ("weight_banks", "fast"), [(1, False), pytest.param(2, True, marks=pytest.mark.slow)]
)
def test_recurrent_walk_stops_at_the_population_end(weight_banks, fast):
    """A recurrent walk over three bitmap words reads only its population's bits of the first
    and last word, although its neighbours spiked too.  The probe: a hand-made block whose rows
    reach past the population (offsets 40..43 are the next population's neurons) into
    neurons no population sweeps, whose accumulators then count the deliveries."""
    cfg = CoreConfig(n_neurons=64, n_inputs=2, n_populations=3, synapse_words=512,
                     descriptors=4)
    core = NeuronCore(cfg, CoreOptions(weight_banks=weight_banks, fast=fast))
    p = NeuronParams(leak="none", threshold=10)
    # a: 0..3, b: 4..43 (words 0, 1, 2; recurrent list: descriptor 0), c: 44..47; neurons
    # 48..63 are in no population
    pops = (
        _pop_entry(0, 4, p)
        + [w | (int(PopFlag.RECURRENT) if k == PopWord.OPTIONS.value else 0)
           for k, w in enumerate(_pop_entry(4, 40, p, rec=0 | 1 << 8))]
        + _pop_entry(44, 4, p)
    )
    # rows 0..39 (b's neurons) add 1 to neuron 48, rows 40..43 (c's) add 1 to neuron 49
    slots = [0] * (2 * cfg.synapse_words)
    for row in range(44):
        slots[16 * row + (0 if row < 40 else 1)] = 1
    words = [slots[2 * k] | slots[2 * k + 1] << 8 for k in range(cfg.synapse_words)]

    async def run_step(ctx):
        ctx.set(core.step, 1)
        await ctx.tick()
        ctx.set(core.step, 0)
        while not ctx.get(core.done):
            await ctx.tick()

    async def bench(ctx):
        await bus_write_block(ctx, core, address(Region.POP), pops)
        await bus_write_block(ctx, core, address(Region.THR), [10] * 64)
        await bus_write_block(ctx, core, address(Region.BIAS), [11] * 48)
        await bus_write_block(ctx, core, address(Region.WEIGHT), words)
        await bus_write_block(ctx, core, address(Region.DESC), Block(48, 16, 0, 0, 44).words())
        await bus_write(ctx, core, address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), 3)
        await run_step(ctx)  # every neuron of a, b, c spikes (11 > 10)
        await run_step(ctx)  # b's recurrent walk delivers its 40 spikes
        acc = await bus_read_block(ctx, core, address(Region.ACC, 48), 2)
        assert acc == [40, 0]
        errors = await bus_read(ctx, core, address(Region.STATUS, StatusWord.PARAM_ERRORS.value))
        assert errors == 0

    _simulate(core, bench)


@pytest.mark.parametrize("fast", [False, True])
def test_banked_weight_memory_reads_back_over_the_bus(fast):
    """Weight words written over the bus read back from every bank (one clock later than an
    unbanked memory), neuron words from the registered datapath inputs; an access past the
    last word is still refused."""
    cfg = CoreConfig(n_neurons=8, n_inputs=4, n_populations=1, synapse_words=100, lanes=2)
    core = NeuronCore(cfg, CoreOptions(weight_banks=3, fast=fast))  # banks: 64 + 36
    words = [(7919 * k) & 0xFFFF for k in range(100)]

    async def bench(ctx):
        assert not any(await bus_write_block(ctx, core, address(Region.WEIGHT), words))
        assert await bus_read_block(ctx, core, address(Region.WEIGHT), 100) == words
        assert await bus_read(ctx, core, address(Region.WEIGHT, 63)) == words[63]
        assert await bus_write(ctx, core, address(Region.WEIGHT, 100), 1)  # refused
        # every neuron region, both banks, interleaved with weight reads
        for k, reg in enumerate([Region.V, Region.I, Region.ACC, Region.THR, Region.BIAS]):
            values = [(k * 100 + 7 * n) & 0x7FFF for n in range(8)]
            await bus_write_block(ctx, core, address(reg), values)
            assert await bus_read_block(ctx, core, address(reg), 8) == values
            assert await bus_read(ctx, core, address(Region.WEIGHT, 70 + k)) == words[70 + k]
        await bus_write(ctx, core, address(Region.BIAS, 3), -5 & 0xFFFFFFFF)
        assert await bus_read(ctx, core, address(Region.BIAS, 3)) == -5 & 0xFFFFFFFF
    with pytest.raises(TypeError, match="weight_banks"):
        NeuronCore(cfg, CoreOptions(weight_banks=0))

    _simulate(core, bench)
