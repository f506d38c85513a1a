"""The neuron core's configuration, address map and memory image: the one source of truth.

Spec: ``docs/core.md`` (architecture, fan-out organisation, memory map) and ``docs/neuron.md``
(the integer neuron).  The gateware (:mod:`spikeforge.hw.core`) takes every width and address from
here, and the host turns a :class:`~spikeforge.network.Network` into bus writes with
:func:`spikeforge.host.image.build_image`.

Address map
-----------
A bus word address (24 bits) is ``region << 20 | offset``.  Region sizes depend on the
:class:`CoreConfig` (see :func:`region_size`); an access at or beyond a region's size, to an
unknown region, or a write to a read-only region is refused (``error``) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data, enum

from ..errors import ConfigError
from ..protocol import EVENT_BITS as _WIRE_EVENT_BITS
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode
from .util import bits_for

__all__ = [
    "Region",
    "ConfigWord",
    "StatusWord",
    "PopWord",
    "PopFlag",
    "CoreConfig",
    "DescWord",
    "REGION_SHIFT",
    "EVENT_BITS",
    "POP_WORDS",
    "POP_WORD_BITS",
    "DESC_WORDS",
    "LIST_BITS",
    "BITMAP_BITS",
    "BITMAP_SHIFT",
    "PopOptions",
    "Span",
    "DescList",
    "DescStride",
    "ConvEntry",
    "ConvWord",
    "pack",
    "unpack",
    "region_size",
    "address",
    "pop_options",
    "decode_signed",
]

REGION_SHIFT = 20
"""A bus address is ``region << REGION_SHIFT | offset``."""

EVENT_BITS = _WIRE_EVENT_BITS
"""Width of an input event (AER input channel address) on the core's ``events`` stream: the
wire's event width, ``spikeforge.protocol.EVENT_BITS``."""

POP_WORDS = 8
"""Words per population in :attr:`Region.POP` (see :class:`PopWord`)."""

POP_WORD_BITS = 16
"""Width of a word of :attr:`Region.POP`."""

DESC_WORDS = 4
"""Words per fan-out block descriptor in :attr:`Region.DESC` (see :class:`DescWord`)."""

LIST_BITS = 8
"""A descriptor list is ``first | count << LIST_BITS`` (so at most 256 descriptors)."""

BITMAP_SHIFT = 4
"""``log2`` of the neurons per word of the spike bitmaps."""

BITMAP_BITS = 1 << BITMAP_SHIFT
"""Width of a word of the spike bitmaps (neurons per word)."""


def pack(layout: data.Layout, **fields) -> int:
    """The integer value of a packed word of ``layout`` with ``fields`` (the others zero)."""
    return layout.const(fields).as_bits()


def unpack(layout: data.StructLayout, word: int) -> dict[str, int]:
    """The fields of a packed word of ``layout``, as integers (bits above it are ignored)."""
    return {name: int(word) >> f.offset & ((1 << f.width) - 1) for name, f in layout}


DescList = data.StructLayout({"first": LIST_BITS, "count": LIST_BITS})
"""A descriptor list (:attr:`ConfigWord.INPUT_LIST`, :attr:`PopWord.FORWARD`,
:attr:`PopWord.RECURRENT`): ``count`` descriptors from ``first``."""

Span = data.StructLayout({"first": 16, "count": 16})
"""A 32-bit ``first | count << 16`` word: a descriptor's rows (:attr:`DescWord.SOURCES`), its
targets (:attr:`DescWord.TARGET`: ``first`` = target, ``count`` = length) and the router's
source entries (``spikeforge.hw.router``)."""

ARRIVAL_BITS = 4
"""Width of a descriptor's arrival (:data:`DescStride`) and of a population's ``walks``: how many
steps after a spike its fan-out block delivers, 0 (same step) .. 15."""

MAX_DELAY = (1 << ARRIVAL_BITS) - 2
"""The largest ``CoreConfig.max_delay`` the formats can describe (an arrival is at most
``max_delay + 1``)."""

