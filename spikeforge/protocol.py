"""The host link wire protocol: the one definition, imported by the gateware and the host.

Spec: ``docs/protocol.md`` (its tables are generated from this module by :func:`describe`).

A *frame* is a sequence of bytes protected by a CRC-16 and sent COBS-encoded between ``0x00``
delimiters.  Decoded, a request is ``op, seq, payload..., crc_hi, crc_lo`` and a reply is
``op, seq, payload..., status, crc_hi, crc_lo``.  Multi-byte payload fields are little-endian; the
CRC is appended most significant byte first, so that the CRC of a whole good frame is ``0``.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from amaranth.lib import enum

from .errors import SpikeforgeError

__all__ = [
    "PROTOCOL_VERSION",
    "MAGIC",
    "MAX_FRAME",
    "HEADER_BYTES",
    "CRC_BYTES",
    "REQUEST_OVERHEAD",
    "REPLY_OVERHEAD",
    "MAX_REQUEST_PAYLOAD",
    "MAX_REPLY_PAYLOAD",
    "MAX_WRITE_WORDS",
    "MAX_READ_WORDS",
    "MAX_RUN_ITEMS",
    "MAX_REPLY_ITEMS",
    "MAX_RUN_STEPS",
    "CHANNEL_BITS",
    "NEURON_BITS",
    "RUN_STEP_AFTER",
    "RUN_COMMAND",
    "RUN_RESET",
    "REPLY_MARK",
    "ADDR_BITS",
    "WORD_BYTES",
    "EVENT_BITS",
    "EVENT_BYTES",
    "DEFAULT_BAUD",
    "Op",
    "Status",
    "LINK_COUNTERS",
    "Fields",
    "IDENT_HEADER",
    "IDENT_HEADER_WORDS",
    "WRITE_HEADER",
    "READ_REQUEST",
    "SAMPLE_HEADER",
    "MAX_SAMPLE_CHANNELS",
    "MAX_SAMPLE_STEPS",
    "SAMPLE_SEED_ZERO",
    "Encoder",
    "SampleFlag",
    "Sample",
    "encode_sample",
    "decode_sample",
    "PAYLOADS",
    "PayloadError",
    "Identity",
    "payload_length_ok",
    "identify_words",
    "encode_identify",
    "decode_identify",
    "encode_write",
    "decode_write",
    "encode_read",
    "decode_read",
    "encode_words",
    "decode_words",
    "encode_items",
    "decode_items",
    "run_items",
    "RunReply",
    "decode_run_reply",
    "RunDecoder",
    "encode_status",
    "decode_status",
    "CRC_INIT",
    "CRC_POLY",
    "crc16",
    "cobs_encode",
    "cobs_decode",
    "encode_frame",
    "decode_frame",
    "FrameError",
    "FrameDecoder",
    "request",
    "reply",
    "encoded_size",
    "events_efficiency",
    "frame_bytes",
    "describe",
]

#: Version of this protocol; IDENTIFY returns it and the host refuses any other.
PROTOCOL_VERSION = 2
#: First word of the IDENTIFY reply ("SPKF" as a little-endian u32: bytes ``S P K F``).
MAGIC = 0x464B5053
#: Largest decoded frame (header, payload, status and CRC) either side may send, in bytes.
#: The gateware's receive buffer holds several (its size, the *receive window*, is in IDENTIFY).
MAX_FRAME = 512
#: ``op`` and ``seq``.
HEADER_BYTES = 2
CRC_BYTES = 2
REQUEST_OVERHEAD = HEADER_BYTES + CRC_BYTES
#: A reply also carries its status byte.
REPLY_OVERHEAD = HEADER_BYTES + 1 + CRC_BYTES
MAX_REQUEST_PAYLOAD = MAX_FRAME - REQUEST_OVERHEAD
MAX_REPLY_PAYLOAD = MAX_FRAME - REPLY_OVERHEAD
#: Address width of the memory bus (the one definition; ``spikeforge.hw.bus.BUS_ADDR_BITS`` is
#: this): a core's 24-bit map, and above it a core select on a multi-core chip
#: (``docs/routing.md``, ``spikeforge.hw.router.CORE_SHIFT``).
ADDR_BITS = 28
#: Bytes of a memory word on the wire (WRITE, READ, IDENTIFY, STATUS): u32.
WORD_BYTES = 4
#: Width of an item of a RUN request or reply on the wire (an input event, a step command, a
#: spike, a step mark), and of the gateware's ``events`` / ``spikes`` streams
#: (``spikeforge.hw.image.EVENT_BITS`` is this).
EVENT_BITS = 16
#: Bytes of an item on the wire.
EVENT_BYTES = EVENT_BITS // 8
#: Width of an input channel in a RUN request item (channels 0 .. 2**14 - 1).
CHANNEL_BITS = 14
#: Width of a neuron address in a RUN reply item (neurons 0 .. 2**15 - 1).
NEURON_BITS = 15
#: RUN request item flag: an input event (channel in the low ``CHANNEL_BITS``) after which one
#: timestep runs (the last event of its timestep).
RUN_STEP_AFTER = 0x8000
#: RUN request item flag: a command, ``RUN_COMMAND | k``: run ``k`` timesteps (1 <= k <=
#: ``MAX_RUN_STEPS``), or, with ``k = 0`` (:data:`RUN_RESET`), clear the neuron state.
RUN_COMMAND = 0x4000
#: RUN request item: clear the neuron state (as RESET_STATE).
RUN_RESET = RUN_COMMAND
#: Most timesteps one RUN command item runs.
MAX_RUN_STEPS = (1 << CHANNEL_BITS) - 1
#: RUN reply item flag: ``REPLY_MARK | k``: ``k`` timesteps (1 <= k < 2**15) ended since the
#: previous mark; any other item is a spike (a neuron address) of the current timestep.
REPLY_MARK = 0x8000
#: UART baud rate of the host link unless a board or the user says otherwise.
DEFAULT_BAUD = 3_000_000

CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


class Op(enum.Enum, shape=8):
    """Request opcodes (the first byte of a request and of its replies)."""

    #: -> u32 words: MAGIC, version | max_frame << 16, clock Hz, receive window (bytes), n,
    #: then n capability words.  Also forgets the last sequence number (a new host session
    #: starts after IDENTIFY).
    IDENTIFY = 0x01
    #: u32 addr, u32 words... -> (nothing).  Writes the words at addr, addr+1, ...
    WRITE = 0x02
    #: u32 addr, u16 count -> count u32 words.
    READ = 0x03
    #: (nothing) -> (nothing).  Pulses ``reset_state``; waits until the core is not busy.
    RESET_STATE = 0x04
    #: u16 items... -> u16 items.  Input events, timesteps and state resets, executed in order;
    #: the reply streams the spikes with step marks (frames with status MORE while it is
    #: longer than ``MAX_REPLY_ITEMS``).  Several may be in flight (``docs/protocol.md``).
    RUN = 0x05
    #: ``SAMPLE_HEADER``, u8 intensities... -> u16 items as RUN, or (``SampleFlag.COUNTS``)
    #: ``out_count`` u8 spike counts.  The chip encodes the intensities itself and runs
    #: ``timesteps`` timesteps (``docs/encoding.md``); sequenced as RUN.  Only on a bitstream
    #: whose IDENTIFY reports encoders (others answer UNKNOWN_OP).
    SAMPLE = 0x06
    #: (nothing) -> u32 counters (``LINK_COUNTERS``) then the core's status words.
    STATUS = 0x07


class Encoder(enum.Enum, shape=8):
    """The on-chip spike encoders (``SAMPLE_HEADER.encoder``; ``docs/encoding.md``)."""

    #: Every timestep, channel ``c`` fires when the next pseudo-random byte is below its level.
    RATE = 0
    #: Channel ``c`` fires once, at ``((255 - level) * T) >> 8``, if its level reaches the
    #: threshold.
    LATENCY = 1


class SampleFlag(enum.IntFlag):
    """Bits of ``SAMPLE_HEADER.flags``."""

    #: Clear the neuron state before the sample's first timestep (as ``RUN_RESET``).
    RESET = 0x01
    #: Reply with the spike count of each of ``out_count`` neurons from ``out_first``
    #: (saturating at 255) instead of the spikes.
    COUNTS = 0x02


class Status(enum.Enum, shape=8):
    """The status byte, the last byte of every reply before its CRC."""

    #: Done.
    OK = 0x00
    #: One of several reply frames of this request; more follow (a long RUN reply).
    MORE = 0x01
    #: A RUN, SAMPLE or RESET_STATE request repeats the sequence number of the last executed
    #: request: it was executed before and was not executed again.
    DUPLICATE = 0x02
    #: The opcode is not one of ``Op``.
    UNKNOWN_OP = 0x10
    #: The payload length does not fit the opcode.
    BAD_LENGTH = 0x11
    #: A field is out of range (an address range past the end of the bus, too many words).
    BAD_ARG = 0x12
    #: The memory bus refused at least one access (the data of a refused read is 0).
    BUS_ERROR = 0x13
    #: The core did not finish a timestep within the link's step timeout (the rest of the RUN
    #: or SAMPLE request was skipped).
    STEP_TIMEOUT = 0x14
    #: A RUN or SAMPLE request whose sequence number does not follow the last executed
    #: request's: a request before it was lost.  Not executed.
    OUT_OF_ORDER = 0x15


#: The link's own counters, in the order STATUS returns them (each a u32 on the wire, saturating).
LINK_COUNTERS = (
    ("crc_errors", "received frames dropped: CRC mismatch, malformed COBS or shorter than 4 bytes"),
    ("framing_errors", "UART bytes with a bad stop bit"),
    ("overruns", "received frames dropped: the receive window was full (the host broke flow "
     "control), or UART bytes lost"),
    ("oversize", f"received frames dropped: longer than MAX_FRAME={MAX_FRAME} bytes decoded"),
    ("unknown_op", "requests with an unknown opcode"),
    ("bad_length", "requests refused with BAD_LENGTH or BAD_ARG"),
    ("bus_errors", "memory bus accesses refused by the core"),
    ("duplicates", "requests answered with DUPLICATE"),
    ("step_timeouts", "RUN and SAMPLE requests aborted with STEP_TIMEOUT"),
    ("out_of_order", "RUN and SAMPLE requests refused with OUT_OF_ORDER"),
    ("flags", "bit 0: the core is busy"),
)



# --- payload layouts ----------------------------------------------------------------------

_CODES = {1: "B", 2: "H", 4: "I"}
_EVENT_CODE = _CODES[EVENT_BYTES]
_WORD_CODE = _CODES[WORD_BYTES]


class PayloadError(SpikeforgeError):
    """A payload does not have the layout of its opcode (length, magic, version, count)."""


class Fields:
    """A fixed payload layout: named little-endian unsigned fields, in order.

    The one definition of a payload.  The host and the reference device pack and unpack it
    (:meth:`pack`, :meth:`unpack`, or the ``encode_*`` / ``decode_*`` functions of this module);
    the gateware takes its byte counts, offsets and widths (:attr:`size`, :meth:`offset`,
    :meth:`bits`).

    Parameters
    ----------
    doc : str
        What the payload is (for ``docs/protocol.md``).
    **fields : int
        Field name -> bytes (1, 2 or 4).
    """

    def __init__(self, doc: str, **fields: int):
        self.doc = doc
        self.fields = dict(fields)
        self.struct = struct.Struct("<" + "".join(_CODES[n] for n in self.fields.values()))
        offsets, at = {}, 0
        for name, n in self.fields.items():
            offsets[name] = at
            at += n
        self._offsets = offsets

    @property
    def size(self) -> int:
        """Bytes of the layout."""
        return self.struct.size

    @property
    def names(self) -> tuple:
        return tuple(self.fields)

    def offset(self, name: str) -> int:
        """Byte offset of field ``name``."""
        return self._offsets[name]

    def bits(self, name: str) -> int:
        """Width of field ``name`` in bits."""
        return 8 * self.fields[name]

    def pack(self, *values: int) -> bytes:
        return self.struct.pack(*values)

    def unpack(self, payload: bytes, what: str) -> tuple:
        """The field values of ``payload``; :class:`PayloadError` (naming ``what``) if its length
        is not :attr:`size`."""
        if len(payload) != self.size:
            raise PayloadError(f"{what} of {len(payload)} bytes is malformed: expected {self.size}")
        return self.struct.unpack(payload)

    def unpack_from(self, payload: bytes, what: str) -> tuple:
        """The field values at the start of ``payload`` (at least :attr:`size` bytes)."""
        if len(payload) < self.size:
            raise PayloadError(f"{what} of {len(payload)} bytes is malformed: expected at least "
                               f"{self.size}")
        return self.struct.unpack_from(payload)

    def describe(self) -> str:
        """``u32 addr, u16 count``."""
        return ", ".join(f"u{8 * n} {name}" for name, n in self.fields.items())


#: IDENTIFY reply, before the ``count`` capability words (u32 each).  As u32 words: ``MAGIC``,
#: ``version | max_frame << 16``, clock Hz, ``count``.
IDENT_HEADER = Fields(
    "IDENTIFY reply, then `count` u32 capability words",
    magic=4, version=2, max_frame=2, clk_hz=4, rx_window=4, count=4,
)
#: IDENTIFY words before the capability words.
IDENT_HEADER_WORDS = IDENT_HEADER.size // WORD_BYTES
#: WRITE request, before the u32 words to write.
WRITE_HEADER = Fields("WRITE request, then the u32 words", addr=WORD_BYTES)
#: READ request.
READ_REQUEST = Fields("READ request", addr=WORD_BYTES, count=2)
#: SAMPLE request, before the intensities (one u8 per input channel, channel 0 first).
SAMPLE_HEADER = Fields(
    "SAMPLE request, then one u8 intensity per input channel",
    encoder=1, flags=1, timesteps=1, gain=1, threshold=1, seed=4, out_first=2, out_count=1,
)
#: Every fixed layout, by name (``docs/protocol.md``).
PAYLOADS = {
    "IDENT_HEADER": IDENT_HEADER,
    "WRITE_HEADER": WRITE_HEADER,
    "READ_REQUEST": READ_REQUEST,
    "SAMPLE_HEADER": SAMPLE_HEADER,
}

assert READ_REQUEST.bits("addr") == WRITE_HEADER.bits("addr") >= ADDR_BITS

#: WRITE payload: address then the words.
MAX_WRITE_WORDS = (MAX_REQUEST_PAYLOAD - WRITE_HEADER.size) // WORD_BYTES
#: READ reply payload: the words.
MAX_READ_WORDS = MAX_REPLY_PAYLOAD // WORD_BYTES
#: RUN request payload: items.
MAX_RUN_ITEMS = MAX_REQUEST_PAYLOAD // EVENT_BYTES
#: RUN reply frame payload: items.
MAX_REPLY_ITEMS = MAX_REPLY_PAYLOAD // EVENT_BYTES
#: SAMPLE request payload: intensities (input channels 0 .. n-1).
MAX_SAMPLE_CHANNELS = MAX_REQUEST_PAYLOAD - SAMPLE_HEADER.size
#: Most timesteps one SAMPLE runs (``SAMPLE_HEADER.timesteps``).
MAX_SAMPLE_STEPS = (1 << SAMPLE_HEADER.bits("timesteps")) - 1
#: The rate encoder's xorshift32 state for ``seed`` 0 (xorshift32 never leaves 0;
#: ``docs/encoding.md``).
SAMPLE_SEED_ZERO = 0x9E3779B9


def payload_length_ok(op: Op, n: int) -> bool:
    """Whether a request payload of ``n`` bytes has a length ``op`` accepts (else BAD_LENGTH)."""
    op = Op(op)
    if op == Op.WRITE:
        return n >= WRITE_HEADER.size + WORD_BYTES and (n - WRITE_HEADER.size) % WORD_BYTES == 0
    if op == Op.READ:
        return n == READ_REQUEST.size
    if op == Op.RUN:
        return n % EVENT_BYTES == 0
    if op == Op.SAMPLE:
        return SAMPLE_HEADER.size < n <= MAX_SAMPLE_CHANNELS + SAMPLE_HEADER.size
    return n == 0  # IDENTIFY, RESET_STATE, STATUS


@dataclass(frozen=True)
class Identity:
    """What IDENTIFY returns (:func:`decode_identify`)."""

    version: int
    max_frame: int
    clk_hz: int
    rx_window: int
    words: tuple


def encode_identify(clk_hz: int, caps=(), *, rx_window: int = MAX_FRAME,
                    version: int = PROTOCOL_VERSION, max_frame: int = MAX_FRAME) -> bytes:
    """IDENTIFY reply payload: :data:`IDENT_HEADER` then the capability words ``caps``."""
    caps = list(caps)
    return IDENT_HEADER.pack(
        MAGIC, version, max_frame, clk_hz, rx_window, len(caps)
    ) + encode_words(caps)


def identify_words(clk_hz: int, caps=(), *, rx_window: int = MAX_FRAME) -> list[int]:
    """The IDENTIFY reply as u32 words (what the gateware sends, word by word)."""
    return list(decode_words(encode_identify(clk_hz, caps, rx_window=rx_window)))


def decode_identify(payload: bytes) -> Identity:
    """Check an IDENTIFY reply (size, magic, protocol version, word count) and decode it.

    Raises :class:`PayloadError` if it is not a spikeforge identity of this protocol version.
    """
    if len(payload) < 8:
        raise PayloadError(f"IDENTIFY reply of {len(payload)} bytes is not a spikeforge identity")
    magic, version = struct.unpack_from("<IH", payload)
    if magic != MAGIC:
        raise PayloadError(f"not a spikeforge device: magic 0x{magic:08x}, expected 0x{MAGIC:08x}")
    if version != PROTOCOL_VERSION:
        raise PayloadError(
            f"device speaks protocol version {version}, this host library speaks "
            f"{PROTOCOL_VERSION}: rebuild the bitstream or install the matching spikeforge"
        )
    if len(payload) < IDENT_HEADER.size or len(payload) % WORD_BYTES:
        raise PayloadError(f"IDENTIFY reply of {len(payload)} bytes is not a spikeforge identity")
    _, _, max_frame, clk_hz, rx_window, n = IDENT_HEADER.unpack_from(payload, "IDENTIFY reply")
    words = decode_words(payload[IDENT_HEADER.size :])
    if len(words) != n:
        raise PayloadError(f"IDENTIFY says {n} words but sent {len(words)}")
    if rx_window < max_frame:
        raise PayloadError(f"IDENTIFY: receive window {rx_window} < MAX_FRAME {max_frame}")
    return Identity(version, max_frame, clk_hz, rx_window, words)


def encode_write(addr: int, words) -> bytes:
    """WRITE request payload."""
    return WRITE_HEADER.pack(addr) + encode_words(words)


def decode_write(payload: bytes) -> tuple[int, tuple]:
    """``(addr, words)`` of a WRITE request payload."""
    if not payload_length_ok(Op.WRITE, len(payload)):
        raise PayloadError(f"WRITE request of {len(payload)} bytes is malformed")
    (addr,) = WRITE_HEADER.unpack_from(payload, "WRITE request")
    return addr, decode_words(payload[WRITE_HEADER.size :])


def encode_read(addr: int, count: int) -> bytes:
    """READ request payload."""
    return READ_REQUEST.pack(addr, count)


def decode_read(payload: bytes) -> tuple[int, int]:
    """``(addr, count)`` of a READ request payload."""
    return READ_REQUEST.unpack(payload, "READ request")


@dataclass(frozen=True)
class Sample:
    """A SAMPLE request's fields (:func:`encode_sample`, :func:`decode_sample`)."""

    encoder: Encoder
    timesteps: int
    intensities: bytes
    gain: int = 16
    threshold: int = 1
    seed: int = 1
    reset: bool = True
    #: ``None``: reply with the spikes; else ``(first, count)``: the spike counts of neurons
    #: ``first .. first + count - 1``.
    counts: tuple | None = None


