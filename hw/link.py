"""The host link command engine (spec: ``docs/protocol.md``; reference: ``host/refdevice.py``).

:class:`Link` receives request frames from a byte stream (a :class:`~spikeforge.hw.uart.UARTRx`
on a board, a byte port on the virtual board), executes them against the core (memory bus,
input events, timesteps, state reset, status) and sends the replies on a byte stream.  It is
generic: everything it knows of the core is passed in at construction (capability words for
IDENTIFY, the number of core status words for STATUS).
"""

from operator import attrgetter
from types import SimpleNamespace

from amaranth.hdl import Array, C, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..protocol import (
    ADDR_BITS,
    EVENT_BITS,
    EVENT_BYTES,
    EVENTS_REPLY,
    HEADER_BYTES,
    IDENT_HEADER_WORDS,
    LINK_COUNTERS,
    MAX_FRAME,
    MAX_READ_WORDS,
    MAX_SPIKES,
    MAX_WRITE_WORDS,
    READ_REQUEST,
    REPLY_OVERHEAD,
    SPIKE_FRAME_HEADER,
    STEP_FINAL,
    STEP_REQUEST,
    WORD_BYTES,
    WRITE_HEADER,
    Op,
    Status,
    identify_words,
)
from .bus import MemBusSignature
from .framing import FrameReceiver, FrameSender, TxByte
from .skid import StreamRegister
from .util import refusing_unused

__all__ = ["Link"]

assert MAX_READ_WORDS < 1 << 7 and MAX_WRITE_WORDS < 1 << 7  # the range checks add 7 bits

