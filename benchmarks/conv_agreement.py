"""Per-layer integer-vs-float spike agreement of the CNNs exported by Sinabs and snnTorch (issue
#15) with 8-bit weights (``DEFAULT_FORMAT``) and 16-bit weights (``WIDE_FORMAT``), and how much
of it any finite-precision chip could keep: the float network's agreement with itself under tiny
weight perturbations.

For every CNN of ``tests/data/nir/`` written by ``tests/data/make_cnn_fixtures.py``
(``sinabs_nmnist_cnn``: the N-MNIST reference shape, 8,970 IAF neurons; ``sinabs_cnn_lif``;
``snntorch_cnn``) the graph is imported with the settings of its sidecar JSON (``from_nir(path)``),
quantized with the default ``quantize(net, fmt)`` for each format (its calibration on its own
random input included), and the float and the integer network run in the golden model on the
same random raster: every input channel spikes with probability 0.1 per step, T = 50 steps, 16
samples, NumPy seed 15.  The first table has, per graph, format and population (one per spiking
layer, in the graph's order):

* ``entry``: the share of (step, sample, neuron) spike entries on which the integer network
  agrees with the float one (as ``quantize.compare`` and ``benchmarks/quantization_agreement.py``
  compute it).  This is the metric of issue #15 (target: 99 % in every layer).
* ``alone``: the same for the layer on its own: the integer and the float layer both fed the
  *float* network's spikes of the layer's source (the raster for the first layer).  In a chain
  of IAF layers (no leak: a membrane never forgets a difference) one flipped spike shifts the
  later spikes of every neuron it reaches, so a layer's agreement in the network is lower than
  alone, and lower the deeper it is.
* ``count``: spike-*count* agreement, ``1 - sum |c_int - c_float| / sum (c_int + c_float)`` over
  every (sample, neuron), ``c`` the neuron's number of spikes in the sample's 50 steps (1: every
  neuron fires as often in both networks; the timing of the spikes is ignored).  An extra view of
  how close the rates stay, not a replacement for ``entry``.
* the float and integer firing rates (spikes per neuron per step), the integer threshold and how
  the calibration scaled (``pop``/``neuron`` scales, the largest weight's share of the weight
  range).

The second table, ``sensitivity``, has no quantization in it: per graph and population, the
entry (and count) agreement of the float network (float64) with the same float network whose
every weight ``w`` (each projection's dense matrix, sparse list or convolution kernel) became
``w * (1 + eps * U(-1, 1))``, ``U`` drawn by ``numpy.random.default_rng(0)`` (``--perturb-seed``)
afresh for each ``eps`` (``--eps``, default 1e-4 and 1e-5), on the same raster.  A relative error
of ``eps`` moves every weight by at most ``eps`` times the largest weight, and the smaller weights
by proportionally less; rounding to ``B``-bit weights (calibration filling the range, ``fill 1``)
moves every weight, small or large, by up to half a step, ``0.5 / (2**(B-1) - 1)`` of the largest
one: 0.39 % (``eps`` 3.9e-3 on the largest weight) with 8 bits, 0.0015 % (1.5e-5) with 16.  So
where the float network keeps less than 99 % of its own spike entries at an ``eps`` finer than a
chip's weight resolution, that chip (integer or floating point) cannot be expected to reach 99 %
on this metric, however it rounds: the sensitivity is the floor a finite-precision chip faces, set
by the network (random weights, non-leaky IAF layers whose dense fan-in passes every flipped spike
on to many neurons), not by the chip.  It covers the weights only: a leak, bias or threshold
rounded coarsely (e.g. a LIF layer's ``beta``, see ``QuantReport.precision``) adds its own flips,
which ``alone`` shows.  ``--json`` prints one JSON object.

Usage::

    python benchmarks/conv_agreement.py [--json] [--samples N] [--seed S] [--graphs a,b]
                                        [--eps 1e-4,1e-5] [--perturb-seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from spikeforge.host.nir_import import from_nir  # noqa: E402
from spikeforge.host.quantize import (  # noqa: E402
    QuantizationWarning,
    _run,
    agreement,
    quantize,
)
from spikeforge.network import Conv, Network, Projection, Sparse  # noqa: E402
from spikeforge.sim.golden import GoldenChip  # noqa: E402
from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "nir"
GRAPHS = ("sinabs_nmnist_cnn", "sinabs_cnn_lif", "snntorch_cnn")
RATE, T, SAMPLES, SEED = 0.1, 50, 16, 15
FORMATS = {"8-bit": DEFAULT_FORMAT, "WIDE": WIDE_FORMAT}
TARGET = 0.99
EPS = (1e-4, 1e-5)  # relative weight perturbations of the sensitivity table
PERTURB_SEED = 0


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


def count_agreement(a, b):
    """``1 - sum |c_a - c_b| / sum (c_a + c_b)``, ``c`` the spike counts over the steps of
    spike arrays ``a``, ``b`` of shape (T, batch, n) per (sample, neuron); 1.0 without spikes."""
    ca = np.asarray(a, dtype=np.int64).sum(axis=0)
    cb = np.asarray(b, dtype=np.int64).sum(axis=0)
    total = int((ca + cb).sum())
    return 1.0 - float(np.abs(ca - cb).sum()) / total if total else 1.0


def _per_pop(net, fn, a, b):
    """``{population: fn(a_pop, b_pop)}`` for spike arrays ``a``, ``b`` of ``net``."""
    out = {}
    for pop in net.populations:
        sl = slice(net.base(pop.name), net.base(pop.name) + pop.size)
        out[pop.name] = fn(a[..., sl], b[..., sl])
    return out


def perturb(net, eps, seed=PERTURB_SEED):
    """``net`` with every weight ``w`` of every projection ``w * (1 + eps * U(-1, 1))``
    (float64; a convolution keeps its geometry, its kernel is perturbed)."""
    rng = np.random.default_rng(seed)
    projs = []
    for p in net.projections:
        w = p.weights
        if isinstance(w, Conv):
            k = np.asarray(w.kernel, dtype=np.float64)
            nw = w.with_kernel(k * (1 + eps * rng.uniform(-1, 1, k.shape)))
        elif isinstance(w, Sparse):
            v = np.asarray(w.weights, dtype=np.float64)
            nw = Sparse(w.rows, w.cols, v * (1 + eps * rng.uniform(-1, 1, v.shape)))
        else:
            v = np.asarray(w, dtype=np.float64)
            nw = v * (1 + eps * rng.uniform(-1, 1, v.shape))
        projs.append(replace(p, weights=nw))
    return replace(net, projections=projs)


def _run64(net, x):
    """The float network's spikes on ``x`` in float64 (golden model)."""
    return GoldenChip(net, "float", batch=x.shape[1], dtype=np.float64).run(x)["spikes"]


