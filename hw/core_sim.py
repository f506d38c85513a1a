"""Drive a :class:`~spikeforge.hw.core.NeuronCore` in the Amaranth simulator.

Spec: ``docs/core.md`` (ports, timing).  Async testbench helpers (``await bus_write(ctx, core,
...)``) and :func:`run_network`, which loads a network through the memory bus, runs timesteps and
returns spikes, membranes and simulated cycle counts.  Used by the unit tests and by
``benchmarks/core_cycles.py``.
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from ..host.image import build_image
from .core import CoreOptions, NeuronCore
from .image import (
    CoreConfig,
    Region,
    StatusWord,
    address,
    decode_signed,
)

__all__ = [
    "bus_write",
    "bus_write_block",
    "bus_read",
    "bus_read_block",
    "send_event",
    "send_events",
    "run_step",
    "run_network",
    "simulate",
]


async def bus_write_block(ctx, core, addr, words):
    """Write ``words`` at consecutive bus addresses from ``addr``; returns the error flags."""
    bus = core.mem
    errors = []
    ctx.set(bus.w_en, 1)
    for k, word in enumerate(words):
        ctx.set(bus.addr, addr + k)
        ctx.set(bus.w_data, int(word) & 0xFFFFFFFF)
        while True:
            ready, error = ctx.get(bus.ready), ctx.get(bus.error)
            await ctx.tick()
            if ready:
                errors.append(error)
                break
    ctx.set(bus.w_en, 0)
    return errors


async def bus_write(ctx, core, addr, word):
    """Write one bus word; returns True if the core refused it."""
    return bool((await bus_write_block(ctx, core, addr, [word]))[0])


async def bus_read_block(ctx, core, addr, count):
    """Read ``count`` consecutive bus words from ``addr`` (one request per clock)."""
    bus = core.mem
    out = []
    pending = 0
    k = 0
    while len(out) < count:
        issue = k < count
        ctx.set(bus.r_en, issue)
        if issue:
            ctx.set(bus.addr, addr + k)
        ready = ctx.get(bus.ready)
        await ctx.tick()
        if issue and ready:
            k += 1
            pending += 1
        if ctx.get(bus.r_valid):
            out.append(ctx.get(bus.r_data))
            pending -= 1
    ctx.set(bus.r_en, 0)
    return out


async def bus_read(ctx, core, addr):
    """Read one bus word."""
    return (await bus_read_block(ctx, core, addr, 1))[0]


async def send_events(ctx, dut, channels):
    """Hand input events to ``dut.events`` back to back (each waits until it is taken).

    Returns the clock cycles it took.
    """
    cycles = 0
    for channel in channels:
        ctx.set(dut.events.valid, 1)
        ctx.set(dut.events.payload, int(channel))
        while True:
            ready = ctx.get(dut.events.ready)
            await ctx.tick()
            cycles += 1
            if ready:
                break
    ctx.set(dut.events.valid, 0)
    return cycles


async def send_event(ctx, core, channel):
    """Hand one input event to the core (waits until it is taken)."""
    await send_events(ctx, core, [channel])


async def run_step(ctx, core):
    """Pulse ``step``, wait for ``done``; returns (output spikes, clock cycles from pulse)."""
    ctx.set(core.spikes.ready, 1)
    ctx.set(core.step, 1)
    await ctx.tick()
    ctx.set(core.step, 0)
    spikes, cycles = [], 1
    while True:
        if ctx.get(core.spikes.valid):
            spikes.append(ctx.get(core.spikes.payload))
        done = ctx.get(core.done)
        await ctx.tick()
        cycles += 1
        if done:
            return spikes, cycles


def run_network(net, config: CoreConfig, events, read_v=True, vcd=None, **core_options):
    """Run ``net`` on a simulated core, one timestep per entry of ``events``.

    Returns
    -------
    dict
        ``spikes``: list (per step) of output neuron indices in emission order;
        ``v``: (T, n_neurons) membranes read back after each step (when ``read_v``);
        ``event_cycles``: clocks spent handing each step's events to the core;
        ``step_cycles``: clocks from the ``step`` pulse to ``done``;
        ``status``: the status words after the run.

    ``core_options`` (``weight_banks``, ``fast``) go to
    :class:`~spikeforge.hw.core.NeuronCore`.
    """
    image = build_image(net, config)
    core = NeuronCore(config, CoreOptions(**core_options))
    n = net.n_neurons
    result = {"spikes": [], "v": [], "event_cycles": [], "step_cycles": [], "status": {}}

    async def bench(ctx):
        for addr, words in image:
            await bus_write_block(ctx, core, addr, words)
        for evs in events:
            t0 = await send_events(ctx, core, evs)
            spikes, cycles = await run_step(ctx, core)
            result["spikes"].append(spikes)
            result["event_cycles"].append(t0)
            result["step_cycles"].append(cycles)
            if read_v:
                words = await bus_read_block(ctx, core, address(Region.V), n)
                result["v"].append([decode_signed(w, config.fmt.state_bits) for w in words])
        words = await bus_read_block(ctx, core, address(Region.STATUS), len(StatusWord))
        result["status"] = {s.name: words[s.value] for s in StatusWord}

    simulate(core, bench, vcd)
    result["v"] = np.array(result["v"], dtype=np.int64)
    return result


def simulate(dut, bench, vcd=None):
    """Run the async testbench ``bench`` on ``dut`` with a 1 MHz clock (and a VCD file)."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()


