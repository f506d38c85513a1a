"""A whole chip configuration: populations, projections, inputs and outputs.

Spec: ``docs/neuron.md`` (one neuron's timestep) and ``docs/network.md`` (how spikes travel).

This is what the compiler (``spikeforge.host.compiler``) produces, what the golden model
(``spikeforge.sim.golden``) runs, what the partitioner (``spikeforge.host.partition``) splits
over cores and what the image builder (``spikeforge.host.image``) turns into the chip's memory
image.  It depends only on ``spikeforge.errors`` and ``spikeforge.spec``, so every one of them
imports it without a cycle.  ``spikeforge.sim.network`` re-exports it (the older import path).

Timing of connections (the routing semantics):

* the host's input events of timestep ``t`` arrive before any population updates in ``t``;
* populations update in the order they are listed;
* a projection from the input or from an *earlier* population delivers in the same timestep
  (feed-forward: ``spk1 = lif1(fc1(x)); spk2 = lif2(fc2(spk1))`` as in snnTorch);
* a projection from the *same or a later* population is recurrent: spikes of timestep ``t``
  arrive in timestep ``t + 1`` (as snnTorch's ``RLeaky``);
* a projection's ``delay`` ``d`` adds ``d`` timesteps to either (``docs/network.md``, "Synaptic
  delays").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError
from .spec import LeakMode, NeuronModel, ResetMode

__all__ = ["NeuronParams", "Population", "Sparse", "Projection", "Network", "INPUT"]

INPUT = "input"
"""The name of the host's input channels as a projection source."""


def _enum(value, cls, name):
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            pass
    allowed = ", ".join(m.name.lower() for m in cls)
    raise ConfigError(f"{name}={value!r} is not valid: allowed {allowed}")


@dataclass
class NeuronParams:
    """Parameters of a population's neurons.

    ``beta``, ``alpha``, ``threshold`` and ``bias`` may each be a scalar (one per population) or
    an array with one value per neuron.  In *integer* arithmetic they are integer codes
    (see ``docs/neuron.md``); in *float* arithmetic they are the float values snnTorch uses.

    Parameters
    ----------
    model : NeuronModel or str
        ``"lif"`` (membrane only) or ``"cuba"`` (current-based, with synaptic current).
    leak : LeakMode or str
        ``"mult"`` (``beta`` is a decay: integer code ``q`` of ``q / 2**frac`` or a float in
        ``[0, 1]``), ``"shift"`` (integer only: ``beta`` is ``k`` of ``v - (v >> k)``) or
        ``"none"`` (integrate-and-fire; ``beta`` is ignored).
    beta : int, float or array
        Membrane decay.
    alpha : int, float or array
        Synaptic-current decay (CuBa only), encoded as ``beta``.
    threshold : int, float or array
        Firing threshold (strict: a neuron spikes when ``v > threshold``).
    bias : int, float or array
        Added to the input of every neuron every timestep.
    reset : ResetMode or str
        ``"subtract"``, ``"zero"`` or ``"none"``.
    reset_delay : bool
        ``True``: the reset of a spike is applied in the next timestep (snnTorch's default).
        ``False``: also applied immediately in the timestep of the spike.
    """

    model: NeuronModel | str = NeuronModel.LIF
    leak: LeakMode | str = LeakMode.MULT
    beta: object = 1.0
    alpha: object = 0.0
    threshold: object = 1.0
    bias: object = 0.0
    reset: ResetMode | str = ResetMode.SUBTRACT
    reset_delay: bool = True

    def __post_init__(self):
        self.model = _enum(self.model, NeuronModel, "model")
        self.leak = _enum(self.leak, LeakMode, "leak")
        self.reset = _enum(self.reset, ResetMode, "reset")
        if not isinstance(self.reset_delay, (bool, np.bool_)):
            raise ConfigError(f"reset_delay={self.reset_delay!r} is not valid: allowed True, False")
        self.reset_delay = bool(self.reset_delay)


@dataclass
class Population:
    """A group of neurons sharing a neuron model.

    Parameters
    ----------
    name : str
        Unique name (``"input"`` is reserved).
    size : int
        Number of neurons (>= 1).
    params : NeuronParams
        Their parameters.
    """

    name: str
    size: int
    params: NeuronParams = field(default_factory=NeuronParams)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name == INPUT:
            raise ConfigError(
                f"Population.name={self.name!r} is not valid: a non-empty string other than "
                f"{INPUT!r}"
            )
        if not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ConfigError(f"Population {self.name!r}: size={self.size!r} must be >= 1")
        self.size = int(self.size)


@dataclass
class Sparse:
    """Sparse connections: ``weights[k]`` from source ``rows[k]`` to target ``cols[k]``."""

    rows: np.ndarray
    cols: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=np.int64).ravel()
        self.cols = np.asarray(self.cols, dtype=np.int64).ravel()
        self.weights = np.asarray(self.weights).ravel()
        if not len(self.rows) == len(self.cols) == len(self.weights):
            raise ConfigError(
                f"Sparse: rows, cols and weights must have the same length, got "
                f"{len(self.rows)}, {len(self.cols)}, {len(self.weights)}"
            )


