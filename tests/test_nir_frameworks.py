# NIR graphs exported by Sinabs, Norse and Rockpool (docs/compiler.md, "Frameworks"): each one
# imports, or is refused with an error that names the node and the reason.  The graphs are in
# tests/data/nir/, written by tests/data/make_nir_fixtures.py; the frameworks themselves are not
# needed here.
import os
import warnings

import numpy as np
import pytest

from spikeforge.errors import ConfigError
from spikeforge.host.compiler import Settings, compare, from_nir, quantize
from spikeforge.host.nir_import import READOUT_THRESHOLD, NIRTypeWarning, is_readout
from spikeforge.sim.golden import GoldenChip
from spikeforge.spec import LeakMode, NeuronModel, ResetMode

pytest.importorskip("nir")

DATA = os.path.join(os.path.dirname(__file__), "data", "nir")

# tau in steps; a Sinabs IAF (SingleSpike) subtracts its threshold at the start of the next step
# (the chip's delayed reset, docs/compiler.md "Sinabs' reset is the delayed one"), a Sinabs LIF
# at once (exact below twice the threshold)
SINABS_IAF = Settings(dt=1.0, reset="subtract", reset_delay=True)
SINABS = Settings(dt=1.0, reset="subtract")
NORSE = Settings(dt=1e-6)  # norse 1.1.0 writes tau = dt / tau_inv (dt = 1e-3): see the docs
ROCKPOOL = Settings(dt=1e-3)  # rockpool's default dt

# file, settings, populations [(name, size, model, beta, alpha)], projections {(src, dst): shape}
IMPORTS = [
    ("sinabs_iaf", SINABS_IAF,
     [("1", 3, NeuronModel.LIF, 1.0, None), ("3", 2, NeuronModel.LIF, 1.0, None)],
     {("input", "1"): (4, 3), ("1", "3"): (3, 2)}),
    ("sinabs_lif_li", SINABS,
     [("1", 3, NeuronModel.LIF, 0.95, None), ("3", 2, NeuronModel.LIF, 0.9, None)],
     {("input", "1"): (4, 3), ("1", "3"): (3, 2)}),
    ("norse_iaf", NORSE,
     [("1", 3, NeuronModel.LIF, 1.0, None), ("3", 2, NeuronModel.LIF, 1.0, None)],
     {("input", "1"): (4, 3), ("1", "3"): (3, 2)}),
    ("norse_lifbox", NORSE,
     [("1", 3, NeuronModel.LIF, 0.9, None), ("3", 2, NeuronModel.LIF, 0.9, None)],
     {("input", "1"): (4, 3), ("1", "3"): (3, 2)}),
    ("norse_cuba", NORSE,
     [("1", 3, NeuronModel.CUBA, 0.9, 0.8), ("3", 2, NeuronModel.CUBA, 0.9, 0.8)],
     {("input", "1"): (4, 3), ("1", "3"): (3, 2)}),
    ("rockpool_cuba", ROCKPOOL,
     [("1_LIFTorch", 3, NeuronModel.CUBA, 0.95, 0.95),
      ("3_LIFTorch", 2, NeuronModel.CUBA, 0.95, 0.95)],
     {("input", "1_LIFTorch"): (4, 3), ("1_LIFTorch", "3_LIFTorch"): (3, 2)}),
    ("rockpool_lif_expsyn", ROCKPOOL,
     [("1_LIFNeuronTorch", 3, NeuronModel.LIF, 0.95, None),
      ("3_ExpSynTorch", 2, NeuronModel.LIF, 0.9, None)],
     {("input", "1_LIFNeuronTorch"): (4, 3), ("1_LIFNeuronTorch", "3_ExpSynTorch"): (3, 2)}),
    # rockpool 3.1.0's exporter drops LIFTorch's w_rec: the graph is the feed-forward one
    ("rockpool_recurrent", ROCKPOOL,
     [("1_LIFTorch", 3, NeuronModel.CUBA, 0.95, 0.95),
      ("3_LIFTorch", 2, NeuronModel.CUBA, 0.95, 0.95)],
     {("input", "1_LIFTorch"): (4, 3), ("1_LIFTorch", "3_LIFTorch"): (3, 2)}),
]

