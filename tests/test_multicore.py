"""Several neuron cores and the AER router on one chip (issue #4).

Spec: docs/routing.md (table format, scheduler, delayed queue, overflow), docs/network.md (when a
spike arrives).  Three levels:

* the :class:`Router` alone in the Amaranth simulator, with the cores played by the testbench
  (table lookup, back-pressure, delayed queue, overflow counter, refused entries, bus);
* :class:`MultiCore` (real cores + router) in the Amaranth simulator against ``GoldenChip``;
* the whole chip (``Chip(..., cores=3)``) in Verilator through the virtual board and the host
  library, against ``GoldenChip`` on the whole network (marked ``rtl``);

plus the partition (host side).
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from spikeforge.errors import ConfigError, FitError
from spikeforge.host.partition import partition, subnetwork
from spikeforge.hw.chip import Chip, chip_config_from_ident, config_from_ident, ident_words
from spikeforge.hw.core_sim import bus_read_block, bus_write_block
from spikeforge.hw.image import CoreConfig
from spikeforge.hw.multicore_sim import run_multicore
from spikeforge.hw.router import (
    Router,
    RouterConfig,
    RouterConfigWord,
    RouterRegion,
    RouterStatusWord,
    decode_dest,
    dest_core,
    dest_host,
    router_address,
)
from spikeforge.hw.skid import StreamRegister
from spikeforge.sim.golden import GoldenChip
from spikeforge.sim.network import INPUT, Network, NeuronParams, Population, Projection

SMALL = CoreConfig(n_neurons=8, n_inputs=8, n_populations=2, synapse_words=16)
RCFG = RouterConfig(SMALL, cores=3, n_inputs=4, entries=32, delay_depth=4)


# --- the registered stream stage ------------------------------------------------------------------
@pytest.mark.parametrize("full_rate", [True, False])
def test_stream_register_passes_everything_in_order_with_registered_ready(full_rate):
    """Random valid/ready on both sides: every item once, in order; ``i.ready`` never follows
    ``o.ready`` in the same clock (no combinational path)."""
    dut = StreamRegister(8, full_rate=full_rate)
    rng = np.random.default_rng(1)
    items = [int(x) for x in rng.integers(0, 256, 300)]
    got = []

    async def bench(ctx):
        k = 0
        for _ in range(2000):
            offer = k < len(items) and rng.random() < 0.7
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.i.payload, items[k] if offer else 0)
            ctx.set(dut.o.ready, 0)
            ready_low = ctx.get(dut.i.ready)
            take = bool(rng.random() < 0.6)
            ctx.set(dut.o.ready, take)
            assert ctx.get(dut.i.ready) == ready_low
            if ctx.get(dut.o.valid) and take:
                got.append(ctx.get(dut.o.payload))
            if offer and ctx.get(dut.i.ready):
                k += 1
            await ctx.tick()
        assert k == len(items)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == items


# --- the router alone, cores played by the testbench ---------------------------------------------
def _src(k, n):
    return RCFG.core_source(k, n)


async def load_table(ctx, r, routes, n_inputs=None):
    """Write a routing table: ``routes`` maps source index -> list of DEST words."""
    src_words = [0] * RCFG.n_sources
    dest = []
    for s, ds in routes.items():
        src_words[s] = len(dest) | len(ds) << 16
        dest += ds
    assert not any(await bus_write_block(ctx, r, router_address(RouterRegion.SRC), src_words))
    if dest:
        assert not any(await bus_write_block(ctx, r, router_address(RouterRegion.DEST), dest))
    if n_inputs is not None:
        addr = router_address(RouterRegion.CONFIG, RouterConfigWord.N_INPUTS.value)
        await bus_write_block(ctx, r, addr, [n_inputs])


async def status(ctx, r):
    words = await bus_read_block(ctx, r, router_address(RouterRegion.STATUS),
                                 len(RouterStatusWord))
    return {w.name: words[w.value] for w in RouterStatusWord}


class FakeCores:
    """Plays the cores: takes events only while idle, emits scripted spikes when stepped."""

    def __init__(self, r, core_ready=None, host_ready=None):
        self.r = r
        self.core_ready = core_ready or (lambda k, c: True)
        self.host_ready = host_ready or (lambda c: True)
        self.cycle = 0
        self.log = []  # (cycle, what, ...)

    async def host_events(self, ctx, channels):
        for ch in channels:
            ctx.set(self.r.events.valid, 1)
            ctx.set(self.r.events.payload, ch)
            while True:
                ready = await self._cycle(ctx, None)
                if ready:
                    break
        ctx.set(self.r.events.valid, 0)
        for _ in range(500):  # let the fan-out finish
            await self._cycle(ctx, None)
            if not ctx.get(self.r.busy):
                break
        assert not ctx.get(self.r.busy), "the router is still busy 500 clocks after the events"

    async def step(self, ctx, script, max_cycles=2000):
        """Pulse step; core k emits ``script[k]`` (local neuron indices) when stepped."""
        ctx.set(self.r.step, 1)
        state = ["idle"] * RCFG.cores
        pending = [list(s) for s in script]
        self._state, self._pending = state, pending
        start = self.cycle
        while True:
            done = await self._cycle(ctx, "step")
            ctx.set(self.r.step, 0)
            if done:
                return
            assert self.cycle - start < max_cycles, f"no done after {max_cycles} cycles"

    async def _cycle(self, ctx, mode):
        r, c = self.r, self.cycle
        state = getattr(self, "_state", ["idle"] * RCFG.cores) if mode else ["idle"] * RCFG.cores
        pending = getattr(self, "_pending", None)
        for k, port in enumerate(r.cores):
            stepping = state[k] != "idle"
            ctx.set(port.events.ready, (not stepping) and self.core_ready(k, c))
            emit = state[k] == "run" and bool(pending[k])
            ctx.set(port.spikes.valid, emit)
            ctx.set(port.spikes.payload, pending[k][0] if emit else 0)
            ctx.set(port.done, state[k] == "done")
        ctx.set(r.spikes.ready, self.host_ready(c))
        host_ready_now = ctx.get(r.events.ready)
        for k, port in enumerate(r.cores):
            if ctx.get(port.events.valid):
                assert state[k] == "idle", f"cycle {c}: event for core {k} while it steps"
                if ctx.get(port.events.ready):
                    self.log.append((c, "event", k, ctx.get(port.events.payload)))
            if ctx.get(port.step):
                assert state[k] == "idle"
                self.log.append((c, "step", k))
                state[k] = "run"
            elif state[k] == "run" and ctx.get(port.spikes.ready) and pending[k]:
                pending[k].pop(0)
            elif state[k] == "run" and not pending[k]:
                state[k] = "done"
            elif state[k] == "done":
                self.log.append((c, "core_done", k))
                state[k] = "idle"
        if ctx.get(r.spikes.valid) and ctx.get(r.spikes.ready):
            self.log.append((c, "host", ctx.get(r.spikes.payload)))
        done = ctx.get(r.done)
        if done:
            self.log.append((c, "done"))
        await ctx.tick()
        self.cycle += 1
        return host_ready_now if mode is None else done

    def of(self, what):
        return [e for e in self.log if e[1] == what]


def run_router(bench, config=RCFG, **kw):
    r = Router(config)
    sim = Simulator(r)
    sim.add_clock(1e-6)

    async def tb(ctx):
        await bench(ctx, r, FakeCores(r, **kw))

    sim.add_testbench(tb)
    sim.run()


def test_dest_words_round_trip():
    assert decode_dest(dest_host(1234)) == ("host", 1234)
    assert decode_dest(dest_core(2, 77, True)) == ("core", 2, 77, True)
    assert decode_dest(dest_core(14, 0, False)) == ("core", 14, 0, False)
    with pytest.raises(ConfigError, match="core=15"):
        dest_core(15, 0, False)
    with pytest.raises(ConfigError, match="65536"):
        dest_host(1 << 16)


def test_host_events_fan_out_in_table_order_with_back_pressure():
    # core 1 refuses events for cycles 30..70: the router waits, loses nothing, keeps order
    def core_ready(k, c):
        return not (k == 1 and 30 <= c < 70)

    async def bench(ctx, r, fake):
        await load_table(ctx, r, {
            0: [dest_core(0, 3, False), dest_core(2, 5, False), dest_core(1, 1, False)],
            2: [dest_core(1, 7, False)],
            3: [dest_core(2, 6, False), dest_core(2, 2, False)],
        })
        fake.cycle = 30
        await fake.host_events(ctx, [0, 2, 1, 3])
        got = [(k, ch) for _, _, k, ch in fake.of("event")]
        assert got == [(0, 3), (2, 5), (1, 1), (1, 7), (2, 6), (2, 2)]
        first_core1 = [c for c, _, k, _ in fake.of("event") if k == 1][0]
        assert first_core1 >= 70
        st = await status(ctx, r)
        assert st["ROUTED"] == 6 and st["ROUTE_ERRORS"] == 0 and st["EVENTS_REFUSED"] == 0

    run_router(bench, core_ready=core_ready)


def test_forward_spikes_arrive_before_the_later_core_steps_and_host_gets_them_in_order():
    def host_ready(c):
        return c % 7 == 0  # a slow link

    async def bench(ctx, r, fake):
        await load_table(ctx, r, {
            _src(0, 2): [dest_host(17), dest_core(1, 4, False), dest_core(2, 0, False)],
            _src(0, 5): [dest_host(20)],
            _src(1, 0): [dest_core(2, 3, False), dest_host(30)],
            _src(2, 7): [dest_host(47)],
        })
        await fake.step(ctx, [[2, 5], [0], [7]])
        steps = {k: c for c, _, k in fake.of("step")}
        dones = {k: c for c, _, k in fake.of("core_done")}
        assert steps[0] < dones[0] < steps[1] < dones[1] < steps[2] < dones[2]
        events = fake.of("event")
        assert [(k, ch) for _, _, k, ch in events] == [(1, 4), (2, 0), (2, 3)]
        for c, _, k, _ in events:
            assert c < steps[k]
        assert [x[2] for x in fake.of("host")] == [17, 20, 30, 47]
        (done,) = fake.of("done")
        assert done[0] > max(x[0] for x in fake.of("host"))
        st = await status(ctx, r)
        assert st["STEPS"] == 1 and st["ROUTE_ERRORS"] == 0 and st["ROUTED"] == 7
        assert st["LAST_STEP_CYCLES"] > 0

    run_router(bench, host_ready=host_ready)


def test_backward_spikes_wait_in_the_delayed_queue_until_the_next_step():
    async def bench(ctx, r, fake):
        await load_table(ctx, r, {
            _src(2, 1): [dest_core(0, 2, True), dest_core(2, 6, True), dest_host(9)],
            _src(1, 3): [dest_core(0, 1, True)],
        })
        await fake.step(ctx, [[], [3], [1]])
        assert fake.of("event") == []  # nothing delivered in the step that produced them
        fake.log.clear()
        await fake.step(ctx, [[], [], []])
        steps = {k: c for c, _, k in fake.of("step")}
        events = fake.of("event")
        assert sorted((k, ch) for _, _, k, ch in events) == [(0, 1), (0, 2), (2, 6)]
        assert all(c < steps[0] for c, *_ in events)  # drained before any core runs
        fake.log.clear()
        await fake.step(ctx, [[], [], []])
        assert fake.of("event") == []  # delivered once
        st = await status(ctx, r)
        assert st["DELAY_PEAK"] == 3 and st["DELAY_OVERFLOWS"] == 0 and st["STEPS"] == 3

    run_router(bench)


def test_delayed_queue_overflow_is_counted_and_the_rest_delivered():
    async def bench(ctx, r, fake):
        # 6 backward deliveries in one step, the queue holds 4
        await load_table(ctx, r, {
            _src(2, n): [dest_core(0, n, True)] for n in range(6)
        })
        await fake.step(ctx, [[], [], list(range(6))])
        fake.log.clear()
        await fake.step(ctx, [[], [], []])
        assert [ch for *_, ch in fake.of("event")] == [0, 1, 2, 3]
        st = await status(ctx, r)
        assert st["DELAY_OVERFLOWS"] == 2 and st["DELAY_PEAK"] == 4

    run_router(bench)


def test_reset_state_empties_the_delayed_queue():
    async def bench(ctx, r, fake):
        await load_table(ctx, r, {_src(1, 0): [dest_core(0, 0, True)]})
        await fake.step(ctx, [[], [0], []])
        ctx.set(r.reset_state, 1)
        await ctx.tick()
        ctx.set(r.reset_state, 0)
        fake.log.clear()
        await fake.step(ctx, [[], [], []])
        assert fake.of("event") == []
        # the CONTROL register does the same
        await fake.step(ctx, [[], [0], []])
        addr = router_address(RouterRegion.CONFIG, RouterConfigWord.CONTROL.value)
        await bus_write_block(ctx, r, addr, [1])
        fake.log.clear()
        await fake.step(ctx, [[], [], []])
        assert fake.of("event") == []
        await fake.step(ctx, [[], [0], []])
        fake.log.clear()
        await fake.step(ctx, [[], [], []])
        assert [(k, ch) for _, _, k, ch in fake.of("event")] == [(0, 0)]  # not broken

    run_router(bench)


def test_bad_entries_are_refused_and_counted_never_a_hang():
    async def bench(ctx, r, fake):
        good = dest_core(2, 1, False)
        await load_table(ctx, r, {
            0: [
                dest_core(5, 0, False),  # no core 5 (3 cores)
                dest_core(1, 8, False),  # channel 8: the cores take 0..7
                dest_host(3),  # a host event cannot go back to the host
                dest_core(0, 0, True),  # nor be delayed
                good,
            ],
            _src(1, 0): [
                dest_core(1, 0, False),  # same-step delivery to itself: it is stepping (hang)
                dest_core(5, 0, True),  # delayed to a missing core
                dest_core(0, 3, True),  # fine
                dest_host(5) | (1 << 20),  # host with the delayed bit: refused
                dest_core(0, 4, False),  # fine: core 0 has finished this step
            ],
        })
        await fake.host_events(ctx, [0])
        assert [(k, ch) for _, _, k, ch in fake.of("event")] == [(2, 1)]
        fake.log.clear()
        await fake.step(ctx, [[], [0], []])
        assert fake.of("host") == []
        ((c, _, k, ch),) = fake.of("event")
        assert (k, ch) == (0, 4) and c > fake.of("core_done")[0][0]
        st = await status(ctx, r)
        assert st["ROUTE_ERRORS"] == 4 + 3
        # a source run past the DEST table is stored empty and counted
        bad = 30 | 5 << 16
        assert await bus_write_block(ctx, r, router_address(RouterRegion.SRC, 1), [bad]) == [0]
        assert await bus_read_block(ctx, r, router_address(RouterRegion.SRC, 1), 1) == [0]
        st = await status(ctx, r)
        assert st["ROUTE_ERRORS"] == 8
        fake.log.clear()
        await fake.host_events(ctx, [1])
        assert fake.of("event") == []

    run_router(bench)


def test_host_events_past_n_inputs_are_refused_and_counted():
    async def bench(ctx, r, fake):
        await load_table(ctx, r, {1: [dest_core(0, 1, False)], 3: [dest_core(0, 3, False)]},
                         n_inputs=2)
        await fake.host_events(ctx, [3, 1])
        assert [(k, ch) for _, _, k, ch in fake.of("event")] == [(0, 1)]
        st = await status(ctx, r)
        assert st["EVENTS_REFUSED"] == 1
        addr = router_address(RouterRegion.CONFIG, RouterConfigWord.N_INPUTS.value)
        assert await bus_read_block(ctx, r, addr, 1) == [2]

    run_router(bench)


def test_router_bus_reads_back_tables_and_refuses_bad_accesses():
    async def bench(ctx, r, fake):
        await load_table(ctx, r, {2: [dest_host(7), dest_core(1, 3, True)]})
        assert await bus_read_block(ctx, r, router_address(RouterRegion.SRC, 2), 1) == [2 << 16]
        assert await bus_read_block(ctx, r, router_address(RouterRegion.DEST), 2) == [
            dest_host(7), dest_core(1, 3, True)]
        st = await status(ctx, r)
        assert (st["CAP_CORES"], st["CAP_INPUTS"], st["CAP_SOURCES"], st["CAP_ENTRIES"],
                st["CAP_DELAY"]) == (3, 4, 4 + 3 * 8, 32, 4)
        errors = []
        errors += await bus_write_block(ctx, r, router_address(RouterRegion.STATUS), [1])
        errors += await bus_write_block(ctx, r, router_address(RouterRegion.DEST, 32), [1])
        errors += await bus_write_block(ctx, r, router_address(RouterRegion.SRC, 28), [1])
        errors += await bus_write_block(ctx, r, 7 << 20, [1])  # no region 7
        assert errors == [1, 1, 1, 1]
        assert await bus_read_block(ctx, r, 9 << 20, 1) == [0]
        st = await status(ctx, r)
        assert st["BUS_REFUSED"] == 5

    run_router(bench)


# --- partition ---------------------------------------------------------------------------------
PART = CoreConfig(n_neurons=8, n_inputs=16, n_populations=2, synapse_words=256)


def _chain(sizes, n_in=6, backward=True, seed=0):
    """input -> p0 -> p1 -> ... with a self-recurrence on p1 and a backward edge last -> p0."""
    rng = np.random.default_rng(seed)
    params = NeuronParams(leak="shift", beta=3, threshold=40, reset="subtract")
    pops = [Population(f"p{k}", s, params) for k, s in enumerate(sizes)]
    projs = [Projection(INPUT, "p0", rng.integers(-5, 30, (n_in, sizes[0])))]
    for k in range(1, len(sizes)):
        projs.append(Projection(f"p{k-1}", f"p{k}", rng.integers(-10, 30, (sizes[k - 1],
                                                                           sizes[k]))))
    if len(sizes) > 1:
        projs.append(Projection("p1", "p1", rng.integers(-10, 10, (sizes[1], sizes[1]))))
        if backward:
            projs.append(Projection(f"p{len(sizes)-1}", "p0",
                                    rng.integers(-8, 12, (sizes[-1], sizes[0]))))
    return Network(n_in, pops, projs, outputs=[f"p{len(sizes)-1}", "p0"])


def test_partition_routes_forward_and_backward_and_marks_leaving_outputs():
    net = _chain([5, 6, 4])
    mp = partition(net, 3, PART, assign=[0, 1, 2])
    assert mp.groups == [["p0"], ["p1"], ["p2"]]
    # core 0's inputs: 6 host channels then p2's 4 neurons (backward)
    assert mp.channels[0] == [("input", c) for c in range(6)] + [
        ("neuron", g) for g in range(11, 15)]
    assert mp.subnets[0].outputs == ["p0"]  # net output and source of p0 -> p1
    assert mp.subnets[1].outputs == ["p1"]  # only leaves towards p2
    r = mp.routes
    assert r[("input", 0)] == [("core", 0, 0, False)]
    assert r[("core", 0, 2)] == [("host", 2), ("core", 1, 2, False)]
    assert r[("core", 2, 3)] == [("host", 14), ("core", 0, 9, True)]
    assert mp.n_delayed == 4
    # the recurrent p1 -> p1 stays inside core 1
    assert any(p.src == "p1" and p.dst == "p1" for p in mp.subnets[1].projections)
    sub, chans = subnetwork(net, ["p1", "p2"])
    assert chans == [("neuron", g) for g in range(5)] and sub.outputs == ["p2"]


def test_partition_refuses_what_cannot_fit_with_a_clear_message():
    too_big = _chain([5, 9, 4])  # p1 has 9 neurons, a core holds 8
    with pytest.raises(FitError, match=r"population 'p1' alone does not fit one core") as exc:
        partition(too_big, 3, PART)
    assert any("9 neurons, the core holds 8" in p for p in exc.value.problems)
    with pytest.raises(FitError, match="needs 4 cores"):
        partition(_chain([6, 6, 6, 6]), 3, PART)
    # the worst case of the delayed queue is checked up front
    tiny = RouterConfig(PART, cores=3, n_inputs=8, delay_depth=3)
    with pytest.raises(FitError, match="delayed queue holds 3: it could overflow"):
        partition(_chain([5, 6, 4]), 3, PART, assign=[0, 1, 2], router=tiny)
    with pytest.raises(FitError, match="router takes 4"):
        partition(_chain([5, 6, 4]), 3, PART, router=RCFG)
    with pytest.raises(ConfigError, match="assign"):
        partition(_chain([5, 6, 4]), 3, PART, assign=[0, 2, 2])
    with pytest.raises(ConfigError, match="strategy"):
        partition(_chain([5, 6, 4]), 3, PART, strategy="random")


def test_partition_strategies():
    net = _chain([3, 3, 3, 3], n_in=4)
    assert partition(net, 3, PART).groups == [["p0", "p1"], ["p2", "p3"]]
    bal = partition(net, 3, PART, strategy="balance")
    assert max(sum(net.population(p).size for p in g) for g in bal.groups) == 6
    assert partition(net, 4, CoreConfig(n_neurons=64, n_inputs=64)).groups == [
        ["p0", "p1", "p2", "p3"]]


def test_ident_words_describe_one_and_several_cores():
    words = ident_words(RCFG)
    assert config_from_ident(words) == SMALL
    assert chip_config_from_ident(words) == RCFG
    one = ident_words(SMALL)
    assert chip_config_from_ident(one) == SMALL
    assert chip_config_from_ident(one[:13]) == SMALL  # a bitstream without the chip fields
    with pytest.raises(ConfigError, match="cores"):
        Chip(SMALL, 12_000_000, cores=0)
    with pytest.raises(ConfigError, match="cores > 1"):
        Chip(SMALL, 12_000_000, delay_depth=4)


def test_ident_fields_are_read_and_written_by_name(monkeypatch):
    """Every IDENTIFY capability word is found by its name in IDENT_FIELDS, never by position:
    the same configurations round-trip with the fields in another order."""
    from spikeforge.hw import chip as chip_mod

    # trailing later fields at their default (max_delay, conv_words: 0) are omitted
    sent = ident_words(RCFG)
    assert len(sent) == chip_mod.IDENT_FIELDS.index("max_delay")
    later = {"max_delay": 0, "conv_words": 0}
    words = {**later, **dict(zip(chip_mod.IDENT_FIELDS, sent, strict=False))}
    assert words["cores"] == RCFG.cores and words["chip_inputs"] == RCFG.n_inputs
    assert words["route_entries"] == RCFG.entries and words["delay_depth"] == RCFG.delay_depth
    assert words["weight_bits"] == SMALL.fmt.weight_bits and words["n_neurons"] == SMALL.n_neurons
    shuffled = list(chip_mod.IDENT_FIELDS)
    np.random.default_rng(5).shuffle(shuffled)
    monkeypatch.setattr(chip_mod, "IDENT_FIELDS", tuple(shuffled))
    moved = ident_words(RCFG)
    assert moved == [words[name] for name in shuffled]
    assert chip_config_from_ident(moved) == RCFG
    assert chip_config_from_ident(ident_words(SMALL)) == SMALL


# --- real cores + router in the Amaranth simulator ----------------------------------------------
MC_CORE = CoreConfig(n_neurons=16, n_inputs=24, n_populations=2, synapse_words=256)
MC = RouterConfig(MC_CORE, cores=3, n_inputs=8)


def _compare(net, res, raster):
    gold = GoldenChip(net, "int")
    outs = set(net.output_indices().tolist())
    for t in range(raster.shape[0]):
        spk = gold.step(raster[t].astype(np.uint8))[0]
        expect = [int(g) for g in np.flatnonzero(spk) if g in outs]
        assert res["spikes"][t] == expect, f"step {t}"
        assert np.array_equal(res["v"][t], gold.v[0]), f"step {t}: membranes"


@pytest.mark.slow
@pytest.mark.parametrize(("throttle", "backward"),
                         [(False, "queue"), (True, "queue"), (False, "direct")])
def test_multicore_matches_golden_with_forward_recurrent_and_backward_edges(throttle, backward):
    net = _chain([7, 9, 5, 8], n_in=8, seed=3)
    mp = partition(net, 3, MC_CORE, strategy="balance", router=MC, backward=backward)
    assert mp.used_cores == 3 and (mp.n_delayed > 0) == (backward == "queue")
    rng = np.random.default_rng(5)
    raster = rng.random((8, net.n_inputs)) < 0.5
    events = [list(np.flatnonzero(r)) for r in raster]
    ready = (lambda c: c % 3 == 0) if throttle else None
    res = run_multicore(net, MC, events, mapping=mp, spikes_ready=ready)
    assert res["bus_errors"] == 0
    _compare(net, res, raster)
    st = res["router"]
    assert st["ROUTE_ERRORS"] == st["DELAY_OVERFLOWS"] == st["EVENTS_REFUSED"] == 0
    assert st["STEPS"] == 8 and st["ROUTED"] > 0


# --- the whole chip in Verilator, through the host library ---------------------------------------
VB_CORE = CoreConfig(n_neurons=48, n_inputs=64, n_populations=3, synapse_words=2048)
CLK = 24_000_000


@pytest.fixture(scope="module")
def board(verilator_toolchain):
    """One 3-core virtual board for the module (built once, reloaded per test)."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(Chip(VB_CORE, CLK, cores=3), name="multicore_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0, partition_options={"strategy": "balance"})
        yield backend
        backend.close()


