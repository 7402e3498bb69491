"""OpenVINO target: IR in three precisions, FP32 parity, INT8 with the head in float, calibration."""

import json

import numpy as np
import pytest
import torch

from exporter.base.data import calibration
from exporter.base.data.shapes import write_split
from exporter.base.data.transforms import Preprocess
from exporter.base.errors import UserError
from exporter.pipeline.recipe import load_recipe
from tests.conftest import EMBEDDED

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def calib_json(tmp_path_factory):
    return write_split(tmp_path_factory.mktemp("shapes"), "calib", 24, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory, calib_json):
    from exporter.pipeline.builder import Pipeline

    run = tmp_path_factory.mktemp("run")
    recipe = load_recipe(
        EMBEDDED,
        {
            "input_size": [96, 128],
            "targets": ["openvino"],
            "precisions": ["fp32", "fp16", "int8"],
            "calibration.source": str(calib_json),
            "calibration.count": 16,
            "calibration.folder": str(run / "calibration"),
        },
    )
    artifacts = Pipeline(recipe, run).build()
    return run, artifacts


def test_ir_in_three_precisions(built):
    run, artifacts = built
    assert set(artifacts) == {"openvino.fp32", "openvino.fp16", "openvino.int8"}
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    for precision in ("fp32", "fp16", "int8"):
        xml = run / "openvino" / f"model_{precision}.xml"
        assert xml.is_file() and xml.with_suffix(".bin").is_file()
        record = stages[f"openvino.{precision}"]
        assert record["output"]["companions"][0]["path"].endswith(f"model_{precision}.bin")
        assert record["runtime"]["INFERENCE_PRECISION_HINT"] == "f32", "never silently bf16"
    fp32, fp16, int8 = (stages[f"openvino.{p}"]["check"] for p in ("fp32", "fp16", "int8"))
    assert fp32["ok"] and fp32["max_abs_err"] <= fp32["tolerance"]
    # errors against the one float64 reference: FP16 and INT8 round far more than FP32 does; FP16's weights
    # keep ~3 decimal digits. Which of FP16 and INT8 errs more depends on the CPU's INT8 kernels.
    for lower in (fp16, int8):
        assert fp32["max_abs_err"] < lower["max_abs_err"] / 10
    assert fp16["max_abs_err"] < 1e-2 * max(1.0, fp16["max_abs_ref"])
    sizes = {p: (run / "openvino" / f"model_{p}.bin").stat().st_size for p in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def bf16_host() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_fp32_ir_computes_in_f32_in_a_consumer_that_sets_no_precision(built):
    """Every layer of the FP32 IR is marked precise, so OpenVINO's defaults (bf16 on CPUs with BF16) and
    even an explicit bf16 hint compute it in f32; the FP16 IR, unmarked, says what it is and runs at the
    precision the runtime chooses."""
    import xml.etree.ElementTree as ET

    import openvino as ov

    from exporter.pipeline.stages.reference import reference_parity
    from exporter.pipeline.targets.openvino.runtime import OpenVinoRunner

    run, _ = built
    xml = run / "openvino" / "model_fp32.xml"
    layers = list(ET.parse(xml).getroot().iter("layer"))
    marked = [layer for layer in layers if layer.find("rt_info/attribute[@name='precise']") is not None]
    assert layers and len(marked) == len(layers)
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    plain = stages["openvino.fp32"]["plain_consumer"]
    assert plain["check"]["ok"] and plain["default_precision"] == ("bf16" if bf16_host() else "f32")
    default = OpenVinoRunner(xml, hint=None)  # ov.Core().compile_model(xml, "CPU") as a consumer calls it
    assert reference_parity(run / "fused.pt", default, 8).ok
    fp16 = ov.Core().read_model(run / "openvino" / "model_fp16.xml")
    assert fp16.get_rt_info(["reparam_export", "precision"]).astype(str) == "fp16"
    assert "chooses" in fp16.get_rt_info(["reparam_export", "inference_precision"]).astype(str)
    if bf16_host():
        assert reference_parity(run / "fused.pt", OpenVinoRunner(xml, hint="bf16"), 8).ok
        fp16_default = OpenVinoRunner(run / "openvino" / "model_fp16.xml", hint=None)
        bf16 = reference_parity(run / "fused.pt", fp16_default, 8)
        assert bf16.ratio > 10, "unmarked, the IR runs in bf16 here: far past the FP32 bound"


class Settled(torch.nn.Module):
    """Ops the CPU plugin replaces at compile time (and so drops their precise marker): Resize (opset 11's
    Interpolate), Unsqueeze, two Slices of one tensor, MaxPool, Softmax on the last axis."""

    def forward(self, x):
        up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        a, b = up[:, :2], up[:, 2:]
        pooled = torch.nn.functional.max_pool2d(a * b, 5, 1, 2)
        return torch.softmax(pooled, -1).unsqueeze(1) * 3


def test_settled_ir_leaves_the_cpu_plugin_nothing_to_replace(tmp_path):
    import openvino as ov

    from exporter.pipeline.targets.openvino.runtime import OLDER_VERSIONS, mark_precise, settle_for_precise

    onnx_path = tmp_path / "m.onnx"
    x = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.onnx.export(Settled(), (x,), onnx_path, opset_version=17, dynamo=False)
    model = ov.convert_model(str(onnx_path))
    before = {(op.get_type_name(), op.get_type_info().version_id) for op in model.get_ordered_ops()}
    assert set(OLDER_VERSIONS) <= before, "the model has every op the rewrite handles"
    settle_for_precise(model)
    after = {(op.get_type_name(), op.get_type_info().version_id) for op in model.get_ordered_ops()}
    assert not set(OLDER_VERSIONS) & after
    ov.save_model(model, tmp_path / "m.xml", compress_to_fp16=False)
    mark_precise(tmp_path / "m.xml")
    core = ov.Core()
    expected = Settled()(x).numpy()
    compiled = core.compile_model(tmp_path / "m.xml", "CPU")
    np.testing.assert_allclose(compiled(x.numpy())[0], expected, rtol=1e-6, atol=1e-7)
    ops = compiled.get_runtime_model().get_ordered_ops()
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in ops}
    assert "bf16" not in precisions, "every node the plugin runs kept f32"


