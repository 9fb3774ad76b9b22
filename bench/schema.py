"""Typed construction of dataclasses from TOML tables, with errors that name the place.

`build(cls, table, where)` checks unknown keys, types and Literal choices, then calls the
dataclass (whose `__post_init__` may raise ConfigError for values that clash).
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from bench.errors import ConfigError, did_you_mean


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _literal_choices(tp: Any) -> list[Any] | None:
    """The choices of a Literal annotation, or of an optional one (`Literal[...] | None`)."""
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        literals = [a for a in get_args(tp) if get_origin(a) is Literal]
        if len(literals) == 1 and all(a is type(None) or a is literals[0] for a in get_args(tp)):
            return list(get_args(literals[0]))
    return None


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    """(ok, converted value) for a TOML value against an annotation."""
    origin = get_origin(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return value in get_args(tp), value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            ok, conv = _matches(value, arg)
            if ok:
                return True, conv
        return False, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, conv = _matches(item, get_args(tp)[0])
            if not ok:
                return False, value
            out.append(conv)
        return True, out
    if origin is dict:
        return isinstance(value, dict), value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def build(cls: type, table: Any, where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping; `where` names the place for messages."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, got {type(table).__name__} {table!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, fields)}")
        tp = hints[key]
        ok, conv = _matches(value, tp)
        if not ok:
            choices = _literal_choices(tp)
            if choices is not None and isinstance(value, str):
                raise ConfigError(f"{where}: {key} = {value!r} is not valid{did_you_mean(value, map(str, choices))}")
            raise ConfigError(f"{where}: {key} = {value!r} has the wrong type; expected {_type_name(tp)}")
        kwargs[key] = conv
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s): {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def describe(cls: type) -> list[tuple[str, str, Any]]:
    """(name, type, default) for each option of a dataclass, for `bench list`."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        out.append((f.name, _type_name(hints[f.name]), default))
    return out
