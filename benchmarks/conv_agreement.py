"""Per-layer integer-vs-float spike agreement of the CNNs exported by Sinabs and snnTorch (issue
#15) with 8-bit weights (``DEFAULT_FORMAT``) and 16-bit weights (``WIDE_FORMAT``).

For every CNN of ``tests/data/nir/`` written by ``tests/data/make_cnn_fixtures.py``
(``sinabs_nmnist_cnn``: the N-MNIST reference shape, 8,970 IAF neurons; ``sinabs_cnn_lif``;
``snntorch_cnn``) the graph is imported with the settings of its sidecar JSON (``from_nir(path)``),
quantized with the default ``quantize(net, fmt)`` for each format (its calibration on its own
random input included), and the float and the integer network run in the golden model on the
same random raster (``compare(q, raster, min_agreement=None)``): every input channel spikes
with probability 0.1 per step, T = 50 steps, 16 samples, NumPy seed 15.  The table has, per
graph, format and population (one per spiking layer, in the graph's order), the share of
(step, sample, neuron) spike entries on which the integer network agrees with the float one (as
``quantize.compare`` and ``benchmarks/quantization_agreement.py``), the float and integer firing
rates (spikes per neuron per step), the integer threshold and how the calibration scaled
(``pop``/``neuron`` scales, the largest weight's share of the weight range).  ``--json`` prints
one JSON object.

The ``alone`` column separates a layer's own rounding from what it inherits: the integer and the
float layer, on their own, both fed the *float* network's spikes of the layer's source (the
raster for the first layer).  In a chain of IAF layers (no leak: a membrane never forgets a
difference) one flipped spike shifts the later spikes of every neuron it reaches, so a layer's
agreement in the network is lower than alone, and lower the deeper it is.

Usage::

    python benchmarks/conv_agreement.py [--json] [--samples N] [--seed S] [--graphs a,b]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from spikeforge.host.nir_import import from_nir  # noqa: E402
from spikeforge.host.quantize import (  # noqa: E402
    QuantizationWarning,
    _run,
    agreement,
    compare,
    quantize,
)
from spikeforge.network import Network, Projection  # noqa: E402
from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir"
GRAPHS = ("sinabs_nmnist_cnn", "sinabs_cnn_lif", "snntorch_cnn")
RATE, T, SAMPLES, SEED = 0.1, 50, 16, 15
FORMATS = {"8-bit": DEFAULT_FORMAT, "WIDE": WIDE_FORMAT}
TARGET = 0.99


def raster(n_inputs, samples=SAMPLES, seed=SEED, rate=RATE, steps=T):
    rng = np.random.default_rng(seed)
    return (rng.random((steps, samples, n_inputs)) < rate).astype(np.uint8)


def _layer(net, pop, n_in):
    """``pop`` of ``net`` alone, fed by its (single) source through the input channels."""
    projs = [p for p in net.projections if p.dst == pop.name]
    if len({p.src for p in projs}) != 1:
        raise ValueError(f"population {pop.name!r} has {len(projs)} sources: not a chain")
    return Network(n_in, [pop], [Projection("input", pop.name, p.weights, p.delay)
                                 for p in projs], [pop.name])


def alone(q, x, float_spikes):
    """Per population, the agreement of the integer and the float layer when both are fed the
    *float* network's spikes of their source (the input raster for the first): the layer's own
    quantization error, without the flips its source layers pass on."""
    out = {}
    fnet = q.float_net
    for pop, fpop in zip(q.net.populations, fnet.populations, strict=True):
        src = next(p.src for p in fnet.projections if p.dst == pop.name)
        if src == "input":
            inp = x
        else:
            b = fnet.base(src)
            inp = float_spikes[..., b:b + fnet.population(src).size].astype(np.uint8)
        a = _run(_layer(fnet, fpop, inp.shape[2]), "float", inp, q.fmt)[0]
        i = _run(_layer(q.net, pop, inp.shape[2]), "int", inp, q.fmt)[0]
        out[pop.name] = agreement(a, i)
    return out


def measure(graphs=GRAPHS, samples=SAMPLES, seed=SEED):
    """``{graph: {"neurons": n, "formats": {format: {"seconds": s, "calibration": {...},
    "populations": {population: {...}}}}}}``."""
    out = {}
    for name in graphs:
        net = from_nir(str(DATA / f"{name}.nir"))
        x = raster(net.n_inputs, samples, seed)
        per_fmt = {}
        for fname, fmt in FORMATS.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantizationWarning)
                q = quantize(net, fmt)
            rep = compare(q, x, min_agreement=None)
            own = alone(q, x, _run(q.float_net, "float", x, fmt)[0])
            cal = q.calibration or {}
            per_fmt[fname] = {
                "seconds": time.perf_counter() - t0,
                "calibration": {"per_neuron": cal.get("per_neuron"),
                                "weight_fill": cal.get("weight_fill")},
                "populations": {
                    pop.name: {
                        "size": pop.size,
                        "agreement": rep.agreement[pop.name],
                        "alone": own[pop.name],
                        "rate_float": rep.rates_float[pop.name],
                        "rate_int": rep.rates_int[pop.name],
                        "threshold_int": int(np.max(pop.params.threshold)),
                    }
                    for pop in q.net.populations
                },
            }
        out[name] = {"neurons": net.n_neurons, "formats": per_fmt}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--samples", type=int, default=SAMPLES, help=f"default {SAMPLES}")
    ap.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    ap.add_argument("--graphs", default=",".join(GRAPHS), help="comma-separated (default: all)")
    args = ap.parse_args(argv)
    graphs = [g for g in args.graphs.split(",") if g]
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown:
        ap.error(f"unknown graph {unknown[0]!r}: allowed {', '.join(GRAPHS)}")
    t0 = time.perf_counter()
    res = measure(graphs, args.samples, args.seed)
    total = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"raster": {"rate": RATE, "steps": T, "samples": args.samples,
                                     "seed": args.seed},
                          "target": TARGET, "seconds": total, "graphs": res}, indent=2))
        return 0
    print(f"raster: {RATE} spikes/channel/step, T={T}, {args.samples} samples, seed {args.seed}; "
          f"target {100 * TARGET:.0f} % per layer")
    print(f"{'graph':<19}{'format':<7}{'population':<11}{'neurons':>8}{'agreement':>11}"
          f"{'alone':>9}{'rate float':>12}{'rate int':>10}{'thr int':>9}  calibration")
    for name, r in res.items():
        for fname, f in r["formats"].items():
            cal = f["calibration"]
            how = (f"{'neuron' if cal['per_neuron'] else 'pop'} scales, fill "
                   f"{cal['weight_fill']:g}, {f['seconds']:.1f} s")
            for pop, v in f["populations"].items():
                flag = "" if v["agreement"] >= TARGET else " <"
                print(f"{name:<19}{fname:<7}{pop:<11}{v['size']:>8}"
                      f"{100 * v['agreement']:>10.2f}%{100 * v['alone']:>8.2f}%"
                      f"{v['rate_float']:>12.4f}"
                      f"{v['rate_int']:>10.4f}{v['threshold_int']:>9}  {how}{flag}")
                how = ""
    print("lowest per-layer agreement: " + ", ".join(
        f"{name} {fname} {100 * min(p['agreement'] for p in f['populations'].values()):.2f} %"
        for name, r in res.items() for fname, f in r["formats"].items()))
    print(f"({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
