"""Digits accuracy with the chip's own spike encoding against the host's, over many draws.

Rate coding is random: one draw of the 360 test digits' spikes is one sample of the accuracy,
whose spread from draw to draw (about half a point here) is as large as the difference being
asked about.  So this script compares the *distributions*: for each of ``--draws`` seeds it
encodes the test split twice and runs the bundled snnTorch model on the integer golden model
(the chip, bit for bit: ``tests/test_sample_link.py``, ``spikeforge demo --on-chip``):

* **host**: the model's own encoder, ``rate_encode`` (NumPy's generator, float probabilities
  ``x / x_max``), the way the model was trained and the way ``spikeforge demo`` feeds the chip;
* **chip**: ``chip_encode(chip_intensities(x, x_max), T, "rate")``, the integer xorshift32
  encoder of ``docs/encoding.md`` that the chip runs for a SAMPLE request.

Each is decoded two ways: ``count`` with first-spike tie-breaking (the model's decoder, what a
spike readout allows) and counts alone (what the chip's ``COUNTS`` readout returns: ties go to
the lowest index).  Draw ``k`` uses seed ``k`` on the host and ``1 + 1000 k`` on the chip.

Usage::

    python benchmarks/encoding_accuracy.py [--draws 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge.boards.configs import get_board  # noqa: E402
from spikeforge.host.coding import (  # noqa: E402
    chip_encode,
    chip_intensities,
    predict,
    rate_encode,
)
from spikeforge.host.compiler import compile  # noqa: E402
from spikeforge.host.demo import load_bundled, load_digits_split  # noqa: E402
from spikeforge.sim.golden import GoldenChip  # noqa: E402

COLUMNS = (
    ("host_count", "host rate_encode, count decoder"),
    ("chip_count", "chip encoder, count decoder"),
    ("host_counts_only", "host rate_encode, counts only"),
    ("chip_counts_only", "chip encoder, counts only (COUNTS readout)"),
)


def measure(draws: int) -> dict:
    """Accuracy (percent) of every column for draws ``0 .. draws-1``, with mean and spread."""
    path, meta = load_bundled("snntorch")
    (_, _), (x, y) = load_digits_split()
    enc, t = meta["encoder"], meta["timesteps"]
    compiled = compile(path, get_board("ulx3s-85f").chip.to_core_config())
    net = compiled.net
    out = net.outputs[0]
    sl = slice(net.base(out), net.base(out) + net.population(out).size)
    golden = GoldenChip(net, "int", batch=len(x), fmt=compiled.fmt)
    intensities = chip_intensities(x, enc["x_max"])

    def accuracies(raster):
        spikes = golden.run(raster, record_v=False)["spikes"][..., sl]
        return (100 * float(np.mean(predict("count", spikes=spikes) == y)),
                100 * float(np.mean(spikes.sum(axis=0).argmax(axis=1) == y)))

    per_draw = []
    for k in range(draws):
        host = accuracies(rate_encode(x, t, seed=k, x_max=enc["x_max"]))
        chip = accuracies(chip_encode(intensities, t, "rate", gain=16, seed=1 + 1000 * k))
        per_draw.append({"draw": k, "host_count": host[0], "chip_count": chip[0],
                         "host_counts_only": host[1], "chip_counts_only": chip[1]})
    summary = {}
    for name, _ in COLUMNS:
        values = np.array([d[name] for d in per_draw])
        summary[name] = {"mean": float(values.mean()), "std": float(values.std()),
                         "min": float(values.min()), "max": float(values.max())}
    return {
        "model": meta.get("name", "snntorch"),
        "samples": int(len(x)),
        "timesteps": int(t),
        "draws": draws,
        "summary": summary,
        "chip_minus_host_points": summary["chip_count"]["mean"] - summary["host_count"]["mean"],
        "chip_counts_minus_host_points": (summary["chip_counts_only"]["mean"]
                                          - summary["host_count"]["mean"]),
        "per_draw": per_draw,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=20, help="encoding draws (seeds) per encoder")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.draws < 1:
        ap.error("--draws must be at least 1")
    res = measure(args.draws)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['model']}: {res['samples']} test digits, {res['timesteps']} timesteps, "
          f"{res['draws']} draws, golden model (integer)")
    print("| encoding, decoding | mean accuracy | spread (std) | min .. max |")
    print("|---|---|---|---|")
    for name, label in COLUMNS:
        s = res["summary"][name]
        print(f"| {label} | {s['mean']:.2f} % | {s['std']:.2f} | "
              f"{s['min']:.2f} .. {s['max']:.2f} % |")
    print(f"chip encoder - host encoder: {res['chip_minus_host_points']:+.2f} points "
          f"(with the COUNTS readout: {res['chip_counts_minus_host_points']:+.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
