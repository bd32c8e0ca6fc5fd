"""A tiny name -> factory registry (generators, backbones, rewards, SDE steps, advantage modes).

Registries replace string switches: a module registers its factory under a name, and config code
builds by name. Heavy entries (anything importing diffusers or transformers) are registered lazily
as ``"package.module:attr"`` strings and imported on first use. An unknown name raises a ``KeyError`` that lists the names that exist.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # what is registered, used in error messages ("generator", "reward", ...)
        self._items: Dict[str, T] = {}
        self._lazy: Dict[str, str] = {}  # name -> "package.module:attr", imported on first use

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attr"``; the module is imported when ``name`` is first used."""
        self._lazy[name] = target

    def get(self, name: str) -> T:
        if name not in self._items and name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._items.setdefault(name, obj)
        if name not in self._items:
            known = ", ".join(self.names()) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(set(self._items) | set(self._lazy))

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
