"""The bundled digits model's quantization report: per population the integer model's spike
agreement with the float model, firing rates, and how much precision each parameter lost.

Compiles ``spikeforge/data/digits.nir`` for the default chip format, rate-codes the 360 test
digits as the demo does (the model's seed), and prints ``Compiled.report`` (``compare``:
``docs/compiler.md``).  ``--json`` prints one JSON object.

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    path, meta = load_bundled("snntorch")
    _, (x, y) = load_digits_split()
    enc = meta["encoder"]
    raster = rate_encode(x, meta["timesteps"], seed=enc["seed"], x_max=enc["x_max"])
    rep = compile(path).report(raster, y, decoder=meta.get("decoder", "count"),
                               min_agreement=None)
    if args.json:
        print(json.dumps({
            "agreement": rep.agreement, "rates_float": rep.rates_float,
            "rates_int": rep.rates_int, "accuracy_float": rep.accuracy_float,
            "accuracy_int": rep.accuracy_int, "precision": rep.precision,
        }, indent=2))
    else:
        print(rep)
        for pop, errs in rep.precision.items():
            print(f"{pop}: " + ", ".join(f"{k} {100 * v:.2f} %" for k, v in errs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
