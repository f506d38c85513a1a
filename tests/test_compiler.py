# Tests of the model compiler (docs/compiler.md): NIR import, snnTorch and scikit-learn import,
# quantization to the integer format of docs/neuron.md, and the fit check.
import json
import warnings

import numpy as np
import pytest

from spikeforge.errors import ConfigError, FitError, UnsupportedError
from spikeforge.host.compiler import (
    Settings,
    check_fit,
    compare,
    compile,
    fit_problems,
    from_nir,
    from_sklearn,
    from_weights,
    load_model,
    load_network,
    quantize,
    save_network,
)
from spikeforge.host.nir_import import READOUT_THRESHOLD, is_readout
from spikeforge.host.quantize import precision
from spikeforge.sim.golden import GoldenChip
from spikeforge.sim.network import Network, NeuronParams, Population, Projection
from spikeforge.spec import DEFAULT_FORMAT, LeakMode, NeuronModel, ResetMode

try:
    import nir
except ImportError:  # the [models] extra: only the tests marked @needs_nir skip
    nir = None

needs_nir = pytest.mark.needs("nir")

DT = 1e-3


def _graph(nodes, edges, n_in, n_out=3):
    nodes = dict(nodes)
    nodes["input"] = nir.Input(input_type={"input": np.array([n_in])})
    last = edges[-1][1]
    nodes["output"] = nir.Output(output_type={"output": np.array([n_out])})
    return nir.NIRGraph(nodes=nodes, edges=list(edges) + [(last, "output")], type_check=False)


def _roundtrip(graph, tmp_path, settings=None):
    path = tmp_path / "g.nir"
    nir.write(path, graph)
    return from_nir(str(path), settings)


RNG = np.random.default_rng(0)
W = RNG.normal(size=(3, 4)).astype(np.float32)  # NIR orientation: (n_out, n_in)
B = RNG.normal(size=3).astype(np.float32)


def _lif(n=3, tau=0.01, r=None, v_leak=0.0, thr=1.0, v_reset=0.0):
    tau = np.full(n, tau)
    return nir.LIF(tau=tau, r=tau / DT if r is None else np.full(n, r),
                   v_leak=np.full(n, v_leak), v_threshold=np.full(n, thr),
                   v_reset=np.full(n, v_reset))


# --- NIR round trips, one per supported node --------------------------------------------------
@needs_nir
def test_affine_lif_roundtrip(tmp_path):
    g = _graph({"fc": nir.Affine(weight=W, bias=B), "lif": _lif()},
               [("input", "fc"), ("fc", "lif")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT, reset="subtract", reset_delay=True))
    assert net.n_inputs == 4 and net.outputs == ["lif"]
    (pop,) = net.populations
    assert pop.params.model == NeuronModel.LIF and pop.params.leak == LeakMode.MULT
    assert pop.params.beta == pytest.approx(0.9)
    assert pop.params.threshold == 1.0
    assert pop.params.reset == ResetMode.SUBTRACT and pop.params.reset_delay
    np.testing.assert_allclose(pop.params.bias, B, rtol=1e-6)
    (proj,) = net.projections
    assert proj.src == "input" and proj.dst == "lif"
    np.testing.assert_allclose(proj.weights, W.T, rtol=1e-6)


@needs_nir
def test_lif_gain_and_leak_fold_into_weights_and_bias(tmp_path):
    # r = 2 * tau / dt doubles the input; v_leak = 0.5 adds dt/tau * 0.5 every step
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif(r=2 * 0.01 / DT, v_leak=0.5)},
               [("input", "fc"), ("fc", "lif")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT))
    np.testing.assert_allclose(net.projections[0].weights, 2 * W.T, rtol=1e-6)
    assert net.populations[0].params.bias == pytest.approx(0.5 * DT / 0.01)


@needs_nir
def test_lif_matches_the_discretised_equation(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif(tau=0.005, thr=0.7)},
               [("input", "fc"), ("fc", "lif")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT, reset="zero", reset_delay=False))
    x = (np.random.default_rng(1).random((30, 4)) < 0.5).astype(np.float32)
    spikes = GoldenChip(net, "float").run(x)["spikes"][:, 0, :]
    v, beta = np.zeros(3), 1 - DT / 0.005
    for t in range(30):  # NIR: v <- v + dt/tau (-v + r I), spike when v > thr, then v <- 0
        v = beta * v + x[t] @ W.T.astype(np.float64)
        s = v > 0.7
        np.testing.assert_array_equal(spikes[t], s)
        v = np.where(s, 0.0, v)


