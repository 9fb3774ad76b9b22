"""Registries (bench/registry.py): duplicates refused naming both sources, unknown names answered
with the choices; plugins through the `bench.methods` entry points, a name collision refused.
(That every method file registers one method, and the harness names none: tests/structure.)"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bench import registry
from bench.errors import ConfigError
from bench.method import Method
from bench.registry import Registry, load_methods, method_class


def test_registry_rejects_duplicates_and_suggests() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    with pytest.raises(ConfigError, match="thing name 'alpha' is registered twice: by .* and by .*; rename one"):
        reg.register("alpha", 2)
    with pytest.raises(ConfigError, match="unknown thing 'alpah'.*did you mean 'alpha'.*valid choices: alpha"):
        reg.get("alpah")
    assert "alpha" in reg and list(reg) == ["alpha"] and reg.items() == [("alpha", 1)]


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(ConfigError, match="m.toml: methods\\[0\\]: unknown method 'lorra' \\(did you mean 'lora'\\?\\)"):
        method_class("lorra", "m.toml: methods[0]")


@dataclass
class FakeEntryPoint:
    """What importlib.metadata gives for one entry point of the `bench.methods` group."""

    name: str
    value: str
    obj: Any
    registers: bool = False  # the plugin module registers its class itself (@register_method) on import

    def load(self) -> Any:
        if self.registers:
            registry.register_method(self.obj)
        return self.obj


def _plugins(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    load_methods()  # the built-in methods first, as in any process
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: list(eps) if group == registry.PLUGIN_GROUP else [])


class Clash(Method):
    name = "lora"
    __module__ = "bench_other_lora"


@pytest.mark.parametrize("registers", [False, True], ids=["entry-point", "self-registering"])
def test_a_plugin_that_takes_a_built_in_name_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch,
                                                                     registers: bool) -> None:
    _plugins(monkeypatch, FakeEntryPoint("lora", "bench_other_lora:Clash", Clash, registers))
    with pytest.raises(ConfigError) as err:
        load_methods()
    message = str(err.value)
    assert "method name 'lora' is registered twice" in message and "rename one of them" in message
    assert "methods.lora" in message and "bench_other_lora" in message  # both sources
    assert method_class("lora").__module__ == "methods.lora"  # the built-in stays


def test_a_plugin_entry_point_that_is_not_a_method_class_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _plugins(monkeypatch, FakeEntryPoint("odd", "bench_odd:thing", object()))
    with pytest.raises(ConfigError, match="plugin entry point 'odd' \\(bench_odd:thing\\) .* is not a method class"):
        load_methods()


def test_a_plugin_registers_under_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    class NormOnly(Method):
        name = "norm_only_test"
        __module__ = "bench_norm_only"

    _plugins(monkeypatch, FakeEntryPoint("norm_only_test", "bench_norm_only:NormOnly", NormOnly))
    monkeypatch.setattr(registry.METHODS, "_items", dict(registry.METHODS._items))  # undone after the test
    assert method_class("norm_only_test") is NormOnly
    assert NormOnly.origin == "bench_norm_only"
