"""The accumulation pipeline: read an accumulator, add a weight, write it back, one op a clock.

Spec: ``docs/core.md`` ("Accumulation pipeline").  An operation group (one synapse per lane)
enters from the op issuer; its weight word arrives from the weight memory ``weight_latency``
clocks later.  Two implementations behind one interface: :class:`AccumulatePipe` adds the
accumulator word as it leaves the memory (read-after-write forwarded over distances 1-2);
:class:`RegisteredAccumulatePipe` takes it from a register a clock later (distances 1-3).
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..image import CoreConfig

__all__ = ["AccumulatePipe", "RegisteredAccumulatePipe", "OpSignature"]


class OpSignature(wiring.Signature):
    """One operation group a clock, from the op issuer: ``mask`` lanes of group ``tg`` add the
    weights of slot ``slot`` (lane ``l``: slot ``slot + l``)."""

    def __init__(self, config: CoreConfig):
        lanes = config.lanes
        super().__init__(
            {
                "valid": Out(1),
                "mask": Out(lanes),
                "tg": Out(max(1, (config.n_neurons // lanes - 1).bit_length())),
                "slot": Out(config.slot_bits),
            }
        )


class AccumulatePipe(wiring.Component):
    """Accumulation pipelines of all lanes (they share the group address and the weight word).

    Parameters
    ----------
    config : CoreConfig
    weight_latency : int
        Clocks from ``w_addr`` to ``weight`` (the weight memory's ``latency``).

    Attributes
    ----------
    op : In(OpSignature(config))
    w_addr : Out
        Weight-memory address of the op (``slot // weights_per_word``).
    weight : In(word_bits)
        The weight word, ``weight_latency`` clocks after ``w_addr``.
    rd_valid, rd_tg : Out
        Read this group's accumulators (the state memories' read address).
    acc : In(ArrayLayout(acc_bits, lanes))
        The accumulator words read (for :class:`RegisteredAccumulatePipe`: a clock later,
        registered).
    wr_valid, wr_tg, wr_sum : Out
        Write ``wr_sum[l]`` to the accumulator of group ``wr_tg`` in lanes ``wr_valid``.
    busy : Out(1)
        An op is in flight.
    """

    #: read-after-write distances the pipeline forwards (the accumulator read's latency + 1)
    forward_distance = 2

    def __init__(self, config: CoreConfig, weight_latency: int):
        self.config = config
        self.weight_latency = weight_latency
        L = config.lanes
        gbits = max(1, (config.n_neurons // L - 1).bit_length())
        acc = data.ArrayLayout(unsigned(config.fmt.acc_bits), L)
        super().__init__(
            {
                "op": In(OpSignature(config)),
                "w_addr": Out(range(config.synapse_words)),
                "weight": In(config.word_bits),
                "rd_valid": Out(1),
                "rd_tg": Out(gbits),
                "acc": In(acc),
                "wr_valid": Out(L),
                "wr_tg": Out(gbits),
                "wr_sum": Out(acc),
                "busy": Out(1),
            }
        )

    def _weight_of(self, lane, half):
        """Lane ``lane``'s weight of the word (one lane: the slot's half)."""
        wb = self.config.fmt.weight_bits
        word = self.weight
        if self.config.lanes == 1:
            return Mux(half, word[wb : 2 * wb], word[:wb])
        return word[lane * wb : (lane + 1) * wb]

    def _weight_stages(self, m):
        """The op travelling beside its weight word: ``(valid, tg, half)`` of each clock until
        the word arrives; the last is the stage the word belongs to."""
        L = self.config.lanes
        gbits = len(self.rd_tg)
        stages = []
        valid, tg, half = Mux(self.op.valid, self.op.mask, 0), self.op.tg, self.op.slot[0]
        for k in range(self.weight_latency):
            s = (
                Signal(L, name=f"w{k + 1}_valid"),
                Signal(gbits, name=f"w{k + 1}_tg"),
                Signal(name=f"w{k + 1}_half"),
            )
            m.d.sync += [s[0].eq(valid), s[1].eq(tg), s[2].eq(half)]
            stages.append(s)
            valid, tg, half = s
        return stages

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        L = cfg.lanes
        gbits = len(self.rd_tg)
        acc_bits = cfg.fmt.acc_bits
        m.d.comb += self.w_addr.eq(self.op.slot >> (cfg.weights_per_word.bit_length() - 1))
        stages = self._weight_stages(m)
        wv, wtg, whalf = stages[-1]
        m.d.comb += [self.rd_valid.eq(wv.any()), self.rd_tg.eq(wtg)]

        # S1 .. S(forward_distance + 1): the sum of stage k is written at S2 and forwarded to
        # a read of the same group up to forward_distance clocks behind
        depth = self.forward_distance + 1
        s_valid = [Signal(L, name=f"s{k + 1}_valid") for k in range(depth)]
        s_tg = [Signal(gbits, name=f"s{k + 1}_tg") for k in range(depth)]
        sums = [
            [Signal(acc_bits, name=f"s{k + 2}_sum{l}") for l in range(L)] for k in range(depth - 1)
        ]
        m.d.sync += [s_valid[k + 1].eq(s_valid[k]) for k in range(depth - 1)]
        m.d.sync += [s_tg[k + 1].eq(s_tg[k]) for k in range(depth - 1)]
        read_valid, read_tg, in_flight = self._read_stage(m, wv, wtg)
        m.d.sync += [s_valid[0].eq(read_valid), s_tg[0].eq(read_tg)]
        for l in range(L):
            weight = self._weight_of(l, whalf)
            acc_now = self._forward(m, l, s_valid, s_tg, sums, read_tg)
            w = self._weight_register(m, l, weight)
            m.d.sync += sums[0][l].eq(acc_now.as_signed() + w)
            m.d.sync += [sums[k + 1][l].eq(sums[k][l]) for k in range(depth - 2)]
        m.d.comb += [
            self.wr_valid.eq(s_valid[1]),
            self.wr_tg.eq(s_tg[1]),
            self.busy.eq(
                self.op.valid
                | _any(v.any() for v, _, _ in stages)
                | in_flight
                | s_valid[0].any()
                | s_valid[1].any()
            ),
        ]
        m.d.comb += [self.wr_sum[l].eq(sums[0][l]) for l in range(L)]
        return m

    # --- the part the two implementations differ in -------------------------------------------
    def _read_stage(self, m, wv, wtg):
        """The stage S1 is loaded from (the accumulator word arrives at S1)."""
        return wv, wtg, 0

    def _weight_register(self, m, lane, weight):
        w = Signal(signed(self.config.fmt.weight_bits), name=f"s1_w{lane}")
        m.d.sync += w.eq(weight)
        return w

    def _forward(self, m, lane, s_valid, s_tg, sums, read_tg):
        """The accumulator word of the group at S1, with the writes still in flight."""
        return Mux(
            s_valid[1][lane] & (s_tg[1] == s_tg[0]),
            sums[0][lane],
            Mux(s_valid[2][lane] & (s_tg[2] == s_tg[0]), sums[1][lane], self.acc[lane]),
        )


class RegisteredAccumulatePipe(AccumulatePipe):
    """The fast build's pipeline: the accumulator word is registered (stage R) before S1 adds
    it, so a read sees writes up to distance 3, forwarded from S2 / S3 / S4 by flags compared
    and registered at R."""

    forward_distance = 3

    def _read_stage(self, m, wv, wtg):
        L = self.config.lanes
        self._r_valid, self._r_tg = Signal(L, name="r_valid"), Signal(len(wtg), name="r_tg")
        m.d.sync += [self._r_valid.eq(wv), self._r_tg.eq(wtg)]
        return self._r_valid, self._r_tg, self._r_valid.any()

    def _weight_register(self, m, lane, weight):
        wb = self.config.fmt.weight_bits
        r_w = Signal(signed(wb), name=f"r_w{lane}")
        w = Signal(signed(wb), name=f"s1_w{lane}")
        m.d.sync += [r_w.eq(weight), w.eq(r_w)]
        return w

    def _forward(self, m, lane, s_valid, s_tg, sums, read_tg):
        fwd = [Signal(name=f"fwd{k + 1}_{lane}") for k in range(3)]
        m.d.sync += [fwd[k].eq(s_valid[k][lane] & (s_tg[k] == self._r_tg)) for k in range(3)]
        return Mux(
            fwd[0],
            sums[0][lane],
            Mux(fwd[1], sums[1][lane], Mux(fwd[2], sums[2][lane], self.acc[lane])),
        )


def _any(terms):
    result = 0
    for t in terms:
        result = result | t
    return result
