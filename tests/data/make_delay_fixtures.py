"""Regenerate the NIR graphs with ``Delay`` nodes used by ``tests/test_delays_golden.py``.

Built with the ``nir`` package alone (no framework exports ``Delay`` nodes yet), with a fixed
seed, ``dt = 1e-4`` s and snnTorch's conventions (``tau = dt / (1 - beta)``, ``r = tau / dt``, so
the input gain is 1); the settings (``dt``, subtract reset, delayed reset) are stored in the
graph's ``metadata["spikeforge"]``.  Files (in ``tests/data/nir/``):

* ``delay_ff_lif.nir``: ``input -> Delay(1 step) -> Linear -> LIF(6) -> Linear -> Delay(2 steps)
  -> LIF(3)``: projections ``input -> lif1`` with delay 1 and ``lif1 -> lif2`` with delay 2.
* ``delay_max7_lif.nir``: ``input -> Linear -> LIF(6) -> Linear -> Delay(7 steps) -> LIF(3)``:
  the largest delay a core built with ``max_delay = 7`` holds (``docs/core.md``).
* ``delay_rec_cuba.nir``: ``input -> Linear -> CubaLIF(5)``, a recurrent loop ``CubaLIF ->
  Linear -> Delay(2 steps) -> CubaLIF`` and a ``Linear -> CubaLIF(2)`` output layer.  The loop
  is a recurrent projection (``a = 1``, as snnTorch's ``RSynaptic``) with ``delay = 2``: a spike
  of step ``t`` comes back in step ``t + 1 + 2 = t + 3`` (``docs/network.md``, "Synaptic
  delays"; ``docs/compiler.md``, "Delays").

Usage::

    python tests/data/make_delay_fixtures.py            # writes tests/data/nir/delay_*.nir
    python tests/data/make_delay_fixtures.py --out DIR  # elsewhere (the test compares)
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
N_IN = 4


def _lif(n, beta=0.9, thr=1.0):
    tau = DT / (1 - beta)
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / DT), v_leak=np.zeros(n),
                   v_threshold=np.full(n, thr), v_reset=np.zeros(n))


def _cuba(n, alpha=0.8, beta=0.9, thr=1.0):
    tau_syn, tau_mem = DT / (1 - alpha), DT / (1 - beta)
    return nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau_mem),
                       r=np.full(n, tau_mem / DT), v_leak=np.zeros(n),
                       v_threshold=np.full(n, thr), v_reset=np.zeros(n),
                       w_in=np.full(n, tau_syn / DT))


def _delay(n, steps):
    return nir.Delay(delay=np.full(n, steps * DT))


def _graph(nodes, edges, n_out):
    nodes = {"input": nir.Input(input_type={"input": np.array([N_IN])}), **nodes,
             "output": nir.Output(output_type={"output": np.array([n_out])})}
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"spikeforge": json.dumps(SETTINGS)})


def build():
    rng = np.random.default_rng(20261205)

    def w(n_out, n_in, lo=0.0, hi=0.9):
        return rng.uniform(lo, hi, (n_out, n_in))

    graphs = {}
    graphs["delay_ff_lif.nir"] = _graph(
        {"d_in": _delay(N_IN, 1), "fc1": nir.Linear(weight=w(6, N_IN)), "lif1": _lif(6),
         "fc2": nir.Linear(weight=w(3, 6, -0.2, 0.8)), "d2": _delay(3, 2), "lif2": _lif(3)},
        [("input", "d_in"), ("d_in", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "d2"),
         ("d2", "lif2"), ("lif2", "output")], 3)
    graphs["delay_max7_lif.nir"] = _graph(
        {"fc1": nir.Linear(weight=w(6, N_IN)), "lif1": _lif(6),
         "fc2": nir.Linear(weight=w(3, 6, -0.2, 0.8)), "d7": _delay(3, 7), "lif2": _lif(3)},
        [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "d7"), ("d7", "lif2"),
         ("lif2", "output")], 3)
    graphs["delay_rec_cuba.nir"] = _graph(
        {"fc_in": nir.Affine(weight=w(5, N_IN, 0.0, 0.6), bias=np.full(5, 0.02)),
         "cuba": _cuba(5), "w_rec": nir.Linear(weight=w(5, 5, -0.4, 0.5)),
         "d_rec": _delay(5, 2), "fc_out": nir.Linear(weight=w(2, 5, 0.0, 0.8)),
         "out": _cuba(2, 0.7, 0.85, 0.8)},
        [("input", "fc_in"), ("fc_in", "cuba"), ("cuba", "w_rec"), ("w_rec", "d_rec"),
         ("d_rec", "cuba"), ("cuba", "fc_out"), ("fc_out", "out"), ("out", "output")], 2)
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
