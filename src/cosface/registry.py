"""Name -> constructor tables, so components are chosen by config keys instead of if/elif chains."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from cosface.errors import CosfaceError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = item
            return item

        return deco

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise CosfaceError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._items[name]
