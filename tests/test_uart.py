# Bit-level tests of the 8N1 UART (hw/uart.py), spec docs/protocol.md "Physical layer".
import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from stream_tb import send

from spikeforge.errors import ConfigError
from spikeforge.hw.link import Link
from spikeforge.hw.uart import MIN_DIVISOR, UARTRx, UARTTx, uart_divisor
from spikeforge.protocol import FrameDecoder, Op, request


def loopback(clk, baud, data, ready_p=1.0, seed=0):
    """UARTTx -> UARTRx; return (received bytes, framing errors, overruns, cycles)."""
    m = Module()
    m.submodules.tx = tx = UARTTx(clk, baud)
    m.submodules.rx = rx = UARTRx(clk, baud)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    sim.add_clock(1 / clk)
    got, errs = [], {"fe": 0, "ov": 0, "cycles": 0}
    rng = random.Random(seed)

    async def src(ctx):
        await send(ctx, tx.data, data)

    async def sink(ctx):
        for _ in range((len(data) + 2) * 11 * tx.divisor):
            ctx.set(rx.data.ready, rng.random() < ready_p)
            _, _, v, r, p, fe, ov = await ctx.tick().sample(
                rx.data.valid, rx.data.ready, rx.data.payload, rx.framing_error, rx.overrun
            )
            if v and r:
                got.append(p)
            errs["fe"] += fe
            errs["ov"] += ov
            errs["cycles"] += 1

    sim.add_testbench(src)
    sim.add_testbench(sink)
    sim.run()
    return got, errs["fe"], errs["ov"]


@pytest.mark.parametrize(
    "clk,baud",
    [
        (48_000_000, 3_000_000),
        (12_000_000, 3_000_000),
        (25_000_000, 1_000_000),
        pytest.param(12_000_000, 115_200, marks=pytest.mark.slow),  # 100+ clocks per bit
    ],
)
def test_loopback_back_to_back(clk, baud):
    rng = random.Random(baud)
    data = [0x00, 0xFF, 0x55, 0xAA, 0x80, 0x01] + [rng.randrange(256) for _ in range(20)]
    got, fe, ov = loopback(clk, baud, data)
    assert got == data
    assert fe == 0 and ov == 0


def test_transmitter_timing_is_exact():
    """Every bit of a byte lasts exactly ``divisor`` cycles: start, 8 data LSB first, stop."""
    clk, baud = 48_000_000, 3_000_000
    tx = UARTTx(clk, baud)
    sim = Simulator(tx)
    sim.add_clock(1 / clk)
    line = []

    async def bench(ctx):
        ctx.set(tx.data.valid, 1)
        ctx.set(tx.data.payload, 0xA5)
        await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)
        for _ in range(11 * tx.divisor):
            _, _, v = await ctx.tick().sample(tx.tx)
            line.append(v)

    sim.add_testbench(bench)
    sim.run()
    d = tx.divisor
    bits = [line[i * d : (i + 1) * d] for i in range(10)]
    assert all(len(set(b)) == 1 for b in bits)
    values = [b[0] for b in bits]
    assert values == [0] + [(0xA5 >> i) & 1 for i in range(8)] + [1]


def drive_line(clk, baud, frames, ready=True):
    """Drive the RX pin with explicit bit patterns (``frames``: lists of line levels per bit)."""
    rx = UARTRx(clk, baud)
    sim = Simulator(rx)
    sim.add_clock(1 / clk)
    got, fe, ov = [], [0], [0]

    async def bench(ctx):
        ctx.set(rx.data.ready, ready)
        ctx.set(rx.rx, 1)
        for _ in range(3 * rx.divisor):
            await ctx.tick()
        for levels in frames:
            for level in levels:
                ctx.set(rx.rx, level)
                for _ in range(rx.divisor):
                    _, _, v, p, f, o = await ctx.tick().sample(
                        rx.data.valid, rx.data.payload, rx.framing_error, rx.overrun
                    )
                    if v and ready:
                        got.append(p)
                    fe[0] += f
                    ov[0] += o
        ctx.set(rx.rx, 1)
        for _ in range(3 * rx.divisor):
            _, _, v, p, f, o = await ctx.tick().sample(
                rx.data.valid, rx.data.payload, rx.framing_error, rx.overrun
            )
            if v and ready:
                got.append(p)
            fe[0] += f
            ov[0] += o

    sim.add_testbench(bench)
    sim.run()
    return got, fe[0], ov[0]


def byte_bits(b, stop=1):
    return [0] + [(b >> i) & 1 for i in range(8)] + [stop]


def test_framing_error_is_counted_and_byte_dropped():
    frames = [byte_bits(0x12), byte_bits(0x34, stop=0), [1], byte_bits(0x56)]
    got, fe, ov = drive_line(48_000_000, 3_000_000, frames)
    assert got == [0x12, 0x56]
    assert fe == 1 and ov == 0


def test_break_condition_is_one_framing_error():
    # The line held low for 30 bit times: one framing error, then the receiver waits for idle.
    frames = [[0] * 30, [1, 1], byte_bits(0x77)]
    got, fe, _ = drive_line(48_000_000, 3_000_000, frames)
    assert got == [0x77]
    assert fe == 1


