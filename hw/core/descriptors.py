"""The descriptor engine: a source (a group's descriptor list, an offset) -> its segments.

Spec: ``docs/core.md`` ("Fan-out engine"), the descriptor words :class:`~spikeforge.hw.image.
DescWord`.  Each descriptor of the list is read word by word; a descriptor whose rows hold the
source yields one segment (a run of operation groups) for the op issuer.  Two implementations
behind one interface: :class:`DescriptorEngine` uses each word as it leaves the table;
:class:`RegisteredDescriptorEngine` (the fast build) uses it a clock later, from the register
every table word goes into.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..compare import at_most
from ..image import (
    ARRIVAL_BITS,
    DESC_WORDS,
    LIST_BITS,
    ConvEntry,
    ConvWord,
    CoreConfig,
    DescList,
    DescStride,
    DescWord,
    Span,
)
from .issuer import segment_layout

__all__ = ["DescriptorEngine", "RegisteredDescriptorEngine", "source_layout"]


def source_layout(config: CoreConfig) -> data.StructLayout:
    """A source of fan-out: index ``offset`` within its group, the group's descriptor list (and,
    on a core with delays, ``key``: the arrival of the blocks it uses, :data:`DescStride`)."""
    fields = {"offset": config.offset_bits, "list": DescList}
    if config.max_delay:
        fields["key"] = ARRIVAL_BITS
    return data.StructLayout(fields)


class DescriptorEngine(wiring.Component):
    """Turns sources into segments, one descriptor word a clock.

    Sources wait in a one-entry register that the engine takes when idle: the producers (the
    event input, the walker) see only that register's flag, not the engine's state.

    Attributes
    ----------
    source : In(stream.Signature(source_layout(config)))
    desc_addr : Out
        Address of the descriptor table's read port (word ``4 * d + w``).
    desc_data : In(32)
        The table word addressed a clock earlier (:class:`RegisteredDescriptorEngine`: the
        register it went into, a clock later still).
    segment : Out(stream.Signature(segment_layout(config)))
    idle : Out(1)
        No source waiting or being expanded.
    pending : Out(1)
        A source is waiting in the register.
    param_err : Out(1)
        Pulse: a descriptor out of range was skipped.
    conv_addr : Out(config.conv_bits)
        With weight-shared blocks (``config.conv_words > 0``): the address of the
        :attr:`~spikeforge.hw.image.Region.CONV` read port.
    conv_data : In(32)
        The CONV word addressed two clocks earlier (registered after the block RAM).
    flush : In(1)
        A descriptor word is written: forget the cached weight-shared block.
    """

    #: clocks from a descriptor word's address to the clock the engine uses it
    word_latency = 1

    def __init__(self, config: CoreConfig):
        self.config = config
        ports = {
            "source": In(stream.Signature(source_layout(config))),
            "desc_addr": Out(range(DESC_WORDS * config.descriptors)),
            "desc_data": In(32),
            "segment": Out(stream.Signature(segment_layout(config))),
            "idle": Out(1),
            "pending": Out(1),
            "param_err": Out(1),
        }
        if config.conv_words:
            ports["conv_addr"] = Out(config.conv_bits)
            ports["conv_data"] = In(32)
            ports["flush"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        L, lg = cfg.lanes, cfg.lane_bits
        self._m = m
        src = Signal(source_layout(cfg))
        src_valid = Signal()
        m.d.comb += [self.source.ready.eq(~src_valid), self.pending.eq(src_valid)]
        with m.If(self.source.valid & ~src_valid):
            m.d.sync += [src_valid.eq(1), src.eq(self.source.payload)]
        seg = segment_layout(cfg)
        self._o = Signal(cfg.offset_bits)  # the source's offset
        self._key = Signal(ARRIVAL_BITS) if cfg.max_delay else None  # the source's arrival
        self._d = Signal(cfg.desc_bits + 1)  # the descriptor being read
        left = Signal(LIST_BITS + 1)
        self._last = Signal()  # registered left == 1
        # with weight-shared blocks: registered left <= 2 (a shared block takes two entries)
        self._le2 = Signal() if cfg.conv_words else None
        self._left = left
        self._diff = Signal(cfg.offset_bits)  # the source's row of the block
        self._in = Signal()  # the source is one of the block's rows
        self._stride = Signal(16)
        self._ok = Signal()  # the block is valid: 1 <= length, target + length <= n_neurons
        self._tg, self._n = Signal(seg["tg"].shape), Signal(seg["n"].shape)
        self._tmod = Signal(max(lg, 1))  # target % lanes
        self._fmask, self._lmask = Signal(L), Signal(L)
        self._prod = Signal(cfg.slot_bits)  # row * stride
        idle = Signal()
        m.d.comb += self.idle.eq(~src_valid & idle)
        if cfg.conv_words:
            self._shared_signals()
        with m.FSM(name="desc"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If(src_valid):
                    count = src.list.count
                    m.d.sync += [
                        src_valid.eq(0),
                        self._o.eq(src.offset),
                        *([self._key.eq(src.key)] if self._key is not None else []),
                        self._d.eq(src.list.first),
                        left.eq(count),
                        self._last.eq(count == 1),
                        *([self._le2.eq(count <= 2)] if self._le2 is not None else []),
                    ]
                    with m.If(count != 0):
                        m.next = "A0"
                    if cfg.conv_words:
                        self._shared_take(m, src)
            with m.State("A0"):
                self._read(DescWord.SOURCES)
                m.next = "A1"
            self._block_states(m)
            if cfg.conv_words:
                self._shared_states(m)
        if cfg.conv_words:  # (after the FSM: a write wins over filling the cache)
            with m.If(self.flush):
                m.d.sync += self._g["c_valid"].eq(0)
        return m

    # --- shared by both implementations ------------------------------------------------------
    def _read(self, word):
        """Address word ``word`` of the current descriptor."""
        bits = (DESC_WORDS - 1).bit_length()
        self._m.d.comb += self.desc_addr.eq(Cat(Const(word.value, bits), self._d))

    def _next_descriptor(self, shared=None):
        """On to the next descriptor of the list (``shared``: past a weight-shared block's two
        entries), or back to IDLE after the last."""
        m = self._m
        if self._le2 is None or shared is None:
            m.d.sync += [
                self._d.eq(self._d + 1),
                self._left.eq(self._left - 1),
                self._last.eq(self._left == 2),
            ]
            if self._le2 is not None:
                m.d.sync += self._le2.eq(self._left <= 3)
            done = self._last
        else:
            step = 1 + shared
            m.d.sync += [
                self._d.eq(self._d + step),
                self._left.eq(self._left - step),
                self._last.eq(self._left == step + 1),
                self._le2.eq(self._left <= step + 2),
            ]
            done = Mux(shared, self._le2, self._last)
        with m.If(done):
            m.next = "IDLE"
        with m.Else():
            m.next = "A0"

    def _rows(self, word):
        """From the SOURCES word: the source's row, and whether it is one of the block's."""
        span = Span(word)
        diff = self._o - span.first
        self._m.d.sync += [
            self._diff.eq(diff),
            self._in.eq((self._o >= span.first) & (diff < span.count)),
        ]
        if self.config.conv_words:  # (kept for the cache of a weight-shared block)
            self._m.d.sync += self._rows_span.eq(word)

    def _stride_then(self, word, state):
        """From the STRIDE word: the stride; then ``state`` if the source is one of the block's
        rows, else the next descriptor."""
        m = self._m
        m.d.sync += self._stride.eq(word)
        hit = self._in
        fields = DescStride(word[: DescStride.size])
        if self._key is not None:  # with delays: only the blocks of the source's arrival
            hit = hit & (fields.arrival == self._key)
        if self.config.conv_words:  # a weight-shared block: its own states, two entries
            shared = fields.shared
            with m.If(hit & shared):
                m.next = "C0"
            with m.Elif(hit):
                m.next = state
            with m.Else():
                self._next_descriptor(shared)
            return
        with m.If(hit):
            m.next = state
        with m.Else():
            self._next_descriptor()

    def _block_fields(self, word):
        """From the TARGET word: validity, first group, groups, lane masks; row * stride."""
        m, cfg = self._m, self.config
        L, lg = cfg.lanes, cfg.lane_bits
        target = Span(word)
        tgt, length = target.first, target.count
        m.d.sync += [
            self._ok.eq((length != 0) & at_most(tgt + length, cfg.n_neurons)),
            self._prod.eq(self._diff * self._stride),
        ]
        if L == 1:
            m.d.sync += [self._tg.eq(tgt), self._n.eq(length)]
        else:
            tmod = tgt[:lg]
            last_lane = (tmod + length - 1)[:lg]
            m.d.sync += [
                self._tmod.eq(tmod),
                self._tg.eq(tgt >> lg),
                self._n.eq((length + tmod + L - 1) >> lg),
                self._fmask.eq((Const((1 << L) - 1, L) << tmod)[:L]),
                self._lmask.eq(Const((1 << L) - 1, L) >> (~last_lane)[:lg]),
            ]

    def _push(self, slot):
        """Hand the block's segment (first slot ``slot``) to the issuer, or skip a bad block."""
        m = self._m
        m.d.comb += [
            self.segment.payload.tg.eq(self._tg),
            self.segment.payload.slot.eq(slot + self._prod),
            self.segment.payload.n.eq(self._n),
            self.segment.payload.fmask.eq(self._fmask),
            self.segment.payload.lmask.eq(self._lmask),
        ]
        with m.If(~self._ok):
            m.d.comb += self.param_err.eq(1)
            self._next_descriptor()
        with m.Else():
            m.d.comb += self.segment.valid.eq(1)
            with m.If(self.segment.ready):
                self._next_descriptor()

    def _lane_slot(self, slot):
        """The slot of lane 0 of the first group (the block's slot is its target's lane)."""
        return slot - self._tmod if self.config.lanes > 1 else slot

    # --- weight-shared blocks (convolutions) -------------------------------------------------
    def _read_second(self, word):
        """Address word ``word`` (:class:`ConvWord`) of the current block's second entry."""
        bits = (DESC_WORDS - 1).bit_length()
        self._m.d.comb += self.desc_addr.eq(Cat(Const(word.value, bits), self._d + 1))

    def _shared_take(self, m, src):
        """In IDLE, taking ``src``: a source whose list is the cached weight-shared block goes
        straight to its CONV entry (state ``Q``), without reading the descriptor again."""
        g = self._g
        m.d.sync += [
            g["cur_list"].eq(src.list),
            g["q_diff"].eq(src.offset - g["c_first"]),
            g["q_ge"].eq(src.offset >= g["c_first"]),
        ]
        hit = g["c_valid"] & (src.list.as_value() == g["c_list"])
        if self._key is not None:
            hit = hit & (src.key == g["c_key"])
        with m.If(hit):
            m.next = "Q"

    def _shared_signals(self):
        cfg = self.config
        tw = max(cfg.neuron_bits, 16) + 2  # a target before the range check (no wrap)
        sb = cfg.slot_bits
        g = {
            "tbase": tw, "t_end": tw, "ok": 1, "sbase": sb, "cbase": 16, "caddr": cfg.conv_bits,
            "channels": 16, "row_t": 16, "row_s": 16, "ch_t": 16, "ch_s": 16,
            "rows": 3, "run": 3, "t": tw, "t_hi": tw, "s": sb, "t0": tw, "hi0": tw, "s0": sb,
            "rows_left": 3, "ch_left": 16, "row_last": 1, "ch_last": 1,
            # the cache: the last block of a one-block list, its rows and arrival
            "c_valid": 1, "c_list": DescList.size, "c_first": 16, "c_count": 16,
            "c_key": ARRIVAL_BITS, "cur_list": DescList, "q_diff": cfg.offset_bits, "q_ge": 1,
        }
        self._g = {name: Signal(shape, name=f"sh_{name}") for name, shape in g.items()}
        self._rows_span = Signal(Span, name="sh_rows_span")

    def _shared_start(self, m, entry):
        """The source's first segment from its CONV ``entry``; then EMIT (or the next
        descriptor: an empty entry, or a block out of range, counted)."""
        g = self._g
        t = g["tbase"] + entry.target
        m.d.sync += [
            g["rows"].eq(entry.rows),
            g["run"].eq(entry.run),
            g["t"].eq(t),
            g["t0"].eq(t),
            g["t_hi"].eq(t + entry.run),
            g["hi0"].eq(t + entry.run),
            g["s"].eq(g["sbase"] + entry.slot),
            g["s0"].eq(g["sbase"] + entry.slot),
            g["rows_left"].eq(entry.rows),
            g["row_last"].eq(entry.rows == 1),
            g["ch_left"].eq(g["channels"]),
            g["ch_last"].eq(g["channels"] == 1),
        ]
        empty = (entry.rows == 0) | (entry.run == 0) | (g["channels"] == 0)
        with m.If(empty):
            self._next_descriptor(Const(1))
        with m.Elif(~g["ok"]):
            m.d.comb += self.param_err.eq(1)
            self._next_descriptor(Const(1))
        with m.Else():
            m.next = "EMIT"

    def _shared_states(self, m):
        """A weight-shared block: read its words and the source's CONV entry, then emit one
        segment per (channel, row) (``docs/core.md``, "Weight-shared blocks")."""
        cfg = self.config
        L, lg = cfg.lanes, cfg.lane_bits
        lat = self.word_latency
        data = self.desc_data
        g = self._g
        entry = ConvEntry(self.conv_data)
        m.d.comb += self.conv_addr.eq(g["caddr"])
        # the word schedule: word k addressed in state C<k>, used in state C<k + lat>
        reads = [(True, ConvWord.TABLE), (False, DescWord.TARGET), (False, DescWord.SLOT),
                 (True, ConvWord.ROW), (True, ConvWord.CHANNEL)]
        n_states = len(reads) + lat
        for k in range(n_states):
            with m.State(f"C{k}"):
                if k < len(reads):
                    second, word = reads[k]
                    (self._read_second if second else self._read)(word)
                j = k - lat
                if j < 0:
                    m.next = f"C{k + 1}"
                    continue
                span = Span(data)
                word = reads[j][1]
                if word is ConvWord.TABLE:
                    m.d.sync += [
                        g["caddr"].eq(span.first + self._diff),
                        g["cbase"].eq(span.first),
                        g["channels"].eq(span.count),
                    ]
                elif word is DescWord.TARGET:
                    m.d.sync += [
                        g["tbase"].eq(span.first),
                        g["t_end"].eq(span.first + span.count),
                        g["ok"].eq((span.count != 0)
                                   & at_most(span.first + span.count, cfg.n_neurons)),
                    ]
                elif word is DescWord.SLOT:
                    m.d.sync += g["sbase"].eq(data)
                elif word is ConvWord.ROW:
                    m.d.sync += [g["row_t"].eq(span.first), g["row_s"].eq(span.count)]
                if k < n_states - 1:
                    m.next = f"C{k + 1}"
                    continue
                # the last word (CHANNEL), and the source's entry (addressed when TABLE was
                # used, at least three clocks ago); a one-block list is cached
                m.d.sync += [g["ch_t"].eq(span.first), g["ch_s"].eq(span.count)]
                cur = g["cur_list"]
                m.d.sync += [
                    g["c_valid"].eq((cur.count == 2) & ~self.flush),
                    g["c_list"].eq(cur.as_value()),
                    g["c_first"].eq(self._rows_span.first),
                    g["c_count"].eq(self._rows_span.count),
                ]
                if self._key is not None:
                    m.d.sync += g["c_key"].eq(self._key)
                self._shared_start(m, entry)
        # the cached block: the source's row, its entry's address, two clocks for the entry
        with m.State("Q"):
            with m.If(g["q_ge"] & (g["q_diff"] < g["c_count"])):
                m.d.sync += g["caddr"].eq(g["cbase"] + g["q_diff"])
                m.next = "K0"
            with m.Else():  # not one of the block's rows: nothing to do
                m.next = "IDLE"
        with m.State("K0"):
            m.next = "K1"
        with m.State("K1"):
            m.next = "K2"
        with m.State("K2"):
            self._shared_start(m, entry)
        with m.State("EMIT"):
            t, s, run = g["t"], g["s"], g["run"]
            tmod = t[:lg] if L > 1 else Const(0, 1)
            payload = self.segment.payload
            m.d.comb += payload.tg.eq(t >> lg)
            if L == 1:
                m.d.comb += [payload.slot.eq(s), payload.n.eq(run)]
            else:
                last_lane = (tmod + run - 1)[:lg]
                m.d.comb += [
                    # the slot of lane 0: slots are congruent to their targets modulo L
                    payload.slot.eq(Cat(Const(0, lg), s[lg:])),
                    payload.n.eq((run + tmod + L - 1) >> lg),
                    payload.fmask.eq((Const((1 << L) - 1, L) << tmod)[:L]),
                    payload.lmask.eq(Const((1 << L) - 1, L) >> (~last_lane)[:lg]),
                ]
            with m.If(g["t_hi"] > g["t_end"]):  # past the block's extent: skip the source
                m.d.comb += self.param_err.eq(1)
                self._next_descriptor(Const(1))
            with m.Else():
                m.d.comb += self.segment.valid.eq(1)
                with m.If(self.segment.ready):
                    with m.If(~g["row_last"]):
                        m.d.sync += [
                            g["t"].eq(t + g["row_t"]),
                            g["t_hi"].eq(g["t_hi"] + g["row_t"]),
                            g["s"].eq(s + g["row_s"]),
                            g["rows_left"].eq(g["rows_left"] - 1),
                            g["row_last"].eq(g["rows_left"] == 2),
                        ]
                    with m.Elif(~g["ch_last"]):
                        m.d.sync += [
                            g["t"].eq(g["t0"] + g["ch_t"]),
                            g["t0"].eq(g["t0"] + g["ch_t"]),
                            g["t_hi"].eq(g["hi0"] + g["ch_t"]),
                            g["hi0"].eq(g["hi0"] + g["ch_t"]),
                            g["s"].eq(g["s0"] + g["ch_s"]),
                            g["s0"].eq(g["s0"] + g["ch_s"]),
                            g["rows_left"].eq(g["rows"]),
                            g["row_last"].eq(g["rows"] == 1),
                            g["ch_left"].eq(g["ch_left"] - 1),
                            g["ch_last"].eq(g["ch_left"] == 2),
                        ]
                    with m.Else():
                        self._next_descriptor(Const(1))

    # --- the states the two implementations differ in ----------------------------------------
    def _block_states(self, m):
        data = self.desc_data
        slot = Signal(self.config.slot_bits)
        with m.State("A1"):
            self._read(DescWord.STRIDE)
            self._rows(data)  # SOURCES
            m.next = "A2"
        with m.State("A2"):
            self._read(DescWord.TARGET)
            self._stride_then(data, "A3")  # STRIDE
        with m.State("A3"):
            self._read(DescWord.SLOT)
            self._block_fields(data)  # TARGET
            m.next = "A4"
        with m.State("A4"):
            m.d.sync += slot.eq(self._lane_slot(data))  # SLOT
            m.next = "PUSH"
        with m.State("PUSH"):
            self._push(slot)


class RegisteredDescriptorEngine(DescriptorEngine):
    """The fast build's engine: every word is used from the register it goes into a clock after
    it is read, so no comparison or sum starts at a block RAM's output."""

    word_latency = 2

    def _block_states(self, m):
        data = self.desc_data
        with m.State("A1"):
            self._read(DescWord.STRIDE)
            m.next = "A2"
        with m.State("A2"):
            self._read(DescWord.TARGET)
            self._rows(data)  # SOURCES
            m.next = "A3"
        with m.State("A3"):
            self._read(DescWord.SLOT)
            self._stride_then(data, "A4")  # STRIDE
        with m.State("A4"):
            self._read(DescWord.SLOT)  # (and in PUSH: the register holds SLOT until then)
            self._block_fields(data)  # TARGET
            m.next = "PUSH"
        with m.State("PUSH"):
            self._read(DescWord.SLOT)
            self._push(self._lane_slot(data))
