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

    Writes 0 to the words of the V, I and ACC regions of the neurons in use and 1 to
    ``CONFIG.CONTROL`` (forget the pending recurrent spikes), one write per cycle the core is
    ready.  Parameters, weights and routing are kept.

    Parameters
    ----------
    config : CoreConfig
    in_use : bool
        Clear only neurons ``0 .. limit - 1`` (``limit`` is the core's ``CONFIG.N_NEURONS``),
        else every neuron.

    Attributes
    ----------
    start : In(1)
        One-cycle pulse.
    limit : In(range(config.n_neurons + 1))
        With ``in_use``: the neurons to clear, sampled at ``start``.
    busy : Out(1)
        High from the cycle after ``start`` until the last write was taken.
    bus : Out(MemBusSignature())
        Master of the core's bus while ``busy``.
    """

    def __init__(self, config: CoreConfig, *, in_use: bool = False):
        self.config = config
        self.in_use = in_use
        super().__init__(
            {
                "start": In(1),
                "busy": Out(1),
                "bus": Out(MemBusSignature()),
                "limit": In(range(config.n_neurons + 1)),
            }
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
        if self.in_use:
            # the last neuron to clear (with none, the clear starts at CONTROL)
            last = Signal.like(offset)
            with m.If(self.start & ~self.busy):
                m.d.sync += last.eq(self.limit - 1)
            at_last = offset == last
        else:
            at_last = offset == n - 1
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), region.eq(0), offset.eq(0)]
            if self.in_use:
                with m.If(self.limit == 0):
                    m.d.sync += region.eq(len(regions))
        with m.Elif(self.busy & self.bus.ready):
            with m.If(region == len(regions)):
                m.d.sync += self.busy.eq(0)
            with m.Elif(at_last):
                m.d.sync += [region.eq(region + 1), offset.eq(0)]
            with m.Else():
                m.d.sync += offset.eq(offset + 1)
        return m
