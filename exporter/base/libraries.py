"""An optional library a part of the toolchain needs (a target's backend, a model family's package), as
`doctor` lists it and as an error tells how to get it."""

from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True)
class Library:
    """A library: its distribution, import name, role, install hint, and the precisions a target cannot
    build without it (() = none, or not a target's)."""

    dist: str
    module: str
    role: str
    hint: str
    precisions: tuple[str, ...] = ()


@dataclass
class Check:
    name: str
    version: str
    usable: bool
    note: str


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_library(dist: str, module: str, role: str, hint: str) -> Check:
    version = _version(dist)
    if version is None:
        return Check(dist, "-", False, f"not installed: {hint}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # a note printed on first import (Ultralytics' settings)
            importlib.import_module(module)  # is not part of a command's output (doctor --json)
    except Exception as exc:  # noqa: BLE001 - report any import failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Check(dist, version, False, f"import failed: {type(exc).__name__}: {first[:160]}")
    return Check(dist, version, True, role)
