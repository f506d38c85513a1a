"""Synaptic delays in the golden model, the compiler's files and the NIR importer.

Spec: ``docs/network.md``, "Synaptic delays": a spike of step ``t`` reaches its target in step
``t + a + d`` (``a = 0`` from the input or an earlier population, ``1`` otherwise); a state
reset forgets every spike in flight.

The golden model is checked against :class:`DelayReference` below, a second, deliberately plain
reading of that spec: one Python loop over the steps, one FIFO of past source spikes *per
projection* (``lag = a + d`` entries, zeros after a reset), and the neuron update written again
from ``docs/neuron.md`` (float mode: ``decay(x) = beta * x``, no ``sat``; integer mode: the
pure-Python per-neuron ``ref_neuron_step`` of ``tests/reference_loop.py``).  The integer golden
model is compared with the *same* reference in integer arithmetic (not with a relay-population
construction).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from reference_loop import _neuron_params, ref_neuron_step

from spikeforge.errors import ConfigError, UnsupportedError
from spikeforge.host.compiler import from_weights, load_network, save_network
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.sim.golden import GoldenChip, network_problems
from spikeforge.spec import LeakMode, NeuronModel, ResetMode

try:
    import nir
except ImportError:  # pragma: no cover - nir is a dependency of the importer tests only
    nir = None

needs_nir = pytest.mark.skipif(nir is None, reason="needs nir")

ROOT = Path(__file__).resolve().parents[1]
NIR_DIR = ROOT / "tests" / "data" / "nir"


def _seed(*key):
    return zlib.crc32(repr(key).encode())


# --- the reference ---------------------------------------------------------------------------
class DelayReference:
    """The network of ``docs/network.md`` in one plain loop (batch of independent samples).

    Every projection keeps a FIFO of its source's last ``lag = a + d`` spike vectors (for a
    ``lag = 0`` projection: none, the source's spikes of this very step are used).  At the start
    of a step, the oldest entry of every FIFO (the spikes of step ``t - lag``) is added to its
    target's accumulator; then the populations update in order, each first adding the same-step
    spikes of ``lag = 0`` projections; at the end of the step every FIFO drops its oldest entry
    and appends its source's spikes of this step.  A reset fills the FIFOs with zeros.
    """

    def __init__(self, net: Network, arithmetic: str, batch: int):
        self.net, self.arithmetic, self.batch = net, arithmetic, batch
        self.order = {p.name: k for k, p in enumerate(net.populations)}
        self.projs = []
        for proj in net.projections:
            a = 0 if proj.src == INPUT or self.order[proj.src] < self.order[proj.dst] else 1
            w = net.dense_weights(proj)
            w = w.astype(np.int64) if arithmetic == "int" else w.astype(np.float64)
            self.projs.append((proj.src, proj.dst, w, a + proj.delay))
        self.reset()

    def reset(self):
        zeros = np.int64 if self.arithmetic == "int" else np.float64
        self.v = {p.name: np.zeros((self.batch, p.size), zeros) for p in self.net.populations}
        self.i = {p.name: np.zeros((self.batch, p.size), zeros) for p in self.net.populations}
        self.fifo = []
        for src, _, _, lag in self.projs:
            n = self.net.source_size(src)
            self.fifo.append([np.zeros((self.batch, n), zeros) for _ in range(lag)])

    def _update(self, pop, acc):
        if self.arithmetic == "int":
            v, i = self.v[pop.name], self.i[pop.name]
            s = np.zeros(v.shape, dtype=bool)
            for b in range(self.batch):
                for k in range(pop.size):
                    p = _neuron_params(pop.params, k)
                    v[b, k], i[b, k], s[b, k] = ref_neuron_step(
                        int(v[b, k]), int(i[b, k]), int(acc[b, k]), p)
            return s
        # float mode of docs/neuron.md: the same seven steps, decay(x) = beta * x, no sat
        prm = pop.params
        if prm.leak == LeakMode.NONE:  # integrate-and-fire: no decay of v nor of i
            beta = alpha = np.float64(1.0)
        else:
            beta, alpha = np.asarray(prm.beta, np.float64), np.asarray(prm.alpha, np.float64)
        thr = np.asarray(prm.threshold, np.float64)
        v, i = self.v[pop.name], self.i[pop.name]
        r = (v > thr).astype(np.float64)
        x = acc + np.asarray(prm.bias, np.float64)
        cuba = prm.model == NeuronModel.CUBA
        if cuba:
            i = alpha * i + x
            cur = i
        else:
            cur = x
        if prm.reset == ResetMode.SUBTRACT:
            u = beta * v + cur - r * thr
        elif prm.reset == ResetMode.ZERO:
            u = beta * ((1 - r) * v) + cur if not cuba else (beta * v + cur) * (1 - r)
        else:
            u = beta * v + cur
        s = u > thr
        if not prm.reset_delay:
            if prm.reset == ResetMode.SUBTRACT:
                u = u - (s - r) * thr
            elif prm.reset == ResetMode.ZERO:
                u = u - (s - r) * u
        self.v[pop.name], self.i[pop.name] = u, i
        return s

    def run(self, raster):
        """raster (T, batch, n_inputs) -> spikes (T, batch, n_neurons), v, i (same shape)."""
        dt = np.int64 if self.arithmetic == "int" else np.float64
        out_s, out_v, out_i = [], [], []
        for x in raster:
            x = np.asarray(x, dtype=dt)
            acc = {p.name: np.zeros((self.batch, p.size), dt) for p in self.net.populations}
            for (_, dst, w, lag), fifo in zip(self.projs, self.fifo, strict=True):
                if lag:  # spikes of step t - lag, before any population updates
                    acc[dst] = acc[dst] + fifo[0] @ w
            spikes = {INPUT: x}
            for pop in self.net.populations:
                for src, dst, w, lag in self.projs:
                    if dst == pop.name and lag == 0:
                        acc[pop.name] = acc[pop.name] + spikes[src].astype(dt) @ w
                spikes[pop.name] = self._update(pop, acc[pop.name])
            for (src, _, _, lag), fifo in zip(self.projs, self.fifo, strict=True):
                if lag:
                    fifo.pop(0)
                    fifo.append(spikes[src].astype(dt))
            out_s.append(np.concatenate([spikes[p.name] for p in self.net.populations], 1))
            out_v.append(np.concatenate([self.v[p.name] for p in self.net.populations], 1))
            out_i.append(np.concatenate([self.i[p.name] for p in self.net.populations], 1))
        return np.array(out_s), np.array(out_v), np.array(out_i)


# --- random networks -------------------------------------------------------------------------
def _random_params(rng, arithmetic, size):
    model = rng.choice(["lif", "cuba"])
    reset = rng.choice(["subtract", "zero", "none"])
    if arithmetic == "int":
        leak = rng.choice(["mult", "shift", "none"])
        beta = int(rng.integers(2, 8)) if leak == "shift" else int(rng.integers(2800, 4096))
        alpha = int(rng.integers(2, 8)) if leak == "shift" else int(rng.integers(1000, 4000))
        thr = rng.integers(40, 120, size) if rng.random() < 0.5 else int(rng.integers(40, 120))
        bias = int(rng.integers(-3, 6))
    else:
        leak = rng.choice(["mult", "none"])
        beta, alpha = float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.2, 0.9))
        thr = rng.uniform(0.5, 1.5, size) if rng.random() < 0.5 else float(rng.uniform(0.5, 1.5))
        bias = float(rng.uniform(-0.05, 0.1))
    return NeuronParams(model=model, leak=leak, beta=beta, alpha=alpha, threshold=thr,
                        bias=bias, reset=reset, reset_delay=bool(rng.random() < 0.5))


def _weights(rng, arithmetic, n_src, n_dst, scale=1.0):
    if arithmetic == "int":
        w = rng.integers(-50, 90, (n_src, n_dst)) * scale
        w = np.clip(np.round(w), -128, 127).astype(np.int64)
    else:
        w = rng.normal(0.25, 0.5, (n_src, n_dst)) * scale
    w[rng.random(w.shape) < 0.3] = 0
    return w


def random_net(seed, arithmetic, *, max_delay=7, input_delays=True):
    """Several populations; input, feed-forward, backward and self projections, random delays,
    and some (source, target) pairs twice with different delays."""
    rng = np.random.default_rng(seed)
    n_in = int(rng.integers(3, 7))
    sizes = [int(rng.integers(2, 7)) for _ in range(int(rng.integers(2, 5)))]
    pops = [Population(f"p{k}", n, _random_params(rng, arithmetic, n))
            for k, n in enumerate(sizes)]
    projs = []

    def d():
        return int(rng.integers(0, max_delay + 1))

    projs.append(Projection(INPUT, "p0", _weights(rng, arithmetic, n_in, sizes[0], 1.5),
                            d() if input_delays else 0))
    if input_delays and len(sizes) > 2:
        projs.append(Projection(INPUT, "p2", _weights(rng, arithmetic, n_in, sizes[2]), d()))
    for k in range(1, len(sizes)):  # feed-forward chain, plus a second copy with another delay
        projs.append(Projection(f"p{k-1}", f"p{k}", _weights(rng, arithmetic, sizes[k-1],
                                                               sizes[k], 1.5), d()))
        if rng.random() < 0.6:
            projs.append(Projection(f"p{k-1}", f"p{k}", _weights(rng, arithmetic, sizes[k-1],
                                                                   sizes[k], 0.7), d()))
    if len(sizes) > 2:  # skip connection
        projs.append(Projection("p0", f"p{len(sizes)-1}",
                                _weights(rng, arithmetic, sizes[0], sizes[-1], 0.5), d()))
    for k in range(len(sizes)):  # self-recurrence
        if rng.random() < 0.7:
            projs.append(Projection(f"p{k}", f"p{k}", _weights(rng, arithmetic, sizes[k],
                                                                 sizes[k], 0.5), d()))
    projs.append(Projection(f"p{len(sizes)-1}", "p0",  # backward edge
                            _weights(rng, arithmetic, sizes[-1], sizes[0], 0.7), d()))
    return Network(n_in, pops, projs, [f"p{k}" for k in range(len(sizes))])


def _raster(seed, steps, batch, n_in, p=0.35):
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch, n_in)) < p).astype(np.uint8)


SEEDS = range(12)


# --- (a) float golden == reference -----------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_float_golden_matches_reference(seed):
    net = random_net(_seed("float", seed), "float")
    assert any(p.delay for p in net.projections)
    batch, steps = 3, 40
    raster = _raster(_seed("raster", seed), steps, batch, net.n_inputs)
    s_ref, v_ref, _ = DelayReference(net, "float", batch).run(raster)
    out = GoldenChip(net, "float", batch=batch, dtype=np.float64).run(raster)
    assert s_ref.any() and (~s_ref).any()
    np.testing.assert_array_equal(out["spikes"], s_ref)
    np.testing.assert_allclose(out["v"], v_ref, rtol=1e-9, atol=1e-9)


# --- (b) int golden == reference, integer arithmetic -----------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_int_golden_matches_reference(seed):
    net = random_net(_seed("int", seed), "int")
    assert not network_problems(net, "int")[0]
    batch, steps = 2, 40
    raster = _raster(_seed("raster-int", seed), steps, batch, net.n_inputs)
    ref = DelayReference(net, "int", batch)
    s_ref, v_ref, i_ref = ref.run(raster)
    chip = GoldenChip(net, "int", batch=batch)
    out = chip.run(raster)
    assert s_ref.any() and (~s_ref).any()
    np.testing.assert_array_equal(out["spikes"], s_ref)
    np.testing.assert_array_equal(out["v"], v_ref)
    np.testing.assert_array_equal(chip.i, i_ref[-1])


def test_int_golden_large_batch_uses_int32_path():
    """A batch large enough that the populations compute in int32 (not float64) and the input
    projections of a block are one product: still the reference."""
    net = random_net(_seed("int-large"), "int")
    batch = 4096 // min(p.size for p in net.populations) + 1
    raster = _raster(_seed("raster-large"), 12, batch, net.n_inputs)
    out = GoldenChip(net, "int", batch=batch).run(raster)
    s_ref, v_ref, _ = DelayReference(net, "int", 4).run(raster[:, :4])
    np.testing.assert_array_equal(out["spikes"][:, :4], s_ref)
    np.testing.assert_array_equal(out["v"][:, :4], v_ref)


@pytest.mark.parametrize("arithmetic", ["int", "float"])
def test_step_run_events_and_evaluate_agree_with_run(arithmetic):
    net = random_net(_seed("paths", arithmetic), arithmetic)
    raster = _raster(_seed("paths-raster", arithmetic), 30, 3, net.n_inputs)
    want = GoldenChip(net, arithmetic, batch=3).run(raster)["spikes"]
    chip = GoldenChip(net, arithmetic, batch=3)
    np.testing.assert_array_equal(np.array([chip.step(x) for x in raster]), want)
    # evaluate: samples independent, in chunks of 2 (a reset between chunks)
    ev = GoldenChip(net, arithmetic, batch=2).evaluate(raster, output="spikes")
    np.testing.assert_array_equal(ev, want)
    # run_events: batch 1, AER in and out
    one = GoldenChip(net, arithmetic, batch=1)
    events = [np.flatnonzero(x[0]).tolist() for x in raster]
    got = one.run_events(events)
    idx = net.output_indices()
    assert got == [[int(n) for n in idx[want[t, 0, idx]]] for t in range(len(raster))]


# --- (c) d = 0 is today's behaviour ----------------------------------------------------------
@pytest.mark.parametrize("arithmetic", ["int", "float"])
def test_zero_delay_is_bit_identical_to_no_delay_field(arithmetic):
    net = random_net(_seed("zero", arithmetic), arithmetic, max_delay=0)
    assert all(p.delay == 0 for p in net.projections)
    plain = Network(net.n_inputs, net.populations,
                    [Projection(p.src, p.dst, p.weights) for p in net.projections], net.outputs)
    raster = _raster(_seed("zero-raster", arithmetic), 30, 2, net.n_inputs)
    a = GoldenChip(net, arithmetic, batch=2)
    b = GoldenChip(plain, arithmetic, batch=2)
    assert not a._delayed and not a._hist  # no delay machinery at all
    ra, rb = a.run(raster), b.run(raster)
    np.testing.assert_array_equal(ra["spikes"], rb["spikes"])
    np.testing.assert_array_equal(ra["v"], rb["v"])
    np.testing.assert_array_equal(a.i, b.i)
    # and today's behaviour is the reference's with every lag a (0 or 1)
    s_ref, v_ref, _ = DelayReference(plain, arithmetic, 2).run(raster)
    np.testing.assert_array_equal(ra["spikes"], s_ref)


# --- (d) a reset forgets spikes in flight ----------------------------------------------------
def _relay_net(delay, recurrent=False):
    """input -> a (IF, fires on one input) -> b with ``delay``: b fires once per a spike."""
    p = NeuronParams(leak="none", threshold=5, reset="zero")
    pops = [Population("b", 1, p), Population("a", 1, p)] if recurrent else \
        [Population("a", 1, p), Population("b", 1, p)]
    return Network(1, pops, [Projection(INPUT, "a", np.array([[10]])),
                             Projection("a", "b", np.array([[10]]), delay)], ["a", "b"])


@pytest.mark.parametrize("recurrent", [False, True])
def test_reset_forgets_spikes_in_flight(recurrent):
    d = 5
    net = _relay_net(d, recurrent)
    b = net.base("b")
    lag = d + (1 if recurrent else 0)
    chip = GoldenChip(net, "int")
    x = np.zeros((3, 1, 1), np.uint8)
    x[1] = 1  # a fires in step 1
    assert not chip.run(x)["spikes"][:, 0, b].any()  # the spike is still on its way
    chip.reset()
    later = chip.run(np.zeros((10, 1, 1), np.uint8))["spikes"]
    assert not later.any()  # forgotten
    # without the reset, it arrives in step 1 + lag (run continues the chip's time)
    chip.reset()
    chip.run(x)
    later = chip.run(np.zeros((10, 1, 1), np.uint8))["spikes"][:, 0, b]
    assert np.flatnonzero(later).tolist() == [1 + lag - 3]
    # evaluate: each chunk of samples starts from a reset (nothing leaks between samples)
    data = np.zeros((4, 3, 1), np.uint8)
    data[3, 0] = 1  # sample 0 fires a in its last step; samples 1, 2 are silent
    counts = GoldenChip(net, "int", batch=1).evaluate(data)
    assert counts[:, b].tolist() == [0, 0, 0]


# --- (e) input projection delays -------------------------------------------------------------
@pytest.mark.parametrize("arithmetic", ["int", "float"])
@pytest.mark.parametrize("d", [1, 3, 7])
def test_input_delay_shifts_the_raster(arithmetic, d):
    """Every input projection delayed by d (no biases) == the undelayed network on the raster
    shifted by d steps."""
    net = random_net(_seed("input", arithmetic), arithmetic, max_delay=0)
    for pop in net.populations:
        pop.params.bias = 0
    delayed = Network(net.n_inputs, net.populations,
                      [Projection(p.src, p.dst, p.weights, d if p.src == INPUT else 0)
                       for p in net.projections], net.outputs)
    raster = _raster(_seed("input-raster", arithmetic), 30, 2, net.n_inputs)
    shifted = np.concatenate([np.zeros((d,) + raster.shape[1:], raster.dtype), raster])
    want = GoldenChip(net, arithmetic, batch=2).run(shifted)
    got = GoldenChip(delayed, arithmetic, batch=2).run(raster)
    np.testing.assert_array_equal(got["spikes"], want["spikes"][:30])
    np.testing.assert_array_equal(got["v"], want["v"][:30])
    # step by step (no block products) and run_events as well
    chip = GoldenChip(delayed, arithmetic, batch=2)
    np.testing.assert_array_equal(np.array([chip.step(x) for x in raster]), want["spikes"][:30])


def test_only_delayed_input_projections():
    """A network whose every input projection is delayed (no same-step input products)."""
    net = _relay_net(0)
    net = Network(1, net.populations, [Projection(INPUT, "a", np.array([[10]]), 2),
                                       Projection("a", "b", np.array([[10]]), 1)], ["a", "b"])
    x = np.zeros((8, 1, 1), np.uint8)
    x[0] = x[4] = 1
    s = GoldenChip(net, "int").run(x)["spikes"][:, 0]
    assert np.flatnonzero(s[:, 0]).tolist() == [2, 6]
    assert np.flatnonzero(s[:, 1]).tolist() == [3, 7]


# --- the accumulator bound counts every projection ------------------------------------------
def test_fit_check_counts_every_delayed_projection():
    p = NeuronParams(leak="none", threshold=5)
    w = np.full((1, 1), 100)
    pops = [Population("a", 1, p), Population("b", 1, p)]
    # 2**19 - 1 = 524287: 5243 projections of 100 overflow, whatever their delays
    projs = [Projection("a", "b", w, k % 8) for k in range(5243)]
    problems, _ = network_problems(Network(0, pops, projs), "int")
    assert any("overflows the 20-bit accumulator" in m for m in problems)
    problems, _ = network_problems(Network(0, pops, projs[:5242]), "int")
    assert not problems


# --- the compiler: from_weights and .npz files ----------------------------------------------
def test_from_weights_delays_and_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    ws = [rng.normal(0, 1, (4, 5)), rng.normal(0, 1, (5, 3)), rng.normal(0, 1, (3, 2))]
    net = from_weights(ws, delays=[0, 2, 7])
    assert [p.delay for p in net.projections] == [0, 2, 7]
    assert [p.delay for p in from_weights(ws).projections] == [0, 0, 0]
    with pytest.raises(ConfigError, match="2 delays for 3 weight matrices"):
        from_weights(ws, delays=[1, 2])
    with pytest.raises(ConfigError, match="delay=-1"):
        from_weights(ws, delays=[0, -1, 0])
    save_network(net, tmp_path / "n.npz")
    back = load_network(tmp_path / "n.npz")
    assert [p.delay for p in back.projections] == [0, 2, 7]
    raster = _raster(3, 20, 1, 4, 0.5)
    np.testing.assert_array_equal(GoldenChip(back, "float").run(raster)["spikes"],
                                  GoldenChip(net, "float").run(raster)["spikes"])


def test_npz_without_delays_loads_with_zero(tmp_path):
    """A file written before synaptic delays (no "delay" in its header) loads with delay 0."""
    net = from_weights([np.ones((2, 3)), np.ones((3, 1))], delays=[0, 4])
    save_network(net, tmp_path / "n.npz")
    with np.load(tmp_path / "n.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays.pop("spikeforge_network")))
    for e in meta["projections"]:
        del e["delay"]
    np.savez_compressed(tmp_path / "old.npz", spikeforge_network=np.array(json.dumps(meta)),
                        **arrays)
    assert [p.delay for p in load_network(tmp_path / "old.npz").projections] == [0, 0]


# --- NIR import ------------------------------------------------------------------------------
DT = 1e-4


def _lif(n, thr=1.0):
    return nir.LIF(tau=np.full(n, 1e-3), r=np.full(n, 10.0), v_leak=np.zeros(n),
                   v_threshold=np.full(n, thr), v_reset=np.zeros(n))


def _graph(nodes, edges, n_in):
    nodes = {"input": nir.Input(input_type={"input": np.array([n_in])}), **nodes,
             "output": nir.Output(output_type={"output": np.array([2])})}
    return nir.NIRGraph(nodes=nodes, edges=edges)


def _from_nir(g, dt=DT):
    from spikeforge.host.nir_import import Settings, from_nir
    return from_nir(g, Settings(dt=dt))


def _delays(net):
    return {(p.src, p.dst): p.delay for p in net.projections}


@needs_nir
@pytest.mark.parametrize("place", ["before", "after"])
def test_nir_delay_before_or_after_the_linear(place):
    w = np.arange(6.0).reshape(2, 3) / 10  # (n_out, n_in)
    if place == "before":
        edges = [("input", "d"), ("d", "fc"), ("fc", "lif"), ("lif", "output")]
    else:
        edges = [("input", "fc"), ("fc", "d"), ("d", "lif"), ("lif", "output")]
    n = 3 if place == "before" else 2
    g = _graph({"d": nir.Delay(delay=np.full(n, 3 * DT)), "fc": nir.Affine(
        weight=w, bias=np.zeros(2)), "lif": _lif(2)}, edges, 3)
    net = _from_nir(g)
    assert _delays(net) == {(INPUT, "lif"): 3}
    np.testing.assert_allclose(net.projections[0].weights, w.T * 1.0, rtol=1e-6)


@needs_nir
def test_nir_delays_in_series_add_up_and_zero_delay_is_none():
    g = _graph({"d1": nir.Delay(delay=np.full(3, 2 * DT)), "fc": nir.Linear(weight=np.ones((2, 3))),
                "d2": nir.Delay(delay=np.full(2, 3 * DT)), "d3": nir.Delay(delay=np.zeros(2)),
                "lif": _lif(2)},
               [("input", "d1"), ("d1", "fc"), ("fc", "d2"), ("d2", "d3"), ("d3", "lif"),
                ("lif", "output")], 3)
    assert _delays(_from_nir(g)) == {(INPUT, "lif"): 5}


@needs_nir
def test_nir_per_element_delays_split_the_projection():
    w = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    g = _graph({"fc": nir.Linear(weight=w), "d": nir.Delay(delay=np.array([1, 4]) * DT),
                "lif": _lif(2)},
               [("input", "fc"), ("fc", "d"), ("d", "lif"), ("lif", "output")], 3)
    net = _from_nir(g)
    by_delay = {p.delay: np.asarray(p.weights) for p in net.projections}
    assert sorted(by_delay) == [1, 4]
    np.testing.assert_allclose(by_delay[1], [[1, 0], [2, 0], [3, 0]])
    np.testing.assert_allclose(by_delay[4], [[0, 4], [0, 5], [0, 6]])


@needs_nir
@pytest.mark.parametrize("delay,err,needle", [
    (2.5 * DT, UnsupportedError, "2.5 timesteps"),
    (-1 * DT, ConfigError, "negative"),
])
def test_nir_bad_delay_values_are_refused(delay, err, needle):
    g = _graph({"fc": nir.Linear(weight=np.ones((2, 3))), "dd": nir.Delay(delay=np.full(2, delay)),
                "lif": _lif(2)},
               [("input", "fc"), ("fc", "dd"), ("dd", "lif"), ("lif", "output")], 3)
    with pytest.raises(err, match=needle) as e:
        _from_nir(g)
    assert "'dd'" in str(e.value)


@needs_nir
def test_nir_delay_tolerance():
    """delay/dt within 1e-6 (relative) of a whole number is that number (float32 files)."""
    g = _graph({"fc": nir.Linear(weight=np.ones((2, 3))),
                "d": nir.Delay(delay=np.full(2, np.float32(7 * DT))), "lif": _lif(2)},
               [("input", "fc"), ("fc", "d"), ("d", "lif"), ("lif", "output")], 3)
    assert _delays(_from_nir(g)) == {(INPUT, "lif"): 7}


@needs_nir
def test_nir_biased_affine_before_a_delay_is_refused():
    g = _graph({"fc": nir.Affine(weight=np.ones((2, 3)), bias=np.full(2, 0.5)),
                "dd": nir.Delay(delay=np.full(2, DT)), "lif": _lif(2)},
               [("input", "fc"), ("fc", "dd"), ("dd", "lif"), ("lif", "output")], 3)
    with pytest.raises(UnsupportedError, match="non-zero Affine bias") as e:
        _from_nir(g)
    assert "'dd'" in str(e.value) and "first 1 steps" in str(e.value)


@needs_nir
def test_nir_delay_before_the_output_is_refused():
    g = _graph({"fc": nir.Linear(weight=np.ones((2, 3))), "lif": _lif(2),
                "dd": nir.Delay(delay=np.full(2, DT))},
               [("input", "fc"), ("fc", "lif"), ("lif", "dd"), ("dd", "output")], 3)
    with pytest.raises(UnsupportedError, match="'dd' \\(Delay\\) feeds the Output"):
        _from_nir(g)


FIXTURES = {
    # file: {(src, dst): delay}
    "delay_ff_lif.nir": {(INPUT, "lif1"): 1, ("lif1", "lif2"): 2},
    "delay_max7_lif.nir": {(INPUT, "lif1"): 0, ("lif1", "lif2"): 7},
    "delay_rec_cuba.nir": {(INPUT, "cuba"): 0, ("cuba", "cuba"): 2, ("cuba", "out"): 0},
}


@needs_nir
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_nir_fixtures_import_with_their_delays_and_run(name):
    from spikeforge.host.compiler import load_model
    from spikeforge.host.quantize import quantize

    net = load_model(NIR_DIR / name)
    assert _delays(net) == FIXTURES[name]
    raster = _raster(_seed(name), 30, 2, net.n_inputs, 0.5)
    out = GoldenChip(net, "float", batch=2, dtype=np.float64).run(raster)
    s_ref, v_ref, _ = DelayReference(net, "float", 2).run(raster)
    np.testing.assert_array_equal(out["spikes"], s_ref)
    np.testing.assert_allclose(out["v"], v_ref, rtol=1e-9, atol=1e-9)
    assert out["spikes"].any()
    q = quantize(net)  # the integer network keeps the delays and runs too
    qnet = getattr(q, "net", getattr(q, "network", q))
    assert _delays(qnet) == FIXTURES[name]
    GoldenChip(qnet, "int", batch=2).run(raster)


@needs_nir
def test_nir_fixtures_are_up_to_date(tmp_path):
    """make_delay_fixtures.py regenerates exactly the committed files' networks."""
    subprocess.run([sys.executable, str(ROOT / "tests" / "data" / "make_delay_fixtures.py"),
                    "--out", str(tmp_path)], check=True, capture_output=True)
    from spikeforge.host.compiler import load_model
    for name in FIXTURES:
        a, b = load_model(NIR_DIR / name), load_model(tmp_path / name)
        assert _delays(a) == _delays(b)
        for pa, pb in zip(a.projections, b.projections, strict=True):
            np.testing.assert_array_equal(pa.weights, pb.weights)


# --- the example -----------------------------------------------------------------------------
def test_delay_coincidence_example_runs():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "delay_coincidence.py")],
                       capture_output=True, text=True, timeout=120, check=True)
    assert "delayed network detects only offset" in r.stdout
    assert "no delay-free weights detect" in r.stdout
