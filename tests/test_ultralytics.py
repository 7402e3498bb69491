"""Ultralytics checkpoints as users bring them: read without running their pickle, their own settings,
their heads' output contracts through onnxruntime and OpenVINO, a fork's custom blocks fused inside."""

import copy
import inspect
import json
import os
import textwrap
from datetime import datetime

import numpy as np
import pytest
import torch

from exporter.models.synthetic import trained_scale
from exporter.models.ultralytics import head_mode, load
from tests import fixture_models

ultralytics = pytest.importorskip("ultralytics", reason="pip install 'reparam-export[ultralytics]'")

IMGSZ = 64
NAMES = {0: "circle", 1: "square", 2: "triangle"}


def save_like_ultralytics(model, path, imgsz=IMGSZ, names=NAMES):
    """A checkpoint as Ultralytics' trainer leaves best.pt: the model pickled in FP16, the training
    arguments beside it, the optimizer stripped."""
    model = copy.deepcopy(model)
    model.names = dict(names)
    checkpoint = {
        "date": datetime(2026, 1, 1).isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        "epoch": -1,
        "best_fitness": None,
        "model": model.half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": {"model": "custom.yaml", "imgsz": imgsz, "epochs": 1},
        "train_metrics": None,
        "train_results": None,
    }
    torch.save(checkpoint, path)
    return path


def yolo(config: str, seed: int = 0):
    """An Ultralytics model from its YAML for the test's classes, with trained-scale weights (its
    outputs depend on them)."""
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    torch.manual_seed(seed)
    cls = RTDETRDetectionModel if config.startswith("rtdetr") else DetectionModel
    return trained_scale(cls(f"{config}.yaml", nc=len(NAMES), verbose=False), seed)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ultralytics")
    end_to_end = yolo("yolo26n")
    end_to_end.end2end = True  # one-to-one top-k, as Ultralytics' `nms=False` selects
    return {
        "yolov8n": save_like_ultralytics(yolo("yolov8n"), root / "yolov8n.pt"),
        "yolo26n": save_like_ultralytics(yolo("yolo26n"), root / "yolo26n.pt"),
        "yolo26n_end2end": save_like_ultralytics(end_to_end, root / "yolo26n_end2end.pt"),
    }


def test_a_payload_in_a_checkpoint_is_refused_and_never_runs(run_cli, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"model": Payload(), "train_args": {}}, tmp_path / "best.pt")
    code, _, err = run_cli("fuse", "--model", str(tmp_path / "best.pt"), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "needs posix.system, from Python's standard library" in err, err
    assert "refused, nothing of it ran" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "run").exists()


FORK = '''
"""A user's Ultralytics fork: the blocks its YAML names."""

import torch
import torch.nn.functional as F
from torch import nn

from exporter.blocks.repconv import centre_pad, conv_bn, fold_branch
from exporter.blocks.repconv import YOLOv7RepConv as _YOLOv7RepConv


class RepConv(nn.Module):
    """The blog posts' RefConv: a frozen base kernel refocused by a grouped conv; no deploy method."""

    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.stride, self.padding = s, k // 2
        self.register_buffer("weight", torch.randn(c2, c1, k, k) * (2 / (c1 * k * k)) ** 0.5)
        kernels = c2 * c1
        self.convmap = nn.Conv2d(kernels, kernels, 3, 1, 1, groups=kernels // c1, bias=False)
        self.bn, self.act = nn.BatchNorm2d(c2), nn.SiLU()

    def forward(self, x):
        kernel = self.weight + self.convmap(self.weight.view(1, -1, *self.weight.shape[2:])).view(
            *self.weight.shape
        )
        return self.act(self.bn(F.conv2d(x, kernel, None, self.stride, self.padding)))


class DamoRepConv(nn.Module):
    """DAMO-YOLO's RepConv as its repository writes it: switch_to_deploy fuses in place."""

    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.rbr_dense = conv_bn(c1, c2, k, s, k // 2)
        self.rbr_1x1 = conv_bn(c1, c2, 1, s, 0)
        self.act = nn.ReLU()
        self.rbr_reparam = None

    def forward(self, x):
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x))

    def switch_to_deploy(self):
        w, b = fold_branch(self.rbr_dense)
        w1, b1 = fold_branch(self.rbr_1x1)
        dense = self.rbr_dense.conv
        self.rbr_reparam = nn.Conv2d(dense.in_channels, dense.out_channels, 3, dense.stride, 1)
        self.rbr_reparam.weight.data.copy_(w + centre_pad(w1, 3))
        self.rbr_reparam.bias.data.copy_(b + b1)
        del self.rbr_dense, self.rbr_1x1


class YOLOv7RepConv(_YOLOv7RepConv):
    """YOLOv7's RepConv under the fork's name."""


''' + inspect.getsource(fixture_models.PostAKConv).replace("class PostAKConv(", "class AKConv(")


