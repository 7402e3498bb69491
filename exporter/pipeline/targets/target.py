"""A target's descriptor: everything that differs between deployment targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from exporter.base.libraries import Library
from exporter.base.strict import Strict
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
    load: Callable[..., Any]  # (path, precision, threads, section) -> Runner with .infer(batch)
    akconv_auto: Callable[[int, Any], Choice]  # (opset, section) -> the lowering `auto` picks
    # its recipe section (recipe.<name>; the package's section.SECTION), read by the callables given
    # `section`; its fields are the recipe fields only this target reads
    section: type[Strict] | None = None
    runs_plugin: bool = False  # whether it runs the AKConvSample plugin node
    libraries: tuple[Library, ...] = ()
    calibrated: tuple[str, ...] = ()  # precisions that need calibration images
    # INT8 accuracy search: (onnx, calibration, method, ranges folder) -> quantizer; method from the recipe
    quantizer: Callable[..., Any] | None = None
    search_method: Callable[[Recipe], str | None] = field(default=lambda recipe: None)
    versions: Callable[[], dict[str, str]] = field(default=dict)  # its libraries' versions: cache keys
    stand_ins: dict[str, str] = field(default_factory=dict)  # stage -> label: run on CPU by eval
    # (section) -> whether its artifacts output final detections (NMS inside), which eval reads as such
    detections: Callable[[Any], bool] = field(default=lambda section: False)
    # (path, batch, seconds) -> (images/s, parallel requests) by the runtime's own scheduling; None: bench
    # runs single-thread runners in parallel
    throughput: Callable[..., tuple[float, int]] | None = None
    check: Callable[[Recipe], None] = field(default=lambda recipe: None)  # refusals known before a stage
    capabilities: Callable[[], str | None] = field(default=lambda: None)  # what its runtime computes here
    # (precision, path) -> why the artifact at path cannot be measured on this host (None: it can)
    unmeasured: Callable[[str, Path], str | None] = field(default=lambda precision, path: None)

    def stage(self, name: str) -> str:
        """A per-target stage's name in the manifest ('export' for onnx, 'openvino.export', …)."""
        return f"{self.name}.{name}" if self.folder else name

    def settings(self, recipe: Recipe | None = None) -> Strict | None:
        """Its section of `recipe` (of the default recipe if None); None for a target without one."""
        if self.section is None:
            return None
        return self.section() if recipe is None else getattr(recipe, self.name)

    @property
    def options(self) -> tuple[str, ...]:
        """The recipe fields that only this target reads: its section's."""
        fields = self.section.model_fields if self.section else {}
        return tuple(f"{self.name}.{name}" for name in fields)

    @property
    def flags(self) -> tuple[Flag, ...]:
        """Its command-line options: the fields of its section that name a flag (base.strict.flagged)."""
        found = []
        for name, info in (self.section.model_fields if self.section else {}).items():
            flag = (info.json_schema_extra or {}).get("flag")
            if flag:
                literal = get_origin(info.annotation) is Literal
                choices = tuple(get_args(info.annotation)) if literal else ()
                found.append(Flag(flag, f"{self.name}.{name}", info.description or "", choices))
        return tuple(found)

    def akconv(self, recipe: Recipe) -> Choice:
        """The AKConv lowering for this target under the recipe's request."""
        spec = recipe.export
        return choose(
            spec.akconv_lowering,
            spec.opset,
            lambda: self.akconv_auto(spec.opset, self.settings(recipe)),
            self.name,
            self.runs_plugin,
        )