def _random_split_network(seed):
    """A random multi-layer network with recurrent and backward edges that needs 2-3 cores."""
    from rtl.core_tb import random_network

    big = CoreConfig(n_neurons=110, n_inputs=40, n_populations=6, synapse_words=16384)
    rng = np.random.default_rng(seed)
    for _ in range(500):
        net = random_network(rng, big)
        if net is None:
            continue
        try:
            mp = partition(net, 3, VB_CORE, strategy="balance")
        except FitError:
            continue
        if mp.used_cores >= 2:
            return net
    raise AssertionError("no random network split over 2-3 cores in 500 draws")


@pytest.mark.rtl
def test_chip_identifies_as_three_cores(board):
    assert board.router_config == RouterConfig(VB_CORE, cores=3)
    assert board.config == VB_CORE


@pytest.mark.rtl
@pytest.mark.parametrize(("seed", "backward"),
                         [(21, "queue"), (22, "queue"), (23, "queue"), (24, "direct")])
def test_chip_runs_split_networks_like_golden(board, seed, backward):
    net = _random_split_network(seed)
    rng = np.random.default_rng(seed + 100)
    raster = (rng.random((10, 2, net.n_inputs)) < rng.uniform(0.1, 0.6)).astype(np.uint8)
    board.partition_options = {"strategy": "balance", "backward": backward}
    try:
        board.load(net)
    finally:
        board.partition_options = {"strategy": "balance"}
    assert board.mapping.used_cores >= 2
    spikes, v = board.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=2).run(raster)
    out = net.output_indices()
    assert np.array_equal(spikes[:, :, out], gold["spikes"][:, :, out])
    assert np.array_equal(v, gold["v"])
    st = board.chip_status()
    assert st["router_route_errors"] == st["router_delay_overflows"] == 0
    assert st["router_events_refused"] == st["core_events_refused"] == 0
    assert st["core_param_errors"] == st["bus_errors"] == 0