def with_fork_blocks(model, fork):
    """YOLOv8n with four of its convolutions replaced by the fork's blocks, keeping Ultralytics' wiring."""
    replacements = {
        1: fork.AKConv(16, 32, num_param=5, stride=2),
        3: fork.RepConv(32, 64, 3, 2),
        5: fork.DamoRepConv(64, 128, 3, 2),
        7: fork.YOLOv7RepConv(128, 256, 3, 2),
    }
    for index, block in replacements.items():
        old = model.model[index]
        block.i, block.f, block.type, block.np = old.i, old.f, type(block).__name__, 0
        model.model[index] = block
    return model


@pytest.fixture(scope="module")
def fork_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fork")
    (root / "myfork").mkdir()
    (root / "myfork" / "__init__.py").write_text("")
    (root / "myfork" / "blocks.py").write_text(textwrap.dedent(FORK))
    import importlib
    import sys

    sys.path.insert(0, str(root))
    try:
        fork = importlib.import_module("myfork.blocks")
        torch.manual_seed(0)
        model = with_fork_blocks(yolo("yolov8n"), fork)
        path = save_like_ultralytics(trained_scale(model), root / "best.pt")
    finally:
        sys.path.remove(str(root))
    return root, path


def test_a_forks_blocks_load_only_when_its_package_is_trusted_and_are_fused(
    run_cli, fork_checkpoint, tmp_path, monkeypatch
):
    root, checkpoint = fork_checkpoint
    monkeypatch.chdir(root)  # the fork is importable from here, as from a user's checkout
    run = tmp_path / "run"
    code, _, err = run_cli("fuse", "--model", str(checkpoint), "--run-dir", str(run))
    assert code == 2 and "from the package 'myfork', which is not trusted" in err
    assert "pass --trust-module myfork" in err and not run.exists()

    code, _, err = run_cli(
        "build", "--model", str(checkpoint), "--trust-module", "myfork", "--target", "onnx", "--target",
        "openvino", "--target", "tensorrt", "--run-dir", str(run),
    )  # fmt: skip
    assert code == 0, err
    assert "myfork.blocks.AKConv._set_lr (a hook its training code registered)" in err, (
        "the official AKConv's"
    )
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    proof = stages["fuse"]["check"]
    assert proof["ok"] and proof["not_fused"] == []
    counts = proof["counts"]
    assert counts["RepConv kernel"] == 1, "the blog's RefConv, folded from what it computes"
    assert counts["DamoRepConv.switch_to_deploy()"] == 1 and counts["YOLOv7RepConv"] == 1
    assert counts["AKConv as AKConv"] == 1, "the official AKConv's code, computed by ours"
    adopted = next(s for s in proof["steps"] if s["action"] == "akconv")
    assert adopted["status"] == "fused" and adopted["parity"]["ratio"] < 1e-3
    lowered = {name: stages[name]["akconv"] for name in ("export", "openvino.export", "tensorrt.export")}
    assert {name: (a["layers"], a["lowering"]) for name, a in lowered.items()} == {
        "export": (1, "gather"),
        "openvino.export": (1, "gridsample"),
        "tensorrt.export": (1, "gridsample"),
    }
    assert all("not_lowered" not in a for a in lowered.values())
    assert stages["openvino.fp32"]["check"]["ok"]


HOOKED = """
import torch
from torch import nn


class HookedOffsets(nn.Module):
    \"\"\"A block laid out as the official AKConv is: an offset convolution `p_conv` whose gradient a
    backward hook scales (`_set_lr`, registered in __init__), and the convolution it feeds.\"\"\"

    def __init__(self, c1, c2, stride=2):
        super().__init__()
        self.p_conv = nn.Conv2d(c1, 10, 3, padding=1, stride=stride)
        self.p_conv.register_full_backward_hook(self._set_lr)
        self.conv = nn.Sequential(nn.Conv2d(c1, c2, 3, stride, 1), nn.BatchNorm2d(c2), nn.SiLU())

    @staticmethod
    def _set_lr(module, grad_input, grad_output):
        return tuple(g * 0.1 if g is not None else None for g in grad_input)

    def forward(self, x):
        return self.conv(x) + 0.0 * self.p_conv(x).mean()
"""


