# Tests of the small gateware helpers (hw/util.py): bits_for, and that a refused elaboratable
# (mark_used / refusing_unused) does not produce Amaranth's "created but never used" warning.
import gc
import warnings

import pytest
from amaranth.hdl import Elaboratable, Fragment, Module

from spikeforge.errors import ConfigError
from spikeforge.hw.link import Link
from spikeforge.hw.uart import UARTRx
from spikeforge.hw.util import bits_for, mark_used, refusing_unused


@pytest.mark.parametrize(
    "n, bits", [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8), (257, 9), (1 << 16, 16)]
)
def test_bits_for(n, bits):
    assert bits_for(n) == bits
    if n > 1:
        assert (n - 1) < 1 << bits_for(n)


class _Thing(Elaboratable):
    def __init__(self, refuse):
        with refusing_unused(self):
            if refuse:
                raise ConfigError("refused")

    def elaborate(self, platform):
        return Module()


def _unused_warnings(make):
    # Amaranth reports unused elaboratables only once something was elaborated in the process.
    Fragment.get(_Thing(refuse=False), None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            make()
        except ConfigError:
            pass
        gc.collect()
    return [w for w in caught if "never used" in str(w.message)]


def test_a_refused_elaboratable_does_not_warn():
    assert _unused_warnings(lambda: _Thing(refuse=True)) == []
    assert _unused_warnings(lambda: Link(clk_freq=0)) == []
    assert _unused_warnings(lambda: UARTRx(12_000_000, 7_000_000)) == []


def test_an_accepted_but_forgotten_elaboratable_still_warns():
    assert len(_unused_warnings(lambda: _Thing(refuse=False))) == 1


def test_mark_used_silences_one_object():
    def make():
        mark_used(_Thing(refuse=False))

    assert _unused_warnings(make) == []
