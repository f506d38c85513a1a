"""The whole spikeforge chip: host link + neuron core(s) (+ UART on a board).

Spec: ``docs/architecture.md`` (how the pieces connect), ``docs/protocol.md`` (the link),
``docs/core.md`` (the core), ``docs/routing.md`` (several cores and the router).

:class:`Chip` speaks the framed protocol on two byte streams: the virtual board connects them to
a TCP socket, a board to :class:`UARTChip`'s UART PHY.  The capability words that IDENTIFY
returns describe the core's configuration; :func:`ident_words` writes them and
:func:`config_from_ident` reads them back, so host and gateware share one definition.
"""

from __future__ import annotations

from dataclasses import fields

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..protocol import CHANNEL_BITS, EVENT_BITS, NEURON_BITS
from ..spec import Format
from .core import CoreOptions, NeuronCore
from .image import CoreConfig
from .link import Link
from .multicore import MultiCore
from .router import RouterConfig
from .skid import StreamRegister
from .state_clear import StateClear
from .uart import UARTRx, UARTTx
from .util import refusing_unused

__all__ = [
    "Chip",
    "UARTChip",
    "StateClear",
    "IDENT_FIELDS",
    "ident_words",
    "config_from_ident",
    "chip_config_from_ident",
    "encoders_from_ident",
    "STEP_TIMEOUT_CYCLES",
]

#: The capability words IDENTIFY reports, one u32 each, in this order: the configuration of
#: (each) core, a :class:`CoreConfig` field or a :class:`~spikeforge.spec.Format` field of its
#: ``fmt``, then the chip's fields (:data:`_CHIP_FIELDS`).  Every reader and writer goes by name,
#: so a field can be inserted anywhere; a new bitstream's extra fields at the end are ignored by an
#: older host, an older bitstream's missing chip fields mean one core.
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
    "cores",
    "chip_inputs",
    "route_entries",
    "delay_depth",
    "encoders",
    "max_delay",
    "conv_words",
)
#: Core fields added after the first bitstreams, and their value when a bitstream does not
#: report them: ``max_delay`` (the longest synaptic delay, ``CoreConfig.max_delay``) and
#: ``conv_words`` (the table of weight-shared blocks, ``CoreConfig.conv_words``).  They come
#: last in :data:`IDENT_FIELDS`, and :func:`ident_words` leaves them out at their default.
_LATER_CORE_FIELDS = {"max_delay": 0, "conv_words": 0}
#: The link's fields of :data:`IDENT_FIELDS`: what the host link can do beyond the core.
#: ``encoders``: 1 if the link executes SAMPLE (on-chip spike encoding, ``docs/encoding.md``).
_LINK_FIELDS = ("encoders",)
#: The chip fields of :data:`IDENT_FIELDS` and the :class:`RouterConfig` attribute each reports.
_CHIP_FIELDS = {
    "cores": "cores",
    "chip_inputs": "n_inputs",
    "route_entries": "entries",
    "delay_depth": "delay_depth",
}
#: The fields of :data:`IDENT_FIELDS` that are the core's number format (``CoreConfig.fmt``).
_FORMAT_FIELDS = tuple(f.name for f in fields(Format) if f.name in IDENT_FIELDS)
#: The fields of :data:`IDENT_FIELDS` that describe a core (``CoreConfig`` and its ``fmt``).
_CORE_FIELDS = tuple(
    name for name in IDENT_FIELDS if name not in _CHIP_FIELDS and name not in _LINK_FIELDS
)
assert set(_CHIP_FIELDS) <= set(IDENT_FIELDS) and set(_LINK_FIELDS) <= set(IDENT_FIELDS)
assert set(_CORE_FIELDS) - set(_FORMAT_FIELDS) <= {f.name for f in fields(CoreConfig)}

#: A STEP is aborted (and reported) if the core shows no progress for this many cycles.
STEP_TIMEOUT_CYCLES = 1 << 24


def ident_words(config: CoreConfig | RouterConfig, *, encoders: bool = False) -> list[int]:
    """The IDENTIFY capability words of a chip (see :data:`IDENT_FIELDS`).

    ``config`` is the :class:`CoreConfig` of a one-core chip (``cores`` = 1, ``chip_inputs`` =
    the core's inputs, no routing table, no delayed queue) or the
    :class:`~spikeforge.hw.router.RouterConfig` of a multi-core chip (the core fields describe
    each of its identical cores).  ``encoders``: the link executes SAMPLE.
    """
    if isinstance(config, RouterConfig):
        core = config.core
        chip = {name: getattr(config, attr) for name, attr in _CHIP_FIELDS.items()}
    else:
        core = config
        chip = {"cores": 1, "chip_inputs": config.n_inputs, "route_entries": 0, "delay_depth": 0}
    chip["encoders"] = int(bool(encoders))
    out = []
    for name in IDENT_FIELDS:
        if name in _CHIP_FIELDS or name in _LINK_FIELDS:
            value = chip[name]
        else:
            value = getattr(core.fmt if name in _FORMAT_FIELDS else core, name)
        out.append(int(value))
    # trailing later fields at their default are not sent (a reader takes the default): a chip
    # without delays keeps the reply, and the gateware, it had before them
    while len(out) > 1 and _LATER_CORE_FIELDS.get(IDENT_FIELDS[len(out) - 1]) == out[-1]:
        out.pop()
    return out


