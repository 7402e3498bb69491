"""The proof on real models: fusion proved in float64, exports held to the model's own FP32 rounding,
selections replayed; a correct model is never called broken, a wrong one never correct."""

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from exporter.base.numerics.complexity import profile
from exporter.base.numerics.parity import compare
from exporter.base.numerics.selections import Selections
from exporter.blocks import RepConv
from exporter.blocks.fuse import FusionFailed, fuse_model
from exporter.blocks.repconv import centre_pad, conv_bn, fold_branch
from exporter.models.damoyolo import VARIANTS, official_deploy_form
from exporter.models.damoyolo.published import SIZES
from exporter.pipeline.builder import Pipeline
from exporter.pipeline.recipe import load_recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.fuse import FuseSettings
from exporter.pipeline.targets.openvino import ir as openvino
from tests import fixture_models as fm
from tests.conftest import EMBEDDED

REPO = EMBEDDED.parents[1]


def damoyolo_recipe(variant: str):
    """DAMO-YOLO with deterministic trained-scale weights (recipes/synthetic, exporter.models.synthetic)."""
    path = REPO / "recipes" / "synthetic" / f"damoyolo_{variant}.yaml"
    return load_recipe(path, {"targets": ["onnx"], "precisions": ["fp32"]})


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_damoyolo_at_full_scale_is_proved_and_exported(variant, tmp_path):
    """T/S/M/L at 640 and Ns/Nm/Nl at 416 with trained-scale weights: fusion proved in float64 with a
    margin of orders of magnitude, ONNX (exported, simplified) and OpenVINO FP32 within their rounding
    bound; the fused model has the published sizes."""
    recipe = damoyolo_recipe(variant)
    run = tmp_path / "run"
    pipeline = Pipeline(recipe, run)
    pipeline.build()
    stages = pipeline.run.manifest()["stages"]
    proof = stages["fuse"]["check"]
    assert proof["ok"] and proof["model_parity"]["ratio"] < 1e-2, proof["model_parity"]
    assert proof["not_fused"] == []
    for name in ("export", "simplify"):
        assert stages[name]["check"]["ok"] and stages[name]["check"]["ratio"] < 0.5, stages[name]["check"]
    settings = openvino.IrSettings.from_recipe(recipe, "fp32")
    record = openvino.run(settings, run / "model.sim.onnx", run / "fused.pt", tmp_path / "model_fp32.xml")
    assert record.check["ok"] and record.check["ratio"] < 0.5, record.check
    # the fused FP32 model drifts from float64 by rounding of the order of an FP32 rule of 1e-4·max(1, |y|)
    # (DAMO-YOLO-S: 8e-5 to 1.2e-4 of it, by the CPU's kernels), orders of magnitude past the proof's error
    drift = proof["drift"]
    assert drift["max_abs_err"] > 1e4 * proof["model_parity"]["max_abs_err"]
    if variant == "s":
        assert drift["max_abs_err"] > 1e-5 * max(1.0, drift["max_abs_ref"])

    fused, _ = reference.load_fused(run / "fused.pt")
    x = torch.rand(1, 3, *recipe.input_size)
    params, gflops = SIZES[variant]
    official = profile(official_deploy_form(pipeline.plan.fuse_settings.source.build()), x)
    ours = profile(fused, x)
    assert official.params / 1e6 == pytest.approx(params, rel=0.005)
    assert official.gflops_thop == pytest.approx(gflops, rel=0.02)
    assert ours.macs == official.macs and ours.norm_elements == 0
    assert not any(isinstance(m, (RepConv, nn.BatchNorm2d)) for m in fused.modules())
    if variant in {"t", "s", "m", "l"}:
        assert ours.params / 1e6 == pytest.approx(params, rel=0.005)
        assert ours.gflops == pytest.approx(gflops, rel=0.02)


# --- wrong fusions are caught and named ----------------------------------------------------------------


