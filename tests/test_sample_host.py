# Host side of on-chip encoding (issue #17, docs/encoding.md): Device.sample/samples (SAMPLE
# requests, streamed within the receive window) against the reference device, ChipBackend's
# on-chip path and its host fallback (bit for bit the same spikes and counts), and the errors a
# user sees.  All against RefLink (no RTL).
import numpy as np
import pytest

from spikeforge.errors import ConfigError, UnsupportedError
from spikeforge.host.backends import GoldenBackend
from spikeforge.host.chip_backend import ChipBackend
from spikeforge.host.coding import chip_counts, chip_encode
from spikeforge.host.device import Device, DeviceError, SampleLostError
from spikeforge.host.refdevice import GoldenRefCore, RefCore, RefLink
from spikeforge.hw.chip import ident_words
from spikeforge.hw.image import CoreConfig
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.protocol import MAX_SAMPLE_CHANNELS, FrameDecoder, Op

CFG = CoreConfig(n_neurons=64, n_inputs=32)


def make_dev(encoders=True, tamper=None, rx_window=1024, core=None):
    core = RefCore(mem_words=64, n_neurons=60) if core is None else core
    link = RefLink(core, ident_words=ident_words(CFG, encoders=encoders), encoders=encoders,
                   rx_window=rx_window)
    return Device.in_process(link, tamper=tamper), core, link


def _x(n=12, ch=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, ch))


def _run_raster(dev, raster):
    """Each sample of ``raster`` through RUN (reset, events): per sample, per step, spikes."""
    out = []
    for b in range(raster.shape[1]):
        dev.reset_state()
        out.append(list(dev.run(np.flatnonzero(raster[t, b]).tolist()
                                for t in range(raster.shape[0]))))
    return out


@pytest.mark.parametrize("encoder", ["rate", "latency"])
def test_sample_spikes_equal_run_of_chip_encode(encoder):
    dev, _, _ = make_dev()
    x = _x()
    got = list(dev.samples(x, 9, encoder=encoder, gain=20, threshold=3, seed=77))
    raster = chip_encode(x, 9, encoder, gain=20, threshold=3, seed=77)
    assert raster.any()
    assert got == _run_raster(dev, raster)
    assert dev.sample(x[4], 9, encoder=encoder, gain=20, threshold=3, seed=81) == got[4]


def test_sample_counts_equal_chip_counts():
    dev, _, _ = make_dev()
    x = _x(seed=3)
    counts = list(dev.samples(x, 11, seed=9, counts=(5, 40)))
    raster = chip_encode(x, 11, seed=9)
    for b, spikes in enumerate(_run_raster(dev, raster)):
        dense = np.zeros((11, 1, 60), dtype=np.uint8)
        for t, s in enumerate(spikes):
            np.add.at(dense[t, 0], s, 1)
        assert counts[b].dtype == np.uint8 and counts[b].shape == (40,)
        assert np.array_equal(counts[b], chip_counts(dense, 5, 40)[0])
    assert sum(c.sum() for c in counts) > 0


def test_many_samples_are_pipelined():
    dev, _, link = make_dev(rx_window=512)
    x = _x(n=150, seed=5)
    got = list(dev.samples(iter(list(x)), 4, seed=1))  # a lazy iterable of samples
    assert got == _run_raster(make_dev()[0], chip_encode(x, 4, seed=1))
    assert dev.sample_frames == 150
    assert dev.window_waits > 0  # several in flight, the window (not the host) the limit
    assert link.counters["overruns"] == 0 and link.counters["out_of_order"] == 0
    rt = dev.round_trips
    list(dev.samples(x, 4))
    assert dev.round_trips == rt + 1  # one wait with nothing else to send: the final drain


def test_lost_sample_request_raises_and_link_recovers():
    state = {"n": 0}

    def drop_third_sample(direction, data):
        if direction == "to_device" and any(
                isinstance(b, bytes) and b[0] == Op.SAMPLE.value
                for b in FrameDecoder().feed(data)):
            state["n"] += 1
            if state["n"] == 3:
                return b""
        return data

    dev, _, _ = make_dev(tamper=drop_third_sample)
    with pytest.raises(SampleLostError, match="lost on the way") as e:
        list(dev.samples(_x(n=6), 5))
    assert e.value.samples_done == 2 and e.value.steps_done == 10
    dev.reset_state()
    assert len(list(dev.samples(_x(n=6), 5))) == 6


