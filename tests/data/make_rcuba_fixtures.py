"""Regenerate the recurrent CubaLIF fixtures of ``tests/test_rcuba_quantization.py`` (issue #14).

Each fixture is a small snnTorch network, ``nn.Linear(32, H) -> snn.RSynaptic(all_to_all=True,
linear_features=H) -> nn.Linear(H, 10) -> snn.Synaptic`` (or a second ``RSynaptic``), built with
a fixed seed, with its weights rescaled so that the largest ``|weight|`` of every ``nn.Linear``
(the recurrent ones included) is ``k`` times the threshold of the layer it feeds, ``k`` = 5, 10
or 15 (what surrogate-gradient training leaves), and its biases rescaled to at most
``BIAS_FRAC`` times that threshold.  It is exported with snnTorch 1.0.0's own exporter
(``snntorch.export_to_nir``) to ``tests/data/nir/snntorch_rcuba_<name>.nir``.

NIR cannot say how a neuron resets, nor whether the reset is delayed by a step, so every ``.nir``
has a sidecar ``snntorch_rcuba_<name>.json`` with the same stem, which
``spikeforge.host.nir_import.from_nir(path)`` reads by itself (``read_nir``): ``dt`` (1e-4,
snnTorch's), ``reset`` and ``reset_delay`` (every layer of a fixture has the same ones; the name
says them too: ``..._subtract_delay`` is ``reset="subtract", reset_delay=True``, ``..._nodelay``
is ``reset_delay=False``).  The sidecar also has a ``"snntorch"`` entry (ignored by the
importer) from which :func:`module_from_fixture` rebuilds the snnTorch module with the weights
of the ``.nir`` file, for the float golden model vs snnTorch check of the tests.

**snnTorch 1.0.0's ``RSynaptic`` with ``reset_delay=False`` is broken**: its ``forward`` applies
the immediate reset to the local names ``spk`` and ``mem`` (the arguments) instead of
``self.spk`` / ``self.mem``, so with ``init_hidden=True`` it raises ``TypeError`` (``spk`` is
None; the exporter's trace too) and with explicit states the reset is computed and thrown away
(the layer behaves as ``reset_delay=True``).  The ``nodelay`` fixtures therefore use
:class:`RSynapticImmediate`, an ``RSynaptic`` whose immediate reset is applied to the module's
state exactly as ``RLeaky`` and ``Synaptic`` do (and as ``docs/neuron.md`` step 6 says).  The
exporter only reads parameters, so the ``.nir`` files are what ``RSynaptic`` itself would export.

    python tests/data/make_rcuba_fixtures.py          # write the fixtures, print the check

Versions used for the committed files: snntorch 1.0.0, torch 2.13.0 (CPU), nir 1.0.8,
nirtorch 2.6.  The script also checks each fixture: the float golden model of the imported graph
against the snnTorch module on a random raster (``CHECK_*`` below), printing the share of equal
spike entries.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nir")
N_IN, N_OUT = 32, 10
BIAS_FRAC = 0.05  # largest |bias| / threshold of the layer fed (biases are a constant drive)
DT = 1e-4  # snntorch.export_to_nir's

# name: (seed, k, hidden size, output kind, reset, reset_delay, layer parameters)
# layer parameters: (threshold, beta, alpha) of the hidden and of the output layer
FIXTURES = {
    "w05_subtract_delay": (101, 5, 48, "Synaptic", "subtract", True,
                           ((1.0, 0.9, 0.8), (1.0, 0.85, 0.7))),
    "w10_subtract_delay": (102, 10, 64, "Synaptic", "subtract", True,
                           ((0.5, 0.92, 0.75), (1.0, 0.9, 0.6))),
    "w15_subtract_delay": (103, 15, 64, "RSynaptic", "subtract", True,
                           ((2.0, 0.95, 0.85), (1.5, 0.9, 0.8))),
    "w10_zero_delay": (104, 10, 48, "Synaptic", "zero", True,
                       ((1.0, 0.9, 0.8), (0.8, 0.85, 0.75))),
    "w10_subtract_nodelay": (105, 10, 64, "Synaptic", "subtract", False,
                             ((1.5, 0.93, 0.7), (1.0, 0.88, 0.8))),
    "w10_zero_nodelay": (106, 10, 48, "RSynaptic", "zero", False,
                         ((1.0, 0.9, 0.85), (1.0, 0.9, 0.7))),
    "w15_zero_nodelay": (107, 15, 64, "Synaptic", "zero", False,
                         ((0.75, 0.95, 0.8), (1.25, 0.9, 0.75))),
}

# the float golden model vs snnTorch check: input rate, steps, samples, seed
CHECK_RATE, CHECK_T, CHECK_BATCH, CHECK_SEED = 0.15, 50, 64, 2024


def path(name, ext=".nir"):
    return os.path.join(HERE, f"snntorch_rcuba_{name}{ext}")


def _rsynaptic_immediate():
    import snntorch as snn

    class RSynapticImmediate(snn.RSynaptic):
        """``snn.RSynaptic`` with ``reset_delay=False`` applied to the module's state (see the
        module docstring: snnTorch 1.0.0 applies it to local names and loses it)."""

        def forward(self, input_, spk=None, syn=None, mem=None):
            delay = self.reset_delay
            self.reset_delay = True  # the parent's broken branch is skipped
            try:
                super().forward(input_, spk, syn, mem)
            finally:
                self.reset_delay = delay
            if not delay:  # as RLeaky.forward and Synaptic.forward
                do_reset = self.spk / self.graded_spikes_factor - self.reset
                if self.reset_mechanism_val == 0:
                    self.mem = self.mem - do_reset * self.threshold
                elif self.reset_mechanism_val == 1:
                    self.mem = self.mem - do_reset * self.mem
            if self.output or not self.init_hidden:
                return self.spk, self.syn, self.mem
            return self.spk

    return RSynapticImmediate


def _layer(kind, n, params, reset, delay, output):
    import snntorch as snn
    import torch

    thr, beta, alpha = params
    common = dict(alpha=torch.full((n,), alpha), beta=torch.full((n,), beta),
                  threshold=torch.full((n,), thr), init_hidden=True, reset_mechanism=reset,
                  reset_delay=delay, output=output)
    if kind == "Synaptic":
        return snn.Synaptic(**common)
    cls = snn.RSynaptic if delay else _rsynaptic_immediate()
    return cls(all_to_all=True, linear_features=n, **common)


def build(name):
    """The snnTorch module of fixture ``name`` (seeded; weights rescaled as described)."""
    import torch

    seed, k, hidden, out_kind, reset, delay, (p_h, p_o) = FIXTURES[name]
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_IN, hidden),
        _layer("RSynaptic", hidden, p_h, reset, delay, False),
        torch.nn.Linear(hidden, N_OUT),
        _layer(out_kind, N_OUT, p_o, reset, delay, True),
    )
    fed = [(net[0], p_h[0]), (net[1].recurrent, p_h[0]), (net[2], p_o[0])]
    if out_kind == "RSynaptic":
        fed.append((net[3].recurrent, p_o[0]))
    with torch.no_grad():
        for lin, thr in fed:
            lin.weight.mul_(k * thr / lin.weight.abs().max())
            lin.bias.mul_(BIAS_FRAC * thr / lin.bias.abs().max())
    return net


def _spec(name):
    seed, k, hidden, out_kind, reset, delay, (p_h, p_o) = FIXTURES[name]
    return {"seed": seed, "weight_over_threshold": k, "n_inputs": N_IN, "hidden": hidden,
            "n_outputs": N_OUT, "output_kind": out_kind, "bias_frac": BIAS_FRAC,
            "layers": [dict(zip(("threshold", "beta", "alpha"), p, strict=True))
                       for p in (p_h, p_o)]}


def module_from_fixture(name):
    """The snnTorch module of fixture ``name`` with the weights and biases of its ``.nir`` file
    (architecture and neuron parameters from the sidecar JSON), independent of torch's RNG."""
    import nir
    import torch

    with open(path(name, ".json")) as f:
        meta = json.load(f)
    spec = meta["snntorch"]
    p_h, p_o = ((lay["threshold"], lay["beta"], lay["alpha"]) for lay in spec["layers"])
    reset, delay = meta["reset"], meta["reset_delay"]
    net = torch.nn.Sequential(
        torch.nn.Linear(spec["n_inputs"], spec["hidden"]),
        _layer("RSynaptic", spec["hidden"], p_h, reset, delay, False),
        torch.nn.Linear(spec["hidden"], spec["n_outputs"]),
        _layer(spec["output_kind"], spec["n_outputs"], p_o, reset, delay, True),
    )
    graph = nir.read(path(name))
    # snnTorch 1.0.0 (nirtorch 2.6) writes an RSynaptic as flat nodes "<module>.lif" and
    # "<module>.w_rec", not as a nested NIRGraph
    pairs = [(net[0], graph.nodes["0"]), (net[1].recurrent, graph.nodes["1.w_rec"]),
             (net[2], graph.nodes["2"])]
    if spec["output_kind"] == "RSynaptic":
        pairs.append((net[3].recurrent, graph.nodes["3.w_rec"]))
    with torch.no_grad():
        for lin, node in pairs:
            lin.weight.copy_(torch.as_tensor(np.asarray(node.weight, dtype=np.float32)))
            lin.bias.copy_(torch.as_tensor(np.asarray(node.bias, dtype=np.float32)))
    return net


