# Tests of the host library (host/device.py, host/transport.py) against the reference device
# (host/refdevice.py), spec docs/protocol.md: every method, chunking, retries, and the errors a
# user sees when something is wrong.
import random
import socket
import struct
import threading

import pytest

from spikeforge.host.device import (
    Device,
    DeviceError,
    LinkError,
    NoAnswerError,
    PortError,
    ProtocolVersionError,
    StepLostError,
)
from spikeforge.host.refdevice import RefCore, RefLink
from spikeforge.host.transport import InProcessTransport
from spikeforge.protocol import (
    ADDR_BITS,
    MAX_FRAME,
    MAX_READ_WORDS,
    MAX_RUN_ITEMS,
    MAX_WRITE_WORDS,
    FrameDecoder,
    Op,
    Status,
    frame_bytes,
)


def make(tamper=None, **kwargs):
    core = RefCore(mem_words=2048)
    link = RefLink(core, clk_hz=12_000_000, ident_words=[3, 1, 4])
    return Device.in_process(link, tamper=tamper, **kwargs), core, link


def test_all_methods_against_reference():
    dev, core, _ = make()
    assert dev.identity.version == 2
    assert dev.identity.clk_hz == 12_000_000
    assert dev.identity.words == (3, 1, 4)
    words = [random.Random(2).randrange(1 << 32) for _ in range(3 * MAX_WRITE_WORDS + 5)]
    assert dev.write_mem(100, iter(words)) == len(words)  # an iterator: streamed in bursts
    assert core.mem[100 : 100 + len(words)] == words
    assert dev.read_mem(100, len(words)) == words  # > MAX_READ_WORDS: several READs
    assert len(words) > MAX_READ_WORDS
    assert dev.write_mem(0, [-1]) == 1 and core.mem[0] == 0xFFFFFFFF

    events = list(range(600))  # more than MAX_RUN_ITEMS: three RUN frames
    assert dev.send_events(events) == 600
    spikes = dev.step(5)
    assert spikes[0] == core.spikes_for(0, events)  # 600 spikes: three spike frames
    assert spikes[1:] == [[], [], [], [4]]
    assert core.events_log[0] == events

    # streaming run: one step per input list, lazily consumed
    dev.reset_state()
    assert core.resets == 1
    inputs = ([i, i + 1] for i in range(4))
    out = list(dev.run(inputs))
    assert out == [core.spikes_for(t, [t, t + 1]) + ([t] if t == 4 else []) for t in range(4)]

    st = dev.status()
    assert st["core"] == [4, 0]
    assert st["busy"] is False
    assert st["crc_errors"] == 0 and st["duplicates"] == 0
    assert dev.step(0) == []


def test_bus_error_is_reported():
    dev, _, _ = make()
    with pytest.raises(DeviceError, match="READ: BUS_ERROR") as e:
        dev.read_mem(2040, 20)
    assert e.value.status == Status.BUS_ERROR
    with pytest.raises(DeviceError, match="WRITE: BUS_ERROR"):
        dev.write_mem(2047, [1, 2])
    assert dev.status()["bus_errors"] == 12 + 1


def test_bad_arguments_raise_before_sending():
    dev, _, link = make()
    with pytest.raises(ValueError, match="addr"):
        dev.write_mem((1 << ADDR_BITS) - 1, [1, 2])
    with pytest.raises(ValueError, match="input channel 70000 is out of range"):
        dev.send_events([1, 70000])
    with pytest.raises(ValueError, match="input channel -1 at timestep 1"):
        list(dev.run([[1], [-1]]))
    with pytest.raises(ValueError, match="does not fit 32 bits"):
        dev.write_mem(0, [1 << 32])
    with pytest.raises(ValueError, match="n="):
        dev.step(-1)
    assert link.core.pending == []


