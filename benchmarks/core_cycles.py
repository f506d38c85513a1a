"""Clock cycles of the neuron core, from the Amaranth simulator (never wall-clock time).

Spec: ``docs/core.md`` (performance model).  Measures

* synaptic operations per clock per lane under dense input (every input channel fires, each fans
  out to a whole layer);
* clocks per timestep at input activity 0 / 1 / 10 / 100 % on a two-layer network;
* a least-squares fit ``cycles ~ a + b * synaptic_events + c * neurons (+ d * spikes)`` over
  networks of several sizes and activities.

Run ``python benchmarks/core_cycles.py`` for a table, ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from spikeforge.host.image import SharedBlock, compile_blocks
from spikeforge.hw.core_sim import run_network
from spikeforge.hw.image import ConvEntry, CoreConfig, unpack
from spikeforge.network import INPUT, Conv2d, Network, NeuronParams, Population, Projection
from spikeforge.sim.golden import GoldenChip


def _sops(net, cfg, events, golden_spikes):
    """Synaptic operations the core performs: every slot of every block a source is in."""
    layout = compile_blocks(net, cfg)
    starts = np.cumsum([0] + [b.entries for b in layout.blocks])[:-1]

    def ops(b, o):
        if isinstance(b, SharedBlock):  # rows x run per output channel (docs/core.md)
            e = unpack(ConvEntry, layout.conv[b.table + o - b.first])
            return e["rows"] * e["run"] * b.channels
        return b.length

    def cost(key, o):
        first, count = layout.lists[key]
        return sum(ops(b, o) for b, e in zip(layout.blocks, starts, strict=True)
                   if first <= e < first + count and b.first <= o < b.first + b.count)

    total = sum(cost(("input", None), c) for c in events)
    for n in np.flatnonzero(golden_spikes):
        for pop in net.populations:
            o = int(n) - net.base(pop.name)
            if 0 <= o < pop.size:
                total += cost(("forward", pop.name), o) + cost(("recurrent", pop.name), o)
    return total


def _run(net, cfg, steps, core_options):
    """Run ``steps`` (lists of input channels) on a core built with ``core_options``
    (``NeuronCore`` arguments); per step: cycles, input events, SOPs, spikes."""
    res = run_network(net, cfg, steps, read_v=False, **core_options)
    golden = GoldenChip(net, fmt=cfg.fmt)
    rows = []
    for t, evs in enumerate(steps):
        counts = np.bincount(np.asarray(evs, dtype=np.int64), minlength=net.n_inputs)
        spikes = golden.step(counts)[0]
        rows.append(
            {
                "cycles": res["event_cycles"][t] + res["step_cycles"][t],
                "events": len(evs),
                "sops": _sops(net, cfg, evs, spikes),
                "spikes": int(spikes.sum()),
                "neurons": net.n_neurons,
            }
        )
    assert res["status"]["PARAM_ERRORS"] == 0
    return rows


def dense_throughput(n_inputs, n_neurons, lanes=1, **core_options):
    """SOP per clock when every input fires into a dense layer (no neuron spikes)."""
    cfg = CoreConfig(n_neurons=n_neurons, n_inputs=n_inputs, n_populations=2,
                     synapse_words=n_inputs * n_neurons // 2 + 16, lanes=lanes)
    net = Network(
        n_inputs,
        [Population("a", n_neurons, NeuronParams(leak="none", threshold=30000))],
        [Projection(INPUT, "a", np.ones((n_inputs, n_neurons), dtype=np.int64))],
    )
    idle, busy = _run(net, cfg, [[], list(range(n_inputs))], core_options)
    extra = busy["cycles"] - idle["cycles"]
    return busy["sops"] / extra / lanes, idle["cycles"], extra


def conv_throughput(c_in=8, c_out=16, size=16, kernel=3, stride=1, lanes=1, seed=0,
                    **core_options):
    """SOP per clock per lane of a weight-shared convolution (``docs/core.md``, "Weight-shared
    blocks"): every input of a ``c_in x size x size`` image fires into a ``kernel x kernel``
    convolution to ``c_out`` channels (padding ``kernel // 2``), no neuron spikes."""
    rng = np.random.default_rng(seed)
    conv = Conv2d(rng.integers(1, 20, (c_out, c_in, kernel, kernel)), (size, size),
                  stride=stride, padding=kernel // 2)
    n = -(-conv.n_dst // lanes) * lanes
    cfg = CoreConfig(n_neurons=n, n_inputs=conv.n_src, n_populations=2, lanes=lanes,
                     synapse_words=conv.n_weights + 64, conv_words=conv.n_src)
    net = Network(
        conv.n_src,
        [Population("a", conv.n_dst, NeuronParams(leak="none", threshold=30000))],
        [Projection(INPUT, "a", conv)],
    )
    idle, busy = _run(net, cfg, [[], list(range(conv.n_src))], core_options)
    extra = busy["cycles"] - idle["cycles"]
    return {
        "layer": f"Conv2d {c_in}->{c_out} {kernel}x{kernel} stride {stride} on {size}x{size}",
        "sops": busy["sops"],
        "synapses": conv.n_synapses,
        "cycles": extra,
        "sop_per_cycle_per_lane": busy["sops"] / extra / lanes,
        "kernel_slots": conv.n_weights,
    }


#: the convolution layers of ``--conv``: a 3x3 layer with 16 and 8 output channels, and a 5x5
#: stride-2 one like the N-MNIST CNN's first
CONV_LAYERS = [
    {"c_in": 4, "c_out": 16, "size": 8},
    {"c_in": 4, "c_out": 8, "size": 8},
    {"c_in": 2, "c_out": 16, "size": 12, "kernel": 5, "stride": 2},
]


def conv_main(lanes, options, as_json):
    rows = [conv_throughput(**layer, lanes=lanes, **options) for layer in CONV_LAYERS]
    if as_json:
        json.dump({"lanes": lanes, **options, "conv": rows}, sys.stdout, indent=2)
        print()
        return
    print(f"weight-shared convolutions, every input firing, {lanes} lane(s):")
    print(f"  {'layer':44s} {'SOPs':>7} {'clocks':>7} {'SOP/clock/lane':>15}")
    for r in rows:
        print(f"  {r['layer']:44s} {r['sops']:>7} {r['cycles']:>7} "
              f"{r['sop_per_cycle_per_lane']:>15.4f}")


def two_layer(n_inputs, hidden, out, seed=0, lanes=1):
    rng = np.random.default_rng(seed)
    cfg = CoreConfig(n_neurons=hidden + out, n_inputs=n_inputs, n_populations=2,
                     synapse_words=(n_inputs * hidden + hidden * out) // 2 + 16, lanes=lanes)
    net = Network(
        n_inputs,
        [Population("h", hidden, NeuronParams(leak="shift", beta=3, threshold=60)),
         Population("o", out, NeuronParams(leak="shift", beta=3, threshold=60))],
        [Projection(INPUT, "h", rng.integers(-8, 25, (n_inputs, hidden))),
         Projection("h", "o", rng.integers(-8, 25, (hidden, out)))],
        outputs=["o"],
    )
    return net, cfg


def activity_table(n_inputs=64, hidden=96, out=32, steps=4, seed=1, lanes=1, **core_options):
    net, cfg = two_layer(n_inputs, hidden, out, lanes=lanes)
    rng = np.random.default_rng(seed)
    table = []
    for activity in (0.0, 0.01, 0.1, 1.0):
        raster = [
            [c for c in range(n_inputs) if rng.random() < activity] for _ in range(steps)
        ]
        rows = _run(net, cfg, raster, core_options)
        table.append(
            {
                "activity": activity,
                "cycles_per_step": float(np.mean([r["cycles"] for r in rows])),
                "events_per_step": float(np.mean([r["events"] for r in rows])),
                "sops_per_step": float(np.mean([r["sops"] for r in rows])),
                "spikes_per_step": float(np.mean([r["spikes"] for r in rows])),
                "neurons": net.n_neurons,
            }
        )
    return table


def fit(seed=2, lanes=1, **core_options):
    """Least squares over several sizes and activities."""
    rng = np.random.default_rng(seed)
    rows = []
    for hidden, out in ((24, 8), (48, 16), (96, 32)):
        net, cfg = two_layer(32, hidden, out, seed=hidden, lanes=lanes)
        raster = [
            [c for c in range(32) if rng.random() < a] for a in (0.0, 0.05, 0.2, 0.5, 1.0)
        ]
        rows += _run(net, cfg, raster, core_options)
    y = np.array([r["cycles"] for r in rows], dtype=float)
    a3 = np.array([[1, r["sops"], r["neurons"]] for r in rows], dtype=float)
    a4 = np.array([[1, r["sops"], r["neurons"], r["spikes"] + r["events"]] for r in rows],
                  dtype=float)
    c3, *_ = np.linalg.lstsq(a3, y, rcond=None)
    c4, *_ = np.linalg.lstsq(a4, y, rcond=None)
    return {
        "a": c3[0], "b_per_sop": c3[1], "c_per_neuron": c3[2],
        "max_rel_error": float(np.max(np.abs(a3 @ c3 - y) / y)),
        "fit4": {"a": c4[0], "b_per_sop": c4[1], "c_per_neuron": c4[2],
                 "d_per_event_or_spike": c4[3],
                 "max_rel_error": float(np.max(np.abs(a4 @ c4 - y) / y))},
        "points": len(rows),
    }


def recurrent_digits(steps=25, activity=0.33, seed=3, lanes=1, **core_options):
    """A digits-sized network with recurrence: 64 -> 128 (recurrent) -> 10.

    ``activity`` 0.33 gives ~21 input events per step, what the rate-coded digits give
    (``spikeforge demo``: 187,891 events over 360 x 25 steps).  Events routed = input events
    + neuron spikes (each spike is routed to the host and/or through its fan-outs).
    """
    rng = np.random.default_rng(seed)
    n_in, hidden, out = 64, 128, 10
    rec = rng.integers(-6, 7, (hidden, hidden)) * (rng.random((hidden, hidden)) < 0.1)
    net = Network(
        n_in,
        [Population("h", hidden, NeuronParams(beta=3891, threshold=400)),
         Population("o", out, NeuronParams(beta=3891, threshold=200))],
        [Projection(INPUT, "h", rng.integers(-20, 25, (n_in, hidden))),
         Projection("h", "h", rec),
         Projection("h", "o", rng.integers(-10, 30, (hidden, out)))],
        outputs=["o"],
    )
    cfg = CoreConfig(n_neurons=-(-(hidden + out) // lanes) * lanes, n_inputs=n_in,
                     n_populations=2, synapse_words=16384, lanes=lanes)
    raster = [[c for c in range(n_in) if rng.random() < activity] for _ in range(steps)]
    rows = _run(net, cfg, raster, core_options)
    cycles = sum(r["cycles"] for r in rows)
    routed = sum(r["events"] + r["spikes"] for r in rows)
    return {
        "network": "64 -> 128 (recurrent, 10 % dense) -> 10",
        "steps": steps,
        "cycles_per_step": cycles / steps,
        "input_events_per_step": sum(r["events"] for r in rows) / steps,
        "spikes_per_step": sum(r["spikes"] for r in rows) / steps,
        "sops_per_step": sum(r["sops"] for r in rows) / steps,
        "events_routed_per_cycle": routed / cycles,
        "sops_per_cycle": sum(r["sops"] for r in rows) / cycles,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--neurons", type=int, default=128, help="dense layer size")
    parser.add_argument("--inputs", type=int, default=64, help="input channels")
    parser.add_argument("--lanes", type=int, default=1, choices=[1, 2, 4],
                        help="parallel lanes of the core")
    parser.add_argument("--weight-banks", type=int, default=1,
                        help="weight memory banks (NeuronCore weight_banks; the ULX3S uses 16)")
    parser.add_argument("--fast", action="store_true",
                        help="the fast build of the core (NeuronCore fast=True, as on the ULX3S)")
    parser.add_argument("--conv", action="store_true",
                        help="only the weight-shared convolution layers (docs/core.md)")
    args = parser.parse_args(argv)
    options = {"weight_banks": args.weight_banks, "fast": args.fast}
    if args.conv:
        return conv_main(args.lanes, options, args.json)

    lanes = args.lanes
    sop, idle, _ = dense_throughput(args.inputs, args.neurons, lanes, **options)
    table = activity_table(lanes=lanes, **options)
    f = fit(lanes=lanes, **options)
    digits = recurrent_digits(lanes=lanes, **options)
    result = {
        "lanes": lanes,
        "weight_banks": args.weight_banks,
        "fast": args.fast,
        "sop_per_cycle_per_lane": sop,
        "neurons": args.neurons,
        "cycles_per_step_idle": idle,
        "activity": table,
        "fit": f,
        "recurrent_digits": digits,
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2, default=float)
        print()
        return
    build = f", {args.weight_banks} weight banks" if args.weight_banks > 1 else ""
    build += ", fast build" if args.fast else ""
    print(f"dense input, {args.inputs} channels x {args.neurons} neurons, {lanes} lane(s){build}:")
    print(f"  synaptic ops per clock per lane : {sop:.4f}")
    print(f"  idle timestep ({args.neurons} neurons) : {idle} clocks")
    n = table[0]["neurons"]
    print(f"\ntwo-layer network 64 -> 96 -> 32 ({n} neurons), clocks per timestep:")
    print(f"  {'activity':>8} {'events':>8} {'SOPs':>8} {'spikes':>7} {'clocks':>8}")
    for row in table:
        print(
            f"  {row['activity']:>8.0%} {row['events_per_step']:>8.1f} "
            f"{row['sops_per_step']:>8.0f} {row['spikes_per_step']:>7.1f} "
            f"{row['cycles_per_step']:>8.0f}"
        )
    print(f"\nleast squares over {f['points']} steps (3 sizes x 5 activities):")
    print(
        f"  cycles ~ {f['a']:.1f} + {f['b_per_sop']:.3f} * SOPs + {f['c_per_neuron']:.3f} * "
        f"neurons   (max relative error {f['max_rel_error']:.1%})"
    )
    g = f["fit4"]
    print(
        f"  cycles ~ {g['a']:.1f} + {g['b_per_sop']:.3f} * SOPs + {g['c_per_neuron']:.3f} * "
        f"neurons + {g['d_per_event_or_spike']:.2f} * (events + spikes)   "
        f"(max relative error {g['max_rel_error']:.1%})"
    )
    d = digits
    print(f"\n{d['network']}, {d['input_events_per_step']:.1f} input events per step:")
    print(f"  clocks per timestep    : {d['cycles_per_step']:.0f}")
    print(f"  spikes per timestep    : {d['spikes_per_step']:.1f}")
    print(f"  SOPs per timestep      : {d['sops_per_step']:.0f}  "
          f"({d['sops_per_cycle']:.3f} per clock)")
    print(f"  events routed per clock: {d['events_routed_per_cycle']:.4f}")


if __name__ == "__main__":
    main()
