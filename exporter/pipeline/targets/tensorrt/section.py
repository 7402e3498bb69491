"""The tensorrt target's recipe section (`tensorrt:`): the same for the Python engine builder and the
deferred trtexec bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from exporter.base.strict import Strict, flagged


class TensorRTSpec(Strict):
    """`version`: the TensorRT the engine is built with (it decides the AKConv lowering and the op
    compatibility rules). `plugin_library`: libakconv_plugin.so, for graphs lowered with the AKConv plugin.
    `end2end_nms`: append EfficientNMS_TRT (corner box coding) to the decoded scores and boxes."""

    version: str = flagged("10.x", "--trt-version", "TensorRT the engine is for, e.g. 8.6 or 10.x")
    workspace_mib: int = Field(4096, ge=64)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    plugin_library: Path | None = None
    end2end_nms: bool = False
    max_output_boxes: int = Field(100, ge=1)


SECTION = TensorRTSpec
