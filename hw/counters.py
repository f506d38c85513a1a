"""Event counters read over a bus: in a small block RAM, or in flip-flops.

Spec: ``docs/core.md`` ("Status counters"), ``docs/protocol.md`` (the link's counters).  Two
implementations behind one interface: :class:`RamCounters` keeps the counts in a block RAM and
updates them by read-modify-write (a few logic cells whatever their number and width, for the
full UP5K); :class:`FlopCounters` keeps one register and adder each (no block RAM between a
count and its reader, for fast builds).
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["Counters", "RamCounters", "FlopCounters"]


class Counters(wiring.Component):
    """``count`` counters of ``width`` bits, each incremented by a pulse.

    Parameters
    ----------
    count, width : int
    saturate : bool
        Stop at the largest value instead of wrapping around.
    attrs : dict, optional
        Memory attributes (:class:`RamCounters`), e.g. ``{"ram_style": "block"}``.

    Attributes
    ----------
    inc : In(count)
        Pulses: count one event of counter ``k`` (bit ``k``); every pulse is counted.
    hold : In(1)
        The reader needs the read port this cycle: updates wait.
    rd_addr : In(range(count))
    rd_data : Out(width)
        Counter ``rd_addr`` of the clock before.
    busy : Out(1)
        A counted event is not in the counts yet: a reader waits until this is low.
    """

    def __init__(self, count: int, width: int, *, saturate: bool = False, attrs=None):
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive integer, not {count!r}")
        if not isinstance(width, int) or not 1 <= width <= 32:
            raise ValueError(f"width must be an integer in 1..32, not {width!r}")
        self.count, self.width = count, width
        self.saturate = bool(saturate)
        self.attrs = attrs
        super().__init__(
            {
                "inc": In(count),
                "hold": In(1),
                "rd_addr": In(range(count)),
                "rd_data": Out(width),
                "busy": Out(1),
            }
        )

    def _next(self, value):
        """The count after one more event."""
        if self.saturate:
            return Mux(value == (1 << self.width) - 1, value, value + 1)
        return value + 1


class RamCounters(Counters):
    """The counts in a block RAM, served round-robin by read-modify-write.

    Each counter has a small pending count of the pulses not yet in the RAM.  Counter ``k`` is
    read, then written back with its pending count added, in turn with the others (two clocks
    each, paused while the reader holds the port), so a counter waits at most ``2 * count``
    clocks and its pending count never overflows, even with a pulse every clock.
    """

    def elaborate(self, platform):
        m = Module()
        n = self.count
        m.submodules.mem = mem = Memory(shape=self.width, depth=n, init=[], attrs=self.attrs)
        rd, wr = mem.read_port(), mem.write_port()
        # at most one pulse a clock; a counter is served every 2n clocks plus the reader's holds
        pbits = (4 * n + 4).bit_length()
        pending = [Signal(pbits, name=f"pending{k}") for k in range(n)]
        svc = Signal(range(n))  # the counter being served
        writing = Signal()  # the second clock of its read-modify-write
        taken = Signal(pbits)  # its pending count when it was read
        reading = ~writing & ~self.hold
        m.d.comb += [
            rd.addr.eq(Mux(reading, svc, self.rd_addr)),
            self.rd_data.eq(rd.data),
            wr.addr.eq(svc),
            wr.data.eq(self._add(rd.data, taken)),
            wr.en.eq(writing & (taken != 0)),
            self.busy.eq(Cat(p != 0 for p in pending).any() | (writing & (taken != 0))),
        ]
        with m.If(reading):
            m.d.sync += [writing.eq(1), taken.eq(Array(pending)[svc])]
        with m.If(writing):
            m.d.sync += [writing.eq(0), svc.eq(Mux(svc == n - 1, 0, svc + 1))]
        for k, p in enumerate(pending):
            with m.If(reading & (svc == k)):
                m.d.sync += p.eq(self.inc[k])
            with m.Else():
                m.d.sync += p.eq(p + self.inc[k])
        return m

    def _add(self, value, k):
        total = value + k
        if self.saturate:
            return Mux(total[self.width], (1 << self.width) - 1, total[: self.width])
        return total[: self.width]


class FlopCounters(Counters):
    """A register and an adder per counter; a pulse is registered before it is counted (the
    adders are off the pulses' paths).  A count is readable two clocks after its pulse, and
    ``busy`` stays low: ``hold`` is not needed."""

    def elaborate(self, platform):
        m = Module()
        counts = [Signal(self.width, name=f"count{k}") for k in range(self.count)]
        inc_r = Signal(self.count)
        m.d.sync += inc_r.eq(self.inc)
        for k, c in enumerate(counts):
            with m.If(inc_r[k]):
                m.d.sync += c.eq(self._next(c))
        m.d.sync += self.rd_data.eq(Array(counts)[self.rd_addr])
        return m
