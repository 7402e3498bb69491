"""The table of the registered targets' descriptors (registry.REGISTRY), and what is read through it."""

from __future__ import annotations

import importlib
from pathlib import Path

from exporter.pipeline.targets.registry import REGISTRY
from exporter.pipeline.targets.target import Target


def _table() -> dict[str, Target]:
    descriptors = (importlib.import_module(f"{package}.descriptor") for package in REGISTRY)
    return {d.TARGET.name: d.TARGET for d in descriptors}


TARGETS: dict[str, Target] = _table()


def artifact_target(key: str) -> Target:
    """The target of an artifact key such as 'openvino.int8'."""
    return TARGETS[key.partition(".")[0]]


def unmeasured_here(artifacts: dict[str, Path]) -> dict[str, str]:
    """Of `artifacts` (by key), those this host cannot run as they are meant to run, and why."""
    found = {
        key: artifact_target(key).unmeasured(key.partition(".")[2], path) for key, path in artifacts.items()
    }
    return {key: why for key, why in found.items() if why is not None}


def load_artifact(key: str, path: str | Path, threads: int = 0, section=None):
    """A runner for the artifact `key` (e.g. 'openvino.int8') stored at `path`; `section`: its target's
    recipe section (the default one if None)."""
    target, _, precision = key.partition(".")
    if target not in TARGETS:
        raise ValueError(f"no runner for artifact '{key}'")
    descriptor = TARGETS[target]
    return descriptor.load(path, precision, threads, descriptor.settings() if section is None else section)
