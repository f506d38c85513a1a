"""The chip's post-synthesis netlist as a backend: ``--port netlist:BOARD``.

A :class:`~spikeforge.host.chip_backend.ChipBackend` on the netlist virtual board of a board
(:mod:`spikeforge.sim.netlist`: the chip as Yosys synthesized it for that board's bitstream,
simulated with the vendor cell models), started on open and stopped on :meth:`close`.
"""

from __future__ import annotations

from ..errors import ConfigError
from .chip_backend import ChipBackend

__all__ = ["NETLIST_PREFIX", "NetlistChipBackend", "parse_netlist_port"]

#: ``--port`` values that start with this name a board's netlist virtual board.
NETLIST_PREFIX = "netlist:"


def parse_netlist_port(port: str) -> str:
    """The board name of a ``netlist:BOARD`` port (checked against the board registry)."""
    from ..boards.configs import get_board

    if not isinstance(port, str) or not port.startswith(NETLIST_PREFIX):
        raise ConfigError(f"--port {port!r} is not of the form {NETLIST_PREFIX}BOARD")
    name = port[len(NETLIST_PREFIX):]
    if not name:
        raise ConfigError(f"--port {port!r}: name a board after '{NETLIST_PREFIX}' "
                          f"(e.g. {NETLIST_PREFIX}icebreaker)")
    return get_board(name).name


class NetlistChipBackend(ChipBackend):
    """A :class:`ChipBackend` on the post-synthesis netlist virtual board of ``board``.

    Parameters
    ----------
    board : str
        Name of a board in :mod:`spikeforge.boards.configs`.
    progress : callable, optional
        As :class:`ChipBackend`.
    timeout : float
        Seconds to wait for a reply before retrying (the netlist runs slower than the RTL).
    """

    name = "netlist virtual board"

    def __init__(self, board="icebreaker", progress=None, timeout=10.0):
        from ..sim.netlist import build_netlist_board, netlist_board_name
        from ..sim.virtual_board import VirtualBoard

        self.board = board
        exe = build_netlist_board(board)
        self.vb = VirtualBoard(exe, name=netlist_board_name(board))
        self.vb.__enter__()
        try:
            super().__init__(self.vb.url, progress=progress, timeout=timeout)
        except BaseException:
            self.vb.__exit__(None, None, None)
            raise
        self.name = f"netlist virtual board ({board}, post-synthesis)"

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.vb.__exit__(None, None, None)
