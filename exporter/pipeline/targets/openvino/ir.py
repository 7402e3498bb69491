"""OpenVINO IR stage: simplified ONNX → IR (.xml + .bin) in FP32, FP16 (compressed weights) or INT8
(nncf.quantize on the shared calibration stream, the detection head's decode kept in float).

FP32 is checked against the fused torch model (pass/fail); FP16 and INT8 errors against the same
FP32 reference are measured and recorded. INT8 fails where an output collapsed against the reference
(reference.require_no_collapse).

The FP32 IR keeps f32 in any consumer: its layers are marked precise (runtime.mark_precise), and
the stage runs it as a consumer that sets no property would and checks that too. Where the CPU plugin
cannot compile the marked IR on this host, the IR is left unmarked and the stage says so. Each IR says in its
rt_info (`reparam_export`) what it is and at which precision it computes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.base.artifacts import atomic_output, sha256_file, sha256_json
from exporter.base.data.calibration import CalibrationSet
from exporter.base.numerics.graph import openvino_head_tail
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record
from exporter.pipeline.targets.openvino import runtime as ov_backend


@dataclass(frozen=True)
class IrSettings:
    precision: str
    noise_factor: float  # the FP32 check's bound (exporter.pipeline.stages.reference)
    calibration: CalibrationSet | None = None  # INT8 only
    float_nodes: tuple[str, ...] = ()  # INT8: convolutions kept in float besides the head (the search's)
    preset: str | None = None  # INT8: NNCF's preset (recipe openvino.int8_preset)
    int8_float: str | None = None  # INT8: what its float layers compute in (recipe openvino.int8_float)
    unmeasured: str | None = None  # why this host cannot run it as it is meant to run (bf16 here)

    @classmethod
    def from_recipe(
        cls,
        recipe: Recipe,
        precision: str,
        calibration: CalibrationSet | None = None,
        float_nodes: tuple[str, ...] = (),
    ) -> IrSettings:
        int8, section = precision == "int8", recipe.openvino
        return cls(
            precision,
            recipe.thresholds.fp32_noise_factor,
            calibration if int8 else None,
            tuple(float_nodes) if int8 else (),
            section.int8_preset if int8 else None,
            section.int8_float if int8 else None,
            ov_backend.unmeasured(ov_backend.hint(precision, section.int8_float)),
        )

    @property
    def inference_hint(self) -> str:
        """The inference precision our runners compile it with (its rt_info says so)."""
        return ov_backend.hint(self.precision, self.int8_float or "f32")

    @property
    def computes_in(self) -> str:
        """Its COMPUTES_IN entry."""
        return "int8-bf16" if self.int8_float == "bf16" else self.precision


# what each IR computes in, written into its rt_info (reparam_export/inference_precision)
COMPUTES_IN = {
    "fp32": "f32 in every consumer: every layer is marked precise",
    "fp32-unmarked": "f32 with INFERENCE_PRECISION_HINT=f32, by default bf16 on CPUs with BF16 "
    "(OpenVINO's CPU plugin could not compile its layers marked precise)",
    "fp16": "FP16 weights (compressed), computed at the precision the runtime chooses: f32 with "
    "INFERENCE_PRECISION_HINT=f32, by default bf16 on CPUs with BF16",
    "bf16": "FP32 weights computed in bfloat16: compile it with {'INFERENCE_PRECISION_HINT': 'bf16'} on a "
    "CPU with AVX-512 BF16 or AMX (reparam-export's eval and bench do)",
    "int8": "INT8 where quantized; the float layers at the precision the runtime chooses: f32 with "
    "INFERENCE_PRECISION_HINT=f32, by default bf16 on CPUs with BF16",
    "int8-bf16": "INT8 where quantized; the float layers in bfloat16: compile it with "
    "{'INFERENCE_PRECISION_HINT': 'bf16'} on a CPU with AVX-512 BF16 or AMX (reparam-export's eval and "
    "bench do)",
}
FP32_HINT = "compile it with {'INFERENCE_PRECISION_HINT': 'f32'}"

STATISTICS_BATCH = 8  # images per statistics inference: NNCF's bookkeeping of each output runs per inference


@dataclass(frozen=True)
class Quantized:
    model: Any  # openvino.Model
    ignored: list[str]  # ops kept in float: the head tail plus the float nodes asked for
    statistics: str  # how the statistics were collected


def quantize(
    model,
    calibration: CalibrationSet,
    float_nodes: tuple[str, ...],
    preset: str,
    batch: int = STATISTICS_BATCH,
) -> Quantized:
    """INT8 model (NNCF) of `model` (changed on the way), the head tail and `float_nodes` kept in float.
    Statistics are taken over batches of `batch` images, per image (NNCF's batchwise statistics:
    the ranges of one image at a time), where the model can be proved to run any batch
    (runtime.allow_any_batch); else one image at a time. The result has the model's input shape."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf imports it; no GPU here
    ov_backend.decline_telemetry()
    import nncf

    nncf.set_log_level(logging.WARNING)
    ignored = openvino_head_tail(model) + list(float_nodes)
    shape = model.input(0).get_partial_shape()
    batches = list(calibration.batches(batch))
    size = len(batches[0])
    why = ov_backend.allow_any_batch(model, batches[0]) if size > 1 else "batches of one"
    if why is not None:
        batches = [image[None] for group in batches for image in group]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(names=ignored),  # validated: a missing name is an error
        advanced_parameters=nncf.AdvancedQuantizationParameters(batchwise_statistics=why is None),
    )
    quantized.reshape({quantized.input(0): shape})
    statistics = f"batches of {size} images" if why is None else f"one image at a time ({why})"
    return Quantized(quantized, ignored, statistics)


