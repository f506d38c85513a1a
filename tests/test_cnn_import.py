# CNNs exported by Sinabs 3.1.3 and snnTorch 1.0.0 (tests/data/nir/{sinabs_nmnist_cnn,
# sinabs_cnn_lif,snntorch_cnn}.nir, written by tests/data/make_cnn_fixtures.py; neither framework
# is needed here): each imports with the settings of its sidecar JSON, its float golden model
# gives the spikes the framework itself gave (the reference .npz beside the graph, every layer,
# every step), and it quantizes to 8-bit and wide integers with the per-layer spike agreement
# of benchmarks/conv_agreement.py (measured floors).  The event and image encoders that feed
# such a graph are tested here too.
import os
import warnings

import numpy as np
import pytest

from spikeforge.errors import ConfigError
from spikeforge.host.coding import encode_events, encode_images
from spikeforge.network import Conv, Conv2d
from spikeforge.sim.golden import GoldenChip

pytest.importorskip("nir")

DATA = os.path.join(os.path.dirname(__file__), "data", "nir")
GRAPHS = ["sinabs_nmnist_cnn", "sinabs_cnn_lif", "snntorch_cnn"]


def _path(name, ext=".nir"):
    return os.path.join(DATA, name + ext)


def _net(name, settings=None):
    from spikeforge.host.nir_import import from_nir

    return from_nir(_path(name), settings)


def _reference(name):
    ref = np.load(_path(name, "_reference.npz"))
    raster = np.unpackbits(ref["raster"], axis=-1, count=int(ref["raster_shape"][-1]))
    spikes = np.unpackbits(ref["spikes"], axis=-1, count=int(ref["spikes_shape"][-1]))
    return raster.astype(np.uint8), spikes.astype(bool), ref


def _per_layer(net, spikes):
    return {p.name: spikes[..., net.base(p.name):net.base(p.name) + p.size]
            for p in net.populations}


# (src, dst, kind, src shape, dst shape, kernel size, stride) per projection, in the network's
# order; a dense projection has (n_src, n_dst) and no kernel
STRUCTURE = {
    "sinabs_nmnist_cnn": [
        ("input", "1", "Conv2d", (2, 34, 34), (16, 16, 16), (5, 5), (2, 2)),
        ("1", "3", "Conv2d", (16, 16, 16), (16, 16, 16), (3, 3), (1, 1)),
        # SumPool2d 2 folded into Conv2d 16->8 3x3 pad 1: 6x6, stride 2
        ("3", "6", "Conv2d", (16, 16, 16), (8, 8, 8), (6, 6), (2, 2)),
        ("6", "10", "ndarray", 512, 256, None, None),  # SumPool2d 2, Flatten, Linear 128->256
        ("10", "12", "ndarray", 256, 10, None, None),
    ],
    "sinabs_cnn_lif": [
        ("input", "1", "Conv2d", (2, 16, 16), (8, 16, 16), (3, 3), (1, 1)),
        ("1", "4", "Conv2d", (8, 16, 16), (8, 4, 4), (6, 6), (4, 4)),  # pool 2 + stride-2 conv
        ("4", "8", "ndarray", 128, 10, None, None),  # SumPool2d 2, Flatten, Linear 32->10
    ],
    "snntorch_cnn": [
        ("input", "1", "Conv2d", (2, 34, 34), (8, 16, 16), (5, 5), (2, 2)),
        ("1", "4", "Conv2d", (8, 16, 16), (8, 8, 8), (6, 6), (2, 2)),  # AvgPool2d 2 folded
        ("4", "8", "ndarray", 512, 10, None, None),  # AvgPool2d 2, Flatten, Linear 128->10
    ],
}