def test_fp32_ir_the_plugin_cannot_compile_marked_is_saved_unmarked_and_says_so(built, monkeypatch, tmp_path):
    """Where OpenVINO's CPU plugin refuses the marked IR with a consumer's defaults (as 2026.4 does for
    DAMO-YOLO-M/L on AVX-512 BF16), the IR is saved unmarked, its rt_info and the record say why, and the
    stage's line warns with the f32 hint; the f32-hinted check still holds."""
    import xml.etree.ElementTree as ET

    import openvino as ov

    from exporter.pipeline.targets.openvino import ir as openvino
    from exporter.pipeline.targets.openvino import runtime as ov_backend

    run, _ = built
    recipe = load_recipe(EMBEDDED, {"input_size": [96, 128], "targets": ["openvino"], "precisions": ["fp32"]})
    refusals = []

    real = ov_backend.OpenVinoRunner

    def refuses_marked(source, hint="f32", threads=0):
        """The CPU plugin as it behaves on AVX-512 BF16 for DAMO-YOLO-M/L: the marked IR, compiled with
        a consumer's defaults, refused."""
        if (
            hint is None
            and ET.parse(source).getroot().find(".//rt_info/attribute[@name='precise']") is not None
        ):
            refusals.append(True)
            raise RuntimeError("Exception from src/inference/src/dev/plugin.cpp:59:\nunsupported post-ops")
        return real(source, hint, threads)

    monkeypatch.setattr(ov_backend, "OpenVinoRunner", refuses_marked)
    out = tmp_path / "model_fp32.xml"
    settings = openvino.IrSettings.from_recipe(recipe, "fp32")
    record = openvino.run(settings, run / "openvino" / "model.sim.onnx", run / "fused.pt", out)
    assert refusals == [True]
    assert record.precise == {
        "marked": False,
        "why_not": "OpenVINO's CPU plugin could not compile it marked precise (unsupported post-ops)",
    }
    assert ET.parse(out).getroot().find(".//rt_info/attribute[@name='precise']") is None
    computes = ov.Core().read_model(out).get_rt_info(["reparam_export", "inference_precision"]).astype(str)
    assert "could not compile its layers marked precise" in computes
    assert record.check["ok"]
    line = record.describe()
    if bf16_host():
        assert "WARNING" in line and "layers not marked precise" in line
        assert "INFERENCE_PRECISION_HINT" in line
    else:
        assert "f32 in a consumer setting no precision" in line


def test_int8_keeps_head_decode_in_float(built):
    run, _ = built
    record = json.loads((run / "manifest.json").read_text())["stages"]["openvino.int8"]
    ignored = record["int8"]["ignored_scope"]
    assert record["int8"]["calibration_images"] == 16
    assert record["int8"]["statistics"] == "batches of 8 images"
    assert any("Sigmoid" in name for name in ignored) and any("Softmax" in n or "Add" in n for n in ignored)
    assert not any("Conv" in name and "heads" not in name for name in ignored)
    assert len(record["settings"]["calibration"]["digests"]) == 16, "the images' contents key the stage"


