"""Sensitivity stage: every convolution of the fused model ranked by the error it causes alone in INT8
(exporter.base.numerics.int8_sensitivity), on the first images of the shared calibration stream;
sensitivity.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.base.artifacts import write_json
from exporter.base.data.calibration import CalibrationSet
from exporter.base.numerics.int8_sensitivity import layer_sensitivity
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record


@dataclass(frozen=True)
class SensitivitySettings:
    calibration: CalibrationSet  # the first int8.sensitivity_images of the calibration set

    @classmethod
    def from_recipe(cls, recipe: Recipe, calibration: CalibrationSet) -> SensitivitySettings:
        return cls(calibration.subset(recipe.int8.sensitivity_images))


@dataclass(frozen=True)
class SensitivityRecord(Record):
    calibration_images: int
    layers: int  # convolutions ranked
    check: None = None  # a measurement: nothing to hold against a tolerance

    def describe(self) -> str:
        return f"{self.layers} convolutions ranked on {self.calibration_images} calibration images"


def run(settings: SensitivitySettings, fused_pt: Path, out: Path) -> SensitivityRecord:
    model, _ = reference.load_fused(fused_pt)
    images = settings.calibration
    layers = [s.as_dict() for s in layer_sensitivity(model, list(images.batches(4)))]
    write_json(out, {"calibration_images": len(images.images), "layers": layers})
    return SensitivityRecord(len(images.images), len(layers))


def ranking(path: Path) -> list[dict[str, Any]]:
    """The layers of a sensitivity.json, most sensitive first."""
    return json.loads(path.read_text())["layers"]