def encode_sample(sample: Sample) -> bytes:
    """SAMPLE request payload.  Raises ``ValueError`` for a field out of its range."""
    first, count = sample.counts if sample.counts is not None else (0, 0)
    checks = (
        ("timesteps", sample.timesteps, 1, MAX_SAMPLE_STEPS),
        ("gain", sample.gain, 0, 255),
        ("threshold", sample.threshold, 0, 255),
        ("seed", sample.seed, 0, 0xFFFFFFFF),
        ("counts first", first, 0, (1 << NEURON_BITS) - 1),
        ("counts count", count, 1 if sample.counts is not None else 0, 255),
        ("intensities", len(sample.intensities), 1, MAX_SAMPLE_CHANNELS),
    )
    for name, value, lo, hi in checks:
        if not lo <= value <= hi:
            raise ValueError(f"SAMPLE {name}={value} is out of range: allowed {lo}..{hi}")
    flags = (SampleFlag.RESET if sample.reset else 0) | (
        SampleFlag.COUNTS if sample.counts is not None else 0)
    return SAMPLE_HEADER.pack(Encoder(sample.encoder).value, int(flags), sample.timesteps,
                              sample.gain, sample.threshold, sample.seed, first, count) \
        + bytes(sample.intensities)


def decode_sample(payload: bytes) -> Sample:
    """A SAMPLE request payload's fields; :class:`PayloadError` if it is malformed."""
    enc, flags, t, gain, thr, seed, first, count = SAMPLE_HEADER.unpack_from(payload, "SAMPLE")
    try:
        enc = Encoder(enc)
    except ValueError:
        raise PayloadError(f"SAMPLE encoder {enc} is not one of {[e.value for e in Encoder]}") \
            from None
    counts = (first, count) if flags & SampleFlag.COUNTS else None
    return Sample(enc, t, bytes(payload[SAMPLE_HEADER.size:]), gain, thr, seed,
                  bool(flags & SampleFlag.RESET), counts)


