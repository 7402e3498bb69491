"""The tensorrt target: engines in FP32, FP16 and INT8 (from a Q/DQ ONNX) where TensorRT and a CUDA GPU
exist; elsewhere a deferred trtexec bundle that builds the same engines on the deployment host."""

from __future__ import annotations

from pathlib import Path

from exporter.core.libraries import Library
from exporter.lowering.capability import TRT_GRIDSAMPLE_SINCE, Choice, gridsample_if_opset
from exporter.recipe import Recipe
from exporter.targets.target import Target
from exporter.targets.tensorrt import compat as trt_compat


def build(pipeline) -> dict:
    from exporter.targets.tensorrt import engine as stage

    recipe = pipeline.recipe
    model = pipeline.simplify(TARGET).output
    stage.require_compatible(model, recipe.tensorrt.version)
    models = {p: qdq(pipeline, model).output if p == "int8" else model for p in recipe.precisions}
    if recipe.tensorrt.end2end_nms:
        models = {p: end2end(pipeline, p, m).output for p, m in models.items()}
    reason = stage.unavailable()
    if reason:
        settings = stage.BundleSettings.from_recipe(recipe, reason)
        bundle = pipeline.stage(
            "tensorrt.bundle",
            "tensorrt/bundle/build_engine.sh",
            dict(models),
            settings,
            lambda out: stage.write_bundle(out, models, settings.engine, reason, settings.version),
            stage.describe_bundle,
        )
        pipeline.note(
            tensorrt={"engine": None, "deferred": True, "reason": reason, "bundle": str(bundle.output)}
        )
        return {}
    pipeline.note(tensorrt={"deferred": False})
    return {f"tensorrt.{p}": engine(pipeline, p, m) for p, m in models.items()}


def engine(pipeline, precision: str, model: Path):
    from exporter.targets.tensorrt import engine as stage

    settings = stage.EngineStageSettings.from_recipe(pipeline.recipe, precision)
    fused = pipeline.fuse().output
    plugin = settings.plugin_library  # a rebuilt plugin rebuilds engines; build_engine names a missing one
    inputs = {"onnx": model, "fused": fused, **({"plugin": plugin} if plugin and plugin.is_file() else {})}
    timing_cache = pipeline.run.root / "tensorrt" / "timing.cache"
    return pipeline.stage(
        f"tensorrt.{precision}",
        f"tensorrt/model_{precision}.engine",
        inputs,
        settings,
        lambda out: stage.engine_stage(settings, model, fused, out, timing_cache),
        stage.describe_engine,
        versions=stage.runtime_versions(),
    )


def qdq(pipeline, model: Path):
    """The Q/DQ ONNX for TensorRT explicit INT8, from the shared calibration stream."""
    from exporter.targets.tensorrt import qdq as stage

    fused = pipeline.fuse().output
    calibration = pipeline.calibration(model)
    float_nodes, searched = pipeline.float_nodes(TARGET, model)
    inputs = {"onnx": model, "fused": fused, **searched}
    settings = stage.QdqSettings.from_recipe(pipeline.recipe, calibration, float_nodes)
    ranges = pipeline.calibration_folder(model)
    return pipeline.stage(
        "tensorrt.qdq",
        "tensorrt/model.qdq.onnx",
        inputs,
        settings,
        lambda out: stage.run(settings, model, fused, out, ranges),
        stage.describe,
    )


def end2end(pipeline, precision: str, model: Path):
    """The model with EfficientNMS_TRT appended."""
    from exporter.targets.tensorrt import engine as stage

    settings = stage.End2EndSettings.from_recipe(pipeline.recipe)
    return pipeline.stage(
        f"tensorrt.end2end.{precision}",
        f"tensorrt/model.{precision}.end2end.onnx",
        {"onnx": model},
        settings,
        lambda out: stage.end2end_stage(settings, model, out),
        stage.describe_end2end,
    )


def load(path, precision: str = "fp32", threads: int = 0, plugin_library=None):
    from exporter.targets.tensorrt import runner as tensorrt

    return tensorrt.load(path, Path(plugin_library) if plugin_library else None)


def quantizer(model: Path, calibration, method: str | None, ranges_dir: Path):
    from exporter.stages.qdq import QdqQuantizer
    from exporter.targets.tensorrt.qdq import SCHEME

    note = "TensorRT latency needs TensorRT on a GPU; mAP measured with onnxruntime Q/DQ kernels"
    return QdqQuantizer(model, calibration, method, ranges_dir, SCHEME, note)


def akconv_auto(opset: int, trt_version: str) -> Choice:
    """TensorRT runs GridSample natively from 8.5; before, the exact gather decomposition (the
    AKConvSample plugin implements IPluginV3 and so needs TensorRT 10)."""
    if trt_compat.parse_trt_version(trt_version).version < TRT_GRIDSAMPLE_SINCE:
        return Choice(
            "gather",
            f"TensorRT {trt_version} predates native GridSample (8.5) and the AKConvSample plugin "
            "(IPluginV3, TensorRT 10): exact gather decomposition",
        )
    return gridsample_if_opset(opset, f"TensorRT {trt_version} parses ONNX GridSample natively (since 8.5)")


def check(recipe: Recipe) -> None:
    """What the TensorRT stages would refuse, refused before any stage runs."""
    from exporter.targets.tensorrt import engine as stage

    if recipe.tensorrt.end2end_nms:
        stage.End2EndSettings.from_recipe(recipe)


def search_method(recipe: Recipe) -> str:
    return recipe.tensorrt.calibration_method


TARGET = Target(
    name="tensorrt",
    folder="tensorrt/",
    precisions=("fp32", "fp16", "int8"),
    build=build,
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
    options=(
        "tensorrt.version",
        "tensorrt.workspace_mib",
        "tensorrt.calibration_method",
        "tensorrt.plugin_library",
        "tensorrt.end2end_nms",
        "tensorrt.max_output_boxes",
    ),
    quantizer=quantizer,
    search_method=search_method,
    check=check,
    stand_ins={"tensorrt.qdq": "tensorrt.qdq (onnxruntime)"},
)
