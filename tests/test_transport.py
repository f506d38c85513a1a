# Tests of the byte transports (host/transport.py): large-chunk reads, byte counters, a link that
# goes away mid-run (peer closed, connection reset, device unplugged) and the FTDI latency timer.
# Every server here is a local TCP thread on 127.0.0.1 that stops by itself; no test waits for
# longer than a short read timeout, and none asserts wall-clock time.
import errno
import socket
import threading

import pytest
import serial

from spikeforge.host import transport as tr
from spikeforge.host.device import Device
from spikeforge.host.transport import (
    FtdiLatencyWarning,
    LinkError,
    LinkLostError,
    PortError,
    SerialTransport,
    lower_ftdi_latency,
)


class _Server:
    """A one-client TCP server thread: ``handler(conn)`` runs on the accepted connection."""

    def __init__(self, handler):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(5.0)  # the thread ends even if no client comes
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        self.handler = handler
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(5.0)
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()
            self.sock.close()

    def join(self):
        self.thread.join(5.0)


def _echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def _read_all(t, n):
    out = b""
    while len(out) < n:
        chunk = t.read(1 << 16)
        assert chunk, "timed out"
        out += chunk
    return out


def test_read_returns_what_has_arrived_in_large_chunks():
    srv = _Server(_echo)
    with SerialTransport(srv.url, timeout=2.0) as t:
        data = bytes(range(256)) * 40  # 10240 bytes
        t.write(data)
        first = t.read(1 << 16)
        assert len(first) > 1  # not one byte at a time
        rest = _read_all(t, len(data) - len(first))
        assert first + rest == data
        assert t.bytes_written == len(data) and t.bytes_read == len(data)
        # read(n) never returns more than n
        t.write(b"abcdef")
        got = b""
        while len(got) < 6:
            part = t.read(4)
            assert 1 <= len(part) <= 4
            got += part
        assert got == b"abcdef"
    srv.join()


def test_read_times_out_with_empty_bytes():
    srv = _Server(lambda conn: conn.recv(10))  # never answers; closes after the test writes
    with SerialTransport(srv.url, timeout=0.05) as t:
        assert t.read(100) == b""
        assert t.bytes_read == 0
        t.write(b"x")
    srv.join()


def test_peer_closed_is_link_lost_naming_the_port():
    srv = _Server(lambda conn: None)  # accepts, then closes at once
    t = SerialTransport(srv.url, timeout=1.0)
    srv.join()
    with pytest.raises(LinkLostError) as exc:
        for _ in range(10):  # the close is seen by the first read that wakes up
            t.read(100)
    msg = str(exc.value)
    assert srv.url in msg and "virtual board" in msg and "\n" not in msg
    t.close()
    t.close()  # twice is harmless


