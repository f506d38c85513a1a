# benchmarks/netlist_stats.py: the Yosys cell statistics it reads (spec: its docstring).
import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).parent.parent / "benchmarks" / "netlist_stats.py"
_spec = importlib.util.spec_from_file_location("netlist_stats", _PATH)
netlist_stats = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(netlist_stats)

LOG = """
2.50. Printing statistics.

=== top ===

       12 cells
       10   SB_CARRY
        3   SB_DFF

2.59. Printing statistics.

=== top ===

        +----------Local Count, excluding submodules.
        |
     4708 wires
        3 ports
       51 cells
       17   $scopeinfo
        3   SB_MAC16
       24   SB_RAM40_4K
        4   SB_SPRAM256KA
     7077 submodules
     1028   SB_CARRY
      727   SB_DFF
     1097   SB_DFFESR
     3724   SB_LUT4

=== design hierarchy ===
        1   SB_LUT4
"""


def test_the_last_statistics_are_summed_by_kind(tmp_path):
    counts = netlist_stats.cell_counts(LOG)
    assert counts["SB_LUT4"] == 3724 and counts["SB_CARRY"] == 1028
    row = netlist_stats.summary(counts)
    assert row["LUT"] == 3724
    assert row["FF"] == 727 + 1097
    assert (row["block RAM"], row["SPRAM"], row["DSP"]) == (24, 4, 3)
    (tmp_path / "icebreaker").mkdir()
    (tmp_path / "icebreaker" / "top.rpt").write_text(LOG)
    assert netlist_stats.main(["--root", str(tmp_path), "--board", "icebreaker"]) == 0


def test_a_log_without_statistics_is_refused():
    with pytest.raises(ValueError, match="statistics"):
        netlist_stats.cell_counts("yosys log without stat")
