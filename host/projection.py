"""Board-time projection: what a real board would take for a run measured on the virtual board.

Spec: ``docs/projection.md``.

The virtual board simulates every clock cycle of the chip but not the UART's bit time nor the
USB adapter's latency, and it runs at whatever speed this PC simulates.  A run's *counts* do not
depend on the PC: the chip's clock cycles, the bytes each way, and the round trips (the times the
host had to wait for a reply before it could send more).  :func:`project` turns them into the
time a board would take at its clock and baud rate, for a given USB round-trip latency::

    core   = cycles / clock_hz
    up     = bytes_to_chip * bits_per_byte / baud      (bits_per_byte = 10: start + 8 + stop)
    down   = bytes_to_host * bits_per_byte / baud
    lat    = round_trips * latency_s
    total  = core + up + down + lat                    (stop-and-wait: nothing overlaps)
    total  = max(core, up, down, win) + lat            (pipelined: core and both wires overlap)
    win    = bytes_to_chip * (frame_time + latency_s) / window_bytes
                 (pipelined with a receive window: the host may have at most ``window_bytes``
                  in flight, and a frame's bytes come back no sooner than its own wire time
                  plus the USB latency after they were sent)

:func:`project_board` takes the clock and baud rate from the board registry
(``spikeforge.boards.configs``) and projects for each of :data:`USB_LATENCIES_S`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError

__all__ = [
    "BITS_PER_BYTE",
    "USB_LATENCIES_S",
    "Projection",
    "project",
    "project_board",
    "board_link",
]

BITS_PER_BYTE = 10
"""UART bits on the wire per byte: one start bit, 8 data bits, one stop bit (8N1)."""

USB_LATENCIES_S = (0.001, 0.016)
"""The round-trip latencies projected by default: 1 ms (an FTDI adapter with its latency timer
at 1 ms, one USB full-speed frame) and 16 ms (the FTDI default latency timer)."""


@dataclass(frozen=True)
class Projection:
    """The projected board time of one run (all times in seconds).

    Attributes
    ----------
    board : str or None
        Registry name of the board whose clock and baud rate were used.
    clock_hz, baud, latency_s, pipelined, bits_per_byte
        The model's parameters.
    samples, cycles, bytes_to_chip, bytes_to_host, round_trips
        The run's counts.
    core_s : float
        ``cycles / clock_hz``: the chip's own time.
    wire_to_chip_s, wire_to_host_s : float
        The bytes of each direction at the baud rate.
    wire_s : float
        The wire time in the total: the sum of both directions (stop-and-wait) or the busier
        one (pipelined; the UART is full duplex).
    window_bytes : int or None
        The chip's receive window (pipelined runs), or None for no window limit.
    window_s : float
        Least time the window allows for ``bytes_to_chip`` (0 without a window).
    latency_total_s : float
        ``round_trips * latency_s``.
    total_s : float
        Projected time of the run.
    per_sample_s, samples_per_s : float
        ``total_s / samples`` and its inverse.
    uart_bound_samples_per_s : float
        Samples per second if only the busier direction's wire time counted: no link is faster.
    core_fraction, wire_fraction, latency_fraction : float
        ``core_s``, ``wire_s`` and ``latency_total_s`` over ``total_s``.  They add up to 1
        for stop-and-wait; pipelined, core and wire overlap, so they may add up to more.
    """

    board: str | None
    clock_hz: float
    baud: int
    latency_s: float
    pipelined: bool
    bits_per_byte: int
    samples: int
    cycles: int
    bytes_to_chip: int
    bytes_to_host: int
    round_trips: int
    core_s: float
    wire_to_chip_s: float
    wire_to_host_s: float
    wire_s: float
    window_bytes: int | None
    window_s: float
    latency_total_s: float
    total_s: float
    per_sample_s: float
    samples_per_s: float
    uart_bound_samples_per_s: float
    core_fraction: float
    wire_fraction: float
    latency_fraction: float

    def to_dict(self) -> dict:
        """The fields as a JSON-ready ``dict`` (infinities as ``None``)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}

    @property
    def bound(self) -> str:
        """What takes most of the time: ``"core"``, ``"wire"`` or ``"latency"``."""
        parts = {"core": self.core_s, "wire": self.wire_s, "latency": self.latency_total_s}
        return max(parts, key=parts.get)


def _count(name, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is out of range: allowed an integer >= {minimum}")
    return int(value)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value > 0
    ):
        raise ConfigError(f"{name}={value!r} is out of range: allowed a number > 0")
    return value


def _ratio(a, b):
    return a / b if b > 0 else (math.inf if a > 0 else 0.0)


