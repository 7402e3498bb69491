"""Targets: one small descriptor per deployment target, and the table of them.

A descriptor says everything that differs between targets: its folder in a run, its precisions, the
libraries it needs, the recipe fields only it reads, how it picks the AKConv lowering, the stages it
declares (`nodes(plan)`, exporter.pipeline.stages.graph), how a runner of its artifacts is loaded, and how its
INT8 accuracy search quantizes (targets.target.Target). The CLI, doctor, the pipeline and its checks
read these; a new target is one package here plus its name in REGISTRY.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from exporter.base.libraries import Library
from exporter.pipeline.targets.target import Flag, Target

__all__ = ["TARGETS", "Flag", "Library", "Target", "artifact_target", "load_artifact"]


# the targets: each a package exporter.pipeline.targets.<name> whose descriptor module holds its TARGET
REGISTRY = ("onnx", "openvino", "tensorrt", "onnxruntime")


def _table() -> dict[str, Target]:
    descriptors = (
        importlib.import_module(f"exporter.pipeline.targets.{name}.descriptor") for name in REGISTRY
    )
    return {d.TARGET.name: d.TARGET for d in descriptors}


TARGETS: dict[str, Target] = _table()


def artifact_target(key: str) -> Target:
    """The target of an artifact key such as 'openvino.int8'."""
    return TARGETS[key.partition(".")[0]]


def unmeasured_here(artifacts: dict[str, Path]) -> dict[str, str]:
    """Of `artifacts` (by key), those this host cannot run as they are meant to run, and why."""
    found = {key: artifact_target(key).unmeasured(key.partition(".")[2]) for key in artifacts}
    return {key: why for key, why in found.items() if why is not None}


def load_artifact(key: str, path: str | Path, threads: int = 0, plugin_library: Path | None = None):
    """A runner for the artifact `key` (e.g. 'openvino.int8') stored at `path`."""
    target, _, precision = key.partition(".")
    if target not in TARGETS:
        raise ValueError(f"no runner for artifact '{key}'")
    return TARGETS[target].load(path, precision, threads, plugin_library)
