"""DAMO-YOLO head modes raw / decoded / nms: ONNX export (opset 17) run by onnxruntime matches torch."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporter.models.damoyolo import build_damoyolo
from exporter.models.embedded import randomize_batchnorm
from exporter.models.heads import Head
from exporter.pipeline.builder import Pipeline
from exporter.pipeline.recipe import load_recipe
from exporter.pipeline.stages import ort_runner as ort_backend

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
SIZE = 160
OUTPUT_NAMES = {
    "raw": ["scores8", "scores16", "scores32", "boxes8", "boxes16", "boxes32"],
    "decoded": ["scores", "boxes"],
    "nms": ["detections"],
}
NANO = Head.of("decoded", score_threshold=0.03, iou_threshold=0.65, reg_max=7)


def images(seed, batch=2):
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 255


def spread_head(model, calibration, score_gain=300.0, score_offset=-10.0, box_gain=30.0):
    """An untrained model's features are nearly constant across the image, so all its scores tie.
    Scale the head convs and centre their outputs on `calibration` images: scores then spread over
    (0, 1), a few hundred (box, class) pairs pass the threshold, and boxes vary in size."""
    with torch.no_grad():
        features = model.neck(model.backbone(calibration))
        for convs, gain, offset in [
            (model.head.gfl_cls, score_gain, score_offset),
            (model.head.gfl_reg, box_gain, 0.0),
        ]:
            for conv, x in zip(convs, features, strict=True):
                conv.weight.mul_(gain)
                conv.bias.zero_()
                conv.bias.copy_(offset - conv(x).mean(dim=(0, 2, 3)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_damoyolo("ns")
    with torch.no_grad():
        randomize_batchnorm(model, torch.Generator().manual_seed(0))
    spread_head(model, images(seed=5))
    path = tmp_path_factory.mktemp("damo") / "ns.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def build_run(mode, checkpoint, run_dir):
    overrides = {
        "model.kwargs": {"variant": "ns", "head_mode": mode},
        "model.checkpoint": str(checkpoint),
        "input_size": [SIZE, SIZE],
        "export.output_names": OUTPUT_NAMES[mode],
    }
    recipe = load_recipe(REPO / "recipes" / "damoyolo_ns.yaml", overrides)
    Pipeline(recipe, run_dir).build()
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.parametrize("mode", ["raw", "decoded", "nms"])
def test_head_mode_exports_and_onnxruntime_gives_torch_detections(mode, checkpoint, tmp_path):
    manifest = build_run(mode, checkpoint, tmp_path)
    for stage in ("export", "simplify"):
        assert manifest["stages"][stage]["check"]["ok"], stage
    assert manifest["stages"]["export"]["opset"] == 17
    onnx_model = onnx.load(tmp_path / "model.sim.onnx")
    assert [o.name for o in onnx_model.graph.output] == OUTPUT_NAMES[mode]
    has_nms = any(node.op_type == "NonMaxSuppression" for node in onnx_model.graph.node)
    assert has_nms == (mode == "nms")

    # A new batch through onnxruntime, post-processed in the shared code, against the torch
    # reference path of the official evaluation (decoded outputs, per-image multi-label NMS).
    image = images(seed=1, batch=1)
    original = [(480, 640)]  # boxes are rescaled to this image size
    runner = ort_backend.load(tmp_path / "model.sim.onnx")
    head = Head.of(mode, NANO.score_threshold, NANO.iou_threshold, reg_max=NANO.reg_max)
    ours = head.postprocess(runner.infer(image.numpy()), (SIZE, SIZE), original)
    reference_model = build_damoyolo("ns", head_mode="decoded")
    reference_model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        reference = NANO.postprocess(list(reference_model(image)), (SIZE, SIZE), original)
    assert 20 < len(reference[0].scores) < 500, "enough detections to compare, none cut by top 500"
    for got, want in zip(ours, reference, strict=True):
        assert got.labels.tolist() == want.labels.tolist()
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)