def test_openvino_runs_the_gridsample_lowering(built):
    run, _ = built
    export = json.loads((run / "manifest.json").read_text())["stages"]["openvino.export"]
    assert export["akconv"]["lowering"] == "gridsample"


def test_calibration_manifest_records_images_per_model(built, calib_json):
    run, _ = built
    (folder,) = (run / "calibration").iterdir()
    content = json.loads((folder / "images.json").read_text())
    assert content["count"] == 16 and len(content["images"]) == 16
    assert all(len(i["sha256"]) == 64 for i in content["images"])
    chosen, _ = calibration.select(calib_json, 16, 0, (96, 128), Preprocess())
    assert chosen.key("a" * 64) != chosen.key("b" * 64), "keyed by model"
    other, _ = calibration.select(calib_json, 16, 0, (96, 96), Preprocess())
    assert chosen.key("a" * 64) != other.key("a" * 64), "keyed by preprocessing"
    drawn, _ = calibration.select(calib_json, 16, 1, (96, 128), Preprocess())
    assert chosen.key("a" * 64) != drawn.key("a" * 64), "keyed by the images' contents"


def test_a_build_on_other_images_never_rewrites_another_runs_record(built, calib_json, tmp_path):
    """Two runs of one model sharing a calibration folder, calibrated on other images: each INT8
    artifact keeps the record of the images it was built from."""
    from exporter.pipeline.builder import Pipeline

    run, _ = built
    (record,) = (run / "calibration").glob("*/images.json")
    before = record.read_bytes()
    recipe = load_recipe(
        EMBEDDED,
        {
            "input_size": [96, 128],
            "targets": ["openvino"],
            "precisions": ["int8"],
            "calibration.source": str(calib_json),
            "calibration.count": 16,
            "calibration.seed": 1,
            "calibration.folder": str(run / "calibration"),
        },
    )
    Pipeline(recipe, tmp_path / "other").build()
    records = sorted((run / "calibration").glob("*/images.json"))
    assert len(records) == 2 and record.read_bytes() == before
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    recorded = [i["sha256"] for i in json.loads(before)["images"]]
    assert stages["openvino.int8"]["settings"]["calibration"]["digests"] == recorded


def test_bench_writes_latency_per_artifact(built, run_cli):
    run, _ = built
    code, out, err = run_cli(
        "bench", "--artifacts", str(run), "--min-iters", "5", "--min-seconds", "0.05", "--throughput", "2"
    )
    assert code == 0, err
    report = json.loads((run / "bench.json").read_text())
    assert set(report["results"]) == {"openvino.fp32", "openvino.fp16", "openvino.int8"}
    for r in report["results"].values():
        assert r["iterations"] >= 5 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput_fps"] > 0 and r["throughput_requests"] >= 1
    assert report["threads"] >= 1 and report["cpu"]
    assert "openvino.int8" in out


def test_calibration_selection_is_seeded(calib_json):
    a, _ = calibration.select(calib_json, 10, 0, (64, 64), Preprocess())
    b, _ = calibration.select(calib_json, 10, 0, (64, 64), Preprocess())
    c, _ = calibration.select(calib_json, 10, 1, (64, 64), Preprocess())
    assert a.images == b.images and a.images != c.images
    batch = next(a.batches(4))
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == np.float32 and batch.max() <= 1.0


def test_calibration_bad_sources(tmp_path, calib_json):
    pre = Preprocess()
    with pytest.raises(UserError, match="calibration source not found"):
        calibration.select(tmp_path / "nope", 4, 0, (64, 64), pre)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        calibration.select(tmp_path / "empty", 4, 0, (64, 64), pre)
    with pytest.raises(UserError, match="24 images, fewer than the 50 asked for; pass calibration.count: 24"):
        calibration.select(calib_json, 50, 0, (64, 64), pre)
    chosen, warnings = calibration.select(calib_json, 50, 0, (64, 64), pre, allow_fewer=True)
    assert len(chosen.images) == 24 and "fewer than the 50" in warnings[0]
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"cannot read image .*a\.jpg"):
        calibration.select(folder, 1, 0, (64, 64), pre)
    with pytest.raises(UserError, match="at least 1"):
        calibration.select(calib_json, 0, 0, (64, 64), pre)
    with pytest.raises(UserError, match="is a single file; pass its folder or a COCO json"):
        calibration.select(folder / "a.jpg", 1, 0, (64, 64), pre)
    no_images = tmp_path / "coco" / "calib.json"
    (tmp_path / "coco" / "calib").mkdir(parents=True)
    no_images.write_text(json.dumps({"categories": [], "images": [], "annotations": []}))
    with pytest.raises(UserError, match="not a COCO instances file: no images"):
        calibration.select(no_images, 4, 0, (64, 64), pre)


