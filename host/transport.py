"""Byte transports for the host link (``docs/protocol.md``, "Transports").

A :class:`Transport` moves bytes with a read timeout and knows nothing of frames.
:class:`SerialTransport` uses pyserial's ``serial_for_url``: a real port (``/dev/ttyUSB1``,
``COM3``), a TCP socket (``socket://localhost:7777``, the virtual board) or ``loop://``.
:class:`InProcessTransport` runs a Python object that speaks bytes (the reference device
``spikeforge.host.refdevice.RefLink`` or a simulator wrapper) in this process.
"""

from __future__ import annotations

import os
import re
import select
import time
import warnings

from ..errors import SpikeforgeError
from ..protocol import DEFAULT_BAUD

__all__ = [
    "LinkError",
    "PortError",
    "LinkLostError",
    "FtdiLatencyWarning",
    "Transport",
    "SerialTransport",
    "InProcessTransport",
    "AmaranthSimDevice",
    "lower_ftdi_latency",
    "serial_port_names",
]


class LinkError(SpikeforgeError):
    """Base class of the host link errors."""


class PortError(LinkError):
    """The port cannot be opened (no device there, no permission, port in use)."""


class LinkLostError(LinkError):
    """The link went away in the middle of a session (board unplugged, virtual board killed,
    connection reset): the message names the port and what to check."""


class FtdiLatencyWarning(UserWarning):
    """An FTDI adapter's latency timer is above 1 ms and spikeforge may not lower it."""