def run_snntorch(net, raster):
    """Spikes of every neuron layer of ``net`` (hidden, then output) for ``raster`` (T, B, n):
    ``(T, B, hidden + n_outputs)`` bool, in the order of the golden model's populations."""
    import torch
    from snntorch import utils

    utils.reset(net)
    out = []
    with torch.no_grad():
        for x in raster:
            h = net[1](net[0](torch.as_tensor(x, dtype=torch.float32)))
            o = net[3](net[2](h))[0]
            out.append(torch.cat([h, o], dim=1).numpy())
    return np.array(out).astype(bool)


def check_raster(batch=CHECK_BATCH, n_inputs=N_IN):
    rng = np.random.default_rng(CHECK_SEED)
    return (rng.random((CHECK_T, batch, n_inputs)) < CHECK_RATE).astype(np.float32)


def float_match(name, batch=CHECK_BATCH):
    """Share of (step, sample, neuron) spike entries on which the float golden model of the
    imported fixture (``from_nir(path)``, settings from the sidecar) equals the snnTorch module
    (:func:`module_from_fixture`) on :func:`check_raster`; and both spike arrays."""
    from spikeforge.host.nir_import import from_nir
    from spikeforge.sim.golden import GoldenChip

    raster = check_raster(batch)
    ref = run_snntorch(module_from_fixture(name), raster)
    net = from_nir(path(name))
    ours = GoldenChip(net, "float", batch=raster.shape[1]).run(raster)["spikes"].astype(bool)
    return float(np.mean(ours == ref)), ours, ref


def write(name):
    import nir
    import torch
    from snntorch.export_nir import export_to_nir

    net = build(name)
    net.eval()
    with warnings.catch_warnings():  # nirtorch's own deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        graph = export_to_nir(net, torch.zeros(N_IN))
    graph.edges = sorted(graph.edges)  # nirtorch's order changes from run to run (a set)
    nir.write(path(name), graph, compression=None)
    _, _, _, _, reset, delay, _ = FIXTURES[name]
    with open(path(name, ".json"), "w") as f:
        json.dump({"dt": DT, "reset": reset, "reset_delay": delay, "snntorch": _spec(name)}, f,
                  indent=1)
        f.write("\n")


def main():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))))
    os.makedirs(HERE, exist_ok=True)
    for name in FIXTURES:
        write(name)
        match, ours, ref = float_match(name)
        print(f"{path(name)}: {os.path.getsize(path(name))} bytes; float golden vs snnTorch: "
              f"{100 * match:.3f} % of {ref.size} spike entries equal (snnTorch rate "
              f"{ref.mean():.3f})")


if __name__ == "__main__":
    main()