@dataclass
class Projection:
    """Synapses from a source (``"input"`` or a population) to a target population.

    Parameters
    ----------
    src : str
        ``"input"`` or the name of a population.
    dst : str
        The name of a population.
    weights : array of shape (n_src, n_dst) or Sparse
        Dense weights (zero entries are no synapse) or sparse connections.
    delay : int
        Synaptic delay in timesteps, >= 0: a spike of step ``t`` arrives in step ``t + d`` (a
        feed-forward projection) or ``t + 1 + d`` (a recurrent one); ``docs/network.md``,
        "Synaptic delays".
    """

    src: str
    dst: str
    weights: object
    delay: int = 0

    def __post_init__(self):
        d = self.delay
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ConfigError(
                f"Projection {self.src}->{self.dst}: delay={d!r} is not valid: allowed an "
                f"integer number of timesteps >= 0"
            )
        self.delay = int(d)

    def dense(self, n_src: int, n_dst: int) -> np.ndarray:
        """Return the weights as a dense ``(n_src, n_dst)`` array (checked)."""
        w = self.weights
        if isinstance(w, Sparse):
            if len(w.rows) and (w.rows.min() < 0 or w.rows.max() >= n_src):
                raise ConfigError(
                    f"Projection {self.src}->{self.dst}: a sparse row index is outside 0..{n_src-1}"
                )
            if len(w.cols) and (w.cols.min() < 0 or w.cols.max() >= n_dst):
                raise ConfigError(
                    f"Projection {self.src}->{self.dst}: a sparse col index is outside 0..{n_dst-1}"
                )
            # Duplicate (row, col) entries add up; sum integers in int64 so that e.g. two int8
            # weights of 100 give 200 (refused by the range check), not a wrapped-around -56.
            dtype = w.weights.dtype
            if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
                dtype = np.int64
            out = np.zeros((n_src, n_dst), dtype=dtype)
            np.add.at(out, (w.rows, w.cols), w.weights)
            return out
        w = np.asarray(w)
        if w.shape != (n_src, n_dst):
            raise ConfigError(
                f"Projection {self.src}->{self.dst}: weights have shape {w.shape}, expected "
                f"(n_src, n_dst) = ({n_src}, {n_dst})"
            )
        return w


@dataclass
class Network:
    """A whole network as the chip runs it.

    Parameters
    ----------
    n_inputs : int
        Number of input channels (AER source addresses ``0 .. n_inputs-1`` from the host).
    populations : list of Population
        Updated in this order every timestep.
    projections : list of Projection
        Connections; see the module docstring for their timing.
    outputs : list of str
        Names of the populations whose spikes are sent to the host.
    """

    n_inputs: int
    populations: list
    projections: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def __post_init__(self):
        if not isinstance(self.n_inputs, (int, np.integer)) or self.n_inputs < 0:
            raise ConfigError(f"Network.n_inputs={self.n_inputs!r} must be an integer >= 0")
        self.n_inputs = int(self.n_inputs)
        names = [p.name for p in self.populations]
        if not names:
            raise ConfigError("Network.populations is empty: at least one population is needed")
        if len(set(names)) != len(names):
            raise ConfigError(f"Network.populations: names must be unique, got {names}")
        for proj in self.projections:
            if proj.src != INPUT and proj.src not in names:
                raise ConfigError(
                    f"Projection src={proj.src!r} is not {INPUT!r} or a population ({names})"
                )
            if proj.dst not in names:
                raise ConfigError(f"Projection dst={proj.dst!r} is not a population ({names})")
            if proj.src == INPUT and self.n_inputs == 0:
                raise ConfigError("a projection comes from 'input' but Network.n_inputs is 0")
        if not self.outputs:
            self.outputs = [names[-1]]
        for o in self.outputs:
            if o not in names:
                raise ConfigError(f"Network.outputs: {o!r} is not a population ({names})")

    # --- addressing -----------------------------------------------------------------------
    def index(self, name: str) -> int:
        """Position of population ``name`` in the update order."""
        for k, p in enumerate(self.populations):
            if p.name == name:
                return k
        raise ConfigError(f"no population named {name!r}")

    def population(self, name: str) -> Population:
        return self.populations[self.index(name)]

    @property
    def n_neurons(self) -> int:
        return sum(p.size for p in self.populations)

    def base(self, name: str) -> int:
        """Global index of the first neuron of population ``name``."""
        k = self.index(name)
        return sum(p.size for p in self.populations[:k])

    def output_indices(self) -> np.ndarray:
        """Global indices of the output populations' neurons, in ``outputs`` order."""
        return np.concatenate(
            [np.arange(self.base(o), self.base(o) + self.population(o).size)
             for o in self.outputs]
        ).astype(np.int64)

    def source_size(self, src: str) -> int:
        return self.n_inputs if src == INPUT else self.population(src).size

    def is_recurrent(self, proj: Projection) -> bool:
        """True when ``proj`` delivers in the next timestep (source not before target)."""
        return proj.src != INPUT and self.index(proj.src) >= self.index(proj.dst)

    def dense_weights(self, proj: Projection) -> np.ndarray:
        return proj.dense(self.source_size(proj.src), self.population(proj.dst).size)

    @property
    def n_synapses(self) -> int:
        """Number of non-zero synapses."""
        return int(sum(np.count_nonzero(self.dense_weights(p)) for p in self.projections))
