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
    MAX_EVENTS,
    MAX_FRAME,
    MAX_SPIKES,
    PROTOCOL_VERSION,
    FrameDecoder,
    Identity,
    Op,
    Status,
    cobs_encode,
    crc16,
    decode_events_reply,
    decode_identify,
    decode_spike_frame,
    decode_status,
    decode_step_final,
    decode_words,
    encode_events,
    encode_frame,
    encode_read,
    encode_step,
    encode_write,
    request,
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
            )
            self.cycles += 1
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
                    done_next = True
            if step:
                assert not step_running, "step pulsed while the core was busy"
                step_running = True
                spikes = core.step()
                if self.hang:
                    spikes = []
                elif not spikes:
                    done_next = True
            if reset_state:
                core.reset_state()
                self._busy_until = self.cycles + 3

    # --- byte interface (as RefLink) ----------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.inq += data

    def read(self, quiet: int = 400, limit: int = 300_000) -> bytes:
        """Run until the input is consumed and no byte came out for ``quiet`` cycles."""
        start = self.cycles
        last_len, last_change = len(self.out), self.cycles
        while self.cycles - start < limit:
            self.sim.run_until((self.cycles + 100) / CLK)
            if len(self.out) != last_len:
                last_len, last_change = len(self.out), self.cycles
            if not self.inq and self.cycles - last_change >= quiet:
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


@pytest.mark.slow
@pytest.mark.parametrize("fast", [False, True])
def test_every_command_round_trip(fast):
    """Every command against the reference; with ``fast`` (the fast build's skid buffer in
    front of the reply encoder and registered range check) the replies are the same bytes."""
    rng = random.Random(1)
    words = [rng.randrange(1 << 32) for _ in range(20)]
    evs = [rng.randrange(1 << 16) for _ in range(300)]
    data = b"".join(
        [
            request(Op.IDENTIFY, 1),
            request(Op.WRITE, 2, struct.pack("<I20I", 10, *words)),
            request(Op.READ, 3, struct.pack("<IH", 8, 24)),
            request(Op.EVENTS, 4, struct.pack(f"<{MAX_EVENTS}H", *evs[:MAX_EVENTS])),
            request(Op.EVENTS, 5, struct.pack("<46H", *evs[MAX_EVENTS:])),
            request(Op.STEP, 6, struct.pack("<H", 6)),  # >MAX_SPIKES spikes in step 0: 2 frames
            request(Op.RESET_STATE, 7),
            request(Op.STEP, 8, struct.pack("<H", 0)),
            request(Op.READ, 9, struct.pack("<IH", 1020, 8)),  # runs past the memory: bus error
            request(Op.WRITE, 10, struct.pack("<I2I", 1023, 5, 6)),  # second word refused
            request(Op.STATUS, 11),
        ]
    )
    got, ref, sim, refl = both(data, fast=fast)
    assert got == ref
    bodies = frames(got)
    assert all(isinstance(b, bytes) for b in bodies)
    statuses = [(b[0], b[1], b[-1]) for b in bodies]
    ops = [Op.IDENTIFY, Op.WRITE, Op.READ, Op.EVENTS, Op.EVENTS] + [Op.STEP] * 4
    ops += [Op.RESET_STATE]
    assert [s[0] for s in statuses[:10]] == [o.value for o in ops]
    # the spikes of step 0 (300 events) come in two frames, the final frame last
    step_frames = [b for b in bodies if b[0] == Op.STEP.value and b[1] == 6]
    assert [b[-1] for b in step_frames] == [1, 1, 1, 0]  # MORE, MORE, MORE (step 4), OK
    assert len(step_frames[0]) == 2 + 2 + 2 * MAX_SPIKES + 1
    assert step_frames[-1][2:-1] == struct.pack("<HI", 6, 301)
    assert sim.core.mem == refl.core.mem
    assert sim.core.events_log == refl.core.events_log == [evs, [], [], [], [], []]
    assert sim.core.mem[10:30] == words
    st = status_words(got)
    names = [n for n, _ in LINK_COUNTERS]
    assert st[names.index("bus_errors")] == 4 + 1
    assert st[len(names) :] == (0, 0)  # core: t reset to 0 by RESET_STATE, STEP(0) ran nothing
    # the gateware's replies, read with the protocol's decoders
    assert decode_identify(bodies[0][2:-1]) == Identity(PROTOCOL_VERSION, MAX_FRAME, CLK,
                                                        tuple(IDENT))
    assert decode_words(bodies[2][2:-1]) == (0, 0, *words, 0, 0)
    assert decode_events_reply(bodies[3][2:-1]) == MAX_EVENTS
    assert decode_events_reply(bodies[4][2:-1]) == 300 - MAX_EVENTS
    step0 = [decode_spike_frame(b[2:-1]) for b in step_frames[:2]]
    assert [i for i, _ in step0] == [0, 0]
    assert [a for _, sp in step0 for a in sp] == RefCore().spikes_for(0, evs)
    assert decode_step_final(step_frames[-1][2:-1]) == (6, 301)
    status = decode_status(bodies[-1][2:-1])
    assert status["bus_errors"] == 5 and status["busy"] is False and status["core"] == [0, 0]