def flip_nth(direction_wanted, nth, predicate=lambda body: True):
    """A tamper hook that corrupts the ``nth`` matching chunk sent in one direction."""
    state = {"n": 0}

    def tamper(direction, data):
        if direction != direction_wanted:
            return data
        bodies = [b for b in FrameDecoder().feed(data) if isinstance(b, bytes)]
        if not any(predicate(b) for b in bodies):
            return data
        state["n"] += 1
        if state["n"] == nth:
            i = len(data) // 2
            b = data[i] ^ 0x08 if data[i] != 0x08 else 0x18  # changed, and still not 0x00
            data = data[:i] + bytes((b,)) + data[i + 1 :]
        return data

    return tamper, state


def test_corrupt_reset_reply_is_retried_without_resetting_twice():
    tamper, _ = flip_nth("to_host", 1, lambda b: b[0] == Op.RESET_STATE.value)
    dev, core, link = make(tamper=tamper)
    dev.reset_state()
    assert core.resets == 1  # executed once: the retry was answered DUPLICATE
    assert dev.retried == 1
    assert dev.rx_errors == 1
    assert link.counters["duplicates"] == 1


def test_corrupt_run_reply_raises_step_lost_and_runs_nothing_twice():
    tamper, _ = flip_nth("to_host", 1, lambda b: b[0] == Op.RUN.value)
    dev, core, link = make(tamper=tamper)
    with pytest.raises(StepLostError, match="corrupt.*clear the state") as e:
        list(dev.run([[1, 2, 3]]))
    assert e.value.steps_done == 0
    assert core.events_log == [[1, 2, 3]]  # executed once, not retried
    assert link.counters["duplicates"] == 0


def test_corrupt_request_is_retried():
    tamper, _ = flip_nth("to_device", 1, lambda b: b[0] == Op.WRITE.value)
    dev, core, link = make(tamper=tamper)
    dev.write_mem(5, [9, 8, 7])
    assert core.mem[5:8] == [9, 8, 7]
    assert dev.retried == 1
    assert link.counters["crc_errors"] == 1


def test_lost_run_reply_raises_step_lost():
    dev2, core2, _ = make(tamper=flip_nth("to_host", 1, lambda b: b[0] == Op.RUN.value)[0])
    with pytest.raises(StepLostError, match="clear the state"):
        dev2.step(2)
    assert core2.t == 2  # the steps ran once; the host did not run them again
    dev2.reset_state()
    dev2.send_events([7])
    assert dev2.step(1) == [[21]]


def test_dropped_run_reply_is_not_rerun():
    state = {"dropped": False}

    def drop(direction, data):
        if direction == "to_host" and not state["dropped"]:
            if any(
                isinstance(b, bytes) and b[0] == Op.RUN.value for b in FrameDecoder().feed(data)
            ):
                state["dropped"] = True
                return b""
        return data

    dev, core, _ = make(tamper=drop)
    with pytest.raises(StepLostError, match="no RUN reply"):
        dev.step(3)
    assert core.t == 3


class SlowChip(RefLink):
    """A reference link that executes one received frame per ``read`` (a slow chip): it checks
    that the host never has more request bytes in flight than the receive window."""

    def __init__(self, core, window):
        super().__init__(core, rx_window=window)
        self.queue = []
        self.most = 0
        self.window = window

    def write(self, data):
        for body in FrameDecoder().feed(data):
            if isinstance(body, bytes):
                self.queue.append(body)
        held = sum(frame_bytes(len(b) - 2) for b in self.queue)
        self.most = max(self.most, held)
        assert held <= self.window, f"{held} bytes in flight, window {self.window}"

    def read(self):
        if self.queue:
            self._execute(self.queue.pop(0))
        return super().read()


def test_streaming_keeps_within_the_window_and_pipelines():
    core = RefCore()
    chip = SlowChip(core, window=2 * MAX_FRAME)
    dev = Device(InProcessTransport(chip))
    dev.identify()
    rng = random.Random(3)
    steps = [[rng.randrange(1000) for _ in range(rng.randrange(0, 30))] for _ in range(200)]
    got = list(dev.run(steps, reset=True))
    gold = RefCore()
    want = []
    for ev in steps:
        for e in ev:
            gold.event(e)
        want.append(gold.step())
    assert got == want
    assert dev.run_frames > 2
    assert chip.most > MAX_FRAME  # more than one frame was in flight at a time
    assert dev.round_trips == 2  # IDENTIFY, and the stream's final wait


