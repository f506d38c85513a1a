"""The core's timing options: one object, chosen per board, passed down to every part.

Spec: ``docs/core.md`` ("Timing options").  The options change when things happen, never what
the core computes: every combination gives the golden model's spikes and membranes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoreOptions"]


@dataclass(frozen=True)
class CoreOptions:
    """How a :class:`~spikeforge.hw.core.NeuronCore` is built (not what it computes).

    Parameters
    ----------
    fast : bool
        The fast build: every block RAM's output is registered before logic uses it (neuron
        state, accumulators, descriptor and population words, spike bitmap masks, the weight
        banks' inputs too), the sequencer decides its branches from registered conditions, and
        the bus answers a request a clock after it appears.  A few clocks more per population,
        per descriptor and per bus access, and a few hundred flip-flops: for the ECP5, not the
        full UP5K.
    weight_banks : int
        Split the weight memory into this many banks whose outputs are registered before they
        are multiplexed (a large ECP5 weight memory is a cascade of ~200 block RAMs; its output
        multiplexer is the slowest path otherwise).  More than 1 costs one more clock of latency
        in the accumulation pipeline and on every bus read.
    block_ram_tables : bool or None
        Put the small population and descriptor tables in block RAM (``ram_style = "block"``).
        On the iCE40, which has no LUT RAM, Yosys builds memories that small from flip-flops and
        multiplexers; a block RAM is cheaper.  ``None``: only when the platform is an iCE40.
    """

    fast: bool = False
    weight_banks: int = 1
    block_ram_tables: bool | None = None

    def __post_init__(self):
        if self.fast not in (True, False):
            raise TypeError(f"fast must be True or False, not {self.fast!r}")
        banks = self.weight_banks
        if not isinstance(banks, int) or isinstance(banks, bool) or not 1 <= banks <= 64:
            raise TypeError(f"weight_banks must be an integer in 1..64, not {banks!r}")
        if self.block_ram_tables not in (None, True, False):
            raise TypeError(
                f"block_ram_tables must be None, True or False, not {self.block_ram_tables!r}"
            )

    @classmethod
    def small(cls) -> CoreOptions:
        """The smallest build (the UP5K boards): one weight memory, no extra registers."""
        return cls()

    @classmethod
    def fastest(cls, weight_banks: int = 16) -> CoreOptions:
        """The fast build with banked weights (the ULX3S)."""
        return cls(fast=True, weight_banks=weight_banks)

    def table_attrs(self, platform) -> dict | None:
        """Memory attributes of the population and descriptor tables on ``platform``."""
        block = self.block_ram_tables
        if block is None:
            block = str(getattr(platform, "family", "")).lower() == "ice40"
        return {"ram_style": "block"} if block else None
