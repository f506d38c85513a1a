"""The on-chip memory bus: how the host link reads and writes the core's memories.

Spec: ``docs/architecture.md``.  One request per cycle at most; a request is taken in a cycle in
which ``(w_en | r_en) & ready``.  A read returns ``r_data`` with ``r_valid`` high for one cycle,
some fixed or variable number of cycles later, in request order.  ``addr`` is a word address in
the chip's flat address map (``spikeforge.hw.image``); ``w_data`` / ``r_data`` are 32 bits wide
and a memory narrower than that uses the low bits (reads return it sign- or zero-extended as the
memory's entry in the address map says).
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .compare import below

__all__ = ["MemBusSignature", "BusSlave", "BusRequest", "BUS_ADDR_BITS", "BUS_DATA_BITS"]

BUS_ADDR_BITS = 28
"""A core's 24-bit map (``spikeforge.hw.image``) and, above it, the core select of a multi-core
chip (``select << 24``; ``spikeforge.hw.router``)."""
BUS_DATA_BITS = 32


class MemBusSignature(wiring.Signature):
    """Memory bus, seen from the master (the host link).  The core takes ``.flip()``.

    Members
    -------
    addr : Out(addr_width)
    w_data : Out(data_width)
    w_en, r_en : Out(1)
        A write / read request (never both in one cycle).
    ready : In(1)
        The slave takes the request in this cycle.
    r_data : In(data_width)
    r_valid : In(1)
        Read data, one cycle per read request, in order.
    error : In(1)
        With ``ready``: the request was refused (address out of range, or a write to read-only
        memory); a refused read still answers with ``r_valid`` and ``r_data = 0``.
    """

    def __init__(self, addr_width=BUS_ADDR_BITS, data_width=BUS_DATA_BITS):
        super().__init__(
            {
                "addr": Out(addr_width),
                "w_data": Out(data_width),
                "w_en": Out(1),
                "r_en": Out(1),
                "ready": In(1),
                "error": In(1),
                "r_data": In(data_width),
                "r_valid": In(1),
            }
        )


class BusSlave(wiring.Component):
    """The memory-bus slave of a core and of the router: decode, check, register, answer.

    A request is taken in a cycle in which ``serve`` is high (and, with ``registered_decode``,
    the request has been on the bus for a clock).  It is refused (``bus.error``) when its
    region is unknown, its offset is at or beyond the region's size, or it writes a read-only
    region; a refused read still answers, with 0.  An accepted request is registered
    (:attr:`req`, a clock later) before the client touches its memories: no combinational path
    runs from the bus to them.  The client puts the read word on :attr:`r_data` ``read_latency``
    clocks after ``req.re``; the slave registers it onto the bus.

    Parameters
    ----------
    regions : iterable of (int, int, bool)
        ``(region, size, writable)`` for each region of the client's address map.
    region_shift : int
        An address is ``region << region_shift | offset``.
    region_bits : int or None
        Address bits of the region field (default: every bit above the offset; an address with
        a bit set above the regions' 4 bits is refused).
    registered_decode : bool
        Decode a request in the clock it appears and answer it in the next (no path from the
        master's address through the range comparators back to the master).
    read_latency : int
        Clocks from ``req.re`` to the read word on :attr:`r_data` (at least 1).

    Attributes
    ----------
    bus : In(MemBusSignature())
        The bus, from the master.
    serve : In(1)
        The client may be accessed in this cycle.
    req : Out(BusRequest)
        The accepted request, registered; ``we`` / ``re`` are pulses.
    pend : Out(1)
        ``req.we | req.re``: the client's memories belong to the bus in this cycle.
    w_data : Out(data_width)
        The request's write data as it is on the bus (for checks registered with the request).
    refused : Out(1)
        Pulse: a request was refused.
    r_data : In(data_width)
        The client's read word, ``read_latency`` clocks after ``req.re``.
    """

    def __init__(
        self,
        regions,
        *,
        region_shift: int,
        region_bits: int | None = None,
        registered_decode: bool = False,
        read_latency: int = 1,
        addr_width: int = BUS_ADDR_BITS,
        data_width: int = BUS_DATA_BITS,
    ):
        self.regions = [(int(r), int(size), bool(w)) for r, size, w in regions]
        if not isinstance(read_latency, int) or read_latency < 1:
            raise ValueError(f"read_latency must be an integer >= 1, not {read_latency!r}")
        self.region_shift = region_shift
        self.region_bits = addr_width - region_shift if region_bits is None else region_bits
        self.registered_decode = bool(registered_decode)
        self.read_latency = read_latency
        largest = max((size for _, size, _ in self.regions), default=1)
        self.request_layout = BusRequest(
            min(region_shift, max(1, (largest - 1).bit_length())), data_width
        )
        super().__init__(
            {
                "bus": In(MemBusSignature(addr_width, data_width)),
                "serve": In(1),
                "req": Out(self.request_layout),
                "pend": Out(1),
                "w_data": Out(data_width),
                "refused": Out(1),
                "r_data": In(data_width),
            }
        )

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        shift = self.region_shift
        region = bus.addr[shift : shift + self.region_bits]
        offset = bus.addr[:shift]
        in_range, writable = Signal(), Signal()
        with m.Switch(region):
            for reg, size, can_write in self.regions:
                with m.Case(reg):
                    m.d.comb += [in_range.eq(below(offset, size)), writable.eq(can_write)]
        ready = self.serve
        if self.registered_decode:
            seen = Signal()  # the request has been on the bus for a clock: its decode is ready
            in_range_q, writable_q = Signal(), Signal()
            m.d.sync += [
                in_range_q.eq(in_range),
                writable_q.eq(writable),
                seen.eq((bus.r_en | bus.w_en) & ~bus.ready),
            ]
            ready = self.serve & seen
            in_range, writable = in_range_q, writable_q
        req = (bus.r_en | bus.w_en) & bus.ready
        m.d.comb += [
            bus.ready.eq(ready),
            bus.error.eq(ready & (bus.r_en | bus.w_en) & ~(in_range & (writable | ~bus.w_en))),
            self.refused.eq(req & bus.error),
            self.w_data.eq(bus.w_data),
            self.pend.eq(self.req.we | self.req.re),
        ]
        good = req & ~bus.error
        m.d.sync += [
            self.req.we.eq(good & bus.w_en),
            self.req.re.eq(good & bus.r_en),
            self.req.region.eq(region),
            self.req.offset.eq(offset),  # (only as wide as the largest region)
            self.req.data.eq(bus.w_data),
        ]
        # every read answers (a refused one with 0), read_latency + 2 clocks after it is taken
        answer = Signal(name="r_stage")
        ok = Signal(name="r_ok")
        m.d.sync += [answer.eq(req & bus.r_en), ok.eq(self.req.re)]
        for k in range(self.read_latency):
            answer_q = Signal(name=f"r_stage{k + 2}")
            m.d.sync += answer_q.eq(answer)
            answer = answer_q
            if k < self.read_latency - 1:
                ok_q = Signal(name=f"r_ok{k + 2}")
                m.d.sync += ok_q.eq(ok)
                ok = ok_q
        m.d.sync += [bus.r_valid.eq(answer), bus.r_data.eq(Mux(ok, self.r_data, 0))]
        return m


def BusRequest(offset_bits: int, data_width: int = BUS_DATA_BITS) -> data.StructLayout:
    """Layout of a registered bus request (:attr:`BusSlave.req`)."""
    return data.StructLayout(
        {"we": 1, "re": 1, "region": 4, "offset": offset_bits, "data": data_width}
    )
