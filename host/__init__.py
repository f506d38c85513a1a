"""The spikeforge host library: model compiler, spike coding and the device link."""
