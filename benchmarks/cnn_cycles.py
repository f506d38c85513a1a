"""The N-MNIST-shaped CNN on a convolution chip: fit, chip = golden model, cycles per timestep.

The network is Sinabs' export of the NIR reference CNN for N-MNIST with random weights
(``tests/data/nir/sinabs_nmnist_cnn.nir``: Conv2d 2->16 5x5 stride 2 on 34x34, IAF, Conv2d
16->16 3x3, IAF, SumPool 2, Conv2d 16->8 3x3, IAF, SumPool 2, Flatten, Linear 128->256, IAF,
Linear 256->10, IAF; 8,970 neurons).  It is compiled for ``--board`` (default
``ulx3s-85f-conv``: weight-shared blocks, ``docs/core.md``), run on random input events on the
board's virtual board (the chip's RTL in Verilator) and on the golden model, and compared spike
for spike in every layer.  Cycles per timestep are the chip's own ``LAST_STEP_CYCLES``: the
first ``--cycle-steps`` steps of one sample, each measured as the last step of a run of that
length (every run starts from the reset state, so step ``t`` of each is the same step).

Prints a table; ``--json`` prints the same as one JSON object.  Needs the ``[sim]`` extra
(Verilator); the first run builds the chip (a few minutes).

    python benchmarks/cnn_cycles.py
    python benchmarks/cnn_cycles.py --steps 20 --samples 2 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from core_cycles import _sops  # noqa: E402

from spikeforge.boards.configs import get_board  # noqa: E402
from spikeforge.host.backends import open_backend  # noqa: E402
from spikeforge.host.compiler import compile as compile_model  # noqa: E402
from spikeforge.host.image import SharedBlock  # noqa: E402
from spikeforge.network import Conv, Network  # noqa: E402
from spikeforge.sim.golden import GoldenChip  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "tests", "data", "nir", "sinabs_nmnist_cnn.nir")


def _all_outputs(net: Network) -> Network:
    return Network(net.n_inputs, net.populations, net.projections,
                   [p.name for p in net.populations])


def measure(model=MODEL, board="ulx3s-85f-conv", steps=20, samples=2, rate=0.1,
            cycle_steps=8, seed=0):
    """Compile, fit, run on the virtual board and the golden model; the result as a dict."""
    b = get_board(board)
    config = b.chip.to_core_config()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = compile_model(model, config)
    net = compiled.net
    layout = compiled.fit.layout
    convs = [p for p in net.projections if isinstance(p.weights, Conv)]
    fit = {
        "neurons": net.n_neurons,
        "chip_neurons": config.n_neurons,
        "inputs": net.n_inputs,
        "descriptor_entries": layout.entries,
        "shared_blocks": sum(isinstance(bl, SharedBlock) for bl in layout.blocks),
        "conv_words": len(layout.conv),
        "chip_conv_words": config.conv_words,
        "weight_slots": len(layout.slots),
        "chip_weight_slots": config.weight_slots,
        "kernel_weights": sum(p.weights.n_weights for p in convs),
        "unrolled_conv_box_slots": sum(p.weights.n_src * p.weights.n_dst for p in convs),
    }
    rng = np.random.default_rng(seed)
    raster = (rng.random((steps, samples, net.n_inputs)) < rate).astype(np.uint8)

    golden = GoldenChip(net, batch=samples).run(raster)["spikes"]
    backend = open_backend(f"virtual:{b.name}")
    try:
        # every layer's spikes: all populations are outputs for the comparison
        full = _all_outputs(net)
        backend.load(full)
        start = time.perf_counter()
        chip = backend.run(raster)
        wall = time.perf_counter() - start
        layers = []
        for pop in net.populations:
            sl = slice(net.base(pop.name), net.base(pop.name) + pop.size)
            layers.append({
                "layer": pop.name,
                "neurons": pop.size,
                "spikes_per_step": float(golden[:, :, sl].sum() / steps / samples),
                "mismatches": int((chip[:, :, sl] != golden[:, :, sl]).sum()),
            })
        # cycles: the network as compiled (only its outputs go to the host)
        backend.load(net)
        cycles = []
        for t in range(1, cycle_steps + 1):
            backend.run(raster[:t, :1])
            status = backend.chip_status()
            counts = raster[t - 1, 0]
            events = [int(c) for c in np.flatnonzero(counts)]
            spikes = golden[t - 1, 0]
            cycles.append({
                "step": t,
                "cycles": int(status["core_last_step_cycles"]),
                "events": len(events),
                "input_sops": int(_sops(net, config, events, np.zeros_like(spikes))),
                "spikes": int(spikes.sum()),
                "sops": int(_sops(net, config, [], spikes)),
            })
    finally:
        backend.close()
    return {
        "board": b.name,
        "model": os.path.relpath(model, ROOT),
        "steps": steps,
        "samples": samples,
        "rate": rate,
        "quantization_warnings": [str(w.message).splitlines()[0] for w in caught],
        "fit": fit,
        "layers": layers,
        "chip_equals_golden": all(row["mismatches"] == 0 for row in layers),
        "chip_run_s": wall,
        "cycles": cycles,
        "mean_cycles_per_step": float(np.mean([c["cycles"] for c in cycles])),
        "sops_per_cycle": float(sum(c["sops"] for c in cycles)
                                / sum(c["cycles"] for c in cycles)),
        "mean_input_sops_per_step": float(np.mean([c["input_sops"] for c in cycles])),
        "clock_mhz": b.chip.clock_mhz,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--board", default="ulx3s-85f-conv")
    parser.add_argument("--model", default=MODEL, help="a NIR graph (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.1,
                        help="input events per channel per step")
    parser.add_argument("--cycle-steps", type=int, default=8,
                        help="steps whose cycles are measured")
    args = parser.parse_args(argv)
    r = measure(args.model, args.board, args.steps, args.samples, args.rate, args.cycle_steps)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return
    f = r["fit"]
    print(f"{r['model']} on {r['board']} ({r['steps']} steps x {r['samples']} samples, "
          f"input rate {r['rate']}):")
    print(f"  neurons            {f['neurons']:>10,} of {f['chip_neurons']:,}")
    print(f"  descriptor entries {f['descriptor_entries']:>10} ({f['shared_blocks']} weight-shared "
          f"blocks)")
    print(f"  CONV words         {f['conv_words']:>10,} of {f['chip_conv_words']:,}")
    print(f"  weight slots       {f['weight_slots']:>10,} of {f['chip_weight_slots']:,} "
          f"(kernels {f['kernel_weights']:,}; unrolled, the convolutions' boxes would be "
          f"{f['unrolled_conv_box_slots']:,})")
    print(f"\n  {'layer':>8} {'neurons':>8} {'spikes/step':>12} {'chip != golden':>15}")
    for row in r["layers"]:
        print(f"  {row['layer']:>8} {row['neurons']:>8} {row['spikes_per_step']:>12.1f} "
              f"{row['mismatches']:>15}")
    print(f"  chip = golden model: {r['chip_equals_golden']}  (chip run {r['chip_run_s']:.1f} s)")
    print("\n  a step: the input events are delivered (their SOPs, about a clock each, while the "
          "core is idle),\n  then the step runs (its cycles: LAST_STEP_CYCLES, the SOPs of "
          "the neurons' spikes)")
    print(f"  {'step':>5} {'events':>7} {'input SOPs':>11} {'spikes':>7} {'step SOPs':>10} "
          f"{'step cycles':>12}")
    for c in r["cycles"]:
        print(f"  {c['step']:>5} {c['events']:>7} {c['input_sops']:>11} {c['spikes']:>7} "
              f"{c['sops']:>10} {c['cycles']:>12}")
    us = r["mean_cycles_per_step"] / r["clock_mhz"]
    print(f"  mean {r['mean_cycles_per_step']:.0f} step cycles ({us:.0f} us at "
          f"{r['clock_mhz']:g} MHz; {r['sops_per_cycle']:.3f} SOPs per cycle) + "
          f"{r['mean_input_sops_per_step']:.0f} input SOPs per step")
    for w in r["quantization_warnings"]:
        print(f"  note: {w}")


if __name__ == "__main__":
    main()