# --- errors, before anything is sent -------------------------------------------------------------
def test_no_encoders_is_refused_clearly():
    dev, _, _ = make_dev(encoders=False)
    assert dev.encoders is False
    sent = dev.transport.bytes_written
    with pytest.raises(UnsupportedError, match="no on-chip encoders.*chip_encode"):
        dev.samples(_x(), 5)
    assert dev.transport.bytes_written == sent


@pytest.mark.parametrize("kwargs, match", [
    (dict(timesteps=0), "timesteps=0 is out of range: allowed an integer 1..255"),
    (dict(timesteps=256), "timesteps=256 is out of range"),
    (dict(encoder="delta"), "no on-chip form.*delta_encode"),
    (dict(encoder="poisson"), "encoder='poisson' is not valid: allowed rate, latency"),
    (dict(gain=300), "gain=300"),
    (dict(threshold=-1), "threshold=-1"),
    (dict(seed=1 << 32), "seed=4294967296"),
    (dict(counts=(0, 0)), "counts count=0"),
    (dict(counts=5), "counts=5 is not valid"),
])
def test_bad_parameters(kwargs, match):
    dev, _, _ = make_dev()
    args = dict(timesteps=5)
    args.update(kwargs)
    sent = dev.transport.bytes_written
    with pytest.raises(ConfigError, match=match):
        dev.samples(_x(), args.pop("timesteps"), **args)
    assert dev.transport.bytes_written == sent


@pytest.mark.parametrize("sample, match", [
    (np.zeros(33, dtype=np.uint8), "sample 1 has 33 intensities: the chip takes 1..32"),
    (np.zeros(0, dtype=np.uint8), "sample 1 has 0 intensities"),
    (np.full(4, 256), "sample 1: intensities must be integers 0..255"),
    (np.full(4, 0.5), "sample 1: intensities must be integers 0..255"),
    (np.zeros((2, 2)), "sample 1: intensities of shape"),
])
def test_bad_samples_stop_the_stream_cleanly(sample, match):
    dev, _, link = make_dev()
    with pytest.raises(ConfigError, match=match):
        list(dev.samples([np.ones(4, dtype=np.uint8), sample], 3))
    assert dev.sample([1, 2, 3], 3) is not None  # the link is usable afterwards
    assert link.counters["out_of_order"] == 0


def test_more_channels_than_a_frame_holds():
    big = CoreConfig(n_neurons=64, n_inputs=1024)
    link = RefLink(RefCore(), ident_words=ident_words(big, encoders=True), encoders=True)
    dev = Device.in_process(link)
    with pytest.raises(ConfigError, match=f"the chip takes 1..{MAX_SAMPLE_CHANNELS}"):
        dev.sample(np.zeros(MAX_SAMPLE_CHANNELS + 1, dtype=np.uint8), 3)
    assert len(dev.sample(np.ones(MAX_SAMPLE_CHANNELS, dtype=np.uint8), 3)) == 3


def test_chip_refusal_is_a_device_error():
    class Lying(RefLink):  # says encoders in IDENTIFY, answers SAMPLE with UNKNOWN_OP
        def _op_sample(self, op, seq, p):
            self._reply(op, seq, b"", __import__("spikeforge.protocol").protocol.Status.UNKNOWN_OP)

    link = Lying(RefCore(), ident_words=ident_words(CFG, encoders=True), encoders=True)
    dev = Device.in_process(link)
    with pytest.raises(DeviceError, match="SAMPLE: UNKNOWN_OP.*does not execute SAMPLE"):
        dev.sample([1, 2], 3)


# --- ChipBackend: on the chip, or on the host when the chip has no encoders ---------------------
def _net():
    rng = np.random.default_rng(4)
    p = NeuronParams(beta=3900, threshold=120, reset="subtract")
    return Network(
        20,
        [Population("hid", 24, p), Population("out", 6, p)],
        [Projection(INPUT, "hid", rng.integers(-20, 90, (20, 24))),
         Projection("hid", "out", rng.integers(-30, 100, (24, 6)))],
        outputs=["out"],
    )


def _backend(encoders, tamper=None):
    net = _net()
    link = RefLink(GoldenRefCore(net), ident_words=ident_words(CFG, encoders=encoders),
                   encoders=encoders)
    chip = ChipBackend(device=Device.in_process(link, tamper=tamper))
    chip.load(net)
    return chip, net


