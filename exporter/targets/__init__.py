"""Targets: one small descriptor per deployment target, and the table of them.

A descriptor says everything that differs between targets: its folder in a run, its precisions, the
libraries it needs, the recipe fields only it reads, how it picks the AKConv lowering, the stages it
builds (`build(pipeline)`), how a runner of its artifacts is loaded, and how its INT8 accuracy search
quantizes. The CLI, doctor, the pipeline and its checks read these; a new target is one module here
plus its line in TARGETS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.libraries import Library
from exporter.lowering.capability import Choice, choose
from exporter.recipe import Recipe


@dataclass(frozen=True)
class Target:
    name: str
    folder: str  # its files in a run directory ("" = the run's root)
    precisions: tuple[str, ...]
    build: Callable[[Any], dict[str, Any]]  # (pipeline) -> {"<target>.<precision>": StageResult}
    load: Callable[..., Any]  # (path, precision, threads, plugin_library) -> Runner with .infer(batch)
    akconv_auto: Callable[[int, str], Choice]  # (opset, TensorRT version) -> the lowering `auto` picks
    runs_plugin: bool = False  # whether it runs the AKConvSample plugin node
    libraries: tuple[Library, ...] = ()
    calibrated: tuple[str, ...] = ()  # precisions that need calibration images
    options: tuple[str, ...] = ()  # recipe fields that only this target reads
    # INT8 accuracy search: (onnx, calibration, method, ranges folder) -> quantizer; method from the recipe
    quantizer: Callable[..., Any] | None = None
    search_method: Callable[[Recipe], str | None] = field(default=lambda recipe: None)
    versions: Callable[[], dict[str, str]] = field(default=dict)  # its libraries' versions: cache keys
    stand_ins: dict[str, str] = field(default_factory=dict)  # stage -> label: run on CPU by eval
    # (path, batch, seconds) -> (images/s, parallel requests) by the runtime's own scheduling; None: bench
    # runs single-thread runners in parallel
    throughput: Callable[..., tuple[float, int]] | None = None
    check: Callable[[Recipe], None] = field(default=lambda recipe: None)  # refusals known before a stage

    def stage(self, name: str) -> str:
        """A per-target stage's name in the manifest ('export' for onnx, 'openvino.export', …)."""
        return f"{self.name}.{name}" if self.folder else name

    def akconv(self, recipe: Recipe) -> Choice:
        """The AKConv lowering for this target under the recipe's request."""
        spec = recipe.export
        return choose(
            spec.akconv_lowering,
            spec.opset,
            lambda: self.akconv_auto(spec.opset, recipe.tensorrt.version),
            self.name,
            self.runs_plugin,
        )


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
