"""TensorRT target: Q/DQ ONNX (structure and onnxruntime accuracy), static compatibility check, deferred
trtexec bundle, end-to-end NMS node; engine build and runner where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from exporter.base.data import calibration
from exporter.base.data.shapes import write_split
from exporter.base.data.transforms import Preprocess
from exporter.base.errors import CheckFailed, UserError, render
from exporter.base.numerics.graph import onnx_decode_tail
from exporter.pipeline.recipe import load_recipe
from exporter.pipeline.stages import ort_runner as ort_backend
from exporter.pipeline.stages import qdq as quantization
from exporter.pipeline.stages import reference
from exporter.pipeline.targets.table import TARGETS
from exporter.pipeline.targets.tensorrt import compat as trt_compat
from exporter.pipeline.targets.tensorrt import engine as trt_stage
from exporter.pipeline.targets.tensorrt import nms as efficient_nms
from exporter.pipeline.targets.tensorrt import qdq as quantize_qdq
from exporter.pipeline.targets.tensorrt import runner as trt_backend
from tests.conftest import EMBEDDED

SIZE = (96, 128)


def _runtime_missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure: not usable
        return "TensorRT is not installed"
    return None if torch.cuda.is_available() else "no CUDA GPU"


RUNTIME_MISSING = _runtime_missing()
needs_tensorrt = pytest.mark.skipif(RUNTIME_MISSING is not None, reason=RUNTIME_MISSING or "")


@pytest.fixture(scope="module")
def calib_set(tmp_path_factory):
    calib_json = write_split(tmp_path_factory.mktemp("shapes"), "calib", 16, seed=3)
    chosen, _ = calibration.select(calib_json, 16, 0, SIZE, Preprocess())
    return chosen


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The embedded demo model at 96×128: (recipe, run dir, simplified ONNX, fused.pt)."""
    from exporter.pipeline.builder import Pipeline

    run = tmp_path_factory.mktemp("run")
    recipe = load_recipe(EMBEDDED, {"input_size": list(SIZE)})
    sim = Pipeline(recipe, run).simplify(TARGETS["onnx"]).output
    return recipe, run, sim, run / "fused.pt"


@pytest.fixture(scope="module")
def qdq(demo, calib_set, tmp_path_factory):
    recipe, _, sim, fused = demo
    out = tmp_path_factory.mktemp("qdq") / "model.qdq.onnx"
    settings = quantize_qdq.QdqSettings.from_recipe(recipe, calib_set)
    record = quantize_qdq.run(settings, sim, fused, out, ranges_dir=out.parent)
    return out, record.as_json()


def _model(nodes, inputs, outputs, initializers=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def _tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _conv_model(batch: int | str = 1) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["images", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    inputs, outputs = [_tensor("images", [batch, 3, 16, 16])], [_tensor("y", [batch, 4, 16, 16])]
    return _model([node], inputs, outputs, [weight], opset=13)


def _plugin_model() -> onnx.ModelProto:
    """An AKConv-like graph: p_conv makes the offsets, the plugin node samples."""
    weight = numpy_helper.from_array(np.zeros((10, 8, 3, 3), np.float32), "w")
    p_conv = helper.make_node("Conv", ["x", "w"], ["offset"], name="p_conv", pads=[1, 1, 1, 1])
    sample = helper.make_node(
        "AKConvSample", ["x", "offset"], ["y"], name="akconv", domain="reparam_export", num_param=5, stride=1
    )
    inputs, outputs = [_tensor("x", [1, 8, 16, 16])], [_tensor("y", [1, 8, 80, 16])]
    return _model([p_conv, sample], inputs, outputs, [weight], domains=["reparam_export"])


def _gridsample_model(opset: int, mode: str | None = None) -> onnx.ModelProto:
    attrs = {"mode": mode} if mode else {}
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], name="sample", align_corners=1, **attrs)
    inputs = [_tensor("x", [1, 8, 16, 16]), _tensor("grid", [1, 16, 16, 2])]
    return _model([node], inputs, [_tensor("y", [1, 8, 16, 16])], opset=opset)


# --- Q/DQ ONNX ------------------------------------------------------------------------------------------


