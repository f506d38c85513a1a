"""The neuron core: a whole network on one core, bit-exact with the golden model.

Spec: ``docs/core.md`` (architecture, fan-out engine, accumulation pipeline, timestep sequence),
``docs/neuron.md`` (the neuron), ``spikeforge.hw.image`` (address map and memory image).  This
module only instantiates the parts (one module each in this package), connects them and owns
the address map: which memory the bus reaches for each region.
"""

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect, flipped

from ..bus import BUS_DATA_BITS, BusSlave, MemBusSignature
from ..image import (
    DESC_WORDS,
    EVENT_BITS,
    POP_WORD_BITS,
    POP_WORDS,
    REGION_SHIFT,
    CoreConfig,
    Region,
    region_size,
)
from ..util import refusing_unused
from .accumulate import AccumulatePipe, RegisteredAccumulatePipe
from .bitmap import RegisteredWalker, SpikeBitmap, Walker
from .descriptors import DescriptorEngine, RegisteredDescriptorEngine
from .issuer import OpIssuer
from .lanes import NeuronLanes, RegisteredNeuronLanes
from .options import CoreOptions
from .registers import CoreRegisters
from .sequencer import RegisteredSequencer, Sequencer
from .weights import weight_memory

__all__ = ["NeuronCore"]


