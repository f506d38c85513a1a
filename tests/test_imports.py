# The package's modules import each other without cycles: a static scan of every import
# statement (at module level and inside functions), so a cycle cannot hide behind a
# function-level import.
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package-dir of pyproject.toml: where each sub-package's files live
PACKAGES = {
    "spikeforge": ROOT / "spikeforge",
    "spikeforge.hw": ROOT / "hw",
    "spikeforge.host": ROOT / "host",
    "spikeforge.sim": ROOT / "sim",
    "spikeforge.boards": ROOT / "boards",
}
# Cycles owned by another piece of work; remove an entry when its cycle is gone.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules():
    """``{module name: file}`` of every module, sub-packages (e.g. ``hw/core/``) included."""
    mods = {}
    for pkg, path in PACKAGES.items():
        for f in sorted(path.rglob("*.py")):
            parts = f.relative_to(path).with_suffix("").parts
            if not all((path / Path(*parts[:k]) / "__init__.py").is_file()
                       for k in range(1, len(parts))):
                continue  # not inside a sub-package (a build or data directory)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join((pkg,) + parts)] = f
    return mods


def _imports(name, path, mods):
    """``{imported spikeforge module: lineno}`` of every import statement in the file."""
    is_pkg = path.stem == "__init__"
    package = name if is_pkg else name.rpartition(".")[0]
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            # ``from . import x`` / ``from .pkg import mod`` may name sub-modules
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # importing a.b.c runs the package a.b too (unless the importer is inside it)
            parts = t.split(".")
            for k in range(2, len(parts) + 1):
                dep = ".".join(parts[:k])
                if dep in mods and dep != name and not name.startswith(dep + "."):
                    out.setdefault(dep, node.lineno)
    return out


def _graph():
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(frozenset(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return comps


def test_the_scan_sees_the_package():
    graph = _graph()
    assert "spikeforge.network" in graph and "spikeforge.host.image" in graph
    assert "spikeforge.network" in graph["spikeforge.sim.golden"]
    assert "spikeforge.hw.image" in graph["spikeforge.host.image"]


def test_no_import_cycle():
    graph = _graph()
    cycles = [c for c in _cycles(graph) if c not in KNOWN_CYCLES]
    described = [
        ", ".join(f"{a} -> {b} (line {graph[a][b]})" for a in sorted(c) for b in graph[a]
                  if b in c)
        for c in cycles
    ]
    assert not cycles, "import cycles: " + "; ".join(described)


def test_the_gateware_does_not_import_the_host_builder():
    """The gateware package (the address map, the core) stands without the host side; only its
    simulation drivers (``*_sim``) use the host's image builder."""
    graph = _graph()
    for name, deps in graph.items():
        if name.startswith("spikeforge.hw.") and not name.endswith("_sim"):
            bad = [d for d in deps if d.startswith(("spikeforge.host", "spikeforge.sim"))]
            assert not bad, f"{name} imports {bad}"


def test_every_module_imports_first():
    """Each module imported first, in a fresh interpreter (catches an order-dependent import)."""
    names = [n for n in _modules() if not n.endswith("__main__")]  # that one runs the CLI
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m.startswith('spikeforge')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", code, *names], check=True, cwd=ROOT)