def test_requests_built_by_the_encoders():
    """The protocol's request encoders against the gateware and the reference."""
    rng = random.Random(7)
    words = [rng.randrange(1 << 32) for _ in range(5)]
    evs = [rng.randrange(1 << 16) for _ in range(40)]
    data = b"".join(
        [
            request(Op.WRITE, 1, encode_write(3, words)),
            request(Op.READ, 2, encode_read(2, 7)),
            request(Op.EVENTS, 3, encode_events(evs)),
            request(Op.STEP, 4, encode_step(2)),
        ]
    )
    got, ref, sim, _ = both(data)
    assert got == ref
    bodies = frames(got)
    assert [Status(b[-1]) for b in bodies] == [Status.OK] * 3 + [Status.MORE, Status.OK]
    assert decode_words(bodies[1][2:-1]) == (0, *words, 0)
    assert decode_events_reply(bodies[2][2:-1]) == len(evs)
    assert decode_spike_frame(bodies[3][2:-1]) == (0, tuple(RefCore().spikes_for(0, evs)))
    assert decode_step_final(bodies[4][2:-1]) == (2, len(evs))
    assert sim.core.events_log == [evs, []]


@pytest.mark.parametrize("fast", [False, True])
def test_bad_requests_change_nothing_and_are_counted(fast):
    good_ev = request(Op.EVENTS, 3, struct.pack("<2H", 1, 2))
    bad = [
        b"\x00\x13\x37\x42\x99\x00",  # garbage
        good_ev[:-6] + b"\x00",  # truncated frame
        bytes([good_ev[0], good_ev[1] ^ 0x10]) + good_ev[2:],  # flipped bit: CRC error
        request(Op.WRITE, 4, struct.pack("<I", 5) + b"\x01\x02"),  # length not a word multiple
        # past the bus: BAD_ARG
        request(Op.WRITE, 5, struct.pack("<I2I", (1 << ADDR_BITS) - 1, 1, 2)),
        request(Op.READ, 6, struct.pack("<IH", 0, 1000)),  # more than a reply holds: BAD_ARG
        request(Op.STEP, 7, b"\x01"),  # bad length
        bytes([0x7F]),  # (placeholder, replaced below)
        cobs_encode(bytes(MAX_FRAME + 40)) + b"\x00",  # oversize
        b"\x05\x01\x00",  # malformed COBS (block runs past the delimiter)
        overlong_block(bytes((Op.EVENTS.value, 20, 5, 5))),  # right CRC, COBS block cut short
        b"\x02\x01\x00",  # runt
    ]
    unknown = bytes((0x7F, 8))
    crc = crc16(unknown)
    bad[7] = cobs_encode(unknown + bytes((crc >> 8, crc & 0xFF))) + b"\x00"
    data = (
        b"".join(bad) + request(Op.EVENTS, 9, struct.pack("<3H", 7, 8, 9)) + request(Op.STATUS, 10)
    )
    got, ref, sim, refl = both(data, fast=fast)
    assert got == ref
    bodies = [b for b in frames(got)]
    assert [(b[1], b[-1]) for b in bodies] == [
        (4, Status.BAD_LENGTH.value),
        (5, Status.BAD_ARG.value),
        (6, Status.BAD_ARG.value),
        (7, Status.BAD_LENGTH.value),
        (8, Status.UNKNOWN_OP.value),
        (9, Status.OK.value),
        (10, Status.OK.value),
    ]
    assert sim.core.pending == [7, 8, 9]  # only the good EVENTS frame reached the core
    assert sim.core.mem == [0] * len(sim.core.mem)
    st = dict(zip([n for n, _ in LINK_COUNTERS], status_words(got), strict=False))
    assert st["crc_errors"] == 6  # garbage, truncated, flipped, 2 malformed, runt
    assert st["oversize"] == 1
    assert st["unknown_op"] == 1
    assert st["bad_length"] == 4


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


