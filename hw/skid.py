"""A registered stream stage (skid buffer): cuts every combinational path through a stream.

Spec: ``docs/routing.md`` ("Registered stages").  ``o.valid``, ``o.payload`` and ``i.ready`` all
come from flip-flops, so neither ``valid`` nor ``ready`` crosses the stage combinationally; it
passes one item per clock (latency one clock) and loses nothing under back-pressure.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamRegister"]


class StreamRegister(wiring.Component):
    """Two-entry skid buffer between two ``lib.stream`` interfaces.

    Parameters
    ----------
    shape : shape-like
        Payload shape.
    full_rate : bool
        ``True``: the skid buffer, one item per clock.  ``False``: a single register, one item
        every two clocks (``i.ready`` is "the register is empty"), about half the logic: for
        streams that never need more, such as a UART link's events and spikes.

    Attributes
    ----------
    i : In(stream.Signature(shape))
        Input; ``ready`` is registered (low only while the skid register holds an item).
    o : Out(stream.Signature(shape))
        Output; ``valid`` and ``payload`` are registered.
    """

    def __init__(self, shape, *, full_rate=True):
        self.shape = shape
        self.full_rate = bool(full_rate)
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        if not self.full_rate:
            m.d.comb += self.i.ready.eq(~self.o.valid)
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            with m.If(self.i.valid & ~self.o.valid):
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
            return m
        skid = Signal.like(self.o.payload)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            # the output register is free (or being emptied): refill it, skid first
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            # output stalled: park the incoming item
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