def _pack_array(code: str, values) -> bytes:
    """Little-endian integers of the ``struct`` format ``code``, back to back."""
    values = list(values)
    return struct.pack(f"<{len(values)}{code}", *values)


def _unpack_array(code: str, size: int, payload: bytes, what: str) -> tuple:
    """The integers of :func:`_pack_array`; ``what`` names them when ``payload`` is cut."""
    if len(payload) % size:
        raise PayloadError(f"{len(payload)} bytes are not a whole number of {what}")
    return struct.unpack(f"<{len(payload) // size}{code}", payload)


def encode_words(words) -> bytes:
    """u32 words (READ reply, STATUS reply, WRITE and IDENTIFY after their headers)."""
    return _pack_array(_WORD_CODE, words)


def decode_words(payload: bytes) -> tuple:
    """The u32 words of ``payload``."""
    return _unpack_array(_WORD_CODE, WORD_BYTES, payload, "u32 words")


def encode_items(items: Iterable[int]) -> bytes:
    """u16 items of a RUN request or reply payload."""
    return _pack_array(_EVENT_CODE, items)


def decode_items(payload: bytes) -> tuple:
    """The u16 items of a RUN request or reply payload."""
    return _unpack_array(_EVENT_CODE, EVENT_BYTES, payload, f"u{EVENT_BITS} items")


