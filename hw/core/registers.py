"""The core's configuration registers and status counters (``Region.CONFIG``, ``Region.STATUS``).

Spec: ``docs/core.md`` ("Memory map"), :class:`~spikeforge.hw.image.ConfigWord` and
:class:`~spikeforge.hw.image.StatusWord`.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..bus import BUS_DATA_BITS, BusRequest
from ..compare import at_most
from ..counters import FlopCounters, RamCounters
from ..image import REGION_SHIFT, ConfigWord, CoreConfig, DescList, Region, StatusWord
from .options import CoreOptions
from .sequencer import list_ok

__all__ = ["CoreRegisters"]


class CoreRegisters(wiring.Component):
    """Configuration registers written over the bus; counters and capacities read back.

    Attributes
    ----------
    req : In(request_layout)
        The bus slave's registered request (:attr:`~spikeforge.hw.bus.BusSlave.req`).
    w_data : In(32)
        The request's data as it is on the bus (a list word is checked a clock early).
    n_inputs, n_pops, input_list : Out
        :class:`~spikeforge.hw.image.ConfigWord` registers.
    clear_spikes : Out(1)
        Pulse: CONTROL bit 0 was written (forget the pending recurrent spikes).
    n_neurons : Out
        ``CONFIG.N_NEURONS``: the neurons a state reset clears.
    bus_refused, event_refused, param_err : In(1)
        Pulses to count; a refused input list counts as a parameter error too.
    step_start, in_step, done : In(1)
        The sequencer's step: counted, and its clocks counted.
    r_word : Out(32)
        The word read from CONFIG or STATUS, a clock after ``req.re`` (0 for other regions).
    busy : Out(1)
        A counted event is not readable yet: the bus waits.
    """

    def __init__(self, config: CoreConfig, options: CoreOptions, request_layout=None):
        self.config = config
        self.options = options
        if request_layout is None:
            request_layout = BusRequest(REGION_SHIFT)
        super().__init__(
            {
                "req": In(request_layout),
                "w_data": In(BUS_DATA_BITS),
                "n_inputs": Out(16, init=config.n_inputs),
                "n_pops": Out(range(config.n_populations + 1)),
                "input_list": Out(DescList),
                "clear_spikes": Out(1),
                "n_neurons": Out(range(config.n_neurons + 1), init=config.n_neurons),
                "bus_refused": In(1),
                "event_refused": In(1),
                "param_err": In(1),
                "step_start": In(1),
                "in_step": In(1),
                "done": In(1),
                "r_word": Out(BUS_DATA_BITS),
                "busy": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        req = self.req
        # the event counters (StatusWord 0 .. 3): in a block RAM in the small build
        counted = [
            (StatusWord.EVENTS_REFUSED, self.event_refused),
            (StatusWord.BUS_REFUSED, self.bus_refused),
            (StatusWord.PARAM_ERRORS, None),  # (param_err, below)
            (StatusWord.STEPS, self.done),
        ]
        assert [w.value for w, _ in counted] == list(range(len(counted)))
        kind = FlopCounters if self.options.fast else RamCounters
        m.submodules.counters = counters = kind(
            len(counted), 32, attrs=self.options.table_attrs(platform)
        )
        # cycles of the running step; it stops at the step's end, so between steps (when the bus
        # is served) it is the last step's count (LAST_STEP_CYCLES)
        step_cycles = Signal(32)

        # an input list that runs past the descriptor table is stored empty (and counted),
        # checked from the request and registered with it
        list_bad = Signal()
        m.d.sync += list_bad.eq(~list_ok(self.w_data, cfg))
        param_err = Signal()
        m.d.comb += param_err.eq(self.param_err)
        with m.If(req.we & (req.region == Region.CONFIG.value)):
            with m.Switch(req.offset):
                with m.Case(ConfigWord.N_INPUTS.value):
                    m.d.sync += self.n_inputs.eq(
                        Mux(at_most(req.data, cfg.n_inputs), req.data, cfg.n_inputs)
                    )
                with m.Case(ConfigWord.N_POPULATIONS.value):
                    m.d.sync += self.n_pops.eq(
                        Mux(at_most(req.data, cfg.n_populations), req.data, cfg.n_populations)
                    )
                with m.Case(ConfigWord.CONTROL.value):
                    m.d.comb += self.clear_spikes.eq(req.data[0])
                with m.Case(ConfigWord.N_NEURONS.value):
                    m.d.sync += self.n_neurons.eq(
                        Mux(at_most(req.data, cfg.n_neurons), req.data, cfg.n_neurons)
                    )
                with m.Case(ConfigWord.INPUT_LIST.value):
                    m.d.sync += self.input_list.eq(
                        Mux(list_bad, 0, req.data[: DescList.size])
                    )
                    with m.If(list_bad):
                        m.d.comb += param_err.eq(1)

        m.d.comb += counters.inc.eq(
            Cat(param_err if pulse is None else pulse for _, pulse in counted)
        )
        with m.If(self.in_step & ~self.done):
            m.d.sync += step_cycles.eq(step_cycles + 1)
        with m.If(self.step_start):
            m.d.sync += step_cycles.eq(1)

        status = {
            StatusWord.LAST_STEP_CYCLES: step_cycles,
            StatusWord.CAP_NEURONS: cfg.n_neurons,
            StatusWord.CAP_INPUTS: cfg.n_inputs,
            StatusWord.CAP_POPULATIONS: cfg.n_populations,
            StatusWord.CAP_SYNAPSE_WORDS: cfg.synapse_words,
            StatusWord.CAP_DESCRIPTORS: cfg.descriptors,
            StatusWord.LANES: cfg.lanes,
            StatusWord.FEATURES: int(cfg.per_neuron_threshold),
        }
        config_words = {
            ConfigWord.N_INPUTS: self.n_inputs,
            ConfigWord.N_POPULATIONS: self.n_pops,
            ConfigWord.CONTROL: 0,
            ConfigWord.INPUT_LIST: self.input_list,
            ConfigWord.N_NEURONS: self.n_neurons,
        }
        # the read is selected when it is taken and the word picked a clock later (the bus is
        # served only between steps, when none of these words changes)
        status_read = req.re & (req.region == Region.STATUS.value)
        sel_status, sel_config = Signal(), Signal()
        sel_word = Signal(range(max(len(StatusWord), len(ConfigWord))))
        m.d.comb += [
            counters.hold.eq(status_read),
            counters.rd_addr.eq(req.offset),
            self.busy.eq(counters.busy),
        ]
        with m.If(req.re):
            m.d.sync += [
                sel_status.eq(status_read),
                sel_config.eq(req.region == Region.CONFIG.value),
                sel_word.eq(req.offset),
            ]
        for selected, words in [(sel_status, status), (sel_config, config_words)]:
            with m.If(selected):
                with m.Switch(sel_word):
                    for w, value in words.items():
                        with m.Case(w.value):
                            m.d.comb += self.r_word.eq(value)
                    if words is status:
                        with m.Case(*(w.value for w, _ in counted)):
                            m.d.comb += self.r_word.eq(counters.rd_data)
        return m
