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
    BITMAP_BITS,
    DESC_WORDS,
    EVENT_BITS,
    LIST_BITS,
    POP_WORDS,
    REGION_SHIFT,
    ConfigWord,
    CoreConfig,
    DescWord,
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
        Put the small population and descriptor tables in block RAM (``ram_style = "block"``)
        instead of leaving the choice to synthesis.  On the iCE40, which has no LUT RAM, Yosys
        builds memories that small from flip-flops and multiplexers (hundreds of logic cells);
        a block RAM is cheaper.  ``None`` (default): only when the
        platform is an iCE40.
    weight_banks : int
        Split the weight memory into this many banks whose outputs are registered before they
        are multiplexed (a large ECP5 weight memory is a cascade of ~200 block RAMs; its output
        multiplexer is the slowest path otherwise).  More than 1 costs one more clock of latency
        in the accumulation pipeline and on every bus read; the results are the same.
    fast : bool
        The fast build (``docs/core.md``, "Timing options"): every block RAM's output is
        registered before logic uses it (neuron state, accumulators, descriptor and population
        words, spike bitmap masks, the weight banks' inputs too), the sequencer decides its
        branches from registered conditions, and the bus answers a request a clock after it
        appears.  The results are the same; a few clocks more per population, per descriptor
        and per bus access, and a few hundred flip-flops: for the ECP5, not the full UP5K.

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

    def __init__(
        self,
        config: CoreConfig,
        *,
        block_ram_tables: bool | None = None,
        weight_banks: int = 1,
        fast: bool = False,
    ):
        self._MustUse__silence = True  # a refused argument is not an unused elaboratable
        if not isinstance(config, CoreConfig):
            raise TypeError(f"config must be a CoreConfig, not {config!r}")
        if block_ram_tables not in (None, True, False):
            raise TypeError(
                f"block_ram_tables must be None, True or False, not {block_ram_tables!r}"
            )
        if not isinstance(weight_banks, int) or isinstance(weight_banks, bool) or not (
            1 <= weight_banks <= 64
        ):
            raise TypeError(f"weight_banks must be an integer in 1..64, not {weight_banks!r}")
        self.config = config
        self.block_ram_tables = block_ram_tables
        if fast not in (True, False):
            raise TypeError(f"fast must be True or False, not {fast!r}")
        self.weight_banks = weight_banks
        self.fast = fast
        self._MustUse__silence = False
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
        ob = cfg.offset_bits
        lb = cfg.length_bits
        slb = cfg.slot_bits
        db = cfg.desc_bits
        W = cfg.bitmap_words
        wbits = (W - 1).bit_length()  # W is a power of two
        L = cfg.lanes
        lg = cfg.lane_bits
        NB = N // L  # neurons per bank
        gbits = max(1, (NB - 1).bit_length())  # a neuron group (bank address)
        lanes = range(L)

        # --- memories -------------------------------------------------------------------------
        block_tables = self.block_ram_tables
        if block_tables is None:
            block_tables = str(getattr(platform, "family", "")).lower() == "ice40"
        table_attrs = {"ram_style": "block"} if block_tables else None

        def memory(name, width, depth, attrs=None):
            mem = Memory(shape=unsigned(width), depth=depth, init=[], attrs=attrs)
            m.submodules[name] = mem
            return mem, mem.read_port(), mem.write_port()


        def banked(name, width, attrs=None):
            """One memory per lane (bank ``l`` holds the neurons ``n % lanes == l``)."""
            ports = [memory(name + (f"{l}" if L > 1 else ""), width, NB, attrs) for l in lanes]
            return [rd for _, rd, _ in ports], [wr for _, _, wr in ports]

        v_rd, v_wr = banked("v_mem", sb)
        i_rd, i_wr = banked("i_mem", sb)
        acc_rd, acc_wr = banked("acc_mem", fmt.acc_bits)
        if cfg.per_neuron_threshold:
            thr_rd, thr_wr = banked("thr_mem", fmt.threshold_bits)
        bias_rd, bias_wr = banked("bias_mem", fmt.bias_bits)
        # the population table: POP_WORDS 16-bit words per population, loaded into registers
        # (p_*) before a population is run
        _, pop_rd, pop_wr = memory("pop_mem", 16, POP_WORDS * cfg.n_populations, table_attrs)
        # fan-out block descriptors: DESC_WORDS 32-bit words each, read one by one
        _, desc_rd, desc_wr = memory("desc_mem", 32, DESC_WORDS * cfg.descriptors, table_attrs)
        # the fast build's copy of the word read a clock earlier (no enable: a flop next to the
        # block RAM); the descriptor engine and bus reads use it
        desc_q = Signal(32)
        if self.fast:
            m.d.sync += desc_q.eq(desc_rd.data)
        # the weight memory, behind w_addr / w_we / w_wdata; its word w_data arrives one clock
        # after the address (two with banks)
        words = cfg.synapse_words
        w_addr = Signal(range(words))
        w_we = Signal()
        w_wdata = Signal(cfg.word_bits)
        banked = self.weight_banks > 1
        if not banked:
            # one address for both ports, so the memory maps to single-port RAM (iCE40 SPRAM)
            _, w_rd, w_wr = memory("w_mem", cfg.word_bits, words)
            m.d.comb += [
                w_rd.addr.eq(w_addr),
                w_wr.addr.eq(w_addr),
                w_wr.data.eq(w_wdata),
                w_wr.en.eq(w_we),
                w_rd.en.eq(~w_we),  # read data holds during a write (SPRAM's "no change")
            ]
            w_data = w_rd.data
        else:
            bank_depth = 1 << max(0, (-(-words // self.weight_banks) - 1).bit_length())
            dbits = (bank_depth - 1).bit_length()
            bsel = Signal(range(-(-words // bank_depth)))
            # the fast build also registers the banks' inputs: the address
            # once, the write enables per bank (no logic between a flop and ~200 far-apart
            # block RAMs), one more clock of latency
            in_reg = self.fast
            bsel_d = [Signal.like(bsel, name=f"bsel_q{k}") for k in range(2 + in_reg)]
            m.d.comb += bsel.eq(w_addr >> dbits)
            m.d.sync += [bsel_d[0].eq(bsel)] + [
                bsel_d[k + 1].eq(bsel_d[k]) for k in range(len(bsel_d) - 1)
            ]
            bank_addr, bank_data = w_addr[:dbits], w_wdata
            if in_reg:
                bank_addr, bank_data = Signal(dbits), Signal(cfg.word_bits)
                m.d.sync += [bank_addr.eq(w_addr[:dbits]), bank_data.eq(w_wdata)]
            w_regs = []
            for b in range(len(range(-(-words // bank_depth)))):
                depth = min(bank_depth, words - b * bank_depth)
                _, rd, wr = memory(f"w_mem{b}", cfg.word_bits, depth)
                we = w_we & (bsel == b)
                if in_reg:
                    we_q = Signal(name=f"w_we{b}")
                    m.d.sync += we_q.eq(we)
                    we = we_q
                m.d.comb += [
                    rd.addr.eq(bank_addr),
                    wr.addr.eq(bank_addr),
                    wr.data.eq(bank_data),
                    wr.en.eq(we),
                    # the banks' outputs are registered and picked by address: a bank reads
                    # every clock (no enable to route) in the fast build
                    rd.en.eq(1 if in_reg else ~w_we),
                ]
                q = Signal(cfg.word_bits, name=f"w_q{b}")
                m.d.sync += q.eq(rd.data)
                w_regs.append(q)
            w_data = Array(w_regs)[bsel_d[-1]]
        # spike bitmaps, two banks (this step's spikes, last step's spikes), 16 neurons a word
        _, bm_rd, bm_wr = memory("bm_mem", BITMAP_BITS, 2 * W)

        # --- registers ------------------------------------------------------------------------
        n_inputs = Signal(16, init=cfg.n_inputs)
        n_pops = Signal(range(cfg.n_populations + 1), init=0)
        input_list = Signal(16)
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

        # bitmap bank `prev` holds last step's spikes, the step writes bank ~prev; prev_valid is
        # cleared by CONTROL (forget pending recurrent spikes).  cur_any / rec_any: population p
        # spiked this step / last step (a walk of a population without spikes is skipped).
        prev = Signal()
        prev_valid = Signal()
        cur_any = Signal(cfg.n_populations)
        rec_any = Signal(cfg.n_populations)

        # the population being run, loaded from the population table
        pop_idx = Signal(range(cfg.n_populations + 1))
        p_base = Signal(16)
        p_size = Signal(16)
        p_opts = Signal(9)
        p_beta = Signal(16)
        p_alpha = Signal(16)
        p_fwd = Signal(16)
        p_rec = Signal(16)
        p_thr = Signal(16)
        p_words = {
            PopWord.BASE: p_base,
            PopWord.SIZE: p_size,
            PopWord.OPTIONS: p_opts,
            PopWord.BETA: p_beta,
            PopWord.ALPHA: p_alpha,
            PopWord.FORWARD: p_fwd,
            PopWord.RECURRENT: p_rec,
            PopWord.THRESHOLD: p_thr,
        }
        pop_ok_r = Signal()
        phase_rec = Signal()  # the step's first phase: recurrent walks of last step's spikes

        # --- neuron datapaths, one per lane ----------------------------------------------------
        # The datapaths' results come out in the order the sweep issued the neuron groups, so
        # the write-back address is a counter (wb_g) instead of a tag carried through them.
        dps = []
        for l in lanes:
            dp = NeuronDatapath(fmt, tag_bits=1)
            m.submodules[f"dp{l}" if L > 1 else "dp"] = dp
            dps.append(dp)
            m.d.comb += [
                dp.model.eq(p_opts[0:1]),
                dp.leak.eq(p_opts[1:3]),
                dp.reset.eq(p_opts[3:5]),
                dp.reset_delay.eq(p_opts[5]),
                dp.beta.eq(p_beta),
                dp.alpha.eq(p_alpha),
            ]
            state_in = [
                (dp.i_v, v_rd[l].data),
                (dp.i_i, i_rd[l].data),
                (dp.i_acc, acc_rd[l].data),
                (dp.i_thr, thr_rd[l].data if cfg.per_neuron_threshold else p_thr),
                (dp.i_bias, bias_rd[l].data),
            ]
            domain = m.d.sync if self.fast else m.d.comb
            domain += [port.eq(data) for port, data in state_in]
        sweep_issue = Signal()  # present neuron group `sweep_g` to the state memories
        sweep_g = Signal(gbits)
        sweep_left = Signal(16)  # groups left to issue, and a registered "this is the last"
        sweep_last = Signal()
        sweep_first = Signal()
        sweep_fmask = Signal(L)  # lanes of the population's first and last group
        sweep_lmask = Signal(L)
        sweep_mask = Signal(L)
        if L == 1:  # one lane: every issued neuron is in the population
            m.d.comb += sweep_mask.eq(1)
        else:
            m.d.comb += sweep_mask.eq(
                Mux(sweep_first, sweep_fmask, -1) & Mux(sweep_last, sweep_lmask, -1)
            )
        wb_g = Signal(gbits)  # the group dps[*].o_* belong to
        # the sweep's request is registered before it addresses the state memories (instead of
        # registering their output); the datapaths see the data the cycle after
        iss_q = Signal()
        iss_g = Signal(gbits)
        iss_mask = Signal(L)
        m.d.sync += [iss_q.eq(sweep_issue), iss_g.eq(sweep_g), iss_mask.eq(sweep_mask)]
        o_valid = Signal(L)
        o_spike = Signal(L)
        for l, dp in enumerate(dps):
            if self.fast:  # the data is a clock later
                valid_q = Signal(name=f"dp{l}_valid_q")
                m.d.sync += [valid_q.eq(iss_q & iss_mask[l]), dp.i_valid.eq(valid_q)]
            else:
                m.d.sync += dp.i_valid.eq(iss_q & iss_mask[l])
            m.d.comb += [o_valid[l].eq(dp.o_valid), o_spike[l].eq(dp.o_valid & dp.o_spike)]
        # every issued group has a lane in the population, and the lanes run in lockstep
        o_group = o_valid.any()
        with m.If(o_group):
            m.d.sync += wb_g.eq(wb_g + 1)
        thr_max = fmt.threshold_range[1]
        for dp in dps:
            with m.If(dp.i_valid & ((dp.i_thr == 0) | (dp.i_thr > thr_max))):
                m.d.comb += param_err.eq(1)  # counted once a clock, however many lanes

        # --- accumulation pipelines, one per lane: read acc, add weight, write acc ------------
        # All lanes of an operation group share the accumulator address (the group) and the
        # weight word; lane l takes weight l of the word (one lane: the slot's half).
        op_valid = Signal()
        op_mask = Signal(L)
        op_tg = Signal(gbits)
        op_slot = Signal(slb)
        wb = fmt.weight_bits
        w1_valid, w1_tg, w1_half = Signal(L), Signal(gbits), Signal()
        s1_valid, s1_tg = Signal(L), Signal(gbits)
        s2_valid, s2_tg = Signal(L), Signal(gbits)
        s3_valid, s3_tg = Signal(L), Signal(gbits)
        s1_w = [Signal(signed(wb), name=f"s1_w{l}") for l in lanes]
        s2_sum = [Signal(fmt.acc_bits, name=f"s2_sum{l}") for l in lanes]
        s3_sum = [Signal(fmt.acc_bits, name=f"s3_sum{l}") for l in lanes]
        # W: the weight word arrives and is registered (the weight memory is large: on ECP5 a
        # cascade of block RAMs, on iCE40 SPRAM); the accumulators are read for this group.
        # With weight banks the word arrives a clock later: one more stage (w2) before W.
        m.d.sync += [
            w1_valid.eq(Mux(op_valid, op_mask, 0)),
            w1_tg.eq(op_tg),
            w1_half.eq(op_slot[0]),
        ]
        if banked:
            w2_valid, w2_tg, w2_half = Signal(L), Signal(gbits), Signal()
            m.d.sync += [w2_valid.eq(w1_valid), w2_tg.eq(w1_tg), w2_half.eq(w1_half)]
            wv, wtg, whalf = w2_valid, w2_tg, w2_half
            if self.fast:  # registered bank inputs: one more clock
                w3_valid, w3_tg, w3_half = Signal(L), Signal(gbits), Signal()
                m.d.sync += [w3_valid.eq(w2_valid), w3_tg.eq(w2_tg), w3_half.eq(w2_half)]
                wv, wtg, whalf = w3_valid, w3_tg, w3_half
        else:
            wv, wtg, whalf = w1_valid, w1_tg, w1_half
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_tg.eq(s1_tg),
            s3_valid.eq(s2_valid),
            s3_tg.eq(s2_tg),
        ]
        if not self.fast:
            # S1: the accumulator word arrives; forwarded from S2 / S3 (read-after-write at
            # distance 1 / 2), added, written at S2
            m.d.sync += [s1_valid.eq(wv), s1_tg.eq(wtg)]
            for l in lanes:
                if L == 1:
                    weight = Mux(whalf, w_data[wb : 2 * wb], w_data[:wb])
                else:
                    weight = w_data[l * wb : (l + 1) * wb]
                acc_now = Mux(
                    s2_valid[l] & (s2_tg == s1_tg),
                    s2_sum[l],
                    Mux(s3_valid[l] & (s3_tg == s1_tg), s3_sum[l], acc_rd[l].data),
                )
                m.d.sync += [
                    s1_w[l].eq(weight),
                    s2_sum[l].eq(acc_now.as_signed() + s1_w[l]),
                    s3_sum[l].eq(s2_sum[l]),
                ]
            pipe_busy = op_valid | w1_valid.any() | wv.any() | s1_valid.any() | s2_valid.any()
        else:
            # The fast build registers the accumulator word (R: dps[l].i_acc, the register
            # the sweep uses too) before S1 adds it, so a read sees writes up to distance 3:
            # forwarded from S2 / S3 / S4, selected by flags compared and registered at R.
            r_valid, r_tg = Signal(L), Signal(gbits)
            s4_valid, s4_tg = Signal(L), Signal(gbits)
            s4_sum = [Signal(fmt.acc_bits, name=f"s4_sum{l}") for l in lanes]
            r_w = [Signal(signed(wb), name=f"r_w{l}") for l in lanes]
            fwd = [[Signal(name=f"fwd{k}_{l}") for l in lanes] for k in (1, 2, 3)]
            near = [s1_tg == r_tg, s2_tg == r_tg, s3_tg == r_tg]
            m.d.sync += [
                r_valid.eq(wv),
                r_tg.eq(wtg),
                s1_valid.eq(r_valid),
                s1_tg.eq(r_tg),
                s4_valid.eq(s3_valid),
                s4_tg.eq(s3_tg),
            ]
            for l in lanes:
                if L == 1:
                    weight = Mux(whalf, w_data[wb : 2 * wb], w_data[:wb])
                else:
                    weight = w_data[l * wb : (l + 1) * wb]
                ahead = [s1_valid[l], s2_valid[l], s3_valid[l]]
                m.d.sync += [fwd[k][l].eq(ahead[k] & near[k]) for k in range(3)]
                acc_now = Mux(
                    fwd[0][l],
                    s2_sum[l],
                    Mux(fwd[1][l], s3_sum[l], Mux(fwd[2][l], s4_sum[l], dps[l].i_acc)),
                )
                m.d.sync += [
                    r_w[l].eq(weight),
                    s1_w[l].eq(r_w[l]),
                    s2_sum[l].eq(acc_now.as_signed() + s1_w[l]),
                    s3_sum[l].eq(s2_sum[l]),
                    s4_sum[l].eq(s3_sum[l]),
                ]
            pipe_busy = (
                op_valid
                | w1_valid.any()
                | (w2_valid.any() if banked else 0)
                | wv.any()
                | r_valid.any()
                | s1_valid.any()
                | s2_valid.any()
            )
        m.d.comb += w_addr.eq(op_slot >> (cfg.weights_per_word.bit_length() - 1))

        # --- op issuer: one operation group (``lanes`` synapses) per clock ---------------------
        # A segment (first group, groups, slot of the first group's lane 0, lane masks of the
        # first and last group) waits in `nxt` while the current one runs, so the segments of
        # consecutive descriptors follow each other without a bubble.
        nxt_valid = Signal()
        nxt_tg, nxt_w, nxt_n = Signal(gbits), Signal(slb), Signal(lb)
        nxt_fmask, nxt_lmask = Signal(L), Signal(L)
        op_active = Signal()
        cur_tg, cur_w, remaining = Signal(gbits), Signal(slb), Signal(lb)
        cur_first, cur_fmask, cur_lmask = Signal(), Signal(L), Signal(L)
        rem_last = Signal()  # registered remaining == 1
        take = nxt_valid & (~op_active | rem_last)
        m.d.comb += [
            op_valid.eq(op_active),
            op_tg.eq(cur_tg),
            op_slot.eq(cur_w),
            op_mask.eq(
                1 if L == 1 else Mux(cur_first, cur_fmask, -1) & Mux(rem_last, cur_lmask, -1)
            ),
        ]
        with m.If(op_active):
            m.d.sync += [
                cur_tg.eq(cur_tg + 1),
                cur_w.eq(cur_w + L),
                remaining.eq(remaining - 1),
                rem_last.eq(remaining == 2),
                cur_first.eq(0),
            ]
            with m.If(rem_last):
                m.d.sync += op_active.eq(0)
        with m.If(take):
            m.d.sync += [
                cur_tg.eq(nxt_tg),
                cur_w.eq(nxt_w),
                remaining.eq(nxt_n),
                rem_last.eq(nxt_n == 1),
                cur_first.eq(1),
                cur_fmask.eq(nxt_fmask),
                cur_lmask.eq(nxt_lmask),
                op_active.eq(1),
                nxt_valid.eq(0),
            ]

        # --- descriptor engine: a source (group list, offset) -> its blocks' segments ---------
        # Sources wait in a one-entry register (src_q) that the engine takes when idle: the
        # producers (the event stream, the walker) see only the register's flag, not the
        # engine's state.
        g_take = Signal()  # a producer hands over a source this cycle (only while g_ready)
        g_ready = Signal()
        g_in_o = Signal(ob)
        g_in_list = Signal(16)
        src_q = Signal()
        src_q_o = Signal(ob)
        src_q_list = Signal(16)
        m.d.comb += g_ready.eq(~src_q)
        with m.If(g_take):
            m.d.sync += [src_q.eq(1), src_q_o.eq(g_in_o), src_q_list.eq(g_in_list)]
        g_idle = Signal()
        g_o = Signal(ob)
        g_d = Signal(db + 1)
        g_left = Signal(LIST_BITS + 1)
        g_last = Signal()  # registered g_left == 1
        g_diff = Signal(ob)
        g_in = Signal()  # the source is one of the block's rows
        g_stride = Signal(16)
        g_ok = Signal()  # the block is valid: 1 <= length, target + length <= n_neurons
        g_tg, g_n = Signal(gbits), Signal(lb)  # first group, groups
        g_tmod = Signal(max(lg, 1))  # target % lanes
        g_fmask, g_lmask = Signal(L), Signal(L)
        g_slot = Signal(slb)  # slot of lane 0 of the first group
        g_prod = Signal(slb)
        m.d.comb += desc_rd.en.eq(1)

        def desc_addr(word):
            m.d.comb += desc_rd.addr.eq(Cat(Const(word.value, 2), g_d))

        def next_descriptor():
            m.d.sync += [g_d.eq(g_d + 1), g_left.eq(g_left - 1), g_last.eq(g_left == 2)]
            with m.If(g_last):
                m.next = "IDLE"
            with m.Else():
                m.next = "A0"

        with m.FSM(name="desc"):
            with m.State("IDLE"):
                m.d.comb += g_idle.eq(1)
                with m.If(src_q):
                    count = src_q_list[LIST_BITS : 2 * LIST_BITS]
                    m.d.sync += [
                        src_q.eq(0),
                        g_o.eq(src_q_o),
                        g_d.eq(src_q_list[:LIST_BITS]),
                        g_left.eq(count),
                        g_last.eq(count == 1),
                    ]
                    with m.If(count != 0):
                        m.next = "A0"
            # In the fast build the descriptor words are used from desc_q, the register every
            # word goes into a clock after it is read, so no comparison or sum starts at a block
            # RAM's output; otherwise (the small build) the words are used as they arrive.
            fast = self.fast

            def block_fields(tgt, length):
                m.d.sync += [
                    g_ok.eq((length != 0) & (tgt + length <= N)),
                    g_prod.eq(g_diff * g_stride),
                ]
                if L == 1:
                    m.d.sync += [g_tg.eq(tgt), g_n.eq(length)]
                else:
                    tmod = tgt[:lg]
                    last_lane = (tmod + length - 1)[:lg]
                    m.d.sync += [
                        g_tmod.eq(tmod),
                        g_tg.eq(tgt >> lg),
                        g_n.eq((length + tmod + L - 1) >> lg),
                        g_fmask.eq((Const((1 << L) - 1, L) << tmod)[:L]),
                        g_lmask.eq(Const((1 << L) - 1, L) >> (~last_lane)[:lg]),
                    ]

            def rows(word):
                first, count = word[:16], word[16:]
                diff = g_o - first
                m.d.sync += [g_diff.eq(diff), g_in.eq((g_o >= first) & (diff < count))]

            with m.State("A0"):
                desc_addr(DescWord.SOURCES)
                m.next = "A1"
            with m.State("A1"):
                desc_addr(DescWord.STRIDE)
                if not fast:
                    rows(desc_rd.data)
                m.next = "A2"
            with m.State("A2"):
                desc_addr(DescWord.TARGET)
                if fast:
                    rows(desc_q)  # SOURCES
                    m.next = "A3"
                else:
                    m.d.sync += g_stride.eq(desc_rd.data)
                    with m.If(g_in):
                        m.next = "A3"
                    with m.Else():
                        next_descriptor()  # the source is not one of this block's rows
            with m.State("A3"):
                desc_addr(DescWord.SLOT)
                if fast:
                    m.d.sync += g_stride.eq(desc_q)  # STRIDE
                    with m.If(g_in):
                        m.next = "A4"
                    with m.Else():
                        next_descriptor()
                else:
                    block_fields(desc_rd.data[:16], desc_rd.data[16:])
                    m.next = "A4"
            with m.State("A4"):
                if fast:
                    desc_addr(DescWord.SLOT)  # (and in PUSH: desc_q holds SLOT until then)
                    block_fields(desc_q[:16], desc_q[16:])  # TARGET
                else:
                    m.d.sync += g_slot.eq(desc_rd.data - (g_tmod if L > 1 else 0))
                m.next = "PUSH"
            with m.State("PUSH"):
                if fast:
                    desc_addr(DescWord.SLOT)
                    slot = desc_q - g_tmod if L > 1 else desc_q
                else:
                    slot = g_slot
                with m.If(~g_ok):
                    m.d.comb += param_err.eq(1)
                    next_descriptor()
                with m.Elif(~nxt_valid):
                    m.d.sync += [
                        nxt_valid.eq(1),
                        nxt_tg.eq(g_tg),
                        nxt_w.eq(slot + g_prod),
                        nxt_n.eq(g_n),
                        nxt_fmask.eq(g_fmask),
                        nxt_lmask.eq(g_lmask),
                    ]
                    next_descriptor()
        fo_idle = ~src_q & g_idle & ~nxt_valid & ~op_active
        # fan-out and accumulation idle, registered (off the sequencer's paths): last cycle's
        # state, and no source handed over since (work only enters through src_q)
        quiet_r = Signal()
        m.d.sync += quiet_r.eq(fo_idle & ~pipe_busy)
        drained = quiet_r & ~src_q

        # --- bitmap writer: the sweep's spikes into bank ~prev ----------------------------------
        # Every neuron writes its word with the bits so far (write-through), so a word shared by
        # two populations keeps the first one's bits; wr_valid is cleared at a step's start.
        wr_valid = Signal()
        wr_word = Signal(range(W))
        wr_bits = Signal(BITMAP_BITS)
        wb_n0 = Signal(nb + 1)  # the group's first neuron
        wb_word = Signal(range(W))
        m.d.comb += [wb_n0.eq(wb_g << lg), wb_word.eq(wb_n0 >> 4)]
        new_bits = Mux(wr_valid & (wr_word == wb_word), wr_bits, 0) | (
            o_spike << wb_n0[: min(4, nb)]
        )[:BITMAP_BITS]
        m.d.comb += [
            bm_wr.addr.eq(Cat(wb_word, ~prev)),
            bm_wr.data.eq(new_bits),
            bm_wr.en.eq(o_group),
        ]
        with m.If(o_group):
            m.d.sync += [wr_bits.eq(new_bits), wr_word.eq(wb_word), wr_valid.eq(1)]
            with m.If(o_spike.any()):
                m.d.sync += cur_any.bit_select(pop_idx, 1).eq(1)

        # --- spike walker: output stream and fan-out of a population's bitmap range ----------
        walk_start = Signal()
        if self.fast:
            m.d.sync += walk_start.eq(0)  # a pulse (start_walk sets it)
        walk_idle = Signal()
        wk_bank = Signal()
        wk_lo = Signal(nb)  # first neuron
        wk_hi = Signal(nb + 1)  # one past the last neuron (the fast build: the last neuron)
        wk_emit = Signal()
        wk_fanout = Signal()
        wk_list = Signal(16)
        wk_word = Signal(range(W + 1))
        wk_first = Signal(range(W))  # word of wk_lo
        wk_last = Signal(range(W))  # word of wk_hi - 1
        wk_bits = Signal(BITMAP_BITS)
        wk_at_last = Signal()  # registered wk_word == wk_last
        m.d.comb += [bm_rd.addr.eq(Cat(wk_word[:wbits], wk_bank)), bm_rd.en.eq(0)]

        # masks of the range's first and last word and "the next word is the last", registered
        # (the walk's per-word decisions start at flops)
        lo_mask = Signal(BITMAP_BITS)
        hi_mask = Signal(BITMAP_BITS)
        first_is_last = Signal()
        wk_nx_last = Signal()
        ones = Const(0xFFFF, 16)
        # the fast build keeps the mask of the next word to arrive in one register (in_mask),
        # so a bitmap word passes one AND between the block RAM and wk_bits
        fast_walk = self.fast
        in_mask = Signal(BITMAP_BITS)

        # The scan puts each spike (the lowest set bit) into an output register (out_*), which
        # the spike stream and the fan-out hand-over take from: their handshakes start at flops
        # and do not reach into the scan.  One spike per two clocks at most, well above what
        # the fan-out of a spike takes.
        out_valid = Signal()
        out_n = Signal(nb)
        out_sent = Signal()
        ctz = Signal(4)
        for k in reversed(range(BITMAP_BITS)):
            with m.If(wk_bits[k]):
                m.d.comb += ctz.eq(k)
        wk_has = wk_bits.any()
        with m.FSM(name="walker"):
            with m.State("IDLE"):
                m.d.comb += walk_idle.eq(~out_valid)
                with m.If(walk_start):
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                hi_n = Signal.like(wk_hi)
                hi_bit = Signal(4)  # zero-extended when neuron_bits < 4
                # (the fast build stored the last neuron itself: no subtraction here)
                m.d.comb += [hi_n.eq(wk_hi if fast_walk else wk_hi - 1), hi_bit.eq(hi_n)]
                m.d.sync += [
                    wk_first.eq(wk_lo >> 4),
                    wk_last.eq(hi_n >> 4),
                    lo_mask.eq((ones << wk_lo[: min(4, nb)])[:16]),
                    hi_mask.eq(ones >> ~hi_bit),
                    first_is_last.eq((wk_lo >> 4) == (hi_n >> 4)),
                ]
                if fast_walk:
                    m.next = "MASK"
                else:
                    m.d.comb += bm_rd.en.eq(1)
                    m.next = "FIRST"
            if fast_walk:
                with m.State("MASK"):  # the first word's mask, from the registered masks
                    m.d.sync += in_mask.eq(lo_mask & Mux(first_is_last, hi_mask, ones))
                    m.d.comb += bm_rd.en.eq(1)
                    m.next = "FIRST"
            with m.State("FIRST"):
                m.d.sync += [
                    wk_bits.eq(
                        bm_rd.data & in_mask
                        if fast_walk
                        else bm_rd.data & lo_mask & Mux(first_is_last, hi_mask, ones)
                    ),
                    wk_at_last.eq(first_is_last),
                    wk_nx_last.eq(wk_first + 1 == wk_last),
                ]
                if fast_walk:
                    m.d.sync += in_mask.eq(Mux(wk_first + 1 == wk_last, hi_mask, ones))
                m.d.comb += [bm_rd.en.eq(1), bm_rd.addr.eq(Cat((wk_word + 1)[:wbits], wk_bank))]
                m.next = "SCAN"
            with m.State("SCAN"):
                with m.If(~wk_has):
                    with m.If(wk_at_last):
                        m.next = "IDLE"
                    with m.Else():
                        # the next word is on the read port: take it, fetch the one after
                        m.d.sync += [
                            wk_word.eq(wk_word + 1),
                            wk_at_last.eq(wk_nx_last),
                            wk_nx_last.eq(wk_word + 2 == wk_last),
                        ]
                        if fast_walk:
                            m.d.sync += [
                                wk_bits.eq(bm_rd.data & in_mask),
                                in_mask.eq(Mux(wk_word + 2 == wk_last, hi_mask, ones)),
                            ]
                        else:
                            m.d.sync += wk_bits.eq(bm_rd.data & Mux(wk_nx_last, hi_mask, ones))
                        m.d.comb += [
                            bm_rd.en.eq(1),
                            bm_rd.addr.eq(Cat((wk_word + 2)[:wbits], wk_bank)),
                        ]
                with m.Elif(~out_valid):
                    m.d.sync += [
                        out_valid.eq(1),
                        out_sent.eq(0),
                        out_n.eq(Cat(ctz, wk_word)),
                        wk_bits.eq(wk_bits & (wk_bits - 1)),
                    ]

        # the output register: emit the spike (output populations), hand it to the fan-out
        m.d.comb += [
            self.spikes.valid.eq(out_valid & wk_emit & ~out_sent),
            self.spikes.payload.eq(out_n),
        ]
        emitted = ~wk_emit | out_sent | self.spikes.ready
        with m.If(out_valid):
            with m.If(emitted & (~wk_fanout | g_ready)):
                m.d.comb += [
                    g_take.eq(wk_fanout),
                    g_in_o.eq(out_n - wk_lo),
                    g_in_list.eq(wk_list),
                ]
                m.d.sync += out_valid.eq(0)
            with m.Elif(emitted):
                m.d.sync += out_sent.eq(1)

        # --- datapath write-back ------------------------------------------------------------
        for l, dp in enumerate(dps):
            m.d.comb += [
                v_wr[l].addr.eq(wb_g),
                v_wr[l].data.eq(dp.o_v),
                v_wr[l].en.eq(dp.o_valid),
                i_wr[l].addr.eq(wb_g),
                i_wr[l].data.eq(dp.o_i),
                i_wr[l].en.eq(dp.o_valid),
            ]
            # accumulator ports: the sweep clears, else the accumulation pipeline (or the bus)
            with m.If(dp.o_valid):
                m.d.comb += [acc_wr[l].addr.eq(wb_g), acc_wr[l].data.eq(0), acc_wr[l].en.eq(1)]
            with m.Else():
                m.d.comb += [
                    acc_wr[l].addr.eq(s2_tg),
                    acc_wr[l].data.eq(s2_sum[l]),
                    acc_wr[l].en.eq(s2_valid[l]),
                ]
        dp_busy = Signal()
        # issue -> address -> (registered) data -> ...
        dp_flight = Signal(NeuronDatapath.LATENCY + 2 + int(self.fast))
        m.d.sync += [
            dp_flight.eq(Cat(sweep_issue, dp_flight[:-1])),
            dp_busy.eq(sweep_issue | dp_flight[:-1].any()),  # == dp_flight.any(), registered
        ]
        state_rd = v_rd + i_rd + bias_rd + (thr_rd if cfg.per_neuron_threshold else [])
        for port in state_rd + acc_rd:
            m.d.comb += port.en.eq(1)

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
        ready = bus_ok
        if self.fast:
            # the fast build decodes a request in the clock it appears and answers it in the
            # next (the master holds a request until it is taken): no path from the master's
            # address through the range comparators back to the master
            seen = Signal()  # the request has been on the bus for a clock: its decode is ready
            in_range_q, writable_q = Signal(), Signal()
            m.d.sync += [
                in_range_q.eq(in_range),
                writable_q.eq(writable),
                seen.eq((bus.r_en | bus.w_en) & ~bus.ready),
            ]
            ready = bus_ok & seen
            in_range, writable = in_range_q, writable_q
        m.d.comb += [
            bus.ready.eq(ready),
            bus.error.eq(ready & (bus.r_en | bus.w_en) & ~(in_range & (writable | ~bus.w_en))),
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
        rd_lane = Signal(max(lg, 1))
        rd_reg = Signal(32)
        rd_ok = Signal()
        r_stage2 = Signal()
        r_last = r_stage2
        # banked weights or registered state: every read takes a clock more (the last stage
        # picks the weight word or a neuron word from registers, not from a block RAM output)
        slow_read = banked or self.fast
        # banks with registered inputs (fast build): the weight word is a clock later still
        late_weights = 1 if banked and self.fast else 0
        if slow_read:
            r_stage3 = Signal()
            m.d.sync += r_stage3.eq(r_stage2)
            r_last = r_stage3
        for k in range(late_weights):
            r_more = Signal(name=f"r_stage{4 + k}")
            m.d.sync += r_more.eq(r_last)
            r_last = r_more
        m.d.sync += bus.r_valid.eq(r_last)
        m.d.sync += [
            r_stage.eq(req & bus.r_en),
            r_stage2.eq(r_stage),
            rd_region.eq(b_region),
            rd_lane.eq(b_offset[:lg] if L > 1 else 0),
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
        for reg, rd, wr in [(Region.POP, pop_rd, pop_wr), (Region.DESC, desc_rd, desc_wr)]:
            bus_port(reg, rd, wr, offset, wdata)
        # neuron regions: neuron n is word n >> lg of bank n % lanes
        b_lane = offset[:lg] if L > 1 else Const(0, 1)
        banks = [(Region.V, v_rd, v_wr), (Region.I, i_rd, i_wr), (Region.BIAS, bias_rd, bias_wr),
                 (Region.ACC, acc_rd, acc_wr)]
        if cfg.per_neuron_threshold:
            banks.append((Region.THR, thr_rd, thr_wr))
        for reg, rds, wrs in banks:
            for l in lanes:
                bus_port(reg, rds[l], None, offset >> lg, wdata)
                with m.If(b_we & (region == reg.value) & (b_lane == l)):
                    m.d.comb += [
                        wrs[l].addr.eq(offset >> lg),
                        wrs[l].data.eq(wdata),
                        wrs[l].en.eq(1),
                    ]
        with m.If(b_pend):
            m.d.comb += w_addr.eq(offset)
        with m.If(b_we & (region == Region.WEIGHT.value)):
            m.d.comb += [w_wdata.eq(wdata), w_we.eq(1)]

        def list_ok(word):
            """A descriptor list stays inside the table (checked where it is used)."""
            first, count = word[:LIST_BITS], word[LIST_BITS : 2 * LIST_BITS]
            return (count == 0) | (first + count <= cfg.descriptors)

        # registers; an input list that runs past the descriptor table is stored empty (and
        # counted), checked from the request and registered with it
        list_bad = Signal()
        m.d.sync += list_bad.eq(~list_ok(bus.w_data))
        clear_spikes = Signal()
        with m.If(b_we & (region == Region.CONFIG.value)):
            with m.Switch(offset):
                with m.Case(ConfigWord.N_INPUTS.value):
                    m.d.sync += n_inputs.eq(Mux(wdata > cfg.n_inputs, cfg.n_inputs, wdata))
                with m.Case(ConfigWord.N_POPULATIONS.value):
                    m.d.sync += n_pops.eq(Mux(wdata > cfg.n_populations, cfg.n_populations, wdata))
                with m.Case(ConfigWord.CONTROL.value):
                    m.d.comb += clear_spikes.eq(wdata[0])
                with m.Case(ConfigWord.INPUT_LIST.value):
                    m.d.sync += input_list.eq(Mux(list_bad, 0, wdata[: 2 * LIST_BITS]))
                    with m.If(list_bad):
                        m.d.comb += param_err.eq(1)
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
            StatusWord.CAP_DESCRIPTORS: cfg.descriptors,
            StatusWord.LANES: cfg.lanes,
            StatusWord.FEATURES: int(cfg.per_neuron_threshold),
        }
        config_words = {
            ConfigWord.N_INPUTS: n_inputs,
            ConfigWord.N_POPULATIONS: n_pops,
            ConfigWord.CONTROL: 0,
            ConfigWord.INPUT_LIST: input_list,
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

        # neuron regions: from the read ports, or (registered state) from the datapaths'
        # registered inputs, which hold the same words a clock later
        neuron_regions = [
            (Region.V, [p.data for p in v_rd], [dp.i_v for dp in dps], sb),
            (Region.I, [p.data for p in i_rd], [dp.i_i for dp in dps], sb),
            (Region.ACC, [p.data for p in acc_rd], [dp.i_acc for dp in dps], fmt.acc_bits),
            (Region.BIAS, [p.data for p in bias_rd], [dp.i_bias for dp in dps], fmt.bias_bits),
        ]
        if cfg.per_neuron_threshold:
            neuron_regions.append(
                (Region.THR, [p.data for p in thr_rd], [dp.i_thr for dp in dps], None)
            )

        def neuron_word(values, lane, bits):
            value = Array(values)[lane] if L > 1 else values[0]
            return value if bits is None else sext(value, bits)

        rdata = Signal(BUS_DATA_BITS)
        with m.Switch(rd_region):
            with m.Case(Region.CONFIG.value, Region.STATUS.value):
                m.d.comb += rdata.eq(rd_reg)
            if not self.fast:  # (the fast build registers them first, below)
                with m.Case(Region.POP.value):
                    m.d.comb += rdata.eq(pop_rd.data)
                with m.Case(Region.DESC.value):
                    m.d.comb += rdata.eq(desc_rd.data)
            if not self.fast:
                for reg, ports, _, bits in neuron_regions:
                    with m.Case(reg.value):
                        m.d.comb += rdata.eq(neuron_word(ports, rd_lane, bits))
            if not banked:
                with m.Case(Region.WEIGHT.value):
                    m.d.comb += rdata.eq(w_data)
        if not slow_read:
            m.d.sync += bus.r_data.eq(Mux(r_stage2 & rd_ok, rdata, 0))
        else:
            rdata_q = Signal(BUS_DATA_BITS)
            rd_ok_q = Signal()
            rd_region_q = Signal.like(rd_region)
            rd_lane_q = Signal.like(rd_lane)
            m.d.sync += [
                rdata_q.eq(rdata),
                rd_ok_q.eq(r_stage2 & rd_ok),
                rd_region_q.eq(rd_region),
                rd_lane_q.eq(rd_lane),
            ]
            final = Signal(BUS_DATA_BITS)
            m.d.comb += final.eq(rdata_q)
            with m.Switch(rd_region_q):
                if banked and not late_weights:
                    with m.Case(Region.WEIGHT.value):
                        m.d.comb += final.eq(w_data)
                if self.fast:
                    for reg, _, regs, bits in neuron_regions:
                        with m.Case(reg.value):
                            m.d.comb += final.eq(neuron_word(regs, rd_lane_q, bits))
                    # the table words, registered straight from the block RAMs
                    pop_q = Signal(16)
                    m.d.sync += pop_q.eq(pop_rd.data)
                    with m.Case(Region.POP.value):
                        m.d.comb += final.eq(pop_q)
                    with m.Case(Region.DESC.value):
                        m.d.comb += final.eq(desc_q)
            if not late_weights:
                m.d.sync += bus.r_data.eq(Mux(rd_ok_q, final, 0))
            else:
                # more clocks: the weight word, or the word picked earlier (delayed)
                word, ok, weight = final, rd_ok_q, rd_region_q == Region.WEIGHT.value
                for k in range(late_weights):
                    word_q = Signal(BUS_DATA_BITS, name=f"rd_word_q{k}")
                    ok_q, weight_q = Signal(name=f"rd_ok_d{k}"), Signal(name=f"rd_weight_q{k}")
                    m.d.sync += [word_q.eq(word), ok_q.eq(ok), weight_q.eq(weight)]
                    word, ok, weight = word_q, ok_q, weight_q
                m.d.sync += bus.r_data.eq(Mux(ok, Mux(weight, w_data, word), 0))

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
            m.d.sync += prev_valid.eq(0)
        with m.If(in_step & ~self.done):
            m.d.sync += step_cycles.eq(step_cycles + 1)

        opts = p_opts
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

        # the checks, each registered when the population is loaded; CHECK ANDs them
        pop_checks = Cat(
            p_size != 0,
            p_base + p_size <= N,
            leak != 3,
            reset != 3,
            decay_ok(p_beta),
            ~cuba | decay_ok(p_alpha),
            list_ok(p_fwd),
            list_ok(p_rec),
        )
        pop_checks_r = Signal(len(pop_checks))
        # the population's neuron groups and the lanes of its first and last group
        p_groups = p_size if L == 1 else Signal(16)
        if L > 1:
            b_mod = p_base[:lg]
            last_mod = (p_base + p_size - 1)[:lg]
            p_groups_v = (p_size + b_mod + L - 1) >> lg
            fmask_v = (Const((1 << L) - 1, L) << b_mod)[:L]
            lmask_v = Const((1 << L) - 1, L) >> (~last_mod)[:lg]  # ~x == L - 1 - x on lg bits
        m.d.comb += pop_ok_r.eq(pop_checks_r.all())
        m.d.comb += pop_rd.en.eq(1)
        ld_k = Signal(range(POP_WORDS + 1))
        ld_bits = (POP_WORDS - 1).bit_length()
        if self.fast:
            # the table is addressed from flops whatever the state (word ld_k of population
            # pop_idx, or the bus): Yosys puts this small table in LUT RAM, whose read is in
            # the same clock as the address
            with m.If(~b_pend):
                m.d.comb += pop_rd.addr.eq(Cat(ld_k[:ld_bits], pop_idx))

        def start_walk(bank, emit, fanout, lst):
            if self.fast:  # a registered pulse: the walker starts a clock later
                m.d.sync += walk_start.eq(1)
            else:
                m.d.comb += walk_start.eq(1)
            m.d.sync += [
                wk_bank.eq(bank),
                wk_lo.eq(p_base),
                # the fast build stores the last neuron (the walker then needs no subtraction)
                wk_hi.eq(p_base + p_size - int(self.fast)),
                wk_word.eq(p_base >> 4),
                wk_emit.eq(emit),
                wk_fanout.eq(fanout),
                wk_list.eq(lst),
            ]

        fast = self.fast
        # The fast build decides every sequencer branch from flops: the branch conditions are
        # registered a clock before the state that uses them (NEXT_POP_R, CHECK_R, the drain's
        # extra clock), a few clocks a population.
        np_end = Signal()  # registered: pop_idx == n_pops
        np_skip = Signal()  # registered: a recurrent phase with no spikes to walk
        chk_ok = Signal()  # registered: the population passed its checks
        chk_rec = Signal()  # registered: walk last step's spikes of this population
        drain_go = Signal()  # registered: walk this step's spikes of this population
        dp_busy_q = Signal()
        m.d.sync += [
            np_end.eq(pop_idx == n_pops),
            np_skip.eq(phase_rec & ~(prev_valid & rec_any.bit_select(pop_idx, 1))),
            chk_ok.eq(pop_ok_r),
            chk_rec.eq(
                ((p_opts & int(PopFlag.RECURRENT)) != 0)
                & rec_any.bit_select(pop_idx, 1)
                & prev_valid
            ),
            drain_go.eq(
                (((p_opts & int(PopFlag.OUTPUT)) != 0) | ((p_opts & int(PopFlag.FORWARD)) != 0))
                & cur_any.bit_select(pop_idx, 1)
            ),
            dp_busy_q.eq(dp_busy),
        ]
        next_pop = "NEXT_POP_R" if fast else "NEXT_POP"

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.events.valid & g_ready & ~b_pend):
                    m.d.comb += self.events.ready.eq(1)
                    with m.If(self.events.payload < n_inputs):
                        m.d.comb += [
                            g_take.eq(1),
                            g_in_o.eq(self.events.payload),
                            g_in_list.eq(input_list),
                        ]
                    with m.Else():
                        m.d.comb += event_refused.eq(1)
                with m.Elif(step_pending & drained & ~b_pend):
                    m.d.sync += [
                        step_pending.eq(self.step),
                        in_step.eq(1),
                        step_cycles.eq(1),
                        pop_idx.eq(0),
                        phase_rec.eq(1),
                        wr_valid.eq(0),
                    ]
                    m.next = next_pop
                with m.Elif(drained):
                    m.d.comb += bus_ok.eq(1)
            with m.State("NEXT_POP_R"):  # fast build: np_end / np_skip are being registered
                m.next = "NEXT_POP"
            with m.State("NEXT_POP"):
                at_end = np_end if fast else pop_idx == n_pops
                skip = np_skip
                if not fast:
                    skip = phase_rec & ~(prev_valid & rec_any.bit_select(pop_idx, 1))
                with m.If(at_end):
                    with m.If(phase_rec):
                        m.d.sync += [phase_rec.eq(0), pop_idx.eq(0)]
                        if fast:
                            m.next = "NEXT_POP_R"
                    with m.Else():
                        m.next = "FINISH"
                with m.Elif(skip):
                    if fast:
                        m.next = "NEXT_POP_R"
                    m.d.sync += pop_idx.eq(pop_idx + 1)  # no spikes to walk: skip the load
                with m.Else():
                    m.d.sync += ld_k.eq(0)
                    m.next = "LOAD"
            with m.State("LOAD"):
                # word k is addressed in cycle k and captured in cycle k + 1
                if not self.fast:  # (the fast build addresses the table above)
                    with m.If(ld_k < POP_WORDS):
                        m.d.comb += pop_rd.addr.eq(Cat(ld_k[:ld_bits], pop_idx))
                with m.Switch(ld_k):
                    for word, reg in p_words.items():
                        with m.Case(word.value + 1):
                            m.d.sync += reg.eq(pop_rd.data)
                m.d.sync += ld_k.eq(ld_k + 1)
                with m.If(ld_k == POP_WORDS):
                    # the last word (THRESHOLD) is not checked: validate now, registered (the
                    # checks are long comparators)
                    m.d.sync += pop_checks_r.eq(pop_checks)
                    if L > 1:
                        m.d.sync += [
                            p_groups.eq(p_groups_v),
                            sweep_fmask.eq(fmask_v),
                            sweep_lmask.eq(lmask_v),
                        ]
                    m.next = "CHECK_R" if fast else "CHECK"
            with m.State("CHECK_R"):  # fast build: chk_ok / chk_rec are being registered
                m.next = "CHECK"
            with m.State("CHECK"):
                ok = chk_ok if fast else pop_ok_r
                rec_go = (
                    chk_ok & chk_rec
                    if fast
                    else pop_ok_r
                    & ((p_opts & int(PopFlag.RECURRENT)) != 0)
                    & rec_any.bit_select(pop_idx, 1)
                    & prev_valid
                )
                with m.If(phase_rec):
                    # last step's spikes of a population with a recurrent fan-out
                    with m.If(rec_go):
                        start_walk(prev, 0, 1, p_rec)
                        m.next = "WALK"
                    with m.Else():
                        m.d.sync += pop_idx.eq(pop_idx + 1)
                        m.next = next_pop
                with m.Elif(ok):
                    m.d.sync += [
                        sweep_g.eq(p_base >> lg),
                        wb_g.eq(p_base >> lg),
                        sweep_left.eq(p_groups),
                        sweep_last.eq(p_groups == 1),
                        sweep_first.eq(1),
                    ]
                    m.next = "SWEEP_WAIT"
                with m.Else():
                    m.d.comb += param_err.eq(1)
                    m.d.sync += pop_idx.eq(pop_idx + 1)
                    m.next = next_pop
            with m.State("SWEEP_WAIT"):
                # forward deliveries into this population must have landed
                with m.If(drained):
                    m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.comb += sweep_issue.eq(1)
                m.d.sync += [
                    sweep_g.eq(sweep_g + 1),
                    sweep_left.eq(sweep_left - 1),
                    sweep_last.eq(sweep_left == 2),
                    sweep_first.eq(0),
                ]
                with m.If(sweep_last):
                    m.next = "SWEEP_DRAIN"
            with m.State("SWEEP_DRAIN"):
                # fast build: one more clock, for drain_go to see the last spikes
                with m.If(~dp_busy & ~dp_busy_q if fast else ~dp_busy):
                    emit = (p_opts & int(PopFlag.OUTPUT)) != 0
                    fanout = (p_opts & int(PopFlag.FORWARD)) != 0
                    go = drain_go if fast else (emit | fanout) & cur_any.bit_select(pop_idx, 1)
                    with m.If(go):
                        start_walk(~prev, emit, fanout, p_fwd)
                        m.next = "WALK"
                    with m.Else():
                        m.d.sync += pop_idx.eq(pop_idx + 1)
                        m.next = next_pop
            with m.State("WALK"):
                with m.If(walk_idle & ~walk_start):
                    m.d.sync += pop_idx.eq(pop_idx + 1)
                    m.next = next_pop
            with m.State("FINISH"):
                with m.If(drained):
                    m.d.sync += [
                        prev.eq(~prev),
                        prev_valid.eq(1),
                        rec_any.eq(cur_any),
                        cur_any.eq(0),
                        in_step.eq(0),
                        cnt_steps.eq(cnt_steps + 1),
                    ]
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"

        # sweep addresses the state memories (the bus has them only when idle)
        with m.If(iss_q):
            for port in acc_rd + state_rd:
                m.d.comb += port.addr.eq(iss_g)
        with m.Elif(wv.any()):
            for port in acc_rd:
                m.d.comb += port.addr.eq(wtg)
        return m
