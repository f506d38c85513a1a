"""The host link command engine (spec: ``docs/protocol.md``; reference: ``host/refdevice.py``).

:class:`Link` receives request frames from a byte stream (a :class:`~spikeforge.hw.uart.UARTRx`
on a board, a byte port on the virtual board), executes them against the core (memory bus,
input events, timesteps, state reset, status) and sends the replies on a byte stream.  It is
generic: everything it knows of the core is passed in at construction (capability words for
IDENTIFY, the number of core status words for STATUS).
"""

from amaranth.hdl import Array, C, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..protocol import (
    ADDR_BITS,
    IDENT_HEADER_WORDS,
    LINK_COUNTERS,
    MAGIC,
    MAX_FRAME,
    MAX_READ_WORDS,
    MAX_SPIKES,
    MAX_WRITE_WORDS,
    PROTOCOL_VERSION,
    REPLY_OVERHEAD,
    Op,
    Status,
)
from .bus import BUS_ADDR_BITS, MemBusSignature
from .framing import FrameReceiver, FrameSender

__all__ = ["Link"]

assert ADDR_BITS == BUS_ADDR_BITS
assert MAX_READ_WORDS < 1 << 7 and MAX_WRITE_WORDS < 1 << 7  # the range checks add 7 bits

# What follows ``op, seq`` in a reply, before the status byte.
_BODY_NONE, _BODY_WORDS, _BODY_READ, _BODY_BYTES = range(4)


