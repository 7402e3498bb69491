"""How an AKConv lowering is chosen for a target: an explicit request is checked against what the
target and the opset can run; `auto` is the target's own choice (its descriptor in exporter.pipeline.targets),
the fastest exact lowering it runs, measured by `reparam-export bench-akconv`.

GridSample exists in ONNX from opset 16 and in TensorRT's ONNX parser from 8.5; the AKConvSample
plugin implements IPluginV3 and so needs TensorRT 10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exporter.base.errors import UserError, setting

GRIDSAMPLE_MIN_OPSET = 16
TRT_GRIDSAMPLE_SINCE = (8, 5)


@dataclass(frozen=True)
class Choice:
    lowering: str
    reason: str


def gridsample_if_opset(opset: int, reason: str) -> Choice:
    """GridSample where the opset has it, else the exact gather decomposition."""
    if opset < GRIDSAMPLE_MIN_OPSET:
        return Choice("gather", f"opset {opset} has no GridSample (needs {GRIDSAMPLE_MIN_OPSET})")
    return Choice("gridsample", reason)


def choose(requested: str, opset: int, auto: Callable[[], Choice], target: str, runs_plugin: bool) -> Choice:
    """The lowering for `target` given the request ('auto' or a lowering name)."""
    if requested == "auto":
        return auto()
    if requested == "gridsample" and opset < GRIDSAMPLE_MIN_OPSET:
        raise UserError(
            f"{setting('export.akconv_lowering', 'gridsample')} needs opset >= {GRIDSAMPLE_MIN_OPSET} "
            f"(got {opset}); raise {setting('export.opset')} or use "
            f"{setting('export.akconv_lowering', 'gather')}"
        )
    if requested == "plugin" and not runs_plugin:
        raise UserError(
            f"target {target} cannot run the AKConvSample plugin; use "
            f"{setting('export.akconv_lowering', 'gridsample')} or gather"
        )
    return Choice(requested, "requested explicitly")
