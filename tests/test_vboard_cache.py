# amaranth: UnusedElaboratable=no
# The virtual board's build cache (keyed on the sources and parameters of the design, in the
# user's cache directory), `spikeforge info`, and the idle-driven harness (busy_cycles, the
# --ignore-idle reproduction of the old harness).  docs/virtual_board.md.
import json
import random
from pathlib import Path

import pytest
import serial
from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge import cli
from spikeforge.errors import ConfigError
from spikeforge.hw.chip import Chip
from spikeforge.hw.core import CoreOptions
from spikeforge.hw.image import CoreConfig
from spikeforge.hw.util import mark_used
from spikeforge.sim import verilator as sv
from spikeforge.sim import virtual_board as vbm
from spikeforge.sim.virtual_board import (
    ToolchainError,
    VirtualBoard,
    build_virtual_board,
    design_source_key,
)

REPO = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO / "build" / "virtual_board"
CONFIG = CoreConfig(n_neurons=32, n_inputs=16, n_populations=2, synapse_words=512)


def _chip(*args, **kwargs):
    chip = Chip(*args, **kwargs)
    mark_used(chip)  # only keyed here, never elaborated
    return chip


# --- the cache key -----------------------------------------------------------------------------


def test_same_chip_parameters_give_the_same_key():
    a = design_source_key(_chip(CONFIG, 48_000_000))
    b = design_source_key(_chip(CoreConfig(n_neurons=32, n_inputs=16, n_populations=2,
                                           synapse_words=512), 48_000_000))
    assert a is not None and a == b


@pytest.mark.parametrize("other", [
    lambda: _chip(CONFIG, 50_000_000),  # clock (IDENTIFY reports it)
    lambda: _chip(CoreConfig(n_neurons=64, n_inputs=16, n_populations=2, synapse_words=512),
                  48_000_000),
    lambda: _chip(CONFIG, 48_000_000, cores=2),
    lambda: _chip(CONFIG, 48_000_000, options=CoreOptions(fast=True)),
    lambda: _chip(CONFIG, 48_000_000, uart_errors=True),
])
def test_any_parameter_change_gives_another_key(other):
    assert design_source_key(other()) != design_source_key(_chip(CONFIG, 48_000_000))


def test_key_covers_every_spikeforge_module_the_chip_imports():
    closure = vbm._spikeforge_module_closure("spikeforge.hw.chip")
    for name in ("spikeforge.hw.chip", "spikeforge.hw.link", "spikeforge.hw.core.neuron_core",
                 "spikeforge.protocol", "spikeforge.spec", "spikeforge.hw", "spikeforge"):
        assert name in closure
    assert not any(n.startswith("spikeforge.host") for n in closure)
    assert all(path.is_file() for path in closure.values())


def test_key_changes_with_a_source_file(tmp_path, monkeypatch):
    src = tmp_path / "fake.py"
    src.write_text("X = 1\n")
    monkeypatch.setattr(vbm, "_spikeforge_module_closure", lambda module: {"fake": src})
    chip = _chip(CONFIG, 48_000_000)
    before = design_source_key(chip)
    src.write_text("X = 2\n")
    assert design_source_key(chip) != before


class _Echo(wiring.Component):
    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=4)
        wiring.connect(m, wiring.flipped(self.rx), buf.w_stream)
        wiring.connect(m, buf.r_stream, wiring.flipped(self.tx))
        return m


def test_tops_outside_spikeforge_are_keyed_by_their_verilog():
    top = _Echo()
    assert design_source_key(top) is None
    mark_used(top)


