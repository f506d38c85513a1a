"""Regenerate the NIR fixtures of ``tests/test_nir_frameworks.py``.

Each framework builds a tiny network (4 inputs) with a fixed seed and exports it with its own
NIR exporter; the graph is written to ``tests/data/nir/<framework>_<name>.nir``.  Frameworks that
are not installed are skipped (the tests never import them).  Versions used for the committed
files: sinabs 2.0.3, norse 1.1.0, rockpool 3.1.0 (torch 2.13.0, nir 1.0.8, nirtorch 2.6).

    python tests/data/make_nir_fixtures.py
"""

from __future__ import annotations

import os
import sys

import nir
import numpy as np
import torch

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nir")
N_IN = 4


def _no_scalars(graph):
    """Parameters as NumPy arrays, 0-d ones as 1-element arrays: ``nir.write`` (h5py) cannot
    store a 0-d array, and NIR broadcasts a 1-element parameter like a scalar."""
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            _no_scalars(node)
            continue
        for attr, value in vars(node).items():
            if isinstance(value, torch.Tensor):
                value = value.detach().numpy()  # rockpool leaves some with requires_grad
                setattr(node, attr, value)
            if isinstance(value, np.ndarray) and value.ndim == 0:
                setattr(node, attr, value.reshape(1))


def _explicit_sizes(graph):
    """Broadcast 1-element neuron parameters to the width of the Affine/Linear feeding them:
    nir's type inference (run by ``nir.read``) otherwise sees a 1-neuron layer after a 3-row
    matrix and refuses the file (norse exports scalar parameters)."""
    for src, dst in graph.edges:
        a, b = graph.nodes[src], graph.nodes[dst]
        if not isinstance(a, (nir.Affine, nir.Linear)) or isinstance(b, (nir.Output, nir.NIRGraph)):
            continue
        n = a.weight.shape[0]
        for attr, value in vars(b).items():
            if isinstance(value, np.ndarray) and value.shape == (1,) and attr != "input_type":
                setattr(b, attr, np.broadcast_to(value, (n,)).copy())
        b.__post_init__()  # recompute input_type / output_type


def _io_shapes(graph, shape_in, shape_out):
    """Input/Output types without the batch/time dimensions of the sample data (rockpool and
    norse's conv export keep them, and ``nir.read`` then refuses the file)."""
    for name, node in list(graph.nodes.items()):
        if isinstance(node, nir.Input):
            graph.nodes[name] = nir.Input(np.array(shape_in))
        elif isinstance(node, nir.Output):
            graph.nodes[name] = nir.Output(np.array(shape_out))


def _write(framework, name, graph):
    _no_scalars(graph)
    _explicit_sizes(graph)
    path = os.path.join(HERE, f"{framework}_{name}.nir")
    nir.write(path, graph, compression=None)  # contiguous: a few kB, not tens
    print(f"{path}: {os.path.getsize(path)} bytes, nodes {sorted(graph.nodes)}")


