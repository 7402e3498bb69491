"""The user's own code (a builder, a fork's blocks): where it may be imported from, which modules are
never the user's, and which builders a recipe may name."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import site
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

# Python's own modules (and Python 2's name for builtins, which old pickles use): never user code
STANDARD_LIBRARY = sys.stdlib_module_names | set(sys.builtin_module_names) | {"__builtin__"}
# the model libraries a builder may come from without being trusted, each by the namespace of its models:
# this package's builders, timm's and torchvision's model constructors, Ultralytics' model classes
MODEL_LIBRARIES = {
    "exporter": "exporter.models",
    "timm": "timm.models",
    "torchvision": "torchvision.models",
    "ultralytics": "ultralytics.nn",
}
FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"  # torch.load unpickles nothing but tensors while set


@contextlib.contextmanager
def user_modules() -> Iterator[None]:
    """While the user's own code (a builder, a fork's blocks) is imported and called: the current
    directory importable, appended to sys.path, so installed libraries are always found first and a file
    planted in the directory shadows nothing; and every torch.load weights-only, whatever its caller
    asks (never a pickle's code run through a builder). Both undone afterwards."""
    entry = os.getcwd()
    added = entry not in sys.path
    if added:
        sys.path.append(entry)
    forced = os.environ.get(FORCE_WEIGHTS_ONLY)
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)
        if forced is None:
            os.environ.pop(FORCE_WEIGHTS_ONLY, None)
        else:
            os.environ[FORCE_WEIGHTS_ONLY] = forced


def in_standard_library(module: str) -> bool:
    return module.split(".")[0] in STANDARD_LIBRARY


def in_model_library(module: str) -> bool:
    """Whether `module` is inside the namespace of models of one of MODEL_LIBRARIES."""
    namespace = MODEL_LIBRARIES.get(module.split(".")[0], "")
    return bool(namespace) and (module == namespace or module.startswith(f"{namespace}."))


def installed_library(package: str) -> bool:
    """Whether the top-level `package` is an installed library (found in site-packages) rather than the
    user's own code (the current directory, PYTHONPATH, an editable install's sources); found without
    importing it."""
    with user_modules():
        spec = importlib.util.find_spec(package)
    if spec is None:
        return False
    found = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    paths = sysconfig.get_paths()
    libraries = {*site.getsitepackages(), site.getusersitepackages(), paths["purelib"], paths["platlib"]}
    folders = [Path(p).resolve() for p in libraries if p and Path(p).is_dir()]
    return any(Path(f).resolve().is_relative_to(folder) for f in found for folder in folders)
