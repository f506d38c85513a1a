"""The neuron core's configuration, address map and memory image: the one source of truth.

Spec: ``docs/core.md`` (architecture, fan-out organisation, memory map) and ``docs/neuron.md``
(the integer neuron).  The gateware (:mod:`spikeforge.hw.core`) takes every width and address from
here, and the host turns a :class:`~spikeforge.sim.network.Network` into bus writes with
:func:`build_image`.

Address map
-----------
A bus word address (24 bits) is ``region << 20 | offset``.  Region sizes depend on the
:class:`CoreConfig` (see :func:`region_size`); an access at or beyond a region's size, to an
unknown region, or a write to a read-only region is refused (``error``) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import enum

from ..errors import ConfigError, FitError
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
    "DESC_WORDS",
    "LIST_BITS",
    "BITMAP_BITS",
    "region_size",
    "address",
    "pop_options",
    "build_image",
    "fit_problems",
    "check_fit",
    "compile_blocks",
    "Block",
    "decode_signed",
    "decode_state",
]

REGION_SHIFT = 20
"""A bus address is ``region << REGION_SHIFT | offset``."""

EVENT_BITS = _WIRE_EVENT_BITS
"""Width of an input event (AER input channel address) on the core's ``events`` stream: the
wire's event width, ``spikeforge.protocol.EVENT_BITS``."""

POP_WORDS = 8
"""Words per population in :attr:`Region.POP` (see :class:`PopWord`)."""

DESC_WORDS = 4
"""Words per fan-out block descriptor in :attr:`Region.DESC` (see :class:`DescWord`)."""

LIST_BITS = 8
"""A descriptor list is ``first | count << LIST_BITS`` (so at most 256 descriptors)."""

BITMAP_BITS = 16
"""Width of a word of the spike bitmaps (neurons per word)."""


class Region(enum.Enum, shape=4):
    """Regions of the core's bus address map (``base = value << 20``).

    ``CONFIG`` (read/write) holds the :class:`ConfigWord` registers; ``STATUS`` (read-only) the
    :class:`StatusWord` counters and capacities; ``POP`` eight :class:`PopWord` words per
    population; ``V``, ``I``, ``ACC`` one signed word per neuron; ``THR`` (unsigned, only when
    ``CoreConfig.per_neuron_threshold``) and ``BIAS`` (signed) one per neuron; ``DESC`` four
    :class:`DescWord` words per fan-out block descriptor; ``WEIGHT`` one word per
    ``CoreConfig.weights_per_word`` weights (slot ``k`` in word ``k // weights_per_word``, field
    ``k % weights_per_word`` from the low bits).
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

    @property
    def base(self) -> int:
        """First bus address of the region."""
        return self.value << REGION_SHIFT


class ConfigWord(enum.Enum):
    """Words of :attr:`Region.CONFIG`."""

    N_INPUTS = 0  #: active input channels; events at or beyond it are refused (and counted)
    N_POPULATIONS = 1  #: active populations, updated in table order
    CONTROL = 2  #: write bit 0 = forget the pending recurrent spikes (reads 0)
    INPUT_LIST = 3  #: the input channels' descriptor list, ``first | count << 8``


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
    OPTIONS = 2  #: ``model | leak << 1 | reset << 3 | flags`` (see PopFlag)
    BETA = 3  #: membrane decay code (``q`` for mult, ``k`` for shift)
    ALPHA = 4  #: synaptic current decay code (CuBa)
    FORWARD = 5  #: same-step fan-out descriptor list, ``first | count << 8``
    RECURRENT = 6  #: next-step fan-out descriptor list, ``first | count << 8``
    THRESHOLD = 7  #: the population's threshold (used when thresholds are not per neuron)


class PopFlag(enum.IntFlag):
    """Flag bits of :attr:`PopWord.OPTIONS` above the neuron options."""

    RESET_DELAY = 1 << 5
    OUTPUT = 1 << 6  #: spikes go to the host on the ``spikes`` stream
    FORWARD = 1 << 7  #: spikes have a same-step fan-out (walk them after the sweep)
    RECURRENT = 1 << 8  #: spikes have a next-step fan-out (walk them at the next step's start)


class DescWord(enum.Enum):
    """The words of a fan-out block descriptor in :attr:`Region.DESC` (``4 * d + word``).

    A descriptor is a dense block of weights: source ``o`` of its group (an input channel, or a
    neuron's index within its population), if ``first <= o < first + count``, adds weight slots
    ``slot + (o - first) * stride + j`` to neurons ``target + j`` for ``j < length``.  With
    several lanes, a row's first slot must be congruent to ``target`` modulo ``lanes`` (lane
    ``l`` reads slot ``l`` of every weight word and adds into neurons ``n % lanes == l``).
    """

    TARGET = 0  #: ``target | length << 16``
    SLOT = 1  #: first weight slot of the block
    SOURCES = 2  #: ``first | count << 16``: the block's rows
    STRIDE = 3  #: weight slots from one row to the next (``length`` rounded up to the lanes)


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
    """

    n_neurons: int = 256
    n_inputs: int = 64
    n_populations: int = 4
    synapse_words: int = 4096
    descriptors: int | None = None
    lanes: int = 1
    fmt: Format = field(default=DEFAULT_FORMAT)
    per_neuron_threshold: bool = True

    def __post_init__(self):
        checks = [
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
    }[region]