def sensitivity(net, x, eps=EPS, seed=PERTURB_SEED):
    """``{eps: {population: {"agreement": entry, "count": count}}}``: the float network
    (float64) against itself with weights perturbed by a relative ``eps`` (:func:`perturb`)."""
    ref = _run64(net, x)
    out = {}
    for e in eps:
        got = _run64(perturb(net, e, seed), x)
        entry = _per_pop(net, agreement, ref, got)
        count = _per_pop(net, count_agreement, ref, got)
        out[e] = {k: {"agreement": entry[k], "count": count[k]} for k in entry}
    return out


def measure(graphs=GRAPHS, samples=SAMPLES, seed=SEED, eps=EPS, perturb_seed=PERTURB_SEED):
    """``{graph: {"neurons": n, "formats": {format: {"seconds": s, "calibration": {...},
    "populations": {population: {...}}}}, "sensitivity": {"seconds": s, "eps": {eps:
    {population: {"agreement": a, "count": c}}}}}}``."""
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
            # the two runs of ``compare(q, x, min_agreement=None)``, kept for the counts
            fs = _run(q.float_net, "float", x, fmt)[0]
            ints = _run(q.net, "int", x, fmt)[0]
            entry = _per_pop(q.net, agreement, fs, ints)
            count = _per_pop(q.net, count_agreement, fs, ints)
            own = alone(q, x, fs)
            cal = q.calibration or {}
            per_fmt[fname] = {
                "seconds": time.perf_counter() - t0,
                "calibration": {"per_neuron": cal.get("per_neuron"),
                                "weight_fill": cal.get("weight_fill")},
                "populations": {
                    pop.name: {
                        "size": pop.size,
                        "agreement": entry[pop.name],
                        "alone": own[pop.name],
                        "count": count[pop.name],
                        "rate_float": float(fs[..., sl].mean()),
                        "rate_int": float(ints[..., sl].mean()),
                        "threshold_int": int(np.max(pop.params.threshold)),
                    }
                    for pop in q.net.populations
                    for sl in [slice(q.net.base(pop.name), q.net.base(pop.name) + pop.size)]
                },
            }
        t0 = time.perf_counter()
        sens = sensitivity(net, x, eps, perturb_seed) if eps else {}
        out[name] = {"neurons": net.n_neurons, "formats": per_fmt,
                     "sensitivity": {"seconds": time.perf_counter() - t0, "eps": sens}}
    return out


