"""Static TensorRT compatibility check of an ONNX graph: no TensorRT needed.

Every node is looked up in the ONNX operators TensorRT's parser supports, by the first TensorRT version
that lists it, plus the restrictions that can be read off the graph. Sources:

* onnx-tensorrt docs/operators.md, release branches 7.2.1 (the oldest with a support matrix), 8.0, 8.2,
  8.4, 8.5, 8.6, 9.0–9.3, 10.0 and 10.1: supported ops per version, highest opset per version (7.2–8.2:
  13; 8.4–8.6: 17; 9.x: 19; 10.x: 9–20), "`x_zero_point` must be zero" for Q/DQ, Resize modes
  nearest/linear only, TopK `K` an initializer before 8.6 and below 3840, NonMaxSuppression marked
  experimental in 8.0–8.4.
* onnx-tensorrt onnxOpImporters.cpp (10.1): the GridSample importer knows only the mode names
  `nearest`, `bilinear`, `bicubic` and silently falls back to nearest for any other name, so the
  opset-20 names `linear`/`cubic` are mis-parsed (an absent mode defaults to bilinear there).
* TensorRT plugin/efficientNMSPlugin (release/8.0 onwards): `EfficientNMS_TRT` ships with TensorRT
  since 8.0 and is deprecated since 10.12.
* exporter/pipeline/targets/tensorrt/plugin/README.md: our `AKConvSample` plugin implements IPluginV3
  (TensorRT ≥ 10).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from exporter.base.errors import UserError, render, setting
from exporter.blocks.lowering.akconv import PLUGIN_OP

DEFAULT_TRT_VERSION = "10.x"
OLDEST_DOCUMENTED = (7, 2)

_SINCE: dict[tuple[int, int], str] = {
    (7, 2): """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
        Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
        DequantizeLinear Div Elu Equal Erf Exp Expand EyeLike Flatten Floor GRU Gather GatherElements Gemm
        GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual HardSigmoid Identity ImageScaler
        InstanceNormalization LRN LSTM LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool
        MatMul Max MaxPool Mean Min Mul Neg Not Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RNN
        RandomUniform RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
        ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
        ScaledTanh Scan Selu Shape Sigmoid Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
        Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where""",
    (8, 0): "Dropout If NonMaxSuppression",
    (8, 2): "Einsum GatherND IsNaN Round Scatter ScatterElements ScatterND Sign",
    (8, 4): "HardSwish RandomNormal RandomNormalLike Reciprocal Shrink Xor",
    (8, 5): "GridSample MeanVarianceNormalization Mod NonZero OneHot RoiAlign Trilu",
    (8, 6): "GroupNormalization IsInf LayerNormalization",
    (9, 1): "CastLike",
    (9, 2): "Hardmax",
    (10, 0): "Gelu Mish",
    (10, 1): "DeformConv",
}
SUPPORTED_SINCE: dict[str, tuple[int, int]] = {op: v for v, ops in _SINCE.items() for op in ops.split()}
# Listed with "N" in every matrix up to 10.1.
UNSUPPORTED = set(
    """AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow CenterCropPad
    Col2Im Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow
    ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss
    Optional OptionalGetElement OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt
    SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap SplitToSequence
    StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique""".split()
)
# (first version, highest ONNX opset the parser supports); 10.x also needs opset >= 9.
MAX_OPSET = [((7, 2), 13), ((8, 4), 17), ((9, 0), 19), ((10, 0), 20)]
MIN_OPSET_10 = 9

EFFICIENT_NMS = "EfficientNMS_TRT"
EFFICIENT_NMS_SINCE = (8, 0)
EFFICIENT_NMS_DEPRECATED = (10, 12)
AKCONV_PLUGIN_SINCE = (10, 0)
GRIDSAMPLE_NEW_NAMES_OPSET = 20
TOPK_MAX_K = 3840
Q_DQ = {"QuantizeLinear", "DequantizeLinear"}
FIXES = {
    "GridSample": (
        f"export AKConv with {setting('export.akconv_lowering', 'gather')} (or plugin on TensorRT >= 10)"
    )
}


@dataclass(frozen=True)
class TrtVersion:
    label: str
    version: tuple[int, int]

    def __str__(self) -> str:
        return self.label


def parse_trt_version(text: str) -> TrtVersion:
    """'10.x', '10', '8.6' or '8.6.1.6' → the (major, minor) whose documented facts apply."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+|x))?(?:\.\d+)*", text.strip())
    if not match:
        raise UserError(
            f"{setting('tensorrt.version')} '{text}' is not a TensorRT version (e.g. 10.x, 10.3, 8.6)"
        )
    major, minor = int(match.group(1)), match.group(2)
    version = (major, 0 if minor in (None, "x") else int(minor))
    if version < OLDEST_DOCUMENTED or major > 10:
        raise UserError(
            f"{setting('tensorrt.version', text)}: no ONNX operator table is recorded for it "
            "(known: 7.2 to 10.x)"
        )
    return TrtVersion(text.strip(), version)


