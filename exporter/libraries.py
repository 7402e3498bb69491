"""An optional library a part of the toolchain needs (a target's backend, a model family's package), as
`doctor` lists it and as an error tells how to get it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Library:
    """A library: its distribution, import name, role, install hint, and the precisions a target cannot
    build without it (() = none, or not a target's)."""

    dist: str
    module: str
    role: str
    hint: str
    precisions: tuple[str, ...] = ()
