"""Integer-vs-float spike agreement of the recurrent CubaLIF snnTorch graphs (issue #14) with
8-bit weights (``DEFAULT_FORMAT``) and 16-bit weights (``WIDE_FORMAT``).

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from spikeforge.host.nir_import import from_nir, read_nir  # noqa: E402
from spikeforge.host.quantize import compare, quantize  # noqa: E402
from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir"
RATE, T, SAMPLES, SEED = 0.15, 50, 128, 14
FORMATS = {"DEFAULT_FORMAT": DEFAULT_FORMAT, "WIDE_FORMAT": WIDE_FORMAT}


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
        for fname, fmt in FORMATS.items():
            q = quantize(net, fmt)
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
    print(f"{'graph':<22}{'format':<16}{'population':<12}{'agreement':>10}{'rate float':>12}"
          f"{'rate int':>10}{'thr int':>9}")
    for name, r in res.items():
        for fname, pops in r["formats"].items():
            for pop, v in pops.items():
                print(f"{name:<22}{fname:<16}{pop:<12}{v['agreement']:>10.4f}"
                      f"{v['rate_float']:>12.4f}{v['rate_int']:>10.4f}{v['threshold_int']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
