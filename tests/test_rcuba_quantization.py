# Recurrent CubaLIF graphs exported by snnTorch 1.0.0 whose weights are 5-15x the threshold
# (issue #14): they import, their float golden model is snnTorch, 16-bit weights (WIDE_FORMAT)
# keep >= 99 % of every population's spikes, and 8-bit weights (DEFAULT_FORMAT) do not for the
# 10x and 15x graphs -- the documented problem, asserted so that a change of the 8-bit quantizer
# shows up here.  The graphs and their sidecar settings are in tests/data/nir/snntorch_rcuba_*,
# written by tests/data/make_rcuba_fixtures.py; the table of every graph is printed by
# benchmarks/quantization_agreement.py.
import glob
import importlib.util
import json
import os

import numpy as np
import pytest

from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT, NeuronModel, ResetMode

pytestmark = pytest.mark.needs("nir")

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "nir")
NAMES = sorted(os.path.basename(p)[len("snntorch_rcuba_"):-len(".nir")]
               for p in glob.glob(os.path.join(DATA, "snntorch_rcuba_*.nir")))
HEAVY = [n for n in NAMES if not n.startswith("w05")]  # weights 10x and 15x the threshold
RATE, T, BATCH, SEED = 0.15, 50, 64, 14


def _path(name, ext=".nir"):
    return os.path.join(DATA, f"snntorch_rcuba_{name}{ext}")


def _meta(name):
    with open(_path(name, ".json")) as f:
        return json.load(f)


def _script():
    """tests/data/make_rcuba_fixtures.py as a module (it imports torch only when called)."""
    spec = importlib.util.spec_from_file_location(
        "make_rcuba_fixtures", os.path.join(HERE, "data", "make_rcuba_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _raster(n_inputs):
    rng = np.random.default_rng(SEED)
    return (rng.random((T, BATCH, n_inputs)) < RATE).astype(np.uint8)


_REPORTS = {}


def _report(name, fmt):
    """compare() of the fixture quantized with ``fmt`` (cached: each is used by two tests)."""
    from spikeforge.host.nir_import import from_nir
    from spikeforge.host.quantize import compare, quantize

    key = (name, fmt)
    if key not in _REPORTS:
        net = from_nir(_path(name))
        _REPORTS[key] = compare(quantize(net, fmt), _raster(net.n_inputs), min_agreement=None)
    return _REPORTS[key]


def test_fixture_set():
    assert NAMES == sorted(_script().FIXTURES)
    assert HEAVY and len(HEAVY) < len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_imports_as_described(name):
    from spikeforge.host.nir_import import from_nir

    meta = _meta(name)
    spec = meta["snntorch"]
    net = from_nir(_path(name))  # settings from the sidecar JSON
    assert net.n_inputs == spec["n_inputs"] == 32
    hidden, out = net.populations
    assert (hidden.name, hidden.size, out.size) == ("1.lif", spec["hidden"], spec["n_outputs"])
    assert net.outputs == [out.name]
    for pop, layer in zip(net.populations, spec["layers"], strict=True):
        p = pop.params
        assert p.model == NeuronModel.CUBA
        assert p.reset == ResetMode[meta["reset"].upper()]
        assert p.reset_delay == meta["reset_delay"]
        assert f"_{meta['reset']}_" in name
        assert name.endswith("_delay" if meta["reset_delay"] else "_nodelay")
        np.testing.assert_allclose(p.threshold, layer["threshold"], rtol=1e-6)
        np.testing.assert_allclose(p.beta, layer["beta"], rtol=1e-6)
        np.testing.assert_allclose(p.alpha, layer["alpha"], rtol=1e-6)
        assert np.all(np.asarray(p.bias) != 0)
    # every projection's largest |weight| is k times the threshold of the layer it feeds
    k = spec["weight_over_threshold"]
    assert name.startswith(f"w{k:02d}_")
    edges = {(pr.src, pr.dst) for pr in net.projections}
    expected = {("input", "1.lif"), ("1.lif", "1.lif"), ("1.lif", out.name)}
    if spec["output_kind"] == "RSynaptic":
        expected.add((out.name, out.name))
    assert edges == expected
    for pr in net.projections:
        thr = float(np.max(net.population(pr.dst).params.threshold))
        w = np.abs(net.dense_weights(pr)).max()
        assert w == pytest.approx(k * thr, rel=1e-5), (pr.src, pr.dst)


@pytest.mark.parametrize("name", NAMES)
def test_sidecar_settings_matter(name):
    """The other reset_delay, or the other reset, changes the float network's spikes: the
    sidecar JSON (NIR carries neither) is what makes the import right."""
    from spikeforge.host.nir_import import Settings, from_nir
    from spikeforge.sim.golden import GoldenChip

    meta = _meta(name)
    x = _raster(32)[:, :16]
    base = GoldenChip(from_nir(_path(name)), "float", batch=16).run(x)["spikes"]
    other_reset = "zero" if meta["reset"] == "subtract" else "subtract"
    for settings in (Settings(dt=meta["dt"], reset=meta["reset"],
                              reset_delay=not meta["reset_delay"]),
                     Settings(dt=meta["dt"], reset=other_reset,
                              reset_delay=meta["reset_delay"])):
        spikes = GoldenChip(from_nir(_path(name), settings), "float", batch=16).run(x)["spikes"]
        assert not np.array_equal(spikes, base), settings


@pytest.mark.needs("torch", "snntorch")
@pytest.mark.parametrize("name", NAMES)
def test_float_golden_equals_snntorch(name):
    """The float golden model of the imported graph spikes as the snnTorch module it was
    exported from (rebuilt from the .nir file's weights): all entries equal when measured
    (make_rcuba_fixtures.py prints 100.000 % for 64 samples); at least 99.9 % asserted."""
    match, ours, ref = _script().float_match(name, batch=32)
    assert ref.any() and not ref.all()
    assert match >= 0.999, f"{name}: {100 * match:.3f} % of spike entries equal"


@pytest.mark.parametrize("name", NAMES)
def test_wide_format_keeps_every_population(name):
    rep = _report(name, WIDE_FORMAT)
    low = {k: v for k, v in rep.agreement.items() if v < 0.99}
    assert not low, f"{name}: WIDE_FORMAT agreement below 99 %: {low}"
    assert min(rep.rates_float.values()) > 0.05  # the agreement is not that of a silent network


@pytest.mark.parametrize("name", HEAVY)
def test_default_format_loses_a_population(name):
    """Issue #14: with 8-bit weights at 10x / 15x the threshold, the integer threshold has 13 / 8
    levels and at least one population agrees on less than 99 % of its spike entries.  If this
    fails, the 8-bit quantizer changed: update the issue and docs/compiler.md's figures."""
    rep = _report(name, DEFAULT_FORMAT)
    assert min(rep.agreement.values()) < 0.99, f"{name}: {rep.agreement}"