@pytest.mark.parametrize("name", GRAPHS)
def test_exported_cnn_imports_with_its_settings(name):
    from spikeforge.host.nir_import import NIRTypeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", NIRTypeWarning)  # every graph passes nir's type check
        net = _net(name)
    got = []
    for p in net.projections:
        w = p.weights
        if isinstance(w, Conv):
            got.append((p.src, p.dst, type(w).__name__, w.src_shape, w.dst_shape,
                        w.kernel_size, w.stride))
        else:
            got.append((p.src, p.dst, type(w).__name__, *w.shape, None, None))
    assert sorted(got) == sorted(STRUCTURE[name])
    _, _, ref = _reference(name)
    assert [p.name for p in net.populations] == list(ref["layers"])
    assert [p.size for p in net.populations] == list(ref["sizes"])
    for p in net.populations:  # the sidecar's reset; Sinabs' IAF: subtract, delayed a step
        assert p.params.reset.name == "SUBTRACT"
        assert p.params.reset_delay == (name != "sinabs_cnn_lif" or p.name != "1")


def test_nmnist_cnn_is_the_reference_shape():
    net = _net("sinabs_nmnist_cnn")
    assert net.n_inputs == 2 * 34 * 34
    assert [p.size for p in net.populations] == [4096, 4096, 512, 256, 10]
    assert net.n_neurons == 8970
    first = net.projections[0].weights
    assert isinstance(first, Conv2d) and first.padding == ((1, 1), (1, 1))
    for p in net.populations:  # IAF: no leak, threshold 1, no bias (the convs have none)
        assert p.params.leak.name == "NONE"
        np.testing.assert_array_equal(p.params.threshold, 1.0)
        np.testing.assert_array_equal(p.params.bias, 0.0)


@pytest.mark.parametrize("name", GRAPHS)
def test_float_golden_gives_the_frameworks_spikes(name):
    # the framework's own float64 run (Sinabs' IAFSqueeze / LIFSqueeze with SingleSpike,
    # snnTorch's Leaky), recorded at generation time: every layer, every step, every entry
    raster, ref, _ = _reference(name)
    net = _net(name)
    got = GoldenChip(net, "float", batch=raster.shape[1], dtype=np.float64).run(raster)["spikes"]
    assert got.shape == ref.shape
    for pop, s in _per_layer(net, ref).items():  # every layer spikes, at a moderate rate
        assert 0.05 < s.mean() < 0.3, (pop, s.mean())
    np.testing.assert_array_equal(got, ref)


def test_sinabs_iaf_is_the_delayed_subtract_reset_not_the_immediate_one():
    # a Sinabs IAF left above threshold after its one subtraction fires again in the next step;
    # the chip's immediate subtract reset (snnTorch's code) owes that reset and subtracts it
    # again, so its spikes differ from Sinabs' (make_cnn_fixtures.py docstring)
    from spikeforge.host.nir_import import Settings

    raster, ref, _ = _reference("sinabs_nmnist_cnn")
    net = _net("sinabs_nmnist_cnn", Settings(dt=1.0, reset="subtract", reset_delay=False))
    got = GoldenChip(net, "float", batch=raster.shape[1], dtype=np.float64).run(raster)["spikes"]
    agree = {k: float(np.mean(got_l == ref_l)) for (k, got_l), ref_l in
             zip(_per_layer(net, got).items(), _per_layer(net, ref).values(), strict=True)}
    assert min(agree.values()) < 0.95  # measured 0.886 (the 256-neuron layer)
    assert agree["1"] > 0.99  # measured 0.9985: the first layer rarely passes twice the threshold


def _small_raster(n_inputs, steps=30, batch=4, seed=3, rate=0.1):
    rng = np.random.default_rng(seed)
    return (rng.random((steps, batch, n_inputs)) < rate).astype(np.uint8)


# the lowest per-layer agreement measured on this raster (30 steps x 4 samples, calibration on
# another such raster), minus a margin; benchmarks/conv_agreement.py has the full table
# (measured: 0.909, 0.974, 0.957, 0.998, 0.923, 0.985; the wide LIF and snnTorch CNNs kept
# 0.992 and 0.963 when the wide format's decay had 12 fraction bits, below their floors now)
FLOORS = {
    ("sinabs_nmnist_cnn", "8-bit"): 0.88, ("sinabs_nmnist_cnn", "WIDE"): 0.96,
    ("sinabs_cnn_lif", "8-bit"): 0.93, ("sinabs_cnn_lif", "WIDE"): 0.995,
    ("snntorch_cnn", "8-bit"): 0.9, ("snntorch_cnn", "WIDE"): 0.975,
}


