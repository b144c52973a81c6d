"""The code's shape: no import cycle between koqa's modules (function-level imports included), no
module over 400 lines, and the training run reads as one short function."""

import inspect
import os
import sys

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
MAX_RUN_LINES = 80


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


def test_the_training_run_reads_in_one_short_function():
    from koqa.train import run

    lines = inspect.getsource(run.train).splitlines()
    assert len(lines) <= MAX_RUN_LINES, len(lines)
