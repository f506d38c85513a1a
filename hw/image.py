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
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode

__all__ = [
    "Region",
    "ConfigWord",
    "StatusWord",
    "PopWord",
    "PopFlag",
    "CoreConfig",
    "REGION_SHIFT",
    "EVENT_BITS",
    "MERGE_GAP",
    "region_size",
    "address",
    "pop_options",
    "build_image",
    "fit_problems",
    "check_fit",
    "compile_fanout",
    "decode_signed",
    "decode_state",
]

REGION_SHIFT = 20
"""A bus address is ``region << REGION_SHIFT | offset``."""

EVENT_BITS = 16
"""Width of an input event (AER input channel address) on the core's ``events`` stream."""

MERGE_GAP = 4
"""Fan-out runs of non-zero weights separated by at most this many zero weights share a segment.

A zero inside a segment costs one clock and one weight slot; a new segment costs one segment-table
entry (and no clock, the fan-out engine prefetches it)."""


class Region(enum.Enum, shape=4):
    """Regions of the core's bus address map (``base = value << 20``).

    ``CONFIG`` (read/write) holds the :class:`ConfigWord` registers; ``STATUS`` (read-only) the
    :class:`StatusWord` counters and capacities; ``POP`` four :class:`PopWord` words per
    population; ``V``, ``I``, ``ACC`` one signed word per neuron; ``THR`` (unsigned) and ``BIAS``
    (signed) one per neuron; ``SRC`` one fan-out descriptor per source (``first | count << 16``);
    ``SEG`` two words per segment (even: ``target | length << 16``, odd: weight slot);
    ``WEIGHT`` one word per two weights (slot ``2k`` in the low half of word ``k``).
    """

    CONFIG = 0
    STATUS = 1
    POP = 2
    V = 3
    I = 4
    ACC = 5
    THR = 6
    BIAS = 7
    SRC = 8
    SEG = 9
    WEIGHT = 10

    @property
    def base(self) -> int:
        """First bus address of the region."""
        return self.value << REGION_SHIFT


class ConfigWord(enum.Enum):
    """Words of :attr:`Region.CONFIG`."""

    N_INPUTS = 0  #: active input channels; events at or beyond it are refused (and counted)
    N_POPULATIONS = 1  #: active populations, updated in table order
    CONTROL = 2  #: write bit 0 = forget the pending recurrent spikes (reads 0)


class StatusWord(enum.Enum):
    """Words of :attr:`Region.STATUS` (read-only)."""

    EVENTS_REFUSED = 0  #: input events with an address >= N_INPUTS
    BUS_REFUSED = 1  #: bus accesses out of range or to read-only words
    PARAM_ERRORS = 2  #: populations, thresholds or segments out of range (skipped)
    STEPS = 3  #: timesteps run
    LAST_STEP_CYCLES = 4  #: clock cycles of the last timestep
    CAP_NEURONS = 5
    CAP_INPUTS = 6
    CAP_POPULATIONS = 7
    CAP_SYNAPSE_WORDS = 8
    CAP_SEGMENTS = 9
    LANES = 10


class PopWord(enum.Enum):
    """The four words of a population's entry in :attr:`Region.POP` (``4 * p + word``)."""

    RANGE = 0  #: ``base | size << 16``
    OPTIONS = 1  #: ``model | leak << 1 | reset << 3 | flags`` (see PopFlag)
    BETA = 2  #: membrane decay code (``q`` for mult, ``k`` for shift)
    ALPHA = 3  #: synaptic current decay code (CuBa)


class PopFlag(enum.IntFlag):
    """Flag bits of :attr:`PopWord.OPTIONS` above the neuron options."""

    RESET_DELAY = 1 << 5
    OUTPUT = 1 << 6  #: spikes go to the host on the ``spikes`` stream
    FORWARD = 1 << 7  #: spikes have a same-step fan-out (walk them after the sweep)
    RECURRENT = 1 << 8  #: spikes have a next-step fan-out (record them for the next step)