def _ident_values(words) -> dict:
    """``{field: word}`` of the capability words a chip reported; an older bitstream reports
    fewer fields, a newer one more (ignored)."""
    return dict(zip(IDENT_FIELDS, words, strict=False))


def config_from_ident(words) -> CoreConfig:
    """Rebuild the :class:`CoreConfig` (of each core) a chip reported in IDENTIFY."""
    words = list(words)
    values = {**_LATER_CORE_FIELDS, **_ident_values(words)}
    if any(name not in values for name in _CORE_FIELDS):
        raise ConfigError(
            f"IDENTIFY returned {len(words)} capability words, expected {len(IDENT_FIELDS)} "
            f"({', '.join(IDENT_FIELDS)}): is the bitstream older than this host library?"
        )
    fmt = Format(**{k: values[k] for k in _FORMAT_FIELDS})
    core = {k: values[k] for k in _CORE_FIELDS if k not in _FORMAT_FIELDS}
    core["per_neuron_threshold"] = bool(core["per_neuron_threshold"])
    return CoreConfig(**core, fmt=fmt)


def chip_config_from_ident(words) -> CoreConfig | RouterConfig:
    """The whole chip a chip reported in IDENTIFY.

    Returns the :class:`CoreConfig` of a one-core chip (also for a bitstream that predates the
    multi-core fields) or the :class:`~spikeforge.hw.router.RouterConfig` of a multi-core chip.
    """
    words = list(words)
    core = config_from_ident(words)
    values = _ident_values(words)
    if any(name not in values for name in _CHIP_FIELDS) or values["cores"] <= 1:
        return core
    return RouterConfig(core, **{attr: values[name] for name, attr in _CHIP_FIELDS.items()})


def encoders_from_ident(words) -> bool:
    """Whether a chip that reported these IDENTIFY capability words executes SAMPLE (on-chip
    spike encoding, ``docs/encoding.md``); an older bitstream without the field does not."""
    return bool(_ident_values(list(words)).get("encoders", 0))


