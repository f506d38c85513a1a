"""Pure-Python reference of the device side of the host link (``docs/protocol.md``).

:class:`RefLink` is a byte-exact model of the gateware command engine ``spikeforge.hw.link.Link``:
fed the same bytes with the same core, it answers the same bytes and counts the same errors
(``tests/test_link.py`` checks this).  It talks to a *core* object (:class:`RefCore` is a simple
one used by the tests); the host library can talk to it through
``spikeforge.host.transport.InProcessTransport``.
"""

from __future__ import annotations

import numpy as np

from ..protocol import (
    ADDR_BITS,
    CHANNEL_BITS,
    CRC_INIT,
    LINK_COUNTERS,
    MAX_FRAME,
    MAX_READ_WORDS,
    MAX_REPLY_ITEMS,
    MAX_RUN_STEPS,
    REPLY_MARK,
    RUN_COMMAND,
    RUN_STEP_AFTER,
    Encoder,
    Op,
    Status,
    crc16,
    decode_items,
    decode_read,
    decode_sample,
    decode_write,
    encode_identify,
    encode_items,
    encode_status,
    encode_words,
    payload_length_ok,
    reply,
)
from .coding import chip_encode

#: Largest count of timesteps one reply mark carries.
_MAX_MARK = REPLY_MARK - 1

__all__ = ["RefCore", "GoldenRefCore", "RefLink"]


class RefCore:
    """A small deterministic stand-in for a neuron core, for link tests.

    It has ``mem_words`` words of memory (other addresses are refused with a bus error); the
    spikes of a timestep are ``(a * 3 + t) % n_neurons`` for each input event ``a`` of the step
    (duplicates kept, in event order), where ``t`` counts steps since the last reset, plus neuron
    ``t % n_neurons`` on every step where ``t % 5 == 4``.

    Parameters
    ----------
    mem_words : int
        Size of the memory at bus address 0.
    n_neurons : int
        Range of the spike addresses.
    """

    def __init__(self, mem_words: int = 1024, n_neurons: int = 1000):
        self.mem = [0] * mem_words
        self.n_neurons = n_neurons
        self.t = 0
        self.pending: list[int] = []
        self.events_log: list[list[int]] = []
        self.resets = 0

    # memory bus: (ok) / (data, ok)
    def bus_write(self, addr: int, word: int) -> bool:
        if addr < len(self.mem):
            self.mem[addr] = word & 0xFFFFFFFF
            return True
        return False

    def bus_read(self, addr: int) -> tuple[int, bool]:
        if addr < len(self.mem):
            return self.mem[addr], True
        return 0, False

    def event(self, addr: int) -> None:
        self.pending.append(addr)

    def reset_state(self) -> None:
        self.t = 0
        self.pending = []
        self.resets += 1

    def spikes_for(self, t: int, events: list[int]) -> list[int]:
        out = [(a * 3 + t) % self.n_neurons for a in events]
        if t % 5 == 4:
            out.append(t % self.n_neurons)
        return out

    def step(self) -> list[int]:
        spikes = self.spikes_for(self.t, self.pending)
        self.events_log.append(self.pending)
        self.pending = []
        self.t += 1
        return spikes

    def status_words(self) -> list[int]:
        return [self.t, len(self.pending)]


class GoldenRefCore:
    """A core for :class:`RefLink` that runs a network with the golden model (integer mode).

    The network is given here, not through the memory bus: writes are kept (and read back) but
    not interpreted, so a :class:`~spikeforge.host.chip_backend.ChipBackend` can ``load`` the
    same network through the link as on a chip.  A timestep's spikes are those of the output
    populations (what a chip sends to the host), in ascending neuron order; events on channels
    at or beyond ``net.n_inputs`` are refused (counted, as the core does).  Used by the tests and
    ``benchmarks/encoding.py`` to run the host side of a chip exactly, without RTL.

    Parameters
    ----------
    net : Network
        The integer network to run.
    fmt : Format, optional
        Integer widths (default: the golden model's).
    """

    def __init__(self, net, fmt=None):
        from ..sim.golden import GoldenChip

        kw = {} if fmt is None else {"fmt": fmt}
        self.chip = GoldenChip(net, "int", batch=1, **kw)
        self.outputs = np.asarray(net.output_indices())
        self.n_inputs = net.n_inputs
        self.mem: dict[int, int] = {}
        self.pending = np.zeros(net.n_inputs, dtype=np.uint8)
        self.steps = 0
        self.events_refused = 0

    def bus_write(self, addr: int, word: int) -> bool:
        self.mem[addr] = word & 0xFFFFFFFF
        return True

    def bus_read(self, addr: int) -> tuple[int, bool]:
        return self.mem.get(addr, 0), True

    def event(self, addr: int) -> None:
        if addr < self.n_inputs:
            self.pending[addr] = 1
        else:
            self.events_refused += 1

    def reset_state(self) -> None:
        self.chip.reset()
        self.pending[:] = 0

    def step(self) -> list[int]:
        spikes = self.chip.step(self.pending)[0]
        self.pending[:] = 0
        self.steps += 1
        return [int(n) for n in self.outputs[spikes[self.outputs]]]

    def status_words(self) -> list[int]:
        return [self.steps, self.events_refused]