def _bits(n: int) -> int:
    """Bits of an unsigned number that holds ``0 .. n - 1`` (at least 1)."""
    return max(1, (int(n) - 1).bit_length())


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
        Words of the weight memory; each holds two weights (``2 * weight_bits`` bits).
    segments : int, optional
        Entries of the fan-out segment table, 1 .. 32768; default
        ``n_inputs + 2 * n_neurons`` (one segment per source and fan-out kind).
    lanes : int
        Parallel accumulation lanes.  Only 1 is implemented.
    fmt : Format
        Integer widths (``docs/neuron.md``).
    """

    n_neurons: int = 256
    n_inputs: int = 64
    n_populations: int = 4
    synapse_words: int = 4096
    segments: int | None = None
    lanes: int = 1
    fmt: Format = field(default=DEFAULT_FORMAT)

    def __post_init__(self):
        checks = [
            ("n_neurons", self.n_neurons, 1, 1 << 15),
            ("n_inputs", self.n_inputs, 1, 1 << 15),
            ("n_populations", self.n_populations, 1, 256),
            ("synapse_words", self.synapse_words, 1, 1 << REGION_SHIFT),
        ]
        if self.segments is None:
            object.__setattr__(self, "segments", min(self.n_inputs + 2 * self.n_neurons, 1 << 15))
        checks.append(("segments", self.segments, 1, 1 << 15))
        for name, value, lo, hi in checks:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not (
                lo <= value <= hi
            ):
                raise ConfigError(
                    f"CoreConfig.{name}={value!r} is out of range: allowed {lo}..{hi}"
                )
        if self.lanes != 1:
            raise ConfigError(
                f"CoreConfig.lanes={self.lanes!r} is not supported: allowed 1 (multi-lane "
                f"accumulation is not implemented yet)"
            )
        if not isinstance(self.fmt, Format):
            raise ConfigError(f"CoreConfig.fmt={self.fmt!r} is not a spikeforge.spec.Format")
        if self.fmt.weight_bits > 16:
            raise ConfigError(
                f"CoreConfig.fmt.weight_bits={self.fmt.weight_bits} is out of range: allowed "
                f"2..16 (two weights share a 32-bit bus word)"
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
        return _bits(self.n_neurons)

    @property
    def length_bits(self) -> int:
        """Width of a segment length (``1 .. n_neurons``)."""
        return _bits(self.n_neurons + 1)

    @property
    def n_sources(self) -> int:
        """Entries of the source table: inputs, then forward and recurrent fan-out per neuron."""
        return self.n_inputs + 2 * self.n_neurons

    @property
    def source_bits(self) -> int:
        return _bits(self.n_sources)

    @property
    def segment_bits(self) -> int:
        return _bits(self.segments)

    @property
    def count_bits(self) -> int:
        """Width of a source's segment count (``0 .. segments``)."""
        return _bits(self.segments + 1)

    @property
    def weight_slots(self) -> int:
        return 2 * self.synapse_words

    @property
    def slot_bits(self) -> int:
        return _bits(self.weight_slots)

    @property
    def word_bits(self) -> int:
        """Width of a weight-memory word (two weights)."""
        return 2 * self.fmt.weight_bits

    def forward_source(self, neuron: int) -> int:
        """Source-table index of ``neuron``'s same-step fan-out."""
        return self.n_inputs + neuron

    def recurrent_source(self, neuron: int) -> int:
        """Source-table index of ``neuron``'s next-step fan-out."""
        return self.n_inputs + self.n_neurons + neuron


