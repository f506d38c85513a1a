"""Print the Yosys cell statistics of each board's last build: the netlist, before place and route.

Usage::

    python benchmarks/netlist_stats.py                      # build/boards/<board>/top.rpt
    python benchmarks/netlist_stats.py --root other/boards  # another set of builds
    python benchmarks/netlist_stats.py --json

Each cell is read from the ``stat`` Yosys prints at the end of synthesis (``top.rpt`` beside
the bitstream, written by ``spikeforge build``): LUTs, carries, flip-flops (every flavour
summed), block RAMs, DSPs.  Comparing two sets of builds shows what a change to the gateware
did to the netlist, independently of placement noise.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from spikeforge.boards.build import default_out_dir
from spikeforge.boards.configs import BOARDS

__all__ = ["cell_counts", "summary", "main"]

#: (column, cell-type pattern) of the table; every matching type is summed
GROUPS = [
    ("LUT", r"SB_LUT4|LUT4"),
    ("carry", r"SB_CARRY|CCU2C"),
    ("FF", r"SB_DFF\w*|TRELLIS_FF"),
    ("mux", r"PFUMX|L6MUX21"),
    ("LUT RAM", r"TRELLIS_DPR16X4"),
    ("block RAM", r"SB_RAM40_4K\w*|DP16KD"),
    ("SPRAM", r"SB_SPRAM256KA"),
    ("DSP", r"SB_MAC16|MULT18X18D"),
]


def cell_counts(report: str) -> dict[str, int]:
    """``{cell type: count}`` of the last ``stat`` in a Yosys log."""
    start = report.rfind("Printing statistics")
    if start < 0:
        raise ValueError("no 'Printing statistics' section in the Yosys log")
    counts = {}
    for line in report[start:].splitlines():
        match = re.match(r"\s+(\d+) {2,}(\$?[A-Za-z_][\w$]*)\s*$", line)  # "  3724   SB_LUT4"
        if match:
            counts[match[2]] = counts.get(match[2], 0) + int(match[1])
        elif counts and line.strip().startswith("==="):
            break  # the next module's statistics
    return counts


def summary(counts: dict[str, int]) -> dict[str, int]:
    """The table's columns from :func:`cell_counts`."""
    return {
        name: sum(n for cell, n in counts.items() if re.fullmatch(pattern, cell))
        for name, pattern in GROUPS
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--board", action="append", choices=list(BOARDS), help="only this board")
    parser.add_argument("--root", type=Path, default=None, help="builds in ROOT/<board>/")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args = parser.parse_args(argv)
    rows = {}
    for name in args.board or list(BOARDS):
        out_dir = default_out_dir(name) if args.root is None else args.root / name
        path = out_dir / "top.rpt"
        if not path.is_file():
            print(f"{name}: no {path}; run `spikeforge build --board {name}` first",
                  file=sys.stderr)
            continue
        rows[name] = summary(cell_counts(path.read_text(errors="replace")))
    if not rows:
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["board"] + [name for name, _ in GROUPS]
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for name, row in rows.items():
        print("| " + " | ".join([name] + [str(row[h]) for h in headers[1:]]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
