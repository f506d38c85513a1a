# Weight-shared convolution and pooling (docs/network.md, "Convolution and pooling"):
# Conv1d / Conv2d / SumPool2d / AvgPool2d unroll exactly (dense() against a plain NumPy
# reference, and against torch when it is installed), the golden model runs them, the NIR
# importer maps Conv1d / Conv2d / SumPool2d / AvgPool2d / Flatten (tests/data/nir/conv_*.nir,
# written by tests/data/make_conv_fixtures.py), the float golden model of the fixture CNNs gives
# the spikes a PyTorch evaluation of the NIR graph gives, and a quantized CNN fits a chip
# (unrolled: the image builder is unchanged).
import os
import warnings

import numpy as np
import pytest

from spikeforge.errors import ConfigError
from spikeforge.network import (
    AvgPool2d,
    Conv,
    Conv1d,
    Conv2d,
    Network,
    NeuronParams,
    Population,
    Projection,
    SumPool2d,
)
from spikeforge.sim.golden import GoldenChip

DATA = os.path.join(os.path.dirname(__file__), "data", "nir")
CONV_FIXTURES = ["conv_if", "conv_lif_avg", "conv_1d"]


# --- a plain NumPy reference -------------------------------------------------------------------
def ref_conv(x, kernel, stride, pads, dilation, groups):
    """Direct loops: ``x`` (C_in, *spatial), pads ((before, after), ...) -> (C_out, *out)."""
    nd = x.ndim - 1
    xp = np.pad(x, [(0, 0), *pads])
    c_out, c_in_g = kernel.shape[:2]
    ks = kernel.shape[2:]
    out_shape = [(xp.shape[1 + j] - dilation[j] * (ks[j] - 1) - 1) // stride[j] + 1
                 for j in range(nd)]
    out = np.zeros((c_out, *out_shape))
    per_group = c_out // groups
    for co in range(c_out):
        g = co // per_group
        for o in np.ndindex(*out_shape):
            acc = 0.0
            for cig in range(c_in_g):
                for k in np.ndindex(*ks):
                    pos = tuple(o[j] * stride[j] + k[j] * dilation[j] for j in range(nd))
                    acc += kernel[(co, cig, *k)] * xp[(g * c_in_g + cig, *pos)]
            out[(co, *o)] = acc
    return out