def test_qdq_wraps_every_conv_per_channel_with_zero_points_zero(qdq):
    path, record = qdq
    model = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    prediction = [c for c in convs if c.name in record["excluded_nodes"]]
    quantized = [c for c in convs if c.name not in record["excluded_nodes"]]
    assert len(convs) == 22 and len(prediction) == 6, "the three heads' class and box convs stay float"
    assert all(c.name.startswith("/heads.") for c in prediction)
    for conv in prediction:
        assert (
            conv.input[1] in init
            and conv.input[0] not in producer
            or producer[conv.input[0]].op_type != "DequantizeLinear"
        )
    assert record["quantized_nodes"] == [c.name for c in quantized]
    for conv in quantized:
        data_dq, weight_dq = producer[conv.input[0]], producer[conv.input[1]]
        assert data_dq.op_type == weight_dq.op_type == "DequantizeLinear", conv.name
        assert producer[data_dq.input[0]].op_type == "QuantizeLinear", "activation quantized in the graph"
        assert init[data_dq.input[1]].size == 1, "activations per tensor"
        weight_q = producer[weight_dq.input[0]]
        out_channels = init[weight_q.input[0]].shape[0]
        axis = next(a.i for a in weight_dq.attribute if a.name == "axis")
        assert axis == 0 and init[weight_dq.input[1]].shape == (out_channels,), "weights per output channel"
        assert conv.input[2] in init, "bias stays float (TensorRT has no int32 DequantizeLinear)"
        assert "QuantizeLinear" not in consumers[conv.output[0]], "conv outputs stay float (fusion)"
    qdq_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in qdq_nodes:
        zero_point = init[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    assert record["qdq_pairs"] == sum(n.op_type == "QuantizeLinear" for n in qdq_nodes) > len(quantized)
    assert record["collapse"]["slope"] > 10 * reference.MIN_SLOPE, "checked against collapse, and passed"
    tail_ops = {producer[o].op_type for o in ("scores", "boxes")}
    assert tail_ops == {"Concat"} and {"Sigmoid", "Add", "Concat"} <= {
        n.op_type for n in model.graph.node if n.name in record["float_tail"]
    }
    assert trt_compat.check_model(model, "10.0").verdict == "compatible"
    assert not trt_compat.check_model(model, "8.6").issues


def test_qdq_structure_check_rejects_what_tensorrt_cannot_take(qdq):
    path, _ = qdq
    model = onnx.load(str(path))
    quantization.check_qdq_structure(model, quantize_qdq.SCHEME)
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    zero_point = next(t for t in broken.graph.initializer if t.name.endswith("zero_point"))
    zero_point.CopyFrom(
        numpy_helper.from_array(np.ones_like(numpy_helper.to_array(zero_point)), zero_point.name)
    )
    with pytest.raises(CheckFailed, match="zero point must be an int8 0"):
        quantization.check_qdq_structure(broken, quantize_qdq.SCHEME)
    assert not trt_compat.check_model(broken, "10.0").ok
    per_tensor = onnx.ModelProto()
    per_tensor.CopyFrom(model)
    weight_dq = next(
        n for n in per_tensor.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0]
    )
    next(a for a in weight_dq.attribute if a.name == "axis").i = 1
    with pytest.raises(CheckFailed, match="per output channel"):
        quantization.check_qdq_structure(per_tensor, quantize_qdq.SCHEME)


