"""The INT8 search's trial models for OpenVINO (exporter.pipeline.stages.partial_int8)."""

from __future__ import annotations

from pathlib import Path

from exporter.base.data.calibration import CalibrationSet
from exporter.base.numerics import layer_names
from exporter.base.numerics.graph import openvino_head_tail
from exporter.pipeline.targets.openvino import ir, runtime


class TrialRunner(runtime.OpenVinoRunner):
    """An INT8 trial's compiled model and the quantization it compiled."""

    def __init__(self, quantized: ir.Quantized, hint: str):
        super().__init__(quantized.model, hint)
        self.quantized = quantized


class OpenVinoQuantizer:
    """FP32 and INT8 OpenVINO models of one ONNX, INT8 with extra convolutions kept in float."""

    backend = "openvino"
    latency_note = None  # the trial models are timed here, on this CPU

    def __init__(self, onnx_path: Path, calibration: CalibrationSet, preset: str, int8_float: str = "f32"):
        """`int8_float`: what an INT8 model's float layers compute in, as the build's INT8 IR will."""
        self.onnx_path, self.calibration = onnx_path, calibration
        self.preset, self.int8_float = preset, int8_float
        model = self.convert()
        self.graph_index = layer_names.openvino_convs(model)
        self.always_float = set(openvino_head_tail(model))

    def convert(self):
        return runtime.convert(self.onnx_path)

    def runner(self, float_nodes: list[str] | None):
        """The FP32 model (None) or the INT8 model with `float_nodes` in float too."""
        if float_nodes is None:
            return runtime.OpenVinoRunner(self.convert())
        quantized = ir.quantize(self.convert(), self.calibration, tuple(float_nodes), self.preset)
        return TrialRunner(quantized, runtime.hint("int8", self.int8_float))

    def keep(self, runner: TrialRunner, float_nodes: list[str]) -> None:
        """The search chose `runner`'s model: the INT8 stage takes it instead of quantizing it again."""
        ir.keep(self.onnx_path, self.calibration, tuple(float_nodes), self.preset, runner.quantized)
