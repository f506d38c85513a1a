# Tests of the board-time projection (host/projection.py) with numbers computed by hand.
import json

import pytest

from spikeforge.errors import ConfigError
from spikeforge.host.projection import (
    USB_LATENCIES_S,
    board_link,
    project,
    project_board,
)

# 10 samples: 1,000,000 cycles, 30,000 bytes to the chip, 6,000 back, 100 round trips.
COUNTS = dict(cycles=1_000_000, bytes_to_chip=30_000, bytes_to_host=6_000, round_trips=100,
              samples=10)


def test_stop_and_wait_adds_everything():
    p = project(clock_hz=100e6, baud=3_000_000, latency_s=0.001, **COUNTS)
    assert p.core_s == pytest.approx(0.01)  # 1e6 / 100e6
    assert p.wire_to_chip_s == pytest.approx(0.1)  # 30,000 * 10 / 3e6
    assert p.wire_to_host_s == pytest.approx(0.02)  # 6,000 * 10 / 3e6
    assert p.wire_s == pytest.approx(0.12)
    assert p.latency_total_s == pytest.approx(0.1)  # 100 * 1 ms
    assert p.total_s == pytest.approx(0.23)
    assert p.per_sample_s == pytest.approx(0.023)
    assert p.samples_per_s == pytest.approx(10 / 0.23)
    assert p.uart_bound_samples_per_s == pytest.approx(100.0)  # 10 samples / 0.1 s
    assert p.core_fraction + p.wire_fraction + p.latency_fraction == pytest.approx(1.0)
    assert p.core_fraction == pytest.approx(0.01 / 0.23)
    assert p.bound == "wire"


def test_pipelined_overlaps_core_and_wire():
    p = project(clock_hz=100e6, baud=3_000_000, latency_s=0.001, pipelined=True, **COUNTS)
    assert p.wire_s == pytest.approx(0.1)  # the busier direction
    assert p.total_s == pytest.approx(0.2)  # max(0.01, 0.1, 0.02) + 0.1
    assert p.samples_per_s == pytest.approx(50.0)
    p16 = project(clock_hz=100e6, baud=3_000_000, latency_s=0.016, pipelined=True, **COUNTS)
    assert p16.total_s == pytest.approx(1.7)  # 0.1 + 100 * 16 ms
    assert p16.bound == "latency"


def test_pipelined_window_bounds_the_bytes_in_flight():
    # 2,048-byte window, 512-byte frames at 3 Mbaud (1.7067 ms each)
    frame_s = 512 * 10 / 3_000_000
    p1 = project(clock_hz=100e6, baud=3_000_000, latency_s=0.001, pipelined=True,
                 window_bytes=2048, **COUNTS)
    assert p1.window_s == pytest.approx(30_000 * (frame_s + 0.001) / 2048)  # 0.0397 s
    assert p1.total_s == pytest.approx(0.2)  # the window is not the limit at 1 ms
    p16 = project(clock_hz=100e6, baud=3_000_000, latency_s=0.016, pipelined=True,
                  window_bytes=2048, **COUNTS)
    assert p16.window_s == pytest.approx(30_000 * (frame_s + 0.016) / 2048)  # 0.2594 s
    assert p16.wire_s == pytest.approx(p16.window_s)  # at 16 ms it is
    assert p16.total_s == pytest.approx(p16.window_s + 1.6)
    assert p16.window_bytes == 2048
    # stop-and-wait ignores it
    assert project(clock_hz=100e6, baud=3_000_000, latency_s=0.016, window_bytes=2048,
                   **COUNTS).window_s == 0.0


def test_core_bound_run():
    p = project(cycles=24_000_000, clock_hz=24e6, bytes_to_chip=300, bytes_to_host=300,
                baud=3_000_000, round_trips=0, latency_s=0.016, pipelined=True, samples=4)
    assert p.total_s == pytest.approx(1.0) and p.per_sample_s == pytest.approx(0.25)
    assert p.bound == "core" and p.core_fraction == pytest.approx(1.0)


def test_board_parameters_come_from_the_registry():
    assert board_link("ulx3s") == (90e6, 3_000_000)
    assert board_link("icebreaker") == (24e6, 3_000_000)
    assert board_link("icesugar") == (24e6, 115_200)
    ps = project_board("ulx3s", **COUNTS)
    assert [p.latency_s for p in ps] == list(USB_LATENCIES_S) == [0.001, 0.016]
    assert ps[0].board == "ulx3s-85f" and ps[0].total_s == pytest.approx(0.22 + 1e6 / 90e6)
    slow = project_board("icesugar", latencies=(0.0,), **COUNTS)[0]
    assert slow.wire_to_chip_s == pytest.approx(30_000 * 10 / 115_200)
    assert slow.core_s == pytest.approx(1e6 / 24e6)


def test_to_dict_is_json():
    d = project(clock_hz=1e6, baud=9600, latency_s=0, cycles=0, bytes_to_chip=0,
                bytes_to_host=0, round_trips=0).to_dict()
    assert d["total_s"] == 0 and d["core_fraction"] == 0
    assert d["samples_per_s"] is None and d["uart_bound_samples_per_s"] is None  # inf
    json.dumps(d)
    d = project(clock_hz=1e6, baud=9600, latency_s=0, cycles=10, bytes_to_chip=0,
                bytes_to_host=0, round_trips=0).to_dict()
    assert d["uart_bound_samples_per_s"] is None  # no wire bytes: no UART bound (inf)
    json.dumps(d)


