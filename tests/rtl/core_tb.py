# cocotb testbench of the neuron core (spec: docs/core.md, docs/neuron.md), driven by
# tests/test_core_rtl.py: loads networks through the memory bus, streams events, and compares
# spikes and membranes with the golden model (spikeforge.sim.golden.GoldenChip, integer mode).
import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from spikeforge.host.image import build_image, fit_problems
from spikeforge.hw.image import (
    ConfigWord,
    CoreConfig,
    Region,
    StatusWord,
    address,
    decode_signed,
)
from spikeforge.sim.golden import GoldenChip
from spikeforge.sim.network import INPUT, Network, NeuronParams, Population, Projection, Sparse
from spikeforge.spec import Format


def _config():
    spec = json.loads(os.environ["SPIKEFORGE_CORE_CONFIG"])
    fmt = Format(**spec.pop("fmt"))
    return CoreConfig(fmt=fmt, **spec)


def _seeds():
    return [int(s) for s in os.environ.get("SPIKEFORGE_SEEDS", "1,2,3").split(",")]


class Driver:
    """Cycle-level driver of the core's ports."""

    def __init__(self, dut, cfg):
        self.dut, self.cfg = dut, cfg
        self.spikes = []

    async def start(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        for name in ("events__valid", "step", "mem__w_en", "mem__r_en", "spikes__ready"):
            getattr(dut, name).value = 0
        dut.mem__addr.value = 0
        dut.mem__w_data.value = 0
        dut.events__payload.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def write(self, addr, words):
        """Write a block, one word per clock; returns the number of refused words."""
        dut = self.dut
        dut.mem__w_en.value = 1
        k = refused = 0
        while k < len(words):
            dut.mem__addr.value = addr + k
            dut.mem__w_data.value = int(words[k]) & 0xFFFFFFFF
            await ReadOnly()
            ready, error = int(dut.mem__ready.value), int(dut.mem__error.value)
            await RisingEdge(dut.clk)
            if ready:
                k += 1
                refused += error
        dut.mem__w_en.value = 0
        return refused

    async def read(self, addr, count):
        """Read a block, one request per clock (pipelined)."""
        dut = self.dut
        out, k = [], 0
        while len(out) < count:
            issue = k < count
            dut.mem__r_en.value = int(issue)
            if issue:
                dut.mem__addr.value = addr + k
            await ReadOnly()
            if int(dut.mem__r_valid.value):
                out.append(int(dut.mem__r_data.value))
            ready = int(dut.mem__ready.value)
            await RisingEdge(dut.clk)
            if issue and ready:
                k += 1
        dut.mem__r_en.value = 0
        return out

    async def load(self, net):
        for addr, words in build_image(net, self.cfg):
            assert await self.write(addr, words) == 0

    async def events(self, channels):
        dut = self.dut
        for ch in channels:
            dut.events__valid.value = 1
            dut.events__payload.value = int(ch)
            while True:
                await ReadOnly()
                ready = int(dut.events__ready.value)
                await RisingEdge(dut.clk)
                if ready:
                    break
        dut.events__valid.value = 0

    async def step(self, ready_pattern=None):
        """Run one timestep; returns (spikes, cycles).  ``ready_pattern`` throttles spikes."""
        dut = self.dut
        dut.step.value = 1
        dut.spikes__ready.value = 1
        await RisingEdge(dut.clk)
        dut.step.value = 0
        spikes, cycles = [], 1
        rng = np.random.default_rng(cycles)
        while True:
            if ready_pattern is not None:
                dut.spikes__ready.value = int(rng.random() < ready_pattern)
            await ReadOnly()
            if int(dut.spikes__valid.value) and int(dut.spikes__ready.value):
                spikes.append(int(dut.spikes__payload.value))
            done = int(dut.done.value)
            await RisingEdge(dut.clk)
            cycles += 1
            if done:
                return spikes, cycles

    async def state(self, region, n):
        bits = self.cfg.fmt.state_bits
        return np.array([decode_signed(w, bits) for w in await self.read(address(region), n)])

    async def status(self):
        words = await self.read(address(Region.STATUS), len(StatusWord))
        return {s.name: words[s.value] for s in StatusWord}


async def run_and_compare(drv, net, steps, rng, ready_pattern=None, label=""):
    """Load ``net``, run ``steps`` random steps, compare every spike and every membrane."""
    await drv.load(net)
    golden = GoldenChip(net, fmt=drv.cfg.fmt)
    out = golden.output_indices
    for t in range(steps):
        density = rng.choice([0.0, 0.1, 0.5, 1.0])
        # each channel at most once per timestep (docs/network.md), in random order
        chans = [c for c in range(net.n_inputs) if rng.random() < density]
        rng.shuffle(chans)
        counts = np.zeros(net.n_inputs, dtype=np.int64)
        np.add.at(counts, chans, 1)
        await drv.events(chans)
        spikes, _ = await drv.step(ready_pattern)
        s = golden.step(counts)[0]
        expect = sorted(int(n) for n in out[s[out]])
        assert spikes == expect, f"{label} step {t}: spikes {spikes} != golden {expect}"
        v = await drv.state(Region.V, net.n_neurons)
        np.testing.assert_array_equal(v, golden.v[0], f"{label} step {t}: membrane")
        i = await drv.state(Region.I, net.n_neurons)
        np.testing.assert_array_equal(i, golden.i[0], f"{label} step {t}: synaptic current")


def random_params(rng, fmt, size, extreme=False):
    leak = rng.choice(["mult", "shift", "none"])
    model = rng.choice(["lif", "cuba"])
    one = fmt.decay_one
    k_hi = fmt.shift_range[1]
    decay = (lambda: int(rng.integers(0, one + 1))) if leak == "mult" else (
        lambda: int(rng.integers(1, min(k_hi, 8) + 1))
    )
    thr_hi = fmt.threshold_range[1]
    b_lo, b_hi = fmt.bias_range
    if extreme:  # saturation edges: biases at the limits, thresholds at both ends
        thr = rng.choice([1, thr_hi], size)
        bias = rng.choice([b_lo, b_hi, b_hi // 2, 0], size)
    else:
        thr = rng.integers(1, min(thr_hi, 400), size)
        bias = rng.integers(-20, 21, size)
    return NeuronParams(
        model=model, leak=leak, beta=decay() if leak != "none" else 0,
        alpha=decay() if leak != "none" else 0, threshold=thr, bias=bias,
        reset=rng.choice(["subtract", "zero", "none"]), reset_delay=bool(rng.integers(0, 2)),
    )


def random_network(rng, cfg, extreme=False):
    fmt = cfg.fmt
    w_lo, w_hi = fmt.weight_range
    n_pops = int(rng.integers(2, cfg.n_populations + 1))
    sizes = rng.multinomial(cfg.n_neurons - n_pops - int(rng.integers(0, 8)), [1 / n_pops] * n_pops)
    sizes = [int(s) + 1 for s in sizes]
    if rng.random() < 0.5:  # a tiny population: fan-outs hit one neuron on consecutive clocks
        sizes[-1] += sizes[0] - 1
        sizes[0] = 1
    pops = [Population(f"p{k}", s, random_params(rng, fmt, s, extreme and k == 0))
            for k, s in enumerate(sizes)]
    if not cfg.per_neuron_threshold:  # one threshold per population
        for pop in pops:
            pop.params.threshold = int(np.asarray(pop.params.threshold).ravel()[0])
    n_in = int(rng.integers(1, cfg.n_inputs + 1))
    projections = []
    for k, pop in enumerate(pops):
        if k == 0 or rng.random() < 0.5:
            w = rng.integers(w_lo, w_hi + 1, (n_in, pop.size))
            w[rng.random(w.shape) < 0.2] = 0
            projections.append(Projection(INPUT, pop.name, w))
        for j, src in enumerate(pops):
            r = rng.random()
            if j < k and r < 0.8 or j >= k and r < 0.35:
                if rng.random() < 0.5:
                    w = rng.integers(w_lo, w_hi + 1, (src.size, pop.size))
                    w[rng.random(w.shape) < 0.3] = 0
                else:
                    nnz = int(rng.integers(1, src.size * pop.size // 3 + 2))
                    w = Sparse(rng.integers(0, src.size, nnz), rng.integers(0, pop.size, nnz),
                               rng.integers(w_lo // 2, w_hi // 2 + 1, nnz))
                projections.append(Projection(src.name, pop.name, w))
    # repeated projections from one source to one population: one source's blocks hit the
    # same neurons back to back (read-after-write on the accumulator at distance 1, 2, 3)
    for _ in range(int(rng.integers(0, 4))):
        k = int(rng.integers(0, n_pops))
        w = rng.integers(w_lo // 4, w_hi // 4 + 1, (n_in, pops[k].size))
        projections.append(Projection(INPUT, pops[k].name, w))
        if k + 1 < n_pops:
            w = rng.integers(w_lo // 4, w_hi // 4 + 1, (pops[k].size, pops[k + 1].size))
            projections.append(Projection(pops[k].name, pops[k + 1].name, w))
    outputs = [p.name for p in pops if rng.random() < 0.6] or [pops[-1].name]
    net = Network(n_in, pops, projections, outputs)
    return net if not fit_problems(net, cfg) else None


@cocotb.test()
async def test_random_networks(dut):
    """Random multi-layer recurrent networks, random options, random event streams."""
    cfg = _config()
    drv = Driver(dut, cfg)
    await drv.start()
    for seed in _seeds():
        rng = np.random.default_rng(seed)
        net = None
        while net is None:
            net = random_network(rng, cfg)
        await run_and_compare(drv, net, 12, rng, label=f"seed {seed}")
    status = await drv.status()
    assert status["PARAM_ERRORS"] == 0 and status["BUS_REFUSED"] == 0
    assert status["EVENTS_REFUSED"] == 0


@cocotb.test()
async def test_saturation_and_full_fanout(dut):
    """Biases and thresholds at their limits (saturating v and i), every input channel fanning
    out to every neuron, all channels back to back, a throttled spike stream."""
    cfg = _config()
    fmt = cfg.fmt
    drv = Driver(dut, cfg)
    await drv.start()
    for seed in _seeds():
        rng = np.random.default_rng(1000 + seed)
        net = None
        while net is None:
            net = random_network(rng, cfg, extreme=True)
        await run_and_compare(drv, net, 8, rng, ready_pattern=0.5,
                              label=f"extreme seed {seed}")
    # full fan-out: every channel to every neuron, full-scale weights of both signs
    n = cfg.n_neurons
    half = n // 2
    w_lo, w_hi = fmt.weight_range
    thr_hi = fmt.threshold_range[1]
    rng = np.random.default_rng(5)
    n_in = min(cfg.n_inputs, 8)
    net = Network(
        n_in,
        [Population("a", half, NeuronParams(model="cuba", leak="none", threshold=thr_hi,
                                            bias=fmt.bias_range[1] // 4, reset="none")),
         Population("b", n - half, NeuronParams(leak="shift", beta=1, threshold=1,
                                                reset="zero", reset_delay=False))],
        [Projection(INPUT, "a", rng.choice([w_lo, w_hi], (n_in, half))),
         Projection(INPUT, "b", rng.choice([w_lo, w_hi], (n_in, n - half)))],
        outputs=["a", "b"],
    )
    assert not fit_problems(net, cfg)
    await drv.load(net)
    golden = GoldenChip(net, fmt=fmt)
    for _ in range(10):
        chans = list(rng.permutation(n_in))  # every channel: full fan-out of each, back to back
        counts = np.bincount(chans, minlength=n_in)
        await drv.events(chans)
        spikes, _ = await drv.step()
        s = golden.step(counts)[0]
        assert spikes == sorted(int(k) for k in golden.output_indices[s[golden.output_indices]])
        np.testing.assert_array_equal(await drv.state(Region.V, n), golden.v[0])
        np.testing.assert_array_equal(await drv.state(Region.I, n), golden.i[0])
    lo, hi = fmt.state_range
    assert np.isin(golden.i[0][:half], [lo, hi]).any()  # the test did reach saturation
    assert np.isin(golden.v[0][:half], [lo, hi]).any()


def hazard_network(rng, cfg):
    """Fan-outs that hit one accumulator on consecutive clocks: every input channel reaches
    neuron 0 through three projections (distance 1) and neurons 1..2 through two (distance 2)."""
    fmt = cfg.fmt
    w_lo, w_hi = fmt.weight_range
    n_in = min(cfg.n_inputs, 6)
    rest = cfg.n_neurons - 3
    p = NeuronParams(leak="none", threshold=fmt.threshold_range[1] // 2, reset="subtract")

    def w(a, b):
        return rng.integers(w_lo // 2, w_hi // 2 + 1, (a, b))

    return Network(
        n_in,
        [Population("a", 1, p), Population("b", 2, p), Population("c", rest, p)],
        [Projection(INPUT, "a", w(n_in, 1)), Projection(INPUT, "a", w(n_in, 1)),
         Projection(INPUT, "a", w(n_in, 1)), Projection(INPUT, "b", w(n_in, 2)),
         Projection(INPUT, "b", w(n_in, 2)), Projection(INPUT, "c", w(n_in, rest)),
         Projection("a", "b", w(1, 2)), Projection("a", "b", w(1, 2)),
         Projection("b", "c", w(2, rest)), Projection("c", "a", w(rest, 1)),
         Projection("c", "a", w(rest, 1))],
        outputs=["a", "b", "c"],
    )


@cocotb.test()
async def test_accumulator_hazards(dut):
    """Read-after-write on one accumulator at distance 1 and 2, with back-to-back events."""
    cfg = _config()
    drv = Driver(dut, cfg)
    await drv.start()
    for seed in _seeds():
        rng = np.random.default_rng(3000 + seed)
        net = hazard_network(rng, cfg)
        assert not fit_problems(net, cfg)
        await run_and_compare(drv, net, 8, rng, label=f"hazard seed {seed}")
        acc = await drv.read(address(Region.ACC), cfg.n_neurons)
        assert len(acc) == cfg.n_neurons


@cocotb.test()
async def test_reload_and_refusals(dut):
    """Out-of-range events and bus accesses are refused and counted, never disturb a neuron;
    reloading an image resets the state (pending recurrent spikes included)."""
    cfg = _config()
    drv = Driver(dut, cfg)
    await drv.start()
    rng = np.random.default_rng(77)
    net = None
    while net is None or not any(net.is_recurrent(p) for p in net.projections):
        net = random_network(rng, cfg)
    await run_and_compare(drv, net, 4, rng, label="first load")
    before = await drv.state(Region.V, cfg.n_neurons)
    refused = await drv.write(address(Region.V, cfg.n_neurons), [1, 2])
    refused += await drv.write(address(Region.STATUS, 0), [5])
    refused += await drv.write(15 << 20, [5])
    assert refused == 4
    await drv.events([net.n_inputs, cfg.n_inputs + 5, 0xFFFF])
    assert (await drv.read(address(Region.CONFIG, ConfigWord.N_INPUTS.value), 1)) == [
        net.n_inputs
    ]
    np.testing.assert_array_equal(await drv.state(Region.V, cfg.n_neurons), before)
    status = await drv.status()
    assert status["EVENTS_REFUSED"] == 3
    assert status["BUS_REFUSED"] == 4
    assert status["CAP_NEURONS"] == cfg.n_neurons
    # reload the same network: must behave as a fresh golden model
    await run_and_compare(drv, net, 6, rng, label="reload")
