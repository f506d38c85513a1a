# The load path (docs/core.md "The memory image", docs/routing.md): one fit check, and a load
# that checks and compiles a network once.  No RTL: the chip is a stand-in device that records
# the bus writes.
from types import SimpleNamespace

import numpy as np
import pytest

from spikeforge.boards.configs import ChipParams
from spikeforge.errors import ConfigError, FitError
from spikeforge.host import image as host_image
from spikeforge.host.chip_backend import ChipBackend
from spikeforge.host.compiler import compile, from_weights
from spikeforge.host.image import build_image, check_fit, fit_problems
from spikeforge.hw.chip import ident_words
from spikeforge.hw.image import CoreConfig
from spikeforge.hw.router import RouterConfig, core_address
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.sim import golden

RNG = np.random.default_rng(7)


class RecordingDevice:
    """What ChipBackend needs of a Device to identify a chip and load a network."""

    def __init__(self, config):
        self.identity = SimpleNamespace(words=ident_words(config))
        self.writes = []

    def identify(self):
        return self.identity

    def write_mem(self, addr, words):
        self.writes.append((addr, list(words)))

    def close(self):
        pass


def _net(n_pops=2, size=8, n_in=6):
    pops = [Population(f"p{k}", size, NeuronParams(beta=3900, threshold=40))
            for k in range(n_pops)]
    projs = [Projection(INPUT, "p0", RNG.integers(-20, 20, (n_in, size)))]
    projs += [Projection(f"p{k}", f"p{k + 1}", RNG.integers(-20, 20, (size, size)))
              for k in range(n_pops - 1)]
    projs.append(Projection(f"p{n_pops - 1}", "p0", RNG.integers(-5, 5, (size, size))))
    return Network(n_in, pops, projs, outputs=[f"p{n_pops - 1}"])


@pytest.fixture
def counts(monkeypatch):
    """How often the fit check validated a network and compiled its blocks."""
    n = {"validate": 0, "compile": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            n[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(host_image, "network_problems",
                        counting("validate", golden.network_problems))
    monkeypatch.setattr(host_image, "compile_blocks",
                        counting("compile", host_image.compile_blocks))
    monkeypatch.setattr(golden, "validate_network", counting("validate", golden.validate_network))
    return n


def test_a_one_core_load_validates_and_compiles_once(counts):
    config = CoreConfig(n_neurons=32, n_inputs=8, n_populations=4, synapse_words=256)
    dev = RecordingDevice(config)
    chip = ChipBackend(device=dev)
    net = _net()
    chip.load(net)
    assert counts == {"validate": 1, "compile": 1}
    assert dev.writes == build_image(net, config)  # the image a fresh check builds


def test_a_refused_load_writes_nothing(counts):
    config = CoreConfig(n_neurons=16, n_inputs=8, n_populations=4, synapse_words=256)
    dev = RecordingDevice(config)
    with pytest.raises(FitError, match="24 neurons, the core holds 16"):
        ChipBackend(device=dev).load(_net(3))
    assert dev.writes == []
    bad = _net()
    bad.populations[0].params.beta = 5000  # out of range: reported with the capacity problems
    with pytest.raises(FitError, match="beta"):
        ChipBackend(device=dev).load(bad)
    assert dev.writes == []


def test_a_multi_core_load_compiles_each_core_once(counts):
    core = CoreConfig(n_neurons=16, n_inputs=16, n_populations=2, synapse_words=256)
    rc = RouterConfig(core, cores=3)
    net = _net(3)
    dev = RecordingDevice(rc)
    chip = ChipBackend(device=dev, partition_options={"assign": [0, 1, 2]})
    chip.load(net)
    assert counts == {"validate": 3, "compile": 3}  # one sub-network per core
    mapping = chip.mapping
    expected = []
    for k, sub in enumerate(mapping.subnets):
        expected += [(core_address(k, a), w) for a, w in build_image(sub, core)]
    assert dev.writes[: len(expected)] == expected


def test_the_greedy_partition_checks_each_candidate_once(counts):
    core = CoreConfig(n_neurons=16, n_inputs=16, n_populations=2, synapse_words=256)
    rc = RouterConfig(core, cores=2)
    chip = ChipBackend(device=RecordingDevice(rc))
    chip.load(_net(2))  # candidates [p0], [p0, p1]: both fit, one core takes both
    assert chip.mapping.groups == [["p0", "p1"]]
    assert counts == {"validate": 2, "compile": 2}


def test_compiled_image_reuses_the_check(counts):
    config = CoreConfig(n_neurons=64, n_inputs=8)
    c = compile(from_weights([RNG.normal(size=(8, 40)), RNG.normal(size=(40, 4))]), config)
    assert counts["compile"] == 1
    image = c.image()
    assert counts["compile"] == 1  # the image reuses compile()'s check
    assert image == build_image(c.net, config)  # (this one checks and compiles afresh)


def test_one_fit_check_two_contracts():
    config = CoreConfig(n_neurons=16, n_inputs=8, n_populations=4, synapse_words=256)
    big = _net(3)
    problems = fit_problems(big, config)
    assert problems and any("24 neurons" in p for p in problems)
    with pytest.raises(FitError) as exc:
        check_fit(big, config)
    assert exc.value.problems == problems
    net = _net()
    fit = check_fit(net, config)
    assert fit.ok and fit.config == config and fit.layout.blocks
    assert build_image(net, config, fit) == build_image(net, config)
    with pytest.raises(ConfigError, match="not a passed fit check"):
        build_image(_net(), config, fit)  # another network
    with pytest.raises(ConfigError, match="not a passed fit check"):
        build_image(net, CoreConfig(n_neurons=32, n_inputs=8), fit)  # another configuration
    # without a configuration only the number format is checked
    assert fit_problems(big) == []
    assert check_fit(big).layout is None


# --- capacity: one weights-per-word rule (CoreConfig.weights_per_word) ------------------------
@pytest.mark.parametrize("lanes, per_word", [(1, 2), (2, 2), (4, 4)])
def test_a_boards_synapses_size_the_weight_memory_for_its_lanes(lanes, per_word):
    def params(synapses):
        return ChipParams(neurons=64, inputs=8, populations=2, synapses=synapses, lanes=lanes,
                          clock_mhz=12.0, baud=115200)

    cfg = params(1001).to_core_config()
    assert (cfg.n_neurons, cfg.n_inputs, cfg.n_populations, cfg.lanes) == (64, 8, 2, lanes)
    assert cfg.weights_per_word == per_word
    assert cfg.synapse_words == -(-1001 // per_word)  # 2x too many with lanes=4 before
    # a dense 8 x 64 projection takes exactly 512 weight slots with every lane count
    net = Network(8, [Population("a", 64, NeuronParams(beta=3900, threshold=40))],
                  [Projection(INPUT, "a", RNG.integers(-9, 9, (8, 64)) | 1)])
    assert fit_problems(net, params(512).to_core_config()) == []
    short = fit_problems(net, params(512 - per_word).to_core_config())
    assert any("synapse words" in p for p in short), short
