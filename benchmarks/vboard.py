"""Virtual board benchmark: start-up with a cached build, and the idle-driven harness against the
old fixed-batch harness, side by side in one run.

Prints a table; ``--json`` prints one JSON object with:

* ``startup_cached_s``: wall seconds from a fresh ``python`` process to a listening virtual board
  of ``--board``'s chip whose build is cached (interpreter start, imports, cache lookup, process
  start; median of ``--startup-runs``).
* ``cache_lookup_s``: of that, ``build_virtual_board`` finding the cached build (the key: hashes
  of the chip's source files and parameters).
* ``verilog_generation_s``: what the old start-up spent on every start to compute its key:
  converting the chip to Verilog (``virtual_board_verilog``).
* ``old`` / ``new``: ``spikeforge demo`` (the bundled digit classifier, ``--samples`` samples)
  through the harness with ``--ignore-idle`` (the old harness: fixed 4,096-cycle batches,
  replies at the end of a batch) and through the idle-driven harness: ``samples_per_s`` (wall
  clock) and ``cycles_per_busy_cycle`` (simulated cycles / cycles the chip was busy, during the
  classification).
* ``speedup_samples_per_s``: new / old samples per second.
* ``vboard_cycles_per_busy_cycle``: the new harness's cycles per busy cycle.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

_STARTUP = """
import sys, time
t0 = time.perf_counter()
from spikeforge.sim.virtual_board import VirtualBoard, build_virtual_board, chip_for_board
t1 = time.perf_counter()
exe = build_virtual_board(chip_for_board(sys.argv[1]), sys.argv[2])
t2 = time.perf_counter()
with VirtualBoard(exe) as vb:
    print(f"READY {t1 - t0} {t2 - t1}", flush=True)
"""


def _startup(board, name):
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _STARTUP, board, name],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    wall = time.perf_counter() - start
    proc.wait(30)
    if not line.startswith("READY"):
        raise SystemExit(f"the start-up probe failed (exit code {proc.returncode})")
    _, imports, lookup = line.split()
    return wall, float(imports), float(lookup)


def _demo(exe, samples, ignore_idle):
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.host.demo import run_demo
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(exe, ignore_idle=ignore_idle) as vb:
        with ChipBackend(vb.url, timeout=30.0) as backend:
            # the load and the classification both run through the harness; the stats cover
            # both, the samples per second only the classification (run_demo's own timing)
            before = vb.stats()
            res = run_demo(backend, samples=samples, progress=False)
            after = vb.stats()
    cycles = after.cycles - before.cycles
    busy = after.busy_cycles - before.busy_cycles
    return {
        "samples_per_s": res["throughput"]["samples_per_s"],
        "seconds": res["throughput"]["seconds"],
        "cycles": cycles,
        "busy_cycles": busy,
        "cycles_per_busy_cycle": cycles / busy if busy else float("nan"),
        "accuracy_chip": res["accuracy_chip"],
        "identical": res["identical"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--board", default="ulx3s-85f", help="whose chip to simulate")
    parser.add_argument("--samples", type=int, default=40, help="demo samples per harness")
    parser.add_argument("--startup-runs", type=int, default=3, help="start-ups to time")
    parser.add_argument("--skip-demo", action="store_true", help="only time the start-up")
    args = parser.parse_args(argv)

    from spikeforge.hw.util import mark_used
    from spikeforge.sim.virtual_board import (
        build_virtual_board,
        chip_for_board,
        virtual_board_verilog,
    )

    name = f"spikeforge_{args.board.replace('-', '_')}"
    exe = build_virtual_board(chip_for_board(args.board), name)  # builds once if needed
    runs = [_startup(args.board, name) for _ in range(args.startup_runs)]
    t0 = time.perf_counter()
    top = chip_for_board(args.board)
    virtual_board_verilog(top, name)
    verilog_s = time.perf_counter() - t0
    mark_used(top)
    result = {
        "board": args.board,
        "startup_cached_s": statistics.median(r[0] for r in runs),
        "imports_s": statistics.median(r[1] for r in runs),
        "cache_lookup_s": statistics.median(r[2] for r in runs),
        "verilog_generation_s": verilog_s,
    }
    if not args.skip_demo:
        old = _demo(exe, args.samples, ignore_idle=True)
        new = _demo(exe, args.samples, ignore_idle=False)
        result.update({
            "samples": args.samples,
            "old": old,
            "new": new,
            "speedup_samples_per_s": new["samples_per_s"] / old["samples_per_s"],
            "vboard_cycles_per_busy_cycle": new["cycles_per_busy_cycle"],
        })
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'metric':34s} value")
    for k, v in result.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                print(f"{k + '.' + kk:34s} {vv:,.3f}" if isinstance(vv, float)
                      else f"{k + '.' + kk:34s} {vv}")
        else:
            print(f"{k:34s} {v:,.3f}" if isinstance(v, float) else f"{k:34s} {v}")


if __name__ == "__main__":
    main()
