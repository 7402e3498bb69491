"""The openvino target: IR in FP32, FP16 (compressed weights) and INT8 (NNCF), on x86 CPUs."""

from __future__ import annotations

from pathlib import Path

from exporter.base.errors import UserError, setting
from exporter.base.libraries import Library
from exporter.blocks.lowering.capability import Choice, gridsample_if_opset
from exporter.models.families import family
from exporter.pipeline.stages.graph import Call, Node, fixed
from exporter.pipeline.targets.openvino.section import OpenVinoSpec
from exporter.pipeline.targets.plan import float_nodes
from exporter.pipeline.targets.target import Target

HINT = "pip install 'reparam-export[openvino]'"


def nodes(plan) -> dict:
    return {f"openvino.{p}": ir(plan, p) for p in plan.recipe.precisions}


def ir(plan, precision: str) -> Node:
    """The IR of `precision` (INT8: calibrated, with the search's float layers when a budget is set)."""
    from exporter.pipeline.targets.openvino import ir as stage

    recipe = plan.recipe
    int8 = precision == "int8"
    calibration = plan.calibration_set if int8 else None
    reads = plan.int8_reads(TARGET) if int8 else {"onnx": plan.simplified(TARGET), "fused": plan.fuse}

    def run(call: Call) -> dict:
        model = call.inputs["onnx"]
        if int8:
            plan.ranges(model)  # the calibration images' record beside the other INT8 caches
        return stage.run(call.settings, model, call.inputs["fused"], call.output)

    node = Node(
        f"openvino.{precision}",
        f"openvino/model_{precision}.xml",
        run,
        stage.IrRecord,
        lambda upstream: stage.IrSettings.from_recipe(recipe, precision, calibration, float_nodes(upstream)),
        reads=reads,
        companions=(".bin",),
        versions=versions,
    )
    metadata = family(recipe.model.adapter).metadata(
        recipe.model.ref(), list(recipe.class_names), tuple(recipe.input_size)
    )
    if metadata:  # the family's own predictor (Ultralytics') loads a folder of its layout
        plan.extras.append(
            Node(
                f"openvino.{precision}.package",
                f"openvino/model_{precision}_openvino_model/model_{precision}.xml",
                lambda call: stage.package(call.inputs["ir"], call.settings, call.output),
                stage.PackageRecord,
                fixed(metadata),
                reads={"ir": node},
                companions=(".bin",),
            )
        )
    return node


def load(path, precision: str = "fp32", threads: int = 0, section=None):
    from exporter.pipeline.targets.openvino import runtime as openvino

    return openvino.load(path, precision, threads)


def throughput(path, batch, seconds: float) -> tuple[float, int]:
    """OpenVINO's THROUGHPUT streams with its optimal number of async requests."""
    from exporter.pipeline.targets.openvino import runtime as openvino

    return openvino.throughput(path, batch, seconds)


BF16_FLOATS = ", float layers bf16"  # search_method's suffix where INT8's float layers compute in bf16


def quantizer(model: Path, calibration, method: str | None, ranges_dir: Path):
    from exporter.pipeline.targets.openvino.quantizer import OpenVinoQuantizer

    preset = method.removesuffix(BF16_FLOATS)  # search_method's
    return OpenVinoQuantizer(model, calibration, preset, "f32" if preset == method else "bf16")


def search_method(recipe) -> str:
    """The INT8 search quantizes and runs its trials as the build will: with the recipe's NNCF preset, its
    float layers computed in bf16 where openvino.int8_float says so ('mixed, float layers bf16')."""
    section = recipe.openvino
    return section.int8_preset + (BF16_FLOATS if section.int8_float == "bf16" else "")


def versions() -> dict[str, str]:
    from exporter.pipeline.targets.openvino.ir import library_versions

    return library_versions()


def check(recipe) -> None:
    """An IR computed in bf16 is built where it runs, on a CPU whose OpenVINO computes bf16 natively,
    unless it is built for another host; an INT8 search for one scores its trials there."""
    from exporter.pipeline.targets.openvino import runtime

    section = recipe.openvino
    bf16_floats = section.int8_float == "bf16" and "int8" in recipe.precisions
    why = runtime.unmeasured("bf16") if bf16_floats or "bf16" in recipe.precisions else None
    if not why:
        return
    if bf16_floats and recipe.int8.accuracy_budget is not None:
        raise UserError(
            f"the INT8 search scores its trials as the IR runs them, and INT8 float layers in bf16 need a "
            f"CPU with AVX-512 BF16 or AMX ({why}), even for another host: search on such a host, leave "
            f"out {setting('int8.accuracy_budget')}, or pass {setting('openvino.int8_float', 'f32')}"
        )
    if section.bf16_for == "another-host":
        return
    asked = {  # what needs bf16, and the alternative
        "precision bf16 needs": ("bf16" in recipe.precisions, setting("precisions", "fp16")),
        "INT8 float layers in bf16 need": (bf16_floats, setting("openvino.int8_float", "f32")),
    }
    for what, (needed, instead) in asked.items():
        if needed:
            raise UserError(
                f"{what} a CPU with AVX-512 BF16 or AMX ({why}): build it on such a host, pass "
                f"{setting('openvino.bf16_for', 'another-host')} to build it here for one (not measured "
                f"here), or pass {instead}"
            )


def unmeasured(precision: str, path) -> str | None:
    """Why the artifact at `path` cannot be measured here (it computes in bf16, this CPU does not)."""
    from exporter.pipeline.targets.openvino import runtime

    return runtime.unmeasured(runtime.read(path, precision)[1])


def capabilities() -> str | None:
    """The precisions OpenVINO's CPU plugin says it computes on this CPU (None without OpenVINO)."""
    from exporter.pipeline.targets.openvino import runtime

    try:
        return f"CPU plugin computes {runtime.cpu_capabilities()}"
    except ImportError:
        return None


def akconv_auto(opset: int, section) -> Choice:
    """Measured on x86 CPU (`reparam-export bench-akconv`): GridSample is the faster exact lowering."""
    return gridsample_if_opset(opset, "OpenVINO CPU runs GridSample faster than the gather decomposition")


TARGET = Target(
    name="openvino",
    folder="openvino/",
    precisions=("fp32", "fp16", "bf16", "int8"),
    nodes=nodes,
    load=load,
    akconv_auto=akconv_auto,
    libraries=(
        Library("openvino", "openvino", "OpenVINO IR target", HINT, ("fp32", "fp16", "bf16", "int8")),
        Library("nncf", "nncf", "OpenVINO INT8 calibration", HINT, ("int8",)),
    ),
    calibrated=("int8",),
    section=OpenVinoSpec,
    quantizer=quantizer,
    search_method=search_method,
    versions=versions,
    throughput=throughput,
    check=check,
    capabilities=capabilities,
    unmeasured=unmeasured,
)
