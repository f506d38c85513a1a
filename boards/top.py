"""The board top: oscillator -> PLL -> chip, with the host UART on the board's USB-UART pins.

Spec: ``docs/boards.md``.  :class:`BoardTop` is the same for every board; what differs is data
(:class:`~spikeforge.boards.configs.Board`).  The chip is anything that
``chip_factory(chip_params, clk_freq_hz)`` returns with the virtual-board ports: a
``wiring.Component`` with ``rx: In(stream.Signature(8))`` (bytes from the host) and
``tx: Out(stream.Signature(8))`` (bytes to the host), optionally ``idle: Out(1)``.  The UART PHY is
anything that ``uart_factory(clk_freq_hz, baud)`` returns with the members of :class:`UARTPhy`.
"""

from amaranth import ClockDomain, Elaboratable, Module, ResetSignal
from amaranth.build import ResourceError
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..hw.util import mark_used
from .configs import get_board
from .pll import ECP5PLL, ICE40PLL, ecp5_pll_params, ice40_pll_params

__all__ = ["BoardTop", "UARTPhy", "plan_clock", "default_chip_factory", "default_uart_factory"]


class UARTPhy(wiring.Signature):
    """What a UART PHY gives the board top (the contract of ``uart_factory``).

    Members
    -------
    rx_pin : In(1)
        The UART receive pin (idle high).
    tx_pin : Out(1)
        The UART transmit pin (idle high).
    rx : Out(stream.Signature(8))
        Bytes received from the host.
    tx : In(stream.Signature(8))
        Bytes to send to the host.
    framing_error, overrun : Out(1)
        Pulses: a byte with a bad stop bit; a byte lost because ``rx`` was not taken in time.
        The board top passes them to a chip that has ``rx_framing_error`` / ``rx_overrun``
        inputs.
    """

    def __init__(self):
        super().__init__(
            {
                "rx_pin": In(1),
                "tx_pin": Out(1),
                "rx": Out(stream.Signature(8)),
                "tx": In(stream.Signature(8)),
                "framing_error": Out(1),
                "overrun": Out(1),
            }
        )


def plan_clock(board, clock_mhz=None):
    """The PLL settings that make the board's core clock.

    Parameters
    ----------
    board : Board or str
    clock_mhz : float, optional
        Requested clock; default ``board.chip.clock_mhz``.

    Returns
    -------
    ICE40PLLParams or ECP5PLLParams
        Its ``f_out_mhz`` is the frequency the core really runs at.
    """
    board = get_board(board)
    target = board.chip.clock_mhz if clock_mhz is None else float(clock_mhz)
    if board.family == "ice40":
        return ice40_pll_params(board.osc_mhz, target)
    return ecp5_pll_params(board.osc_mhz, target)


def default_chip_factory(chip_params, clk_freq_hz):
    """Build the spikeforge chip for a board (``spikeforge.hw.chip.Chip``).

    Parameters
    ----------
    chip_params : ChipParams
    clk_freq_hz : float
        The clock the chip runs at (the PLL's achieved frequency).
    """
    try:
        from ..hw.chip import Chip
    except ImportError as exc:
        raise ConfigError(
            f"the chip gateware (spikeforge.hw.chip.Chip) is not available ({exc}); pass "
            "chip_factory= to build another design"
        ) from exc
    # A board has a UART PHY in front: its framing-error and overrun strobes are counted by STATUS.
    return Chip(
        chip_params.to_core_config(),
        clk_freq_hz,
        uart_errors=True,
        cores=getattr(chip_params, "cores", 1),
        options=chip_params.core_options(),
        rx_window=getattr(chip_params, "rx_window", 1024),
        encoders=getattr(chip_params, "encoders", False),
    )


def default_uart_factory(clk_freq_hz, baud):
    """The UART PHY of the chip (``spikeforge.hw.uart``), adapted to :class:`UARTPhy`."""
    try:
        from ..hw import uart as hw_uart
    except ImportError as exc:
        raise ConfigError(
            f"the UART gateware (spikeforge.hw.uart) is not available ({exc}); pass "
            "uart_factory= to the board top"
        ) from exc
    return _HWUart(hw_uart, clk_freq_hz, baud)


class _HWUart(wiring.Component):
    """``spikeforge.hw.uart.UARTRx`` + ``UARTTx`` behind the :class:`UARTPhy` signature."""

    def __init__(self, hw_uart, clk_freq_hz, baud):
        self._hw_uart = hw_uart
        self._clk_freq_hz = clk_freq_hz
        self._baud = baud
        super().__init__(UARTPhy())

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = self._hw_uart.UARTRx(self._clk_freq_hz, self._baud)
        m.submodules.utx = utx = self._hw_uart.UARTTx(self._clk_freq_hz, self._baud)
        m.d.comb += [
            urx.rx.eq(self.rx_pin),
            self.tx_pin.eq(utx.tx),
            self.framing_error.eq(urx.framing_error),
            self.overrun.eq(urx.overrun),
        ]
        wiring.connect(m, urx.data, wiring.flipped(self.rx))
        wiring.connect(m, wiring.flipped(self.tx), utx.data)
        return m


