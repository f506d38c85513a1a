"""Weight-shared blocks (convolutions) on the neuron core against the golden model (issue #15
part 2; ``docs/core.md``, "Weight-shared blocks"; ``docs/network.md``, "Convolution and
pooling").

The golden model is the spec (``tests/test_conv.py`` holds its convolutions to NumPy and torch);
here the core (Amaranth simulator, every option combination) must give its spikes and
membranes bit for bit with the kernels stored once, the compiler must lay a convolution out as
weight-shared blocks only on a core that has them, and a core must survive garbage in its
CONV table.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from core_golden import assert_core_run_matches_golden

from spikeforge.host.image import SharedBlock, build_image, compile_blocks, fit_problems
from spikeforge.hw.core import CoreOptions, NeuronCore
from spikeforge.hw.core_sim import (
    bus_read_block,
    bus_write,
    bus_write_block,
    run_network,
    run_step,
    send_events,
    simulate,
)
from spikeforge.hw.image import (
    ConvEntry,
    CoreConfig,
    Region,
    StatusWord,
    address,
    decode_signed,
    unpack,
)
from spikeforge.network import (
    INPUT,
    Conv1d,
    Conv2d,
    Network,
    NeuronParams,
    Population,
    Projection,
)
from spikeforge.sim.golden import GoldenChip


def _conv_net(rng, delay=0):
    """Input 2x6x6 -> conv 3x3 pad 1 -> a (4x6x6) -> conv 3x3 stride 2 -> b (3x3x3) -> dense
    -> c, c -> a recurrent; a -> d by a grouped, strided, asymmetrically padded conv with a
    kernel 2x3; a -> e by a dilated conv (not weight-shared: unrolled into a dense block); and
    a 1-d convolution from the input."""
    p = NeuronParams(model="lif", leak="shift", beta=3, threshold=60, reset="subtract",
                     reset_delay=False, bias=rng.integers(-3, 4, 1)[0])
    pc = NeuronParams(model="cuba", leak="shift", beta=2, alpha=2, threshold=80, reset="zero",
                      reset_delay=True)
    c1 = Conv2d(rng.integers(-30, 60, (4, 2, 3, 3)), (6, 6), stride=1, padding=1)
    c2 = Conv2d(rng.integers(-40, 70, (3, 4, 3, 3)), (6, 6), stride=2, padding=1)
    c3 = Conv2d(rng.integers(-40, 70, (4, 2, 2, 3)), (6, 6), stride=(1, 2),
                padding=((0, 1), (1, 0)), groups=2)
    c4 = Conv2d(rng.integers(-30, 60, (2, 4, 2, 2)), (6, 6), dilation=2)
    c5 = Conv1d(rng.integers(-20, 80, (2, 1, 3)), 72, stride=3, padding="valid")
    return Network(
        72,
        [Population("a", 144, p), Population("b", 27, pc), Population("d", c3.n_dst, p),
         Population("e", c4.n_dst, p), Population("c", 5, p), Population("f", c5.n_dst, p)],
        [
            Projection(INPUT, "a", c1),
            Projection("a", "b", c2, delay),
            Projection("a", "d", c3),
            Projection("a", "e", c4),
            Projection("b", "c", rng.integers(-60, 90, (27, 5))),
            Projection("c", "a", rng.integers(-30, 30, (5, 144))),
            Projection(INPUT, "f", c5),
        ],
        outputs=["a", "b", "c", "d", "e", "f"],
    )


def _config(net, lanes, conv_words=512, **kw):
    n = -(-net.n_neurons // lanes) * lanes
    return CoreConfig(n_neurons=n, n_inputs=net.n_inputs, n_populations=8,
                      synapse_words=6144, lanes=lanes, conv_words=conv_words, descriptors=24,
                      **kw)


def _events(rng, n_inputs, steps=8):
    return [list(rng.permutation(n_inputs)[: rng.integers(0, n_inputs // 2)])
            for _ in range(steps)]


#: lanes x weight banks x fast build: the fast loop runs the first two
CONV_OPTIONS = [(1, 1, False), (2, 3, True)] + [
    o for o in itertools.product([1, 2, 4], [1, 3], [False, True])
    if o not in ((1, 1, False), (2, 3, True))
]


@pytest.mark.parametrize(
    ("lanes", "weight_banks", "fast"),
    [o if k < 2 else pytest.param(*o, marks=pytest.mark.slow)
     for k, o in enumerate(CONV_OPTIONS)],
)
def test_core_with_convolutions_matches_golden(lanes, weight_banks, fast):
    """Every spike and membrane of 8 steps; the convolutions are weight-shared blocks."""
    rng = np.random.default_rng(lanes * 10 + weight_banks + fast)
    net = _conv_net(rng)
    cfg = _config(net, lanes)
    layout = compile_blocks(net, cfg)
    assert sum(isinstance(b, SharedBlock) for b in layout.blocks) == 5  # c3: two groups
    events = _events(rng, net.n_inputs)
    res = run_network(net, cfg, events, weight_banks=weight_banks, fast=fast)
    assert assert_core_run_matches_golden(res, net, events) > 50
    assert res["status"]["PARAM_ERRORS"] == 0


def test_convolution_with_a_delay_matches_golden():
    """A weight-shared block delivering two steps late (its arrival, docs/core.md "Delays")."""
    rng = np.random.default_rng(7)
    net = _conv_net(rng, delay=2)
    cfg = _config(net, 2, max_delay=3)
    events = _events(rng, net.n_inputs, 10)
    events[-4:] = [[]] * 4
    res = run_network(net, cfg, events, weight_banks=3, fast=True)
    assert assert_core_run_matches_golden(res, net, events) > 50
    assert res["status"]["PARAM_ERRORS"] == 0


def test_kernels_are_stored_once():
    """A convolution costs its kernel (once per lane alignment) in the weight memory, one CONV
    word per source, and two descriptor entries per group; on a core without CONV words it is
    unrolled (its bounding box of synapses)."""
    conv = Conv2d(np.arange(16 * 8 * 9).reshape(16, 8, 3, 3) % 200 - 99, (8, 8), padding=1)
    net = Network(conv.n_src, [Population("a", conv.n_dst, NeuronParams(threshold=100))],
                  [Projection(INPUT, "a", conv)])
    for lanes in (1, 2):
        cfg = CoreConfig(n_neurons=1024, n_inputs=512, synapse_words=8192, lanes=lanes,
                         conv_words=512)
        layout = compile_blocks(net, cfg)
        assert layout.entries == 2 and len(layout.conv) == conv.n_src
        assert conv.n_weights <= len(layout.slots) <= lanes * (conv.n_weights + 16 * 8 * 3 + 16)
        assert not fit_problems(net, cfg)
    unrolled = compile_blocks(net, CoreConfig(n_neurons=1024, n_inputs=512,
                                              synapse_words=8192))
    assert len(unrolled.slots) == conv.n_src * conv.n_dst  # the bounding box
    assert not unrolled.conv


def test_fit_check_counts_conv_words():
    rng = np.random.default_rng(1)
    net = _conv_net(rng)
    problems = fit_problems(net, _config(net, 1, conv_words=100))
    assert any("CONV words" in p and "holds 100" in p for p in problems)


def _bench_images(core, images, events_per_image, out):
    """Load each image in turn (without resetting the core in between) and run its events."""

    async def bench(ctx):
        for image, events in zip(images, events_per_image, strict=True):
            for addr, words in image:
                await bus_write_block(ctx, core, addr, words)
            for evs in events:
                await send_events(ctx, core, evs)
                spikes, _ = await run_step(ctx, core)
                words = await bus_read_block(ctx, core, address(Region.V), core.config.n_neurons)
                out.append((spikes, [decode_signed(w, 16) for w in words]))

    return bench


def test_a_reloaded_convolution_is_not_taken_from_the_cache():
    """The engine keeps the words of a one-block list's weight-shared block between sources;
    writing the descriptor table (a new network) must forget them."""
    rng = np.random.default_rng(3)
    nets = []
    for k in (3, 5):  # the same shapes, other kernels and geometry
        conv = Conv2d(rng.integers(-20, 90, (3, 2, k, k)), (5, 5), padding=k // 2)
        nets.append(Network(50, [Population("a", conv.n_dst, NeuronParams(threshold=70))],
                            [Projection(INPUT, "a", conv)], outputs=["a"]))
    cfg = CoreConfig(n_neurons=76, n_inputs=50, synapse_words=512, conv_words=64)
    events = [_events(rng, 50, 4) for _ in nets]
    out = []
    core = NeuronCore(cfg, CoreOptions())
    simulate(core, _bench_images(core, [build_image(n, cfg) for n in nets], events, out))
    k = 0
    for net, evs in zip(nets, events, strict=True):
        golden = GoldenChip(net)
        for e in evs:
            counts = np.bincount(np.asarray(e, dtype=np.int64), minlength=50)
            s = golden.step(counts)[0]
            assert out[k][0] == sorted(int(n) for n in np.flatnonzero(s))
            np.testing.assert_array_equal(out[k][1][: net.n_neurons], golden.v[0])
            k += 1


@pytest.mark.parametrize("options", [{}, {"fast": True}, {"fast": True, "weight_banks": 3},
                                     {"weight_banks": 3}])
def test_garbage_in_the_conv_table_stays_inside_the_block(options):
    """Random CONV words (and a block whose extent runs past the neurons) never touch a neuron
    outside the block's extent and never stop the core: what does not fit is skipped and
    counted in PARAM_ERRORS."""
    rng = np.random.default_rng(11)
    conv = Conv2d(rng.integers(1, 50, (2, 1, 3, 3)), (6, 6), padding=1)
    p = NeuronParams(threshold=30000, leak="none")
    net = Network(36, [Population("a", 72, p), Population("z", 40, p)],
                  [Projection(INPUT, "a", conv), Projection(INPUT, "z", np.ones((36, 40)))],
                  outputs=["a", "z"])
    cfg = CoreConfig(n_neurons=112, n_inputs=36, synapse_words=2048, conv_words=64)
    image = build_image(net, cfg)
    block = next(b for b in compile_blocks(net, cfg).blocks if isinstance(b, SharedBlock))
    garbage = [int(w) for w in rng.integers(0, 1 << 32, 36, dtype=np.uint64)]
    # rows and runs of 7, targets near the end of the block: most of them run past it
    garbage[:8] = [int(w) | (7 << ConvEntry["rows"].offset) | (7 << ConvEntry["run"].offset)
                   for w in garbage[:8]]
    out = {}

    async def bench(ctx):
        for addr, words in image:
            await bus_write_block(ctx, core, addr, words)
        await bus_write_block(ctx, core, address(Region.CONV, block.table), garbage)
        await send_events(ctx, core, list(range(36)))
        out["spikes"], out["cycles"] = await run_step(ctx, core)
        out["v"] = await bus_read_block(ctx, core, address(Region.V), 112)
        out["status"] = await bus_read_block(ctx, core, address(Region.STATUS), len(StatusWord))
        await bus_write(ctx, core, address(Region.CONV, 5), 0x1234_5678)
        out["readback"] = await bus_read_block(ctx, core, address(Region.CONV, 5), 1)

    core = NeuronCore(cfg, CoreOptions(**options))
    simulate(core, bench)
    golden = GoldenChip(net)
    golden.step(np.ones(36, dtype=np.int64))
    v = [decode_signed(w, 16) for w in out["v"]]
    np.testing.assert_array_equal(v[72:112], golden.v[0][72:112])  # z: untouched by the garbage
    assert out["status"][StatusWord.PARAM_ERRORS.value] > 0
    assert out["readback"] == [0x1234_5678]
    assert unpack(ConvEntry, garbage[0])["rows"] == 7


# --- the whole chip ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def conv_chip(verilator_toolchain):
    """A virtual board whose core has weight-shared blocks and delays (the conv profile's
    options, small)."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.hw.chip import Chip
    from spikeforge.sim.virtual_board import VirtualBoard

    cfg = CoreConfig(n_neurons=336, n_inputs=72, n_populations=8, synapse_words=6144,
                     conv_words=512, descriptors=24, max_delay=3)
    chip = Chip(cfg, 24_000_000, options=CoreOptions(fast=True, weight_banks=3))
    with VirtualBoard(chip, name="conv_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0)
        yield backend
        backend.close()


@pytest.mark.parametrize(("seed", "delay"), [(1, 0), (2, 2)])
def test_chip_with_convolutions_matches_golden(conv_chip, seed, delay):
    """Every layer's spikes and every membrane, several samples (state resets between them),
    and the streamed RUN path; the chip reports its CONV words in IDENTIFY."""
    assert conv_chip.config.conv_words == 512
    rng = np.random.default_rng(seed)
    net = _conv_net(rng, delay)
    net = Network(net.n_inputs, net.populations, net.projections,
                  [p.name for p in net.populations])
    conv_chip.load(net)
    raster = (rng.random((10, 3, net.n_inputs)) < 0.3).astype(np.uint8)
    spikes, v = conv_chip.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=3).run(raster, record_v=True)
    np.testing.assert_array_equal(spikes, gold["spikes"])
    np.testing.assert_array_equal(v, gold["v"])
    assert gold["spikes"].sum() > 100
    np.testing.assert_array_equal(conv_chip.run(raster), gold["spikes"])