def _tuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _pads(padding, nd, ks, dilation):
    if padding == "valid":
        return ((0, 0),) * nd
    if padding == "same":
        tot = [d * (k - 1) for d, k in zip(dilation, ks, strict=True)]
        return tuple((t // 2, t - t // 2) for t in tot)
    return tuple((p, p) for p in _tuple(padding, nd))


CONV2D_CASES = [
    # c_in, c_out, kernel, in_shape, stride, padding, dilation, groups
    (1, 4, (3, 3), (8, 8), 1, 1, 1, 1),
    (2, 3, (3, 2), (7, 9), (2, 1), (1, 0), 1, 1),
    (4, 6, (3, 3), (9, 8), 2, 2, (2, 1), 2),
    (2, 4, (4, 4), (6, 6), 1, "same", 1, 2),  # even kernel: 1 before, 2 after
    (3, 3, (3, 3), (9, 9), 1, "same", 2, 3),  # depthwise, dilated
    (3, 2, (5, 3), (8, 7), 1, "valid", 1, 1),
    (2, 16, (5, 5), (34, 34), 2, 0, 1, 1),  # the N-MNIST first layer
]


def _ids(cases):
    return [f"{c[0]}to{c[1]}-k{c[2]}-s{c[4]}-p{c[5]}-d{c[6]}-g{c[7]}" for c in cases]


@pytest.mark.parametrize("c_in, c_out, ks, shape, stride, padding, dilation, groups",
                         CONV2D_CASES, ids=_ids(CONV2D_CASES))
def test_conv2d_dense_equals_numpy_reference(c_in, c_out, ks, shape, stride, padding, dilation,
                                             groups):
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((c_out, c_in // groups, *ks))
    conv = Conv2d(kernel, shape, stride, padding, dilation, groups)
    x = rng.standard_normal((c_in, *shape))
    ref = ref_conv(x, kernel, _tuple(stride, 2), _pads(padding, 2, ks, _tuple(dilation, 2)),
                   _tuple(dilation, 2), groups)
    assert conv.dst_shape == ref.shape
    w = conv.dense()
    assert w.shape == (c_in * np.prod(shape), ref.size)
    np.testing.assert_allclose(x.reshape(-1) @ w, ref.reshape(-1), atol=1e-10)
    np.testing.assert_allclose(conv.apply(x.reshape(1, -1))[0], ref.reshape(-1), atol=1e-10)
    # counts: the kernel's entries are the distinct weights; every non-zero of the unrolled
    # matrix is one synapse (a random kernel has no zero entry)
    assert conv.n_weights == kernel.size
    assert conv.n_synapses == np.count_nonzero(w)
    sp = conv.to_sparse()
    assert len(sp.rows) == conv.n_synapses


@pytest.mark.needs("torch")
@pytest.mark.parametrize("c_in, c_out, ks, shape, stride, padding, dilation, groups",
                         CONV2D_CASES, ids=_ids(CONV2D_CASES))
def test_conv2d_dense_equals_torch(c_in, c_out, ks, shape, stride, padding, dilation, groups):
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((c_out, c_in // groups, *ks))
    bias = rng.standard_normal(c_out)
    conv = Conv2d(kernel, shape, stride, padding, dilation, groups)
    x = rng.standard_normal((3, c_in, *shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: 'same' with an even kernel
        ref = F.conv2d(torch.tensor(x), torch.tensor(kernel), torch.tensor(bias), stride=stride,
                       padding=padding, dilation=dilation, groups=groups).numpy()
    assert ref.shape[1:] == conv.dst_shape
    # the bias of a NIR Conv is one value per output channel, repeated over its positions
    got = x.reshape(3, -1) @ conv.dense() + np.repeat(bias, np.prod(conv.out_shape))
    np.testing.assert_allclose(got, ref.reshape(3, -1), atol=1e-10)


CONV1D_CASES = [
    (2, 3, 3, 16, 2, 1, 2, 1),
    (4, 4, 2, 10, 1, "same", 1, 4),
    (1, 2, 5, 9, 3, "valid", 1, 1),
]


@pytest.mark.parametrize("c_in, c_out, k, n, stride, padding, dilation, groups", CONV1D_CASES)
def test_conv1d_dense_equals_references(c_in, c_out, k, n, stride, padding, dilation, groups):
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((c_out, c_in // groups, k))
    conv = Conv1d(kernel, n, stride, padding, dilation, groups)
    x = rng.standard_normal((c_in, n))
    ref = ref_conv(x, kernel, (stride,), _pads(padding, 1, (k,), (dilation,)), (dilation,),
                   groups)
    assert conv.dst_shape == ref.shape
    np.testing.assert_allclose(x.reshape(-1) @ conv.dense(), ref.reshape(-1), atol=1e-10)
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = F.conv1d(torch.tensor(x[None]), torch.tensor(kernel), stride=stride, padding=padding,
                     dilation=dilation, groups=groups).numpy()[0]
    np.testing.assert_allclose(t, ref, atol=1e-10)


POOL_CASES = [((2, 2), None, 0, (8, 8)), ((3, 3), (2, 2), 1, (7, 9)), ((2, 3), (1, 2), 0, (5, 6))]


@pytest.mark.parametrize("ks, stride, padding, shape", POOL_CASES)
@pytest.mark.parametrize("cls", [SumPool2d, AvgPool2d])
def test_pooling_dense_equals_references(cls, ks, stride, padding, shape):
    rng = np.random.default_rng(4)
    c = 3
    pool = cls(c, ks, shape, stride, padding)
    x = rng.standard_normal((c, *shape))
    st = ks if stride is None else stride
    ones = np.ones((c, 1, *ks))
    if cls is AvgPool2d:  # sum x 1 / (kh * kw), padded zeros counted (count_include_pad)
        ones = ones / (ks[0] * ks[1])
    ref = ref_conv(x, ones, st, _pads(padding, 2, ks, (1, 1)), (1, 1), c)
    assert pool.dst_shape == ref.shape
    np.testing.assert_allclose(x.reshape(-1) @ pool.dense(), ref.reshape(-1), atol=1e-12)
    assert pool.n_weights == 1
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return
    t = F.avg_pool2d(torch.tensor(x[None]), ks, st, padding,
                     divisor_override=1 if cls is SumPool2d else None).numpy()[0]
    np.testing.assert_allclose(t, ref, atol=1e-12)


@pytest.mark.parametrize("make, needle", [
    (lambda: Conv2d(np.ones((2, 3, 3)), (4, 4)), "kernel of shape (2, 3, 3)"),
    (lambda: Conv1d(np.ones((2, 1, 3, 3)), 8), "kernel of shape"),
    (lambda: Conv2d(np.ones((3, 1, 3, 3)), (8, 8), groups=2), "do not split into groups=2"),
    (lambda: Conv2d(np.ones((2, 1, 3, 3)), (8, 8), stride=2, padding="same"), "needs stride 1"),
    (lambda: Conv2d(np.ones((2, 1, 3, 3)), (8, 8), padding="full"), "padding='full'"),
    (lambda: Conv2d(np.ones((2, 1, 5, 5)), (3, 3)), "larger than the padded input"),
    (lambda: Conv2d(np.ones((2, 1, 3, 3)), (8, 8), stride=0), "stride=0"),
    (lambda: Conv2d(np.ones((2, 1, 3, 3)), (8, 8), padding=-1), "padding=-1"),
    (lambda: Conv2d(np.ones((2, 1, 3, 3)), (8, 8), dilation=(1, 2, 3)), "dilation=(1, 2, 3)"),
    (lambda: Conv2d(np.full((2, 1, 3, 3), np.nan), (8, 8)), "finite"),
    (lambda: Conv2d(np.ones((2, 1, 3, 3)), (8, 8), in_channels=2), "the source has 2 channels"),
    (lambda: SumPool2d(0, 2, (4, 4)), "channels=0"),
])
def test_invalid_convolutions_are_refused(make, needle):
    with pytest.raises(ConfigError) as e:
        make()
    assert needle in str(e.value)


def test_a_projection_checks_the_convolution_against_its_populations():
    conv = Conv2d(np.ones((2, 1, 3, 3)), (4, 4), padding=1)  # 16 -> 32
    net = Network(16, [Population("a", 30)], [Projection("input", "a", conv)])
    with pytest.raises(ConfigError) as e:
        net.dense_weights(net.projections[0])
    assert "input->a" in str(e.value) and "(16, 30)" in str(e.value)


def _conv_net(dense=False):
    rng = np.random.default_rng(5)
    c1 = Conv2d(np.round(rng.uniform(-0.3, 0.8, (4, 2, 3, 3)) * 16) / 16, (10, 10), 1, 1)
    pool = SumPool2d(4, 2, (10, 10))
    c2 = Conv2d(np.round(rng.uniform(-0.3, 0.5, (3, 4, 3, 3)) * 16) / 16, (5, 5), 2, 1)
    ws = [c1, pool, c2]
    if dense:
        ws = [w.dense() for w in ws]
    prm = NeuronParams(leak="none", threshold=1.0, reset="subtract")
    return Network(
        200, [Population("c1", 400, prm), Population("p", 100, prm), Population("c2", 27, prm)],
        [Projection("input", "c1", ws[0]), Projection("c1", "p", ws[1]),
         Projection("p", "c2", ws[2])])


@pytest.mark.parametrize("arithmetic", ["float", "int"])
def test_golden_runs_a_conv_network_as_its_unrolled_weights(arithmetic):
    net, ref = _conv_net(), _conv_net(dense=True)
    if arithmetic == "int":  # integer kernels: scale by 16 (weights become integers)
        for n in (net, ref):
            for p in n.populations:
                p.params = NeuronParams(leak="none", threshold=16, reset="subtract")
            for p in n.projections:
                w = p.weights
                p.weights = (w.with_kernel((w.kernel * 16).astype(np.int64))
                             if isinstance(w, Conv) else (w * 16).astype(np.int64))
    raster = (np.random.default_rng(6).random((25, 3, 200)) < 0.3).astype(np.uint8)
    a = GoldenChip(net, arithmetic, batch=3).run(raster)
    b = GoldenChip(ref, arithmetic, batch=3).run(raster)
    assert a["spikes"].sum() > 100
    np.testing.assert_array_equal(a["spikes"], b["spikes"])


# --- pooling folded into the next convolution (nir_import) ------------------------------------
@pytest.mark.parametrize("pk, cin, cout, ck, stride, padding, dilation, groups, shape", [
    (2, 4, 4, 3, 1, 0, 1, 1, (8, 8)),
    (2, 4, 6, 3, 2, 1, 1, 2, (8, 12)),
    (3, 2, 2, 2, 1, (1, 0), 2, 1, (9, 9)),
    (2, 2, 3, 4, 1, "same", 1, 1, (8, 8)),
])
@pytest.mark.parametrize("cls", [SumPool2d, AvgPool2d])
def test_pool_then_conv_folds_into_one_strided_conv(cls, pk, cin, cout, ck, stride, padding,
                                                     dilation, groups, shape):
    from spikeforge.host.nir_import import _fold_pool_conv

    rng = np.random.default_rng(7)
    pool = cls(cin, pk, shape)
    conv = Conv2d(rng.standard_normal((cout, cin // groups, ck, ck)), pool.out_shape, stride,
                  padding, dilation, groups)
    folded = _fold_pool_conv(pool, conv)
    assert isinstance(folded, Conv2d) and folded.stride == tuple(s * pk for s in conv.stride)
    assert folded.dst_shape == conv.dst_shape
    np.testing.assert_allclose(folded.dense(), pool.dense() @ conv.dense(), atol=1e-12)


@pytest.mark.parametrize("shape", [(9, 9), (17, 16), (11, 8)])
def test_pool_that_drops_a_remainder_folds_with_an_extent(shape):
    from spikeforge.host.nir_import import _fold_pool_conv

    rng = np.random.default_rng(11)
    pool = SumPool2d(2, 2, shape)  # floor: the last odd row / column is dropped
    conv = Conv2d(rng.standard_normal((3, 2, 3, 3)), pool.out_shape, padding=1)
    folded = _fold_pool_conv(pool, conv)
    assert folded.extent == tuple(2 * o for o in pool.out_shape)
    np.testing.assert_allclose(folded.dense(), pool.dense() @ conv.dense(), atol=1e-12)
    x = rng.standard_normal((2, folded.n_src))
    np.testing.assert_allclose(folded.apply(x), x @ folded.dense(), atol=1e-12)


def test_extent_is_a_crop():
    rng = np.random.default_rng(12)
    kernel = rng.standard_normal((2, 1, 3, 3))
    x = rng.standard_normal((1, 7, 9))
    conv = Conv2d(kernel, (7, 9), 2, 1, extent=(6, 8))
    ref = ref_conv(x[:, :6, :8], kernel, (2, 2), ((1, 1), (1, 1)), (1, 1), 1)
    assert conv.dst_shape == ref.shape
    np.testing.assert_allclose(x.reshape(-1) @ conv.dense(), ref.reshape(-1), atol=1e-12)
    with pytest.raises(ConfigError, match="extent"):
        Conv2d(kernel, (7, 9), extent=(8, 8))


# --- NIR CNNs ---------------------------------------------------------------------------------
def _read(name):
    from spikeforge.host.nir_import import NIRTypeWarning, from_nir, read_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRTypeWarning)
        graph, _ = read_nir(os.path.join(DATA, name + ".nir"))
        net = from_nir(os.path.join(DATA, name + ".nir"))
    return graph, net


def test_conv_fixtures_are_what_the_script_writes(tmp_path):
    nir = pytest.importorskip("nir")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_conv_fixtures", os.path.join(DATA, "..", "make_conv_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, graph in mod.build().items():
        stored = nir.read(os.path.join(DATA, name), type_check=False)
        assert sorted(stored.nodes) == sorted(graph.nodes)
        for k, node in graph.nodes.items():
            for attr in ("weight", "bias", "kernel_size"):
                if hasattr(node, attr):
                    np.testing.assert_array_equal(getattr(stored.nodes[k], attr),
                                                  getattr(node, attr))


@pytest.mark.parametrize("name, projections", [
    ("conv_if", [("input", "if1", "Conv2d", (1, 8, 8), (4, 8, 8)),
                 ("if1", "if2", "Conv2d", (4, 8, 8), (4, 2, 2)),  # SumPool2d folded in
                 ("if2", "if3", "ndarray", 16, 10)]),
    ("conv_lif_avg", [("input", "lif1", "Conv2d", (2, 6, 6), (4, 6, 6)),
                      ("lif1", "lif2", "ndarray", 144, 5)]),  # AvgPool2d, Flatten, Affine
    ("conv_1d", [("input", "if1", "Conv1d", (2, 16), (3, 7)),
                 ("if1", "if2", "ndarray", 21, 4)]),
])
def test_nir_cnn_imports(name, projections):
    pytest.importorskip("nir")
    graph, net = _read(name)
    got = []
    for p in net.projections:
        w = p.weights
        if isinstance(w, Conv):
            got.append((p.src, p.dst, type(w).__name__, w.src_shape, w.dst_shape))
        else:
            got.append((p.src, p.dst, type(w).__name__, *w.shape))
    assert got == projections
    # the Conv bias goes to the neurons of its output channel (gain 1 here)
    first = next(k for k, n in graph.nodes.items() if type(n).__name__.startswith("Conv"))
    conv = net.projections[0].weights
    bias = np.repeat(np.asarray(graph.nodes[first].bias), int(np.prod(conv.out_shape)))
    np.testing.assert_allclose(np.broadcast_to(net.populations[0].params.bias, bias.shape), bias)
    np.testing.assert_allclose(conv.kernel, graph.nodes[first].weight, rtol=1e-7)


def _torch_reference(graph, raster, settings):
    """Evaluate the NIR graph step by step with torch.nn.functional and the float neuron of
    docs/neuron.md (subtract reset, delayed: snnTorch's Leaky), independent of the importer."""
    import torch
    import torch.nn.functional as F

    order = ["input"]
    while order[-1] != "output":
        order.append(next(d for s, d in graph.edges if s == order[-1]))
    t_steps, batch, _ = raster.shape
    in_shape = tuple(int(x) for x in graph.nodes["input"].input_type["input"])
    dt = settings.dt
    state, spikes = {}, []
    for t in range(t_steps):
        x = torch.tensor(raster[t].reshape(batch, *in_shape), dtype=torch.float64)
        step = []
        for name in order[1:-1]:
            node = graph.nodes[name]
            kind = type(node).__name__
            if kind in ("Conv1d", "Conv2d"):
                f = F.conv1d if kind == "Conv1d" else F.conv2d
                pad = node.padding
                if not isinstance(pad, str):
                    pad = tuple(int(p) for p in np.atleast_1d(pad))
                    pad = pad[0] if kind == "Conv1d" else pad
                s_ = tuple(int(v) for v in np.atleast_1d(node.stride))
                d_ = tuple(int(v) for v in np.atleast_1d(node.dilation))
                x = f(x, torch.tensor(np.asarray(node.weight, dtype=np.float64)),
                      torch.tensor(np.asarray(node.bias, dtype=np.float64)),
                      stride=s_[0] if kind == "Conv1d" else s_, padding=pad,
                      dilation=d_[0] if kind == "Conv1d" else d_, groups=int(node.groups))
            elif kind in ("SumPool2d", "AvgPool2d"):
                ks = tuple(int(v) for v in node.kernel_size)
                x = F.avg_pool2d(x, ks, tuple(int(v) for v in node.stride),
                                 tuple(int(v) for v in node.padding),
                                 divisor_override=1 if kind == "SumPool2d" else None)
            elif kind == "Flatten":
                x = x.reshape(batch, -1)
            elif kind in ("Affine", "Linear"):
                x = x @ torch.tensor(np.asarray(node.weight, dtype=np.float64)).T
                if kind == "Affine":
                    x = x + torch.tensor(np.asarray(node.bias, dtype=np.float64))
            elif kind in ("IF", "LIF"):
                thr = float(np.asarray(node.v_threshold).reshape(-1)[0])
                beta = 1.0 if kind == "IF" else 1.0 - dt / float(np.asarray(node.tau).ravel()[0])
                v = state.get(name, torch.zeros_like(x))
                reset = (v > thr).double()
                v = beta * v + x - reset * thr
                x = (v > thr).double()
                state[name] = v
                step.append(x.reshape(batch, -1))
            else:
                raise AssertionError(kind)
        spikes.append(torch.cat(step, dim=1).numpy())
    return np.stack(spikes).astype(bool)


@pytest.mark.needs("torch")
@pytest.mark.parametrize("name", CONV_FIXTURES)
def test_float_golden_gives_the_spikes_of_a_torch_reference(name):
    from spikeforge.host.nir_import import NIRTypeWarning, read_nir

    graph, net = _read(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRTypeWarning)
        _, settings = read_nir(os.path.join(DATA, name + ".nir"))
    raster = (np.random.default_rng(8).random((40, 4, net.n_inputs)) < 0.3).astype(np.uint8)
    ref = _torch_reference(graph, raster, settings)
    got = GoldenChip(net, "float", batch=4, dtype=np.float64).run(raster)["spikes"]
    # the golden model's neurons are in the graph's order here (feed-forward)
    assert [p.name for p in net.populations] == [k for k in _chain(graph) if
                                                   type(graph.nodes[k]).__name__ in ("IF", "LIF")]
    assert ref.sum() > 50
    for p in net.populations:  # every population spikes, and not in every step
        sl = slice(net.base(p.name), net.base(p.name) + p.size)
        assert 0 < got[:, :, sl].mean() < 0.9, p.name
    np.testing.assert_array_equal(got, ref)


def _chain(graph):
    order = ["input"]
    while order[-1] != "output":
        order.append(next(d for s, d in graph.edges if s == order[-1]))
    return order


@pytest.mark.parametrize("name, floor", [("conv_if", 0.85), ("conv_lif_avg", 0.95),
                                         ("conv_1d", 0.95)])
def test_nir_cnn_quantizes_and_runs_in_int_mode(name, floor):
    from spikeforge.host.compiler import compare, quantize

    _, net = _read(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # QuantizationWarning below 99 %: the floor is asserted
        q = quantize(net)
    for p, fp in zip(q.net.projections, net.projections, strict=True):
        # a convolution keeps its shared kernel, now integers (one scale per output channel)
        assert isinstance(p.weights, Conv) == isinstance(fp.weights, Conv)
        w = p.weights.kernel if isinstance(p.weights, Conv) else np.asarray(p.weights)
        assert np.issubdtype(w.dtype, np.integer) and np.abs(w).max() <= 127
    raster = (np.random.default_rng(9).random((40, 8, net.n_inputs)) < 0.3).astype(np.uint8)
    out = GoldenChip(q.net, "int", batch=8).run(raster)
    assert out["spikes"].sum() > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = compare(q, raster, min_agreement=0.0)
    for pop, agree in rep.agreement.items():
        assert agree >= floor, (pop, agree)


def unrolled_slots(net):
    """Weight slots the unrolled layout takes (lanes = 1): per projection, the bounding box of
    its non-zero weights (host/image.py compile_blocks), from the synapse lists (no matrix)."""
    total = 0
    for p in net.projections:
        w = p.weights
        if isinstance(w, Conv):
            sp = w.to_sparse()
            rows, cols = sp.rows, sp.cols
        else:
            rows, cols = np.nonzero(np.asarray(w))
        if len(rows):
            total += int((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    return total


def distinct_weights(net):
    """Weights a weight-shared layout stores: a Conv's kernel entries, a dense projection's
    non-zero weights."""
    return sum(p.weights.n_weights if isinstance(p.weights, Conv)
               else int(np.count_nonzero(p.weights)) for p in net.projections)


def test_nir_cnn_compiles_for_a_chip_and_its_image_builds():
    from spikeforge.host.compiler import compile
    from spikeforge.host.image import compile_blocks
    from spikeforge.hw.image import CoreConfig

    pytest.importorskip("nir")
    config = CoreConfig(n_neurons=512, n_inputs=64, synapse_words=16384)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = compile(os.path.join(DATA, "conv_if.nir"), config, min_agreement=None)
    blocks = c.image()
    assert blocks
    layout = compile_blocks(c.net, config)
    assert len(layout.slots) == unrolled_slots(c.net)
    # conv_if: bounding boxes 64x256 + 256x16 + 16x10 = 20,640 slots; kernels 4*1*3*3 = 36 and
    # (folded SumPool2d 2 + Conv2d 3x3) 4*4*6*6 = 576 (144 distinct values), + 149 non-zero
    # Affine weights = 761
    assert (unrolled_slots(c.net), distinct_weights(c.net)) == (20640, 761)
    assert c.net.projections[1].weights.kernel_size == (6, 6)


def nmnist_net():
    """The issue's N-MNIST CNN (random weights) as from_nir builds it: Conv2d 2->16 5x5 stride 2
    on 2x34x34 -> IF -> Conv2d 16->16 3x3 -> IF -> SumPool2d 2 -> Conv2d 16->8 3x3 -> IF ->
    SumPool2d 2 -> Flatten -> Affine 128->256 -> IF -> Affine 256->10 -> IF.  For the Flatten to
    give 128 = 8x4x4 values the convolutions pad K // 2 (2, 1, 1): 34 -> 17 -> 17 -> (pool) 8
    -> 8 -> (pool) 4."""
    nir = pytest.importorskip("nir")
    from spikeforge.host.nir_import import Settings, from_nir

    rng = np.random.default_rng(13)

    def conv(cin, cout, k, stride, pad, shape):
        return nir.Conv2d(input_shape=shape, weight=rng.uniform(-0.1, 0.2, (cout, cin, k, k)),
                          stride=stride, padding=pad, dilation=1, groups=1, bias=np.zeros(cout))

    def if_(n):
        return nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n))

    def pool():
        return nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                             padding=np.array([0, 0]))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 34, 34])}),
        "c1": conv(2, 16, 5, 2, 2, (34, 34)), "i1": if_(16 * 17 * 17),
        "c2": conv(16, 16, 3, 1, 1, (17, 17)), "i2": if_(16 * 17 * 17), "p2": pool(),
        "c3": conv(16, 8, 3, 1, 1, (8, 8)), "i3": if_(8 * 8 * 8), "p3": pool(),
        "f": nir.Flatten(input_type={"input": np.array([8, 4, 4])}, start_dim=0),
        "fc1": nir.Affine(weight=rng.uniform(-0.1, 0.2, (256, 128)), bias=np.zeros(256)),
        "i4": if_(256),
        "fc2": nir.Affine(weight=rng.uniform(-0.1, 0.2, (10, 256)), bias=np.zeros(10)),
        "i5": if_(10), "output": nir.Output(output_type={"output": np.array([10])}),
    }
    names = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:], strict=False)),
                         type_check=False)
    return from_nir(graph, Settings(dt=1.0, reset="subtract"))


def test_nmnist_shape_counts():
    # the numbers only (no chip): unrolled weight slots vs the weights a shared layout stores
    net = nmnist_net()
    assert [(p.name, p.size) for p in net.populations] == [
        ("i1", 4624), ("i2", 4624), ("i3", 512), ("i4", 256), ("i5", 10)]
    kinds = [(p.src, p.dst, type(p.weights).__name__) for p in net.projections]
    assert kinds == [("input", "i1", "Conv2d"), ("i1", "i2", "Conv2d"), ("i2", "i3", "Conv2d"),
                     ("i3", "i4", "ndarray"), ("i4", "i5", "ndarray")]
    fold = net.projections[2].weights  # SumPool2d 2 folded into Conv2d 16->8 3x3
    assert (fold.kernel_size, fold.stride, fold.extent) == ((6, 6), (2, 2), (16, 16))
    assert unrolled_slots(net) == NMNIST_SLOTS
    assert distinct_weights(net) == NMNIST_WEIGHTS


# unrolled bounding boxes: 2312x4624 + 4624x4624 + 4606x512 (the pool drops row and column 16
# of each 17x17 map, so the last 18 sources of i2 have no synapse) + 512x256 + 256x10
NMNIST_SLOTS = 2312 * 4624 + 4624 * 4624 + 4606 * 512 + 512 * 256 + 256 * 10
# kernels 16*2*5*5 + 16*16*3*3 + 8*16*6*6 (folded; 8*16*3*3 = 1,152 distinct values), the
# SumPool2d -> Flatten -> Affine composed into a dense 512x256 (the Affine's 128*256 = 32,768
# weights, each repeated for the 4 pixels of its window: 131,072 non-zero) and Affine 256*10
NMNIST_WEIGHTS = 800 + 2304 + 4608 + 131072 + 2560


@pytest.mark.parametrize("arithmetic", ["int", "float"])
def test_golden_direct_convolution_equals_the_unrolled_product(arithmetic):
    # a convolution whose unrolled matrix has >= 2**20 entries is computed directly in the
    # golden model (sim/golden.py, _CONV_DIRECT); integer mode is exact, and with weights that
    # are multiples of 1/16 the float sums are exact too
    from spikeforge.sim import golden

    rng = np.random.default_rng(14)
    kernel = rng.integers(-20, 40, (8, 2, 3, 3))
    conv = Conv2d(kernel if arithmetic == "int" else kernel / 16, (24, 24), 1, 1)
    assert conv.n_src * conv.n_dst >= golden._CONV_DIRECT
    thr = 60 if arithmetic == "int" else 60 / 16
    prm = NeuronParams(leak="none", threshold=thr, reset="subtract")
    nets = [Network(conv.n_src, [Population("c", conv.n_dst, prm)],
                    [Projection("input", "c", w)]) for w in (conv, conv.dense())]
    raster = (rng.random((20, 4, conv.n_src)) < 0.3).astype(np.uint8)
    chips = [GoldenChip(n, arithmetic, batch=4) for n in nets]
    assert isinstance(chips[0]._from_input[0][1], golden._ConvMatrix)
    a, b = (c.run(raster) for c in chips)
    assert a["spikes"].mean() > 0.05
    np.testing.assert_array_equal(a["spikes"], b["spikes"])
    np.testing.assert_array_equal(a["v"], b["v"])


def test_validation_checks_a_conv_kernel_without_unrolling_it():
    from spikeforge.sim.golden import network_problems

    prm = NeuronParams(leak="none", threshold=10, reset="subtract")
    conv = Conv2d(np.full((2, 1, 3, 3), 200), (4, 4), padding=1)
    net = Network(16, [Population("c", 32, prm)], [Projection("input", "c", conv)])
    problems, _ = network_problems(net, "int")
    assert len(problems) == 1 and "input->c (Conv2d kernel" in problems[0]
    assert "out of range" in problems[0]
    # the fan-in bound uses the unrolled synapses: a corner neuron has 4, the centre 9
    conv = Conv2d(np.full((1, 1, 3, 3), 127), (3, 3), padding=1)
    net = Network(9, [Population("c", 9, prm)], [Projection("input", "c", conv)])
    assert network_problems(net, "int")[0] == []
    big = Conv2d(np.full((1, 512, 3, 3), 127), (3, 3), padding=1)  # 512*9*127 > 2**19 - 1
    net = Network(4608, [Population("c", 9, prm)], [Projection("input", "c", big)])
    problems, _ = network_problems(net, "int")
    assert len(problems) == 1 and "neuron 4 can receive" in problems[0]


def _conv_graph(in_shape, conv, n_out):
    nir = pytest.importorskip("nir")
    n = int(np.prod(n_out))
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}), "conv": conv,
             "if1": nir.IF(r=np.ones(n), v_threshold=np.ones(n), v_reset=np.zeros(n)),
             "output": nir.Output(output_type={"output": np.array([n])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "if1"),
                                            ("if1", "output")], type_check=False)


