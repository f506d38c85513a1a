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
    CHANNEL_BITS,
    EVENT_BITS,
    HEADER_BYTES,
    IDENT_HEADER_WORDS,
    LINK_COUNTERS,
    MAX_FRAME,
    MAX_READ_WORDS,
    MAX_REPLY_ITEMS,
    MAX_SAMPLE_CHANNELS,
    MAX_WRITE_WORDS,
    READ_REQUEST,
    REPLY_MARK,
    REPLY_OVERHEAD,
    RUN_COMMAND,
    RUN_STEP_AFTER,
    SAMPLE_HEADER,
    SAMPLE_SEED_ZERO,
    WORD_BYTES,
    WRITE_HEADER,
    Encoder,
    Op,
    SampleFlag,
    Status,
    identify_words,
)
from .bus import MemBusSignature
from .framing import FrameReceiver, FrameSender, RxByte, TxByte
from .skid import StreamRegister
from .util import refusing_unused

__all__ = ["Link"]

assert MAX_READ_WORDS < 1 << 7 and MAX_WRITE_WORDS < 1 << 7  # the range checks add 7 bits

# The byte sequencing below is written for these layouts (``spikeforge.protocol``); the asserts
# say what it relies on.
_WORD_BITS = 8 * WORD_BYTES
_WORD_SHIFT = WORD_BYTES.bit_length() - 1
assert WORD_BYTES == 1 << _WORD_SHIFT
# a request's address (WRITE, READ) shifts into ``addr_hi, addr`` from byte 0; READ's count into
# ``count`` from byte ``_COUNT_AT`` (``pidx[2]``)
_COUNT_AT = READ_REQUEST.offset("count")
assert WRITE_HEADER.offset("addr") == READ_REQUEST.offset("addr") == 0
assert WRITE_HEADER.bits("addr") == READ_REQUEST.bits("addr") == _WORD_BITS
assert _COUNT_AT == 4 and READ_REQUEST.size == _COUNT_AT + 2
# a WRITE body is op, seq, address, then whole words (``blen >> _WORD_SHIFT`` counts them)
assert (HEADER_BYTES + WRITE_HEADER.size) // WORD_BYTES == 1
# a RUN item comes in (into ``word[16:]``) and goes out (from ``word[:16]``) in two bytes; its
# two top bits say what it is
assert EVENT_BITS == 16 and HEADER_BYTES % 2 == 0
assert RUN_STEP_AFTER == 1 << 15 and RUN_COMMAND == 1 << 14 and CHANNEL_BITS == 14
assert REPLY_MARK == 1 << 15
# the ops are told apart by their low three bits; RESET_STATE and RUN share the state reset
# (``op[0]`` says which); READ and WRITE the range check (``op[0]``)
assert Op.RESET_STATE.value == 4 and Op.RUN.value == 5 and Op.WRITE.value == 2
assert Op.READ.value == 3 and Op.SAMPLE.value == 6
# SAMPLE: its header shifts into one register from byte 0; the encoders' numbers are these
assert len(Encoder) == 2 and Encoder.LATENCY.value == 1
assert SampleFlag.RESET == 1 and SampleFlag.COUNTS == 2

