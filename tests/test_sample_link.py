# The gateware link's SAMPLE (on-chip spike encoding and count readout, docs/encoding.md)
# against its reference (host/refdevice.py): the same request bytes give the same reply bytes
# and the same input events, timestep by timestep, in the core.
import random

import numpy as np
import pytest
from test_link import CLK, IDENT, SimLink, frames

from spikeforge.host.coding import chip_counts, chip_encode
from spikeforge.host.refdevice import RefCore, RefLink
from spikeforge.protocol import (
    MAX_REPLY_ITEMS,
    SAMPLE_HEADER,
    Encoder,
    Op,
    Sample,
    Status,
    cobs_encode,
    crc16,
    encode_sample,
    request,
)


def both(data: bytes, *, encoders=True, seed=0, **kwargs):
    """The gateware's and the reference's replies to ``data``, and both links."""
    sim = SimLink(seed=seed, encoders=encoders, **kwargs)
    ref = RefLink(RefCore(), clk_hz=CLK, ident_words=IDENT, encoders=encoders)
    sim.write(data)
    ref.write(data)
    return sim.read(limit=3_000_000), ref.read(), sim, ref


def random_sample(rng, *, max_channels=40):
    n = rng.randrange(1, max_channels + 1)
    encoder = rng.choice(list(Encoder))
    counts = None
    if rng.random() < 0.5:
        counts = (rng.randrange(0, 1000), rng.randrange(1, 256))
    return Sample(
        encoder=encoder,
        timesteps=rng.choice([1, 2, rng.randrange(1, 12)]),
        intensities=bytes(rng.choice([0, 255, rng.randrange(256)]) for _ in range(n)),
        gain=rng.choice([16, 255, 0, rng.randrange(256)]),
        threshold=rng.choice([0, 1, rng.randrange(256)]),
        seed=rng.choice([0, 1, rng.randrange(1 << 32)]),
        reset=rng.random() < 0.5,
        counts=counts,
    )


@pytest.mark.parametrize("fast", [False, True])
def test_random_samples_against_reference(fast):
    """Random SAMPLEs (both encoders, with and without counts and reset) interleaved with RUN:
    byte-identical replies, and the core saw the events ``chip_encode`` defines."""
    rng = random.Random(17 + fast)
    samples = [random_sample(rng) for _ in range(12)]
    data = b"".join(request(Op.SAMPLE, seq, encode_sample(s)) for seq, s in enumerate(samples))
    got, ref, sim, refl = both(data, fast=fast, seed=3)
    assert got == ref
    assert [b[-1] for b in frames(got)] == [Status.OK.value] * len(frames(got))
    assert sim.core.events_log == refl.core.events_log
    # the events are chip_encode's raster (the host encoder, bit for bit)
    expect = []
    for s in samples:
        x = np.frombuffer(s.intensities, dtype=np.uint8)
        raster = chip_encode(x, s.timesteps, s.encoder.name.lower(), gain=s.gain,
                             threshold=s.threshold, seed=s.seed)[:, 0]
        expect += [list(np.flatnonzero(r)) for r in raster]
    assert sim.core.events_log == expect
    assert sim.core.resets == sum(s.reset for s in samples)


def test_long_spike_reply_in_several_frames():
    """A SAMPLE without counts whose spikes overflow a frame: MORE frames, as a RUN reply."""
    s = Sample(Encoder.RATE, timesteps=6, intensities=bytes([255] * 80), gain=16, seed=5)
    got, ref, sim, _ = both(request(Op.SAMPLE, 1, encode_sample(s)), stall=False)
    assert got == ref
    statuses = [b[-1] for b in frames(got)]
    assert statuses[-1] == Status.OK.value and statuses.count(Status.MORE.value) >= 1
    assert sum(len(e) for e in sim.core.events_log) > MAX_REPLY_ITEMS


def test_counts_saturate_and_only_count_their_range():
    """255 timesteps of a neuron that spikes every step (RefCore: input a -> neuron 3a + t):
    its count saturates at 255; neurons outside ``out_first .. + out_count`` are not counted."""
    s = Sample(Encoder.LATENCY, timesteps=255, intensities=bytes([200, 0, 9]), gain=16,
               threshold=0, counts=(0, 255))
    got, ref, _, _ = both(request(Op.SAMPLE, 1, encode_sample(s)), stall=False)
    assert got == ref
    body = frames(got)[0]
    assert body[-1] == Status.OK.value and len(body) == 3 + 255


def _raw(op, seq, payload):
    body = bytes((op, seq)) + payload
    crc = crc16(body)
    return cobs_encode(body + bytes((crc >> 8, crc & 0xFF))) + b"\x00"