def test_image_folder_source(tmp_path, calib_json):
    images = sorted((calib_json.parent / "calib").iterdir())[:5]
    folder = tmp_path / "imgs" / "nested"
    folder.mkdir(parents=True)
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    chosen, _ = calibration.select(tmp_path / "imgs", 5, 0, (64, 64), Preprocess())
    assert [p.name for p in chosen.images] == [p.name for p in images]


def test_head_tail_finds_ops_after_last_conv():
    import openvino as ov
    import torch

    from exporter.base.numerics.graph import openvino_head_tail as head_tail

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 3)
            self.b = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))).sigmoid() * 2.0

    model = ov.convert_model(Tiny().eval(), example_input=torch.rand(1, 3, 8, 8))
    tail = head_tail(model)
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    assert {types[n] for n in tail} >= {"Sigmoid", "Multiply"}
    assert [types[n] for n in tail].count("Convolution") == 1, "the last (prediction) conv, not the first"
    assert "Relu" not in {types[n] for n in tail}


def test_calibrate_command_records_the_images(run_cli, tmp_path, calib_json):
    code, _, err = run_cli(
        "calibrate",
        "--recipe",
        str(EMBEDDED),
        "--input-size",
        "96",
        "128",
        "--calib-data",
        str(calib_json),
        "--calib-count",
        "5",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert code == 0, err
    (record,) = (tmp_path / "run" / "calibration").glob("*/images.json")
    assert not (tmp_path / "calibration").exists(), "a run writes nothing outside its directory"
    assert json.loads(record.read_text())["count"] == 5 and "5 images" in err
    code, _, err = run_cli(
        "calibrate",
        "--recipe",
        str(EMBEDDED),
        "--input-size",
        "96",
        "128",
        "--calib-data",
        str(calib_json),
        "--calib-count",
        "500",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert code == 2 and "fewer than the 500 asked for" in err


def test_side_by_side_alternates_and_takes_the_median(monkeypatch):
    """Rounds pass over every call in turn; each call's result is the median of its round p50s, so a
    machine slowing down during the run penalizes no call in particular."""
    from exporter.base.numerics import latency

    order, clock = [], iter(range(1, 100))

    def fake_measure(call, min_seconds):
        order.append(call())
        return latency.Latency(1, 0.0, 0.0, float(next(clock)), 0.0, 0.0)

    monkeypatch.setattr(latency, "measure", fake_measure)
    result = latency.side_by_side({"a": lambda: "a", "b": lambda: "b"}, rounds=3, min_seconds=0.3)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert result == {"a": 3.0, "b": 4.0}  # medians of 1,3,5 and 2,4,6
    assert latency.rounds_of({"a": lambda: "a", "b": lambda: "b"}, rounds=2) == {
        "a": [7.0, 9.0],
        "b": [8.0, 10.0],
    }


@pytest.mark.slow
def test_bench_cpu_times_every_runtime_and_checks_its_goals(calib_json, single_thread, scored_images):
    """... and scores each model once, on the first --eval-limit images (its build's evaluation)."""
    from exporter.measure.studies.cpu import bench_recipe, met
    from exporter.pipeline.targets.openvino.runtime import runs_bf16

    data = {
        "calibration.source": str(calib_json),
        "evaluation.data": str(calib_json),
        "model.kwargs.num_classes": 5,  # the shapes' five classes, scored
        "class_names": ["circle", "square", "triangle", "star", "hexagon"],
    }
    recipe = load_recipe(EMBEDDED, {"input_size": [64, 64], **data})
    rows, goals, fusion = bench_recipe(recipe, threads=1, min_seconds=0.1, calib_count=8, eval_limit=8)
    assert [r.name for r in rows] == [
        "PyTorch eager, unfused FP32",
        "onnxruntime, unfused FP32",
        "OpenVINO, unfused FP32",
        "OpenVINO, fused FP32",
        "OpenVINO, fused FP16",
        *(["OpenVINO, fused BF16"] if runs_bf16() else []),  # on CPUs that compute it natively
        "OpenVINO, fused INT8",
        *(["OpenVINO, fused INT8, float layers BF16"] if runs_bf16() else []),
    ]
    assert all(r.p50_ms > 0 for r in rows) and rows[0].ratio_vs_torch == 1.0 and rows[0].ratio_range == (1, 1)
    assert all(low <= r.ratio_vs_torch <= high for r in rows for low, high in [r.ratio_range])
    by_name = {r.name: r.p50_ms for r in rows}
    assert goals["INT8 vs FP32 IR"] == by_name["OpenVINO, fused FP32"] / by_name["OpenVINO, fused INT8"]
    bf16 = {
        "BF16 vs FP32 IR",
        "BF16 vs onnxruntime FP32",
        "INT8 float layers BF16 vs F32",
        "BF16 mAP drop (points)",
        "INT8 float layers BF16 mAP drop vs F32 (points)",
    }
    scored = {"INT8 mAP drop (points)", "mAP FP32 / INT8"}  # the recipe names evaluation data
    assert set(goals) == {
        "fused vs unfused OpenVINO FP32",
        "INT8 vs FP32 IR",
        *scored,
        *(bf16 if runs_bf16() else ()),
    }
    assert met("INT8 vs FP32 IR", 1.5) and not met("INT8 vs FP32 IR", 1.49)
    assert met("BF16 mAP drop (points)", 0.3) and not met("BF16 mAP drop (points)", 0.31)
    # The demo's RepConvs merge branches: fewer compiled convolutions and less convolution work.
    assert fusion.convs_fused < fusion.convs_unfused and fusion.macs_fused < fusion.macs_unfused
    assert "fusion removes" in fusion.describe()
    # the torch model and the FP32, FP16 and INT8 IR (and the BF16 IR and INT8 with BF16 float layers)
    assert scored_images == [8] * (4 + 2 * runs_bf16()), scored_images


def test_bench_cpu_times_models_without_calibration_images_of_their_own(tmp_path):
    from exporter.measure.studies.cpu import timed_precisions, timed_recipe
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.recipe import REPO_RECIPES

    recipe = load_recipe(REPO_RECIPES / "damoyolo_ns.yaml")
    assert recipe.calibration.source is None
    timed = timed_recipe(recipe, 8, tmp_path / "calibration")
    Pipeline(timed, tmp_path / "run").check()  # INT8 would be refused without calibration images
    assert timed.calibration.source == "demo" and timed.precisions == list(timed_precisions())
    assert {"fp32", "fp16", "int8"} <= set(timed.precisions)


def test_openvino_folds_batchnorm_itself(tmp_path):
    """Why fusing conv+BN gains nothing on OpenVINO: it compiles the same convolutions either way."""
    import warnings

    import onnx
    import torch
    from torch import nn

    from exporter.blocks.fuse import fuse_model
    from exporter.pipeline.targets.openvino import runtime as ov_backend

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1))
    probe = torch.rand(1, 3, 32, 32)
    fused, report = fuse_model(model, probe)
    assert report.ok and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    counts = []
    for name, net in (("unfused", model), ("fused", fused)):
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no constant folding: keep BatchNormalization in the graph
            torch.onnx.export(
                net, (probe,), str(path), dynamo=False, opset_version=17, do_constant_folding=False
            )
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert ("BatchNormalization" in ops) == (name == "unfused")
        counts.append(ov_backend.load(path).compiled_layers("Convolution"))
    assert counts == [2, 2]


