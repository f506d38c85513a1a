"""Gateware framing of the host link: COBS + CRC-16/CCITT-FALSE (``docs/protocol.md``).

:class:`FrameReceiver` turns received bytes into CRC-checked frames held in a block RAM and hands
them on as a byte stream; :class:`FrameSender` turns a reply byte stream into CRC-protected,
COBS-encoded bytes.  The Python reference of both is in ``spikeforge.protocol``
(``cobs_encode``, ``cobs_decode``, ``crc16``); the tests compare them byte for byte.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..protocol import CRC_INIT, CRC_POLY, MAX_FRAME

__all__ = ["crc16_next", "FrameReceiver", "FrameSender", "RxByte", "TxByte"]

#: A byte of a received frame body; ``last`` marks its last byte.
RxByte = data.StructLayout({"data": 8, "last": 1})
#: A byte of a reply body, or (``end=1``, data ignored) the end of the reply.
TxByte = data.StructLayout({"data": 8, "end": 1})


def _crc_step_int(crc, byte):
    c = crc ^ (byte << 8)
    for _ in range(8):
        c = ((c << 1) ^ CRC_POLY) if c & 0x8000 else (c << 1)
    return c & 0xFFFF


# The CRC step is linear over GF(2): output bit j is the XOR of the state and data bits listed
# here, so the gateware is one flat XOR per bit.
_CRC_TAPS = [
    (
        [k for k in range(16) if _crc_step_int(1 << k, 0) >> j & 1],
        [k for k in range(8) if _crc_step_int(0, 1 << k) >> j & 1],
    )
    for j in range(16)
]


def crc16_next(crc, byte):
    """The CRC-16/CCITT-FALSE register after shifting in ``byte`` (an Amaranth expression)."""
    bits = []
    for crc_taps, byte_taps in _CRC_TAPS:
        terms = [crc[k] for k in crc_taps] + [byte[k] for k in byte_taps]
        bit = terms[0]
        for t in terms[1:]:
            bit = bit ^ t
        bits.append(bit)
    return Cat(*bits)


class FrameReceiver(wiring.Component):
    """COBS decoder, CRC checker and a ring buffer of received frames (the receive window).

    Received bytes are decoded into a ``window``-byte block RAM ring while the CRC runs over
    them.  At each ``0x00`` delimiter the frame is checked: a good one (at least 4 bytes,
    well-formed COBS, CRC residue 0) stays in the ring without its CRC and its body length is
    queued; a bad one is dropped (its bytes are given back) with a ``crc_error``, ``oversize`` or
    ``overrun`` strobe.  Meanwhile the frames in the ring are handed on, in order, on ``o``.
    ``i`` is always ready: a byte that finds the ring full is lost and its frame dropped
    (``overrun``), which a host that keeps within the window (``docs/protocol.md``) never
    causes.  Whatever the input, the receiver starts over at the next ``0x00``.  An empty frame
    (two delimiters in a row) is ignored.

    Parameters
    ----------
    max_frame : int
        Largest decoded frame (CRC included), in bytes.
    window : int
        Bytes of the ring (a power of two, at least ``max_frame``): frames whose decoded bytes
        (CRC included) add up to at most this always fit.
    mem_attrs : dict, optional
        Attributes of the ring's memory.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Received bytes.
    o : Out(stream.Signature(RxByte))
        Body (``op, seq, payload``) of each good frame.
    length : Out(range(max_frame + 1))
        Body length of the frame on ``o``; stable while ``o.valid``.
    crc_error, oversize, overrun : Out(1)
        One-cycle strobes: a frame was dropped (bad CRC or COBS, longer than ``max_frame``, the
        ring or its length queue was full).
    pending : Out(1)
        A good frame is queued or being handed on.
    """

    #: Entries of the queue of frame lengths (one block RAM).
    QUEUE = 256

    def __init__(self, max_frame=MAX_FRAME, *, window=2 * MAX_FRAME, mem_attrs=None):
        if not isinstance(max_frame, int) or not 4 <= max_frame <= 65535:
            raise ConfigError(f"max_frame={max_frame!r} is out of range: allowed 4..65535")
        if (
            not isinstance(window, int)
            or window < max_frame
            or window & (window - 1)
            or window > 1 << 16
        ):
            raise ConfigError(
                f"window={window!r} is out of range: a power of two from max_frame={max_frame} "
                "to 65536"
            )
        self.max_frame = max_frame
        self.window = window
        self.mem_attrs = mem_attrs
        super().__init__(
            {
                "i": In(stream.Signature(8)),
                "o": Out(stream.Signature(RxByte)),
                "length": Out(range(max_frame + 1)),
                "crc_error": Out(1),
                "oversize": Out(1),
                "overrun": Out(1),
                "pending": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        n = self.max_frame
        aw = self.window.bit_length() - 1
        m.submodules.mem = mem = Memory(shape=8, depth=self.window, init=[], attrs=self.mem_attrs)
        wr = mem.write_port()
        rd = mem.read_port()
        qd = self.QUEUE
        qw = qd.bit_length() - 1
        m.submodules.lengths = lengths = Memory(shape=range(n + 1), depth=qd, init=[])
        lwr = lengths.write_port()
        lrd = lengths.read_port()

        # ring pointers with a wrap bit: write, start of the frame coming in, read
        wp = Signal(aw + 1)
        fs = Signal(aw + 1)
        rp = Signal(aw + 1)
        full = Signal()
        m.d.comb += full.eq((wp[:aw] == rp[:aw]) & (wp[aw] != rp[aw]))
        # length queue pointers
        lw = Signal(qw + 1)
        lr = Signal(qw + 1)
        lfull = Signal()
        m.d.comb += lfull.eq((lw[:qw] == lr[:qw]) & (lw[qw] != lr[qw]))

        count = Signal(range(n + 1))  # decoded bytes of the frame coming in
        left = Signal(8, init=1)  # 1 + bytes left in the COBS block: 1 = a code byte is next
        pending_zero = Signal()
        overflow = Signal()
        lost = Signal()
        seen = Signal()
        crc = Signal(16, init=CRC_INIT)

        put = Signal()
        put_data = Signal(8)
        m.d.comb += [
            wr.addr.eq(wp[:aw]),
            wr.data.eq(put_data),
            lwr.addr.eq(lw[:qw]),
            lwr.data.eq(count - 2),
            self.i.ready.eq(1),
        ]
        with m.If(put):
            with m.If(count == n):
                m.d.sync += overflow.eq(1)
            with m.Elif(full):
                m.d.sync += lost.eq(1)
            with m.Else():
                m.d.comb += wr.en.eq(1)
                m.d.sync += [
                    wp.eq(wp + 1),
                    count.eq(count + 1),
                    crc.eq(crc16_next(crc, put_data)),
                ]

        with m.If(self.i.valid):
            b = self.i.payload
            with m.If(b != 0):
                m.d.sync += seen.eq(1)
                with m.If(left == 1):
                    m.d.comb += [put.eq(pending_zero), put_data.eq(0)]
                    m.d.sync += [left.eq(b), pending_zero.eq(b != 0xFF)]
                with m.Else():
                    m.d.comb += [put.eq(1), put_data.eq(b)]
                    m.d.sync += left.eq(left - 1)
            with m.Else():
                m.d.sync += [
                    count.eq(0),
                    left.eq(1),
                    pending_zero.eq(0),
                    overflow.eq(0),
                    lost.eq(0),
                    seen.eq(0),
                    crc.eq(CRC_INIT),
                    wp.eq(fs),  # a dropped frame gives its bytes back
                ]
                with m.If(seen):
                    with m.If(overflow):
                        m.d.comb += self.oversize.eq(1)
                    with m.Elif(lost | lfull):
                        m.d.comb += self.overrun.eq(1)
                    with m.Elif((left != 1) | (count < 4) | (crc != 0)):
                        m.d.comb += self.crc_error.eq(1)
                    with m.Else():
                        # keep the body, give the CRC's two bytes back, queue the length
                        m.d.comb += lwr.en.eq(1)
                        m.d.sync += [wp.eq(wp - 2), fs.eq(wp - 2), lw.eq(lw + 1)]

        # --- hand the frames on, in order ---------------------------------------------------
        rcount = Signal(range(n + 1))  # bytes of the frame on ``o`` read so far
        valid = Signal()
        last = Signal()
        m.d.comb += [
            lrd.addr.eq(lr[:qw]),
            rd.addr.eq(rp[:aw]),
            self.o.valid.eq(valid),
            self.o.payload.data.eq(rd.data),
            self.o.payload.last.eq(last),
        ]
        with m.FSM() as fsm:
            m.d.comb += self.pending.eq(~fsm.ongoing("IDLE") | (lw != lr))
            with m.State("IDLE"):
                with m.If(lw != lr):  # the length at ``lr`` is read in this cycle
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.sync += [self.length.eq(lrd.data), rcount.eq(0)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += rd.en.eq(~valid | self.o.ready)
                with m.If(rd.en):
                    with m.If(rcount != self.length):
                        m.d.sync += [
                            rp.eq(rp + 1),
                            rcount.eq(rcount + 1),
                            valid.eq(1),
                            last.eq(rcount + 1 == self.length),
                        ]
                    with m.Else():
                        m.d.sync += [valid.eq(0), lr.eq(lr + 1)]
                        m.next = "IDLE"
        return m


class FrameSender(wiring.Component):
    """CRC-16 and COBS encoder of replies, streaming, with a 254-byte block buffer.

    Takes the reply body byte by byte on ``i``; a beat with ``end=1`` ends the reply.  Emits the
    COBS encoding of ``body + crc16(body)`` (CRC most significant byte first) and a ``0x00``
    delimiter, exactly as ``spikeforge.protocol.encode_frame``.  ``i`` stalls while a block
    is being sent.

    Attributes
    ----------
    i : In(stream.Signature(TxByte))
    o : Out(stream.Signature(8))
    idle : Out(1)
        No reply is being encoded or sent (every byte taken so far has left on ``o``).
    """

    def __init__(self, *, mem_attrs=None):
        self.mem_attrs = mem_attrs
        super().__init__(
            {
                "i": In(stream.Signature(TxByte)),
                "o": Out(stream.Signature(8)),
                "idle": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        # The block buffer is written at addresses 1..254, so that the write address ``fill`` is
        # the COBS code of the block (block length + 1, 0xFF after a full block) when the block
        # ends; the block is emitted from address 1 until ``fill``.
        m.submodules.mem = mem = Memory(shape=8, depth=256, init=[], attrs=self.mem_attrs)
        wr = mem.write_port()
        rd = mem.read_port()

        crc = Signal(16, init=CRC_INIT)
        fill = Signal(8, init=1)  # next write address: 1 + bytes in the block buffer
        phase = Signal(2)  # 0: body, 1: CRC high byte next, 2: CRC low byte next, 3: final block
        final = Signal()  # the block being emitted is the last one of the frame
        rptr = Signal(8)
        dvalid = Signal()

        byte = Signal(8)
        take = Signal()  # ``byte`` enters the encoder this cycle
        m.d.comb += [wr.addr.eq(fill), wr.data.eq(byte), rd.addr.eq(rptr)]

        with m.FSM() as fsm:
            m.d.comb += self.idle.eq(fsm.ongoing("FILL") & (phase == 0) & (fill == 1))
            with m.State("FILL"):
                with m.Switch(phase):
                    with m.Case(0):
                        m.d.comb += self.i.ready.eq(1)
                        with m.If(self.i.valid):
                            with m.If(self.i.payload.end):
                                m.d.sync += phase.eq(1)
                            with m.Else():
                                m.d.comb += [take.eq(1), byte.eq(self.i.payload.data)]
                                m.d.sync += crc.eq(crc16_next(crc, self.i.payload.data))
                    with m.Case(1):
                        m.d.comb += [take.eq(1), byte.eq(crc[8:])]
                        m.d.sync += phase.eq(2)
                    with m.Case(2):
                        m.d.comb += [take.eq(1), byte.eq(crc[:8])]
                        m.d.sync += phase.eq(3)
                    with m.Case(3):
                        m.d.sync += final.eq(1)
                        m.next = "CODE"
                with m.If(take):
                    with m.If(byte == 0):
                        m.next = "CODE"
                    with m.Else():
                        m.d.comb += wr.en.eq(1)
                        m.d.sync += fill.eq(fill + 1)
                        with m.If(fill == 254):
                            m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(fill)]
                m.d.sync += [rptr.eq(1), dvalid.eq(0)]
                with m.If(self.o.ready):
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [
                    self.o.valid.eq(dvalid),
                    self.o.payload.eq(rd.data),
                    rd.en.eq(~dvalid | self.o.ready),
                ]
                with m.If(rd.en):
                    with m.If(rptr != fill):
                        m.d.sync += [rptr.eq(rptr + 1), dvalid.eq(1)]
                    with m.Else():
                        m.d.sync += [dvalid.eq(0), fill.eq(1)]
                        with m.If(final):
                            m.next = "DELIM"
                        with m.Else():
                            m.next = "FILL"
            with m.State("DELIM"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(Const(0, 8))]
                with m.If(self.o.ready):
                    m.d.sync += [phase.eq(0), final.eq(0), crc.eq(CRC_INIT)]
                    m.next = "FILL"
        return m
