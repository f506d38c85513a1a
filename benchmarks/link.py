"""Host link benchmark: the main job's wire cost, round trips and simulated cycles, what a
board would make of them, and the virtual board's speed against the old way of running it.

Runs the main job (``spikeforge demo``: the bundled digits network, 25 timesteps) on the virtual
board of the ULX3S configuration twice, side by side in one process:

* **streamed** (today's host and harness): all samples back to back in RUN requests, several
  in flight within the chip's receive window; a state reset that clears only the neurons in use;
  the harness answering as soon as the chip is idle.
* **old** (how the main job ran before protocol 2, reproduced): per sample a stop-and-wait
  RESET_STATE clearing every neuron, then per timestep one request for the events and one for
  the step, each waiting for its reply; the harness running fixed 4,096-cycle batches.

Prints a table; ``--json`` prints one JSON object.  Fields (per sample unless said otherwise):

* ``round_trips_per_sample``: times the host waited for a reply with nothing else to send.
* ``payload_efficiency``: event and spike bytes (2 per input event and per output spike) over
  all wire bytes, both directions.  ``synthetic_payload_efficiency``: the same for one full RUN
  request frame (``spikeforge.protocol.events_efficiency``).
* ``wire_bytes_to_chip``, ``wire_bytes_to_host``, ``chip_cycles``: the counts behind the
  projections.
* ``projected_ulx3s_samples_per_s_1ms`` / ``_16ms``: a ULX3S (its registry clock, 90 MHz, and
  3 Mbaud) with 1 ms / 16 ms of USB latency per round trip, the link pipelined within the
  receive window (``spikeforge.host.projection``, ``docs/projection.md``).
  ``uart_bound_samples_per_s``: the same bytes with nothing but the UART's bit time.
* ``vboard_cycles_per_busy_cycle``: cycles the virtual board simulated over the cycles the chip
  was busy (not idle).
* ``vboard_samples_per_s`` (this PC's simulation speed) for both ways, and their ratio
  ``vboard_speedup`` (measured in this run: a ratio, not an absolute time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from spikeforge.host.chip_backend import ChipBackend
from spikeforge.host.coding import rate_encode
from spikeforge.host.compiler import compile
from spikeforge.host.demo import load_bundled, load_digits_split
from spikeforge.host.projection import project_board
from spikeforge.hw.image import ConfigWord, Region, address
from spikeforge.protocol import MAX_RUN_ITEMS, events_efficiency
from spikeforge.sim.virtual_board import VirtualBoard, chip_for_board

BOARD = "ulx3s-85f"


class OldWayBackend(ChipBackend):
    """The main job as it ran before protocol 2: stop-and-wait per timestep, full clears."""

    def load(self, net):
        super().load(net)
        # a state reset clears every neuron, as before CONFIG.N_NEURONS
        self.device.write_mem(address(Region.CONFIG, ConfigWord.N_NEURONS.value),
                              [self.config.n_neurons])

    def run(self, raster):
        n_steps, batch, _ = raster.shape
        out = np.zeros((n_steps, batch, self.net.n_neurons), dtype=bool)
        dev = self.device
        for b in range(batch):
            dev.reset_state()
            for t in range(n_steps):
                dev.send_events(np.flatnonzero(raster[t, b]).tolist())
                (spikes,) = dev.step(1)
                out[t, b, spikes] = True
        return out


def _stat(vb, name):
    return int(getattr(vb.stats(), name, 0) or 0)


def _measure(backend_cls, raster, net, vb_kwargs, name):
    with VirtualBoard(chip_for_board(BOARD), name=name, **vb_kwargs) as vb:
        with backend_cls(vb.url, timeout=10.0) as chip:
            chip.load(net)
            chip.run(raster[:, :1])  # warm up the connection
            dev, tr = chip.device, chip.device.transport
            before = (_stat(vb, "cycles"), _stat(vb, "busy_cycles"), tr.bytes_written,
                      tr.bytes_read, dev.round_trips)
            t0 = time.perf_counter()
            spikes = chip.run(raster)
            seconds = time.perf_counter() - t0
            after = (_stat(vb, "cycles"), _stat(vb, "busy_cycles"), tr.bytes_written,
                     tr.bytes_read, dev.round_trips)
            window = dev.identity.rx_window
    cycles, busy, up, down, rts = (a - b for a, b in zip(after, before, strict=True))
    return {"spikes": spikes, "seconds": seconds, "cycles": cycles, "busy_cycles": busy,
            "bytes_to_chip": up, "bytes_to_host": down, "round_trips": rts, "window": window}


def bench(samples=40):
    path, meta = load_bundled("snntorch")
    (_, _), (x_test, _) = load_digits_split()
    enc = meta["encoder"]
    raster = rate_encode(x_test[:samples], meta["timesteps"], seed=enc["seed"],
                         x_max=enc["x_max"])
    from spikeforge.boards.configs import get_board

    config = get_board(BOARD).chip.to_core_config()
    net = compile(path, config).net
    new = _measure(ChipBackend, raster, net, {}, "bench_link_new")
    old = _measure(OldWayBackend, raster, net, {"ignore_idle": True}, "bench_link_old")
    if not np.array_equal(new["spikes"], old["spikes"]):
        raise SystemExit("the two ways gave different spikes")
    n = raster.shape[1]
    payload = 2 * (int(raster.sum()) + int(new["spikes"][:, :, net.output_indices()].sum()))
    result = {"samples": n, "timesteps": int(raster.shape[0]), "board": BOARD}
    for tag, r in (("", new), ("old_", old)):
        wire = r["bytes_to_chip"] + r["bytes_to_host"]
        ps = project_board(BOARD, cycles=r["cycles"], bytes_to_chip=r["bytes_to_chip"],
                           bytes_to_host=r["bytes_to_host"], round_trips=r["round_trips"],
                           pipelined=not tag, samples=n,
                           window_bytes=r["window"] if not tag else None)
        result.update({
            f"{tag}round_trips_per_sample": r["round_trips"] / n,
            f"{tag}payload_efficiency": payload / wire,
            f"{tag}wire_bytes_to_chip": r["bytes_to_chip"] / n,
            f"{tag}wire_bytes_to_host": r["bytes_to_host"] / n,
            f"{tag}chip_cycles": r["cycles"] / n if not tag else None,
            f"{tag}busy_cycles": r["busy_cycles"] / n,
            f"{tag}projected_ulx3s_samples_per_s_1ms": ps[0].samples_per_s,
            f"{tag}projected_ulx3s_samples_per_s_16ms": ps[1].samples_per_s,
            f"{tag}uart_bound_samples_per_s": ps[0].uart_bound_samples_per_s,
            f"{tag}vboard_cycles_per_busy_cycle": (r["cycles"] / r["busy_cycles"]
                                                   if r["busy_cycles"] else None),
            f"{tag}vboard_samples_per_s": n / r["seconds"],
        })
    result["chip_cycles"] = new["cycles"] / n
    result["old_simulated_cycles"] = old["cycles"] / n
    del result["old_chip_cycles"]
    result["projected_over_uart_bound_1ms"] = (result["projected_ulx3s_samples_per_s_1ms"]
                                               / result["uart_bound_samples_per_s"])
    result["vboard_speedup"] = result["vboard_samples_per_s"] / result["old_vboard_samples_per_s"]
    result["synthetic_payload_efficiency"] = events_efficiency(MAX_RUN_ITEMS)[1]
    result["rx_window"] = new["window"]
    result["load_average_1min"] = os.getloadavg()[0]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--samples", type=int, default=40,
                        help="digits test samples to run each way (default 40)")
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= 360:
        parser.error("--samples must be in 1..360")
    result = bench(args.samples)
    if args.json:
        print(json.dumps(result))
        return
    print(f"main job ({BOARD} virtual board, {result['samples']} digits samples, "
          f"{result['timesteps']} timesteps); per sample; old = stop-and-wait, fixed batches")
    print(f"{'metric':40s} {'streamed':>12s} {'old':>12s}")
    keys = [k for k in result if not k.startswith("old_") and "old_" + k in result]
    for k in keys:
        a, b = result[k], result["old_" + k]
        fa = f"{a:12,.3f}" if isinstance(a, float) else f"{a!s:>12s}"
        fb = f"{b:12,.3f}" if isinstance(b, float) else f"{b!s:>12s}"
        print(f"{k:40s} {fa} {fb}")
    for k in ("chip_cycles", "old_simulated_cycles", "projected_over_uart_bound_1ms",
              "vboard_speedup", "synthetic_payload_efficiency", "rx_window",
              "load_average_1min"):
        v = result[k]
        print(f"{k:40s} {v:12,.3f}" if isinstance(v, float) else f"{k:40s} {v!s:>12s}")


if __name__ == "__main__":
    sys.exit(main())
