"""The one shape every core registry has (model families, heads, losses): entries by name, each
naming its implementation per backend as a ``"module:attribute"`` string that the run layer
imports on first use (``bench.run.registry.load_implementation``)."""
from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Generic, Mapping, TypeVar

__all__ = ["Registry", "backend_implementation"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind; an unknown name fails with ``error`` listing the known ones."""

    def __init__(self, what: str, error: type[Exception]):
        self.what, self.error = what, error        # what: how a name is introduced, e.g. "--head"
        self._entries: dict[str, T] = {}
        self.entries: Mapping[str, T] = MappingProxyType(self._entries)

    def register(self, entry: T) -> T:
        """Add ``entry`` (a name already there is an error: one owner per fact)."""
        if entry.name in self._entries:
            raise ValueError(f"{self.what} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (plugins and tests that register one for a while)."""
        del self._entries[name]

    def get(self, name: str) -> T:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=2)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise self.error(f"unknown {self.what} {name!r}.{hint} Known: {', '.join(self._entries)}")
        return self._entries[name]


def backend_implementation(entry, backend: str, what: str, error: type[Exception]) -> str:
    """``entry.backends[backend]``, or ``error`` naming the backends that have one."""
    if backend not in entry.backends:
        have = ", ".join(f"--backend {b}" for b in entry.backends) or "no backend"
        raise error(f"{what} has no --backend {backend} implementation (it runs on {have})")
    return entry.backends[backend]
