"""Small helpers shared by the gateware modules.

:func:`bits_for` is the width of a counter or index; :func:`mark_used` and
:func:`refusing_unused` keep Amaranth from warning about an elaboratable that was refused.
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["READ_COLLISION_X", "bits_for", "mark_used", "refusing_unused"]

#: ``attrs`` of a :class:`~amaranth.lib.memory.Memory` whose read ports never use the word they
#: read in a clock in which a write port writes the same address (docs/core.md, "Memories").
#: Amaranth's read ports return the old word then (read-first), and a block RAM whose two ports
#: do not guarantee it (the ECP5's DP16KD, the iCE40's SB_RAM40_4K) gets Yosys's emulation: the
#: write delayed a clock, an address comparator and a multiplexer on every output bit.  The board
#: builds (:func:`spikeforge.boards.read_collisions.mark_read_collisions`) tell Yosys that such
#: a read may return anything instead, and the block RAM's output goes straight to its flops.
READ_COLLISION_X = {"spikeforge_read_collision_x": 1}


def bits_for(n: int) -> int:
    """Bits of an unsigned number that holds ``0 .. n - 1`` (at least 1)."""
    return max(1, (int(n) - 1).bit_length())


def mark_used(obj) -> None:
    """Tell Amaranth that ``obj`` (an ``Elaboratable``) is not an unused elaboratable.

    Amaranth warns ("created but never used") when an elaboratable is garbage-collected without
    having been elaborated.  An object that was refused (its constructor or a check raised a
    :class:`~spikeforge.errors.ConfigError`) or that is only inspected is not a forgotten one:
    this silences the warning for ``obj`` alone.  It sets Amaranth's private flag
    (``MustUse._MustUse__used``); this function is the one place that touches it.
    """
    obj._MustUse__used = True


@contextmanager
def refusing_unused(obj):
    """Mark ``obj`` used (:func:`mark_used`) if the ``with`` block raises, then re-raise.

    For an ``__init__`` or a check that may refuse an elaboratable::

        def __init__(self, n):
            with refusing_unused(self):
                if n < 1:
                    raise ConfigError(...)
    """
    try:
        yield obj
    except BaseException:
        mark_used(obj)
        raise