@pytest.mark.parametrize("kw, match", [
    (dict(cycles=-1), "cycles=-1"),
    (dict(clock_hz=0), "clock_hz=0"),
    (dict(baud=0), "baud=0"),
    (dict(samples=0), "samples=0"),
    (dict(latency_s=-0.001), "latency_s=-0.001"),
    (dict(round_trips=1.5), "round_trips=1.5"),
])
def test_bad_inputs(kw, match):
    args = dict(clock_hz=1e6, baud=9600, latency_s=0.001, **COUNTS)
    args.update(kw)
    with pytest.raises(ConfigError, match=match):
        project(**args)
    with pytest.raises(ConfigError, match="unknown board 'nope'"):
        project_board("nope", **COUNTS)


# --- the demo's projection from a backend's counters (host/demo.py), with fakes --------------
class _Stats:
    def __init__(self, cycles):
        self.cycles = cycles


class _FakeVB:
    def __init__(self):
        self.cycles = 0

    def stats(self):
        return _Stats(self.cycles)


class _FakeTransport:
    bytes_written = bytes_read = turnarounds = 0


class _FakeDevice:
    def __init__(self, with_round_trips):
        self.transport = _FakeTransport()
        if with_round_trips:
            self.round_trips = 0


def _fake_chip(with_round_trips=True):
    """A golden backend dressed as a virtual ULX3S: each sample costs 100,000 cycles, 3,000
    bytes to the chip, 600 back and 10 round trips (20 turnarounds at the transport)."""
    from spikeforge.host.backends import GoldenBackend

    class FakeChip(GoldenBackend):
        name = "fake virtual board"
        board = "ulx3s-85f"

        def __init__(self):
            super().__init__()
            self.vb = _FakeVB()
            self.device = _FakeDevice(with_round_trips)

        def run(self, raster):
            b = raster.shape[1]
            self.vb.cycles += 100_000 * b
            t = self.device.transport
            t.bytes_written += 3_000 * b
            t.bytes_read += 600 * b
            t.turnarounds += 20 * b
            if with_round_trips:
                self.device.round_trips += 10 * b
            return super().run(raster)

    return FakeChip()


def _int_net():
    import numpy as np

    from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection

    return Network(4, [Population("out", 3, NeuronParams(beta=3900, threshold=100))],
                   [Projection(INPUT, "out", np.full((4, 3), 60))], outputs=["out"])


def test_link_counts_and_board_speed():
    import numpy as np

    from spikeforge.host.demo import LinkCounts, board_speed

    chip = _fake_chip()
    chip.load(_int_net())
    chip.run(np.zeros((5, 1, 4)))  # before the meter: not counted
    meter = LinkCounts(chip)
    chip.run(np.zeros((5, 4, 4)))
    counts = meter.delta()
    assert counts == {"cycles": 400_000, "bytes_to_chip": 12_000, "bytes_to_host": 2_400,
                      "round_trips": 40, "round_trips_source": "device", "pipelined": False}
    proj = board_speed(chip, counts, 4)
    assert proj["available"] and proj["board"] == "ulx3s-85f" and proj["mode"] == "stop-and-wait"
    p1, p16 = proj["latencies"]
    # per sample: 1.11 ms core (100,000 cycles at 90 MHz) + 10 ms up + 2 ms down
    # + 10 round trips * 1 ms = 23.1 ms
    core = 100_000 / 90e6
    assert p1["per_sample_s"] == pytest.approx(core + 0.022)
    assert p16["per_sample_s"] == pytest.approx(core + 0.012 + 0.160)
    assert p1["uart_bound_samples_per_s"] == pytest.approx(100.0)
    # a device without round_trips: the transport's turnarounds stand in
    chip = _fake_chip(with_round_trips=False)
    meter = LinkCounts(chip)
    chip.load(_int_net())
    chip.run(np.zeros((5, 2, 4)))
    counts = meter.delta()
    assert counts["round_trips"] == 40 and counts["round_trips_source"] == "transport turnarounds"


def test_board_speed_not_available():
    from spikeforge.host.backends import GoldenBackend
    from spikeforge.host.demo import LinkCounts, board_speed

    g = GoldenBackend()
    res = board_speed(g, LinkCounts(g).delta(), 1)
    assert not res["available"] and "simulates no clock cycles" in res["reason"]

    class RealBoard(GoldenBackend):
        url = "/dev/ttyUSB1"
        device = object()

    res = board_speed(RealBoard(), {}, 1)
    assert not res["available"] and "measured speed" in res["reason"]


@pytest.mark.needs("nir", "sklearn")
def test_demo_prints_simulation_speed_and_projected_board_speed(capsys):
    from spikeforge.host.demo import _print_demo, run_demo

    res = run_demo(_fake_chip(), samples=4, progress=False)
    assert res["throughput"]["kind"] == "simulation speed (this PC)"
    proj = res["board_projection"]
    assert proj["counts"]["cycles"] == 400_000 and proj["counts"]["round_trips"] == 40
    json.dumps(res)
    _print_demo(res)
    out = capsys.readouterr().out
    assert "simulation speed (this PC)" in out
    assert "board speed (projected)     ulx3s-85f: chip clock 90 MHz, UART 3,000,000 baud" in out
    assert ("USB latency    1 ms       43.3 samples/s (23.1 ms a sample: chip 1.11 ms, wire 12 ms"
            in out)
    assert "golden integer model (the chip's specification)" in out
    assert "400,000 chip cycles, 12,000 bytes to the chip, 2,400 back, 40 round trips" in out
