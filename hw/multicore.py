"""Several unchanged neuron cores and the AER router between them, behind one core-like interface.

Spec: ``docs/routing.md``.  :class:`MultiCore` has the ports of a single
:class:`~spikeforge.hw.core.NeuronCore` as the host link sees them (``events``, ``spikes``,
``step``, ``done``, ``busy``, a memory bus) plus ``reset_state``; ``spikeforge.hw.chip.Chip``
puts it behind the link when ``cores > 1``.  Every core runs a sub-network
(``spikeforge.host.partition``); the router fans host events out to the cores, routes each
core's spikes to the host, to later cores (same timestep) or into the delayed queue (next
timestep), and steps the cores one after the other.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import ConfigError
from .bus import MemBusSignature
from .core import NeuronCore
from .image import EVENT_BITS
from .router import CORE_SHIFT, ROUTER_SELECT, Router, RouterConfig
from .skid import StreamRegister
from .state_clear import StateClear

__all__ = ["MultiCore"]


class MultiCore(wiring.Component):
    """``config.cores`` neuron cores, a :class:`~spikeforge.hw.router.Router` and a state clearer.

    Parameters
    ----------
    config : RouterConfig

    Attributes
    ----------
    events : In(stream.Signature(16))
        Host input channels of the current timestep (taken only between timesteps).
    spikes : Out(stream.Signature(16))
        Global neuron indices of the output populations that spiked, ascending in a timestep.
    step : In(1)
        Pulse: run one timestep.
    done : Out(1)
        Pulse: the timestep is over and its last spike was taken.
    busy : Out(1)
        A timestep, a host event's routing or a state clear is under way.
    reset_state : In(1)
        Pulse: zero V, I and ACC of every core, forget their pending recurrent spikes and empty
        the router's delayed queue (RESET_STATE).
    mem : In(MemBusSignature())
        The chip's bus: ``select << 24 | local`` (core ``select`` or the router, see
        ``spikeforge.hw.router``); other selects are refused with ``error``.
    cores : list of NeuronCore
        Set by :meth:`elaborate` (for simulation testbenches).
    """

    def __init__(self, config: RouterConfig):
        if not isinstance(config, RouterConfig):
            raise ConfigError(f"config={config!r} is not a RouterConfig")
        self.config = config
        self.cores = []
        super().__init__(
            {
                "events": In(stream.Signature(EVENT_BITS)),
                "spikes": Out(stream.Signature(EVENT_BITS)),
                "step": In(1),
                "done": Out(1),
                "busy": Out(1),
                "reset_state": In(1),
                "mem": In(MemBusSignature()),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.router = router = Router(cfg)
        m.submodules.clear = clear = StateClear(cfg.core)
        self.cores = cores = []
        for k in range(cfg.cores):
            core = NeuronCore(cfg.core)
            cores.append(core)
            m.submodules[f"core{k}"] = core
            # registered stages both ways: no combinational path between router and core
            ev = StreamRegister(EVENT_BITS)
            sp = StreamRegister(cfg.core.neuron_bits)
            m.submodules[f"core{k}_events"] = ev
            m.submodules[f"core{k}_spikes"] = sp
            wiring.connect(m, router.cores[k].events, ev.i)
            wiring.connect(m, ev.o, core.events)
            wiring.connect(m, core.spikes, sp.i)
            wiring.connect(m, sp.o, router.cores[k].spikes)
            m.d.comb += [core.step.eq(router.cores[k].step), router.cores[k].done.eq(core.done)]

        wiring.connect(m, wiring.flipped(self.events), router.events)
        wiring.connect(m, router.spikes, wiring.flipped(self.spikes))
        m.d.comb += [
            router.step.eq(self.step),
            self.done.eq(router.done),
            router.reset_state.eq(self.reset_state),
            clear.start.eq(self.reset_state),
        ]
        any_busy = clear.busy | router.busy
        for core in cores:
            any_busy = any_busy | core.busy
        m.d.comb += self.busy.eq(any_busy)

        bus = self.mem
        sel = bus.addr[CORE_SHIFT:]
        local = bus.addr[:CORE_SHIFT]
        bad_read = Signal()  # a refused read of an unknown select answers next clock with 0
        m.d.sync += bad_read.eq(0)
        with m.If(clear.busy):
            # RESET_STATE: the clearer writes every core at once (a core that takes a write
            # early takes it again until all have: the words are zeros, so that is harmless)
            all_ready = 1
            for core in cores:
                m.d.comb += [
                    core.mem.addr.eq(clear.bus.addr),
                    core.mem.w_data.eq(clear.bus.w_data),
                    core.mem.w_en.eq(clear.bus.w_en),
                ]
                all_ready = all_ready & core.mem.ready
            m.d.comb += clear.bus.ready.eq(all_ready)
        with m.Else():
            slaves = [(k, c.mem) for k, c in enumerate(cores)] + [(ROUTER_SELECT, router.mem)]
            for value, port in slaves:
                hit = sel == value
                m.d.comb += [
                    port.addr.eq(local),
                    port.w_data.eq(bus.w_data),
                    port.w_en.eq(bus.w_en & hit),
                    port.r_en.eq(bus.r_en & hit),
                ]
            with m.Switch(sel):
                for value, port in slaves:
                    with m.Case(value):
                        m.d.comb += [bus.ready.eq(port.ready), bus.error.eq(port.error)]
                with m.Default():
                    m.d.comb += [bus.ready.eq(1), bus.error.eq(bus.r_en | bus.w_en)]
                    m.d.sync += bad_read.eq(bus.r_en)
        r_valid = bad_read
        r_data = 0
        for port in [c.mem for c in cores] + [router.mem]:
            r_valid = r_valid | port.r_valid
            r_data = r_data | (port.r_data & port.r_valid.replicate(32))
        m.d.comb += [bus.r_valid.eq(r_valid), bus.r_data.eq(r_data)]
        return m
