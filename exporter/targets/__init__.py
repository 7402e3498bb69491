"""Targets: one small descriptor per deployment target, and the table of them.

A descriptor says everything that differs between targets: its folder in a run, its precisions, the
libraries it needs, the recipe fields only it reads, how it picks the AKConv lowering, the stages it
builds (`build(pipeline)`), how a runner of its artifacts is loaded, and how its INT8 accuracy search
quantizes (targets.target.Target). The CLI, doctor, the pipeline and its checks read these; a new target
is one package here plus its line in _table.
"""

from __future__ import annotations

from pathlib import Path

from exporter.core.libraries import Library
from exporter.targets.target import Target

__all__ = ["TARGETS", "Library", "Target", "artifact_target", "load_artifact"]


def _table() -> dict[str, Target]:
    from exporter.targets.onnx.descriptor import TARGET as ONNX
    from exporter.targets.openvino.descriptor import TARGET as OPENVINO
    from exporter.targets.tensorrt.descriptor import TARGET as TENSORRT

    return {t.name: t for t in (ONNX, OPENVINO, TENSORRT)}


TARGETS: dict[str, Target] = _table()


def artifact_target(key: str) -> Target:
    """The target of an artifact key such as 'openvino.int8'."""
    return TARGETS[key.partition(".")[0]]


def load_artifact(key: str, path: str | Path, threads: int = 0, plugin_library: Path | None = None):
    """A runner for the artifact `key` (e.g. 'openvino.int8') stored at `path`."""
    target, _, precision = key.partition(".")
    if target not in TARGETS:
        raise ValueError(f"no runner for artifact '{key}'")
    return TARGETS[target].load(path, precision, threads, plugin_library)
