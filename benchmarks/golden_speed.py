"""Timesteps per second of the golden model (integer and float mode) against snnTorch.

The network is the usual snnTorch tutorial shape, ``nn.Linear -> Leaky -> nn.Linear -> Leaky``
with 64 inputs, 256 hidden and 10 output neurons, run for 25 timesteps on a random 0/1 input
raster, at batch 1, 64 and 256.  All three models get the same raster and the same weights
(the integer model gets integer weights; the float golden model and snnTorch get those weights
divided by 100), run side by side in one process; snnTorch runs under ``torch.no_grad()`` with
``torch.set_num_threads`` set to the machine's cores (``--torch-threads``).

The three models are measured *alternately*: each repetition times one round of every model, in
a rotating order, and each model's figure is the median over the repetitions.  A burst of load
from another process then hits all three models alike, and the ratios (golden / snnTorch) are
fair within one run even on a shared machine.  The machine's load average (``os.getloadavg``)
before and after the run and the torch thread count are recorded: on a loaded machine snnTorch's
threads suffer much more than the single-threaded golden model, which flatters the ratios.

A *timestep* is one step of the whole batch, so ``steps/s`` at batch 256 processes 256 times
as many sample-steps as at batch 1.  The float golden model's spikes are also compared with
snnTorch's (see tests/test_golden_float.py).

Usage::

    python benchmarks/golden_speed.py            # table
    python benchmarks/golden_speed.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection  # noqa: E402
from spikeforge.sim.golden import GoldenChip  # noqa: E402

N_IN, N_HID, N_OUT, T = 64, 256, 10, 25
BATCHES = (1, 64, 256)
MODELS = ("golden_int", "golden_float", "snntorch")


def _interleaved(fns, seconds, repeats):
    """Median seconds per call of each function in ``fns``, measured alternately.

    Every function is warmed up and timed once to choose its calls per round (about
    ``seconds / repeats`` each); then each of ``repeats`` repetitions times one round of every
    function, starting with a different one each time.  Returns ``{name: median seconds per
    call}`` and ``{name: [seconds per call of every round]}``.
    """
    calls = {}
    for name, fn in fns.items():
        fn()  # warm-up
        t0 = time.perf_counter()
        fn()
        one = max(time.perf_counter() - t0, 1e-6)
        calls[name] = max(1, int(seconds / repeats / one))
    names = list(fns)
    rounds = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, n = fns[name], calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            rounds[name].append((time.perf_counter() - t0) / n)
    return {name: statistics.median(v) for name, v in rounds.items()}, rounds


def build(seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.integers(-20, 21, (N_IN, N_HID))
    w2 = rng.integers(-20, 21, (N_HID, N_OUT))
    b1 = rng.integers(-10, 11, N_HID)
    b2 = rng.integers(-10, 11, N_OUT)

    def net(scale, beta, thr):
        def params(b):
            return NeuronParams(beta=beta, threshold=thr, bias=b / scale if scale != 1 else b)
        return Network(N_IN, [Population("hidden", N_HID, params(b1)),
                              Population("out", N_OUT, params(b2))],
                       [Projection(INPUT, "hidden", w1 if scale == 1 else w1 / scale),
                        Projection("hidden", "out", w2 if scale == 1 else w2 / scale)])

    int_net = net(1, 3891, 100)  # beta = 3891 / 4096 = 0.95
    float_net = net(100, 0.95, 1.0)
    return int_net, float_net, (w1 / 100, b1 / 100, w2 / 100, b2 / 100)


def bench(seconds=2.0, batches=BATCHES, seed=0, torch_threads=None, repeats=7):
    """Measure the three models at every batch size; returns one flat dict (see ``--json``).

    ``seconds`` is the time budget of each model at each batch size, split over ``repeats``
    interleaved repetitions.
    """
    import snntorch as snn
    import torch

    torch.set_num_threads(torch_threads or os.cpu_count() or 1)
    int_net, float_net, (w1, b1, w2, b2) = build(seed)
    fc1, fc2 = torch.nn.Linear(N_IN, N_HID), torch.nn.Linear(N_HID, N_OUT)
    with torch.no_grad():
        fc1.weight.copy_(torch.tensor(w1.T, dtype=torch.float32))
        fc1.bias.copy_(torch.tensor(b1, dtype=torch.float32))
        fc2.weight.copy_(torch.tensor(w2.T, dtype=torch.float32))
        fc2.bias.copy_(torch.tensor(b2, dtype=torch.float32))
    lif1, lif2 = snn.Leaky(beta=0.95), snn.Leaky(beta=0.95)

    results = {"threads": torch.get_num_threads(), "torch_threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "timesteps": T, "shape": f"{N_IN}-{N_HID}-{N_OUT}",
               "repeats": repeats, "seconds_per_measurement": seconds,
               "loadavg_start": list(os.getloadavg()), "numpy": np.__version__,
               "torch": torch.__version__, "snntorch": snn.__version__,
               "batches": list(batches)}
    rng = np.random.default_rng(seed + 1)
    for batch in batches:
        raster = rng.random((T, batch, N_IN)) < 0.2
        x = torch.tensor(raster, dtype=torch.float32)
        chips = {
            "golden_int": GoldenChip(int_net, "int", batch=batch),
            "golden_float": GoldenChip(float_net, "float", batch=batch),
        }

        def snntorch_run(x=x):
            with torch.no_grad():
                m1, m2 = lif1.reset_mem(), lif2.reset_mem()
                rec1, rec2 = [], []
                for t in range(T):
                    s1, m1 = lif1(fc1(x[t]), m1)
                    s2, m2 = lif2(fc2(s1), m2)
                    rec1.append(s1)
                    rec2.append(s2)
                return torch.stack(rec1), torch.stack(rec2)

        def golden_run(chip, raster=raster):
            chip.reset()
            return chip.run(raster, record_v=False)["spikes"]

        fns = {name: (lambda chip=chip: golden_run(chip)) for name, chip in chips.items()}
        fns["snntorch"] = snntorch_run
        med, rounds = _interleaved(fns, seconds * len(fns), repeats)
        row = {f"{name}_steps_per_s": T / med[name] for name in MODELS}
        for name in chips:
            row[f"{name}_vs_snntorch"] = med["snntorch"] / med[name]
            # the spread of the per-repetition ratios (rounds are adjacent in time)
            paired = [s / g for g, s in zip(rounds[name], rounds["snntorch"], strict=True)]
            row[f"{name}_vs_snntorch_min"] = min(paired)
            row[f"{name}_vs_snntorch_max"] = max(paired)
        s1, s2 = snntorch_run()
        ref = np.concatenate([s1.numpy(), s2.numpy()], axis=2) > 0
        got = golden_run(chips["golden_float"])
        row["float_spike_agreement"] = float((got == ref).mean())
        row["spikes_per_step"] = float(got.sum() / T / batch)
        for key, value in row.items():
            results[f"{key}_batch{batch}"] = value
    results["loadavg_end"] = list(os.getloadavg())
    big = max(batches)
    for name in MODELS:
        results[f"{name}_steps_per_s"] = results[f"{name}_steps_per_s_batch{big}"]
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="time budget per model and batch size (default 2)")
    ap.add_argument("--repeats", type=int, default=7,
                    help="interleaved repetitions per batch size (default 7)")
    ap.add_argument("--batch", type=int, action="append",
                    help="batch sizes (default 1, 64, 256)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads (default: the machine's cores)")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1 or any(b < 1 for b in args.batch or ()):
        ap.error("--seconds must be > 0, --repeats and --batch >= 1")
    res = bench(args.seconds, tuple(args.batch or BATCHES), torch_threads=args.torch_threads,
                repeats=args.repeats)
    if args.json:
        print(json.dumps(res, sort_keys=True))
        return
    la0, la1 = res["loadavg_start"], res["loadavg_end"]
    print(f"{res['shape']} Linear+Leaky network, {T} timesteps, torch threads "
          f"{res['torch_threads']} of {res['cpu_count']} cores, {res['repeats']} interleaved "
          f"repetitions (median); timesteps per second of the whole batch")
    print(f"load average (1/5/15 min): {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f} at the start, "
          f"{la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f} at the end")
    print(f"{'batch':>6} {'golden int':>12} {'golden float':>13} {'snnTorch':>10} "
          f"{'int/snn':>8} {'float/snn':>9} {'float spikes == snn':>20}")
    for b in res["batches"]:
        gi, gf = res[f"golden_int_steps_per_s_batch{b}"], res[f"golden_float_steps_per_s_batch{b}"]
        st = res[f"snntorch_steps_per_s_batch{b}"]
        ri, rf = res[f"golden_int_vs_snntorch_batch{b}"], res[f"golden_float_vs_snntorch_batch{b}"]
        agree = res[f"float_spike_agreement_batch{b}"]
        print(f"{b:>6} {gi:>12.0f} {gf:>13.0f} {st:>10.0f} {ri:>8.2f} {rf:>9.2f} "
              f"{agree:>20.4%}")


if __name__ == "__main__":
    main()
