"""The bundled digits model's quantization report: per population the integer model's spike
agreement with the float model, firing rates, and how much precision each parameter lost.

Compiles ``spikeforge/data/digits.nir`` for the default chip format (8-bit weights) and for
``WIDE_FORMAT`` (16-bit weights, 24-bit state), rate-codes the 360 test digits as the demo does
(the model's seed), and prints each ``Compiled.report`` (``compare``: ``docs/compiler.md``) and
what the quantizer's calibration chose.  ``--json`` prints one JSON object, by format.

Usage::

    python benchmarks/quantization_report.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikeforge.host.coding import rate_encode  # noqa: E402
from spikeforge.host.compiler import compile  # noqa: E402
from spikeforge.host.demo import load_bundled, load_digits_split  # noqa: E402
from spikeforge.spec import DEFAULT_FORMAT, WIDE_FORMAT  # noqa: E402

FORMATS = {"DEFAULT_FORMAT": DEFAULT_FORMAT, "WIDE_FORMAT": WIDE_FORMAT}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    path, meta = load_bundled("snntorch")
    _, (x, y) = load_digits_split()
    enc = meta["encoder"]
    raster = rate_encode(x, meta["timesteps"], seed=enc["seed"], x_max=enc["x_max"])
    out = {}
    for name, fmt in FORMATS.items():
        compiled = compile(path, fmt=fmt)
        rep = compiled.report(raster, y, decoder=meta.get("decoder", "count"),
                              min_agreement=None)
        cal = compiled.calibration
        out[name] = {
            "agreement": rep.agreement, "rates_float": rep.rates_float,
            "rates_int": rep.rates_int, "accuracy_float": rep.accuracy_float,
            "accuracy_int": rep.accuracy_int, "precision": rep.precision,
            "calibration": {k: cal[k] for k in ("per_neuron", "weight_fill", "agreement")},
        }
        if not args.json:
            print(f"== {name}: calibration chose "
                  f"{'per-neuron' if cal['per_neuron'] else 'per-population'} scales, weight "
                  f"fill {cal['weight_fill']:g}")
            print(rep)
            for pop, errs in rep.precision.items():
                print(f"{pop}: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in errs.items()))
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
