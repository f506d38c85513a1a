"""spikeforge: an open FPGA neuromorphic accelerator with a Python host stack.

Sub-packages
------------
spikeforge.sim
    The NumPy golden model: the bit-exact specification of the chip.
spikeforge.hw
    Amaranth HDL gateware: LIF neuron cores, AER routing, UART link.
spikeforge.host
    The host library: model compiler, spike coding, device link.
spikeforge.boards
    Board definitions for open FPGA boards.
spikeforge.spec
    The numeric formats shared by the gateware, the golden model and the compiler.
"""

import os as _os

__version__ = "0.1.0"
__all__ = ["__version__"]

# In a source checkout the sub-packages live beside this directory (hw/, host/, sim/, boards/),
# as the project layout asks; let ``import spikeforge.hw`` find them there too.  In an installed
# wheel they are real sub-directories and this does nothing.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "sim", "__init__.py")) and _os.path.isfile(
    _os.path.join(_root, "pyproject.toml")
):
    __path__.append(_root)  # noqa: F821  (``__path__`` is defined for packages)
