"""The onnxruntime target: the simplified FP32 ONNX and a static INT8 Q/DQ ONNX tuned for onnxruntime's
CPU kernels, the runtime edge devices run on ARM and x86 CPUs."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from exporter.base.libraries import Library
from exporter.pipeline.stages.graph import Node
from exporter.pipeline.targets.onnx.descriptor import (  # the same runtime as the onnx target's
    akconv_auto,
    load,
)
from exporter.pipeline.targets.plan import float_nodes
from exporter.pipeline.targets.target import Target


def nodes(plan) -> dict:
    model = plan.simplified(TARGET)
    return {f"onnxruntime.{p}": model if p == "fp32" else int8(plan) for p in plan.recipe.precisions}


def int8(plan) -> Node:
    """The INT8 Q/DQ ONNX, with the search's float layers when a budget is set."""
    from exporter.pipeline.targets.onnxruntime import int8 as stage

    calibration = plan.calibration_set
    return Node(
        "onnxruntime.int8",
        "onnxruntime/model_int8.onnx",
        plan.calibrated(stage.run),
        stage.Int8Record,
        lambda upstream: stage.Int8Settings(calibration, float_nodes(upstream)),
        reads=plan.int8_reads(TARGET),
        versions=versions,
    )


def quantizer(model: Path, calibration, method: str | None, ranges_dir: Path):
    from exporter.pipeline.stages.qdq import QdqQuantizer
    from exporter.pipeline.targets.onnxruntime.int8 import SCHEME

    return QdqQuantizer(model, calibration, method, ranges_dir, SCHEME, latency_note=None)


def search_method(recipe) -> str:
    from exporter.pipeline.targets.onnxruntime.int8 import METHOD

    return METHOD


def versions() -> dict[str, str]:
    return {"onnxruntime": version("onnxruntime")}


TARGET = Target(
    name="onnxruntime",
    folder="onnxruntime/",
    precisions=("fp32", "int8"),
    nodes=nodes,
    load=load,
    akconv_auto=akconv_auto,
    runs_plugin=True,  # its CPU reference kernel (exporter.blocks.lowering.ort_ops)
    libraries=(Library("onnxruntime", "onnxruntime", "onnxruntime target", "pip install onnxruntime"),),
    calibrated=("int8",),
    quantizer=quantizer,
    search_method=search_method,
    versions=versions,
)
