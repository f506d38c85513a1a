"""Exceptions raised by spikeforge.

Every error says what was wrong (the parameter, the value, the allowed range) and, where there is
one, what to do about it.
"""

__all__ = ["SpikeforgeError", "ConfigError", "FitError", "UnsupportedError"]


class SpikeforgeError(Exception):
    """Base class of every spikeforge error."""


class ConfigError(SpikeforgeError, ValueError):
    """A parameter or shape is invalid (names the parameter, the value and the allowed range)."""


class FitError(SpikeforgeError):
    """A network does not fit a chip configuration.

    Attributes
    ----------
    problems : list of str
        Every reason the network does not fit, one line each.
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(
            "the network does not fit the chip:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


class UnsupportedError(SpikeforgeError):
    """A model uses a feature (NIR node, neuron option) that the chip does not have."""
