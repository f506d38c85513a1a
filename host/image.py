"""The host side of a core's memory image: compile a network, check that it fits, encode it.

Spec: ``docs/core.md`` (fan-out organisation, memory map, "The memory image").  The address map
and the word formats are the gateware's (:mod:`spikeforge.hw.image`); this module turns a
:class:`~spikeforge.network.Network` into ``(address, words)`` bus writes for a
:class:`~spikeforge.hw.image.CoreConfig` with :func:`build_image`, after :func:`fit_problems`
(or :func:`check_fit`, which raises) found no reason why it does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, FitError
from ..hw.image import (
    LIST_BITS,
    ConfigWord,
    CoreConfig,
    DescList,
    DescStride,
    PopWord,
    Region,
    Span,
    address,
    decode_signed,
    pack,
    pop_options,
)
from ..network import INPUT
from ..sim.golden import network_problems
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel

__all__ = [
    "Block",
    "Layout",
    "Fit",
    "compile_blocks",
    "fit_problems",
    "check_fit",
    "build_image",
    "decode_state",
]


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
    """One fan-out block descriptor (see :class:`~spikeforge.hw.image.DescWord`) and where its
    weights are."""

    target: int  #: first target neuron (global index)
    length: int  #: targets per source
    slot: int  #: first weight slot (row ``o - first`` starts at ``slot + (o - first) * stride``)
    first: int  #: first source of the group the block covers
    count: int  #: sources covered
    stride: int | None = None  #: slots from row to row (default: ``length``)
    #: steps after the source's spike that the block delivers (``a + d``, :data:`DescStride`)
    arrival: int = 0

    def words(self) -> list[int]:
        """The block's :class:`DescWord` words."""
        stride = self.length if self.stride is None else self.stride
        return [
            pack(Span, first=self.target, count=self.length),
            self.slot,
            pack(Span, first=self.first, count=self.count),
            pack(DescStride, stride=stride, arrival=self.arrival),
        ]


def arrival(net, proj) -> int:
    """Steps after a source spike that ``proj`` delivers: ``a + d`` (``docs/network.md``,
    "Synaptic delays"; ``a`` = 1 for a recurrent projection)."""
    return int(net.is_recurrent(proj)) + proj.delay


def _groups(net):
    """Fan-out groups in table order: the input channels, then per population forward (same
    step) and recurrent (a later step: every arrival >= 1, recurrent or delayed); each as
    ``(key, projections)``."""
    keys = [("input", None)]
    for pop in net.populations:
        keys += [("forward", pop.name), ("recurrent", pop.name)]
    groups = {k: [] for k in keys}
    for proj in net.projections:
        if proj.src == INPUT:
            groups[("input", None)].append(proj)
        else:
            kind = "recurrent" if arrival(net, proj) else "forward"
            groups[(kind, proj.src)].append(proj)
    return list(groups.items())


class Layout(NamedTuple):
    """What :func:`compile_blocks` returns: the fan-out blocks and the weight slots."""

    lists: dict
    blocks: list
    slots: list