class BoardTop(Elaboratable):
    """A board's top level: PLL from the oscillator, the chip, and the host UART.

    Parameters
    ----------
    board_config : Board or str
        The board (or its registry name).
    chip_factory : callable, optional
        ``chip_factory(chip_params, clk_freq_hz) -> wiring.Component`` with
        ``rx: In(stream.Signature(8))``, ``tx: Out(stream.Signature(8))`` and optionally
        ``idle: Out(1)`` (shown on the board's first LED, lit while the chip works) and
        ``rx_framing_error`` / ``rx_overrun: In(1)`` (driven by the UART receiver).
        Default :func:`default_chip_factory` (the spikeforge chip).
    uart_factory : callable, optional
        ``uart_factory(clk_freq_hz, baud)`` returning a component with the :class:`UARTPhy`
        members.  Default :func:`default_uart_factory` (``spikeforge.hw.uart``).
    clock_mhz : float, optional
        Override the board's target clock (``board.chip.clock_mhz``).

    Attributes
    ----------
    board : Board
    pll : ICE40PLLParams or ECP5PLLParams
        The PLL settings; ``pll.f_out_mhz`` is the achieved clock.
    clk_freq_hz : float
        The achieved clock in Hz (what the chip and the UART are given).
    """

    def __init__(self, board_config, chip_factory=None, *, uart_factory=None, clock_mhz=None):
        self.board = get_board(board_config)
        self.chip_factory = default_chip_factory if chip_factory is None else chip_factory
        self.uart_factory = default_uart_factory if uart_factory is None else uart_factory
        self.pll = plan_clock(self.board, clock_mhz)
        self.clk_freq_hz = self.pll.f_out_mhz * 1e6

    def elaborate(self, platform):
        board = self.board
        # The chip and the UART PHY first: refuse a wrong one before touching the pins.
        chip = self.chip_factory(board.chip, self.clk_freq_hz)
        _check_members(chip, _ChipPorts(), "chip_factory")
        uart = self.uart_factory(self.clk_freq_hz, board.chip.baud)
        _check_members(uart, UARTPhy(), "uart_factory")

        m = Module()
        m.submodules.chip = chip
        m.submodules.uart = uart

        # Clock: oscillator -> PLL -> "sync", held in reset until the PLL locks.
        if board.family == "ice40":
            pad = platform.request(board.clock_resource, 0, dir="-")
            m.submodules.pll = pll = ICE40PLL(self.pll, pad=pad)
        else:
            osc = platform.request(board.clock_resource, 0, dir="-")
            m.submodules.osc_buf = osc_buf = io.Buffer("i", osc)
            m.submodules.pll = pll = ECP5PLL(self.pll, clk_in=osc_buf.i)
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.d.comb += cd_sync.clk.eq(pll.clk_out)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")
        # No clock constraint here: nextpnr derives the PLL output's from the oscillator's, to
        # the exact PLL setting (an explicit one on a net name Yosys may rename only warns).

        # Host UART on the USB-UART pins, the chip between its two byte streams.
        uart_pins = platform.request(board.uart_resource, 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart_pins.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart_pins.tx)
        m.d.comb += [uart.rx_pin.eq(rx_buf.i), tx_buf.o.eq(uart.tx_pin)]
        wiring.connect(m, uart.rx, chip.rx)
        wiring.connect(m, chip.tx, uart.tx)
        chip_members = chip.signature.members
        for flag, member in (("framing_error", "rx_framing_error"), ("overrun", "rx_overrun")):
            if member in chip_members and chip_members[member] == In(1):
                m.d.comb += getattr(chip, member).eq(getattr(uart, flag))

        # Busy LED where the chip says when it is idle and the board has an LED.
        if "idle" in chip_members:
            try:
                led = platform.request("led", 0, dir="-")
            except ResourceError:  # a board without LEDs simply has no busy LED
                led = None
            if led is not None:
                m.submodules.led_buf = led_buf = io.Buffer("o", led)
                m.d.comb += led_buf.o.eq(~chip.idle & ~ResetSignal("sync"))
        return m


class _ChipPorts(wiring.Signature):
    def __init__(self):
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})


def _check_members(obj, signature, who):
    """Refuse a factory result that lacks the ports the board top connects."""
    sig = getattr(obj, "signature", None)
    if not isinstance(sig, wiring.Signature):
        raise ConfigError(f"{who} returned {obj!r}, which is not a wiring.Component")
    for name, member in signature.members.items():
        if name not in sig.members or sig.members[name] != member:
            mark_used(obj)  # refused here: no "created but never used" warning
            have = sig.members.get(name) if name in sig.members else "nothing"
            raise ConfigError(
                f"{who} returned a component whose member {name!r} is {have}; the board top "
                f"needs {member}"
            )