def address(region: Region, offset: int = 0) -> int:
    """Bus address of word ``offset`` of ``region``."""
    return region.base | int(offset)


def pop_options(params, output: bool, forward: bool, recurrent: bool = False) -> int:
    """The :attr:`PopWord.OPTIONS` word of a population."""
    word = NeuronModel(params.model).value | LeakMode(params.leak).value << 1
    word |= ResetMode(params.reset).value << 3
    if params.reset_delay:
        word |= PopFlag.RESET_DELAY
    if output:
        word |= PopFlag.OUTPUT
    if forward:
        word |= PopFlag.FORWARD
    if recurrent:
        word |= PopFlag.RECURRENT
    return int(word)


def decode_signed(word: int, bits: int) -> int:
    """Interpret the low ``bits`` bits of a bus word as a two's-complement integer."""
    word &= (1 << bits) - 1
    return word - (1 << bits) if word >> (bits - 1) else word


def decode_state(words, fmt: Format = DEFAULT_FORMAT) -> np.ndarray:
    """Membrane or synaptic-current words read from ``V`` / ``I`` as signed integers."""
    return np.array([decode_signed(int(w), fmt.state_bits) for w in words], dtype=np.int64)


# --- compiling a network ----------------------------------------------------------------------
def _uniform(value, name, pop):
    arr = np.asarray(value)
    if arr.ndim == 0 or arr.size == 0 or np.all(arr == arr.ravel()[0]):
        return None
    return (
        f"population {pop!r}: per-neuron {name} is not supported by the core (one {name} per "
        f"population); got {arr.size} different values"
    )


@dataclass(frozen=True)
class Block:
    """One fan-out block descriptor (see :class:`DescWord`) and where its weights are."""

    target: int  #: first target neuron (global index)
    length: int  #: targets per source
    slot: int  #: first weight slot (row ``o - first`` starts at ``slot + (o - first) * stride``)
    first: int  #: first source of the group the block covers
    count: int  #: sources covered
    stride: int | None = None  #: slots from row to row (default: ``length``)

    def words(self) -> list[int]:
        """The block's :class:`DescWord` words."""
        stride = self.length if self.stride is None else self.stride
        return [self.target | self.length << 16, self.slot, self.first | self.count << 16, stride]


def _groups(net):
    """Fan-out groups in table order: the input channels, then per population forward and
    recurrent; each as ``(key, projections)``."""
    from ..sim.network import INPUT

    keys = [("input", None)]
    for pop in net.populations:
        keys += [("forward", pop.name), ("recurrent", pop.name)]
    groups = {k: [] for k in keys}
    for proj in net.projections:
        if proj.src == INPUT:
            groups[("input", None)].append(proj)
        else:
            kind = "recurrent" if net.is_recurrent(proj) else "forward"
            groups[(kind, proj.src)].append(proj)
    return list(groups.items())


