"""The neuron core, as composed parts (``docs/core.md``, "The parts").

=====================  =============================================================
module                 part
=====================  =============================================================
``neuron_core``        :class:`NeuronCore`: instantiates and connects the parts, the
                       address map
``options``            :class:`CoreOptions`: the timing options (fast, weight banks)
``registers``          configuration registers and status counters
``sequencer``          the timestep: populations, sweeps, walks; input events
``descriptors``        descriptor engine: a source -> its blocks' segments
``issuer``             op issuer: a segment -> one operation group a clock
``accumulate``         accumulation pipeline (read, add a weight, write)
``weights``            the weight memory (one memory, or output-registered banks)
``lanes``              neuron state memories and datapaths, one per lane
``bitmap``             spike bitmaps and the walker
=====================  =============================================================

The memory-bus slave is :class:`spikeforge.hw.bus.BusSlave` (shared with the router); the neuron
update is :class:`spikeforge.hw.core_neuron.NeuronDatapath`.
"""

from .neuron_core import NeuronCore
from .options import CoreOptions

__all__ = ["NeuronCore", "CoreOptions"]
