"""The AER router and step scheduler of a multi-core chip: one source of truth for its table.

Spec: ``docs/routing.md`` (AER format on chip, table format, scheduler, queue sizing, overflow
reporting) and ``docs/network.md`` (when a spike arrives).  The host side that fills the table is
``spikeforge.host.partition``; the fabric that puts cores and router together is
``spikeforge.hw.multicore``.

Address map (chip bus, ``ADDR_BITS`` = 28 bits)
-----------------------------------------------
``select << 24 | local``: ``select`` = ``k`` < cores addresses core ``k`` (its own 24-bit map,
``spikeforge.hw.image``), ``select`` = :data:`ROUTER_SELECT` the router, whose local map is
``region << 20 | offset`` with the regions of :class:`RouterRegion`.

Routing table
-------------
Sources are numbered: host input channel ``c`` -> ``c``; local neuron ``n`` of core ``k`` ->
``n_inputs + k * core_neurons + n`` (:meth:`RouterConfig.core_source`).  ``SRC[s]`` is
``first | count << 16``: a run of ``count`` consecutive ``DEST`` entries starting at ``first``.
A ``DEST`` entry is one delivery (:func:`dest_host`, :func:`dest_core`, :func:`decode_dest`)::

    bit 21 HOST: send global neuron index ``addr`` (bits 0..15) to the host (``spikes``)
    else      : core ``core`` (bits 16..19), its local input channel ``addr`` (bits 0..15);
                bit 20 DELAYED: queue it and deliver it at the start of the next timestep

An entry without DELAYED is delivered at once: from the host to any core, from core ``k`` to any
core but ``k`` (an earlier core has finished the timestep, so the event waits in its
accumulator until its next sweep: the same result as a delayed delivery, without the queue).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from ..protocol import ADDR_BITS
from .bus import BUS_DATA_BITS, BusSlave, MemBusSignature
from .image import EVENT_BITS, REGION_SHIFT, CoreConfig, Span, pack, unpack
from .skid import StreamRegister
from .util import bits_for

__all__ = [
    "RouterConfig",
    "RouterRegion",
    "RouterConfigWord",
    "RouterStatusWord",
    "Router",
    "CorePortSignature",
    "CORE_SHIFT",
    "ROUTER_SELECT",
    "MAX_CORES",
    "DestEntry",
    "DEST_CORE_SHIFT",
    "DEST_DELAYED",
    "DEST_HOST",
    "dest_host",
    "dest_core",
    "decode_dest",
    "core_address",
    "router_address",
    "router_region_size",
]

CORE_SHIFT = 24
"""A chip bus address is ``select << CORE_SHIFT | local``."""

_SELECT_BITS = ADDR_BITS - CORE_SHIFT
"""Width of ``select``: the bus address bits above a core's map (4)."""

ROUTER_SELECT = (1 << _SELECT_BITS) - 1
"""The ``select`` value of the router's registers and tables: the highest (15)."""

MAX_CORES = ROUTER_SELECT
"""Cores a chip can have (``select`` values 0 .. ``MAX_CORES - 1``; the next is the router)."""

DestEntry = data.StructLayout(
    {"addr": EVENT_BITS, "core": _SELECT_BITS, "delayed": 1, "host": 1}
)
"""Layout of a ``DEST`` entry: ``host``: send global neuron index ``addr`` to the host; else
deliver to input channel ``addr`` of ``core``, at the next timestep if ``delayed``."""

DEST_CORE_SHIFT = DestEntry["core"].offset
DEST_DELAYED = 1 << DestEntry["delayed"].offset
DEST_HOST = 1 << DestEntry["host"].offset
_DEST_BITS = DestEntry.size
_ADDR_MAX = (1 << EVENT_BITS) - 1


def dest_host(neuron: int) -> int:
    """A ``DEST`` entry sending global neuron index ``neuron`` to the host."""
    if not 0 <= neuron < 1 << EVENT_BITS:
        raise ConfigError(
            f"host neuron index {neuron} is out of range: allowed 0..{_ADDR_MAX}"
        )
    return pack(DestEntry, host=1, addr=int(neuron))