def compile_blocks(net, config: CoreConfig):
    """Lay out every projection of ``net`` as a dense block of weights.

    Each projection becomes one :class:`Block`: the bounding box of its non-zero weights (rows
    are sources, columns targets); a projection without a non-zero weight takes none.  Zero
    weights inside the box cost one clock and one weight slot each.  With several lanes each row
    starts at a slot congruent to its first target modulo ``lanes`` and the stride is a multiple
    of ``lanes`` (the padding slots hold zeros).

    Returns
    -------
    lists : dict
        ``("input", None)``, ``("forward", pop)``, ``("recurrent", pop)`` -> ``(first, count)``,
        the group's run of consecutive descriptors.
    blocks : list of Block
    slots : list of int
        Weight of every slot (signed).
    """
    lists, blocks, slots = {}, [], []
    for key, projections in _groups(net):
        first = len(blocks)
        for proj in projections:
            w = np.asarray(net.dense_weights(proj)).astype(np.int64)
            rows = np.flatnonzero(w.any(axis=1))
            cols = np.flatnonzero(w.any(axis=0))
            if not len(rows):
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            lanes = config.lanes
            target = net.base(proj.dst) + int(c0)
            length = int(c1 - c0)
            stride = -(-length // lanes) * lanes
            slots.extend([0] * ((target - len(slots)) % lanes))  # align the first row
            box = np.zeros((r1 - r0, stride), dtype=np.int64)
            box[:, :length] = w[r0:r1, c0:c1]
            blocks.append(
                Block(target, length, len(slots), int(r0), int(r1 - r0),
                      stride if lanes > 1 else None)
            )
            slots.extend(int(x) for x in box.ravel())
        lists[key] = (first, len(blocks) - first)
    return lists, blocks, slots


def fit_problems(net, config: CoreConfig) -> list[str]:
    """Every reason why ``net`` does not fit ``config`` (an empty list: it fits)."""
    from ..sim.golden import validate_network

    problems = []
    try:
        validate_network(net, "int", config.fmt)
    except ConfigError as exc:
        problems.append(str(exc))
    if net.n_neurons > config.n_neurons:
        problems.append(
            f"the network has {net.n_neurons} neurons, the core holds {config.n_neurons}"
        )
    if net.n_inputs > config.n_inputs:
        problems.append(
            f"the network has {net.n_inputs} input channels, the core takes {config.n_inputs}"
        )
    if len(net.populations) > config.n_populations:
        problems.append(
            f"the network has {len(net.populations)} populations, the core's table holds "
            f"{config.n_populations}"
        )
    names = ("beta", "alpha") + (() if config.per_neuron_threshold else ("threshold",))
    for pop in net.populations:
        for name in names:
            p = _uniform(getattr(pop.params, name), name, pop.name)
            if p:
                problems.append(p)
    if net.n_neurons <= config.n_neurons and net.n_inputs <= config.n_inputs:
        try:
            lists, blocks, slots = compile_blocks(net, config)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            if len(blocks) > config.descriptors:
                problems.append(
                    f"the fan-out needs {len(blocks)} block descriptors (one per projection), "
                    f"the core's descriptor table holds {config.descriptors}"
                )
            words = -(-len(slots) // config.weights_per_word)
            if words > config.synapse_words:
                problems.append(
                    f"the weights need {words} synapse words ({len(slots)} weight slots, the "
                    f"bounding boxes of the projections' non-zero weights), the core's weight "
                    f"memory holds {config.synapse_words}"
                )
            for key, (_, count) in lists.items():
                if count >= 1 << LIST_BITS:
                    problems.append(
                        f"{key[0]} fan-out of {key[1] or 'the input'} has {count} projections, "
                        f"a descriptor list holds at most {(1 << LIST_BITS) - 1}"
                    )
    return problems


def check_fit(net, config: CoreConfig):
    """Raise :class:`~spikeforge.errors.FitError` listing every problem if ``net`` does not fit."""
    problems = fit_problems(net, config)
    if problems:
        raise FitError(problems)


def _scalar(value):
    return int(np.asarray(value).ravel()[0])


def build_image(net, config: CoreConfig) -> list[tuple[int, list[int]]]:
    """Encode ``net`` as ``(address, words)`` blocks of bus writes.

    Writing every block (in order, while the core is idle) loads the network and resets its state
    (membrane, current, accumulator, pending recurrent spikes) to zero, as
    :meth:`~spikeforge.sim.golden.GoldenChip.reset`.
    """
    from ..sim.golden import population_arrays

    check_fit(net, config)
    fmt = config.fmt
    lists, blocks, slots = compile_blocks(net, config)

    def list_word(key):
        first, count = lists[key]
        return first | count << LIST_BITS if count else 0

    n = net.n_neurons
    pop_words, thr, bias = [], [], []
    for pop in net.populations:
        arr = population_arrays(pop.params, pop.size, pop.name, "int", fmt)
        opts = pop_options(
            pop.params,
            pop.name in net.outputs,
            lists[("forward", pop.name)][1] > 0,
            lists[("recurrent", pop.name)][1] > 0,
        )
        beta = _scalar(pop.params.beta) if pop.params.leak != LeakMode.NONE else 0
        alpha = (
            _scalar(pop.params.alpha)
            if pop.params.model == NeuronModel.CUBA and pop.params.leak != LeakMode.NONE
            else 0
        )
        words = {
            PopWord.BASE: net.base(pop.name),
            PopWord.SIZE: pop.size,
            PopWord.OPTIONS: opts,
            PopWord.BETA: beta,
            PopWord.ALPHA: alpha,
            PopWord.FORWARD: list_word(("forward", pop.name)),
            PopWord.RECURRENT: list_word(("recurrent", pop.name)),
            PopWord.THRESHOLD: int(arr["threshold"][0]),
        }
        pop_words += [words[w] for w in PopWord]
        thr += [int(x) for x in arr["threshold"]]
        bias += [int(x) & 0xFFFFFFFF for x in arr["bias"]]
    desc_words = [w for b in blocks for w in b.words()]
    mask = (1 << fmt.weight_bits) - 1
    per_word = config.weights_per_word
    slots = slots + [0] * (-len(slots) % per_word)
    weight_words = [
        sum((slots[k + j] & mask) << (j * fmt.weight_bits) for j in range(per_word))
        for k in range(0, len(slots), per_word)
    ]
    blocks_out = [
        (address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), [0]),
        (address(Region.POP), pop_words),
        (address(Region.THR), thr if config.per_neuron_threshold else []),
        (address(Region.BIAS), bias),
        (address(Region.V), [0] * n),
        (address(Region.I), [0] * n),
        (address(Region.ACC), [0] * n),
        (address(Region.DESC), desc_words),
        (address(Region.WEIGHT), weight_words),
        (address(Region.CONFIG, ConfigWord.N_INPUTS.value), [net.n_inputs]),
        (address(Region.CONFIG, ConfigWord.INPUT_LIST.value), [list_word(("input", None))]),
        (address(Region.CONFIG, ConfigWord.CONTROL.value), [1]),
        (address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), [len(net.populations)]),
    ]
    return [(a, w) for a, w in blocks_out if w]
