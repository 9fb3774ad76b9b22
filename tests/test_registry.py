from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bench.errors import ConfigError
from bench.registry import METHODS, Registry, load_methods, method_class

ROOT = Path(__file__).resolve().parents[1]


def test_registry_rejects_duplicates_and_suggests() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha", 2)
    with pytest.raises(ConfigError, match="unknown thing 'alpah'.*did you mean 'alpha'.*valid choices: alpha"):
        reg.get("alpah")


def test_every_method_file_registers_exactly_one_method() -> None:
    load_methods()
    files = sorted(p for p in (ROOT / "methods").glob("*.py") if not p.name.startswith("_"))
    assert files
    by_module: dict[str, list[str]] = {}
    for name, cls in METHODS.items():
        by_module.setdefault(cls.__module__, []).append(name)
    for path in files:
        assert len(by_module.get(f"methods.{path.stem}", [])) == 1, f"{path.name} must register exactly one method"


def test_the_harness_names_no_method() -> None:
    names = set(load_methods())
    for path in (ROOT / "bench").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(m.startswith("methods.") for m in mods), f"{path} imports a method module"
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                pytest.fail(f"{path}:{node.lineno} names the method {node.value!r}")


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(ConfigError, match="did you mean 'lora'"):
        method_class("lorra")
