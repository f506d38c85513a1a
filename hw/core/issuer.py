"""The op issuer: a fan-out segment becomes one operation group (``lanes`` synapses) a clock.

Spec: ``docs/core.md`` ("Fan-out engine").  A segment waits in a one-entry register while the
current one runs, so the segments of consecutive descriptors follow each other without a bubble.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..image import CoreConfig
from .accumulate import OpSignature

__all__ = ["OpIssuer", "segment_layout"]


def segment_layout(config: CoreConfig) -> data.StructLayout:
    """A run of operation groups: ``n`` groups from group ``tg``, slot ``slot`` for lane 0 of
    the first, lanes ``fmask`` of the first group and ``lmask`` of the last."""
    L = config.lanes
    return data.StructLayout(
        {
            "tg": max(1, (config.n_neurons // L - 1).bit_length()),
            "slot": config.slot_bits,
            "n": config.length_bits,
            "fmask": L,
            "lmask": L,
        }
    )


class OpIssuer(wiring.Component):
    """Issues the groups of segments back to back.

    Attributes
    ----------
    segment : In(stream.Signature(segment_layout(config)))
    op : Out(OpSignature(config))
    idle : Out(1)
        No segment waiting or running.
    """

    def __init__(self, config: CoreConfig):
        self.config = config
        super().__init__(
            {
                "segment": In(stream.Signature(segment_layout(config))),
                "op": Out(OpSignature(config)),
                "idle": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        L = self.config.lanes
        layout = segment_layout(self.config)
        nxt = Signal(layout)
        nxt_valid = Signal()
        cur = Signal(layout)
        active = Signal()
        remaining = Signal.like(cur.n)
        first = Signal()
        last = Signal()  # registered remaining == 1
        take = nxt_valid & (~active | last)
        # a core with weight-shared blocks (short segments back to back) refills the waiting
        # register in the clock it is taken
        refill = take if self.config.conv_words else 0
        m.d.comb += [
            self.segment.ready.eq(~nxt_valid | refill),
            self.idle.eq(~nxt_valid & ~active),
            self.op.valid.eq(active),
            self.op.tg.eq(cur.tg),
            self.op.slot.eq(cur.slot),
            self.op.mask.eq(
                1 if L == 1 else Mux(first, cur.fmask, -1) & Mux(last, cur.lmask, -1)
            ),
        ]
        if not self.config.conv_words:
            with m.If(self.segment.valid & ~nxt_valid):
                m.d.sync += [nxt_valid.eq(1), nxt.eq(self.segment.payload)]
        with m.If(active):
            m.d.sync += [
                cur.tg.eq(cur.tg + 1),
                cur.slot.eq(cur.slot + L),
                remaining.eq(remaining - 1),
                last.eq(remaining == 2),
                first.eq(0),
            ]
            with m.If(last):
                m.d.sync += active.eq(0)
        with m.If(take):
            m.d.sync += [
                cur.tg.eq(nxt.tg),
                cur.slot.eq(nxt.slot),
                remaining.eq(nxt.n),
                last.eq(nxt.n == 1),
                first.eq(1),
                cur.fmask.eq(nxt.fmask),
                cur.lmask.eq(nxt.lmask),
                active.eq(1),
                nxt_valid.eq(0),
            ]
        if self.config.conv_words:  # (after the take: a refill wins)
            with m.If(self.segment.valid & self.segment.ready):
                m.d.sync += [nxt_valid.eq(1), nxt.eq(self.segment.payload)]
        return m