def compile_blocks(net, config: CoreConfig) -> Layout:
    """Lay out every projection of ``net`` as a dense block of weights.

    Each projection becomes one :class:`Block`: the bounding box of its non-zero weights (rows
    are sources, columns targets); a projection without a non-zero weight takes none.  Zero
    weights inside the box cost one clock and one weight slot each.  With several lanes each row
    starts at a slot congruent to its first target modulo ``lanes`` and the stride is a multiple
    of ``lanes`` (the padding slots hold zeros).

    Returns
    -------
    Layout
        ``(lists, blocks, slots)``.  ``lists``: ``("input", None)``, ``("forward", pop)``,
        ``("recurrent", pop)`` -> ``(first, count)``, the group's run of consecutive
        descriptors; ``blocks``: the :class:`Block` list; ``slots``: the weight of every slot
        (signed).
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
                      stride if lanes > 1 else None, arrival(net, proj))
            )
            slots.extend(int(x) for x in box.ravel())
        lists[key] = (first, len(blocks) - first)
    return Layout(lists, blocks, slots)


@dataclass(frozen=True, eq=False)
class Fit:
    """What the fit check found for one network and one core, and what its image is built from.

    Made by :func:`check_fit` (or :func:`fit_problems`, which returns only the problems); hand it
    to :func:`build_image` so that the image is built without checking and compiling again.
    """

    net: object  #: the network checked
    config: CoreConfig | None  #: the core it was checked against (``None``: the format only)
    fmt: Format  #: the number format it was checked against
    problems: tuple  #: every reason why ``net`` does not fit (empty: it fits)
    arrays: list | None  #: per-population arrays (``population_arrays``), when the net is valid
    layout: Layout | None  #: :func:`compile_blocks`' result, when it was compiled

    @property
    def ok(self) -> bool:
        return not self.problems


def _fit(net, config: CoreConfig | None, fmt: Format | None) -> Fit:
    """The one fit check: validate ``net`` once, compile it once (when ``config`` is given)."""
    if config is not None:
        fmt = config.fmt
    elif fmt is None:
        fmt = DEFAULT_FORMAT
    problems, arrays = network_problems(net, "int", fmt)
    layout = None
    if config is not None:
        problems += _capacity_problems(net, config)
        if net.n_neurons <= config.n_neurons and net.n_inputs <= config.n_inputs:
            try:
                layout = compile_blocks(net, config)
            except ConfigError as exc:
                problems.append(str(exc))
            else:
                problems += _layout_problems(layout, config)
    problems = tuple(dict.fromkeys(problems))  # each problem once, in order
    return Fit(net, config, fmt, problems, arrays, layout)


def _capacity_problems(net, config: CoreConfig) -> list[str]:
    problems = []
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
    for proj in net.projections:
        if not proj.delay:
            continue
        if proj.src == INPUT:
            problems.append(
                f"projection input->{proj.dst} has a delay of {proj.delay} steps: the core "
                f"delivers input events as they come and keeps no history of them; delay the "
                f"input raster on the host, or route the input through a population "
                f"(docs/network.md, 'Synaptic delays')"
            )
        elif proj.delay > config.max_delay:
            problems.append(
                f"projection {proj.src}->{proj.dst} has a delay of {proj.delay} steps, the core "
                + (f"delivers delays up to {config.max_delay}" if config.max_delay else
                   "has no delays (max_delay = 0; the ulx3s-85f boards carry them)")
            )
    names = ("beta", "alpha") + (() if config.per_neuron_threshold else ("threshold",))
    for pop in net.populations:
        for name in names:
            p = _uniform(getattr(pop.params, name), name, pop.name)
            if p:
                problems.append(p)
    return problems


def _layout_problems(layout: Layout, config: CoreConfig) -> list[str]:
    lists, blocks, slots = layout
    problems = []
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


def fit_problems(net, config: CoreConfig | None = None, *, fmt: Format | None = None) -> list[str]:
    """Every reason why ``net`` does not fit ``config`` (an empty list: it fits).

    The one fit check of the host library: every population's parameters and every
    projection's weights against the number format, the accumulator bound
    (:func:`~spikeforge.sim.golden.network_problems`), and, when ``config`` is given, the
    core's capacities: neurons, input channels, populations, per-neuron decays (and
    thresholds on a core with one per population), fan-out block descriptors, descriptor lists
    and weight memory (:func:`compile_blocks`).  Without ``config`` only the format is checked:
    ``fmt`` (default ``spikeforge.spec.DEFAULT_FORMAT``); with it, ``config.fmt``.
    """
    return list(_fit(net, config, fmt).problems)


def check_fit(net, config: CoreConfig | None = None, *, fmt: Format | None = None) -> Fit:
    """:func:`fit_problems`, raising :class:`~spikeforge.errors.FitError` listing every problem.

    Returns the :class:`Fit` (for :func:`build_image`) when ``net`` fits.
    """
    fit = _fit(net, config, fmt)
    if fit.problems:
        raise FitError(list(fit.problems))
    return fit


def _scalar(value):
    return int(np.asarray(value).ravel()[0])


def build_image(net, config: CoreConfig, fit: Fit | None = None) -> list[tuple[int, list[int]]]:
    """Encode ``net`` as ``(address, words)`` blocks of bus writes.

    Writing every block (in order, while the core is idle) loads the network and resets its state
    (membrane, current, accumulator, pending recurrent spikes) to zero, as
    :meth:`~spikeforge.sim.golden.GoldenChip.reset`.

    ``fit`` is what :func:`check_fit` returned for this ``net`` and ``config`` (then nothing is
    checked or compiled again); without it, :func:`check_fit` runs first (and raises
    :class:`~spikeforge.errors.FitError` if ``net`` does not fit).
    """
    if fit is None:
        fit = check_fit(net, config)
    elif fit.net is not net or fit.config != config or not fit.ok:
        raise ConfigError(
            "build_image: fit= is not a passed fit check of this network for this configuration "
            "(use the Fit that check_fit(net, config) returned)"
        )
    fmt = config.fmt
    lists, blocks, slots = fit.layout

    def list_word(key):
        first, count = lists[key]
        return pack(DescList, first=first, count=count) if count else 0

    n = net.n_neurons
    pop_words, thr, bias = [], [], []
    for pop, arr in zip(net.populations, fit.arrays, strict=True):
        first, count = lists[("recurrent", pop.name)]
        opts = pop_options(
            pop.params,
            pop.name in net.outputs,
            lists[("forward", pop.name)][1] > 0,
            count > 0,
            max((b.arrival for b in blocks[first:first + count]), default=0),
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
        # a state reset clears only these neurons
        (address(Region.CONFIG, ConfigWord.N_NEURONS.value), [n]),
        (address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), [len(net.populations)]),
    ]
    return [(a, w) for a, w in blocks_out if w]
