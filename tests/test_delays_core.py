"""Synaptic delays on the neuron core and the chip against the golden model (issue #14 part 4;
``docs/network.md``, "Synaptic delays"; ``docs/core.md``, "Delays").

The golden model is the spec (``tests/test_delays_golden.py`` holds it to a plain reference);
here the core (Amaranth simulator, every option combination) and the whole chip (Verilator
virtual board) must give its spikes and membranes bit for bit, the fit check must refuse what a
core cannot deliver, and IDENTIFY must report the capacity.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from core_golden import assert_core_run_matches_golden
from test_core_unit import _random_net

from spikeforge.errors import FitError
from spikeforge.host.image import check_fit, fit_problems
from spikeforge.host.partition import partition
from spikeforge.hw.chip import IDENT_FIELDS, config_from_ident, ident_words
from spikeforge.hw.core import CoreOptions
from spikeforge.hw.core_sim import run_network
from spikeforge.hw.image import CoreConfig
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection, Sparse
from spikeforge.sim.golden import GoldenChip


def _delay_net(rng, max_delay, n_inputs=10):
    """test_core_unit's three populations with feed-forward, recurrent, backward and
    self-recurrent projections, each with a random delay 0 .. max_delay, two of them between the
    same pair with different delays; input projections without delay (the chip refuses
    those)."""
    def d():
        return int(rng.integers(0, max_delay + 1))

    pops = _random_net(rng, n_inputs).populations
    sparse = Sparse(rows=rng.integers(0, 12, 20), cols=rng.integers(0, 7, 20),
                    weights=rng.integers(-60, 60, 20))  # (repeated pairs add up)
    return Network(
        n_inputs,
        pops,
        [
            Projection(INPUT, "a", rng.integers(-20, 110, (n_inputs, 12))),
            Projection("a", "b", sparse, d()),
            Projection("a", "b", rng.integers(-40, 90, (12, 7)), max_delay),  # the longest
            Projection("b", "c", rng.integers(-128, 128, (7, 5)), d()),
            Projection("c", "a", rng.integers(-60, 60, (5, 12)), d()),  # backward
            Projection("b", "b", rng.integers(-30, 30, (7, 7)), d()),  # self-recurrent
            Projection("a", "c", rng.integers(-50, 80, (12, 5)), max(1, d())),
            Projection(INPUT, "c", rng.integers(-20, 20, (n_inputs, 5))),
        ],
        outputs=["a", "c"],
    )


#: lanes x weight banks x fast build x max_delay: every lane count with and without the fast
#: build (weight banks with it), max_delay 1, 3 and 7 (2, 4 and 8 bitmap banks) in turn; the
#: fast loop runs the first two
DELAY_OPTIONS = [(1, 1, False, 7), (2, 3, True, 3)] + [
    (lanes, 3 if fast else 1, fast, (1, 3, 7)[k % 3])
    for k, (lanes, fast) in enumerate(itertools.product([1, 2, 4], [False, True]))
]


@pytest.mark.parametrize(
    ("lanes", "weight_banks", "fast", "max_delay"),
    [o if k < 2 else pytest.param(*o, marks=pytest.mark.slow)
     for k, o in enumerate(DELAY_OPTIONS)],
)
def test_core_with_delays_matches_golden(lanes, weight_banks, fast, max_delay):
    """Every spike and membrane of 24 steps, with delays up to the core's maximum."""
    rng = np.random.default_rng(10 * max_delay + lanes)
    net = _delay_net(rng, max_delay)
    cfg = CoreConfig(n_neurons=32, n_inputs=10, n_populations=4, synapse_words=512,
                     lanes=lanes, max_delay=max_delay)
    events = [list(rng.permutation(net.n_inputs)[: rng.integers(0, 9)]) for _ in range(24)]
    events[5] = list(range(net.n_inputs))
    events[-6:] = [[]] * 6  # the delayed spikes still arrive after the input stops
    res = run_network(net, cfg, events, weight_banks=weight_banks, fast=fast)
    assert assert_core_run_matches_golden(res, net, events) > 20
    assert res["status"]["PARAM_ERRORS"] == 0


