"""Small helpers shared by the gateware modules.

:func:`bits_for` is the width of a counter or index; :func:`mark_used` and
:func:`refusing_unused` keep Amaranth from warning about an elaboratable that was refused.
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["bits_for", "mark_used", "refusing_unused"]


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
