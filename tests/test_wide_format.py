"""The wide number format (``spikeforge.spec.WIDE_FORMAT``: 16-bit weights, 24-bit state) on the
core, the chip and the compiler (issue #14, part 1 and 2; ``docs/neuron.md``, "Two formats").

The core and the golden model are written for any :class:`~spikeforge.spec.Format`; these tests
hold them to it at the widths a board carries (``ulx3s-85f-wide``), and the compiler to choosing
the scales that keep a network's spikes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from core_golden import assert_core_run_matches_golden

from spikeforge.errors import ConfigError, FitError
from spikeforge.host.backends import GoldenBackend
from spikeforge.host.compiler import compile
from spikeforge.host.nir_import import from_nir
from spikeforge.host.quantize import (
    QuantizationWarning,
    calibration_raster,
    compare,
    quantize,
)
from spikeforge.hw.core import CoreOptions
from spikeforge.hw.core_sim import run_network
from spikeforge.hw.image import CoreConfig
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT

NIR = Path(__file__).parent / "data" / "nir"
K = 1 << 8  # values a 16-bit-state network would use, times 256


def _wide_net(rng, n_inputs=12):
    """Three populations with thresholds, biases and weights across the wide ranges (the
    draws of test_core_unit's random network, widened)."""
    # decay codes of 15 fraction bits (q <= 32768), odd to use the three below 1/4096
    p1 = NeuronParams(model="cuba", beta=31203, alpha=24005,
                      threshold=rng.integers(100 * K, 3000 * K, 12),
                      bias=rng.integers(-50 * K, 50 * K, 12), reset="subtract",
                      reset_delay=False)
    p2 = NeuronParams(model="lif", beta=32001, threshold=1500 * K, bias=300 * K, reset="zero")
    p3 = NeuronParams(model="cuba", leak="shift", beta=3, alpha=2, threshold=800 * K, bias=0,
                      reset="none")
    w_lo, w_hi = WIDE_FORMAT.weight_range

    def w(lo, hi, shape):
        return np.clip(rng.integers(lo, hi, shape), w_lo, w_hi)

    return Network(
        n_inputs,
        [Population("a", 12, p1), Population("b", 7, p2), Population("c", 5, p3)],
        [
            Projection(INPUT, "a", w(-40 * K, 100 * K, (n_inputs, 12))),
            Projection("a", "b", w(w_lo, w_hi + 1, (12, 7))),
            Projection("b", "c", w(w_lo, w_hi + 1, (7, 5))),
            Projection("c", "a", w(-60 * K, 60 * K, (5, 12))),  # recurrent, to an earlier pop
            Projection("b", "b", w(-30 * K, 30 * K, (7, 7))),  # self-recurrent
            Projection(INPUT, "c", w(-20 * K, 20 * K, (n_inputs, 5))),
        ],
        outputs=["a", "c"],
    )


@pytest.mark.parametrize(("lanes", "weight_banks", "fast"),
                         [(1, 1, False), (2, 3, True), (4, 1, False)])
def test_core_matches_golden_in_the_wide_format(lanes, weight_banks, fast):
    """Spikes and membranes of the core (Amaranth simulator) equal the golden model's with
    16-bit weights (two to a 32-bit weight word) and 24-bit state.  Four lanes would need a
    64-bit weight word, wider than the bus: refused, naming the limit."""
    rng = np.random.default_rng(lanes)
    net = _wide_net(rng)
    if lanes == 4:
        with pytest.raises(ConfigError, match="weight_bits=16 is out of range for lanes=4"):
            CoreConfig(n_neurons=32, n_inputs=12, n_populations=4, synapse_words=256,
                       lanes=4, fmt=WIDE_FORMAT)
        return
    cfg = CoreConfig(n_neurons=32, n_inputs=12, n_populations=4, synapse_words=256,
                     lanes=lanes, fmt=WIDE_FORMAT)
    events = [list(rng.permutation(net.n_inputs)[: rng.integers(0, 11)]) for _ in range(10)]
    events[3] = list(range(net.n_inputs))
    res = run_network(net, cfg, events, weight_banks=weight_banks, fast=fast)
    assert assert_core_run_matches_golden(res, net, events, WIDE_FORMAT) > 10
    # the membranes really use the wide range (beyond 16 bits)
    assert np.abs(np.asarray(res["v"])).max() > 1 << 15
    assert res["status"]["PARAM_ERRORS"] == 0


def test_population_thresholds_need_per_neuron_thresholds_when_wide():
    with pytest.raises(ConfigError, match="threshold_bits=24 needs per_neuron_threshold=True"):
        CoreConfig(per_neuron_threshold=False, fmt=WIDE_FORMAT)


# --- the compiler ---------------------------------------------------------------------------
def _fixture(name):
    return from_nir(NIR / f"snntorch_rcuba_{name}.nir")


def test_quantize_keeps_a_recurrent_cuba_graph_in_the_wide_format_and_warns_in_the_narrow():
    """The issue's case: weights 10x the threshold, zero reset.  8-bit weights: a warning that
    names the populations and the wide format; 16-bit weights: >= 99 % everywhere, silently."""
    net = _fixture("w10_zero_nodelay")
    with pytest.warns(QuantizationWarning, match=r"ulx3s-85f-wide") as rec:
        narrow = quantize(net, DEFAULT_FORMAT)
    msg = str(rec[0].message)
    assert "'1.lif'" in msg and "on the calibration input" in msg
    assert min(narrow.calibration["agreement"].values()) < 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationWarning)
        wide = quantize(net, WIDE_FORMAT)
    assert min(wide.calibration["agreement"].values()) >= 0.99
    # and on other inputs than the calibration's
    raster = calibration_raster(net.n_inputs, 0.2, steps=40, samples=32, seed=7)
    rep = compare(wide, raster, min_agreement=0.99)
    assert min(rep.agreement.values()) >= 0.99


