# Tests of the gateware host link (hw/link.py) against its reference (host/refdevice.py),
# spec docs/protocol.md: the same bytes into both give the same reply bytes, the same counters
# and the same effect on the core.
import random
import struct

import pytest
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from spikeforge.errors import ConfigError
from spikeforge.host.device import Device, DeviceError, StepLostError
from spikeforge.host.refdevice import RefCore, RefLink
from spikeforge.host.transport import AmaranthSimDevice
from spikeforge.hw.link import Link
from spikeforge.protocol import (
    ADDR_BITS,
    LINK_COUNTERS,
    MAX_FRAME,
    MAX_REPLY_ITEMS,
    MAX_RUN_ITEMS,
    PROTOCOL_VERSION,
    REPLY_MARK,
    RUN_COMMAND,
    RUN_RESET,
    RUN_STEP_AFTER,
    FrameDecoder,
    Identity,
    Op,
    Status,
    cobs_encode,
    crc16,
    decode_identify,
    decode_items,
    decode_run_reply,
    decode_status,
    decode_words,
    encode_frame,
    encode_items,
    encode_read,
    encode_write,
    request,
    run_items,
)

CLK = 48_000_000
IDENT = [0xDEADBEEF, 7, 1 << 31]


class SimLink:
    """The gateware Link in the Amaranth simulator, with a fake memory slave and a fake core.

    The fake core is a :class:`RefCore` driven through the Link's ports: it records events, runs
    a step on each ``step`` pulse and streams its spikes out, then pulses ``done``.  Ready/valid
    handshakes stall at random (seeded).  Speaks bytes through ``write`` / ``read`` like
    ``RefLink``, so it also works behind ``InProcessTransport``.
    """

    def __init__(self, core=None, *, seed=0, step_timeout=None, stall=True, **kwargs):
        self.core = core or RefCore()
        kwargs.setdefault("ident_words", IDENT)
        kwargs.setdefault("n_core_status", 2)
        self.dut = Link(clk_freq=CLK, step_timeout=step_timeout, **kwargs)
        self.rng = random.Random(seed)
        self.stall = stall
        self.inq = bytearray()
        self.out = bytearray()
        self.cycles = 0
        self.hang = False  # the fake core never finishes a step (for the timeout test)
        self.slow_core = 0  # a step takes at least this many cycles
        self.idle_for = 0  # cycles the link has been idle
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1 / CLK)
        self.sim.add_testbench(self._bench)
        self._busy_until = 0

    def _maybe(self, p):
        return not self.stall or self.rng.random() < p

    async def _bench(self, ctx):
        d, core, rng = self.dut, self.core, self.rng
        rx_valid = False
        read_resp = []  # [(cycle, data)]
        spikes = []
        spike_valid = False
        step_running = False
        done_next = False
        finish = False  # the step's spikes are out: done once ``step_end`` is reached
        step_end = 0
        while True:
            # --- drive inputs for this cycle ---
            if not rx_valid and self.inq and self._maybe(0.7):
                rx_valid = True
            ctx.set(d.rx.valid, rx_valid)
            ctx.set(d.rx.payload, self.inq[0] if rx_valid else 0)
            ctx.set(d.tx.ready, self._maybe(0.6))
            ctx.set(d.bus.ready, self._maybe(0.5))
            ctx.set(d.events.ready, self._maybe(0.5))
            if read_resp and read_resp[0][0] <= self.cycles:
                ctx.set(d.bus.r_valid, 1)
                ctx.set(d.bus.r_data, read_resp.pop(0)[1])
            else:
                ctx.set(d.bus.r_valid, 0)
            if not spike_valid and spikes and self._maybe(0.5):
                spike_valid = True
            ctx.set(d.spikes.valid, spike_valid)
            ctx.set(d.spikes.payload, spikes[0] if spike_valid else 0)
            if finish and self.cycles >= step_end:
                done_next, finish = True, False
            ctx.set(d.done, done_next)
            if done_next:
                step_running = False
            done_next = False
            ctx.set(d.busy, step_running or self.cycles < self._busy_until)
            for i, w in enumerate(core.status_words()[: self.dut.n_core_status]):
                ctx.set(d.core_status[i], w)
            # the slave's error answer depends on the request being offered in this cycle
            addr = ctx.get(d.bus.addr)
            ctx.set(d.bus.error, addr >= len(core.mem))

            (
                _,
                _,
                rx_ready,
                tx_valid,
                tx_data,
                tx_ready,
                w_en,
                r_en,
                b_ready,
                b_addr,
                w_data,
                ev_valid,
                ev_ready,
                ev_data,
                step,
                reset_state,
                sp_ready,
                idle,
            ) = await ctx.tick().sample(
                d.rx.ready,
                d.tx.valid,
                d.tx.payload,
                d.tx.ready,
                d.bus.w_en,
                d.bus.r_en,
                d.bus.ready,
                d.bus.addr,
                d.bus.w_data,
                d.events.valid,
                d.events.ready,
                d.events.payload,
                d.step,
                d.reset_state,
                d.spikes.ready,
                d.idle,
            )
            self.cycles += 1
            self.idle_for = self.idle_for + 1 if idle else 0
            if rx_valid and rx_ready:
                del self.inq[0]
                rx_valid = False
            if tx_valid and tx_ready:
                self.out.append(tx_data)
            assert not (w_en and r_en)
            if w_en and b_ready:
                core.bus_write(b_addr, w_data)
            if r_en and b_ready:
                data, _ = core.bus_read(b_addr)
                read_resp.append((self.cycles + rng.randrange(0, 3), data))
            if ev_valid and ev_ready:
                core.event(ev_data)
            if spike_valid and sp_ready:
                spikes.pop(0)
                spike_valid = False
                if not spikes:
                    finish = True
            if step:
                assert not step_running, "step pulsed while the core was busy"
                step_running = True
                step_end = self.cycles + self.slow_core
                spikes = core.step()
                if self.hang:
                    spikes = []
                elif not spikes:
                    finish = True
            if reset_state:
                core.reset_state()
                self._busy_until = self.cycles + 3

    # --- byte interface (as RefLink) ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.inq += data

    def read(self, quiet: int = 400, limit: int = 300_000) -> bytes:
        """Run until the input is consumed, the link is idle and no byte came out for
        ``quiet`` cycles."""
        start = self.cycles
        last_len, last_change = len(self.out), self.cycles
        while self.cycles - start < limit:
            self.sim.run_until((self.cycles + 100) / CLK)
            if len(self.out) != last_len:
                last_len, last_change = len(self.out), self.cycles
            if not self.inq and self.cycles - last_change >= quiet and self.idle_for > 20:
                break
        out = bytes(self.out)
        self.out.clear()
        return out


