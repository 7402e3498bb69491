"""The tensorrt target: engines in FP32, FP16 and INT8 (from a Q/DQ ONNX) where TensorRT and a CUDA GPU
exist; elsewhere a deferred trtexec bundle that builds the same engines on the deployment host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporter.base.libraries import Library
from exporter.blocks.lowering.capability import TRT_GRIDSAMPLE_SINCE, Choice, gridsample_if_opset
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages.graph import Call, Node, fixed
from exporter.pipeline.targets.plan import float_nodes
from exporter.pipeline.targets.target import Target
from exporter.pipeline.targets.tensorrt.section import TensorRTSpec


def nodes(plan) -> dict:
    from exporter.pipeline.targets.tensorrt import engine as stage

    recipe = plan.recipe
    model = plan.simplified(TARGET)
    models = {p: qdq(plan) if p == "int8" else model for p in recipe.precisions}
    if recipe.tensorrt.end2end_nms:
        models = {p: end2end(plan, p, m) for p, m in models.items()}
    reason = stage.unavailable()
    if reason:
        settings = stage.BundleSettings.from_recipe(recipe, reason)
        bundle = Node(
            "tensorrt.bundle",
            "tensorrt/bundle/build_engine.sh",
            lambda call: stage.write_bundle(
                call.output, {p: call.inputs[p] for p in models}, settings.engine, reason, settings.version
            ),
            stage.BundleRecord,
            fixed(settings),
            reads=models,
        )
        plan.defer(TARGET, "TensorRT engine", "TensorRT", reason, bundle)
        return {}
    return {f"tensorrt.{p}": engine(plan, p, m) for p, m in models.items()}


def checked(run: Callable[[Call], dict], version: str) -> Callable[[Call], dict]:
    """`run`, after refusing an input model this TensorRT version cannot parse (before any work)."""

    def run_checked(call: Call) -> dict:
        from exporter.pipeline.targets.tensorrt.engine import require_compatible

        require_compatible(call.inputs["onnx"], version)
        return run(call)

    return run_checked


def engine(plan, precision: str, model: Node) -> Node:
    from exporter.pipeline.targets.tensorrt import engine as stage

    settings = stage.EngineStageSettings.from_recipe(plan.recipe, precision)
    plugin = settings.plugin_library  # a rebuilt plugin rebuilds engines; build_engine names a missing one
    timing_cache = plan.root / "tensorrt" / "timing.cache"
    return Node(
        f"tensorrt.{precision}",
        f"tensorrt/model_{precision}.engine",
        lambda call: stage.engine_stage(
            call.settings, call.inputs["onnx"], call.inputs["fused"], call.output, timing_cache
        ),
        stage.EngineRecord,
        fixed(settings),
        reads={"onnx": model, "fused": plan.fuse},
        files={"plugin": plugin} if plugin and plugin.is_file() else {},
        versions=stage.runtime_versions,
    )


def qdq(plan) -> Node:
    """The Q/DQ ONNX for TensorRT explicit INT8, from the shared calibration stream."""
    from exporter.pipeline.targets.tensorrt import qdq as stage

    recipe = plan.recipe
    calibration = plan.calibration_set
    return Node(
        "tensorrt.qdq",
        "tensorrt/model.qdq.onnx",
        checked(plan.calibrated(stage.run), recipe.tensorrt.version),
        stage.QdqOnnxRecord,
        lambda upstream: stage.QdqSettings.from_recipe(recipe, calibration, float_nodes(upstream)),
        reads=plan.int8_reads(TARGET),
    )


def end2end(plan, precision: str, model: Node) -> Node:
    """The model with EfficientNMS_TRT appended."""
    from exporter.pipeline.targets.tensorrt import engine as stage

    settings = stage.End2EndSettings.from_recipe(plan.recipe)
    return Node(
        f"tensorrt.end2end.{precision}",
        f"tensorrt/model.{precision}.end2end.onnx",
        checked(
            lambda call: stage.end2end_stage(call.settings, call.inputs["onnx"], call.output),
            plan.recipe.tensorrt.version,
        ),
        stage.End2EndRecord,
        fixed(settings),
        reads={"onnx": model},
    )


def load(path, precision: str = "fp32", threads: int = 0, section: TensorRTSpec | None = None):
    from exporter.pipeline.targets.tensorrt import runner as tensorrt

    return tensorrt.load(path, section.plugin_library if section else None)


def quantizer(model: Path, calibration, method: str | None, ranges_dir: Path):
    from exporter.pipeline.stages.qdq import QdqQuantizer
    from exporter.pipeline.targets.tensorrt.qdq import SCHEME

    note = "TensorRT latency needs TensorRT on a GPU; mAP measured with onnxruntime Q/DQ kernels"
    return QdqQuantizer(model, calibration, method, ranges_dir, SCHEME, note)


def akconv_auto(opset: int, section: TensorRTSpec) -> Choice:
    """TensorRT runs GridSample natively from 8.5; before, the exact gather decomposition (the
    AKConvSample plugin implements IPluginV3 and so needs TensorRT 10)."""
    from exporter.pipeline.targets.tensorrt import compat as trt_compat  # reads ONNX: imported when used

    trt_version = section.version
    if trt_compat.parse_trt_version(trt_version).version < TRT_GRIDSAMPLE_SINCE:
        return Choice(
            "gather",
            f"TensorRT {trt_version} predates native GridSample (8.5) and the AKConvSample plugin "
            "(IPluginV3, TensorRT 10): exact gather decomposition",
        )
    return gridsample_if_opset(opset, f"TensorRT {trt_version} parses ONNX GridSample natively (since 8.5)")


def check(recipe: Recipe) -> None:
    """What the TensorRT stages would refuse, refused before any stage runs."""
    from exporter.pipeline.targets.tensorrt import engine as stage

    if recipe.tensorrt.end2end_nms:
        stage.End2EndSettings.from_recipe(recipe)


def search_method(recipe: Recipe) -> str:
    return recipe.tensorrt.calibration_method


TARGET = Target(
    name="tensorrt",
    folder="tensorrt/",
    precisions=("fp32", "fp16", "int8"),
    nodes=nodes,
    load=load,
    akconv_auto=akconv_auto,
    runs_plugin=True,
    libraries=(
        Library(
            "tensorrt",
            "tensorrt",
            "TensorRT engine target",
            "install TensorRT 10 from NVIDIA on the GPU host (its runtime libraries are not on PyPI)",
        ),
    ),
    calibrated=("int8",),
    section=TensorRTSpec,
    quantizer=quantizer,
    search_method=search_method,
    check=check,
    stand_ins={"tensorrt.qdq": "tensorrt.qdq (onnxruntime)"},
    detections=lambda section: section.end2end_nms,  # EfficientNMS_TRT appended
)