@pytest.mark.parametrize("in_shape, weight, input_shape, needle", [
    ([1, 6, 6], (2, 1, 3, 3), (8, 8), "input_shape=[8, 8] but its source gives [6, 6]"),
    ([1, 8, 8], (2, 3, 3, 3), (8, 8), "the source has 1 channels"),
])
def test_nir_conv_that_does_not_fit_its_source_is_refused(in_shape, weight, input_shape, needle):
    nir = pytest.importorskip("nir")
    from spikeforge.host.nir_import import Settings, from_nir

    conv = nir.Conv2d(input_shape=input_shape, weight=np.ones(weight), stride=1, padding=1,
                      dilation=1, groups=1, bias=np.zeros(weight[0]))
    with pytest.raises(ConfigError) as e:
        from_nir(_conv_graph(in_shape, conv, 2 * 64), Settings(dt=1.0))
    assert "'conv' (Conv2d)" in str(e.value) and needle in str(e.value)


def test_nir_pool_without_a_shaped_source_is_refused():
    nir = pytest.importorskip("nir")
    from spikeforge.host.nir_import import Settings, from_nir

    pool = nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                         padding=np.array([0, 0]))
    with pytest.raises(ConfigError) as e:
        from_nir(_conv_graph([16], pool, 4), Settings(dt=1.0))
    assert "'conv' (SumPool2d)" in str(e.value) and "(C, H, W)" in str(e.value)


def test_network_counts_conv_synapses_without_unrolling():
    net = _conv_net()
    assert net.n_synapses == sum(int(np.count_nonzero(net.dense_weights(p)))
                                 for p in net.projections)
