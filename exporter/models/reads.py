"""The files a model builder reads (a checkpoint it loads itself, a config it parses), seen through
Python's audit hook, so a cached stage is rebuilt when one of them changes.

Files of the Python installation, of installed packages and of this package are left out: their
versions are tracked separately, and the builder's own source is hashed by exporter.models.loader.
"""

from __future__ import annotations

import contextlib
import site
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

_listeners: list[set[Path]] = []


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _listeners:
        return
    path, mode = args[0], args[1]
    if not isinstance(path, (str, Path)) or (mode and any(c in str(mode) for c in "wax+")):
        return
    for found in _listeners:
        found.add(Path(path))


_installed = False


def _install() -> None:
    global _installed
    if not _installed:  # an audit hook cannot be removed: one for the process, idle without listeners
        sys.addaudithook(_audit)
        _installed = True


def _installation() -> tuple[Path, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    roots.update(site.getsitepackages() + [site.getusersitepackages()])
    roots.add(str(Path(__file__).parents[1]))
    return tuple(Path(r).resolve() for r in roots if r)


def _watched(path: Path, installation: tuple[Path, ...]) -> bool:
    if "__pycache__" in path.parts or not path.is_file():
        return False
    return not any(path.is_relative_to(root) for root in installation)


@contextlib.contextmanager
def files_read() -> Iterator[list[Path]]:
    """Collect, into the yielded list (filled on exit), the user files opened for reading inside."""
    _install()
    found: set[Path] = set()
    _listeners.append(found)
    result: list[Path] = []
    try:
        yield result
    finally:
        _listeners.remove(found)
        installation = _installation()
        resolved = {p.resolve() for p in found}
        result.extend(sorted(p for p in resolved if _watched(p, installation)))
