"""Registries of named units (methods, models, tasks), filled by decorators.

Methods live one per file in the `methods` package and register themselves on import;
third-party methods register through the `bench.methods` entry-point group.
"""
from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from bench.errors import ConfigError, did_you_mean

T = TypeVar("T")

PLUGIN_GROUP = "bench.methods"


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            first, second = (getattr(x, "__module__", "?") for x in (self._items[name], item))
            raise ConfigError(f"{self.kind} name {name!r} is registered twice: by {first} and by {second}; "
                              "rename one of them")
        self._items[name] = item
        return item

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            where = f"{where}: " if where else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r}{did_you_mean(name, self._items)}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


METHODS: Registry[type] = Registry("method")
_loaded = False


def register_method(cls: type) -> type:
    """Class decorator: `@register_method class Lora(Method): name = "lora"`."""
    METHODS.register(cls.name, cls)
    cls.origin = getattr(cls, "origin", None) or cls.__module__
    return cls


def load_methods() -> Registry[type]:
    """Import every module of the `methods` package, then every plugin entry point (once)."""
    global _loaded
    if _loaded:
        return METHODS
    _loaded = True
    import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"methods.{info.name}")
    for ep in entry_points(group=PLUGIN_GROUP):
        before = dict(METHODS.items())
        obj = ep.load()
        name = getattr(obj, "name", None)
        if not isinstance(obj, type) or not isinstance(name, str) or not name:
            raise ConfigError(f"plugin entry point {ep.name!r} ({ep.value}) of group {PLUGIN_GROUP!r} is not a "
                              "method class with a `name`")
        if name in before:
            first = getattr(before[name], "origin", None) or before[name].__module__
            raise ConfigError(f"method name {name!r} is registered twice: by {first} and by the plugin "
                              f"{ep.value} (entry point {ep.name!r}); rename one of them")
        if name not in METHODS:  # a plugin module may register itself with @register_method
            register_method(obj)
    return METHODS


def method_class(name: str, where: str = "") -> type:
    return load_methods().get(name, where)


def decorator(registry: Registry[T]) -> Callable[[str], Callable[[T], T]]:
    def named(name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            return registry.register(name, item)
        return wrap
    return named
