# Amaranth-simulator tests of the status counters (spec: hw/counters.py, docs/core.md).
import random

import pytest
from amaranth.sim import Simulator

from spikeforge.hw.counters import FlopCounters, RamCounters


def _run(counters, pulses, holds):
    """Apply ``pulses[t]`` (a bit mask) and ``holds[t]``, then wait for ``busy`` to fall and
    read every counter through the read port."""
    got = []

    async def bench(ctx):
        for mask, hold in zip(pulses, holds, strict=True):
            ctx.set(counters.inc, mask)
            ctx.set(counters.hold, hold)
            await ctx.tick()
        ctx.set(counters.inc, 0)
        ctx.set(counters.hold, 0)
        await ctx.tick()  # (FlopCounters: the last pulse is being registered)
        await ctx.tick()
        for _ in range(100):
            if not ctx.get(counters.busy):
                break
            await ctx.tick()
        assert not ctx.get(counters.busy), "busy never fell"
        for k in range(counters.count):
            ctx.set(counters.hold, 1)
            ctx.set(counters.rd_addr, k)
            await ctx.tick()
            got.append(ctx.get(counters.rd_data))

    sim = Simulator(counters)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("kind", [RamCounters, FlopCounters])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_pulse_is_counted(kind, seed):
    """Pulses on every counter in every clock (and at random), with the reader holding the
    port now and then: the counts equal the pulses."""
    rng = random.Random(seed)
    n = 4
    pulses = [(1 << n) - 1] * 40 + [rng.randrange(1 << n) for _ in range(200)]
    holds = [int(rng.random() < 0.1) for _ in pulses]
    expected = [sum(p >> k & 1 for p in pulses) for k in range(n)]
    assert _run(kind(n, 32), pulses, holds) == expected


def test_ram_counters_wrap_or_saturate():
    pulses = [1] * 20
    assert _run(RamCounters(1, 4), pulses, [0] * 20) == [20 % 16]
    assert _run(RamCounters(1, 4, saturate=True), pulses, [0] * 20) == [15]


def test_counters_refuse_bad_sizes():
    with pytest.raises(ValueError, match="count"):
        RamCounters(0, 8)
    with pytest.raises(ValueError, match="width"):
        FlopCounters(2, 33)
