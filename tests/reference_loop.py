"""A deliberately plain, per-neuron, pure-Python reference of the spikeforge chip.

Written from ``docs/neuron.md`` (one neuron's timestep) and the routing rules of
``spikeforge/network.py`` (when a spike arrives), *not* from ``sim/golden.py``: no NumPy
arithmetic, no vectorisation, one Python ``int`` per quantity and one loop iteration per neuron
and per synapse.
The tests compare the golden model against it; two independent readings of the spec that agree
bit for bit are the evidence that the golden model implements the spec.

Only integer arithmetic is modelled here (the float mode is checked against snnTorch itself).
"""

from __future__ import annotations

from spikeforge.sim.network import INPUT, Network, NeuronParams, Sparse
from spikeforge.spec import DEFAULT_FORMAT, Format, LeakMode, NeuronModel, ResetMode

__all__ = [
    "ref_sat",
    "ref_decay",
    "ref_neuron_step",
    "ReferenceChip",
]


def ref_sat(x: int, fmt: Format = DEFAULT_FORMAT) -> int:
    """``sat(x)``: clamp to ``-2**(state_bits-1) .. 2**(state_bits-1) - 1``."""
    lo = -(2 ** (fmt.state_bits - 1))
    hi = 2 ** (fmt.state_bits - 1) - 1
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def ref_decay(x: int, code: int, leak: LeakMode, fmt: Format = DEFAULT_FORMAT) -> int:
    """``decay(x)`` of docs/neuron.md, with Python's exact integers."""
    if leak == LeakMode.NONE:
        return x
    if leak == LeakMode.MULT:
        p = x * code
        # round toward zero: divide the magnitude, then put the sign back
        magnitude = abs(p) // (2**fmt.decay_frac_bits)
        return magnitude if p >= 0 else -magnitude
    # shift: x - floor(x / 2**k)  (Python's // is floor division, like an arithmetic shift)
    return x - x // (2**code)


def _as_int(value) -> int:
    f = float(value)
    n = int(round(f))
    assert n == f, f"reference loop: {value!r} is not an integer code"
    return n


def _neuron_value(value, k):
    """Parameter of neuron ``k``: ``value`` is a scalar or has one entry per neuron."""
    try:
        return value[k]
    except (TypeError, IndexError):
        return value


def ref_neuron_step(v: int, i: int, acc: int, p: dict, fmt: Format = DEFAULT_FORMAT):
    """One neuron, one timestep: steps 1-7 of docs/neuron.md.

    ``p`` has keys ``model, leak, reset, reset_delay`` (enums / bool) and ``beta, alpha,
    threshold, bias`` (Python ints for this neuron).  Returns ``(v, i, spike)``.
    """
    thr = p["threshold"]
    # 1. the reset owed by the previous timestep
    r = 1 if v > thr else 0
    # 2. the input of this timestep
    x = acc + p["bias"]
    # 3. synaptic current
    if p["model"] == NeuronModel.CUBA:
        i = ref_sat(ref_decay(i, p["alpha"], p["leak"], fmt) + x, fmt)
        cur = i
    else:
        cur = x
    # 4. state function
    dv = ref_decay(v, p["beta"], p["leak"], fmt)
    if p["reset"] == ResetMode.SUBTRACT:
        u = dv + cur - r * thr
    elif p["reset"] == ResetMode.ZERO:
        if p["model"] == NeuronModel.LIF:
            u = (0 if r else dv) + cur
        else:
            u = 0 if r else dv + cur
    else:
        u = dv + cur
    u = ref_sat(u, fmt)
    # 5. strict threshold
    s = 1 if u > thr else 0
    # 6. the immediate reset
    if not p["reset_delay"]:
        if p["reset"] == ResetMode.SUBTRACT:
            u = ref_sat(u - (s - r) * thr, fmt)
        elif p["reset"] == ResetMode.ZERO:
            u = ref_sat(u - (s - r) * u, fmt)
    # 7.
    return u, i, s


def _neuron_params(params: NeuronParams, k: int) -> dict:
    return {
        "model": params.model,
        "leak": params.leak,
        "reset": params.reset,
        "reset_delay": params.reset_delay,
        "beta": _as_int(_neuron_value(params.beta, k)),
        "alpha": _as_int(_neuron_value(params.alpha, k)),
        "threshold": _as_int(_neuron_value(params.threshold, k)),
        "bias": _as_int(_neuron_value(params.bias, k)),
    }


