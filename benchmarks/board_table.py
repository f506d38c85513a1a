"""Print the README's board table: one row per board, every cell read from a build report.

Usage::

    python benchmarks/board_table.py                 # reads build/boards/<board>/build.json
    python benchmarks/board_table.py --build         # builds the boards that have no report
    python benchmarks/board_table.py --build --board icebreaker --rebuild
    python benchmarks/board_table.py --rebuild --seeds 1,2,3,4 --jobs 2

The reports are what ``spikeforge build --board NAME`` writes (``build.json`` beside the
bitstream): the chip's size from the board registry, the PLL's achieved clock, nextpnr's
maximum frequency and utilisation.  Nothing in the table is typed in by hand.  A build tries
the placement seeds ``--seeds`` (default 1,2,3) and keeps the first that meets timing, so
placement noise does not decide whether a board makes its clock; the report says which seed
it kept and the Fmax of each seed tried.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spikeforge.boards.build import build, default_out_dir, parse_seeds
from spikeforge.boards.configs import BOARDS
from spikeforge.errors import SpikeforgeError

__all__ = ["COLUMNS", "load_reports", "table_rows", "markdown_table", "main"]


def _pct(report, key):
    used, total = report[f"{key}_used"], report[f"{key}_total"]
    return f"{used} / {total} ({100.0 * used / total:.0f} %)" if total else "-"


def _k(n):
    return f"{n // 1024}k" if n % 1024 == 0 and n >= 1024 else str(n)


#: (header, function of the report) for each column.
COLUMNS = [
    ("board", lambda r: r["title"]),
    ("FPGA", lambda r: r["device"]),
    ("design", lambda r: r["design"]),
    ("neurons", lambda r: str(r["neurons"])),
    ("synapses", lambda r: _k(r["synapses"])),
    ("weight / state bits", lambda r: f"{r.get('weight_bits', 8)} / {r.get('state_bits', 16)}"),
    ("lanes", lambda r: str(r.get("lanes", 1))),
    ("clock MHz", lambda r: f"{r['clock_mhz']:g}"),
    ("fmax MHz", lambda r: "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"),
    ("timing", lambda r: "met" if r["timing_met"] else "NOT met"),
    ("LUTs", lambda r: _pct(r, "luts")),
    ("block RAM", lambda r: _pct(r, "rams")),
    ("SPRAM", lambda r: _pct(r, "spram") if "spram_used" in r else "-"),
    ("DSP", lambda r: _pct(r, "dsps")),
    ("UART baud", lambda r: f"{r['baud']:,}"),
    ("build s", lambda r: f"{r['build_s']:.0f}"),
]


def load_reports(boards=None, root=None):
    """``{board: report}`` for the boards that have a ``build.json`` (in registry order)."""
    reports = {}
    for name in boards or BOARDS:
        out_dir = default_out_dir(name) if root is None else Path(root) / name
        path = out_dir / "build.json"
        if path.is_file():
            reports[name] = json.loads(path.read_text())
    return reports


def table_rows(reports):
    """The table's cells, one list of strings per report."""
    return [[fn(report) for _, fn in COLUMNS] for report in reports.values()]


def markdown_table(reports):
    """The table in Markdown, as the README shows it."""
    headers = [h for h, _ in COLUMNS]
    rows = table_rows(reports)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--board", action="append", choices=list(BOARDS), help="only this board")
    parser.add_argument("--root", type=Path, default=None, help="reports in ROOT/<board>/")
    parser.add_argument("--build", action="store_true", help="build boards with no report")
    parser.add_argument("--rebuild", action="store_true", help="build every selected board")
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=[1, 2, 3],
        metavar="S1,S2,...",
        help="placement seeds a build tries, keeping the first that meets timing (default 1,2,3)",
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="nextpnr runs at a time (default: CPU cores)"
    )
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    boards = args.board or list(BOARDS)
    reports = load_reports(boards, args.root)
    if args.build or args.rebuild:
        for name in boards:
            if name in reports and not args.rebuild:
                continue
            out_dir = None if args.root is None else args.root / name
            print(f"building {name} ...", file=sys.stderr)
            try:
                build(name, out_dir, seeds=args.seeds, jobs=args.jobs, check_timing=False)
            except SpikeforgeError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
        reports = load_reports(boards, args.root)
    for name in boards:
        if name not in reports:
            print(
                f"{name}: no build report; run `spikeforge build --board {name}` first",
                file=sys.stderr,
            )
    if not reports:
        return 1
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print(markdown_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
