"""INT8 for onnxruntime's CPU kernels: a static Q/DQ ONNX (exporter.stages.qdq) with int8 weights per
output channel and uint8 activations with their own zero point (onnxruntime's CPU INT8 kernels take
uint8 activations; an asymmetric range spends no code on the negative half a ReLU or SiLU output
barely uses), the prediction convolutions and the head's decode kept in float, from the shared
calibration stream. Its error against the fused model is recorded; an output that collapsed fails."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.data.calibration import CalibrationSet
from exporter.stages import reference
from exporter.stages.qdq import Scheme, quantize_and_measure

SCHEME = Scheme("onnxruntime", "QUInt8", activation_symmetric=False)
METHOD = "minmax"  # activation ranges: the calibration images' min and max


@dataclass(frozen=True)
class Int8Settings:
    calibration: CalibrationSet
    float_nodes: tuple[str, ...]  # left without Q/DQ besides the prediction convolutions (the search's)
    method: str = METHOD


def run(
    settings: Int8Settings, onnx_path: Path, fused_pt: Path, out: Path, ranges_dir: Path
) -> dict[str, Any]:
    return quantize_and_measure(settings, onnx_path, fused_pt, out, ranges_dir, SCHEME)


def describe(record: dict[str, Any]) -> str:
    return (
        f"INT8 Q/DQ ONNX (uint8 activations, int8 weights per channel), {record['qdq_pairs']} Q/DQ pairs, "
        f"{record['calibration_images']} calibration images ({record['method']}); "
        f"{reference.describe_check(record['check'], measured=True)}"
    )