class _Batchy(torch.nn.Module):
    """A conv, then `tail` on its output (N, 4, 6, 6)."""

    def __init__(self, tail):
        super().__init__()
        self.conv, self.tail = torch.nn.Conv2d(3, 4, 3), tail

    def forward(self, x):
        return self.tail(self.conv(x))


BATCH_TAILS = {
    "names the batch": (lambda y: y.reshape(1, 4, -1).softmax(-1), None),
    "folds the batch": (
        lambda y: y.reshape(4, -1).softmax(-1),
        "does not keep the batch as its leading dimension",
    ),
    "mixes images": (lambda y: y * y.softmax(0), "image 0 of a batch gives other outputs than alone"),
}


@pytest.mark.parametrize("case", BATCH_TAILS)
def test_any_batch_is_proved_or_refused(case, tmp_path):
    import openvino as ov

    from exporter.pipeline.targets.openvino.runtime import OpenVinoRunner, allow_any_batch

    tail, refusal = BATCH_TAILS[case]
    torch.manual_seed(0)
    onnx = tmp_path / "model.onnx"  # exported as the export stage does: the batch of 1 written into the graph
    torch.onnx.export(_Batchy(tail).eval(), (torch.rand(1, 3, 8, 8),), str(onnx), dynamo=False)
    model = ov.convert_model(str(onnx))
    images = np.random.default_rng(0).random((3, 3, 8, 8), dtype=np.float32)
    alone = OpenVinoRunner(model.clone())
    why = allow_any_batch(model, images)
    if refusal is None:
        assert why is None
        together = OpenVinoRunner(model).infer(images)[0]
        for index, image in enumerate(images):
            np.testing.assert_allclose(together[index], alone.infer(image[None])[0][0], rtol=1e-5, atol=1e-6)
    else:
        assert refusal in why, why
        assert list(model.input(0).get_partial_shape()) == [1, 3, 8, 8], "the model is left as it was"
        np.testing.assert_array_equal(OpenVinoRunner(model).infer(images[:1])[0], alone.infer(images[:1])[0])