class Attention(torch.nn.Module):
    """A convolution, then self-attention over its pixels: Q·Kᵀ and scores·V multiply two activations."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 4, 1)
        self.qkv, self.out = torch.nn.Conv2d(8, 24, 1), torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        q, k, v = self.qkv(self.conv(x)).flatten(2).chunk(3, 1)
        weights = torch.softmax(q.transpose(1, 2) @ k / 8**0.5, -1)
        return self.out((v @ weights.transpose(1, 2)).reshape(x.shape[0], 8, SIZE[0] // 4, SIZE[1] // 4))


def test_attention_matmuls_quantize_both_activations_per_tensor(calib_set, tmp_path):
    torch.manual_seed(0)
    onnx_path, out = tmp_path / "attention.onnx", tmp_path / "attention.qdq.onnx"
    torch.onnx.export(
        Attention().eval(), torch.rand(1, 3, *SIZE), onnx_path, input_names=["images"], dynamo=False
    )
    record = quantization.quantize_qdq(onnx_path, out, calib_set, scheme=quantize_qdq.SCHEME)
    model = onnx.load(str(out))
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 2 and set(matmuls) <= set(record["quantized_nodes"])
    assert trt_compat.check_model(model, "10.0").ok
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    producer = {o: n for n in broken.graph.node for o in n.output}
    matmul = next(n for n in broken.graph.node if n.op_type == "MatMul")
    dq = producer[matmul.input[1]]
    matmul.input[1] = producer[dq.input[0]].input[0]  # the second activation read without its Q → DQ
    with pytest.raises(CheckFailed, match="only some inputs are dequantized"):
        quantization.check_qdq_structure(broken, quantize_qdq.SCHEME)


def test_qdq_accuracy_under_onnxruntime(demo, qdq):
    _, _, _, fused = demo
    path, record = qdq
    blob = torch.load(fused, weights_only=True)
    probe, references = blob["probe"][:1].numpy(), [o[:1].numpy() for o in blob["outputs"]]
    outputs = ort_backend.load(path).infer(probe)
    for name, ref, out in zip(("scores", "boxes"), references, outputs, strict=True):
        error, scale = float(np.abs(out - ref).max()), float(np.abs(ref).max())
        assert 0 < error <= 0.01 * scale, f"{name}: max abs err {error:.3g} vs output scale {scale:.3g}"
    worst = record["check"]["output"]  # the output furthest past (or closest to) its own tolerance
    assert record["check"]["max_abs_err"] == pytest.approx(
        float(np.abs(outputs[worst] - references[worst]).max())
    )
    assert record["calibration_images"] == 16 and record["method"] == "minmax"


def test_excluded_conv_stays_float_and_cached_ranges_skip_calibration(demo, qdq, calib_set, monkeypatch):
    _, _, sim, _ = demo
    path, record = qdq
    assert record["ranges"]["reused"] is False and Path(record["ranges"]["cache"]).is_file()

    def no_calibration(*args):
        raise AssertionError("calibrated again although the ranges are cached")

    monkeypatch.setattr(quantization, "_calibrate", no_calibration)
    stem = record["quantized_nodes"][0]
    out = path.parent / "partial.qdq.onnx"
    excluded = [*record["excluded_nodes"], stem]
    partial = quantization.quantize_qdq(
        sim, out, calib_set, "minmax", excluded, ranges_dir=path.parent, scheme=quantize_qdq.SCHEME
    )
    assert partial["ranges"]["reused"] is True
    assert partial["excluded_nodes"] == excluded and stem not in partial["quantized_nodes"]
    assert partial["qdq_pairs"] == record["qdq_pairs"] - 2, "its weight pair and its input pair are gone"
    conv = next(n for n in onnx.load(str(out)).graph.node if n.name == stem)
    assert conv.input[:2] == ["images", "stem.conv.weight"]
    with pytest.raises(UserError, match="no node named 'nope'"):
        quantization.quantize_qdq(
            sim, out, calib_set, "minmax", ["nope"], ranges_dir=path.parent, scheme=quantize_qdq.SCHEME
        )
    with pytest.raises(UserError, match="not one of minmax, entropy, percentile"):
        quantization.quantize_qdq(sim, out, calib_set, "kl", scheme=quantize_qdq.SCHEME)


def test_calibration_methods_and_decode_tail_on_a_tiny_head(calib_set, tmp_path):
    """Conv → ReLU → Conv → distribution integral (Softmax, MatMul): the MatMul after the last Conv stays
    float; entropy clips the ReLU output's tail (onnxruntime's default bins would make it min-max)."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(size=(4, 3, 3, 3)),
        "b1": rng.normal(size=4),
        "w2": rng.normal(size=(8, 4, 1, 1)),
        "b2": rng.normal(size=8),
        "proj": np.arange(8.0).reshape(8, 1),
    }
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([1, 8, -1], np.int64), "shape"))
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Reshape", ["c2", "shape"], ["flat"], name="flat"),
        helper.make_node("Transpose", ["flat"], ["t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Softmax", ["t"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "proj"], ["dist"], name="integral"),
    ]
    model = _model(nodes, [_tensor("images", [1, 3, 16, 16])], [_tensor("dist", [1, 256, 1])], initializers)
    source = tmp_path / "tiny.onnx"
    onnx.save(model, source)
    assert onnx_decode_tail(model) == ["flat", "transpose", "softmax", "integral"]
    small = calibration.CalibrationSet(calib_set.source, calib_set.images, 0, (16, 16), Preprocess())
    scales = {}
    for method in quantization.METHODS:
        out = tmp_path / f"{method}.onnx"
        record = quantization.quantize_qdq(source, out, small, method, scheme=quantize_qdq.SCHEME)
        assert record["quantized_nodes"] == ["conv1", "conv2"] and "integral" in record["float_tail"]
        quantized = onnx.load(str(out))
        init = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
        (relu_q,) = [n for n in quantized.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r1"]
        scales[method] = float(init[relu_q.input[1]])
        integral = next(n for n in quantized.graph.node if n.name == "integral")
        assert integral.input == ["p", "proj"], "the decode tail's MatMul is not quantized"
    assert scales["entropy"] < 0.95 * scales["minmax"] and scales["percentile"] <= scales["minmax"]


# --- static compatibility -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["8.2", "8.5", "8.6", "10.0"])
def test_plain_graph_is_compatible_everywhere(version):
    report = trt_compat.check_model(_conv_model(), version)
    assert report.verdict == "compatible" and report.nodes == 1


@pytest.mark.parametrize(
    "version, verdict",
    [("8.2", "incompatible"), ("8.5", "compatible"), ("8.6", "compatible"), ("10.0", "compatible")],
)
def test_gridsample_needs_tensorrt_8_5(version, verdict):
    report = trt_compat.check_model(_gridsample_model(16), version)
    assert report.verdict == verdict
    sample = [i for i in report.issues if i.op == "GridSample"]
    assert bool(sample) == (version == "8.2")
    if sample:
        assert "needs TensorRT >= 8.5" in sample[0].problem
        assert "export.akconv_lowering: gather" in render(sample[0].fix)


def test_opset20_gridsample_is_flagged():
    linear = trt_compat.check_model(_gridsample_model(20, "linear"), "10.0")
    assert linear.verdict == "incompatible"
    assert "parsed as nearest" in linear.issues[0].problem and "opset 17-19" in linear.issues[0].fix
    default = trt_compat.check_model(_gridsample_model(20), "10.0")
    assert default.verdict == "compatible with warnings", "no mode: the parser's default is bilinear"
    nearest = trt_compat.check_model(_gridsample_model(20, "nearest"), "10.0")
    assert nearest.verdict == "compatible with warnings" and nearest.issues[0].severity == "warning"
    assert trt_compat.check_model(_gridsample_model(19, "bilinear"), "10.0").verdict == "compatible"
    assert any(
        i.op == "opset" for i in trt_compat.check_model(_gridsample_model(20, "nearest"), "8.6").issues
    )


@pytest.mark.parametrize("version, severity", [("8.2", "error"), ("8.6", "error"), ("10.0", "warning")])
def test_akconv_plugin_node(version, severity):
    (issue,) = [i for i in trt_compat.check_model(_plugin_model(), version).issues if i.op == "AKConvSample"]
    assert issue.severity == severity
    if severity == "warning":
        assert issue.problem == "plugin: needs libakconv_plugin.so"
    else:
        assert "IPluginV3" in issue.problem


def test_unknown_and_restricted_ops_are_reported():
    fused = helper.make_node("FusedConv", ["images", "w"], ["y"], name="fused", domain="com.microsoft")
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    inputs, outputs = [_tensor("images", [1, 3, 16, 16])], [_tensor("y", [1, 4, 16, 16])]
    report = trt_compat.check_model(_model([fused], inputs, outputs, [weight], domains=["com.microsoft"]))
    assert (
        report.verdict == "incompatible" and "unknown to TensorRT's ONNX parser" in report.issues[0].problem
    )
    branch = helper.make_graph(
        [helper.make_node("Unique", ["images"], ["u"], name="unique")], "b", [], [_tensor("u", [None])]
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    if_node = helper.make_node("If", ["cond"], ["u"], name="if", then_branch=branch, else_branch=branch)
    nested = trt_compat.check_model(_model([if_node], inputs, [_tensor("u", [None])], [cond]), "10.0")
    assert [(i.op, i.problem) for i in nested.issues] == [("Unique", "documented as unsupported")] * 2
    k = numpy_helper.from_array(np.array([5000], np.int64), "k")
    topk = helper.make_node("TopK", ["images", "k"], ["v", "i"], name="topk")
    resize = helper.make_node("Resize", ["images", "", "scales"], ["r"], name="resize", mode="cubic")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    out = [_tensor("v", None), _tensor("i", None, TensorProto.INT64), _tensor("r", None)]
    issues = trt_compat.check_model(_model([topk, resize], inputs, out, [k, scales]), "10.0").issues
    assert {(i.op, i.severity) for i in issues} == {("TopK", "error"), ("Resize", "error")}
    quantize = helper.make_node("QuantizeLinear", ["images", "s"], ["q"], name="q")
    uint8 = trt_compat.check_model(
        _model(
            [quantize],
            inputs,
            [_tensor("q", None, TensorProto.UINT8)],
            [numpy_helper.from_array(np.float32(1), "s")],
        )
    )
    assert "outputs uint8" in uint8.issues[0].problem
    newest = _conv_model()
    newest.opset_import[0].version = 21
    assert (
        "newer than TensorRT 10.x's parser supports (up to 20)" in trt_compat.check_model(newest).describe()
    )


def test_trt_versions_are_parsed_strictly():
    assert trt_compat.parse_trt_version("10.x").version == (10, 0)
    assert trt_compat.parse_trt_version("8.6.1.6").version == (8, 6)
    for bad in ("banana", "6.0", "11.0"):
        with pytest.raises(UserError, match="tensorrt.version"):
            trt_compat.parse_trt_version(bad)


def test_demo_model_compatibility(demo):
    _, _, sim, _ = demo
    assert trt_compat.check_model(sim, "10.0").verdict == "compatible"
    old = trt_compat.check_model(sim, "8.2")
    assert [i.op for i in old.issues] == ["opset"] and "export.opset: 13" in render(old.issues[0].fix)
    assert "--opset 13" in render(old.issues[0].fix, {"export.opset": "--opset"})


# --- deferred bundle ------------------------------------------------------------------------------------


def _commands(script: Path) -> list[list[str]]:
    return [
        shlex.split(line)[1:] for line in script.read_text().splitlines() if line.startswith('"$TRTEXEC"')
    ]


def test_bundle_writes_onnx_script_and_readme(demo, qdq, tmp_path):
    _, _, sim, _ = demo
    qdq_path, _ = qdq
    script = tmp_path / "bundle" / "build_engine.sh"
    models = {"fp32": sim, "fp16": sim, "int8": qdq_path}
    record = trt_stage.write_bundle(script, models, trt_stage.EngineSettings(), "TensorRT is not installed")
    assert record.engine is None and record.deferred is True and record.reason == "TensorRT is not installed"
    folder = script.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.txt",
        "build_engine.sh",
        "model.onnx",
        "model.qdq.onnx",
    ]
    assert (folder / "model.qdq.onnx").read_bytes() == qdq_path.read_bytes() and os.access(script, os.X_OK)
    assert "NO TENSORRT ENGINE WAS BUILT ON THIS MACHINE" in (folder / "README.txt").read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)
    fp32, fp16, int8 = _commands(script)
    common = ["--memPoolSize=workspace:4096", "--timingCacheFile=timing.cache", "--skipInference"]
    assert fp32 == ["--onnx=model.onnx", "--saveEngine=model_fp32.engine", "--noTF32", *common]
    assert fp16 == ["--onnx=model.onnx", "--saveEngine=model_fp16.engine", "--fp16", *common]
    assert int8 == ["--onnx=model.qdq.onnx", "--saveEngine=model_int8.engine", "--stronglyTyped", *common]
    old = trt_stage.write_bundle(
        tmp_path / "old" / "build_engine.sh", {"int8": qdq_path}, trt_stage.EngineSettings(), "x", "8.6"
    )
    assert _commands(tmp_path / "old" / "build_engine.sh")[0][2:4] == ["--int8", "--fp16"]
    assert old.trt_version == "8.6"


