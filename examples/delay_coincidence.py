"""Coincidence detection with a synaptic delay: what a delay-free network cannot do.

Two input channels, A and B, each fire once; B fires ``o`` steps after A.  A detector neuron
should fire for exactly one offset, ``o = K``.  The network::

    input A, B --(10)--> relay (2 IF neurons: one spike per input spike, same step)
    relay[A] --(10, delay K)--> detector
    relay[B] --(10, delay 0)--> detector       (detector: threshold 15, beta = 0, zero reset)

The detector forgets its membrane every step (beta = 0), so it fires only when both spikes
arrive in one step (10 + 10 > 15 > 10): relay A's spike, delayed by ``K``, coincides with B's
when ``o = K`` (``docs/network.md``, "Synaptic delays").  The inputs go through a relay
population because the chip refuses delays on input projections.

Without delays, the detector of step ``t`` sees only the relay spikes of step ``t``, and for
``o != 0`` A and B are never in the same step: whatever the weights and the threshold, it
responds to A alone and B alone the same way for every ``o != 0``, so it cannot single out
``o = K``.  The script checks that exhaustively on the golden model: one delay-free network with
one detector neuron per (w_A, w_B, threshold), every 8-bit weight pair and several thresholds.

Usage::

    python examples/delay_coincidence.py                  # the golden model (integer, bit-exact)
    python examples/delay_coincidence.py --port virtual   # the chip in Verilator (needs a core
                                                          # with max_delay >= K; any --port of
                                                          # spikeforge run works)
    python examples/delay_coincidence.py --k 5

Runs in about a second on the golden model.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from spikeforge.errors import SpikeforgeError  # noqa: E402
from spikeforge.host.backends import open_backend  # noqa: E402
from spikeforge.network import (  # noqa: E402
    INPUT,
    Network,
    NeuronParams,
    Population,
    Projection,
)
from spikeforge.sim.golden import GoldenChip  # noqa: E402

W, THRESHOLD, START = 10, 15, 3
RELAY = NeuronParams(leak="none", threshold=5, reset="zero", reset_delay=False)


def detector_params(threshold=THRESHOLD):
    """Integer LIF with beta = 0 (decay code 0): the membrane is this step's input only."""
    return NeuronParams(leak="mult", beta=0, threshold=threshold, reset="zero")


def network(k, w_a=W, w_b=W, delays=True):
    """input -> relay -> detector, relay A delayed by ``k`` (0 without ``delays``)."""
    pops = [Population("relay", 2, RELAY), Population("detector", 1, detector_params())]
    projs = [
        Projection(INPUT, "relay", np.eye(2, dtype=np.int64) * W),
        Projection("relay", "detector", np.array([[w_a], [0]]), k if delays else 0),
        Projection("relay", "detector", np.array([[0], [w_b]]), 0),
    ]
    return Network(2, pops, projs, ["relay", "detector"])


def patterns(offsets, steps):
    """One sample per offset: A fires in step START, B in step START + offset."""
    raster = np.zeros((steps, len(offsets), 2), np.uint8)
    for b, o in enumerate(offsets):
        raster[START, b, 0] = 1
        raster[START + o, b, 1] = 1
    return raster


def exhaustive_delay_free(offsets, k, steps, thresholds=(1, 5, 10, 15, 50, 127, 255)):
    """How many delay-free detectors (every 8-bit (w_A, w_B) and each threshold) fire for
    offset ``k`` and for no other offset: one network, one detector neuron per combination."""
    wa, wb, th = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), thresholds,
                             indexing="ij")
    wa, wb, th = wa.ravel(), wb.ravel(), th.ravel()
    n = wa.size
    pops = [Population("relay", 2, RELAY), Population("detector", n, detector_params(th))]
    projs = [Projection(INPUT, "relay", np.eye(2, dtype=np.int64) * W),
             Projection("relay", "detector", np.stack([wa, wb]))]
    net = Network(2, pops, projs, ["detector"])
    spikes = GoldenChip(net, "int", batch=len(offsets)).run(
        patterns(offsets, steps), record_v=False)["spikes"]
    fired = spikes[:, :, 2:].any(axis=0)  # (offset, detector)
    want = np.array([o == k for o in offsets])
    ok = np.all(fired == want[:, None], axis=0)
    return int(ok.sum()), n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", default="golden",
                    help="backend: golden (default), virtual, virtual:BOARD or a board's port")
    ap.add_argument("--k", type=int, default=3, help="the offset to detect, 1..7 (default 3)")
    args = ap.parse_args(argv)
    if not 1 <= args.k <= 7:
        ap.error(f"--k {args.k} is out of range: allowed 1..7 (a core's max_delay is 7)")
    start = time.perf_counter()
    k = args.k
    offsets = list(range(-START, k + 4))
    steps = START + max(offsets) + k + 2
    raster = patterns(offsets, steps)
    delayed, plain = network(k), network(k, delays=False)
    det = delayed.base("detector")
    try:
        with open_backend(args.port) as backend:
            backend.load(delayed)
            s_delayed = np.asarray(backend.run(raster))
            backend.load(plain)
            s_plain = np.asarray(backend.run(raster))
    except SpikeforgeError as exc:  # e.g. a chip without delays: say why, in one line
        print(f"delay_coincidence.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(f"backend {args.port}: detector fires when B comes {k} steps after A "
          f"(relay A -> detector delayed by {k})")
    print(f"{'offset B-A':>10} {'A step':>6} {'B step':>6}   {'delayed':>12}   {'no delay':>12}")
    hits = []
    for b, o in enumerate(offsets):
        fd = np.flatnonzero(s_delayed[:, b, det]).tolist()
        fp = np.flatnonzero(s_plain[:, b, det]).tolist()
        if fd:
            hits.append(o)

        def cell(f):
            return f"fires @ {','.join(map(str, f))}" if f else "-"
        print(f"{o:>10} {START:>6} {START + o:>6}   {cell(fd):>12}   {cell(fp):>12}")
    if hits == [k]:
        print(f"delayed network detects only offset {k}")
    else:
        print(f"delayed network detects offsets {hits}, expected only {k}")
    good, n = exhaustive_delay_free(offsets, k, steps)
    if good == 0:
        print(f"no delay-free weights detect offset {k} alone: 0 of {n} detectors "
              f"(every 8-bit w_A, w_B x 7 thresholds, golden model)")
    else:
        print(f"{good} of {n} delay-free detectors detect offset {k} alone (unexpected)")
    print(f"({time.perf_counter() - start:.2f} s)")
    return 0 if hits == [k] and good == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
