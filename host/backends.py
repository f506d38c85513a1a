"""Backends: what runs an integer network on input rasters (golden model, virtual board, board).

Spec: the golden model API (``spikeforge.sim.golden``) and the raster convention of
``spikeforge.host.coding``.  Every backend takes the same integer
:class:`~spikeforge.network.Network` and returns the spikes of all neurons, so the demo and
``spikeforge run`` can swap the chip for its golden model and compare them.

The interface every backend implements (:class:`Backend`, :func:`check_raster`) is
:mod:`spikeforge.host.backend`, re-exported here; this module has the golden backend and the
registry.  A chip backend (UART link to a board or to the virtual board,
:mod:`spikeforge.host.chip_backend`) implements :class:`Backend` and is made reachable from
``--port URL`` with one call::

    register_backend("url", lambda port: ChipBackend(port))
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..network import Network
from ..sim.golden import GoldenChip
from ..spec import DEFAULT_FORMAT, Format
from .backend import Backend, check_raster

__all__ = [
    "Backend",
    "GoldenBackend",
    "register_backend",
    "open_backend",
    "DEFAULT_BACKEND",
    "check_raster",
]

DEFAULT_BACKEND = "virtual"
"""Backend used when no ``--port`` is given: the virtual board."""


class GoldenBackend(Backend):
    """The NumPy golden model as a backend (bit-exact to the chip in ``"int"`` mode).

    Parameters
    ----------
    arithmetic : {"int", "float"}
    fmt : Format
    max_batch : int
        Samples simulated side by side (memory bound).
    """

    name = "golden"

    def __init__(self, arithmetic="int", fmt: Format = DEFAULT_FORMAT, max_batch=512):
        super().__init__()
        if arithmetic not in ("int", "float"):
            raise ConfigError(f"arithmetic={arithmetic!r} is not valid: allowed 'int', 'float'")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch={max_batch!r} is out of range: allowed >= 1")
        self.arithmetic, self.fmt, self.max_batch = arithmetic, fmt, max_batch
        if arithmetic == "float":
            self.name = "golden-float"

    def load(self, net: Network) -> None:
        GoldenChip(net, self.arithmetic, batch=1, fmt=self.fmt)  # validates now, not at run()
        self.net = net

    def _run(self, raster, record_v):
        if self.net is None:
            raise ConfigError("no network loaded: call load(net) first")
        raster = check_raster(raster, self.net.n_inputs)
        t, batch, _ = raster.shape
        spikes = np.zeros((t, batch, self.net.n_neurons), dtype=bool)
        vs = np.zeros((t, batch, self.net.n_neurons)) if record_v else None
        for k in range(0, batch, self.max_batch):
            chunk = raster[:, k:k + self.max_batch]
            chip = GoldenChip(self.net, self.arithmetic, batch=chunk.shape[1], fmt=self.fmt)
            out = chip.run(chunk, record_v=record_v)
            spikes[:, k:k + chunk.shape[1]] = out["spikes"]
            if record_v:
                vs[:, k:k + chunk.shape[1]] = out["v"]
        return spikes, vs

    def run(self, raster):
        return self._run(raster, False)[0]

    def run_membrane(self, raster):
        return self._run(raster, True)


# The chip backends are imported when first opened: they pull in the gateware package (and the
# virtual board, Verilator).  chip_backend imports only host.backend, not this module: no cycle.
def _chip(port):
    from .chip_backend import ChipBackend

    if isinstance(port, str) and port.startswith("netlist:"):  # a board's synthesized netlist
        from .netlist_backend import NetlistChipBackend, parse_netlist_port

        return NetlistChipBackend(parse_netlist_port(port))
    return ChipBackend(port)


def _virtual(port):
    """``virtual`` (the ULX3S chip) or ``virtual:BOARD`` (that board's chip) in Verilator."""
    from .chip_backend import VirtualChipBackend

    if ":" not in port:
        return VirtualChipBackend()
    from ..boards.configs import get_board

    return VirtualChipBackend(get_board(port.split(":", 1)[1]).name)


_FACTORIES = {
    "golden": lambda port: GoldenBackend("int"),
    "golden-float": lambda port: GoldenBackend("float"),
    "virtual": _virtual,  # the chip RTL in Verilator (needs the [sim] extra); virtual:BOARD
    "url": _chip,  # any other --port: a serial device, socket://host:port, netlist:BOARD
}


def register_backend(name: str, factory) -> None:
    """Make ``factory(port)`` reachable as ``--port NAME``.

    ``name="url"`` registers the factory for every port that is not a backend name (a serial
    device, ``socket://host:port``, ``loop://``...).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backend name {name!r} is not valid: a non-empty string")
    _FACTORIES[name] = factory


def open_backend(port: str | None = None) -> Backend:
    """The backend for ``--port``: a registered name, a URL, or ``None`` for the default."""
    port = DEFAULT_BACKEND if port is None else port
    if port in _FACTORIES:
        return _FACTORIES[port](port)
    if isinstance(port, str) and port.startswith("virtual:") and "virtual" in _FACTORIES:
        return _FACTORIES["virtual"](port)
    if "url" in _FACTORIES:
        return _FACTORIES["url"](port)
    names = ", ".join(sorted(_FACTORIES))
    raise ConfigError(
        f"--port {port!r}: no chip link backend is registered yet; allowed {names}"
    )