@pytest.mark.rtl
def test_chip_reset_state_forgets_backward_spikes_in_the_queue(board):
    # a (core 0) -> b (core 1) forward; b -> a backward: b's spike reaches a one step later
    params = NeuronParams(leak="none", threshold=5, reset="zero")
    net = Network(
        1,
        [Population("a", 40, params), Population("b", 40, params)],
        [
            Projection(INPUT, "b", np.full((1, 40), 10)),
            Projection("b", "a", np.eye(40, dtype=int) * 10),
        ],
        outputs=["a", "b"],
    )
    board.load(net)
    assert board.mapping.groups == [["a"], ["b"]]
    raster = np.zeros((2, 1, 1), dtype=np.uint8)
    raster[0, 0, 0] = 1
    spikes = board.run(raster)  # step 0: b fires; step 1: a fires (queued spikes)
    assert spikes[0, 0, 40:].all() and not spikes[0, 0, :40].any()
    assert spikes[1, 0, :40].all()
    # one step with input, then RESET_STATE (next sample): a must not fire from the queue
    dev = board.device
    dev.reset_state()
    dev.send_events([0])
    dev.step(1)
    dev.reset_state()
    (out,) = dev.step(1)
    assert out == []


@pytest.mark.rtl
def test_chip_bus_decoding_and_fit_refusal_through_the_host_library(board):
    from spikeforge.host.device import DeviceError
    from spikeforge.hw.image import Region, address
    from spikeforge.hw.router import core_address
    from spikeforge.protocol import Status

    dev = board.device
    before = dev.status()["bus_errors"]
    # core 3 does not exist on a 3-core chip, nor does select 7: refused, read as 0, counted
    for addr in (core_address(3, address(Region.V)), 7 << 24):
        with pytest.raises(DeviceError) as exc:
            dev.read_mem(addr, 1)
        assert exc.value.status == Status.BUS_ERROR
    assert dev.status()["bus_errors"] == before + 2
    # each core answers at its own select: the capacity words of core 2 and of the router
    words = dev.read_mem(core_address(2, address(Region.STATUS, 5)), 2)
    assert words == [VB_CORE.n_neurons, VB_CORE.n_inputs]
    caps = dev.read_mem(router_address(RouterRegion.STATUS, RouterStatusWord.CAP_CORES.value), 1)
    assert caps == [3]
    # a population larger than a core is refused before anything is written
    params = NeuronParams(leak="none", threshold=5)
    big = Network(4, [Population("h", 60, params)], [Projection(INPUT, "h", np.ones((4, 60)))])
    with pytest.raises(FitError, match="60 neurons, the core holds 48"):
        board.load(big)


@pytest.mark.slow
def test_multicore_with_two_lane_cores_matches_golden():
    """Cores with two lanes behind the router: the partition lays every core's blocks out for
    its lanes, and the whole network still matches the golden model."""
    core = CoreConfig(n_neurons=16, n_inputs=24, n_populations=2, synapse_words=256, lanes=2)
    rcfg = RouterConfig(core, cores=3, n_inputs=8)
    net = _chain([7, 9, 5, 8], n_in=8, seed=4)
    mp = partition(net, 3, core, strategy="balance", router=rcfg)
    rng = np.random.default_rng(6)
    raster = rng.random((6, net.n_inputs)) < 0.5
    res = run_multicore(net, rcfg, [list(np.flatnonzero(r)) for r in raster], mapping=mp)
    assert res["bus_errors"] == 0
    _compare(net, res, raster)
