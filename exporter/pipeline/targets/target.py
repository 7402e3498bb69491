"""A target's descriptor: everything that differs between deployment targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exporter.base.libraries import Library
from exporter.blocks.lowering.capability import Choice, choose
from exporter.pipeline.recipe import Recipe


@dataclass(frozen=True)
class Flag:
    """A command-line option a target adds to the commands that build: the recipe field it sets."""

    flag: str  # '--trt-version'
    field: str  # 'tensorrt.version', one of the target's options
    help: str  # the default is appended
    choices: tuple[str, ...] = ()  # the values it takes, where they are few


@dataclass(frozen=True)
class Target:
    name: str
    folder: str  # its files in a run directory ("" = the run's root)
    precisions: tuple[str, ...]
    nodes: Callable[[Any], dict[str, Any]]  # (targets.plan.Plan) -> {"<target>.<precision>": its Node}
    load: Callable[..., Any]  # (path, precision, threads, plugin_library) -> Runner with .infer(batch)
    akconv_auto: Callable[[int, str], Choice]  # (opset, TensorRT version) -> the lowering `auto` picks
    runs_plugin: bool = False  # whether it runs the AKConvSample plugin node
    libraries: tuple[Library, ...] = ()
    calibrated: tuple[str, ...] = ()  # precisions that need calibration images
    options: tuple[str, ...] = ()  # recipe fields that only this target reads
    flags: tuple[Flag, ...] = ()  # its command-line options, each setting one of `options`
    # INT8 accuracy search: (onnx, calibration, method, ranges folder) -> quantizer; method from the recipe
    quantizer: Callable[..., Any] | None = None
    search_method: Callable[[Recipe], str | None] = field(default=lambda recipe: None)
    versions: Callable[[], dict[str, str]] = field(default=dict)  # its libraries' versions: cache keys
    stand_ins: dict[str, str] = field(default_factory=dict)  # stage -> label: run on CPU by eval
    # (path, batch, seconds) -> (images/s, parallel requests) by the runtime's own scheduling; None: bench
    # runs single-thread runners in parallel
    throughput: Callable[..., tuple[float, int]] | None = None
    check: Callable[[Recipe], None] = field(default=lambda recipe: None)  # refusals known before a stage
    capabilities: Callable[[], str | None] = field(default=lambda: None)  # what its runtime computes here
    # (precision) -> why an artifact of it cannot be measured on this host (None: it can)
    unmeasured: Callable[[str], str | None] = field(default=lambda precision: None)

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