def test_batched_statistics_quantize_as_one_image_at_a_time(built, calib_json):
    """Statistics over batches of 8 (the last one short) give the ranges of one image at a time."""
    import openvino as ov

    from exporter.pipeline.targets.openvino.ir import STATISTICS_BATCH, quantize

    run, _ = built
    images, _ = calibration.select(calib_json, STATISTICS_BATCH + 4, 0, (96, 128), Preprocess())
    onnx = str(run / "openvino" / "model.sim.onnx")
    batched = quantize(ov.convert_model(onnx), images, (), "performance")
    single = quantize(ov.convert_model(onnx), images, (), "performance", batch=1)
    assert batched.statistics == f"batches of {STATISTICS_BATCH} images"
    assert single.statistics == "one image at a time (batches of one)"

    def ranges(model):
        """The input range of each quantized op input (OpenVINO merges FakeQuantize ops that a reshape
        finds identical on one tensor, so the ops themselves are not compared)."""
        found = {}
        for op in model.get_ordered_ops():
            if op.get_type_name() == "FakeQuantize":
                limits = np.concatenate([op.input_value(i).get_node().get_data().ravel() for i in (1, 2)])
                for target in op.output(0).get_target_inputs():
                    found[f"{target.get_node().get_friendly_name()}:{target.get_index()}"] = limits
        return found

    a, b = ranges(single.model), ranges(batched.model)
    assert len(a) > 10 and a.keys() == b.keys(), (sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys()))
    worst = max(float(np.abs(a[k] - b[k]).max() / max(1e-6, np.abs(a[k]).max())) for k in a)
    assert worst <= 1e-5, f"ranges differ by {worst:.3g} of their size"
    assert list(batched.model.input(0).get_partial_shape()) == [1, 3, 96, 128]


ANOTHER_HOST = "--ov-bf16-for another-host"


@pytest.mark.parametrize(
    ("asked", "refusal", "fixes"),
    [
        (("--precision", "bf16"), "precision bf16 needs", ("--precision fp16", ANOTHER_HOST)),
        (
            ("--precision", "int8", "--ov-int8-float", "bf16"),
            "INT8 float layers in bf16 need",
            ("--ov-int8-float f32", ANOTHER_HOST),
        ),
        (  # for another host too: the search's trials would run in f32 here
            ("--precision", "int8", "--ov-int8-float", "bf16", *ANOTHER_HOST.split())
            + ("--int8-accuracy-budget", "0.5", "--eval-data", "demo"),
            "the INT8 search scores its trials as the IR runs them, and INT8 float layers in bf16 need",
            ("leave out --int8-accuracy-budget", "--ov-int8-float f32"),
        ),
    ],
    ids=["bf16", "int8-float-bf16", "int8-float-bf16-search"],
)
def test_bf16_is_refused_before_any_stage_where_the_cpu_lacks_it(
    run_cli, monkeypatch, tmp_path, asked, refusal, fixes
):
    from exporter.pipeline.targets.openvino import runtime

    monkeypatch.setattr(runtime, "runs_bf16", lambda: False)
    run = tmp_path / "run"
    code, _, err = run_cli(
        "build", "--recipe", str(EMBEDDED), "--target", "openvino", *asked, "--run-dir", str(run)
    )
    assert code == 2 and f"{refusal} a CPU with AVX-512 BF16 or AMX" in err, err
    assert all(fix in err for fix in fixes) and not run.exists(), err


def test_int8_float_layers_in_bf16_are_measured_only_where_the_cpu_computes_bf16(monkeypatch, relu_onnx):
    """The IR says what it computes in (its rt_info, which the stage writes), so an INT8 IR whose float
    layers compute in bf16 is never scored or timed as f32, whatever recipe the run holds now: where the
    CPU lacks BF16, evaluation and bench leave it out, saying why; an IR that says f32 is measured."""
    import openvino as ov

    from exporter.pipeline.targets.openvino import runtime
    from exporter.pipeline.targets.table import load_artifact, unmeasured_here

    artifacts = {}
    for hint in ("bf16", "f32"):
        model = runtime.convert(relu_onnx)
        model.set_rt_info(hint, runtime.HINT_KEY)
        artifacts[hint] = relu_onnx.parent / f"model_{hint}.xml"
        ov.save_model(model, str(artifacts[hint]))
    keys = {"openvino.int8": artifacts["bf16"], "openvino.fp32": artifacts["f32"]}
    monkeypatch.setattr(runtime, "runs_bf16", lambda: False)
    assert set(unmeasured_here(keys)) == {"openvino.int8"}
    assert "computes no bf16" in unmeasured_here(keys)["openvino.int8"]
    monkeypatch.setattr(runtime, "runs_bf16", lambda: True)
    assert unmeasured_here(keys) == {}
    config = load_artifact("openvino.int8", artifacts["f32"]).config
    assert config["INFERENCE_PRECISION_HINT"] == "f32", "the IR's word, not the precision's default"


