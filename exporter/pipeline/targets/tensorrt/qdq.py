"""Explicit INT8 for TensorRT: the Q/DQ ONNX (exporter.pipeline.stages.qdq) in TensorRT's form, int8 only and
symmetric (every zero point 0), from the shared calibration stream; its error measured with onnxruntime's
Q/DQ kernels, the CPU stand-in of the engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.base.data.calibration import CalibrationSet
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.qdq import QdqRecord, Scheme, quantize_and_measure

SCHEME = Scheme("tensorrt", "QInt8", activation_symmetric=True)


@dataclass(frozen=True)
class QdqSettings:
    method: str  # tensorrt.calibration_method
    calibration: CalibrationSet
    float_nodes: tuple[str, ...]  # left without Q/DQ besides the prediction convolutions (the search's)

    @classmethod
    def from_recipe(
        cls, recipe: Recipe, calibration: CalibrationSet, float_nodes: tuple[str, ...] = ()
    ) -> QdqSettings:
        return cls(
            recipe.tensorrt.calibration_method,
            calibration,
            tuple(float_nodes),
        )


@dataclass(frozen=True)
class QdqOnnxRecord(QdqRecord):
    def describe(self) -> str:
        return (
            f"Q/DQ ONNX, {self.qdq_pairs} Q/DQ pairs, {self.calibration_images} calibration images "
            f"({self.method}); onnxruntime {reference.describe_check(self.check, measured=True)}"
        )


def run(
    settings: QdqSettings, onnx_path: Path, fused_pt: Path, out: Path, ranges_dir: Path | None = None
) -> QdqOnnxRecord:
    """The Q/DQ model in TensorRT's form and its error (stages.qdq.quantize_and_measure).
    `ranges_dir`: where the activation ranges are cached (see stages.qdq.quantize_qdq)."""
    return QdqOnnxRecord(**quantize_and_measure(settings, onnx_path, fused_pt, out, ranges_dir, SCHEME))
