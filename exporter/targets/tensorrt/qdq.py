"""Explicit INT8 quantization for TensorRT: simplified FP32 ONNX → Q/DQ ONNX (onnxruntime.quantization).

TensorRT-compatible settings: int8 only, symmetric (every zero point 0), weights per channel (axis 0 for
Conv), activations per tensor. Only Conv, MatMul and Gemm are quantized, on their inputs: their outputs and
biases stay float, so TensorRT keeps fusing Conv + activation and never sees an int32 DequantizeLinear.
Weights stay float behind a QuantizeLinear → DequantizeLinear pair, which TensorRT folds when it builds.
The head's decode tail (every node after the last Conv on all of its paths to an output) stays float.

Activation ranges come from the shared calibration stream. onnxruntime's calibrators are run here with
explicit settings, because quantize_static's defaults make the entropy method degenerate (128 histogram
bins and 128 quantized bins leave one candidate threshold: the min-max one); entropy uses 2048 bins and
128 quantized bins, like TensorRT's entropy calibrator. The ranges are cached in a file named by the model,
the calibration images, the preprocessing and the method, so a later run that only changes
`nodes_to_exclude` (partial quantization) does not calibrate again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.core.artifacts import atomic_output, sha256_file, sha256_json
from exporter.core.errors import CheckFailed, UserError
from exporter.data.calibration import CalibrationSet
from exporter.numerics.graph import onnx_decode_tail, onnx_prediction_convs
from exporter.recipe import Recipe
from exporter.stages import ort_runner as ort_backend
from exporter.stages import reference

METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128
PERCENTILE = 99.999


class CalibrationReader:
    """onnxruntime CalibrationDataReader over a CalibrationSet: one preprocessed image per step."""

    def __init__(self, calibration: CalibrationSet, input_name: str):
        self.calibration = calibration
        self.input_name = input_name
        self._batches = iter(calibration.batches())

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self.input_name: batch}

    def __len__(self) -> int:
        return len(self.calibration.images)


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def _calibrate(model_path: Path, reader: CalibrationReader, method: str, work: Path):
    from onnxruntime.quantization import create_calibrator

    options: dict[str, Any] = {"symmetric": True}
    if method == "entropy":
        options.update(num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_QUANTIZED_BINS)
    elif method == "percentile":
        options.update(num_bins=ENTROPY_BINS, percentile=PERCENTILE)
    calibrator = create_calibrator(
        model_path,
        list(QUANTIZED_OPS),
        augmented_model_path=str(work / "augmented.onnx"),
        calibrate_method=_ort_method(method),
        extra_options=options,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print progress
        calibrator.collect_data(reader)
        return calibrator.compute_data()


def ranges_file(onnx_path: Path, calibration: CalibrationSet, method: str) -> str:
    """Cache file name of the activation ranges: model, image contents, preprocessing, method and its
    settings, and the onnxruntime that calibrated."""
    from importlib.metadata import version

    key = {
        "model": sha256_file(onnx_path),
        "images": [sha256_file(p) for p in calibration.images],
        "onnxruntime": version("onnxruntime"),
        "input_size": list(calibration.input_size),
        "preprocess": calibration.preprocess.model_dump(mode="json"),
        "method": method,
        "bins": [ENTROPY_BINS, ENTROPY_QUANTIZED_BINS, PERCENTILE],
    }
    return f"qdq_ranges-{method}-{sha256_json(key)[:16]}.json"


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes a name, so that they can be excluded by name."""
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"unnamed_{node.op_type}_{index}"
    return model


