"""The neuron core: a whole network on one core, bit-exact with the golden model.

Spec: ``docs/core.md`` (architecture, fan-out engine, accumulation pipeline, timestep sequence),
``docs/neuron.md`` (the neuron), ``spikeforge.hw.image`` (address map and memory image).
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import LeakMode, NeuronModel
from .bus import BUS_DATA_BITS, MemBusSignature
from .core_neuron import NeuronDatapath
from .image import (
    EVENT_BITS,
    REGION_SHIFT,
    ConfigWord,
    CoreConfig,
    PopFlag,
    PopWord,
    Region,
    StatusWord,
    region_size,
)

__all__ = ["NeuronCore"]


class NeuronCore(wiring.Component):
    """One neuron core running a whole :class:`~spikeforge.sim.network.Network`.

    Parameters
    ----------
    config : CoreConfig
        Capacities and widths.
    block_ram_tables : bool or None
        Put the small population table in block RAM (``ram_style = "block"``) instead of
        leaving the choice to synthesis.  On the iCE40, which has no LUT RAM, Yosys builds
        memories that small from flip-flops and multiplexers (~400 logic cells for four
        populations); one block RAM per word is cheaper.  ``None`` (default): only when the
        platform is an iCE40.

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
    """

    def __init__(self, config: CoreConfig, *, block_ram_tables: bool | None = None):
        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if block_ram_tables not in (None, True, False):
            raise TypeError(
                f"block_ram_tables must be None, True or False, not {block_ram_tables!r}"
            )
        self.config = config
        self.block_ram_tables = block_ram_tables
        super().__init__(
            {
                "events": In(stream.Signature(unsigned(EVENT_BITS))),
                "spikes": Out(stream.Signature(unsigned(config.neuron_bits))),
                "step": In(1),
                "busy": Out(1),
                "done": Out(1),
                "mem": In(MemBusSignature()),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        fmt = cfg.fmt
        N = cfg.n_neurons
        nb = cfg.neuron_bits
        sb = fmt.state_bits

        # --- memories -------------------------------------------------------------------------
        block_tables = self.block_ram_tables
        if block_tables is None:
            block_tables = str(getattr(platform, "family", "")).lower() == "ice40"

        def memory(name, width, depth, attrs=None):
            mem = Memory(shape=unsigned(width), depth=depth, init=[], attrs=attrs)
            m.submodules[name] = mem
            return mem, mem.read_port(), mem.write_port()

        v_mem, v_rd, v_wr = memory("v_mem", sb, N)
        i_mem, i_rd, i_wr = memory("i_mem", sb, N)
        acc_mem, acc_rd, acc_wr = memory("acc_mem", fmt.acc_bits, N)
        thr_mem, thr_rd, thr_wr = memory("thr_mem", fmt.threshold_bits, N)
        bias_mem, bias_rd, bias_wr = memory("bias_mem", fmt.bias_bits, N)
        # the population table: one memory per PopWord, read in parallel
        pop_widths = {PopWord.RANGE: 32, PopWord.OPTIONS: 9, PopWord.BETA: 16, PopWord.ALPHA: 16}
        pop_ports = [
            memory(
                f"pop_{w.name.lower()}",
                pop_widths[w],
                cfg.n_populations,
                {"ram_style": "block"} if block_tables else None,
            )
            for w in PopWord
        ]
        (_, rd_range, _), (_, rd_opts, _), (_, rd_beta, _), (_, rd_alpha, _) = pop_ports
        pop_base = rd_range.data[:16]
        pop_size = rd_range.data[16:]
        pop_opts = rd_opts.data
        pop_beta = rd_beta.data
        pop_alpha = rd_alpha.data
        src_mem, src_rd, src_wr = memory(
            "src_mem", cfg.segment_bits + cfg.count_bits, cfg.n_sources
        )
        # segment: target, length and a valid bit computed when the bus writes it
        segt_mem, segt_rd, segt_wr = memory("segt_mem", nb + cfg.length_bits + 1, cfg.segments)
        segw_mem, segw_rd, segw_wr = memory("segw_mem", cfg.slot_bits, cfg.segments)
        w_mem, w_rd, w_wr = memory("w_mem", cfg.word_bits, cfg.synapse_words)
        # spikes of this step (walked for output and forward fan-out after each sweep) and,
        # double-buffered, the spikes with a recurrent fan-out (walked at the next step's start)
        spk_mem, spk_rd, spk_wr = memory("spk_mem", nb, N)
        rec_mem, rec_rd, rec_wr = memory("rec_mem", nb, 2 * N)

        # --- registers ------------------------------------------------------------------------
        n_inputs = Signal(16, init=cfg.n_inputs)
        n_pops = Signal(range(cfg.n_populations + 1), init=0)
        cnt_events_refused = Signal(32)
        cnt_bus_refused = Signal(32)
        cnt_param = Signal(32)
        cnt_steps = Signal(32)
        # cycles of the running step; it stops at the step's end, so between steps (when the bus
        # is served) it is the last step's count (LAST_STEP_CYCLES)
        step_cycles = Signal(32)
        param_err = Signal()  # pulse: one more parameter error
        event_refused = Signal()

        step_pending = Signal()
        in_step = Signal()
        with m.If(self.step):
            m.d.sync += step_pending.eq(1)
        m.d.comb += self.busy.eq(step_pending | in_step)

        # spike lists: bank `prev` holds last step's spikes, the step writes bank ~prev
        prev = Signal()
        cnt_prev = Signal(range(N + 1))
        cnt_cur = Signal(range(N + 1))
        cnt_rec = Signal(range(N + 1))

        # the population being run: pop_idx addresses the population table, whose read ports
        # then hold its words (the table is not written during a step); no copy in registers
        pop_idx = Signal(range(cfg.n_populations + 1))
        pop_start = Signal(range(N + 1))
        pop_ok_r = Signal()

        # --- neuron datapath ------------------------------------------------------------------
        # The datapath's results come out in the order the sweep issued the neurons, so the
        # write-back address is a counter (wb_n) instead of a tag carried through the pipeline.
        m.submodules.dp = dp = NeuronDatapath(fmt, tag_bits=1)
        m.d.comb += [
            dp.model.eq(pop_opts[0:1]),
            dp.leak.eq(pop_opts[1:3]),
            dp.reset.eq(pop_opts[3:5]),
            dp.reset_delay.eq(pop_opts[5]),
            dp.beta.eq(pop_beta),
            dp.alpha.eq(pop_alpha),
            dp.i_v.eq(v_rd.data),
            dp.i_i.eq(i_rd.data),
            dp.i_acc.eq(acc_rd.data),
            dp.i_thr.eq(thr_rd.data),
            dp.i_bias.eq(bias_rd.data),
        ]
        sweep_issue = Signal()  # present neuron `sweep_n` to the state memories
        sweep_n = Signal(nb)
        sweep_end = Signal(nb + 1)
        wb_n = Signal(nb)  # the neuron dp.o_* belongs to
        # the sweep's request is registered before it addresses the state memories (instead of
        # registering their 84-bit output); the datapath sees the data the cycle after
        iss_q = Signal()
        iss_n = Signal(nb)
        m.d.sync += [iss_q.eq(sweep_issue), iss_n.eq(sweep_n), dp.i_valid.eq(iss_q)]
        with m.If(dp.o_valid):
            m.d.sync += wb_n.eq(wb_n + 1)
        thr_max = fmt.threshold_range[1]
        with m.If(dp.i_valid & ((dp.i_thr == 0) | (dp.i_thr > thr_max))):
            m.d.comb += param_err.eq(1)

        # --- accumulation pipeline: read acc, add weight, write acc, forwarding ---------------
        op_valid = Signal()
        op_tgt = Signal(nb)
        op_slot = Signal(cfg.slot_bits)
        w1_valid, w1_tgt, w1_half = Signal(), Signal(nb), Signal()
        s1_valid, s1_tgt = Signal(), Signal(nb)
        s1_w = Signal(signed(fmt.weight_bits))
        s2_valid, s2_tgt, s2_sum = Signal(), Signal(nb), Signal(fmt.acc_bits)
        s3_valid, s3_tgt, s3_sum = Signal(), Signal(nb), Signal(fmt.acc_bits)
        wb = fmt.weight_bits
        # W: the weight word arrives and is registered (the weight memory is large: on ECP5 a
        # cascade of block RAMs, on iCE40 SPRAM); the accumulator is read for this target
        m.d.sync += [
            w1_valid.eq(op_valid),
            w1_tgt.eq(op_tgt),
            w1_half.eq(op_slot[0]),
            s1_valid.eq(w1_valid),
            s1_tgt.eq(w1_tgt),
            s1_w.eq(Mux(w1_half, w_rd.data[wb : 2 * wb], w_rd.data[:wb])),
            s3_valid.eq(s2_valid),
            s3_tgt.eq(s2_tgt),
            s3_sum.eq(s2_sum),
        ]
        acc_now = Mux(
            s2_valid & (s2_tgt == s1_tgt),
            s2_sum,
            Mux(s3_valid & (s3_tgt == s1_tgt), s3_sum, acc_rd.data),
        )
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_tgt.eq(s1_tgt),
            s2_sum.eq(acc_now.as_signed() + s1_w),
        ]
        pipe_busy = op_valid | w1_valid | s1_valid | s2_valid
        # one address for both weight ports, so the memory maps to single-port RAM (iCE40 SPRAM)
        w_addr = Signal(range(cfg.synapse_words))
        m.d.comb += [
            w_addr.eq(op_slot[1:]),
            w_rd.addr.eq(w_addr),
            w_wr.addr.eq(w_addr),
            w_rd.en.eq(~w_wr.en),  # read data holds during a write (SPRAM's "no change")
        ]

        # --- fan-out engine: source -> segments -> one synaptic op per clock ------------------
        fo_start = Signal()
        fo_src = Signal(cfg.source_bits)
        fo_idle = Signal()
        fo_done = Signal()
        seg_left = Signal(cfg.count_bits)
        seg_next = Signal(cfg.segment_bits + 1)
        cur_t = Signal(nb)
        cur_w = Signal(cfg.slot_bits)
        remaining = Signal(cfg.length_bits)
        # predecoded (registered) seg_left == 0 and remaining == 1, off the critical paths
        seg_none = Signal()
        rem_last = Signal()
        seg_en = Signal()
        seg_addr = Signal(cfg.segment_bits + 1)
        m.d.comb += [
            segt_rd.addr.eq(seg_addr),
            segw_rd.addr.eq(seg_addr),
            segt_rd.en.eq(seg_en),
            segw_rd.en.eq(seg_en),
        ]
        seg_t = segt_rd.data[:nb]
        seg_len = segt_rd.data[nb : nb + cfg.length_bits]
        seg_w = segw_rd.data
        seg_ok = segt_rd.data[-1]
        src_first = src_rd.data[: cfg.segment_bits]
        src_count = src_rd.data[cfg.segment_bits :]

        def load_segment():
            """Take the segment on the read port; returns the condition it was valid."""
            m.d.comb += [seg_en.eq(1), seg_addr.eq(seg_next)]
            m.d.sync += [
                seg_left.eq(seg_left - 1),
                seg_none.eq(seg_left == 1),
                seg_next.eq(seg_next + 1),
            ]
            with m.If(seg_ok):
                m.d.sync += [
                    cur_t.eq(seg_t),
                    cur_w.eq(seg_w),
                    remaining.eq(seg_len),
                    rem_last.eq(seg_len == 1),
                ]
            with m.Else():
                m.d.comb += param_err.eq(1)

        # A second source may be taken while the first one's operations run (``pend``): its
        # descriptor waits on the source table's read port, so the next source costs only
        # the clock that loads its first segment.
        pend = Signal()
        fo_ready = Signal()  # fo_start is taken this cycle

        # the source descriptor is registered the cycle it arrives (src_q), off the path from
        # the source table to the segment table's address
        src_fresh = Signal()
        src_q_first = Signal(cfg.segment_bits)
        src_q_count = Signal(cfg.count_bits)
        m.d.sync += src_fresh.eq(fo_start)
        with m.If(src_fresh):
            m.d.sync += [src_q_first.eq(src_first), src_q_count.eq(src_count)]
        pend_ready = pend & ~src_fresh

        def begin_source():
            m.d.comb += [seg_en.eq(1), seg_addr.eq(src_q_first)]
            m.d.sync += [
                seg_next.eq(src_q_first + 1),
                seg_left.eq(src_q_count),
                seg_none.eq(src_q_count == 0),
                pend.eq(0),
            ]
            m.next = "SEG"

        def end_source():
            m.d.comb += fo_done.eq(1)
            with m.If(pend_ready):
                begin_source()
            with m.Else():
                m.next = "IDLE"

        with m.FSM(name="fanout"):
            with m.State("IDLE"):
                m.d.comb += [fo_idle.eq(~pend), fo_ready.eq(~pend)]
                with m.If(pend_ready):
                    begin_source()
                with m.Elif(fo_start):
                    m.next = "SRC"
            with m.State("SRC"):
                m.next = "SRC2"
            with m.State("SRC2"):
                begin_source()
            with m.State("SEG"):
                with m.If(seg_none):
                    end_source()
                with m.Else():
                    load_segment()
                    with m.If(seg_ok):
                        m.next = "OPS"
            with m.State("OPS"):
                m.d.comb += [op_valid.eq(1), op_tgt.eq(cur_t), op_slot.eq(cur_w)]
                m.d.comb += fo_ready.eq(~pend)
                m.d.sync += [
                    cur_t.eq(cur_t + 1),
                    cur_w.eq(cur_w + 1),
                    remaining.eq(remaining - 1),
                    rem_last.eq(remaining == 2),
                ]
                with m.If(rem_last):
                    with m.If(seg_none):
                        end_source()
                    with m.Else():
                        load_segment()
                        with m.If(~seg_ok):
                            m.next = "SEG"
                with m.If(fo_start):
                    m.d.sync += pend.eq(1)
        m.d.comb += [src_rd.addr.eq(fo_src), src_rd.en.eq(fo_start)]

        # --- spike walker: output stream and fan-out of a range of the spike lists ------------
        walk_bank = Signal()
        walk_k = Signal(range(N + 1))
        walk_end = Signal(range(N + 1))
        walk_emit = Signal()
        walk_fanout = Signal()
        walk_rec = Signal()
        walk_start = Signal()
        walk_sent = Signal()
        walk_idle = Signal()
        spk_addr = Signal(range(2 * N))
        m.d.comb += [
            spk_rd.addr.eq(spk_addr),
            rec_rd.addr.eq(spk_addr),
            spk_rd.en.eq(0),
            rec_rd.en.eq(0),
        ]
        walk_n = Mux(walk_rec, rec_rd.data, spk_rd.data)
        with m.FSM(name="walker"):
            with m.State("IDLE"):
                m.d.comb += walk_idle.eq(1)
                with m.If(walk_start):
                    m.next = "READ"
            with m.State("READ"):
                with m.If(walk_k == walk_end):
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += [
                        spk_rd.en.eq(1),
                        rec_rd.en.eq(1),
                        spk_addr.eq(Mux(walk_rec & walk_bank, N, 0) + walk_k),
                    ]
                    m.next = "SPIKE"
            with m.State("SPIKE"):
                # emit the spike (output populations) and hand it to the fan-out engine
                m.d.comb += [
                    self.spikes.valid.eq(walk_emit & ~walk_sent),
                    self.spikes.payload.eq(walk_n),
                ]
                emitted = ~walk_emit | walk_sent | self.spikes.ready
                with m.If(emitted & (~walk_fanout | fo_ready)):
                    m.d.comb += [
                        fo_start.eq(walk_fanout),
                        fo_src.eq(walk_n + Mux(walk_rec, cfg.n_inputs + N, cfg.n_inputs)),
                    ]
                    m.d.sync += [walk_k.eq(walk_k + 1), walk_sent.eq(0)]
                    m.next = "READ"
                with m.Elif(emitted):
                    m.d.sync += walk_sent.eq(1)

        # --- datapath write-back ------------------------------------------------------------
        m.d.comb += [
            v_wr.addr.eq(wb_n),
            v_wr.data.eq(dp.o_v),
            v_wr.en.eq(dp.o_valid),
            i_wr.addr.eq(wb_n),
            i_wr.data.eq(dp.o_i),
            i_wr.en.eq(dp.o_valid),
            spk_wr.addr.eq(cnt_cur),
            spk_wr.data.eq(wb_n),
            spk_wr.en.eq(dp.o_spike),
            rec_wr.addr.eq(Mux(prev, 0, N) + cnt_rec),
            rec_wr.data.eq(wb_n),
            rec_wr.en.eq(dp.o_spike & pop_opts[PopFlag.RECURRENT.bit_length() - 1]),
        ]
        with m.If(dp.o_spike):
            m.d.sync += cnt_cur.eq(cnt_cur + 1)
        with m.If(rec_wr.en):
            m.d.sync += cnt_rec.eq(cnt_rec + 1)
        dp_busy = Signal()
        dp_flight = Signal(NeuronDatapath.LATENCY + 2)  # issue -> address -> data -> ...
        m.d.sync += [
            dp_flight.eq(Cat(sweep_issue, dp_flight[:-1])),
            dp_busy.eq(sweep_issue | dp_flight[:-1].any()),  # == dp_flight.any(), registered
        ]

        # accumulator ports: accumulation pipeline, sweep (read, clear) or bus
        with m.If(dp.o_valid):
            m.d.comb += [acc_wr.addr.eq(wb_n), acc_wr.data.eq(0), acc_wr.en.eq(1)]
        with m.Else():
            m.d.comb += [acc_wr.addr.eq(s2_tgt), acc_wr.data.eq(s2_sum), acc_wr.en.eq(s2_valid)]
        for port in (v_rd, i_rd, thr_rd, bias_rd):
            m.d.comb += port.en.eq(1)
        m.d.comb += acc_rd.en.eq(1)

        # --- bus -------------------------------------------------------------------------------
        bus = self.mem
        region = bus.addr[REGION_SHIFT:]
        offset = bus.addr[:REGION_SHIFT]
        bus_ok = Signal()  # the bus may be served this cycle
        req = (bus.r_en | bus.w_en) & bus.ready
        in_range = Signal()
        writable = Signal()
        with m.Switch(region):
            for reg in Region:
                with m.Case(reg.value):
                    m.d.comb += in_range.eq(offset < region_size(reg, cfg))
                    m.d.comb += writable.eq(reg != Region.STATUS)
        m.d.comb += [
            bus.ready.eq(bus_ok),
            bus.error.eq(
                bus_ok & (bus.r_en | bus.w_en) & ~(in_range & (writable | ~bus.w_en))
            ),
        ]
        good = req & ~bus.error
        bus_refused = Signal()  # registered: the counters are off the request's path
        m.d.sync += bus_refused.eq(req & bus.error)
        with m.If(bus_refused):
            m.d.sync += cnt_bus_refused.eq(cnt_bus_refused + 1)
        # An accepted request is registered and touches the memories in the next cycle (no
        # combinational path from the bus to the memories); no event or timestep starts in
        # that cycle (b_pend).  Read data is on r_data three cycles after the request.
        b_we, b_re = Signal(), Signal()
        b_region = Signal(4)
        b_offset = Signal(REGION_SHIFT)
        wdata = Signal(BUS_DATA_BITS)
        b_pend = Signal()
        m.d.sync += [
            b_we.eq(good & bus.w_en),
            b_re.eq(good & bus.r_en),
            b_region.eq(region),
            b_offset.eq(offset),
            wdata.eq(bus.w_data),
        ]
        m.d.comb += b_pend.eq(b_we | b_re)
        r_stage = Signal()
        rd_region = Signal(4)
        rd_odd = Signal()
        rd_word = Signal(2)
        rd_ok = Signal()
        rd_reg = Signal(32)
        r_stage2 = Signal()
        m.d.sync += [
            r_stage.eq(req & bus.r_en),
            r_stage2.eq(r_stage),
            bus.r_valid.eq(r_stage2),
            rd_region.eq(b_region),
            rd_odd.eq(b_offset[0]),
            rd_word.eq(b_offset[:2]),
            rd_ok.eq(b_re),
        ]
        region = b_region
        offset = b_offset

        def bus_port(reg, rd, wr, addr, data):
            hit = region == reg.value
            with m.If(b_pend):
                m.d.comb += rd.addr.eq(addr)
            if wr is not None:
                with m.If(hit & b_we):
                    m.d.comb += [wr.addr.eq(addr), wr.data.eq(data), wr.en.eq(1)]

        # the bus has the read ports only in cycles the core does not use them (b_pend)
        for reg, rd, wr in (
            (Region.V, v_rd, v_wr),
            (Region.I, i_rd, i_wr),
            (Region.THR, thr_rd, thr_wr),
            (Region.BIAS, bias_rd, bias_wr),
        ):
            bus_port(reg, rd, wr, offset, wdata)
        bus_port(Region.ACC, acc_rd, None, offset, wdata)
        with m.If(b_we & (region == Region.ACC.value)):
            m.d.comb += [acc_wr.addr.eq(offset), acc_wr.data.eq(wdata), acc_wr.en.eq(1)]
        for w, (_, rd, wr) in zip(PopWord, pop_ports, strict=True):
            m.d.comb += rd.addr.eq(pop_idx)
            with m.If(b_pend):
                m.d.comb += rd.addr.eq(offset[2:])
            with m.If(b_we & (region == Region.POP.value) & (offset[:2] == w.value)):
                m.d.comb += [wr.addr.eq(offset[2:]), wr.data.eq(wdata), wr.en.eq(1)]
        # a source whose segments run past the table is stored empty (and counted); the checks
        # of SRC and SEG words are computed from the request and registered with it
        w_first, w_count = wdata[:16], wdata[16:]
        src_bad = Signal()
        req_first, req_count = bus.w_data[:16], bus.w_data[16:]
        m.d.sync += src_bad.eq((req_count != 0) & (req_first + req_count > cfg.segments))
        bus_port(
            Region.SRC,
            src_rd,
            src_wr,
            offset,
            Cat(w_first[: cfg.segment_bits], Mux(src_bad, 0, w_count[: cfg.count_bits])),
        )
        with m.If(b_we & (region == Region.SRC.value) & src_bad):
            m.d.comb += param_err.eq(1)
        with m.If(b_pend):
            m.d.comb += w_addr.eq(offset)
        with m.If(b_we & (region == Region.WEIGHT.value)):
            m.d.comb += [w_wr.data.eq(wdata), w_wr.en.eq(1)]
        with m.If(b_pend):
            m.d.comb += [seg_addr.eq(offset[1:]), seg_en.eq(1)]
        seg_hit = b_we & (region == Region.SEG.value)
        # valid: 1 <= length and target + length <= n_neurons (never touches other neurons)
        seg_good = Signal()
        m.d.sync += seg_good.eq((req_count != 0) & (req_first + req_count <= N))
        with m.If(seg_hit & ~offset[0]):
            m.d.comb += [
                segt_wr.addr.eq(offset[1:]),
                segt_wr.data.eq(Cat(wdata[:nb], wdata[16 : 16 + cfg.length_bits], seg_good)),
                segt_wr.en.eq(1),
            ]
        with m.If(seg_hit & offset[0]):
            m.d.comb += [segw_wr.addr.eq(offset[1:]), segw_wr.data.eq(wdata), segw_wr.en.eq(1)]
        with m.If(b_pend):
            m.d.comb += [
                src_rd.addr.eq(offset),
                src_rd.en.eq(1),
            ]

        # registers
        clear_spikes = Signal()
        with m.If(b_we & (region == Region.CONFIG.value)):
            with m.Switch(offset):
                with m.Case(ConfigWord.N_INPUTS.value):
                    m.d.sync += n_inputs.eq(Mux(wdata > cfg.n_inputs, cfg.n_inputs, wdata))
                with m.Case(ConfigWord.N_POPULATIONS.value):
                    m.d.sync += n_pops.eq(Mux(wdata > cfg.n_populations, cfg.n_populations, wdata))
                with m.Case(ConfigWord.CONTROL.value):
                    m.d.comb += clear_spikes.eq(wdata[0])
        status = {
            StatusWord.EVENTS_REFUSED: cnt_events_refused,
            StatusWord.BUS_REFUSED: cnt_bus_refused,
            StatusWord.PARAM_ERRORS: cnt_param,
            StatusWord.STEPS: cnt_steps,
            StatusWord.LAST_STEP_CYCLES: step_cycles,
            StatusWord.CAP_NEURONS: cfg.n_neurons,
            StatusWord.CAP_INPUTS: cfg.n_inputs,
            StatusWord.CAP_POPULATIONS: cfg.n_populations,
            StatusWord.CAP_SYNAPSE_WORDS: cfg.synapse_words,
            StatusWord.CAP_SEGMENTS: cfg.segments,
            StatusWord.LANES: cfg.lanes,
        }
        config_words = {
            ConfigWord.N_INPUTS: n_inputs,
            ConfigWord.N_POPULATIONS: n_pops,
            ConfigWord.CONTROL: 0,
        }
        with m.If(b_re):
            m.d.sync += rd_reg.eq(0)
            with m.If(region == Region.STATUS.value):
                with m.Switch(offset):
                    for word, value in status.items():
                        with m.Case(word.value):
                            m.d.sync += rd_reg.eq(value)
            with m.If(region == Region.CONFIG.value):
                with m.Switch(offset):
                    for word, value in config_words.items():
                        with m.Case(word.value):
                            m.d.sync += rd_reg.eq(value)

        def sext(value, bits):
            return value[:bits].as_signed()

        rdata = Signal(BUS_DATA_BITS)
        with m.Switch(rd_region):
            with m.Case(Region.CONFIG.value, Region.STATUS.value):
                m.d.comb += rdata.eq(rd_reg)
            with m.Case(Region.POP.value):
                m.d.comb += rdata.eq(Array(rd.data for _, rd, _ in pop_ports)[rd_word])
            with m.Case(Region.V.value):
                m.d.comb += rdata.eq(sext(v_rd.data, sb))
            with m.Case(Region.I.value):
                m.d.comb += rdata.eq(sext(i_rd.data, sb))
            with m.Case(Region.ACC.value):
                m.d.comb += rdata.eq(sext(acc_rd.data, fmt.acc_bits))
            with m.Case(Region.THR.value):
                m.d.comb += rdata.eq(thr_rd.data)
            with m.Case(Region.BIAS.value):
                m.d.comb += rdata.eq(sext(bias_rd.data, fmt.bias_bits))
            with m.Case(Region.SRC.value):
                m.d.comb += rdata.eq(
                    Cat(
                        src_rd.data[: cfg.segment_bits],
                        Const(0, 16 - cfg.segment_bits),
                        src_rd.data[cfg.segment_bits :],
                    )
                )
            with m.Case(Region.SEG.value):
                m.d.comb += rdata.eq(
                    Mux(
                        rd_odd,
                        segw_rd.data,
                        Cat(
                            segt_rd.data[:nb],
                            Const(0, 16 - nb),
                            segt_rd.data[nb : nb + cfg.length_bits],
                        ),
                    )
                )
            with m.Case(Region.WEIGHT.value):
                m.d.comb += rdata.eq(w_rd.data)
        m.d.sync += bus.r_data.eq(Mux(r_stage2 & rd_ok, rdata, 0))

        # --- sequencer ---------------------------------------------------------------------------
        param_err_r = Signal()
        m.d.sync += param_err_r.eq(param_err)
        with m.If(param_err_r):
            m.d.sync += cnt_param.eq(cnt_param + 1)
        event_refused_r = Signal()
        m.d.sync += event_refused_r.eq(event_refused)
        with m.If(event_refused_r):
            m.d.sync += cnt_events_refused.eq(cnt_events_refused + 1)
        with m.If(clear_spikes):
            m.d.sync += cnt_prev.eq(0)
        with m.If(in_step & ~self.done):
            m.d.sync += step_cycles.eq(step_cycles + 1)

        opts = pop_opts
        leak = opts[1:3]
        reset = opts[3:5]
        cuba = opts[0] == NeuronModel.CUBA.value
        one = fmt.decay_one
        k_lo, k_hi = fmt.shift_range

        def decay_ok(code):
            return (
                (leak == LeakMode.NONE.value)
                | ((leak == LeakMode.MULT.value) & (code <= one))
                | ((leak == LeakMode.SHIFT.value) & (code >= k_lo) & (code <= k_hi))
            )

        pop_ok = (
            (pop_size != 0)
            & (pop_base + pop_size <= N)
            & (leak != 3)
            & (reset != 3)
            & decay_ok(pop_beta)
            & (~cuba | decay_ok(pop_alpha))
        )
        for _, rd, _ in pop_ports:
            m.d.comb += rd.en.eq(1)

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.events.valid & fo_ready & ~b_pend):
                    m.d.comb += self.events.ready.eq(1)
                    with m.If(self.events.payload < n_inputs):
                        m.d.comb += [fo_start.eq(1), fo_src.eq(self.events.payload)]
                    with m.Else():
                        m.d.comb += event_refused.eq(1)
                with m.Elif(step_pending & fo_idle & ~pipe_busy & ~b_pend):
                    m.d.sync += [
                        step_pending.eq(self.step),
                        in_step.eq(1),
                        step_cycles.eq(1),
                        walk_bank.eq(prev),
                        walk_k.eq(0),
                        walk_end.eq(cnt_prev),
                        walk_emit.eq(0),
                        walk_fanout.eq(1),
                        walk_rec.eq(1),
                        cnt_cur.eq(0),
                        cnt_rec.eq(0),
                        pop_idx.eq(0),
                    ]
                    m.d.comb += walk_start.eq(1)
                    m.next = "RECURRENT"
                with m.Elif(fo_idle & ~pipe_busy):
                    m.d.comb += bus_ok.eq(1)
            with m.State("RECURRENT"):
                with m.If(walk_idle & fo_idle):
                    m.next = "POP"
            with m.State("POP"):
                with m.If(pop_idx == n_pops):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "POP_LOAD"
            with m.State("POP_LOAD"):
                # the table's words for pop_idx arrive on the read ports
                m.next = "POP_VALIDATE"
            with m.State("POP_VALIDATE"):
                m.d.sync += pop_ok_r.eq(pop_ok)  # registered: the checks are long comparators
                m.next = "POP_CHECK"
            with m.State("POP_CHECK"):
                m.d.sync += [
                    sweep_n.eq(pop_base),
                    wb_n.eq(pop_base),
                    sweep_end.eq(pop_base + pop_size),
                    pop_start.eq(cnt_cur),
                ]
                with m.If(pop_ok_r):
                    m.next = "SWEEP_WAIT"
                with m.Else():
                    m.d.comb += param_err.eq(1)
                    m.d.sync += pop_idx.eq(pop_idx + 1)
                    m.next = "POP"
            with m.State("SWEEP_WAIT"):
                # forward deliveries into this population must have landed
                with m.If(fo_idle & ~pipe_busy):
                    m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.comb += sweep_issue.eq(1)
                m.d.sync += sweep_n.eq(sweep_n + 1)
                with m.If(sweep_n + 1 == sweep_end):
                    m.next = "SWEEP_DRAIN"
            with m.State("SWEEP_DRAIN"):
                with m.If(~dp_busy):
                    m.d.sync += [
                        walk_bank.eq(~prev),
                        walk_k.eq(pop_start),
                        walk_end.eq(cnt_cur),
                        walk_emit.eq((opts & int(PopFlag.OUTPUT)) != 0),
                        walk_fanout.eq((opts & int(PopFlag.FORWARD)) != 0),
                        walk_rec.eq(0),
                    ]
                    with m.If((opts & int(PopFlag.OUTPUT | PopFlag.FORWARD)) != 0):
                        m.d.comb += walk_start.eq(1)
                    m.next = "WALK"
            with m.State("WALK"):
                with m.If(walk_idle & fo_idle):
                    m.d.sync += pop_idx.eq(pop_idx + 1)
                    m.next = "POP"
            with m.State("FINISH"):
                with m.If(fo_idle & ~pipe_busy):
                    m.d.sync += [
                        prev.eq(~prev),
                        cnt_prev.eq(cnt_rec),
                        in_step.eq(0),
                        cnt_steps.eq(cnt_steps + 1),
                    ]
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"

        # sweep addresses the state memories (the bus has them only when idle)
        with m.If(iss_q):
            m.d.comb += [
                v_rd.addr.eq(iss_n),
                i_rd.addr.eq(iss_n),
                acc_rd.addr.eq(iss_n),
                thr_rd.addr.eq(iss_n),
                bias_rd.addr.eq(iss_n),
            ]
        with m.Elif(w1_valid):
            m.d.comb += acc_rd.addr.eq(w1_tgt)
        return m
