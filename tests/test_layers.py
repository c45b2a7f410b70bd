"""The package's layers, read from its source: import cycles (imports at any depth count),
imports that climb back up the layers, in-function imports without a reason, light commands that
start torch, and functions and modules that grew too long."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpc_bert"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _imported(node: ast.AST) -> list[str]:
    """hpc_bert modules an import statement loads (``from pkg import mod`` counts as pkg.mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("hpc_bert")]
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpc_bert"):
        subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
        return subs or [node.module]
    return []


def _graph() -> dict[str, set[str]]:
    return {name: {m for node in ast.walk(tree) for m in _imported(node) if m != name}
            for name, tree in TREES.items()}


def _inner_imports() -> list[tuple[str, int, list[str]]]:
    """(module, line, hpc_bert modules) of every import inside a function."""
    out = []
    for name, tree in TREES.items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out += [(name, n.lineno, _imported(n)) for n in ast.walk(fn)
                        if isinstance(n, (ast.Import, ast.ImportFrom)) and _imported(n)]
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_at_any_depth():
    assert _cycles(_graph()) == []


def test_pretrain_imports_nothing_from_the_launcher():
    graph = _graph()
    climbing = {m: sorted(d for d in deps if d.startswith("hpc_bert.launch"))
                for m, deps in graph.items() if m.startswith("hpc_bert.pretrain")}
    assert {m: d for m, d in climbing.items() if d} == {}


def test_the_product_never_imports_test_support():
    graph = _graph()
    users = {m: sorted(d for d in deps if d.startswith("hpc_bert.testing"))
             for m, deps in graph.items() if not m.startswith("hpc_bert.testing")}
    assert {m: d for m, d in users.items() if d} == {}


def test_every_import_inside_a_function_says_why():
    """Only two reasons keep an own module's import inside a function (an optional package, or
    torch kept out of a light command's start-up), and a comment in the import's block says which."""
    silent = []
    for name, line, mods in _inner_imports():
        lines = MODULES[name].read_text().splitlines()
        block = [lines[line - 1]]
        i = line - 2
        while i >= 0 and lines[i].strip().startswith(("import ", "from ", "#")):
            block.append(lines[i])
            i -= 1
        if not any("#" in text for text in block):
            silent.append(f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} {', '.join(mods)}")
    assert silent == []


def test_functions_and_modules_stay_short():
    long_functions, long_modules = [], []
    for name, tree in TREES.items():
        where = MODULES[name].relative_to(PACKAGE.parent)
        if len(MODULES[name].read_text().splitlines()) > MAX_MODULE_LINES:
            long_modules.append(str(where))
        long_functions += [f"{where}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
                           if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                           and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert (long_functions, long_modules) == ([], [])


@pytest.mark.parametrize("command", ["submit", "status"])
def test_light_commands_answer_help_without_torch(command):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", f"hpc_bert.{command}", "--help"],
                         capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert out.returncode == 0 and "usage:" in out.stdout
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "hpc_bert.launch" in loaded  # the probe itself works
    assert not loaded & {"torch", "deepspeed", "transformers"}
