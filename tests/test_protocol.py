# Tests of the wire protocol (spikeforge/protocol.py, spec docs/protocol.md): CRC and COBS
# reference functions, the host frame decoder under fuzz, the gateware framing (hw/framing.py)
# against the reference byte for byte, and the docs tables against the module.
import pathlib
import random

import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st
from stream_tb import send

from spikeforge import protocol
from spikeforge.hw.framing import FrameReceiver, FrameSender
from spikeforge.protocol import (
    MAX_FRAME,
    MAX_RUN_ITEMS,
    FrameDecoder,
    FrameError,
    Op,
    cobs_decode,
    cobs_encode,
    crc16,
    decode_frame,
    encode_frame,
    events_efficiency,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_crc_check_value_and_residue():
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue check value
    body = b"\x05\x01hello"
    c = crc16(body)
    assert crc16(body + bytes((c >> 8, c & 0xFF))) == 0


@given(st.binary(max_size=600), st.integers(0, 0xFFFF))
@settings(max_examples=200, deadline=None)
def test_crc_in_c_is_the_table_reference(data, init):
    """``crc16`` (the standard library's C ``binascii.crc_hqx``) is the table-driven CRC."""
    assert crc16(data, init) == protocol.crc16_table(data, init)


def test_opcodes_are_8_bit_enums():
    assert Op.WRITE.value == 0x02
    assert Op.as_shape().width == 8
    assert len({op.value for op in Op}) == len(Op)


@given(st.binary(max_size=1200))
@settings(max_examples=300, deadline=None)
def test_cobs_round_trip(data):
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(enc) == data


def test_cobs_edge_cases():
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(bytes([1] * 254)) == b"\xff" + bytes([1] * 254) + b"\x01"
    assert cobs_decode(b"\xff" + bytes([1] * 254)) == bytes([1] * 254)  # short form accepted
    with pytest.raises(FrameError, match="claims"):
        cobs_decode(b"\x05\x01")


@given(st.binary(max_size=3000))
@settings(max_examples=300, deadline=None)
def test_host_decoder_fuzz(data):
    """Any bytes: no exception escapes, memory stays bounded, a good frame after 0x00 is read."""
    dec = FrameDecoder()
    out = list(dec.feed(data))
    assert all(isinstance(x, (bytes, FrameError)) for x in out)
    assert dec.pending <= MAX_FRAME + MAX_FRAME // 254 + 2
    good = b"\x07\x2a\x00"
    out = list(dec.feed(b"\x00" + encode_frame(good)))
    assert out[-1] == good


def test_decode_errors_say_what_is_wrong():
    frame = bytearray(encode_frame(b"\x01\x02\x03"))
    frame[2] ^= 0x04
    with pytest.raises(FrameError, match="CRC mismatch"):
        decode_frame(bytes(frame[:-1]))
    with pytest.raises(FrameError, match="shorter"):
        decode_frame(cobs_encode(b"\x01"))
    with pytest.raises(FrameError, match="longer"):
        decode_frame(cobs_encode(bytes(600)))


def test_events_efficiency():
    wire, eff = events_efficiency(250)
    assert wire == 507  # 500 payload + op, seq, CRC (4) + COBS code bytes (2) + delimiter (1)
    assert eff > 0.98
    assert events_efficiency(MAX_RUN_ITEMS)[1] > 0.98
    assert events_efficiency(64)[1] > 0.90
    with pytest.raises(ValueError, match="n_events"):
        events_efficiency(MAX_RUN_ITEMS + 1)


def test_docs_tables_match_protocol_module():
    text = (ROOT / "docs" / "protocol.md").read_text()
    assert protocol.describe() in text, "regenerate docs/protocol.md tables: protocol.describe()"


# --- gateware framing vs reference ------------------------------------------------------------


def rtl_send(bodies, seed=0):
    dut = FrameSender()
    rng = random.Random(seed)
    want = sum(len(encode_frame(b)) for b in bodies)
    out = bytearray()
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def src(ctx):
        for body in bodies:
            for b, end in [(b, 0) for b in body] + [(0, 1)]:
                while rng.random() < 0.3:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": b, "end": end})
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        for _ in range(4 * want + 100):
            ctx.set(dut.o.ready, rng.random() < 0.6)
            _, _, v, r, p = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if v and r:
                out.append(p)

    sim.add_testbench(src)
    sim.add_testbench(sink)
    sim.run()
    return bytes(out)


def rtl_receive(wire, seed=0, window=4096, hold=0):
    """Return the frames the gateware receiver passes on, and its error strobe counts; the
    reader takes nothing for the first ``hold`` cycles."""
    dut = FrameReceiver(window=window)
    rng = random.Random(seed)
    frames, cur = [], bytearray()
    counts = {"crc": 0, "oversize": 0, "overrun": 0}
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def src(ctx):
        await send(ctx, dut.i, wire)

    async def sink(ctx):
        for i in range(hold + 3 * len(wire) + 3 * MAX_FRAME + 100):
            ctx.set(dut.o.ready, i >= hold and rng.random() < 0.6)
            _, _, v, r, p, n, ce, ov, orun = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.length, dut.crc_error, dut.oversize,
                dut.overrun,
            )
            counts["crc"] += ce
            counts["oversize"] += ov
            counts["overrun"] += orun
            if v and r:
                cur.append(p.data)
                if p.last:
                    assert len(cur) == n
                    frames.append(bytes(cur))
                    cur.clear()

    sim.add_testbench(src)
    sim.add_testbench(sink)
    sim.run()
    return frames, counts