def test_random_frames_against_reference():
    """Random well-formed and mangled requests of every opcode: byte-identical replies."""
    rng = random.Random(11)
    parts = []
    for seq in range(40):
        op = rng.choice(list(Op) + [0x42])
        opv = op.value if isinstance(op, Op) else op
        n = rng.choice([0, 1, 2, 6, 8, 12, rng.randrange(0, 40) * 2])
        payload = bytes(rng.randrange(256) for _ in range(n))
        if opv == Op.STEP.value and n == 2:
            payload = struct.pack("<H", rng.randrange(3))
        if opv in (Op.READ.value, Op.WRITE.value) and n >= 6:
            addr = rng.choice([0, 100, 1020, (1 << ADDR_BITS) - 3])
            payload = struct.pack("<I", addr) + payload[4:]
        body = bytes((opv, seq)) + payload
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


def test_duplicate_sequence_numbers_are_not_executed_twice():
    ev = request(Op.EVENTS, 3, struct.pack("<2H", 1, 2))
    st = request(Op.STEP, 4, struct.pack("<H", 1))
    data = ev + ev + st + st + request(Op.RESET_STATE, 5) + request(Op.RESET_STATE, 5)
    data += request(Op.IDENTIFY, 6) + request(Op.EVENTS, 6, struct.pack("<H", 9))  # new session
    got, ref, sim, _ = both(data)
    assert got == ref
    assert [b[-1] for b in frames(got)] == [0, 2, 1, 0, 2, 0, 2, 0, 0]
    assert sim.core.events_log == [[1, 2]]
    assert sim.core.resets == 1
    assert sim.core.pending == [9]


def test_step_timeout():
    sim = SimLink(step_timeout=200, stall=False)
    sim.hang = True
    sim.write(request(Op.STEP, 1, struct.pack("<H", 3)) + request(Op.STATUS, 2))
    bodies = frames(sim.read())
    assert bodies[0] == bytes((Op.STEP.value, 1)) + struct.pack("<HI", 0, 0) + bytes(
        (Status.STEP_TIMEOUT.value,)
    )
    names = [n for n, _ in LINK_COUNTERS]
    assert status_words(encode_frame(bodies[1]))[names.index("step_timeouts")] == 1


@pytest.mark.slow
def test_host_device_on_gateware():
    """The host library against the simulated gateware (in-process transport)."""
    sim = SimLink(stall=False)
    dev = Device.in_process(sim)
    assert dev.identity.words == tuple(IDENT)
    assert dev.identity.clk_hz == CLK
    dev.write_mem(3, range(200))
    assert dev.read_mem(3, 200) == list(range(200))
    dev.send_events([5, 6])
    assert dev.step(2) == [[15, 18], []]
    st = dev.status()
    assert st["core"] == [2, 0] and st["crc_errors"] == 0


@pytest.mark.slow
def test_host_retry_against_gateware():
    """A corrupt STEP request is retried and executed once; a lost STEP reply is reported."""
    sim = SimLink(stall=False)
    hits = {"to_device": 0, "to_host": 0}

    def has_op(data, op):
        return any(isinstance(b, bytes) and b[0] == op.value for b in frames(data))

    def tamper(direction, data):
        if has_op(data, Op.STEP):
            hits[direction] += 1
            if direction == "to_device" and hits[direction] == 1:
                data = data[:-3] + bytes((data[-3] ^ 0x40,)) + data[-2:]
            if direction == "to_host" and hits[direction] == 2 and hits["drop"]:
                return b""
        return data

    hits["drop"] = False
    dev = Device.in_process(sim, tamper=tamper)
    dev.send_events([1])
    assert dev.step(1) == [[3]]
    assert dev.retried == 1
    assert sim.core.t == 1

    hits["drop"] = True
    with pytest.raises(StepLostError, match="ran these 1 step"):
        dev.step(1)
    assert sim.core.t == 2  # ran once, not once per retry


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
    assert dev.status()["core"] == [3]
    with pytest.raises(DeviceError, match="BUS_ERROR"):
        dev.read_mem(15, 2)