def sinabs_fixtures():
    import sinabs
    import sinabs.layers as sl

    torch.manual_seed(1)
    sample = torch.zeros(1, N_IN)
    iaf = torch.nn.Sequential(torch.nn.Linear(N_IN, 3), sl.IAFSqueeze(batch_size=1),
                              torch.nn.Linear(3, 2), sl.IAFSqueeze(batch_size=1))
    _write("sinabs", "iaf", sinabs.to_nir(iaf, sample))
    # sinabs' own spikes for a raster: the test checks the imported network gives the same
    x = (np.random.default_rng(11).random((40, N_IN)) < 0.8).astype(np.float32)
    with torch.no_grad():
        iaf[1].reset_states()  # to_nir ran the model (its biases charged the membranes)
        iaf[3].reset_states()
        hidden = iaf[1](iaf[0](torch.from_numpy(x)))
        out = iaf[3](iaf[2](hidden))
    np.savez_compressed(os.path.join(HERE, "sinabs_iaf_reference.npz"), raster=x.astype(np.uint8),
                        spikes=np.concatenate([hidden, out], axis=1).astype(np.uint8))
    # per-neuron tau: sinabs exports a scalar tau as a 0-d array, which nir.write cannot store
    torch.manual_seed(2)
    lif = torch.nn.Sequential(
        torch.nn.Linear(N_IN, 3),
        sl.LIFSqueeze(tau_mem=torch.full((3,), 20.0), spike_threshold=torch.ones(3), batch_size=1),
        torch.nn.Linear(3, 2),
        sl.ExpLeakSqueeze(tau_mem=torch.full((2,), 10.0), batch_size=1),
    )
    _write("sinabs", "lif_li", sinabs.to_nir(lif, sample))
    torch.manual_seed(3)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, bias=False), sl.IAFSqueeze(batch_size=1), sl.SumPool2d(2),
        sl.IAFSqueeze(batch_size=1),
    )  # no Flatten: sinabs exports it with input_type=None, which nir.write cannot store
    graph = sinabs.to_nir(conv, torch.zeros(1, 1, 4, 4))
    graph.nodes["0"].input_shape = (4, 4)  # exported as None, which nir.write cannot store
    _write("sinabs", "conv", graph)


def norse_fixtures():
    import norse.torch as norse

    torch.manual_seed(4)
    sample = torch.zeros(N_IN)  # no batch dim: else Input is (1, 4) and nir.read refuses it
    box = norse.SequentialState(torch.nn.Linear(N_IN, 3), norse.LIFBoxCell(),
                                torch.nn.Linear(3, 2), norse.LIFBoxCell())
    _write("norse", "lifbox", norse.to_nir(box, sample))
    torch.manual_seed(5)
    cuba = norse.SequentialState(torch.nn.Linear(N_IN, 3), norse.LIFCell(),
                                 torch.nn.Linear(3, 2), norse.LIFCell())
    _write("norse", "cuba", norse.to_nir(cuba, sample))
    torch.manual_seed(6)
    iaf = norse.SequentialState(torch.nn.Linear(N_IN, 3), norse.IAFCell(),
                                torch.nn.Linear(3, 2), norse.IAFCell())
    _write("norse", "iaf", norse.to_nir(iaf, sample))
    torch.manual_seed(7)
    conv = norse.SequentialState(torch.nn.Conv2d(1, 2, 3), norse.LIFBoxCell())
    graph = norse.to_nir(conv, torch.zeros(1, 1, 4, 4))
    graph.nodes["0"].input_shape = (4, 4)  # exported as None, which nir.write cannot store
    _io_shapes(graph, [1, 4, 4], [2, 2, 2])
    _write("norse", "conv", graph)


def rockpool_fixtures():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import ExpSynTorch, LIFNeuronTorch, LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir

    torch.manual_seed(8)
    cuba = Sequential(LinearTorch((N_IN, 3)), LIFTorch(3), LinearTorch((3, 2)), LIFTorch(2))
    graph = to_nir(cuba)
    _io_shapes(graph, [N_IN], [2])
    _write("rockpool", "cuba", graph)
    torch.manual_seed(9)
    lif = Sequential(LinearTorch((N_IN, 3), has_bias=True), LIFNeuronTorch(3),
                     LinearTorch((3, 2)), ExpSynTorch(2))
    graph = to_nir(lif)
    _io_shapes(graph, [N_IN], [2])
    _write("rockpool", "lif_expsyn", graph)
    torch.manual_seed(10)
    rec = Sequential(LinearTorch((N_IN, 3)), LIFTorch(3, has_rec=True),
                     LinearTorch((3, 2)), LIFTorch(2))
    graph = to_nir(rec)
    _io_shapes(graph, [N_IN], [2])
    _write("rockpool", "recurrent", graph)


def main():
    os.makedirs(HERE, exist_ok=True)
    for fn in (sinabs_fixtures, norse_fixtures, rockpool_fixtures):
        try:
            fn()
        except ImportError as e:
            print(f"{fn.__name__}: skipped ({e})", file=sys.stderr)


if __name__ == "__main__":
    main()