def both(data: bytes, **kwargs):
    """Feed ``data`` to the gateware and to the reference; return both replies and links."""
    sim = SimLink(seed=len(data), **kwargs)
    ref = RefLink(RefCore(), clk_hz=CLK, ident_words=IDENT)
    sim.write(data)
    ref.write(data)
    return sim.read(), ref.read(), sim, ref


def frames(data: bytes):
    return list(FrameDecoder().feed(data))


def status_words(link_out: bytes):
    body = frames(link_out)[-1]
    return struct.unpack(f"<{(len(body) - 3) // 4}I", body[2:-1])


def run_reply(bodies, seq):
    """The decoded items of the RUN reply frames to ``seq``: per timestep, its spikes."""
    items = []
    for b in bodies:
        if b[0] == Op.RUN.value and b[1] == seq:
            items += decode_items(b[2:-1])
    r = decode_run_reply(items)
    assert r.open_step == []
    return r.steps


@pytest.mark.slow
@pytest.mark.parametrize("fast", [False, True])
def test_every_command_round_trip(fast):
    """Every command against the reference; with ``fast`` (the fast build's skid buffers and
    registered range check) the replies are the same bytes."""
    rng = random.Random(1)
    words = [rng.randrange(1 << 32) for _ in range(20)]
    evs = [rng.randrange(1 << 14) for _ in range(300)]
    # 300 events then one step: more spikes than a reply frame holds (MORE frames)
    first = evs[:MAX_RUN_ITEMS]
    second = evs[MAX_RUN_ITEMS:-1] + [evs[-1] | RUN_STEP_AFTER, RUN_COMMAND | 5]
    data = b"".join(
        [
            request(Op.IDENTIFY, 1),
            request(Op.WRITE, 2, struct.pack("<I20I", 10, *words)),
            request(Op.READ, 3, struct.pack("<IH", 8, 24)),
            request(Op.RUN, 4, encode_items(first)),
            request(Op.RUN, 5, encode_items(second)),
            request(Op.RESET_STATE, 6),
            request(Op.RUN, 7, b""),
            request(Op.RUN, 8, encode_items([RUN_COMMAND | 2, 7 | RUN_STEP_AFTER, RUN_RESET])),
            request(Op.READ, 9, struct.pack("<IH", 1020, 8)),  # runs past the memory: bus error
            request(Op.WRITE, 10, struct.pack("<I2I", 1023, 5, 6)),  # second word refused
            request(Op.STATUS, 11),
        ]
    )
    got, ref, sim, refl = both(data, fast=fast)
    assert got == ref
    bodies = frames(got)
    assert all(isinstance(b, bytes) for b in bodies)
    run5 = [b for b in bodies if b[:2] == bytes((Op.RUN.value, 5))]
    assert [b[-1] for b in run5] == [Status.MORE.value, Status.OK.value]
    assert len(run5[0]) == 2 + 2 * MAX_REPLY_ITEMS + 1
    steps = run_reply(bodies, 5)
    assert len(steps) == 6
    assert steps[0] == RefCore().spikes_for(0, evs)
    assert steps[1:] == [[], [], [], [RefCore().spikes_for(4, [])[0]], []]
    assert run_reply(bodies, 4) == []  # events only: no timestep, an empty reply
    assert run_reply(bodies, 7) == []
    assert run_reply(bodies, 8) == [[], RefCore().spikes_for(1, []), RefCore().spikes_for(2, [7])]
    assert sim.core.mem == refl.core.mem
    assert sim.core.events_log == refl.core.events_log
    assert sim.core.events_log[:6] == [evs, [], [], [], [], []]
    assert sim.core.resets == refl.core.resets == 2
    assert sim.core.mem[10:30] == words
    st = status_words(got)
    names = [n for n, _ in LINK_COUNTERS]
    assert st[names.index("bus_errors")] == 4 + 1
    assert st[len(names) :] == (0, 0)  # core: t reset to 0 by the last RUN's reset item
    # the gateware's replies, read with the protocol's decoders
    assert decode_identify(bodies[0][2:-1]) == Identity(
        PROTOCOL_VERSION, MAX_FRAME, CLK, 2 * MAX_FRAME, tuple(IDENT)
    )
    assert decode_words(bodies[2][2:-1]) == (0, 0, *words, 0, 0)
    status = decode_status(bodies[-1][2:-1])
    assert status["bus_errors"] == 5 and status["busy"] is False and status["core"] == [0, 0]