def test_the_search_runs_its_trials_as_the_build_runs_its_int8_ir(relu_onnx):
    """The INT8 search's trial models compute their float layers as the recipe's INT8 IR does."""
    from exporter.pipeline.targets.openvino import descriptor

    for preset, floats in (("mixed", "f32"), ("performance", "bf16")):
        recipe = load_recipe(EMBEDDED, {"openvino.int8_preset": preset, "openvino.int8_float": floats})
        quantizer = descriptor.quantizer(relu_onnx, None, descriptor.search_method(recipe), relu_onnx.parent)
        assert (quantizer.preset, quantizer.int8_float) == (preset, floats)


def test_int8_float_layers_run_in_bf16_where_asked(built, tmp_path, run_cli):
    """On a CPU with BF16, `--ov-int8-float bf16`: the INT8 IR's float layers compute in bf16 in every runner
    of ours (the stage's check, eval and bench load it so), the record and the IR's rt_info say so; the
    INT8 part is the same as the f32 build's. Elsewhere the refusal."""
    import shutil
    import xml.etree.ElementTree as ET

    from exporter.pipeline.targets.openvino import runtime
    from exporter.pipeline.targets.table import load_artifact

    source, _ = built
    run = tmp_path / "run"
    shutil.copytree(source, run)  # fuse, export and calibration reused
    recipe = json.loads((run / "manifest.json").read_text())["recipe"]
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(json.dumps({**recipe, "precisions": ["int8"], "openvino": {"int8_float": "bf16"}}))
    code, _, err = run_cli("build", "--recipe", str(recipe_path), "--run-dir", str(run))
    if not runtime.runs_bf16():
        assert code == 2 and "INT8 float layers in bf16 need a CPU" in err, err
        return
    assert code == 0, err
    int8 = json.loads((run / "manifest.json").read_text())["stages"]["openvino.int8"]
    assert int8["runtime"]["INFERENCE_PRECISION_HINT"] == "bf16" and int8["int8"]["float_precision"] == "bf16"
    assert "(computed in bf16)" in err
    xml = run / "openvino" / "model_int8.xml"
    said = ET.parse(xml).getroot().find(".//rt_info/reparam_export/inference_precision").attrib["value"]
    assert said.startswith("INT8 where quantized; the float layers in bfloat16")
    hint = ET.parse(xml).getroot().find(".//rt_info/reparam_export/inference_hint").attrib["value"]
    assert hint == "bf16", "the IR carries it: eval and bench read it from the artifact, not the recipe"
    assert load_artifact("openvino.int8", xml).config["INFERENCE_PRECISION_HINT"] == "bf16"
    assert (xml.with_suffix(".bin")).read_bytes() == (source / "openvino" / "model_int8.bin").read_bytes()


def test_bf16_for_another_host_is_built_here_and_never_measured_as_f32(run_cli, monkeypatch, tmp_path):
    """Asked for another host, a CPU without BF16 builds the IR; its error, mAP and latency are not
    measured (OpenVINO would compute it in f32 here) and every record says why."""
    from exporter.pipeline.targets.openvino import runtime

    monkeypatch.setattr(runtime, "runs_bf16", lambda: False)
    run = tmp_path / "run"
    args = [
        "--target",
        "openvino",
        "--precision",
        "fp32",
        "--precision",
        "bf16",
        "--ov-bf16-for",
        "another-host",
    ]
    code, _, err = run_cli("build", *args, "--eval-data", "demo", "--eval-limit", "8", "--run-dir", str(run))
    assert code == 0, err  # the demo model
    why = "computes no bf16 (it has neither AVX-512 BF16 nor AMX)"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    bf16 = stages["openvino.bf16"]
    assert bf16["check"] is None and why in bf16["note"] and stages["openvino.fp32"]["check"]["ok"]
    assert (run / bf16["output"]["path"]).is_file() and "NOT MEASURED here" in err
    scored = json.loads((run / "eval.json").read_text())
    assert "openvino.bf16" not in scored["results"] and why in scored["not_measured"]["openvino.bf16"]
    assert run_cli("bench", "--artifacts", str(run), "--min-iters", "5", "--min-seconds", "0.1")[0] == 0
    timed = json.loads((run / "bench.json").read_text())
    assert set(timed["results"]) == {"openvino.fp32"} and why in timed["not_measured"]["openvino.bf16"]
    assert run_cli("report", "--artifacts", str(run))[0] == 0
    report = (run / "report" / "report.md").read_text()
    assert "Not measured for openvino.bf16: mAP (this CPU" in report and why in report