class Hostile:
    """Unpickles as getattr(<a trusted module class>, '__subclasses__'): not a method the class defines."""

    def __init__(self, cls):
        self.cls = cls

    def __reduce__(self):
        return getattr, (self.cls, "__subclasses__")


def test_a_hook_the_training_code_registered_loads_and_nothing_else_does(run_cli, tmp_path, monkeypatch):
    """The official AKConv's backward hook pickles as getattr(AKConv, '_set_lr'): taken as that method
    (never called), with a note; a getattr of anything else is refused before anything runs."""
    import importlib
    import sys

    (tmp_path / "hookfork").mkdir()
    (tmp_path / "hookfork" / "__init__.py").write_text(textwrap.dedent(HOOKED))
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        fork = importlib.import_module("hookfork")
        model = yolo("yolov8n")
        old = model.model[1]
        block = fork.HookedOffsets(16, 32)
        block.i, block.f, block.type, block.np = old.i, old.f, "HookedOffsets", 0
        model.model[1] = block
        path = save_like_ultralytics(model, tmp_path / "best.pt")
        hostile = torch.load(path, weights_only=False)
        hostile["extra"] = Hostile(fork.HookedOffsets)
        torch.save(hostile, tmp_path / "hostile.pt")
    finally:
        sys.path.remove(str(tmp_path))
    args = ("--trust-module", "hookfork", "--run-dir", str(tmp_path / "run"))
    code, _, err = run_cli("export", "--model", str(path), *args)
    assert code == 0, err
    assert "note: best.pt holds hookfork.HookedOffsets._set_lr (a hook its training code registered)" in err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["checkpoint_notes"] and manifest["stages"]["fuse"]["check"]["ok"]
    code, _, err = run_cli(
        "export", "--model", str(tmp_path / "hostile.pt"), *args[:2], "--run-dir", str(tmp_path / "bad")
    )
    assert code == 2 and "'__subclasses__'" in err and "refused, nothing of it ran" in err, err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_an_fp16_checkpoint_is_proved_in_float64_and_exported_in_fp32(run_cli, checkpoints, tmp_path):
    code, _, err = run_cli(
        "export", "--model", str(checkpoints["yolov8n"]), "--run-dir", str(tmp_path / "run")
    )
    assert code == 0, err
    blob = torch.load(tmp_path / "run" / "fused.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in blob["state_dict"].values() if t.is_floating_point())
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    fuse, metadata = (
        manifest["stages"]["fuse"]["settings"],
        manifest["stages"]["export"]["settings"]["metadata"],
    )
    assert fuse["input_size"] == [IMGSZ, IMGSZ], "the checkpoint's training size"
    assert fuse["preprocess"]["scale"] == pytest.approx(1 / 255)
    assert json.loads(metadata["class_names"]) == list(NAMES.values())
    assert manifest["stages"]["fuse"]["check"]["model_parity"]["ratio"] < 1e-3


def test_an_interrupted_runs_last_pt_loads_its_ema(tmp_path):
    """Mid-training, Ultralytics saves `model` None, the EMA in FP16 and the optimizer's state."""
    source = yolo("yolov8n", seed=3)
    optimizer = torch.optim.SGD(source.parameters(), lr=0.01, momentum=0.9)
    source(torch.rand(1, 3, IMGSZ, IMGSZ))[0].sum().backward()
    optimizer.step()
    path = save_like_ultralytics(source, tmp_path / "last.pt")
    checkpoint = torch.load(path, weights_only=False)  # the test's own file: rewritten as a last.pt
    checkpoint.update(model=None, ema=checkpoint["model"], optimizer=optimizer.state_dict(), updates=7)
    torch.save(checkpoint, path)
    model = load(path)
    image = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(source).half().float().eval()(image)[0]
        np.testing.assert_allclose(model(image).numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)


def test_a_checkpoint_without_a_recipe_asks_for_calibration_images(run_cli, checkpoints, tmp_path):
    code, _, err = run_cli(
        "build", "--model", str(checkpoints["yolov8n"]), "--target", "openvino", "--precision", "int8",
        "--run-dir", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2 and "INT8 needs calibration images: pass --calib-data" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "name, mode", [("yolov8n", "yolo"), ("yolo26n", "yolo"), ("yolo26n_end2end", "yolo_end2end")]
)
def test_each_head_keeps_its_output_contract_through_onnxruntime_and_openvino(
    checkpoints, tmp_path, name, mode
):
    from exporter.models.heads import Head
    from exporter.models.ultralytics import ULTRALYTICS_CONF, ULTRALYTICS_IOU
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.recipe import model_recipe
    from exporter.pipeline.stages import ort_runner as onnxruntime
    from exporter.pipeline.stages.reference import load_fused
    from exporter.pipeline.targets.openvino import runtime as openvino

    recipe = model_recipe(str(checkpoints[name]), [], {"targets": ["onnx", "openvino"]})
    Pipeline(recipe, tmp_path).build()
    model = load(checkpoints[name])
    assert head_mode(model) == mode
    image = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(7))
    fused, _ = load_fused(tmp_path / "fused.pt")
    with torch.no_grad():
        expected = [o.numpy() for o in [fused(image[:1])]]
    head = Head.of(mode, ULTRALYTICS_CONF, ULTRALYTICS_IOU)
    for runner in (
        onnxruntime.load(tmp_path / "model.sim.onnx"),
        openvino.load(tmp_path / "openvino" / "model_fp32.xml"),
    ):
        outputs = runner.infer(image[:1].numpy())
        assert [o.shape for o in outputs] == [e.shape for e in expected]
        if mode == "yolo":
            assert outputs[0].shape[1] == 4 + len(NAMES), "(N, 4 + C, A): boxes then class scores"
        else:
            assert outputs[0].shape[2] == 6, "(N, K, 6): x1 y1 x2 y2 score class"
        ours, theirs = (head.postprocess(o, (IMGSZ, IMGSZ), [(IMGSZ, IMGSZ)])[0] for o in (outputs, expected))
        top = min(10, len(theirs.scores))
        assert top > 0
        np.testing.assert_allclose(ours.scores[:top], theirs.scores[:top], atol=1e-4)
        np.testing.assert_allclose(ours.boxes[:top], theirs.boxes[:top], atol=1e-2)


