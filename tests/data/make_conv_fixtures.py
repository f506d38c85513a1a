"""Regenerate the NIR CNNs used by ``tests/test_conv.py``.

Built with the ``nir`` package alone, with a fixed seed and channel-first shapes (NIR's and
PyTorch's ``(C, H, W)``).  Every weight and bias is a multiple of 1/16, so every synaptic sum
is exact in float32 whatever order it is added in: the golden model's float mode and a PyTorch
reference then give the same spikes, spike for spike.  The settings (subtract reset, delayed as
snnTorch, ``dt = 1e-4`` s with snnTorch's ``tau = dt / (1 - beta)``, ``r = tau / dt``) are stored
in the graph's ``metadata["spikeforge"]``.  Files (in ``tests/data/nir/``):

* ``conv_if.nir``: ``1x8x8 -> Conv2d 1->4 3x3 stride 1 pad 1 (bias) -> IF -> SumPool2d 2 ->
  Conv2d 4->4 3x3 -> IF -> Flatten -> Affine 16->10 -> IF``.  The SumPool2d between the IF and
  the second Conv2d is folded into one 6x6 stride-2 convolution (``docs/network.md``,
  "Convolution and pooling").
* ``conv_lif_avg.nir``: ``2x6x6 -> Conv2d 2->4 3x3 padding "same" groups 2 -> LIF ->
  AvgPool2d 2 -> Flatten -> Affine 36->5 -> LIF``: the pool, the Flatten and the Affine become
  one dense projection.  nir 1.0.8 types a grouped Conv2d's input with ``C_in / groups``
  channels, so this graph fails nir's strict type check (written and read with it relaxed).
* ``conv_1d.nir``: ``2x16 -> Conv1d 2->3 K=3 stride 2 dilation 2 padding 1 -> IF -> Flatten ->
  Linear 24->4 -> IF``.

Usage::

    python tests/data/make_conv_fixtures.py            # writes tests/data/nir/conv_*.nir
    python tests/data/make_conv_fixtures.py --out DIR  # elsewhere (the test compares)
"""

from __future__ import annotations

import argparse
import json
import os

import nir
import numpy as np

DT = 1e-4
HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nir")
SETTINGS = {"dt": DT, "reset": "subtract", "reset_delay": True}


def _if(shape, thr=1.0):
    return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))


def _lif(shape, beta=0.875, thr=1.0):
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(shape, tau), r=np.full(shape, tau / DT), v_leak=np.zeros(shape),
                   v_threshold=np.full(shape, thr), v_reset=np.zeros(shape))


def _graph(in_shape, nodes, edges, n_out, type_check=True):
    nodes = {"input": nir.Input(input_type={"input": np.array(in_shape)}), **nodes,
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"spikeforge": json.dumps(SETTINGS)}, type_check=type_check)


def build():
    rng = np.random.default_rng(20261205)

    def w(shape, lo, hi):
        """Uniform in [lo, hi), rounded to a multiple of 1/16."""
        return np.round(rng.uniform(lo, hi, shape) * 16) / 16

    def chain(names):
        return [(a, b) for a, b in zip(names, names[1:], strict=False)]

    graphs = {}
    graphs["conv_if.nir"] = _graph(
        [1, 8, 8],
        {"conv1": nir.Conv2d(input_shape=(8, 8), weight=w((4, 1, 3, 3), -0.3, 0.8), stride=1,
                             padding=1, dilation=1, groups=1, bias=w(4, -0.1, 0.2)),
         "if1": _if((4, 8, 8)),
         "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                               padding=np.array([0, 0])),
         "conv2": nir.Conv2d(input_shape=(4, 4), weight=w((4, 4, 3, 3), -0.3, 0.25), stride=1,
                             padding=0, dilation=1, groups=1, bias=np.zeros(4)),
         "if2": _if((4, 2, 2)),
         "flat": nir.Flatten(input_type={"input": np.array([4, 2, 2])}, start_dim=0),
         "fc": nir.Affine(weight=w((10, 16), -0.6, 0.5), bias=w(10, 0.0, 0.1)),
         "if3": _if(10)},
        chain(["input", "conv1", "if1", "pool", "conv2", "if2", "flat", "fc", "if3", "output"]),
        10)
    graphs["conv_lif_avg.nir"] = _graph(
        [2, 6, 6],
        {"conv": nir.Conv2d(input_shape=(6, 6), weight=w((4, 1, 3, 3), -0.2, 0.7), stride=1,
                            padding="same", dilation=1, groups=2, bias=w(4, -0.05, 0.1)),
         "lif1": _lif((4, 6, 6)),
         "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
         "flat": nir.Flatten(input_type={"input": np.array([4, 3, 3])}, start_dim=0),
         "fc": nir.Affine(weight=w((5, 36), -0.5, 0.4), bias=np.zeros(5)),
         "lif2": _lif(5, 0.75)},
        chain(["input", "conv", "lif1", "avg", "flat", "fc", "lif2", "output"]), 5,
        type_check=False)  # nir 1.0.8 types a Conv2d's input with C_in / groups channels
    graphs["conv_1d.nir"] = _graph(
        [2, 16],
        {"conv": nir.Conv1d(input_shape=16, weight=w((3, 2, 3), -0.2, 0.8), stride=2,
                            padding=1, dilation=2, groups=1, bias=np.zeros(3)),
         "if1": _if((3, 7)),
         "flat": nir.Flatten(input_type={"input": np.array([3, 7])}, start_dim=0),
         "fc": nir.Linear(weight=w((4, 21), -0.6, 0.6)),
         "if2": _if(4)},
        chain(["input", "conv", "if1", "flat", "fc", "if2", "output"]), 4)
    return graphs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="directory (default: tests/data/nir)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name, graph in build().items():
        path = os.path.join(args.out, name)
        nir.write(path, graph)
        print(path)


if __name__ == "__main__":
    main()