# file, settings, error type, substrings the message must contain
REFUSED = [
    # sinabs_conv and norse_conv import now: test_conv_framework_graphs_import below
    ("norse_lifbox", Settings(dt=1e-3), ConfigError,
     ["'1'", "(LIF)", "shorter than dt=0.001", "Settings.dt"]),
    ("norse_cuba", Settings(dt=1e-3), ConfigError,
     ["'1'", "(CubaLIF)", "tau_syn", "shorter than dt=0.001"]),
    ("rockpool_cuba", SINABS, ConfigError, ["'1_LIFTorch'", "(CubaLIF)", "shorter than dt=1.0"]),
]


def _path(name):
    return os.path.join(DATA, name + ".nir")


def _raster(t, batch, n, p=0.5, seed=7):
    return (np.random.default_rng(seed).random((t, batch, n)) < p).astype(np.uint8)


@pytest.mark.parametrize("name, settings, pops, projs", IMPORTS, ids=[c[0] for c in IMPORTS])
def test_framework_graph_imports(name, settings, pops, projs):
    net = from_nir(_path(name), settings)
    assert net.n_inputs == 4
    got = [(p.name, p.size, p.params.model) for p in net.populations]
    assert got == [(n, size, model) for n, size, model, _, _ in pops]
    for p, (_, _, _model, beta, alpha) in zip(net.populations, pops, strict=True):
        assert np.asarray(p.params.beta) == pytest.approx(beta, abs=1e-6)
        if alpha is not None:
            assert np.asarray(p.params.alpha) == pytest.approx(alpha, abs=1e-6)
        assert p.params.leak == (LeakMode.NONE if beta == 1.0 else LeakMode.MULT)
    assert {(p.src, p.dst): np.asarray(p.weights).shape for p in net.projections} == projs
    assert net.outputs == [pops[-1][0]]
    # the golden model runs it (float mode, the network as trained)
    raster = _raster(20, 2, 4)
    out = GoldenChip(net, "float", batch=2).run(raster)
    assert out["spikes"].shape == (20, 2, 5)
    assert np.all(np.isfinite(out["v"]))
    first = net.populations[0]
    if first.params.model == NeuronModel.LIF and not is_readout(first.params):
        # step 0 from rest: v = x @ W + bias wherever it stayed below the threshold
        w = next(p.weights for p in net.projections if p.src == "input")
        pre = raster[0] @ np.asarray(w, dtype=np.float64) + np.asarray(first.params.bias)
        below = pre < np.asarray(first.params.threshold)
        np.testing.assert_allclose(out["v"][0][:, :3][below], pre[below], rtol=1e-5, atol=1e-6)


def test_sinabs_neurons_keep_their_conventions():
    # IAF: r = 1 per step, threshold 1, subtract reset in the next step; ExpLeak (LI) is a
    # readout
    net = from_nir(_path("sinabs_iaf"), SINABS_IAF)
    for p in net.populations:
        assert p.params.threshold == 1.0
        assert p.params.reset == ResetMode.SUBTRACT and p.params.reset_delay
    net = from_nir(_path("sinabs_lif_li"), SINABS)
    readout = net.populations[1].params
    assert is_readout(readout) and readout.threshold == READOUT_THRESHOLD
    # LIF with r = 1, tau = 20 steps: input gain r * dt / tau = 0.05 folded into weights and bias
    import nir

    affine = nir.read(_path("sinabs_lif_li")).nodes["0"]
    w = next(p.weights for p in net.projections if p.src == "input")
    np.testing.assert_allclose(w, np.asarray(affine.weight).T / 20, rtol=1e-6)
    np.testing.assert_allclose(net.populations[0].params.bias, np.asarray(affine.bias) / 20,
                               rtol=1e-6)


