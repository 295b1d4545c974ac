"""The package's structure as a test: layers import downward only, no module cycle, short functions.

Built from the source with `ast`, so lazy imports inside functions and imports
under `TYPE_CHECKING` count like any other: a cycle hidden behind a lazy import
is still a cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reidbench
from reidbench import rundir

PACKAGE = Path(reidbench.__file__).parent
LAYERS = [
    {"errors"},
    {"config"},
    {"runtime", "schema", "stats"},
    {"variants", "data", "rundir"},
    {"profiles"},
    {"training", "evaluation"},
    {"bench", "harness"},
    {"reports"},
    {"cli", "api"},
    {"__main__", "__init__"},
]
"""Bottom first. A module may import its own top-level part and the layers below its own, nothing beside or above:
bench and harness never import each other (what both need lives below them), nor do training and evaluation."""
MAX_FUNCTION_LINES = 60
"""Body lines (signature and docstring excluded) a function may have."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The reidbench modules `name` imports anywhere in its source (a `from x import y` of a submodule names it)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("reidbench")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(name.split(".")[: -node.level] + [node.module])
            if base.startswith("reidbench"):
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {module for module in found if module != name}


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def layer(module: str) -> int:
    return next(i for i, parts in enumerate(LAYERS) if part(module) in parts)


SOURCES = sources()
GRAPH = {name: imports(name, tree, set(SOURCES)) for name, tree in SOURCES.items()}


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = sorted({part(m) for m in GRAPH} - set().union(*LAYERS))
    assert not unplaced, f"add these parts of the package to a layer in LAYERS: {unplaced}"


def test_layers_import_downward_only() -> None:
    upward = sorted(
        f"{module} -> {target}" for module, targets in GRAPH.items() for target in targets
        if part(target) != part(module) and layer(target) >= layer(module)
    )
    assert not upward, "imports beside or above their layer:\n" + "\n".join(upward)


def test_no_module_imports_itself_through_others() -> None:
    cycles = strongly_connected(GRAPH)
    assert not cycles, "module cycles:\n" + "\n".join(" -> ".join(sorted(c)) for c in cycles)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module (a cycle), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            target = next((t for t in edges if t in graph), None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return found


def function_lengths() -> list[tuple[int, str]]:
    lengths = []
    for name, tree in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                lengths.append((body[-1].end_lineno - body[0].lineno + 1, f"{name}.{node.name} (line {node.lineno})"))
    return sorted(lengths, reverse=True)


def test_functions_stay_short() -> None:
    long = [f"{where}: {n} lines" for n, where in function_lengths() if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} body lines; split them:\n" + "\n".join(long)


def run_dir_names_spelled(tree: ast.Module) -> list[str]:
    """String literals (docstrings aside) that spell a run directory's file name, or join one of its folders to a path.

    A name counts as spelled when it is a whole '/'-separated part of the literal (`"model.pt"`,
    `"cells/*/seed*/record.json"`, the `"/record.json"` of an f-string); a folder name counts in a
    literal with a '/' (`"cells/*/seed*"`) or joined with `/` (`run_dir / "onnx"`), since words like
    "cells" are also JSON keys.
    """
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            parts = set(node.value.split("/"))
            if parts & set(rundir.FILE_NAMES) or (len(parts) > 1 and parts & set(rundir.DIR_NAMES)):
                found.append(f"line {node.lineno}: {node.value!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
            if set(str(node.right.value).split("/")) & set(rundir.DIR_NAMES):
                found.append(f"line {node.lineno}: / {node.right.value!r}")
    return found


def test_only_rundir_spells_the_names_of_a_run_directorys_files() -> None:
    assert {"run.json", "record.json", "train_log.jsonl", "checkpoint.pt", "model.pt", ".lock"} <= set(rundir.FILE_NAMES)
    spelled = [f"{name} {where}" for name, tree in SOURCES.items() if name != "reidbench.rundir"
               for where in run_dir_names_spelled(tree)]
    assert not spelled, "use reidbench.rundir's paths instead of spelling these names:\n" + "\n".join(spelled)


def test_the_name_check_sees_paths_globs_and_f_strings_but_not_prose() -> None:
    tree = ast.parse(
        'def f(d, c):\n    """Reads record.json."""\n    a = d / "model.pt"\n    b = d.glob("cells/*/seed*/record.json")\n'
        '    e = f"{c}/train_log.jsonl"\n    g = d / "onnx"\n    i = d.glob("cells/*")\n    h = {"cells": [], "onnx": True}\n'
        '    raise ValueError("no run.json here; see RUN_DIR/report and the folders under cells/")\n'
    )
    assert sorted(where.split(":")[0] for where in run_dir_names_spelled(tree)) == ["line 3", "line 4", "line 5", "line 6", "line 7"]


@pytest.mark.parametrize("cycle_graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [{"a", "b", "c"}]),
    ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
])
def test_the_cycle_finder_finds_cycles_and_only_cycles(cycle_graph, expected) -> None:
    assert strongly_connected(cycle_graph) == expected
