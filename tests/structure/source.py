"""The project's own modules read statically (ast, nothing imported): their imports, resolved to
project modules or to the third-party package they name. Every import counts, wherever it is: at
the top, inside a function, under `if TYPE_CHECKING:`."""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "methods")


@dataclass(frozen=True)
class Import:
    target: str  # a project module ("bench.spec"), or a third-party top-level package ("torch")
    project: bool
    line: int


@functools.lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Every module of the project's packages by dotted name (a package by its __init__)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"), filename=str(modules()[name]))


def _resolve(name: str) -> tuple[str, bool]:
    """The longest project module a dotted name starts with, else its third-party top level."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules():
            return ".".join(parts), True
        parts.pop()
    return name.split(".")[0], False


@functools.lru_cache(maxsize=None)
def imports(name: str) -> tuple[Import, ...]:
    """What module `name` imports. `from a.b import c` is an import of a.b.c where that is a module
    (a submodule), else of a.b. A package's __init__ is not counted for its submodules' imports:
    that is how Python runs them, and counting it would make every package a cycle."""
    path = modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree(name)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules() else source for a in node.names]
        for target in targets:
            resolved, project = _resolve(target)
            if resolved != name:
                found.append(Import(resolved, project, node.lineno))
    return tuple(found)


def graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    return {name: {i.target for i in imports(name) if i.project} for name in modules()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursive: the project's import depth is small
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def path_within(g: dict[str, set[str]], start: str, goal: str, allowed: set[str]) -> list[str]:
    """A shortest import chain start -> ... -> goal through `allowed` modules (breadth first)."""
    previous: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(g.get(v, ())):
            if w in allowed and w not in previous:
                previous[w] = v
                if w == goal:
                    chain = [w]
                    while previous[chain[-1]] is not None:
                        chain.append(previous[chain[-1]])
                    return chain[::-1]
                queue.append(w)
    return []


def docstrings(module: ast.Module) -> set[int]:
    """ids of the docstring nodes of a module and of its classes and functions."""
    out = set()
    for node in ast.walk(module):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.add(id(body[0].value))
    return out
