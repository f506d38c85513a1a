# Tests of the main demo (host/demo.py) and the backend interface (host/backends.py): the bundled
# model on real digits through the golden backend, a faulty backend, and the CLI subcommands.
import argparse
import json

import numpy as np
import pytest

from spikeforge.errors import ConfigError, SpikeforgeError
from spikeforge.host import backends
from spikeforge.host.backends import Backend, GoldenBackend, open_backend, register_backend
from spikeforge.host.demo import load_bundled, register, run_demo

#: the bundled snnTorch model (a NIR graph) on scikit-learn's digits: the [models] extra
needs_digits = pytest.mark.needs("nir", "sklearn")


@needs_digits
def test_demo_golden_backend_agrees_with_golden():
    res = run_demo(GoldenBackend(), samples=40, progress=False)
    assert res["samples"] == 40 and res["timesteps"] == 25
    assert res["identical"] and res["spike_agreement"] == 1.0
    assert res["accuracy_chip"] == res["accuracy_golden"]
    assert abs(res["accuracy_golden"] - res["accuracy_float"]) <= 0.05
    assert res["accuracy_golden"] > 0.8
    assert res["throughput"]["events"] > 0 and res["throughput"]["samples_per_s"] > 0


@pytest.mark.needs("sklearn")
def test_demo_sklearn_model():
    res = run_demo(samples=20, progress=False, model="sklearn", timesteps=30)
    assert res["identical"] and res["timesteps"] == 30 and res["accuracy_chip"] > 0.75


class _FlippingBackend(GoldenBackend):
    """A broken chip: the last neuron's spikes are inverted."""

    name = "flipping"

    def run(self, raster):
        s = super().run(raster)
        s[..., -1] = ~s[..., -1]
        return s


@needs_digits
def test_demo_reports_disagreement():
    res = run_demo(_FlippingBackend(), samples=10, progress=False)
    assert not res["identical"]
    assert res["spike_agreement"] == pytest.approx(0.9)  # 1 of 10 output neurons always wrong


class _WrongShape(Backend):
    name = "wrong"

    def load(self, net):
        self.net = net

    def run(self, raster):
        return np.zeros((1, 1, 1), dtype=bool)


@needs_digits
def test_demo_checks_backend_output_shape():
    with pytest.raises(ConfigError, match="backend 'wrong' returned spikes of shape"):
        run_demo(_WrongShape(), samples=2, progress=False)


@needs_digits
def test_demo_argument_errors():
    with pytest.raises(ConfigError, match="samples=0 is out of range: allowed 1..360"):
        run_demo(samples=0, progress=False)
    with pytest.raises(ConfigError, match="model='mnist'"):
        run_demo(samples=1, progress=False, model="mnist")


@pytest.mark.needs("nir")
def test_golden_backend_membrane_and_errors():
    b = GoldenBackend()
    with pytest.raises(ConfigError, match="no network loaded"):
        b.run(np.zeros((2, 1, 64)))
    from spikeforge.host.compiler import compile

    b.load(compile(load_bundled()[0]).net)
    spikes, v = b.run_membrane(np.ones((3, 2, 64), dtype=np.uint8))
    assert spikes.shape == v.shape == (3, 2, 138)
    with pytest.raises(ConfigError, match=r"expected \(T, batch, n_inputs=64\)"):
        b.run(np.zeros((3, 2, 5)))


def test_open_backend_names_and_url(monkeypatch):
    assert backends.DEFAULT_BACKEND == "virtual"
    assert isinstance(open_backend("golden"), GoldenBackend)
    assert open_backend("golden-float").arithmetic == "float"
    with pytest.raises(SpikeforgeError, match="localhost:1"):
        open_backend("socket://localhost:1")  # a URL opens a chip link: nothing listens there
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))
    seen = []
    register_backend("url", lambda port: seen.append(port) or GoldenBackend())
    assert isinstance(open_backend("socket://localhost:1"), GoldenBackend)
    assert seen == ["socket://localhost:1"]


def _cli(argv):
    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


