"""The network description, under its older import path.

It lives in :mod:`spikeforge.network` (the compiler, the partitioner, the image builder and the
golden model all consume it); this module re-exports it so that
``from spikeforge.sim.network import Network`` keeps working.
"""

from ..network import (
    INPUT,
    AvgPool2d,
    Conv,
    Conv1d,
    Conv2d,
    Network,
    NeuronParams,
    Population,
    Projection,
    Sparse,
    SumPool2d,
)

__all__ = [
    "NeuronParams", "Population", "Sparse", "Conv", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
    "Projection", "Network", "INPUT",
]
