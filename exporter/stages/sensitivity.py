"""Sensitivity stage: every convolution of the fused model ranked by the error it causes alone in INT8
(exporter.eval.sensitivity), on the first images of the shared calibration stream; sensitivity.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from exporter.artifacts import write_json
from exporter.data.calibration import CalibrationSet
from exporter.eval.sensitivity import layer_sensitivity
from exporter.recipe import Recipe
from exporter.stages.fuse import load_fused


def sensitivity_stage(
    recipe: Recipe, fused_pt: Path, calibration: CalibrationSet, out: Path
) -> dict[str, Any]:
    model, _ = load_fused(recipe, fused_pt)
    subset = dataclasses.replace(calibration, images=calibration.images[: recipe.int8.sensitivity_images])
    scores = layer_sensitivity(model, list(subset.batches(4)))
    layers = [s.as_dict() for s in scores]
    write_json(out, {"calibration_images": len(subset.images), "layers": layers})
    return {"calibration_images": len(subset.images), "layers": len(layers), "check": None}


def ranking(path: Path) -> list[dict[str, Any]]:
    """The layers of a sensitivity.json, most sensitive first."""
    import json

    return json.loads(path.read_text())["layers"]
