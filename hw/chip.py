"""The whole spikeforge chip: host link + neuron core (+ UART on a board).

Spec: ``docs/architecture.md`` (how the pieces connect), ``docs/protocol.md`` (the link),
``docs/core.md`` (the core).

:class:`Chip` speaks the framed protocol on two byte streams: the virtual board connects them to
a TCP socket, a board to :class:`UARTChip`'s UART PHY.  The capability words that IDENTIFY
returns describe the core's configuration; :func:`ident_words` writes them and
:func:`config_from_ident` reads them back, so host and gateware share one definition.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..spec import Format
from .bus import MemBusSignature
from .core import NeuronCore
from .image import ConfigWord, CoreConfig, Region, address
from .link import Link
from .uart import UARTRx, UARTTx

__all__ = [
    "Chip",
    "UARTChip",
    "StateClear",
    "IDENT_FIELDS",
    "ident_words",
    "config_from_ident",
    "STEP_TIMEOUT_CYCLES",
]

#: The core's configuration as IDENTIFY reports it, one u32 each, in this order.
IDENT_FIELDS = (
    "n_neurons",
    "n_inputs",
    "n_populations",
    "synapse_words",
    "descriptors",
    "lanes",
    "weight_bits",
    "state_bits",
    "acc_bits",
    "threshold_bits",
    "bias_bits",
    "decay_frac_bits",
    "per_neuron_threshold",
)
_FORMAT_FIELDS = IDENT_FIELDS[6:12]

#: A STEP is aborted (and reported) if the core shows no progress for this many cycles.
STEP_TIMEOUT_CYCLES = 1 << 24


def ident_words(config: CoreConfig) -> list[int]:
    """The IDENTIFY capability words of ``config`` (see :data:`IDENT_FIELDS`)."""
    out = []
    for name in IDENT_FIELDS:
        src = config.fmt if name in _FORMAT_FIELDS else config
        out.append(int(getattr(src, name)))
    return out


def config_from_ident(words) -> CoreConfig:
    """Rebuild the :class:`CoreConfig` a chip reported in its IDENTIFY capability words."""
    words = list(words)
    if len(words) < len(IDENT_FIELDS):
        raise ConfigError(
            f"IDENTIFY returned {len(words)} capability words, expected {len(IDENT_FIELDS)} "
            f"({', '.join(IDENT_FIELDS)}): is the bitstream older than this host library?"
        )
    values = dict(zip(IDENT_FIELDS, words[: len(IDENT_FIELDS)], strict=True))
    fmt = Format(**{k: values.pop(k) for k in _FORMAT_FIELDS})
    values["per_neuron_threshold"] = bool(values["per_neuron_threshold"])
    return CoreConfig(**values, fmt=fmt)


class StateClear(wiring.Component):
    """Clears the neuron state over the memory bus when ``start`` pulses (RESET_STATE).

    Writes 0 to every word of the V, I and ACC regions and 1 to ``CONFIG.CONTROL`` (forget the
    pending recurrent spikes), one write per cycle the core is ready.  Parameters, weights and
    routing are kept.

    Attributes
    ----------
    start : In(1)
        One-cycle pulse.
    busy : Out(1)
        High from the cycle after ``start`` until the last write was taken.
    bus : Out(MemBusSignature())
        Master of the core's bus while ``busy``.
    """

    def __init__(self, config: CoreConfig):
        self.config = config
        super().__init__(
            {"start": In(1), "busy": Out(1), "bus": Out(MemBusSignature())}
        )

    def elaborate(self, platform):
        m = Module()
        n = self.config.n_neurons
        regions = [Region.V, Region.I, Region.ACC]
        region = Signal(range(len(regions) + 1))
        offset = Signal(range(max(n, 2)))
        addr = Signal.like(self.bus.addr)
        with m.Switch(region):
            for k, reg in enumerate(regions):
                with m.Case(k):
                    m.d.comb += addr.eq(address(reg) + offset)
            with m.Default():
                m.d.comb += addr.eq(address(Region.CONFIG, ConfigWord.CONTROL.value))
        m.d.comb += [
            self.bus.addr.eq(addr),
            self.bus.w_data.eq(region == len(regions)),  # CONTROL bit 0: forget pending spikes
            self.bus.w_en.eq(self.busy),
        ]
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), region.eq(0), offset.eq(0)]
        with m.Elif(self.busy & self.bus.ready):
            with m.If(region == len(regions)):
                m.d.sync += self.busy.eq(0)
            with m.Elif(offset == n - 1):
                m.d.sync += [region.eq(region + 1), offset.eq(0)]
            with m.Else():
                m.d.sync += offset.eq(offset + 1)
        return m


class Chip(wiring.Component):
    """Host link and neuron core, on byte streams.

    Parameters
    ----------
    config : CoreConfig
        Sizes of the core.
    clk_freq : int
        Clock frequency in Hz (reported by IDENTIFY).
    uart_errors : bool
        Add the ``rx_framing_error`` / ``rx_overrun`` inputs (a UART receiver is in front).
        Without them the chip has exactly the virtual board's ports (``rx``, ``tx``).

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the host.
    tx : Out(stream.Signature(8))
        Bytes to the host.
    rx_framing_error, rx_overrun : In(1)
        Strobes of the UART receiver in front of ``rx``, counted by STATUS (``uart_errors``).
    """

    def __init__(self, config: CoreConfig, clk_freq: int, *, uart_errors: bool = False):
        if not isinstance(config, CoreConfig):
            raise ConfigError(f"config={config!r} is not a CoreConfig")
        self.config, self.clk_freq, self.uart_errors = config, int(clk_freq), uart_errors
        members = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        if uart_errors:
            members.update({"rx_framing_error": In(1), "rx_overrun": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = NeuronCore(self.config)
        m.submodules.link = link = Link(
            clk_freq=self.clk_freq,
            ident_words=ident_words(self.config),
            step_timeout=STEP_TIMEOUT_CYCLES,
        )
        m.submodules.clear = clear = StateClear(self.config)

        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        if self.uart_errors:
            m.d.comb += [
                link.rx_framing_error.eq(self.rx_framing_error),
                link.rx_overrun.eq(self.rx_overrun),
            ]
        wiring.connect(m, link.events, core.events)
        # spikes: the core's neuron addresses, zero-extended to the link's 16-bit events
        m.d.comb += [
            link.spikes.payload.eq(core.spikes.payload),
            link.spikes.valid.eq(core.spikes.valid),
            core.spikes.ready.eq(link.spikes.ready),
        ]
        m.d.comb += [
            core.step.eq(link.step),
            link.done.eq(core.done),
            link.busy.eq(core.busy | clear.busy),
            clear.start.eq(link.reset_state),
        ]
        # The core's memory bus has two masters: the state clearer while it runs, else the link.
        with m.If(clear.busy):
            m.d.comb += [
                core.mem.addr.eq(clear.bus.addr),
                core.mem.w_data.eq(clear.bus.w_data),
                core.mem.w_en.eq(clear.bus.w_en),
                clear.bus.ready.eq(core.mem.ready),
            ]
        with m.Else():
            m.d.comb += [
                core.mem.addr.eq(link.bus.addr),
                core.mem.w_data.eq(link.bus.w_data),
                core.mem.w_en.eq(link.bus.w_en),
                core.mem.r_en.eq(link.bus.r_en),
                link.bus.ready.eq(core.mem.ready),
                link.bus.error.eq(core.mem.error),
            ]
        m.d.comb += [
            link.bus.r_data.eq(core.mem.r_data),
            link.bus.r_valid.eq(core.mem.r_valid),
        ]
        return m


class UARTChip(Elaboratable):
    """:class:`Chip` behind a UART PHY: what goes on a board.

    Parameters
    ----------
    config : CoreConfig
    clk_freq : int
        Clock frequency in Hz.
    baud : int
        UART baud rate.

    Attributes
    ----------
    rx : Signal, in
        UART receive pin (idle high).
    tx : Signal, out
        UART transmit pin.
    """

    def __init__(self, config: CoreConfig, clk_freq: int, baud: int):
        self.config, self.clk_freq, self.baud = config, int(clk_freq), int(baud)
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.clk_freq, self.baud)
        m.submodules.uart_tx = utx = UARTTx(self.clk_freq, self.baud)
        m.submodules.chip = chip = Chip(self.config, self.clk_freq, uart_errors=True)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.data, chip.rx)
        wiring.connect(m, chip.tx, utx.data)
        m.d.comb += [
            chip.rx_framing_error.eq(urx.framing_error),
            chip.rx_overrun.eq(urx.overrun),
        ]
        return m
