"""A small name -> constructor registry, one instance per kind of component."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyramidal.errors import OptionError


class Registry:
    """Maps names to constructors; `get` raises a clear error listing the valid names (an OptionError: one line
    from the CLI, a ValueError for library callers)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> Any:
        try:
            return self._items[name]
        except KeyError:
            raise OptionError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