class DilatedRepConv(fm.ForeignRepVGG):
    """A 3x3 (dilation 2) + 1x1 block whose deploy method is wrong in one of three ways."""

    def __init__(self, channels: int, mistake: str):
        nn.Module.__init__(self)
        self.mistake = mistake
        self.dense = conv_bn(channels, channels, 3, 1, 2, dilation=2)
        self.one = conv_bn(channels, channels, 1, 1, 0)
        self.reparam = None

    def switch_to_deploy(self):
        w, b = fold_branch(self.dense)
        w1, b1 = fold_branch(self.one)
        w, b = w + centre_pad(w1, 3), b + b1
        dilation = 1 if self.mistake == "dilation" else 2
        conv = nn.Conv2d(w.shape[1], w.shape[0], 3, 1, dilation, dilation=dilation)
        scale = 1 + 1e-3 if self.mistake == "weight" else 1.0
        conv.weight.data.copy_(w * scale)
        conv.bias.data.copy_(torch.zeros_like(b) if self.mistake == "bias" else b)
        self.reparam = conv


@pytest.mark.parametrize("mistake", ["dilation", "bias", "weight"])
def test_a_wrong_deploy_form_fails_by_orders_of_magnitude_and_is_named(mistake):
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DilatedRepConv(8, mistake)))
    with pytest.raises(FusionFailed) as refuted:
        fuse_model(model, torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)))
    report = refuted.value.report
    assert report.offender.path == "1" and report.offender.kind == "DilatedRepConv.switch_to_deploy()"
    assert report.offender.parity.ratio > 1e3, "a wrong fusion misses the float64 bound by orders"


def test_a_correct_fusion_agrees_to_float64_rounding():
    model = fm.randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), fm.SwitchToDeploy(8), RepConv(8, 8)))
    _, report = fuse_model(model, torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)))
    assert report.ok and report.model_parity.ratio < 1e-4
    assert report.model_parity.max_abs_err < 1e-12 * max(1.0, report.model_parity.max_abs_ref)
    assert report.inputs == ["1x3x24x24"]
    assert report.drift.max_abs_err > 1e-9, "the fused FP32 model drifts by rounding, reported"


# --- exports: held to the model's FP32 rounding --------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The embedded model (AKConv included) exported for onnxruntime and for OpenVINO (GridSample)."""
    run = tmp_path_factory.mktemp("run")
    recipe = load_recipe(EMBEDDED, {"input_size": [64, 96], "targets": ["onnx", "openvino"]})
    pipeline = Pipeline(recipe, run)
    pipeline.build()
    return run


def corrupted(path, tmp_path, change):
    model = onnx.load(str(path))
    change(model)
    out = tmp_path / "wrong.onnx"
    onnx.save(model, str(out))
    return out


def _conv_weights(model):
    names = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    return [t for t in model.graph.initializer if t.name in names]


