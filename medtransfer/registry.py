"""A name -> spec registry, shared by nets and datasets.

Each entry is registered once under its CLI name; ``medtransfer list`` and the tests
iterate the registry, so a new net or dataset is one registration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from medtransfer.errors import look_up_option

T = TypeVar("T")


class Registry(Generic[T]):
    """Specs by name, in registration order.

    Args:
        kind: what is registered ("net", "dataset"), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, spec: T) -> T:
        """Adds ``spec`` under ``name``; a name can be registered only once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = spec
        return spec

    def get(self, name: str) -> T:
        """Returns the spec of ``name``; an unknown name fails with a did-you-mean."""
        return self._entries[look_up_option(name, self._entries, self.kind)]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