class NeuronCore(wiring.Component):
    """One neuron core running a whole :class:`~spikeforge.sim.network.Network`.

    Parameters
    ----------
    config : CoreConfig
        Capacities and widths.
    options : CoreOptions
        How it is built (timing options); the results are the same for every choice.

    Attributes
    ----------
    events : In(stream.Signature(unsigned(EVENT_BITS)))
        Host input channel addresses; taken only while the core is idle and each delivered at
        once into the accumulators of its fan-out.
    spikes : Out(stream.Signature(unsigned(config.neuron_bits)))
        Global indices of the output populations' neurons that spiked, ascending within a step.
    step : In(1)
        Pulse: run one timestep (remembered if the core is busy).
    busy : Out(1)
        A timestep is pending or running.
    done : Out(1)
        Pulses when a timestep has finished.
    mem : In(MemBusSignature())
        Access to every memory and register (``spikeforge.hw.image.Region``), served while the
        core is idle.
    n_neurons : Out(range(config.n_neurons + 1))
        ``CONFIG.N_NEURONS``, the neurons in use: what a state reset
        (:class:`~spikeforge.hw.state_clear.StateClear`) clears.
    """

    def __init__(self, config: CoreConfig, options: CoreOptions | None = None):
        with refusing_unused(self):  # a refused argument is not an unused elaboratable
            if not isinstance(config, CoreConfig):
                raise TypeError(f"config must be a CoreConfig, not {config!r}")
            if options is None:
                options = CoreOptions()
            if not isinstance(options, CoreOptions):
                raise TypeError(f"options must be a CoreOptions, not {options!r}")
        self.config = config
        self.options = options
        super().__init__(
            {
                "events": In(stream.Signature(unsigned(EVENT_BITS))),
                "spikes": Out(stream.Signature(unsigned(config.neuron_bits))),
                "step": In(1),
                "busy": Out(1),
                "done": Out(1),
                "mem": In(MemBusSignature()),
                "n_neurons": Out(range(config.n_neurons + 1)),
            }
        )

    @property
    def read_latency(self) -> int:
        """Clocks from a registered bus read to its word (the bus answers 2 clocks later)."""
        opts = self.options
        banked = opts.weight_banks > 1
        return 1 + int(banked or opts.fast) + int(banked and opts.fast)

    def elaborate(self, platform):
        m = Module()
        cfg, opts = self.config, self.options
        fast = opts.fast

        # --- the parts ---------------------------------------------------------------------------
        m.submodules.bus = bus = BusSlave(
            [(r.value, region_size(r, cfg), r != Region.STATUS) for r in Region
             if r is not Region.CONV or cfg.conv_words],
            region_shift=REGION_SHIFT,
            registered_decode=fast,
            read_latency=self.read_latency,
        )
        m.submodules.registers = regs = CoreRegisters(cfg, opts, bus.request_layout)
        m.submodules.sequencer = seq = (RegisteredSequencer if fast else Sequencer)(cfg)
        m.submodules.descriptors = desc = (
            RegisteredDescriptorEngine if fast else DescriptorEngine
        )(cfg)
        m.submodules.issuer = issuer = OpIssuer(cfg)
        m.submodules.weights = weights = weight_memory(cfg, opts)
        m.submodules.accumulate = acc = (RegisteredAccumulatePipe if fast else AccumulatePipe)(
            cfg, weights.latency
        )
        m.submodules.lanes = lanes = (RegisteredNeuronLanes if fast else NeuronLanes)(
            cfg, bus.request_layout
        )
        m.submodules.bitmap = bitmap = SpikeBitmap(cfg)
        m.submodules.walker = walker = (RegisteredWalker if fast else Walker)(cfg)

        # the population table (POP_WORDS words per population, loaded into the
        # sequencer's registers before a population is run) and the fan-out block descriptors
        # (DESC_WORDS 32-bit words each, read one by one)
        attrs = opts.table_attrs(platform)
        m.submodules.pop_mem = pop_mem = Memory(
            shape=unsigned(POP_WORD_BITS), depth=POP_WORDS * cfg.n_populations, init=[], attrs=attrs
        )
        m.submodules.desc_mem = desc_mem = Memory(
            shape=unsigned(32), depth=DESC_WORDS * cfg.descriptors, init=[], attrs=attrs
        )
        pop_rd, pop_wr = pop_mem.read_port(), pop_mem.write_port()
        desc_rd, desc_wr = desc_mem.read_port(), desc_mem.write_port()
        # the fast build's copy of the descriptor word read a clock earlier (no enable: a flop
        # next to the block RAM); the descriptor engine and bus reads use it
        desc_word = desc_rd.data
        if fast:
            desc_word = Signal(32, name="desc_q")
            m.d.sync += desc_word.eq(desc_rd.data)

        # the per-source table of the weight-shared blocks (convolutions), when the core has
        # one; its word is registered before the descriptor engine uses it
        conv_q = conv_word = None
        if cfg.conv_words:
            m.submodules.conv_mem = conv_mem = Memory(
                shape=unsigned(32), depth=cfg.conv_words, init=[]
            )
            conv_rd, conv_wr = conv_mem.read_port(), conv_mem.write_port()
            conv_word = conv_rd.data
            conv_q = Signal(32, name="conv_q")
            m.d.sync += conv_q.eq(conv_rd.data)
            m.d.comb += [
                conv_rd.en.eq(1),
                conv_rd.addr.eq(Mux(bus.pend, bus.req.offset, desc.conv_addr)),
                conv_wr.addr.eq(bus.req.offset),
                conv_wr.data.eq(bus.req.data),
                conv_wr.en.eq(bus.req.we & (bus.req.region == Region.CONV.value)),
                desc.conv_data.eq(conv_q),
                desc.flush.eq(bus.req.we & (bus.req.region == Region.DESC.value)),
            ]

        # --- the bus and the registers ---------------------------------------------------------
        connect(m, flipped(self.mem), bus.bus)
        req, pend = bus.req, bus.pend
        m.d.comb += [
            bus.serve.eq(seq.serve & ~regs.busy),
            regs.req.eq(req),
            regs.w_data.eq(bus.w_data),
            regs.bus_refused.eq(bus.refused),
            regs.event_refused.eq(seq.event_refused),
            regs.param_err.eq(seq.param_err | desc.param_err | lanes.param_err),
            regs.step_start.eq(seq.step_start),
            regs.in_step.eq(seq.in_step),
            regs.done.eq(seq.done),
        ]

        # --- the sequencer ---------------------------------------------------------------------
        connect(m, flipped(self.events), seq.events)
        # fan-out and accumulation idle, registered (off the sequencer's paths): last cycle's
        # state, and no source handed over since (work only enters through the engine's
        # source register)
        quiet_r = Signal()
        m.d.sync += quiet_r.eq(desc.idle & issuer.idle & ~acc.busy)
        m.d.comb += [
            seq.step.eq(self.step),
            self.busy.eq(seq.busy),
            self.done.eq(seq.done),
            seq.n_inputs.eq(regs.n_inputs),
            seq.n_pops.eq(regs.n_pops),
            seq.input_list.eq(regs.input_list),
            seq.clear_spikes.eq(regs.clear_spikes),
            self.n_neurons.eq(regs.n_neurons),
            seq.bus_pend.eq(pend),
            seq.drained.eq(quiet_r & ~desc.pending),
            seq.pop_data.eq(pop_rd.data),
            seq.dp_busy.eq(lanes.dp_busy),
            seq.results.eq(lanes.results),
            seq.spiked.eq(lanes.spikes.any()),
            seq.walk_idle.eq(walker.idle),
        ]

        # --- fan-out: sources (input events, walked spikes) -> descriptors -> ops ---------------
        # the sequencer hands over events only while idle, the walker spikes only during a step
        m.d.comb += [
            desc.source.valid.eq(seq.source.valid | walker.source.valid),
            desc.source.payload.eq(
                Mux(seq.source.valid, seq.source.payload, walker.source.payload)
            ),
            seq.source.ready.eq(desc.source.ready),
            walker.source.ready.eq(desc.source.ready),
            desc.desc_data.eq(desc_word),
        ]
        connect(m, desc.segment, issuer.segment)
        connect(m, issuer.op, acc.op)

        # --- accumulation and the neuron lanes -------------------------------------------------
        m.d.comb += [
            acc.weight.eq(weights.data),
            lanes.acc_rd_valid.eq(acc.rd_valid),
            lanes.acc_rd_group.eq(acc.rd_tg),
            acc.acc.eq(lanes.acc),
            lanes.acc_wr_valid.eq(acc.wr_valid),
            lanes.acc_wr_group.eq(acc.wr_tg),
            lanes.acc_wr_sum.eq(acc.wr_sum),
            lanes.pop.eq(seq.pop),
            lanes.sweep_issue.eq(seq.sweep_issue),
            lanes.sweep_group.eq(seq.sweep_group),
            lanes.sweep_mask.eq(seq.sweep_mask),
            lanes.wb_group.eq(seq.wb_group),
            lanes.req.eq(req),
            lanes.bus_pend.eq(pend),
        ]

        # --- spike bitmaps and the walker ------------------------------------------------------
        m.d.comb += [
            bitmap.valid.eq(lanes.results),
            bitmap.spikes.eq(lanes.spikes),
            bitmap.group.eq(seq.wb_group),
            bitmap.bank.eq(seq.bank),
            bitmap.clear.eq(seq.step_start),
            bitmap.rd_addr.eq(walker.rd_addr),
            bitmap.rd_en.eq(walker.rd_en),
            walker.rd_data.eq(bitmap.rd_data),
            walker.start.eq(seq.walk_start),
            walker.cmd.eq(seq.walk),
        ]
        connect(m, walker.spikes, flipped(self.spikes))

        # --- the address map: the bus has the memories in the cycles the core does not use them
        def on_bus(region):
            return req.we & (req.region == region.value)

        m.d.comb += [
            pop_rd.en.eq(1),
            pop_rd.addr.eq(Mux(pend, req.offset, seq.pop_addr)),
            pop_wr.addr.eq(req.offset),
            pop_wr.data.eq(req.data),
            pop_wr.en.eq(on_bus(Region.POP)),
            desc_rd.en.eq(1),
            desc_rd.addr.eq(Mux(pend, req.offset, desc.desc_addr)),
            desc_wr.addr.eq(req.offset),
            desc_wr.data.eq(req.data),
            desc_wr.en.eq(on_bus(Region.DESC)),
            weights.addr.eq(Mux(pend, req.offset, acc.w_addr)),
            weights.wdata.eq(req.data),
            weights.we.eq(on_bus(Region.WEIGHT)),
        ]
        self._read_path(m, bus, regs, lanes, weights, pop_rd.data, desc_rd.data, desc_word,
                        conv_word, conv_q)
        return m

    def _read_path(self, m, bus, regs, lanes, weights, pop_word, desc_word, desc_q, conv_word,
                   conv_q):
        """The word a bus read returns, ``read_latency`` clocks after the registered request:
        picked by region from the registers, the tables, the neuron lanes or the weights; in
        the fast build and with weight banks, from registers a clock later."""
        cfg, opts = self.config, self.options
        fast = opts.fast
        banked = opts.weight_banks > 1
        lg = cfg.lane_bits
        req = bus.req
        region = Signal(4, name="rd_region")
        lane = Signal(max(lg, 1), name="rd_lane")
        m.d.sync += [region.eq(req.region), lane.eq(req.offset[:lg] if lg else 0)]
        neuron = [Region.V, Region.I, Region.ACC, Region.BIAS, Region.THR]
        first = Signal(BUS_DATA_BITS, name="rdata")  # a clock after the request
        with m.Switch(region):
            with m.Case(Region.CONFIG.value, Region.STATUS.value):
                m.d.comb += first.eq(regs.r_word)
            if not fast:  # (the fast build registers them first, below)
                with m.Case(Region.POP.value):
                    m.d.comb += first.eq(pop_word)
                with m.Case(Region.DESC.value):
                    m.d.comb += first.eq(desc_word)
                with m.Case(*(r.value for r in neuron)):
                    m.d.comb += first.eq(lanes.r_word)
            if not banked:
                with m.Case(Region.WEIGHT.value):
                    m.d.comb += first.eq(weights.data)
            if conv_word is not None and not fast:
                with m.Case(Region.CONV.value):
                    m.d.comb += first.eq(conv_word)
        if self.read_latency == 1:
            m.d.comb += [lanes.r_region.eq(region), lanes.r_lane.eq(lane), bus.r_data.eq(first)]
            return
        # a clock more: the first word registered, or a registered neuron / table word, or the
        # banks' weight word
        first_q = Signal(BUS_DATA_BITS, name="rdata_q")
        region_q = Signal(4, name="rd_region_q")
        lane_q = Signal.like(lane, name="rd_lane_q")
        m.d.sync += [first_q.eq(first), region_q.eq(region), lane_q.eq(lane)]
        second = Signal(BUS_DATA_BITS, name="rdata_final")
        m.d.comb += second.eq(first_q)

        if fast:
            m.d.comb += [lanes.r_region.eq(region_q), lanes.r_lane.eq(lane_q)]
        else:
            m.d.comb += [lanes.r_region.eq(region), lanes.r_lane.eq(lane)]
        with m.Switch(region_q):
            if banked and not fast:
                with m.Case(Region.WEIGHT.value):
                    m.d.comb += second.eq(weights.data)
            if fast:
                with m.Case(*(r.value for r in neuron)):
                    m.d.comb += second.eq(lanes.r_word)
                # the table words, registered straight from the block RAMs
                pop_q = Signal(POP_WORD_BITS)
                m.d.sync += pop_q.eq(pop_word)
                with m.Case(Region.POP.value):
                    m.d.comb += second.eq(pop_q)
                with m.Case(Region.DESC.value):
                    m.d.comb += second.eq(desc_q)
                if conv_q is not None:  # (the engine's register of the CONV word)
                    with m.Case(Region.CONV.value):
                        m.d.comb += second.eq(conv_q)
        if self.read_latency == 2:
            m.d.comb += bus.r_data.eq(second)
            return
        # banks with registered inputs (fast build): the weight word is a clock later still
        second_q = Signal(BUS_DATA_BITS, name="rd_word_q0")
        weight_q = Signal(name="rd_weight_q0")
        m.d.sync += [second_q.eq(second), weight_q.eq(region_q == Region.WEIGHT.value)]
        m.d.comb += bus.r_data.eq(Mux(weight_q, weights.data, second_q))