class Transport:
    """Bytes to and from a device.

    Attributes
    ----------
    timeout : float
        Seconds :meth:`read` waits for the first byte before it returns what it has.
    description : str
        Where the bytes go, for error messages.
    bytes_written, bytes_read : int
        Bytes sent to and received from the device since the transport was opened (what a
        real UART would carry: ``spikeforge.host.projection``).
    turnarounds : int
        Reads that followed a write: the times the host turned from sending to waiting for
        the device (one per request for a stop-and-wait host, so its round trips).
    """

    timeout: float = 1.0
    description: str = "?"
    bytes_written: int = 0
    bytes_read: int = 0
    turnarounds: int = 0
    _sent_since_read: bool = False

    def _count_write(self, n: int) -> None:
        self.bytes_written += n
        self._sent_since_read = True

    def _count_read(self, n: int) -> None:
        self.bytes_read += n
        if self._sent_since_read:
            self.turnarounds += 1
            self._sent_since_read = False

    def write(self, data: bytes) -> None:
        """Send ``data`` to the device."""
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        """Return between 1 and ``n`` bytes, or ``b""`` if none came within ``timeout``."""
        raise NotImplementedError

    def flush_input(self) -> None:
        """Drop every byte received and not yet read."""
        while self.read(4096):
            pass

    def close(self) -> None:
        """Release the port."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Where Linux lists the usb-serial ports (``<root>/bus/usb-serial/devices/ttyUSB0``).
SYSFS_ROOT = "/sys"


def serial_port_names() -> list[str]:
    """The serial ports the OS lists (``serial.tools.list_ports``), for error messages."""
    try:
        from serial.tools import list_ports

        return sorted(p.device for p in list_ports.comports())
    except Exception:  # a broken udev/sysfs must not hide the real error
        return []


def lower_ftdi_latency(port: str, sysfs_root: str = SYSFS_ROOT) -> int | None:
    """Set the latency timer of the usb-serial adapter behind ``port`` to 1 ms, if it may.

    An FTDI adapter holds received bytes up to its latency timer (16 ms by default) before it
    sends a short USB packet to the host: every reply of a request waits that long.  Linux shows
    the timer in sysfs (``/sys/bus/usb-serial/devices/ttyUSB1/latency_timer``); writing it needs
    root or a udev rule.  When the timer is above 1 ms and cannot be written, one
    :class:`FtdiLatencyWarning` says its value, its cost and the command that lowers it.

    Parameters
    ----------
    port : str
        The device path (``/dev/ttyUSB1``, or a symlink such as ``/dev/serial/by-id/...``).
    sysfs_root : str
        Root of sysfs (tests point it at a directory of their own).

    Returns
    -------
    int or None
        The latency timer in ms after the attempt, or None if ``port`` has none (not a
        usb-serial port, not Linux).
    """
    try:
        name = os.path.basename(os.path.realpath(port))
    except (OSError, ValueError):
        return None
    if not re.fullmatch(r"tty(USB|ACM)\d+", name):
        return None
    path = os.path.join(sysfs_root, "bus", "usb-serial", "devices", name, "latency_timer")
    try:
        with open(path) as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if value <= 1:
        return value
    try:
        with open(path, "w") as f:
            f.write("1")
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        warnings.warn(
            FtdiLatencyWarning(
                f"{port}: the FTDI latency timer is {value} ms, so every reply may wait up to "
                f"{value} ms (a request-reply round trip costs up to {value} ms instead of 1 ms); "
                f"spikeforge cannot lower it ({reason}).  Lower it with: echo 1 | sudo tee {path}"
                "  -- or for good with a udev rule in /etc/udev/rules.d/99-ftdi-latency.rules: "
                'ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", '
                'ATTR{latency_timer}="1"'
            ),
            stacklevel=3,
        )
        return value


class SerialTransport(Transport):
    """pyserial backend.

    :meth:`read` returns whatever has arrived, up to ``n`` bytes, as soon as there is at least
    one byte (it does not wait for all ``n``).  Every OS or pyserial error after the port is
    open becomes a :class:`LinkLostError` naming the port and what to check; no wait lasts
    longer than ``timeout`` (reads) or ``write_timeout`` (writes).

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` takes: a device path, ``socket://host:port``,
        ``loop://``, ``rfc2217://...``.
    baudrate : int
        Ignored by ``socket://`` and ``loop://``.
    timeout : float
        Read timeout in seconds.
    write_timeout : float, optional
        Seconds a write may block (a device that stopped reading); default
        ``max(5, timeout)``.
    sysfs_root : str
        Where to look for the FTDI latency timer of a ``/dev/ttyUSB*`` port
        (:func:`lower_ftdi_latency`).

    Attributes
    ----------
    latency_timer_ms : int or None
        The usb-serial adapter's latency timer after opening (None: not a usb-serial port).
    """

    def __init__(self, url: str, baudrate: int = DEFAULT_BAUD, timeout: float = 1.0, *,
                 write_timeout: float | None = None, sysfs_root: str = SYSFS_ROOT):
        import serial

        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate={baudrate!r} must be a positive integer")
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be > 0 seconds")
        self.url = url
        self.timeout = timeout
        self.write_timeout = max(5.0, timeout) if write_timeout is None else write_timeout
        self.description = f"{url} at {baudrate} baud"
        self._closed = False
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout,
                                               write_timeout=self.write_timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            raise PortError(f"cannot open {url!r}: {e}{_open_hint(url)}") from e
        # Ports that select() can watch (a device, a socket) are read without blocking once
        # select() says a byte is there: one read takes everything that has arrived.
        try:
            self._fd = self._port.fileno()
            self._port.timeout = 0
        except Exception:
            self._fd = None
        self.latency_timer_ms = lower_ftdi_latency(url, sysfs_root) if url.startswith(
            "/dev/") else None

    def _lost(self, e: BaseException) -> LinkLostError:
        detail = str(e) or type(e).__name__
        return LinkLostError(f"the link to {self.url} was lost ({detail}){_lost_hint(self.url)}")

    def write(self, data: bytes) -> None:
        """Send ``data``; raises :class:`LinkLostError` if the port is gone or stalls."""
        import serial

        try:
            self._port.write(data)
            self._port.flush()
        except serial.SerialTimeoutException as e:
            raise LinkLostError(
                f"writing to {self.url} did not finish within {self.write_timeout}s: the device "
                f"stopped reading{_lost_hint(self.url)}"
            ) from e
        except (serial.SerialException, OSError, ValueError, TypeError) as e:
            raise self._lost(e) from e
        self._count_write(len(data))

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes as soon as one has come, or ``b""`` after ``timeout`` seconds."""
        import serial

        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], self.timeout)
                data = self._port.read(n) if ready else b""
            else:
                data = self._port.read(1)
                waiting = self._port.in_waiting if data else 0
                if waiting and n > 1:
                    data += self._port.read(min(n - 1, waiting))
        except (serial.SerialException, OSError, ValueError, TypeError) as e:
            raise self._lost(e) from e
        self._count_read(len(data))
        return bytes(data)

    def flush_input(self) -> None:
        """Drop the bytes received and not read (at most ``timeout`` seconds of a talker)."""
        import serial

        if self._fd is None:
            try:
                self._port.reset_input_buffer()
            except (serial.SerialException, OSError, ValueError) as e:
                raise self._lost(e) from e
            return
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([self._fd], [], [], 0)
                if not ready or not self._port.read(65536):
                    return
        except (serial.SerialException, OSError, ValueError) as e:
            raise self._lost(e) from e

    def close(self) -> None:
        """Close the port (twice is harmless; errors of a port already gone are ignored)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._port.close()
        except Exception:  # closing a port that disappeared: nothing left to release
            pass


def _is_device(url: str) -> bool:
    return url.startswith("/dev/") or url.upper().startswith("COM")


def _open_hint(url: str) -> str:
    if _is_device(url):
        ports = serial_port_names()
        found = f"serial ports found: {', '.join(ports)}" if ports else "no serial port found"
        return (f" (is the board plugged in, is this the right port, may you open it? {found})")
    if url.startswith("socket://"):
        return " (is the virtual board running and listening on that port? start one with " \
            "`spikeforge sim`)"
    if "://" not in url:
        return (" (a port is a serial device such as /dev/ttyUSB1 or COM3, or a URL such as "
                "socket://host:port; the backends are virtual, golden, golden-float)")
    return ""


def _lost_hint(url: str) -> str:
    if _is_device(url):
        return ("; check that the board is still plugged in and powered and the USB cable is "
                "sound (after re-plugging, the port may have another name)")
    if url.startswith("socket://"):
        return ("; check that the virtual board is still running (was it killed or did it "
                "crash? start it again with `spikeforge sim`)")
    return "; check the connection to the device"


class InProcessTransport(Transport):
    """Run a byte-speaking Python object in this process.

    Parameters
    ----------
    device : object
        Has ``write(bytes)`` (consumes request bytes and does the work) and ``read() -> bytes``
        (every reply byte produced so far).  ``read`` returning nothing means a timeout: no time
        passes, so tests of timeouts and retries run instantly.
    tamper : callable, optional
        ``tamper(direction, data) -> data`` with ``direction`` ``"to_device"`` or
        ``"to_host"``, to inject transmission errors in tests.
    """

    def __init__(self, device, *, tamper=None, timeout: float = 1.0):
        self.device = device
        self.tamper = tamper
        self.timeout = timeout
        self.description = f"in-process {type(device).__name__}"
        self._rx = bytearray()

    def write(self, data: bytes) -> None:
        """Hand ``data`` to the device object (after ``tamper``)."""
        self._count_write(len(data))
        if self.tamper is not None:
            data = self.tamper("to_device", bytes(data))
        self.device.write(bytes(data))

    def read(self, n: int) -> bytes:
        """Up to ``n`` of the bytes the device object produced; ``b""`` means a timeout."""
        if not self._rx:
            data = self.device.read()
            if self.tamper is not None and data:
                data = self.tamper("to_host", data)
            self._rx += data
        out = bytes(self._rx[:n])
        del self._rx[:n]
        self._count_read(len(out))
        return out

    def flush_input(self) -> None:
        """Drop the pending reply bytes."""
        self._rx.clear()
        self.device.read()


class AmaranthSimDevice:
    """Gateware with byte-stream ports, run in the Amaranth simulator, speaking bytes.

    Put it behind an :class:`InProcessTransport` to run the host library against the real
    gateware without Verilator (slow: thousands of cycles per second; for tests).

    Parameters
    ----------
    dut : wiring.Component
        Has an ``rx: In(stream.Signature(8))`` and a ``tx: Out(stream.Signature(8))`` member
        (``spikeforge.hw.link.Link``, ``spikeforge.hw.chip.Chip``).
    clk_freq : int
        Simulated clock frequency (only scales simulated time).
    quiet_cycles : int
        :meth:`read` gives up (a "timeout") after this many cycles without a new byte; it must be
        longer than the longest silence of the device in the middle of a request (a long STEP
        without spikes).
    """

    def __init__(self, dut, *, clk_freq: int = 12_000_000, quiet_cycles: int = 20_000):
        from amaranth.sim import Simulator

        for name in ("rx", "tx"):
            if not hasattr(dut, name):
                raise ValueError(f"dut {dut!r} has no {name!r} byte stream")
        self.dut = dut
        self.clk_freq = clk_freq
        self.quiet_cycles = quiet_cycles
        self.cycles = 0
        self._inq = bytearray()
        self._out = bytearray()
        self.sim = Simulator(dut)
        self.sim.add_clock(1 / clk_freq)
        self.sim.add_testbench(self._bench)

    async def _bench(self, ctx):
        rx, tx = self.dut.rx, self.dut.tx
        ctx.set(tx.ready, 1)
        while True:
            valid = bool(self._inq)
            ctx.set(rx.valid, valid)
            if valid:
                ctx.set(rx.payload, self._inq[0])
            _, _, rx_ready, tx_valid, tx_data = await ctx.tick().sample(
                rx.ready, tx.valid, tx.payload
            )
            self.cycles += 1
            if valid and rx_ready:
                del self._inq[0]
            if tx_valid:
                self._out.append(tx_data)

    def write(self, data: bytes) -> None:
        self._inq += data

    def read(self) -> bytes:
        """Run until a whole frame came out (and the input is consumed), or ``quiet_cycles``."""
        last_len, last_change = len(self._out), self.cycles
        while True:
            self.sim.run_until((self.cycles + 64) / self.clk_freq)
            if len(self._out) != last_len:
                last_len, last_change = len(self._out), self.cycles
            if not self._inq and self._out and self._out[-1] == 0:
                break
            if self.cycles - last_change >= self.quiet_cycles:
                break
        out = bytes(self._out)
        self._out.clear()
        return out
