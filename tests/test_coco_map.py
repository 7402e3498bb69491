"""COCO mAP on hand-built ground truth with known answers."""

import json

import numpy as np
import pytest
from PIL import Image

from exporter.base.data.coco import load_coco
from exporter.base.data.coco_map import Detections, evaluate, score, to_coco_results
from exporter.base.errors import UserError

# Two images, one 100x100 object each, categories with non-contiguous COCO ids.
BOXES = {1: (50.0, 40.0, 150.0, 140.0), 2: (20.0, 30.0, 120.0, 130.0)}
LABELS = {1: 0, 2: 1}


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "val").mkdir()
    images, annotations = [], []
    for image_id, (x0, y0, x1, y1) in BOXES.items():
        Image.new("RGB", (200, 160), (90, 90, 90)).save(tmp_path / "val" / f"{image_id}.jpg")
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 200, "height": 160})
        annotations.append(
            {
                "id": image_id,
                "image_id": image_id,
                "category_id": [3, 7][LABELS[image_id]],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }
        )
    categories = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}]
    (tmp_path / "val.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return load_coco(tmp_path)


def predictions(dataset, shift=0.0, label_offset=0):
    results = []
    for image_id, box in BOXES.items():
        det = Detections(
            np.array([box]) + [shift, 0, shift, 0],
            np.array([0.9]),
            np.array([(LABELS[image_id] + label_offset) % 2]),
        )
        results.extend(to_coco_results(dataset, image_id, det))
    return results


def test_perfect_predictions_score_one(dataset):
    metrics = score(dataset, predictions(dataset), list(BOXES))
    assert metrics["map"] == pytest.approx(1.0) and metrics["map50"] == pytest.approx(1.0)
    assert metrics["map_large"] == pytest.approx(1.0), "100x100 boxes are large"
    assert metrics["map_small"] is None and metrics["map_medium"] is None, "no such objects: not 0 mAP"


def test_known_shift(dataset):
    # Shift by 10 px: IoU = 90·100 / (110·100) = 0.818 → matched at IoU 0.50 … 0.80 (7 of 10 thresholds).
    metrics = score(dataset, predictions(dataset, shift=10.0), list(BOXES))
    assert metrics["map"] == pytest.approx(0.7, abs=1e-6)
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map75"] == pytest.approx(1.0)


def test_category_ids_are_mapped(dataset):
    assert dataset.category_ids == [3, 7] and dataset.class_names == ["a", "b"]
    assert score(dataset, predictions(dataset, label_offset=1), list(BOXES))["map"] == 0.0


def test_no_detections_scores_zero(dataset):
    assert score(dataset, [], list(BOXES))["map"] == 0.0


def test_scores_are_pycocotools_figures():
    """On the demo's val images (small objects among them, and a subset with none: a -1 figure), noisy
    true boxes among many low-score false ones score as pycocotools scores them, every figure."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from exporter.base.data.coco_map import STAT_NAMES, ground_truth
    from exporter.base.data.shapes import demo_split

    data = load_coco(demo_split("val"))
    content, rng = data.content, np.random.default_rng(0)
    categories = [c["id"] for c in content["categories"]]
    with_small = {a["image_id"] for a in content["annotations"] if a["area"] < 32**2}
    subsets = {
        "first 60": [image["id"] for image in content["images"][:60]],
        "no small objects": [i["id"] for i in content["images"] if i["id"] not in with_small][:20],
    }
    for subset, ids in subsets.items():
        wanted = set(ids)
        results = [
            {**a, "bbox": list(np.add(a["bbox"], rng.normal(0, 2, 4))), "score": float(rng.uniform(0.3, 1))}
            for a in content["annotations"]
            if a["image_id"] in wanted
        ] + [
            {"image_id": i, "category_id": int(rng.choice(categories)),
             "score": float(rng.uniform(0.001, 0.3)),
             "bbox": [*rng.uniform(0, 200, 2), *rng.uniform(4, 80, 2)]}
            for i in ids
            for _ in range(100)
        ]  # fmt: skip
        results = [{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in results]
        truth = COCO()
        truth.dataset = ground_truth(content, ids)
        truth.createIndex()
        reference = COCOeval(truth, truth.loadRes([dict(r) for r in results]), "bbox")
        reference.params.imgIds = ids
        reference.evaluate(), reference.accumulate(), reference.summarize()
        expected = {n: None if v < 0 else v for n, v in zip(STAT_NAMES, reference.stats, strict=False)}
        assert 0.2 < expected["map"] < 0.9, subset
        assert score(data, results, ids) == pytest.approx(expected, abs=1e-9), subset
    assert expected["map_small"] is None, "the subset has small objects"


def test_evaluate_round_trip_through_resize_and_rescale(dataset):
    """An oracle that returns the ground truth at input resolution must score 1.0 after rescaling."""
    size = (64, 96)
    truth = {s.image_id: (s.boxes, s.labels) for s in dataset.samples}
    order = iter(dataset.samples)

    def infer(batch):
        assert batch.shape[1:] == (3, *size) and batch.dtype == np.float32
        return [next(order) for _ in range(len(batch))]

    def postprocess(samples, image_sizes):
        out = []
        for sample, (h, w) in zip(samples, image_sizes, strict=True):
            boxes, labels = truth[sample.image_id]
            at_input = boxes * ([size[1] / w, size[0] / h] * 2)
            out.append(Detections(at_input * ([w / size[1], h / size[0]] * 2), np.ones(len(labels)), labels))
        return out

    metrics = evaluate(dataset, infer, postprocess, size, batch=1, progress=False)
    assert metrics["map"] == pytest.approx(1.0) and metrics["images"] == 2


def test_dataset_errors(tmp_path):
    with pytest.raises(UserError, match="dataset not found"):
        load_coco(tmp_path / "missing")
    (tmp_path / "val.json").write_text("{}")
    with pytest.raises(UserError, match="no image folder 'val/'"):
        load_coco(tmp_path)
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError, match="not a COCO instances file"):
        load_coco(tmp_path)
    image = {"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}
    no_box = {k: v for k, v in ann.items() if k != "bbox"}
    broken = {
        "missing field 'bbox'": {"annotations": [no_box]},
        "annotation 7: category_id 99 is unknown": {"annotations": [{**ann, "category_id": 99}]},
        "missing field 'file_name'": {"images": [{"id": 1, "height": 8, "width": 8}]},
        "TypeError": {"annotations": "not a list"},
    }
    for problem, change in broken.items():
        content = {"categories": [{"id": 1, "name": "a"}], "images": [image], "annotations": [ann]}
        (tmp_path / "val.json").write_text(json.dumps({**content, **change}))
        with pytest.raises(UserError, match="not a COCO instances file") as info:
            load_coco(tmp_path)
        assert problem in str(info.value)


def test_eval_command_scores_torch_and_every_artifact(run_cli, tmp_path, scored_images):
    """A real build of the embedded model, evaluated on a small shapes split: the ONNX artifact must
    score what the fused torch model scores (same outputs up to float error). Each model is scored once:
    again only when its images change, or where asked."""
    from exporter.base.data.shapes import write_split
    from tests.conftest import EMBEDDED

    data = write_split(tmp_path / "shapes", "val", 6, seed=2)
    content = json.loads(data.read_text())  # the embedded model's three classes only
    content["categories"] = content["categories"][:3]
    content["annotations"] = [a for a in content["annotations"] if a["category_id"] <= 3]
    data.write_text(json.dumps(content))
    run = tmp_path / "run"
    code, _, err = run_cli("build", "--recipe", str(EMBEDDED), "--run-dir", str(run))
    assert code == 0, err
    code, out, err = run_cli("eval", "--artifacts", str(run), "--data", str(data))
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert set(report["results"]) == {"torch.fp32", "onnx.fp32"} and report["images"] == 6
    assert report["category_matching"] == "by name" and "warning" not in err
    assert report["results"]["onnx.fp32"]["map"] == pytest.approx(
        report["results"]["torch.fp32"]["map"], abs=1e-3
    )
    assert "onnx.fp32" in out

    assert scored_images == [6, 6]

    # the same models, data and settings: reused; a second target: only its artifact is scored
    scored = (run / "eval.json").read_bytes()
    code, _, err = run_cli("eval", "--artifacts", str(run), "--data", str(data))
    assert code == 0 and "scores reused for torch.fp32, onnx.fp32:" in err, err
    assert (run / "eval.json").read_bytes() == scored and scored_images == [6, 6]
    added = ("--target", "openvino", "--precision", "fp32", "--eval-data", str(data))
    code, _, err = run_cli("build", "--recipe", str(EMBEDDED), "--run-dir", str(run), *added)
    assert code == 0, err
    assert scored_images == [6, 6, 6], "the fused model and the ONNX were scored again"
    both = json.loads((run / "eval.json").read_text())["results"]
    assert set(both) == {"torch.fp32", "onnx.fp32", "openvino.fp32"}
    assert {k: both[k] for k in report["results"]} == report["results"]
    assert both["openvino.fp32"]["map"] == pytest.approx(both["torch.fp32"]["map"], abs=1e-3)

    # an image whose bytes change (blurred, same size): every model scored again
    from PIL import Image, ImageFilter

    image = data.parent / "val" / content["images"][0]["file_name"]
    Image.open(image).filter(ImageFilter.GaussianBlur(3)).save(image)
    code, _, err = run_cli("eval", "--artifacts", str(run), "--data", str(data))
    assert code == 0 and "reused" not in err
    rescored = json.loads((run / "eval.json").read_text())
    assert rescored["data_sha256"] != report["data_sha256"], "the digest covers the images' bytes"
    assert scored_images == [6] * 6
    code, _, err = run_cli("eval", "--artifacts", str(run), "--data", str(data), "--rescore")
    assert code == 0 and "reused" not in err and scored_images == [6] * 9


def test_eval_needs_data(run_cli, tmp_path):
    from tests.conftest import EMBEDDED

    run = tmp_path / "run"
    assert run_cli("build", "--recipe", str(EMBEDDED), "--run-dir", str(run))[0] == 0
    code, _, err = run_cli("eval", "--artifacts", str(run))
    assert code == 2 and "no evaluation data" in err


def test_int8_goal_is_judged_against_the_fused_model():
    from exporter.pipeline.evaluate import int8_goal

    goal = int8_goal(
        {
            "torch.fp32": {"map": 0.77},
            "openvino.fp32": {"map": 0.77},
            "openvino.int8": {"map": 0.7675},
            "tensorrt.qdq (onnxruntime)": {"map": 0.76},
        }
    )
    assert set(goal) == {"openvino.int8", "tensorrt.qdq (onnxruntime)"}
    assert goal["openvino.int8"]["met"] and goal["openvino.int8"]["drop_points"] == pytest.approx(0.25)
    assert not goal["tensorrt.qdq (onnxruntime)"]["met"]


@pytest.mark.parametrize(("images", "batch", "shards"), [(48, 8, 2), (50, 8, 3), (5, 8, 4), (7, 1, 3)])
def test_shards_are_contiguous_runs_of_whole_batches(images, batch, shards):
    from exporter.base.data.coco_map import shard_bounds

    bounds = shard_bounds(images, batch, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == images and len(bounds) == min(shards, -(-images // batch))
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:], strict=False))
    assert all(start % batch == 0 and stop > start for start, stop in bounds), "each batch a single run's"


def test_sharded_eval_scores_the_demo_as_one_process_does(run_cli, tmp_path):
    """The demo's trained model and its ONNX, on 24 demo images: split over 2 processes, every stat is the
    single process's to every printed digit."""
    run = tmp_path / "run"
    args = ("--target", "onnx", "--precision", "fp32", "--eval-limit", "24", "--run-dir", str(run))
    code, _, err = run_cli("build", *args)
    assert code == 0, err
    code, _, err = run_cli("eval", "--artifacts", str(run), "--data", "demo", "--limit", "24")
    assert code == 0, err
    single = json.loads((run / "eval.json").read_text())["results"]
    code, out, err = run_cli(
        "eval", "--artifacts", str(run), "--data", "demo", "--limit", "24", "--shards", "2", "--rescore"
    )
    assert code == 0 and "reused" not in err, err
    sharded = json.loads((run / "eval.json").read_text())["results"]
    assert set(sharded) == set(single) == {"torch.fp32", "onnx.fp32"}
    assert single["onnx.fp32"]["map"] > 0.3, "a trained model: the comparison means something"
    for label, stats in single.items():
        printed = {k: round(100 * v, 2) for k, v in stats.items() if isinstance(v, float)}
        assert {k: round(100 * v, 2) for k, v in sharded[label].items() if isinstance(v, float)} == printed
        assert sharded[label]["images"] == stats["images"] == 24


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_images_scored_by_several_models_are_read_and_resized_once(tmp_path, monkeypatch, mode):
    """A scorer's images are read once for every model it scores, the kept copy the same pixels as a
    fresh read; past the budget an image is read each time."""
    from exporter.base.data import coco_map
    from exporter.base.data.transforms import resize

    rng = np.random.default_rng(0)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(paths[-1])
    reads = []
    read_rgb = coco_map.read_rgb
    monkeypatch.setattr(coco_map, "read_rgb", lambda path: reads.append(path) or read_rgb(path))
    one_image = 3 * 24 * 32
    images = coco_map.ResizedImages((24, 32), mode, budget=2 * one_image)
    for _ in range(2):  # two models
        for path in paths:
            pixels = images(path)
            assert pixels.dtype == np.float32
            np.testing.assert_array_equal(pixels, resize(read_rgb(path), (24, 32), mode))
    assert reads == [*paths, paths[2]], "the first two kept, the third past the budget read again"