def test_another_target_adds_to_the_run(run_cli, checkpoints, tmp_path):
    args = ("--model", str(checkpoints["yolov8n"]), "--run-dir", str(tmp_path / "run"))
    assert run_cli("build", "--target", "onnx", *args)[0] == 0
    assert run_cli("build", "--target", "openvino", *args)[0] == 0
    artifacts = json.loads((tmp_path / "run" / "manifest.json").read_text())["artifacts"]
    assert set(artifacts) == {"onnx.fp32", "openvino.fp32"}


def test_a_checkpoint_without_train_args_asks_for_its_input_size_and_numbered_names_warn(
    run_cli, checkpoints, tmp_path
):
    """A file YOLO.save() wrote (no train_args) says nothing of its input size: refused with the fix
    before any stage runs, built with --input-size; class names that are only numbers are warned of."""
    content = torch.load(checkpoints["yolov8n"], weights_only=False)
    content.pop("train_args")
    content["model"].names = {i: str(i) for i in range(len(NAMES))}
    path = tmp_path / "saved.pt"
    torch.save(content, path)
    run = tmp_path / "run"
    code, _, err = run_cli("build", "--model", str(path), "--run-dir", str(run))
    assert code == 2 and "does not record the input size" in err and "--input-size H W" in err, err
    assert "Traceback" not in err and not run.exists()
    code, _, err = run_cli("build", "--model", str(path), "--input-size", "64", "64", "--run-dir", str(run))
    assert code == 0, err
    assert "warning: the class names are their numbers ('0'…'2')" in err
    assert "class_names_warnings" in json.loads((run / "manifest.json").read_text())


def test_a_class_renamed_since_training_says_so(checkpoints, tmp_path, monkeypatch):
    import ultralytics.nn.modules.head as heads

    from exporter.base.errors import UserError
    from exporter.models.ultralytics import read_checkpoint

    path = tmp_path / "renamed.pt"
    path.write_bytes(checkpoints["yolov8n"].read_bytes())
    monkeypatch.delattr(heads, "Detect")
    with pytest.raises(UserError, match="renamed or moved since the checkpoint was saved") as refused:
        read_checkpoint(path)
    assert "ultralytics.nn.modules.head.Detect" in str(refused.value) and "install it" not in str(
        refused.value
    )


