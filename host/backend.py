"""The backend interface: what runs an integer network on input rasters.

Spec: the raster convention of ``spikeforge.host.coding``.  Every backend (the golden model and
the registry in :mod:`spikeforge.host.backends`, the chip in :mod:`spikeforge.host.chip_backend`)
implements :class:`Backend`; this module depends on neither, so they import it without a cycle.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..network import Network

__all__ = ["Backend", "check_raster"]


def check_raster(raster, n_inputs):
    """Return ``raster`` as a ``(T, batch, n_inputs)`` array of non-negative integer counts."""
    r = np.asarray(raster)
    if r.ndim == 2:
        r = r[:, None, :]
    if r.ndim != 3 or r.shape[2] != n_inputs:
        raise ConfigError(
            f"raster has shape {np.shape(raster)}, expected (T, batch, n_inputs={n_inputs})"
        )
    if r.size and (np.any(r < 0) or np.any(r != np.round(r))):
        raise ConfigError("raster entries must be non-negative integer event counts")
    return r


class Backend:
    """Runs an integer network on rasters.

    Subclasses implement :meth:`load` and :meth:`run`; :meth:`run_membrane` is optional (a
    backend that cannot read membranes raises ``NotImplementedError``).

    Attributes
    ----------
    name : str
        Shown by the demo.
    net : Network or None
        The loaded network.
    """

    name = "backend"
    reports_all_neurons = True
    """False for a chip that only sends the output populations' spikes to the host: it leaves
    the other neurons' entries False, and comparisons use the output populations only."""

    def __init__(self):
        self.net = None

    def load(self, net: Network) -> None:
        """Configure the backend with an integer network (weights, parameters, routing)."""
        raise NotImplementedError

    def run(self, raster) -> np.ndarray:
        """Run a raster ``(T, batch, n_inputs)``; every sample starts from the reset state.

        Returns
        -------
        ndarray of bool, shape (T, batch, n_neurons)
            Spikes of all neurons (global neuron order, ``net.base(pop) + i``).
        """
        raise NotImplementedError

    def run_membrane(self, raster):
        """Like :meth:`run` but returns ``(spikes, v)`` with the membranes ``(T, batch, n)``."""
        raise NotImplementedError(f"backend {self.name!r} cannot read membranes")

    def close(self) -> None:
        """Release the device (nothing to do for in-process backends)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