def run_items(steps: Iterable[Iterable[int]], *, reset: bool = False) -> list[int]:
    """RUN request items for one input sequence: per timestep, its input channels.

    Each timestep with events is its events, the last one flagged :data:`RUN_STEP_AFTER`; runs
    of timesteps without events become ``RUN_COMMAND | k`` items.  With ``reset``, the items
    begin with :data:`RUN_RESET` (the sequence starts from the cleared state).

    Raises ``ValueError`` for a channel outside ``0 .. 2**CHANNEL_BITS - 1``.
    """
    items = [RUN_RESET] if reset else []
    empty = 0
    limit = 1 << CHANNEL_BITS
    for t, events in enumerate(steps):
        events = [int(e) for e in events]
        if not events:
            empty += 1
            if empty == MAX_RUN_STEPS:
                items.append(RUN_COMMAND | empty)
                empty = 0
            continue
        if empty:
            items.append(RUN_COMMAND | empty)
            empty = 0
        for e in events:
            if not 0 <= e < limit:
                raise ValueError(
                    f"input channel {e} at timestep {t} is out of range: allowed 0..{limit - 1}"
                )
        items += events
        items[-1] |= RUN_STEP_AFTER
    if empty:
        items.append(RUN_COMMAND | empty)
    return items


@dataclass
class RunReply:
    """The decoded items of RUN replies: per timestep, its spikes (:func:`decode_run_reply`)."""

    #: Spikes (neuron addresses) of each finished timestep, in order.
    steps: list
    #: Spikes of the timestep not yet ended by a mark.
    open_step: list


