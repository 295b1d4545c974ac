"""Named builders for backbones and necks.

A grid file refers to components by name; the registry turns a name into a
builder and, for a bad name, into an error that lists the valid ones. Tests
enumerate the registries, so a newly registered component is tested at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Optional, TypeVar

from reidbench.errors import UsageError
from reidbench.variants.weights.spec import Upstream

BuilderT = TypeVar("BuilderT", bound=Callable)


@dataclass(frozen=True)
class Entry(Generic[BuilderT]):
    name: str
    builder: BuilderT
    description: str
    upstream: Optional[Upstream] = None
    """Backbones: the library network it wraps and the weights --pretrained gives it; None for necks."""


class Registry(Generic[BuilderT]):
    """A mapping from component name to builder, filled by the `register` decorator."""

    def __init__(self, kind: str, forbid: str = "", why: str = "") -> None:
        """`forbid`: characters a name may not contain, and `why` (backbones: '-', at which cell ids are split)."""
        self.kind = kind
        self.forbid = forbid
        self.why = why
        self._entries: dict[str, Entry[BuilderT]] = {}

    def register(self, name: str, description: str, upstream: Optional[Upstream] = None) -> Callable[[BuilderT], BuilderT]:
        bad = sorted({c for c in name if c in self.forbid})
        if bad:
            raise ValueError(f"{self.kind} name {name!r} may not contain {', '.join(map(repr, bad))}: {self.why}")

        def decorate(builder: BuilderT) -> BuilderT:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, builder, description, upstream)
            return builder

        return decorate

    def get(self, name: str) -> Entry[BuilderT]:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """Why `name` cannot be built, and the way to a component of one's own."""
        return (
            f"unknown {self.kind} {name!r}; valid {self.kind}s are: {', '.join(self.names())}. A {self.kind} of your "
            "own is registered by a module that reidbench imports: give it with --import MODULE (or FILE.py), "
            "or install it under the reidbench.plugins entry points."
        )

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[BuilderT]]:
        return iter(self._entries.values())