def dest_core(core: int, channel: int, delayed: bool) -> int:
    """A ``DEST`` entry delivering to input ``channel`` of ``core`` (next step if ``delayed``)."""
    if not 0 <= core < MAX_CORES:
        raise ConfigError(f"core={core} is out of range: allowed 0..{MAX_CORES - 1}")
    if not 0 <= channel < 1 << EVENT_BITS:
        raise ConfigError(f"channel={channel} is out of range: allowed 0..{_ADDR_MAX}")
    return pack(DestEntry, core=int(core), addr=int(channel), delayed=int(bool(delayed)))


def decode_dest(word: int) -> tuple:
    """``("host", neuron)`` or ``("core", core, channel, delayed)`` of a ``DEST`` entry."""
    fields = unpack(DestEntry, word)
    if fields["host"]:
        return ("host", fields["addr"])
    return ("core", fields["core"], fields["addr"], bool(fields["delayed"]))


class RouterRegion(enum.Enum, shape=4):
    """Regions of the router's bus map (``region << 20 | offset`` below :data:`ROUTER_SELECT`)."""

    CONFIG = 0  #: :class:`RouterConfigWord` registers (R/W)
    STATUS = 1  #: :class:`RouterStatusWord` counters and capacities (R)
    SRC = 2  #: one word per source: ``first | count << 16`` (R/W)
    DEST = 3  #: one word per entry (R/W)


class RouterConfigWord(enum.Enum):
    """Words of :attr:`RouterRegion.CONFIG`."""

    N_INPUTS = 0  #: active host channels; events at or beyond it are refused (and counted)
    CONTROL = 1  #: write bit 0 = empty the delayed queue (reads 0)


class RouterStatusWord(enum.Enum):
    """Words of :attr:`RouterRegion.STATUS` (read-only)."""

    EVENTS_REFUSED = 0  #: host events with a channel >= N_INPUTS
    ROUTE_ERRORS = 1  #: refused DEST entries (bad core/channel/direction) and SRC runs past DEST
    DELAY_OVERFLOWS = 2  #: delayed deliveries dropped because the queue was full
    DELAY_PEAK = 3  #: most entries the delayed queue ever held
    BUS_REFUSED = 4  #: bus accesses out of range or to read-only words
    STEPS = 5  #: timesteps run
    LAST_STEP_CYCLES = 6  #: clock cycles of the last timestep (drain + every core + routing)
    ROUTED = 7  #: table entries carried out (host spike, core event, or queued for next step)
    CAP_CORES = 8
    CAP_INPUTS = 9
    CAP_SOURCES = 10
    CAP_ENTRIES = 11
    CAP_DELAY = 12


def core_address(core: int, local: int) -> int:
    """Chip bus address of word ``local`` (a core address, ``hw/image.py``) of core ``core``."""
    return int(core) << CORE_SHIFT | int(local)


def router_address(region: RouterRegion, offset: int = 0) -> int:
    """Chip bus address of word ``offset`` of the router's ``region``."""
    return ROUTER_SELECT << CORE_SHIFT | region.value << REGION_SHIFT | int(offset)


