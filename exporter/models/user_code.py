"""The user's own code (a builder, a fork's blocks): where it may be imported from, and which modules are
never the user's."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# Python's own modules (and Python 2's name for builtins, which old pickles use): never user code
STANDARD_LIBRARY = sys.stdlib_module_names | set(sys.builtin_module_names) | {"__builtin__"}


@contextlib.contextmanager
def user_modules() -> Iterator[None]:
    """The current directory importable while the user's own code (a builder, a fork's blocks) is
    imported and called: appended to sys.path, so installed libraries are always found first and a
    file planted in the directory shadows nothing; removed afterwards."""
    entry = os.getcwd()
    added = entry not in sys.path
    if added:
        sys.path.append(entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def in_standard_library(module: str) -> bool:
    return module.split(".")[0] in STANDARD_LIBRARY