def test_delays_change_what_the_core_does():
    """The same network with its delays set to 0 behaves differently (the test above would
    not notice a core that ignored the delays otherwise)."""
    rng = np.random.default_rng(5)
    net = _delay_net(rng, 7)
    flat = Network(net.n_inputs, net.populations,
                   [Projection(p.src, p.dst, p.weights) for p in net.projections], net.outputs)
    raster = (rng.random((20, 4, net.n_inputs)) < 0.4).astype(np.uint8)
    a = GoldenChip(net, batch=4).run(raster)["spikes"]
    b = GoldenChip(flat, batch=4).run(raster)["spikes"]
    assert not np.array_equal(a, b)


# --- what a core refuses ------------------------------------------------------------------
def test_fit_check_refuses_delays_the_core_cannot_deliver():
    rng = np.random.default_rng(1)
    net = _delay_net(rng, 7)
    short = CoreConfig(n_neurons=32, n_inputs=10, n_populations=4, synapse_words=512,
                       max_delay=3)
    text = "\n".join(fit_problems(net, short))
    assert "projection a->b has a delay of 7 steps, the core delivers delays up to 3" in text
    none = CoreConfig(n_neurons=32, n_inputs=10, n_populations=4, synapse_words=512)
    assert "the core has no delays (max_delay = 0" in "\n".join(fit_problems(net, none))
    check_fit(net, CoreConfig(n_neurons=32, n_inputs=10, n_populations=4, synapse_words=512,
                              max_delay=7))
    delayed_input = Network(4, [Population("a", 3, NeuronParams(threshold=10))],
                            [Projection(INPUT, "a", np.ones((4, 3), dtype=int), 2)])
    with pytest.raises(FitError, match=r"input->a has a delay of 2 steps.*keeps no history"):
        check_fit(delayed_input, CoreConfig(max_delay=7))


def test_partition_keeps_delayed_projections_within_a_core():
    pops = [Population(n, 8, NeuronParams(threshold=10)) for n in "abc"]
    net = Network(4, pops, [Projection(INPUT, "a", np.ones((4, 8), dtype=int)),
                            Projection("a", "b", np.ones((8, 8), dtype=int), 2),
                            Projection("b", "c", np.ones((8, 8), dtype=int))])
    cfg = CoreConfig(n_neurons=16, n_inputs=16, n_populations=2, synapse_words=256,
                     max_delay=3)
    mapping = partition(net, 2, cfg, assign=[0, 0, 1])  # a, b together: fine
    assert mapping.groups == [["a", "b"], ["c"]]
    with pytest.raises(FitError, match=r"a->b has a delay of 2 steps and would cross cores"):
        partition(net, 2, cfg, assign=[0, 1, 1])


def test_identify_reports_max_delay():
    cfg = CoreConfig(max_delay=7)
    assert config_from_ident(ident_words(cfg)).max_delay == 7
    # a bitstream from before delays reports no max_delay: a core without delays
    old = ident_words(CoreConfig())
    assert len(old) == IDENT_FIELDS.index("max_delay")  # a core without delays omits it
    assert config_from_ident(old).max_delay == 0


# --- the whole chip ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def delay_chip(verilator_toolchain):
    """A virtual board whose core delivers delays up to 7 steps (the ULX3S's options)."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.hw.chip import Chip
    from spikeforge.sim.virtual_board import VirtualBoard

    cfg = CoreConfig(n_neurons=64, n_inputs=16, n_populations=4, synapse_words=1024, lanes=2,
                     max_delay=7)
    chip = Chip(cfg, 24_000_000, options=CoreOptions(fast=True, weight_banks=3))
    with VirtualBoard(chip, name="delay_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0)
        yield backend
        backend.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chip_with_random_delays_matches_golden(delay_chip, seed):
    """Random delays 0..7; several samples, each after a state reset, so spikes still in flight
    at the end of a sample must be forgotten."""
    assert delay_chip.config.max_delay == 7
    rng = np.random.default_rng(seed)
    net = _delay_net(rng, 7, n_inputs=16)
    delay_chip.load(net)
    raster = (rng.random((14, 3, net.n_inputs)) < rng.uniform(0.2, 0.5)).astype(np.uint8)
    spikes, v = delay_chip.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=3).run(raster, record_v=True)
    outs = net.output_indices()
    np.testing.assert_array_equal(spikes[..., outs], gold["spikes"][..., outs])
    np.testing.assert_array_equal(v, gold["v"])
    assert gold["spikes"][..., outs].any()
    # the streamed path (RUN, many samples in flight) gives the same spikes
    np.testing.assert_array_equal(delay_chip.run(raster)[..., outs], gold["spikes"][..., outs])