@needs_digits
def test_cli_demo_json(capsys):
    assert _cli(["demo", "--samples", "5", "--json", "--port", "golden"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["samples"] == 5 and res["backend"] == "golden" and res["identical"]


@needs_digits
def test_cli_demo_text_and_error(capsys):
    assert _cli(["demo", "--samples", "3", "--port", "golden"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "agreement" in out and "samples/s" in out
    from spikeforge.cli import main

    assert main(["demo", "--samples", "3", "--port", "/dev/ttyNOPE"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("spikeforge: error: ") and "/dev/ttyNOPE" in err
    assert "simulation speed (this PC)" in out and "board speed (projected)" in out


@pytest.mark.needs("nir", "sklearn", "matplotlib")
def test_cli_run_with_labels_and_plot(tmp_path, capsys, verilator_toolchain):
    # `spikeforge run` without --port starts a virtual board: rtl (conftest.py)
    from spikeforge.host.coding import rate_encode
    from spikeforge.host.demo import load_digits_split

    _, (x, y) = load_digits_split()
    raster = rate_encode(x[:6], 25, seed=1234, x_max=16.0)
    np.savez(tmp_path / "in.npz", raster=raster, labels=y[:6])
    np.save(tmp_path / "in.npy", raster)
    path = load_bundled()[0]
    png = tmp_path / "r.png"
    assert _cli(["run", path, str(tmp_path / "in.npz"), "--json", "--plot", str(png)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["predictions"]) == 6 and 0 <= res["accuracy"] <= 1
    assert png.stat().st_size > 1000
    assert _cli(["run", path, str(tmp_path / "in.npy")]) == 0
    assert capsys.readouterr().out.startswith("predictions ")
    with pytest.raises(ConfigError, match="does not exist"):
        _cli(["run", path, str(tmp_path / "missing.npy")])


class _OutputsOnly(GoldenBackend):
    """A chip that only reports the output population (as the UART link does)."""

    name = "outputs-only"
    reports_all_neurons = False

    def run(self, raster):
        s = super().run(raster)
        s[..., :128] = False
        return s


@needs_digits
def test_demo_with_an_outputs_only_backend():
    res = run_demo(_OutputsOnly(), samples=8, progress=False)
    assert res["identical"] and res["spike_agreement"] == 1.0


# --- the convolutional model (digits-conv) -------------------------------------------------------
@needs_digits
def test_demo_conv_model_on_the_golden_backend():
    """The bundled spiking CNN: all 360 test digits through the golden backend give the integer
    accuracy its training script measured, and chip == golden."""
    _, meta = load_bundled("digits-conv")
    res = run_demo(GoldenBackend(), progress=False, model="digits-conv")
    assert res["samples"] == 360 and res["timesteps"] == meta["timesteps"]
    assert res["neurons"] == meta["neurons"] and res["synapses"] == meta["synapses"]
    assert res["identical"] and res["accuracy_chip"] == res["accuracy_golden"]
    assert res["accuracy_golden"] == pytest.approx(meta["int_accuracy"], abs=1e-12)
    assert res["accuracy_float"] == pytest.approx(meta["golden_float_accuracy"], abs=1e-12)
    assert res["accuracy_golden"] >= 0.97


@needs_digits
def test_conv_model_fits_the_virtual_board_unrolled():
    """The CNN keeps its convolutions (integer kernels) and fits the ULX3S chip with every
    convolution unrolled into a dense block (host/image.py)."""
    from spikeforge.boards.configs import get_board
    from spikeforge.host.compiler import compile
    from spikeforge.host.image import compile_blocks, fit_problems
    from spikeforge.network import Conv

    path, meta = load_bundled("digits-conv")
    config = get_board("ulx3s-85f").chip.to_core_config()
    net = compile(path, config).net
    assert fit_problems(net, config) == []
    assert [type(p.weights).__name__ for p in net.projections] == ["Conv2d", "Conv2d", "ndarray"]
    assert all(np.issubdtype(p.weights.kernel.dtype, np.integer)
               for p in net.projections if isinstance(p.weights, Conv))
    slots = len(compile_blocks(net, config).slots)
    assert meta["unrolled_weight_slots"] <= slots <= config.synapse_words * \
        config.weights_per_word


@needs_digits
def test_demo_conv_model_on_the_virtual_board(verilator_toolchain):
    # the ULX3S chip in Verilator: rtl (conftest.py)
    with open_backend("virtual") as backend:
        res = run_demo(backend, samples=4, progress=False, model="digits-conv")
    assert res["identical"] and res["spike_agreement"] == 1.0
    assert res["accuracy_chip"] == res["accuracy_golden"]