def _scale_middle_conv(model, factor=1 + 1e-3):
    weights = _conv_weights(model)
    tensor = weights[len(weights) // 2]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor), tensor.name))


def _swap_channels_of_last_conv(model):
    tensor = _conv_weights(model)[-1]
    array = numpy_helper.to_array(tensor).copy()
    array[[0, 1]] = array[[1, 0]]
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def _gridsample_with_pixel_centres(model):
    """A GridSample lowering that takes the grid as pixel centres (align_corners 0): the usual slip."""
    for node in model.graph.node:
        if node.op_type == "GridSample":
            for attribute in node.attribute:
                if attribute.name == "align_corners":
                    attribute.i = 0


@pytest.mark.parametrize(
    "folder, change",
    [
        ("", _scale_middle_conv),  # a 1e-3 relative weight change in one layer
        ("", _swap_channels_of_last_conv),
        ("openvino/", _gridsample_with_pixel_centres),  # a wrong lowering of AKConv's sampling
    ],
)
def test_a_wrong_export_fails_and_the_right_one_passes(built, tmp_path, folder, change):
    from exporter.pipeline.stages import ort_runner as onnxruntime

    model = built / folder / "model.sim.onnx"
    fused_pt = built / "fused.pt"
    right = reference.reference_parity(fused_pt, onnxruntime.load(model), 8.0)
    assert right.ok and right.ratio < 0.5
    wrong = reference.reference_parity(fused_pt, onnxruntime.load(corrupted(model, tmp_path, change)), 8.0)
    assert not wrong.ok and wrong.ratio > 10, wrong.describe()


# --- selections: top-k picks replayed ------------------------------------------------------------------


class TopK(nn.Module):
    """Scores, then the top 3 of them and what they select: a near-tie at the third place."""

    def __init__(self):
        super().__init__()
        self.score = nn.Linear(4, 1)
        self.value = nn.Linear(4, 2)

    def forward(self, x):  # x: (N, 4)
        scores = self.score(x).squeeze(-1)
        top = scores.topk(3)
        return top.values, self.value(x)[top.indices]


def test_selections_replayed_make_a_near_tie_comparable_and_still_catch_a_wrong_model():
    torch.manual_seed(0)
    model = TopK().double().eval()
    x = torch.randn(8, 4, dtype=torch.float64)
    weight = model.score.weight[0].detach()
    with torch.no_grad():  # rows 3 and 4 by score get equal scores but other values
        order = model.score(x).squeeze(-1).argsort(descending=True)
        step = torch.randn(4, dtype=torch.float64)
        x[order[3]] = x[order[2]] + step - (step @ weight) / (weight @ weight) * weight
    with torch.no_grad(), Selections() as recorded:
        expected = model(x)
    for change in (1e-12, -1e-12):  # a rounding-sized change that reorders the tie one way or the other
        tied = copy.deepcopy(model)
        with torch.no_grad():
            tied.score.weight[0, 0] += change
            free = tied(x)
        if not torch.equal(free[0], expected[0]) or not compare(expected, free, 1e-9).ok:
            break
    assert not compare(expected, free, 1e-9).ok, "the flip alone fails a comparison"
    with torch.no_grad(), Selections(replay=recorded.picks) as replayed:
        forced = tied(x)
    assert compare(expected, forced, 1e-9).ok and replayed.flips == 1
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.value.weight *= 1.01
    with torch.no_grad(), Selections(replay=recorded.picks):
        assert not compare(expected, wrong(x), 1e-9).ok, "replaying picks never hides a wrong model"


@pytest.mark.slow
def test_rtdetr_fuses_and_is_proved_with_its_query_selection_replayed():
    ultralytics = pytest.importorskip("ultralytics", reason="pip install 'reparam-export[ultralytics]'")
    model = ultralytics.RTDETR("rtdetr-l.yaml").model.eval()
    inputs = [torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    with torch.no_grad():
        model(inputs[0])  # an FP32 call first leaves FP32 anchors cached in the decoder
    fused, report = fuse_model(model, inputs)
    assert report.ok, report.as_dict()["model_parity"]
    assert report.selections > 0, "top-k query selection and arg-max replayed"
    assert report.counts["RepConv.fuse_convs()"] == 12 and report.counts["Conv conv/bn"] > 50
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.model[:28].modules())


# --- fused.pt is rebuilt without fusing again ----------------------------------------------------------


def test_fused_pt_is_rebuilt_by_replaying_the_proved_rewrites(built, monkeypatch):
    import exporter.blocks.fuse as fuser

    monkeypatch.setattr(fuser, "fuse_model", lambda *a, **k: pytest.fail("fused again"))
    fused, blob = reference.load_fused(built / "fused.pt")
    assert [s["action"] for s in blob["steps"]].count("block") >= 5
    with torch.no_grad():
        output = fused(blob["probe"])
    assert compare([o.numpy() for o in blob["outputs"]], output, 1e-4).ok


@pytest.mark.parametrize(
    ("size", "second"),
    [((640, 640), (64, 64)), ((1280, 960), (128, 96)), ((96, 128), (64, 64)), ((32, 64), (32, 64))],
)
def test_the_second_probe_is_smaller_with_every_tap_of_a_3x3_kernel_at_work(size, second):
    """A tenth of each side in multiples of 32, at least 64 (stride-32 features 2×2), never past the probe."""
    settings = FuseSettings.from_recipe(load_recipe(EMBEDDED, {"input_size": list(size)}))
    assert tuple(settings.second_probe().shape[-2:]) == second


def test_bench_fuse_prints_the_cost_in_forward_passes(run_cli):
    code, out, err = run_cli("bench-fuse", "--recipe", str(EMBEDDED), "--runs", "1", "--threads", "1")
    assert code == 0, err
    assert "FP32 forward passes" in out and "float64 forward passes" in out and "building the model" in out
    assert "the whole stage" in out
