"""Netlist virtual board against the RTL virtual board: simulation speed of the same chip.

Loads the demo's network (the bundled digit classifier, compiled as ``spikeforge demo`` does)
and runs ``--samples`` test digits on the RTL virtual board of ``--board``'s chip and on its
post-synthesis netlist virtual board (:mod:`spikeforge.sim.netlist`), both built first if not
cached (the build times are reported only when they happen in this run).  Prints a table;
``--json`` prints one JSON object with, for ``rtl`` and ``netlist``:

* ``run_s``, ``cycles``, ``busy_cycles``: wall seconds and simulated clock cycles (all, and
  those in which the chip was busy) of the run of the samples (the network already loaded).
* ``cycles_per_s``, ``samples_per_s``: simulated cycles and samples per wall-clock second of
  that run: the simulation speed.
* ``load_s``, ``load_cycles``: the same for loading the network.
* ``identical``: the output populations' spikes equal the golden model's.
* ``build_s``: wall seconds of the build in this run (``null`` if it was cached).

and ``netlist_over_rtl_cycles_per_s`` / ``netlist_over_rtl_samples_per_s``: the netlist's speed
as a fraction of the RTL's, plus the netlist's level (``post-synthesis``) and its synthesis time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _workload(samples):
    """The bundled digit classifier (as ``spikeforge demo`` compiles it) and ``samples`` test
    digits, rate-encoded, with the golden model's integer spikes."""
    from spikeforge.boards.configs import get_board
    from spikeforge.host.coding import rate_encode
    from spikeforge.host.compiler import compile
    from spikeforge.host.demo import load_bundled, load_digits_split
    from spikeforge.sim.golden import GoldenChip

    path, meta = load_bundled("snntorch")
    (_, _), (x_test, _) = load_digits_split()
    enc = meta["encoder"]
    raster = rate_encode(x_test[:samples], meta["timesteps"], seed=enc["seed"],
                         x_max=enc["x_max"])
    compiled = compile(path, get_board("icebreaker").chip.to_core_config())  # fits both
    net = compiled.net
    gold = GoldenChip(net, "int", batch=raster.shape[1], fmt=compiled.fmt).run(
        raster, record_v=False)["spikes"]
    return net, raster, gold


def _run(exe, net, raster, gold):
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(exe) as vb:
        with ChipBackend(vb.url, timeout=60.0) as backend:
            s0, t0 = vb.stats(), time.perf_counter()
            backend.load(net)
            s1, t1 = vb.stats(), time.perf_counter()
            spikes = backend.run(raster)
            s2, t2 = vb.stats(), time.perf_counter()
    cycles = s2.cycles - s1.cycles
    out = net.output_indices()  # the chip reports the output populations' spikes
    return {
        "load_s": t1 - t0,
        "load_cycles": s1.cycles - s0.cycles,
        "run_s": t2 - t1,
        "cycles": cycles,
        "busy_cycles": s2.busy_cycles - s1.busy_cycles,
        "cycles_per_s": cycles / (t2 - t1),
        "samples_per_s": raster.shape[1] / (t2 - t1),
        "identical": bool(np.array_equal(np.asarray(spikes, dtype=bool)[:, :, out],
                                         np.asarray(gold, dtype=bool)[:, :, out])),
    }


def _timed(build):
    t0 = time.perf_counter()
    exe = build()
    return exe, time.perf_counter() - t0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--board", default="icebreaker", help="whose chip to simulate")
    parser.add_argument("--samples", type=int, default=20, help="demo samples per board")
    args = parser.parse_args(argv)

    from spikeforge.boards.configs import get_board
    from spikeforge.sim.netlist import LEVEL, build_netlist_board, synthesize_chip
    from spikeforge.sim.virtual_board import build_virtual_board, chip_for_board

    args.board = get_board(args.board).name  # "ulx3s" -> "ulx3s-85f": the cached build's name
    name = f"spikeforge_{args.board.replace('-', '_')}"
    rtl_exe, rtl_build = _timed(lambda: build_virtual_board(chip_for_board(args.board), name))
    net_exe, net_build = _timed(lambda: build_netlist_board(args.board))
    net = synthesize_chip(args.board, announce=False)
    result = {"board": args.board, "level": LEVEL, "samples": args.samples,
              "synth_s": net.synth_seconds}
    work = _workload(args.samples)
    for key, exe, build_s in (("rtl", rtl_exe, rtl_build), ("netlist", net_exe, net_build)):
        result[key] = _run(exe, *work)
        result[key]["build_s"] = build_s if build_s > 5 else None  # a cache hit takes < 5 s
    result["netlist_over_rtl_cycles_per_s"] = (
        result["netlist"]["cycles_per_s"] / result["rtl"]["cycles_per_s"])
    result["netlist_over_rtl_samples_per_s"] = (
        result["netlist"]["samples_per_s"] / result["rtl"]["samples_per_s"])
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.board}: {args.samples} demo samples, RTL vs {LEVEL} netlist virtual board")
    print(f"{'':22s} {'RTL':>14s} {'netlist':>14s}")
    rows = [("samples/s", "samples_per_s", "{:14.2f}"),
            ("simulated cycles/s", "cycles_per_s", "{:14,.0f}"),
            ("simulated cycles", "cycles", "{:14,d}"),
            ("busy cycles", "busy_cycles", "{:14,d}"),
            ("run s", "run_s", "{:14.2f}"),
            ("load s", "load_s", "{:14.2f}"),
            ("identical to golden", "identical", "{!s:>14s}"),
            ("build s (this run)", "build_s", "{:14.1f}")]
    for label, key, fmt in rows:
        cells = []
        for side in ("rtl", "netlist"):
            v = result[side][key]
            cells.append(f"{'cached':>14s}" if v is None else fmt.format(v))
        print(f"{label:22s} {cells[0]} {cells[1]}")
    print(f"netlist / RTL speed: {result['netlist_over_rtl_cycles_per_s']:.3f} (cycles/s), "
          f"{result['netlist_over_rtl_samples_per_s']:.3f} (samples/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