def test_calibration_tries_the_choices_and_keeps_the_best():
    net = _fixture("w10_subtract_delay")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        q = quantize(net, DEFAULT_FORMAT)
        fixed = quantize(net, DEFAULT_FORMAT, per_neuron=False)
    cal = q.calibration
    assert {(t["per_neuron"], t["weight_fill"]) for t in cal["tried"]} == {
        (False, 1.0), (False, 0.25), (True, 1.0), (True, 0.25)}
    best = max(t["lowest_agreement"] for t in cal["tried"])
    assert min(cal["agreement"].values()) >= best - 5e-4
    assert "random input, spike probability 0.1" in cal["input"]
    assert {t["per_neuron"] for t in fixed.calibration["tried"]} == {False}
    assert any("calibration on random input" in n for n in q.notes)
    # the user's own input
    raster = calibration_raster(net.n_inputs, 0.3, steps=20, samples=8, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        own = quantize(net, WIDE_FORMAT, calibrate=raster)
    assert own.calibration["input"] == "the given input, 20 steps x 8 samples"
    # no calibration: one choice, no simulation
    assert quantize(net, WIDE_FORMAT, calibrate=None).calibration is None


@pytest.mark.parametrize(("kw", "match"), [
    ({"calibrate": "yes"}, "calibrate='yes' is not valid"),
    ({"calibrate": np.zeros((5, 2, 3))}, r"calibration input has shape \(5, 2, 3\)"),
    ({"rate": 0}, "rate=0 is out of range"),
    ({"per_neuron": "both"}, "per_neuron='both' is not valid"),
    ({"min_agreement": 2}, "min_agreement=2 is out of range"),
])
def test_quantize_refuses_bad_calibration_options(kw, match):
    with pytest.raises(ConfigError, match=match):
        quantize(_fixture("w05_subtract_delay"), **kw)


def test_compile_refuses_a_format_the_chip_does_not_have():
    narrow_chip = CoreConfig(n_neurons=128, n_inputs=32, n_populations=4, synapse_words=4096)
    with pytest.raises(ConfigError, match=r"16-bit weights.*reports 8-bit weights"):
        compile(NIR / "snntorch_rcuba_w05_subtract_delay.nir", narrow_chip, fmt=WIDE_FORMAT)
    # an integer network made for the wide format does not fit the narrow chip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        wide_net = quantize(_fixture("w05_subtract_delay"), WIDE_FORMAT).net
    with pytest.raises(FitError, match=r"is out of range: allowed -128..127 \(8-bit signed\)"):
        compile(wide_net, narrow_chip)


def test_rsynaptic_immediate_reset_that_snntorch_drops_is_compiled_as_it_runs():
    """snnTorch 1.0.0's RSynaptic computes the delayed reset whatever reset_delay says
    (tests/data/make_rcuba_fixtures.py): the compiler says so and compiles what it computes."""
    snn = pytest.importorskip("snntorch")
    torch = pytest.importorskip("torch")
    from spikeforge.host.compiler import from_snntorch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6),
        snn.RSynaptic(alpha=0.8, beta=0.9, all_to_all=True, linear_features=6,
                      reset_delay=False, init_hidden=False),
    )
    with pytest.warns(UserWarning, match="reset_delay=False has no effect"):
        net = from_snntorch(model, n_inputs=4)
    assert all(p.params.reset_delay for p in net.populations)


