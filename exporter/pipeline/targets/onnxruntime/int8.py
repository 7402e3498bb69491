"""INT8 for onnxruntime's CPU kernels: a static Q/DQ ONNX (exporter.pipeline.stages.qdq) with int8 weights per
output channel and uint8 activations with their own zero point (onnxruntime's CPU INT8 kernels take
uint8 activations; an asymmetric range spends no code on the negative half a ReLU or SiLU output
barely uses), the prediction convolutions and the head's decode kept in float, from the shared
calibration stream. Its error against the fused model is recorded; an output that collapsed fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.base.data.calibration import CalibrationSet
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.qdq import QdqRecord, Scheme, quantize_and_measure

SCHEME = Scheme("onnxruntime", "QUInt8", activation_symmetric=False)
METHOD = "minmax"  # activation ranges: the calibration images' min and max


@dataclass(frozen=True)
class Int8Settings:
    calibration: CalibrationSet
    float_nodes: tuple[str, ...]  # left without Q/DQ besides the prediction convolutions (the search's)
    method: str = METHOD


@dataclass(frozen=True)
class Int8Record(QdqRecord):
    def describe(self) -> str:
        return (
            f"INT8 Q/DQ ONNX (uint8 activations, int8 weights per channel), {self.qdq_pairs} Q/DQ pairs, "
            f"{self.calibration_images} calibration images ({self.method}); "
            f"{reference.describe_check(self.check, measured=True)}"
        )


def run(settings: Int8Settings, onnx_path: Path, fused_pt: Path, out: Path, ranges_dir: Path) -> Int8Record:
    return Int8Record(**quantize_and_measure(settings, onnx_path, fused_pt, out, ranges_dir, SCHEME))