@needs_nir
def test_scale_node(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W), "sc": nir.Scale(scale=np.array([1.0, 2.0, 3.0])),
                "lif": _lif()}, [("input", "fc"), ("fc", "sc"), ("sc", "lif")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT))
    np.testing.assert_allclose(net.projections[0].weights, W.T * [1, 2, 3], rtol=1e-6)


@needs_nir
def test_if_node(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W),
                "if": nir.IF(r=np.full(3, 0.5), v_threshold=np.full(3, 2.0),
                             v_reset=np.zeros(3))}, [("input", "fc"), ("fc", "if")], 4)
    net = _roundtrip(g, tmp_path)
    p = net.populations[0].params
    assert p.leak == LeakMode.NONE and p.threshold == 2.0
    assert p.reset == ResetMode.ZERO and not p.reset_delay  # NIR's own semantics by default
    np.testing.assert_allclose(net.projections[0].weights, 0.5 * W.T, rtol=1e-6)


@needs_nir
def test_cubalif_node(tmp_path):
    n = 3
    cuba = nir.CubaLIF(tau_syn=np.full(n, 0.002), tau_mem=np.full(n, 0.01),
                       r=np.full(n, 0.01 / DT), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n), w_in=np.full(n, 0.002 / DT))
    g = _graph({"fc": nir.Affine(weight=W, bias=B), "cuba": cuba},
               [("input", "fc"), ("fc", "cuba")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT))
    p = net.populations[0].params
    assert p.model == NeuronModel.CUBA
    assert p.alpha == pytest.approx(0.5) and p.beta == pytest.approx(0.9)
    np.testing.assert_allclose(net.projections[0].weights, W.T, rtol=1e-5)


@needs_nir
@pytest.mark.parametrize("kind", ["LI", "CubaLI"])
def test_leaky_integrator_readout(tmp_path, kind):
    n = 3
    if kind == "LI":
        node = nir.LI(tau=np.full(n, 0.02), r=np.full(n, 0.02 / DT), v_leak=np.zeros(n))
    else:
        node = nir.CubaLI(tau_syn=np.full(n, 0.002), tau_mem=np.full(n, 0.02),
                          r=np.full(n, 0.02 / DT), v_leak=np.zeros(n),
                          w_in=np.full(n, 0.002 / DT))
    g = _graph({"fc": nir.Linear(weight=W), "li": node}, [("input", "fc"), ("fc", "li")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT, reset="subtract"))
    p = net.populations[0].params
    assert p.reset == ResetMode.NONE and p.threshold == READOUT_THRESHOLD and is_readout(p)
    assert p.beta == pytest.approx(0.95)
    q = quantize(net)
    assert q.net.populations[0].params.threshold == DEFAULT_FORMAT.threshold_range[1]
    x = np.ones((50, 2, 4), dtype=np.uint8)
    out = GoldenChip(q.net, "int", batch=2).run(x)
    assert not out["spikes"].any()  # a readout never spikes
    vf = GoldenChip(net, "float", batch=2).run(x)["v"]
    scale = q.scales["li"][0]
    np.testing.assert_allclose(out["v"] / scale, vf, atol=0.05 * np.abs(vf).max())


def _recurrent_subgraph(n=3):
    wrec = RNG.normal(size=(n, n)).astype(np.float32)
    sub = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n])}),
        "lif": _lif(n),
        "w_rec": nir.Linear(weight=wrec),
        "output": nir.Output(output_type={"output": np.array([n])}),
    }, edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
        type_check=False)
    return sub, wrec


@needs_nir
def test_nested_recurrent_subgraph(tmp_path):
    sub, wrec = _recurrent_subgraph()
    g = _graph({"fc": nir.Linear(weight=W), "rnn": sub}, [("input", "fc"), ("fc", "rnn")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT))
    assert [p.name for p in net.populations] == ["rnn.lif"]
    rec = [p for p in net.projections if p.src == "rnn.lif"]
    assert len(rec) == 1 and net.is_recurrent(rec[0])
    np.testing.assert_allclose(rec[0].weights, wrec.T, rtol=1e-6)
    assert net.outputs == ["rnn.lif"]


