"""Train the bundled spiking digit classifier with snnTorch and export it to NIR.

    python examples/train_snntorch_digits.py            # writes spikeforge/data/digits.{nir,json}

Data: scikit-learn's ``load_digits`` (1797 real 8x8 handwritten digits shipped in the wheel, 64
inputs, 10 classes); the last 360 samples are the test split (``spikeforge.host.demo``).
Network: 64 -> 128 -> 10 ``snn.Leaky`` (beta 0.9, threshold 1, snnTorch's default subtract reset
with ``reset_delay=True``), rate-coded input (``spikeforge.host.coding.rate_encode``, intensity /
16, 25 steps), trained with BPTT, the atan surrogate and cross entropy on the output spike counts.
Prediction: most output spikes.  Runs in about a minute on two CPU cores.

The metadata file records what the NIR graph cannot: ``dt`` of the export, the reset mode, the
number of timesteps, the encoder and its seeds, and the float accuracy measured here.
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

HIDDEN, BETA, THRESHOLD, TIMESTEPS = 128, 0.9, 1.0, 25


def build(torch, snn):
    """The snnTorch network (per-neuron beta/threshold tensors, so the NIR export is typed)."""
    grad = snn.surrogate.atan()
    return torch.nn.Sequential(
        torch.nn.Linear(64, HIDDEN),
        snn.Leaky(beta=torch.full((HIDDEN,), BETA), threshold=torch.full((HIDDEN,), THRESHOLD),
                  spike_grad=grad, init_hidden=True),
        torch.nn.Linear(HIDDEN, 10),
        snn.Leaky(beta=torch.full((10,), BETA), threshold=torch.full((10,), THRESHOLD),
                  spike_grad=grad, init_hidden=True, output=True),
    )


def run_snntorch(net, raster, torch, snn):
    """Run ``net`` on a raster (T, batch, 64); return the output spikes (T, batch, 10)."""
    from snntorch import utils

    utils.reset(net)
    x = torch.as_tensor(raster, dtype=torch.float32)
    out = []
    for t in range(x.shape[0]):
        spk, _ = net(x[t])
        out.append(spk)
    return torch.stack(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "spikeforge",
                                                  "data"))
    args = ap.parse_args(argv)

    import nir
    import snntorch as snn
    import torch
    from snntorch.export_nir import export_to_nir

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    net = build(torch, snn)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(args.seed)
    y_train_t = torch.as_tensor(y_train)
    test_seed = 1234
    test_raster = rate_encode(x_test, TIMESTEPS, seed=test_seed, x_max=16.0)
    for epoch in range(args.epochs):
        net.train()
        raster = rate_encode(x_train, TIMESTEPS, seed=rng, x_max=16.0)
        order = rng.permutation(len(x_train))
        total = 0.0
        for k in range(0, len(order), 64):
            idx = order[k:k + 64]
            spk = run_snntorch(net, raster[:, idx], torch, snn)
            loss = loss_fn(spk.sum(0) * 0.5, y_train_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            with torch.no_grad():
                spk = run_snntorch(net, test_raster, torch, snn).numpy()
            acc = float(np.mean(predict("count", spikes=spk) == y_test))
            print(f"epoch {epoch + 1:3d}  loss {total / len(order):.4f}  test acc {acc:.4f}")
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        spk = run_snntorch(net, test_raster, torch, snn).numpy()
    acc = float(np.mean(predict("count", spikes=spk) == y_test))

    graph = export_to_nir(net.eval(), torch.zeros(64))
    meta = {
        "name": "digits-snntorch",
        "source": "examples/train_snntorch_digits.py",
        "dataset": "sklearn.datasets.load_digits",
        "split": f"last {N_TEST} samples are the test split",
        "n_inputs": 64,
        "layers": [64, HIDDEN, 10],
        "dt": 1e-4,
        "reset": "subtract",
        "reset_delay": True,
        "timesteps": TIMESTEPS,
        "encoder": {"kind": "rate", "x_max": 16.0, "seed": test_seed},
        "decoder": "count",
        "seed": args.seed,
        "epochs": args.epochs,
        "float_accuracy": acc,
        "train_seconds": round(train_seconds, 1),
        "snntorch": snn.__version__,
        "torch": torch.__version__,
    }
    settings = {k: meta[k] for k in ("dt", "reset", "reset_delay")}
    graph.metadata = dict(graph.metadata or {}, spikeforge=json.dumps(settings))
    os.makedirs(args.out, exist_ok=True)
    nir.write(os.path.join(args.out, "digits.nir"), graph)
    with open(os.path.join(args.out, "digits.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"float (snnTorch) test accuracy {acc:.4f}, trained in {train_seconds:.1f} s")
    print(f"wrote {os.path.join(args.out, 'digits.nir')} and digits.json")


if __name__ == "__main__":
    main()
