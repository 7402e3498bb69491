"""COCO evaluation on a hand-built dataset: perfect predictions, a known shift, id mapping, the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporter.errors import UserError
from exporter.eval.coco_map import category_ids, evaluate, load_coco, locate_dataset, score
from exporter.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
# image id → (width, height, grey level, boxes as (category id, x, y, w, h))
IMAGES = {
    7: (64, 48, 40, [(1, 4, 6, 30, 20), (18, 30, 20, 25, 25)]),
    2: (80, 80, 80, [(3, 10, 10, 40, 30)]),
    11: (40, 100, 120, [(1, 5, 50, 30, 40), (3, 2, 2, 20, 10)]),
}


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    images, annotations = [], []
    for image_id, (width, height, grey, boxes) in IMAGES.items():
        name = f"{image_id:06d}.png"
        Image.fromarray(np.full((height, width, 3), grey, dtype=np.uint8)).save(root / "val" / name)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for category, x, y, w, h in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    instances = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / "instances_val.json").write_text(json.dumps(instances))
    return root


def ground_truth_results(shift_fraction=0.0):
    return [
        {"image_id": i, "category_id": c, "bbox": [x + shift_fraction * w, y, w, h], "score": 1.0}
        for i, (_, _, _, boxes) in IMAGES.items()
        for c, x, y, w, h in boxes
    ]


def test_perfect_predictions_score_one(dataset):
    coco = load_coco(dataset / "annotations" / "instances_val.json")
    metrics = score(coco, ground_truth_results(), sorted(IMAGES))
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    assert metrics["AR100"] == pytest.approx(1.0)


def test_known_shift_gives_the_pycocotools_answer(dataset):
    """Every box shifted by w/5: IoU = 0.8w / 1.2w = 2/3, a match at IoU 0.50–0.65 (4 of 10 thresholds)."""
    coco = load_coco(dataset / "annotations" / "instances_val.json")
    metrics = score(coco, ground_truth_results(0.2), sorted(IMAGES))
    assert metrics["AP"] == pytest.approx(0.4)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP75"] == pytest.approx(0.0)
    assert score(coco, [], sorted(IMAGES))["AP"] == 0.0


def test_category_ids_by_name_or_by_sorted_id(dataset):
    coco = load_coco(dataset / "annotations" / "instances_val.json")
    assert category_ids(coco, ["dog", "person", "car", "cat"]) == {0: 18, 1: 1, 2: 3}
    assert category_ids(coco, []) == {0: 1, 1: 3, 2: 18}
    with pytest.raises(UserError, match="no class name of the recipe is a dataset category"):
        category_ids(coco, ["circle", "square"])


def test_locate_dataset_layouts(tmp_path, dataset):
    found = locate_dataset(dataset)
    assert found.annotations.name == "instances_val.json" and found.images == dataset / "val"
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "images" / "a.png").write_bytes(b"")
    (flat / "instances_test.json").write_text("{}")
    assert locate_dataset(flat).images == flat / "images"
    (flat / "instances_other.json").write_text("{}")
    with pytest.raises(UserError, match="2 instances_\\*.json files .* pass --annotations FILE"):
        locate_dataset(flat)
    with pytest.raises(UserError, match="no instances_\\*.json"):
        locate_dataset(flat / "images")
    with pytest.raises(UserError, match="dataset folder not found"):
        locate_dataset(tmp_path / "missing")


class GroundTruthRunner:
    """Stands in for a backend: recognizes each image by its grey level and returns its ground truth
    boxes, in model input pixels, as the head mode's outputs."""

    def __init__(self, mode, input_size, class_names):
        self.mode, self.input_size = mode, input_size
        self.label = {c["id"]: class_names.index(c["name"]) for c in CATEGORIES}
        self.classes = len(class_names)

    def infer(self, batch):
        grey = round(float(batch[0, 0, 0, 0]))
        width, height, _, boxes = next(v for v in IMAGES.values() if v[2] == grey)
        sx, sy = self.input_size[1] / width, self.input_size[0] / height
        xyxy = np.array([[x * sx, y * sy, (x + w) * sx, (y + h) * sy] for _, x, y, w, h in boxes], np.float32)
        labels = np.array([self.label[c] for c, *_ in boxes])
        if self.mode == "nms":
            rows = np.zeros((len(boxes), 7), np.float32)
            rows[:, 1:5], rows[:, 5], rows[:, 6] = xyxy, 0.9, labels
            return [rows]
        scores = np.zeros((1, len(boxes), self.classes), np.float32)
        scores[0, np.arange(len(boxes)), labels] = 0.9
        return [scores, xyxy[None]]


@pytest.mark.parametrize("mode", ["decoded", "nms"])
def test_evaluate_with_perfect_runner_scores_one(dataset, mode):
    class_names = ["person", "car", "dog", "cat"]
    overrides = {
        "input_size": [64, 96],
        "class_names": class_names,
        "model.kwargs": {"variant": "ns", "head_mode": mode},
    }
    recipe = load_recipe(REPO / "recipes" / "damoyolo_ns.yaml", overrides)
    runner = GroundTruthRunner(mode, recipe.input_size, class_names)
    report = evaluate(runner, recipe, locate_dataset(dataset))
    assert report["images"] == 3 and report["detections"] == 5
    assert report["metrics"]["AP"] == pytest.approx(1.0)
    assert evaluate(runner, recipe, locate_dataset(dataset), limit=1)["images"] == 1


@pytest.mark.slow
def test_cli_eval_of_a_built_run(dataset, run_cli, tmp_path):
    run = tmp_path / "run"
    args = ["--recipe", str(REPO / "recipes" / "damoyolo_ns.yaml"), "--input-size", "64", "64"]
    code, _, err = run_cli("build", *args, "--run-dir", str(run))
    assert code == 0, err
    code, out, err = run_cli("eval", "--artifacts", str(run), "--data", str(dataset))
    assert code == 0, err
    report = json.loads((run / "coco_eval.json").read_text())
    assert report["images"] == 3 and set(report["metrics"]) >= {"AP", "AP50", "AR100"}
    assert "AP50" in out and "coco_eval.json" in err
    code, _, err = run_cli("eval", "--artifacts", str(tmp_path / "nothing"), "--data", str(dataset))
    assert code == 2 and err.strip().count("\n") == 0 and "no manifest.json" in err
