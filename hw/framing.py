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
    """COBS decoder, CRC checker and frame buffer.

    Received bytes are decoded into a ``max_frame``-byte block RAM while the CRC runs over them.
    At each ``0x00`` delimiter the frame is checked: a good one (at least 4 bytes, well-formed
    COBS, CRC residue 0) is streamed out on ``o`` without its CRC, and ``i`` takes no byte until
    the last byte of ``o`` was taken; a bad one is dropped with a ``crc_error`` or ``oversize``
    strobe.  Whatever the input, the receiver starts over at the next ``0x00``.  An empty frame
    (two delimiters in a row) is ignored.

    Parameters
    ----------
    max_frame : int
        Largest decoded frame (CRC included), in bytes.

    Attributes
    ----------
    i : In(stream.Signature(8))
        Received bytes.
    o : Out(stream.Signature(RxByte))
        Body (``op, seq, payload``) of each good frame.
    length : Out(range(max_frame + 1))
        Body length of the frame on ``o``; stable while ``o.valid``.
    crc_error, oversize : Out(1)
        One-cycle strobes: a frame was dropped.
    pending : Out(1)
        A good frame is being handed on (high from its delimiter until its last byte was taken).
    """

    def __init__(self, max_frame=MAX_FRAME, *, mem_attrs=None):
        if not isinstance(max_frame, int) or not 4 <= max_frame <= 65535:
            raise ConfigError(f"max_frame={max_frame!r} is out of range: allowed 4..65535")
        self.max_frame = max_frame
        self.mem_attrs = mem_attrs
        super().__init__(
            {
                "i": In(stream.Signature(8)),
                "o": Out(stream.Signature(RxByte)),
                "length": Out(range(max_frame + 1)),
                "crc_error": Out(1),
                "oversize": Out(1),
                "pending": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        n = self.max_frame
        m.submodules.mem = mem = Memory(shape=8, depth=n, init=[], attrs=self.mem_attrs)
        wr = mem.write_port()
        rd = mem.read_port()

        # ``count`` is the write address while a frame comes in, then the read address
        count = Signal(range(n + 1))
        count_next = Signal.like(count)
        left = Signal(8, init=1)  # 1 + bytes left in the COBS block: 1 = a code byte is next
        pending_zero = Signal()
        overflow = Signal()
        seen = Signal()
        crc = Signal(16, init=CRC_INIT)
        valid = Signal()
        last = Signal()

        put = Signal()
        put_data = Signal(8)
        m.d.comb += [
            count_next.eq(count + 1),
            wr.addr.eq(count),
            wr.data.eq(put_data),
            rd.addr.eq(count),
            self.o.valid.eq(valid),
            self.o.payload.data.eq(rd.data),
            self.o.payload.last.eq(last),
        ]
        with m.If(put):
            with m.If(count == n):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.comb += wr.en.eq(1)
                m.d.sync += [count.eq(count_next), crc.eq(crc16_next(crc, put_data))]

        with m.FSM() as fsm:
            m.d.comb += self.pending.eq(fsm.ongoing("SEND"))
            with m.State("RECV"):
                m.d.comb += self.i.ready.eq(1)
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
                            seen.eq(0),
                            crc.eq(CRC_INIT),
                            self.length.eq(count - 2),
                        ]
                        with m.If(seen):
                            with m.If(overflow):
                                m.d.comb += self.oversize.eq(1)
                            with m.Elif((left != 1) | (count < 4) | (crc != 0)):
                                m.d.comb += self.crc_error.eq(1)
                            with m.Else():
                                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += rd.en.eq(~valid | self.o.ready)
                with m.If(rd.en):
                    with m.If(count != self.length):
                        m.d.sync += [
                            count.eq(count_next),
                            valid.eq(1),
                            last.eq(count_next == self.length),
                        ]
                    with m.Else():
                        m.d.sync += [valid.eq(0), count.eq(0)]
                        m.next = "RECV"
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