def test_cached_chip_is_found_without_generating_verilog(tmp_path, monkeypatch):
    calls = {}

    def fake_build(sources, top, **kwargs):
        calls["sources"], calls["key"] = sources, kwargs["cache_key"]
        return tmp_path / "exe"

    def no_verilog(*a, **k):
        raise AssertionError("Verilog generated on a cache lookup")

    monkeypatch.setattr(vbm, "build_executable", fake_build)
    monkeypatch.setattr(vbm, "virtual_board_verilog", no_verilog)
    assert build_virtual_board(_chip(CONFIG, 48_000_000), "t", tmp_path) == tmp_path / "exe"
    assert callable(calls["sources"]) and calls["key"]
    key = calls["key"]
    build_virtual_board(_chip(CONFIG, 48_000_000), "t", tmp_path)
    assert calls["key"] == key
    build_virtual_board(_chip(CONFIG, 48_000_000), "t", tmp_path, trace=True)
    assert calls["key"] != key  # the harness configuration is part of it


def test_callable_sources_need_a_key():
    with pytest.raises(ConfigError, match="need a cache_key"):
        sv.build_executable(lambda: {}, "t", name="t")


# --- where the cache lives ---------------------------------------------------------------------


def test_build_dir_is_the_user_cache_unless_overridden(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.delenv("SPIKEFORGE_BUILD_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    default = sv.default_build_dir()
    assert default == Path(platformdirs.user_cache_dir("spikeforge", appauthor=False))
    assert tmp_path not in default.parents
    monkeypatch.setenv("SPIKEFORGE_BUILD_DIR", str(tmp_path / "b"))
    assert sv.default_build_dir() == tmp_path / "b"


def test_cache_usage_counts_builds_and_bytes(tmp_path):
    assert sv.cache_usage(tmp_path / "none") == sv.CacheUsage(tmp_path / "none", False, 0, 0)
    for name in ("a-1", "b-2"):
        d = tmp_path / "virtual_board" / name
        (d / "obj_dir").mkdir(parents=True)
        (d / "BUILD_OK").write_text("k\n")
        (d / "obj_dir" / "exe").write_bytes(b"x" * 1000)
    (tmp_path / "virtual_board" / "c-3").mkdir()  # a build that never finished
    usage = sv.cache_usage(tmp_path)
    assert usage.exists and usage.builds == 2 and usage.bytes == 2 * (1000 + 2)


# --- spikeforge info ---------------------------------------------------------------------------


def test_info_shows_cache_and_toolchains(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKEFORGE_BUILD_DIR", str(tmp_path))
    d = tmp_path / "virtual_board" / "x-1"
    d.mkdir(parents=True)
    (d / "BUILD_OK").write_text("k\n")
    (d / "exe").write_bytes(b"x" * 3000)
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["build_cache"] == {"path": str(tmp_path), "exists": True, "bytes": 3002,
                                   "builds": 1, "env": "SPIKEFORGE_BUILD_DIR"}
    names = {t["name"] for t in data["toolchains"]}
    assert {"verilator", "c++", "yosys", "nextpnr-ice40", "nextpnr-ecp5",
            "openFPGALoader"} <= names
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "2.9 KiB" in out and "1 build" in out
    assert "verilator" in out


def test_info_says_what_is_missing_and_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKEFORGE_BUILD_DIR", str(tmp_path / "nothing-yet"))
    monkeypatch.setattr(sv, "_dist_version", lambda dist: None)
    monkeypatch.setattr(sv, "_which_first", lambda names: None)
    monkeypatch.setattr(sv.shutil, "which", lambda name, *a, **k: None)
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "not created yet" in out
    assert "verilator" in out and "not found" in out
    assert "pip install 'spikeforge[sim]'" in out
    assert "pip install 'spikeforge[boards]'" in out
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert not any(t["found"] for t in data["toolchains"])
    assert data["build_cache"]["exists"] is False and data["build_cache"]["bytes"] == 0


# --- the idle-driven harness (RTL) -------------------------------------------------------------


class _EchoIdle(wiring.Component):
    """Loopback through a 4-byte FIFO, with ``idle`` = FIFO empty, and a fixed point at rest."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    idle: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=4)
        wiring.connect(m, wiring.flipped(self.rx), buf.w_stream)
        wiring.connect(m, buf.r_stream, wiring.flipped(self.tx))
        m.d.comb += self.idle.eq(buf.level == 0)
        return m


class _SlowReply(wiring.Component):
    """Replies each byte at once, then stays busy (``idle`` low) for 2**25 cycles."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    idle: Out(1)

    def elaborate(self, platform):
        m = Module()
        count = Signal(26)
        data = Signal(8)
        pending = Signal()
        m.d.comb += [
            self.rx.ready.eq(~pending & (count == 0)),
            self.tx.valid.eq(pending),
            self.tx.payload.eq(data),
            self.idle.eq(~pending & (count == 0)),
        ]
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += [data.eq(self.rx.payload), pending.eq(1), count.eq(1 << 25)]
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += pending.eq(0)
        with m.If(count != 0):
            m.d.sync += count.eq(count - 1)
        return m


def _build(top, name, **kwargs):
    try:
        return build_virtual_board(top, name, BUILD_DIR, **kwargs)
    except ToolchainError as e:
        pytest.skip(f"no RTL toolchain: {e}")


@pytest.fixture(scope="module")
def echo_idle_exe(verilator_toolchain):
    return _build(_EchoIdle(), "vb_echo_idle")


def _round_trips(vb, n=50):
    rng = random.Random(5)
    with serial.serial_for_url(vb.url, timeout=10) as port:
        start = vb.stats()
        for _ in range(n):
            data = rng.randbytes(rng.randint(1, 8))
            port.write(data)
            assert port.read(len(data)) == data
        end = vb.stats()
    return end.cycles - start.cycles, end.busy_cycles - start.busy_cycles


@pytest.mark.rtl
def test_idle_harness_simulates_only_busy_cycles(echo_idle_exe):
    with VirtualBoard(echo_idle_exe) as vb:
        cycles, busy = _round_trips(vb)
    assert busy > 0
    # the harness stops on the first idle cycle after each round trip: one spare cycle each
    assert cycles <= 1.1 * busy + 50


@pytest.mark.rtl
def test_ignore_idle_reproduces_the_fixed_batches(echo_idle_exe):
    with VirtualBoard(echo_idle_exe, ignore_idle=True) as vb:
        assert "--ignore-idle" in vb.command()
        cycles, busy = _round_trips(vb)
    # every request runs at least one whole 4,096-cycle batch (then the fixed-point probe)
    assert cycles >= 50 * 4096
    assert cycles > 100 * busy
    final = vb.final_stats
    assert final is not None and final.busy_cycles <= final.cycles


@pytest.mark.rtl
def test_replies_stream_out_while_the_chip_works(verilator_toolchain, tmp_path):
    exe = _build(_SlowReply(), "vb_slow_reply")
    with VirtualBoard(exe, extra_args=["--batch", str(1 << 26)]) as vb:
        with serial.serial_for_url(vb.url, timeout=30) as port:
            port.write(b"x")
            assert port.read(1) == b"x"
            # sent after --flush-cycles (256), long before the batch or the busy time ends
            at_reply = vb.cycles
        assert at_reply < 1 << 25


@pytest.mark.rtl
def test_building_is_said_only_when_building(verilator_toolchain, tmp_path, capsys):
    top = _EchoIdle()
    try:
        build_virtual_board(top, "vb_say", tmp_path)
    except ToolchainError as e:
        pytest.skip(f"no RTL toolchain: {e}")
    err = capsys.readouterr().err
    assert "building the virtual board 'vb_say'" in err and "first time only" in err
    build_virtual_board(_EchoIdle(), "vb_say", tmp_path)
    assert "building" not in capsys.readouterr().err
    # the intermediate files are gone, the executable stays
    exe = next(tmp_path.glob("vb_say-*/obj_dir/vb_say"))
    assert exe.is_file() and not list(tmp_path.glob("vb_say-*/obj_dir/*.o"))
