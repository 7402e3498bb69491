"""OpenVINO IR stage: simplified ONNX → IR (.xml + .bin) in FP32, FP16 (compressed weights) or INT8
(nncf.quantize on the shared calibration stream, the detection head's decode kept in float).

FP32 is checked against the fused torch model (pass/fail); FP16 and INT8 errors against the same
FP32 reference are measured and recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.backends import openvino as ov_backend
from exporter.data.calibration import CalibrationSet
from exporter.recipe import Recipe
from exporter.stages.export_onnx import reference_parity, require_parity
from exporter.stages.fuse import load_reference

COMPUTE_TYPES = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"}


def head_tail(model) -> list[str]:
    """Names of the ops INT8 keeps in float: the last convolution on every path to an output (the
    class and box prediction layers) and every op after it (box decoding, softmax, sigmoid).

    Measured on the demo model (500 val images): quantizing the prediction convolutions too cost
    1.5 mAP points; keeping them in float 0.25, at the same latency."""
    ops = model.get_ordered_ops()
    feeds_compute: dict[str, bool] = {}
    for op in reversed(ops):
        consumers = [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]
        feeds_compute[op.get_friendly_name()] = any(
            c.get_type_name() in COMPUTE_TYPES or feeds_compute.get(c.get_friendly_name(), False)
            for c in consumers
        )
    skip = {"Parameter", "Constant", "Result"}
    return [
        op.get_friendly_name()
        for op in ops
        if not feeds_compute[op.get_friendly_name()] and op.get_type_name() not in skip
    ]


def quantize(model, calibration: CalibrationSet, float_nodes: list[str] = (), preset: str = "performance"):
    """INT8 model (NNCF) and the ops it keeps in float: the head tail plus `float_nodes`."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # nncf imports it; no GPU here
    import nncf

    nncf.set_log_level(logging.WARNING)
    dataset = nncf.Dataset(list(calibration.batches()))
    ignored = head_tail(model) + list(float_nodes)
    quantized = nncf.quantize(
        model,
        dataset,
        preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        subset_size=len(calibration.images),
        ignored_scope=nncf.IgnoredScope(names=ignored),  # validated: a missing name is an error
    )
    return quantized, ignored


def openvino_stage(
    recipe: Recipe,
    onnx_path: Path,
    fused_pt: Path,
    precision: str,
    out: Path,
    calibration: CalibrationSet | None = None,
    float_nodes: list[str] = (),
) -> dict[str, Any]:
    """`float_nodes`: convolutions INT8 keeps in float besides the head (the partial-INT8 search's)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    record: dict[str, Any] = {"precision": precision}
    if precision == "int8":
        model, ignored = quantize(model, calibration, float_nodes)
        record["int8"] = {
            "calibration_images": len(calibration.images),
            "preset": "performance",
            "float_ops": len(ignored) - len(float_nodes),
            "float_layers": list(float_nodes),
            "ignored_scope": ignored,
        }
    ov.save_model(model, str(out), compress_to_fp16=precision == "fp16")
    runner = ov_backend.load(out, precision)
    parity = reference_parity(recipe, load_reference(fused_pt), runner.infer)
    if precision == "fp32":
        require_parity("OpenVINO FP32 IR output", parity)
    record.update(check=parity.as_dict(), runtime=runner.config)
    return record


def library_versions() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("openvino", "nncf")}