@needs_nir
def test_flattened_cycle_between_populations_is_recurrent(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W), "a": _lif(), "ab": nir.Linear(weight=np.eye(3)),
                "b": _lif(), "ba": nir.Linear(weight=0.5 * np.eye(3))},
               [("input", "fc"), ("fc", "a"), ("a", "ab"), ("ab", "b"), ("b", "ba"),
                ("ba", "a")], 4)
    net = _roundtrip(g, tmp_path, Settings(dt=DT))
    assert [p.name for p in net.populations] == ["a", "b"]
    back = [p for p in net.projections if p.src == "b"][0]
    assert back.dst == "a" and net.is_recurrent(back)


@needs_nir
def test_settings_stored_in_graph_metadata(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif()}, [("input", "fc"), ("fc", "lif")], 4)
    g.metadata = {"spikeforge": json.dumps({"dt": DT, "reset": "subtract",
                                            "reset_delay": True})}
    net = _roundtrip(g, tmp_path)
    p = net.populations[0].params
    assert p.beta == pytest.approx(0.9) and p.reset == ResetMode.SUBTRACT and p.reset_delay


@needs_nir
def test_settings_from_sidecar_json(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif()}, [("input", "fc"), ("fc", "lif")], 4)
    nir.write(tmp_path / "m.nir", g)
    (tmp_path / "m.json").write_text(json.dumps({"dt": DT, "reset": "none"}))
    net = load_model(tmp_path / "m.nir")
    assert net.populations[0].params.reset == ResetMode.NONE


# --- refusals --------------------------------------------------------------------------------
@needs_nir
@pytest.mark.parametrize("make,kind", [
    # Conv1d / Conv2d / SumPool2d / AvgPool2d / Flatten import now (tests/test_conv.py)
    (lambda: nir.Threshold(threshold=np.ones(4)), "Threshold"),
    (lambda: nir.I(r=np.ones(4)), "'bad' of type I"),
])
def test_unsupported_nodes_are_refused_by_name(make, kind):
    g = _graph({"bad": make(), "fc": nir.Linear(weight=W), "lif": _lif()},
               [("input", "bad"), ("bad", "fc"), ("fc", "lif")], 4)
    with pytest.raises(UnsupportedError) as e:
        from_nir(g, Settings(dt=DT))
    msg = str(e.value)
    assert "'bad'" in msg and kind in msg and "supported node types" in msg and "LIF" in msg


@needs_nir
@pytest.mark.parametrize("kw,needle", [
    (dict(v_reset=0.5), "v_reset=0.5"),
    (dict(thr=-1.0), "v_threshold=-1.0"),
])
def test_unsupported_parameters_are_refused(kw, needle):
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif(**kw)},
               [("input", "fc"), ("fc", "lif")], 4)
    with pytest.raises(UnsupportedError, match=needle) as e:
        from_nir(g, Settings(dt=DT))
    assert "'lif'" in str(e.value)


@needs_nir
def test_every_unsupported_node_is_named_at_once():
    g = _graph({"c1": nir.I(r=np.ones(4)), "d1": nir.Threshold(threshold=np.ones(4)),
                "fc": nir.Linear(weight=W), "lif": _lif()},
               [("input", "c1"), ("c1", "d1"), ("d1", "fc"), ("fc", "lif")], 4)
    with pytest.raises(UnsupportedError) as e:
        from_nir(g, Settings(dt=DT))
    msg = str(e.value)
    assert "2 problems" in msg and "'c1' of type I" in msg and "'d1' of type Threshold" in msg
    assert "supported node types" in msg


@needs_nir
def test_every_unsupported_neuron_parameter_is_named_at_once():
    g = _graph({"fc": nir.Linear(weight=W), "a": _lif(v_reset=0.5),
                "fc2": nir.Linear(weight=W[:, :3]), "b": _lif(thr=-1.0)},
               [("input", "fc"), ("fc", "a"), ("a", "fc2"), ("fc2", "b")], 4)
    with pytest.raises(UnsupportedError) as e:
        from_nir(g, Settings(dt=DT))
    msg = str(e.value)
    assert "'a' (LIF): v_reset=0.5" in msg and "'b' (LIF): v_threshold=-1.0" in msg