def region_size(region: Region, config: CoreConfig) -> int:
    """Number of words of ``region`` in the address map of ``config``."""
    return {
        Region.CONFIG: len(ConfigWord),
        Region.STATUS: len(StatusWord),
        Region.POP: 4 * config.n_populations,
        Region.V: config.n_neurons,
        Region.I: config.n_neurons,
        Region.ACC: config.n_neurons,
        Region.THR: config.n_neurons,
        Region.BIAS: config.n_neurons,
        Region.SRC: config.n_sources,
        Region.SEG: 2 * config.segments,
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


def compile_fanout(net, config: CoreConfig):
    """Lay out every fan-out of ``net`` as segments.

    Returns
    -------
    sources : dict
        Source-table index -> list of segment indices (consecutive).
    segments : list of (target, length, slot)
    slots : list of int
        Weight of every slot (signed).
    """
    from ..sim.network import INPUT

    per_source = {}  # source index -> list of (target, weights array)
    for proj in net.projections:
        w = np.asarray(net.dense_weights(proj)).astype(np.int64)
        dst_base = net.base(proj.dst)
        if proj.src == INPUT:
            index = list(range(net.n_inputs))
        else:
            base = net.base(proj.src)
            rec = net.is_recurrent(proj)
            index = [
                (config.recurrent_source if rec else config.forward_source)(base + k)
                for k in range(w.shape[0])
            ]
        for row, src in zip(w, index, strict=True):
            nz = np.flatnonzero(row)
            if not len(nz):
                continue
            runs, start, end = [], nz[0], nz[0]
            for c in nz[1:]:
                if c - end - 1 <= MERGE_GAP:
                    end = c
                else:
                    runs.append((start, end))
                    start = end = c
            runs.append((start, end))
            for a, b in runs:
                per_source.setdefault(src, []).append((dst_base + int(a), row[a : b + 1]))
    sources, segments, slots = {}, [], []
    for src in sorted(per_source):
        sources[src] = list(range(len(segments), len(segments) + len(per_source[src])))
        for target, weights in per_source[src]:
            segments.append((target, len(weights), len(slots)))
            slots.extend(int(x) for x in weights)
    return sources, segments, slots


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
    for pop in net.populations:
        for name in ("beta", "alpha"):
            p = _uniform(getattr(pop.params, name), name, pop.name)
            if p:
                problems.append(p)
    if net.n_neurons <= config.n_neurons and net.n_inputs <= config.n_inputs:
        try:
            _, segments, slots = compile_fanout(net, config)
        except ConfigError as exc:
            problems.append(str(exc))
        else:
            if len(segments) > config.segments:
                problems.append(
                    f"the fan-out needs {len(segments)} segments, the core's segment table holds "
                    f"{config.segments}"
                )
            words = (len(slots) + 1) // 2
            if words > config.synapse_words:
                problems.append(
                    f"the weights need {words} synapse words ({len(slots)} weight slots), the "
                    f"core's weight memory holds {config.synapse_words}"
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
    sources, segments, slots = compile_fanout(net, config)
    n = net.n_neurons
    has_forward, has_recurrent = set(), set()
    for proj in net.projections:
        if proj.src != "input":
            (has_recurrent if net.is_recurrent(proj) else has_forward).add(proj.src)
    pop_words, thr, bias = [], [], []
    for pop in net.populations:
        arr = population_arrays(pop.params, pop.size, pop.name, "int", fmt)
        opts = pop_options(
            pop.params, pop.name in net.outputs, pop.name in has_forward,
            pop.name in has_recurrent,
        )
        beta = _scalar(pop.params.beta) if pop.params.leak != LeakMode.NONE else 0
        alpha = (
            _scalar(pop.params.alpha)
            if pop.params.model == NeuronModel.CUBA and pop.params.leak != LeakMode.NONE
            else 0
        )
        pop_words += [net.base(pop.name) | pop.size << 16, opts, beta, alpha]
        thr += [int(x) for x in arr["threshold"]]
        bias += [int(x) & 0xFFFFFFFF for x in arr["bias"]]
    src_words = [0] * config.n_sources
    for src, segs in sources.items():
        src_words[src] = segs[0] | len(segs) << 16
    seg_words = []
    for target, length, slot in segments:
        seg_words += [target | length << 16, slot]
    mask = (1 << fmt.weight_bits) - 1
    if len(slots) % 2:
        slots = slots + [0]
    weight_words = [
        (slots[k] & mask) | (slots[k + 1] & mask) << fmt.weight_bits
        for k in range(0, len(slots), 2)
    ]
    blocks = [
        (address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), [0]),
        (address(Region.POP), pop_words),
        (address(Region.THR), thr),
        (address(Region.BIAS), bias),
        (address(Region.V), [0] * n),
        (address(Region.I), [0] * n),
        (address(Region.ACC), [0] * n),
        (address(Region.SRC), src_words),
        (address(Region.SEG), seg_words),
        (address(Region.WEIGHT), weight_words),
        (address(Region.CONFIG, ConfigWord.N_INPUTS.value), [net.n_inputs]),
        (address(Region.CONFIG, ConfigWord.CONTROL.value), [1]),
        (address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), [len(net.populations)]),
    ]
    return [(a, w) for a, w in blocks if w]