def test_connection_reset_is_link_lost():
    def reset(conn):
        conn.recv(1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    srv = _Server(reset)  # closing with linger 0 sends a RST
    with SerialTransport(srv.url, timeout=1.0) as t:
        t.write(b"?")
        srv.join()
        with pytest.raises(LinkLostError, match="was lost"):
            for _ in range(10):
                t.read(100)
                t.write(b"more")  # a write into a reset connection fails too


def test_device_open_on_a_vanishing_board_raises_a_link_error():
    srv = _Server(lambda conn: conn.recv(100))  # reads the IDENTIFY, then goes away
    with pytest.raises(LinkError) as exc:
        Device.open(srv.url, timeout=0.2, retries=1)
    assert srv.url in str(exc.value)
    srv.join()


def test_missing_device_lists_the_ports(monkeypatch):
    monkeypatch.setattr(tr, "serial_port_names", lambda: ["/dev/ttyUSB0", "/dev/ttyUSB1"])
    with pytest.raises(PortError) as exc:
        SerialTransport("/dev/ttyNOPE9")
    msg = str(exc.value)
    assert "/dev/ttyNOPE9" in msg and "serial ports found: /dev/ttyUSB0, /dev/ttyUSB1" in msg
    monkeypatch.setattr(tr, "serial_port_names", lambda: [])
    with pytest.raises(PortError, match="no serial port found"):
        SerialTransport("/dev/ttyNOPE9")


def test_nothing_listening_is_a_port_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # a port nobody listens on
    with pytest.raises(PortError, match="virtual board running"):
        SerialTransport(f"socket://127.0.0.1:{port}")


class _UnpluggedPort:
    """A pyserial port whose device was unplugged: no fileno, reads and writes fail."""

    in_waiting = 0
    timeout = 1.0

    def fileno(self):
        raise OSError("no fileno")

    def write(self, data):
        raise serial.SerialException(f"write failed: {OSError(errno.EIO, 'Input/output error')}")

    def flush(self):
        pass

    def read(self, n):
        raise serial.SerialException(
            "device reports readiness to read but returned no data (device disconnected or "
            "multiple access on port?)")

    def reset_input_buffer(self):
        raise OSError(errno.EIO, "Input/output error")

    def close(self):
        raise OSError(errno.EIO, "Input/output error")


def test_unplugged_device_is_link_lost(monkeypatch, tmp_path):
    monkeypatch.setattr(serial, "serial_for_url", lambda *a, **kw: _UnpluggedPort())
    t = SerialTransport("/dev/ttyUSB7", sysfs_root=str(tmp_path))
    for call in (lambda: t.write(b"x"), lambda: t.read(10), t.flush_input):
        with pytest.raises(LinkLostError) as exc:
            call()
        assert "/dev/ttyUSB7" in str(exc.value) and "plugged in" in str(exc.value)
    t.close()  # an unplugged port closes without an error
    assert t.bytes_written == 0


class _SlowPort(_UnpluggedPort):
    def write(self, data):
        raise serial.SerialTimeoutException("Write timeout")


def test_write_that_stalls_is_link_lost(monkeypatch, tmp_path):
    monkeypatch.setattr(serial, "serial_for_url", lambda *a, **kw: _SlowPort())
    t = SerialTransport("/dev/ttyUSB7", write_timeout=0.1, sysfs_root=str(tmp_path))
    with pytest.raises(LinkLostError, match="did not finish within 0.1s"):
        t.write(b"x")


# --- FTDI latency timer ----------------------------------------------------------------------
def _sysfs(tmp_path, name="ttyUSB1", value="16"):
    d = tmp_path / "bus" / "usb-serial" / "devices" / name
    d.mkdir(parents=True)
    (d / "latency_timer").write_text(f"{value}\n")
    return d / "latency_timer"


def test_latency_timer_lowered_when_writable(tmp_path):
    f = _sysfs(tmp_path)
    assert lower_ftdi_latency("/dev/ttyUSB1", str(tmp_path)) == 1
    assert f.read_text().strip() == "1"


def test_latency_timer_already_low_or_absent(tmp_path):
    _sysfs(tmp_path, value="1")
    assert lower_ftdi_latency("/dev/ttyUSB1", str(tmp_path)) == 1
    assert lower_ftdi_latency("/dev/ttyUSB5", str(tmp_path)) is None  # no sysfs entry
    assert lower_ftdi_latency("/dev/ttyS0", str(tmp_path)) is None  # not usb-serial


def test_latency_timer_not_writable_warns_once_with_the_fix(tmp_path, monkeypatch):
    f = _sysfs(tmp_path)
    real_open = open

    def no_write(path, mode="r", *a, **kw):
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(tr, "open", no_write, raising=False)
    with pytest.warns(FtdiLatencyWarning) as rec:
        assert lower_ftdi_latency("/dev/ttyUSB1", str(tmp_path)) == 16
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "16 ms" in msg and "Permission denied" in msg
    assert f"echo 1 | sudo tee {f}" in msg and "udev" in msg and "\n" not in msg


def test_serial_transport_lowers_the_timer_on_open(monkeypatch, tmp_path):
    _sysfs(tmp_path, "ttyUSB3", "16")
    monkeypatch.setattr(serial, "serial_for_url", lambda *a, **kw: _UnpluggedPort())
    t = SerialTransport("/dev/ttyUSB3", sysfs_root=str(tmp_path))
    assert t.latency_timer_ms == 1


def test_counters_and_turnarounds_of_a_stop_and_wait_device():
    from spikeforge.host.refdevice import RefCore, RefLink

    dev = Device.in_process(RefLink(RefCore(mem_words=256), ident_words=[1]))
    t = dev.transport
    assert t.turnarounds == 1 and t.bytes_written > 0 and t.bytes_read > 0  # IDENTIFY
    w0, r0 = t.bytes_written, t.bytes_read
    dev.write_mem(0, [1, 2, 3])
    dev.reset_state()
    dev.step(1)
    assert t.turnarounds == 4  # one wait per request
    assert t.bytes_written > w0 and t.bytes_read > r0


def test_virtual_board_killed_mid_run(verilator_toolchain):
    """The chip's process dies between two samples: the next request raises LinkLostError
    naming the port and the virtual board (rtl: reuses test_chip.py's cached build)."""
    import os
    import signal

    import numpy as np

    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.hw.chip import Chip
    from spikeforge.hw.image import CoreConfig
    from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
    from spikeforge.sim.virtual_board import VirtualBoard

    config = CoreConfig(n_neurons=96, n_inputs=48, n_populations=4, synapse_words=4096)
    net = Network(48, [Population("out", 8, NeuronParams(beta=3900, threshold=100))],
                  [Projection(INPUT, "out", np.full((48, 8), 30))], outputs=["out"])
    raster = np.ones((4, 1, 48), dtype=np.uint8)
    with VirtualBoard(Chip(config, 24_000_000), name="chip_test") as vb:
        url = vb.url
        backend = ChipBackend(url, timeout=1.0)
        backend.load(net)
        backend.run(raster)
        os.kill(vb.pid, signal.SIGKILL)
        vb._proc.wait(5.0)
        with pytest.raises(LinkLostError) as exc:
            backend.run(raster)
        backend.close()
    assert url in str(exc.value) and "virtual board" in str(exc.value)
