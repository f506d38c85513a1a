"""The backend interface: what runs an integer network on input rasters.

Spec: the raster convention of ``spikeforge.host.coding``.  Every backend (the golden model and
the registry in :mod:`spikeforge.host.backends`, the chip in :mod:`spikeforge.host.chip_backend`)
implements :class:`Backend`; this module depends on neither, so they import it without a cycle.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, UnsupportedError
from ..network import Network

__all__ = ["Backend", "check_raster", "output_counts", "READOUTS"]

#: What :meth:`Backend.run_encoded` returns: every timestep's spikes, or per sample the spike
#: count of each output neuron.
READOUTS = ("spikes", "counts")


def output_counts(spikes, outputs):
    """The ``COUNTS`` readout of a spike array: ``(T, batch, n_neurons)`` -> ``(batch,
    len(outputs))`` uint8, each output neuron's spikes summed over the timesteps (saturating at
    255, as the chip does)."""
    s = np.asarray(spikes)[:, :, np.asarray(outputs, dtype=np.int64)]
    return np.minimum(s.sum(axis=0, dtype=np.int64), 255).astype(np.uint8)


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

    #: Whether the backend encodes intensities itself (a chip whose IDENTIFY reports encoders).
    encoders = False
    #: Where the last :meth:`run_encoded` encoded the samples: ``"chip"`` (SAMPLE requests) or
    #: ``"host"`` (:func:`~spikeforge.host.coding.chip_encode`, then :meth:`run`); ``None``
    #: before the first.
    encoding_path = None
    #: Why the last :meth:`run_encoded` took its path (one line, for reports).
    encoding_reason = ""

    def run_encoded(self, intensities, timesteps, encoder="rate", *, gain=16, threshold=1,
                    seed=1, readout="spikes", on_chip=None):
        """Run samples given as intensities; encode them into spikes on the chip if it can.

        The spikes are exactly those of ``run(chip_encode(intensities, timesteps, encoder,
        gain=gain, threshold=threshold, seed=seed))`` (``docs/encoding.md``), whichever side
        encodes them; :attr:`encoding_path` says which did (this base class: always the host).

        Parameters
        ----------
        intensities : array of integers 0..255, shape (n_samples, n_inputs)
            One u8 per input channel and sample
            (:func:`~spikeforge.host.coding.chip_intensities` scales real values).
        timesteps : int
            ``T``, 1..255.
        encoder : {"rate", "latency"}
            The chip's encoders (delta coding has none: encode on the host and use :meth:`run`).
        gain, threshold, seed
            As :func:`~spikeforge.host.coding.chip_encode` (sample ``b`` uses ``seed + b``).
        readout : {"spikes", "counts"}
            What to return (below).
        on_chip : bool, optional
            ``None``: on the chip if it has encoders, else on the host.  ``True``: on the chip
            or :class:`~spikeforge.errors.UnsupportedError`.  ``False``: on the host.

        Returns
        -------
        ndarray
            ``readout="spikes"``: bool ``(T, n_samples, n_neurons)`` as :meth:`run`.
            ``readout="counts"``: uint8 ``(n_samples, n_outputs)``, each output neuron's spikes
            per sample (:func:`output_counts`, neurons in ``net.output_indices()`` order).
        """
        x = self._check_encoded(intensities, readout, encoder, timesteps, seed)
        if on_chip:
            raise UnsupportedError(
                f"backend {self.name!r} has no on-chip encoders: encode on the host (on_chip="
                "None or False)"
            )
        self.encoding_reason = ("on_chip=False" if on_chip is False
                                else f"backend {self.name!r} has no on-chip encoders")
        return self._run_host_encoded(x, timesteps, encoder, gain, threshold, seed, readout)

    def _check_encoded(self, intensities, readout, encoder, timesteps, seed):
        """The intensities as an int64 ``(n_samples, n_inputs)`` array, checked (and the
        readout, the encoder's name, the timesteps and the seed)."""
        if self.net is None:
            raise ConfigError("no network loaded: call load(net) first")
        if isinstance(timesteps, (bool, np.bool_)) or not isinstance(timesteps, (int, np.integer)) \
                or not 1 <= timesteps <= 255:
            raise ConfigError(f"timesteps={timesteps!r} is out of range: allowed an integer "
                              "1..255")
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed <= 0xFFFFFFFF:
            raise ConfigError(f"seed={seed!r} is out of range: allowed an integer 0..2**32-1")
        if encoder == "delta":
            raise ConfigError(
                "encoder='delta' has no on-chip form (docs/encoding.md: it needs new intensities "
                "every timestep): encode on the host with delta_encode and use run()"
            )
        if encoder not in ("rate", "latency"):
            raise ConfigError(f"encoder={encoder!r} is not valid: allowed rate, latency")
        if readout not in READOUTS:
            raise ConfigError(f"readout={readout!r} is not valid: allowed {', '.join(READOUTS)}")
        x = np.asarray(intensities)
        if x.ndim != 2 or x.shape[1] != self.net.n_inputs:
            raise ConfigError(
                f"intensities have shape {x.shape}, expected (n_samples, n_inputs="
                f"{self.net.n_inputs})"
            )
        if x.size and (not np.issubdtype(x.dtype, np.number) or np.any(x != np.round(x))
                       or x.min() < 0 or x.max() > 255):
            raise ConfigError("intensities must be integers 0..255 (u8 on the wire); scale "
                              "them first (chip_intensities)")
        return x.astype(np.int64)

    def _run_host_encoded(self, x, timesteps, encoder, gain, threshold, seed, readout):
        """The host path of :meth:`run_encoded`: ``chip_encode`` then :meth:`run`."""
        from .coding import chip_encode

        raster = chip_encode(x, timesteps, encoder, gain=gain, threshold=threshold, seed=seed)
        spikes = self.run(raster)
        self.encoding_path = "host"
        if readout == "counts":
            return output_counts(spikes, self.net.output_indices())
        return spikes

    def run_membrane(self, raster):
        """Like :meth:`run` but returns ``(spikes, v)`` with the membranes ``(T, batch, n)``."""
        raise NotImplementedError(f"backend {self.name!r} cannot read membranes")

    def close(self) -> None:
        """Release the device (nothing to do for in-process backends)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