def quantize_qdq(
    onnx_path: Path,
    out: Path,
    calibration: CalibrationSet,
    method: str = "minmax",
    nodes_to_exclude: Iterable[str] = (),
    ranges_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the Q/DQ model of `onnx_path` to `out`; returns the record for the manifest.

    `ranges_dir`: folder of the activation-range cache (e.g. calibration/<CalibrationSet.key>/); None
    calibrates without keeping the ranges.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise UserError(f"calibration method '{method}' is not one of {', '.join(METHODS)}")
    excluded = list(dict.fromkeys(nodes_to_exclude))
    with tempfile.TemporaryDirectory(prefix="qdq-") as tmp:
        work = Path(tmp)
        prepared = work / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_optimization=True)  # shape inference only
        model = _named(onnx.load(str(prepared)))
        onnx.save(model, str(prepared))
        names = {n.name for n in model.graph.node}
        unknown = [n for n in excluded if n not in names]
        if unknown:
            raise UserError(f"nodes_to_exclude: no node named {unknown[0]!r} in {onnx_path}")
        tail = onnx_decode_tail(model)
        cache = (ranges_dir or work) / ranges_file(onnx_path, calibration, method)
        reused = cache.is_file()
        if not reused:
            reader = CalibrationReader(calibration, model.graph.input[0].name)
            with atomic_output(cache) as partial:  # an interrupted run leaves no truncated cache
                save_tensors_data(_calibrate(prepared, reader, method, work), partial)
        settings = {
            "format": "QDQ",
            "activation_type": "QInt8",
            "weight_type": "QInt8",
            "per_channel": True,
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        }
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_static logs advice as warnings on the root logger
        try:
            quantize_static(
                str(prepared),
                str(out),
                calibration_data_reader=None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded + [n for n in tail if n not in excluded],
                calibrate_method=_ort_method(method),
                calibration_cache_path=str(cache),
                extra_options={k: v for k, v in settings.items() if k[0].isupper()},
            )
        finally:
            root.setLevel(level)
    quantized = float_inputs_for(onnx.load(str(out)), set(excluded))
    onnx.save(quantized, str(out))
    onnx.checker.check_model(quantized, full_check=True)
    structure = check_qdq_structure(quantized)
    return {
        "method": method,
        "calibration_images": len(calibration.images),
        "settings": {**settings, "op_types_to_quantize": list(QUANTIZED_OPS), "calibrate_method": method},
        "qdq_pairs": structure["qdq_pairs"],
        "quantized_nodes": structure["quantized_nodes"],
        "excluded_nodes": excluded,
        "float_tail": tail,
        "ranges": {"cache": str(cache) if ranges_dir else None, "reused": reused},
    }


def float_inputs_for(model: onnx.ModelProto, excluded: set[str]) -> onnx.ModelProto:
    """Excluded nodes read the float tensor, not a Q → DQ pair shared with a quantized consumer of the
    same tensor (quantize_static inserts one pair per tensor); pairs left without readers go."""
    producer = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.name not in excluded:
            continue
        for index, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[index] = q.input[0]
    graph_outputs = {o.name for o in model.graph.output}
    while True:
        read = {name for node in model.graph.node for name in node.input} | graph_outputs
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not set(n.output) & read
        ]
        if not dead:
            return model
        for node in dead:
            model.graph.node.remove(node)