@needs_nir
@pytest.mark.parametrize("make, attr, where", [
    (lambda: nir.Linear(weight=np.where(np.arange(12).reshape(3, 4) == 6, np.nan, W)),
     "'fc' (Linear): weight", "[1, 2]"),
    (lambda: nir.Affine(weight=W, bias=np.array([0.0, np.inf, 0.0])), "'fc' (Affine): bias",
     "[1]"),
])
def test_a_non_finite_value_is_blamed_on_its_parameter(make, attr, where):
    g = _graph({"fc": make(), "lif": _lif()}, [("input", "fc"), ("fc", "lif")], 4)
    with pytest.raises(ConfigError) as e:
        from_nir(g, Settings(dt=DT))
    msg = str(e.value)
    assert attr in msg and where in msg and "non-finite" in msg, msg


@needs_nir
def test_a_non_finite_neuron_parameter_is_named():
    lif = _lif()
    lif.tau[2] = np.nan
    g = _graph({"fc": nir.Linear(weight=W), "lif": lif}, [("input", "fc"), ("fc", "lif")], 4)
    with pytest.raises(ConfigError, match=r"'lif' \(LIF\): tau has 1 non-finite value.*\[2\]"):
        from_nir(g, Settings(dt=DT))


@needs_nir
def test_output_typed_with_unit_dimensions_is_read_with_a_warning(tmp_path):
    """A graph that fails only nir's strict type check (an Output typed (1, 3) after a
    3-neuron LIF, as some Rockpool exports are) imports, with a warning."""
    from spikeforge.host.nir_import import NIRTypeWarning

    nodes = {"input": nir.Input(input_type={"input": np.array([4])}),
             "fc": nir.Linear(weight=W), "lif": _lif(),
             "output": nir.Output(output_type={"output": np.array([1, 3])})}
    edges = [("input", "fc"), ("fc", "lif"), ("lif", "output")]
    path = tmp_path / "unit_dims.nir"
    nir.write(path, nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
    with pytest.raises(ValueError):  # nir itself refuses it
        nir.read(path)
    with pytest.warns(NIRTypeWarning, match="strict type check.*relaxed"):
        net = from_nir(str(path), Settings(dt=DT))
    ref = from_nir(_graph({"fc": nir.Linear(weight=W), "lif": _lif()},
                          [("input", "fc"), ("fc", "lif")], 4), Settings(dt=DT))
    assert [p.size for p in net.populations] == [3] and net.outputs == ref.outputs
    np.testing.assert_array_equal(net.projections[0].weights, ref.projections[0].weights)


@needs_nir
def test_output_typed_with_the_wrong_size_is_refused(tmp_path):
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif()}, [("input", "fc"), ("fc", "lif")],
               4, n_out=5)
    with pytest.raises(ConfigError, match=r"Output 'output' is typed \[5\].*have 3"):
        from_nir(g, Settings(dt=DT))


@needs_nir
def test_a_file_nir_cannot_read_is_refused(tmp_path):
    path = tmp_path / "junk.nir"
    path.write_bytes(b"not an HDF5 file")
    with pytest.raises(ConfigError, match="cannot be read by nir.read"):
        from_nir(str(path))


@needs_nir
def test_tau_shorter_than_dt_is_refused():
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif(tau=1e-4)},
               [("input", "fc"), ("fc", "lif")], 4)
    with pytest.raises(ConfigError, match=r"tau=0\.0001.*shorter than dt=0\.001"):
        from_nir(g, Settings(dt=DT))


@needs_nir
def test_cuba_v_leak_is_refused():
    n = 3
    cuba = nir.CubaLIF(tau_syn=np.full(n, 0.002), tau_mem=np.full(n, 0.01), r=np.ones(n),
                       v_leak=np.full(n, 0.1), v_threshold=np.ones(n), w_in=np.ones(n))
    g = _graph({"fc": nir.Linear(weight=W), "c": cuba}, [("input", "fc"), ("fc", "c")], 4)
    with pytest.raises(UnsupportedError, match="v_leak=0.1"):
        from_nir(g, Settings(dt=DT))