DescStride = data.StructLayout({"stride": 16, "arrival": ARRIVAL_BITS, "shared": 1})
"""Layout of :attr:`DescWord.STRIDE`: the stride, and the block's *arrival*, the number of steps
after the source's spike that it delivers (``docs/network.md``, "Synaptic delays": ``a + d``).
A core matches a source only with the blocks of its own arrival: 0 for input events and
same-step walks, ``k`` for the walk of the bitmap of ``k`` steps ago.  A core without delays
(``max_delay = 0``) does not look at it.  ``shared`` marks a weight-shared block (a
convolution, :class:`ConvWord`; only on a core with ``conv_words > 0``)."""

ConvEntry = data.StructLayout({"target": 14, "slot": 12, "rows": 3, "run": 3})
"""Layout of a word of :attr:`Region.CONV`: one source of a weight-shared block
(``docs/core.md``, "Weight-shared blocks"): its first target relative to the block's target
(``target``), its first weight slot relative to the block's slot (``slot``), the rows it reaches
(``rows``, 0 .. 7) and the targets per row (``run``, 0 .. 7)."""

PopOptions = data.StructLayout(
    {
        "model": NeuronModel,
        "leak": LeakMode,
        "reset": ResetMode,
        "reset_delay": 1,
        "output": 1,  # spikes go to the host on the ``spikes`` stream
        "forward": 1,  # spikes have a same-step fan-out (walked after the sweep)
        "recurrent": 1,  # spikes have a later-step fan-out (walked at a later step's start)
        # the latest arrival of the later-step fan-out: walks k = 1 .. walks of the bitmaps of
        # k steps ago (a core with delays; 1 without: next step only)
        "walks": ARRIVAL_BITS,
    }
)
"""Layout of :attr:`PopWord.OPTIONS` (the neuron options and :class:`PopFlag`)."""


class Region(enum.Enum, shape=4):
    """Regions of the core's bus address map (``base = value << 20``).

    ``CONFIG`` (read/write) holds the :class:`ConfigWord` registers; ``STATUS`` (read-only) the
    :class:`StatusWord` counters and capacities; ``POP`` eight :class:`PopWord` words per
    population; ``V``, ``I``, ``ACC`` one signed word per neuron; ``THR`` (unsigned, only when
    ``CoreConfig.per_neuron_threshold``) and ``BIAS`` (signed) one per neuron; ``DESC`` four
    :class:`DescWord` words per fan-out block descriptor; ``WEIGHT`` one word per
    ``CoreConfig.weights_per_word`` weights (slot ``k`` in word ``k // weights_per_word``, field
    ``k % weights_per_word`` from the low bits); ``CONV`` one :data:`ConvEntry` per source of a
    weight-shared block (only when ``CoreConfig.conv_words > 0``).
    """

    CONFIG = 0
    STATUS = 1
    POP = 2
    V = 3
    I = 4
    ACC = 5
    THR = 6
    BIAS = 7
    DESC = 8
    WEIGHT = 9
    CONV = 10

    @property
    def base(self) -> int:
        """First bus address of the region."""
        return self.value << REGION_SHIFT


class ConfigWord(enum.Enum):
    """Words of :attr:`Region.CONFIG`."""

    N_INPUTS = 0  #: active input channels; events at or beyond it are refused (and counted)
    N_POPULATIONS = 1  #: active populations, updated in table order
    CONTROL = 2  #: write bit 0 = forget the pending recurrent spikes (reads 0)
    INPUT_LIST = 3  #: the input channels' descriptor list, :data:`DescList`
    #: neurons in use: a state reset (RESET_STATE) clears neurons 0 .. N-1 (reset = capacity)
    N_NEURONS = 4


class StatusWord(enum.Enum):
    """Words of :attr:`Region.STATUS` (read-only)."""

    EVENTS_REFUSED = 0  #: input events with an address >= N_INPUTS
    BUS_REFUSED = 1  #: bus accesses out of range or to read-only words
    PARAM_ERRORS = 2  #: populations, thresholds, lists or descriptors out of range (skipped)
    STEPS = 3  #: timesteps run
    LAST_STEP_CYCLES = 4  #: clock cycles of the last timestep
    CAP_NEURONS = 5
    CAP_INPUTS = 6
    CAP_POPULATIONS = 7
    CAP_SYNAPSE_WORDS = 8
    CAP_DESCRIPTORS = 9
    LANES = 10
    FEATURES = 11  #: bit 0: per-neuron thresholds (``Region.THR``)


