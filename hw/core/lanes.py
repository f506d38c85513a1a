"""The neuron lanes: the neuron state memories (banked by lane) and one datapath per lane.

Spec: ``docs/core.md`` ("Lanes", "Memory map"), ``docs/neuron.md`` (the datapath).  Neuron ``n``
is word ``n // lanes`` of bank ``n % lanes``.  The state memories are shared by three users,
muxed here: the sweep (read a group, write its results, clear its accumulators), the
accumulation pipeline (read and write accumulators) and the bus (between steps).  Two
implementations behind one interface: :class:`NeuronLanes` hands the memories' outputs to the
datapaths as they are; :class:`RegisteredNeuronLanes` (the fast build) registers them first.
"""

from amaranth import Array, Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..bus import BUS_DATA_BITS, BusRequest
from ..core_neuron import NeuronDatapath
from ..image import REGION_SHIFT, CoreConfig, Region
from ..util import READ_COLLISION_X
from .sequencer import population_layout

__all__ = ["NeuronLanes", "RegisteredNeuronLanes"]


class NeuronLanes(wiring.Component):
    """State memories and datapaths of all lanes.

    Attributes
    ----------
    pop : In(population_layout(config))
        The population being swept (its options, decay codes and threshold).
    sweep_issue, sweep_group, sweep_mask : In
        Read neuron group ``sweep_group`` and update lanes ``sweep_mask`` of it.
    wb_group : In
        The group the datapaths' results belong to.
    results, spikes : Out
        A group's results are written back; which of its lanes spiked.
    dp_busy : Out(1)
        A group is in flight (registered).
    param_err : Out(1)
        Pulse: a neuron's threshold is out of range (counted once a clock).
    acc_rd_valid, acc_rd_group : In
        The accumulation pipeline reads a group's accumulators.
    acc : Out(ArrayLayout(acc_bits, lanes))
        The accumulator words: as read (:class:`RegisteredNeuronLanes`: registered).
    acc_wr_valid, acc_wr_group, acc_wr_sum : In
        The accumulation pipeline writes a group's accumulators (lanes ``acc_wr_valid``).
    req : In(request_layout), bus_pend : In(1)
        The bus (:attr:`~spikeforge.hw.bus.BusSlave.req`): read or write a neuron word (V, I,
        ACC, BIAS, THR).
    r_region, r_lane : In
        Select the neuron word of :attr:`r_word` (a read's region and lane, delayed to match).
    r_word : Out(32)
        The neuron word read, sign-extended (THR zero-extended).
    """

    #: clocks from a state memory's address to the datapath's input register
    state_latency = 1

    def __init__(self, config: CoreConfig, request_layout=None):
        self.config = config
        if request_layout is None:
            request_layout = BusRequest(REGION_SHIFT)
        L = config.lanes
        fmt = config.fmt
        gbits = max(1, (config.n_neurons // L - 1).bit_length())
        acc = data.ArrayLayout(unsigned(fmt.acc_bits), L)
        super().__init__(
            {
                "pop": In(population_layout(config)),
                "sweep_issue": In(1),
                "sweep_group": In(gbits),
                "sweep_mask": In(L),
                "wb_group": In(gbits),
                "results": Out(1),
                "spikes": Out(L),
                "dp_busy": Out(1),
                "param_err": Out(1),
                "acc_rd_valid": In(1),
                "acc_rd_group": In(gbits),
                "acc": Out(acc),
                "acc_wr_valid": In(L),
                "acc_wr_group": In(gbits),
                "acc_wr_sum": In(acc),
                "req": In(request_layout),
                "bus_pend": In(1),
                "r_region": In(4),
                "r_lane": In(max(config.lane_bits, 1)),
                "r_word": Out(BUS_DATA_BITS),
            }
        )

    def _state_input(self, m, port, value):
        """Give the datapath's input ``port`` the memory word ``value``."""
        m.d.comb += port.eq(value)

    def _valid_delay(self, m, lane, valid):
        return valid

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        fmt = cfg.fmt
        L, lg = cfg.lanes, cfg.lane_bits
        NB = cfg.n_neurons // L
        lanes = range(L)

        def banked(name, width):
            """One memory per lane (bank ``l`` holds the neurons ``n % lanes == l``)."""
            rds, wrs = [], []
            for l in lanes:
                # (no read uses a word written in the same clock: docs/core.md, "Memories")
                mem = Memory(shape=unsigned(width), depth=NB, init=[], attrs=READ_COLLISION_X)
                m.submodules[name + (f"{l}" if L > 1 else "")] = mem
                rds.append(mem.read_port())
                wrs.append(mem.write_port())
            return rds, wrs

        v_rd, v_wr = banked("v_mem", fmt.state_bits)
        i_rd, i_wr = banked("i_mem", fmt.state_bits)
        acc_rd, acc_wr = banked("acc_mem", fmt.acc_bits)
        if cfg.per_neuron_threshold:
            thr_rd, thr_wr = banked("thr_mem", fmt.threshold_bits)
        bias_rd, bias_wr = banked("bias_mem", fmt.bias_bits)

        # --- datapaths ----------------------------------------------------------------------
        # The datapaths' results come out in the order the sweep issued the neuron groups, so
        # the write-back address is a counter (wb_group) instead of a tag carried through them.
        opts = self.pop.options
        dps = []
        for l in lanes:
            dp = NeuronDatapath(fmt, tag_bits=1)
            m.submodules[f"dp{l}" if L > 1 else "dp"] = dp
            dps.append(dp)
            m.d.comb += [
                dp.model.eq(opts.model),
                dp.leak.eq(opts.leak),
                dp.reset.eq(opts.reset),
                dp.reset_delay.eq(opts.reset_delay),
                dp.beta.eq(self.pop.beta),
                dp.alpha.eq(self.pop.alpha),
            ]
            thr = thr_rd[l].data if cfg.per_neuron_threshold else self.pop.threshold
            for port, value in [
                (dp.i_v, v_rd[l].data),
                (dp.i_i, i_rd[l].data),
                (dp.i_acc, acc_rd[l].data),
                (dp.i_thr, thr),
                (dp.i_bias, bias_rd[l].data),
            ]:
                self._state_input(m, port, value)
        # the sweep's request is registered before it addresses the state memories (instead of
        # registering their output); the datapaths see the data the cycle after
        iss_q = Signal()
        iss_g = Signal.like(self.sweep_group)
        iss_mask = Signal(L)
        m.d.sync += [
            iss_q.eq(self.sweep_issue),
            iss_g.eq(self.sweep_group),
            iss_mask.eq(self.sweep_mask),
        ]
        o_valid = Signal(L)
        for l, dp in enumerate(dps):
            m.d.sync += dp.i_valid.eq(self._valid_delay(m, l, iss_q & iss_mask[l]))
            m.d.comb += [o_valid[l].eq(dp.o_valid), self.spikes[l].eq(dp.o_valid & dp.o_spike)]
        # every issued group has a lane in the population, and the lanes run in lockstep
        m.d.comb += self.results.eq(o_valid.any())
        thr_max = fmt.threshold_range[1]
        for dp in dps:
            with m.If(dp.i_valid & ((dp.i_thr == 0) | (dp.i_thr > thr_max))):
                m.d.comb += self.param_err.eq(1)
        # issue -> address -> (registered) data -> ...
        flight = Signal(NeuronDatapath.LATENCY + 1 + self.state_latency)
        m.d.sync += [
            flight.eq(Cat(self.sweep_issue, flight[:-1])),
            self.dp_busy.eq(self.sweep_issue | flight[:-1].any()),  # == flight.any(), registered
        ]
        # the accumulator words the accumulation pipeline adds to
        m.d.comb += [self.acc[l].eq(self._acc_word(dps[l], acc_rd[l])) for l in lanes]

        # --- write-back -----------------------------------------------------------------------
        for l, dp in enumerate(dps):
            m.d.comb += [
                v_wr[l].addr.eq(self.wb_group),
                v_wr[l].data.eq(dp.o_v),
                v_wr[l].en.eq(dp.o_valid),
                i_wr[l].addr.eq(self.wb_group),
                i_wr[l].data.eq(dp.o_i),
                i_wr[l].en.eq(dp.o_valid),
            ]
            # accumulator ports: the sweep clears, else the accumulation pipeline (or the bus)
            with m.If(dp.o_valid):
                m.d.comb += [
                    acc_wr[l].addr.eq(self.wb_group),
                    acc_wr[l].data.eq(0),
                    acc_wr[l].en.eq(1),
                ]
            with m.Else():
                m.d.comb += [
                    acc_wr[l].addr.eq(self.acc_wr_group),
                    acc_wr[l].data.eq(self.acc_wr_sum[l]),
                    acc_wr[l].en.eq(self.acc_wr_valid[l]),
                ]

        # --- the bus: neuron n is word n >> lg of bank n % lanes ------------------------------
        req = self.req
        banks = [
            (Region.V, v_rd, v_wr, fmt.state_bits, [dp.i_v for dp in dps]),
            (Region.I, i_rd, i_wr, fmt.state_bits, [dp.i_i for dp in dps]),
            (Region.ACC, acc_rd, acc_wr, fmt.acc_bits, [dp.i_acc for dp in dps]),
            (Region.BIAS, bias_rd, bias_wr, fmt.bias_bits, [dp.i_bias for dp in dps]),
        ]
        if cfg.per_neuron_threshold:
            banks.append((Region.THR, thr_rd, thr_wr, None, [dp.i_thr for dp in dps]))
        word = req.offset >> lg
        b_lane = req.offset[:lg] if L > 1 else Const(0, 1)
        for reg, rds, wrs, _, _ in banks:
            for l in lanes:
                with m.If(self.bus_pend):
                    m.d.comb += rds[l].addr.eq(word)
                with m.If(req.we & (req.region == reg.value) & (b_lane == l)):
                    m.d.comb += [
                        wrs[l].addr.eq(word),
                        wrs[l].data.eq(req.data),
                        wrs[l].en.eq(1),
                    ]
        # the sweep addresses the state memories (the bus has them only when idle)
        state_rd = v_rd + i_rd + bias_rd + (thr_rd if cfg.per_neuron_threshold else [])
        for port in state_rd + acc_rd:
            m.d.comb += port.en.eq(1)
        with m.If(iss_q):
            for port in acc_rd + state_rd:
                m.d.comb += port.addr.eq(iss_g)
        with m.Elif(self.acc_rd_valid):
            for port in acc_rd:
                m.d.comb += port.addr.eq(self.acc_rd_group)

        with m.Switch(self.r_region):
            for reg, rds, _, bits, regs in banks:
                with m.Case(reg.value):
                    values = self._read_words(rds, regs)
                    value = Array(values)[self.r_lane] if L > 1 else values[0]
                    m.d.comb += self.r_word.eq(value if bits is None else value[:bits].as_signed())
        return m

    # --- the part the two implementations differ in -------------------------------------------
    def _acc_word(self, dp, port):
        return port.data

    def _read_words(self, ports, regs):
        """The words a bus read picks from: the memories' outputs."""
        return [p.data for p in ports]


class RegisteredNeuronLanes(NeuronLanes):
    """The fast build: every state memory's output goes into the datapath's input register
    before any logic; the accumulation pipeline and bus reads take the words from there, a
    clock later."""

    state_latency = 2

    def _state_input(self, m, port, value):
        m.d.sync += port.eq(value)

    def _valid_delay(self, m, lane, valid):
        valid_q = Signal(name=f"dp{lane}_valid_q")
        m.d.sync += valid_q.eq(valid)
        return valid_q

    def _acc_word(self, dp, port):
        return dp.i_acc

    def _read_words(self, ports, regs):
        return regs