# What follows ``op, seq`` in a reply, before the status byte.
_BODY_NONE, _BODY_WORDS, _BODY_READ, _BODY_RUN = range(4)
#: Most timesteps one reply mark counts (``REPLY_MARK | k``).
_MAX_MARK = REPLY_MARK - 1


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
    rx_window : int
        Bytes of the receive ring (:class:`~spikeforge.hw.framing.FrameReceiver`), a power of
        two >= ``MAX_FRAME``, reported by IDENTIFY: the host keeps the frames in flight within
        it.
    fast : bool
        For fast clocks: skid buffers in front of and behind the reply encoder and behind the
        receive ring, a request's address range checked a clock before it is used (a few
        clocks more per reply; the replies are the same), and the reply buffer and counters in
        LUT RAM (``ram_style = "distributed"``).
    encoders : bool
        Execute SAMPLE (``docs/encoding.md``): store a sample's intensities, generate each
        timestep's input events (rate or latency coding) and, if asked, count the output
        spikes and reply with the counts.  Without, SAMPLE is an unknown opcode.

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
        Input events of the next timestep (RUN), pushed only after the whole frame passed its
        CRC and length checks.
    step : Out(1)
        One-cycle pulse: run one timestep (RUN).  Sent only while ``busy`` is low.
    done : In(1)
        Strobe from the core: the timestep is finished and its last spike was transferred.
    busy : In(1)
        The core is working; a timestep and a state reset wait for it to be low before they
        pulse, and a state reset ends once it is low again (the core raises it in the cycle
        after ``reset_state`` if resetting takes time).
    reset_state : Out(1)
        One-cycle pulse: clear the neuron state (RESET_STATE, or a RUN reset item).
    spikes : In(stream.Signature(EVENT_BITS))
        Output spikes of the running timestep (neuron addresses below ``2**15``); taken only
        during a timestep of a RUN and stalled while a reply block is sent.
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
        rx_window=2 * MAX_FRAME,
        fast=False,
        encoders=False,
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
            if (
                not isinstance(rx_window, int)
                or not MAX_FRAME <= rx_window <= 1 << 16
                or rx_window & (rx_window - 1)
            ):
                raise ConfigError(
                    f"rx_window={rx_window!r} is out of range: a power of two from "
                    f"MAX_FRAME={MAX_FRAME} to 65536"
                )
        self.rx_window = rx_window
        self.clk_freq = clk_freq
        self.ident_words = ident_words
        self.n_core_status = n_core_status
        self.counter_bits = counter_bits
        self.step_timeout = step_timeout
        self.fast = bool(fast)
        self.encoders = bool(encoders)
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
        return identify_words(self.clk_freq, self.ident_words, rx_window=self.rx_window)

    def elaborate(self, platform):
        m = Module()
        # the fast build keeps the small buffers in LUT RAM, next to their logic (on a device
        # whose block RAMs are nearly all taken, the free ones can be far away); the receive
        # ring is too large for that and gets a register behind its block RAM instead
        mem_attrs = {"ram_style": "distributed"} if self.fast else None
        m.submodules.rxf = rxf = FrameReceiver(MAX_FRAME, window=self.rx_window)
        m.submodules.txf = txf = FrameSender(mem_attrs=mem_attrs)
        wiring.connect(m, wiring.flipped(self.rx), rxf.i)
        rxo = rxf.o
        rx_quiet = ~rxf.pending
        if self.fast:
            # a single register (a byte every two clocks, far above any UART's rate): the ring's
            # block RAM output goes into its flops with no logic between, which is what a block
            # RAM placed across the device from the link still makes at 100 MHz (the skid
            # buffer's input multiplexer did not, once SAMPLE had made the link larger)
            m.submodules.rx_reg = rx_reg = StreamRegister(RxByte, full_rate=False)
            wiring.connect(m, rxf.o, rx_reg.i)
            rxo = rx_reg.o
            rx_quiet &= ~rx_reg.o.valid
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
        txi = txf.i
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
            strobes["overruns"].eq(self.rx_overrun | rxf.overrun),
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
        # a WRITE / READ / IDENTIFY / STATUS word; a RUN item comes in to ``word[16:]`` and an
        # item of its reply goes out from ``word[:16]``
        word = Signal(_WORD_BITS)
        bidx = Signal(2)  # byte of ``word``; 0 at DISPATCH and when a word starts
        n_status = n_ctr + 1 + self.n_core_status
        n_ident = len(self.ident_block)
        widx = Signal(range(max(n_ident, n_status) + 1))
        nwords = Signal.like(widx)
        use_status = Signal()
        addr = Signal(ADDR_BITS)
        addr_hi = Signal(READ_REQUEST.bits("addr") - ADDR_BITS)  # must be 0
        # READ: words left; RUN: timesteps left of the item being executed
        count = Signal(max(READ_REQUEST.bits("count"), CHANNEL_BITS))

        chunk = Signal(range(MAX_REPLY_ITEMS + 1))  # items in the reply frame being sent
        marks = Signal(range(_MAX_MARK + 1))  # timesteps ended since the last reply mark
        more = Signal()  # the reply frame being closed is not the last one (MORE)
        in_step = Signal()  # an item is being sent from inside a timestep
        done_seen = Signal()
        aborted = Signal()
        timer = timer_load = None
        if self.step_timeout is not None:
            # counts down from step_timeout - 1: the timeout is when it wraps below 0
            timer_load = self.step_timeout - 1
            timer = Signal(timer_load.bit_length() + 1)

        # SAMPLE (``self.encoders``): the header's fields, the stored intensities (a level or a
        # spike time per channel) and the output counts
        sampling = hidx = shdr = chan = n_chan = t_idx = rng = cidx = counting = None
        xin = scaled = spike_t = None
        smem_rd = smem_wr = cmem_rd = cmem_wr = level = None
        if self.encoders:
            sampling = Signal()  # the request being executed is a SAMPLE
            hidx = Signal(range(SAMPLE_HEADER.size + 1))
            shdr = Signal(8 * SAMPLE_HEADER.size)  # the header, byte 0 in the low bits
            chan = Signal(range(MAX_SAMPLE_CHANNELS + 1))
            n_chan = Signal.like(chan)  # the sample's last channel (intensities - 1)
            t_idx = Signal(SAMPLE_HEADER.bits("timesteps"))  # the timestep being generated
            rng = Signal(32)  # the rate encoder's xorshift32 state
            cidx = Signal(SAMPLE_HEADER.bits("out_count"))
            level = Signal(8)
            counting = Signal()
            m.d.comb += counting.eq(
                sampling & self._sfield(shdr, "flags")[SampleFlag.COUNTS.bit_length() - 1]
            )
            # (the fast build keeps them in LUT RAM: a board whose block RAMs hold the weights
            # and the neuron state has none to spare near the core's logic, and two more block
            # RAMs pushed the core's memories far enough from their flops to miss 100 MHz)
            m.submodules.sample_mem = smem = Memory(
                shape=8, depth=1 << (MAX_SAMPLE_CHANNELS - 1).bit_length(), init=[],
                attrs=mem_attrs,
            )
            smem_rd, smem_wr = smem.read_port(), smem.write_port()
            m.submodules.count_mem = cmem = Memory(
                shape=8, depth=1 << SAMPLE_HEADER.bits("out_count"), init=[], attrs=mem_attrs,
            )
            cmem_rd, cmem_wr = cmem.read_port(), cmem.write_port()
            # the two 8 x 8 products of storing an intensity, from flops into flops at every
            # clock: a multiplier whose inputs are multiplexed by the state is too slow for
            # 100 MHz on the ECP5 (and Yosys shares exclusive ones that way)
            xin = Signal(8)
            scaled = Signal(16)
            spike_t = Signal(16)
            m.d.sync += [
                scaled.eq(xin * self._sfield(shdr, "gain")),
                spike_t.eq((255 - level)[:8] * self._sfield(shdr, "timesteps")),
            ]
            m.d.comb += [
                smem_rd.addr.eq(chan),
                smem_wr.addr.eq(chan),
                cmem_rd.addr.eq(cidx),
                cmem_wr.addr.eq(cidx),
            ]

        # ``busy`` as the state machine sees it.  The fast build takes it from a flop: the core's
        # busy is itself a few levels of logic, and the state machine's next-state logic behind
        # it missed 100 MHz on the ECP5 once SAMPLE's states were added.  The core only becomes
        # busy because of the link (a step, a state reset, an input event), and shows it at most
        # two clocks later through the flop: for those clocks the link counts it busy itself.
        # A delayed fall costs a clock; a delayed rise is covered.
        busy = self.busy
        if self.fast:
            busy_q = Signal()
            hold = Signal(2)
            kick = self.step | self.reset_state | (self.events.valid & self.events.ready)
            m.d.sync += [busy_q.eq(self.busy), hold.eq(Mux(kick, 0b11, hold >> 1))]
            busy = busy_q | hold[0]

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
        ]
        # an input event: the item's channel bits (a SAMPLE's: the channel being encoded)
        run_channel = word[_WORD_BITS - EVENT_BITS :][:CHANNEL_BITS]
        if self.encoders:
            m.d.comb += self.events.payload.eq(Mux(sampling, chan, run_channel))
        else:
            m.d.comb += self.events.payload.eq(run_channel)
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

        # the command engine's states, in groups; they share the registers above
        c = SimpleNamespace(
            m=m, aborted=aborted, addr=addr, addr_hi=addr_hi, bidx=bidx, blen=blen,
            body=body, chunk=chunk, count=count, done_seen=done_seen, emit=emit, fail=fail,
            ident_arr=ident_arr, in_step=in_step, last_seq=last_seq, last_valid=last_valid,
            marks=marks, more=more, n_ident=n_ident, n_status=n_status, nwords=nwords, op=op,
            pend=pend, pidx=pidx, plen_param=plen_param, reply=reply, rx_byte=rx_byte,
            rx_done=rx_done, rx_last=rx_last, rxf=rxf, rxo=rxo, seq=seq, status=status,
            status_word=status_word, strobes=strobes, svc_write=svc_write,
            take_params=take_params, timer=timer, timer_load=timer_load,
            use_status=use_status, widx=widx, word=word, busy=busy,
            sampling=sampling, hidx=hidx, shdr=shdr, chan=chan, n_chan=n_chan, t_idx=t_idx,
            rng=rng, cidx=cidx, counting=counting, level=level, smem_rd=smem_rd,
            smem_wr=smem_wr, cmem_rd=cmem_rd, cmem_wr=cmem_wr, send_mark=None, xin=xin,
            scaled=scaled, spike_t=spike_t,
        )
        with m.FSM() as fsm:
            m.d.comb += self.idle.eq(fsm.ongoing("HEADER") & rx_quiet & tx_quiet)
            self._request_states(c)
            self._write_states(c)
            self._run_states(c)
            self._reply_states(c)
            if self.encoders:
                self._sample_states(c)
        return m

    @staticmethod
    def _sfield(shdr, name):
        """Field ``name`` of the SAMPLE header register (``SAMPLE_HEADER``, little-endian)."""
        first = 8 * SAMPLE_HEADER.offset(name)
        return shdr[first : first + SAMPLE_HEADER.bits(name)]

    def _request_states(self, c):
        """HEADER, DISPATCH, DRAIN, PARAM, RANGE, EXEC: a request's header, checks and fields."""
        (
            m, addr, addr_hi, bidx, blen, chunk, count, fail, last_seq, last_valid, marks,
            more, aborted, n_ident, n_status, nwords, op, pidx, plen_param, reply, rx_byte,
            rx_done, rx_last, rxf, rxo, seq, status, strobes, take_params, use_status, widx,
        ) = attrgetter(
            "m", "addr", "addr_hi", "bidx", "blen", "chunk", "count", "fail", "last_seq",
            "last_valid", "marks", "more", "aborted", "n_ident", "n_status", "nwords", "op",
            "pidx", "plen_param", "reply", "rx_byte", "rx_done", "rx_last", "rxf", "rxo", "seq",
            "status", "strobes", "take_params", "use_status", "widx",
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
                    m.next = "DCHECK" if self.fast else "DISPATCH"

        def request_checks():
            """The request's checks (in the current state): ``known``, ``len_ok``, and whether
            it is a duplicate or out of order."""
            if self.encoders:
                known = (op[3:] == 0) & (op[:3] != 0)
            else:
                known = (op[3:] == 0) & (op[:3] != 0) & (op[:3] != 6)
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
                with m.Case(Op.RUN.value):
                    m.d.comb += len_ok.eq(~blen[0])  # whole items after op, seq
                if self.encoders:
                    # at least one intensity (at most MAX_SAMPLE_CHANNELS: the frame's limit)
                    with m.Case(Op.SAMPLE.value):
                        m.d.comb += len_ok.eq(blen > HEADER_BYTES + SAMPLE_HEADER.size)
                with m.Default():  # IDENTIFY, RESET_STATE, STATUS
                    m.d.comb += len_ok.eq(blen == HEADER_BYTES)
            # RESET_STATE and RUN are not executed twice; a RUN must follow the last request
            seq_op = op[2] & ~op[1]
            streamed = op[0]  # (with seq_op) RUN
            if self.encoders:  # and SAMPLE, sequenced as RUN
                seq_op = op[2] & (op[:2] != 3)
                streamed = op[0] | op[1]
            duplicate = last_valid & (last_seq == seq)
            in_order = ~last_valid | (seq == (last_seq + 1)[:8])
            return known, len_ok, seq_op & duplicate, seq_op & streamed & ~in_order

        if self.fast:
            # the checks into flops, a clock before DISPATCH decides on them: with them, the
            # next-state logic behind the length comparisons missed 100 MHz on the ECP5
            known_q, len_ok_q, dup_q, ooo_q = Signal(), Signal(), Signal(), Signal()
            with m.State("DCHECK"):
                m.d.sync += Cat(known_q, len_ok_q, dup_q, ooo_q).eq(Cat(*request_checks()))
                m.next = "DISPATCH"

        with m.State("DISPATCH"):
            # checks in the reference's order: opcode, payload length (on the body length,
            # payload + 2), sequence number
            if self.fast:
                known, len_ok, dup_fail, ooo_fail = known_q, len_ok_q, dup_q, ooo_q
            else:
                known, len_ok, dup_fail, ooo_fail = request_checks()
            with m.If(~known):
                fail(Status.UNKNOWN_OP, "unknown_op")
            with m.Elif(~len_ok):
                fail(Status.BAD_LENGTH)
            with m.Elif(dup_fail):
                fail(Status.DUPLICATE, "duplicates")
            with m.Elif(ooo_fail):
                fail(Status.OUT_OF_ORDER, "out_of_order")
            with m.Else():
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
                    if self.encoders:
                        m.d.sync += c.sampling.eq(0)
                        with m.Case(Op.SAMPLE.value):
                            m.d.sync += [c.sampling.eq(1), c.hidx.eq(0)]
                            m.next = "SP_PARAM"
                    with m.Default():  # RUN: the reply's header first, then the items
                        m.d.sync += [marks.eq(0), chunk.eq(0), more.eq(0), aborted.eq(0)]
                        reply(_BODY_RUN)

        with m.State("DRAIN"):
            with m.If(rx_done):
                m.next = "R_OP"
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid & rx_last):
                    m.d.sync += rx_done.eq(1)

        # --- request fields ---------------------------------------------------------------
        # bytes 0..3 (u32 address) shift into ``addr_hi, addr``, bytes 4, 5 (u16) into
        # ``count``
        with m.State("PARAM"):
            with m.If(pidx == plen_param):
                m.next = "RANGE" if self.fast else "EXEC"
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [pidx.eq(pidx + 1), rx_done.eq(rx_last)]
                    with m.If(pidx[2]):
                        m.d.sync += count.eq(Cat(count[8:16], rx_byte))
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
            with m.If(is_read):
                with m.If(range_bad | (count > MAX_READ_WORDS)):
                    m.d.comb += strobes["bad_length"].eq(1)
                    reply(_BODY_NONE, Status.BAD_ARG)
                with m.Else():
                    reply(_BODY_READ)
            with m.Else():  # WRITE
                with m.If(range_bad):
                    fail(Status.BAD_ARG)
                with m.Else():
                    m.d.sync += status.eq(Status.OK)
                    m.next = "WR_BYTE"

    def _write_states(self, c):
        """WR_BYTE, WR_BUS, RS_*: WRITE and the state reset (RESET_STATE, a RUN reset item)."""
        (m, addr, bidx, body, op, reply, rx_byte, rx_done, rx_last, rxo, status, strobes,
         word) = attrgetter(
            "m", "addr", "bidx", "body", "op", "reply", "rx_byte", "rx_done", "rx_last", "rxo",
            "status", "strobes", "word",
        )(c)
        # --- WRITE ----------------------------------------------------------------------------
        with m.State("WR_BYTE"):
            m.d.comb += rxo.ready.eq(1)
            with m.If(rxo.valid):
                m.d.sync += [
                    word.eq(Cat(word[8:], rx_byte)),
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

        # --- state reset ------------------------------------------------------------------
        with m.State("RS_WAIT"):
            with m.If(~c.busy):
                m.d.comb += self.reset_state.eq(1)
                m.next = "RS_GAP"
        with m.State("RS_GAP"):
            m.next = "RS_DONE"
        with m.State("RS_DONE"):
            with m.If(~c.busy):
                if self.encoders:
                    with m.If(c.sampling):  # a SAMPLE's reset: on with its first timestep
                        m.next = "SG_T"
                    with m.Elif(op[0]):  # a RUN item: on with the next one
                        m.next = "ST_CHECK"
                    with m.Else():
                        reply(_BODY_NONE)
                else:
                    with m.If(op[0]):  # a RUN item: on with the next one
                        m.next = "ST_CHECK"
                    with m.Else():
                        reply(_BODY_NONE)

    def _run_states(self, c):
        """RUN_ITEM, RUN_DEC, EV_PUSH, ST_CHECK, ST_RUN, EMIT, E_LO, E_HI: a RUN request, its
        items executed in order and its reply items (spikes, step marks) streamed in frames."""
        (
            m, aborted, bidx, chunk, count, done_seen, emit, in_step, marks, more, rx_byte,
            rx_done, rx_last, rxo, status, strobes, timer, timer_load, word,
        ) = attrgetter(
            "m", "aborted", "bidx", "chunk", "count", "done_seen", "emit", "in_step", "marks",
            "more", "rx_byte", "rx_done", "rx_last", "rxo", "status", "strobes", "timer",
            "timer_load", "word",
        )(c)
        item = word[_WORD_BITS - EVENT_BITS :]

        def send_mark():
            # ``REPLY_MARK | marks``: the timesteps ended since the last mark
            m.d.sync += [word[:16].eq(Cat(marks, C(1, 1))), marks.eq(0)]
            m.next = "EMIT"

        c.send_mark = send_mark

        # --- the items ----------------------------------------------------------------------
        with m.State("RUN_ITEM"):
            with m.If(rx_done):
                with m.If(marks != 0):
                    m.d.sync += in_step.eq(0)
                    send_mark()
                with m.Else():
                    m.next = "R_STATUS"
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [
                        word.eq(Cat(word[8:], rx_byte)),
                        bidx.eq(bidx + 1),
                        rx_done.eq(rx_last),
                    ]
                    # after a step timeout the rest of the request is read and skipped
                    with m.If(bidx[0] & ~aborted):
                        m.d.sync += bidx.eq(0)
                        m.next = "RUN_DEC"
        with m.State("RUN_DEC"):
            m.d.sync += count.eq(item[15])  # an event: one timestep after it if flagged
            with m.Switch(item[14:]):
                with m.Case(0b01):  # RUN_COMMAND | k
                    m.d.sync += count.eq(item[:CHANNEL_BITS])
                    with m.If(item[:CHANNEL_BITS] == 0):
                        m.next = "RS_WAIT"
                    with m.Else():
                        m.next = "ST_CHECK"
                with m.Case(0b11):  # reserved: skipped, and the request says BAD_ARG
                    m.d.comb += strobes["bad_length"].eq(1)
                    m.d.sync += status.eq(Status.BAD_ARG)
                    m.next = "RUN_ITEM"
                with m.Default():  # an input event
                    m.d.sync += self.events.valid.eq(1)
                    m.next = "EV_PUSH"
        with m.State("EV_PUSH"):
            with m.If(self.events.ready):
                m.d.sync += self.events.valid.eq(0)
                m.next = "ST_CHECK"

        # --- timesteps ----------------------------------------------------------------------
        with m.State("ST_CHECK"):
            with m.If(count == 0):
                m.next = "RUN_ITEM"
                if self.encoders:
                    with m.If(c.sampling):  # a SAMPLE's timestep ended: the next one
                        m.next = "SG_T"
            with m.Elif(marks == _MAX_MARK):
                m.d.sync += in_step.eq(0)
                send_mark()
            with m.Elif(~c.busy):
                m.d.comb += self.step.eq(1)
                m.d.sync += [done_seen.eq(0), in_step.eq(1)]
                if self.step_timeout is not None:
                    m.d.sync += timer.eq(timer_load)
                m.next = "ST_RUN"
        with m.State("ST_RUN"):
            if self.step_timeout is not None:
                m.d.sync += timer.eq(timer - 1)
            with m.If(self.spikes.valid):
                if self.step_timeout is not None:
                    m.d.sync += timer.eq(timer_load)
                with m.If(marks != 0):
                    send_mark()  # the spike waits for it
                with m.Else():
                    m.d.comb += self.spikes.ready.eq(1)
                    m.d.sync += word[:16].eq(self.spikes.payload)
                    m.next = "EMIT"
                    if self.encoders:
                        with m.If(c.counting):  # a SAMPLE with COUNTS: counted, not sent
                            m.next = "SC_CHK"
            with m.Elif(done_seen):
                # (a SAMPLE with COUNTS sends no step marks)
                new_marks = Mux(c.counting, 0, marks + 1) if self.encoders else marks + 1
                m.d.sync += [marks.eq(new_marks), count.eq(count - 1), in_step.eq(0)]
                m.next = "ST_CHECK"
            if self.step_timeout is not None:
                with m.Elif(timer[-1]):
                    m.d.comb += strobes["step_timeouts"].eq(1)
                    m.d.sync += [
                        aborted.eq(1),
                        status.eq(Status.STEP_TIMEOUT),
                        count.eq(0),
                        in_step.eq(0),
                    ]
                    m.next = "RUN_ITEM"

        # --- reply items ----------------------------------------------------------------------
        with m.State("EMIT"):
            with m.If(chunk == MAX_REPLY_ITEMS):
                m.d.sync += more.eq(1)  # close this frame (MORE); a new one follows
                m.next = "R_STATUS"
            with m.Else():
                m.next = "E_LO"
        with m.State("E_LO"):
            with m.If(emit(word[:8])):
                m.next = "E_HI"
        with m.State("E_HI"):
            with m.If(emit(word[8:16])):
                m.d.sync += chunk.eq(chunk + 1)
                with m.If(in_step):
                    m.next = "ST_RUN"
                with m.Else():
                    m.next = "ST_CHECK"

    def _reply_states(self, c):
        """R_*, RD_*: the reply (header, words, READ data, RUN items, status)."""
        (
            m, addr, bidx, body, chunk, count, emit, ident_arr, more, nwords, op, pend,
            rx_byte, seq, status, status_word, strobes, svc_write, use_status, widx, word,
        ) = attrgetter(
            "m", "addr", "bidx", "body", "chunk", "count", "emit", "ident_arr", "more",
            "nwords", "op", "pend", "rx_byte", "seq", "status", "status_word", "strobes",
            "svc_write", "use_status", "widx", "word",
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
                    with m.Case(_BODY_RUN):
                        # a RUN reply goes on with its items (after a MORE frame, with the
                        # item that did not fit)
                        m.d.sync += [more.eq(0), chunk.eq(0)]
                        with m.If(more):
                            m.next = "EMIT"
                        with m.Else():
                            m.next = "RUN_ITEM"
                            if self.encoders:
                                with m.If(c.sampling):  # the intensities are in: run it
                                    m.next = "SG_BEGIN"
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
        with m.State("RD_REQ"):
            with m.If(count[:7] == 0):
                m.next = "R_STATUS"
            with m.Else():
                m.d.comb += self.bus.r_en.eq(1)
            with m.If((count[:7] != 0) & self.bus.ready):
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
            with m.If(emit(Mux(more, Status.MORE, status))):
                m.next = "R_END"
        with m.State("R_END"):
            with m.If(emit(0, end=True)):
                with m.If(more):
                    m.next = "R_OP"  # the next frame of a long RUN reply
                with m.Else():
                    m.d.sync += bidx.eq(0)
                    m.next = "HEADER"

    def _sample_states(self, c):
        """SP_*, SG_*, SC_*: a SAMPLE request (``docs/encoding.md``).

        The header shifts into ``shdr`` (SP_PARAM) and is checked (SP_CHECK); each intensity is
        turned into what the encoder needs per channel (SP_LOAD .. SP_STORE, the two products
        from flops into flops): the rate encoder's level, or the latency encoder's spike time
        (255: never) and stored.  After the reply's header (as a RUN reply), SG_BEGIN seeds the
        generator, clears the counts and resets the state if asked; then, per timestep, every
        stored channel is read in ascending order (SG_RD, SG_REG, SG_DEC: every block-RAM
        output goes into a flop first), a firing one pushed as an input event (SG_PUSH), and
        the timestep run by the RUN engine (ST_CHECK, ST_RUN).  With COUNTS, each output spike
        in range increments its saturating count (SC_CHK .. SC_WR) and the counts are the reply
        (SC_ORD .. SC_OEM); otherwise the spikes go out as in a RUN reply.
        """
        (
            m, aborted, chunk, cidx, chan, cmem_rd, cmem_wr, count, counting, emit, fail,
            hidx, level, marks, more, n_chan, reply, rng, rx_byte, rx_done, rx_last, rxo,
            send_mark, shdr, smem_rd, smem_wr, t_idx, word, in_step,
        ) = attrgetter(
            "m", "aborted", "chunk", "cidx", "chan", "cmem_rd", "cmem_wr", "count", "counting",
            "emit", "fail", "hidx", "level", "marks", "more", "n_chan", "reply", "rng",
            "rx_byte", "rx_done", "rx_last", "rxo", "send_mark", "shdr", "smem_rd", "smem_wr",
            "t_idx", "word", "in_step",
        )(c)
        xin, scaled, spike_t = c.xin, c.scaled, c.spike_t
        sval = Signal(8)  # a stored value or a count, read from its block RAM
        in_range = Signal()  # the spike in ``word`` is one of the counted neurons
        last_count = Signal(8)  # ``out_count - 1``
        draw = Signal(32)  # the generator's next state
        field = lambda name: self._sfield(shdr, name)  # noqa: E731
        encoder, timesteps = field("encoder"), field("timesteps")
        latency = encoder[0]  # (SP_CHECK refuses the others)
        out_first, out_count = field("out_first"), field("out_count")

        # --- the request ------------------------------------------------------------------
        with m.State("SP_PARAM"):
            with m.If(hidx == SAMPLE_HEADER.size):
                m.next = "SP_CHECK"
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [
                        shdr.eq(Cat(shdr[8:], rx_byte)),
                        hidx.eq(hidx + 1),
                        rx_done.eq(rx_last),
                    ]
        with m.State("SP_CHECK"):
            bad = (encoder >= len(Encoder)) | (timesteps == 0) | counting & (out_count == 0)
            with m.If(bad):
                fail(Status.BAD_ARG)
            with m.Else():
                m.d.sync += [
                    last_count.eq(out_count - 1),
                    chan.eq(0),
                    marks.eq(0),
                    chunk.eq(0),
                    more.eq(0),
                    aborted.eq(0),
                ]
                m.next = "SP_LOAD"
        with m.State("SP_LOAD"):
            with m.If(rx_done):
                m.d.sync += n_chan.eq(chan - 1)  # (the last channel: at least one came)
                reply(_BODY_RUN)
            with m.Else():
                m.d.comb += rxo.ready.eq(1)
                with m.If(rxo.valid):
                    m.d.sync += [xin.eq(rx_byte), rx_done.eq(rx_last)]
                    m.next = "SP_SCALE"
        with m.State("SP_SCALE"):  # ``scaled`` = x * gain, at this clock's edge
            m.next = "SP_LEVEL"
        with m.State("SP_LEVEL"):
            # level = min(255, (x * gain) >> 4)
            m.d.sync += level.eq(Mux(scaled[12:] != 0, 255, scaled[4:12]))
            m.next = "SP_TIME"
        with m.State("SP_TIME"):  # ``spike_t`` = (255 - level) * T, at this clock's edge
            m.next = "SP_STORE"
        with m.State("SP_STORE"):
            # latency: t = ((255 - level) * T) >> 8 if level >= threshold, else never (255)
            m.d.comb += [
                smem_wr.en.eq(1),
                smem_wr.data.eq(
                    Mux(
                        latency,
                        Mux(level >= field("threshold"), spike_t[8:], 255),
                        level,
                    )
                ),
            ]
            m.d.sync += chan.eq(chan + 1)
            m.next = "SP_LOAD"

        # --- the timesteps ----------------------------------------------------------------
        with m.State("SG_BEGIN"):
            seed = field("seed")
            m.d.sync += [
                rng.eq(Mux(seed == 0, SAMPLE_SEED_ZERO, seed)),
                t_idx.eq(0),
                cidx.eq(0),
            ]
            with m.If(counting):
                m.next = "SC_CLR"
            with m.Elif(field("flags")[SampleFlag.RESET.bit_length() - 1]):
                m.next = "RS_WAIT"
            with m.Else():
                m.next = "SG_T"
        with m.State("SC_CLR"):
            m.d.comb += [cmem_wr.en.eq(1), cmem_wr.data.eq(0)]
            m.d.sync += cidx.eq(cidx + 1)
            with m.If(cidx == last_count):
                with m.If(field("flags")[SampleFlag.RESET.bit_length() - 1]):
                    m.next = "RS_WAIT"
                with m.Else():
                    m.next = "SG_T"
        with m.State("SG_T"):
            with m.If(aborted | (t_idx == timesteps)):
                with m.If(counting & ~aborted):
                    m.d.sync += cidx.eq(0)
                    m.next = "SC_ORD"
                with m.Elif(marks != 0):
                    m.d.sync += in_step.eq(0)
                    send_mark()
                with m.Else():
                    m.next = "R_STATUS"
            with m.Else():
                m.d.sync += chan.eq(0)
                m.next = "SG_RD"
        with m.State("SG_RD"):  # the stored value of ``chan`` is read
            m.next = "SG_REG"
        with m.State("SG_REG"):
            # the block RAM's output and the next draw into flops before any logic uses them
            s1 = rng ^ (rng << 13)[:32]
            s2 = s1 ^ (s1 >> 17)
            m.d.sync += [sval.eq(smem_rd.data), draw.eq(s2 ^ (s2 << 5)[:32])]
            m.next = "SG_DEC"

        def next_channel():
            m.d.sync += chan.eq(chan + 1)
            with m.If(chan == n_chan):  # the events are in: run the timestep
                m.d.sync += [count.eq(1), t_idx.eq(t_idx + 1)]
                m.next = "ST_CHECK"
            with m.Else():
                m.next = "SG_RD"

        with m.State("SG_DEC"):
            # rate: one xorshift32 step per channel; fires when the draw's top byte < level
            fire = Mux(latency, sval == t_idx, draw[24:32] < sval)
            with m.If(~latency):
                m.d.sync += rng.eq(draw)
            with m.If(fire):
                m.d.sync += self.events.valid.eq(1)
                m.next = "SG_PUSH"
            with m.Else():
                next_channel()
        with m.State("SG_PUSH"):
            with m.If(self.events.ready):
                m.d.sync += self.events.valid.eq(0)
                next_channel()

        # --- the counts -------------------------------------------------------------------
        with m.State("SC_CHK"):  # the spike (in ``word[:16]``): one of the counted neurons?
            rel = Signal(16)
            m.d.comb += rel.eq(word[:16] - out_first)
            # (into flops: the subtraction and the comparison are too deep for the next state)
            m.d.sync += [cidx.eq(rel), in_range.eq(rel < out_count)]
            m.next = "SC_RANGE"
        with m.State("SC_RANGE"):
            with m.If(in_range):
                m.next = "SC_RD"
            with m.Else():
                m.next = "ST_RUN"
        with m.State("SC_RD"):
            m.next = "SC_REG"
        with m.State("SC_REG"):  # the block RAM's output into a flop
            m.d.sync += sval.eq(cmem_rd.data)
            m.next = "SC_WR"
        with m.State("SC_WR"):
            m.d.comb += [cmem_wr.en.eq(sval != 255), cmem_wr.data.eq(sval + 1)]
            m.next = "ST_RUN"
        with m.State("SC_ORD"):
            m.next = "SC_OREG"
        with m.State("SC_OREG"):
            m.d.sync += sval.eq(cmem_rd.data)
            m.next = "SC_OEM"
        with m.State("SC_OEM"):
            with m.If(emit(sval)):
                m.d.sync += cidx.eq(cidx + 1)
                with m.If(cidx == last_count):
                    m.next = "R_STATUS"
                with m.Else():
                    m.next = "SC_ORD"