def _fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class Issue:
    op: str
    node: str
    severity: str  # "error": the parser or builder will fail or compute something else; "warning": act
    problem: str
    fix: str  # names settings with exporter.base.errors.setting (render it to show it)


@dataclass
class Report:
    trt_version: str
    opset: int
    nodes: int
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)

    @property
    def verdict(self) -> str:
        if not self.ok:
            return "incompatible"
        return "compatible with warnings" if self.issues else "compatible"

    def describe(self) -> str:
        """The verdict and every issue, settings unrendered (see exporter.base.errors.render)."""
        head = f"TensorRT {self.trt_version}: {self.verdict} ({self.nodes} nodes, opset {self.opset})"
        lines = [f"  {i.severity}: {i.op} {i.node}: {i.problem}; fix: {i.fix}" for i in self.issues]
        return "\n".join([head, *lines])

    def as_dict(self) -> dict[str, Any]:
        return {
            "trt_version": self.trt_version,
            "opset": self.opset,
            "nodes": self.nodes,
            "verdict": self.verdict,
            "ok": self.ok,
            "issues": [{**asdict(i), "fix": render(i.fix)} for i in self.issues],
        }


class _Graph:
    """Constant values of a graph (initializers and Constant node outputs), converted when asked for."""

    def __init__(self, graph: onnx.GraphProto):
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t

    def value(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        if index >= len(node.input) or node.input[index] not in self.constants:
            return None
        return numpy_helper.to_array(self.constants[node.input[index]])


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            value = onnx.helper.get_attribute_value(attribute)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _opset_issues(opset: int, trt: TrtVersion) -> list[Issue]:
    highest = next(top for since, top in reversed(MAX_OPSET) if trt.version >= since)
    issues = []
    if opset > highest:
        issues.append(
            Issue(
                "opset",
                "model",
                "error",
                f"ONNX opset {opset} is newer than TensorRT {trt}'s parser supports (up to {highest})",
                f"export with {setting('export.opset', min(highest, 19))}",
            )
        )
    if trt.version >= (10, 0) and opset < MIN_OPSET_10:
        issues.append(
            Issue(
                "opset",
                "model",
                "error",
                f"TensorRT 10 parses opset {MIN_OPSET_10} to 20, not {opset}",
                f"export with {setting('export.opset', 17)}",
            )
        )
    return issues


def _name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _plugin_issue(node: onnx.NodeProto, trt: TrtVersion) -> Issue | None:
    name = _name(node)
    if node.op_type == PLUGIN_OP:
        if trt.version < AKCONV_PLUGIN_SINCE:
            return Issue(
                node.op_type,
                name,
                "error",
                f"libakconv_plugin.so implements IPluginV3, which needs TensorRT >= 10 (not {trt})",
                f"export AKConv with {setting('export.akconv_lowering', 'gather')} "
                "(or gridsample on TensorRT >= 8.5)",
            )
        return Issue(
            node.op_type,
            name,
            "warning",
            "plugin: needs libakconv_plugin.so",
            "build exporter/pipeline/targets/tensorrt/plugin with CMake; load it to build and to run "
            "(trtexec --dynamicPlugins, or trt.get_plugin_registry().load_library)",
        )
    if trt.version < EFFICIENT_NMS_SINCE:
        return Issue(
            node.op_type,
            name,
            "error",
            f"TensorRT {trt} predates EfficientNMS_TRT (8.0)",
            "target TensorRT >= 8.0",
        )
    if trt.version >= EFFICIENT_NMS_DEPRECATED:
        return Issue(
            node.op_type,
            name,
            "warning",
            "plugin: EfficientNMS_TRT is deprecated since TensorRT 10.12",
            "export without end-to-end NMS and run NMS after the engine",
        )
    return None


def _restriction_issues(node: onnx.NodeProto, graph: _Graph, opset: int, trt: TrtVersion) -> list[Issue]:
    name, op = _name(node), node.op_type
    issues = []

    def add(severity: str, problem: str, fix: str) -> None:
        issues.append(Issue(op, name, severity, problem, fix))

    if op in Q_DQ:
        zero_point = graph.value(node, 2)
        if len(node.input) < 3 or not node.input[2]:
            if op == "QuantizeLinear":
                add("error", "without a zero point QuantizeLinear outputs uint8", "quantize to QInt8")
            elif trt.version < (10, 0):
                add(
                    "error", f"TensorRT {trt} needs the zero-point input of {op}", "quantize with zero points"
                )
        elif zero_point is None:
            add("error", "zero point is not a constant", "use constant zero points (symmetric quantization)")
        elif zero_point.dtype != np.int8:
            add("error", f"zero point is {zero_point.dtype}, TensorRT quantizes to int8", "quantize to QInt8")
        elif np.any(zero_point != 0):
            add(
                "error", "zero point must be 0 (TensorRT quantization is symmetric)", "quantize symmetrically"
            )
    elif op == "GridSample" and opset >= GRIDSAMPLE_NEW_NAMES_OPSET:
        mode = _attr(node, "mode")  # absent: the parser's default, bilinear, is right
        if mode in ("linear", "cubic"):
            add(
                "error",
                f"opset-{opset} mode '{mode}' is parsed as nearest (the parser knows only bilinear/bicubic)",
                "export GridSample at opset 17-19",
            )
        else:
            add("warning", f"GridSample mode names changed at opset {opset}", "export at opset 17-19")
    elif op == "Resize":
        if _attr(node, "mode", "nearest") == "cubic":
            add("error", "Resize mode cubic is not supported (nearest, linear only)", "use linear")
        if _attr(node, "coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
            add(
                "error",
                "coordinate_transformation_mode tf_crop_and_resize is not supported",
                "use half_pixel",
            )
    elif op == "TopK":
        k = graph.value(node, 1)
        if k is None and trt.version < (8, 6):
            add("error", f"TensorRT {trt} needs TopK's K as an initializer", "make K a constant")
        elif k is not None and int(np.max(k)) >= TOPK_MAX_K:
            add("error", f"K = {int(np.max(k))}, TensorRT's TopK needs K < {TOPK_MAX_K}", "lower K")
    elif op == "NonMaxSuppression" and trt.version < (8, 5):
        add("warning", f"NonMaxSuppression is experimental in TensorRT {trt}", "use EfficientNMS_TRT")
    return issues


def _walk(graph: onnx.GraphProto):
    """Every node with its graph's constants, including the nodes of If/Loop/Scan bodies."""
    constants = _Graph(graph)
    for node in graph.node:
        yield node, constants
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from _walk(body)


def check_model(model: onnx.ModelProto | str | Path, trt_version: str = DEFAULT_TRT_VERSION) -> Report:
    """Every node of `model` against TensorRT `trt_version`'s ONNX parser; unknown ops are errors."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends: not an ONNX file
            raise UserError(
                f"{path} is not an ONNX model ({type(exc).__name__}); pass a .onnx file"
            ) from None
        if not model.graph.node or not model.opset_import:  # an empty file parses as an empty model
            raise UserError(f"{path} is not an ONNX model (no graph nodes, no opset); pass a .onnx file")
    trt = parse_trt_version(trt_version)
    opset = _default_opset(model)
    report = Report(str(trt), opset, 0, _opset_issues(opset, trt))
    for node, constants in _walk(model.graph):
        report.nodes += 1
        name, op = _name(node), node.op_type
        if op in (PLUGIN_OP, EFFICIENT_NMS):
            issue = _plugin_issue(node, trt)
            report.issues.extend([issue] if issue else [])
            continue
        since = SUPPORTED_SINCE.get(op) if node.domain in ("", "ai.onnx") else None
        if since is None:
            known = "documented as unsupported" if op in UNSUPPORTED else "unknown to TensorRT's ONNX parser"
            where = f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else ""
            report.issues.append(
                Issue(op, name, "error", f"{known}{where}", "replace the op or provide a TensorRT plugin")
            )
        elif trt.version < since:
            fix = FIXES.get(op, f"target TensorRT >= {_fmt(since)} or replace {op}")
            report.issues.append(
                Issue(op, name, "error", f"needs TensorRT >= {_fmt(since)} (target {trt})", fix)
            )
        else:
            report.issues.extend(_restriction_issues(node, constants, opset, trt))
    return report