def test_bundle_dynamic_batch_profile(tmp_path):
    onnx.save(_conv_model("batch"), tmp_path / "dyn.onnx")
    settings = trt_stage.EngineSettings(workspace_mib=1024, batch=(1, 4, 8))
    script = tmp_path / "b" / "build_engine.sh"
    trt_stage.write_bundle(script, {"fp16": tmp_path / "dyn.onnx"}, settings, "no GPU")
    (command,) = _commands(script)
    assert command[3:] == [
        "--memPoolSize=workspace:1024",
        "--timingCacheFile=timing.cache",
        "--minShapes=images:1x3x16x16",
        "--optShapes=images:4x3x16x16",
        "--maxShapes=images:8x3x16x16",
        "--skipInference",
    ]
    onnx.save(_conv_model(1), tmp_path / "static.onnx")
    with pytest.raises(UserError, match="batch is fixed at 1"):
        trt_stage.write_bundle(
            tmp_path / "c" / "build_engine.sh", {"fp16": tmp_path / "static.onnx"}, settings, ""
        )
    with pytest.raises(UserError, match="1 <= min <= opt <= max"):
        trt_stage.write_bundle(
            tmp_path / "d" / "b.sh",
            {"fp16": tmp_path / "dyn.onnx"},
            trt_stage.EngineSettings(batch=(4, 2, 8)),
            "",
        )


