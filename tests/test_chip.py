"""The whole chip (link + core) against the golden model, through the host library.

Spec: docs/network.md, docs/neuron.md (what the chip computes), docs/protocol.md (the link).
The virtual board (Verilator) runs the chip RTL; the host library drives it over ``socket://``
exactly as it drives a board.  One test goes through the bit-level UART PHY in the Amaranth
simulator.
"""

import numpy as np
import pytest

from spikeforge.errors import ConfigError, FitError
from spikeforge.hw.chip import Chip, UARTChip, config_from_ident, ident_words
from spikeforge.hw.image import CoreConfig, Region, address
from spikeforge.sim.golden import GoldenChip
from spikeforge.sim.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.spec import Format

CONFIG = CoreConfig(n_neurons=96, n_inputs=48, n_populations=4, synapse_words=4096)
CLK = 24_000_000


@pytest.fixture(scope="module")
def board(verilator_toolchain):
    """One virtual board for the module: the chip is built once and reloaded per test."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(Chip(CONFIG, CLK), name="chip_test") as vb:
        backend = ChipBackend(vb.url, timeout=5.0)
        yield backend
        backend.close()


def _random_network(seed):
    """A random multi-population network (feed-forward, recurrent, backward) that fits CONFIG."""
    from rtl.core_tb import random_network

    rng = np.random.default_rng(seed)
    for _ in range(100):
        net = random_network(rng, CONFIG)  # None when the draw does not fit
        if net is not None:
            return net
    raise AssertionError("no random network fitted CONFIG in 100 draws")


def test_identify_reports_the_configuration(board):
    assert board.config == CONFIG
    assert board.identity.clk_hz == CLK
    assert config_from_ident(ident_words(CONFIG)) == CONFIG


def test_ident_words_refuse_an_old_bitstream():
    with pytest.raises(ConfigError, match="capability words"):
        config_from_ident([1, 2, 3])


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_random_networks_match_golden_spike_for_spike_and_membrane_for_membrane(board, seed):
    net = _random_network(seed)
    rng = np.random.default_rng(seed + 100)
    raster = (rng.random((12, 2, net.n_inputs)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
    board.load(net)
    spikes, v = board.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=2).run(raster)
    out = net.output_indices()
    assert np.array_equal(spikes[:, :, out], gold["spikes"][:, :, out])
    assert np.array_equal(v, gold["v"])


def test_reset_state_clears_membranes_and_pending_recurrent_spikes(board):
    # a0 fires on input; its recurrent synapse alone would make a1 fire one step later
    params = NeuronParams(leak="none", threshold=5, reset="none")
    net = Network(
        1,
        [Population("a", 2, params)],
        [Projection(INPUT, "a", np.array([[10, 0]])),
         Projection("a", "a", np.array([[0, 6], [0, 0]]))],
        outputs=["a"],
    )
    board.load(net)
    two_steps = board.run(np.array([[[1]], [[0]]]))
    assert two_steps[:, 0].tolist() == [[True, False], [True, True]]
    board.run(np.array([[[1]]]))  # a0 fires: a recurrent spike to a1 is now pending
    assert board.read_membrane().tolist() == [10, 0]
    # a neuron the network does not use keeps what it holds: the reset clears neurons 0, 1 only
    board.device.write_mem(address(Region.V) + 5, [123])
    board.device.reset_state()
    assert board.read_membrane().tolist() == [0, 0]
    assert board.device.read_mem(address(Region.ACC), 2) == [0, 0]
    assert board.device.read_mem(address(Region.V) + 5, 1) == [123]
    assert board.device.step(1) == [[]]  # the pending spike was forgotten
    assert board.read_membrane().tolist() == [0, 0]


def test_core_status_counts_steps_and_the_cycles_of_the_last_step(board):
    net = _random_network(31)
    board.load(net)
    before = board.chip_status()
    idle = np.zeros((3, 1, net.n_inputs), dtype=np.uint8)
    board.run(idle)
    first = board.chip_status()
    board.run(idle)
    second = board.chip_status()
    assert first["core_steps"] - before["core_steps"] == 3
    assert second["core_steps"] - first["core_steps"] == 3
    # an idle step sweeps every neuron once: deterministic, and at least one clock per neuron
    assert first["core_last_step_cycles"] == second["core_last_step_cycles"] >= net.n_neurons
    assert second["core_events_refused"] == before["core_events_refused"]


def test_a_network_that_does_not_fit_is_refused_before_anything_is_written(board):
    too_big = Network(
        CONFIG.n_inputs + 1,
        [Population("h", CONFIG.n_neurons + 5, NeuronParams(beta=4000, threshold=100))],
        [Projection(INPUT, "h", np.ones((CONFIG.n_inputs + 1, CONFIG.n_neurons + 5), int))],
    )
    before = board.device.read_mem(address(Region.THR), 4)
    with pytest.raises(FitError) as exc:
        board.load(too_big)
    text = str(exc.value)
    assert "101 neurons, the core holds 96" in text
    assert "49 input channels, the core takes 48" in text
    assert board.device.read_mem(address(Region.THR), 4) == before


def test_a_disconnect_in_the_middle_of_a_run_is_survived(board):
    """The host vanishes mid-STEP: the chip finishes the step, and the next client is served."""
    import serial

    from spikeforge.protocol import Op, encode_items, request, run_items

    net = _random_network(21)
    board.load(net)
    board.device.close()
    raw = serial.serial_for_url(board.url, timeout=2.0)
    items = run_items([range(net.n_inputs)] + [[]] * 39, reset=True)
    raw.write(request(Op.RUN, 1, encode_items(items)))
    raw.read(3)  # part of a reply at most, then the cable is pulled
    raw.close()
    board.reconnect()
    status = board.device.status()
    assert status["crc_errors"] == 0 and not status["busy"]
    rng = np.random.default_rng(5)
    raster = (rng.random((8, 1, net.n_inputs)) < 0.4).astype(np.uint8)
    spikes = board.run(raster)
    gold = GoldenChip(net, "int").run(raster)["spikes"]
    out = GoldenChip(net, "int").output_indices
    assert np.array_equal(spikes[:, :, out], gold[:, :, out])


@pytest.mark.needs("nir", "sklearn")  # the bundled model on the digits
def test_the_demo_runs_on_the_virtual_board_and_agrees_with_golden(board):
    from spikeforge.host.demo import run_demo

    big = CoreConfig(n_neurons=160, n_inputs=64, n_populations=2, synapse_words=8192)
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(Chip(big, CLK), name="chip_demo") as vb:
        with ChipBackend(vb.url, timeout=5.0) as backend:
            res = run_demo(backend, samples=12, progress=False)
    assert res["spike_agreement"] == 1.0
    assert res["accuracy_chip"] == res["accuracy_golden"]
    assert res["samples"] == 12


@pytest.mark.slow
def test_bit_level_uart_identify_in_the_amaranth_simulator():
    """IDENTIFY through the real UART PHY: host bytes -> UART bits -> chip -> UART bits."""
    from amaranth.hdl import Module
    from amaranth.sim import Simulator
    from stream_tb import send

    from spikeforge.hw.uart import UARTRx, UARTTx
    from spikeforge.protocol import FrameDecoder, Op, Status, request

    clk, baud = 1_200_000, 300_000  # 4 clocks per bit: the UART's smallest divisor
    tiny = CoreConfig(n_neurons=8, n_inputs=4, n_populations=1, synapse_words=16,
                      fmt=Format())
    m = Module()
    m.submodules.chip = chip = UARTChip(tiny, clk, baud)
    m.submodules.host_tx = host_tx = UARTTx(clk, baud)
    m.submodules.host_rx = host_rx = UARTRx(clk, baud)
    m.d.comb += [chip.rx.eq(host_tx.tx), host_rx.rx.eq(chip.tx)]

    frame = request(Op.IDENTIFY, 1)
    received = bytearray()

    async def testbench(ctx):
        await send(ctx, host_tx.data, frame)
        ctx.set(host_rx.data.ready, 1)
        for _ in range(40_000):
            await ctx.tick()
            if ctx.get(host_rx.data.valid):
                received.append(ctx.get(host_rx.data.payload))
                if received[-1] == 0 and len(received) > 8:
                    break

    sim = Simulator(m)
    sim.add_clock(1 / clk)
    sim.add_testbench(testbench)
    sim.run()
    frames = [f for f in FrameDecoder().feed(bytes(received)) if isinstance(f, bytes)]
    assert frames, f"no good reply frame in {bytes(received)!r}"
    body = frames[-1]
    op, seq, payload, status = body[0], body[1], body[2:-1], body[-1]
    assert (op, seq, status) == (Op.IDENTIFY.value, 1, Status.OK.value)
    words = np.frombuffer(payload, dtype="<u4").tolist()
    assert config_from_ident(words[5:]) == tiny
