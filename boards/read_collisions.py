"""RTLIL pass: memories whose reads never use a word written in the same clock lose Yosys's
read-first emulation.

Amaranth's :class:`~amaranth.lib.memory.Memory` read ports are read-first: in a clock in which a
write port writes the address a read port reads, the read returns the old word.  Amaranth writes
``COLLISION_X_MASK = 0`` on every ``$memrd_v2`` cell, so where the block RAM's two ports do not
guarantee that (the ECP5's DP16KD, the iCE40's SB_RAM40_4K) Yosys emulates it
(``emulate_read_first``): the write is delayed a clock and each output bit passes a multiplexer
that an address comparator drives.  On the ULX3S those multiplexers and comparators sat on the
critical paths (block RAM output -> LUT -> flip-flop; bus request -> address multiplexers ->
comparator).

A memory declared with :data:`spikeforge.hw.util.READ_COLLISION_X` promises that its reads never
use such a word (docs/core.md, "Memories", says why for each one).  :func:`mark_read_collisions`
sets ``COLLISION_X_MASK`` to all ones on the read ports of those memories, in the module that
declares them, so Yosys maps them without the emulation.  The bitstream builds
(``boards/build.py``) and the netlist virtual board (``sim/netlist.py``) run it on the RTLIL
Amaranth writes; the netlist's block-RAM models return the written bits inverted on such a
read, so the netlist tests would see a read that is used after all.
"""

from __future__ import annotations

import re

from ..hw.util import READ_COLLISION_X

__all__ = ["mark_read_collisions"]

(_ATTR,) = READ_COLLISION_X
_MODULE = re.compile(r"^module (\S+)\n.*?^end$", re.MULTILINE | re.DOTALL)
# a memory declaration with the attributes in front of it
_MEMORY = re.compile(
    r"((?:^[ \t]*attribute [^\n]*\n)*)^[ \t]*memory [^\n]*?(\\\S+)$", re.MULTILINE
)
_MEMRD = re.compile(r"^[ \t]*cell \$memrd_v2 [^\n]*\n(?:(?!^[ \t]*end$).*\n)*?^[ \t]*end$",
                    re.MULTILINE)
_MEMID = re.compile(r'^[ \t]*parameter \\MEMID "(.*)"$', re.MULTILINE)
_MASK = re.compile(r"^([ \t]*parameter \\COLLISION_X_MASK )(\d+)'([01]+)$", re.MULTILINE)


def _memid(name: str) -> str:
    # RTLIL writes a memory "\name" and the MEMID string "\\name" (a quoted backslash)
    return name.replace("\\", "\\\\")


def mark_read_collisions(text: str) -> tuple[str, int]:
    """Set ``COLLISION_X_MASK`` to all ones on every ``$memrd_v2`` cell of a memory that carries
    the :data:`~spikeforge.hw.util.READ_COLLISION_X` attribute (as the module docstring says).

    Parameters
    ----------
    text : str
        RTLIL text (what ``amaranth.back.rtlil.convert`` writes).

    Returns
    -------
    tuple of (str, int)
        The design, and how many read ports were marked.
    """
    marked = 0

    def module(match):
        nonlocal marked
        body = match.group(0)
        names = {
            _memid(m.group(2)) for m in _MEMORY.finditer(body)
            if re.search(rf"^[ \t]*attribute \\{_ATTR} ", m.group(1), re.MULTILINE)
        }
        if not names:
            return body

        def port(cell):
            nonlocal marked
            memid = _MEMID.search(cell.group(0))
            if memid is None or memid.group(1) not in names:
                return cell.group(0)
            marked += 1
            return _MASK.sub(lambda m: f"{m.group(1)}{m.group(2)}'{'1' * int(m.group(2))}",
                             cell.group(0))

        return _MEMRD.sub(port, body)

    return _MODULE.sub(module, text), marked