def test_a_build_unpickles_its_checkpoint_once(run_cli, checkpoints, tmp_path, monkeypatch):
    """Recipe, fusion, head and metadata all ask for the checkpoint; it is unpickled once per content."""
    import copy

    import exporter.models.ultralytics as family

    path = tmp_path / "yolo26n.pt"
    path.write_bytes(checkpoints["yolo26n"].read_bytes())  # not yet read by this process
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loads.append(f) or real_load(f, *a, **k))
    args = (
        "--model",
        str(path),
        "--target",
        "onnx",
        "--target",
        "openvino",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert run_cli("build", *args)[0] == 0
    assert [f for f in loads if f == path] == [path]
    first = family.read_checkpoint(path)
    saved = family.trained_module(first, path)
    model = family.load(path)
    assert model is not family.load(path), "each model its caller's own copy"
    assert next(model.parameters()).dtype == torch.float32
    assert next(saved.parameters()).dtype == torch.float16, "the one read copy is left as it was saved"
    changed = copy.deepcopy(first)
    changed["train_args"] = {"imgsz": 96}
    torch.save(changed, path)
    family.read_checkpoint(path)
    assert [f for f in loads if f == path] == [path, path], "a changed file is read again"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n", "yolo11n", "yolov9t", "yolov10n", "yolo26n", "rtdetr-l"])
def test_the_packaged_models_fuse_and_export_with_the_proof_passing(run_cli, tmp_path, name):
    checkpoint = save_like_ultralytics(yolo(name), tmp_path / f"{name}.pt")
    code, _, err = run_cli("export", "--model", str(checkpoint), "--run-dir", str(tmp_path / "run"))
    assert code == 0, err
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert stages["fuse"]["check"]["ok"] and stages["fuse"]["check"]["not_fused"] == []
    assert stages["export"]["check"]["ok"] and stages["simplify"]["check"]["ok"]


def test_end_to_end_nms_feeds_a_yolo_heads_boxes_and_scores_and_refuses_nms_free_heads(
    run_cli, checkpoints, tmp_path
):
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from exporter.pipeline.targets.tensorrt.nms import split_yolo

    run = tmp_path / "run"
    args = ("build", "--target", "tensorrt", "--trt-end2end-nms", "--run-dir", str(run))
    code, _, err = run_cli(*args, "--model", str(checkpoints["yolov8n"]))
    assert code == 0, err
    model = onnx.load(run / "tensorrt" / "model.fp32.end2end.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["box_coding"] == 1, "Ultralytics' boxes are centre/size"
    assert attrs["score_threshold"] == pytest.approx(0.001) and attrs["iou_threshold"] == pytest.approx(0.7)

    simplified = onnx.load(run / "tensorrt" / "model.sim.onnx")
    split = split_yolo(simplified)
    image = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    (raw,) = ort.InferenceSession(simplified.SerializeToString()).run(None, {"images": image})
    boxes, scores = ort.InferenceSession(split.SerializeToString()).run(None, {"images": image})
    np.testing.assert_array_equal(boxes, raw[:, :4].transpose(0, 2, 1))
    np.testing.assert_array_equal(scores, raw[:, 4:].transpose(0, 2, 1))

    code, _, err = run_cli(
        *args, "--model", str(checkpoints["yolo26n_end2end"]), "--run-dir", str(tmp_path / "e2e")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "yolo_end2end" in err and "leave --trt-end2end-nms off" in err
    assert not (tmp_path / "e2e").exists()


def test_a_recipe_without_class_names_scores_by_the_checkpoints_names(checkpoints):
    """Evaluation matches categories by the names the checkpoint holds when the recipe lists none."""
    from exporter.pipeline.recipe import recipe_from_dict
    from exporter.pipeline.stages.scoring import model_class_names

    model = {"checkpoint": str(checkpoints["yolov8n"]), "adapter": "ultralytics"}
    recipe = recipe_from_dict({"name": "x", "model": model, "input_size": [IMGSZ, IMGSZ]}, "test", {})
    assert recipe.class_names == []
    assert model_class_names(recipe) == ("circle", "square", "triangle")
