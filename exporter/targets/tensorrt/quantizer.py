"""The INT8 search's trial models for TensorRT: Q/DQ ONNX scored with onnxruntime's Q/DQ kernels
(exporter.stages.partial_int8)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from exporter.data.calibration import CalibrationSet
from exporter.numerics import layer_names
from exporter.numerics.graph import onnx_prediction_convs
from exporter.stages import ort_runner
from exporter.targets.tensorrt import qdq


class QdqQuantizer:
    """The FP32 ONNX and its Q/DQ models (onnxruntime kernels), with extra Convs left without Q/DQ."""

    backend = "tensorrt"
    latency_note = "TensorRT latency needs TensorRT on a GPU; mAP measured with onnxruntime Q/DQ kernels"

    def __init__(self, onnx_path: Path, calibration: CalibrationSet, method: str, ranges_dir: Path):
        self.onnx_path = onnx_path
        self.calibration = calibration
        self.method = method
        self.ranges_dir = ranges_dir
        graph = onnx.load(str(onnx_path))
        self.graph_index = layer_names.onnx_convs(graph)
        self.always_float = set(onnx_prediction_convs(graph))

    def runner(self, float_nodes: list[str] | None):
        """The FP32 model (None) or the Q/DQ model with `float_nodes` left without Q/DQ too."""
        if float_nodes is None:
            return ort_runner.load(self.onnx_path)
        with tempfile.TemporaryDirectory(prefix="qdq-trial-") as tmp:
            out = Path(tmp) / "model.qdq.onnx"
            qdq.quantize_detector(
                self.onnx_path, out, self.calibration, self.method, float_nodes, self.ranges_dir
            )
            return ort_runner.load(out)