# The byte sequencing below is written for these layouts (``spikeforge.protocol``); the asserts
# say what it relies on.
_WORD_BITS = 8 * WORD_BYTES
_WORD_SHIFT = WORD_BYTES.bit_length() - 1
assert WORD_BYTES == 1 << _WORD_SHIFT
# a request's address (WRITE, READ) shifts into ``addr_hi, addr`` from byte 0; READ's count and
# STEP's timesteps into ``count`` from byte ``_COUNT_AT`` (``pidx[2]``)
_COUNT_AT = READ_REQUEST.offset("count")
assert WRITE_HEADER.offset("addr") == READ_REQUEST.offset("addr") == 0
assert WRITE_HEADER.bits("addr") == READ_REQUEST.bits("addr") == _WORD_BITS
assert _COUNT_AT == 4 and READ_REQUEST.size == _COUNT_AT + STEP_REQUEST.size
assert READ_REQUEST.bits("count") == STEP_REQUEST.bits("steps")
# a WRITE body is op, seq, address, then whole words (``blen >> _WORD_SHIFT`` counts them)
assert (HEADER_BYTES + WRITE_HEADER.size) // WORD_BYTES == 1
# ``Cat(sidx, total)`` is the final STEP reply; its first field is also the EVENTS reply (events
# taken) and the header of a spike frame (step index)
assert STEP_FINAL.names == ("steps", "spikes") and STEP_FINAL.offset("spikes") == EVENTS_REPLY.size
assert EVENTS_REPLY.size == SPIKE_FRAME_HEADER.size
# an event comes in and a spike goes out in two bytes (``~blen[0]``, ``SP_LO``, ``SP_HI``)
assert EVENT_BYTES == 2 and HEADER_BYTES % EVENT_BYTES == 0

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
    fast : bool
        For fast clocks: skid buffers in front of and behind the reply encoder, a request's
        address range checked a clock before it is used (a few clocks more per reply; the
        replies are the same), and the frame buffers and counters in LUT RAM
        (``ram_style = "distributed"``).

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
    events : Out(stream.Signature(EVENT_BITS))
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
    spikes : In(stream.Signature(EVENT_BITS))
        Output spikes of the running timestep (neuron addresses); taken only during a STEP and
        stalled while a reply block is sent.
    core_status : In(data.ArrayLayout(32, n_core_status))
        Core counters, reported by STATUS.
    idle : Out(1)
        No request is pending or being executed and every reply byte has left on ``tx``: with
        no new byte on ``rx`` and ``busy`` low, nothing changes (the virtual board's rest hint).
    """

    def __init__(
        self,
        *,
        clk_freq,
        ident_words=(),
        n_core_status=0,
        counter_bits=16,
        step_timeout=None,
        fast=False,
    ):
        # a refused configuration is not an unused elaboratable
        with refusing_unused(self):
            if not isinstance(clk_freq, int) or not 0 < clk_freq < 1 << 32:
                raise ConfigError(f"clk_freq={clk_freq!r} is out of range: allowed 1..2**32-1 Hz")
            ident_words = list(ident_words)
            for i, w in enumerate(ident_words):
                if not isinstance(w, int) or not 0 <= w < 1 << 32:
                    raise ConfigError(f"ident_words[{i}]={w!r} is out of range: allowed 0..2**32-1")
            max_ident = (MAX_FRAME - REPLY_OVERHEAD) // WORD_BYTES - IDENT_HEADER_WORDS
            if len(ident_words) > max_ident:
                raise ConfigError(
                    f"len(ident_words)={len(ident_words)} is out of range: allowed 0..{max_ident}"
                )
            max_status = (MAX_FRAME - REPLY_OVERHEAD) // WORD_BYTES - len(LINK_COUNTERS)
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
        self.clk_freq = clk_freq
        self.ident_words = ident_words
        self.n_core_status = n_core_status
        self.counter_bits = counter_bits
        self.step_timeout = step_timeout
        self.fast = bool(fast)
        super().__init__(
            {
                "rx": In(stream.Signature(8)),
                "tx": Out(stream.Signature(8)),
                "rx_framing_error": In(1),
                "rx_overrun": In(1),
                "bus": Out(MemBusSignature()),
                "events": Out(stream.Signature(EVENT_BITS)),
                "step": Out(1),
                "done": In(1),
                "busy": In(1),
                "reset_state": Out(1),
                "spikes": In(stream.Signature(EVENT_BITS)),
                "core_status": In(data.ArrayLayout(32, n_core_status)),
                "idle": Out(1),
            }
        )

    @property
    def ident_block(self):
        """The u32 words of the IDENTIFY reply (``spikeforge.protocol.identify_words``)."""
        return identify_words(self.clk_freq, self.ident_words)

    def elaborate(self, platform):
        m = Module()
        # the fast build keeps the small buffers in LUT RAM, next to their logic (on a device
        # whose block RAMs are nearly all taken, the free ones can be far away)
        mem_attrs = {"ram_style": "distributed"} if self.fast else None
        m.submodules.rxf = rxf = FrameReceiver(MAX_FRAME, mem_attrs=mem_attrs)
        m.submodules.txf = txf = FrameSender(mem_attrs=mem_attrs)
        wiring.connect(m, wiring.flipped(self.rx), rxf.i)
        tx_quiet = txf.idle
        if self.fast:
            # and one behind it: the UART's shift register loads from a flop, not the
            # encoder's block RAM
            m.submodules.tx_out = tx_out = StreamRegister(8)
            wiring.connect(m, txf.o, tx_out.i)
            wiring.connect(m, tx_out.o, wiring.flipped(self.tx))
            tx_quiet = txf.idle & ~tx_out.o.valid
        else:
            wiring.connect(m, txf.o, wiring.flipped(self.tx))
        rxo, txi = rxf.o, txf.i
        if self.fast:
            # a skid buffer between the command engine and the frame encoder: no path from
            # the engine's state machine into the encoder's buffer write
            m.submodules.tx_reg = tx_reg = StreamRegister(TxByte)
            wiring.connect(m, tx_reg.o, txf.i)
            txi = tx_reg.i
            tx_quiet &= ~tx_reg.o.valid

        # --- counters -----------------------------------------------------------------------
        # The saturating error counters live in a small block RAM.  A strobe sets the counter's
        # pending bit; a read-modify-write (read, then write back the incremented value) serves
        # the lowest pending counter every other cycle.  STATUS waits until nothing is pending.
        names = [name for name, _ in LINK_COUNTERS if name != "flags"]
        n_ctr = len(names)
        strobes = {name: Signal(name=f"inc_{name}") for name in names}
        m.submodules.counters = ctr_mem = Memory(
            shape=self.counter_bits, depth=n_ctr, init=[], attrs=mem_attrs
        )
        ctr_rd = ctr_mem.read_port()
        ctr_wr = ctr_mem.write_port()
        cmax = (1 << self.counter_bits) - 1
        pend = Signal(n_ctr)
        lowest_idx = Signal(range(n_ctr))  # the lowest pending counter
        svc_idx = Signal(range(n_ctr))
        svc_write = Signal()  # second cycle of a read-modify-write
        svc_start = Signal()
        m.d.comb += [
            svc_start.eq((pend != 0) & ~svc_write),
            ctr_wr.addr.eq(svc_idx),
            ctr_wr.data.eq(ctr_rd.data + 1),
            ctr_wr.en.eq(svc_write & (ctr_rd.data != cmax)),
        ]
        m.d.sync += [
            pend.eq(
                Cat(
                    pend[i] & ~(svc_start & (lowest_idx == i)) | strobes[name]
                    for i, name in enumerate(names)
                )
            ),
            svc_write.eq(svc_start),
        ]
        for i in reversed(range(n_ctr)):
            with m.If(pend[i]):
                m.d.comb += lowest_idx.eq(i)
        with m.If(svc_start):
            m.d.sync += svc_idx.eq(lowest_idx)
        m.d.comb += [
            strobes["crc_errors"].eq(rxf.crc_error),
            strobes["oversize"].eq(rxf.oversize),
            strobes["framing_errors"].eq(self.rx_framing_error),
            strobes["overruns"].eq(self.rx_overrun),
        ]

        # --- registers ----------------------------------------------------------------------
        op = Signal(8)
        seq = Signal(8)
        blen = Signal(range(MAX_FRAME + 1))  # body bytes of the request (op, seq, payload)
        rx_done = Signal()  # the last byte of the request was taken
        status = Signal(8)
        body = Signal(2)
        last_seq = Signal(8)
        last_valid = Signal()

        pidx = Signal(range(READ_REQUEST.size + 1))
        plen_param = Signal(range(READ_REQUEST.size + 1))
        word = Signal(_WORD_BITS)
        bidx = Signal(2)  # byte of ``word``; 0 at DISPATCH and when a word starts
        n_status = n_ctr + 1 + self.n_core_status
        n_ident = len(self.ident_block)
        widx = Signal(range(max(n_ident, n_status) + 1))
        nwords = Signal.like(widx)
        use_status = Signal()
        addr = Signal(ADDR_BITS)
        addr_hi = Signal(READ_REQUEST.bits("addr") - ADDR_BITS)  # must be 0
        count = Signal(READ_REQUEST.bits("count"))  # READ: words left; STEP: timesteps asked
        outn = Signal(range(STEP_FINAL.size + 1))
        oidx = Signal(range(STEP_FINAL.size + 1))

        sidx = Signal(STEP_FINAL.bits("steps"))
        total = Signal(STEP_FINAL.bits("spikes"))
        chunk = Signal(range(MAX_SPIKES + 1))
        done_seen = Signal()
        aborted = Signal()
        in_spikes = Signal()  # the reply being sent is a spike frame of a STEP
        timer = timer_load = None
        if self.step_timeout is not None:
            # counts down from step_timeout - 1: the timeout is when it wraps below 0
            timer_load = self.step_timeout - 1
            timer = Signal(timer_load.bit_length() + 1)

        # the word of an IDENTIFY or STATUS reply at ``widx``
        ident_arr = Array(C(w, _WORD_BITS) for w in self.ident_block)
        other_arr = Array(
            [Cat(self.busy, Const(0, 31))]
            + [self.core_status[i] for i in range(self.n_core_status)]
        )
        status_word = Mux(widx < n_ctr, ctr_rd.data, other_arr[widx - n_ctr])
        m.d.comb += ctr_rd.addr.eq(Mux(svc_start, lowest_idx, widx))

        with m.If(self.done):
            m.d.sync += done_seen.eq(1)

        m.d.comb += [
            self.bus.addr.eq(addr),
            self.bus.w_data.eq(word),
            self.events.payload.eq(word[_WORD_BITS - EVENT_BITS :]),
        ]
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

        def take_params(first, n):
            m.d.sync += [pidx.eq(first), plen_param.eq(n)]
            m.next = "PARAM"

        def duplicate():
            return last_valid & (last_seq == seq)

        # the command engine's states, in groups; they share the registers above
        c = SimpleNamespace(
            m=m, aborted=aborted, addr=addr, addr_hi=addr_hi, bidx=bidx, blen=blen,
            body=body, chunk=chunk, count=count, done_seen=done_seen,
            duplicate=duplicate, emit=emit, fail=fail, ident_arr=ident_arr,
            in_spikes=in_spikes, last_seq=last_seq, last_valid=last_valid,
            n_ident=n_ident, n_status=n_status, nwords=nwords, oidx=oidx, op=op,
            outn=outn, pend=pend, pidx=pidx, plen_param=plen_param, reply=reply,
            rx_byte=rx_byte, rx_done=rx_done, rx_last=rx_last, rxf=rxf, rxo=rxo,
            seq=seq, sidx=sidx, status=status, status_word=status_word,
            strobes=strobes, svc_write=svc_write, take_params=take_params,
            timer=timer, timer_load=timer_load, total=total, use_status=use_status,
            widx=widx, word=word,
        )
        with m.FSM() as fsm:
            m.d.comb += self.idle.eq(fsm.ongoing("HEADER") & ~rxf.pending & tx_quiet)
            self._request_states(c)
            self._write_states(c)
            self._step_states(c)
            self._reply_states(c)
        return m

    def _request_states(self, c):
        """HEADER, DISPATCH, DRAIN, PARAM, RANGE, EXEC: a request's header, checks and fields."""
        (
            m, aborted, addr, addr_hi, bidx, blen, count, duplicate, fail, last_seq,
            last_valid, n_ident, n_status, nwords, oidx, op, outn, pidx, plen_param,
            reply, rx_byte, rx_done, rx_last, rxf, rxo, seq, sidx, status, strobes,
            take_params, total, use_status, widx,
        ) = attrgetter(
            "m", "aborted", "addr", "addr_hi", "bidx", "blen", "count", "duplicate",
            "fail", "last_seq", "last_valid", "n_ident", "n_status", "nwords", "oidx",
            "op", "outn", "pidx", "plen_param", "reply", "rx_byte", "rx_done",
            "rx_last", "rxf", "rxo", "seq", "sidx", "status", "strobes", "take_params",
            "total", "use_status", "widx",
        )(c)
        with m.State("HEADER"):
            # op, seq shift in (bidx is 0 here)
            m.d.comb += rxo.ready.eq(1)
            with m.If(rxo.valid):
                m.d.sync += [
                    Cat(op, seq).eq(Cat(seq, rx_byte)),
                    blen.eq(rxf.length),
                    rx_done.eq(rx_last),
                    bidx.eq(bidx + 1),
                ]
                with m.If(bidx[0]):
                    m.d.sync += bidx.eq(0)
                    m.next = "DISPATCH"

        with m.State("DISPATCH"):
            # checks in the reference's order: opcode, payload length (on the body length,
            # payload + 2), sequence number
            known = (op[3:] == 0) & (op[:3] != 0)
            len_ok = Signal()
            # (the lengths of ``spikeforge.protocol.payload_length_ok``)
            with m.Switch(op[:3]):
                with m.Case(Op.WRITE.value):
                    wr_head = HEADER_BYTES + WRITE_HEADER.size
                    m.d.comb += len_ok.eq(
                        (blen >= wr_head + WORD_BYTES)
                        & (blen[:_WORD_SHIFT] == wr_head % WORD_BYTES)
                    )
                with m.Case(Op.READ.value):
                    m.d.comb += len_ok.eq(blen == HEADER_BYTES + READ_REQUEST.size)
                with m.Case(Op.EVENTS.value):
                    m.d.comb += len_ok.eq(~blen[0])  # whole events after op, seq
                with m.Case(Op.STEP.value):
                    m.d.comb += len_ok.eq(blen == HEADER_BYTES + STEP_REQUEST.size)
                with m.Default():  # IDENTIFY, RESET_STATE, STATUS
                    m.d.comb += len_ok.eq(blen == HEADER_BYTES)
            seq_op = (op == Op.RESET_STATE) | (op == Op.EVENTS) | (op == Op.STEP)
            with m.If(~known):
                fail(Status.UNKNOWN_OP, "unknown_op")
            with m.Elif(~len_ok):
                fail(Status.BAD_LENGTH)
            with m.Elif(seq_op & duplicate()):
                fail(Status.DUPLICATE, "duplicates")
            with m.Else():
                with m.If(seq_op):
                    m.d.sync += [last_seq.eq(seq), last_valid.eq(1)]
                with m.Switch(op[:3]):
                    with m.Case(Op.IDENTIFY.value):
                        m.d.sync += [
                            last_valid.eq(0),
                            use_status.eq(0),
                            widx.eq(0),
                            nwords.eq(n_ident),
                        ]
                        reply(_BODY_WORDS)
                    with m.Case(Op.STATUS.value):
                        m.d.sync += [use_status.eq(1), widx.eq(0), nwords.eq(n_status)]
                        reply(_BODY_WORDS)
                    with m.Case(Op.WRITE.value):
                        take_params(0, WRITE_HEADER.size)
                    with m.Case(Op.READ.value):
                        take_params(0, READ_REQUEST.size)
                    with m.Case(Op.RESET_STATE.value):
                        m.next = "RS_WAIT"
                    with m.Case(Op.EVENTS.value):
                        m.d.sync += [sidx.eq(0), outn.eq(EVENTS_REPLY.size), oidx.eq(0)]
                        with m.If(rx_done):
                            reply(_BODY_BYTES)
                        with m.Else():
                            m.next = "WR_BYTE"
                    with m.Default():  # STEP
                        take_params(_COUNT_AT, _COUNT_AT + STEP_REQUEST.size)

        with m.State("DRAIN"):
            with m.If(rx_done):
                m.next = "R_OP"
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid & rx_last):
                    m.d.sync += rx_done.eq(1)

        # --- request fields ---------------------------------------------------------------
        # bytes 0..3 (u32 address) shift into ``addr_hi, addr``, bytes 4, 5 (u16) into
        # ``count``; STEP's u16 starts at byte 4.
        with m.State("PARAM"):
            with m.If(pidx == plen_param):
                m.next = "RANGE" if self.fast else "EXEC"
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [pidx.eq(pidx + 1), rx_done.eq(rx_last)]
                    with m.If(pidx[2]):
                        m.d.sync += count.eq(Cat(count[8:], rx_byte))
                    with m.Else():
                        m.d.sync += Cat(addr, addr_hi).eq(Cat(addr[8:], addr_hi, rx_byte))
        # WRITE (op[0] == 0): words blen // 4 - 1; READ: ``count`` words
        is_read = op[0]
        n_w = Mux(is_read, count[:7], blen[_WORD_SHIFT:] - 1)
        end = Signal(ADDR_BITS + 1)
        m.d.comb += end.eq(addr + n_w)
        range_bad = (addr_hi != 0) | end[ADDR_BITS] & (end[:ADDR_BITS] != 0)
        if self.fast:
            range_bad_q = Signal()
            with m.State("RANGE"):  # the range check, registered
                m.d.sync += range_bad_q.eq(range_bad)
                m.next = "EXEC"
            range_bad = range_bad_q
        with m.State("EXEC"):
            with m.Switch(op):
                with m.Case(Op.WRITE):
                    with m.If(range_bad):
                        fail(Status.BAD_ARG)
                    with m.Else():
                        m.d.sync += status.eq(Status.OK)
                        m.next = "WR_BYTE"
                with m.Case(Op.READ):
                    with m.If(range_bad | (count > MAX_READ_WORDS)):
                        m.d.comb += strobes["bad_length"].eq(1)
                        reply(_BODY_NONE, Status.BAD_ARG)
                    with m.Else():
                        reply(_BODY_READ)
                with m.Default():  # STEP: u16 n in ``count``
                    m.d.sync += [sidx.eq(0), total.eq(0), aborted.eq(0)]
                    m.next = "ST_CHECK"


    def _write_states(self, c):
        """WR_BYTE, WR_BUS, RS_*, EV_PUSH: WRITE, RESET_STATE and EVENTS."""
        (
            m, addr, bidx, body, op, reply, rx_byte, rx_done, rx_last, rxo, sidx,
            status, strobes, word,
        ) = attrgetter(
            "m", "addr", "bidx", "body", "op", "reply", "rx_byte", "rx_done", "rx_last",
            "rxo", "sidx", "status", "strobes", "word",
        )(c)
        # --- WRITE and EVENTS ---------------------------------------------------------------
        with m.State("WR_BYTE"):
            m.d.comb += rxo.ready.eq(1)
            with m.If(rxo.valid):
                m.d.sync += [
                    word.eq(Cat(word[8:], rx_byte)),
                    bidx.eq(bidx + 1),
                    rx_done.eq(rx_last),
                ]
                with m.If(op[2]):  # EVENTS: an event is two bytes
                    with m.If(bidx[0]):
                        m.d.sync += self.events.valid.eq(1)
                        m.next = "EV_PUSH"
                with m.Elif(bidx == 3):
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

        # --- EVENTS (the two bytes of each event shift into ``word`` in WR_BYTE) ------------
        with m.State("EV_PUSH"):
            with m.If(self.events.ready):
                m.d.sync += [self.events.valid.eq(0), sidx.eq(sidx + 1)]
                with m.If(rx_done):
                    reply(_BODY_BYTES)
                with m.Else():
                    m.next = "WR_BYTE"


    def _step_states(self, c):
        """ST_CHECK, ST_RUN, SP_LO, SP_HI: STEP, its spikes streamed in frames."""
        (
            m, aborted, chunk, count, done_seen, emit, in_spikes, oidx, outn, reply,
            sidx, strobes, timer, timer_load, total,
        ) = attrgetter(
            "m", "aborted", "chunk", "count", "done_seen", "emit", "in_spikes", "oidx",
            "outn", "reply", "sidx", "strobes", "timer", "timer_load", "total",
        )(c)
        # --- STEP -------------------------------------------------------------------------
        with m.State("ST_CHECK"):
            with m.If(aborted | (sidx == count)):
                m.d.sync += [outn.eq(STEP_FINAL.size), oidx.eq(0), in_spikes.eq(0)]
                reply(_BODY_BYTES, Mux(aborted, Status.STEP_TIMEOUT, Status.OK))
            with m.Elif(~self.busy):
                m.d.comb += self.step.eq(1)
                m.d.sync += [done_seen.eq(0), chunk.eq(0)]
                if self.step_timeout is not None:
                    m.d.sync += timer.eq(timer_load)
                m.next = "ST_RUN"
        with m.State("ST_RUN"):
            if self.step_timeout is not None:
                m.d.sync += timer.eq(timer - 1)
            with m.If(self.spikes.valid):
                if self.step_timeout is not None:
                    m.d.sync += timer.eq(timer_load)
                with m.If(chunk == 0):
                    # a spike frame: op, seq, u16 step index, spikes..., MORE
                    m.d.sync += [in_spikes.eq(1), outn.eq(SPIKE_FRAME_HEADER.size), oidx.eq(0)]
                    reply(_BODY_BYTES, Status.MORE)
                with m.Else():
                    m.next = "SP_LO"
            with m.Elif(done_seen | aborted):
                with m.If(chunk != 0):
                    m.next = "R_STATUS"
                with m.Elif(aborted):
                    m.next = "ST_CHECK"
                with m.Else():
                    m.d.sync += sidx.eq(sidx + 1)
                    m.next = "ST_CHECK"
            if self.step_timeout is not None:
                with m.Elif(timer[-1]):
                    m.d.comb += strobes["step_timeouts"].eq(1)
                    m.d.sync += aborted.eq(1)
        with m.State("SP_LO"):
            with m.If(emit(self.spikes.payload[:8])):
                m.next = "SP_HI"
        with m.State("SP_HI"):
            with m.If(emit(self.spikes.payload[8:])):
                m.d.comb += self.spikes.ready.eq(1)
                m.d.sync += [chunk.eq(chunk + 1), total.eq(total + 1)]
                with m.If(chunk == MAX_SPIKES - 1):
                    m.next = "R_STATUS"
                with m.Else():
                    m.next = "ST_RUN"


    def _reply_states(self, c):
        """R_*, RD_*: the reply (header, words, bytes, READ data, status)."""
        (
            m, addr, bidx, body, chunk, count, emit, ident_arr, in_spikes, nwords, oidx,
            op, outn, pend, rx_byte, seq, sidx, status, status_word, strobes, svc_write,
            total, use_status, widx, word,
        ) = attrgetter(
            "m", "addr", "bidx", "body", "chunk", "count", "emit", "ident_arr",
            "in_spikes", "nwords", "oidx", "op", "outn", "pend", "rx_byte", "seq",
            "sidx", "status", "status_word", "strobes", "svc_write", "total",
            "use_status", "widx", "word",
        )(c)
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
                        m.next = "RD_REQ"
                    with m.Case(_BODY_BYTES):
                        m.next = "R_BYTES"
        with m.State("R_WORDS"):
            # ``ctr_rd.addr`` is ``widx`` unless a counter update starts: STATUS waits
            # until every counted event is in the RAM.
            with m.If(widx == nwords):
                m.next = "R_STATUS"
            with m.Elif(~use_status | ((pend == 0) & ~svc_write)):
                m.next = "R_WLOAD"
        with m.State("R_WLOAD"):
            m.d.sync += [
                word.eq(Mux(use_status, status_word, ident_arr[widx])),
                widx.eq(widx + 1),
            ]
            m.next = "RD_BYTES"
        with m.State("R_BYTES"):
            with m.If(oidx == outn):
                with m.If(in_spikes):
                    m.next = "SP_LO"
                with m.Else():
                    m.next = "R_STATUS"
            with m.Else():
                with m.If(emit(Cat(sidx, total).word_select(oidx, 8))):
                    m.d.sync += oidx.eq(oidx + 1)
        with m.State("RD_REQ"):
            with m.If(count == 0):
                m.next = "R_STATUS"
            with m.Else():
                m.d.comb += self.bus.r_en.eq(1)
            with m.If((count != 0) & self.bus.ready):
                with m.If(self.bus.error):
                    m.d.comb += strobes["bus_errors"].eq(1)
                    m.d.sync += status.eq(Status.BUS_ERROR)
                m.d.sync += [addr.eq(addr + 1), count[:7].eq(count[:7] - 1)]
                with m.If(self.bus.r_valid):
                    m.d.sync += word.eq(self.bus.r_data)
                    m.next = "RD_BYTES"
                with m.Else():
                    m.next = "RD_WAIT"
        with m.State("RD_WAIT"):
            with m.If(self.bus.r_valid):
                m.d.sync += word.eq(self.bus.r_data)
                m.next = "RD_BYTES"
        with m.State("RD_BYTES"):
            # the bytes of ``word``: a READ word or an IDENTIFY / STATUS word
            with m.If(emit(word[:8])):
                m.d.sync += [word.eq(Cat(word[8:], rx_byte)), bidx.eq(bidx + 1)]
                with m.If(bidx == 3):
                    with m.If(body == _BODY_WORDS):
                        m.next = "R_WORDS"
                    with m.Else():
                        m.next = "RD_REQ"
        with m.State("R_STATUS"):
            with m.If(emit(status)):
                m.next = "R_END"
        with m.State("R_END"):
            with m.If(emit(0, end=True)):
                with m.If(in_spikes):
                    m.d.sync += chunk.eq(0)
                    m.next = "ST_RUN"
                with m.Else():
                    m.d.sync += bidx.eq(0)
                    m.next = "HEADER"
