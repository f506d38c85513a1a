"""8N1 UART with byte streams, for the host link (``docs/protocol.md``, "Physical layer").

The bit time is ``divisor = round(clk_freq / baud)`` clock cycles.  The receiver synchronises the
pin with two flip-flops, finds the falling edge of the start bit, checks the start bit at its
middle and samples every following bit at its middle.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .util import refusing_unused

__all__ = ["MIN_DIVISOR", "MAX_BAUD_ERROR", "uart_divisor", "UARTRx", "UARTTx"]

#: Fewest clock cycles per bit: the receiver needs the 2-cycle synchroniser delay plus a
#: half-bit wait that is at least 2 cycles (12 MHz / 3 Mbaud = 4 is still allowed).
MIN_DIVISOR = 4
#: Largest accepted difference between the asked and the real baud rate.  Both ends together may
#: be off by about 5 % before the middle of the stop bit drifts out of it; each end gets 2 %.
MAX_BAUD_ERROR = 0.02


def uart_divisor(clk_freq, baud):
    """Clock cycles per bit for ``baud`` at ``clk_freq``; raise ConfigError if unusable."""
    if not isinstance(clk_freq, (int, float)) or clk_freq <= 0:
        raise ConfigError(f"clk_freq={clk_freq!r} must be a positive number of Hz")
    if not isinstance(baud, (int, float)) or baud <= 0:
        raise ConfigError(f"baud={baud!r} must be a positive number of bit/s")
    divisor = round(clk_freq / baud)
    if divisor < MIN_DIVISOR:
        raise ConfigError(
            f"baud={baud} at clk_freq={clk_freq} gives a divisor of {clk_freq / baud:.2f} clock "
            f"cycles per bit; at least {MIN_DIVISOR} are needed: lower the baud rate to at most "
            f"{clk_freq // MIN_DIVISOR} or raise the clock"
        )
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ConfigError(
            f"baud={baud} at clk_freq={clk_freq}: the nearest divisor {divisor} gives "
            f"{clk_freq / divisor:.0f} baud, {error:.1%} off (allowed {MAX_BAUD_ERROR:.0%}); "
            f"pick a baud rate that divides the clock, e.g. {clk_freq / divisor:.0f}"
        )
    return divisor


def _checked_divisor(component, clk_freq, baud):
    with refusing_unused(component):  # a refused configuration is not an unused elaboratable
        return uart_divisor(clk_freq, baud)


class UARTRx(wiring.Component):
    """UART receiver, 8 data bits, no parity, 1 stop bit, LSB first.

    Parameters
    ----------
    clk_freq : int
        Clock frequency of the ``sync`` domain, in Hz.
    baud : int
        Bit rate.

    Attributes
    ----------
    rx : In(1)
        The pin (idle high); synchronised inside.
    data : Out(stream.Signature(8))
        Received bytes.  A byte that completes while the previous one is still waiting is
        dropped (``overrun``); the waiting byte is kept.
    framing_error : Out(1)
        One-cycle strobe: a byte had a low stop bit and was dropped.  The receiver then waits for
        the line to go high before it looks for the next start bit.
    overrun : Out(1)
        One-cycle strobe: a good byte was dropped because ``data`` was not taken in time.
    divisor : int
        Clock cycles per bit.
    """

    def __init__(self, clk_freq, baud):
        self.divisor = _checked_divisor(self, clk_freq, baud)
        super().__init__(
            {
                "rx": In(1, init=1),
                "data": Out(stream.Signature(8)),
                "framing_error": Out(1),
                "overrun": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(d))
        bit = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # The edge was one cycle ago at the synchroniser output: wait so the start
                    # bit is sampled at its middle.
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [
                        timer.eq(d - 1),
                        shreg.eq(Cat(shreg[1:], rx)),
                        bit.eq(bit + 1),
                    ]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(self.data.valid & ~self.data.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.data.valid.eq(1), self.data.payload.eq(shreg)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """UART transmitter, 8N1, LSB first.

    Parameters
    ----------
    clk_freq : int
    baud : int

    Attributes
    ----------
    data : In(stream.Signature(8))
        Bytes to send; taken when the previous stop bit has been sent.
    tx : Out(1)
        The pin (idle high).
    divisor : int
    """

    def __init__(self, clk_freq, baud):
        self.divisor = _checked_divisor(self, clk_freq, baud)
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        timer = Signal(range(d))
        shreg = Signal(10, init=0x3FF)  # stop bit, 8 data bits, start bit (sent LSB first)
        left = Signal(range(11))

        m.d.comb += self.tx.eq(shreg[0])
        with m.If(left == 0):
            m.d.comb += self.data.ready.eq(1)
            with m.If(self.data.valid):
                m.d.sync += [
                    shreg.eq((1 << 9) | (self.data.payload << 1)),
                    left.eq(10),
                    timer.eq(d - 1),
                ]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq((shreg >> 1) | (1 << 9)), left.eq(left - 1), timer.eq(d - 1)]
        return m
