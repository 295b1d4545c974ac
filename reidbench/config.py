"""Typed dataclasses filled from user mappings (TOML tables, --set options), with errors that say where.

Grid settings and profile sections are declared as dataclasses whose defaults
are the defaults; this one function checks a user's names and types against
those declarations, so every config file gets the same messages.
"""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import MISSING, fields, replace
from typing import Any, Iterator, Mapping, Optional, Sequence, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from reidbench.errors import UsageError

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any], source: str, base: Optional[T] = None) -> T:
    """`cls` built from `values` (on top of `base`, else the defaults); bad names or types name `source`."""
    coerced = coerce_mapping(cls, values, source)
    with named_source(source):
        return replace(base, **coerced) if base is not None else cls(**coerced)


def coerce_mapping(cls: type[Any], values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`values` checked one by one against `cls`'s fields (name, type, limits) and coerced, without building `cls`:
    how values relate to the others (warmup_epochs < epochs) is judged where the others are known, not on defaults."""
    declared = {f.name: f for f in fields(cls)}
    aliases: Mapping[str, str] = getattr(cls, "ALIASES", {})
    coerced: dict[str, Any] = {}
    for key, value in values.items():
        key = aliases.get(key, key)
        if key not in declared:
            raise UsageError(f"{source}: unknown setting {key!r}; valid settings are: {', '.join(declared)}.")
        spec = declared[key]
        default = spec.default if spec.default is not MISSING else spec.default_factory()  # type: ignore[misc]
        if default is None and "type" in spec.metadata:  # an optional setting: None until given, then of this type
            default = spec.metadata["type"]()
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{source}: setting {key!r} = {value} is not a finite number; give a real value, e.g. {_example(default)}.")
        try:
            coerced[key] = _coerce(value, default)
            length = spec.metadata.get("length")
            if length is not None and len(coerced[key]) != length:
                raise ValueError
        except (TypeError, ValueError):
            raise UsageError(
                f"{source}: setting {key!r} = {value!r} has the wrong type; expected something like {_example(default)}."
            ) from None
        _check_limits(key, coerced[key], spec.metadata, source)
    return coerced


def _check_limits(key: str, value: Any, metadata: Mapping[str, Any], source: str) -> None:
    """A size-like setting's upper bounds (field metadata `max`, and `max_length` for a list).

    Why bounds: sizes multiply (depth x tokens x batch), and a typo such as k = 1000000 would otherwise be found
    only when the host runs out of memory, building a model or a batch; the limits lie far beyond any recipe.
    """
    most, longest = metadata.get("max"), metadata.get("max_length")
    items = value if isinstance(value, tuple) else (value,)
    if longest is not None and len(items) > longest:
        raise UsageError(
            f"{source}: setting {key!r} = {_shown(list(items))} is over its limit of {longest} entries "
            f"(it has {len(items)}); give at most {longest}."
        )
    over = [item for item in items if most is not None and item > most]
    if over:
        raise UsageError(
            f"{source}: setting {key!r} = {_shown(value)} is over its limit of {most}; give at most {most} "
            "(the limits keep a typo from exhausting the machine's memory)."
        )


def _shown(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 60 else text[:57] + "..."


@contextlib.contextmanager
def named_source(source: str) -> Iterator[None]:
    """Prefix a validation error raised inside with where the bad value came from."""
    try:
        yield
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None


def _coerce(value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise TypeError
        return value
    if isinstance(default, tuple):
        # A tuple of strings (modalities) takes strings; every other tuple setting takes integers.
        item = str if default and isinstance(default[0], str) else int
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, item) for v in value):
            raise TypeError
        return tuple(value)
    raise TypeError


def _example(default: Any) -> str:
    return repr(list(default)) if isinstance(default, tuple) else repr(default)


def read_toml(text: str | bytes, what: str, keys: Sequence[str]) -> dict[str, Any]:
    """A grid, profile or recipe file's top-level table: the TOML parsed and its keys checked against `keys`.

    `what` names the file in every message ("grid file grids/x.toml"); each fault is one UsageError.
    """
    try:
        raw = tomllib.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} is not valid TOML: {exc}.") from None
    except RecursionError:
        raise UsageError(f"{what} nests its tables or lists too deeply to read; a settings file needs two levels.") from None
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise UsageError(f"{what}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(keys)}.")
    return raw
