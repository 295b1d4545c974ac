"""Plugins: user modules that register backbones or necks, imported before any grid is read or any model built.

A plugin is an ordinary Python module whose import registers components (`@NECKS.register(...)`).
It reaches reidbench two ways: `--import MODULE` on the command line (or `imports=` in the Python
API), and the `reidbench.plugins` entry-point group of installed packages, which every command
loads first. A run records the modules it imported in run.json, so that `--resume`, `export`,
`report`, `status` and every launcher job import the same ones before they rebuild a cell: a
registration that exists in one process only would make the others fail with "unknown neck".

`--import` takes a dotted module name (imported like `import NAME`: from sys.path, then from the
current directory) or a path to a .py file (recorded as an absolute path, so a job or a later
`--resume` started from another folder finds it).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

from reidbench.errors import UsageError

ENTRY_POINT_GROUP = "reidbench.plugins"
DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_entry_point_modules: list[str] | None = None
"""The modules of the entry points, once loaded: every command loads them once, before anything else."""


def import_plugins(specs: Iterable[str], needed_by: str = "") -> list[str]:
    """Import the entry-point plugins, then each of `specs`; the modules to record, entry points first.

    `needed_by` names what asks for them (e.g. "the run runs/x"), so that a module missing now
    is reported with the run that needs it. Importing a module twice is a no-op.
    """
    recorded = list(_load_entry_points())
    for spec in specs:
        name = _import_one(spec, needed_by)
        if name not in recorded:
            recorded.append(name)
    return recorded


def _load_entry_points() -> list[str]:
    global _entry_point_modules
    if _entry_point_modules is None:
        loaded = []
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()
            except Exception as exc:  # noqa: BLE001 - any failure of someone else's module is reported, not a traceback
                dist = entry.dist.name if entry.dist is not None else "an installed package"
                raise UsageError(
                    f"the {ENTRY_POINT_GROUP} entry point {entry.name!r} of {dist} ({entry.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall that package."
                ) from None
            loaded.append(entry.module)
        _entry_point_modules = loaded
    return _entry_point_modules


def is_file_spec(spec: str) -> bool:
    """A path to a .py file rather than a dotted module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _import_one(spec: str, needed_by: str) -> str:
    """Import one plugin; returns how to record it (the dotted name, or the file's absolute path)."""
    for_what = f" (needed by {needed_by})" if needed_by else ""
    if is_file_spec(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"plugin file {spec}{for_what} does not exist; give the path to a .py file, or a module name.")
        _guarded(spec, for_what, lambda: _import_file(path))
        return str(path)
    if not DOTTED_NAME.fullmatch(spec):
        raise UsageError(f"--import {spec!r}{for_what} is neither a module name (e.g. my_necks or lab.reid.necks) nor a path to a .py file.")
    if str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.append(str(Path.cwd()))  # what `python -m` would find, after everything installed
    _guarded(spec, for_what, lambda: importlib.import_module(spec))
    return spec


def _guarded(spec: str, for_what: str, load: Callable[[], object]) -> None:
    """Run `load`; a module that cannot be found, or that fails while importing, becomes one paragraph."""
    try:
        load()
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise UsageError(
                f"plugin module {spec!r}{for_what} cannot be found: no module of that name on sys.path or in the current "
                f"directory {Path.cwd()}. Install it, run from the folder that holds it, add its folder to PYTHONPATH, "
                "or give the path to its .py file."
            ) from None
        raise UsageError(f"plugin module {spec!r}{for_what} failed to import: {exc}. Install what it needs.") from None
    except UsageError as exc:
        raise UsageError(f"plugin module {spec!r}{for_what} failed to import: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module: its error is named, not a reidbench traceback
        raise UsageError(f"plugin module {spec!r}{for_what} failed to import: {type(exc).__name__}: {exc}") from None


def _import_file(path: Path) -> None:
    """Import a .py file as the module named for its stem (once: a second import would register twice)."""
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path:
            return
        raise UsageError(f"a module named {name!r} is already imported (from {getattr(loaded, '__file__', 'built in')}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
