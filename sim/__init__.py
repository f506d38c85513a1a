"""The NumPy golden model of the spikeforge chip: the bit-exact specification."""