def project(*, cycles: int, clock_hz: float, bytes_to_chip: int, bytes_to_host: int,
            baud: int, round_trips: int, latency_s: float, pipelined: bool = False,
            samples: int = 1, bits_per_byte: int = BITS_PER_BYTE,
            board: str | None = None, window_bytes: int | None = None,
            frame_bytes: int = 512) -> Projection:
    """Project a run's counts onto a board's clock, baud rate and USB latency.

    Parameters
    ----------
    cycles : int
        Chip clock cycles the run took (the virtual board's count).
    clock_hz : float
        The board's chip clock.
    bytes_to_chip, bytes_to_host : int
        Bytes on the wire host -> chip and chip -> host.
    baud : int
        UART baud rate.
    round_trips : int
        Times the host waited for a reply before it could send more.
    latency_s : float
        USB latency added to each round trip (``0`` for none).
    pipelined : bool
        The link streams (several requests in flight): core and wire time overlap.  False:
        stop-and-wait, everything adds up.
    samples : int
        Samples in the run (for ``per_sample_s`` and ``samples_per_s``).
    bits_per_byte : int
        UART bits per byte (10 for 8N1).
    board : str, optional
        Recorded in the result.
    window_bytes : int, optional
        Pipelined: the chip's receive window (IDENTIFY's ``rx_window``), which bounds the bytes
        in flight per round trip; None: no bound.
    frame_bytes : int
        Wire bytes of a request frame (for the window bound).

    Raises
    ------
    ConfigError
        A negative count, a clock or baud rate that is not positive, ``samples < 1``.
    """
    cycles = _count("cycles", cycles)
    bytes_to_chip = _count("bytes_to_chip", bytes_to_chip)
    bytes_to_host = _count("bytes_to_host", bytes_to_host)
    round_trips = _count("round_trips", round_trips)
    samples = _count("samples", samples, 1)
    bits_per_byte = _count("bits_per_byte", bits_per_byte, 1)
    _positive("clock_hz", clock_hz)
    baud = _count("baud", baud, 1)
    if isinstance(latency_s, bool) or not isinstance(latency_s, (int, float)) or not (
        math.isfinite(latency_s) and latency_s >= 0
    ):
        raise ConfigError(f"latency_s={latency_s!r} is out of range: allowed a number >= 0")
    core = cycles / clock_hz
    up = bytes_to_chip * bits_per_byte / baud
    down = bytes_to_host * bits_per_byte / baud
    lat = round_trips * latency_s
    win = 0.0
    if pipelined and window_bytes is not None:
        window_bytes = _count("window_bytes", window_bytes, 1)
        frame_time = _count("frame_bytes", frame_bytes, 1) * bits_per_byte / baud
        win = bytes_to_chip * (frame_time + latency_s) / window_bytes
    if pipelined:
        wire = max(up, down, win)
        total = max(core, wire) + lat
    else:
        wire = up + down
        total = core + wire + lat
    return Projection(
        board=board, clock_hz=float(clock_hz), baud=baud, latency_s=float(latency_s),
        pipelined=bool(pipelined), bits_per_byte=bits_per_byte, samples=samples, cycles=cycles,
        bytes_to_chip=bytes_to_chip, bytes_to_host=bytes_to_host, round_trips=round_trips,
        core_s=core, wire_to_chip_s=up, wire_to_host_s=down, wire_s=wire,
        window_bytes=window_bytes if pipelined else None, window_s=win,
        latency_total_s=lat, total_s=total, per_sample_s=total / samples,
        samples_per_s=_ratio(samples, total),
        uart_bound_samples_per_s=_ratio(samples, max(up, down)),
        core_fraction=_ratio(core, total) if total else 0.0,
        wire_fraction=_ratio(wire, total) if total else 0.0,
        latency_fraction=_ratio(lat, total) if total else 0.0,
    )


def board_link(board) -> tuple[float, int]:
    """``(clock_hz, baud)`` of a board in the registry (``spikeforge.boards.configs``)."""
    from ..boards.configs import get_board

    chip = get_board(board).chip
    return chip.clock_mhz * 1e6, chip.baud


def project_board(board, *, latencies=USB_LATENCIES_S, **counts) -> list[Projection]:
    """:func:`project` at ``board``'s clock and baud rate, once per latency in ``latencies``.

    ``counts`` are the other keyword arguments of :func:`project` (``cycles``,
    ``bytes_to_chip``, ``bytes_to_host``, ``round_trips``, ``pipelined``, ``samples``).
    """
    from ..boards.configs import get_board

    name = get_board(board).name
    clock_hz, baud = board_link(name)
    return [project(clock_hz=clock_hz, baud=baud, latency_s=lat, board=name, **counts)
            for lat in latencies]
