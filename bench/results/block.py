"""Typed blocks of fields that read JSON tolerantly and write it back as it came (see record.py).
Torch-free."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

B = TypeVar("B", bound="Block")


@dataclass
class Block:
    """A group of fields; `extra` holds what the record had beyond the declared fields."""

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls: type[B], data: Any) -> B:
        """The block from its JSON object (None or any non-object: an empty block)."""
        obj = cls()
        if not isinstance(data, dict):
            return obj
        blocks = _blocks(cls)
        declared = _declared(cls)
        for key, value in data.items():
            if key in blocks:
                setattr(obj, key, blocks[key].from_json(value))
            elif key in declared:
                setattr(obj, key, value)
            else:
                obj.extra[key] = value
        return obj

    def to_json(self) -> dict[str, Any]:
        """Declared fields in declaration order (empty blocks as null), then the extra ones."""
        out: dict[str, Any] = {}
        for name in _declared(type(self)):
            value = getattr(self, name)
            out[name] = (None if value.empty else value.to_json()) if isinstance(value, Block) else value
        out.update(self.extra)
        return out

    def set(self, **values: Any) -> None:
        """Set declared fields; an undeclared name is a bug in the writer, not a new field."""
        declared = _declared(type(self))
        for name, value in values.items():
            if name not in declared:
                raise KeyError(f"{type(self).__name__} declares no field {name!r}; declare it in "
                               f"bench/results/record.py")
            setattr(self, name, value)

    @property
    def empty(self) -> bool:
        return not self.extra and all(
            (v.empty if isinstance(v, Block) else v is None) for v in (getattr(self, n) for n in _declared(type(self))))


@functools.lru_cache(maxsize=None)
def _declared(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")


@functools.lru_cache(maxsize=None)
def _blocks(cls: type) -> dict[str, type[Block]]:
    hints = get_type_hints(cls)
    return {name: hints[name] for name in _declared(cls)
            if isinstance(hints[name], type) and issubclass(hints[name], Block)}


def block(cls: type[B]) -> Any:
    """A nested block field: an empty instance by default."""
    return field(default_factory=cls)
