"""Byte transports for the host link (``docs/protocol.md``, "Transports").

A :class:`Transport` moves bytes with a read timeout and knows nothing of frames.
:class:`SerialTransport` uses pyserial's ``serial_for_url``: a real port (``/dev/ttyUSB1``,
``COM3``), a TCP socket (``socket://localhost:7777``, the virtual board) or ``loop://``.
:class:`InProcessTransport` runs a Python object that speaks bytes (the reference device
``spikeforge.host.refdevice.RefLink`` or a simulator wrapper) in this process.
"""

from __future__ import annotations

from ..errors import SpikeforgeError
from ..protocol import DEFAULT_BAUD

__all__ = [
    "LinkError",
    "PortError",
    "Transport",
    "SerialTransport",
    "InProcessTransport",
    "AmaranthSimDevice",
]


class LinkError(SpikeforgeError):
    """Base class of the host link errors."""


class PortError(LinkError):
    """The port cannot be opened (no device there, no permission, port in use)."""


class Transport:
    """Bytes to and from a device.

    Attributes
    ----------
    timeout : float
        Seconds :meth:`read` waits for the first byte before it returns what it has.
    description : str
        Where the bytes go, for error messages.
    """

    timeout: float = 1.0
    description: str = "?"

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int) -> bytes:
        """Return between 1 and ``n`` bytes, or ``b""`` if none came within ``timeout``."""
        raise NotImplementedError

    def flush_input(self) -> None:
        """Drop every byte received and not yet read."""
        while self.read(4096):
            pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """pyserial backend.

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` takes: a device path, ``socket://host:port``,
        ``loop://``, ``rfc2217://...``.
    baudrate : int
        Ignored by ``socket://`` and ``loop://``.
    timeout : float
        Read timeout in seconds.
    """

    def __init__(self, url: str, baudrate: int = DEFAULT_BAUD, timeout: float = 1.0):
        import serial

        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate={baudrate!r} must be a positive integer")
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be > 0 seconds")
        self.url = url
        self.timeout = timeout
        self.description = f"{url} at {baudrate} baud"
        try:
            self._port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, OSError, ValueError) as e:
            hint = ""
            if url.startswith("/dev/") or url.upper().startswith("COM"):
                hint = " (is the board plugged in, is this the right port, may you open it?)"
            elif url.startswith("socket://"):
                hint = " (is the virtual board running and listening on that port?)"
            raise PortError(f"cannot open {url!r}: {e}{hint}") from e

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, n: int) -> bytes:
        first = self._port.read(1)
        if not first:
            return b""
        waiting = self._port.in_waiting
        rest = self._port.read(min(n - 1, waiting)) if waiting and n > 1 else b""
        return first + rest

    def flush_input(self) -> None:
        self._port.reset_input_buffer()

    def close(self) -> None:
        self._port.close()


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
        if self.tamper is not None:
            data = self.tamper("to_device", bytes(data))
        self.device.write(bytes(data))

    def read(self, n: int) -> bytes:
        if not self._rx:
            data = self.device.read()
            if self.tamper is not None and data:
                data = self.tamper("to_host", data)
            self._rx += data
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    def flush_input(self) -> None:
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