def random_body(rng, n):
    return bytes(
        rng.choice([0, 0, 1, 0xFF]) if rng.random() < 0.3 else rng.randrange(256) for _ in range(n)
    )


def test_rtl_sender_matches_reference():
    rng = random.Random(3)
    bodies = [random_body(rng, rng.randrange(1, MAX_FRAME - 2)) for _ in range(6)]
    bodies += [bytes([1] * 252), bytes([1] * 253), bytes(40), b"\x01"]  # block boundaries
    assert rtl_send(bodies) == b"".join(encode_frame(b) for b in bodies)


def test_rtl_receiver_matches_reference():
    rng = random.Random(4)
    bodies = [random_body(rng, rng.randrange(2, MAX_FRAME - 2)) for _ in range(5)]
    bodies += [bytes([1] * 252), bytes(MAX_FRAME - 2)]  # the largest frame fits exactly
    wire = b"".join(encode_frame(b) for b in bodies)
    frames, counts = rtl_receive(wire)
    assert frames == bodies
    assert counts == {"crc": 0, "oversize": 0, "overrun": 0}


def test_rtl_receiver_ring_keeps_what_fits_and_drops_the_rest():
    """Frames that fit the window in flight are all kept while the reader is slow; a frame
    that finds the ring full is dropped whole (``overrun``) and the next one that fits is good."""
    rng = random.Random(6)
    fit = [random_body(rng, 250) for _ in range(4)]  # 4 x 252 bytes with CRC <= 1024
    wire = b"".join(encode_frame(b) for b in fit)
    frames, counts = rtl_receive(wire, window=1024, hold=2 * len(wire))
    assert frames == fit and counts["overrun"] == 0
    extra = [random_body(rng, 300) for _ in range(5)]  # 5 x 302 > 1024: some are lost
    wire = b"".join(encode_frame(b) for b in extra)
    frames, counts = rtl_receive(wire, window=1024, hold=2 * len(wire))
    assert frames == extra[:3]  # 3 x 302 fit; the 4th and 5th found the ring full
    assert counts["overrun"] == 2
    # once the reader has made room, frames are received again
    frames, counts = rtl_receive(wire + encode_frame(extra[0]), window=1024, hold=len(wire))
    assert frames == extra[:3] + [extra[0]] and counts["overrun"] == 2


def overlong_block(body):
    """A frame whose bytes and CRC are right but whose last COBS block claims one byte more."""
    enc = bytearray(encode_frame(body)[:-1])
    assert enc[0] == len(enc)  # one block: no zero in body + CRC
    enc[0] += 1
    return bytes(enc) + b"\x00"


def test_rtl_receiver_drops_bad_frames_and_resynchronises():
    rng = random.Random(5)
    good = [random_body(rng, rng.randrange(2, 100)) for _ in range(4)]
    flipped = bytearray(encode_frame(good[0]))
    flipped[3] ^= 0x21 if flipped[3] != 0x21 else 0x22
    wire = (
        bytes(rng.randrange(1, 256) for _ in range(300))
        + b"\x00"  # garbage
        + encode_frame(good[1])
        + bytes(flipped)  # CRC error
        + encode_frame(bytes(MAX_FRAME - 1))  # oversize (with its CRC)
        + encode_frame(good[2])[:-5]
        + b"\x00"  # truncated
        + b"\x00\x00"  # empty frames: ignored
        + overlong_block(b"\x05\x01\x02\x03")  # good CRC, but the COBS block is cut short
        + encode_frame(good[3])
    )
    frames, counts = rtl_receive(wire)
    assert frames == [good[1], good[3]]
    assert counts["oversize"] == 1
    assert counts["crc"] == 4
    # the host decoder agrees on which frames are good
    host = [x for x in FrameDecoder().feed(wire) if isinstance(x, bytes)]
    assert host == frames


