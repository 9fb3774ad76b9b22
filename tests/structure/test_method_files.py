"""A method is one file: every methods/*.py without a leading underscore registers exactly one method,
named after the file; and the harness (bench/) names no method, neither in a string nor in code."""
from __future__ import annotations

import ast
import re

from bench.registry import METHODS, load_methods
from tests.structure import source
from tests.structure.source import ROOT

# A string made only of these characters is a name, a path or a glob ("tiny-llama/lora/*"), not prose:
# each of its words is checked. Prose ("a full pass") is checked only when it is exactly a method name.
TOKEN = re.compile(r"[A-Za-z0-9_\-./*:]+")


def test_every_method_file_registers_exactly_one_method_named_after_it() -> None:
    load_methods()
    files = sorted(p for p in (ROOT / "methods").glob("*.py") if not p.name.startswith("_"))
    assert files
    by_module: dict[str, list[str]] = {}
    for name, cls in METHODS.items():
        by_module.setdefault(cls.__module__, []).append(name)
    problems = []
    for path in files:
        names = by_module.get(f"methods.{path.stem}", [])
        if names != [path.stem]:
            problems.append(f"  methods/{path.name} registers {names or 'nothing'}; it must register "
                            f"exactly one method, named {path.stem!r}")
    assert not problems, "\n".join(problems)


def _external_aliases(module: ast.Module) -> set[str]:
    """Names bound by imports of third-party packages (torch.full is torch's, not a method)."""
    out = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith(source.PACKAGES)}
        elif isinstance(node, ast.ImportFrom) and not node.level and not (node.module or "").startswith(
                source.PACKAGES):
            out |= {a.asname or a.name for a in node.names}
    return out


def _mentions(module: ast.Module, names: set[str]) -> list[tuple[int, str]]:
    docs, external = source.docstrings(module), _external_aliases(module)
    found = []
    for node in ast.walk(module):
        hit = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            words = set(re.findall(r"[A-Za-z0-9_]+", node.value)) if TOKEN.fullmatch(node.value) else {node.value}
            hit = sorted(words & names)
            hit = f"the string {node.value!r}" if hit else None
        elif isinstance(node, ast.Name) and node.id in names:
            hit = f"the name {node.id}"
        elif isinstance(node, ast.Attribute) and node.attr in names and not (
                isinstance(node.value, ast.Name) and node.value.id in external):
            hit = f"the attribute .{node.attr}"
        elif isinstance(node, ast.arg) and node.arg in names:
            hit = f"the argument {node.arg}"
        elif isinstance(node, ast.keyword) and node.arg in names:
            hit = f"the keyword {node.arg}="
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names:
            hit = f"the definition {node.name}"
        elif isinstance(node, ast.alias) and (node.asname or node.name.split(".")[-1]) in names:
            hit = f"the import {node.name}"
        elif isinstance(node, (ast.Import, ast.ImportFrom)):  # `import methods` (discovery) is the one allowed
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.startswith("methods.") or (m == "methods" and isinstance(node, ast.ImportFrom)) for m in mods):
                hit = "an import from the methods package"
        if hit:
            found.append((getattr(node, "lineno", 0), hit))
    return found


# Words that are a method's name but mean something else where they stand (module -> the hits).
# activation_checkpointing = "full" (every layer): read in config, written back in the ladder table
NOT_METHODS = {"bench.config": {"the string 'full'"}, "bench.report.ladder": {"the string 'full'"}}


def test_the_harness_names_no_method() -> None:
    names = set(load_methods())
    problems = []
    for name, path in source.modules().items():
        if not name.startswith("bench"):
            continue
        for line, what in _mentions(source.tree(name), names):
            if what in NOT_METHODS.get(name, set()):
                continue
            problems.append(f"  {path.relative_to(ROOT)}:{line} names a method: {what}")
    assert not problems, "\n".join(problems)


def test_the_search_finds_what_it_looks_for() -> None:
    """The checks above catch what they should (and skip docstrings and torch.full)."""
    code = ast.parse('"""A lora docstring."""\nimport torch\nx = torch.full\nif m == "lora": pass\n'
                     'glob = "tiny-llama/qlora/*"\ndef full(): pass\nfrom methods import lora\n')
    found = [what for _, what in _mentions(code, {"lora", "qlora", "full"})]
    assert sorted(found) == sorted(["the string 'lora'", "the string 'tiny-llama/qlora/*'", "the definition full",
                                    "the import lora", "an import from the methods package"])
    assert _mentions(ast.parse("import methods\nimport methods._peft\n"), {"lora"}) == [
        (2, "an import from the methods package")]
