"""Numeric formats and neuron option codes: the one source of truth.

The gateware (``spikeforge.hw``), the golden model (``spikeforge.sim``) and the compiler
(``spikeforge.host``) all import their widths, ranges and option codes from here.
``docs/neuron.md`` explains every number in this file.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.lib import enum

from .errors import ConfigError

__all__ = [
    "ResetMode",
    "LeakMode",
    "NeuronModel",
    "Format",
    "DEFAULT_FORMAT",
    "WIDE_FORMAT",
    "signed_range",
]


class ResetMode(enum.Enum, shape=2):
    """What happens to the membrane after a spike (snnTorch ``reset_mechanism``)."""

    SUBTRACT = 0
    ZERO = 1
    NONE = 2


class LeakMode(enum.Enum, shape=2):
    """How the membrane (and the CuBa synaptic current) decays each timestep.

    ``MULT``: ``x * q`` with ``q`` in ``[0, 2**decay_frac_bits]`` fraction bits, rounded toward
    zero.  ``SHIFT``: ``x - (x >> k)`` (arithmetic shift), for targets without multipliers.
    ``NONE``: no decay (integrate-and-fire).
    """

    MULT = 0
    SHIFT = 1
    NONE = 2


class NeuronModel(enum.Enum, shape=1):
    """``LIF``: membrane only.  ``CUBA``: current-based LIF with a synaptic current state."""

    LIF = 0
    CUBA = 1


def signed_range(bits: int) -> tuple[int, int]:
    """Return ``(min, max)`` of a two's-complement integer of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class Format:
    """Integer widths of the chip's arithmetic (see ``docs/neuron.md``).

    Parameters
    ----------
    weight_bits : int
        Signed synaptic weight width.
    state_bits : int
        Signed, saturating width of the membrane ``v`` and the CuBa synaptic current ``i``.
    acc_bits : int
        Signed width of the per-neuron input accumulator (sum of the weights that arrived in one
        timestep, plus the bias).  The fit check guarantees it never overflows, so the order in
        which events arrive never matters.
    threshold_bits : int
        Width of the threshold; thresholds are in ``[1, 2**(threshold_bits-1) - 1]``.
    bias_bits : int
        Signed width of the per-neuron bias (added to the accumulator every timestep).
    decay_frac_bits : int
        Fraction bits of a multiplicative decay ``q``; ``q`` is in ``[0, 2**decay_frac_bits]``
        (``2**decay_frac_bits`` is exactly 1.0, no decay).
    """

    weight_bits: int = 8
    state_bits: int = 16
    acc_bits: int = 20
    threshold_bits: int = 16
    bias_bits: int = 16
    decay_frac_bits: int = 12

    def __post_init__(self):
        for name in ("weight_bits", "state_bits", "acc_bits", "threshold_bits", "bias_bits",
                     "decay_frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"Format.{name}={value!r} is not valid: allowed an integer")
        checks = [
            ("weight_bits", self.weight_bits, 2, 16),
            ("state_bits", self.state_bits, 4, 32),
            ("decay_frac_bits", self.decay_frac_bits, 1, 16),
        ]
        for name, value, lo, hi in checks:
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"Format.{name}={value!r} is out of range: allowed {lo}..{hi}")
        if not self.weight_bits <= self.acc_bits <= 40 or self.acc_bits < self.state_bits:
            raise ConfigError(
                f"Format.acc_bits={self.acc_bits} is out of range: allowed "
                f"max(weight_bits, state_bits)={max(self.weight_bits, self.state_bits)}..40"
            )
        if not 2 <= self.threshold_bits <= self.state_bits:
            raise ConfigError(
                f"Format.threshold_bits={self.threshold_bits} is out of range: allowed "
                f"2..state_bits={self.state_bits} (a threshold must be representable as a state)"
            )
        if not 2 <= self.bias_bits <= self.acc_bits:
            raise ConfigError(
                f"Format.bias_bits={self.bias_bits} is out of range: allowed 2..acc_bits="
                f"{self.acc_bits}"
            )
        # The decay product state * q must fit a 64-bit intermediate (the golden model uses int64).
        if self.state_bits + self.decay_frac_bits + 1 > 62:
            raise ConfigError(
                f"Format: state_bits + decay_frac_bits = "
                f"{self.state_bits + self.decay_frac_bits} overflows the 62-bit decay product"
            )

    # --- derived ranges -------------------------------------------------------------------
    @property
    def weight_range(self) -> tuple[int, int]:
        return signed_range(self.weight_bits)

    @property
    def state_range(self) -> tuple[int, int]:
        return signed_range(self.state_bits)

    @property
    def acc_range(self) -> tuple[int, int]:
        return signed_range(self.acc_bits)

    @property
    def bias_range(self) -> tuple[int, int]:
        return signed_range(self.bias_bits)

    @property
    def threshold_range(self) -> tuple[int, int]:
        return 1, (1 << (self.threshold_bits - 1)) - 1

    @property
    def decay_one(self) -> int:
        """The decay code that means 1.0 (no decay)."""
        return 1 << self.decay_frac_bits

    @property
    def decay_range(self) -> tuple[int, int]:
        return 0, self.decay_one

    @property
    def shift_range(self) -> tuple[int, int]:
        """Allowed ``k`` of the shift leak ``x - (x >> k)``."""
        return 1, self.state_bits - 1

    @property
    def decay_bits(self) -> int:
        """Unsigned width that holds every decay code (multiplicative ``q`` or shift ``k``)."""
        return self.decay_frac_bits + 1


DEFAULT_FORMAT = Format()
"""8-bit weights, 16-bit state: the iCE40 boards and ``ulx3s-85f`` (``docs/neuron.md``)."""

WIDE_FORMAT = Format(weight_bits=16, state_bits=24, acc_bits=32, threshold_bits=24, bias_bits=24,
                     decay_frac_bits=15)
"""16-bit weights, 24-bit state, 15 fraction bits of decay: the ``ulx3s-85f-wide`` profile, for
networks whose weights are several times their thresholds (recurrent CubaLIF after
surrogate-gradient training), which 8-bit weights quantize into a different network, and for
networks whose spikes need their leaks finer than 1/4096 (``docs/neuron.md``, "Two formats")."""
