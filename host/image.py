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
    ConvEntry,
    ConvWord,
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
from ..network import INPUT, Conv
from ..sim.golden import network_problems
from ..spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel

__all__ = [
    "Block",
    "SharedBlock",
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

    #: descriptor table entries the block takes
    entries = 1

    def words(self) -> list[int]:
        """The block's :class:`DescWord` words."""
        stride = self.length if self.stride is None else self.stride
        return [
            pack(Span, first=self.target, count=self.length),
            self.slot,
            pack(Span, first=self.first, count=self.count),
            pack(DescStride, stride=stride, arrival=self.arrival),
        ]


@dataclass(frozen=True)
class SharedBlock:
    """A weight-shared block (one group of a convolution; :class:`~spikeforge.hw.image.ConvWord`,
    ``docs/core.md`` "Weight-shared blocks"): two descriptor entries, one ``CONV`` word per
    source from ``table``."""

    target: int  #: first target neuron (global index)
    extent: int  #: every target lies in ``target .. target + extent - 1``
    slot: int  #: first weight slot of the kernel
    first: int  #: first source of the group the block covers
    count: int  #: sources covered (``CONV`` words)
    table: int  #: the first source's ``CONV`` word
    channels: int  #: output channels (the outer loop)
    row_targets: int
    row_slots: int
    channel_targets: int
    channel_slots: int
    arrival: int = 0

    entries = 2

    def words(self) -> list[int]:
        """The block's eight words: a :class:`DescWord` entry, then a :class:`ConvWord` one."""
        second = {
            ConvWord.TABLE: pack(Span, first=self.table, count=self.channels),
            ConvWord.ROW: pack(Span, first=self.row_targets, count=self.row_slots),
            ConvWord.EMPTY: 0,
            ConvWord.CHANNEL: pack(Span, first=self.channel_targets, count=self.channel_slots),
        }
        return [
            pack(Span, first=self.target, count=self.extent),
            self.slot,
            pack(Span, first=self.first, count=self.count),
            pack(DescStride, stride=0, arrival=self.arrival, shared=1),
            *(second[w] for w in ConvWord),
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
    """What :func:`compile_blocks` returns: the fan-out blocks, the weight slots and the
    ``CONV`` words of the weight-shared blocks."""

    lists: dict
    blocks: list
    slots: list
    conv: tuple | list = ()

    @property
    def entries(self) -> int:
        """Descriptor table entries the blocks take (a weight-shared block two)."""
        return sum(b.entries for b in self.blocks)


_ENTRY_MAX = {f: (1 << ConvEntry[f].width) - 1 for f in ("target", "slot", "rows", "run")}


def _axis(n_in, extent, k, stride, pad, n_out):
    """One spatial axis of a convolution as the core's weight-shared blocks take it.

    Returns ``(order, count, out_first, pos_first)``: ``order`` the kernel taps in storage
    order (phase by phase, ``(u + pad) mod stride``, descending within a phase), and for every
    source position ``u``: how many outputs it reaches, the first (lowest) of them and the
    storage position of its tap; the taps of consecutive outputs are consecutive in storage.
    """
    order = [t for ph in range(stride) for t in sorted(range(ph, k, stride), reverse=True)]
    pos = {t: i for i, t in enumerate(order)}
    count = np.zeros(n_in, dtype=np.int64)
    out_first = np.zeros(n_in, dtype=np.int64)
    pos_first = np.zeros(n_in, dtype=np.int64)
    for u in range(min(n_in, extent)):
        taps = [t for t in range(k - 1, -1, -1)
                if (u + pad - t) % stride == 0 and 0 <= (u + pad - t) // stride < n_out]
        if taps:
            count[u], out_first[u], pos_first[u] = len(taps), (u + pad - taps[0]) // stride, \
                pos[taps[0]]
    return order, count, out_first, pos_first


def shared_problem(conv: Conv, config: CoreConfig) -> str | None:
    """Why ``conv`` cannot be a weight-shared block on ``config`` (``None``: it can)."""
    if not config.conv_words:
        return "the core has no weight-shared blocks (CoreConfig.conv_words = 0)"
    if any(d != 1 for d in conv.dilation):
        return f"dilation {conv.dilation} (the core's shared blocks take dilation 1)"
    kh, kw = (1, *conv.kernel_size) if len(conv.kernel_size) == 1 else conv.kernel_size
    sy, sx = (1, *conv.stride) if len(conv.stride) == 1 else conv.stride
    for name, k, s in (("height", kh, sy), ("width", kw, sx)):
        if -(-k // s) > _ENTRY_MAX["rows"]:
            return (f"kernel {name} {k} with stride {s} reaches {-(-k // s)} outputs per source "
                    f"(the core's shared blocks take {_ENTRY_MAX['rows']})")
    plane = int(np.prod(conv.out_shape))
    if plane > _ENTRY_MAX["target"] + 1:
        return (f"an output channel of {plane} neurons (the core's shared blocks take "
                f"{_ENTRY_MAX['target'] + 1})")
    c_in_g = conv.kernel.shape[1]
    per_source = c_in_g * kh * (kw + config.lanes) * config.lanes
    if per_source > _ENTRY_MAX["slot"] + 1:
        return (f"{c_in_g} input channels per group x a {kh}x{kw} kernel (the core's shared "
                f"blocks address {_ENTRY_MAX['slot'] + 1} kernel slots per output channel)")
    return None


def _shared_blocks(net, proj, conv: Conv, config: CoreConfig, slots, conv_words):
    """``proj``'s convolution as one :class:`SharedBlock` per group; appends its kernel copies
    to ``slots`` and its source entries to ``conv_words``."""
    L = config.lanes
    nd = len(conv.in_shape)
    kern = conv.kernel if nd == 2 else conv.kernel[:, :, None, :]
    in_hw = conv.in_shape if nd == 2 else (1, *conv.in_shape)
    ext = conv.extent if nd == 2 else (1, *conv.extent)
    out_hw = conv.out_shape if nd == 2 else (1, *conv.out_shape)
    stride = conv.stride if nd == 2 else (1, *conv.stride)
    pads = [p[0] for p in conv.padding] if nd == 2 else [0, conv.padding[0][0]]
    c_out, c_in_g, kh, kw = kern.shape
    g = conv.groups
    co_g = c_out // g
    ho, wo = out_hw
    plane = ho * wo
    oy_order, ny, oy0, ypos = _axis(in_hw[0], ext[0], kh, stride[0], pads[0], ho)
    ox_order, nx, ox0, xpos = _axis(in_hw[1], ext[1], kw, stride[1], pads[1], wo)
    # the storage of one group: [co][ci][row][column]; with lanes, a row step congruent to the
    # target's (wo) and a channel step congruent to plane, and L copies shifted by one slot
    kwp = kw + (wo - kw) % L
    ch = c_in_g * kh * kwp
    ch += (plane - ch) % L
    total = co_g * ch
    total += (1 - total) % L if L > 1 else 0
    store = np.zeros((g, co_g, c_in_g, kh, kwp), dtype=np.int64)
    k = np.asarray(kern).astype(np.int64).reshape(g, co_g, c_in_g, kh, kw)
    store[..., :kw] = k[:, :, :, oy_order, :][..., ox_order]
    # the source entries of one group (the same for every group): (ci, y, x) in C order
    ci, yy, xx = np.meshgrid(np.arange(c_in_g), np.arange(in_hw[0]), np.arange(in_hw[1]),
                             indexing="ij")
    ci, yy, xx = ci.ravel(), yy.ravel(), xx.ravel()
    rows, run = ny[yy], nx[xx]
    t_rel = oy0[yy] * wo + ox0[xx]
    s_rel = ci * kh * kwp + ypos[yy] * kwp + xpos[xx]
    live = (rows > 0) & (run > 0)
    blocks = []
    n_src = c_in_g * in_hw[0] * in_hw[1]
    for grp in range(g):
        target = net.base(proj.dst) + grp * co_g * plane
        slot = len(slots)
        flat = store[grp].reshape(co_g, -1)
        group = np.zeros(total, dtype=np.int64)
        for c in range(co_g):
            group[c * ch:c * ch + flat.shape[1]] = flat[c]
        for _copy in range(L):  # copy a starts at slot + a * total, congruent to slot + a
            slots.extend(int(x) for x in group)
        copy = (target + t_rel - slot - s_rel) % L if L > 1 else 0
        s_entry = copy * total + s_rel
        if live.any() and (s_entry[live].max() > _ENTRY_MAX["slot"]
                           or t_rel[live].max() > _ENTRY_MAX["target"]):
            raise ConfigError(f"projection {proj.src}->{proj.dst}: the convolution's entries do "
                              f"not fit the core's CONV word")
        words = np.where(
            live,
            t_rel | s_entry << ConvEntry["slot"].offset | rows << ConvEntry["rows"].offset
            | run << ConvEntry["run"].offset,
            0,
        )
        table = len(conv_words)
        conv_words.extend(int(w) for w in words)
        blocks.append(SharedBlock(
            target=target, extent=co_g * plane, slot=slot, first=conv.src_offset + grp * n_src,
            count=n_src,
            table=table, channels=co_g, row_targets=wo, row_slots=kwp,
            channel_targets=plane, channel_slots=ch, arrival=arrival(net, proj),
        ))
    return blocks


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
    lists, blocks, slots, conv_words = {}, [], [], []
    entries = 0
    for key, projections in _groups(net):
        first = entries
        for proj in projections:
            if isinstance(proj.weights, Conv) and shared_problem(proj.weights, config) is None:
                new = _shared_blocks(net, proj, proj.weights, config, slots, conv_words)
                blocks.extend(new)
                entries += sum(b.entries for b in new)
                continue
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
            entries += 1
        lists[key] = (first, entries - first)
    return Layout(lists, blocks, slots, conv_words)


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
    lists, blocks, slots, conv = layout
    problems = []
    if layout.entries > config.descriptors:
        problems.append(
            f"the fan-out needs {layout.entries} block descriptor entries (one per projection, "
            f"two per group of a weight-shared convolution), the core's descriptor table holds "
            f"{config.descriptors}"
        )
    if len(conv) > config.conv_words:
        problems.append(
            f"the convolutions need {len(conv)} CONV words (one per source of each "
            f"weight-shared block), the core's CONV table holds {config.conv_words}"
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
    lists, blocks, slots, conv = fit.layout

    def list_word(key):
        first, count = lists[key]
        return pack(DescList, first=first, count=count) if count else 0

    n = net.n_neurons
    pop_words, thr, bias = [], [], []
    starts = np.cumsum([0] + [b.entries for b in blocks])[:-1]
    for pop, arr in zip(net.populations, fit.arrays, strict=True):
        first, count = lists[("recurrent", pop.name)]
        later = [b for b, e in zip(blocks, starts, strict=True) if first <= e < first + count]
        opts = pop_options(
            pop.params,
            pop.name in net.outputs,
            lists[("forward", pop.name)][1] > 0,
            count > 0,
            max((b.arrival for b in later), default=0),
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
        (address(Region.CONV), conv),
        (address(Region.CONFIG, ConfigWord.N_INPUTS.value), [net.n_inputs]),
        (address(Region.CONFIG, ConfigWord.INPUT_LIST.value), [list_word(("input", None))]),
        (address(Region.CONFIG, ConfigWord.CONTROL.value), [1]),
        # a state reset clears only these neurons
        (address(Region.CONFIG, ConfigWord.N_NEURONS.value), [n]),
        (address(Region.CONFIG, ConfigWord.N_POPULATIONS.value), [len(net.populations)]),
    ]
    return [(a, w) for a, w in blocks_out if w]