def test_requests_built_by_the_encoders():
    """The protocol's request encoders against the gateware and the reference."""
    rng = random.Random(7)
    words = [rng.randrange(1 << 32) for _ in range(5)]
    steps = [[rng.randrange(1 << 14) for _ in range(rng.randrange(0, 4))] for _ in range(12)]
    steps[3] = steps[4] = steps[5] = []
    data = b"".join(
        [
            request(Op.WRITE, 1, encode_write(3, words)),
            request(Op.READ, 2, encode_read(2, 7)),
            request(Op.RUN, 3, encode_items(run_items(steps, reset=True))),
        ]
    )
    got, ref, sim, _ = both(data)
    assert got == ref
    bodies = frames(got)
    assert [Status(b[-1]) for b in bodies] == [Status.OK] * 3
    assert decode_words(bodies[1][2:-1]) == (0, *words, 0)
    gold = RefCore()
    assert run_reply(bodies, 3) == [gold.spikes_for(t, ev) for t, ev in enumerate(steps)]
    assert sim.core.events_log == steps


@pytest.mark.parametrize("fast", [False, True])
def test_bad_requests_change_nothing_and_are_counted(fast):
    good_run = request(Op.RUN, 3, struct.pack("<2H", 1, 2))
    bad = [
        b"\x00\x13\x37\x42\x99\x00",  # garbage
        good_run[:-6] + b"\x00",  # truncated frame
        bytes([good_run[0], good_run[1] ^ 0x10]) + good_run[2:],  # flipped bit: CRC error
        request(Op.WRITE, 4, struct.pack("<I", 5) + b"\x01\x02"),  # length not a word multiple
        # past the bus: BAD_ARG
        request(Op.WRITE, 5, struct.pack("<I2I", (1 << ADDR_BITS) - 1, 1, 2)),
        request(Op.READ, 6, struct.pack("<IH", 0, 1000)),  # more than a reply holds: BAD_ARG
        request(Op.RUN, 7, b"\x01\x02\x03"),  # bad length
        bytes([0x7F]),  # (placeholder, replaced below)
        cobs_encode(bytes(MAX_FRAME + 40)) + b"\x00",  # oversize
        b"\x05\x01\x00",  # malformed COBS (block runs past the delimiter)
        overlong_block(bytes((Op.RUN.value, 20, 5, 5))),  # right CRC, COBS block cut short
        b"\x02\x01\x00",  # runt
    ]
    unknown = bytes((0x06, 8))  # the opcode of version 1's STEP
    crc = crc16(unknown)
    bad[7] = cobs_encode(unknown + bytes((crc >> 8, crc & 0xFF))) + b"\x00"
    # a reserved item is skipped (BAD_ARG), the others are executed
    # (refused requests are not remembered: 7 follows the last accepted one, 6)
    data = b"".join(bad) + request(Op.RUN, 7, struct.pack("<4H", 7, 0xC123, 8, 9))
    data += request(Op.STATUS, 10)
    got, ref, sim, refl = both(data, fast=fast)
    assert got == ref
    bodies = [b for b in frames(got)]
    assert [(b[1], b[-1]) for b in bodies] == [
        (4, Status.BAD_LENGTH.value),
        (5, Status.BAD_ARG.value),
        (6, Status.BAD_ARG.value),
        (7, Status.BAD_LENGTH.value),
        (8, Status.UNKNOWN_OP.value),
        (7, Status.BAD_ARG.value),
        (10, Status.OK.value),
    ]
    assert sim.core.pending == [7, 8, 9]  # only the good RUN frame's events reached the core
    assert sim.core.mem == [0] * len(sim.core.mem)
    st = dict(zip([n for n, _ in LINK_COUNTERS], status_words(got), strict=False))
    assert st["crc_errors"] == 6  # garbage, truncated, flipped, 2 malformed, runt
    assert st["oversize"] == 1
    assert st["unknown_op"] == 1
    assert st["bad_length"] == 5


