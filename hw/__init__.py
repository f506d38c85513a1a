"""Gateware of the spikeforge chip (Amaranth HDL)."""
