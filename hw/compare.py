"""Comparisons of a signal with a constant, as cheap as the constant allows.

``x < C`` with a constant ``C`` is a carry chain as wide as ``x`` when written plainly; when
``C`` is a power of two it is only "no bit set from log2(C) up", and otherwise the chain needs
only the low bits below ``C``'s width.  On the full UP5K every logic cell counts.
"""

from amaranth import Const, Value

__all__ = ["below", "at_most"]


def below(x, c: int) -> Value:
    """``x < c`` for an unsigned ``x`` and a constant ``c``."""
    x = Value.cast(x)
    if c <= 0:
        return Const(0, 1)
    k = (c - 1).bit_length()  # values below c have no bit set from k up
    if k >= len(x):
        return x < c if c < 1 << len(x) else Const(1, 1)
    high = x[k:] == 0
    if c == 1 << k:
        return high
    return high & (x[:k] < c)


def at_most(x, c: int) -> Value:
    """``x <= c`` for an unsigned ``x`` and a constant ``c``."""
    return below(x, c + 1)
