"""The chip as a backend: a board or the virtual board, reached over the framed UART protocol.

Spec: ``docs/protocol.md`` (the link), ``docs/core.md`` (the memory image), ``docs/routing.md``
(several cores).

:class:`ChipBackend` identifies the chip, checks that a network fits the configuration the chip
reports, writes the memory image, and streams rasters: every sample is a state reset and its
timesteps' input events, all samples back to back in RUN requests that keep the link busy
(:meth:`~spikeforge.host.device.Device.run_items`), the output spikes coming back as they are
produced.  A request or reply lost on the way costs a rerun from the sample it hit.  On a
multi-core chip it splits the network over the cores (``spikeforge.host.partition``), loads
every core's image and the router's table, and gathers the membranes back into global order;
the rest is the same.

:meth:`ChipBackend.run_encoded` takes intensities instead of a raster: on a chip whose IDENTIFY
reports encoders each sample is one SAMPLE request (the chip generates the input spikes,
``docs/encoding.md``), answered with the output spikes or only the output neurons' spike counts;
on a chip without, the host encodes the same spikes (``chip_encode``) and runs them as above.
:attr:`ChipBackend.encoding_path` says which happened.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import ConfigError, UnsupportedError
from ..hw.chip import chip_config_from_ident, config_from_ident
from ..hw.image import Region, StatusWord, address
from ..hw.router import RouterConfig, RouterRegion, RouterStatusWord, core_address, router_address
from ..network import Network
from ..protocol import DEFAULT_BAUD, run_items
from .backend import Backend, check_raster, output_counts
from .device import Device, SampleLostError, StepLostError
from .image import build_image, decode_state
from .partition import partition

__all__ = ["ChipBackend", "VirtualChipBackend", "DEFAULT_BAUD"]


class ChipBackend(Backend):
    """Runs integer networks on a spikeforge chip.

    Parameters
    ----------
    url : str
        ``/dev/ttyUSB1``, ``socket://localhost:PORT`` (the virtual board), ``loop://``...
    baudrate : int
        UART baud rate (ignored by ``socket://``).
    timeout : float
        Seconds to wait for a reply before retrying.
    device : Device, optional
        An already open device (``url`` is then only used in messages).
    progress : callable, optional
        ``progress(done, total)`` called after each sample.
    partition_options : dict, optional
        Keyword arguments of :func:`~spikeforge.host.partition.partition` on a multi-core chip
        (``strategy="balance"``, ``assign=[...]``); default: fill the cores in order.

    Attributes
    ----------
    config : CoreConfig
        What the chip reported in IDENTIFY (the configuration of each core).
    router_config : RouterConfig or None
        The multi-core description (``None`` on a one-core chip).
    mapping : ChipMapping or None
        Where the loaded network runs (multi-core chip).
    device : Device
    """

    name = "chip"
    reports_all_neurons = False
    #: ``"counts"`` when the last on-chip :meth:`run_encoded` had the chip count the output
    #: spikes (``SampleFlag.COUNTS``), else ``"spikes"``.
    encoding_readout = None

    def __init__(self, url=None, baudrate=DEFAULT_BAUD, timeout=2.0, device=None, progress=None,
                 partition_options=None):
        super().__init__()
        self.url = url
        self._open_args = dict(baudrate=baudrate, timeout=timeout)
        self.device = device if device is not None else Device.open(url, **self._open_args)
        # Device.open identified the chip already; a device handed in may not have been.
        self.identity = self.device.identity or self.device.identify()
        self.config = config_from_ident(self.identity.words)
        chip = chip_config_from_ident(self.identity.words)
        self.router_config = chip if isinstance(chip, RouterConfig) else None
        self.partition_options = dict(partition_options or {})
        self.mapping = None
        self.progress = progress
        self.events_sent = 0
        self.steps_run = 0
        #: Streams started again after a request or reply was lost on the way.
        self.reruns = 0
        #: The chip executes SAMPLE (IDENTIFY): :meth:`run_encoded` encodes on the chip.
        self.encoders = bool(getattr(self.device, "encoders", False))

    def reconnect(self) -> None:
        """Close and reopen the link (after a cable drop or a crashed client), and identify.

        The chip keeps its memory image across a disconnect; the next sample starts from
        RESET_STATE as always.  Raises if the chip now reports another configuration.
        """
        self.device.close()
        self.device = Device.open(self.url, **self._open_args)  # identifies the chip
        self.identity = self.device.identity
        self.encoders = bool(getattr(self.device, "encoders", False))
        config = chip_config_from_ident(self.identity.words)
        if config != (self.router_config or self.config):
            raise ConfigError(
                f"after reconnecting, {self.url} reports another chip: {config} (was "
                f"{self.router_config or self.config}); load the network again"
            )

    def load(self, net: Network) -> None:
        """Check that ``net`` fits and write its memory image (weights, parameters, routing).

        The network is checked against what the chip reported and compiled once
        (:func:`~spikeforge.host.image.check_fit` inside
        :func:`~spikeforge.host.image.build_image`; on a multi-core chip once per candidate
        sub-network, inside :func:`~spikeforge.host.partition.partition`).

        Raises
        ------
        FitError
            Listing every reason why ``net`` does not fit (invalid parameters or weights
            included); nothing is written then.
        """
        if self.router_config is not None:
            rc = self.router_config
            mapping = partition(net, rc.cores, rc.core, router=rc, **self.partition_options)
            blocks = mapping.core_images(rc.core, rc.cores) + mapping.router_image(rc)
            self.mapping = mapping
        else:
            blocks = build_image(net, self.config)
        for addr, words in blocks:
            self.device.write_mem(addr, words)
        self.net = net
        self._outputs = net.output_indices()

    def _sample_items(self, raster, b):
        """RUN items of sample ``b`` of ``raster`` (T, batch, n_inputs): a reset, then its
        timesteps."""
        steps = (np.flatnonzero(raster[t, b]).tolist() for t in range(raster.shape[0]))
        return run_items(steps, reset=True)

    def _stream(self, raster, first, out):
        """Stream samples ``first..`` of ``raster`` into ``out``; return how many samples were
        completed (all of them, or up to the one a lost frame hit)."""
        n_steps, batch, _ = raster.shape
        items = itertools.chain.from_iterable(
            self._sample_items(raster, b) for b in range(first, batch)
        )
        done = 0
        try:
            for k, spikes in enumerate(self.device.run_items(items)):
                b, t = divmod(k, n_steps)
                if spikes:
                    out[t, first + b, spikes] = True
                done = k + 1
                if t == n_steps - 1:
                    self.steps_run += n_steps
                    if self.progress is not None:
                        self.progress(first + b + 1, batch)
        except StepLostError:
            return done // n_steps
        return batch - first

    def run(self, raster) -> np.ndarray:
        if self.net is None:
            raise ConfigError("no network loaded: call load(net) first")
        raster = check_raster(raster, self.net.n_inputs)
        if raster.size and raster.max() > 1:
            raise ConfigError(
                "raster entries must be 0 or 1: an input channel fires at most once per timestep"
            )
        n_steps, batch, _ = raster.shape
        out = np.zeros((n_steps, batch, self.net.n_neurons), dtype=bool)
        if n_steps == 0 or batch == 0:
            return out
        self.events_sent += int(np.count_nonzero(raster))

        def stream(first):
            done = self._stream(raster, first, out)
            out[:, first + done :] = False  # (the partial spikes of a sample a loss hit)
            return done

        self._with_reruns(batch, stream,
                          lambda msg, sample: StepLostError(msg, sample * n_steps))
        return out

    def _with_reruns(self, batch, stream, lost):
        """Run samples ``0 .. batch-1`` with ``stream(first)`` (returns how many samples from
        ``first`` completed).  After a lost frame, rerun from the sample it hit (each sample
        starts from a reset, so nothing carries over); after more than ``device.retries``
        losses in a row raise ``lost(message, sample)``."""
        first, failures = 0, 0
        while first < batch:
            done = stream(first)
            if first + done < batch:
                failures = failures + 1 if done == 0 else 1
                self.reruns += 1
                if failures > self.device.retries:
                    raise lost(
                        f"the link to {self.url} lost data {failures} times in a row at sample "
                        f"{first + done}: check the cable and the baud rate "
                        f"({self.device.rx_errors} corrupt frames received)",
                        first + done,
                    )
                self.device.reset_state()  # resynchronises the sequence numbers
            first += done

    def run_encoded(self, intensities, timesteps, encoder="rate", *, gain=16, threshold=1,
                    seed=1, readout="spikes", on_chip=None):
        """Run samples given as intensities (:meth:`Backend.run_encoded`), encoded on the chip
        when it has encoders.

        On the chip, every sample is one SAMPLE request with a state reset, streamed like
        :meth:`run` (several in flight).  With ``readout="counts"`` and output neurons that are
        one contiguous block of at most 255, the chip answers only their spike counts
        (``SampleFlag.COUNTS``: ``out_count`` bytes a sample instead of every spike); otherwise
        it answers the spikes and the host counts them.  Without encoders (or
        ``on_chip=False``) the host encodes with
        :func:`~spikeforge.host.coding.chip_encode` and runs the raster: the same spikes, bit
        for bit.  :attr:`encoding_path` (``"chip"``/``"host"``), :attr:`encoding_reason` and
        :attr:`encoding_readout` (``"counts"``: the chip counted; ``"spikes"``) say what
        happened.
        """
        x = self._check_encoded(intensities, readout, encoder, timesteps, seed)
        if on_chip is False or not self.encoders:
            if on_chip:
                raise UnsupportedError(
                    f"the chip at {self.url or self.device.transport.description} has no "
                    "on-chip encoders (IDENTIFY: encoders=0): encode on the host (on_chip=None "
                    "falls back by itself)"
                )
            self.encoding_reason = ("on_chip=False" if on_chip is False else
                                    "the chip has no on-chip encoders (IDENTIFY: encoders=0)")
            self.encoding_readout = "spikes"
            return self._run_host_encoded(x, timesteps, encoder, gain, threshold, seed, readout)
        outputs = self.net.output_indices()
        counted = (readout == "counts" and 1 <= len(outputs) <= 255
                   and np.array_equal(outputs, np.arange(outputs[0], outputs[0] + len(outputs))))
        opts = dict(timesteps=timesteps, encoder=encoder, gain=gain, threshold=threshold,
                    counts=(int(outputs[0]), len(outputs)) if counted else None)
        batch = x.shape[0]
        if counted:
            out = np.zeros((batch, len(outputs)), dtype=np.uint8)
        else:
            out = np.zeros((timesteps, batch, self.net.n_neurons), dtype=bool)
        self._with_reruns(batch, lambda first: self._stream_samples(x, first, seed, opts, out),
                          lambda msg, sample: SampleLostError(msg, sample, timesteps))
        self.encoding_path = "chip"
        self.encoding_reason = "the chip has encoders (IDENTIFY: encoders=1)"
        self.encoding_readout = "counts" if counted else "spikes"
        if readout == "counts" and not counted:
            return output_counts(out, outputs)
        return out

    def _stream_samples(self, x, first, seed, opts, out):
        """Stream samples ``first..`` of ``x`` as SAMPLE requests into ``out``; return how many
        completed (all of them, or up to the one a lost frame hit)."""
        batch = x.shape[0]
        t = opts["timesteps"]
        try:
            stream = self.device.samples(x[first:], seed=(seed + first) & 0xFFFFFFFF, **opts)
            for k, result in enumerate(stream):
                b = first + k
                if opts["counts"] is not None:
                    out[b] = result
                else:
                    out[:, b] = False
                    for step, spikes in enumerate(result):
                        if spikes:
                            out[step, b, spikes] = True
                self.steps_run += t
                if self.progress is not None:
                    self.progress(b + 1, batch)
        except SampleLostError as e:
            return e.samples_done
        return batch - first

    def run_membrane(self, raster):
        """Like :meth:`run`, and read every membrane back after every timestep (slow: one
        stop-and-wait READ per timestep; for debugging)."""
        if self.net is None:
            raise ConfigError("no network loaded: call load(net) first")
        raster = check_raster(raster, self.net.n_inputs)
        n_steps, batch, _ = raster.shape
        n = self.net.n_neurons
        spikes = np.zeros((n_steps, batch, n), dtype=bool)
        vs = np.zeros((n_steps, batch, n), dtype=np.int64)
        dev = self.device
        for b in range(batch):
            dev.reset_state()
            for t in range(n_steps):
                (out,) = dev.run([np.flatnonzero(raster[t, b]).tolist()])
                if out:
                    spikes[t, b, out] = True
                vs[t, b] = self.read_membrane()
                self.steps_run += 1
        return spikes, vs

    def read_membrane(self) -> np.ndarray:
        """The membrane of every neuron of the loaded network, as the chip holds it now."""
        if self.mapping is None:
            words = self.device.read_mem(address(Region.V), self.net.n_neurons)
            return decode_state(words, self.config.fmt)
        per_core = []
        for k in range(self.mapping.used_cores):
            addr = core_address(k, address(Region.V))
            words = self.device.read_mem(addr, self.mapping.core_neurons(k))
            per_core.append(decode_state(words, self.config.fmt))
        return self.mapping.gather(per_core)

    def chip_status(self) -> dict:
        """The link's error counters and the core's status words, in one dict.

        On a multi-core chip: ``core<k>_<word>`` per core; ``core_<word>`` is the sum over the
        cores for the error counters (``events_refused``, ``bus_refused``, ``param_errors``)
        and core 0's word otherwise; the router's words are ``router_<word>``.
        """
        status = self.device.status()
        if self.router_config is None:
            words = self.device.read_mem(address(Region.STATUS), len(StatusWord))
            for w in StatusWord:
                status[f"core_{w.name.lower()}"] = words[w.value]
            return status
        for k in range(self.router_config.cores):
            words = self.device.read_mem(core_address(k, address(Region.STATUS)), len(StatusWord))
            for w in StatusWord:
                name = w.name.lower()
                status[f"core{k}_{name}"] = words[w.value]
                if w in (StatusWord.EVENTS_REFUSED, StatusWord.BUS_REFUSED,
                         StatusWord.PARAM_ERRORS):
                    status[f"core_{name}"] = status.get(f"core_{name}", 0) + words[w.value]
                elif k == 0:
                    status[f"core_{name}"] = words[w.value]
        words = self.device.read_mem(router_address(RouterRegion.STATUS), len(RouterStatusWord))
        for w in RouterStatusWord:
            status[f"router_{w.name.lower()}"] = words[w.value]
        return status

    def close(self) -> None:
        self.device.close()


class VirtualChipBackend(ChipBackend):
    """A :class:`ChipBackend` on a virtual board that it starts (and stops on :meth:`close`).

    The virtual board is the whole chip RTL (link + core) compiled by Verilator, with the same
    configuration as ``board``'s bitstream, served on a local TCP port.

    Parameters
    ----------
    board : str
        Name of a board in :mod:`spikeforge.boards.configs` whose chip configuration to simulate.
    progress : callable, optional
        As :class:`ChipBackend`.
    """

    name = "virtual board"

    def __init__(self, board="ulx3s-85f", progress=None):
        from ..sim.virtual_board import VirtualBoard, chip_for_board

        self.board = board
        top = chip_for_board(board)
        self.vb = VirtualBoard(top, name=f"spikeforge_{board.replace('-', '_')}")
        self.vb.__enter__()
        try:
            super().__init__(self.vb.url, progress=progress)
        except BaseException:
            self.vb.__exit__(None, None, None)
            raise
        self.name = f"virtual board ({board})"

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.vb.__exit__(None, None, None)
