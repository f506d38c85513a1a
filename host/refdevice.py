"""Pure-Python reference of the device side of the host link (``docs/protocol.md``).

:class:`RefLink` is a byte-exact model of the gateware command engine ``spikeforge.hw.link.Link``:
fed the same bytes with the same core, it answers the same bytes and counts the same errors
(``tests/test_link.py`` checks this).  It talks to a *core* object (:class:`RefCore` is a simple
one used by the tests); the host library can talk to it through
``spikeforge.host.transport.InProcessTransport``.
"""

from __future__ import annotations

from ..protocol import (
    ADDR_BITS,
    CRC_INIT,
    LINK_COUNTERS,
    MAX_FRAME,
    MAX_READ_WORDS,
    MAX_SPIKES,
    Op,
    Status,
    crc16,
    decode_events,
    decode_read,
    decode_step,
    decode_write,
    encode_events_reply,
    encode_identify,
    encode_spike_frame,
    encode_status,
    encode_step_final,
    encode_words,
    payload_length_ok,
    reply,
)

__all__ = ["RefCore", "RefLink"]


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
    """

    def __init__(self, core, *, clk_hz: int = 48_000_000, ident_words=(), counter_bits: int = 16):
        self.core = core
        self.clk_hz = clk_hz
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
        if not payload_length_ok(op, n):
            self._count("bad_length")
            self._reply(op.value, seq, b"", Status.BAD_LENGTH)
            return
        if op in (Op.RESET_STATE, Op.EVENTS, Op.STEP):
            if self.last_seq == seq:
                self._count("duplicates")
                self._reply(op.value, seq, b"", Status.DUPLICATE)
                return
        getattr(self, "_op_" + op.name.lower())(op.value, seq, p)

    def _op_identify(self, op, seq, p):
        self.last_seq = None
        self._reply(op, seq, encode_identify(self.clk_hz, self.ident_words), Status.OK)

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
        self.last_seq = seq
        self.core.reset_state()
        self._reply(op, seq, b"", Status.OK)

    def _op_events(self, op, seq, p):
        self.last_seq = seq
        addrs = decode_events(p)
        for a in addrs:
            self.core.event(a)
        self._reply(op, seq, encode_events_reply(len(addrs)), Status.OK)

    def _op_step(self, op, seq, p):
        self.last_seq = seq
        n = decode_step(p)
        total = 0
        for i in range(n):
            spikes = self.core.step()
            total += len(spikes)
            for k in range(0, len(spikes), MAX_SPIKES):
                chunk = spikes[k : k + MAX_SPIKES]
                self._reply(op, seq, encode_spike_frame(i, chunk), Status.MORE)
        self._reply(op, seq, encode_step_final(n, total), Status.OK)

    def _op_status(self, op, seq, p):
        # flags: the reference core is never busy between requests
        payload = encode_status(self.counters, busy=False, core=self.core.status_words())
        self._reply(op, seq, payload, Status.OK)