class RefLink:
    """Byte-level model of the gateware ``Link`` (same replies, same counters).

    Parameters
    ----------
    core : RefCore-like
        Has ``bus_write``, ``bus_read``, ``event``, ``reset_state``, ``step`` and
        ``status_words``.
    clk_hz : int
        Reported by IDENTIFY.
    ident_words : list of int
        Capability words reported by IDENTIFY.
    counter_bits : int
        Width of the saturating error counters (as the gateware's ``counter_bits``).
    rx_window : int
        Receive window reported by IDENTIFY (this model executes each frame as it arrives, so
        it never runs out of room).
    encoders : bool
        Execute SAMPLE (``docs/encoding.md``); without, SAMPLE is an unknown opcode (as on a
        bitstream without encoders).
    """

    def __init__(self, core, *, clk_hz: int = 48_000_000, ident_words=(), counter_bits: int = 16,
                 rx_window: int = 2 * MAX_FRAME, encoders: bool = False):
        self.core = core
        self.encoders = bool(encoders)
        self.clk_hz = clk_hz
        self.rx_window = rx_window
        self.ident_words = [int(w) & 0xFFFFFFFF for w in ident_words]
        self.counter_max = (1 << counter_bits) - 1
        self.counters = {name: 0 for name, _ in LINK_COUNTERS if name != "flags"}
        self.last_seq: int | None = None
        self._out = bytearray()
        self._reset_rx()

    # --- byte interface -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Feed received bytes; replies accumulate for :meth:`read`."""
        for b in data:
            self._rx_byte(b)

    def read(self) -> bytes:
        """Take every reply byte produced so far."""
        out = bytes(self._out)
        self._out.clear()
        return out

    # --- receiver, byte by byte as the gateware decoder -----------------------------------
    def _reset_rx(self):
        self._buf = bytearray()
        self._remaining = 0
        self._pending_zero = False
        self._overflow = False
        self._any = False
        self._crc = CRC_INIT

    def _put(self, b):
        if len(self._buf) == MAX_FRAME:
            self._overflow = True
        else:
            self._buf.append(b)
            self._crc = crc16(bytes((b,)), self._crc)

    def _rx_byte(self, b):
        if b != 0:
            self._any = True
            if self._remaining == 0:
                if self._pending_zero:
                    self._put(0)
                self._remaining = b - 1
                self._pending_zero = b != 0xFF
            else:
                self._put(b)
                self._remaining -= 1
            return
        if self._any:
            if self._overflow:
                self._count("oversize")
            elif self._remaining != 0 or len(self._buf) < 4 or self._crc != 0:
                self._count("crc_errors")
            else:
                self._execute(bytes(self._buf[:-2]))
        self._reset_rx()

    def _count(self, name, n=1):
        self.counters[name] = min(self.counter_max, self.counters[name] + n)

    # --- command engine -------------------------------------------------------------------
    def _reply(self, op, seq, payload, status):
        self._out += reply(op, seq, payload, status)

    def _execute(self, body: bytes):
        op, seq, p = body[0], body[1], body[2:]
        n = len(p)
        try:
            op = Op(op)
        except ValueError:
            self._count("unknown_op")
            self._reply(op, seq, b"", Status.UNKNOWN_OP)
            return
        if op == Op.SAMPLE and not self.encoders:  # a bitstream without encoders
            self._count("unknown_op")
            self._reply(op.value, seq, b"", Status.UNKNOWN_OP)
            return
        if not payload_length_ok(op, n):
            self._count("bad_length")
            self._reply(op.value, seq, b"", Status.BAD_LENGTH)
            return
        streamed = op in (Op.RUN, Op.SAMPLE)
        if (op == Op.RESET_STATE or streamed) and self.last_seq == seq:
            self._count("duplicates")
            self._reply(op.value, seq, b"", Status.DUPLICATE)
            return
        if streamed and self.last_seq is not None and seq != (self.last_seq + 1) & 0xFF:
            self._count("out_of_order")
            self._reply(op.value, seq, b"", Status.OUT_OF_ORDER)
            return
        # every accepted request is remembered (a RUN must follow the last one's seq)
        self.last_seq = seq
        getattr(self, "_op_" + op.name.lower())(op.value, seq, p)

    def _op_identify(self, op, seq, p):
        self.last_seq = None
        payload = encode_identify(self.clk_hz, self.ident_words, rx_window=self.rx_window)
        self._reply(op, seq, payload, Status.OK)

    def _op_write(self, op, seq, p):
        addr, words = decode_write(p)
        if addr + len(words) > 1 << ADDR_BITS:
            self._count("bad_length")
            self._reply(op, seq, b"", Status.BAD_ARG)
            return
        errors = sum(not self.core.bus_write(addr + i, w) for i, w in enumerate(words))
        if errors:
            self._count("bus_errors", errors)
        self._reply(op, seq, b"", Status.BUS_ERROR if errors else Status.OK)

    def _op_read(self, op, seq, p):
        addr, count = decode_read(p)
        if count > MAX_READ_WORDS or addr + count > 1 << ADDR_BITS:
            self._count("bad_length")
            self._reply(op, seq, b"", Status.BAD_ARG)
            return
        data, errors = [], 0
        for i in range(count):
            w, ok = self.core.bus_read(addr + i)
            data.append(w)
            errors += not ok
        if errors:
            self._count("bus_errors", errors)
        self._reply(op, seq, encode_words(data), Status.BUS_ERROR if errors else Status.OK)

    def _op_reset_state(self, op, seq, p):
        self.core.reset_state()
        self._reply(op, seq, b"", Status.OK)

    def _run_reply(self, op, seq):
        """``(step, finish)`` of a RUN-style reply: ``step()`` runs a timestep and emits its
        spikes with lazy step marks (``MORE`` frames when long); ``finish(status)`` closes it."""
        out: list[int] = []
        pend = 0  # timesteps ended since the last mark

        def emit(item):
            if len(out) == MAX_REPLY_ITEMS:
                self._reply(op, seq, encode_items(out), Status.MORE)
                out.clear()
            out.append(item)

        def step():
            nonlocal pend
            if pend == _MAX_MARK:
                emit(REPLY_MARK | pend)
                pend = 0
            for s in self.core.step():
                if pend:
                    emit(REPLY_MARK | pend)
                    pend = 0
                emit(s)
            pend += 1

        def finish(status):
            if pend:
                emit(REPLY_MARK | pend)
            self._reply(op, seq, encode_items(out), status)

        return step, finish

    def _op_sample(self, op, seq, p):
        s = decode_sample(p) if p[0] < len(Encoder) else None
        if s is None or s.timesteps == 0 or (s.counts is not None and s.counts[1] == 0):
            self._count("bad_length")
            self._reply(op, seq, b"", Status.BAD_ARG)
            return
        raster = chip_encode(np.frombuffer(s.intensities, dtype=np.uint8), s.timesteps,
                             s.encoder.name.lower(), gain=s.gain, threshold=s.threshold,
                             seed=s.seed)[:, 0]
        if s.reset:
            self.core.reset_state()
        if s.counts is None:
            step, finish = self._run_reply(op, seq)
            for events in raster:
                for c in np.flatnonzero(events):
                    self.core.event(int(c))
                step()
            finish(Status.OK)
            return
        first, count = s.counts
        counts = [0] * count
        for events in raster:
            for c in np.flatnonzero(events):
                self.core.event(int(c))
            for n in self.core.step():
                if first <= n < first + count:
                    counts[n - first] = min(255, counts[n - first] + 1)
        self._reply(op, seq, bytes(counts), Status.OK)

    def _op_run(self, op, seq, p):
        step, finish = self._run_reply(op, seq)
        status = Status.OK
        for it in decode_items(p):
            kind = it & (RUN_STEP_AFTER | RUN_COMMAND)
            if kind == RUN_COMMAND:
                k = it & MAX_RUN_STEPS
                if k == 0:
                    self.core.reset_state()
                for _ in range(k):
                    step()
            elif kind == RUN_STEP_AFTER | RUN_COMMAND:  # reserved: skipped
                self._count("bad_length")
                status = Status.BAD_ARG
            else:
                self.core.event(it & ((1 << CHANNEL_BITS) - 1))
                if kind == RUN_STEP_AFTER:
                    step()
        finish(status)

    def _op_status(self, op, seq, p):
        # flags: the reference core is never busy between requests
        payload = encode_status(self.counters, busy=False, core=self.core.status_words())
        self._reply(op, seq, payload, Status.OK)
