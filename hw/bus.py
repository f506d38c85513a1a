"""The on-chip memory bus: how the host link reads and writes the core's memories.

Spec: ``docs/architecture.md``.  One request per cycle at most; a request is taken in a cycle in
which ``(w_en | r_en) & ready``.  A read returns ``r_data`` with ``r_valid`` high for one cycle,
some fixed or variable number of cycles later, in request order.  ``addr`` is a word address in
the chip's flat address map (``spikeforge.hw.image``); ``w_data`` / ``r_data`` are 32 bits wide
and a memory narrower than that uses the low bits (reads return it sign- or zero-extended as the
memory's entry in the address map says).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..protocol import ADDR_BITS

__all__ = ["MemBusSignature", "BUS_ADDR_BITS", "BUS_DATA_BITS"]

BUS_ADDR_BITS = ADDR_BITS
"""The wire protocol's ``spikeforge.protocol.ADDR_BITS``: a core's map (``spikeforge.hw.image``)
and, above it, the core select of a multi-core chip (``select << CORE_SHIFT``;
``spikeforge.hw.router``)."""
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