# The INT8 search's chosen model, kept in this process for the INT8 stage of the same build
_KEPT: dict[str, Quantized] = {}


def _quantization_key(onnx_path: Path, calibration: CalibrationSet, float_nodes, preset: str) -> str:
    key = calibration.key(sha256_file(onnx_path))
    return sha256_json({"calibration": key, "float_nodes": list(float_nodes), "preset": preset})


def keep(
    onnx_path: Path, calibration: CalibrationSet, float_nodes, preset: str, quantized: Quantized
) -> None:
    """Keep `quantized`, the INT8 search's chosen model of `onnx_path`, for the INT8 stage: it quantizes the
    same model with the same settings, which gives the same model (NNCF is deterministic), so a build
    quantizes it once. One model is kept, and taken once."""
    _KEPT.clear()
    _KEPT[_quantization_key(onnx_path, calibration, float_nodes, preset)] = quantized


def kept(onnx_path: Path, calibration: CalibrationSet, float_nodes, preset: str) -> Quantized | None:
    """The model `keep` kept for these settings (None: quantize it)."""
    if not _KEPT:
        return None
    return _KEPT.pop(_quantization_key(onnx_path, calibration, float_nodes, preset), None)


@dataclass(frozen=True)
class IrRecord(Record):
    precision: str
    check: dict[str, Any] | None  # against the fused model: FP32 passes its tolerance, FP16/BF16/INT8
    # recorded; None where this host cannot run it as it is meant to run (`note` says why)
    runtime: dict[str, Any]  # the compiled model's configuration
    plain_consumer: dict[str, Any]  # how a consumer that sets no precision runs it (plain_consumer)
    int8: dict[str, Any] | None = None  # calibration, the layers kept in float, the collapse measure
    precise: dict[str, Any] | None = None  # FP32: whether its layers are marked precise, and if not why
    note: str | None = None  # why it was not measured here

    def describe(self) -> str:
        """FP32 shows the check it passed; FP16 and INT8 their error against the FP32 reference."""
        if self.check is None:
            return f"{self.precision.upper()} IR, built for another host; NOT MEASURED here: {self.note}"
        error = reference.describe_check(self.check, measured=self.precision != "fp32")
        detail = f"{self.precision.upper()} IR; {error}; {self.describe_plain_consumer()}"
        if self.int8 is not None:
            int8 = self.int8
            images, ops = int8["calibration_images"], int8["float_ops"]
            detail += f"; {images} calibration images, {ops} head ops kept in float"
            if int8.get("float_precision") == "bf16":
                detail += " (computed in bf16)"
            if int8.get("float_layers"):
                detail += f", {len(int8['float_layers'])} layers in float by the accuracy search"
            measure = int8.get("collapse")
            if measure and measure["slope"] is not None:
                detail += f"; slope on FP32 {measure['slope']:.3g} (collapsed below {measure['threshold']:g})"
        return detail

    def describe_plain_consumer(self) -> str:
        """What a consumer that sets no inference precision computes this IR in, on this host."""
        plain = self.plain_consumer
        default = plain["default_precision"]
        if "check" not in plain:
            return f"a consumer setting no precision runs it in {default} here"
        if plain["check"]["ok"]:
            kept = f" (its default here is {default})" if default != "f32" else ""
            return f"f32 in a consumer setting no precision{kept}, err/tol {plain['check']['ratio']:.2g}"
        marked = self.precise is None or self.precise["marked"]
        unmarked = "" if marked else f"; layers not marked precise: {self.precise['why_not']}"
        return (
            f"WARNING: a consumer setting no precision runs it in {default} here (max abs err "
            f"{plain['check']['max_abs_err']:.3g} past the FP32 tolerance {plain['check']['tolerance']:.3g}"
            f"{unmarked}); {FP32_HINT}"
        )


@dataclass(frozen=True)
class PackageRecord(Record):
    folder: str
    metadata: dict[str, Any]

    def describe(self) -> str:
        return f"Ultralytics' layout: {self.folder}/ with metadata.yaml (YOLO(folder) predicts with it)"