@pytest.mark.parametrize("encoder", ["rate", "latency"])
def test_backend_paths_give_identical_spikes_and_counts(encoder):
    x = _x(n=15, seed=8)
    kw = dict(gain=24, threshold=2, seed=123)
    golden = GoldenBackend()
    golden.load(_net())
    want = golden.run(chip_encode(x, 20, encoder, **kw))
    outs = _net().output_indices()
    assert want[..., outs].any()
    for encoders in (True, False):
        chip, _ = _backend(encoders)
        spikes = chip.run_encoded(x, 20, encoder, **kw)
        assert chip.encoding_path == ("chip" if encoders else "host")
        assert np.array_equal(spikes[..., outs], want[..., outs])
        tr = chip.device.transport
        sent = tr.bytes_written + tr.bytes_read
        counts = chip.run_encoded(x, 20, encoder, readout="counts", **kw)
        wire = tr.bytes_written + tr.bytes_read - sent
        assert counts.dtype == np.uint8 and counts.shape == (15, 6)
        assert np.array_equal(counts, chip_counts(want, outs[0], 6))
        if encoders:
            assert chip.encoding_readout == "counts"
            # per sample: request 16 + 20 bytes and reply 5 + 6 bytes, COBS and delimiters
            assert wire == 15 * ((4 + 12 + 20 + 2) + (5 + 6 + 2))
        else:
            assert "no on-chip encoders" in chip.encoding_reason
    golden_counts = golden.run_encoded(x, 20, encoder, readout="counts", **kw)
    assert golden.encoding_path == "host" and np.array_equal(golden_counts, counts)


def test_backend_on_chip_required_and_refused():
    chip, _ = _backend(False)
    with pytest.raises(UnsupportedError, match="no on-chip encoders"):
        chip.run_encoded(_x(n=2), 5, on_chip=True)
    chip, _ = _backend(True)
    chip.run_encoded(_x(n=2), 5, on_chip=False)
    assert chip.encoding_path == "host" and chip.encoding_reason == "on_chip=False"
    for bad, match in [(dict(encoder="delta"), "no on-chip form"),
                       (dict(readout="membrane"), "readout='membrane' is not valid"),
                       (dict(intensities=_x(ch=21)), r"shape \(12, 21\), expected"),
                       (dict(timesteps=0), "timesteps=0"),
                       (dict(timesteps=-3), "timesteps=-3 is out of range"),
                       (dict(seed=-1), "seed=-1 is out of range")]:
        args = dict(intensities=_x(), timesteps=5)
        args.update(bad)
        with pytest.raises(ConfigError, match=match):
            chip.run_encoded(**args)


def test_backend_reruns_samples_after_a_lost_reply():
    chip, net = _backend(True, tamper=_corrupt_reply(Op.SAMPLE, {4}))
    x = _x(n=10, seed=2)
    counts = chip.run_encoded(x, 12, readout="counts", seed=4)
    assert chip.reruns == 1
    ref, _ = _backend(False)
    assert np.array_equal(counts, ref.run_encoded(x, 12, readout="counts", seed=4))



def _corrupt_reply(op, which):
    """A tamper that flips a bit in the ``which``-th reply frames of ``op`` (a set)."""
    state = {"n": 0}

    def tamper(direction, data):
        if direction != "to_host":
            return data
        frames = data.split(b"\x00")
        for k, f in enumerate(frames):
            body = list(FrameDecoder().feed(f + b"\x00"))
            if body and isinstance(body[0], bytes) and body[0][0] == op.value:
                state["n"] += 1
                if state["n"] in which:
                    i = len(f) // 2
                    frames[k] = f[:i] + bytes((f[i] ^ 0x08 or 0x18,)) + f[i + 1:]
        return b"\x00".join(frames)

    return tamper


def test_backend_reruns_run_after_a_lost_reply_and_gives_up_after_retries():
    """RUN, as SAMPLE: a lost reply costs a rerun from the sample it hit, same spikes; a link
    that loses every reply ends in StepLostError after ``retries`` reruns in a row."""
    from spikeforge.host.device import StepLostError

    x = _x(n=10, seed=3)
    raster = chip_encode(x, 12, "rate", seed=9)
    ref, _ = _backend(False)
    want = ref.run(raster)
    chip, _ = _backend(False, tamper=_corrupt_reply(Op.RUN, {2}))
    assert np.array_equal(chip.run(raster), want)
    assert chip.reruns == 1
    chip, _ = _backend(False, tamper=_corrupt_reply(Op.RUN, set(range(1, 1000))))
    with pytest.raises(StepLostError, match="times in a row at sample 0") as exc:
        chip.run(raster)
    assert exc.value.steps_done == 0
    assert chip.reruns == chip.device.retries + 1


