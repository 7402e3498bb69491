"""Static INT8 quantization into a Q/DQ ONNX (onnxruntime.quantization), shared by the targets that run one
(TensorRT's explicit quantization, onnxruntime's CPU kernels): simplified FP32 ONNX → Q/DQ ONNX.

Weights are int8, symmetric, per output channel (axis 0 for Conv), kept float behind a QuantizeLinear →
DequantizeLinear pair; activations per tensor, of the target's type and symmetry (its `Scheme`). Only
Conv, MatMul and Gemm are quantized, on their inputs: their outputs and biases stay float (TensorRT keeps
fusing Conv + activation and never sees an int32 DequantizeLinear). The head's decode tail (every node
after the last Conv on all of its paths to an output) stays float, and so do the prediction convolutions
(quantize_detector).

Activation ranges come from the shared calibration stream. onnxruntime's calibrators are run here with
explicit settings, because quantize_static's defaults make the entropy method degenerate (128 histogram
bins and 128 quantized bins leave one candidate threshold: the min-max one); entropy uses 2048 bins and
128 quantized bins, like TensorRT's entropy calibrator. The ranges are cached in a file named by the model,
the calibration images, the preprocessing, the method and the activations' symmetry, so a later run that
only changes `nodes_to_exclude` (partial quantization) does not calibrate again.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.base.artifacts import atomic_output, sha256_file, sha256_json
from exporter.base.data.calibration import CalibrationSet
from exporter.base.errors import CheckFailed, UserError
from exporter.base.numerics import layer_names
from exporter.base.numerics.graph import onnx_decode_tail, onnx_prediction_convs
from exporter.pipeline.stages import ort_runner, reference
from exporter.pipeline.stages.graph import Record

METHODS = ("minmax", "entropy", "percentile")
ZERO_POINT_TYPES = {"QInt8": np.int8, "QUInt8": np.uint8}


@dataclass(frozen=True)
class Scheme:
    """How a target's INT8 kernels want activations: their type ("QInt8" or "QUInt8") and whether their
    zero point is 0 (symmetric). Weights are always symmetric int8 per output channel."""

    name: str
    activation_type: str
    activation_symmetric: bool


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


def _calibrate(model_path: Path, reader: CalibrationReader, method: str, work: Path, symmetric: bool):
    from onnxruntime.quantization import create_calibrator

    options: dict[str, Any] = {"symmetric": symmetric}
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


def ranges_file(onnx_path: Path, calibration: CalibrationSet, method: str, symmetric: bool) -> str:
    """Cache file name of the activation ranges: model, image contents, preprocessing, method and its
    settings, the ranges' symmetry, and the onnxruntime that calibrated."""
    from importlib.metadata import version

    key = {
        "model": sha256_file(onnx_path),
        "images": [sha256_file(p) for p in calibration.images],
        "onnxruntime": version("onnxruntime"),
        "input_size": list(calibration.input_size),
        "preprocess": calibration.preprocess.model_dump(mode="json"),
        "method": method,
        "bins": [ENTROPY_BINS, ENTROPY_QUANTIZED_BINS, PERCENTILE],
        **({} if symmetric else {"symmetric": False}),  # symmetric ranges keep their earlier name
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
    *,
    scheme: Scheme,
) -> dict[str, Any]:
    """Write the Q/DQ model of `onnx_path` to `out` in `scheme`, its structure checked; returns the record.

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
        symmetric = scheme.activation_symmetric
        cache = (ranges_dir or work) / ranges_file(onnx_path, calibration, method, symmetric)
        reused = cache.is_file()
        if not reused:
            reader = CalibrationReader(calibration, model.graph.input[0].name)
            with atomic_output(cache) as partial:  # an interrupted run leaves no truncated cache
                save_tensors_data(_calibrate(prepared, reader, method, work, symmetric), partial)
        settings = {
            "format": "QDQ",
            "activation_type": scheme.activation_type,
            "weight_type": "QInt8",
            "per_channel": True,
            "ActivationSymmetric": symmetric,
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
                activation_type=getattr(QuantType, scheme.activation_type),
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
    structure = check_qdq_structure(quantized, scheme)
    return {
        "scheme": asdict(scheme),
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


def check_qdq_structure(model: onnx.ModelProto, scheme: Scheme) -> dict[str, Any]:
    """Prove the form `scheme` asks for: every quantized Conv/Gemm/MatMul reads a DequantizeLinear on its data
    and weight inputs, weights per channel (axis 0, one scale per output channel) with int8 0 zero points,
    activations per tensor (both inputs of a MatMul of two activations) with zero points of the scheme's
    type (0 where symmetric), and every QuantizeLinear followed by a DequantizeLinear. Raises CheckFailed."""
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
        quantize = node if node.op_type == "QuantizeLinear" else producer.get(node.input[0])
        weight = quantize is not None and quantize.input[0] in init
        dtype = np.int8 if weight else ZERO_POINT_TYPES[scheme.activation_type]
        symmetric = weight or scheme.activation_symmetric
        if zero_point is None or zero_point.dtype != dtype or (symmetric and np.any(zero_point != 0)):
            zero = " 0" if symmetric else ""
            fail(f"{node.name}: zero point must be an {np.dtype(dtype).name}{zero} initializer")
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
    *,
    scheme: Scheme,
) -> dict[str, Any]:
    """quantize_qdq with the prediction convolutions left in float (on the demo model quantizing them
    cost 1.5 mAP points) and `float_nodes` too (the partial-INT8 search's)."""
    excluded = [*onnx_prediction_convs(onnx.load(str(onnx_path))), *float_nodes]
    return quantize_qdq(onnx_path, out, calibration, method, excluded, ranges_dir, scheme=scheme)


@dataclass(frozen=True)
class QdqRecord(Record):
    """A Q/DQ ONNX stage's record; each target that builds one says it in its own words (describe)."""

    scheme: dict[str, Any]
    method: str
    calibration_images: int
    settings: dict[str, Any]  # quantize_static's
    qdq_pairs: int
    quantized_nodes: list[str]
    excluded_nodes: list[str]
    float_tail: list[str]
    ranges: dict[str, Any]  # the range cache and whether it was reused
    check: dict[str, Any]  # onnxruntime against the fused model (recorded)
    collapse: dict[str, Any]


def quantize_and_measure(
    settings, onnx_path: Path, fused_pt: Path, out: Path, ranges_dir: Path | None, scheme: Scheme
) -> dict[str, Any]:
    """A target's INT8 stage: quantize_detector with `settings`' calibration, method and float nodes, then
    its onnxruntime CPU error against the reference in fused.pt (recorded, like every INT8 error: INT8 is
    compared with the one reference, never gated by the FP32 bound); an output that collapsed fails."""
    float_layers = (settings.method, settings.float_nodes, ranges_dir)
    record = quantize_detector(onnx_path, out, settings.calibration, *float_layers, scheme=scheme)
    runner = ort_runner.load(out)
    parity = reference.reference_parity(fused_pt, runner, noise_factor=1.0)  # recorded
    collapse = reference.require_no_collapse(fused_pt, runner)
    return {**record, "check": parity.as_dict(), "collapse": collapse}


class QdqQuantizer:
    """The INT8 search's trial models (exporter.pipeline.stages.partial_int8) of a target that runs a Q/DQ
    ONNX: the FP32 ONNX and its Q/DQ models in `scheme`, with extra Convs left without Q/DQ, run by
    onnxruntime's kernels. `latency_note`: why the trials are not timed here (None: they are)."""

    def __init__(
        self,
        onnx_path: Path,
        calibration: CalibrationSet,
        method: str,
        ranges_dir: Path,
        scheme: Scheme,
        latency_note: str | None,
    ):
        self.onnx_path, self.calibration, self.method, self.ranges_dir = (
            onnx_path,
            calibration,
            method,
            ranges_dir,
        )
        self.scheme, self.backend, self.latency_note = scheme, scheme.name, latency_note
        graph = onnx.load(str(onnx_path))
        self.graph_index = layer_names.onnx_convs(graph)
        self.always_float = set(onnx_prediction_convs(graph))

    def keep(self, runner, float_nodes: list[str]) -> None:
        """Nothing is kept for the Q/DQ stage: quantizing again costs it about a second."""

    def runner(self, float_nodes: list[str] | None):
        """The FP32 model (None) or the Q/DQ model with `float_nodes` left without Q/DQ too."""
        if float_nodes is None:
            return ort_runner.load(self.onnx_path)
        with tempfile.TemporaryDirectory(prefix="qdq-trial-") as tmp:
            out = Path(tmp) / "model.qdq.onnx"
            quantize_detector(
                self.onnx_path,
                out,
                self.calibration,
                self.method,
                float_nodes,
                self.ranges_dir,
                scheme=self.scheme,
            )
            return ort_runner.load(out)