def decode_run_reply(items: Iterable[int], state: RunReply | None = None) -> RunReply:
    """Fold RUN reply items into per-timestep spike lists (continuing ``state`` if given)."""
    state = RunReply([], []) if state is None else state
    for it in items:
        if it & REPLY_MARK:
            k = it & ~REPLY_MARK
            if k == 0:
                raise PayloadError("RUN reply has a step mark of 0 timesteps")
            state.steps.append(state.open_step)
            state.steps.extend([] for _ in range(k - 1))
            state.open_step = []
        else:
            state.open_step.append(it)
    return state


class RunDecoder:
    """Incremental :func:`decode_run_reply`: feed reply payloads, take finished timesteps."""

    def __init__(self):
        self._state = RunReply([], [])
        #: Timesteps ended so far (taken or not).
        self.steps_done = 0

    def feed(self, payload: bytes) -> None:
        """Add the items of one reply frame's payload."""
        before = len(self._state.steps)
        decode_run_reply(decode_items(payload), self._state)
        self.steps_done += len(self._state.steps) - before

    def take(self) -> list:
        """The finished timesteps' spike lists since the last call."""
        out, self._state.steps = self._state.steps, []
        return out

    @property
    def dangling(self) -> int:
        """Spikes received after the last step mark (0 at the end of a well-formed reply)."""
        return len(self._state.open_step)