class Link(wiring.Component):
    """Host link command engine.

    Parameters
    ----------
    clk_freq : int
        Clock frequency in Hz, reported by IDENTIFY.
    ident_words : sequence of int
        Capability words (u32) reported by IDENTIFY after its header (the core's configuration).
    n_core_status : int
        Number of u32 words on ``core_status``, reported by STATUS after the link's counters.
    counter_bits : int
        Width of the link's saturating error counters (1..32).
    step_timeout : int or None
        Abort a STEP with ``STEP_TIMEOUT`` if the core neither sends a spike nor finishes the
        timestep for this many cycles; None waits forever.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Received bytes.
    tx : Out(stream.Signature(8))
        Bytes to send.
    rx_framing_error, rx_overrun : In(1)
        Strobes from the UART receiver, counted for STATUS (tie to 0 without a UART).
    bus : Out(MemBusSignature())
        Master of the core's memory bus (WRITE, READ).
    events : Out(stream.Signature(16))
        Input events of the current timestep (EVENTS), pushed only after the whole frame passed
        its CRC and length checks.
    step : Out(1)
        One-cycle pulse: run one timestep (STEP).  Sent only while ``busy`` is low.
    done : In(1)
        Strobe from the core: the timestep is finished and its last spike was transferred.
    busy : In(1)
        The core is working; STEP and RESET_STATE wait for it to be low before they pulse, and
        RESET_STATE replies once it is low again (the core raises it in the cycle after
        ``reset_state`` if resetting takes time).
    reset_state : Out(1)
        One-cycle pulse: clear the neuron state (RESET_STATE).
    spikes : In(stream.Signature(16))
        Output spikes of the running timestep (neuron addresses); taken only during a STEP and
        stalled while a reply block is sent.
    core_status : In(data.ArrayLayout(32, n_core_status))
        Core counters, reported by STATUS.
    """

    def __init__(
        self,
        *,
        clk_freq,
        ident_words=(),
        n_core_status=0,
        counter_bits=16,
        step_timeout=None,
    ):
        try:
            if not isinstance(clk_freq, int) or not 0 < clk_freq < 1 << 32:
                raise ConfigError(f"clk_freq={clk_freq!r} is out of range: allowed 1..2**32-1 Hz")
            ident_words = list(ident_words)
            for i, w in enumerate(ident_words):
                if not isinstance(w, int) or not 0 <= w < 1 << 32:
                    raise ConfigError(f"ident_words[{i}]={w!r} is out of range: allowed 0..2**32-1")
            max_ident = (MAX_FRAME - REPLY_OVERHEAD) // 4 - IDENT_HEADER_WORDS
            if len(ident_words) > max_ident:
                raise ConfigError(
                    f"len(ident_words)={len(ident_words)} is out of range: allowed 0..{max_ident}"
                )
            max_status = (MAX_FRAME - REPLY_OVERHEAD) // 4 - len(LINK_COUNTERS)
            if not isinstance(n_core_status, int) or not 0 <= n_core_status <= max_status:
                raise ConfigError(
                    f"n_core_status={n_core_status!r} is out of range: allowed 0..{max_status}"
                )
            if not isinstance(counter_bits, int) or not 1 <= counter_bits <= 32:
                raise ConfigError(f"counter_bits={counter_bits!r} is out of range: allowed 1..32")
            if step_timeout is not None and (
                not isinstance(step_timeout, int) or not 1 <= step_timeout < 1 << 32
            ):
                raise ConfigError(
                    f"step_timeout={step_timeout!r} is out of range: allowed None or 1..2**32-1"
                )
        except ConfigError:
            # A refused configuration is not an "unused elaboratable": silence Amaranth's warning.
            self._MustUse__used = True
            raise
        self.clk_freq = clk_freq
        self.ident_words = ident_words
        self.n_core_status = n_core_status
        self.counter_bits = counter_bits
        self.step_timeout = step_timeout
        super().__init__(
            {
                "rx": In(stream.Signature(8)),
                "tx": Out(stream.Signature(8)),
                "rx_framing_error": In(1),
                "rx_overrun": In(1),
                "bus": Out(MemBusSignature()),
                "events": Out(stream.Signature(16)),
                "step": Out(1),
                "done": In(1),
                "busy": In(1),
                "reset_state": Out(1),
                "spikes": In(stream.Signature(16)),
                "core_status": In(data.ArrayLayout(32, n_core_status)),
            }
        )

    @property
    def ident_block(self):
        """The u32 words of the IDENTIFY reply."""
        return [
            MAGIC,
            PROTOCOL_VERSION | (MAX_FRAME << 16),
            self.clk_freq,
            len(self.ident_words),
            *self.ident_words,
        ]

    def elaborate(self, platform):
        m = Module()
        m.submodules.rxf = rxf = FrameReceiver(MAX_FRAME)
        m.submodules.txf = txf = FrameSender()
        wiring.connect(m, wiring.flipped(self.rx), rxf.i)
        wiring.connect(m, txf.o, wiring.flipped(self.tx))
        rxo, txi = rxf.o, txf.i

        # --- counters -----------------------------------------------------------------------
        strobes = {name: Signal(name=f"inc_{name}") for name, _ in LINK_COUNTERS}
        counters = {}
        cmax = (1 << self.counter_bits) - 1
        for name, _ in LINK_COUNTERS:
            if name == "flags":
                continue
            ctr = counters[name] = Signal(self.counter_bits, name=f"ctr_{name}")
            with m.If(strobes[name] & (ctr != cmax)):
                m.d.sync += ctr.eq(ctr + 1)
        m.d.comb += [
            strobes["crc_errors"].eq(rxf.crc_error),
            strobes["oversize"].eq(rxf.oversize),
            strobes["framing_errors"].eq(self.rx_framing_error),
            strobes["overruns"].eq(self.rx_overrun),
        ]
        flags = Cat(self.busy, Const(0, 31))
        status_words = [counters[n] if n != "flags" else flags for n, _ in LINK_COUNTERS]
        status_words += [self.core_status[i] for i in range(self.n_core_status)]
        ident_words = [C(w, 32) for w in self.ident_block]
        ident_arr = Array(ident_words)
        status_arr = Array(status_words)

        # --- registers ----------------------------------------------------------------------
        op = Signal(8)
        seq = Signal(8)
        plen = Signal(range(MAX_FRAME + 1))  # payload bytes of the request
        rx_done = Signal()  # the last byte of the request was taken
        status = Signal(8)
        body = Signal(2)
        last_seq = Signal(8)
        last_valid = Signal()

        param = Signal(48)  # request fields, little-endian, shifted in from the top
        pidx = Signal(range(7))
        plen_param = Signal(range(7))
        word = Signal(32)
        bidx = Signal(2)
        widx = Signal(range(max(len(ident_words), len(status_words)) + 1))
        nwords = Signal.like(widx)
        use_status = Signal()
        addr = Signal(ADDR_BITS)
        count = Signal(16)
        outv = Signal(48)  # _BODY_BYTES: bytes to send, little-endian
        outn = Signal(range(7))
        oidx = Signal(range(7))

        nsteps = Signal(16)
        sidx = Signal(16)
        total = Signal(32)
        chunk = Signal(range(MAX_SPIKES + 1))
        done_seen = Signal()
        aborted = Signal()
        if self.step_timeout is not None:
            timer = Signal(range(self.step_timeout + 1))

        with m.If(self.done):
            m.d.sync += done_seen.eq(1)

        m.d.comb += [self.bus.addr.eq(addr), self.bus.w_data.eq(word)]
        rx_byte = rxo.payload.data
        rx_last = rxo.payload.last

        def emit(value, end=False):
            m.d.comb += [txi.valid.eq(1), txi.payload.data.eq(value), txi.payload.end.eq(end)]
            return txi.ready

        def fail(st, counter="bad_length"):
            m.d.sync += [status.eq(st), body.eq(_BODY_NONE)]
            m.d.comb += strobes[counter].eq(1)
            m.next = "DRAIN"

        def reply(body_kind, st=Status.OK):
            m.d.sync += [status.eq(st), body.eq(body_kind)]
            m.next = "R_OP"

        def take_params(n):
            m.d.sync += [pidx.eq(0), plen_param.eq(n)]
            m.next = "PARAM"

        def duplicate():
            return last_valid & (last_seq == seq)

        with m.FSM():
            with m.State("H_OP"):
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [op.eq(rx_byte), plen.eq(rxf.length - 2), rx_done.eq(0)]
                    m.next = "H_SEQ"
            with m.State("H_SEQ"):
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [seq.eq(rx_byte), rx_done.eq(rx_last)]
                    m.next = "DISPATCH"

            with m.State("DISPATCH"):
                with m.Switch(op):
                    with m.Case(Op.IDENTIFY):
                        with m.If(plen != 0):
                            fail(Status.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += [
                                last_valid.eq(0),
                                use_status.eq(0),
                                widx.eq(0),
                                bidx.eq(0),
                                nwords.eq(len(ident_words)),
                            ]
                            reply(_BODY_WORDS)
                    with m.Case(Op.STATUS):
                        with m.If(plen != 0):
                            fail(Status.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += [
                                use_status.eq(1),
                                widx.eq(0),
                                bidx.eq(0),
                                nwords.eq(len(status_words)),
                            ]
                            reply(_BODY_WORDS)
                    with m.Case(Op.WRITE):
                        with m.If((plen < 8) | (plen[:2] != 0)):
                            fail(Status.BAD_LENGTH)
                        with m.Else():
                            take_params(4)
                    with m.Case(Op.READ):
                        with m.If(plen != 6):
                            fail(Status.BAD_LENGTH)
                        with m.Else():
                            take_params(6)
                    with m.Case(Op.RESET_STATE):
                        with m.If(plen != 0):
                            fail(Status.BAD_LENGTH)
                        with m.Elif(duplicate()):
                            fail(Status.DUPLICATE, "duplicates")
                        with m.Else():
                            m.d.sync += [last_seq.eq(seq), last_valid.eq(1)]
                            m.next = "RS_WAIT"
                    with m.Case(Op.EVENTS):
                        with m.If(plen[0]):
                            fail(Status.BAD_LENGTH)
                        with m.Elif(duplicate()):
                            fail(Status.DUPLICATE, "duplicates")
                        with m.Else():
                            m.d.sync += [
                                last_seq.eq(seq),
                                last_valid.eq(1),
                                outv.eq(plen >> 1),
                                outn.eq(2),
                                oidx.eq(0),
                            ]
                            with m.If(rx_done):
                                reply(_BODY_BYTES)
                            with m.Else():
                                m.next = "EV_LO"
                    with m.Case(Op.STEP):
                        with m.If(plen != 2):
                            fail(Status.BAD_LENGTH)
                        with m.Elif(duplicate()):
                            fail(Status.DUPLICATE, "duplicates")
                        with m.Else():
                            m.d.sync += [last_seq.eq(seq), last_valid.eq(1)]
                            take_params(2)
                    with m.Default():
                        fail(Status.UNKNOWN_OP, "unknown_op")

            with m.State("DRAIN"):
                with m.If(rx_done):
                    m.next = "R_OP"
                with m.Else():
                    m.d.comb += rxo.ready.eq(1)
                    with m.If(rxo.valid & rx_last):
                        m.d.sync += rx_done.eq(1)

            # --- request fields ---------------------------------------------------------------
            with m.State("PARAM"):
                with m.If(pidx == plen_param):
                    m.next = "EXEC"
                with m.Else():
                    m.d.comb += rxo.ready.eq(1)
                    with m.If(rxo.valid):
                        m.d.sync += [
                            param.eq(Cat(param[8:], rx_byte)),
                            pidx.eq(pidx + 1),
                            rx_done.eq(rx_last),
                        ]
            with m.State("EXEC"):
                with m.Switch(op):
                    with m.Case(Op.WRITE):
                        # after 4 bytes: u32 addr in param[16:48]
                        w_addr = param[16:48]
                        n_w = plen[2:] - 1
                        end = Signal(ADDR_BITS + 1)
                        m.d.comb += end.eq(w_addr[:ADDR_BITS] + n_w)
                        with m.If(
                            (w_addr[ADDR_BITS:] != 0) | end[ADDR_BITS] & (end != 1 << ADDR_BITS)
                        ):
                            fail(Status.BAD_ARG)
                        with m.Else():
                            m.d.sync += [addr.eq(w_addr), bidx.eq(0), status.eq(Status.OK)]
                            m.next = "WR_BYTE"
                    with m.Case(Op.READ):
                        # after 6 bytes: u32 addr in param[0:32], u16 count in param[32:48]
                        r_addr, r_count = param[:32], param[32:48]
                        r_end = Signal(ADDR_BITS + 1)
                        m.d.comb += r_end.eq(r_addr[:ADDR_BITS] + r_count[:7])
                        with m.If(
                            (r_count > MAX_READ_WORDS)
                            | (r_addr[ADDR_BITS:] != 0)
                            | r_end[ADDR_BITS] & (r_end != 1 << ADDR_BITS)
                        ):
                            m.d.comb += strobes["bad_length"].eq(1)
                            reply(_BODY_NONE, Status.BAD_ARG)
                        with m.Else():
                            m.d.sync += [addr.eq(r_addr), count.eq(r_count), bidx.eq(0)]
                            reply(_BODY_READ)
                    with m.Default():  # STEP: after 2 bytes, u16 n in param[32:48]
                        m.d.sync += [
                            nsteps.eq(param[32:48]),
                            sidx.eq(0),
                            total.eq(0),
                            aborted.eq(0),
                        ]
                        m.next = "ST_CHECK"

            # --- WRITE ------------------------------------------------------------------------
            with m.State("WR_BYTE"):
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [
                        word.word_select(bidx, 8).eq(rx_byte),
                        bidx.eq(bidx + 1),
                        rx_done.eq(rx_last),
                    ]
                    with m.If(bidx == 3):
                        m.next = "WR_BUS"
            with m.State("WR_BUS"):
                m.d.comb += self.bus.w_en.eq(1)
                with m.If(self.bus.ready):
                    with m.If(self.bus.error):
                        m.d.comb += strobes["bus_errors"].eq(1)
                        m.d.sync += status.eq(Status.BUS_ERROR)
                    m.d.sync += addr.eq(addr + 1)
                    with m.If(rx_done):
                        m.d.sync += body.eq(_BODY_NONE)
                        m.next = "R_OP"
                    with m.Else():
                        m.next = "WR_BYTE"

            # --- RESET_STATE ------------------------------------------------------------------
            with m.State("RS_WAIT"):
                with m.If(~self.busy):
                    m.d.comb += self.reset_state.eq(1)
                    m.next = "RS_GAP"
            with m.State("RS_GAP"):
                m.next = "RS_DONE"
            with m.State("RS_DONE"):
                with m.If(~self.busy):
                    reply(_BODY_NONE)

            # --- EVENTS -----------------------------------------------------------------------
            with m.State("EV_LO"):
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += self.events.payload[:8].eq(rx_byte)
                    m.next = "EV_HI"
            with m.State("EV_HI"):
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [
                        self.events.payload[8:].eq(rx_byte),
                        self.events.valid.eq(1),
                        rx_done.eq(rx_last),
                    ]
                    m.next = "EV_PUSH"
            with m.State("EV_PUSH"):
                with m.If(self.events.ready):
                    m.d.sync += self.events.valid.eq(0)
                    with m.If(rx_done):
                        reply(_BODY_BYTES)
                    with m.Else():
                        m.next = "EV_LO"

            # --- STEP -------------------------------------------------------------------------
            with m.State("ST_CHECK"):
                with m.If(aborted | (sidx == nsteps)):
                    m.d.sync += [outv.eq(Cat(sidx, total)), outn.eq(6), oidx.eq(0)]
                    reply(_BODY_BYTES, Mux(aborted, Status.STEP_TIMEOUT, Status.OK))
                with m.Elif(~self.busy):
                    m.d.comb += self.step.eq(1)
                    m.d.sync += [done_seen.eq(0), chunk.eq(0)]
                    if self.step_timeout is not None:
                        m.d.sync += timer.eq(0)
                    m.next = "ST_RUN"
            with m.State("ST_RUN"):
                if self.step_timeout is not None:
                    m.d.sync += timer.eq(timer + 1)
                with m.If(self.spikes.valid):
                    if self.step_timeout is not None:
                        m.d.sync += timer.eq(0)
                    with m.If(chunk == 0):
                        m.next = "SP_OP"
                    with m.Else():
                        m.next = "SP_LO"
                with m.Elif(done_seen | aborted):
                    with m.If(chunk != 0):
                        m.next = "SP_STATUS"
                    with m.Elif(aborted):
                        m.next = "ST_CHECK"
                    with m.Else():
                        m.d.sync += sidx.eq(sidx + 1)
                        m.next = "ST_CHECK"
                if self.step_timeout is not None:
                    with m.Elif(timer == self.step_timeout):
                        m.d.comb += strobes["step_timeouts"].eq(1)
                        m.d.sync += aborted.eq(1)
            with m.State("SP_OP"):
                with m.If(emit(op)):
                    m.next = "SP_SEQ"
            with m.State("SP_SEQ"):
                with m.If(emit(seq)):
                    m.next = "SP_IDX_LO"
            with m.State("SP_IDX_LO"):
                with m.If(emit(sidx[:8])):
                    m.next = "SP_IDX_HI"
            with m.State("SP_IDX_HI"):
                with m.If(emit(sidx[8:])):
                    m.next = "SP_LO"
            with m.State("SP_LO"):
                with m.If(emit(self.spikes.payload[:8])):
                    m.next = "SP_HI"
            with m.State("SP_HI"):
                with m.If(emit(self.spikes.payload[8:])):
                    m.d.comb += self.spikes.ready.eq(1)
                    m.d.sync += [chunk.eq(chunk + 1), total.eq(total + 1)]
                    with m.If(chunk == MAX_SPIKES - 1):
                        m.next = "SP_STATUS"
                    with m.Else():
                        m.next = "ST_RUN"
            with m.State("SP_STATUS"):
                with m.If(emit(Status.MORE.value)):
                    m.next = "SP_END"
            with m.State("SP_END"):
                with m.If(emit(0, end=True)):
                    m.d.sync += chunk.eq(0)
                    m.next = "ST_RUN"

            # --- reply --------------------------------------------------------------------
            with m.State("R_OP"):
                with m.If(emit(op)):
                    m.next = "R_SEQ"
            with m.State("R_SEQ"):
                with m.If(emit(seq)):
                    with m.Switch(body):
                        with m.Case(_BODY_NONE):
                            m.next = "R_STATUS"
                        with m.Case(_BODY_WORDS):
                            m.next = "R_WORDS"
                        with m.Case(_BODY_READ):
                            m.next = "RD_CHECK"
                        with m.Case(_BODY_BYTES):
                            m.next = "R_BYTES"
            with m.State("R_WORDS"):
                with m.If(widx == nwords):
                    m.next = "R_STATUS"
                with m.Else():
                    w = Signal(32)
                    m.d.comb += w.eq(Mux(use_status, status_arr[widx], ident_arr[widx]))
                    with m.If(emit(w.word_select(bidx, 8))):
                        m.d.sync += bidx.eq(bidx + 1)
                        with m.If(bidx == 3):
                            m.d.sync += widx.eq(widx + 1)
            with m.State("R_BYTES"):
                with m.If(oidx == outn):
                    m.next = "R_STATUS"
                with m.Else():
                    with m.If(emit(outv.word_select(oidx, 8))):
                        m.d.sync += oidx.eq(oidx + 1)
            with m.State("RD_CHECK"):
                with m.If(count == 0):
                    m.next = "R_STATUS"
                with m.Else():
                    m.next = "RD_REQ"
            with m.State("RD_REQ"):
                m.d.comb += self.bus.r_en.eq(1)
                with m.If(self.bus.ready):
                    with m.If(self.bus.error):
                        m.d.comb += strobes["bus_errors"].eq(1)
                        m.d.sync += status.eq(Status.BUS_ERROR)
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                    with m.If(self.bus.r_valid):
                        m.d.sync += [word.eq(self.bus.r_data), bidx.eq(0)]
                        m.next = "RD_BYTES"
                    with m.Else():
                        m.next = "RD_WAIT"
            with m.State("RD_WAIT"):
                with m.If(self.bus.r_valid):
                    m.d.sync += [word.eq(self.bus.r_data), bidx.eq(0)]
                    m.next = "RD_BYTES"
            with m.State("RD_BYTES"):
                with m.If(emit(word.word_select(bidx, 8))):
                    m.d.sync += bidx.eq(bidx + 1)
                    with m.If(bidx == 3):
                        m.next = "RD_CHECK"
            with m.State("R_STATUS"):
                with m.If(emit(status)):
                    m.next = "R_END"
            with m.State("R_END"):
                with m.If(emit(0, end=True)):
                    m.next = "H_OP"
        return m