def test_bundle_with_plugin_builds_it_first_and_runs(tmp_path):
    onnx.save(_plugin_model(), tmp_path / "plugin.onnx")
    script = tmp_path / "bundle" / "build_engine.sh"
    record = trt_stage.write_bundle(
        script, {"fp32": tmp_path / "plugin.onnx"}, trt_stage.EngineSettings(), "none"
    )
    assert {f"plugin/{s}" for s in trt_stage.PLUGIN_SOURCES} <= set(record.files)
    lines = script.read_text().splitlines()
    cmake = [i for i, line in enumerate(lines) if line.startswith("cmake ")]
    trtexec = [i for i, line in enumerate(lines) if line.startswith('"$TRTEXEC"')]
    assert len(cmake) == 2 and max(cmake) < min(trtexec)
    assert "--dynamicPlugins=plugin/build/libakconv_plugin.so" in _commands(script)[0]
    assert "--dynamicPlugins" in (script.parent / "README.txt").read_text()
    stubs = tmp_path / "bin"  # stand-ins for cmake and trtexec that log their arguments
    stubs.mkdir()
    for tool in ("cmake", "trtexec"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "$LOG"\n')
        (stubs / tool).chmod(0o755)
    log = tmp_path / "log.txt"
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "LOG": str(log)}
    subprocess.run([str(script)], check=True, env=env, cwd=tmp_path)
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["cmake", "cmake", "trtexec"]
    assert "-DCMAKE_CUDA_ARCHITECTURES=75" in calls[0] and "--saveEngine=model_fp32.engine" in calls[2]
    with pytest.raises(UserError, match="IPluginV3"):
        trt_stage.write_bundle(
            tmp_path / "old" / "b.sh",
            {"fp32": tmp_path / "plugin.onnx"},
            trt_stage.EngineSettings(),
            "",
            "8.6",
        )


def test_build_plans_refuse_what_tensorrt_cannot_build(demo, qdq, tmp_path):
    _, _, sim, _ = demo
    qdq_path, _ = qdq
    settings = trt_stage.EngineSettings()
    with pytest.raises(UserError, match="INT8 from the Q/DQ ONNX"):
        trt_stage.write_bundle(tmp_path / "a" / "b.sh", {"int8": sim}, settings, "")
    with pytest.raises(UserError, match="build it as int8"):
        trt_stage.write_bundle(tmp_path / "a" / "b.sh", {"fp16": qdq_path}, settings, "")
    legacy = trt_stage.plan("int8", trt_stage.inspect_onnx(sim), settings, (8, 6))
    assert legacy.legacy_calibrator and legacy.flags == ("INT8", "FP16") and not legacy.strongly_typed
    with pytest.raises(UserError, match="too old"):
        trt_stage.plan("fp16", trt_stage.inspect_onnx(sim), settings, (8, 2))
    with pytest.raises(UserError, match="not one of fp32, fp16, int8"):
        trt_stage.plan("bf16", trt_stage.inspect_onnx(sim), settings, (10, 0))