# --- the command line ----------------------------------------------------------------------------
@pytest.fixture
def no_board(monkeypatch):
    """Opening a board is a test failure: the options must be refused before."""
    from spikeforge.host import backends

    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))

    def refuse(port):
        raise AssertionError(f"a board was opened ({port!r}) before the options were checked")

    for name in list(backends._FACTORIES):
        backends._FACTORIES[name] = refuse


def _one_error_line(capsys, code, *needles):
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("spikeforge: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("argv, needle", [
    (["--encode", "delta", "--on-chip"], "delta coding has no on-chip form"),
    (["--on-chip", "--timesteps", "256"], "--timesteps 256 is out of range for --on-chip: "
                                          "allowed 1..255"),
])
def test_demo_encoding_options_checked_before_the_board(no_board, capsys, argv, needle):
    from spikeforge.cli import main

    _one_error_line(capsys, main(["demo", *argv]), needle)


@pytest.fixture
def small_model(tmp_path):
    from spikeforge.host.compiler import save_network

    path = tmp_path / "model.npz"
    save_network(_net(), str(path))
    return str(path)


@pytest.mark.parametrize("argv, needle", [
    (["--on-chip"], "--on-chip needs --encode rate or --encode latency"),
    (["--timesteps", "5"], "--timesteps needs --encode"),
    (["--encode", "rate"], "--encode rate needs --timesteps T"),
    (["--encode", "delta", "--on-chip", "--timesteps", "5"], "delta coding has no on-chip form"),
    (["--encode", "rate", "--timesteps", "0"], "--timesteps 0 is out of range"),
    (["--encode", "latency", "--timesteps", "300"], "allowed 1..255 (the chip's encoder)"),
    (["--encode", "rate", "--timesteps", "5", "--gain", "256"], "--gain 256 is out of range"),
    (["--encode", "rate", "--timesteps", "5", "--seed", "-1"], "--seed -1 is out of range"),
])
def test_run_encoding_options_are_one_line(no_board, capsys, tmp_path, small_model, argv, needle):
    from spikeforge.cli import main

    np.save(tmp_path / "x.npy", _x(n=3))
    _one_error_line(capsys, main(["run", small_model, str(tmp_path / "x.npy"), *argv]), needle)


@pytest.mark.parametrize("data, needle", [
    (np.zeros((5, 3, 20), dtype=np.uint8), "intensities (n_samples, n_inputs)"),
    (np.full((2, 20), 300), "found 300 (40 such entries"),
    (np.zeros((2, 19), dtype=np.uint8), "the samples have 19 intensities"),
])
def test_run_bad_intensities_are_one_line(no_board, capsys, tmp_path, small_model, data, needle):
    from spikeforge.cli import main

    np.save(tmp_path / "x.npy", data)
    code = main(["run", small_model, str(tmp_path / "x.npy"), "--encode", "rate",
                 "--timesteps", "5", "--on-chip"])
    _one_error_line(capsys, code, needle)


def test_run_npz_without_intensities_names_the_array(no_board, capsys, tmp_path, small_model):
    from spikeforge.cli import main

    np.savez(tmp_path / "x.npz", raster=np.zeros((5, 2, 20), dtype=np.uint8))
    code = main(["run", small_model, str(tmp_path / "x.npz"), "--encode", "rate",
                 "--timesteps", "5"])
    _one_error_line(capsys, code, "no array named 'intensities'", "raster")


def test_run_on_chip_and_on_host_predict_the_same(capsys, tmp_path, small_model, monkeypatch):
    import json

    from spikeforge.cli import main
    from spikeforge.host import backends

    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))
    backends.register_backend("refchip", lambda port: _backend(True)[0])
    x, y = _x(n=8, seed=11), np.arange(8) % 6
    np.savez(tmp_path / "x.npz", intensities=x, labels=y)
    outs = {}
    for port, extra in (("golden", []), ("refchip", []), ("refchip", ["--on-chip"]),
                        ("golden", ["--on-chip"])):
        argv = ["run", small_model, str(tmp_path / "x.npz"), "--port", port, "--json",
                "--encode", "rate", "--timesteps", "30", "--seed", "7", *extra]
        assert main(argv) == 0
        outs[port, bool(extra)] = json.loads(capsys.readouterr().out)
    preds = {k: v["predictions"] for k, v in outs.items()}
    assert len(set(map(tuple, preds.values()))) == 1
    assert outs["refchip", True]["encoding"]["path"] == "chip"
    assert outs["golden", True]["encoding"]["path"] == "host"
    assert "no on-chip encoders" in outs["golden", True]["encoding"]["reason"]
    assert outs["refchip", False]["encoding"]["reason"] == "--on-chip not given"
    assert main(["run", small_model, str(tmp_path / "x.npz"), "--port", "refchip",
                 "--encode", "latency", "--timesteps", "9", "--on-chip"]) == 0
    assert "latency coding, on the chip (SAMPLE" in capsys.readouterr().out