def test_bad_samples_change_nothing():
    """Unknown encoder, no timesteps, counts of no neuron: BAD_ARG; a header without
    intensities: BAD_LENGTH; nothing runs; without encoders SAMPLE is UNKNOWN_OP."""
    good = encode_sample(Sample(Encoder.RATE, 3, bytes([255, 128]), counts=(0, 4)))
    bad_enc = bytes([7]) + good[1:]
    no_steps = good[:2] + bytes([0]) + good[3:]
    no_count = good[:SAMPLE_HEADER.size - 1] + bytes([0]) + good[SAMPLE_HEADER.size:]
    data = b"".join([
        _raw(Op.SAMPLE.value, 1, bad_enc),
        _raw(Op.SAMPLE.value, 2, no_steps),
        _raw(Op.SAMPLE.value, 3, no_count),
        _raw(Op.SAMPLE.value, 4, good[:SAMPLE_HEADER.size]),
        _raw(Op.SAMPLE.value, 4, good),  # (a malformed request does not take its seq)
    ])
    got, ref, sim, _ = both(data)
    assert got == ref
    S = Status
    assert [b[-1] for b in frames(got)] == [
        S.BAD_ARG.value, S.BAD_ARG.value, S.BAD_ARG.value, S.BAD_LENGTH.value, S.OK.value,
    ]
    assert len(sim.core.events_log) == 3  # only the good one ran
    got, ref, sim, _ = both(data, encoders=False)
    assert got == ref
    assert {b[-1] for b in frames(got)} == {S.UNKNOWN_OP.value}
    assert sim.core.events_log == []


def test_samples_are_sequenced_as_run():
    """A repeated SAMPLE is not run twice (DUPLICATE); one after a lost request is refused
    (OUT_OF_ORDER), also when mixed with RUN."""
    p = encode_sample(Sample(Encoder.LATENCY, 2, bytes([255, 255]), threshold=0))
    data = request(Op.SAMPLE, 3, p) + request(Op.SAMPLE, 3, p) + request(Op.SAMPLE, 5, p)
    data += request(Op.SAMPLE, 4, p)
    got, ref, sim, _ = both(data)
    assert got == ref
    S = Status
    assert [b[-1] for b in frames(got)] == [
        S.OK.value, S.DUPLICATE.value, S.OUT_OF_ORDER.value, S.OK.value,
    ]
    assert len(sim.core.events_log) == 4


# --- the whole chip (link + core RTL) on the virtual board against the golden model -----------
@pytest.fixture(scope="module")
def enc_board(verilator_toolchain):
    """A virtual board with a small core and the encoders."""
    from test_chip import CLK as CHIP_CLK
    from test_chip import CONFIG

    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.hw.chip import Chip
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(Chip(CONFIG, CHIP_CLK, encoders=True), name="sample_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0)
        yield backend
        backend.close()


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_sample_counts_on_the_chip_match_golden(enc_board, seed):
    """Random networks, random intensities, both encoders: the chip's counts are the golden
    model's counts of the ``chip_encode`` raster, and its membranes the golden membranes."""
    from test_chip import _random_network

    from spikeforge.hw.chip import encoders_from_ident
    from spikeforge.sim.golden import GoldenChip

    assert encoders_from_ident(enc_board.identity.words)
    net = _random_network(seed)
    enc_board.load(net)
    rng = np.random.default_rng(seed)
    out = np.asarray(net.output_indices())
    for encoder in Encoder:
        x = rng.integers(0, 256, net.n_inputs, dtype=np.uint8)
        x[rng.random(net.n_inputs) < 0.3] = 0
        s = Sample(encoder, timesteps=int(rng.integers(3, 20)), intensities=bytes(x),
                   gain=int(rng.integers(8, 64)), threshold=int(rng.integers(0, 100)),
                   seed=int(rng.integers(0, 1 << 32)), reset=True,
                   counts=(0, min(255, net.n_neurons)))
        payload, status = enc_board.device._transact(Op.SAMPLE, encode_sample(s))
        assert status == Status.OK
        raster = chip_encode(x, s.timesteps, encoder.name.lower(), gain=s.gain,
                             threshold=s.threshold, seed=s.seed)
        gold = GoldenChip(net, "int", batch=1).run(raster)
        seen = np.zeros_like(gold["spikes"])
        seen[:, :, out] = gold["spikes"][:, :, out]  # only output spikes reach the link
        expect = chip_counts(seen, 0, s.counts[1])[0]
        assert list(payload) == expect.tolist()
        assert expect.sum() > 0  # (the draw makes spikes: the comparison means something)
        assert np.array_equal(enc_board.read_membrane(), gold["v"][-1, 0])
