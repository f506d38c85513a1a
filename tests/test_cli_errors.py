# `spikeforge run` and `spikeforge demo` from the command line (spikeforge.cli.main): every user
# mistake ends in one `spikeforge: error:` line and exit code 1, never a traceback, and is found
# before a board is opened; NIR import settings from the command line; a plot that fails after the
# run loses none of the results; a link that goes away mid-run names the port.
import json
import os
import socket
import threading

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.host import backends, demo
from spikeforge.host.backends import GoldenBackend

NIR = os.path.join(os.path.dirname(__file__), "data", "nir")
needs_nir = pytest.mark.needs("nir")


@pytest.fixture
def no_board(monkeypatch):
    """Opening a board is a test failure: every check must come before it."""
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))

    def refuse(port):
        raise AssertionError(f"a board was opened ({port!r}) before the files were checked")

    for name in list(backends._FACTORIES):
        backends._FACTORIES[name] = refuse


def _one_error_line(capsys, code, *needles):
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("spikeforge: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return out, lines[0]


@pytest.fixture
def model(tmp_path):
    """A small integer network file (.npz) with 4 inputs; no NIR needed."""
    from spikeforge.host.compiler import save_network
    from spikeforge.network import INPUT, Network, NeuronParams, Population, Projection

    rng = np.random.default_rng(1)
    net = Network(
        4,
        [Population("out", 3, NeuronParams(beta=3900, threshold=100, reset="subtract"))],
        [Projection(INPUT, "out", rng.integers(20, 90, (4, 3)))],
        outputs=["out"],
    )
    path = tmp_path / "model.npz"
    save_network(net, str(path))
    return str(path)


def _raster(t=6, batch=2, n=4, seed=0):
    return (np.random.default_rng(seed).random((t, batch, n)) < 0.5).astype(np.uint8)


# --- the files, checked before a board is opened -------------------------------------------------
def _bad_inputs(tmp_path):
    """(name, make(path) -> file path, words the message must contain)."""
    good = _raster()

    def missing(d):
        return str(d / "nope.npy")

    def corrupt_npy(d):
        p = d / "c.npy"
        p.write_bytes(b"\x93NUMPY\x01\x00garbage-header")
        return str(p)

    def truncated_npy(d):
        p = d / "t.npy"
        np.save(p, np.ones((50, 8, 4), np.uint8))
        p.write_bytes(p.read_bytes()[:-100])
        return str(p)

    def npz_named_npy(d):
        p = d / "renamed.npy"
        np.savez(d / "x.npz", raster=good)
        os.rename(d / "x.npz", p)
        return str(p)

    def text_named_npy(d):
        p = d / "text.npy"
        p.write_text("0 1 0 1\n1 0 1 0\n")
        return str(p)

    def npy_named_npz(d):
        p = d / "renamed.npz"
        np.save(d / "x.npy", good)
        os.rename(d / "x.npy", p)
        return str(p)

    def object_npy(d):
        p = d / "obj.npy"
        np.save(p, np.array([[1, 0], None], dtype=object), allow_pickle=True)
        return str(p)

    def bad_zip_header(d):
        p = d / "bad.npz"
        np.savez(p, raster=good)
        data = bytearray(p.read_bytes())
        data[-22:] = b"\x00" * 22  # the end-of-central-directory record
        p.write_bytes(bytes(data))
        return str(p)

    def truncated_npz(d):
        p = d / "trunc.npz"
        np.savez(p, raster=np.ones((200, 20, 4), np.uint8))
        p.write_bytes(p.read_bytes()[:300])
        return str(p)

    def no_raster(d):
        p = d / "noraster.npz"
        np.savez(p, spikes=good, labels=np.zeros(2, int))
        return str(p)

    def object_npz(d):
        p = d / "objz.npz"
        np.savez(p, raster=np.array([None, 1], dtype=object), allow_pickle=True)
        return str(p)

    def empty_t(d):
        p = d / "t0.npy"
        np.save(p, np.zeros((0, 2, 4), np.uint8))
        return str(p)

    def empty_batch(d):
        p = d / "b0.npy"
        np.save(p, np.zeros((5, 0, 4), np.uint8))
        return str(p)

    def wrong_dims(d):
        p = d / "dims.npy"
        np.save(p, np.zeros((5, 2, 4, 1), np.uint8))
        return str(p)

    def wrong_inputs(d):
        p = d / "n.npy"
        np.save(p, np.zeros((5, 2, 7), np.uint8))
        return str(p)

    def not_binary(d):
        p = d / "counts.npy"
        r = good.copy()
        r[0, 0, 0] = 2
        np.save(p, r)
        return str(p)

    def bad_labels(d):
        p = d / "labels.npz"
        np.savez(p, raster=good, labels=np.zeros(5, int))
        return str(p)

    def unknown_ext(d):
        p = d / "r.txt"
        p.write_text("x")
        return str(p)

    def a_directory(d):
        (d / "dir.npy").mkdir()
        return str(d / "dir.npy")

    return [
        ("missing", missing, ["nope.npy", "does not exist"]),
        ("corrupt npy", corrupt_npy, ["c.npy", "corrupt or truncated"]),
        ("truncated npy", truncated_npy, ["t.npy", "corrupt or truncated"]),
        ("npz named npy", npz_named_npy, ["renamed.npy", "zip", "not a NumPy .npy", ".npz"]),
        ("text named npy", text_named_npy, ["text.npy", "a text file", "numpy.save"]),
        ("npy named npz", npy_named_npz, ["renamed.npz", "not an .npz", ".npy extension"]),
        ("object npy", object_npy, ["obj.npy", "dtype=object"]),
        ("bad zip header", bad_zip_header, ["bad.npz", "not a valid .npz", "zip"]),
        ("truncated npz", truncated_npz, ["trunc.npz"]),
        ("no raster", no_raster, ["no array named 'raster'", "spikes, labels"]),
        ("object npz", object_npz, ["objz.npz", "dtype=object"]),
        ("T = 0", empty_t, ["T = 0"]),
        ("empty batch", empty_batch, ["batch is empty", "0 samples"]),
        ("wrong dims", wrong_dims, ["4 dimensions", "(T, batch, n_inputs)"]),
        ("wrong n_inputs", wrong_inputs, ["7 inputs", "has 4 inputs"]),
        ("not 0/1", not_binary, ["must be 0 or 1", "found 2"]),
        ("labels", bad_labels, ["'labels' must be 2 integers"]),
        ("extension", unknown_ext, ["r.txt", "unknown extension", ".npy", ".npz"]),
        ("directory", a_directory, ["is a directory"]),
    ]


@pytest.mark.parametrize("case", range(19), ids=[c[0] for c in _bad_inputs(None)])
def test_bad_input_file_is_one_line_before_the_board(case, tmp_path, model, no_board, capsys):
    name, make, needles = _bad_inputs(tmp_path)[case]
    path = make(tmp_path)
    _one_error_line(capsys, main(["run", model, path, "--port", "golden"]), *needles)


def test_bad_model_files(tmp_path, no_board, capsys):
    np.save(tmp_path / "in.npy", _raster())
    inputs = str(tmp_path / "in.npy")
    _one_error_line(capsys, main(["run", str(tmp_path / "m.npz"), inputs]), "does not exist")
    (tmp_path / "m.npz").write_bytes(b"not a zip")
    _one_error_line(capsys, main(["run", str(tmp_path / "m.npz"), inputs]), "m.npz")
    (tmp_path / "m.onnx").write_bytes(b"x")
    _one_error_line(capsys, main(["run", str(tmp_path / "m.onnx"), inputs]), "unknown extension")


def test_good_run_on_golden_text_and_json(tmp_path, model, capsys):
    np.savez(tmp_path / "in.npz", raster=_raster(), labels=np.array([0, 2]))
    assert main(["run", model, str(tmp_path / "in.npz"), "--port", "golden"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("predictions ") and "accuracy" in out and err == ""
    assert "simulation speed (this PC)" in out and "board speed (projected)     n/a" in out
    np.save(tmp_path / "one.npy", _raster()[:, 0])  # (T, n_inputs): one sample
    assert main(["run", model, str(tmp_path / "one.npy"), "--port", "golden", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["predictions"]) == 1 and res["board_projection"]["available"] is False
    assert res["speed_kind"] == "simulation speed (this PC)"


# --- --plot ---------------------------------------------------------------------------------
@pytest.mark.parametrize("plot, needles", [
    ("missing_dir/r.png", ["does not exist"]),
    ("r.nope", ["unknown image format 'nope'", ".png"]),
    ("r", ["(no suffix)"]),
    (".", ["is a directory"]),
])
def test_plot_checked_before_the_run(tmp_path, model, no_board, capsys, plot, needles):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "in.npy", _raster())
    plot = str(tmp_path / plot) if plot != "." else str(tmp_path)
    _one_error_line(capsys, main(["run", model, str(tmp_path / "in.npy"), "--plot", plot]),
                    "--plot", *needles)


def test_plot_without_matplotlib(tmp_path, model, no_board, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    np.save(tmp_path / "in.npy", _raster())
    code = main(["run", model, str(tmp_path / "in.npy"), "--plot", str(tmp_path / "r.png")])
    _one_error_line(capsys, code, "--plot needs matplotlib", "spikeforge[models]")


@pytest.mark.parametrize("as_json", [False, True])
def test_plot_failure_after_the_run_keeps_the_results(tmp_path, model, capsys, monkeypatch,
                                                     as_json):
    pytest.importorskip("matplotlib")

    def broken(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(demo, "_plot", broken)
    np.savez(tmp_path / "in.npz", raster=_raster(), labels=np.array([1, 1]))
    argv = ["run", model, str(tmp_path / "in.npz"), "--port", "golden",
            "--plot", str(tmp_path / "r.png")] + (["--json"] if as_json else [])
    out, line = _one_error_line(capsys, main(argv), "results above are complete",
                                "No space left on device")
    if as_json:
        assert len(json.loads(out)["predictions"]) == 2
    else:
        assert out.startswith("predictions ") and "accuracy" in out


def test_plot_written(tmp_path, model, capsys):
    pytest.importorskip("matplotlib")
    np.save(tmp_path / "in.npy", _raster())
    png = tmp_path / "r.png"
    assert main(["run", model, str(tmp_path / "in.npy"), "--port", "golden",
                 "--plot", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    assert f"spike raster written to {png}" in capsys.readouterr().out


# --- NIR import settings from the command line --------------------------------------------
@needs_nir
@pytest.mark.parametrize("graph, argv", [
    ("norse_lifbox.nir", ["--dt", "1e-6"]),
    ("norse_cuba.nir", ["--dt", "1e-6", "--reset", "subtract", "--reset-delay", "next-step"]),
    ("rockpool_cuba.nir", ["--dt", "1e-3"]),
    ("rockpool_lif_expsyn.nir", ["--dt", "0.001", "--reset", "zero", "--reset-delay",
                                 "immediate", "--per-neuron", "--leak", "shift"]),
])
def test_norse_and_rockpool_graphs_run_from_the_command_line(tmp_path, capsys, graph, argv):
    np.save(tmp_path / "in.npy", _raster(t=20, batch=3))
    path = os.path.join(NIR, graph)
    code = main(["run", path, str(tmp_path / "in.npy"), "--port", "golden", "--json"] + argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert len(res["predictions"]) == 3


@needs_nir
def test_nir_settings_reach_the_importer(tmp_path):
    from spikeforge.host.nir_import import Settings

    path = os.path.join(NIR, "norse_cuba.nir")
    s = demo.nir_settings(path, "1e-6", "subtract", "next-step")
    assert s == Settings(dt=1e-6, reset="subtract", reset_delay=True, default_reset="subtract",
                         default_reset_delay=True)
    assert demo.nir_settings(path) is None


@needs_nir
@pytest.mark.parametrize("argv, needles", [
    ([], ["shorter than dt=0.0001", "--dt"]),  # norse writes tiny taus: the hint names --dt
    (["--dt", "abc"], ["--dt 'abc' is not valid"]),
    (["--dt", "-1"], ["--dt '-1' is not valid"]),
    (["--dt", "nan"], ["--dt 'nan' is not valid"]),
    (["--dt", "1e-6", "--reset", "half"], ["--reset 'half'", "zero, subtract, none"]),
    (["--dt", "1e-6", "--reset-delay", "later"], ["--reset-delay 'later'", "next-step"]),
    (["--dt", "1e-6", "--leak", "cubic"], ["--leak 'cubic'", "mult, shift"]),
])
def test_nir_option_errors(tmp_path, no_board, capsys, argv, needles):
    np.save(tmp_path / "in.npy", _raster())
    path = os.path.join(NIR, "norse_lifbox.nir")
    _one_error_line(capsys, main(["run", path, str(tmp_path / "in.npy")] + argv), *needles)


def test_nir_options_on_a_network_file(tmp_path, model, no_board, capsys):
    np.save(tmp_path / "in.npy", _raster())
    _one_error_line(capsys, main(["run", model, str(tmp_path / "in.npy"), "--dt", "1e-3"]),
                    "--dt only apply to NIR graphs")


# --- the link goes away mid-run ------------------------------------------------------------
class _CutLink(GoldenBackend):
    """A chip backend whose link dies in the middle of the run, as a board unplugged."""

    name = "cut"

    def __init__(self, url):
        super().__init__()
        from spikeforge.host.transport import SerialTransport

        self.url = url
        self.transport = SerialTransport(url, timeout=0.5)

    def run(self, raster):
        self.transport.write(b"\x00hello")
        while True:  # the server closes: LinkLostError within a few reads
            self.transport.read(4096)

    def close(self):
        self.transport.close()


def test_link_lost_mid_run_is_one_line(tmp_path, model, capsys, monkeypatch):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(5.0)
    url = f"socket://127.0.0.1:{srv.getsockname()[1]}"

    def serve():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.settimeout(5.0)
        try:
            conn.recv(100)  # the run started: now the "virtual board" dies
        finally:
            conn.close()
            srv.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    monkeypatch.setattr(backends, "_FACTORIES", dict(backends._FACTORIES))
    backends.register_backend("url", _CutLink)
    np.save(tmp_path / "in.npy", _raster())
    code = main(["run", model, str(tmp_path / "in.npy"), "--port", url])
    th.join(5.0)
    _one_error_line(capsys, code, url, "was lost", "virtual board")


def test_demo_on_a_missing_port_is_one_line(capsys):
    _one_error_line(capsys, main(["demo", "--port", "/dev/ttyNOPE7", "--samples", "2"]),
                    "/dev/ttyNOPE7")



@pytest.mark.parametrize("argv, needle", [
    (["--samples", "0"], "--samples 0 is out of range: allowed 1..360"),
    (["--samples", "361"], "--samples 361 is out of range"),
    (["--timesteps", "0"], "--timesteps 0 is out of range: allowed >= 1"),
])
def test_demo_options_checked_before_the_board(no_board, capsys, argv, needle):
    _one_error_line(capsys, main(["demo"] + argv), needle)


def test_mistyped_port_name(tmp_path, model, capsys):
    np.save(tmp_path / "in.npy", _raster())
    _one_error_line(capsys, main(["run", model, str(tmp_path / "in.npy"), "--port", "golde"]),
                    "cannot open 'golde'", "virtual, golden, golden-float")


def test_main_restores_the_warning_format(tmp_path, capsys):
    """``main`` prints warnings as one ``spikeforge: warning:`` line while it runs, and leaves
    the caller's ``warnings.formatwarning`` as it found it (it may run inside another program)."""
    import warnings

    before = warnings.formatwarning
    assert main(["run", str(tmp_path / "missing.nir"), str(tmp_path / "x.npy")]) == 1
    assert warnings.formatwarning is before
    capsys.readouterr()