def _benchmark():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "conv_agreement.py")
    spec = importlib.util.spec_from_file_location("conv_agreement", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name, fmt_name", sorted(FLOORS))
def test_exported_cnn_quantizes_with_per_layer_agreement(name, fmt_name):
    from spikeforge.host.quantize import QuantizationWarning, compare, quantize
    from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT

    fmt = {"8-bit": DEFAULT_FORMAT, "WIDE": WIDE_FORMAT}[fmt_name]
    net = _net(name)
    cal = _small_raster(net.n_inputs, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        q = quantize(net, fmt, calibrate=cal)
    for p, fp in zip(q.net.projections, net.projections, strict=True):
        assert isinstance(p.weights, Conv) == isinstance(fp.weights, Conv)  # kernels stay shared
    rep = compare(q, _small_raster(net.n_inputs), min_agreement=None)
    assert set(rep.agreement) == {p.name for p in net.populations}
    for pop, agree in rep.agreement.items():
        assert agree >= FLOORS[name, fmt_name], (pop, agree)
        assert rep.rates_int[pop] > 0.02, pop  # the integer network spikes in every layer
    first = net.populations[0].name  # the first layer sees the raster itself
    assert rep.agreement[first] >= (0.98 if fmt_name == "8-bit" else 0.998)
    if fmt_name == "WIDE":
        # each layer alone (fed the float network's spikes of its source) keeps 99.5 %: what
        # the network loses further down is flips passed on through non-leaky layers
        from spikeforge.host.quantize import _run

        x = _small_raster(net.n_inputs)
        alone = _benchmark().alone(q, x, _run(q.float_net, "float", x, fmt)[0])
        assert min(alone.values()) >= 0.995, alone


def test_cnn_fixtures_are_what_the_script_writes(tmp_path):
    # only where Sinabs and snnTorch are installed (not needed by the tests above): the script's
    # graphs hold the committed parameters and its reference runs the committed spikes
    pytest.importorskip("sinabs")
    pytest.importorskip("snntorch")
    import importlib.util

    import nir

    spec = importlib.util.spec_from_file_location(
        "make_cnn_fixtures", os.path.join(DATA, "..", "make_cnn_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--out", str(tmp_path)])
    for name in GRAPHS:
        stored, fresh = nir.read(_path(name)), nir.read(str(tmp_path / f"{name}.nir"))
        assert sorted(stored.nodes) == sorted(fresh.nodes)
        for k, node in fresh.nodes.items():
            for attr in ("weight", "bias", "tau", "r", "v_threshold", "kernel_size", "stride",
                         "padding"):
                if hasattr(node, attr):
                    np.testing.assert_array_equal(getattr(stored.nodes[k], attr),
                                                  getattr(node, attr), err_msg=f"{k}.{attr}")
        for ext in (".json", "_reference.npz"):
            a, b = _path(name, ext), str(tmp_path / f"{name}{ext}")
            if ext == ".json":
                assert open(a).read() == open(b).read()
            else:
                ra, rb = np.load(a), np.load(b)
                for key in ra.files:
                    np.testing.assert_array_equal(ra[key], rb[key])


# --- encoders: event streams and images -> the (C, H, W) input raster ---------------------------
TONIC_DTYPE = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i2")])  # N-MNIST's


def _events(n, seed, size=(34, 34, 2), t_max=30_000):
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=TONIC_DTYPE)
    ev["x"] = rng.integers(0, size[0], n)
    ev["y"] = rng.integers(0, size[1], n)
    ev["p"] = rng.integers(0, size[2], n)
    ev["t"] = np.sort(rng.integers(0, t_max, n))
    return ev


def _frames(ev, size, window, steps, t0):
    """tonic's ToFrame by hand: (T, P, H, W) event counts, then at most one spike per pixel."""
    w, h, p = size
    frames = np.zeros((steps, p, h, w), dtype=np.int64)
    k = (ev["t"] - t0) // window
    keep = (k >= 0) & (k < steps)
    np.add.at(frames, (k[keep], ev["p"][keep], ev["y"][keep], ev["x"][keep]), 1)
    return (frames > 0).reshape(steps, -1)


def test_encode_events_bins_channel_first():
    size = (34, 34, 2)
    batch = [_events(3000, 1), _events(500, 2)]
    r = encode_events(batch, size, 1000, steps=25, t_start=0, n_inputs=2 * 34 * 34)
    assert r.shape == (25, 2, 2312) and r.dtype == np.uint8
    for b, ev in enumerate(batch):
        np.testing.assert_array_equal(r[:, b], _frames(ev, size, 1000, 25, 0))
    # one event: (x, y, p) = (5, 7, 1) at t = 2,500 -> step 2, channel (1*34 + 7)*34 + 5
    one = np.array([(5, 7, 2500, 1)], dtype=TONIC_DTYPE)
    r = encode_events(one, size, 1000, t_start=0)
    assert r.shape == (3, 1, 2312) and np.argwhere(r).tolist() == [[2, 0, (34 + 7) * 34 + 5]]


def test_encode_events_defaults_and_inputs():
    ev = _events(200, 3, size=(8, 6, 2))
    ev["t"] += 1_000_000  # absolute timestamps: step 0 starts at the first event by default
    r = encode_events(ev, (8, 6, 2), 1000)
    assert r.shape[0] == (ev["t"].max() - ev["t"].min()) // 1000 + 1
    np.testing.assert_array_equal(r[:, 0], _frames(ev, (8, 6, 2), 1000, r.shape[0],
                                                   ev["t"].min()))
    # a dict of arrays, bool polarity, float times in seconds
    d = {"x": ev["x"], "y": ev["y"], "p": ev["p"].astype(bool), "t": ev["t"] * 1e-6}
    np.testing.assert_array_equal(encode_events(d, (8, 6, 2), 1e-3, steps=r.shape[0]), r)
    # repeated events of one pixel in one step are one spike; events after the last step drop
    two = np.array([(1, 1, 0, 0), (1, 1, 10, 0), (2, 1, 5000, 0)], dtype=TONIC_DTYPE)
    r = encode_events(two, (4, 4, 1), 1000, steps=2)
    assert r.sum() == 1 and r[0, 0, 1 * 4 + 1] == 1


@pytest.mark.parametrize("args, kw, needle", [
    ((np.array([(34, 0, 0, 0)], dtype=TONIC_DTYPE), (34, 34, 2), 1000), {},
     "x=34 is outside the sensor: allowed 0..33"),
    ((np.array([(0, 0, 0, 0), (0, 40, 7, 1)], dtype=TONIC_DTYPE), (34, 34, 2), 1000), {},
     "sample 0, event 1 (x=0, y=40, p=1, t=7): y=40 is outside the sensor"),
    ((np.array([(0, 0, 0, 2)], dtype=TONIC_DTYPE), (34, 34, 2), 1000), {},
     "p=2 is outside the sensor: allowed 0..1"),
    ((np.array([(0, 0, 0, -1)], dtype=TONIC_DTYPE), (34, 34, 2), 1000), {},
     "p=-1 is outside the sensor: allowed 0..1 (sensor_size (W, H, P) = (34, 34, 2); 1 such "
     "event(s)); map polarities -1/+1 to 0/1 first"),
    ((np.zeros(3, dtype=[("x", "i2"), ("y", "i2"), ("t", "i8")]), (34, 34, 2), 1000), {},
     "has no field p"),
    (({"x": [0.5], "y": [0], "p": [0], "t": [0]}, (34, 34, 2), 1000), {},
     "x=0.5 is not a whole number"),
    (({"x": [0, 1], "y": [0], "p": [0], "t": [0]}, (34, 34, 2), 1000), {},
     "different lengths"),
    ((np.zeros((5, 4)), (34, 34, 2), 1000), {}, "expected a structured array"),
    ((_events(5, 0), (34, 34), 1000), {}, "sensor_size=(34, 34) is not valid"),
    ((_events(5, 0), (34, 34, 2), 0), {}, "time_window=0 is out of range"),
    ((_events(5, 0), (34, 34, 2), 1000), {"steps": 0}, "steps=0 is out of range"),
    ((_events(5, 0), (34, 34, 2), 1000), {"n_inputs": 2048},
     "gives 2312 input channels (P * H * W), but the network has n_inputs=2048"),
    (([], (34, 34, 2), 1000), {}, "the batch is empty"),
    ((np.zeros(0, dtype=TONIC_DTYPE), (34, 34, 2), 1000), {}, "pass steps"),
])
def test_encode_events_refuses(args, kw, needle):
    with pytest.raises(ConfigError) as e:
        encode_events(*args, **kw)
    assert needle in str(e.value), str(e.value)


def test_encode_images_layouts():
    rng = np.random.default_rng(5)
    imgs = rng.random((3, 2, 5, 4))
    r = encode_images(imgs, 20, seed=7)
    assert r.shape == (20, 3, 40)
    # channel-first flattening, then rate_encode's draws (same seed: same raster)
    from spikeforge.host.coding import latency_encode, rate_encode

    np.testing.assert_array_equal(r, rate_encode(imgs.reshape(3, -1), 20, seed=7))
    np.testing.assert_array_equal(encode_images(imgs.transpose(0, 2, 3, 1), 20, seed=7,
                                                layout="NHWC"), r)
    np.testing.assert_array_equal(encode_images(imgs, 9, "latency"),
                                  latency_encode(imgs.reshape(3, -1), 9))
    # (N, H, W): one channel; one image with in_shape
    assert encode_images(imgs[:, 0], 4).shape == (4, 3, 20)
    one = encode_images(imgs[0], 20, seed=7, in_shape=(2, 5, 4))
    assert one.shape == (20, 1, 40)
    assert encode_images(imgs[0, 0], 4, in_shape=(1, 5, 4)).shape == (4, 1, 20)
    assert encode_images(imgs * 255, 5, x_max=255, in_shape=(2, 5, 4)).shape == (5, 3, 40)


@pytest.mark.parametrize("args, kw, needle", [
    ((np.zeros((3, 2, 5, 4)), 5), {"in_shape": (2, 4, 5)},
     "images are (2, 5, 4) (C, H, W) after layout 'NCHW', the network's input is (2, 4, 5)"),
    ((np.zeros((5, 4)), 5), {}, "expected (N, C, H, W) or (N, H, W)"),
    ((np.zeros((1, 1, 2, 5, 4)), 5), {}, "expected (N, C, H, W)"),
    ((np.zeros((0, 2, 5, 4)), 5), {}, "an empty batch"),
    ((np.zeros((3, 2, 5, 4)), 5), {"layout": "CHW"}, "layout='CHW' is not valid"),
    ((np.zeros((3, 2, 5, 4)), 5, "delta"), {}, "code='delta' is not valid"),
    ((np.full((3, 2, 5, 4), 2.0), 5), {}, "intensity 2.0 is out of range"),
    ((np.zeros((3, 2, 5, 4)), 0), {}, "timesteps=0"),
    ((np.zeros((3, 2, 5, 4)), 5), {"in_shape": (2, 5)}, "in_shape=(2, 5) is not valid"),
])
def test_encode_images_refuses(args, kw, needle):
    with pytest.raises(ConfigError) as e:
        encode_images(*args, **kw)
    assert needle in str(e.value), str(e.value)


def test_encoded_events_run_the_nmnist_cnn():
    # the encoder's raster is the graph's input: N-MNIST-sized events through the float model
    net = _net("sinabs_nmnist_cnn")
    batch = [_events(6000, 10 + k) for k in range(2)]
    raster = encode_events(batch, (34, 34, 2), 1000, steps=20, t_start=0, n_inputs=net.n_inputs)
    out = GoldenChip(net, "float", batch=2).run(raster)["spikes"]
    assert out.shape == (20, 2, net.n_neurons) and out.sum() > 0