@pytest.mark.skipif(RUNTIME_MISSING != "TensorRT is not installed", reason="TensorRT is installed")
def test_an_engine_on_a_host_without_tensorrt_is_one_line(tmp_path):
    from exporter.pipeline.targets.tensorrt.runner import TrtRunner

    with pytest.raises(UserError, match="is a TensorRT engine and TensorRT is not installed here"):
        TrtRunner(tmp_path / "model_fp16.engine")


@pytest.mark.skipif(RUNTIME_MISSING is None, reason="TensorRT and a CUDA GPU are present")
def test_without_tensorrt_no_engine_is_claimed(demo, tmp_path):
    _, _, sim, _ = demo
    reason = trt_stage.unavailable()
    assert reason and ("TensorRT is not installed" in reason or "no CUDA GPU" in reason)
    with pytest.raises(UserError, match="write the deferred bundle instead"):
        trt_stage.build_engine(sim, tmp_path / "model.engine", "fp16")
    assert not (tmp_path / "model.engine").exists()


# --- end-to-end NMS -------------------------------------------------------------------------------------


def test_efficient_nms_node_declares_corner_boxes(demo, tmp_path):
    _, _, sim, fused = demo
    record = efficient_nms.end2end_stage(
        sim, tmp_path / "e2e.onnx", score_threshold=0.25, max_output_boxes=50
    )
    model = onnx.load(str(tmp_path / "e2e.onnx"))
    node = model.graph.node[-1]
    assert (node.op_type, node.domain, list(node.input)) == ("EfficientNMS_TRT", "TRT", ["boxes", "scores"])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["box_coding"] == 0 and attrs["score_activation"] == 0 and attrs["background_class"] == -1
    assert attrs["plugin_version"] == b"1" and attrs["max_output_boxes"] == 50
    assert attrs["score_threshold"] == pytest.approx(0.25) and attrs["iou_threshold"] == pytest.approx(0.7)
    assert record["attributes"]["box_coding"] == 0 and record["attributes"]["plugin_version"] == "1"
    outputs = [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output]
    assert outputs == [
        ("num_dets", TensorProto.INT32),
        ("det_boxes", TensorProto.FLOAT),
        ("det_scores", TensorProto.FLOAT),
        ("det_classes", TensorProto.INT32),
    ]
    assert [d.dim_value for d in model.graph.output[1].type.tensor_type.shape.dim] == [1, 50, 4]
    assert trt_compat.check_model(model, "10.0").verdict == "compatible"
    assert (
        trt_compat.check_model(model, "10.12").issues[0].problem.endswith("deprecated since TensorRT 10.12")
    )
    boxes = torch.load(fused, weights_only=True)["outputs"][1].numpy()  # what the NMS node is fed
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all(), "xyxy corners"
    with pytest.raises(UserError, match="no output 'dets'"):
        efficient_nms.append_efficient_nms(onnx.load(str(sim)), boxes="dets")
    with pytest.raises(UserError, match="0 < iou_threshold <= 1"):
        efficient_nms.append_efficient_nms(onnx.load(str(sim)), iou_threshold=0)


# --- TensorRT runtime (where TensorRT and a CUDA GPU exist) ----------------------------------------------


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_build_and_runner(precision, demo, qdq, tmp_path):
    recipe, _, sim, fused = demo
    source = qdq[0] if precision == "int8" else sim
    cache = tmp_path / "timing.cache"
    engine = tmp_path / f"model_{precision}.engine"
    settings = trt_stage.EngineStageSettings.from_recipe(recipe, precision)
    record = trt_stage.engine_stage(settings, source, fused, engine, timing_cache=cache).as_json()
    assert engine.is_file() and cache.is_file() and record["deferred"] is False
    assert record["tensorrt"] and record["gpu"]["compute_capability"]
    assert record["gpu"]["matches_target"] == (record["gpu"]["compute_capability"] == "7.5")
    assert record["plan"]["strongly_typed"] == (
        precision == "int8" and int(record["tensorrt"].split(".")[0]) >= 10
    )
    check = record["check"]
    assert (
        check["ok"] if precision == "fp32" else check["max_abs_err"] < 0.05 * max(1.0, check["max_abs_ref"])
    )
    rebuilt = trt_stage.build_engine(source, tmp_path / "again.engine", precision, timing_cache=cache)
    assert rebuilt["trtexec_equivalent"] == record["trtexec_equivalent"]


