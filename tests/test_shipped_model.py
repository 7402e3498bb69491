"""The shipped Ultralytics model (examples/ultralytics_fork/yolo26n_shapes.pt: YOLO26n with RefConv, a
DAMO-style RepConv and AKConv, trained here on the demo shapes): its mAP through every backend against
the values recorded for it, Ultralytics' own validation on the same images, INT8 within a budget, and
Ultralytics' predictor on our artifacts.

One build serves the module: ONNX, OpenVINO FP32/FP16/INT8 and the TensorRT Q/DQ model, INT8 held to a
1-point budget, scored on the first 50 demo val images (letterboxed, as Ultralytics preprocesses). The
search itself, with a budget full INT8 misses, is tested on the demo model (test_partial_int8).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from exporter.base.data.shapes import CLASSES, SPLITS, write_image, write_split, write_yolo
from exporter.cli import main
from exporter.pipeline.stages import partial_int8
from tests.conftest import built_once

pytest.importorskip("ultralytics", reason="pip install 'reparam-export[ultralytics]'")
pytest.importorskip("openvino", reason="pip install 'reparam-export[openvino]'")

FORK = Path(__file__).resolve().parents[1] / "examples" / "ultralytics_fork"
SHIPPED = FORK / "yolo26n_shapes.pt"
IMAGES = 50
CALIBRATION = 32
# mAP (%) on the first 50 demo val images, measured when the model was shipped (README: Ultralytics models)
RECORDED = {
    "torch.fp32": 17.082,
    "onnx.fp32": 17.082,
    "openvino.fp32": 17.082,
    "openvino.fp16": 17.051,
    "openvino.int8": 17.224,
    "tensorrt.qdq (onnxruntime)": 17.464,
}
BUDGET = 1.0  # points: full INT8 meets it on these images (OpenVINO +0.14, Q/DQ +0.38), so no ranking runs
FLOAT_TOLERANCE = 0.1  # points: another CPU's FP32 rounding may move a detection across a threshold
INT8_TOLERANCE = 0.5  # INT8 kernels differ between CPUs (VNNI, AVX2)


@pytest.fixture(scope="module")
def shipped(shared_root):
    """The run built from the shipped checkpoint, its data and its eval.json (built once a session)."""
    base = shared_root / "shipped"
    run, subset = base / "run", base / "val.yaml"
    with built_once(base) as to_build:
        if to_build:
            # the demo's first 50 val images (each is rendered alone, as `demo-data` writes it) and the
            # 32 of its 3000 train images that calibration on the whole train split selects (seed 0):
            # the same images at a fraction of the cost of writing both splits
            root = base / "shapes"
            write_split(root, "val", IMAGES, SPLITS["val"][1])
            write_yolo(root, ("val",))
            images = sorted((root / "images" / "val").iterdir())
            (base / "val.txt").write_text("".join(f"{p}\n" for p in images))
            train, seed = SPLITS["train"]
            (root / "images" / "train").mkdir()
            for index in sorted(np.random.default_rng(0).permutation(train)[:CALIBRATION]):
                write_image(root / "images" / "train", seed, int(index))
            subset.write_text(
                f"train: {root / 'images' / 'train'}\nval: {base / 'val.txt'}\nnames: {list(CLASSES)}\n"
            )
            with pytest.MonkeyPatch.context() as patch:
                patch.syspath_prepend(str(FORK))
                patch.setattr(partial_int8, "LATENCY_SECONDS", 0.1)  # recorded, not what these tests check
                patch.chdir(base)
                built = main(
                    [
                        "build", "--model", str(SHIPPED), "--trust-module", "shapes_fork",
                        "--target", "onnx", "--target", "openvino", "--target", "tensorrt",
                        "--precision", "fp32", "--precision", "fp16", "--precision", "int8",
                        "--calib-data", str(subset), "--calib-count", str(CALIBRATION),
                        "--eval-data", str(subset), "--int8-accuracy-budget", str(BUDGET),
                        "--run-dir", str(run),
                    ]
                )  # fmt: skip
            assert built == 0
    images = [Path(line) for line in (base / "val.txt").read_text().splitlines()]
    return {"run": run, "data": subset, "images": images}


def test_map_through_every_backend_matches_the_recorded_values(shipped):
    scores = json.loads((shipped["run"] / "eval.json").read_text())
    assert scores["images"] == IMAGES
    found = {key: 100 * row["map"] for key, row in scores["results"].items()}
    assert set(found) == set(RECORDED)
    for key, expected in RECORDED.items():
        tolerance = INT8_TOLERANCE if "int8" in key or "qdq" in key else FLOAT_TOLERANCE
        assert found[key] == pytest.approx(expected, abs=tolerance), key


def test_int8_meets_its_budget(shipped):
    stages = json.loads((shipped["run"] / "manifest.json").read_text())["stages"]
    for backend in ("openvino", "tensorrt"):
        search = stages[f"{backend}.int8_search"]
        assert search["budget_points"] == BUDGET
        assert search["drop_points"] <= BUDGET, backend
        assert search["trials"][0]["float_layers"] == 0
        if search["trials"][0]["drop_points"] <= BUDGET:  # full INT8 met it: no ranking was made
            assert not search["ranked"] and search["float_layers"] == []
    ranked = [stages[f"{backend}.int8_search"]["ranked"] for backend in ("openvino", "tensorrt")]
    assert ("sensitivity" in stages) == any(ranked)


def test_our_map_agrees_with_ultralytics_val(shipped, tmp_path, monkeypatch):
    """The same images letterboxed to the same square input (rect=False: Ultralytics' default rect
    batches pad each batch to its own shape, an input no fixed-size export gets); Ultralytics' NMS and
    AP code against ours and COCO's (pycocotools' figures)."""
    from ultralytics import YOLO

    monkeypatch.syspath_prepend(str(FORK))
    monkeypatch.chdir(tmp_path)
    ours = 100 * json.loads((shipped["run"] / "eval.json").read_text())["results"]["torch.fp32"]["map"]
    metrics = YOLO(str(SHIPPED)).val(
        data=str(shipped["data"]), imgsz=256, batch=16, rect=False, device="cpu", plots=False, verbose=False
    )
    assert abs(100 * metrics.box.map - ours) <= 0.5, (100 * metrics.box.map, ours)


@pytest.mark.parametrize("artifact", ["model.sim.onnx", "openvino/model_fp32_openvino_model"])
def test_ultralytics_predicts_with_our_artifacts(shipped, artifact, monkeypatch, tmp_path):
    """Ultralytics' predictor on our ONNX (its metadata inside) and OpenVINO folder finds the detections
    it finds with the checkpoint. The images are letterboxed to the model's square input first: on
    other shapes the checkpoint's predictor pads to the nearest multiple of the stride instead, a
    different input than any fixed-size export gets."""
    from PIL import Image
    from ultralytics import YOLO

    from exporter.base.data.images import read_rgb
    from exporter.base.data.transforms import resize_letterbox

    monkeypatch.syspath_prepend(str(FORK))
    images = []
    for path in shipped["images"][:6]:
        pixels = resize_letterbox(read_rgb(path), (256, 256)).transpose(1, 2, 0).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / path.name)
        images.append(str(tmp_path / path.name))
    reference = YOLO(str(SHIPPED)).predict(images, imgsz=256, device="cpu", verbose=False)
    ours = YOLO(str(shipped["run"] / artifact), task="detect").predict(images, device="cpu", verbose=False)
    assert sum(len(r.boxes) for r in reference) > 0, "the checkpoint detects nothing on these images"
    for theirs, mine in zip(reference, ours, strict=True):
        assert mine.names == theirs.names
        assert len(mine.boxes) == len(theirs.boxes)
        np.testing.assert_allclose(mine.boxes.xyxy.numpy(), theirs.boxes.xyxy.numpy(), atol=0.05)
        np.testing.assert_allclose(mine.boxes.conf.numpy(), theirs.boxes.conf.numpy(), atol=1e-4)
        np.testing.assert_array_equal(mine.boxes.cls.numpy(), theirs.boxes.cls.numpy())


@pytest.mark.slow
def test_bench_ultralytics_measures_both_tools_side_by_side(
    shipped, run_cli, tmp_path, monkeypatch, scored_images
):
    """... each artifact scored once, by one scorer, on the first --eval-limit images."""
    monkeypatch.syspath_prepend(str(FORK))
    code, out, err = run_cli(
        "bench-ultralytics", "--model", str(SHIPPED), "--trust-module", "shapes_fork",
        "--data", str(shipped["data"]), "--calib-count", "16", "--eval-limit", "10", "--min-seconds", "0.05",
        "--run-dir", str(tmp_path / "bench"),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "bench" / "bench_ultralytics.json").read_text())
    rows = {(row["tool"], row["artifact"]): row for row in report["rows"]}
    artifacts = ("ONNX FP32", "OpenVINO FP32", "OpenVINO INT8")
    assert set(rows) == {(tool, a) for tool in ("reparam-export", "Ultralytics") for a in artifacts}
    for (tool, artifact), row in rows.items():
        assert row["map"] is not None and row["convolutions"] > 0, (tool, artifact)
        if artifact.endswith("FP32"):
            assert row["ok"], (tool, artifact, row["max_abs_err"])
        if artifact.startswith("OpenVINO"):
            assert row["p50_ms"] > 0 and row["ratio"] > 0
    assert rows[("Ultralytics", "OpenVINO FP32")]["ratio"] == 1.0
    ours, theirs = rows[("reparam-export", "ONNX FP32")], rows[("Ultralytics", "ONNX FP32")]
    assert ours["convolutions"] == theirs["convolutions"] - 2, "the fork's RefConv and RepConv are folded"
    assert ours["map"] == pytest.approx(theirs["map"], abs=1e-6), "the same FP32 model, the same evaluator"
    assert "Ultralytics" in out and "speed" in out
    assert scored_images == [10] * len(rows), scored_images