@needs_nir
def test_affine_feeding_output_is_refused():
    g = _graph({"fc": nir.Linear(weight=W), "lif": _lif(), "fc2": nir.Linear(weight=W[:, :3])},
               [("input", "fc"), ("fc", "lif"), ("lif", "fc2")], 4)
    with pytest.raises(UnsupportedError, match="'fc2'.*feeds the Output"):
        from_nir(g, Settings(dt=DT))


def test_invalid_settings():
    with pytest.raises(ConfigError, match="Settings.reset='soft'"):
        Settings(reset="soft")
    with pytest.raises(ConfigError, match="Settings.dt=0"):
        Settings(dt=0)


# --- snnTorch -------------------------------------------------------------------------------------
def _snn_model(kind, reset, delay, n_in=12, n_h=16, n_o=6):
    import snntorch as snn
    import torch

    b = lambda n, v: torch.full((n,), v)  # noqa: E731
    common = dict(init_hidden=True, reset_mechanism=reset, reset_delay=delay)
    if kind == "Leaky":
        l1 = snn.Leaky(beta=b(n_h, 0.85), threshold=b(n_h, 1.0), **common)
    elif kind == "Synaptic":
        l1 = snn.Synaptic(alpha=b(n_h, 0.7), beta=b(n_h, 0.85), threshold=b(n_h, 1.0), **common)
    elif kind == "RLeaky":
        l1 = snn.RLeaky(beta=b(n_h, 0.85), threshold=b(n_h, 1.0), linear_features=n_h, **common)
    else:
        l1 = snn.RSynaptic(alpha=b(n_h, 0.7), beta=b(n_h, 0.85), threshold=b(n_h, 1.0),
                           linear_features=n_h, **common)
    l2 = snn.Leaky(beta=b(n_o, 0.9), threshold=b(n_o, 1.0), output=True, **common)
    net = torch.nn.Sequential(torch.nn.Linear(n_in, n_h), l1, torch.nn.Linear(n_h, n_o), l2)
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[2].weight.mul_(3)
    return net


def _run_snntorch(net, raster):
    import torch
    from snntorch import utils

    utils.reset(net)
    out = []
    with torch.no_grad():
        for t in range(raster.shape[0]):
            spk, _ = net(torch.as_tensor(raster[t], dtype=torch.float32))
            out.append(spk.numpy())
    return np.array(out).astype(bool)


@pytest.mark.parametrize("kind,reset,delay", [
    ("Leaky", "subtract", True), ("Leaky", "subtract", False), ("Leaky", "zero", True),
    ("Leaky", "zero", False), ("Leaky", "none", True),
    ("Synaptic", "subtract", True), ("Synaptic", "zero", False),
    ("RLeaky", "subtract", True), ("RLeaky", "zero", True), ("RLeaky", "zero", False),
    ("RSynaptic", "subtract", True), ("RSynaptic", "zero", True),
])
def test_snntorch_export_import_equals_snntorch(kind, reset, delay):
    pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    import torch

    from spikeforge.host.compiler import from_snntorch

    torch.manual_seed(0)
    model = _snn_model(kind, reset, delay)
    net = from_snntorch(model, 12)
    raster = (np.random.default_rng(1).random((40, 16, 12)) < 0.4).astype(np.float32)
    ref = _run_snntorch(model, raster)
    assert ref.any() and not ref.all()
    ours = GoldenChip(net, "float", batch=16).run(raster)["spikes"][..., -6:]
    np.testing.assert_array_equal(ours, ref)
    assert net.populations[0].params.reset == ResetMode[reset.upper()]
    assert net.populations[0].params.reset_delay == delay


def test_snntorch_unsupported_feature_is_refused():
    pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from spikeforge.host.compiler import from_snntorch

    model = _snn_model("Leaky", "subtract", True)
    import torch

    model[1].graded_spikes_factor = torch.tensor(2.0)
    with pytest.raises(UnsupportedError, match="graded_spikes_factor"):
        from_snntorch(model, 12)


