"""The sequencer: input events while idle, then a timestep, population by population.

Spec: ``docs/core.md`` ("A timestep").  It loads each population's table entry into registers,
checks it, sweeps its neurons through the datapaths, and starts the walks of its spikes (last
step's for the recurrent fan-out, this step's for the output stream and the forward fan-out).
Two implementations behind one interface: :class:`Sequencer` decides its branches from the
registers as they are; :class:`RegisteredSequencer` (the fast build) from conditions registered
a clock before the state that uses them (``NEXT_POP_R``, ``CHECK_R``, the drain's extra clock).
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...spec import LeakMode, NeuronModel
from ..compare import at_most, below
from ..image import (
    EVENT_BITS,
    POP_WORD_BITS,
    POP_WORDS,
    CoreConfig,
    DescList,
    PopOptions,
    PopWord,
)
from .bitmap import walk_layout
from .descriptors import source_layout

__all__ = ["Sequencer", "RegisteredSequencer", "population_layout"]


def options_layout(config: CoreConfig) -> data.StructLayout:
    """The part of :data:`~spikeforge.hw.image.PopOptions` a core reads: all of it with delays,
    every field but ``walks`` (the last) without, so a core without delays has no trace of
    them."""
    if config.max_delay:
        return PopOptions
    return data.StructLayout({name: f.shape for name, f in PopOptions if name != "walks"})


def population_layout(config: CoreConfig) -> data.StructLayout:
    """The population being run: its table entry (:class:`~spikeforge.hw.image.PopWord`)."""
    return data.StructLayout(
        {
            "base": POP_WORD_BITS,
            "size": POP_WORD_BITS,
            "options": options_layout(config),
            "beta": POP_WORD_BITS,
            "alpha": POP_WORD_BITS,
            "forward": DescList,
            "recurrent": DescList,
            "threshold": POP_WORD_BITS,
        }
    )


def list_ok(word, config: CoreConfig):
    """A descriptor list (:data:`DescList`) stays inside the table."""
    lst = DescList(word[: DescList.size])
    return (lst.count == 0) | at_most(lst.first + lst.count, config.descriptors)


class Sequencer(wiring.Component):
    """Runs timesteps; between them delivers input events and lets the bus in.

    Attributes
    ----------
    step : In(1)
        Pulse: run one timestep (remembered, one deep).
    busy, done, in_step : Out(1)
        A step is pending or running; pulse at its end; a step is running.
    step_start : Out(1)
        Pulse: a step starts.
    events : In(stream.Signature(EVENT_BITS))
        Host input channels, taken while idle.
    source : Out(stream.Signature(source_layout(config)))
        An input event, as a source of the descriptor engine.
    event_refused, param_err : Out(1)
        Pulses: an event at or beyond ``n_inputs``; a population that fails its checks.
    n_inputs, n_pops, input_list, clear_spikes : In
        The configuration registers.
    bus_pend : In(1)
        The bus has the memories this cycle: start nothing.
    serve : Out(1)
        The bus may be served (idle, nothing in flight).
    drained : In(1)
        The fan-out and the accumulation pipelines are idle.
    pop_addr : Out
        The population table's read address; ``pop_data`` its word a clock later.
    pop : Out(population_layout(config))
        The population being run.
    sweep_issue, sweep_group, sweep_mask : Out
        Present a neuron group to the state memories and datapaths (lanes ``sweep_mask``).
    results : In(1)
        A neuron group leaves the datapaths; ``spiked``: one of its lanes spiked.
    dp_busy : In(1)
        A neuron group is in the datapaths.
    wb_group : Out
        The group the datapaths' results belong to (they come out in sweep order).
    bank : Out(bank_bits)
        The bitmap bank this step writes (the others hold the last steps' spikes: last step's
        without delays, the last ``bitmap_banks - 1`` steps' with ``max_delay``).
    walk_start : Out(1)
    walk : Out(walk_layout(config))
    walk_idle : In(1)
    """

    def __init__(self, config: CoreConfig):
        self.config = config
        L = config.lanes
        gbits = max(1, (config.n_neurons // L - 1).bit_length())
        super().__init__(
            {
                "step": In(1),
                "busy": Out(1),
                "done": Out(1),
                "in_step": Out(1),
                "step_start": Out(1),
                "events": In(stream.Signature(unsigned(EVENT_BITS))),
                "source": Out(stream.Signature(source_layout(config))),
                "event_refused": Out(1),
                "param_err": Out(1),
                "n_inputs": In(16),
                "n_pops": In(range(config.n_populations + 1)),
                "input_list": In(DescList),
                "clear_spikes": In(1),
                "bus_pend": In(1),
                "serve": Out(1),
                "drained": In(1),
                "pop_addr": Out(range(POP_WORDS * config.n_populations)),
                "pop_data": In(POP_WORD_BITS),
                "pop": Out(population_layout(config)),
                "sweep_issue": Out(1),
                "sweep_group": Out(gbits),
                "sweep_mask": Out(L),
                "results": In(1),
                "spiked": In(1),
                "dp_busy": In(1),
                "wb_group": Out(gbits),
                "bank": Out(config.bank_bits),
                "walk_start": Out(1),
                "walk": Out(walk_layout(config)),
                "walk_idle": In(1),
            }
        )

    # --- the part the two implementations differ in -------------------------------------------
    def _decision(self, m, cond, name):
        """A branch condition, as the state that uses it sees it."""
        return cond

    def _via(self, state):
        """The state to go to for ``state`` (the fast build: a clock of registering first)."""
        return state

    def _extra_states(self, m):
        pass

    def _address_table(self, m, ld_k, in_load):
        """Address word ``ld_k`` of the population being loaded."""
        with m.If(in_load & (ld_k < POP_WORDS)):
            m.d.comb += self.pop_addr.eq(Cat(ld_k[: (POP_WORDS - 1).bit_length()], self._idx))

    # --- the sequencer -----------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        N, L, lg = cfg.n_neurons, cfg.lanes, cfg.lane_bits
        fmt = cfg.fmt
        step_pending = Signal()
        in_step = Signal()
        with m.If(self.step):
            m.d.sync += step_pending.eq(1)
        m.d.comb += [self.busy.eq(step_pending | in_step), self.in_step.eq(in_step)]

        # bank ``prev`` holds last step's spikes, the step writes bank ~prev; prev_valid is
        # cleared by CONTROL (forget pending recurrent spikes).  cur_any / rec_any: population p
        # spiked this step / last step (a walk of a population without spikes is skipped).
        # With delays (docs/core.md, "Delays"): the step writes bank ``cur``, bank cur - k holds
        # the spikes of k steps ago, valid for k <= ``age`` (steps since CONTROL cleared them);
        # hist[k - 1]: which populations spiked k steps ago.
        D = cfg.max_delay
        B = cfg.bitmap_banks
        cur_any = Signal(cfg.n_populations)
        if D:
            cur = Signal(cfg.bank_bits)
            age = Signal(range(B + 1))
            hist = [Signal(cfg.n_populations, name=f"hist{k + 1}") for k in range(B)]
            wk = Signal(range(B + 1))  # the walk of k steps ago being done: k = wk
            m.d.comb += self.bank.eq(cur)
            with m.If(self.clear_spikes):
                m.d.sync += age.eq(0)
        else:
            prev = Signal()
            prev_valid = Signal()
            rec_any = Signal(cfg.n_populations)
            m.d.comb += self.bank.eq(~prev)
            with m.If(self.clear_spikes):
                m.d.sync += prev_valid.eq(0)

        self._idx = pop_idx = Signal(range(cfg.n_populations + 1))
        with m.If(self.results & self.spiked):
            m.d.sync += cur_any.bit_select(pop_idx, 1).eq(1)
        pop = self.pop
        p_opts = Signal(options_layout(cfg))
        p_words = {
            PopWord.BASE: pop.base,
            PopWord.SIZE: pop.size,
            PopWord.OPTIONS: p_opts,
            PopWord.BETA: pop.beta,
            PopWord.ALPHA: pop.alpha,
            PopWord.FORWARD: pop.forward,
            PopWord.RECURRENT: pop.recurrent,
            PopWord.THRESHOLD: pop.threshold,
        }
        m.d.comb += pop.options.eq(p_opts)
        phase_rec = Signal()  # the step's first phase: recurrent walks of last step's spikes

        # the population's checks, each registered when it is loaded; CHECK ANDs them
        leak, reset = p_opts.leak, p_opts.reset
        one = fmt.decay_one
        k_lo, k_hi = fmt.shift_range

        def decay_ok(code):
            return (
                (leak == LeakMode.NONE)
                | ((leak == LeakMode.MULT) & at_most(code, one))
                | ((leak == LeakMode.SHIFT) & ~below(code, k_lo) & at_most(code, k_hi))
            )

        pop_checks = Cat(
            pop.size != 0,
            at_most(pop.base + pop.size, N),
            leak.as_value() != 3,
            reset.as_value() != 3,
            decay_ok(pop.beta),
            (p_opts.model != NeuronModel.CUBA) | decay_ok(pop.alpha),
            list_ok(pop.forward.as_value(), cfg),
            list_ok(pop.recurrent.as_value(), cfg),
        )
        pop_checks_r = Signal(len(pop_checks))
        pop_ok = pop_checks_r.all()

        # the sweep: the population's neuron groups, and the lanes of its first and last group
        sweep_g = Signal.like(self.sweep_group)
        # groups left to issue, and a registered "this is the last"
        sweep_left = Signal(POP_WORD_BITS)
        sweep_last = Signal()
        sweep_first = Signal()
        fmask, lmask = Signal(L), Signal(L)
        ones = Const((1 << L) - 1, L)
        m.d.comb += [
            self.sweep_group.eq(sweep_g),
            self.sweep_mask.eq(
                1 if L == 1 else Mux(sweep_first, fmask, -1) & Mux(sweep_last, lmask, -1)
            ),
        ]
        p_groups = pop.size if L == 1 else Signal(POP_WORD_BITS)
        wb_g = self.wb_group
        with m.If(self.results):
            m.d.sync += wb_g.eq(wb_g + 1)

        ld_k = Signal(range(POP_WORDS + 1))
        in_load = Signal()
        self._address_table(m, ld_k, in_load)

        # the walk's command: a population's range of a bitmap bank
        walk = self.walk
        m.d.comb += [walk.lo.eq(pop.base), walk.end.eq(pop.base + pop.size)]
        m.d.comb += [
            self.source.payload.offset.eq(self.events.payload),
            self.source.payload.list.eq(self.input_list),
        ]

        def start_walk(bank, emit, fanout, lst, key=0):
            m.d.comb += [
                self.walk_start.eq(1),
                walk.bank.eq(bank),
                walk.emit.eq(emit),
                walk.fanout.eq(fanout),
                walk.list.eq(lst),
            ]
            if D:
                m.d.comb += walk.key.eq(key)

        at_end = self._decision(m, pop_idx == self.n_pops, "np_end")
        if D:
            # a population spiked k steps ago, k = 1 .. B, within the valid history
            rec_valid = Cat(h.bit_select(pop_idx, 1) & (k + 1 <= age)
                            for k, h in enumerate(hist)).any()
            # (bit 0 of the row is unused: wk counts from 1)
            hist_k = Cat(Const(0, 1), *(h.bit_select(pop_idx, 1) for h in hist)).bit_select(wk, 1)
            wk_go = p_opts.recurrent & hist_k & (wk <= age) & (wk <= p_opts.walks)
            more = self._decision(m, wk < p_opts.walks, "chk_more")
        else:
            rec_valid = prev_valid & rec_any.bit_select(pop_idx, 1)
            wk_go = p_opts.recurrent & rec_any.bit_select(pop_idx, 1) & prev_valid
        skip = self._decision(m, phase_rec & ~rec_valid, "np_skip")
        ok = self._decision(m, pop_ok, "chk_ok")
        rec_go = ok & self._decision(m, wk_go, "chk_rec")
        emit, fanout = p_opts.output, p_opts.forward
        drain_go = self._decision(m, (emit | fanout) & cur_any.bit_select(pop_idx, 1), "drain_go")
        next_pop = self._via("NEXT_POP")

        with m.FSM(name="seq"):
            with m.State("IDLE"):
                with m.If(self.events.valid & ~self.bus_pend):
                    # (no step starts and the bus waits while the engine is not ready)
                    in_range = self.events.payload < self.n_inputs
                    m.d.comb += [
                        self.source.valid.eq(in_range),
                        self.events.ready.eq(self.source.ready),
                        self.event_refused.eq(self.source.ready & ~in_range),
                    ]
                with m.Elif(step_pending & self.drained & ~self.bus_pend):
                    m.d.comb += self.step_start.eq(1)
                    m.d.sync += [
                        step_pending.eq(self.step),
                        in_step.eq(1),
                        pop_idx.eq(0),
                        phase_rec.eq(1),
                    ]
                    m.next = next_pop
                with m.Elif(self.drained):
                    m.d.comb += self.serve.eq(1)
            self._extra_states(m)
            with m.State("NEXT_POP"):
                with m.If(at_end):
                    with m.If(phase_rec):
                        m.d.sync += [phase_rec.eq(0), pop_idx.eq(0)]
                        m.next = next_pop
                    with m.Else():
                        m.next = "FINISH"
                with m.Elif(skip):
                    m.d.sync += pop_idx.eq(pop_idx + 1)  # no spikes to walk: skip the load
                    m.next = next_pop
                with m.Else():
                    m.d.sync += ld_k.eq(0)
                    if D:
                        m.d.sync += wk.eq(1)
                    m.next = "LOAD"
            with m.State("LOAD"):
                # word k is addressed in cycle k and captured in cycle k + 1
                m.d.comb += in_load.eq(1)
                with m.Switch(ld_k):
                    for word, reg in p_words.items():
                        with m.Case(word.value + 1):
                            m.d.sync += Value.cast(reg).eq(self.pop_data)
                m.d.sync += ld_k.eq(ld_k + 1)
                with m.If(ld_k == POP_WORDS):
                    # the last word (THRESHOLD) is not checked: validate now, registered (the
                    # checks are long comparators)
                    m.d.sync += pop_checks_r.eq(pop_checks)
                    if L > 1:
                        b_mod = pop.base[:lg]
                        last_mod = (pop.base + pop.size - 1)[:lg]
                        m.d.sync += [
                            p_groups.eq((pop.size + b_mod + L - 1) >> lg),
                            fmask.eq((ones << b_mod)[:L]),
                            lmask.eq(ones >> (~last_mod)[:lg]),  # ~x == L - 1 - x on lg bits
                        ]
                    m.next = self._via("CHECK")
            with m.State("CHECK"):
                with m.If(phase_rec):
                    # last step's spikes of a population with a recurrent fan-out (with
                    # delays: the spikes of wk steps ago, wk = 1 .. walks)
                    with m.If(rec_go):
                        if D:
                            start_walk((cur - wk)[: cfg.bank_bits], 0, 1, pop.recurrent, wk)
                        else:
                            start_walk(prev, 0, 1, pop.recurrent)
                        m.next = "WALK"
                    with m.Else():
                        self._next_walk_or_pop(m, D and more, wk if D else None, pop_idx)
                with m.Elif(ok):
                    m.d.sync += [
                        sweep_g.eq(pop.base >> lg),
                        wb_g.eq(pop.base >> lg),
                        sweep_left.eq(p_groups),
                        sweep_last.eq(p_groups == 1),
                        sweep_first.eq(1),
                    ]
                    m.next = "SWEEP_WAIT"
                with m.Else():
                    m.d.comb += self.param_err.eq(1)
                    m.d.sync += pop_idx.eq(pop_idx + 1)
                    m.next = next_pop
            with m.State("SWEEP_WAIT"):
                # forward deliveries into this population must have landed
                with m.If(self.drained):
                    m.next = "SWEEP"
            with m.State("SWEEP"):
                m.d.comb += self.sweep_issue.eq(1)
                m.d.sync += [
                    sweep_g.eq(sweep_g + 1),
                    sweep_left.eq(sweep_left - 1),
                    sweep_last.eq(sweep_left == 2),
                    sweep_first.eq(0),
                ]
                with m.If(sweep_last):
                    m.next = "SWEEP_DRAIN"
            with m.State("SWEEP_DRAIN"):
                with m.If(self._datapaths_idle(m)):
                    with m.If(drain_go):
                        start_walk(cur if D else ~prev, emit, fanout, pop.forward)
                        m.next = "WALK"
                    with m.Else():
                        m.d.sync += pop_idx.eq(pop_idx + 1)
                        m.next = next_pop
            with m.State("WALK"):
                with m.If(self.walk_idle):
                    if D:
                        self._next_walk_or_pop(m, phase_rec & more, wk, pop_idx)
                    else:
                        m.d.sync += pop_idx.eq(pop_idx + 1)
                        m.next = next_pop
            with m.State("FINISH"):
                with m.If(self.drained):
                    m.d.sync += [cur_any.eq(0), in_step.eq(0)]
                    if D:
                        m.d.sync += [
                            cur.eq(cur + 1),
                            age.eq(Mux(age == B, B, age + 1)),
                            hist[0].eq(cur_any),
                        ]
                        m.d.sync += [hist[k].eq(hist[k - 1]) for k in range(1, B)]
                    else:
                        m.d.sync += [prev.eq(~prev), prev_valid.eq(1), rec_any.eq(cur_any)]
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m

    def _datapaths_idle(self, m):
        """The sweep's last results are out (and, fast build, seen by ``drain_go``)."""
        return ~self.dp_busy

    def _next_walk_or_pop(self, m, more, wk, pop_idx):
        """After a start-of-step walk (or its skip): the walk of one step further back if
        ``more`` (a core with delays), else the next population."""
        if wk is None:
            m.d.sync += pop_idx.eq(pop_idx + 1)
            m.next = self._via("NEXT_POP")
            return
        with m.If(more):
            m.d.sync += wk.eq(wk + 1)
            m.next = self._via("CHECK")
        with m.Else():
            m.d.sync += pop_idx.eq(pop_idx + 1)
            m.next = self._via("NEXT_POP")


class RegisteredSequencer(Sequencer):
    """The fast build's sequencer: every branch condition is registered a clock before the
    state that uses it; the population table is addressed from flops whatever the state."""

    def _decision(self, m, cond, name):
        reg = Signal(name=name)
        m.d.sync += reg.eq(cond)
        return reg

    def _via(self, state):
        return state + "_R"

    def _extra_states(self, m):
        with m.State("NEXT_POP_R"):  # np_end / np_skip are being registered
            m.next = "NEXT_POP"
        with m.State("CHECK_R"):  # chk_ok / chk_rec are being registered
            m.next = "CHECK"

    def _address_table(self, m, ld_k, in_load):
        # word ld_k of population pop_idx (or the bus, muxed outside): Yosys puts this small
        # table in LUT RAM, whose read is in the same clock as the address
        m.d.comb += self.pop_addr.eq(Cat(ld_k[: (POP_WORDS - 1).bit_length()], self._idx))

    def _datapaths_idle(self, m):
        dp_busy_q = Signal()
        m.d.sync += dp_busy_q.eq(self.dp_busy)
        return ~self.dp_busy & ~dp_busy_q
