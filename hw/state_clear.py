"""Clearing a core's neuron state over its memory bus: RESET_STATE.

Spec: ``docs/protocol.md`` (RESET_STATE) and ``docs/core.md`` (the address map).  Used by
:class:`~spikeforge.hw.chip.Chip` (one core) and :class:`~spikeforge.hw.multicore.MultiCore`
(every core at once); it lives apart from both so that neither imports the other for it.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bus import MemBusSignature
from .image import ConfigWord, CoreConfig, Region, address

__all__ = ["StateClear"]


class StateClear(wiring.Component):
    """Clears the neuron state over the memory bus when ``start`` pulses (RESET_STATE).

    Writes 0 to every word of the V, I and ACC regions and 1 to ``CONFIG.CONTROL`` (forget the
    pending recurrent spikes), one write per cycle the core is ready.  Parameters, weights and
    routing are kept.

    Attributes
    ----------
    start : In(1)
        One-cycle pulse.
    busy : Out(1)
        High from the cycle after ``start`` until the last write was taken.
    bus : Out(MemBusSignature())
        Master of the core's bus while ``busy``.
    """

    def __init__(self, config: CoreConfig):
        self.config = config
        super().__init__(
            {"start": In(1), "busy": Out(1), "bus": Out(MemBusSignature())}
        )

    def elaborate(self, platform):
        m = Module()
        n = self.config.n_neurons
        regions = [Region.V, Region.I, Region.ACC]
        region = Signal(range(len(regions) + 1))
        offset = Signal(range(max(n, 2)))
        addr = Signal.like(self.bus.addr)
        with m.Switch(region):
            for k, reg in enumerate(regions):
                with m.Case(k):
                    m.d.comb += addr.eq(address(reg) + offset)
            with m.Default():
                m.d.comb += addr.eq(address(Region.CONFIG, ConfigWord.CONTROL.value))
        m.d.comb += [
            self.bus.addr.eq(addr),
            self.bus.w_data.eq(region == len(regions)),  # CONTROL bit 0: forget pending spikes
            self.bus.w_en.eq(self.busy),
        ]
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), region.eq(0), offset.eq(0)]
        with m.Elif(self.busy & self.bus.ready):
            with m.If(region == len(regions)):
                m.d.sync += self.busy.eq(0)
            with m.Elif(offset == n - 1):
                m.d.sync += [region.eq(region + 1), offset.eq(0)]
            with m.Else():
                m.d.sync += offset.eq(offset + 1)
        return m
