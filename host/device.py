"""Talk to a spikeforge chip (board or virtual board) over the host link (``docs/protocol.md``).

>>> with Device.open("socket://localhost:7777") as dev:      # doctest: +SKIP
...     dev.write_mem(0, weights)
...     for spikes in dev.run(input_events_per_step):
...         ...

Two ways of talking:

* **Stop-and-wait** for IDENTIFY, WRITE, READ, RESET_STATE and STATUS: one request in flight,
  each carrying a sequence number that its replies echo.  A request whose reply is lost or
  corrupt is sent again with the same sequence number; the device does not execute a
  RESET_STATE twice (it answers DUPLICATE).
* **Streaming** for input: :meth:`Device.run_items` (and :meth:`Device.run`,
  :meth:`Device.send_events`, :meth:`Device.step` on top of it) sends RUN requests back to back,
  keeping as many in flight as the chip's receive window (IDENTIFY) holds, and yields each
  timestep's spikes as the replies come.  :meth:`Device.samples` (and :meth:`Device.sample`)
  streams SAMPLE requests the same way: one per sample, its intensities encoded into spikes by
  the chip itself (``docs/encoding.md``), each answered with the sample's spikes or its output
  spike counts.  A lost RUN request or reply cannot be repaired
  in place (the chip has moved on): it raises :class:`StepLostError` with the number of
  timesteps whose spikes did arrive, after draining the link, so the caller can clear the state
  and run again from there (:class:`~spikeforge.host.chip_backend.ChipBackend` does).

Every wait has a deadline: ``timeout`` seconds without a reply frame of the request waited for
(garbage does not count) end it.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from ..errors import ConfigError, UnsupportedError
from ..protocol import (
    ADDR_BITS,
    CHANNEL_BITS,
    DEFAULT_BAUD,
    MAX_READ_WORDS,
    MAX_RUN_ITEMS,
    MAX_RUN_STEPS,
    MAX_SAMPLE_CHANNELS,
    MAX_SAMPLE_STEPS,
    MAX_WRITE_WORDS,
    NEURON_BITS,
    RUN_COMMAND,
    RUN_RESET,
    RUN_STEP_AFTER,
    Encoder,
    FrameDecoder,
    FrameError,
    Identity,
    Op,
    PayloadError,
    RunDecoder,
    Sample,
    Status,
    decode_identify,
    decode_status,
    decode_words,
    encode_items,
    encode_read,
    encode_sample,
    encode_write,
    frame_bytes,
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
    "SampleLostError",
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
    """The chip ran timesteps but their spikes did not reach the host intact.

    Attributes
    ----------
    steps_done : int
        Timesteps of the stream whose spikes did arrive, in order (the first ``steps_done``
        yielded by :meth:`Device.run_items` are good).
    """

    def __init__(self, message, steps_done=0):
        super().__init__(message)
        self.steps_done = steps_done


class SampleLostError(StepLostError):
    """A SAMPLE request or its reply was lost on the way (:meth:`Device.samples`).

    Attributes
    ----------
    samples_done : int
        Samples whose results did arrive, in order (the first ``samples_done`` yielded by
        :meth:`Device.samples` are good).
    steps_done : int
        ``samples_done * timesteps``.
    """

    def __init__(self, message, samples_done=0, timesteps=0):
        super().__init__(message, samples_done * timesteps)
        self.samples_done = samples_done


#: Hints for a SAMPLE refused by the chip.
_SAMPLE_HELP = {
    Status.UNKNOWN_OP: " (IDENTIFY reported encoders, but the bitstream does not execute SAMPLE)",
    Status.BAD_LENGTH: " (more intensities than the bitstream takes?)",
    Status.BAD_ARG: " (encoder, timesteps or counts out of range: host and bitstream disagree)",
}

_STATUS_HELP = {
    Status.UNKNOWN_OP: " (the bitstream is older than this host library?)",
    Status.BAD_LENGTH: " (host and bitstream disagree on a frame layout)",
    Status.BAD_ARG: " (address range past the end of the memory bus?)",
    Status.BUS_ERROR: " (an address is not mapped, or the memory is read-only)",
    Status.STEP_TIMEOUT: " (the core did not finish a timestep; is it configured?)",
    Status.OUT_OF_ORDER: " (a request before it was lost on the way)",
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
        self._frames: deque = deque()  # decoded frames (bytes or FrameError) not yet looked at
        self._resync = True
        self.identity: Identity | None = None
        #: Corrupt frames the host received (and recovered from or reported).
        self.rx_errors = 0
        #: Requests sent again.
        self.retried = 0
        #: Times the host waited for a reply with nothing else to send: one per stop-and-wait
        #: request (and retry), one per :meth:`run_items` stream (its final drain).
        self.round_trips = 0
        #: Times a stream waited for a reply because the receive window was full.
        self.window_waits = 0
        #: RUN request frames sent.
        self.run_frames = 0
        #: SAMPLE request frames sent.
        self.sample_frames = 0

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
        except (LinkError, KeyboardInterrupt):
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
    def _next_frame(self, deadline: float):
        """The next decoded frame (bytes) or :class:`FrameError`, or None at the deadline or
        when the transport times out with nothing received."""
        while not self._frames:
            if time.monotonic() > deadline:
                return None
            data = self.transport.read(4096)
            if not data:
                return None
            self._frames.extend(self._decoder.feed(data))
        return self._frames.popleft()

    def _reply_frames(self, op: Op, seqs):
        """Yield ``(seq, payload, Status)`` of the reply frames to requests ``(op, s in seqs)``,
        or ``None`` once per corrupt frame, until ``timeout`` passes without one; frames of
        other requests (late answers to earlier attempts) are skipped.  The deadline is renewed
        by every matching frame."""
        timeout = self.transport.timeout
        deadline = time.monotonic() + timeout
        while True:
            item = self._next_frame(deadline)
            if item is None:
                return
            if isinstance(item, FrameError):
                self.rx_errors += 1
                yield None
                continue
            if len(item) < 3 or item[0] != op.value or item[1] not in seqs:
                continue
            try:
                status = Status(item[-1])
            except ValueError:
                raise LinkError(f"{op.name} reply has unknown status 0x{item[-1]:02x}") from None
            deadline = time.monotonic() + timeout
            yield item[1], item[2:-1], status

    def _collect(self, op: Op, seq: int):
        """Read frames until the final reply to ``(op, seq)`` or a timeout.

        Returns ``(final, corrupt)``; ``final`` is ``(payload, Status)`` or None.
        """
        corrupt = False
        for frame in self._reply_frames(op, (seq,)):
            if frame is None:
                corrupt = True
                continue
            _, payload, status = frame
            if status == Status.MORE:
                raise LinkError(f"{op.name} got a multi-frame reply (status MORE)")
            return (payload, status), corrupt
        return None, corrupt

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _send(self, wire: bytes, resync: bool = False) -> None:
        # A leading delimiter ends whatever partial frame the device may hold.
        self.transport.write((b"\x00" if self._resync or resync else b"") + wire)
        self._resync = False

    def _transact(self, op: Op, payload: bytes = b""):
        """Send one request, retrying on silence or corruption; return ``(payload, Status)``."""
        seq = self._next_seq()
        wire = request(op, seq, payload)
        saw_corrupt = False
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self._send(wire, resync=bool(attempt))
            self.round_trips += 1
            final, corrupt = self._collect(op, seq)
            saw_corrupt |= corrupt
            if final is not None:
                return final
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

    @property
    def rx_window(self) -> int:
        """Bytes of RUN requests the chip can hold (IDENTIFY); frames in flight stay within it."""
        if self.identity is None:
            self.identify()
        return self.identity.rx_window

    def run_items(self, items: Iterable[int]) -> Iterator[list[int]]:
        """Stream RUN request items (``spikeforge.protocol.run_items``); yield each timestep's
        output spikes (neuron addresses, in device order) as the replies arrive.

        Requests are sent back to back while their frames fit the chip's receive window; the
        iterable is consumed lazily, so a stream of any length needs little memory.

        Raises
        ------
        StepLostError
            A request or reply was lost or corrupt; ``steps_done`` says how many timesteps'
            spikes were yielded.  The link is drained first, so the device can be used again
            (clear the state and run again from there).
        DeviceError
            The chip refused a request (e.g. ``STEP_TIMEOUT``).
        """
        window = self.rx_window
        per_frame = min(MAX_RUN_ITEMS, (window // 2 - frame_bytes(0)) // 2)
        it = iter(items)
        inflight: deque = deque()  # (seq, bytes of the receive window)
        used = 0
        decoder = RunDecoder()
        yielded = 0
        payload = None
        exhausted = False
        try:
            while True:
                while not exhausted:
                    if payload is None:
                        try:
                            chunk = list(itertools.islice(it, per_frame))
                        except BaseException:
                            self._drain(inflight)  # a bad input: stop cleanly
                            raise
                        if not chunk:
                            exhausted = True
                            break
                        for x in chunk:
                            if not isinstance(x, int) or not 0 <= x <= 0xFFFF:
                                self._drain(inflight)
                                raise ValueError(f"RUN item {x!r} is not a u16")
                        payload = encode_items(chunk)
                    size = frame_bytes(len(payload))
                    if inflight and used + size > window:
                        break
                    seq = self._next_seq()
                    self._send(request(Op.RUN, seq, payload))
                    self.run_frames += 1
                    inflight.append((seq, size))
                    used += size
                    payload = None
                if not inflight:
                    return
                if exhausted and len(inflight) == 1:
                    self.round_trips += 1
                elif not exhausted:
                    self.window_waits += 1
                seq, size = inflight[0]
                status = self._run_reply(seq, inflight, decoder, yielded)
                if status != Status.OK:
                    self._drain(inflight)
                    if status == Status.OUT_OF_ORDER:
                        raise StepLostError(
                            f"a RUN request to {self.transport.description} was lost on the "
                            f"way (the chip refused the next one: OUT_OF_ORDER) after "
                            f"{yielded} timesteps; clear the state and run again",
                            yielded,
                        )
                    self._check(Op.RUN, status)
                inflight.popleft()
                used -= size
                for spikes in decoder.take():
                    yielded += 1
                    yield spikes
        except GeneratorExit:
            self._drain(inflight)
            raise

    def _run_reply(self, seq, inflight, decoder, yielded, op: Op = Op.RUN,
                   lost=StepLostError, unit="timesteps") -> Status:
        """Collect the reply frames of streamed request ``seq`` (the oldest in flight, a RUN or
        a SAMPLE) into ``decoder`` (``feed(payload)``, ``dangling``); return its final status.
        Raise ``lost`` (:class:`StepLostError`, after draining) if a reply frame is lost or
        corrupt; ``yielded`` counts the ``unit`` delivered so far."""
        seqs = {s for s, _ in inflight}
        where = f"after {yielded} {unit}"
        for frame in self._reply_frames(op, seqs):
            if frame is None:
                self._drain(inflight, op)
                raise lost(
                    f"a {op.name} reply from {self.transport.description} was corrupt (CRC "
                    f"error) {where}; its spikes are lost: clear the state and run again",
                    yielded,
                )
            s, payload, status = frame
            if s != seq:
                self._drain(inflight, op)
                raise lost(
                    f"the reply to a {op.name} request was lost on the way from "
                    f"{self.transport.description} {where}: clear the state and run again",
                    yielded,
                )
            if status in (Status.MORE, Status.OK):
                try:
                    decoder.feed(payload)
                except PayloadError as e:
                    self._drain(inflight, op)
                    raise lost(f"malformed {op.name} reply: {e}", yielded) from None
                if status == Status.MORE:
                    continue
                if decoder.dangling:
                    raise LinkError(f"{op.name} reply ended without the mark of its last "
                                    "timestep")
            return status
        self._drain(inflight, op)
        raise lost(
            f"no {op.name} reply from {self.transport.description} within "
            f"{self.transport.timeout}s {where} (board unplugged? a timestep longer than the "
            "timeout?): clear the state and run again",
            yielded,
        )

    def _drain(self, inflight, op: Op = Op.RUN) -> None:
        """Wait (bounded by the timeout) until every request in flight was answered, so that
        the link is quiet before the next request; forget their replies."""
        seqs = {s for s, _ in inflight}
        if seqs:
            last = inflight[-1][0]
            for frame in self._reply_frames(op, seqs):
                if frame is not None and frame[0] == last and frame[2] != Status.MORE:
                    break
        inflight.clear()
        self._frames.clear()
        self._resync = True

    # --- on-chip encoding (SAMPLE, docs/encoding.md) --------------------------------------
    @property
    def encoders(self) -> bool:
        """Whether the chip executes SAMPLE (IDENTIFY's ``encoders`` field; False when the
        identity does not say, as an older bitstream's)."""
        if self.identity is None:
            self.identify()
        try:
            from ..hw.chip import encoders_from_ident

            return encoders_from_ident(self.identity.words)
        except Exception:  # an identity without the chip's words (tests' reference link)
            return False

    def sample(self, intensities, timesteps: int, **options):
        """Run one sample with on-chip encoding; return what :meth:`samples` yields for it:
        its ``timesteps`` spike lists, or (``counts=(first, count)``) its counts."""
        (out,) = list(self.samples([intensities], timesteps, **options))
        return out

    def samples(self, intensities, timesteps: int, *, encoder="rate", gain: int = 16,
                threshold: int = 1, seed: int = 1, counts=None,
                reset: bool = True) -> Iterator:
        """Stream samples to the chip as intensities; the chip encodes them into spikes.

        One SAMPLE request per sample (``docs/protocol.md``, ``docs/encoding.md``), sent back
        to back within the chip's receive window like :meth:`run_items`; results are yielded in
        order as the replies arrive.  The iterable is consumed lazily.

        Parameters
        ----------
        intensities : iterable of samples, or array (n_samples, n_inputs)
            Each sample is one integer 0..255 per input channel, channel 0 first (``bytes``,
            a sequence or a 1-D array; scale with
            :func:`~spikeforge.host.coding.chip_intensities`).
        timesteps : int
            ``T``, 1..255 timesteps per sample.
        encoder : {"rate", "latency"} or Encoder
            The on-chip encoder.  Delta coding has no on-chip form.
        gain, threshold : int 0..255
            ``level = min(255, (x * gain) >> 4)``; latency coding's least level that fires.
        seed : int 0..2**32-1
            Rate coding's generator seed of the first sample; sample ``k`` uses ``seed + k``
            (mod 2**32), as :func:`~spikeforge.host.coding.chip_encode` does for a batch.
        counts : (first, count), optional
            Reply with the spike counts of neurons ``first .. first + count - 1`` (output
            neurons, ``count`` 1..255) instead of the spikes.
        reset : bool
            Clear the neuron state before each sample.

        Yields
        ------
        list of list of int, or ndarray of uint8
            Per sample: without ``counts``, each timestep's output spikes (as :meth:`run`
            yields them, ``timesteps`` lists); with ``counts``, the ``count`` spike counts.

        Raises
        ------
        UnsupportedError
            The chip has no on-chip encoders (IDENTIFY); nothing is sent.  Encode on the host
            (:func:`~spikeforge.host.coding.chip_encode`, bit for bit the same spikes) and use
            :meth:`run`.
        ConfigError
            A parameter out of range, delta coding, a sample with more intensities than the
            chip has input channels or values outside 0..255 (before its request is sent).
        SampleLostError
            A request or reply was lost or corrupt (``samples_done`` arrived intact); the link
            is drained first.
        DeviceError
            The chip refused a request.
        """
        enc = _sample_encoder(encoder)
        t = _u_param("timesteps", timesteps, 1, MAX_SAMPLE_STEPS)
        gain = _u_param("gain", gain, 0, 255)
        threshold = _u_param("threshold", threshold, 0, 255)
        seed = _u_param("seed", seed, 0, 0xFFFFFFFF)
        if counts is not None:
            try:
                first, count = counts
            except (TypeError, ValueError):
                raise ConfigError(f"counts={counts!r} is not valid: allowed None or "
                                  "(first, count)") from None
            first = _u_param("counts first", first, 0, (1 << NEURON_BITS) - 1)
            count = _u_param("counts count", count, 1, min(255, (1 << NEURON_BITS) - first))
            counts = (first, count)
        if not isinstance(reset, (bool, np.bool_)):
            raise ConfigError(f"reset={reset!r} is not valid: allowed True or False")
        if not self.encoders:
            raise UnsupportedError(
                f"the chip at {self.transport.description} has no on-chip encoders (IDENTIFY: "
                "encoders=0, a bitstream built without them): encode on the host with "
                "chip_encode (the same spikes, bit for bit) and use run(), or let ChipBackend "
                "fall back by itself"
            )
        if isinstance(intensities, np.ndarray) and intensities.ndim == 1:
            raise ConfigError(
                f"intensities has shape {intensities.shape}: samples() takes several samples "
                "(n_samples, n_inputs); use sample() for one"
            )
        limit = min(MAX_SAMPLE_CHANNELS, self._chip_inputs())
        return self._sample_stream(iter(intensities), Sample(
            enc, t, b"", gain, threshold, seed, bool(reset), counts), limit)

    def _sample_stream(self, it, proto: Sample, limit: int) -> Iterator:
        """The streaming loop of :meth:`samples` (parameters checked); ``proto`` has every
        field but the intensities and the per-sample seed."""
        window = self.rx_window
        t = proto.timesteps
        inflight: deque = deque()  # (seq, bytes of the receive window)
        used = 0
        done = 0
        payload = None
        exhausted = False
        k = 0

        def lost(message, n):
            return SampleLostError(message, n, t)

        try:
            while True:
                while not exhausted:
                    if payload is None:
                        try:
                            x = next(it)
                        except StopIteration:
                            exhausted = True
                            break
                        except BaseException:
                            self._drain(inflight, Op.SAMPLE)  # a bad input: stop cleanly
                            raise
                        try:
                            data = _sample_bytes(x, k, limit)
                        except BaseException:
                            self._drain(inflight, Op.SAMPLE)
                            raise
                        payload = encode_sample(Sample(
                            proto.encoder, t, data, proto.gain, proto.threshold,
                            (proto.seed + k) & 0xFFFFFFFF, proto.reset, proto.counts))
                        k += 1
                    size = frame_bytes(len(payload))
                    if inflight and used + size > window:
                        break
                    seq = self._next_seq()
                    self._send(request(Op.SAMPLE, seq, payload))
                    self.sample_frames += 1
                    inflight.append((seq, size))
                    used += size
                    payload = None
                if not inflight:
                    return
                if exhausted and len(inflight) == 1:
                    self.round_trips += 1
                elif not exhausted:
                    self.window_waits += 1
                seq, size = inflight[0]
                decoder = _CountsReply() if proto.counts is not None else RunDecoder()
                status = self._run_reply(seq, inflight, decoder, done, Op.SAMPLE, lost,
                                         "samples")
                if status != Status.OK:
                    self._drain(inflight, Op.SAMPLE)
                    if status == Status.OUT_OF_ORDER:
                        raise lost(
                            f"a SAMPLE request to {self.transport.description} was lost on "
                            f"the way (the chip refused the next one: OUT_OF_ORDER) after "
                            f"{done} samples; run again from there", done)
                    raise DeviceError(Op.SAMPLE, status, _SAMPLE_HELP.get(
                        status, _STATUS_HELP.get(status, "")))
                inflight.popleft()
                used -= size
                result = decoder.take()
                want = proto.counts[1] if proto.counts is not None else t
                if len(result) != want:
                    self._drain(inflight, Op.SAMPLE)
                    what = "counts" if proto.counts is not None else "timesteps"
                    raise LinkError(f"the SAMPLE reply of sample {done} has {len(result)} "
                                    f"{what}, expected {want}")
                done += 1
                yield result
        except GeneratorExit:
            self._drain(inflight, Op.SAMPLE)
            raise

    def run(self, inputs: Iterable[Iterable[int]], *, reset: bool = False) -> Iterator[list[int]]:
        """For each timestep's input channels, run the timestep; yield that step's spikes.

        Streams (:meth:`run_items`); with ``reset``, the state is cleared first.
        """
        def items():
            limit = self._channel_limit()  # once per run, not per timestep
            if reset:
                yield RUN_RESET
            for t, events in enumerate(inputs):
                yield from self._step_items(events, t, limit)

        return self.run_items(items())

    def _step_items(self, events, t, limit):
        last = None
        for e in events:
            e = _input_channel(e, limit, f" at timestep {t}")
            if last is not None:
                yield last
            last = e
        yield (last | RUN_STEP_AFTER) if last is not None else (RUN_COMMAND | 1)

    def _channel_limit(self) -> int:
        """Input channels a RUN may address: the chip's, at most 2**CHANNEL_BITS."""
        return min(1 << CHANNEL_BITS, self._chip_inputs())

    def _chip_inputs(self) -> int:
        """Input channels the chip has (from IDENTIFY), or 2**CHANNEL_BITS if it does not say."""
        if self.identity is None:
            return 1 << CHANNEL_BITS
        try:
            from ..hw.chip import chip_config_from_ident

            cfg = chip_config_from_ident(self.identity.words)
        except Exception:  # an identity without the core's words (tests' reference link)
            return 1 << CHANNEL_BITS
        return int(getattr(cfg, "n_inputs", 1 << CHANNEL_BITS))

    def send_events(self, addresses: Iterable[int]) -> int:
        """Send input events (channel addresses) for the next timestep; return the count.

        A debugging aid: the events are held by the chip until :meth:`step` runs the timestep.
        """
        limit = self._channel_limit()
        items = [_input_channel(a, limit) for a in addresses]
        for _ in self.run_items(items):
            raise LinkError("RUN of events only answered a timestep")
        return len(items)

    def step(self, n: int = 1) -> list[list[int]]:
        """Run ``n`` timesteps; return, per step, the output spike addresses in device order."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n={n!r} must be an integer >= 0")
        items = []
        left = n
        while left:
            k = min(left, MAX_RUN_STEPS)
            items.append(RUN_COMMAND | k)
            left -= k
        out = list(self.run_items(items))
        if len(out) != n:
            raise StepLostError(f"step({n}) ran {len(out)} timesteps", len(out))
        return out

    def status(self) -> dict:
        """The link's error counters, ``busy`` and the core's status words (``core``)."""
        payload, status = self._transact(Op.STATUS)
        self._check(Op.STATUS, status)
        try:
            return decode_status(payload)
        except PayloadError as e:
            raise LinkError(str(e)) from None


def _input_channel(e, limit: int, where: str = "") -> int:
    """``e`` as an input channel below ``limit``, or ``ValueError`` naming it (and ``where``)."""
    e = operator.index(e)
    if not 0 <= e < limit:
        raise ValueError(
            f"input channel {e!r}{where} is out of range: the chip has {limit} input channels "
            f"(0..{limit - 1})"
        )
    return e


class _CountsReply:
    """The reply of a SAMPLE with COUNTS: its payload bytes are the counts."""

    dangling = 0

    def __init__(self):
        self._data = bytearray()

    def feed(self, payload: bytes) -> None:
        self._data += payload

    def take(self) -> np.ndarray:
        return np.frombuffer(bytes(self._data), dtype=np.uint8).copy()


def _u_param(name, value, lo, hi) -> int:
    """``value`` as an int in ``lo..hi``, or :class:`ConfigError` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not lo <= value <= hi:
        raise ConfigError(f"{name}={value!r} is out of range: allowed an integer {lo}..{hi}")
    return int(value)


def _sample_encoder(encoder) -> Encoder:
    """``encoder`` ("rate", "latency" or an :class:`Encoder`) as an :class:`Encoder`."""
    if isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, str) and encoder.lower() == "delta":
        raise ConfigError(
            "encoder='delta' has no on-chip form (docs/encoding.md: it needs new intensities "
            "every timestep, no saving over sending the events): encode on the host with "
            "delta_encode and use run()"
        )
    names = [e.name.lower() for e in Encoder]
    if not isinstance(encoder, str) or encoder.lower() not in names:
        raise ConfigError(f"encoder={encoder!r} is not valid: allowed {', '.join(names)}")
    return Encoder[encoder.upper()]


def _sample_bytes(x, k: int, limit: int) -> bytes:
    """Sample ``k``'s intensities as bytes: 1..``limit`` integers 0..255."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        data = bytes(x)
    else:
        a = np.asarray(x)
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer)
                               or np.issubdtype(a.dtype, np.floating)):
            raise ConfigError(f"sample {k}: intensities of shape {a.shape} and dtype {a.dtype}; "
                              "expected one integer 0..255 per input channel")
        if a.size and (np.any(a != np.round(a)) or a.min() < 0 or a.max() > 255):
            raise ConfigError(f"sample {k}: intensities must be integers 0..255 (u8 on the "
                              "wire); scale them first (chip_intensities)")
        data = a.astype(np.uint8).tobytes()
    if not 1 <= len(data) <= limit:
        raise ConfigError(f"sample {k} has {len(data)} intensities: the chip takes 1..{limit} "
                          "(one per input channel)")
    return data