def _eps_list(text):
    vals = [float(v) for v in text.split(",") if v.strip()]
    if any(not 0 <= v < 1 for v in vals):
        raise ValueError(text)
    return tuple(vals)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--samples", type=int, default=SAMPLES, help=f"default {SAMPLES}")
    ap.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    ap.add_argument("--graphs", default=",".join(GRAPHS), help="comma-separated (default: all)")
    ap.add_argument("--eps", default=",".join(f"{e:g}" for e in EPS),
                    help="relative weight perturbations of the sensitivity table, "
                         "comma-separated (default: %(default)s; empty: none)")
    ap.add_argument("--perturb-seed", type=int, default=PERTURB_SEED,
                    help=f"seed of the perturbations (default {PERTURB_SEED})")
    args = ap.parse_args(argv)
    graphs = [g for g in args.graphs.split(",") if g]
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown:
        ap.error(f"unknown graph {unknown[0]!r}: allowed {', '.join(GRAPHS)}")
    try:
        eps = _eps_list(args.eps)
    except ValueError:
        ap.error(f"--eps {args.eps!r} is not valid: allowed comma-separated numbers in [0, 1)")
    t0 = time.perf_counter()
    res = measure(graphs, args.samples, args.seed, eps, args.perturb_seed)
    total = time.perf_counter() - t0
    if args.json:
        for r in res.values():  # JSON keys are strings
            r["sensitivity"]["eps"] = {f"{e:g}": v for e, v in r["sensitivity"]["eps"].items()}
        print(json.dumps({"raster": {"rate": RATE, "steps": T, "samples": args.samples,
                                     "seed": args.seed},
                          "target": TARGET, "perturb_seed": args.perturb_seed, "seconds": total,
                          "graphs": res}, indent=2))
        return 0
    print(f"raster: {RATE} spikes/channel/step, T={T}, {args.samples} samples, seed {args.seed}; "
          f"target {100 * TARGET:.0f} % per layer (entry agreement)")
    print("entry: equal (step, sample, neuron) entries, int vs float; alone: the layer fed the "
          "float network's source spikes;\ncount: spike-count agreement per (sample, neuron), "
          "1 - sum|c_int - c_float| / sum(c_int + c_float)")
    print(f"{'graph':<19}{'format':<7}{'population':<11}{'neurons':>8}{'entry':>9}"
          f"{'alone':>9}{'count':>9}{'rate float':>12}{'rate int':>10}{'thr int':>9}"
          "  calibration")
    for name, r in res.items():
        for fname, f in r["formats"].items():
            cal = f["calibration"]
            how = (f"{'neuron' if cal['per_neuron'] else 'pop'} scales, fill "
                   f"{cal['weight_fill']:g}, {f['seconds']:.1f} s")
            for pop, v in f["populations"].items():
                flag = "" if v["agreement"] >= TARGET else " <"
                print(f"{name:<19}{fname:<7}{pop:<11}{v['size']:>8}"
                      f"{100 * v['agreement']:>8.2f}%{100 * v['alone']:>8.2f}%"
                      f"{100 * v['count']:>8.2f}%{v['rate_float']:>12.4f}"
                      f"{v['rate_int']:>10.4f}{v['threshold_int']:>9}  {how}{flag}")
                how = ""
    print("lowest per-layer entry agreement: " + ", ".join(
        f"{name} {fname} {100 * min(p['agreement'] for p in f['populations'].values()):.2f} %"
        for name, r in res.items() for fname, f in r["formats"].items()))
    print("lowest per-layer count agreement: " + ", ".join(
        f"{name} {fname} {100 * min(p['count'] for p in f['populations'].values()):.2f} %"
        for name, r in res.items() for fname, f in r["formats"].items()))
    if eps:
        print(f"\nsensitivity: the float64 network vs itself with every weight "
              f"w * (1 + eps U(-1,1)) (seed {args.perturb_seed}); entry / count agreement")
        print(f"{'graph':<19}{'population':<11}{'neurons':>8}"
              + "".join(f"{f'eps {e:g}':>20}" for e in eps) + "  seconds")
        for name, r in res.items():
            sens = r["sensitivity"]
            secs = f"  {sens['seconds']:.1f} s"
            sizes = next(iter(r["formats"].values()))["populations"]
            for pop in sens["eps"][eps[0]]:
                cells = ""
                for e in eps:
                    v = sens["eps"][e][pop]
                    cells += f"{100 * v['agreement']:>11.2f} /{100 * v['count']:>7.2f}"
                print(f"{name:<19}{pop:<11}{sizes[pop]['size']:>8}{cells}{secs}")
                secs = ""
        lows = []
        for name, r in res.items():
            per_eps = r["sensitivity"]["eps"]
            lows.append(f"{name} " + ", ".join(
                f"eps {e:g} {100 * min(v['agreement'] for v in per_eps[e].values()):.2f} %"
                for e in eps))
        print("lowest per-layer sensitivity (entry): " + "; ".join(lows))
    print(f"({total:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