def test_sinabs_iaf_gives_the_spikes_sinabs_gives():
    # sinabs' own IAF run (spike counts per step, saved by make_nir_fixtures.py) on 40 steps
    ref = np.load(os.path.join(DATA, "sinabs_iaf_reference.npz"))
    net = from_nir(_path("sinabs_iaf"), SINABS_IAF)
    out = GoldenChip(net, "float", batch=1).run(ref["raster"][:, None, :])
    assert ref["spikes"].max() == 1  # one spike per step at most: the chip's spikes are bits
    assert ref["spikes"].sum() > 10
    np.testing.assert_array_equal(out["spikes"][:, 0, :], ref["spikes"].astype(bool))


@pytest.mark.parametrize("name, settings, error, needles", REFUSED,
                         ids=[f"{c[0]}-dt{c[1].dt:g}" for c in REFUSED])
def test_framework_graph_is_refused_with_a_reason(name, settings, error, needles):
    with pytest.raises(error) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRTypeWarning)
        from_nir(_path(name), settings)
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))


@pytest.mark.parametrize("name, settings", [("sinabs_iaf", SINABS_IAF), ("norse_iaf", NORSE),
                                            ("rockpool_cuba", ROCKPOOL),
                                            ("rockpool_lif_expsyn", ROCKPOOL)])
def test_framework_graph_quantizes_and_runs_in_int_mode(name, settings):
    net = from_nir(_path(name), settings)
    raster = _raster(40, 4, 4, p=0.8)
    assert GoldenChip(net, "float", batch=4).run(raster)["spikes"].sum() > 0  # not a silent net
    q = quantize(net)
    for p in q.net.populations:
        assert float(np.min(p.params.threshold)) >= 1
    for p in q.net.projections:
        w = np.asarray(p.weights)
        assert np.all(w == np.rint(w)) and np.abs(w).max() <= 127
    out = GoldenChip(q.net, "int", batch=4).run(raster)
    assert out["spikes"].shape == (40, 4, 5)
    rep = compare(q, raster, min_agreement=0.9)  # (the floor asserted below)
    assert set(rep.agreement) == {p.name for p in net.populations}
    for pop, agree in rep.agreement.items():  # measured: 0.925 ... 1.0
        assert agree >= 0.9, (pop, agree)


@pytest.mark.parametrize("name, settings, shapes", [
    ("sinabs_conv", SINABS_IAF, [("input", "1", (1, 4, 4), (2, 2, 2)), ("1", "3", (2, 2, 2),
                                                                    (2, 1, 1))]),
    # fails nir's strict type check (scalar LIF parameters behind the Conv2d): read relaxed
    ("norse_conv", NORSE, [("input", "1", (1, 4, 4), (2, 2, 2))]),
])
def test_conv_framework_graphs_import(name, settings, shapes):
    # Sinabs' and Norse's Conv2d (and Sinabs' SumPool2d) become weight-shared projections
    # (docs/network.md, "Convolution and pooling"); the conv's bias goes to the neurons of its
    # output channel, times the neuron's input gain
    import nir

    from spikeforge.network import Conv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRTypeWarning)
        net = from_nir(_path(name), settings)
        graph = nir.read(_path(name), type_check=False)
    got = [(p.src, p.dst, p.weights.src_shape, p.weights.dst_shape) for p in net.projections]
    assert got == shapes
    assert all(isinstance(p.weights, Conv) for p in net.projections)
    conv = graph.nodes["0"]
    gain = 1.0 if name == "sinabs_conv" else 0.1  # Norse: r * dt / tau = 1e-6 / 1e-5
    w = net.projections[0].weights
    np.testing.assert_allclose(w.kernel, np.asarray(conv.weight) * gain, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(net.populations[0].params.bias),
                               np.repeat(np.asarray(conv.bias) * gain, 4), rtol=1e-6, atol=1e-9)
    raster = _raster(20, 2, 16, p=0.8)
    out = GoldenChip(net, "float", batch=2).run(raster)
    assert out["spikes"].shape == (20, 2, net.n_neurons)
    q = quantize(net, min_agreement=0.0)
    assert all(isinstance(p.weights, Conv) for p in q.net.projections)
    GoldenChip(q.net, "int", batch=2).run(raster)
