"""The ``spikeforge`` command line.

Each sub-command lives beside the code it drives and adds itself with a ``register(subparsers)``
function; this module only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .errors import SpikeforgeError

__all__ = ["main", "build_parser"]

# (module, attribute, commands it adds): each attribute is ``register(subparsers)``.
_COMMANDS = [
    ("spikeforge.host.demo", "register", ("demo", "run")),
    ("spikeforge.sim.netlist", "register", ("sim",)),  # virtual_board's, with --netlist
    ("spikeforge.boards.build", "register", ("build", "flash")),
    ("spikeforge.cli", "_register_info", ("info",)),
]


def _register_info(subparsers):
    p = subparsers.add_parser(
        "info",
        help="print the version, the number formats, the build cache and the toolchains found",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_info)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # not reached


def _info(args):
    """``spikeforge info``: version, number formats, the build cache (where, how big, how many
    builds) and the toolchains found (Verilator, C++, Yosys/nextpnr, openFPGALoader)."""
    import dataclasses
    import json
    import os

    from .boards.configs import BOARDS
    from .sim.verilator import cache_usage, default_build_dir, toolchains
    from .spec import DEFAULT_FORMAT, WIDE_FORMAT

    formats = {"DEFAULT_FORMAT": DEFAULT_FORMAT, "WIDE_FORMAT": WIDE_FORMAT}

    cache = cache_usage(default_build_dir())
    tools = toolchains()
    data = {
        "version": __version__,
        "format": dataclasses.asdict(DEFAULT_FORMAT),
        "formats": {name: dataclasses.asdict(f) for name, f in formats.items()},
        "boards": {
            name: {
                "format": next(k for k, f in formats.items() if f == b.chip.fmt),
                "max_delay": b.chip.max_delay,
                "neurons": b.chip.neurons,
                "conv_words": b.chip.conv_words,
            }
            for name, b in BOARDS.items()
        },
        "build_cache": {
            "path": str(cache.path),
            "exists": cache.exists,
            "bytes": cache.bytes,
            "builds": cache.builds,
            "env": "SPIKEFORGE_BUILD_DIR" if os.environ.get("SPIKEFORGE_BUILD_DIR") else None,
        },
        "toolchains": [dataclasses.asdict(t) for t in tools],
    }
    if args.json:
        print(json.dumps(data))
        return 0
    print(f"spikeforge {__version__}")
    print(f"  {'number format':16s} {'DEFAULT_FORMAT':>15s} {'WIDE_FORMAT':>12s}")
    for k, v in data["format"].items():
        print(f"  {k:16s} {v:>15} {data['formats']['WIDE_FORMAT'][k]:>12}")
    print("boards")
    for name, b in data["boards"].items():
        delays = f"delays up to {b['max_delay']} steps" if b["max_delay"] else "no delays"
        conv = ("weight-shared convolutions" if b["conv_words"] else
                "convolutions unrolled")
        print(f"  {name:16s} {b['neurons']:>6} neurons, {b['format']}, {delays}, {conv}")
    where = " (from $SPIKEFORGE_BUILD_DIR)" if data["build_cache"]["env"] else ""
    print(f"build cache {cache.path}{where}")
    if cache.exists:
        s = "" if cache.builds == 1 else "s"
        print(f"  {_human_bytes(cache.bytes)} in {cache.builds} build{s}"
              "  (delete the directory to reclaim the space)")
    else:
        print("  not created yet (the first virtual-board build creates it)")
    print("toolchains")
    for t in tools:
        if t.found:
            detail = ", ".join(x for x in (t.version, t.where) if x)
            print(f"  {t.name:16s} {detail}")
        else:
            print(f"  {t.name:16s} not found: {t.hint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spikeforge",
        description="Open FPGA neuromorphic accelerator: run, simulate, build and flash.",
    )
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, attr, names in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            # A command whose optional dependencies are missing is still listed, and says why.
            for name in names:
                _register_missing(sub, name, exc)
            continue
        getattr(mod, attr)(sub)
    return parser


def _register_missing(sub, name, exc):
    def fail(args, exc=exc):
        print(
            f"spikeforge: this command needs a module that could not be imported: {exc}.\n"
            f"Install the extras: pip install 'spikeforge[test]' (or the extra that provides it).",
            file=sys.stderr,
        )
        return 2

    if name in sub.choices:
        return
    p = sub.add_parser(name, help=f"(unavailable: {exc})")
    p.set_defaults(func=fail)


def _format_warning(message, category, filename, lineno, line=None):
    return f"spikeforge: warning: {message}\n"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # a user-facing warning (e.g. a NIR file read with nir's type check relaxed) is one line
    # that says what happened, not a source location (restored after: ``main`` may run inside
    # another program, and ``catch_warnings`` does not restore ``formatwarning``)
    previous_format = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return int(args.func(args) or 0)
    except SpikeforgeError as exc:
        print(f"spikeforge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