@dataclass(frozen=True)
class RouterConfig:
    """A multi-core chip: ``cores`` identical cores and the router between them.

    Parameters
    ----------
    core : CoreConfig
        Configuration of every core.
    cores : int
        Number of cores, 2 .. :data:`MAX_CORES`.
    n_inputs : int, optional
        Host input channels (router sources), 1 .. 65536; default ``core.n_inputs``.
    entries : int, optional
        ``DEST`` entries, 1 .. 32768; default ``n_inputs * cores + 2 * cores * core.n_neurons``
        (capped at 32768).
    delay_depth : int, optional
        Entries of the delayed (next-step) queue, 1 .. 65536; default ``cores *
        core.n_neurons`` (capped at 65536).
    """

    core: CoreConfig
    cores: int = 2
    n_inputs: int | None = None
    entries: int | None = None
    delay_depth: int | None = None

    def __post_init__(self):
        if not isinstance(self.core, CoreConfig):
            raise ConfigError(f"RouterConfig.core={self.core!r} is not a CoreConfig")
        if not isinstance(self.cores, int) or not 2 <= self.cores <= MAX_CORES:
            raise ConfigError(
                f"RouterConfig.cores={self.cores!r} is out of range: allowed 2..{MAX_CORES}"
            )
        n_neurons = self.core.n_neurons
        if self.n_inputs is None:
            object.__setattr__(self, "n_inputs", self.core.n_inputs)
        if self.entries is None:
            default = self.n_inputs * self.cores + 2 * self.cores * n_neurons
            object.__setattr__(self, "entries", min(default, 1 << 15))
        if self.delay_depth is None:
            object.__setattr__(self, "delay_depth", min(self.cores * n_neurons, 1 << 16))
        for name, lo, hi in (
            ("n_inputs", 1, 1 << EVENT_BITS),
            ("entries", 1, 1 << 15),
            ("delay_depth", 1, 1 << 16),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(
                    f"RouterConfig.{name}={value!r} is out of range: allowed {lo}..{hi}"
                )
        if self.n_sources > 1 << REGION_SHIFT:
            raise ConfigError(
                f"RouterConfig: {self.n_sources} sources (n_inputs + cores * core.n_neurons) "
                f"do not fit the router's SRC region: allowed at most {1 << REGION_SHIFT}"
            )

    @property
    def n_sources(self) -> int:
        """Entries of the ``SRC`` table: host channels, then every neuron of every core."""
        return self.n_inputs + self.cores * self.core.n_neurons

    def host_source(self, channel: int) -> int:
        return int(channel)

    def core_source(self, core: int, neuron: int) -> int:
        """``SRC`` index of local neuron ``neuron`` of core ``core``."""
        return self.n_inputs + int(core) * self.core.n_neurons + int(neuron)


def router_region_size(region: RouterRegion, config: RouterConfig) -> int:
    """Number of words of ``region`` in the router's map."""
    return {
        RouterRegion.CONFIG: len(RouterConfigWord),
        RouterRegion.STATUS: len(RouterStatusWord),
        RouterRegion.SRC: config.n_sources,
        RouterRegion.DEST: config.entries,
    }[region]


class CorePortSignature(wiring.Signature):
    """The router's side of one core: events to it, spikes from it, step / done.

    Members
    -------
    events : Out(stream.Signature(EVENT_BITS))
        Input channel addresses for the core.
    spikes : In(stream.Signature(neuron_bits))
        The core's output spikes (local neuron indices).
    step : Out(1)
        Pulse: run one timestep.
    done : In(1)
        The core's end-of-timestep pulse.
    """

    def __init__(self, neuron_bits: int):
        super().__init__(
            {
                "events": Out(stream.Signature(unsigned(EVENT_BITS))),
                "spikes": In(stream.Signature(unsigned(neuron_bits))),
                "step": Out(1),
                "done": In(1),
            }
        )


class Router(wiring.Component):
    """Routing table, delayed queue and timestep scheduler of a multi-core chip.

    Parameters
    ----------
    config : RouterConfig

    Attributes
    ----------
    events : In(stream.Signature(16))
        Host input events (channel numbers); taken only between timesteps and fanned out at
        once to the cores' ``events`` (back-pressure: the router waits).
    spikes : Out(stream.Signature(16))
        Global neuron indices for the host, ascending within a timestep.
    step : In(1)
        Pulse: run one timestep (remembered while busy).
    done : Out(1)
        Pulse at the end of a timestep, after its last spike was taken.
    busy : Out(1)
        A timestep is pending or running, or a host event is being routed.
    reset_state : In(1)
        Pulse: empty the delayed queue (RESET_STATE).
    cores : Out(CorePortSignature).array(cores)
        One port per core.
    mem : In(MemBusSignature())
        Access to the router's registers and tables (local address, 24 bits used), served
        while nothing is routed.
    """

    def __init__(self, config: RouterConfig):
        if not isinstance(config, RouterConfig):
            raise ConfigError(f"config={config!r} is not a RouterConfig")
        self.config = config
        super().__init__(
            {
                "events": In(stream.Signature(unsigned(EVENT_BITS))),
                "spikes": Out(stream.Signature(unsigned(EVENT_BITS))),
                "step": In(1),
                "done": Out(1),
                "busy": Out(1),
                "reset_state": In(1),
                "cores": Out(CorePortSignature(config.core.neuron_bits)).array(config.cores),
                "mem": In(MemBusSignature()),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        n_cores = cfg.cores
        core_neurons = cfg.core.n_neurons
        core_inputs = cfg.core.n_inputs
        entry_bits = bits_for(cfg.entries)
        count_bits = bits_for(cfg.entries + 1)
        src_bits = bits_for(cfg.n_sources)

        # --- memories ---------------------------------------------------------------------
        m.submodules.src_mem = src_mem = Memory(
            shape=unsigned(entry_bits + count_bits), depth=cfg.n_sources, init=[]
        )
        m.submodules.dst_mem = dst_mem = Memory(
            shape=unsigned(_DEST_BITS), depth=cfg.entries, init=[]
        )
        m.submodules.q_mem = q_mem = Memory(
            shape=unsigned(4 + EVENT_BITS), depth=cfg.delay_depth, init=[]
        )
        src_rd, src_wr = src_mem.read_port(), src_mem.write_port()
        dst_rd, dst_wr = dst_mem.read_port(), dst_mem.write_port()
        q_rd, q_wr = q_mem.read_port(), q_mem.write_port()
        for port in (src_rd, dst_rd, q_rd):
            m.d.comb += port.en.eq(0)

        # --- registers and counters -------------------------------------------------------
        n_inputs = Signal(range(cfg.n_inputs + 1), init=cfg.n_inputs)
        cnt, caps, strobe = self._status(m)

        wr_ptr = Signal(range(cfg.delay_depth + 1))  # queued entries (delayed deliveries)
        with m.If(wr_ptr > cnt[RouterStatusWord.DELAY_PEAK]):
            m.d.sync += cnt[RouterStatusWord.DELAY_PEAK].eq(wr_ptr)

        # --- scheduler state ----------------------------------------------------------------
        k = Signal(range(n_cores))  # core being stepped
        src_base = Signal(src_bits + 1)  # core_source(k, 0)
        step_req = Signal()
        done_seen = Signal()
        in_step = Signal()
        qi = Signal(range(cfg.delay_depth + 1))  # drain index
        with m.If(self.step):
            m.d.sync += step_req.eq(1)

        # --- lookup engine ------------------------------------------------------------------
        # Three registered stages, so no path runs from a block RAM's output through the
        # delivery decision back into a block RAM's address:
        #   take:    a source (host event or core k's spike) addresses SRC; its descriptor waits
        #            on src_rd.data (e_src) until the fetcher is free;
        #   fetch:   reads the source's DEST entries one per clock (or, in DRAIN, the delayed
        #            queue's entries) into the entry buffer, a StreamRegister;
        #   deliver: decodes the buffer's registered output and hands it to the host, a core's
        #            events or the delayed queue.
        # In a steady stream a source with f destinations costs f clocks (1 with none).
        m.submodules.entries = buf = StreamRegister(unsigned(_DEST_BITS))
        e_src = Signal()  # a descriptor on src_rd.data (held: the port is read only on take)
        e_from_host = Signal()  # the entries come from a host event (or the delayed queue)
        f_ptr = Signal(entry_bits + 1)
        f_rem = Signal(count_bits)  # entries of the current source still to read
        f_valid = Signal()  # dst_rd.data holds an entry for the buffer
        q_valid = Signal()  # q_rd.data holds a queued delivery for the buffer
        engine_idle = Signal()
        m.d.comb += engine_idle.eq(
            ~e_src & (f_rem == 0) & ~f_valid & ~q_valid & ~buf.o.valid
        )

        # deliver: the buffer's registered output
        draining = Signal()  # scheduler in DRAIN
        d_taken = Signal()
        ent = DestEntry(buf.o.payload)
        is_host = ent.host
        d_delayed = ent.delayed
        d_core = ent.core
        d_addr = ent.addr
        d_valid = buf.o.valid
        d_ok = Signal()
        # same-step delivery: to any core from the host (or the queue); from core k to any other
        # core (a later one has not run yet; an earlier one has finished this step and reads its
        # accumulators only at its next sweep, so that is a next-step delivery), never to core k
        # itself (it is stepping and takes no events)
        core_ok = (d_core < n_cores) & (d_addr < core_inputs)
        forward_ok = e_from_host | (d_core != k)
        m.d.comb += d_ok.eq(
            Mux(
                is_host,
                ~d_delayed & ~e_from_host,
                core_ok & Mux(d_delayed, ~e_from_host, forward_ok),
            )
        )
        d_host = is_host
        core_ready = Array(p.events.ready for p in self.cores)
        q_full = wr_ptr == cfg.delay_depth
        m.d.comb += [self.spikes.payload.eq(d_addr), buf.o.ready.eq(d_taken)]
        for b, port in enumerate(self.cores):
            m.d.comb += [
                port.events.payload.eq(d_addr),
                port.events.valid.eq(d_valid & d_ok & ~d_host & ~d_delayed & (d_core == b)),
            ]
        m.d.comb += [
            self.spikes.valid.eq(d_valid & d_ok & d_host),
            q_wr.addr.eq(wr_ptr),
            q_wr.data.eq(Cat(d_addr, d_core)),
            q_wr.en.eq(d_valid & d_ok & d_delayed & ~d_host & ~q_full),
        ]
        with m.If(d_valid):
            with m.If(~d_ok):
                m.d.comb += [d_taken.eq(1), strobe[RouterStatusWord.ROUTE_ERRORS].eq(1)]
            with m.Elif(d_host):
                m.d.comb += d_taken.eq(self.spikes.ready)
            with m.Elif(d_delayed):
                m.d.comb += d_taken.eq(1)
                with m.If(q_full):
                    m.d.comb += strobe[RouterStatusWord.DELAY_OVERFLOWS].eq(1)
                with m.Else():
                    m.d.sync += wr_ptr.eq(wr_ptr + 1)
            with m.Else():
                m.d.comb += d_taken.eq(core_ready[d_core])
            with m.If(d_ok & d_taken & ~draining):
                m.d.comb += strobe[RouterStatusWord.ROUTED].eq(1)

        # fetch: DEST entries of the current source, or the delayed queue during DRAIN
        push_f = f_valid & buf.i.ready
        push_q = q_valid & buf.i.ready
        f_free = ~f_valid | push_f  # dst_rd.data may be replaced this clock
        q_free = ~q_valid | push_q
        m.d.comb += [
            buf.i.valid.eq(f_valid | q_valid),
            # a queued delivery enters as an immediate core entry (checked when it was queued)
            buf.i.payload.eq(Mux(q_valid, q_rd.data, dst_rd.data)),
        ]
        src_move = e_src & (f_rem == 0) & f_free  # the descriptor enters the fetcher
        first = src_rd.data[:entry_bits]
        count = src_rd.data[entry_bits:]
        with m.If(src_move):
            # read `first` even for an empty source (the data is then ignored): the read
            # enable and the address select come from registers, not from src_rd.data
            m.d.comb += [dst_rd.addr.eq(first), dst_rd.en.eq(1)]
            with m.If(count != 0):
                m.d.sync += [f_ptr.eq(first + 1), f_rem.eq(count - 1), f_valid.eq(1)]
            with m.Elif(push_f):
                m.d.sync += f_valid.eq(0)
        with m.Elif((f_rem != 0) & f_free):
            m.d.comb += [dst_rd.addr.eq(f_ptr), dst_rd.en.eq(1)]
            m.d.sync += [f_ptr.eq(f_ptr + 1), f_rem.eq(f_rem - 1), f_valid.eq(1)]
        with m.Elif(push_f):
            m.d.sync += f_valid.eq(0)

        # take: sources
        stepping_core = Signal()  # scheduler in RUN: sources are core k's spikes
        accepting_host = Signal()  # scheduler idle: sources are host events
        b_pend = Signal()  # a bus access touches the memories this cycle
        can_take = ~b_pend & (~e_src | src_move) & ~draining
        spk_valid = Array(p.spikes.valid for p in self.cores)
        spk_payload = Array(p.spikes.payload for p in self.cores)
        take = Signal()
        take_idx = Signal(src_bits + 1)
        take_ok = Signal()
        with m.If(stepping_core & can_take & spk_valid[k]):
            m.d.comb += [
                take.eq(1),
                take_idx.eq(src_base + spk_payload[k]),
                take_ok.eq(spk_payload[k] < core_neurons),
            ]
            for b, port in enumerate(self.cores):
                m.d.comb += port.spikes.ready.eq(k == b)
            with m.If(spk_payload[k] >= core_neurons):
                m.d.comb += strobe[RouterStatusWord.ROUTE_ERRORS].eq(1)
        with m.Elif(accepting_host & can_take & self.events.valid):
            m.d.comb += [
                take.eq(1),
                take_idx.eq(self.events.payload),
                take_ok.eq(self.events.payload < n_inputs),
                self.events.ready.eq(1),
            ]
            with m.If(self.events.payload >= n_inputs):
                m.d.comb += strobe[RouterStatusWord.EVENTS_REFUSED].eq(1)
        with m.If(take & take_ok):
            m.d.comb += [src_rd.addr.eq(take_idx), src_rd.en.eq(1)]
            m.d.sync += e_src.eq(1)
        with m.Elif(src_move):
            m.d.sync += e_src.eq(0)
        with m.If(take):
            m.d.sync += e_from_host.eq(accepting_host)  # the mode holds while the engine works

        # --- scheduler ----------------------------------------------------------------------
        step_cycles = cnt[RouterStatusWord.LAST_STEP_CYCLES]
        with m.If(in_step & ~self.done):
            m.d.sync += step_cycles.eq(step_cycles + 1)
        with m.FSM(name="sched"):
            with m.State("IDLE"):
                m.d.comb += accepting_host.eq(1)
                with m.If(step_req & engine_idle & ~self.events.valid & ~take):
                    m.d.sync += [
                        step_req.eq(self.step),
                        in_step.eq(1),
                        step_cycles.eq(1),
                        k.eq(0),
                        src_base.eq(cfg.n_inputs),
                        qi.eq(0),
                        e_from_host.eq(1),  # queued deliveries follow the host's rules
                    ]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                # read the queue into the entry buffer; deliveries go to the idle cores
                m.d.comb += draining.eq(1)
                with m.If((qi != wr_ptr) & q_free):
                    m.d.comb += [q_rd.addr.eq(qi), q_rd.en.eq(1)]
                    m.d.sync += [qi.eq(qi + 1), q_valid.eq(1)]
                with m.Elif(push_q):
                    m.d.sync += q_valid.eq(0)
                with m.If((qi == wr_ptr) & ~q_valid & ~buf.o.valid):
                    m.d.sync += wr_ptr.eq(0)
                    m.next = "START"
            with m.State("START"):
                for b, port in enumerate(self.cores):
                    m.d.comb += port.step.eq(k == b)
                m.d.sync += done_seen.eq(0)
                m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += stepping_core.eq(1)
                with m.If(Array(p.done for p in self.cores)[k]):
                    m.d.sync += done_seen.eq(1)
                # done_seen is registered: the core's last spike (taken by the stage in front
                # of the router no later than its done) shows as valid by then
                with m.If(done_seen & engine_idle & ~spk_valid[k] & ~take):
                    with m.If(k == n_cores - 1):
                        m.d.comb += self.done.eq(1)
                        m.d.sync += [in_step.eq(0), cnt[RouterStatusWord.STEPS].eq(
                            cnt[RouterStatusWord.STEPS] + 1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [k.eq(k + 1), src_base.eq(src_base + core_neurons)]
                        m.next = "START"

        with m.If(self.reset_state):
            m.d.sync += wr_ptr.eq(0)  # RESET_STATE: forget the queued next-step deliveries

        sched_idle = Signal()
        m.d.comb += sched_idle.eq(accepting_host & ~step_req)
        m.d.comb += self.busy.eq(~sched_idle | ~engine_idle | self.events.valid)

        # --- bus ----------------------------------------------------------------------------
        self._bus(
            m,
            serve=sched_idle & engine_idle & ~self.events.valid,
            pend=b_pend,
            registers=(n_inputs, wr_ptr, cnt, caps, strobe),
            tables=(src_rd, src_wr, dst_rd, dst_wr),
            entry_bits=entry_bits,
        )
        return m

    def _status(self, m):
        """The STATUS counters (saturating) and capacities; the strobes that count."""
        cfg = self.config
        cnt = {w: Signal(32, name=f"cnt_{w.name.lower()}") for w in RouterStatusWord}
        caps = {
            RouterStatusWord.CAP_CORES: cfg.cores,
            RouterStatusWord.CAP_INPUTS: cfg.n_inputs,
            RouterStatusWord.CAP_SOURCES: cfg.n_sources,
            RouterStatusWord.CAP_ENTRIES: cfg.entries,
            RouterStatusWord.CAP_DELAY: cfg.delay_depth,
        }
        strobe = {
            w: Signal(name=f"inc_{w.name.lower()}")
            for w in (
                RouterStatusWord.EVENTS_REFUSED,
                RouterStatusWord.ROUTE_ERRORS,
                RouterStatusWord.DELAY_OVERFLOWS,
                RouterStatusWord.BUS_REFUSED,
                RouterStatusWord.ROUTED,
            )
        }
        for w, s in strobe.items():
            # saturating; registered strobe keeps the adders off the routing path
            r = Signal(name=f"inc_{w.name.lower()}_r")
            m.d.sync += r.eq(s)
            with m.If(r & (cnt[w] != 0xFFFFFFFF)):
                m.d.sync += cnt[w].eq(cnt[w] + 1)

        return cnt, caps, strobe

    def _bus(self, m, *, serve, pend, registers, tables, entry_bits):
        """The router's memory-bus slave: its registers and tables, read and written."""
        cfg = self.config
        n_inputs, wr_ptr, cnt, caps, strobe = registers
        src_rd, src_wr, dst_rd, dst_wr = tables
        m.submodules.bus = slave = BusSlave(
            [(r.value, router_region_size(r, cfg), r != RouterRegion.STATUS)
             for r in RouterRegion],
            region_shift=REGION_SHIFT,
            region_bits=CORE_SHIFT - REGION_SHIFT,
        )
        wiring.connect(m, wiring.flipped(self.mem), slave.bus)
        req = slave.req
        m.d.comb += [
            slave.serve.eq(serve),
            pend.eq(slave.pend),
            strobe[RouterStatusWord.BUS_REFUSED].eq(slave.refused),
        ]
        r_region = Signal(4)
        r_word = Signal(BUS_DATA_BITS)
        m.d.sync += r_region.eq(req.region)
        with m.If(req.we):
            with m.Switch(req.region):
                with m.Case(RouterRegion.CONFIG.value):
                    with m.If(req.offset == RouterConfigWord.N_INPUTS.value):
                        m.d.sync += n_inputs.eq(
                            Mux(req.data > cfg.n_inputs, cfg.n_inputs, req.data)
                        )
                    with m.If((req.offset == RouterConfigWord.CONTROL.value) & req.data[0]):
                        m.d.sync += wr_ptr.eq(0)
                with m.Case(RouterRegion.SRC.value):
                    span = Span(req.data)
                    fits = (span.first + span.count) <= cfg.entries
                    m.d.comb += [
                        src_wr.addr.eq(req.offset),
                        src_wr.en.eq(1),
                        src_wr.data.eq(Mux(fits, Cat(span.first[:entry_bits], span.count), 0)),
                    ]
                    with m.If(~fits):
                        m.d.comb += strobe[RouterStatusWord.ROUTE_ERRORS].eq(1)
                with m.Case(RouterRegion.DEST.value):
                    m.d.comb += [
                        dst_wr.addr.eq(req.offset),
                        dst_wr.en.eq(1),
                        dst_wr.data.eq(req.data),
                    ]
        with m.If(req.re):
            m.d.comb += [src_rd.addr.eq(req.offset), src_rd.en.eq(1)]
            m.d.comb += [dst_rd.addr.eq(req.offset), dst_rd.en.eq(1)]
            with m.Switch(req.region):
                with m.Case(RouterRegion.CONFIG.value):
                    m.d.sync += r_word.eq(
                        Mux(req.offset == RouterConfigWord.N_INPUTS.value, n_inputs, 0)
                    )
                with m.Case(RouterRegion.STATUS.value):
                    with m.Switch(req.offset):
                        for w in RouterStatusWord:
                            with m.Case(w.value):
                                m.d.sync += r_word.eq(caps.get(w, cnt[w]))
        stored = Signal(Span)  # a SRC entry as stored (first on entry_bits bits), as read back
        m.d.comb += [
            stored.first.eq(src_rd.data[:entry_bits]),
            stored.count.eq(src_rd.data[entry_bits:]),
            slave.r_data.eq(
                Mux(
                    r_region == RouterRegion.SRC.value,
                    stored,
                    Mux(r_region == RouterRegion.DEST.value, dst_rd.data, r_word),
                )
            ),
        ]
