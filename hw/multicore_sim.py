"""Amaranth-simulator driver of :class:`~spikeforge.hw.multicore.MultiCore` (tests, benchmarks).

Spec: ``docs/routing.md``.  :func:`run_multicore` loads a network split by
``spikeforge.host.partition`` (per-core images and the routing table, over the chip bus), runs
it timestep by timestep and returns the spikes, membranes and cycle counts.
"""

from __future__ import annotations

import numpy as np

from ..host.partition import partition
from .core_sim import bus_read_block, bus_write_block, send_events, simulate
from .image import Region, address, decode_signed
from .multicore import MultiCore
from .router import RouterConfig, RouterRegion, RouterStatusWord, core_address, router_address

__all__ = ["run_multicore", "router_status"]


async def router_status(ctx, dut) -> dict:
    """The router's status words as a dict (name -> value)."""
    words = await bus_read_block(
        ctx, dut, router_address(RouterRegion.STATUS), len(RouterStatusWord)
    )
    return {w.name: words[w.value] for w in RouterStatusWord}


def run_multicore(net, config: RouterConfig, events, *, mapping=None, read_v=True,
                  spikes_ready=None, vcd=None, max_step_cycles=200_000):
    """Run ``net`` on a simulated multi-core fabric, one timestep per entry of ``events``.

    Parameters
    ----------
    net : Network
    config : RouterConfig
    events : list of list of int
        Host input channels of each timestep.
    mapping : ChipMapping, optional
        Default: ``partition(net, config.cores, config.core, router=config)``.
    read_v : bool
        Read every membrane back after each step.
    spikes_ready : callable, optional
        ``spikes_ready(cycle) -> bool``: throttle the host spike stream (back-pressure test).
    max_step_cycles : int
        A timestep that takes longer raises ``AssertionError`` (a hang, not a slow step).

    Returns
    -------
    dict
        ``spikes`` (per step, global indices in emission order), ``v`` ((T, n_neurons)),
        ``event_cycles`` (clocks handing each step's events over), ``step_cycles`` (clocks from
        the ``step`` pulse to ``done``), ``router`` (status after the run), ``mapping``.
    """
    if mapping is None:
        mapping = partition(net, config.cores, config.core, router=config)
    image = mapping.core_images(config.core, config.cores) + mapping.router_image(config)
    dut = MultiCore(config)
    result = {"spikes": [], "v": [], "event_cycles": [], "step_cycles": [], "router": {},
              "mapping": mapping, "bus_errors": 0}

    async def bench(ctx):
        for addr, words in image:
            result["bus_errors"] += sum(await bus_write_block(ctx, dut, addr, words))
        cycle = 0
        for evs in events:
            t0 = await send_events(ctx, dut, evs)
            ctx.set(dut.step, 1)
            spikes, cycles = [], 0
            while True:
                ready = spikes_ready(cycle) if spikes_ready is not None else True
                ctx.set(dut.spikes.ready, ready)
                if ctx.get(dut.spikes.valid) and ready:
                    spikes.append(ctx.get(dut.spikes.payload))
                done = ctx.get(dut.done)
                await ctx.tick()
                ctx.set(dut.step, 0)
                cycles += 1
                cycle += 1
                if done:
                    break
                assert cycles < max_step_cycles, f"no done after {cycles} clocks (a hang?)"
            ctx.set(dut.spikes.ready, 0)
            result["spikes"].append(spikes)
            result["event_cycles"].append(t0)
            result["step_cycles"].append(cycles)
            if read_v:
                per_core = []
                for k in range(mapping.used_cores):
                    n = mapping.core_neurons(k)
                    words = await bus_read_block(ctx, dut, core_address(k, address(Region.V)), n)
                    per_core.append([decode_signed(w, config.core.fmt.state_bits) for w in words])
                result["v"].append(mapping.gather(per_core))
        result["router"] = await router_status(ctx, dut)

    simulate(dut, bench, vcd)
    result["v"] = np.array(result["v"], dtype=np.int64)
    return result