@needs_tensorrt
def test_dynamic_batch_engine(calib_set, tmp_path):
    from exporter.pipeline.builder import Pipeline

    recipe = load_recipe(EMBEDDED, {"input_size": list(SIZE), "export.dynamic_batch": True})
    sim = Pipeline(recipe, tmp_path / "run").simplify(TARGETS["onnx"]).output
    engine = tmp_path / "dyn.engine"
    settings = trt_stage.EngineSettings(batch=(1, 2, 4))
    record = trt_stage.build_engine(sim, engine, "fp16", settings)
    assert "--optShapes=images:2x3x96x128" in record["trtexec_equivalent"]
    runner = trt_backend.load(engine)
    for batch in (1, 3):
        images = next(calib_set.batches(batch))
        scores, boxes = runner.infer(images)
        assert scores.shape[0] == boxes.shape[0] == batch


@needs_tensorrt
def test_end2end_nms_engine(demo, tmp_path):
    recipe, _, sim, fused = demo
    efficient_nms.end2end_stage(sim, tmp_path / "e2e.onnx", score_threshold=0.0, max_output_boxes=20)
    trt_stage.build_engine(tmp_path / "e2e.onnx", tmp_path / "e2e.engine", "fp32")
    probe = torch.load(fused, weights_only=True)["probe"][:1].numpy()
    num, boxes, scores, classes = trt_backend.load(tmp_path / "e2e.engine").infer(probe)
    n = int(num[0, 0])
    assert num.shape == (1, 1) and 0 < n <= 20 and boxes.shape == (1, 20, 4)
    assert (boxes[0, :n, 2] >= boxes[0, :n, 0]).all() and (boxes[0, :n, 3] >= boxes[0, :n, 1]).all()
    assert (np.diff(scores[0, :n]) <= 0).all() and ((classes[0, :n] >= 0) & (classes[0, :n] < 3)).all()


def test_build_tensorrt_target_defers_without_tensorrt(run_cli, tmp_path):
    """Without TensorRT: the Q/DQ ONNX and a trtexec bundle, an explicit 'no engine' line, exit 0."""
    pytest.importorskip("onnxruntime")
    if trt_stage.unavailable() is None:
        pytest.skip("TensorRT and a GPU are available: engines are built instead")
    calib = write_split(tmp_path / "shapes", "calib", 8, seed=3)
    run = tmp_path / "run"
    code, _, err = run_cli(
        "build",
        "--recipe",
        str(EMBEDDED),
        "--target",
        "tensorrt",
        "--precision",
        "fp16",
        "--precision",
        "int8",
        "--input-size",
        "96",
        "128",
        "--calib-data",
        str(calib),
        "--calib-count",
        "8",
        "--run-dir",
        str(run),
    )
    assert code == 0, err
    assert "no TensorRT engine was built on this machine" in err and "NO ENGINE BUILT" in err
    assert not list(run.rglob("*.engine")) and not list(run.rglob("*.plan"))
    manifest = json.loads((run / "manifest.json").read_text())
    deferred = manifest["deferred"]["tensorrt"]
    assert deferred["reason"] and deferred["bundle"] == str(run / "tensorrt" / "bundle" / "build_engine.sh")
    assert manifest["artifacts"] == {}
    script = (run / "tensorrt" / "bundle" / "build_engine.sh").read_text()
    assert "--fp16" in script and "model.qdq.onnx" in script