#: the bundled snnTorch model (a NIR graph) on scikit-learn's digits
needs_digits = pytest.mark.needs("nir", "sklearn")


@needs_digits
def test_demo_on_chip_through_the_reference_chip():
    from spikeforge.host.compiler import compile
    from spikeforge.host.demo import load_bundled, run_demo

    cfg = CoreConfig(n_neurons=256, n_inputs=64, synapse_words=8192)
    net = compile(load_bundled()[0], cfg).net
    link = RefLink(GoldenRefCore(net), ident_words=ident_words(cfg, encoders=True),
                   encoders=True, rx_window=2048)
    chip = ChipBackend(device=Device.in_process(link))
    res = run_demo(chip, samples=30, progress=False, on_chip=True)
    assert res["encoding"]["path"] == "chip" and res["encoding"]["readout"] == "counts"
    assert res["identical"] and res["count_agreement"] == 1.0
    assert res["accuracy_chip"] == res["accuracy_golden_chip_encoding"] > 0.8
    assert chip.device.sample_frames == 30
    # 64 intensities and 10 counts a sample: 82 + 17 wire bytes (COBS, CRC, delimiters)
    tr = chip.device.transport
    before = tr.bytes_written, tr.bytes_read
    chip.run_encoded(np.full((5, 64), 200), 25, readout="counts")
    assert (tr.bytes_written - before[0], tr.bytes_read - before[1]) == (5 * 82, 5 * 17)
    res = run_demo(GoldenBackend(), samples=30, progress=False, on_chip=True)
    assert res["encoding"]["path"] == "host" and res["identical"]


@needs_digits
def test_encoding_benchmark_bytes_without_rtl():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "encoding.py"
    spec = importlib.util.spec_from_file_location("bench_encoding", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.bench(samples=3, vboard=False)
    # 64 intensities in, 10 counts back: 82 + 17 bytes with framing and CRC, as computed
    assert res["chip_counts"]["wire_bytes_to_chip"] == res["expected_sample_request_bytes"] == 82
    assert res["chip_counts"]["wire_bytes_to_host"] == res["expected_counts_reply_bytes"] == 17
    assert res["chip_spikes"]["wire_bytes_to_chip"] == 82
    assert res["host_run"]["wire_bytes"] > 5 * res["chip_counts"]["wire_bytes"]
    assert "chip_cycles" not in res["host_run"]


# --- the real gateware: streamed SAMPLE requests on the virtual board ---------------------------
@pytest.fixture(scope="module")
def rtl_chip(verilator_toolchain):
    """A virtual board with a small core and the encoders (the build of test_sample_link.py)."""
    from test_chip import CLK as CHIP_CLK
    from test_chip import CONFIG

    from spikeforge.hw.chip import Chip
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(Chip(CONFIG, CHIP_CLK, encoders=True), name="sample_test") as vb:
        backend = ChipBackend(vb.url, timeout=10.0)
        yield backend
        backend.close()


@pytest.mark.parametrize("encoder", ["rate", "latency"])
def test_streamed_samples_on_the_chip_match_golden(rtl_chip, encoder):
    """Many samples in flight at once on the chip RTL: spikes and counts are the golden model's
    for the ``chip_encode`` raster, and the host path gives the same."""
    from test_chip import _random_network

    net = _random_network(31)
    rtl_chip.load(net)
    assert rtl_chip.encoders
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (120, net.n_inputs))
    kw = dict(gain=40, threshold=10, seed=99)
    golden = GoldenBackend()
    golden.load(net)
    want = golden.run(chip_encode(x, 12, encoder, **kw))
    outs = net.output_indices()
    waits = rtl_chip.device.window_waits
    spikes = rtl_chip.run_encoded(x, 12, encoder, **kw)
    assert rtl_chip.encoding_path == "chip"
    assert rtl_chip.device.window_waits > waits  # the window, not the host, held them back
    assert np.array_equal(spikes[..., outs], want[..., outs]) and want[..., outs].any()
    counts = rtl_chip.run_encoded(x, 12, encoder, readout="counts", **kw)
    assert np.array_equal(counts, golden.run_encoded(x, 12, encoder, readout="counts", **kw))
    host = rtl_chip.run_encoded(x, 12, encoder, readout="counts", on_chip=False, **kw)
    assert rtl_chip.encoding_path == "host" and np.array_equal(host, counts)