def run(settings: IrSettings, onnx_path: Path, fused_pt: Path, out: Path) -> IrRecord:
    import openvino as ov

    model = ov_backend.convert(onnx_path)
    precision = settings.precision
    record: dict[str, Any] = {"precision": precision}
    if precision == "int8":
        calibration, float_nodes, preset = settings.calibration, settings.float_nodes, settings.preset
        quantized = kept(onnx_path, calibration, float_nodes, preset) or quantize(
            model, calibration, float_nodes, preset
        )
        model, ignored = quantized.model, quantized.ignored
        record["int8"] = {
            "calibration_images": len(settings.calibration.images),
            "preset": settings.preset,
            "float_precision": settings.int8_float,
            "statistics": quantized.statistics,
            "float_ops": len(ignored) - len(settings.float_nodes),
            "float_layers": list(settings.float_nodes),
            "ignored_scope": ignored,
        }
    if precision == "fp32":
        ov_backend.settle_for_precise(model)
    ov_backend.canonical_names(model)  # the same .xml from the same inputs, in any process
    model.set_rt_info(precision, ["reparam_export", "precision"])
    model.set_rt_info(COMPUTES_IN[settings.computes_in], ["reparam_export", "inference_precision"])
    model.set_rt_info(settings.inference_hint, ov_backend.HINT_KEY)
    ov.save_model(model, str(out), compress_to_fp16=precision == "fp16")
    plain = None
    if precision == "fp32":
        record["precise"], plain = keep_f32_in_any_consumer(model, out)
    if settings.unmeasured is not None:  # its error would be of f32, not of what it computes in
        plain = ov_backend.OpenVinoRunner(out, hint=None)
        consumer = plain_consumer(plain, fused_pt, settings.noise_factor, precision)
        if precision == "int8":  # a property of the quantization, whatever its float layers compute in
            record["int8"]["collapse"] = reference.require_no_collapse(fused_pt, plain)
        return IrRecord(**record, check=None, runtime={}, plain_consumer=consumer, note=settings.unmeasured)
    runner = ov_backend.load(out, precision)
    parity = reference.reference_parity(fused_pt, runner, settings.noise_factor)
    if precision == "fp32":
        reference.require_parity("OpenVINO FP32 IR output", parity)
    if precision == "int8":
        record["int8"]["collapse"] = reference.require_no_collapse(fused_pt, runner)
    record.update(check=parity.as_dict(), runtime=runner.config)
    plain = plain or ov_backend.OpenVinoRunner(out, hint=None)
    record["plain_consumer"] = plain_consumer(plain, fused_pt, settings.noise_factor, precision)
    return IrRecord(**record)


def keep_f32_in_any_consumer(model, out: Path) -> tuple[dict[str, Any], ov_backend.OpenVinoRunner | None]:
    """Mark every layer of the saved FP32 IR `out` precise, so that a consumer setting no precision
    computes it in f32; returns the record and the IR compiled as such a consumer does. Where OpenVINO's
    CPU plugin on this host cannot compile the marked IR (its fused convolutions refuse an f32 sum of a
    tensor it keeps in bf16, as on DAMO-YOLO-M/L's residual blocks), the IR is saved again unmarked, so
    that it compiles everywhere, and says so (no runner then)."""
    import openvino as ov

    ov_backend.mark_precise(out)
    try:
        return {"marked": True}, ov_backend.OpenVinoRunner(out, hint=None)
    except RuntimeError as error:
        why = f"OpenVINO's CPU plugin could not compile it marked precise ({ov_backend.plugin_error(error)})"
    model.set_rt_info(COMPUTES_IN["fp32-unmarked"], ["reparam_export", "inference_precision"])
    ov.save_model(model, str(out), compress_to_fp16=False)
    return {"marked": False, "why_not": why}, None


def plain_consumer(runner, fused_pt: Path, noise_factor: float, precision: str) -> dict[str, Any]:
    """How the IR runs in a consumer that compiles it with OpenVINO's defaults (Ultralytics' predictor,
    benchmark_app, a user's `compile_model(xml, "CPU")`), given `runner`, the IR compiled so: the
    inference precision the CPU plugin chooses on this host and, for FP32, the FP32 check on its outputs
    (`ok`: it computed in f32)."""
    record: dict[str, Any] = {"default_precision": runner.config["INFERENCE_PRECISION_HINT"]}
    if precision == "fp32":
        record["check"] = reference.reference_parity(fused_pt, runner, noise_factor).as_dict()
    return record


def package(ir: Path, metadata: dict[str, Any], out: Path) -> PackageRecord:
    """The IR as Ultralytics' predictor loads it (`YOLO("…/model_fp32_openvino_model")`): in a folder whose
    name ends in _openvino_model, the IR's files (hard links) beside a metadata.yaml of `metadata`."""
    import yaml

    for suffix in (".xml", ".bin"):
        target = out.with_suffix(suffix)
        try:
            os.link(ir.with_suffix(suffix), target)
        except OSError:  # another device, or links not supported
            shutil.copyfile(ir.with_suffix(suffix), target)
    with atomic_output(out.parent / "metadata.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(metadata, sort_keys=False))
    return PackageRecord(out.parent.name, metadata)


def library_versions() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("openvino", "nncf")}
