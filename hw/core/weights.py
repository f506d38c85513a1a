"""The weight memory: one memory (iCE40 SPRAM) or output-registered banks (large ECP5 memories).

Spec: ``docs/core.md`` ("Timing options").  Both implementations have the same ports; they
differ in :attr:`latency`, the clocks from ``addr`` to ``data``, which the accumulation
pipeline and the bus read path take from here.
"""

from amaranth import Array, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..image import CoreConfig
from ..util import READ_COLLISION_X
from .options import CoreOptions

__all__ = ["WeightMemory", "BankedWeightMemory", "weight_memory"]


class WeightMemory(wiring.Component):
    """One weight memory; one address for reads and writes (so it maps to single-port RAM).

    Attributes
    ----------
    addr : In(range(synapse_words))
    we : In(1)
        Write ``wdata`` at ``addr`` (the read data holds during a write: SPRAM's "no change").
    wdata : In(word_bits)
    data : Out(word_bits)
        The word at ``addr`` of :attr:`latency` clocks earlier.
    """

    latency = 1

    def __init__(self, config: CoreConfig):
        self.config = config
        super().__init__(
            {
                "addr": In(range(config.synapse_words)),
                "we": In(1),
                "wdata": In(config.word_bits),
                "data": Out(config.word_bits),
            }
        )

    def _memory(self, m, name, depth):
        # (a read in the clock of a write is never used: docs/core.md, "Memories")
        mem = Memory(shape=unsigned(self.config.word_bits), depth=depth, init=[],
                     attrs=READ_COLLISION_X)
        m.submodules[name] = mem
        return mem.read_port(), mem.write_port()

    def elaborate(self, platform):
        m = Module()
        rd, wr = self._memory(m, "w_mem", self.config.synapse_words)
        m.d.comb += [
            rd.addr.eq(self.addr),
            wr.addr.eq(self.addr),
            wr.data.eq(self.wdata),
            wr.en.eq(self.we),
            rd.en.eq(~self.we),
            self.data.eq(rd.data),
        ]
        return m


class BankedWeightMemory(WeightMemory):
    """The weight memory as banks whose outputs are registered, then picked by address.

    Parameters
    ----------
    banks : int
        Number of banks (a power-of-two bank depth; the last bank may be shorter).
    register_inputs : bool
        Register the banks' inputs too (the address once, the write enables per bank): no logic
        between a flop and ~200 far-apart block RAMs, one more clock of latency; the banks then
        read every clock.
    """

    def __init__(self, config: CoreConfig, banks: int, register_inputs: bool = False):
        words = config.synapse_words
        self.bank_depth = 1 << max(0, (-(-words // banks) - 1).bit_length())
        self.register_inputs = bool(register_inputs)
        self.latency = 2 + self.register_inputs
        super().__init__(config)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        words = cfg.synapse_words
        dbits = (self.bank_depth - 1).bit_length()
        n_banks = -(-words // self.bank_depth)
        bsel = Signal(range(n_banks))
        bsel_d = [Signal.like(bsel, name=f"bsel_q{k}") for k in range(self.latency)]
        m.d.comb += bsel.eq(self.addr >> dbits)
        m.d.sync += [bsel_d[0].eq(bsel)] + [
            bsel_d[k + 1].eq(bsel_d[k]) for k in range(len(bsel_d) - 1)
        ]
        bank_addr, bank_data = self.addr[:dbits], self.wdata
        if self.register_inputs:
            bank_addr, bank_data = Signal(dbits), Signal(cfg.word_bits)
            m.d.sync += [bank_addr.eq(self.addr[:dbits]), bank_data.eq(self.wdata)]
        outputs = []
        for b in range(n_banks):
            rd, wr = self._memory(m, f"w_mem{b}", min(self.bank_depth, words - b * self.bank_depth))
            we = self.we & (bsel == b)
            if self.register_inputs:
                we_q = Signal(name=f"w_we{b}")
                m.d.sync += we_q.eq(we)
                we = we_q
            m.d.comb += [
                rd.addr.eq(bank_addr),
                wr.addr.eq(bank_addr),
                wr.data.eq(bank_data),
                wr.en.eq(we),
                rd.en.eq(1 if self.register_inputs else ~self.we),
            ]
            # reset-less: the ECP5 build can make it the block RAM's output register without
            # routing the reset to every bank (boards/ecp5_outreg.py)
            q = Signal(cfg.word_bits, name=f"w_q{b}", reset_less=True)
            m.d.sync += q.eq(rd.data)
            outputs.append(q)
        m.d.comb += self.data.eq(Array(outputs)[bsel_d[-1]])
        return m


def weight_memory(config: CoreConfig, options: CoreOptions) -> WeightMemory:
    """The weight memory ``options`` ask for."""
    if options.weight_banks == 1:
        return WeightMemory(config)
    return BankedWeightMemory(config, options.weight_banks, register_inputs=options.fast)
