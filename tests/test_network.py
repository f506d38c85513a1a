"""Whole networks in the golden model's integer mode against the plain reference loop, the
timing of projections, and the refusal of bad input."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_loop import ReferenceChip

from spikeforge.errors import ConfigError
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection, Sparse
from spikeforge.sim.golden import GoldenChip, validate_network
from spikeforge.spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode


def test_the_older_import_path_is_the_same_module():
    from spikeforge.sim import network as old

    assert (old.Network, old.Population, old.Projection, old.NeuronParams, old.Sparse,
            old.INPUT) == (Network, Population, Projection, NeuronParams, Sparse, INPUT)
    assert sorted(old.__all__) == sorted(__import__("spikeforge.network").network.__all__)


# --- random networks -----------------------------------------------------------------------------
def random_network(rng, fmt=DEFAULT_FORMAT):
    """Several populations, input + forward + recurrent (self and backward) projections, dense
    and sparse weights, scalar and per-neuron parameters; thresholds low enough to spike often."""
    n_in = int(rng.integers(1, 10))
    n_pop = int(rng.integers(1, 5))
    wlo, whi = fmt.weight_range
    pops = []
    for k in range(n_pop):
        size = int(rng.integers(1, 9))
        leak = rng.choice(list(LeakMode))
        per_neuron = rng.random() < 0.5

        def draw(lo, hi, size=size, per_neuron=per_neuron):
            if per_neuron:
                return rng.integers(lo, hi + 1, size)
            return int(rng.integers(lo, hi + 1))

        if leak == LeakMode.MULT:
            beta, alpha = draw(0, fmt.decay_one), draw(0, fmt.decay_one)
        elif leak == LeakMode.SHIFT:
            beta, alpha = draw(1, 6), draw(1, 6)
        else:
            beta, alpha = 0, 0
        params = NeuronParams(
            model=rng.choice(list(NeuronModel)), leak=leak, reset=rng.choice(list(ResetMode)),
            reset_delay=bool(rng.random() < 0.5), beta=beta, alpha=alpha,
            threshold=draw(1, 300), bias=draw(-20, 40),
        )
        pops.append(Population(f"p{k}", size, params))
    names = [p.name for p in pops]
    sizes = {p.name: p.size for p in pops}
    sizes[INPUT] = n_in
    pairs = [(INPUT, n) for n in names if rng.random() < 0.7] or [(INPUT, names[0])]
    for s in names:
        for d in names:
            if rng.random() < 0.45:
                pairs.append((s, d))  # forward, backward and self edges alike
    projs = []
    for s, d in pairs:
        ns, nd = sizes[s], sizes[d]
        if rng.random() < 0.5:
            w = rng.integers(wlo, whi + 1, (ns, nd))
            w[rng.random((ns, nd)) < 0.4] = 0
            projs.append(Projection(s, d, w))
        else:
            m = int(rng.integers(0, ns * nd + 1))
            pos = rng.choice(ns * nd, m, replace=False)
            w = rng.integers(wlo, whi + 1, m)
            # some synapses are stored as two entries that add up (duplicates are allowed)
            split = rng.random(m) < 0.3
            half = w[split] // 2
            pos = np.concatenate([pos, pos[split]])
            w = np.concatenate([np.where(split, w - w // 2, w), half])
            order = rng.permutation(len(pos))
            projs.append(Projection(s, d, Sparse(pos[order] // nd, pos[order] % nd, w[order])))
    outputs = [n for n in names if rng.random() < 0.5] or [names[-1]]
    return Network(n_in, pops, projs, outputs)


def _compare(net, raster, fmt=DEFAULT_FORMAT):
    """Step the golden chip with a batch, every sample against its own reference chip."""
    batch = raster.shape[1]
    chip = GoldenChip(net, "int", batch=batch, fmt=fmt)
    refs = [ReferenceChip(net, fmt) for _ in range(batch)]
    all_spikes = []
    for t in range(raster.shape[0]):
        spikes = chip.step(raster[t])
        all_spikes.append(spikes)
        for b, ref in enumerate(refs):
            rs, rv = ref.step(raster[t, b])
            exp_s = [x for p in net.populations for x in rs[p.name]]
            exp_v = [x for p in net.populations for x in rv[p.name]]
            exp_i = [x for p in net.populations for x in ref.i[p.name]]
            assert spikes[b].astype(int).tolist() == exp_s, f"spikes, step {t}, sample {b}"
            assert chip.v[b].tolist() == exp_v, f"membranes, step {t}, sample {b}"
            assert chip.i[b].tolist() == exp_i, f"currents, step {t}, sample {b}"
    return np.array(all_spikes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_network_matches_reference(seed):
    rng = np.random.default_rng(seed)
    net = random_network(rng)
    batch = int(rng.integers(1, 4))
    raster = rng.random((25, batch, net.n_inputs)) < rng.uniform(0.1, 0.9)
    spikes = _compare(net, raster)
    # batch > 1: every sample equals a batch-1 run of the same input
    if batch > 1:
        for b in range(batch):
            out = GoldenChip(net, "int", batch=1).run(raster[:, b])
            assert np.array_equal(out["spikes"][:, 0], spikes[:, b])
    # run_events: AER in, AER out, same spikes as run()
    chip = GoldenChip(net, "int")
    events = [np.flatnonzero(raster[t, 0]).tolist() for t in range(raster.shape[0])]
    got = chip.run_events(events)
    idx = chip.output_indices
    assert got == [sorted(int(n) for n in idx[spikes[t, 0, idx]]) for t in range(len(events))]


def test_random_networks_are_busy():
    """The random networks exercise what they should: spikes, saturation, recurrence."""
    n_spikes = n_sat = n_rec = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        net = random_network(rng)
        n_rec += sum(net.is_recurrent(p) for p in net.projections)
        raster = rng.random((25, 1, net.n_inputs)) < 0.5
        out = GoldenChip(net, "int").run(raster)
        n_spikes += int(out["spikes"].sum())
        n_sat += int((np.abs(out["v"]) >= 32767).sum())
    assert n_spikes > 1000 and n_rec > 20 and n_sat > 0


def test_small_format_network_matches_reference():
    fmt = Format(weight_bits=4, state_bits=8, acc_bits=12, threshold_bits=8, bias_bits=8,
                 decay_frac_bits=4)
    for seed in range(8):
        rng = np.random.default_rng(1000 + seed)
        net = random_network(rng, fmt)
        for p in net.populations:  # thresholds and biases of an 8-bit state
            p.params.threshold = int(rng.integers(1, 60))
            p.params.bias = int(rng.integers(-8, 8))
            if p.params.leak == LeakMode.MULT:
                p.params.beta = int(rng.integers(0, 17))
                p.params.alpha = int(rng.integers(0, 17))
        raster = rng.random((20, 2, net.n_inputs)) < 0.5
        _compare(net, raster, fmt)


def test_wide_format_network_matches_reference():
    """A format too wide for the int32 fast path (int64 arithmetic throughout)."""
    fmt = Format(weight_bits=12, state_bits=24, acc_bits=30, threshold_bits=24, bias_bits=24,
                 decay_frac_bits=14)
    for seed in range(6):
        rng = np.random.default_rng(2000 + seed)
        net = random_network(rng, fmt)
        for p in net.populations:
            p.params.threshold = int(rng.integers(1, 40000))
            if p.params.leak == LeakMode.MULT:
                p.params.beta = int(rng.integers(0, fmt.decay_one + 1))
                p.params.alpha = int(rng.integers(0, fmt.decay_one + 1))
        raster = rng.random((15, 2, net.n_inputs)) < 0.5
        _compare(net, raster, fmt)


def test_run_events_matches_reference_in_any_event_order():
    """Events of one timestep may arrive in any order: the accumulator is exact."""
    for seed in range(10):
        rng = np.random.default_rng(3000 + seed)
        net = random_network(rng)
        fired = rng.random((20, net.n_inputs)) < 0.5
        events = [list(np.flatnonzero(row)) for row in fired]
        for ev in events:
            rng.shuffle(ev)
        chip, ref = GoldenChip(net, "int"), ReferenceChip(net)
        idx = set(chip.output_indices.tolist())
        for t, row in enumerate(fired):
            out = chip.run_events([events[t]])[0]
            rs, rv = ref.step(row.astype(int).tolist())
            flat = [x for p in net.populations for x in rs[p.name]]
            assert out == [n for n, x in enumerate(flat) if x and n in idx], f"step {t}"
            assert chip.v[0].tolist() == [x for p in net.populations for x in rv[p.name]]


def test_repeated_input_addresses_are_refused():
    net = Network(3, [Population("a", 2, NeuronParams(leak="none", threshold=100))],
                  [Projection(INPUT, "a", np.array([[10, 1], [20, 2], [30, 3]]))])
    chip = GoldenChip(net, "int")
    with pytest.raises(ConfigError, match="input channel 0 appears 2 times"):
        chip.run_events([[0, 0, 2]])
    with pytest.raises(ConfigError, match=r"inputs\[0, 1\]=2 is not valid: allowed 0 or 1"):
        chip.step(np.array([[0, 2, 0]]))
    chip.run_events([[0, 2]])
    assert chip.v[0].tolist() == [40, 4]


# --- timing of projections (hand-derived) --------------------------------------------------------
def _if(size=1, thr=5):
    return NeuronParams(leak="none", threshold=thr, reset="zero")


def test_feed_forward_chain_delivers_in_the_same_step():
    eye = np.eye(1, dtype=int) * 10
    net = Network(1, [Population(n, 1, _if()) for n in ("a", "b", "c")],
                  [Projection(INPUT, "a", eye), Projection("a", "b", eye),
                   Projection("b", "c", eye)], outputs=["a", "b", "c"])
    out = GoldenChip(net).run(np.array([[1], [0], [0]]))
    assert out["spikes"][:, 0].astype(int).tolist() == [[1, 1, 1], [0, 0, 0], [0, 0, 0]]


def test_self_and_backward_edges_deliver_next_step():
    eye = np.eye(1, dtype=int) * 10
    # a -> b (forward), b -> a (backward: next step), c -> c (self: next step), a -> c
    net = Network(1, [Population(n, 1, _if()) for n in ("a", "b", "c")],
                  [Projection(INPUT, "a", eye), Projection("a", "b", eye),
                   Projection("b", "a", eye), Projection("a", "c", eye * 0),
                   Projection(INPUT, "c", eye), Projection("c", "c", eye)],
                  outputs=["a", "b", "c"])
    chip = GoldenChip(net)
    got = [chip.step([x])[0].astype(int).tolist() for x in (1, 0, 0, 0)]
    # a and b keep each other going: a(t) -> b(t) -> a(t+1); c re-excites itself every step
    assert got == [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    # a later population feeding an earlier one counts as recurrent
    assert net.is_recurrent(net.projections[2]) and net.is_recurrent(net.projections[5])
    assert not net.is_recurrent(net.projections[1])
    ref = ReferenceChip(net)
    assert [ref.run([[x]])[0][0] for x in (1, 0, 0, 0)] == got


def test_recurrent_spikes_of_the_last_step_wait_in_the_accumulator():
    eye = np.eye(1, dtype=int) * 3
    net = Network(1, [Population("a", 1, NeuronParams(leak="none", threshold=1))],
                  [Projection(INPUT, "a", eye * 2), Projection("a", "a", eye)])
    chip = GoldenChip(net)
    chip.step([1])  # v = 2 > 1: spike; the recurrent 3 waits for the next step
    assert chip.acc[0].tolist() == [3]
    chip.reset()
    assert chip.acc[0].tolist() == [0] and chip.v[0].tolist() == [0]


# --- bad input ----------------------------------------------------------------------------------
def _net(params=None, w=None, n_in=2, size=3):
    params = params or NeuronParams(threshold=10, beta=4000)
    w = np.ones((n_in, size), dtype=int) if w is None else w
    return Network(n_in, [Population("a", size, params)], [Projection(INPUT, "a", w)])


def _refused(fn, *words):
    with pytest.raises(ConfigError) as e:
        fn()
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


@pytest.mark.parametrize("kw, words", [
    (dict(beta=4097), ["beta", "4097", "0..4096"]),
    (dict(beta=[4000, -1, 3]), ["beta", "-1", "0..4096", "neuron 1"]),
    (dict(model="cuba", alpha=5000), ["alpha", "5000", "0..4096"]),
    (dict(leak="shift", beta=0), ["beta", "0", "1..15"]),
    (dict(leak="shift", beta=16), ["beta", "16", "1..15"]),
    (dict(leak="shift", model="cuba", beta=3, alpha=[1, 2, 17]), ["alpha", "17", "1..15"]),
    (dict(threshold=0), ["threshold", "0", "1..32767"]),
    (dict(threshold=-5), ["threshold", "-5", "1..32767"]),
    (dict(threshold=32768), ["threshold", "32768", "1..32767"]),
    (dict(bias=-32769), ["bias", "-32769", "-32768..32767"]),
    (dict(beta=[4000, 2.5, 3]), ["beta", "2.5", "not an integer"]),
    (dict(threshold=[1, 2]), ["threshold", "(2,)", "(3,)"]),
])
def test_bad_int_params(kw, words):
    base = dict(threshold=10, beta=4000)
    base.update(kw)
    _refused(lambda: GoldenChip(_net(NeuronParams(**base))), "'a'", *words)


@pytest.mark.parametrize("kw, words", [
    (dict(beta=1.5), ["beta", "1.5", "0.0..1.0"]),
    (dict(beta=-0.1), ["beta", "-0.1", "0.0..1.0"]),
    (dict(threshold=0.0), ["threshold", "0.0", "> 0"]),
    (dict(threshold=[1.0, -1.0, 2.0]), ["threshold", "-1.0", "> 0"]),
    (dict(bias=float("nan")), ["bias", "non-finite"]),
])
def test_bad_float_params(kw, words):
    base = dict(threshold=1.0, beta=0.9)
    base.update(kw)
    _refused(lambda: GoldenChip(_net(NeuronParams(**base)), "float"), *words)


@pytest.mark.parametrize("kw, words", [
    (dict(model="izhikevich"), ["model", "izhikevich", "lif, cuba"]),
    (dict(leak="exp"), ["leak", "exp", "mult, shift, none"]),
    (dict(reset="soft"), ["reset", "soft", "subtract, zero, none"]),
    (dict(reset_delay="yes"), ["reset_delay", "yes", "True, False"]),
])
def test_bad_options(kw, words):
    _refused(lambda: NeuronParams(**kw), *words)


def test_bad_weights():
    w = np.ones((2, 3), dtype=int)
    w[1, 2] = 128
    _refused(lambda: GoldenChip(_net(w=w)), "weight[1, 2]", "128", "-128..127")
    w[1, 2] = -129
    _refused(lambda: GoldenChip(_net(w=w)), "weight[1, 2]", "-129", "-128..127")
    wf = np.ones((2, 3))
    wf[0, 1] = 0.5
    _refused(lambda: GoldenChip(_net(w=wf)), "weight[0, 1]", "0.5", "integer", "-128..127")
    wf[0, 1] = np.inf
    _refused(lambda: GoldenChip(_net(NeuronParams(beta=0.9), w=wf), "float"), "non-finite")
    # sparse duplicates add up: two int8 weights of 100 are one synapse of 200, refused
    sp = Sparse([0, 0], [1, 1], np.array([100, 100], dtype=np.int8))
    _refused(lambda: GoldenChip(_net(w=sp)), "200", "-128..127")
    _refused(lambda: GoldenChip(_net(w=Sparse([0], [3], [1]))), "col", "0..2")
    _refused(lambda: GoldenChip(_net(w=Sparse([2], [0], [1]))), "row", "0..1")
    _refused(lambda: Sparse([0, 1], [0], [1, 1]), "same length", "2, 1, 2")


def test_bad_shapes():
    _refused(lambda: GoldenChip(_net(w=np.ones((3, 2), dtype=int))), "(3, 2)", "(2, 3)")
    chip = GoldenChip(_net(), batch=2)
    _refused(lambda: chip.step(np.ones((1, 2), dtype=bool)), "(1, 2)", "(2, 2)")
    _refused(lambda: chip.run(np.ones((4, 2), dtype=bool)), "(4, 2)", "(T, batch, n_inputs)")
    _refused(lambda: chip.run_events([[0]]), "batch=1", "batch=2")
    chip1 = GoldenChip(_net())
    _refused(lambda: chip1.run_events([[0], [2]]), "timestep 1", "2", "0..1")
    _refused(lambda: chip1.step(np.array([0.5, 0])), "inputs[0, 0]", "0.5", "0 or 1")
    _refused(lambda: chip1.step(np.array([-1, 0])), "inputs[0, 0]", "-1", "0 or 1")
    _refused(lambda: GoldenChip(_net(), batch=0), "batch", "0", ">= 1")
    _refused(lambda: GoldenChip(_net(), arithmetic="fixed"), "arithmetic", "fixed", "'int'")
    _refused(lambda: Population("input", 3), "input")
    _refused(lambda: Population("a", 0), "size", "0", ">= 1")
    _refused(lambda: Network(0, [Population("a", 1)], [Projection(INPUT, "a", np.ones((0, 1)))]),
             "n_inputs", "0")
    _refused(lambda: Network(1, [Population("a", 1)], [Projection("b", "a", [[1]])]), "b")
    _refused(lambda: Network(1, [Population("a", 1), Population("a", 2)]), "unique")
    _refused(lambda: Network(1, [Population("a", 1)], outputs=["z"]), "z")


def test_accumulator_overflow_is_refused():
    # 2**19 - 1 = 524287 is the largest sum(|w|) + |bias| a 20-bit accumulator takes
    n_in = 4096
    w = np.full((n_in, 1), 127, dtype=np.int64)
    w[0, 0] = 127 - 1  # sum |w| = 127 * 4096 - 1 = 520191
    ok = Network(n_in, [Population("a", 1, NeuronParams(threshold=10, bias=4096))],
                 [Projection(INPUT, "a", w)])
    validate_network(ok)  # 520191 + 4096 = 524287: exactly fits
    bad = Network(n_in, [Population("a", 1, NeuronParams(threshold=10, bias=-4097))],
                  [Projection(INPUT, "a", w)])
    _refused(lambda: validate_network(bad), "'a'", "524288", "20-bit", "524287")
    # recurrent synapses count too
    rec = Network(n_in, [Population("a", 1, NeuronParams(threshold=10, bias=4096))],
                  [Projection(INPUT, "a", w), Projection("a", "a", [[1]])])
    _refused(lambda: validate_network(rec), "524288")
    # a wider accumulator takes it
    validate_network(bad, fmt=Format(acc_bits=21))
    # the float mode has no accumulator limit
    validate_network(bad, "float")


@pytest.mark.parametrize("kw, words", [
    (dict(weight_bits=1), ["weight_bits", "1", "2..16"]),
    (dict(weight_bits=17), ["weight_bits", "17", "2..16"]),
    (dict(state_bits=3), ["state_bits", "3", "4..32"]),
    (dict(state_bits=33, acc_bits=40), ["state_bits", "33", "4..32"]),
    (dict(decay_frac_bits=0), ["decay_frac_bits", "0", "1..16"]),
    (dict(decay_frac_bits=17), ["decay_frac_bits", "17", "1..16"]),
    (dict(acc_bits=12), ["acc_bits", "12", "16..40"]),
    (dict(acc_bits=41), ["acc_bits", "41", "..40"]),
    (dict(threshold_bits=17), ["threshold_bits", "17", "2..state_bits=16"]),
    (dict(threshold_bits=1), ["threshold_bits", "1", "2..state_bits=16"]),
    (dict(bias_bits=21), ["bias_bits", "21", "2..acc_bits=20"]),
    (dict(threshold_bits=8.0), ["threshold_bits", "8.0", "integer"]),
    (dict(acc_bits=20.5), ["acc_bits", "20.5", "integer"]),
])
def test_bad_formats(kw, words):
    _refused(lambda: Format(**kw), *words)


def test_format_ranges():
    f = Format(weight_bits=4, state_bits=8, acc_bits=12, threshold_bits=8, bias_bits=8,
               decay_frac_bits=4)
    assert f.weight_range == (-8, 7) and f.state_range == (-128, 127)
    assert f.threshold_range == (1, 127) and f.decay_range == (0, 16) and f.shift_range == (1, 7)
    w = np.full((2, 3), 8)
    _refused(lambda: GoldenChip(_net(NeuronParams(threshold=10, beta=16), w=w), fmt=f),
             "8", "-8..7")
    _refused(lambda: GoldenChip(_net(NeuronParams(threshold=10, beta=17)), fmt=f),
             "beta", "17", "0..16")


def test_output_indices_follow_the_outputs_order():
    net = Network(2, [Population("a", 3), Population("b", 2), Population("c", 4)],
                  outputs=["c", "a"])
    assert net.output_indices().tolist() == [5, 6, 7, 8, 0, 1, 2]
    assert GoldenChip(net).output_indices.tolist() == [5, 6, 7, 8, 0, 1, 2]
