"""The code's shape: no import cycle between koqa's modules and no import against the layers of
pyproject.toml's contract (function-level imports included), and no module over 400 lines."""

import os
import sys
import tomllib

import pytest

from conftest import REPO

# the installed package koqa maps these folders of the repository (pyproject.toml, package-dir)
PACKAGE_DIRS = {
    "koqa": REPO / "koqa",
    "koqa/eval": REPO / "eval",
    "koqa/data_tools": REPO / "data_tools",
    "koqa/prompts": REPO / "prompts",
}
MAX_MODULE_LINES = 400


def python_files():
    for root in PACKAGE_DIRS.values():
        yield from root.glob("*.py") if root != REPO / "koqa" else root.rglob("*.py")


def import_graph(tmp_path):
    """koqa's import graph from grimp, over a folder laid out as the installed package is."""
    grimp = pytest.importorskip("grimp")
    mirror = tmp_path / "mirror"
    for inside, folder in PACKAGE_DIRS.items():
        (mirror / inside).mkdir(parents=True, exist_ok=True)
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder)
            if inside == "koqa" and relative.parts[0] in ("eval", "data_tools", "prompts"):
                continue
            target = mirror / inside / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target)
    sys.path.insert(0, str(mirror))
    try:
        for name in [m for m in sys.modules if m == "koqa" or m.startswith("koqa.")]:
            sys.modules[f"_saved_{name}"] = sys.modules.pop(name)
        return grimp.build_graph("koqa", include_external_packages=False, cache_dir=None)
    finally:
        sys.path.remove(str(mirror))
        for name in [m for m in sys.modules if m == "koqa" or m.startswith("koqa.")]:
            del sys.modules[name]
        for name in [m for m in sys.modules if m.startswith("_saved_")]:
            sys.modules[name.removeprefix("_saved_")] = sys.modules.pop(name)


def cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.find_modules_directly_imported_by(node):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle(tmp_path):
    graph = import_graph(tmp_path)
    assert {"koqa.eval.evaluate", "koqa.data_tools.readers", "koqa.train.run"} <= graph.modules
    assert "koqa.eval.evaluate" in graph.find_modules_directly_imported_by("koqa.demo")  # function-level imports count
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    class Graph:
        modules = {"a", "b", "c"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}

        def find_modules_directly_imported_by(self, name):
            return self.edges[name]

    assert cycles(Graph()) == [["a", "b", "c"]]


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in python_files()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def contract_layers() -> list[list[str]]:
    """The layers of pyproject.toml's import contract, highest first, each a list of modules."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return [[name.strip() for name in layer.split(":")] for layer in contract["layers"]]


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    for index, members in enumerate(layers):
        if any(module == m or module.startswith(m + ".") for m in members):
            return index
    return None


def back_edges(graph, layers) -> list[str]:
    """Every import of a module in a higher layer than the importer's: 'importer -> imported'."""
    found = []
    for module in sorted(graph.modules):
        own = layer_of(module, layers)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            other = layer_of(imported, layers)
            if own is not None and other is not None and other < own:
                found.append(f"{module} -> {imported}")
    return found


def test_every_module_is_in_a_layer(tmp_path):
    graph = import_graph(tmp_path)
    layers = contract_layers()
    assert [m for m in sorted(graph.modules) if m != "koqa" and layer_of(m, layers) is None] == []


def test_no_import_goes_against_the_layers(tmp_path):
    graph = import_graph(tmp_path)
    assert back_edges(graph, contract_layers()) == []


def test_the_layer_check_finds_a_back_edge():
    class Graph:
        modules = {"koqa.eval.backends", "koqa.train.methods", "koqa.runs"}
        edges = {"koqa.eval.backends": {"koqa.train.methods", "koqa.runs"}, "koqa.train.methods": set()}

        def find_modules_directly_imported_by(self, name):
            return self.edges.get(name, set())

    assert back_edges(Graph(), contract_layers()) == ["koqa.eval.backends -> koqa.train.methods"]


def test_no_two_modules_share_a_name():
    names = {}
    for path in python_files():
        if path.name != "__init__.py":
            names.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
