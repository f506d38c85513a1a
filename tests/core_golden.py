"""One check shared by the core's tests: a :func:`~spikeforge.hw.core_sim.run_network` result
against the golden model, step by step (output spikes in ascending order, every membrane)."""

import numpy as np

from spikeforge.sim.golden import GoldenChip
from spikeforge.spec import DEFAULT_FORMAT


def assert_core_run_matches_golden(res, net, events, fmt=DEFAULT_FORMAT) -> int:
    """Assert that ``res`` (``run_network(net, config, events)``) is the golden model's run of
    ``events``, step by step; return how many spikes the golden model produced (so a test can
    require some)."""
    golden = GoldenChip(net, fmt=fmt)
    out = golden.output_indices
    spiked = 0
    for t, evs in enumerate(events):
        counts = np.zeros(net.n_inputs, dtype=np.int64)
        np.add.at(counts, evs, 1)
        s = golden.step(counts)[0]
        spiked += int(s.sum())
        assert res["spikes"][t] == sorted(int(n) for n in out[s[out]]), f"step {t}"
        np.testing.assert_array_equal(res["v"][t][: net.n_neurons], golden.v[0], f"step {t}")
    return spiked
