"""Open FPGA boards that spikeforge builds for."""
