"""Train the bundled convolutional spiking digit classifier with snnTorch and export it to NIR.

    python examples/train_snntorch_conv_digits.py   # writes spikeforge/data/digits_conv.{nir,json}

Data: scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits, 10 classes); the last 360
samples are the test split (``spikeforge.host.demo``), as for ``train_snntorch_digits.py``.
Network (channel-first, ``docs/network.md`` "Convolution and pooling")::

    1x8x8 -> Conv2d 1->C1 3x3 pad 1 -> Leaky -> AvgPool2d 2
          -> Conv2d C1->C2 3x3 pad 1 -> Leaky -> Flatten -> Linear C2*16->10 -> Leaky

(C1 = 8, C2 = 16.)  There is no second pooling layer: a pool before the ``Linear`` would be
multiplied into the dense readout matrix by the importer anyway (the same ``C2*16 x 10`` block on
the chip), so leaving it out costs nothing and gives the readout 4x the weights.  The first pool
is folded into the second convolution (one 6x6 stride-2 convolution).  ``snn.Leaky`` with beta
0.9, threshold 1 and snnTorch's default subtract reset with ``reset_delay=True``; rate-coded
input (``spikeforge.host.coding.rate_encode``, intensity / 16, 50 timesteps: twice the MLP's,
the rate code's noise costs the CNN several points at 25), trained with BPTT, the atan surrogate
and cross entropy on the output spike counts; every epoch a new rate encoding of the training
set, each image shifted at random by up to one pixel (``shift``).  Prediction: most output
spikes.

The NIR graph is built from the trained tensors with the ``nir`` package (``build_graph``):
snnTorch 1.0.0's ``export_to_nir`` fails on this network (``nir`` 1.0.8's ``infer_types`` raises
``IndexError`` in ``calculate_conv_output`` for the exported ``Conv2d``).  The
script then imports the graph with ``spikeforge.host.nir_import.from_nir`` and checks that the
float golden model gives snnTorch's output spikes on the test split (the agreement is stored in
the metadata), and compiles it with the default quantization for the ULX3S chip (``--port
virtual``, the conv unrolled into dense blocks), storing the integer (chip) accuracy beside the
float one.  The unrolled layout and the quantized network are what ``spikeforge demo --model
digits-conv`` runs.  One thread (``torch.set_num_threads(1)``): about 3 minutes; the same
seed writes the same graph, byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from spikeforge.host.coding import predict, rate_encode  # noqa: E402
from spikeforge.host.demo import N_TEST, load_digits_split  # noqa: E402

C1, C2, BETA, THRESHOLD, TIMESTEPS = 8, 16, 0.9, 1.0, 50
DT = 1e-4  # the time step snnTorch's NIR export assumes: tau = dt / (1 - beta)
SETTINGS = {"dt": DT, "reset": "subtract", "reset_delay": True}


def build(torch, snn, c1=C1, c2=C2):
    """The snnTorch network: input ``(batch, 1, 8, 8)``, output spikes ``(batch, 10)``."""
    grad = snn.surrogate.atan()

    def leaky(**kw):
        return snn.Leaky(beta=BETA, threshold=THRESHOLD, spike_grad=grad, init_hidden=True, **kw)

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, c1, 3, padding=1),
        leaky(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(c1, c2, 3, padding=1),
        leaky(),
        torch.nn.Flatten(),
        torch.nn.Linear(c2 * 16, 10),
        leaky(output=True),
    )


def run_snntorch(net, raster, torch):
    """Run ``net`` on a raster ``(T, batch, 64)``; return the output spikes ``(T, batch, 10)``."""
    from snntorch import utils

    utils.reset(net)
    x = torch.as_tensor(raster, dtype=torch.float32)
    out = []
    for t in range(x.shape[0]):
        spk, _ = net(x[t].reshape(-1, 1, 8, 8))
        out.append(spk)
    return torch.stack(out)


def shift(x, rng, max_shift=1):
    """Training augmentation: every image ``(n, 64)`` moved by up to ``max_shift`` pixels in
    each direction (zeros shifted in)."""
    n = len(x)
    pad = np.pad(x.reshape(n, 8, 8), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    rows = dy[:, None] + np.arange(8)[None, :]
    cols = dx[:, None] + np.arange(8)[None, :]
    return pad[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(n, 64)


def build_graph(net, c1=C1, c2=C2):
    """The NIR graph of the trained ``net`` (channel-first shapes, snnTorch's LIF convention:
    ``tau = dt / (1 - beta)``, ``r = tau / dt``), with the import settings in its metadata."""
    import nir

    conv1, conv2, fc = net[0], net[3], net[6]

    def arr(t):
        return t.detach().cpu().numpy().astype(np.float32)

    def lif(shape):
        tau = DT / (1 - BETA)
        return nir.LIF(tau=np.full(shape, tau, np.float32),
                       r=np.full(shape, tau / DT, np.float32),
                       v_leak=np.zeros(shape, np.float32),
                       v_threshold=np.full(shape, THRESHOLD, np.float32),
                       v_reset=np.zeros(shape, np.float32))

    def conv(m, hw):
        return nir.Conv2d(input_shape=hw, weight=arr(m.weight), stride=1, padding=1,
                          dilation=1, groups=1, bias=arr(m.bias))

    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 8, 8])}),
        "conv1": conv(conv1, (8, 8)),
        "lif1": lif((c1, 8, 8)),
        "pool1": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0])),
        "conv2": conv(conv2, (4, 4)),
        "lif2": lif((c2, 4, 4)),
        "flat": nir.Flatten(input_type={"input": np.array([c2, 4, 4])}, start_dim=0),
        "fc": nir.Affine(weight=arr(fc.weight), bias=arr(fc.bias)),
        "lif3": lif((10,)),
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    names = list(nodes)
    edges = list(zip(names, names[1:], strict=False))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"spikeforge": json.dumps(SETTINGS)})


def unrolled_slots(net):
    """Weight slots of the unrolled layout (one lane): per projection the bounding box of its
    non-zero weights, as ``host/image.py`` lays it out."""
    total = 0
    for p in net.projections:
        w = np.asarray(net.dense_weights(p))
        rows, cols = np.flatnonzero(w.any(axis=1)), np.flatnonzero(w.any(axis=0))
        if len(rows):
            total += int((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))
    return total


def kernel_weights(net):
    """Weights a weight-shared layout would store for the integer network: a Conv's kernel
    entries (the second convolution's is the 6x6 stride-2 kernel with the pool folded in: each
    trained weight 4 times), a dense projection's non-zero weights."""
    from spikeforge.network import Conv

    total = 0
    for p in net.projections:
        w = p.weights
        total += int(w.kernel.size) if isinstance(w, Conv) else int(np.count_nonzero(w))
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--c1", type=int, default=C1)
    ap.add_argument("--c2", type=int, default=C2)
    ap.add_argument("--shift", type=int, default=1,
                    help="augmentation: random shifts of up to this many pixels (0: none)")
    ap.add_argument("--timesteps", type=int, default=TIMESTEPS)
    ap.add_argument("--wd", type=float, default=0.0, help="weight decay (AdamW)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "spikeforge",
                                                  "data"))
    args = ap.parse_args(argv)

    import nir
    import snntorch as snn
    import torch

    from spikeforge.boards.configs import get_board
    from spikeforge.host.compiler import compile
    from spikeforge.host.nir_import import from_nir
    from spikeforge.sim.golden import GoldenChip

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    net = build(torch, snn, args.c1, args.c2)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(args.seed)
    y_train_t = torch.as_tensor(y_train)
    test_seed = 1234
    test_raster = rate_encode(x_test, args.timesteps, seed=test_seed, x_max=16.0)
    for epoch in range(args.epochs):
        net.train()
        x_ep = shift(x_train, rng, args.shift) if args.shift else x_train
        raster = rate_encode(x_ep, args.timesteps, seed=rng, x_max=16.0)
        order = rng.permutation(len(x_train))
        total = 0.0
        for k in range(0, len(order), 64):
            idx = order[k:k + 64]
            spk = run_snntorch(net, raster[:, idx], torch)
            loss = loss_fn(spk.sum(0) * 0.5, y_train_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            with torch.no_grad():
                spk = run_snntorch(net, test_raster, torch).numpy()
            acc = float(np.mean(predict("count", spikes=spk) == y_test))
            print(f"epoch {epoch + 1:3d}  loss {total / len(order):.4f}  test acc {acc:.4f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        torch_spikes = run_snntorch(net, test_raster, torch).numpy().astype(bool)
    acc = float(np.mean(predict("count", spikes=torch_spikes) == y_test))

    # The NIR graph, imported back: the float golden model must give snnTorch's spikes.
    graph = build_graph(net, args.c1, args.c2)
    fnet = from_nir(graph)
    out = fnet.population(fnet.outputs[0])
    sl = slice(fnet.base(out.name), fnet.base(out.name) + out.size)
    golden_float = GoldenChip(fnet, "float", batch=len(x_test)).run(
        test_raster, record_v=False)["spikes"][..., sl]
    agreement = float(np.mean(golden_float == torch_spikes))
    acc_golden_float = float(np.mean(predict("count", spikes=golden_float) == y_test))

    # The default compile() for the virtual board's chip (ULX3S): the integer (chip) accuracy.
    config = get_board("ulx3s-85f").chip.to_core_config()
    compiled = compile(graph, config)
    inet = compiled.net
    isl = slice(inet.base(inet.outputs[0]), inet.base(inet.outputs[0]) + 10)
    golden_int = GoldenChip(inet, "int", batch=len(x_test), fmt=compiled.fmt).run(
        test_raster, record_v=False)["spikes"][..., isl]
    acc_int = float(np.mean(predict("count", spikes=golden_int) == y_test))

    meta = {
        "name": "digits-conv-snntorch",
        "source": "examples/train_snntorch_conv_digits.py",
        "dataset": "sklearn.datasets.load_digits",
        "split": f"last {N_TEST} samples are the test split",
        "n_inputs": 64,
        "layers": [[1, 8, 8], f"conv3x3 -> [{args.c1}, 8, 8]", "avgpool2",
                   f"conv3x3 -> [{args.c2}, 4, 4]", "flatten", 10],
        "dt": DT,
        "reset": "subtract",
        "reset_delay": True,
        "timesteps": args.timesteps,
        "augmentation": f"random shifts of up to {args.shift} pixel(s)" if args.shift else None,
        "weight_decay": args.wd,
        "encoder": {"kind": "rate", "x_max": 16.0, "seed": test_seed},
        "decoder": "count",
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "float_accuracy": acc,
        "golden_float_accuracy": acc_golden_float,
        "golden_float_spike_agreement": agreement,
        "int_accuracy": acc_int,
        "int_board": "ulx3s-85f",
        "neurons": int(inet.n_neurons),
        "synapses": int(inet.n_synapses),
        "unrolled_weight_slots": unrolled_slots(inet),
        "kernel_weights": kernel_weights(inet),
        "train_seconds": round(train_seconds, 1),
        "snntorch": snn.__version__,
        "torch": torch.__version__,
    }
    os.makedirs(args.out, exist_ok=True)
    nir.write(os.path.join(args.out, "digits_conv.nir"), graph)
    with open(os.path.join(args.out, "digits_conv.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"float (snnTorch) test accuracy {acc:.4f}, float golden {acc_golden_float:.4f} "
          f"(output spikes equal to snnTorch's: {100 * agreement:.3f} %), integer (chip) "
          f"{acc_int:.4f}; trained in {train_seconds:.1f} s")
    print(f"{meta['neurons']} neurons, {meta['unrolled_weight_slots']} unrolled weight slots, "
          f"{meta['kernel_weights']} kernel weights")
    print(f"wrote {os.path.join(args.out, 'digits_conv.nir')} and digits_conv.json")


if __name__ == "__main__":
    main()
