"""Routing throughput and multi-core timestep cost, from the Amaranth simulator (clock cycles).

Spec: ``docs/routing.md``.  Never wall-clock time: every number is a count of simulated clocks.

* **Router alone** (cores played by always-ready sinks): host events that each fan out to
  ``f`` cores, back to back; deliveries per clock and clocks per source.
* **Digits-sized network** ``64 -> 128 (recurrent) -> 10``, input = real 8x8 digits from
  scikit-learn, rate-coded: clocks per timestep (event intake + step) on one core (the
  ``NeuronCore`` alone) and split over two cores (``MultiCore``: router + cores, hidden layer on
  core 0, output layer on core 1), with the measured activity.
* **Wide network** ``64 -> 128 -> (64 | 64)`` on one core and on three: the two output layers
  accumulate the hidden layer's spikes in parallel on their own cores.

Run ``python benchmarks/routing.py`` for a table, ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from amaranth.sim import Simulator

from spikeforge.host.partition import partition
from spikeforge.hw.core_sim import bus_write_block, run_network
from spikeforge.hw.image import CoreConfig
from spikeforge.hw.multicore_sim import run_multicore
from spikeforge.hw.router import Router, RouterConfig, RouterRegion, dest_core, router_address
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.sim.golden import GoldenChip


def router_throughput(fanout: int, n_events: int = 64) -> dict:
    """Host events, each to ``fanout`` cores, with every sink always ready."""
    cfg = RouterConfig(CoreConfig(n_neurons=64, n_inputs=64), cores=4, n_inputs=64)
    r = Router(cfg)
    res = {}

    async def bench(ctx):
        src = [c | fanout << 16 for c in range(0, n_events * fanout, fanout)]
        dest = [dest_core(k, c % 64, False) for c in range(n_events) for k in range(fanout)]
        await bus_write_block(ctx, r, router_address(RouterRegion.SRC), src)
        await bus_write_block(ctx, r, router_address(RouterRegion.DEST), dest)
        for port in r.cores:
            ctx.set(port.events.ready, 1)
        delivered, cycles, k = 0, 0, 0
        while delivered < n_events * fanout:
            ctx.set(r.events.valid, k < n_events)
            ctx.set(r.events.payload, min(k, n_events - 1))
            taken = ctx.get(r.events.ready) and k < n_events
            delivered += sum(ctx.get(p.events.valid) for p in r.cores)
            await ctx.tick()
            cycles += 1
            k += taken
        res.update(fanout=fanout, events=n_events, deliveries=delivered, cycles=cycles,
                   deliveries_per_clock=delivered / cycles, clocks_per_event=cycles / n_events)

    sim = Simulator(r)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return res


def digits_network(seed: int = 0) -> Network:
    """64 -> 128 (LIF, recurrent) -> 10, random integer weights scaled for sparse activity."""
    rng = np.random.default_rng(seed)
    hid = NeuronParams(leak="shift", beta=3, threshold=120, reset="subtract")
    out = NeuronParams(leak="shift", beta=3, threshold=100, reset="subtract")
    w_in = np.clip(rng.normal(4, 24, (64, 128)), -127, 127).astype(int)
    w_rec = np.clip(rng.normal(-2, 10, (128, 128)), -127, 127).astype(int)
    np.fill_diagonal(w_rec, 0)
    w_out = np.clip(rng.normal(6, 30, (128, 10)), -127, 127).astype(int)
    return Network(
        64,
        [Population("hidden", 128, hid), Population("out", 10, out)],
        [Projection(INPUT, "hidden", w_in), Projection("hidden", "hidden", w_rec),
         Projection("hidden", "out", w_out)],
        outputs=["out"],
    )


def digits_events(n_images: int = 2, steps: int = 12, rate: float = 0.5, seed: int = 0):
    """Rate-coded scikit-learn digits: pixel p fires with probability ``rate * p / 16``."""
    from sklearn.datasets import load_digits

    images = load_digits().data[:n_images] / 16.0
    rng = np.random.default_rng(seed)
    return [list(np.flatnonzero(rng.random(64) < rate * img)) for img in images
            for _ in range(steps)]


def digits_cost(steps_events, backward_modes=("queue",)) -> dict:
    net = digits_network()
    gold = GoldenChip(net, "int")
    hidden_spikes, out_spikes = [], []
    for evs in steps_events:
        counts = np.zeros(64, dtype=np.uint8)
        counts[evs] = 1
        s = gold.step(counts)[0]
        hidden_spikes.append(int(s[:128].sum()))
        out_spikes.append(int(s[128:].sum()))
    one_cfg = CoreConfig(n_neurons=256, n_inputs=64, n_populations=2, synapse_words=16384)
    one = run_network(net, one_cfg, steps_events, read_v=False)
    one_cycles = [a + b for a, b in zip(one["event_cycles"], one["step_cycles"], strict=True)]
    core = CoreConfig(n_neurons=128, n_inputs=128, n_populations=2, synapse_words=16384)
    rc = RouterConfig(core, cores=2, n_inputs=64)
    mapping = partition(net, 2, core, assign=[0, 1], router=rc)
    two = run_multicore(net, rc, steps_events, mapping=mapping, read_v=False)
    n = len(steps_events)
    gold_out = []
    gold = GoldenChip(net, "int")
    for evs in steps_events:
        counts = np.zeros(64, dtype=np.uint8)
        counts[evs] = 1
        gold_out.append([int(g) for g in np.flatnonzero(gold.step(counts)[0][128:]) + 128])
    assert one["spikes"] == gold_out and two["spikes"] == gold_out, "spikes differ from golden"
    two_cycles = [a + b for a, b in zip(two["event_cycles"], two["step_cycles"], strict=True)]
    return {
        "network": "64 -> 128 (recurrent) -> 10",
        "timesteps": n,
        "input_activity": float(np.mean([len(e) for e in steps_events]) / 64),
        "hidden_activity": float(np.mean(hidden_spikes) / 128),
        "output_spikes_per_step": float(np.mean(out_spikes)),
        "one_core_clocks_per_step": float(np.mean(one_cycles)),
        "two_core_clocks_per_step": float(np.mean(two_cycles)),
        "two_core_routed_per_step": two["router"]["ROUTED"] / n,
        "two_core_last_step_cycles": two["router"]["LAST_STEP_CYCLES"],
        "one_core_max": int(max(one_cycles)),
        "two_core_max": int(max(two_cycles)),
    }


def wide_network(seed: int = 1) -> Network:
    """64 -> 128 -> (64 | 64): one hidden layer feeding two output layers (no recurrence)."""
    rng = np.random.default_rng(seed)
    p = NeuronParams(leak="shift", beta=3, threshold=120, reset="subtract")
    w = [np.clip(rng.normal(4, 24, shape), -127, 127).astype(int)
         for shape in ((64, 128), (128, 64), (128, 64))]
    return Network(
        64,
        [Population("hidden", 128, p), Population("a", 64, p), Population("b", 64, p)],
        [Projection(INPUT, "hidden", w[0]), Projection("hidden", "a", w[1]),
         Projection("hidden", "b", w[2])],
        outputs=["a", "b"],
    )


def wide_cost(steps_events) -> dict:
    """The wide network on one core and on three (hidden | a | b): a and b accumulate the
    hidden layer's spikes in parallel."""
    net = wide_network()
    one_cfg = CoreConfig(n_neurons=256, n_inputs=64, n_populations=3, synapse_words=16384)
    one = run_network(net, one_cfg, steps_events, read_v=False)
    core = CoreConfig(n_neurons=128, n_inputs=128, n_populations=2, synapse_words=8192)
    rc = RouterConfig(core, cores=3, n_inputs=64)
    mapping = partition(net, 3, core, assign=[0, 1, 2], router=rc)
    three = run_multicore(net, rc, steps_events, mapping=mapping, read_v=False)
    assert one["spikes"] == three["spikes"], "1 core and 3 cores disagree"
    n = len(steps_events)
    one_c = [a + b for a, b in zip(one["event_cycles"], one["step_cycles"], strict=True)]
    three_c = [a + b for a, b in zip(three["event_cycles"], three["step_cycles"], strict=True)]
    return {
        "network": "64 -> 128 -> (64 | 64)",
        "timesteps": n,
        "output_spikes_per_step": float(np.mean([len(x) for x in one["spikes"]])),
        "one_core_clocks_per_step": float(np.mean(one_c)),
        "three_core_clocks_per_step": float(np.mean(three_c)),
        "three_core_routed_per_step": three["router"]["ROUTED"] / n,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--steps", type=int, default=12, help="timesteps per digit image")
    parser.add_argument("--images", type=int, default=2, help="digit images")
    args = parser.parse_args(argv)
    throughput = [router_throughput(f) for f in (1, 2, 3, 4)]
    events = digits_events(args.images, args.steps)
    digits = digits_cost(events)
    wide = wide_cost(events)
    if args.json:
        json.dump({"router": throughput, "digits": digits, "wide": wide}, sys.stdout, indent=2)
        print()
        return
    print("router alone, 64 host events back to back, sinks always ready:")
    print("  fan-out   deliveries/clock   clocks/event")
    for t in throughput:
        print(f"  {t['fanout']:7d}   {t['deliveries_per_clock']:16.3f}   "
              f"{t['clocks_per_event']:12.2f}")
    d = digits
    print(f"\ndigits network {d['network']}, {d['timesteps']} timesteps of rate-coded "
          f"scikit-learn digits:")
    print(f"  activity: input {d['input_activity']:.1%}, hidden {d['hidden_activity']:.1%}, "
          f"output {d['output_spikes_per_step']:.2f} spikes/step")
    print("  configuration                      clocks/step (mean)   max")
    print(f"  1 core  (NeuronCore alone)         {d['one_core_clocks_per_step']:18.1f}   "
          f"{d['one_core_max']}")
    print(f"  2 cores (router, hidden | out)     {d['two_core_clocks_per_step']:18.1f}   "
          f"{d['two_core_max']}")
    print(f"  deliveries routed per step (2 cores): {d['two_core_routed_per_step']:.1f}")
    w = wide
    print(f"\nwide network {w['network']}, same input, {w['output_spikes_per_step']:.1f} output "
          f"spikes/step:")
    print(f"  1 core                             {w['one_core_clocks_per_step']:18.1f}")
    print(f"  3 cores (hidden | a | b)           {w['three_core_clocks_per_step']:18.1f}")
    print(f"  deliveries routed per step (3 cores): {w['three_core_routed_per_step']:.1f}")


if __name__ == "__main__":
    main()
