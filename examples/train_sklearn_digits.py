"""Train a ReLU MLP with scikit-learn on the digits and convert it to a spiking network.

    python examples/train_sklearn_digits.py    # writes spikeforge/data/digits_sklearn.{npz,json}

ANN-to-SNN conversion (``spikeforge.host.compiler.from_sklearn``): 64 -> 128 -> 10 ReLU MLP
trained on pixels / 16, converted to integrate-and-fire neurons with reset by subtraction and
data-based normalisation (99.9th percentile of each layer's activations on the training split),
rate-coded input, prediction = most output spikes.  The same test split as the snnTorch model
(the last 360 samples).  Takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from spikeforge.host.coding import rate_encode  # noqa: E402
from spikeforge.host.compiler import from_sklearn, save_network  # noqa: E402
from spikeforge.host.demo import N_TEST, load_digits_split  # noqa: E402
from spikeforge.host.quantize import compare, quantize  # noqa: E402

TIMESTEPS, PERCENTILE = 25, 99.9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "spikeforge",
                                                  "data"))
    args = ap.parse_args(argv)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    start = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_digits_split()
    mlp = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=300,
                        random_state=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x_train / 16.0, y_train)
    ann_acc = float(mlp.score(x_test / 16.0, y_test))
    net = from_sklearn(mlp, x_train / 16.0, percentile=PERCENTILE, neuron="if",
                       readout="spikes")
    train_seconds = time.perf_counter() - start
    test_seed = 1234
    raster = rate_encode(x_test, TIMESTEPS, seed=test_seed, x_max=16.0)
    rep = compare(quantize(net), raster, y_test, decoder="count")
    print(rep)
    meta = {
        "name": "digits-sklearn",
        "source": "examples/train_sklearn_digits.py",
        "dataset": "sklearn.datasets.load_digits",
        "split": f"last {N_TEST} samples are the test split",
        "n_inputs": 64,
        "layers": [64, 128, 10],
        "conversion": {"neuron": "if", "reset": "subtract", "reset_delay": False,
                       "percentile": PERCENTILE},
        "timesteps": TIMESTEPS,
        "encoder": {"kind": "rate", "x_max": 16.0, "seed": test_seed},
        "decoder": "count",
        "seed": args.seed,
        "ann_accuracy": ann_acc,
        "float_accuracy": rep.accuracy_float,
        "train_seconds": round(train_seconds, 1),
    }
    os.makedirs(args.out, exist_ok=True)
    save_network(net, os.path.join(args.out, "digits_sklearn.npz"))
    with open(os.path.join(args.out, "digits_sklearn.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"ANN accuracy {ann_acc:.4f}, converted SNN (float) {rep.accuracy_float:.4f}, "
          f"integer {rep.accuracy_int:.4f}; trained and converted in {train_seconds:.1f} s")


if __name__ == "__main__":
    main()
