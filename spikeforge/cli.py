"""The ``spikeforge`` command line.

Each sub-command lives beside the code it drives and adds itself with a ``register(subparsers)``
function; this module only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import SpikeforgeError

__all__ = ["main", "build_parser"]

# (module, attribute, commands it adds): each attribute is ``register(subparsers)``.
_COMMANDS = [
    ("spikeforge.host.demo", "register", ("demo", "run")),
    ("spikeforge.sim.virtual_board", "register", ("sim",)),
    ("spikeforge.boards.build", "register", ("build", "flash")),
    ("spikeforge.cli", "_register_info", ("info",)),
]


def _register_info(subparsers):
    p = subparsers.add_parser("info", help="print the version and the chip's number formats")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_info)


def _info(args):
    import dataclasses
    import json

    from .spec import DEFAULT_FORMAT

    data = {"version": __version__, "format": dataclasses.asdict(DEFAULT_FORMAT)}
    if args.json:
        print(json.dumps(data))
    else:
        print(f"spikeforge {__version__}")
        for k, v in data["format"].items():
            print(f"  {k:16s} {v}")
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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SpikeforgeError as exc:
        print(f"spikeforge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
