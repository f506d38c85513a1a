"""Talk to a spikeforge chip (board or virtual board) over the host link (``docs/protocol.md``).

>>> with Device.open("socket://localhost:7777") as dev:      # doctest: +SKIP
...     dev.write_mem(0, weights)
...     for spikes in dev.run(input_events_per_step):
...         ...

One request is in flight at a time (stop-and-wait); each carries a sequence number that its
replies echo.  A request whose reply is lost or corrupt is sent again with the same sequence
number; the device does not execute an EVENTS, STEP or RESET_STATE twice (it answers DUPLICATE),
so retries never double an input or a timestep.  The spikes of a STEP whose reply was lost cannot
be fetched again: that raises :class:`StepLostError`.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator

from ..protocol import (
    ADDR_BITS,
    DEFAULT_BAUD,
    EVENT_BITS,
    MAX_EVENTS,
    MAX_READ_WORDS,
    MAX_STEPS,
    MAX_WRITE_WORDS,
    FrameDecoder,
    FrameError,
    Identity,
    Op,
    PayloadError,
    Status,
    decode_events_reply,
    decode_identify,
    decode_spike_frame,
    decode_status,
    decode_step_final,
    decode_words,
    encode_events,
    encode_read,
    encode_step,
    encode_write,
    request,
)
from .transport import InProcessTransport, LinkError, PortError, SerialTransport, Transport

__all__ = [
    "Device",
    "Identity",
    "LinkError",
    "PortError",
    "NoAnswerError",
    "ProtocolVersionError",
    "DeviceError",
    "StepLostError",
]


class NoAnswerError(LinkError):
    """The device did not answer at all."""


class ProtocolVersionError(LinkError):
    """The device speaks another protocol version (or is not a spikeforge device)."""


class DeviceError(LinkError):
    """The device answered with an error status.

    Attributes
    ----------
    op : Op
    status : Status
    """

    def __init__(self, op, status, detail=""):
        self.op = op
        self.status = status
        super().__init__(f"device refused {op.name}: {status.name}{detail}")


class StepLostError(LinkError):
    """The chip ran timesteps but their spikes did not reach the host intact."""


_STATUS_HELP = {
    Status.UNKNOWN_OP: " (the bitstream is older than this host library?)",
    Status.BAD_LENGTH: " (host and bitstream disagree on a frame layout)",
    Status.BAD_ARG: " (address range past the end of the memory bus?)",
    Status.BUS_ERROR: " (an address is not mapped, or the memory is read-only)",
    Status.STEP_TIMEOUT: " (the core did not finish a timestep; is it configured?)",
}


class Device:
    """A spikeforge chip behind a :class:`~spikeforge.host.transport.Transport`.

    Parameters
    ----------
    transport : Transport
    retries : int
        How many times a request is sent again after a timeout or a corrupt reply.
    """

    def __init__(self, transport: Transport, *, retries: int = 3):
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries={retries!r} must be an integer >= 0")
        self.transport = transport
        self.retries = retries
        self._seq = 0
        self._decoder = FrameDecoder()
        self._resync = True
        self.identity: Identity | None = None
        #: Corrupt frames the host received (and recovered from or reported).
        self.rx_errors = 0
        #: Requests sent again.
        self.retried = 0

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def open(
        cls, url: str, baudrate: int = DEFAULT_BAUD, timeout: float = 1.0, retries: int = 3
    ) -> Device:
        """Open ``url`` (``/dev/ttyUSB1``, ``socket://host:port``, ``loop://``), check IDENTIFY."""
        transport = SerialTransport(url, baudrate=baudrate, timeout=timeout)
        dev = cls(transport, retries=retries)
        try:
            transport.flush_input()  # stale bytes of an earlier session
            dev.identify()
        except BaseException:
            transport.close()
            raise
        return dev

    @classmethod
    def in_process(cls, link, *, retries: int = 3, tamper=None) -> Device:
        """A device over an :class:`InProcessTransport` to ``link`` (e.g. ``RefLink``)."""
        dev = cls(InProcessTransport(link, tamper=tamper), retries=retries)
        dev.identify()
        return dev

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- requests -------------------------------------------------------------------------
    def _collect(self, op: Op, seq: int, on_more):
        """Read frames until the final reply to ``(op, seq)`` or a timeout.

        Returns ``(final, got_more, corrupt)``; ``final`` is ``(payload, Status)`` or None.
        """
        got_more = corrupt = False
        while True:
            data = self.transport.read(4096)
            if not data:
                return None, got_more, corrupt
            for item in self._decoder.feed(data):
                if isinstance(item, FrameError):
                    self.rx_errors += 1
                    corrupt = True
                    continue
                if len(item) < 3 or item[0] != op.value or item[1] != seq:
                    continue  # a stale reply to an earlier attempt or request
                payload, status = item[2:-1], item[-1]
                try:
                    status = Status(status)
                except ValueError:
                    raise LinkError(f"{op.name} reply has unknown status 0x{status:02x}") from None
                if status == Status.MORE:
                    got_more = True
                    on_more(payload)
                    continue
                return (payload, status), got_more, corrupt

    def _transact(self, op: Op, payload: bytes = b"", on_more=None):
        """Send one request, retrying on silence or corruption; return ``(payload, Status)``."""
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        wire = request(op, seq, payload)
        saw_corrupt = False
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            # A leading delimiter ends whatever partial frame the device may hold.
            self.transport.write((b"\x00" if self._resync or attempt else b"") + wire)
            self._resync = False
            final, got_more, corrupt = self._collect(op, seq, on_more or _no_more(op))
            saw_corrupt |= corrupt
            if final is not None:
                if op == Op.STEP and corrupt:
                    raise StepLostError(
                        "a STEP reply frame was corrupt (CRC error); the chip ran the steps but "
                        "some of their spikes are lost: reset_state() and run again"
                    )
                return final
            if got_more:
                raise StepLostError(
                    f"the final STEP reply did not come within {self.transport.timeout}s after "
                    "spike frames did; the chip state is unknown: reset_state() and run again"
                )
        if saw_corrupt:
            raise LinkError(
                f"{op.name}: every reply from {self.transport.description} was corrupt after "
                f"{self.retries + 1} attempts (CRC errors: wrong baud rate? noisy cable?)"
            )
        raise NoAnswerError(
            f"{op.name}: no answer from {self.transport.description} within "
            f"{self.transport.timeout}s, {self.retries + 1} attempts (wrong baud rate? board not "
            "flashed with a spikeforge bitstream? virtual board not running?)"
        )

    def _check(self, op: Op, status: Status, ok=(Status.OK,)):
        if status not in ok:
            raise DeviceError(op, status, _STATUS_HELP.get(status, ""))

    # --- public API -----------------------------------------------------------------------
    def identify(self) -> Identity:
        """Ask the device who it is; check the magic and the protocol version."""
        payload, status = self._transact(Op.IDENTIFY)
        self._check(Op.IDENTIFY, status)
        try:
            self.identity = decode_identify(payload)
        except PayloadError as e:
            raise ProtocolVersionError(str(e)) from None
        return self.identity

    @staticmethod
    def _check_range(addr: int, n: int):
        if not isinstance(addr, int) or not 0 <= addr or addr + n > 1 << ADDR_BITS:
            raise ValueError(
                f"addr={addr!r} (+{n} words) is out of range: allowed 0..{(1 << ADDR_BITS) - 1}"
            )

    def write_mem(self, addr: int, words: Iterable[int]) -> int:
        """Write ``words`` (any iterable of u32) at ``addr, addr+1, ...``; return the count.

        Sent in bursts of up to ``MAX_WRITE_WORDS``; the iterable is consumed burst by burst.
        """
        self._check_range(addr, 0)
        it = iter(words)
        written = 0
        while True:
            burst = list(itertools.islice(it, MAX_WRITE_WORDS))
            if not burst:
                return written
            self._check_range(addr + written, len(burst))
            for w in burst:
                if not -(1 << 31) <= w < 1 << 32:
                    raise ValueError(f"word {w!r} at {addr + written:#x} does not fit 32 bits")
            words32 = [w & 0xFFFFFFFF for w in burst]
            _, status = self._transact(Op.WRITE, encode_write(addr + written, words32))
            self._check(Op.WRITE, status)
            written += len(burst)

    def read_mem(self, addr: int, n: int) -> list[int]:
        """Read ``n`` words from ``addr, addr+1, ...``."""
        self._check_range(addr, n)
        out: list[int] = []
        while len(out) < n:
            count = min(MAX_READ_WORDS, n - len(out))
            payload, status = self._transact(Op.READ, encode_read(addr + len(out), count))
            self._check(Op.READ, status)
            try:
                words = decode_words(payload)
            except PayloadError:
                words = None
            if words is None or len(words) != count:
                raise LinkError(f"READ of {count} words answered {len(payload)} bytes")
            out += words
        return out

    def reset_state(self) -> None:
        """Clear the neuron state (membranes, currents, pending events) of the chip."""
        _, status = self._transact(Op.RESET_STATE)
        self._check(Op.RESET_STATE, status, ok=(Status.OK, Status.DUPLICATE))

    def send_events(self, addresses: Iterable[int]) -> int:
        """Send input events (channel addresses) for the current timestep; return the count."""
        it = iter(addresses)
        sent = 0
        while True:
            batch = list(itertools.islice(it, MAX_EVENTS))
            if not batch:
                return sent
            for i, a in enumerate(batch):
                a = operator.index(a)
                if not 0 <= a < 1 << EVENT_BITS:
                    raise ValueError(
                        f"event address {a!r} is out of range: allowed 0..{(1 << EVENT_BITS) - 1}"
                    )
                batch[i] = a
            payload, status = self._transact(Op.EVENTS, encode_events(batch))
            self._check(Op.EVENTS, status, ok=(Status.OK, Status.DUPLICATE))
            if status == Status.OK and _or_none(decode_events_reply, payload) != len(batch):
                raise LinkError(f"EVENTS of {len(batch)} events was acknowledged as {payload!r}")
            sent += len(batch)
            if len(batch) < MAX_EVENTS:
                return sent

    def step(self, n: int = 1) -> list[list[int]]:
        """Run ``n`` timesteps; return, per step, the output spike addresses in device order."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n={n!r} must be an integer >= 0")
        out: list[list[int]] = []
        while len(out) < n or n == 0:
            k = min(MAX_STEPS, n - len(out))
            out += self._step_chunk(k)
            if n == 0:
                break
        return out

    def _step_chunk(self, n: int) -> list[list[int]]:
        steps: list[list[int]] = [[] for _ in range(n)]
        received = 0

        def on_more(payload):
            nonlocal received
            try:
                idx, spikes = decode_spike_frame(payload)
            except PayloadError as e:
                raise LinkError(str(e)) from None
            if idx >= n:
                raise LinkError(f"STEP spike frame for step {idx} of a {n}-step request")
            steps[idx] += spikes
            received += len(spikes)

        payload, status = self._transact(Op.STEP, encode_step(n), on_more)
        if status == Status.DUPLICATE:
            raise StepLostError(
                f"the chip ran these {n} step(s) already but their replies were lost; "
                "reset_state() and run again"
            )
        done, total = _or_none(decode_step_final, payload) or (None, None)
        self._check(Op.STEP, status, ok=(Status.OK,))
        if done != n or total != received:
            raise StepLostError(
                f"STEP({n}) reply says {done} steps and {total} spikes, "
                f"the host received {received} spikes"
            )
        return steps

    def run(self, inputs: Iterable[Iterable[int]]) -> Iterator[list[int]]:
        """For each step's input events: send them, run one step, yield that step's spikes.

        Consumes ``inputs`` lazily, so an input stream of any length needs little memory.
        """
        for events in inputs:
            self.send_events(events)
            yield self.step(1)[0]

    def status(self) -> dict:
        """The link's error counters, ``busy`` and the core's status words (``core``)."""
        payload, status = self._transact(Op.STATUS)
        self._check(Op.STATUS, status)
        try:
            return decode_status(payload)
        except PayloadError as e:
            raise LinkError(str(e)) from None


def _or_none(decode, payload):
    """``decode(payload)``, or None if the payload is malformed."""
    try:
        return decode(payload)
    except PayloadError:
        return None


def _no_more(op):
    def on_more(payload):
        raise LinkError(f"{op.name} got a multi-frame reply (status MORE)")

    return on_more
