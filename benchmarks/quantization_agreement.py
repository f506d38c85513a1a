"""Integer-vs-float spike agreement of the recurrent CubaLIF snnTorch graphs (issue #14) with
8-bit weights (``DEFAULT_FORMAT``) and 16-bit weights (``WIDE_FORMAT``).

Four quantizations per graph (the rows' ``format``):

* ``8-bit before``: ``quantize(net, DEFAULT_FORMAT, calibrate=None)``, the quantizer as it was
  (one scale per population, the largest weight at 127);
* ``8-bit``: ``quantize(net, DEFAULT_FORMAT)``, with the calibration choosing the scales;
* ``8-bit+expE``: 8-bit weights with a per-projection weight exponent (``w = m << e``, Loihi's
  weight exponent) and the 16-bit state, *emulated* in the golden model: the largest weight
  into a population is scaled to ``127 << E`` (E = 1..4), so the threshold gets ``2**E`` times
  the levels, and each projection's weights are rounded to 8-bit mantissas times ``2**e``.
  Not built: these rows are why (the threshold gains levels, the weights do not, and a larger
  E saturates the 16-bit state sooner);
* ``WIDE``: ``quantize(net, WIDE_FORMAT)`` (16-bit weights, 24-bit state; board
  ``ulx3s-85f-wide``).

For every ``tests/data/nir/snntorch_rcuba_*.nir`` (written by ``tests/data/make_rcuba_fixtures.py``;
weights 5, 10 or 15 times the threshold) the graph is imported with the settings of its sidecar
JSON (``from_nir(path)``: ``dt``, ``reset``, ``reset_delay``), quantized with ``quantize(net,
fmt)`` for each format, and both networks run in the golden model on the same random raster
(``compare(q, raster, min_agreement=None)``): 0.15 spikes per input channel per step, T = 50
steps, 128 samples, NumPy seed 14.  The table has, per graph, format and population, the share of
(step, sample, neuron) spike entries on which the integer network agrees with the float one, the
float and integer firing rates (spikes per neuron per step) and the integer threshold (membrane
levels per threshold).  ``--json`` prints one JSON object.

Usage::

    python benchmarks/quantization_agreement.py [--json] [--samples N] [--seed S]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from spikeforge.host.nir_import import from_nir, read_nir  # noqa: E402
from spikeforge.host.quantize import (  # noqa: E402
    QuantizationWarning,
    _quantize_once,
    compare,
    quantize,
)
from spikeforge.network import Network, Projection  # noqa: E402
from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir"
RATE, T, SAMPLES, SEED = 0.15, 50, 128, 14
#: the largest exponents tried in the emulation
EXPONENTS = (1, 2, 3, 4)

#: 16-bit weight codes in a 16-bit state: the arithmetic of 8-bit mantissas shifted left
EXPONENT_FORMAT = replace(DEFAULT_FORMAT, weight_bits=16, acc_bits=32)


def with_exponent(net, e_max):
    """The ``8-bit+exp`` emulation: per-projection weights ``m << e``, ``m`` 8-bit, the largest
    weight into a population at ``127 << e_max``."""
    q = _quantize_once(net, EXPONENT_FORMAT, False, "mult", 1.0, 127 * 2.0 ** e_max / 32767)
    lo, hi = EXPONENT_FORMAT.weight_range
    projs = []
    for p in q.net.projections:
        w = q.net.dense_weights(p).astype(np.int64)
        e = max(0, int(np.ceil(np.log2(max(1, np.abs(w).max()) / 127))))
        m = np.clip(np.rint(w / 2.0 ** e), -128, 127).astype(np.int64)
        projs.append(Projection(p.src, p.dst, np.clip(m << e, lo, hi)))
    q.net = Network(q.net.n_inputs, q.net.populations, projs, list(q.net.outputs))
    return q


#: the quantizations compared, by row label
FORMATS = {
    "8-bit before": lambda net: quantize(net, DEFAULT_FORMAT, calibrate=None),
    "8-bit": lambda net: quantize(net, DEFAULT_FORMAT),
    # the best exponent for the graph, chosen on the measured raster itself (optimistic)
    **{f"8-bit+exp{e}": (lambda net, e=e: with_exponent(net, e)) for e in EXPONENTS},
    "WIDE": lambda net: quantize(net, WIDE_FORMAT),
}


def fixtures():
    """``{name: path}`` of the recurrent CubaLIF graphs, sorted by name."""
    paths = sorted(glob.glob(str(DATA / "snntorch_rcuba_*.nir")))
    return {os.path.basename(p)[len("snntorch_rcuba_"):-len(".nir")]: p for p in paths}


def raster(n_inputs, samples=SAMPLES, seed=SEED, rate=RATE, steps=T):
    rng = np.random.default_rng(seed)
    return (rng.random((steps, samples, n_inputs)) < rate).astype(np.uint8)


def measure(samples=SAMPLES, seed=SEED):
    """``{graph: {"settings": {...}, "formats": {format: {population: {...}}}}}``."""
    out = {}
    for name, path in fixtures().items():
        _, settings = read_nir(path)
        net = from_nir(path)
        x = raster(net.n_inputs, samples, seed)
        per_fmt = {}
        for fname, make in FORMATS.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantizationWarning)
                q = make(net)
            rep = compare(q, x, min_agreement=None)
            per_fmt[fname] = {
                pop.name: {
                    "agreement": rep.agreement[pop.name],
                    "rate_float": rep.rates_float[pop.name],
                    "rate_int": rep.rates_int[pop.name],
                    "threshold_int": int(np.max(pop.params.threshold)),
                }
                for pop in q.net.populations
            }
        out[name] = {"settings": {"reset": settings.reset, "reset_delay": settings.reset_delay},
                     "formats": per_fmt}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--samples", type=int, default=SAMPLES, help=f"default {SAMPLES}")
    ap.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    args = ap.parse_args(argv)
    res = measure(args.samples, args.seed)
    if args.json:
        print(json.dumps({"raster": {"rate": RATE, "steps": T, "samples": args.samples,
                                     "seed": args.seed},
                          "graphs": res}, indent=2))
        return 0
    print(f"raster: {RATE} spikes/channel/step, T={T}, {args.samples} samples, seed {args.seed}")
    print(f"{'graph':<22}{'format':<14}{'population':<12}{'agreement':>10}{'rate float':>12}"
          f"{'rate int':>10}{'thr int':>9}")
    for name, r in res.items():
        for fname, pops in r["formats"].items():
            for pop, v in pops.items():
                print(f"{name:<22}{fname:<14}{pop:<12}{v['agreement']:>10.4f}"
                      f"{v['rate_float']:>12.4f}{v['rate_int']:>10.4f}{v['threshold_int']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