def test_glitch_is_not_a_start_bit():
    clk, baud = 48_000_000, 1_000_000
    rx = UARTRx(clk, baud)
    sim = Simulator(rx)
    sim.add_clock(1 / clk)
    seen = []

    async def bench(ctx):
        ctx.set(rx.data.ready, 1)
        ctx.set(rx.rx, 1)
        for _ in range(10):
            await ctx.tick()
        ctx.set(rx.rx, 0)  # a 3-cycle glitch, far shorter than half a bit
        for _ in range(3):
            await ctx.tick()
        ctx.set(rx.rx, 1)
        for _ in range(20 * rx.divisor):
            _, _, v, f = await ctx.tick().sample(rx.data.valid, rx.framing_error)
            seen.append((v, f))

    sim.add_testbench(bench)
    sim.run()
    assert not any(v or f for v, f in seen)


def test_overrun_keeps_the_waiting_byte():
    frames = [byte_bits(0x11), byte_bits(0x22), byte_bits(0x33)]
    rx_got, fe, ov = drive_line(48_000_000, 3_000_000, frames, ready=False)
    assert ov == 2 and fe == 0


def test_baud_tolerance():
    """The receiver takes a transmitter 4 % fast or slow (the other end's error budget)."""
    clk, baud = 48_000_000, 1_000_000
    rx = UARTRx(clk, baud)
    for skew in (0.96, 1.04):
        sim = Simulator(rx)
        sim.add_clock(1 / clk)
        got = []
        bit_cycles = round(rx.divisor * skew)

        async def bench(ctx, bit_cycles=bit_cycles, got=got):
            ctx.set(rx.data.ready, 1)
            ctx.set(rx.rx, 1)
            for _ in range(10):
                await ctx.tick()
            for b in (0x5A, 0xC3, 0x0F):
                for level in byte_bits(b):
                    ctx.set(rx.rx, level)
                    for _ in range(bit_cycles):
                        _, _, v, p = await ctx.tick().sample(rx.data.valid, rx.data.payload)
                        if v:
                            got.append(p)
            ctx.set(rx.rx, 1)
            for _ in range(2 * rx.divisor):
                _, _, v, p = await ctx.tick().sample(rx.data.valid, rx.data.payload)
                if v:
                    got.append(p)

        sim.add_testbench(bench)
        sim.run()
        assert got == [0x5A, 0xC3, 0x0F], skew


def test_divisor_config_errors():
    assert uart_divisor(48_000_000, 3_000_000) == 16
    assert uart_divisor(12_000_000, 3_000_000) == MIN_DIVISOR
    with pytest.raises(ConfigError, match="at least 4"):
        UARTRx(12_000_000, 4_000_000)
    with pytest.raises(ConfigError, match="off"):
        UARTTx(25_000_000, 3_000_000)  # divisor 8.33 -> 8: 4.2 % fast
    with pytest.raises(ConfigError, match="baud"):
        uart_divisor(48_000_000, 0)


def test_link_behind_uart_pins():
    """IDENTIFY and STATUS over real UART bit timing: host UART -> pins -> UARTRx -> Link."""
    clk, baud = 12_000_000, 3_000_000  # the iCEBreaker's clock, the smallest divisor
    m = Module()
    m.submodules.h_tx = h_tx = UARTTx(clk, baud)  # the host side
    m.submodules.h_rx = h_rx = UARTRx(clk, baud)
    m.submodules.rx = rx = UARTRx(clk, baud)  # the chip side
    m.submodules.tx = tx = UARTTx(clk, baud)
    m.submodules.link = link = Link(clk_freq=clk, ident_words=[5])
    m.d.comb += [
        rx.rx.eq(h_tx.tx),
        h_rx.rx.eq(tx.tx),
        link.rx.valid.eq(rx.data.valid),
        link.rx.payload.eq(rx.data.payload),
        rx.data.ready.eq(link.rx.ready),
        link.rx_framing_error.eq(rx.framing_error),
        link.rx_overrun.eq(rx.overrun),
        tx.data.valid.eq(link.tx.valid),
        tx.data.payload.eq(link.tx.payload),
        link.tx.ready.eq(tx.data.ready),
    ]
    wire = b"\x00" + request(Op.IDENTIFY, 1) + request(Op.STATUS, 2)
    out = bytearray()
    sim = Simulator(m)
    sim.add_clock(1 / clk)

    async def host_tx(ctx):
        await send(ctx, h_tx.data, wire)

    async def host_rx(ctx):
        ctx.set(h_rx.data.ready, 1)
        for _ in range((len(wire) + 120) * 11 * 4):
            _, _, v, p = await ctx.tick().sample(h_rx.data.valid, h_rx.data.payload)
            if v:
                out.append(p)

    sim.add_testbench(host_tx)
    sim.add_testbench(host_rx)
    sim.run()
    bodies = list(FrameDecoder().feed(bytes(out)))
    assert [b[:2] for b in bodies] == [bytes((Op.IDENTIFY.value, 1)), bytes((Op.STATUS.value, 2))]
    assert bodies[0][-5:] == bytes((5, 0, 0, 0, 0))  # the capability word 5, then status OK
    words = [int.from_bytes(bodies[1][2 + 4 * i : 6 + 4 * i], "little") for i in range(10)]
    assert words[:4] == [0, 0, 0, 0]  # no CRC, framing or overrun errors, nothing oversize
