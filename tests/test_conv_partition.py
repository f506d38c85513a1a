"""Convolutional networks split over several cores (issue #15, part 4: "the partitioner can split
a conv network over several cores"; ``docs/routing.md``, "Partition").

A convolution that enters a core from another core (or from the host into a core whose input
channels start with other ones) becomes a :class:`Conv` *placed* in a block of the core's input
channels (``Conv.place``), so it keeps its weight-shared blocks there instead of being unrolled.
Checked here: the placed convolution against its unrolled block, the partition's sub-networks,
real cores + router in the Amaranth simulator against ``GoldenChip`` of the whole network, and
a two-core chip in Verilator through the host library (marked ``rtl``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_conv_core import _conv_net, _events

from spikeforge.errors import ConfigError, FitError
from spikeforge.host.image import SharedBlock, compile_blocks
from spikeforge.host.partition import partition
from spikeforge.hw.image import CoreConfig
from spikeforge.hw.router import RouterConfig
from spikeforge.network import (
    INPUT,
    Conv,
    Conv1d,
    Conv2d,
    Network,
    NeuronParams,
    Population,
    Projection,
    SumPool2d,
)
from spikeforge.sim.golden import GoldenChip


# --- the placed convolution -------------------------------------------------------------------
@pytest.mark.parametrize("conv", [
    Conv2d(np.arange(54).reshape(3, 2, 3, 3) % 17 - 8, (6, 6), stride=2, padding=1),
    Conv1d(np.arange(12).reshape(2, 2, 3) - 5, 9, groups=2),
    SumPool2d(2, 2, (4, 4)),
])
def test_a_placed_convolution_is_its_unrolled_block_at_the_offset(conv):
    rng = np.random.default_rng(0)
    placed = conv.place(7, conv.n_src + 12)
    assert placed.placed and not conv.placed
    d = placed.dense()
    assert d.shape == (conv.n_src + 12, conv.n_dst)
    np.testing.assert_array_equal(d[7:7 + conv.n_src], conv.dense())
    assert not d[:7].any() and not d[7 + conv.n_src:].any()
    x = rng.random((3, 2, placed.src_total))
    np.testing.assert_allclose(placed.apply(x), x @ d)
    sp = placed.to_sparse()
    back = np.zeros_like(d)
    back[sp.rows, sp.cols] = sp.weights
    np.testing.assert_array_equal(back, d)
    q = placed.with_kernel(np.ones_like(conv.kernel))  # quantize keeps the placement
    assert (q.src_offset, q.src_total) == (7, placed.src_total)
    assert "src_offset=7" in repr(placed)
    with pytest.raises(ConfigError, match=r"src_total=10 is not valid.*>= "):
        conv.place(7, 10)
    with pytest.raises(ConfigError, match="src_offset=-1"):
        conv.place(-1, conv.n_src)


def test_a_placed_convolution_checks_its_projection_size():
    conv = Conv2d(np.ones((1, 1, 2, 2)), (3, 3)).place(4, 20)
    net = Network(20, [Population("a", 4, NeuronParams())], [Projection(INPUT, "a", conv)])
    assert net.dense_weights(net.projections[0]).shape == (20, 4)
    short = Network(13, [Population("a", 4, NeuronParams())], [Projection(INPUT, "a", conv)])
    with pytest.raises(ConfigError, match=r"connects 20 sources .*sources 4\.\.12 of 20"):
        GoldenChip(short)


# --- the partition ----------------------------------------------------------------------------
CORE = CoreConfig(n_neurons=192, n_inputs=256, n_populations=6, synapse_words=4096,
                  conv_words=512, descriptors=24)
ROUTER = RouterConfig(CORE, cores=3, n_inputs=72)


def _split(seed, assign):
    rng = np.random.default_rng(seed)
    net = _conv_net(rng)
    return rng, net, partition(net, 3, CORE, assign=assign, router=ROUTER)


# (a) | (b, d, e, c) | (f): a's convolutions into b and d enter core 1 at channel 0, the input's
# 1-d convolution into f is core 2's whole input; (a) | (b, d, e, c, f): core 1's channels are the
# 72 host channels (f), then a's 144 neurons (b, d, e at offset 72)
SPLITS = [[0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1]]


@pytest.mark.parametrize("assign", SPLITS)
def test_convolutions_entering_a_core_stay_weight_shared(assign):
    _, net, mp = _split(1, assign)
    convs = {p.dst: p.weights for p in net.projections if isinstance(p.weights, Conv)}
    sub1 = mp.subnets[1]
    offset = 72 if assign[-1] == 1 else 0
    assert mp.channels[1][offset:offset + 144] == [("neuron", g) for g in range(144)]
    for dst in ("b", "d", "e"):
        (proj,) = [p for p in sub1.projections if p.dst == dst]
        w = proj.weights
        assert isinstance(w, Conv) and w.src_offset == offset and w.src_total == sub1.n_inputs
        np.testing.assert_array_equal(w.kernel, convs[dst].kernel)
    # b and d are weight-shared blocks (d: one per group), e (dilated) is unrolled
    shared = [b for b in compile_blocks(sub1, CORE).blocks if isinstance(b, SharedBlock)]
    assert len(shared) == 3 + (assign[-1] == 1)
    assert {b.first for b in shared} >= {offset, offset + 72}  # d's second group
    # the kernels once (per group), not the unrolled boxes: measured 5,697 weight slots over the
    # three cores (most of them the dilated convolution's box), 33,543 with every box unrolled
    slots = sum(len(compile_blocks(s, CORE).slots) for s in mp.subnets)
    unrolled = sum(len(compile_blocks(s, replace(CORE, conv_words=0)).slots) for s in mp.subnets)
    assert slots * 5 < unrolled


def test_a_delayed_input_projection_keeps_its_delay_on_another_core():
    """An input projection into a later core is re-indexed to the core's channels; its delay
    must travel with it (the core's fit check then refuses it: docs/network.md)."""
    p = NeuronParams(threshold=50)
    net = Network(4, [Population("a", 30, p), Population("b", 30, p)],
                  [Projection(INPUT, "a", np.ones((4, 30))),
                   Projection("a", "b", np.ones((30, 30))),
                   Projection(INPUT, "b", np.ones((4, 30)), delay=2)])
    small = CoreConfig(n_neurons=32, n_inputs=64, max_delay=3)
    with pytest.raises(FitError, match="delay"):
        partition(net, 2, small)


def test_the_nmnist_cnn_splits_over_three_cores_with_every_convolution_shared():
    """The N-MNIST-shaped CNN (8,970 neurons, tests/data/nir) on three cores of the conv
    profile's core cut to 4,608 neurons: (conv 1) | (conv 2, conv 3) | (dense, dense), every
    convolution a weight-shared block on its core, about 7,000 routing entries."""
    import os
    import warnings

    from spikeforge.boards.configs import get_board
    from spikeforge.host.nir_import import from_nir
    from spikeforge.host.quantize import quantize

    path = os.path.join(os.path.dirname(__file__), "data", "nir", "sinabs_nmnist_cnn.nir")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = quantize(from_nir(path), calibrate=None).net
    core = replace(get_board("ulx3s-85f-conv").chip.to_core_config(), n_neurons=4608,
                   n_inputs=4608)
    with pytest.raises(FitError, match="needs 3 cores"):
        partition(net, 2, core)
    mp = partition(net, 3, core)
    assert mp.groups == [["1"], ["3", "6"], ["10", "12"]]
    assert [s.n_inputs for s in mp.subnets] == [2312, 4096, 512]
    shared = [sum(isinstance(b, SharedBlock) for b in compile_blocks(s, core).blocks)
              for s in mp.subnets]
    assert shared == [1, 2, 0]  # the last core's layers are dense (the pool folded into them)
    assert 6000 < mp.n_entries < 8000


@pytest.mark.slow
@pytest.mark.parametrize("assign", SPLITS)
def test_multicore_with_convolutions_matches_golden(assign):
    """Real cores and the router (Amaranth simulator): every output spike and every membrane
    of 8 steps, against the golden model of the whole network."""
    from spikeforge.hw.multicore_sim import run_multicore

    rng, net, mp = _split(1, assign)
    events = _events(rng, net.n_inputs)
    res = run_multicore(net, ROUTER, events, mapping=mp)
    gold = GoldenChip(net, "int")
    outs = set(net.output_indices().tolist())
    fired = 0
    for t, evs in enumerate(events):
        spk = gold.step(np.bincount(np.asarray(evs, dtype=np.int64), minlength=net.n_inputs))[0]
        expect = [int(g) for g in np.flatnonzero(spk) if g in outs]
        assert sorted(res["spikes"][t]) == expect, f"step {t}"
        np.testing.assert_array_equal(res["v"][t], gold.v[0], err_msg=f"step {t}")
        fired += len(expect)
    assert fired > 200
    st = res["router"]
    assert st["ROUTE_ERRORS"] == st["DELAY_OVERFLOWS"] == st["EVENTS_REFUSED"] == 0
    assert res["bus_errors"] == 0


# --- the whole chip in Verilator, through the host library ------------------------------------
@pytest.fixture(scope="module")
def two_core_conv_chip(verilator_toolchain):
    """A two-core virtual board whose cores have weight-shared blocks."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.hw.chip import Chip
    from spikeforge.sim.virtual_board import VirtualBoard

    chip = Chip(CORE, 24_000_000, cores=2)  # default core options (a multi-core chip's)
    with VirtualBoard(chip, name="conv_partition_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0, partition_options={"strategy": "balance"})
        yield backend
        backend.close()


@pytest.mark.rtl
@pytest.mark.parametrize("seed", [1, 2])
def test_two_core_chip_runs_a_split_conv_network_like_golden(two_core_conv_chip, seed):
    """Every spike and membrane of every layer, three samples (state reset between them), with
    the network split by the default partition options of the host library."""
    board = two_core_conv_chip
    rng = np.random.default_rng(seed)
    net = _conv_net(rng)
    net = Network(net.n_inputs, net.populations, net.projections,
                  [p.name for p in net.populations])
    board.load(net)
    mp = board.mapping
    assert mp.used_cores == 2
    assert any(isinstance(p.weights, Conv) and p.src == INPUT and p.weights.src_total > 72
               for p in mp.subnets[1].projections)  # a convolution entered core 1 from core 0
    raster = (rng.random((10, 3, net.n_inputs)) < 0.3).astype(np.uint8)
    spikes, v = board.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=3).run(raster, record_v=True)
    np.testing.assert_array_equal(spikes, gold["spikes"])
    np.testing.assert_array_equal(v, gold["v"])
    assert gold["spikes"].sum() > 100
    st = board.chip_status()
    assert st["router_route_errors"] == st["router_delay_overflows"] == 0