def check_qdq_structure(model: onnx.ModelProto) -> dict[str, Any]:
    """Prove the TensorRT form: every quantized Conv/Gemm/MatMul reads a DequantizeLinear on its data and
    weight inputs, weights per channel (axis 0, one scale per output channel), activations per tensor (both
    inputs of a MatMul of two activations), every zero point an int8 0, and every QuantizeLinear followed
    by a DequantizeLinear. Raises CheckFailed."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def fail(message: str):
        raise CheckFailed(f"Q/DQ model: {message}")

    def attr(node: onnx.NodeProto, name: str, default: int) -> int:
        return next((a.i for a in node.attribute if a.name == name), default)

    pairs = 0
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zero_point = init.get(node.input[2]) if len(node.input) > 2 else None
        if zero_point is None or zero_point.dtype != np.int8 or np.any(zero_point != 0):
            fail(f"{node.name}: zero point must be an int8 0 initializer")
        if node.op_type == "DequantizeLinear":
            source = producer.get(node.input[0])
            pairs += source is not None and source.op_type == "QuantizeLinear"
    quantized = []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        feeds = [producer.get(name) for name in node.input[:2]]
        if not all(f is not None and f.op_type == "DequantizeLinear" for f in feeds):
            if any(f is not None and f.op_type == "DequantizeLinear" for f in feeds):
                fail(f"{node.name}: only some inputs are dequantized")
            continue
        data_dq, weight_dq = feeds
        weight_q = producer.get(weight_dq.input[0])
        weight = init.get(weight_q.input[0]) if weight_q is not None else None
        # a MatMul of two activations (attention's Q·Kᵀ, scores·V): both are activations, per tensor
        activations = [data_dq, weight_dq] if node.op_type == "MatMul" and weight is None else [data_dq]
        for dq in activations:
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                fail(f"{node.name}: activation input must be quantized (Q → DQ)")
            if init[dq.input[1]].size != 1:
                fail(f"{node.name}: activation scale must be per tensor")
        if len(activations) == 2:
            quantized.append(node.name)
            continue
        if weight is None:
            fail(f"{node.name}: weight must be a float initializer behind Q → DQ")
        channels = weight.shape[0] if node.op_type == "Conv" else None
        if node.op_type == "Conv" and (
            attr(weight_dq, "axis", 1) != 0 or init[weight_dq.input[1]].shape != (channels,)
        ):
            fail(f"{node.name}: weight must be quantized per output channel (axis 0, {channels} scales)")
        quantized.append(node.name)
    if pairs != sum(n.op_type == "QuantizeLinear" for n in model.graph.node):
        fail("a QuantizeLinear is not followed by a DequantizeLinear")
    return {"qdq_pairs": pairs, "quantized_nodes": quantized}


def quantize_detector(
    onnx_path: Path,
    out: Path,
    calibration: CalibrationSet,
    method: str = "minmax",
    float_nodes: Iterable[str] = (),
    ranges_dir: Path | None = None,
) -> dict[str, Any]:
    """quantize_qdq with the prediction convolutions left in float (on the demo model quantizing them
    cost 1.5 mAP points) and `float_nodes` too (the partial-INT8 search's)."""
    excluded = [*onnx_prediction_convs(onnx.load(str(onnx_path))), *float_nodes]
    return quantize_qdq(onnx_path, out, calibration, method, excluded, ranges_dir)


@dataclass(frozen=True)
class QdqSettings:
    method: str  # tensorrt.calibration_method
    calibration: CalibrationSet
    float_nodes: tuple[str, ...]  # left without Q/DQ besides the prediction convolutions (the search's)

    @classmethod
    def from_recipe(
        cls, recipe: Recipe, calibration: CalibrationSet, float_nodes: tuple[str, ...] = ()
    ) -> QdqSettings:
        return cls(
            recipe.tensorrt.calibration_method,
            calibration,
            tuple(float_nodes),
        )


def run(
    settings: QdqSettings, onnx_path: Path, fused_pt: Path, out: Path, ranges_dir: Path | None = None
) -> dict[str, Any]:
    """The Q/DQ model and its onnxruntime CPU error against the reference in fused.pt (recorded, like
    every INT8 error: INT8 is compared with the one reference, never gated by the FP32 bound); an
    output that collapsed against the reference fails.
    `ranges_dir`: where the activation ranges are cached (see quantize_qdq)."""
    record = quantize_detector(
        onnx_path, out, settings.calibration, settings.method, settings.float_nodes, ranges_dir
    )
    runner = ort_backend.load(out)
    parity = reference.reference_parity(fused_pt, runner, noise_factor=1.0)  # recorded
    collapse = reference.require_no_collapse(fused_pt, runner)
    return {**record, "check": parity.as_dict(), "collapse": collapse}


def describe(record: dict[str, Any]) -> str:
    return (
        f"Q/DQ ONNX, {record['qdq_pairs']} Q/DQ pairs, {record['calibration_images']} calibration images "
        f"({record['method']}); onnxruntime {reference.describe_check(record['check'], measured=True)}"
    )
