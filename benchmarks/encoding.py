"""On-chip encoding benchmark (#17): wire bytes and projected board speed of the main job when
the host sends pixels instead of spikes.

The main job is ``spikeforge demo``'s: the bundled digits network (64-128-10, 25 timesteps) on
the ULX3S configuration, one sample per test digit.  Three ways of running a sample:

* **host RUN** (today): the host rate-codes the digit (``rate_encode``) and streams the input
  events in RUN requests; the chip answers every output spike.
* **chip rate + counts**: one SAMPLE request with the 64 intensities (``chip_intensities``), the
  chip rate-codes them (``docs/encoding.md``) and answers the 10 output neurons' spike counts
  (``SampleFlag.COUNTS``).
* **chip rate + spikes**: the same SAMPLE without COUNTS: the chip answers every output spike.

Wire bytes are measured twice and must agree: through ``Device`` on the reference device
(``RefLink`` with a golden-model core, byte-exact with the gateware, no RTL) and, with the
virtual board, on the chip RTL.  The SAMPLE request and COUNTS reply sizes are also computed
from the protocol's frame encoders (``expected_*``).  Chip cycles come from the virtual board
(``VirtualBoard.stats().cycles``, the chip RTL in Verilator: the real SAMPLE gateware); the
projection is ``spikeforge.host.projection`` (``docs/projection.md``): ULX3S 90 MHz, 3 Mbaud,
1 ms / 16 ms of USB latency per round trip, pipelined within the 2 kB receive window.
``--no-vboard`` skips the RTL (bytes only, no cycles, no projection).

Each way must give the golden model's results (spikes, or counts of the same ``chip_encode``
raster); the script stops otherwise.  Prints a table; ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from spikeforge.boards.configs import get_board
from spikeforge.host.backend import output_counts
from spikeforge.host.chip_backend import ChipBackend
from spikeforge.host.coding import chip_encode, chip_intensities, rate_encode
from spikeforge.host.compiler import compile
from spikeforge.host.demo import load_bundled, load_digits_split
from spikeforge.host.device import Device
from spikeforge.host.projection import project_board
from spikeforge.host.refdevice import GoldenRefCore, RefLink
from spikeforge.hw.chip import ident_words
from spikeforge.protocol import (
    SAMPLE_HEADER,
    Encoder,
    Op,
    Sample,
    encode_sample,
    encoded_size,
    frame_bytes,
    request,
)
from spikeforge.sim.golden import GoldenChip

BOARD = "ulx3s-85f"
WAYS = ("host_run", "chip_counts", "chip_spikes")


def _workload(samples):
    path, meta = load_bundled("snntorch")
    (_, _), (x, _) = load_digits_split()
    x = x[:samples]
    enc = meta["encoder"]
    t = int(meta["timesteps"])
    params = get_board(BOARD).chip
    config = params.to_core_config()
    net = compile(path, config).net
    raster = rate_encode(x, t, seed=enc["seed"], x_max=enc["x_max"])
    x8 = chip_intensities(x, enc["x_max"])
    seed = int(enc["seed"])
    golden = GoldenChip(net, "int", batch=len(x))
    want_host = golden.run(raster, record_v=False)["spikes"]
    golden.reset()
    want_chip = golden.run(chip_encode(x8, t, seed=seed), record_v=False)["spikes"]
    return {"net": net, "config": config, "params": params, "raster": raster, "x8": x8,
            "t": t, "seed": seed, "want_host": want_host, "want_chip": want_chip}


def _run_way(chip, way, w):
    """Run all samples one way on ``chip``; check the result; return the result."""
    outs = w["net"].output_indices()
    if way == "host_run":
        out = chip.run(w["raster"])
        ok = np.array_equal(out[..., outs], w["want_host"][..., outs])
    elif way == "chip_counts":
        out = chip.run_encoded(w["x8"], w["t"], "rate", seed=w["seed"], readout="counts",
                               on_chip=True)
        ok = chip.encoding_readout == "counts" and np.array_equal(
            out, output_counts(w["want_chip"], outs))
    else:
        out = chip.run_encoded(w["x8"], w["t"], "rate", seed=w["seed"], on_chip=True)
        ok = np.array_equal(out[..., outs], w["want_chip"][..., outs])
    if not ok:
        raise SystemExit(f"{way}: the chip's results differ from the golden model's")
    return out


def _measure(chip, way, w, vb=None):
    """Counts of one way: bytes each way, round trips, request frames (and cycles on ``vb``)."""
    dev, tr = chip.device, chip.device.transport

    def read():
        stats = vb.stats() if vb is not None else None
        return (tr.bytes_written, tr.bytes_read, dev.round_trips,
                dev.run_frames + dev.sample_frames,
                int(stats.cycles) if stats is not None else 0,
                int(getattr(stats, "busy_cycles", 0) or 0) if stats is not None else 0)

    before = read()
    t0 = time.perf_counter()
    _run_way(chip, way, w)
    seconds = time.perf_counter() - t0
    up, down, rts, frames, cycles, busy = (a - b for a, b in zip(read(), before, strict=True))
    return {"bytes_to_chip": up, "bytes_to_host": down, "round_trips": rts, "frames": frames,
            "cycles": cycles, "busy_cycles": busy, "seconds": seconds}


def _reference_counts(w):
    """Every way through Device on RefLink + the golden-model core (bytes, exact)."""
    link = RefLink(GoldenRefCore(w["net"]), ident_words=ident_words(w["config"], encoders=True),
                   encoders=True, rx_window=w["params"].rx_window)
    chip = ChipBackend(device=Device.in_process(link))
    chip.load(w["net"])
    return {way: _measure(chip, way, w) for way in WAYS}


def _vboard_counts(w):
    """Every way on the ULX3S virtual board (the chip RTL): bytes, round trips, cycles."""
    from spikeforge.sim.virtual_board import VirtualBoard, chip_for_board

    with VirtualBoard(chip_for_board(BOARD), name="bench_encoding") as vb:
        with ChipBackend(vb.url, timeout=10.0) as chip:
            if not chip.encoders:
                raise SystemExit(f"the {BOARD} virtual board reports no encoders (IDENTIFY)")
            chip.load(w["net"])
            _run_way(chip, "host_run", {**w, "raster": w["raster"][:, :1],
                                        "want_host": w["want_host"][:, :1]})  # warm up
            window = chip.device.identity.rx_window
            return {way: _measure(chip, way, w, vb) for way in WAYS}, window


def expected_sample_bytes(n_inputs, out_count):
    """Exact wire bytes of one SAMPLE request (``n_inputs`` intensities) and of its COUNTS reply
    (``out_count`` counts), from the protocol's frame sizes: COBS, CRC and delimiter included
    (checked against an encoded request)."""
    req = encoded_size(frame_bytes(SAMPLE_HEADER.size + n_inputs))
    wire = request(Op.SAMPLE, 1, encode_sample(Sample(Encoder.RATE, 25, bytes(n_inputs),
                                                      counts=(0, out_count))))
    assert len(wire) == req, (len(wire), req)
    return req, encoded_size(frame_bytes(out_count, reply=True))


def bench(samples=40, vboard=True):
    w = _workload(samples)
    n = w["x8"].shape[0]
    ref = _reference_counts(w)
    result = {"board": BOARD, "samples": n, "timesteps": w["t"],
              "n_inputs": int(w["net"].n_inputs),
              "n_outputs": int(len(w["net"].output_indices()))}
    req, rep = expected_sample_bytes(result["n_inputs"], result["n_outputs"])
    result["expected_sample_request_bytes"] = req
    result["expected_counts_reply_bytes"] = rep
    vb, window = (_vboard_counts(w) if vboard else (None, w["params"].rx_window))
    result["rx_window"] = window
    result["cycles_source"] = ("virtual board (chip RTL in Verilator)" if vboard
                               else "not measured (--no-vboard)")
    for way in WAYS:
        r = ref[way]
        row = {
            "wire_bytes_to_chip": r["bytes_to_chip"] / n,
            "wire_bytes_to_host": r["bytes_to_host"] / n,
            "wire_bytes": (r["bytes_to_chip"] + r["bytes_to_host"]) / n,
        }
        if vb is not None:
            v = vb[way]
            if (v["bytes_to_chip"], v["bytes_to_host"]) != (r["bytes_to_chip"],
                                                            r["bytes_to_host"]):
                raise SystemExit(f"{way}: the virtual board's bytes ({v['bytes_to_chip']} / "
                                 f"{v['bytes_to_host']}) differ from the reference device's "
                                 f"({r['bytes_to_chip']} / {r['bytes_to_host']})")
            ps = project_board(BOARD, cycles=v["cycles"], bytes_to_chip=v["bytes_to_chip"],
                               bytes_to_host=v["bytes_to_host"], round_trips=v["round_trips"],
                               pipelined=True, samples=n, window_bytes=window,
                               frame_bytes=max(1, round(v["bytes_to_chip"] / v["frames"])))
            p1, p16 = ps
            row.update({
                "chip_cycles": v["cycles"] / n,
                "busy_cycles": v["busy_cycles"] / n,
                "round_trips_per_sample": v["round_trips"] / n,
                "projected_ulx3s_samples_per_s_1ms": p1.samples_per_s,
                "projected_ulx3s_samples_per_s_16ms": p16.samples_per_s,
                "core_ms_per_sample": 1e3 * p1.core_s / n,
                "wire_ms_per_sample": 1e3 * p1.wire_s / n,
                "core_share_1ms": p1.core_fraction,
                "wire_share_1ms": p1.wire_fraction,
                "bound_1ms": p1.bound,
                "uart_bound_samples_per_s": p1.uart_bound_samples_per_s,
                "vboard_samples_per_s": n / v["seconds"],
            })
        result[way] = row
    result["wire_bytes_ratio"] = result["host_run"]["wire_bytes"] / \
        result["chip_counts"]["wire_bytes"]
    result["load_average_1min"] = os.getloadavg()[0]
    return result


_LABELS = {"host_run": "host RUN", "chip_counts": "chip rate+counts",
           "chip_spikes": "chip rate+spikes"}


def _fmt(v):
    if isinstance(v, float):
        return f"{v:17,.3f}"
    return f"{v!s:>17s}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--samples", type=int, default=40,
                        help="digits test samples to run each way (default 40)")
    parser.add_argument("--no-vboard", action="store_true",
                        help="skip the virtual board: wire bytes only (no cycles, no projection)")
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= 360:
        parser.error("--samples must be in 1..360")
    result = bench(args.samples, vboard=not args.no_vboard)
    if args.json:
        print(json.dumps(result))
        return
    print(f"main job ({BOARD}, {result['samples']} digits samples, {result['timesteps']} "
          f"timesteps), per sample; cycles: {result['cycles_source']}")
    print(f"{'metric':36s}" + "".join(f"{_LABELS[w]:>18s}" for w in WAYS))
    for k in result["host_run"]:
        print(f"{k:36s}" + "".join(" " + _fmt(result[w][k]) for w in WAYS))
    for k in ("expected_sample_request_bytes", "expected_counts_reply_bytes",
              "wire_bytes_ratio", "rx_window", "load_average_1min"):
        print(f"{k:36s} {_fmt(result[k])}")


if __name__ == "__main__":
    sys.exit(main())