# --- payload layouts: one definition, encoders and decoders ------------------------------------


def test_payload_encoders_give_the_documented_bytes():
    """Each encoder against the layout written out by hand (``docs/protocol.md``)."""
    import struct

    assert protocol.encode_identify(12_000_000, [3, 1, 4], rx_window=2048) == struct.pack(
        "<8I", protocol.MAGIC, protocol.PROTOCOL_VERSION | MAX_FRAME << 16, 12_000_000, 2048, 3,
        3, 1, 4,
    )
    assert protocol.identify_words(5, [9]) == [
        protocol.MAGIC, protocol.PROTOCOL_VERSION | MAX_FRAME << 16, 5, MAX_FRAME, 1, 9
    ]
    assert protocol.IDENT_HEADER_WORDS == 5
    assert protocol.encode_write(0x123, [1, 0xFFFFFFFF]) == struct.pack("<I2I", 0x123, 1, 2**32 - 1)
    assert protocol.encode_read(0x0ABCDEF, 24) == struct.pack("<IH", 0x0ABCDEF, 24)
    assert protocol.encode_words([7, 8]) == struct.pack("<2I", 7, 8)
    assert protocol.encode_items([1, 65535, 3]) == struct.pack("<3H", 1, 65535, 3)
    # one sample: reset, [3, 4] then a step, two empty steps, [5] then a step, one empty step
    assert protocol.run_items([[3, 4], [], [], [5], []], reset=True) == [
        0x4000, 3, 4 | 0x8000, 0x4000 | 2, 5 | 0x8000, 0x4000 | 1,
    ]
    assert protocol.run_items([[]] * 20000) == [0x4000 | 16383, 0x4000 | (20000 - 16383)]
    counters = {name: i for i, (name, _) in enumerate(protocol.LINK_COUNTERS) if name != "flags"}
    n = len(protocol.LINK_COUNTERS)
    assert protocol.encode_status(counters, busy=True, core=[-1, 4]) == struct.pack(
        f"<{n + 2}I", *range(n - 1), 1, 2**32 - 1, 4
    )


def test_payload_constants_derive_from_the_layouts():
    assert protocol.MAX_WRITE_WORDS == (protocol.MAX_REQUEST_PAYLOAD - 4) // 4 == 126
    assert protocol.MAX_READ_WORDS == protocol.MAX_REPLY_PAYLOAD // 4 == 126
    assert MAX_RUN_ITEMS == protocol.MAX_REQUEST_PAYLOAD // 2 == 254
    assert protocol.MAX_REPLY_ITEMS == protocol.MAX_REPLY_PAYLOAD // 2 == 253
    assert protocol.MAX_RUN_STEPS == 0x3FFF
    assert protocol.EVENT_BITS == 16 and protocol.EVENT_BYTES == 2
    assert protocol.READ_REQUEST.offset("count") == 4 and protocol.READ_REQUEST.bits("count") == 16
    assert protocol.IDENT_HEADER.describe() == (
        "u32 magic, u16 version, u16 max_frame, u32 clk_hz, u32 rx_window, u32 count"
    )


def test_payload_length_ok_is_the_length_table():
    want = {
        Op.IDENTIFY: lambda n: n == 0,
        Op.WRITE: lambda n: n >= 8 and n % 4 == 0,
        Op.READ: lambda n: n == 6,
        Op.RESET_STATE: lambda n: n == 0,
        Op.RUN: lambda n: n % 2 == 0,
        Op.STATUS: lambda n: n == 0,
    }
    for op, ok in want.items():
        for n in range(protocol.MAX_REQUEST_PAYLOAD + 1):
            assert protocol.payload_length_ok(op, n) == ok(n), (op, n)


u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)