def overlong_block(body):
    """A frame whose bytes and CRC are right but whose last COBS block claims one byte more."""
    enc = bytearray(encode_frame(body)[:-1])
    assert enc[0] == len(enc)  # one block: no zero in body + CRC
    enc[0] += 1
    return bytes(enc) + b"\x00"


@pytest.mark.slow
def test_random_bytes_then_good_frame():
    rng = random.Random(5)
    for trial in range(3):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 700)))
        data = junk + b"\x00" + request(Op.IDENTIFY, 1) + request(Op.STATUS, 2)
        got, ref, _, _ = both(data)
        assert got == ref, trial
        bodies = [b for b in frames(got) if isinstance(b, bytes)]
        assert bodies[-2][:2] == bytes((Op.IDENTIFY.value, 1))
        assert bodies[-1][:2] == bytes((Op.STATUS.value, 2))


def _random_run_items(rng, n):
    items = []
    for _ in range(n):
        r = rng.random()
        if r < 0.6:
            items.append(rng.randrange(1 << 14))
        elif r < 0.8:
            items.append(rng.randrange(1 << 14) | RUN_STEP_AFTER)
        elif r < 0.93:
            items.append(RUN_COMMAND | rng.randrange(0, 4))
        else:
            items.append(0xC000 | rng.randrange(1 << 14))  # reserved
    return items