class PopWord(enum.Enum):
    """The words of a population's entry in :attr:`Region.POP` (``8 * p + word``, 16 bits)."""

    BASE = 0  #: first neuron
    SIZE = 1  #: neurons
    OPTIONS = 2  #: the neuron options and flags, :data:`PopOptions`
    BETA = 3  #: membrane decay code (``q`` for mult, ``k`` for shift)
    ALPHA = 4  #: synaptic current decay code (CuBa)
    FORWARD = 5  #: same-step fan-out descriptor list, :data:`DescList`
    RECURRENT = 6  #: next-step fan-out descriptor list, :data:`DescList`
    THRESHOLD = 7  #: the population's threshold (used when thresholds are not per neuron)


class PopFlag(enum.IntFlag):
    """Flag bits of :attr:`PopWord.OPTIONS` above the neuron options."""

    RESET_DELAY = 1 << PopOptions["reset_delay"].offset
    OUTPUT = 1 << PopOptions["output"].offset  #: spikes go to the host on the ``spikes`` stream
    FORWARD = 1 << PopOptions["forward"].offset  #: spikes have a same-step fan-out
    RECURRENT = 1 << PopOptions["recurrent"].offset  #: spikes have a later-step fan-out


class DescWord(enum.Enum):
    """The words of a fan-out block descriptor in :attr:`Region.DESC` (``4 * d + word``).

    A descriptor is a dense block of weights: source ``o`` of its group (an input channel, or a
    neuron's index within its population), if ``first <= o < first + count``, adds weight slots
    ``slot + (o - first) * stride + j`` to neurons ``target + j`` for ``j < length``.  With
    several lanes, a row's first slot must be congruent to ``target`` modulo ``lanes`` (lane
    ``l`` reads slot ``l`` of every weight word and adds into neurons ``n % lanes == l``).
    """

    TARGET = 0  #: :data:`Span`: ``first`` = target, ``count`` = length
    SLOT = 1  #: first weight slot of the block
    SOURCES = 2  #: :data:`Span`: the block's rows
    #: :data:`DescStride`: weight slots from one row to the next (``length`` rounded up to the
    #: lanes), and the block's arrival
    STRIDE = 3


class ConvWord(enum.Enum):
    """The words of a weight-shared block's second descriptor entry (``4 * (d + 1) + word``).

    A weight-shared block (a convolution, ``docs/core.md`` "Weight-shared blocks") takes two
    consecutive entries of the descriptor table: the first is an ordinary :class:`DescWord`
    entry (``TARGET``: the first target and the extent all its targets lie in, ``SLOT``: the
    first weight slot, ``SOURCES``: its rows, ``STRIDE``: arrival and ``shared = 1``); the
    second holds these words.  Source ``o`` (``first <= o < first + count``) reads its
    :data:`ConvEntry` at ``CONV[table + o - first]`` and adds, for every output channel
    ``c < channels`` and row ``r < rows``, weight slots ``slot + e.slot + c * channel_slots +
    r * row_slots + j`` to neurons ``target + e.target + c * channel_targets + r * row_targets +
    j``, ``j < run``.  Word 2 (the ``SOURCES`` position) is 0, so the entry never matches a
    source as a block of its own.
    """

    #: :data:`Span`: ``first`` = the block's first :attr:`Region.CONV` word, ``count`` = channels
    TABLE = 0
    ROW = 1  #: :data:`Span`: ``first`` = row_targets, ``count`` = row_slots
    EMPTY = 2  #: 0 (no rows)
    CHANNEL = 3  #: :data:`Span`: ``first`` = channel_targets, ``count`` = channel_slots