@given(u32, st.lists(u32, max_size=protocol.MAX_READ_WORDS - protocol.IDENT_HEADER_WORDS))
@settings(max_examples=100, deadline=None)
def test_identify_round_trip(clk, caps):
    got = protocol.decode_identify(protocol.encode_identify(clk, caps))
    assert got == protocol.Identity(protocol.PROTOCOL_VERSION, MAX_FRAME, clk, MAX_FRAME,
                                    tuple(caps))
    assert protocol.encode_words(protocol.identify_words(clk, caps)) == protocol.encode_identify(
        clk, caps
    )


@given(st.integers(0, 2**28 - 1), st.lists(u32, min_size=1, max_size=protocol.MAX_WRITE_WORDS))
@settings(max_examples=100, deadline=None)
def test_write_read_words_round_trip(addr, words):
    assert protocol.decode_write(protocol.encode_write(addr, words)) == (addr, tuple(words))
    assert protocol.decode_read(protocol.encode_read(addr, len(words))) == (addr, len(words))
    assert protocol.decode_words(protocol.encode_words(words)) == tuple(words)


@given(st.lists(st.lists(st.integers(0, 2**14 - 1), max_size=4), max_size=60), st.booleans())
@settings(max_examples=100, deadline=None)
def test_run_items_and_reply_round_trip(steps, reset):
    """``run_items`` encodes what a reference loop over its items decodes; a reply made of
    spikes and marks decodes to the timesteps it came from."""
    items = protocol.run_items(steps, reset=reset)
    assert protocol.decode_items(protocol.encode_items(items)) == tuple(items)
    got, pending, resets = [], [], 0
    for it in items:
        if it & 0xC000 == 0x4000:
            k = it & 0x3FFF
            resets += k == 0
            for _ in range(k):
                got.append(pending)
                pending = []
        else:
            pending.append(it & 0x3FFF)
            if it & 0x8000:
                got.append(pending)
                pending = []
    assert got == [list(s) for s in steps] and pending == [] and resets == int(reset)
    # a reply: spikes, then a mark after every run of timesteps (marks of 0 are refused)
    reply, marks = [], 0
    for s in steps:
        if s and marks:
            reply.append(0x8000 | marks)
            marks = 0
        reply += s
        marks += 1
    if marks:
        reply.append(0x8000 | marks)
    decoded = protocol.decode_run_reply(reply)
    assert decoded.steps == [list(s) for s in steps] and decoded.open_step == []


@given(st.lists(u16, min_size=len(protocol.LINK_COUNTERS) - 1,
                max_size=len(protocol.LINK_COUNTERS) - 1),
       st.booleans(), st.lists(u32, max_size=8))
@settings(max_examples=50, deadline=None)
def test_status_round_trip(values, busy, core):
    names = [name for name, _ in protocol.LINK_COUNTERS if name != "flags"]
    counters = dict(zip(names, values, strict=True))
    got = protocol.decode_status(protocol.encode_status(counters, busy, core))
    assert got == {**counters, "busy": busy, "core": core}


def test_decoders_refuse_malformed_payloads():
    import struct

    P = protocol.PayloadError
    ident = protocol.encode_identify(1, [2])
    with pytest.raises(P, match="not a spikeforge identity"):
        protocol.decode_identify(ident[:15])
    with pytest.raises(P, match="not a spikeforge identity"):
        protocol.decode_identify(ident + b"\x00")
    with pytest.raises(P, match="not a spikeforge device: magic 0x12345678"):
        protocol.decode_identify(struct.pack("<4I", 0x12345678, 1, 1, 0))
    with pytest.raises(P, match="version 99.*speaks 2"):
        protocol.decode_identify(protocol.encode_identify(1, [], version=99))
    with pytest.raises(P, match="says 1 words but sent 0"):
        protocol.decode_identify(ident[:-4])
    with pytest.raises(P, match="WRITE request of 6 bytes"):
        protocol.decode_write(b"\x00" * 6)
    with pytest.raises(P, match="READ request of 5 bytes"):
        protocol.decode_read(b"\x00" * 5)
    with pytest.raises(P, match="u32 words"):
        protocol.decode_words(b"\x00" * 5)
    with pytest.raises(P, match="u16 items"):
        protocol.decode_items(b"\x00" * 3)
    with pytest.raises(P, match="mark of 0 timesteps"):
        protocol.decode_run_reply([5, 0x8000])
    with pytest.raises(ValueError, match="input channel 16384 at timestep 1"):
        protocol.run_items([[1], [16384]])
    with pytest.raises(P, match="STATUS reply has 2 words"):
        protocol.decode_status(b"\x00" * 8)