def test_random_frames_against_reference():
    """Random well-formed and mangled requests of every opcode: byte-identical replies."""
    rng = random.Random(11)
    parts = []
    for seq in range(40):
        # (no STATUS in the middle: the receiver runs ahead of the command engine, so what its
        # counters say when a STATUS executes depends on timing)
        op = rng.choice([o for o in Op if o != Op.STATUS] + [0x42, Op.RUN, Op.RUN])
        opv = op.value if isinstance(op, Op) else op
        n = rng.choice([0, 1, 2, 6, 8, 12, rng.randrange(0, 40) * 2])
        payload = bytes(rng.randrange(256) for _ in range(n))
        if opv == Op.RUN.value and n % 2 == 0:
            payload = encode_items(_random_run_items(rng, n // 2))
        if opv in (Op.READ.value, Op.WRITE.value) and n >= 6:
            addr = rng.choice([0, 100, 1020, (1 << ADDR_BITS) - 3])
            payload = struct.pack("<I", addr) + payload[4:]
        # sequence numbers mostly in order, sometimes repeated or skipping
        body = bytes((opv, seq if rng.random() < 0.8 else rng.randrange(40))) + payload
        crc = crc16(body)
        frame = bytearray(cobs_encode(body + bytes((crc >> 8, crc & 0xFF))) + b"\x00")
        if rng.random() < 0.2:
            frame[rng.randrange(len(frame) - 1)] ^= 1 << rng.randrange(8)
        parts.append(bytes(frame))
    parts.append(request(Op.STATUS, 200))
    got, ref, sim, refl = both(b"".join(parts))
    assert got == ref
    assert sim.core.mem == refl.core.mem
    assert sim.core.events_log == refl.core.events_log


def test_sequence_numbers_duplicate_and_out_of_order():
    ev = request(Op.RUN, 3, encode_items([1, 2 | RUN_STEP_AFTER]))
    data = ev + ev  # the repeat is not executed: DUPLICATE
    data += request(Op.RESET_STATE, 4) + request(Op.RESET_STATE, 4)
    data += request(Op.RUN, 6, encode_items([5 | RUN_STEP_AFTER]))  # 5 was lost: OUT_OF_ORDER
    data += request(Op.RUN, 5, encode_items([6 | RUN_STEP_AFTER]))  # in order again
    data += request(Op.READ, 6, encode_read(0, 1))  # not a RUN: any sequence number
    data += request(Op.RUN, 9, encode_items([RUN_COMMAND | 1]))  # out of order
    data += request(Op.IDENTIFY, 9) + request(Op.RUN, 9, encode_items([9]))  # new session
    got, ref, sim, _ = both(data)
    assert got == ref
    S = Status
    assert [b[-1] for b in frames(got)] == [
        S.OK.value, S.DUPLICATE.value, S.OK.value, S.DUPLICATE.value, S.OUT_OF_ORDER.value,
        S.OK.value, S.OK.value, S.OUT_OF_ORDER.value, S.OK.value, S.OK.value,
    ]
    assert sim.core.events_log == [[1, 2], [6]]
    assert sim.core.resets == 1
    assert sim.core.pending == [9]
    names = [n for n, _ in LINK_COUNTERS]
    st = dict(zip(names, status_words(both(data + request(Op.STATUS, 10))[0]), strict=False))
    assert st["duplicates"] == 2 and st["out_of_order"] == 2


@pytest.mark.parametrize("fast", [False, True])
def test_pipelined_requests_fill_the_window(fast):
    """RUN requests sent back to back, as many as the receive window holds, are all executed
    in order while the later ones arrive; one frame more than the window is dropped and
    counted (``overruns``), and the chip refuses the frames after it (OUT_OF_ORDER)."""
    rng = random.Random(3)
    window = 2 * MAX_FRAME
    frames_in, used, seq = [], 0, 1
    steps_sent = []
    while True:
        steps = [[rng.randrange(1 << 14) for _ in range(rng.randrange(0, 6))] for _ in range(40)]
        payload = encode_items(run_items(steps))
        if used + len(payload) + 4 > window:
            break
        frames_in.append(request(Op.RUN, seq, payload))
        steps_sent += steps
        used += len(payload) + 4
        seq += 1
    assert len(frames_in) >= 3
    sim = SimLink(seed=2, fast=fast, stall=False)
    sim.write(b"".join(frames_in))
    got = sim.read()
    bodies = frames(got)
    assert all(isinstance(b, bytes) and b[-1] in (0, 1) for b in bodies)
    gold = RefCore()
    assert [s for q in range(1, seq) for s in run_reply(bodies, q)] == [
        gold.spikes_for(t, ev) for t, ev in enumerate(steps_sent)
    ]
    assert sim.core.events_log == steps_sent

    # past the window, with a slow core: the third and fourth frames find the ring full
    sim = SimLink(seed=2, fast=fast, stall=False)
    sim.slow_core = 200  # each timestep takes this many cycles
    big = [request(Op.RUN, q + 1, encode_items([RUN_COMMAND | 1] * 250)) for q in range(4)]
    sim.write(b"".join(big))
    bodies = frames(sim.read(quiet=20_000, limit=3_000_000))
    finals = [(b[1], b[-1]) for b in bodies if b[-1] != Status.MORE.value]
    assert finals == [(1, Status.OK.value), (2, Status.OK.value)]
    sim.write(request(Op.RUN, 5, encode_items([RUN_COMMAND | 1])) + request(Op.STATUS, 6))
    bodies = frames(sim.read())
    assert bodies[0][-1] == Status.OUT_OF_ORDER.value
    names = [n for n, _ in LINK_COUNTERS]
    st = dict(zip(names, status_words(encode_frame(bodies[-1])), strict=False))
    assert st["overruns"] == 2 and st["out_of_order"] == 1


def test_step_timeout():
    sim = SimLink(step_timeout=200, stall=False)
    sim.hang = True
    sim.write(
        request(Op.RUN, 1, encode_items([RUN_COMMAND | 3, 4, RUN_COMMAND | 1]))
        + request(Op.STATUS, 2)
    )
    bodies = frames(sim.read())
    assert bodies[0] == bytes((Op.RUN.value, 1, Status.STEP_TIMEOUT.value))
    assert sim.core.pending == []  # the rest of the request was skipped
    names = [n for n, _ in LINK_COUNTERS]
    assert status_words(encode_frame(bodies[1]))[names.index("step_timeouts")] == 1


def test_marks_of_long_silences():
    """More silent timesteps than one reply mark counts: the marks are split (reference)."""
    ref = RefLink(RefCore(n_neurons=1 << 15))
    ref.core.spikes_for = lambda t, events: [1] if t == 40_000 else []
    ref.write(request(Op.RUN, 1, encode_items([RUN_COMMAND | 16383] * 3)))
    items = [i for b in frames(ref.read()) for i in decode_items(b[2:-1])]
    assert items == [REPLY_MARK | 0x7FFF, REPLY_MARK | (40_000 - 0x7FFF), 1,
                     REPLY_MARK | (3 * 16383 - 40_000)]


@pytest.mark.slow
def test_host_device_on_gateware():
    """The host library against the simulated gateware (in-process transport)."""
    sim = SimLink(stall=False)
    dev = Device.in_process(sim)
    assert dev.identity.words == tuple(IDENT)
    assert dev.identity.clk_hz == CLK
    assert dev.identity.rx_window == 2 * MAX_FRAME
    dev.write_mem(3, range(200))
    assert dev.read_mem(3, 200) == list(range(200))
    dev.send_events([5, 6])
    assert dev.step(2) == [[15, 18], []]
    st = dev.status()
    assert st["core"] == [2, 0] and st["crc_errors"] == 0
    rng = random.Random(4)
    steps = [[rng.randrange(1 << 14) for _ in range(rng.randrange(0, 8))] for _ in range(300)]
    got = list(dev.run(steps, reset=True))
    assert got == [RefCore().spikes_for(t, ev) for t, ev in enumerate(steps)]
    assert dev.run_frames >= 4  # several frames, in flight together
    assert dev.status()["overruns"] == 0


@pytest.mark.slow
def test_host_losses_against_gateware():
    """A corrupt RUN request or reply ends the stream with StepLostError (after draining),
    saying how many timesteps arrived; the device is usable again afterwards."""
    sim = SimLink(stall=False)
    state = {"n": 0, "mode": None}

    def has_op(data, op):
        return any(isinstance(b, bytes) and b[0] == op.value for b in frames(data))

    def tamper(direction, data):
        if state["mode"] == direction and has_op(data, Op.RUN):
            state["n"] += 1
            if state["n"] == 2:
                data = data[:-3] + bytes((data[-3] ^ 0x40,)) + data[-2:]
        return data

    dev = Device.in_process(sim, tamper=tamper)
    steps = [[1, 2, 3]] * 400
    for mode in ("to_device", "to_host"):
        state.update(n=0, mode=mode)
        with pytest.raises(StepLostError) as e:
            list(dev.run(steps, reset=True))
        assert 0 < e.value.steps_done < len(steps)
        state["mode"] = None
        dev.reset_state()
        assert list(dev.run([[1]], reset=True)) == [[3]]


def test_link_config_errors():
    with pytest.raises(ConfigError, match="n_core_status"):
        Link(clk_freq=CLK, n_core_status=200)
    with pytest.raises(ConfigError, match="ident_words"):
        Link(clk_freq=CLK, ident_words=[-1])
    with pytest.raises(ConfigError, match="clk_freq"):
        Link(clk_freq=0)


class TinyChip(wiring.Component):
    """Link + a 16-word block RAM on the bus + a core that counts events and spikes nothing."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = Link(clk_freq=CLK, ident_words=[16], n_core_status=1)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        m.submodules.mem = mem = Memory(shape=32, depth=16, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        bus = link.bus
        n_events = Signal(32)
        m.d.comb += [
            bus.ready.eq(1),
            bus.error.eq(bus.addr >= 16),
            wr.addr.eq(bus.addr),
            wr.data.eq(bus.w_data),
            wr.en.eq(bus.w_en & (bus.addr < 16)),
            rd.addr.eq(bus.addr),
            bus.r_data.eq(Mux(bus.error, 0, rd.data)),
            link.events.ready.eq(1),
            link.core_status[0].eq(n_events),
        ]
        m.d.sync += [bus.r_valid.eq(bus.r_en), link.done.eq(link.step)]
        with m.If(link.events.valid):
            m.d.sync += n_events.eq(n_events + 1)
        return m


def test_amaranth_sim_device_backend():
    """The generic in-process simulator backend of host/transport.py, on a small chip."""
    dev = Device.in_process(AmaranthSimDevice(TinyChip(), clk_freq=CLK))
    assert dev.identity.words == (16,)
    dev.write_mem(3, [7, 8, 9])
    assert dev.read_mem(2, 5) == [0, 7, 8, 9, 0]
    dev.send_events([1, 2, 3])
    assert dev.step(2) == [[], []]
    assert list(dev.run([[4], [], [5, 6]], reset=True)) == [[], [], []]
    assert dev.status()["core"] == [6]
    with pytest.raises(DeviceError, match="BUS_ERROR"):
        dev.read_mem(15, 2)