# --- the chip (RTL) -------------------------------------------------------------------------
WIDE_CHIP = CoreConfig(n_neurons=128, n_inputs=32, n_populations=4, synapse_words=4096, lanes=2,
                       fmt=WIDE_FORMAT)


@pytest.fixture(scope="module")
def wide_chip(verilator_toolchain):
    """A virtual board whose core has the wide format and the ULX3S's build options."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.hw.chip import Chip
    from spikeforge.sim.virtual_board import VirtualBoard

    chip = Chip(WIDE_CHIP, 24_000_000, options=CoreOptions(fast=True, weight_banks=3))
    with VirtualBoard(chip, name="wide_format_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0)
        yield backend
        backend.close()


@pytest.mark.parametrize("graph", ["w10_zero_nodelay", "w15_subtract_delay"])
def test_wide_chip_runs_a_recurrent_cuba_graph_like_the_golden_model(wide_chip, graph):
    """IDENTIFY reports the format, the compiler quantizes for it, and the chip's spikes and
    membranes are the golden model's, bit for bit; the spikes agree with the float network."""
    assert wide_chip.config.fmt == WIDE_FORMAT
    sidecar = json.loads((NIR / f"snntorch_rcuba_{graph}.json").read_text())
    assert sidecar["reset_delay"] in (True, False)
    compiled = compile(NIR / f"snntorch_rcuba_{graph}.nir", wide_chip.config)
    assert compiled.fmt == WIDE_FORMAT
    net = compiled.net
    assert max(int(np.abs(net.dense_weights(p)).max()) for p in net.projections) > 127
    wide_chip.load(net)
    raster = calibration_raster(net.n_inputs, 0.15, steps=12, samples=3, seed=11)
    spikes, v = wide_chip.run_membrane(raster)
    golden = GoldenBackend(fmt=WIDE_FORMAT)
    golden.load(net)
    g_spikes, g_v = golden.run_membrane(raster)
    outs = net.output_indices()  # the chip reports the output populations' spikes
    np.testing.assert_array_equal(spikes[..., outs], g_spikes[..., outs])
    np.testing.assert_array_equal(v, g_v)  # every membrane
    assert spikes[..., outs].any() and np.abs(v).max() > 1 << 15
    rep = compiled.report(calibration_raster(net.n_inputs, 0.15, steps=40, samples=32, seed=5))
    assert min(rep.agreement.values()) >= 0.99


# --- the command line -----------------------------------------------------------------------
def test_run_warns_once_for_the_chip_it_runs_on(tmp_path):
    """``spikeforge run`` checks the model before it opens a board without calibrating (no
    warning for a format the chip may not have), then compiles for the chip's format: on the
    8-bit golden model the warning comes once, naming the wide board."""
    from spikeforge.cli import main

    x = tmp_path / "x.npy"
    np.save(x, calibration_raster(32, 0.15, steps=10, samples=4, seed=2))
    model = str(NIR / "snntorch_rcuba_w10_zero_nodelay.nir")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert main(["run", model, str(x), "--port", "golden"]) == 0
    quant = [w for w in rec if issubclass(w.category, QuantizationWarning)]
    assert len(quant) == 1 and "ulx3s-85f-wide" in str(quant[0].message)


def test_virtual_port_names_an_unknown_board(tmp_path, capsys):
    from spikeforge.cli import main

    x = tmp_path / "x.npy"
    np.save(x, calibration_raster(32, 0.15, steps=3, samples=1))
    model = str(NIR / "snntorch_rcuba_w05_subtract_delay.nir")
    assert main(["run", model, str(x), "--port", "virtual:nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown board 'nope'" in err and "ulx3s-85f-wide" in err