def encode_status(counters: Mapping[str, int], busy: bool, core=()) -> bytes:
    """STATUS reply payload: the link counters (``LINK_COUNTERS``, ``flags`` from ``busy``), then
    the core's status words."""
    words = [counters[name] if name != "flags" else int(bool(busy)) for name, _ in LINK_COUNTERS]
    return encode_words(words + [w & 0xFFFFFFFF for w in core])


def decode_status(payload: bytes) -> dict:
    """A STATUS reply: ``{counter: value, ..., "busy": bool, "core": [words]}``."""
    words = decode_words(payload)
    names = [name for name, _ in LINK_COUNTERS]
    if len(words) < len(names):
        raise PayloadError(f"STATUS reply has {len(words)} words, expected >= {len(names)}")
    out = dict(zip(names, words[: len(names)], strict=True))
    out["busy"] = bool(out.pop("flags") & 1)
    out["core"] = list(words[len(names) :])
    return out


# --- CRC-16/CCITT-FALSE -------------------------------------------------------------------


def _crc_table():
    table = []
    for b in range(256):
        c = b << 8
        for _ in range(8):
            c = ((c << 1) ^ CRC_POLY) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor).

    ``crc16(b"123456789") == 0x29B1``.  Over a frame with its CRC appended MSB first, it is 0.
    Computed by the standard library's C ``binascii.crc_hqx`` (the same CRC);
    :func:`crc16_table` is the table-driven reference it is tested against.
    """
    return binascii.crc_hqx(data, crc)


def crc16_table(data: bytes, crc: int = CRC_INIT) -> int:
    """Table-driven pure-Python :func:`crc16` (the reference of the gateware's CRC tests)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ b]
    return crc


# --- COBS ---------------------------------------------------------------------------------


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (without the trailing ``0x00`` delimiter).

    Blocks of up to 254 non-zero bytes; a block that ends the data is always written, even if
    empty (after a full 254-byte block this gives a final ``0x01``).  The gateware encoder
    (``spikeforge.hw.framing.COBSEncoder``) produces exactly these bytes.
    """
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(0xFF)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


class FrameError(SpikeforgeError):
    """A received frame is malformed (bad COBS, bad CRC, too short or too long)."""


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block sequence (no ``0x00`` inside); raise :class:`FrameError` if bad."""
    out = bytearray()
    i = 0
    n = len(data)
    if n == 0:
        raise FrameError("empty COBS frame")
    while i < n:
        code = data[i]
        if code == 0:
            raise FrameError(f"COBS: 0x00 code byte at offset {i}")
        end = i + code
        if end > n:
            raise FrameError(
                f"COBS: block at offset {i} claims {code - 1} bytes but only {n - i - 1} remain"
            )
        block = data[i + 1 : end]
        if 0 in block:
            raise FrameError(f"COBS: 0x00 inside the block at offset {i}")
        out += block
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(body: bytes) -> bytes:
    """Append the CRC to ``body`` (op, seq, payload[, status]), COBS-encode, add the delimiter."""
    crc = crc16(body)
    return cobs_encode(body + bytes((crc >> 8, crc & 0xFF))) + b"\x00"


def decode_frame(encoded: bytes, max_frame: int = MAX_FRAME) -> bytes:
    """Decode one frame (without its delimiter) and check its CRC; return the body without CRC."""
    raw = cobs_decode(encoded)
    if len(raw) > max_frame:
        raise FrameError(f"frame of {len(raw)} bytes is longer than MAX_FRAME={max_frame}")
    if len(raw) < HEADER_BYTES + CRC_BYTES:
        raise FrameError(f"frame of {len(raw)} bytes is shorter than the 4-byte minimum")
    if crc16(raw) != 0:
        got = int.from_bytes(raw[-2:], "big")
        want = crc16(raw[:-2])
        raise FrameError(f"CRC mismatch: frame says 0x{got:04x}, contents give 0x{want:04x}")
    return raw[:-2]


class FrameDecoder:
    """Incremental receiver: feed it bytes as they come, get decoded frames or errors.

    Resynchronises at every ``0x00``; empty frames (``00 00``) are ignored.  Bytes of a frame that
    grows past ``max_frame`` encoded bytes are dropped, so memory stays bounded on garbage input.

    Parameters
    ----------
    max_frame : int
        Largest decoded frame accepted.
    """

    def __init__(self, max_frame: int = MAX_FRAME):
        self.max_frame = max_frame
        # COBS adds one byte per 254 plus one.
        self._max_encoded = max_frame + max_frame // 254 + 2
        self._buf = bytearray()
        self._overflow = False

    def feed(self, data: bytes):
        """Yield ``bytes`` (a good frame body, CRC removed) or :class:`FrameError` per frame."""
        for b in data:
            if b != 0:
                if len(self._buf) < self._max_encoded:
                    self._buf.append(b)
                else:
                    self._overflow = True
                continue
            buf, overflow = bytes(self._buf), self._overflow
            self._buf.clear()
            self._overflow = False
            if overflow:
                yield FrameError(f"frame longer than MAX_FRAME={self.max_frame} bytes")
            elif buf:
                try:
                    yield decode_frame(buf, self.max_frame)
                except FrameError as e:
                    yield e

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held."""
        return len(self._buf)


# --- frame bodies -------------------------------------------------------------------------


def request(op: Op, seq: int, payload: bytes = b"") -> bytes:
    """The encoded wire bytes of a request (including the final delimiter)."""
    if len(payload) > MAX_REQUEST_PAYLOAD:
        raise ValueError(
            f"request payload of {len(payload)} bytes exceeds MAX_REQUEST_PAYLOAD="
            f"{MAX_REQUEST_PAYLOAD}"
        )
    return encode_frame(bytes((Op(op).value, seq & 0xFF)) + payload)


def reply(op: int, seq: int, payload: bytes, status: Status) -> bytes:
    """The encoded wire bytes of a reply."""
    body = bytes((op & 0xFF, seq & 0xFF)) + payload + bytes((Status(status).value,))
    if len(body) + CRC_BYTES > MAX_FRAME:
        raise ValueError(f"reply of {len(body) + CRC_BYTES} bytes exceeds MAX_FRAME={MAX_FRAME}")
    return encode_frame(body)


def encoded_size(decoded_len: int) -> int:
    """Worst-case wire bytes of a frame with ``decoded_len`` bytes (CRC included), delimiter too.

    COBS adds one code byte per started block of 254 bytes (``decoded_len // 254 + 1``).
    """
    return decoded_len + decoded_len // 254 + 1 + 1


def events_efficiency(n_events: int) -> tuple[int, float]:
    """Wire bytes of one RUN request of ``n_events`` items, and its payload efficiency."""
    if not 0 < n_events <= MAX_RUN_ITEMS:
        raise ValueError(f"n_events={n_events} is out of range: allowed 1..{MAX_RUN_ITEMS}")
    wire = encoded_size(REQUEST_OVERHEAD + 2 * n_events)
    return wire, 2 * n_events / wire


def frame_bytes(payload_len: int, reply: bool = False) -> int:
    """Decoded bytes of a frame with ``payload_len`` payload bytes, CRC included: what it
    occupies of the receive window."""
    return payload_len + (REPLY_OVERHEAD if reply else REQUEST_OVERHEAD)


def u16s(values) -> bytes:
    """Pack u16 little-endian."""
    return struct.pack(f"<{len(values)}H", *values)


def u32s(values) -> bytes:
    """Pack u32 little-endian."""
    return struct.pack(f"<{len(values)}I", *values)


# --- documentation ------------------------------------------------------------------------


def describe() -> str:
    """The Markdown tables of ``docs/protocol.md``: constants, opcodes, statuses, counters."""
    lines = ["| constant | value |", "|---|---|"]
    for name in (
        "PROTOCOL_VERSION",
        "MAX_FRAME",
        "MAX_WRITE_WORDS",
        "MAX_READ_WORDS",
        "MAX_RUN_ITEMS",
        "MAX_REPLY_ITEMS",
        "MAX_RUN_STEPS",
        "MAX_SAMPLE_CHANNELS",
        "MAX_SAMPLE_STEPS",
        "CHANNEL_BITS",
        "NEURON_BITS",
        "ADDR_BITS",
        "EVENT_BITS",
        "DEFAULT_BAUD",
    ):
        lines.append(f"| `{name}` | {globals()[name]} |")
    for name in ("RUN_STEP_AFTER", "RUN_COMMAND", "REPLY_MARK"):
        lines.append(f"| `{name}` | 0x{globals()[name]:04X} |")
    lines.append(f"| `MAGIC` | 0x{MAGIC:08X} |")
    lines += ["", "| payload layout | fields (little-endian) | bytes | what |", "|---|---|---|---|"]
    for name, fields in PAYLOADS.items():
        lines.append(f"| `{name}` | {fields.describe()} | {fields.size} | {fields.doc} |")
    lines += ["", "| opcode | value | request payload -> reply payload |", "|---|---|---|"]
    for op in Op:
        doc = _member_doc(Op, op.name)
        lines.append(f"| `{op.name}` | 0x{op.value:02X} | {doc} |")
    lines += ["", "| status | value | meaning |", "|---|---|---|"]
    for st in Status:
        lines.append(f"| `{st.name}` | 0x{st.value:02X} | {_member_doc(Status, st.name)} |")
    lines += ["", "| SAMPLE encoder | value | meaning |", "|---|---|---|"]
    for e in Encoder:
        lines.append(f"| `{e.name}` | {e.value} | {_member_doc(Encoder, e.name)} |")
    lines += ["", "| SAMPLE flag | value | meaning |", "|---|---|---|"]
    for f in SampleFlag:
        lines.append(f"| `{f.name}` | 0x{f.value:02X} | {_member_doc(SampleFlag, f.name)} |")
    lines += ["", "| STATUS word | counter | meaning |", "|---|---|---|"]
    for i, (name, doc) in enumerate(LINK_COUNTERS):
        lines.append(f"| {i} | `{name}` | {doc} |")
    lines.append(f"| {len(LINK_COUNTERS)}.. | core | the core's status words, in order |")
    return "\n".join(lines) + "\n"


def _member_doc(cls, name: str) -> str:
    import inspect

    src = inspect.getsource(cls).splitlines()
    doc = []
    for line in src:
        s = line.strip()
        if s.startswith("#:"):
            doc.append(s[2:].strip())
        elif s.startswith(f"{name} ="):
            return " ".join(doc).replace("``", "`").replace("|", "\\|")
        else:
            doc = []
    return ""