class Chip(wiring.Component):
    """Host link and neuron core(s), on byte streams.

    Parameters
    ----------
    config : CoreConfig
        Sizes of the core (of each core).
    clk_freq : int
        Clock frequency in Hz (reported by IDENTIFY).
    uart_errors : bool
        Add the ``rx_framing_error`` / ``rx_overrun`` inputs (a UART receiver is in front).
        Without them the chip has exactly the virtual board's ports (``rx``, ``tx``, ``idle``).
    cores : int
        Number of neuron cores.  1: the link drives the core directly (``docs/core.md``
        address map).  2 .. 15: a :class:`~spikeforge.hw.multicore.MultiCore` with the AER
        router (``docs/routing.md``; core ``k`` at bus address ``k << 24``).
    inputs, route_entries, delay_depth : int, optional
        With ``cores > 1``: host input channels, routing-table entries and delayed-queue depth
        (:class:`~spikeforge.hw.router.RouterConfig`; defaults from there).
    options : CoreOptions, optional
        One-core chips: the core's timing options (:class:`~spikeforge.hw.core.CoreOptions`;
        weight banks for large ECP5 weight memories, the fast build of the core and of the
        link (:class:`~spikeforge.hw.link.Link`) for clocks near 100 MHz).
    rx_window : int
        Bytes of the link's receive ring (:class:`~spikeforge.hw.link.Link`), reported by
        IDENTIFY.
    encoders : bool
        The link executes SAMPLE: on-chip spike encoding and count readout
        (``docs/encoding.md``), reported by IDENTIFY.

    Attributes
    ----------
    rx : In(stream.Signature(8))
        Bytes from the host.
    tx : Out(stream.Signature(8))
        Bytes to the host.
    rx_framing_error, rx_overrun : In(1)
        Strobes of the UART receiver in front of ``rx``, counted by STATUS (``uart_errors``).
    idle : Out(1)
        The chip is at rest: no request pending or running, no reply byte pending, the core(s)
        not busy.  The virtual board's harness stops simulating while it is high and no byte
        is waiting (``docs/virtual_board.md``); a board top leaves it unconnected.
    router_config : RouterConfig or None
        The multi-core description (``None`` with one core).
    """

    def __init__(self, config: CoreConfig, clk_freq: int, *, uart_errors: bool = False,
                 cores: int = 1, inputs: int | None = None, route_entries: int | None = None,
                 delay_depth: int | None = None, options: CoreOptions | None = None,
                 rx_window: int = 1024, encoders: bool = False):
        with refusing_unused(self):  # a refused configuration is not an unused elaboratable
            if not isinstance(config, CoreConfig):
                raise ConfigError(f"config={config!r} is not a CoreConfig")
            if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
                raise ConfigError(f"Chip cores={cores!r} is out of range: allowed 1..15")
            self.config, self.clk_freq, self.uart_errors = config, int(clk_freq), uart_errors
            self.cores = cores
            if cores > 1:
                self.router_config = RouterConfig(
                    config, cores=cores, n_inputs=inputs, entries=route_entries,
                    delay_depth=delay_depth,
                )
            else:
                if (inputs, route_entries, delay_depth) != (None, None, None):
                    raise ConfigError(
                        "Chip: inputs, route_entries and delay_depth need cores > 1 (a one-core "
                        "chip has no router)"
                    )
                self.router_config = None
            options = CoreOptions() if options is None else options
            if not isinstance(options, CoreOptions):
                raise ConfigError(f"Chip options={options!r} is not a CoreOptions")
            if options != CoreOptions() and cores > 1:
                raise ConfigError(
                    f"Chip: options={options!r} are for one-core chips (the router's bus "
                    "expects every core to answer a read after the same number of clocks)"
                )
            self.options = options
            self.rx_window = rx_window
            self.encoders = bool(encoders)
            # the wire's RUN items carry 14-bit input channels and 15-bit neuron addresses
            n_in = self.router_config.n_inputs if cores > 1 else config.n_inputs
            n_out = cores * config.n_neurons
            if n_in > 1 << CHANNEL_BITS or n_out > 1 << NEURON_BITS:
                raise ConfigError(
                    f"Chip: {n_in} input channels and {n_out} neurons do not fit the link's "
                    f"RUN items: allowed at most {1 << CHANNEL_BITS} and {1 << NEURON_BITS}"
                )
        members = {
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "idle": Out(1),
        }
        if uart_errors:
            members.update({"rx_framing_error": In(1), "rx_overrun": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        multi = self.router_config is not None
        m.submodules.link = link = Link(
            clk_freq=self.clk_freq,
            ident_words=ident_words(self.router_config if multi else self.config,
                                    encoders=self.encoders),
            step_timeout=STEP_TIMEOUT_CYCLES,
            rx_window=self.rx_window,
            fast=self.options.fast,
            encoders=self.encoders,
        )
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        m.d.comb += self.idle.eq(link.idle & ~link.busy)
        if self.uart_errors:
            m.d.comb += [
                link.rx_framing_error.eq(self.rx_framing_error),
                link.rx_overrun.eq(self.rx_overrun),
            ]
        if multi:
            m.submodules.cores = target = MultiCore(self.router_config)
            spike_bits = EVENT_BITS
        else:
            m.submodules.core = target = NeuronCore(self.config, self.options)
            spike_bits = self.config.neuron_bits
        # registered stages: no combinational path from the link's state machine into the
        # core's walker / fan-out engine (spikes.ready) or back (events.ready).  One item every
        # two clocks is plenty behind a UART, and a one-core UP5K chip has no logic to spare
        # for full-rate skid buffers.
        m.submodules.events_reg = ev = StreamRegister(EVENT_BITS, full_rate=multi)
        m.submodules.spikes_reg = sp = StreamRegister(spike_bits, full_rate=multi)
        wiring.connect(m, link.events, ev.i)
        wiring.connect(m, ev.o, target.events)
        wiring.connect(m, target.spikes, sp.i)
        # spikes: neuron addresses, zero-extended to the link's EVENT_BITS-bit events
        m.d.comb += [
            link.spikes.payload.eq(sp.o.payload),
            link.spikes.valid.eq(sp.o.valid),
            sp.o.ready.eq(link.spikes.ready),
            target.step.eq(link.step),
            link.done.eq(target.done),
        ]
        if multi:
            m.d.comb += [
                link.busy.eq(target.busy | ev.o.valid),
                target.reset_state.eq(link.reset_state),
            ]
            wiring.connect(m, link.bus, target.mem)
            return m

        core = target
        m.submodules.clear = clear = StateClear(self.config, in_use=True)
        m.d.comb += [
            link.busy.eq(core.busy | clear.busy | ev.o.valid),
            clear.start.eq(link.reset_state),
            clear.limit.eq(core.n_neurons),
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
    cores, options, rx_window, encoders
        See :class:`Chip`.

    Attributes
    ----------
    rx : Signal, in
        UART receive pin (idle high).
    tx : Signal, out
        UART transmit pin.
    """

    def __init__(self, config: CoreConfig, clk_freq: int, baud: int, *, cores: int = 1,
                 options: CoreOptions | None = None, rx_window: int = 1024,
                 encoders: bool = False):
        self.config, self.clk_freq, self.baud = config, int(clk_freq), int(baud)
        self.encoders = encoders
        self.cores = cores
        self.options = options
        self.rx_window = rx_window
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.clk_freq, self.baud)
        m.submodules.uart_tx = utx = UARTTx(self.clk_freq, self.baud)
        m.submodules.chip = chip = Chip(self.config, self.clk_freq, uart_errors=True,
                                        cores=self.cores, options=self.options,
                                        rx_window=self.rx_window, encoders=self.encoders)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.data, chip.rx)
        wiring.connect(m, chip.tx, utx.data)
        m.d.comb += [
            chip.rx_framing_error.eq(urx.framing_error),
            chip.rx_overrun.eq(urx.overrun),
        ]
        return m
