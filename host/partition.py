"""Split a network over the cores of a multi-core chip and build the router's table.

Spec: ``docs/routing.md`` (partition, table format, queue sizing) and ``docs/network.md`` (when
a spike arrives).  Pure Python / NumPy; the table's word format comes from
``spikeforge.hw.router`` and each core's memory image from ``spikeforge.host.image.build_image``
(used as a black box).

Populations are assigned to cores in update order, contiguously: core ``a`` holds populations
``i .. j``, core ``a + 1`` the next ones.  Each core runs a sub-network: its populations, the
projections between them unchanged, and one ``Projection("input", dst, ...)`` for every
projection that enters the core from the host or from another core.  A sub-network's input
channels are the host channels that project into the core (ascending), then one channel per
neuron of another core that projects into it (ascending global index).  A projection from core
``a`` to a later core ``b > a`` is *forward* (delivered in the same timestep, before core ``b``
runs); to an earlier core it is *backward* (queued, delivered at the start of the next
timestep; or, with ``backward="direct"``, delivered at once into the earlier core, which has
finished the timestep).  Since cores run in population order this is exactly
``docs/network.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FitError
from ..hw.image import ConfigWord, CoreConfig, Region, Span, address, pack
from ..hw.router import (
    RouterConfig,
    RouterConfigWord,
    RouterRegion,
    core_address,
    dest_core,
    dest_host,
    router_address,
)
from ..network import INPUT, Conv, Network, Projection
from .image import build_image, check_fit

__all__ = ["ChipMapping", "partition", "subnetwork"]


@dataclass
class ChipMapping:
    """Where every population of a network runs and how spikes travel between cores.

    Attributes
    ----------
    net : Network
        The whole network.
    n_cores : int
        Cores of the chip (some may be unused).
    groups : list of list of str
        Populations of each used core, in update order.
    subnets : list of Network
        The sub-network of each used core.
    channels : list of list of tuple
        Input channels of each used core: ``("input", c)`` (host channel ``c``) or
        ``("neuron", g)`` (global neuron ``g`` of another core).
    core_of : dict
        Population name -> core.
    local_base : dict
        Population name -> index of its first neuron inside its core.
    routes : dict
        Source -> list of destinations.  Sources: ``("input", c)`` or ``("core", k, n)`` (local
        neuron ``n`` of core ``k``); destinations: ``("host", g)`` or
        ``("core", b, channel, delayed)``.
    fits : list of Fit
        The passed fit check of each used core's sub-network (what
        :func:`~spikeforge.host.image.check_fit` returned for the core configuration of
        :func:`partition`): :meth:`core_images` builds the images from them without checking
        and compiling again.
    """

    net: Network
    n_cores: int
    groups: list
    subnets: list
    channels: list
    core_of: dict
    local_base: dict
    routes: dict = field(default_factory=dict)
    fits: list = field(default_factory=list, repr=False)

    @property
    def used_cores(self) -> int:
        return len(self.groups)

    @property
    def n_entries(self) -> int:
        """Routing-table entries the mapping needs."""
        return sum(len(d) for d in self.routes.values())

    @property
    def n_delayed(self) -> int:
        """Worst-case delayed-queue occupancy: every delayed entry's source fires in one step.

        Each source (a neuron) fires at most once per timestep and each delayed entry queues
        one delivery, so the queue never holds more than this.
        """
        return sum(1 for d in self.routes.values() for x in d if x[0] == "core" and x[3])

    def global_index(self, core: int, local: int) -> int:
        """Global neuron index of local neuron ``local`` of ``core``."""
        first = self.groups[core][0]
        return self.net.base(first) + int(local)

    def problems(self, router: RouterConfig) -> list[str]:
        """Every reason why this mapping does not fit the router (an empty list: it fits)."""
        out = []
        if self.used_cores > router.cores:
            out.append(f"the mapping uses {self.used_cores} cores, the chip has {router.cores}")
        if self.net.n_inputs > router.n_inputs:
            out.append(
                f"the network has {self.net.n_inputs} input channels, the router takes "
                f"{router.n_inputs}"
            )
        if self.n_entries > router.entries:
            out.append(
                f"the routes need {self.n_entries} table entries, the router holds "
                f"{router.entries}"
            )
        if self.n_delayed > router.delay_depth:
            out.append(
                f"up to {self.n_delayed} backward (next-step) deliveries can be queued in one "
                f"timestep, the router's delayed queue holds {router.delay_depth}: it could "
                f"overflow"
            )
        if self.net.n_neurons > 1 << 16:
            out.append(f"the network has {self.net.n_neurons} neurons: at most 65536 (16-bit AER)")
        return out

    def router_image(self, router: RouterConfig) -> list[tuple[int, list[int]]]:
        """``(address, words)`` blocks that load the router's table (chip bus addresses).

        Every ``SRC`` word is written (unused sources get an empty run), the delayed queue is
        emptied and ``N_INPUTS`` set to the network's channels.
        """
        problems = self.problems(router)
        if problems:
            raise FitError(problems)
        src_words = [0] * router.n_sources
        dest_words = []
        for source in sorted(self.routes, key=lambda s: self._source_index(s, router)):
            dests = self.routes[source]
            if not dests:
                continue
            src_words[self._source_index(source, router)] = pack(
                Span, first=len(dest_words), count=len(dests)
            )
            for d in dests:
                dest_words.append(dest_host(d[1]) if d[0] == "host" else dest_core(*d[1:]))
        blocks = [
            (router_address(RouterRegion.CONFIG, RouterConfigWord.N_INPUTS.value), [0]),
            (router_address(RouterRegion.SRC), src_words),
            (router_address(RouterRegion.DEST), dest_words),
            (router_address(RouterRegion.CONFIG, RouterConfigWord.CONTROL.value), [1]),
            (router_address(RouterRegion.CONFIG, RouterConfigWord.N_INPUTS.value),
             [self.net.n_inputs]),
        ]
        return [(a, w) for a, w in blocks if w]

    @staticmethod
    def _source_index(source, router: RouterConfig) -> int:
        if source[0] == "input":
            return router.host_source(source[1])
        return router.core_source(source[1], source[2])

    def core_images(self, config: CoreConfig, n_cores: int | None = None):
        """``(address, words)`` blocks loading every core (chip bus addresses, ``k << 24``).

        Cores beyond the used ones (up to ``n_cores``) get no populations and no inputs, and
        forget any pending spikes, so they finish a timestep at once and emit nothing.
        """
        blocks = []
        for k, sub in enumerate(self.subnets):
            fit = self.fits[k] if k < len(self.fits) else None
            if fit is not None and fit.config != config:
                fit = None  # another configuration: check_fit again
            for addr, words in build_image(sub, config, fit):
                blocks.append((core_address(k, addr), words))
        for k in range(self.used_cores, n_cores or self.used_cores):
            blocks += [
                (core_address(k, address(Region.CONFIG, ConfigWord.N_POPULATIONS.value)), [0]),
                (core_address(k, address(Region.CONFIG, ConfigWord.N_INPUTS.value)), [0]),
                (core_address(k, address(Region.CONFIG, ConfigWord.CONTROL.value)), [1]),
            ]
        return blocks

    def gather(self, per_core) -> np.ndarray:
        """Global-order array from per-core arrays of local values (``per_core[k][local]``)."""
        out = np.zeros(self.net.n_neurons, dtype=np.asarray(per_core[0]).dtype)
        for k, group in enumerate(self.groups):
            lo = self.net.base(group[0])
            n = sum(self.net.population(p).size for p in group)
            out[lo : lo + n] = np.asarray(per_core[k])[:n]
        return out

    def core_neurons(self, core: int) -> int:
        """Neurons of the sub-network on ``core``."""
        return self.subnets[core].n_neurons


def _entering_rows(net, proj):
    """The source rows of ``proj`` that a core holding its target but not its source needs as
    input channels: the rows with a synapse, and for a :class:`~spikeforge.network.Conv` every
    source it reads (one contiguous block of channels, so that it stays weight-shared)."""
    w = proj.weights
    if isinstance(w, Conv):
        return np.arange(w.src_offset, w.src_offset + w.n_src)
    return np.flatnonzero(np.any(np.asarray(net.dense_weights(proj)) != 0, axis=1))


def subnetwork(net: Network, group, core_of=None):
    """The sub-network of the populations ``group`` (contiguous, in update order).

    Returns ``(sub, channels)``: the :class:`Network` one core runs and its input channels
    (``("input", c)`` / ``("neuron", g)``, see the module docstring).  Populations outside
    ``group`` are on other cores.  Spikes that must leave the core (network outputs, sources of
    projections into other cores) are the sub-network's outputs.

    A projection entering the core becomes an input projection of the sub-network with its
    delay: a dense or sparse one keeps the rows with a synapse (as a dense block over the
    channels); a convolution stays a convolution, reading every one of its sources, which are
    consecutive channels (:meth:`Conv.place <spikeforge.network.Conv.place>`), so that it keeps
    its weight-shared blocks on the core.
    """
    group = list(group)
    inside = set(group)
    pops = [net.population(p) for p in group]
    host_rows, neuron_rows = set(), set()
    leaving = set()
    entering = {}  # projection index -> its source rows
    for k, proj in enumerate(net.projections):
        if proj.dst in inside and proj.src not in inside:
            rows = _entering_rows(net, proj)
            entering[k] = rows
            if proj.src == INPUT:
                host_rows.update(int(r) for r in rows)
            else:
                base = net.base(proj.src)
                neuron_rows.update(base + int(r) for r in rows)
        if proj.src in inside and proj.dst not in inside:
            leaving.add(proj.src)
    channels = [("input", c) for c in sorted(host_rows)]
    channels += [("neuron", g) for g in sorted(neuron_rows)]
    chan_of = {ch: i for i, ch in enumerate(channels)}

    def key(proj, r):
        return ("input", int(r)) if proj.src == INPUT else ("neuron", net.base(proj.src) + int(r))

    projections = []
    for k, proj in enumerate(net.projections):
        if proj.dst not in inside:
            continue
        if proj.src in inside:
            projections.append(proj)
            continue
        rows = entering[k]
        if not len(rows):
            continue  # no synapse: nothing to deliver
        w = proj.weights
        if isinstance(w, Conv):
            # the rows of one source are consecutive channels (channels are sorted by source
            # index, and every row of the block is a channel)
            first = chan_of[key(proj, rows[0])]
            weights = w.place(first, len(channels))
        else:
            w = np.asarray(net.dense_weights(proj))
            weights = np.zeros((len(channels), w.shape[1]), dtype=w.dtype)
            weights[[chan_of[key(proj, r)] for r in rows]] = w[rows]
        # (a delayed projection from another core is refused by partition(), _delays_crossing;
        # an input projection keeps its delay)
        projections.append(Projection(INPUT, proj.dst, weights, proj.delay))
    outputs = [p for p in group if p in net.outputs or p in leaving]
    sub = Network(len(channels), pops, projections, outputs or [group[-1]])
    sub.outputs = outputs  # no output at all: the core emits nothing (Network would pick one)
    return sub, channels


def _delays_crossing(net, group):
    """Problems of the delayed projections that enter ``group`` from a population on another
    core: a core delivers delays from its own spike bitmaps, the router only the same and the
    next step (``docs/routing.md``)."""
    inside = set(group)
    return [
        f"projection {proj.src}->{proj.dst} has a delay of {proj.delay} steps and would cross "
        f"cores ({proj.src!r} on another core than {proj.dst!r}): delays are delivered within "
        f"a core; put both populations on one core (assign=...)"
        for proj in net.projections
        if proj.delay and proj.src != INPUT and proj.dst in inside and proj.src not in inside
    ]


def _check_assign(net, assign, n_cores):
    names = [p.name for p in net.populations]
    if len(assign) != len(names):
        raise ConfigError(
            f"assign has {len(assign)} entries, the network has {len(names)} populations"
        )
    assign = [int(a) for a in assign]
    steps = [b - a for a, b in zip(assign[:-1], assign[1:], strict=True)]
    if assign[0] != 0 or any(d not in (0, 1) for d in steps):
        raise ConfigError(
            f"assign={assign} is not valid: cores must be 0, 1, 2, ... in update order "
            f"(contiguous, non-decreasing, starting at 0)"
        )
    if assign[-1] >= n_cores:
        raise ConfigError(f"assign={assign} uses {assign[-1] + 1} cores, the chip has {n_cores}")
    groups = [[] for _ in range(assign[-1] + 1)]
    for name, a in zip(names, assign, strict=True):
        groups[a].append(name)
    return groups


def _groups_fill(net, n_cores, problems_of):
    """Greedy: each core takes populations (in order) while its sub-network still fits."""
    names = [p.name for p in net.populations]
    groups, start = [], 0
    while start < len(names):
        end = start + 1
        problems = problems_of(names[start:end])
        if problems:
            raise FitError(
                [f"population {names[start]!r} alone does not fit one core:"] + problems
            )
        while end < len(names) and not problems_of(names[start : end + 1]):
            end += 1
        groups.append(names[start:end])
        start = end
    if len(groups) > n_cores:
        raise FitError(
            [f"the network needs {len(groups)} cores filled greedily ({groups}), the chip has "
             f"{n_cores}"]
        )
    return groups


def _groups_balance(net, n_cores, problems_of):
    """The contiguous split over at most ``n_cores`` cores, every core's sub-network fitting,
    with the fewest neurons on its largest core (ties: the split over more cores).

    Dynamic programming over split points (``O(P**2)`` fit checks for ``P`` populations)."""
    names = [p.name for p in net.populations]
    sizes = np.cumsum([0] + [p.size for p in net.populations])
    n_pops = len(names)
    first_problems = []

    def fits(a, b):  # populations a .. b-1 on one core
        problems = problems_of(names[a:b])
        if problems and not first_problems:
            first_problems.extend([f"populations {names[a:b]} on one core:"] + problems)
        return not problems

    inf = float("inf")
    # best[c][b]: (largest core, split) for populations 0 .. b-1 on exactly c cores
    best = [[(inf, None)] * (n_pops + 1) for _ in range(n_cores + 1)]
    best[0][0] = (0, [])
    for c in range(1, n_cores + 1):
        for b in range(1, n_pops + 1):
            for a in range(b - 1, -1, -1):
                prev, split = best[c - 1][a]
                if split is None:
                    continue
                cost = max(prev, int(sizes[b] - sizes[a]))
                if cost < best[c][b][0] and fits(a, b):
                    best[c][b] = (cost, split + [names[a:b]])
    candidates = [best[c][n_pops] for c in range(n_cores, 0, -1) if best[c][n_pops][1]]
    if not candidates:
        raise FitError(
            [f"no split of the {n_pops} populations over {n_cores} cores fits"] + first_problems
        )
    return min(candidates, key=lambda x: x[0])[1]  # min keeps the first: more cores on ties


def partition(net: Network, n_cores: int, core_config: CoreConfig, *, strategy: str = "fill",
              assign=None, router: RouterConfig | None = None,
              backward: str = "queue") -> ChipMapping:
    """Assign the populations of ``net`` to cores and compute the routes between them.

    Parameters
    ----------
    net : Network
        The whole network.
    n_cores : int
        Cores available.
    core_config : CoreConfig
        Configuration of each core; every sub-network must pass
        :func:`~spikeforge.host.image.check_fit` for it (each candidate sub-network is checked
        once; the mapping keeps the chosen ones' fits for :meth:`ChipMapping.core_images`).
    strategy : {"fill", "balance"}
        ``"fill"``: greedy, each core takes populations in update order while its sub-network
        still fits (fewest cores).  ``"balance"``: among the contiguous splits over up to
        ``n_cores`` cores that fit, the one with the fewest neurons on its largest core
        (dynamic programming, ``O(populations**2)`` fit checks).
    assign : sequence of int, optional
        Explicit core of each population (non-decreasing from 0 in update order); overrides
        ``strategy``.
    router : RouterConfig, optional
        Also check the routing table and the delayed queue against it.
    backward : {"queue", "direct"}
        How a spike reaches an earlier core (a backward edge, next-step semantics).
        ``"queue"``: a DELAYED entry, held in the router's delayed queue and delivered at the
        start of the next timestep.  ``"direct"``: delivered at once; the earlier core has
        finished this timestep and reads its accumulators only at its next sweep, so the result
        is the same, with no queue to size or overflow and the delivery overlapping the later
        cores' work (``docs/routing.md``).

    Raises
    ------
    FitError
        Listing every reason why the network does not fit.
    """
    if not isinstance(n_cores, int) or n_cores < 1:
        raise ConfigError(f"n_cores={n_cores!r} is out of range: allowed >= 1")
    if backward not in ("queue", "direct"):
        raise ConfigError(f"backward={backward!r} is not valid: allowed 'queue', 'direct'")
    checked = {}  # populations -> (sub-network, channels, Fit or None, problems)

    def problems_of(group):
        """The fit problems of the sub-network of ``group`` on one core (checked once)."""
        key = tuple(group)
        if key not in checked:
            sub, chans = subnetwork(net, group)
            crossing = _delays_crossing(net, group)
            try:
                fit = check_fit(sub, core_config)
                checked[key] = (sub, chans, None if crossing else fit, crossing)
            except FitError as exc:
                checked[key] = (sub, chans, None, crossing + list(exc.problems))
        return checked[key][3]

    if assign is not None:
        groups = _check_assign(net, assign, n_cores)
    elif strategy == "fill":
        groups = _groups_fill(net, n_cores, problems_of)
    elif strategy == "balance":
        groups = _groups_balance(net, n_cores, problems_of)
    else:
        raise ConfigError(f"strategy={strategy!r} is not valid: allowed 'fill', 'balance'")

    core_of, local_base, subnets, channels, fits = {}, {}, [], [], []
    problems = []
    for k, group in enumerate(groups):
        offset = 0
        for p in group:
            core_of[p] = k
            local_base[p] = offset
            offset += net.population(p).size
        for msg in problems_of(group):
            problems.append(f"core {k} ({', '.join(group)}): {msg}")
        sub, chans, fit, _ = checked[tuple(group)]
        subnets.append(sub)
        channels.append(chans)
        fits.append(fit)
    if problems:
        raise FitError(problems)

    mapping = ChipMapping(net, n_cores, groups, subnets, channels, core_of, local_base,
                          fits=fits)
    routes = {}
    for b, chans in enumerate(channels):
        for ch, (kind, idx) in enumerate(chans):
            if kind == "input":
                routes.setdefault(("input", idx), []).append(("core", b, ch, False))
    chan_maps = [{ch: i for i, ch in enumerate(chans)} for chans in channels]
    for k, group in enumerate(groups):
        for p in group:
            base, size = net.base(p), net.population(p).size
            for n in range(size):
                g = base + n
                dests = []
                if p in net.outputs:
                    dests.append(("host", g))
                for b, chan_of in enumerate(chan_maps):
                    ch = chan_of.get(("neuron", g))
                    if b != k and ch is not None:
                        dests.append(("core", b, ch, b < k and backward == "queue"))
                if dests:
                    routes[("core", k, local_base[p] + n)] = dests
    mapping.routes = routes
    if router is not None:
        problems = mapping.problems(router)
        if problems:
            raise FitError(problems)
    return mapping
