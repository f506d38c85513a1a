"""ECP5 netlist pass: DP16KD block RAMs take over the fabric flip-flops that register their output.

Yosys's ``synth_ecp5`` maps every memory read port to a ``DP16KD`` without its output register
(``REGMODE_x = "NOREG"``: the data is on ``DOx`` one clock after the address, straight from the
EBR's output latch, 5.6-5.8 ns after the clock on the ECP5-85F).  spikeforge's design already
registers each block-RAM output in a fabric flip-flop (``TRELLIS_FF``) before any logic, so
the critical paths of the ULX3S build are that clock-to-output plus the routing to the
flip-flop.  The EBR has an output register of its own (``REGMODE_x = "OUTREG"``: read data two
clocks after the address, clocked by ``CLKx``, enabled by ``OCEx``, reset by ``RSTx``), with
a much shorter clock-to-output.

:func:`absorb_output_registers` rewrites a Yosys JSON netlist (``write_json``, after
``synth_ecp5``): a read port of a ``DP16KD`` is converted when

* its ``REGMODE`` is ``NOREG``, the cell is not the 36-bit pseudo dual port, its ``RST`` pin is
  tied to 0 and so is the other port's (``RESETMODE`` is shared by both ports);
* every ``DO`` bit of the port that drives anything drives exactly one sink, the ``DI`` pin of
  a ``TRELLIS_FF``;
* those flip-flops are clocked by the port's clock net, without inversion (``CLKMUX = "CLK"``);
  have no or the same enable (``CEMUX = "1"``, or ``CE`` connected to the port's own ``CE``
  net, so the output register enable ``OCE`` equals the enable the flip-flop had and it is
  also the RAM's read enable); reset to 0 (``REGSET = "RESET"``, no ``PRLD``); and share one
  reset: none (``LSR`` tied to 0) or, only with ``resets=True``, one synchronous reset net
  (``SRMODE = "LSR_OVER_CE"``, ``LSRMUX = "LSR"``), which becomes ``RSTx`` with ``RESETMODE =
  "SYNC"``.

The port then gets ``REGMODE_x = "OUTREG"``, ``OCEx`` = the flip-flops' enable, and each ``DO``
bit drives the net the flip-flop's ``Q`` drove; the flip-flops are removed.  Nothing else
changes.  The same function runs on the bitstream build's ``top.json`` (``boards/build.py``)
and on the netlist virtual board's netlist (``sim/netlist.py``), whose DP16KD model implements
the output register.  It is on by default (:data:`DEFAULT_ENABLED`); ``spikeforge build
--no-ecp5-outreg``, ``build(..., ecp5_outreg=False)`` or ``SPIKEFORGE_ECP5_OUTREG=0`` turn it
off.

With ``resets=True`` (not what the build runs), one behaviour depends on the primitive's
reset details: a synchronous ``RST`` clears
the output register; whether it also clears the EBR's output latch (the first stage) is not
spelled out in the documentation at hand.  If it does, the word the register loads in the clock
after the reset is 0 instead of the word read during the reset cycle: the same, as long as the
reset is asserted while the memory holds zeros (the ULX3S's reset is the power-up / PLL-lock
reset, and the RAMs start all-zero).  The simulation model takes the pessimistic reading (the
latch is cleared too).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

__all__ = ["DEFAULT_ENABLED", "ENV_VAR", "absorb_output_registers", "enabled", "transform_file"]

#: Whether the ECP5 build and the netlist virtual board run the pass by default: on.  On the
#: ULX3S it absorbs the weight banks' reset-less output flip-flops (176 ports), so a far bank's
#: EBR-to-flop routing is no longer added to its slow clock-to-output: at 90 MHz 91.0 / 97.3 MHz
#: over nextpnr seeds 1-2 against 84.1 / 88.0 (and 99.9 with seed 3) without it.  (Before the
#: weight banks' flip-flops were reset-less it absorbed them with their reset, whose net then
#: reached every EBR: 92.9 / 96.6 / 88.6 against 103.9 / 90.5 / 98.6 at 100 MHz, so it was off.)
DEFAULT_ENABLED = True

#: Environment variable that overrides :data:`DEFAULT_ENABLED` (``0`` / ``1``).
ENV_VAR = "SPIKEFORGE_ECP5_OUTREG"


def enabled(value: bool | None = None) -> bool:
    """``value`` if given, else the environment variable :data:`ENV_VAR`, else the default."""
    if value is not None:
        return bool(value)
    env = os.environ.get(ENV_VAR, "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return DEFAULT_ENABLED


def _param(cell, name, default=""):
    # Yosys's JSON pads strings that look like bit vectors ("1", "0") with a trailing space
    return str(cell["parameters"].get(name, default)).rstrip(" ")


def _const(bits, value):
    return len(bits) == 1 and bits[0] == value


def _module_outreg(module, resets: bool = False) -> tuple[int, int]:
    cells = module["cells"]
    sinks = defaultdict(list)  # bit -> [(cell, port)] of every input pin and output port on it
    for name, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if dirs.get(port, "input") != "output":
                for bit in bits:
                    if isinstance(bit, int):
                        sinks[bit].append((name, port))
    for pname, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for bit in port["bits"]:
                if isinstance(bit, int):
                    sinks[bit].append((None, pname))

    ports = ffs = 0
    for cell in list(cells.values()):
        if cell["type"] != "DP16KD":
            continue
        conn = cell["connections"]
        widths = {p: int(_param(cell, f"DATA_WIDTH_{p}", "18") or "18", 2) for p in "AB"}
        if 36 in widths.values():
            continue
        for p, other in (("A", "B"), ("B", "A")):
            if _param(cell, f"REGMODE_{p}", "NOREG") != "NOREG":
                continue
            if not (_const(conn[f"RST{p}"], "0") and _const(conn[f"RST{other}"], "0")):
                continue
            if _param(cell, f"CLK{p}MUX", f"CLK{p}") != f"CLK{p}":
                continue
            if _param(cell, f"OCE{p}MUX", f"OCE{p}") != f"OCE{p}":
                continue
            clk, ce = conn[f"CLK{p}"], conn[f"CE{p}"]
            if not all(isinstance(b, int) for b in clk):
                continue
            plan = []  # (DO pin, flip-flop name)
            enables, reset_nets = set(), set()
            ok = True
            for i in range(18):
                (bit,) = conn[f"DO{p}{i}"]
                users = sinks.get(bit, [])
                if not users:
                    continue
                if len(users) != 1 or users[0][0] is None or users[0][1] != "DI":
                    ok = False
                    break
                ff = cells[users[0][0]]
                c = ff["connections"]
                if (ff["type"] != "TRELLIS_FF" or c["CLK"] != clk
                        or _param(ff, "CLKMUX", "CLK") != "CLK"
                        or _param(ff, "REGSET", "RESET") != "RESET"
                        or _param(ff, "LSRMODE", "LSR") != "LSR"):
                    ok = False
                    break
                cemux = _param(ff, "CEMUX", "1")
                if cemux == "1":
                    enables.add("1")
                elif cemux == "CE" and c["CE"] == ce:
                    enables.add(tuple(c["CE"]))
                else:
                    ok = False
                    break
                if _const(c.get("LSR", ["0"]), "0"):
                    reset_nets.add("0")
                elif (_param(ff, "LSRMUX", "LSR") == "LSR"
                      and _param(ff, "SRMODE", "LSR_OVER_CE") == "LSR_OVER_CE"
                      and all(isinstance(b, int) for b in c["LSR"])):
                    reset_nets.add(tuple(c["LSR"]))
                else:
                    ok = False
                    break
                plan.append((f"DO{p}{i}", users[0][0]))
            if not ok or not plan or len(enables) != 1 or len(reset_nets) != 1:
                continue
            (enable,), (reset,) = enables, reset_nets
            if reset != "0" and not resets:
                continue
            for pin, ffname in plan:
                conn[pin] = list(cells[ffname]["connections"]["Q"])
                del cells[ffname]
            cell["parameters"][f"REGMODE_{p}"] = "OUTREG"
            conn[f"OCE{p}"] = ["1"] if enable == "1" else list(enable)
            if reset != "0":
                conn[f"RST{p}"] = list(reset)
                cell["parameters"]["RESETMODE"] = "SYNC"
            ports += 1
            ffs += len(plan)
    return ports, ffs


def absorb_output_registers(netlist: dict, resets: bool = False) -> dict:
    """Rewrite a Yosys JSON netlist (the dict of ``write_json``) in place, as the module
    docstring says; returns ``{"ports": n, "flip_flops": m}``, what was absorbed.

    ``resets``: also absorb flip-flops with a synchronous reset (it becomes the port's
    ``RST``).  The build leaves them (the default): the reset net then reaches every such block
    RAM across the die, a 10.5 ns path on the ULX3S, so only reset-less registers (the weight
    banks' ``w_q``) move into the EBR."""
    ports = ffs = 0
    for module in netlist.get("modules", {}).values():
        if "cells" in module:
            p, f = _module_outreg(module, resets)
            ports, ffs = ports + p, ffs + f
    return {"ports": ports, "flip_flops": ffs}


def transform_file(path: str | os.PathLike) -> dict:
    """:func:`absorb_output_registers` on a ``write_json`` file, rewritten in place."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    counts = absorb_output_registers(netlist)
    if counts["ports"]:
        path.write_text(json.dumps(netlist))
    return counts
