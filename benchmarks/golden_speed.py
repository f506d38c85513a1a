"""Timesteps per second of the golden model (integer and float mode) against snnTorch.

The network is the usual snnTorch tutorial shape, ``nn.Linear -> Leaky -> nn.Linear -> Leaky``
with 64 inputs, 256 hidden and 10 output neurons, run for 25 timesteps on a random 0/1 input
raster, at batch 1 and batch 256.  All three models get the same raster and the same weights
(the integer model gets integer weights; the float golden model and snnTorch get those weights
divided by 100), run side by side in one process; snnTorch runs under ``torch.no_grad()`` with
``torch.set_num_threads`` set to the machine's cores.

A *timestep* is one step of the whole batch, so ``steps/s`` at batch 256 processes 256 times
as many sample-steps as at batch 1.  The float golden model's spikes are also compared with
snnTorch's (they agree bit for bit; see tests/test_golden_float.py).

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
BATCHES = (1, 256)


def _timeit(fn, seconds, repeats=5):
    """Median seconds per call of ``fn`` over ``repeats`` rounds of about ``seconds / repeats``."""
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, int(seconds / repeats / one))
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t0) / calls)
    return statistics.median(rounds)


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


def bench(seconds=2.0, batches=BATCHES, seed=0, torch_threads=None):
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

    results = {"threads": torch.get_num_threads(), "timesteps": T,
               "shape": f"{N_IN}-{N_HID}-{N_OUT}"}
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

        row = {}
        for name, chip in chips.items():
            row[name] = T / _timeit(lambda chip=chip: golden_run(chip), seconds)
        row["snntorch"] = T / _timeit(snntorch_run, seconds)
        s1, s2 = snntorch_run()
        ref = np.concatenate([s1.numpy(), s2.numpy()], axis=2) > 0
        got = golden_run(chips["golden_float"])
        row["float_spike_agreement"] = float((got == ref).mean())
        row["spikes_per_step"] = float(got.sum() / T / batch)
        for key, value in row.items():
            results[f"{key}_steps_per_s_batch{batch}" if key in (*chips, "snntorch")
                    else f"{key}_batch{batch}"] = value
    big = max(batches)
    for name in ("golden_int", "golden_float", "snntorch"):
        results[f"{name}_steps_per_s"] = results[f"{name}_steps_per_s_batch{big}"]
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default 1, 256)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads (default: the machine's cores)")
    args = ap.parse_args(argv)
    res = bench(args.seconds, tuple(args.batch or BATCHES), torch_threads=args.torch_threads)
    if args.json:
        print(json.dumps(res, sort_keys=True))
        return
    print(f"{res['shape']} Linear+Leaky network, {T} timesteps, torch threads "
          f"{res['threads']} (timesteps per second of the whole batch)")
    print(f"{'batch':>6} {'golden int':>12} {'golden float':>13} {'snnTorch':>10} "
          f"{'int/snn':>8} {'float/snn':>9} {'float spikes == snn':>20}")
    for b in sorted({int(k.rsplit('batch', 1)[1]) for k in res if 'batch' in k}):
        gi, gf = res[f"golden_int_steps_per_s_batch{b}"], res[f"golden_float_steps_per_s_batch{b}"]
        st = res[f"snntorch_steps_per_s_batch{b}"]
        agree = res[f"float_spike_agreement_batch{b}"]
        print(f"{b:>6} {gi:>12.0f} {gf:>13.0f} {st:>10.0f} {gi / st:>8.2f} {gf / st:>9.2f} "
              f"{agree:>20.4%}")


if __name__ == "__main__":
    main()
