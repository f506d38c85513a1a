"""The spike bitmaps and the walker that reads them back.

Spec: ``docs/core.md`` ("Spike bitmaps").  Two banks of :data:`~spikeforge.hw.image.BITMAP_BITS`
neurons a word: the sweep writes this step's spikes into one while the walker reads last step's
(recurrent fan-out) or this step's (output stream, same-step fan-out) from either.  Two walker
implementations behind one interface: :class:`Walker` masks a word as it leaves the memory;
:class:`RegisteredWalker` (the fast build) keeps the mask of the next word in a register.
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..image import ARRIVAL_BITS, BITMAP_BITS, BITMAP_SHIFT, CoreConfig, DescList
from ..util import READ_COLLISION_X
from .descriptors import source_layout

__all__ = ["SpikeBitmap", "Walker", "RegisteredWalker", "walk_layout"]


def _groups_bits(config):
    return max(1, (config.n_neurons // config.lanes - 1).bit_length())


class SpikeBitmap(wiring.Component):
    """The two bitmap banks and the writer of the sweep's spikes.

    Every neuron group writes its word with the bits so far (write-through), so a word shared
    by two populations keeps the first one's bits.

    Attributes
    ----------
    valid, spikes, group : In
        A neuron group's results: which of its lanes spiked.
    bank : In(bank_bits)
        The bank the sweep writes.
    clear : In(1)
        A step starts: forget the word being written.
    rd_addr, rd_en : In
        The walker's read port (``bank`` is the address's top bit).
    rd_data : Out(BITMAP_BITS)
    """

    def __init__(self, config: CoreConfig):
        self.config = config
        words = config.bitmap_words
        super().__init__(
            {
                "valid": In(1),
                "spikes": In(config.lanes),
                "group": In(_groups_bits(config)),
                "bank": In(config.bank_bits),
                "clear": In(1),
                "rd_addr": In(range(config.bitmap_banks * words)),
                "rd_en": In(1),
                "rd_data": Out(BITMAP_BITS),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        W = cfg.bitmap_words
        # (written by the sweep's results, read by walks: never in one clock, docs/core.md)
        m.submodules.bm_mem = mem = Memory(
            shape=unsigned(BITMAP_BITS), depth=cfg.bitmap_banks * W, init=[],
            attrs=READ_COLLISION_X,
        )
        rd, wr = mem.read_port(), mem.write_port()
        m.d.comb += [rd.addr.eq(self.rd_addr), rd.en.eq(self.rd_en), self.rd_data.eq(rd.data)]
        wr_valid = Signal()
        wr_word = Signal(range(W))
        wr_bits = Signal(BITMAP_BITS)
        n0 = Signal(cfg.neuron_bits + 1)  # the group's first neuron
        word = Signal(range(W))
        m.d.comb += [n0.eq(self.group << cfg.lane_bits), word.eq(n0 >> BITMAP_SHIFT)]
        new_bits = Mux(wr_valid & (wr_word == word), wr_bits, 0) | (
            self.spikes << n0[: min(BITMAP_SHIFT, cfg.neuron_bits)]
        )[:BITMAP_BITS]
        m.d.comb += [wr.addr.eq(Cat(word, self.bank)), wr.data.eq(new_bits), wr.en.eq(self.valid)]
        with m.If(self.valid):
            m.d.sync += [wr_bits.eq(new_bits), wr_word.eq(word), wr_valid.eq(1)]
        with m.If(self.clear):
            m.d.sync += wr_valid.eq(0)
        return m


def walk_layout(config: CoreConfig) -> data.StructLayout:
    """A walk: neurons ``lo .. end - 1`` of bitmap bank ``bank``; emit them on the spike stream
    and / or hand them to the fan-out (through descriptor list ``list``; with delays, to its
    blocks of arrival ``key``)."""
    nb = config.neuron_bits
    fields = {"bank": config.bank_bits, "lo": nb, "end": nb + 1, "emit": 1, "fanout": 1,
              "list": DescList}
    if config.max_delay:
        fields["key"] = ARRIVAL_BITS
    return data.StructLayout(fields)


class Walker(wiring.Component):
    """Walks a range of a bitmap bank: each set bit is a spike, emitted and / or fanned out.

    The scan puts each spike (the lowest set bit) into an output register, which the spike
    stream and the fan-out hand-over take from: their handshakes start at flops and do not reach
    into the scan.  One spike per two clocks at most, well above what a spike's fan-out takes.

    Attributes
    ----------
    start : In(1)
        Pulse: start the walk ``cmd`` (only while idle).
    cmd : In(walk_layout(config))
    rd_addr, rd_en : Out
        The bitmap's read port.
    rd_data : In(BITMAP_BITS)
    spikes : Out(stream.Signature(neuron_bits))
        Global indices of the spikes of an emitting walk, ascending.
    source : Out(stream.Signature(source_layout(config)))
        The spikes of a fan-out walk, as sources of the descriptor engine.
    idle : Out(1)
    """

    def __init__(self, config: CoreConfig):
        self.config = config
        nb = config.neuron_bits
        super().__init__(
            {
                "start": In(1),
                "cmd": In(walk_layout(config)),
                "rd_addr": Out(range(config.bitmap_banks * config.bitmap_words)),
                "rd_en": Out(1),
                "rd_data": In(BITMAP_BITS),
                "spikes": Out(stream.Signature(unsigned(nb))),
                "source": Out(stream.Signature(source_layout(config))),
                "idle": Out(1),
            }
        )

    #: the walk's end is stored as its last neuron (no subtraction in ISSUE)
    inclusive_end = False

    def _started(self, m):
        """The cycle the walk starts in (a clock after ``start`` when it is registered)."""
        return self.start

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        nb = cfg.neuron_bits
        W = cfg.bitmap_words
        self._m = m
        self._wbits = (W - 1).bit_length()
        self._bank = Signal(cfg.bank_bits)
        key = Signal(ARRIVAL_BITS) if cfg.max_delay else None
        self._lo = Signal(nb)  # first neuron
        self._hi = Signal(nb + 1)  # one past the last neuron (inclusive_end: the last neuron)
        emit, fanout = Signal(), Signal()
        lst = Signal(DescList)
        self._word = Signal(range(W + 1))
        self._first = Signal(range(W))  # word of lo
        self._last = Signal(range(W))  # word of the last neuron
        self._bits = Signal(BITMAP_BITS)
        self._at_last = Signal()  # registered word == last
        self._nx_last = Signal()  # registered word + 1 == last
        # masks of the range's first and last word and "the first word is the last",
        # registered (the walk's per-word decisions start at flops)
        self._lo_mask = Signal(BITMAP_BITS)
        self._hi_mask = Signal(BITMAP_BITS)
        self._first_is_last = Signal()
        self._ones = Const((1 << BITMAP_BITS) - 1, BITMAP_BITS)
        cmd = self.cmd
        with m.If(self.start):
            m.d.sync += [
                self._bank.eq(cmd.bank),
                self._lo.eq(cmd.lo),
                self._hi.eq(cmd.end - int(self.inclusive_end)),
                self._word.eq(cmd.lo >> BITMAP_SHIFT),
                emit.eq(cmd.emit),
                fanout.eq(cmd.fanout),
                lst.eq(cmd.list),
            ]
            if key is not None:
                m.d.sync += key.eq(cmd.key)
        m.d.comb += [self.rd_addr.eq(Cat(self._word[: self._wbits], self._bank)), self.rd_en.eq(0)]

        out_valid = Signal()
        out_n = Signal(nb)
        out_sent = Signal()
        ctz = Signal(BITMAP_SHIFT)
        for k in reversed(range(BITMAP_BITS)):
            with m.If(self._bits[k]):
                m.d.comb += ctz.eq(k)
        has = self._bits.any()
        started = self._started(m)
        with m.FSM(name="walker"):
            with m.State("IDLE"):
                self._idle(m, ~out_valid)
                with m.If(started):
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                hi_n = Signal.like(self._hi)
                hi_bit = Signal(BITMAP_SHIFT)  # zero-extended when neuron_bits < BITMAP_SHIFT
                m.d.comb += [
                    hi_n.eq(self._hi if self.inclusive_end else self._hi - 1),
                    hi_bit.eq(hi_n),
                ]
                m.d.sync += [
                    self._first.eq(self._lo >> BITMAP_SHIFT),
                    self._last.eq(hi_n >> BITMAP_SHIFT),
                    self._lo_mask.eq(
                        (self._ones << self._lo[: min(BITMAP_SHIFT, nb)])[:BITMAP_BITS]
                    ),
                    self._hi_mask.eq(self._ones >> ~hi_bit),
                    self._first_is_last.eq((self._lo >> BITMAP_SHIFT) == (hi_n >> BITMAP_SHIFT)),
                ]
                self._issue_next(m)
            self._mask_states(m)
            with m.State("FIRST"):
                m.d.sync += [
                    self._bits.eq(self._first_bits()),
                    self._at_last.eq(self._first_is_last),
                    self._nx_last.eq(self._first + 1 == self._last),
                ]
                self._after_first(m)
                self._fetch(self._word + 1)
                m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(~has):
                    with m.If(self._at_last):
                        m.next = "IDLE"
                    with m.Else():
                        # the next word is on the read port: take it, fetch the one after
                        m.d.sync += [
                            self._word.eq(self._word + 1),
                            self._at_last.eq(self._nx_last),
                            self._nx_last.eq(self._word + 2 == self._last),
                        ]
                        self._next_bits(m)
                        self._fetch(self._word + 2)
                with m.Elif(~out_valid):
                    m.d.sync += [
                        out_valid.eq(1),
                        out_sent.eq(0),
                        out_n.eq(Cat(ctz, self._word)),
                        self._bits.eq(self._bits & (self._bits - 1)),
                    ]

        # the output register: emit the spike (output populations), hand it to the fan-out
        m.d.comb += [
            self.spikes.valid.eq(out_valid & emit & ~out_sent),
            self.spikes.payload.eq(out_n),
            self.source.payload.offset.eq(out_n - self._lo),
            self.source.payload.list.eq(lst),
        ]
        if key is not None:
            m.d.comb += self.source.payload.key.eq(key)
        emitted = ~emit | out_sent | self.spikes.ready
        m.d.comb += self.source.valid.eq(out_valid & emitted & fanout)
        with m.If(out_valid):
            with m.If(emitted & (~fanout | self.source.ready)):
                m.d.sync += out_valid.eq(0)
            with m.Elif(emitted):
                m.d.sync += out_sent.eq(1)
        return m

    def _fetch(self, word):
        self._m.d.comb += [
            self.rd_en.eq(1),
            self.rd_addr.eq(Cat(word[: self._wbits], self._bank)),
        ]

    # --- the part the two implementations differ in -------------------------------------------
    def _idle(self, m, idle):
        m.d.comb += self.idle.eq(idle)

    def _issue_next(self, m):
        m.d.comb += self.rd_en.eq(1)
        m.next = "FIRST"

    def _mask_states(self, m):
        pass

    def _first_bits(self):
        return (
            self.rd_data
            & self._lo_mask
            & Mux(self._first_is_last, self._hi_mask, self._ones)
        )

    def _after_first(self, m):
        pass

    def _next_bits(self, m):
        m.d.sync += self._bits.eq(
            self.rd_data & Mux(self._nx_last, self._hi_mask, self._ones)
        )


class RegisteredWalker(Walker):
    """The fast build's walker: ``start`` is registered, the end is stored as the last neuron,
    and the mask of the next word to arrive waits in one register, so a bitmap word passes one
    AND between the block RAM and the scan."""

    inclusive_end = True

    def _started(self, m):
        self._start_q = Signal()
        self._in_mask = Signal(BITMAP_BITS)  # the mask of the next word to arrive
        m.d.sync += self._start_q.eq(self.start)
        return self._start_q

    def _idle(self, m, idle):
        m.d.comb += self.idle.eq(idle & ~self._start_q)

    def _issue_next(self, m):
        m.next = "MASK"

    def _mask_states(self, m):
        with m.State("MASK"):  # the first word's mask, from the registered masks
            m.d.sync += self._in_mask.eq(
                self._lo_mask & Mux(self._first_is_last, self._hi_mask, self._ones)
            )
            m.d.comb += self.rd_en.eq(1)
            m.next = "FIRST"

    def _first_bits(self):
        return self.rd_data & self._in_mask

    def _after_first(self, m):
        m.d.sync += self._in_mask.eq(
            Mux(self._first + 1 == self._last, self._hi_mask, self._ones)
        )

    def _next_bits(self, m):
        m.d.sync += [
            self._bits.eq(self.rd_data & self._in_mask),
            self._in_mask.eq(Mux(self._word + 2 == self._last, self._hi_mask, self._ones)),
        ]
