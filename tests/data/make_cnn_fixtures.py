"""Regenerate the CNNs exported by Sinabs and snnTorch used by ``tests/test_cnn_import.py`` and
``benchmarks/conv_agreement.py`` (issue #15).

Each network is built in its framework with a fixed seed and random weights, exported with the
framework's own exporter (``sinabs.to_nir``, ``snntorch.export_to_nir``) and written to
``tests/data/nir/<name>.nir``.  Beside each graph:

* ``<name>.json``: the settings NIR cannot carry (``dt``, ``reset``, ``reset_delay``), which
  ``spikeforge.host.nir_import.from_nir(path)`` reads by itself (``read_nir``);
* ``<name>_reference.npz``: the framework's own run of the network (in float64) on a random
  event raster: ``raster`` and ``spikes`` (``np.packbits`` along the last axis, shapes in
  ``raster_shape`` / ``spikes_shape``), ``spikes`` being every spiking layer's spikes per step,
  concatenated in the graph's order (the order of ``from_nir``'s populations), ``layers`` the
  layers' names in that order and ``sizes`` their sizes.  The tests compare the float golden
  model with it without the framework installed.

Graphs:

* ``sinabs_nmnist_cnn``: the N-MNIST CNN of the NIR paper's Sinabs export (the NIR repository's
  ``paper/02_cnn/mnist_sinabs_to_nir.py``): input 2x34x34 -> Conv2d 2->16 5x5 stride 2
  padding 1 -> IAF -> Conv2d 16->16 3x3 padding 1 -> IAF -> SumPool2d 2 -> Conv2d 16->8 3x3
  padding 1 -> IAF -> SumPool2d 2 -> Flatten -> Linear 128->256 -> IAF -> Linear 256->10 -> IAF
  (no biases, as there), 16x16x16 + 16x16x16 + 8x8x8 + 256 + 10 = 8,970 IAF neurons.  Random
  normal weights, with a mean and spread per layer (``NMNIST_WEIGHTS``) chosen so that every
  layer spikes at a moderate rate on random events (0.1 per channel per step).
* ``sinabs_cnn_lif``: a smaller Sinabs CNN with biases, a LIF layer and a pool before the
  Flatten: 2x16x16 -> Conv2d 2->8 3x3 padding 1 (bias) -> LIF (tau_mem 20 steps) -> SumPool2d 2
  -> Conv2d 8->8 3x3 stride 2 padding 1 (bias) -> IAF -> SumPool2d 2 -> Flatten -> Linear
  32->10 (bias) -> IAF.
* ``snntorch_cnn``: the same N-MNIST input in snnTorch (its exporter maps ``nn.Conv2d``,
  ``nn.AvgPool2d``, ``nn.Flatten``, ``nn.Linear`` and ``snn.Leaky``; it has no sum pooling):
  2x34x34 -> Conv2d 2->8 5x5 stride 2 padding 1 (bias) -> Leaky (beta 0.9) -> AvgPool2d 2 ->
  Conv2d 8->8 3x3 padding 1 (bias) -> Leaky (beta 0.9) -> AvgPool2d 2 -> Flatten -> Linear
  128->10 (bias) -> Leaky (beta 0.8).

**Sinabs conventions** (what the settings and the models here follow): time is counted in
steps (``dt = 1``: an IAF's ``r = 1``), a layer built with ``spike_fn=SingleSpike`` fires at most
once per step (the chip's spikes are bits; Sinabs' default ``MultiSpike`` may send several,
which NIR does not say either), and an IAF/LIF subtracts the threshold right after a spike.
Sinabs fires when ``v >= threshold``, NIR and the chip when ``v > threshold``: with continuous
random weights the two differ only on an exact tie, which the float64 reference never met.

*Which reset setting gives Sinabs' spikes.*  A Sinabs IAF whose membrane is still above the
threshold after its one subtraction (the input took it past twice the threshold) fires again in
the next step whatever the input.  The chip's immediate subtract reset (``reset_delay=False``,
``docs/neuron.md`` steps 1 and 6, snnTorch's code) subtracts that owed reset again in the next
step and fires only if the membrane stays above the threshold after it: a different spike
train (on ``sinabs_nmnist_cnn`` 97.2 % of spike entries equal, its layers 88.6-99.9 %).  The
chip's *delayed* subtract reset (``reset_delay=True``) stores the membrane before the
subtraction and subtracts at the start of the next step, so its membrane after step ``t``'s
input is Sinabs' exactly and its spikes are Sinabs' spikes, entry for entry, for an IAF.  For a
LIF (Sinabs decays the reset membrane, the delayed chip reset subtracts an undecayed threshold)
the immediate reset is the exact one as long as the membrane stays below twice the threshold,
and Sinabs' decay is ``exp(-1/tau)`` with input gain ``1 - exp(-1/tau)`` (``norm_input``), which
NIR's ``1 - dt/tau`` and ``dt/tau`` give with ``dt = tau (1 - exp(-1/tau))`` (one ``tau`` per
graph here).  The sidecars say so: ``sinabs_nmnist_cnn.json`` is ``dt=1, reset="subtract",
reset_delay=True``; ``sinabs_cnn_lif.json`` is that with the LIF node ``"1"`` immediate and
``dt = 20 (1 - e^(-1/20))``.  The NIR paper's export sets ``min_v_mem=-1`` (the membrane
clipped from below); NIR's ``IF`` cannot carry that and the chip has no floor, so the models here
keep Sinabs' default (no floor).

**snnTorch conventions**: ``dt = 1e-4`` (its exporter writes ``tau = dt / (1 - beta)``), reset
by subtraction, delayed by a step (``Settings.snntorch()``).

Fixes applied to the exported graphs before ``nir.write`` (the values are the exporter's):
Sinabs 3.1.3 and snnTorch 1.0.0 leave a ``Conv2d``'s ``input_shape`` and a ``Flatten``'s
``input_type`` as None and scalar neuron parameters as 0-d arrays, which ``nir.write`` cannot
store; they are set to the shapes the graph implies and to 1-element arrays.

Versions used for the committed files: sinabs 3.1.3 (installed with ``--no-deps``: it declares
``nir<=1.0.4`` and ``samna``, which the project's ``nir>=1.0.8`` excludes; its ``to_nir`` runs
unchanged with nir 1.0.8 and nirtorch 2.6), snntorch 1.0.0, torch 2.13.0 (CPU), nir 1.0.8.

Usage::

    python tests/data/make_cnn_fixtures.py            # writes the files into tests/data/nir
    python tests/data/make_cnn_fixtures.py --rates    # only print each layer's spike rate
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nir")
#: Sinabs' IAF (SingleSpike, subtract) fires exactly as the chip's subtract reset *delayed* by a
#: step (see the module docstring)
SINABS = {"dt": 1.0, "reset": "subtract", "reset_delay": True,
          "note": "sinabs IAF (SingleSpike, MembraneSubtract) = chip reset_delay=True"}
#: sinabs_cnn_lif: the LIF layer (NIR node "1", tau_mem = 20 steps) resets at once; dt such that
#: NIR's 1 - dt/tau is Sinabs' exp(-1/tau) and its gain dt/tau Sinabs' 1 - exp(-1/tau)
LIF_TAU = 20.0
SINABS_LIF = {"dt": LIF_TAU * (1 - np.exp(-1 / LIF_TAU)), "reset": "subtract",
              "reset_delay": {"1": False}, "default_reset": "subtract",
              "default_reset_delay": True,
              "note": "dt = tau (1 - exp(-1/tau)), tau = 20: Sinabs' LIF decay exp(-1/tau); "
                      "the LIF resets at once, the IAFs as reset_delay=True"}
SNNTORCH = {"dt": 1e-4, "reset": "subtract", "reset_delay": True}

#: the reference run: input events per channel per step, steps, samples, seed
REF_RATE, REF_T, REF_BATCH, REF_SEED = 0.1, 50, 4, 15

#: sinabs_nmnist_cnn: (mean, standard deviation) of each layer's normal weights
NMNIST_WEIGHTS = {"conv1": (0.02, 0.15), "conv2": (0.005, 0.06), "conv3": (0.0, 0.04),
                  "fc1": (0.0, 0.07), "fc2": (0.0, 0.1)}
#: sinabs_cnn_lif and snntorch_cnn: layer index: (mean, standard deviation, bias mean) of the
#: normal weights and biases (bias standard deviation = |bias mean|)
LIF_WEIGHTS = {0: (1.2, 1.0, 0.02), 3: (0.005, 0.05, 0.01), 7: (0.0, 0.2, 0.0)}
SNNTORCH_WEIGHTS = {0: (0.0, 0.25, 0.01), 3: (0.03, 0.2, 0.0), 7: (0.0, 0.3, 0.0)}


def _normal(rng, shape, mean, std):
    import torch

    return torch.tensor(rng.normal(mean, std, shape), dtype=torch.float32)


# --- the models --------------------------------------------------------------------------------
def sinabs_nmnist():
    import sinabs.layers as sl
    import torch
    from sinabs.activation import SingleSpike
    from torch import nn

    def iaf():
        return sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike)

    rng = np.random.default_rng(1501)
    model = nn.Sequential(
        nn.Conv2d(2, 16, 5, stride=2, padding=1, bias=False), iaf(),
        nn.Conv2d(16, 16, 3, stride=1, padding=1, bias=False), iaf(),
        sl.SumPool2d(2),
        nn.Conv2d(16, 8, 3, stride=1, padding=1, bias=False), iaf(),
        sl.SumPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 256, bias=False), iaf(),
        nn.Linear(256, 10, bias=False), iaf(),
    )
    with torch.no_grad():
        for idx, key in zip((0, 2, 5, 9, 11), NMNIST_WEIGHTS, strict=True):
            layer = model[idx]
            layer.weight.copy_(_normal(rng, tuple(layer.weight.shape), *NMNIST_WEIGHTS[key]))
    return model, (2, 34, 34)


def sinabs_lif():
    import sinabs.layers as sl
    import torch
    from sinabs.activation import SingleSpike
    from torch import nn

    rng = np.random.default_rng(1502)
    model = nn.Sequential(
        # tau and threshold per neuron: a scalar tau exports as a 1-element LIF, which nir's
        # type check refuses after an 8x16x16 Conv2d
        nn.Conv2d(2, 8, 3, padding=1),
        sl.LIFSqueeze(tau_mem=torch.full((8, 16, 16), LIF_TAU),
                      spike_threshold=torch.ones(8, 16, 16), batch_size=1, spike_fn=SingleSpike),
        sl.SumPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), sl.IAFSqueeze(batch_size=1,
                                                                spike_fn=SingleSpike),
        sl.SumPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10), sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike),
    )
    with torch.no_grad():
        for idx, (mean, std, bias) in LIF_WEIGHTS.items():
            layer = model[idx]
            layer.weight.copy_(_normal(rng, tuple(layer.weight.shape), mean, std))
            layer.bias.copy_(_normal(rng, tuple(layer.bias.shape), bias, bias))
    return model, (2, 16, 16)


def snntorch_cnn():
    import snntorch as snn
    import torch
    from torch import nn

    def leaky(beta, shape):
        # parameters of the layer's shape: the exporter writes them as they are, and NIR wants
        # every neuron parameter of a node in the node's shape (a scalar beta exports 0-d
        # arrays, which nir's type inference refuses after a Conv2d)
        return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape),
                         init_hidden=True)

    rng = np.random.default_rng(1503)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 5, stride=2, padding=1), leaky(0.9, (8, 16, 16)),
        nn.AvgPool2d((2, 2), (2, 2)),
        nn.Conv2d(8, 8, 3, padding=1), leaky(0.9, (8, 8, 8)),
        nn.AvgPool2d((2, 2), (2, 2)),
        nn.Flatten(),
        nn.Linear(128, 10), leaky(0.8, (10,)),
    )
    with torch.no_grad():
        for idx, (mean, std, bias) in SNNTORCH_WEIGHTS.items():
            layer = model[idx]
            layer.weight.copy_(_normal(rng, tuple(layer.weight.shape), mean, std))
            layer.bias.copy_(_normal(rng, tuple(layer.bias.shape), bias, abs(bias)))
    return model, (2, 34, 34)


#: name: (builder, framework, settings)
FIXTURES = {
    "sinabs_nmnist_cnn": (sinabs_nmnist, "sinabs", SINABS),
    "sinabs_cnn_lif": (sinabs_lif, "sinabs", SINABS_LIF),
    "snntorch_cnn": (snntorch_cnn, "snntorch", SNNTORCH),
}


# --- running a model step by step ----------------------------------------------------------------
def _is_spiking(layer):
    name = type(layer).__name__
    return name in ("IAFSqueeze", "LIFSqueeze", "Leaky")


def _reset(model):
    for layer in model:
        if hasattr(layer, "reset_states"):
            layer.reset_states()
        if type(layer).__name__ == "Leaky":
            layer.reset_hidden()


def reference_run(model, framework, in_shape, raster):
    """Every spiking layer's spikes ``(T, batch, n)``, concatenated in the model's order: the
    framework's own run in float64, one step at a time (Sinabs' squeeze layers see a batch of
    ``batch * 1`` per call; their state carries over between calls)."""
    import torch

    t_steps, batch, _ = raster.shape
    model = model.double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # states the layers create on their first call
    for layer in model:
        if hasattr(layer, "batch_size"):
            layer.batch_size = batch
    _reset(model)
    out = []
    with torch.no_grad():
        for t in range(t_steps):
            x = torch.tensor(raster[t].reshape(batch, *in_shape), dtype=torch.float64)
            step = []
            for layer in model:
                x = layer(x)
                if _is_spiking(layer):
                    x = x.double()  # Sinabs' spike functions return float32 0/1
                    step.append(x.reshape(batch, -1).numpy().copy())
            out.append(np.concatenate(step, axis=1))
    torch.set_default_dtype(default)
    model.float()
    for layer in model:
        if hasattr(layer, "batch_size"):
            layer.batch_size = 1
    _reset(model)
    spikes = np.stack(out)
    if spikes.max() > 1:
        raise AssertionError("a layer fired more than once in a step")
    return spikes.astype(bool)


def layer_names(model):
    return [str(i) for i, layer in enumerate(model) if _is_spiking(layer)]


def layer_sizes(model, in_shape):
    import torch

    sizes = []
    x = torch.zeros(1, *in_shape)
    with torch.no_grad():
        for layer in model:
            if _is_spiking(layer):
                sizes.append(int(np.prod(x.shape[1:])))
                continue
            x = layer(x)
    return sizes


# --- export ------------------------------------------------------------------------------------
def _fix(graph, in_shape):
    """Make the exported graph writable (see the module docstring): conv input shapes, Flatten
    input types (propagated through the graph's chain) and 0-d parameters."""
    import nir
    import torch

    for node in graph.nodes.values():
        for attr, value in list(vars(node).items()):
            if isinstance(value, torch.Tensor):
                value = value.detach().numpy()
                setattr(node, attr, value)
            if isinstance(value, np.ndarray) and value.ndim == 0:
                setattr(node, attr, value.reshape(1))
    order = ["input"]
    while order[-1] != "output":
        order.append(next(d for s, d in graph.edges if s == order[-1]))
    shape = tuple(in_shape)
    for name in order[1:-1]:
        node = graph.nodes[name]
        if isinstance(node, nir.Conv2d):
            node.input_shape = shape[1:]
            x = torch.nn.functional.conv2d(
                torch.zeros(1, *shape), torch.tensor(np.asarray(node.weight)),
                stride=tuple(node.stride), padding=tuple(node.padding),
                dilation=tuple(node.dilation), groups=int(node.groups))
            shape = tuple(x.shape[1:])
        elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            k, s = tuple(node.kernel_size), tuple(node.stride)
            shape = (shape[0], *((n - kk) // ss + 1 for n, kk, ss in zip(shape[1:], k, s,
                                                                        strict=True)))
        elif isinstance(node, nir.Flatten):
            node.input_type = {"input": np.array(shape)}
            shape = (int(np.prod(shape)),)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            shape = (np.asarray(node.weight).shape[0],)
    return graph