def test_build_refuses_graph_the_tensorrt_version_cannot_parse(run_cli, tmp_path):
    code, _, err = run_cli(
        "build",
        "--recipe",
        str(EMBEDDED),
        "--target",
        "tensorrt",
        "--trt-version",
        "8.2",
        "--akconv-lowering",
        "plugin",  # auto picks gather for 8.2
        "--opset",
        "13",  # 8.2's parser stops at 13
        "--input-size",
        "96",
        "128",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert code == 2 and "TensorRT 8.2 cannot take" in err and "AKConvSample" in err
    assert "Traceback" not in err


def test_build_with_end2end_nms_declares_corner_boxes(run_cli, tmp_path):
    if trt_stage.unavailable() is None:
        pytest.skip("TensorRT and a GPU are available: engines are built instead")
    run = tmp_path / "run"
    code, _, err = run_cli(
        "build",
        "--recipe",
        str(EMBEDDED),
        "--target",
        "tensorrt",
        "--precision",
        "fp16",
        "--trt-end2end-nms",
        "--input-size",
        "96",
        "128",
        "--run-dir",
        str(run),
    )
    assert code == 0, err
    model = onnx.load(run / "tensorrt" / "model.fp16.end2end.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["box_coding"] == 0 and attrs["score_threshold"] == pytest.approx(0.05)
    assert attrs["iou_threshold"] == pytest.approx(0.65), "thresholds from the model's adapter"
    assert [o.name for o in model.graph.output][0] == "num_dets"
    bundled = onnx.load(run / "tensorrt" / "bundle" / "model.onnx")
    assert any(n.op_type == "EfficientNMS_TRT" for n in bundled.graph.node), (
        "the bundle builds the end-to-end model"
    )


@pytest.mark.slow
def test_qdq_keeps_demo_accuracy_under_onnxruntime(run_cli, tmp_path):
    """TensorRT's explicit-INT8 model of the trained demo detector, evaluated here with onnxruntime."""
    if trt_stage.unavailable() is None:
        pytest.skip("TensorRT and a GPU are available: engines are built instead")
    run = tmp_path / "run"
    code, _, err = run_cli(
        "build",
        "--target",
        "tensorrt",
        "--precision",
        "int8",
        "--calib-count",
        "64",
        "--eval-limit",
        "100",
        "--run-dir",
        str(run),
    )
    assert code == 0, err
    results = json.loads((run / "eval.json").read_text())["results"]
    drop = results["torch.fp32"]["map"] - results["tensorrt.qdq (onnxruntime)"]["map"]
    assert abs(drop) < 0.015, f"Q/DQ INT8 changed mAP by {100 * drop:.2f} points"
    record = json.loads((run / "manifest.json").read_text())["stages"]["tensorrt.qdq"]
    assert all(name.startswith("/heads.") for name in record["excluded_nodes"]), "prediction convs in float"


def test_engine_cache_key_holds_tensorrt_gpu_plugin_and_tolerance(tmp_path, monkeypatch):
    """An engine loads only on the TensorRT and GPU it was built with: a change of either, of the
    plugin library or of the FP32 tolerance builds it again. The builder is replaced by a recorder."""
    from exporter.pipeline.builder import Pipeline

    built = []

    def fake_engine_stage(settings, onnx_path, fused, out, timing_cache=None):
        built.append(settings.precision)
        out.write_bytes(b"engine for " + str(versions).encode())
        return trt_stage.EngineRecord(settings.precision, check=None, note="recorded")

    versions = {"tensorrt": "10.3.0", "gpu": "Tesla T4 (sm 7.5)"}
    monkeypatch.setattr(trt_stage, "unavailable", lambda: None)
    monkeypatch.setattr(trt_stage, "runtime_versions", lambda: dict(versions))
    monkeypatch.setattr(trt_stage, "engine_stage", fake_engine_stage)
    plugin = tmp_path / "libakconv_plugin.so"
    plugin.write_bytes(b"v1")
    overrides = {
        "input_size": [64, 64],
        "targets": ["tensorrt"],
        "precisions": ["fp32"],
        "tensorrt.plugin_library": str(plugin),
    }

    def build(**extra):
        Pipeline(load_recipe(EMBEDDED, {**overrides, **extra}), tmp_path / "run").build()

    build()
    build()
    assert built == ["fp32"], "same TensorRT, GPU, plugin and settings: cached"
    versions["tensorrt"] = "10.8.0"
    build()
    versions["gpu"] = "NVIDIA A10 (sm 8.6)"
    build()
    plugin.write_bytes(b"v2")
    build()
    build(**{"thresholds.fp32_noise_factor": 4.0})
    assert built == ["fp32"] * 5


def test_end2end_engine_is_not_compared_with_the_nms_free_reference(tmp_path, monkeypatch):
    """EfficientNMS_TRT outputs detections (4 tensors), not the reference's scores and boxes."""
    monkeypatch.setattr(
        trt_stage, "build_engine", lambda *args: {"precision": "fp32", "plan": {"plugin": False}}
    )
    monkeypatch.setattr(trt_backend, "load", lambda *args: pytest.fail("compared with the reference"))
    settings = trt_stage.EngineStageSettings.from_recipe(
        load_recipe(EMBEDDED, {"tensorrt.end2end_nms": True}), "fp32"
    )
    record = trt_stage.engine_stage(settings, tmp_path / "m.onnx", tmp_path / "f.pt", tmp_path / "e")
    assert record.check is None and "no parity check" in record.note


def test_cached_ranges_are_keyed_on_image_contents(tmp_path):
    source = write_split(tmp_path / "shapes", "calib", 3, seed=5)
    chosen, _ = calibration.select(source, 3, 0, (32, 32), Preprocess())
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    before = quantization.ranges_file(model, chosen, "minmax", True)
    assert quantization.ranges_file(model, chosen, "minmax", True) == before
    first, second = chosen.images[:2]
    first.write_bytes(second.read_bytes())  # same path, new pixels
    assert quantization.ranges_file(model, chosen, "minmax", True) != before


def test_engines_load_with_the_plugin_library_they_were_built_with(monkeypatch):
    from exporter.pipeline.targets.table import load_artifact
    from exporter.pipeline.targets.tensorrt.section import TensorRTSpec

    seen = []
    monkeypatch.setattr(trt_backend, "load", lambda path, plugin: seen.append(plugin) or "runner")
    section = TensorRTSpec(plugin_library="/opt/libakconv_plugin.so")
    assert load_artifact("tensorrt.fp32", "m.engine", 0, section) == "runner"
    assert load_artifact("tensorrt.fp16", "m.engine") == "runner"
    assert seen == [Path("/opt/libakconv_plugin.so"), None]