def _synapses(weights, n_src, n_dst):
    """List of ``(src, dst, w)`` with ``w != 0``, one entry per stored synapse."""
    out = []
    if isinstance(weights, Sparse):
        for r, c, w in zip(weights.rows, weights.cols, weights.weights, strict=True):
            w = _as_int(w)
            if w:
                out.append((int(r), int(c), w))
        return out
    for r in range(n_src):
        for c in range(n_dst):
            w = _as_int(weights[r][c])
            if w:
                out.append((r, c, w))
    return out


class ReferenceChip:
    """The chip, one Python int per neuron, batch 1, integer arithmetic.

    Event-driven: every spike walks the synapse list of its neuron and adds the weight to the
    target neuron's accumulator, either for this timestep (the target population updates later
    in the order) or for the next one (recurrent: the target is the same or an earlier
    population).
    """

    def __init__(self, net: Network, fmt: Format = DEFAULT_FORMAT):
        self.net, self.fmt = net, fmt
        self.order = {p.name: k for k, p in enumerate(net.populations)}
        # per population: list of per-neuron parameter dicts
        self.params = {
            p.name: [_neuron_params(p.params, k) for k in range(p.size)] for p in net.populations
        }
        # fan-out lists: (src name, src neuron) -> list of (dst name, dst neuron, w, recurrent)
        self.fanout = {}
        for proj in net.projections:
            n_src = net.n_inputs if proj.src == INPUT else net.population(proj.src).size
            n_dst = net.population(proj.dst).size
            recurrent = proj.src != INPUT and self.order[proj.src] >= self.order[proj.dst]
            for r, c, w in _synapses(proj.weights, n_src, n_dst):
                self.fanout.setdefault((proj.src, r), []).append((proj.dst, c, w, recurrent))
        self.reset()

    def reset(self):
        self.v = {p.name: [0] * p.size for p in self.net.populations}
        self.i = {p.name: [0] * p.size for p in self.net.populations}
        self.acc = {p.name: [0] * p.size for p in self.net.populations}
        self.pending = {p.name: [0] * p.size for p in self.net.populations}

    def _deliver(self, src, n):
        for dst, c, w, recurrent in self.fanout.get((src, n), ()):
            if recurrent:
                self.pending[dst][c] += w
            else:
                self.acc[dst][c] += w

    def step(self, input_counts):
        """One timestep; ``input_counts[c]`` events on input channel ``c``.

        Returns ``(spikes, v)``: dicts from population name to lists of 0/1 and of ints.
        """
        # recurrent spikes of the previous timestep arrive now
        for name, pend in self.pending.items():
            for k in range(len(pend)):
                self.acc[name][k] += pend[k]
                pend[k] = 0
        # host input events of this timestep, before any population updates
        for c in range(self.net.n_inputs):
            for _ in range(int(input_counts[c])):
                self._deliver(INPUT, c)
        spikes = {}
        for pop in self.net.populations:
            name = pop.name
            out = []
            for k in range(pop.size):
                acc = self.acc[name][k]
                bound = 2 ** (self.fmt.acc_bits - 1)
                assert -bound <= acc + self.params[name][k]["bias"] < bound, "acc overflow"
                v, i, s = ref_neuron_step(
                    self.v[name][k], self.i[name][k], acc, self.params[name][k], self.fmt
                )
                self.v[name][k], self.i[name][k] = v, i
                self.acc[name][k] = 0
                out.append(s)
            spikes[name] = out
            for k, s in enumerate(out):
                if s:
                    self._deliver(name, k)
        return spikes, {name: list(vs) for name, vs in self.v.items()}

    def run(self, raster):
        """Run a ``(T, n_inputs)`` raster; return ``(spikes, v)``, ``T`` lists in global order."""
        all_s, all_v = [], []
        for row in raster:
            s, v = self.step(row)
            all_s.append([x for p in self.net.populations for x in s[p.name]])
            all_v.append([x for p in self.net.populations for x in v[p.name]])
        return all_s, all_v