def export(model, framework, in_shape):
    import torch

    if framework == "sinabs":
        import sinabs

        graph = sinabs.to_nir(model, torch.zeros(1, *in_shape))
    else:
        from snntorch.export_nir import export_to_nir

        graph = export_to_nir(model, torch.zeros(1, *in_shape), ignore_dims=[0])
    _reset(model)  # the export ran the model
    return _fix(graph, in_shape)


def reference_raster(n_inputs, seed=REF_SEED, rate=REF_RATE, steps=REF_T, batch=REF_BATCH):
    rng = np.random.default_rng(seed)
    return rng.random((steps, batch, n_inputs)) < rate


def main(argv=None):
    import nir
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="directory (default: tests/data/nir)")
    ap.add_argument("--rates", action="store_true", help="print spike rates only, write nothing")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for name, (build, framework, settings) in FIXTURES.items():
        model, in_shape = build()
        raster = reference_raster(int(np.prod(in_shape)))
        spikes = reference_run(model, framework, in_shape, raster)
        names, sizes = layer_names(model), layer_sizes(model, in_shape)
        edges = np.cumsum([0, *sizes])
        rates = [float(spikes[..., a:b].mean()) for a, b in zip(edges, edges[1:], strict=False)]
        print(f"{name}: {sum(sizes)} neurons; spikes per neuron per step "
              + ", ".join(f"{n} ({s}) {r:.3f}" for n, s, r in zip(names, sizes, rates,
                                                                   strict=True)))
        if args.rates:
            continue
        graph = export(model, framework, in_shape)
        path = os.path.join(args.out, name + ".nir")
        nir.write(path, graph)
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(settings, f, indent=1)
            f.write("\n")
        np.savez_compressed(
            os.path.join(args.out, name + "_reference.npz"),
            raster=np.packbits(raster, axis=-1), raster_shape=raster.shape,
            spikes=np.packbits(spikes, axis=-1), spikes_shape=spikes.shape,
            layers=np.array(names), sizes=np.array(sizes), rate=REF_RATE, seed=REF_SEED)
        print(f"  {path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