def test_bf16_ir_runs_in_bf16_with_its_error_recorded(tmp_path, run_cli):
    """On a CPU with BF16: the IR of FP32 weights, unmarked, run with the bf16 hint by every runner of
    ours, its error against the reference recorded (bfloat16 keeps ~3 digits: far past FP32's); elsewhere
    the refusal."""
    import xml.etree.ElementTree as ET

    from exporter.pipeline.targets.openvino import runtime

    run = tmp_path / "run"
    args = ("--recipe", str(EMBEDDED), "--target", "openvino", "--precision", "fp32", "--precision", "bf16")
    code, _, err = run_cli("build", *args, "--run-dir", str(run))
    if not runtime.runs_bf16():
        assert code == 2 and "precision bf16 needs a CPU" in err, err
        return
    assert code == 0, err
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    bf16, fp32 = stages["openvino.bf16"], stages["openvino.fp32"]
    assert bf16["runtime"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert bf16["check"]["max_abs_err"] > 10 * fp32["check"]["max_abs_err"], "computed in bf16, not f32"
    assert bf16["check"]["max_abs_err"] < 0.05 * max(1.0, bf16["check"]["max_abs_ref"])
    xml = run / "openvino" / "model_bf16.xml"
    assert ET.parse(xml).getroot().find(".//rt_info/attribute[@name='precise']") is None
    assert runtime.load(xml, "bf16").config["INFERENCE_PRECISION_HINT"] == "bf16"


def test_a_conversion_sends_no_telemetry(relu_onnx, tmp_path, monkeypatch):
    """OpenVINO's converter sends usage events unless a consent file in the home (or a CI variable) says
    no; each forks this process and may hang it at exit offline. A build declines them."""
    from openvino_telemetry.utils.sender import TelemetrySender

    from exporter.pipeline.targets.openvino import runtime

    sent = []
    monkeypatch.setattr(TelemetrySender, "send", lambda self, backend, message: sent.append(message))
    for name in ("CI", "TF_BUILD", "JENKINS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no consent file: OpenVINO's default is to send
    model = runtime.convert(relu_onnx)
    assert [op.get_type_name() for op in model.get_ordered_ops()] == ["Parameter", "Relu", "Result"]
    assert sent == []


def test_the_int8_stage_takes_the_model_the_search_chose(calib_json, tmp_path, monkeypatch):
    """With an accuracy budget, the INT8 search has already quantized the model the INT8 stage builds (the
    same ONNX, calibration, preset and float layers): the stage takes it instead of quantizing again, and
    its IR is the one quantizing again gives, byte for byte."""
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.stages import partial_int8
    from exporter.pipeline.targets.openvino import ir

    monkeypatch.setattr(partial_int8, "LATENCY_SECONDS", 0.05)
    quantizations = []
    quantize = ir.quantize
    monkeypatch.setattr(ir, "quantize", lambda *args, **kw: quantizations.append(1) or quantize(*args, **kw))
    overrides = {
        "input_size": [64, 64],
        "targets": ["openvino"],
        "precisions": ["int8"],
        "model.kwargs.num_classes": 5,  # the shapes' five classes, scored
        "class_names": ["circle", "square", "triangle", "star", "hexagon"],
        "calibration.source": str(calib_json),
        "calibration.count": 8,
        "calibration.folder": str(tmp_path / "calibration"),
        "evaluation.data": str(calib_json),
        "evaluation.limit": 8,
        "int8.accuracy_budget": 100.0,  # full INT8 meets it: the search's one trial is the chosen model
    }
    recipe = load_recipe(EMBEDDED, overrides)
    Pipeline(recipe, tmp_path / "taken").build()
    assert len(quantizations) == 1, "the search quantized the model once, and the stage took it"
    monkeypatch.setattr(ir, "kept", lambda *args: None)
    Pipeline(recipe, tmp_path / "again").build()
    assert len(quantizations) == 3, "without it, the stage quantizes again"
    for suffix in (".xml", ".bin"):
        taken, again = (tmp_path / run / "openvino" / f"model_int8{suffix}" for run in ("taken", "again"))
        assert taken.read_bytes() == again.read_bytes(), suffix