@dataclass(frozen=True)
class CoreConfig:
    """Capacities and widths of one :class:`~spikeforge.hw.core.NeuronCore`.

    Parameters
    ----------
    n_neurons : int
        Neurons (state memories depth), 1 .. 32768.
    n_inputs : int
        Host input channels (AER source addresses), 1 .. 32768.
    n_populations : int
        Entries of the population table, 1 .. 256.
    synapse_words : int
        Words of the weight memory; each holds ``max(2, lanes)`` weights.
    descriptors : int, optional
        Entries of the fan-out block descriptor table, 1 .. 256; default
        ``min(256, 4 * n_populations + 4)``.  A dense projection takes one.
    lanes : int
        Parallel lanes, 1, 2 or 4: synaptic operations per clock and neurons updated per clock.
        The neuron memories are banked by ``neuron % lanes``; a weight word holds
        ``max(2, lanes)`` weights.  ``n_neurons`` must be a multiple of it.
    fmt : Format
        Integer widths (``docs/neuron.md``).
    per_neuron_threshold : bool
        One threshold per neuron (``Region.THR``, one memory word per neuron) or one per
        population (``PopWord.THRESHOLD``; saves the memory on small FPGAs).
    max_delay : int
        The longest synaptic delay the core delivers, 0 .. 14 timesteps (``docs/network.md``,
        "Synaptic delays"; ``docs/core.md``, "Delays"): the spike bitmap keeps the last
        ``bitmap_banks`` steps.  0: no delays (two banks, this step's and last step's).
    conv_words : int
        Words of :attr:`Region.CONV`, the per-source table of weight-shared blocks
        (convolutions, ``docs/core.md`` "Weight-shared blocks"), 0 .. 65536; 0: the core has
        none and runs convolutions unrolled into dense blocks.
    """

    n_neurons: int = 256
    n_inputs: int = 64
    n_populations: int = 4
    synapse_words: int = 4096
    descriptors: int | None = None
    lanes: int = 1
    fmt: Format = field(default=DEFAULT_FORMAT)
    per_neuron_threshold: bool = True
    max_delay: int = 0
    conv_words: int = 0

    def __post_init__(self):
        checks = [
            ("conv_words", self.conv_words, 0, 1 << 16),
            ("n_neurons", self.n_neurons, 1, 1 << 15),
            ("n_inputs", self.n_inputs, 1, 1 << 15),
            ("n_populations", self.n_populations, 1, 256),
            ("synapse_words", self.synapse_words, 1, 1 << REGION_SHIFT),
        ]
        if self.descriptors is None:
            object.__setattr__(self, "descriptors", min(256, 4 * self.n_populations + 4))
        checks.append(("descriptors", self.descriptors, 1, 1 << LIST_BITS))
        for name, value, lo, hi in checks:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not (
                lo <= value <= hi
            ):
                raise ConfigError(
                    f"CoreConfig.{name}={value!r} is out of range: allowed {lo}..{hi}"
                )
        if self.lanes not in (1, 2, 4) or isinstance(self.lanes, bool):
            raise ConfigError(f"CoreConfig.lanes={self.lanes!r} is not supported: allowed 1, 2, 4")
        if self.n_neurons % self.lanes:
            raise ConfigError(
                f"CoreConfig.n_neurons={self.n_neurons} must be a multiple of lanes={self.lanes} "
                f"(the neuron memories are banked by neuron % lanes)"
            )
        d = self.max_delay
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= MAX_DELAY:
            raise ConfigError(
                f"CoreConfig.max_delay={d!r} is out of range: allowed 0..{MAX_DELAY} timesteps"
            )
        if not isinstance(self.per_neuron_threshold, bool):
            raise ConfigError(
                f"CoreConfig.per_neuron_threshold={self.per_neuron_threshold!r} must be a bool"
            )
        if not isinstance(self.fmt, Format):
            raise ConfigError(f"CoreConfig.fmt={self.fmt!r} is not a spikeforge.spec.Format")
        if self.fmt.weight_bits * max(2, self.lanes) > 32:
            raise ConfigError(
                f"CoreConfig.fmt.weight_bits={self.fmt.weight_bits} is out of range for "
                f"lanes={self.lanes}: a weight word of max(2, lanes) weights must fit a 32-bit "
                f"bus word (allowed up to {32 // max(2, self.lanes)} bits)"
            )
        if not self.per_neuron_threshold and self.fmt.threshold_bits > POP_WORD_BITS:
            raise ConfigError(
                f"CoreConfig: threshold_bits={self.fmt.threshold_bits} needs "
                f"per_neuron_threshold=True (a population's threshold word, PopWord.THRESHOLD, "
                f"holds {POP_WORD_BITS} bits)"
            )
        if self.fmt.state_bits > 31 or self.fmt.acc_bits > 32:
            raise ConfigError(
                f"CoreConfig.fmt: state_bits={self.fmt.state_bits} / acc_bits="
                f"{self.fmt.acc_bits} do not fit a 32-bit bus word: allowed state_bits <= 31, "
                f"acc_bits <= 32"
            )

    # --- derived widths ---------------------------------------------------------------------
    @property
    def neuron_bits(self) -> int:
        """Width of a global neuron index."""
        return bits_for(self.n_neurons)

    @property
    def length_bits(self) -> int:
        """Width of a block length (``1 .. n_neurons``)."""
        return bits_for(self.n_neurons + 1)

    @property
    def offset_bits(self) -> int:
        """Width of a source's index within its group (an input channel or a local neuron)."""
        return bits_for(max(self.n_inputs, self.n_neurons) + 1)

    @property
    def desc_bits(self) -> int:
        """Width of a descriptor index."""
        return bits_for(self.descriptors)

    @property
    def weights_per_word(self) -> int:
        """Weights in one word of the weight memory: ``max(2, lanes)``."""
        return max(2, self.lanes)

    @property
    def lane_bits(self) -> int:
        """``log2(lanes)``."""
        return self.lanes.bit_length() - 1

    @property
    def weight_slots(self) -> int:
        return self.weights_per_word * self.synapse_words

    @property
    def slot_bits(self) -> int:
        return bits_for(self.weight_slots)

    @property
    def word_bits(self) -> int:
        """Width of a weight-memory word (``weights_per_word`` weights)."""
        return self.weights_per_word * self.fmt.weight_bits

    @property
    def bitmap_banks(self) -> int:
        """Banks of the spike bitmap, one per step kept: 2 without delays, else the power of
        two >= ``max_delay + 1`` (a start-of-step walk reads the bank of ``k`` steps ago, ``k``
        up to ``max_delay + 1``: the bank the step will write still holds that step)."""
        return max(2, 1 << bits_for(self.max_delay + 1))

    @property
    def conv_bits(self) -> int:
        """Width of a :attr:`Region.CONV` address."""
        return max(1, (self.conv_words - 1).bit_length())

    @property
    def bank_bits(self) -> int:
        return (self.bitmap_banks - 1).bit_length()

    @property
    def bitmap_words(self) -> int:
        """Words of one bank of the spike bitmap (a power of two >= n_neurons / 16)."""
        return 1 << bits_for(-(-self.n_neurons // BITMAP_BITS))


def region_size(region: Region, config: CoreConfig) -> int:
    """Number of words of ``region`` in the address map of ``config``."""
    return {
        Region.CONFIG: len(ConfigWord),
        Region.STATUS: len(StatusWord),
        Region.POP: POP_WORDS * config.n_populations,
        Region.V: config.n_neurons,
        Region.I: config.n_neurons,
        Region.ACC: config.n_neurons,
        Region.THR: config.n_neurons if config.per_neuron_threshold else 0,
        Region.BIAS: config.n_neurons,
        Region.DESC: DESC_WORDS * config.descriptors,
        Region.WEIGHT: config.synapse_words,
        Region.CONV: config.conv_words,
    }[region]


def address(region: Region, offset: int = 0) -> int:
    """Bus address of word ``offset`` of ``region``."""
    return region.base | int(offset)


def pop_options(params, output: bool, forward: bool, recurrent: bool = False,
                walks: int | None = None) -> int:
    """The :attr:`PopWord.OPTIONS` word of a population (:data:`PopOptions`); ``walks``: the
    latest arrival of its later-step fan-out (default 1 with a recurrent fan-out)."""
    if walks is None:
        walks = int(bool(recurrent))
    return pack(
        PopOptions,
        model=NeuronModel(params.model),
        leak=LeakMode(params.leak),
        reset=ResetMode(params.reset),
        reset_delay=int(bool(params.reset_delay)),
        output=int(bool(output)),
        forward=int(bool(forward)),
        recurrent=int(bool(recurrent)),
        walks=walks,
    )


def decode_signed(word: int, bits: int) -> int:
    """Interpret the low ``bits`` bits of a bus word as a two's-complement integer."""
    word &= (1 << bits) - 1
    return word - (1 << bits) if word >> (bits - 1) else word
