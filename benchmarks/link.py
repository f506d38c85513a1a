"""Host link benchmark: wire cost of events and throughput through the virtual board.

Prints a table; ``--json`` prints one JSON object with at least ``payload_efficiency``,
``wire_bytes_per_event`` and ``virtual_board_events_per_s``.

* ``wire_bytes_per_event`` / ``payload_efficiency``: bytes on the wire of one full EVENTS frame
  (COBS, delimiter, header, CRC included) per event, and the share of those bytes that is event
  payload (2 bytes per event).  Exact, from ``spikeforge.protocol``.
* ``virtual_board_events_per_s``: input events per second that the host library pushes through
  the virtual board (Verilator) while it runs timesteps of a 64-128-10 network, EVENTS + STEP
  per timestep, wall clock.  Also reported: the simulated clock cycles per timestep, and what
  that throughput would be on a real 3 Mbaud UART (wire bytes only, no round-trip latency).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from spikeforge.hw.chip import Chip
from spikeforge.hw.image import CoreConfig
from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection
from spikeforge.protocol import MAX_EVENTS, Op, Status, events_efficiency, reply, request, u16s


def _network(rng):
    hidden = NeuronParams(beta=3900, threshold=400, reset="subtract")
    out = NeuronParams(beta=3900, threshold=300, reset="subtract")
    return Network(
        64,
        [Population("hidden", 128, hidden), Population("out", 10, out)],
        [
            Projection(INPUT, "hidden", rng.integers(-40, 80, (64, 128))),
            Projection("hidden", "out", rng.integers(-40, 80, (128, 10))),
        ],
        outputs=["out"],
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=400, help="timesteps to run")
    parser.add_argument("--activity", type=float, default=0.5,
                        help="probability that an input channel fires in a timestep")
    args = parser.parse_args(argv)

    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.virtual_board import VirtualBoard

    wire, eff = events_efficiency(MAX_EVENTS)
    rng = np.random.default_rng(0)
    net = _network(rng)
    cfg = CoreConfig(n_neurons=160, n_inputs=64, n_populations=2, synapse_words=8192)
    raster = (rng.random((args.steps, 1, 64)) < args.activity).astype(np.uint8)
    with VirtualBoard(Chip(cfg, 48_000_000), name="bench_link") as vb:
        with ChipBackend(vb.url, timeout=5.0) as chip:
            chip.load(net)
            chip.run(raster[:5])  # warm up the connection
            cycles0 = vb.stats().cycles
            t0 = time.perf_counter()
            chip.run(raster)
            seconds = time.perf_counter() - t0
            cycles = vb.stats().cycles - cycles0
    events = int(raster.sum())
    # On a real 3 Mbaud UART (10 bits per byte): the EVENTS request, the STEP request and its
    # final reply frame of each timestep (output spike frames excluded), no latency.
    step_bytes = len(request(Op.STEP, 0, u16s([1])))
    step_bytes += len(reply(Op.STEP.value, 0, u16s([1, 0]), Status.OK))
    per_step_bytes = events_efficiency(max(1, round(events / args.steps)))[0] + step_bytes
    uart_steps_per_s = 3_000_000 / 10 / per_step_bytes
    result = {
        "payload_efficiency": eff,
        "wire_bytes_per_event": wire / MAX_EVENTS,
        "events_per_frame": MAX_EVENTS,
        "virtual_board_events_per_s": events / seconds,
        "virtual_board_steps_per_s": args.steps / seconds,
        "simulated_cycles_per_step": cycles / args.steps,
        "events_per_step": events / args.steps,
        "uart_3mbaud_events_per_s_wire_bound": uart_steps_per_s * events / args.steps,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'metric':42s} value")
    for k, v in result.items():
        print(f"{k:42s} {v:,.3f}" if isinstance(v, float) else f"{k:42s} {v}")


if __name__ == "__main__":
    main()