def test_garbage_peer_does_not_hang_open():
    """A peer that streams garbage forever: the open gives up after its deadline."""

    class Babbler:
        def write(self, data):
            pass

        def read(self):
            return bytes(random.Random(1).randrange(1, 256) for _ in range(64)) + b"\x00"

    dev = Device(InProcessTransport(Babbler(), timeout=0.05), retries=1)
    with pytest.raises(LinkError, match="IDENTIFY"):
        dev.identify()


class Silent:
    def write(self, data):
        pass

    def read(self):
        return b""


class Garbler(RefLink):
    def read(self):
        out = bytearray(super().read())
        for i in range(0, len(out) - 1, 5):
            if out[i] not in (0, 0xFF):
                out[i] ^= 0x01 if out[i] != 1 else 0x02
        return bytes(out)


def test_no_answer():
    with pytest.raises(NoAnswerError, match="wrong baud rate.*not flashed"):
        Device.in_process(Silent(), retries=2)


def test_always_corrupt():
    with pytest.raises(LinkError, match="corrupt after 3 attempts"):
        Device.in_process(Garbler(RefCore()), retries=2)


class OldFirmware(RefLink):
    def _op_identify(self, op, seq, p):
        self._reply(op, seq, struct.pack("<4I", 0x464B5053, 1 | 512 << 16, 1, 0), Status.OK)


def test_protocol_version_mismatch():
    with pytest.raises(ProtocolVersionError, match="version 1.*speaks 2.*rebuild the bitstream"):
        Device.in_process(OldFirmware(RefCore()))


def test_not_a_spikeforge_device():
    class Other(RefLink):
        def _op_identify(self, op, seq, p):
            self._reply(op, seq, struct.pack("<4I", 0x12345678, 1, 1, 0), Status.OK)

    with pytest.raises(ProtocolVersionError, match="not a spikeforge device"):
        Device.in_process(Other(RefCore()))


def test_unknown_status_from_device():
    class Newer(RefLink):
        def _op_status(self, op, seq, p):
            self._reply(op, seq, b"", Status.STEP_TIMEOUT)

    dev = Device.in_process(Newer(RefCore()))
    with pytest.raises(DeviceError, match="STATUS: STEP_TIMEOUT"):
        dev.status()


def test_cannot_open_port():
    with pytest.raises(PortError, match="cannot open '/dev/ttyNOPE0'.*plugged in"):
        Device.open("/dev/ttyNOPE0")
    with pytest.raises(PortError, match="virtual board running"):
        Device.open("socket://127.0.0.1:1")


def test_loop_url_gives_no_answer():
    # loop:// echoes our own requests back: they are not replies (no status), so no answer.
    with pytest.raises(NoAnswerError, match="loop://"):
        Device.open("loop://", timeout=0.05, retries=1)


def test_socket_url_with_reference_server():
    """The path the virtual board uses: pyserial socket:// to a TCP server speaking bytes."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    core = RefCore()
    link = RefLink(core, ident_words=[42])

    def serve():
        conn, _ = srv.accept()
        with conn:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                link.write(data)
                out = link.read()
                if out:
                    conn.sendall(out)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with Device.open(f"socket://127.0.0.1:{port}", timeout=2.0) as dev:
            assert dev.identity.words == (42,)
            dev.write_mem(0, range(MAX_WRITE_WORDS + 1))
            assert dev.read_mem(MAX_WRITE_WORDS - 1, 2) == [MAX_WRITE_WORDS - 1, MAX_WRITE_WORDS]
            dev.send_events(range(MAX_RUN_ITEMS + 3))
            assert len(dev.step(1)[0]) == MAX_RUN_ITEMS + 3
            steps = [[1, 2], [], [3]] * 200
            assert len(list(dev.run(steps, reset=True))) == 600
    finally:
        srv.close()
        t.join(timeout=5)
