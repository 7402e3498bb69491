"""The onnx target: the simplified FP32 ONNX, checked with onnxruntime (its files at the run's root)."""

from __future__ import annotations

from exporter.blocks.lowering.capability import Choice
from exporter.pipeline.targets.target import Target


def nodes(plan) -> dict:
    return {"onnx.fp32": plan.simplified(TARGET)}


def load(path, precision: str = "fp32", threads: int = 0, section=None):
    from exporter.pipeline.stages import ort_runner as onnxruntime

    return onnxruntime.load(path, threads)


def akconv_auto(opset: int, section=None) -> Choice:
    """Measured on x86 CPU (`reparam-export bench-akconv`): gather is the faster exact lowering."""
    return Choice("gather", "onnxruntime CPU runs the gather decomposition faster than GridSample")


TARGET = Target(
    name="onnx",
    folder="",
    precisions=("fp32",),
    nodes=nodes,
    load=load,
    akconv_auto=akconv_auto,
    runs_plugin=True,  # its CPU reference kernel (exporter.blocks.lowering.ort_ops)
)
