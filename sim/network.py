"""The network description, under its older import path.

It lives in :mod:`spikeforge.network` (the compiler, the partitioner, the image builder and the
golden model all consume it); this module re-exports it so that
``from spikeforge.sim.network import Network`` keeps working.
"""

from ..network import INPUT, Network, NeuronParams, Population, Projection, Sparse

__all__ = ["NeuronParams", "Population", "Sparse", "Projection", "Network", "INPUT"]