# --- scikit-learn ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="needs scikit-learn (the [models] extra)")
    from spikeforge.host.demo import load_digits_split

    return load_digits_split()


@pytest.mark.slow
def test_sklearn_conversion_accuracy(digits):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from spikeforge.host.coding import rate_encode

    (xtr, ytr), (xte, yte) = digits
    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(xtr / 16, ytr)
    ann = mlp.score(xte / 16, yte)
    assert ann > 0.85
    raster = rate_encode(xte, 30, seed=0, x_max=16.0)
    for readout, decoder in (("spikes", "count"), ("membrane", "membrane")):
        net = from_sklearn(mlp, xtr / 16, readout=readout)
        rep = compare(quantize(net), raster, yte, decoder=decoder, min_agreement=0.95)
        assert rep.accuracy_float > ann - 0.05, (readout, rep)
        assert abs(rep.accuracy_delta) <= 0.02, (readout, rep)


def test_sklearn_refusals(digits):
    from sklearn.neural_network import MLPClassifier

    (xtr, ytr), _ = digits
    with pytest.raises(ConfigError, match="not fitted"):
        from_sklearn(MLPClassifier(), xtr / 16)
    mlp = MLPClassifier(hidden_layer_sizes=(4,), activation="tanh", max_iter=2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp.fit(xtr[:50] / 16, ytr[:50])
    with pytest.raises(UnsupportedError, match="activation='tanh'"):
        from_sklearn(mlp, xtr / 16)
    mlp.activation = "relu"
    with pytest.raises(ConfigError, match="rate coding needs inputs in 0..1"):
        from_sklearn(mlp, xtr)


# --- plain weights and files ---------------------------------------------------------------------
def test_from_weights_and_npz_roundtrip(tmp_path):
    w1, w2 = RNG.normal(size=(5, 7)), RNG.normal(size=(7, 3))
    net = from_weights([w1, w2], [np.zeros(7), np.ones(3)], neuron="if", readout=True)
    assert net.populations[0].params.leak == LeakMode.NONE
    assert is_readout(net.populations[1].params)
    save_network(net, tmp_path / "n.npz")
    back = load_network(tmp_path / "n.npz")
    x = (RNG.random((20, 3, 5)) < 0.5).astype(np.uint8)
    a = GoldenChip(net, "float", batch=3).run(x)
    b = GoldenChip(back, "float", batch=3).run(x)
    np.testing.assert_array_equal(a["spikes"], b["spikes"])
    np.testing.assert_array_equal(a["v"], b["v"])
    with pytest.raises(ConfigError, match=r"weights\[1\] has 4 rows but weights\[0\] has 7"):
        from_weights([w1, np.ones((4, 2))])


def test_compile_integer_npz_is_not_requantized(tmp_path):
    q = quantize(from_weights([RNG.normal(size=(5, 7))]))
    save_network(q.net, tmp_path / "int.npz")
    c = compile(tmp_path / "int.npz")
    np.testing.assert_array_equal(c.net.projections[0].weights, q.net.projections[0].weights)


# --- quantization -----------------------------------------------------------------------------
def _float_net(threshold=1.0, beta=0.9, per_col=None):
    w = RNG.normal(size=(6, 5)) * 0.5
    if per_col is not None:
        w = w * per_col
    return Network(6, [Population("h", 5, NeuronParams(beta=beta, threshold=threshold))],
                   [Projection("input", "h", w.astype(np.float32))])


def test_quantize_scales_weights_and_thresholds_together():
    net = _float_net()
    q = quantize(net, calibrate=None)  # one scale for the population, the whole weight range
    w = net.projections[0].weights.astype(np.float64)
    s = q.scales["h"][0]
    assert np.abs(q.net.projections[0].weights).max() == DEFAULT_FORMAT.weight_range[1]
    np.testing.assert_array_equal(q.net.projections[0].weights, np.rint(w * s))
    assert q.net.populations[0].params.threshold == round(1.0 * s)
    assert q.net.populations[0].params.beta == round(0.9 * 4096)


def test_quantize_per_neuron_uses_every_column_fully():
    net = _float_net(per_col=np.array([1, 0.5, 0.2, 1, 1]))
    q = quantize(net, per_neuron=True)
    w = np.abs(q.net.projections[0].weights)
    np.testing.assert_array_equal(w.max(axis=0), 127)
    rep = compare(q, (RNG.random((30, 8, 6)) < 0.5).astype(np.uint8), min_agreement=0.95)
    assert rep.agreement["h"] > 0.95


def test_quantize_shift_leak():
    q = quantize(_float_net(beta=0.875), leak="shift")
    p = q.net.populations[0].params
    assert p.leak == LeakMode.SHIFT and p.beta == 3
    with pytest.raises(UnsupportedError, match=r"beta=0\.2 has no shift leak"):
        quantize(_float_net(beta=0.2), leak="shift")


def test_quantize_threshold_too_small_for_the_weights():
    with pytest.raises(ConfigError, match=r"population 'h': threshold 0\.001 .*rounds to 0"):
        quantize(_float_net(threshold=1e-3))


@pytest.mark.needs("nir", "sklearn")
def test_bundled_model_quantizes_within_one_point():
    """The acceptance figure: integer accuracy within 1 pp of the float SNN on the test split."""
    from spikeforge.host.coding import rate_encode
    from spikeforge.host.demo import load_bundled, load_digits_split

    path, meta = load_bundled("snntorch")
    c = compile(path)
    _, (xte, yte) = load_digits_split()
    raster = rate_encode(xte, meta["timesteps"], seed=meta["encoder"]["seed"], x_max=16.0)
    # (measured: 98.2 % and 97.3 % spike agreement with the calibrated per-neuron scales)
    rep = c.report(raster, yte, decoder=meta["decoder"], min_agreement=0.9)
    assert rep.accuracy_float == pytest.approx(meta["float_accuracy"], abs=1e-9)  # == snnTorch
    assert abs(rep.accuracy_delta) <= 0.01, str(rep)
    assert rep.accuracy_int > 0.85
    assert min(rep.agreement.values()) > 0.9


# --- fit check --------------------------------------------------------------------------------
def test_check_fit_lists_every_problem():
    net = Network(4, [
        Population("a", 3, NeuronParams(beta=5000, threshold=0, leak="mult")),
        Population("b", 2, NeuronParams(beta=100, threshold=10)),
    ], [Projection("input", "a", np.full((4, 3), 200)),
        Projection("a", "b", np.full((3, 2), 0.5))])
    problems = fit_problems(net)
    text = "\n".join(problems)
    assert len(problems) >= 3, problems
    assert "population 'a'" in text and "beta" in text
    assert "projection input->a" in text and "allowed -128..127" in text
    assert "projection a->b: weights must be integers" in text
    with pytest.raises(FitError) as e:  # the raising wrapper: the same list
        check_fit(net)
    assert e.value.problems == problems


def test_check_fit_against_a_core_config():
    image = pytest.importorskip("spikeforge.hw.image")
    q = quantize(from_weights([RNG.normal(size=(8, 40)), RNG.normal(size=(40, 4))]))
    assert fit_problems(q.net, image.CoreConfig(n_neurons=64, n_inputs=8)) == []
    small = image.CoreConfig(n_neurons=16, n_inputs=4, synapse_words=16)
    problems = fit_problems(q.net, small)
    assert any("44 neurons" in p for p in problems)
    assert any("8 input channels" in p for p in problems)
    with pytest.raises(FitError) as e:
        compile(from_weights([RNG.normal(size=(8, 40)), RNG.normal(size=(40, 4))]), small)
    assert len(e.value.problems) >= 2


def test_compiled_image_uses_the_checked_config():
    image = pytest.importorskip("spikeforge.hw.image")
    config = image.CoreConfig(n_neurons=64, n_inputs=8)
    c = compile(from_weights([RNG.normal(size=(8, 40)), RNG.normal(size=(40, 4))]), config)
    blocks = c.image()
    assert blocks and all(isinstance(a, int) and len(w) > 0 for a, w in blocks)
    with pytest.raises(ConfigError, match="needs a chip configuration"):
        compile(from_weights([RNG.normal(size=(8, 4))])).image()


def test_compile_dispatches_on_the_model_type(digits):
    pytest.importorskip("nirtorch")
    import warnings

    from sklearn.neural_network import MLPClassifier

    model = _snn_model("Leaky", "subtract", True)
    c = compile(model, n_inputs=12)
    assert [p.name for p in c.net.populations] == ["1", "3"]
    with pytest.raises(ConfigError, match="needs n_inputs="):
        compile(model)
    (xtr, ytr), _ = digits
    mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlp.fit(xtr[:100] / 16, ytr[:100])
    assert compile(mlp, calibration=xtr[:100] / 16).net.n_neurons == 18
    with pytest.raises(ConfigError, match="needs calibration="):
        compile(mlp)
    assert compile([RNG.normal(size=(3, 2))]).net.n_inputs == 3
    with pytest.raises(UnsupportedError, match="cannot compile a dict"):
        compile({})


# --- how much precision quantization loses, and the loud warning --------------------------------
def test_precision_measures_each_parameter_against_the_threshold():
    net = _float_net(threshold=0.37, beta=0.9)
    q = quantize(net, calibrate=None)  # one scale for the population
    s = q.scales["h"][0]
    p = precision(q)["h"]
    thr_int = q.net.populations[0].params.threshold
    assert p["threshold"] == pytest.approx(abs(thr_int / s - 0.37) / 0.37)
    w = net.projections[0].weights.astype(np.float64)
    w_err = np.abs(q.net.projections[0].weights / s - w).max()
    assert p["weights from input"] == pytest.approx(w_err / 0.37)
    assert p["beta"] == pytest.approx(abs(round(0.9 * 4096) / 4096 - 0.9) / 0.1)
    assert p["bias"] == 0


def _recurrent_cuba(ratio, reset, seed=3):
    """A recurrent CuBa-LIF network whose largest weights are ``ratio`` times its threshold (as
    surrogate-gradient training leaves them)."""
    rng = np.random.default_rng(seed)
    prm = NeuronParams(model="cuba", alpha=0.8, beta=0.9, threshold=0.1, reset=reset,
                       bias=rng.normal(0, 0.01, 24))
    w_in = rng.normal(0, 0.1 * ratio / 3, (16, 24))
    w_rec = rng.normal(0, 0.1 * ratio / 6, (24, 24))
    w_out = rng.normal(0, 0.1 * ratio / 3, (24, 6))
    out = NeuronParams(model="cuba", alpha=0.8, beta=0.9, threshold=0.1, reset=reset)
    return Network(16, [Population("h", 24, prm), Population("o", 6, out)],
                   [Projection("input", "h", w_in), Projection("h", "h", w_rec),
                    Projection("h", "o", w_out)], outputs=["o"])


def test_compare_warns_loudly_naming_the_population_that_drifted():
    from spikeforge.host.quantize import QuantizationWarning

    raster = (np.random.default_rng(0).random((40, 16, 16)) < 0.2).astype(np.uint8)
    q = quantize(_recurrent_cuba(12, "zero"))
    with pytest.warns(QuantizationWarning, match=r"population\(s\) 'h'") as rec:
        rep = compare(q, raster)
    assert min(rep.agreement.values()) < 0.99
    low = [k for k, a in rep.agreement.items() if a < 0.99]
    msg = str(rec[0].message)
    for k in low:
        name, frac = rep.worst(k)
        assert f"most precision lost: {name}" in msg and frac > 0
    assert "most precision lost" in str(rep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when asked not to, or when they agree
        compare(q, raster, min_agreement=None)
        # weights k / 100 with the largest 1.27: scale 100, every parameter exact
        w = np.random.default_rng(1).integers(-127, 128, (16, 5)) / 100
        w[0, 0] = 1.27
        exact = Network(16, [Population("h", 5, NeuronParams(beta=0.5, threshold=1.0))],
                        [Projection("input", "h", w)])
        qe = quantize(exact, headroom=1)
        pe = precision(qe)["h"]
        assert pe.pop("membrane step") == pytest.approx(1 / 100)  # threshold 1.0 -> 100
        assert all(v == 0 for v in pe.values())
        assert compare(qe, raster).agreement["h"] >= 0.99  # (decays still round toward 0)
    with pytest.raises(ConfigError, match="min_agreement"):
        compare(q, raster, min_agreement=2)
