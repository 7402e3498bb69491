"""COCO evaluation data is checked on load and matched to the model's classes by name: each bad input is
refused in one line naming the problem, and a dataset whose category ids are permuted scores the same."""

import json
import math

import numpy as np
import pytest

from exporter.base.data.coco import load_coco
from exporter.base.data.coco_map import BY_NAME, BY_POSITION, for_model
from exporter.base.data.shapes import CLASSES, write_split, write_yolo
from exporter.base.data.transforms import Preprocess
from exporter.base.data.yolo import load_yolo
from exporter.base.errors import UserError
from exporter.models.family import DECODED
from exporter.pipeline.recipe import load_recipe
from exporter.pipeline.stages.scoring import EvaluationSettings, Scorer
from tests.conftest import EMBEDDED

SIZE = (64, 64)  # the oracle's input size


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """A valid 4-image shapes split (val.json beside val/) and its content."""
    path = write_split(tmp_path_factory.mktemp("shapes"), "val", 4, seed=2)
    return path, json.loads(path.read_text())


def rewritten(split, tmp_path, change) -> dict:
    """The split's content changed by `change`, written to tmp_path/val.json beside its images."""
    path, content = split
    content = json.loads(json.dumps(content))
    change(content)
    (tmp_path / "val.json").write_text(json.dumps(content))
    if not (tmp_path / "val").exists():
        (tmp_path / "val").symlink_to(path.parent / "val")
    return content


def keep_classes(content: dict, names) -> None:
    """Only the categories named `names`, and their annotations."""
    ids = {c["id"] for c in content["categories"] if c["name"] in names}
    content["categories"] = [c for c in content["categories"] if c["id"] in ids]
    content["annotations"] = [a for a in content["annotations"] if a["category_id"] in ids]


def set_box(index: int, box: list[float]):
    return lambda content: content["annotations"][index].update(bbox=box)


def set_all(field: str, value):
    return lambda content: [a.update({field: value}) for a in content["annotations"]]


LOAD_ERRORS = {
    "two images sharing an id": (
        lambda c: c["images"][1].update(id=c["images"][0]["id"]),
        "images sharing an id (2, first: id 1): give each image its own id",
    ),
    "every annotation with id 1": (set_all("id", 1), "annotations sharing an id"),
    "annotations without an id": (
        lambda c: [a.pop("id") for a in c["annotations"][:2]],
        "annotations without an id (2, first: annotations[0])",
    ),
    "a box of negative size": (set_box(0, [10, 10, -4, 5]), "boxes that are not [x, y, width, height]"),
    "a NaN box": (set_box(1, [10, math.nan, 4, 5]), "(1, first: annotation 2: bbox [10, nan, 4, 5])"),
    "a box outside its image": (set_box(0, [-3, 10, 4, 5]), "boxes reaching over 1 px past their image"),
    "an unknown image_id": (
        lambda c: c["annotations"][0].update(image_id=99),
        "annotations of an unknown image_id (1, first: annotation 1: image_id 99)",
    ),
    "an unknown category_id": (
        lambda c: c["annotations"][0].update(category_id=99),
        "annotation 1: category_id 99 is unknown",
    ),
    "two categories sharing an id": (
        lambda c: c["categories"][1].update(id=1),
        "categories sharing an id (2, first: id 1)",
    ),
    "an empty image list": (lambda c: c.update(images=[]), "no images"),
    "a declared size that is not the image's": (
        lambda c: c["images"][2].update(width=c["images"][2]["width"] + 10),
        "images whose width x height is not their file's (1, first: image 3",
    ),
}


@pytest.mark.parametrize("case", LOAD_ERRORS)
def test_bad_data_is_refused_on_load_in_one_line(split, tmp_path, case):
    change, problem = LOAD_ERRORS[case]
    rewritten(split, tmp_path, change)
    with pytest.raises(UserError) as info:
        load_coco(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'val.json'}: ") and "\n" not in message
    assert problem in message


def test_problems_of_every_kind_are_named_together(split, tmp_path):
    def change(content):
        content["images"][1]["id"] = content["images"][0]["id"]
        content["annotations"][0]["bbox"] = [0, 0, -1, 1]

    rewritten(split, tmp_path, change)
    with pytest.raises(UserError, match="images sharing an id .*; boxes that are not"):
        load_coco(tmp_path)


def test_boxes_within_the_tolerance_and_background_images_are_accepted(split, tmp_path):
    def change(content):
        image = content["images"][0]
        first = next(a for a in content["annotations"] if a["image_id"] == image["id"])
        first["bbox"] = [-0.5, -0.5, image["width"] + 1, image["height"] + 1]  # 0.5 px past each edge
        content["annotations"] = [a for a in content["annotations"] if a["image_id"] != 2]

    rewritten(split, tmp_path, change)
    dataset = load_coco(tmp_path)
    assert len(dataset.samples) == 4 and len(dataset.samples[1].labels) == 0


def scorer(path, class_names) -> Scorer:
    return Scorer(EvaluationSettings(str(path), path, None, DECODED, SIZE, Preprocess(), tuple(class_names)))


@pytest.mark.parametrize(
    "change, names, problem",
    [
        (lambda c: c.update(categories=[], annotations=[]), CLASSES, "no categories, nothing to score"),
        (lambda c: c.update(annotations=[]), CLASSES, "no annotations, nothing to score"),
        (lambda c: keep_classes(c, CLASSES[:3]), CLASSES, "2 of the model's 5 classes are not among"),
        (lambda c: None, CLASSES[:3], "2 categories the model does not have (first: 'star'"),
        (
            lambda c: c["categories"][1].update(name="circle"),
            CLASSES,
            "given twice in the dataset's categories",
        ),
        (lambda c: None, ("circle", *CLASSES), "given twice in the model's class names (1, first: 'circle')"),
    ],
    ids=["no categories", "no annotations", "3 categories, 5 classes", "5 categories, 3 classes"]
    + ["categories sharing a name", "class names sharing a name"],
)
def test_data_that_does_not_fit_the_model_is_refused(split, tmp_path, change, names, problem):
    rewritten(split, tmp_path, change)
    with pytest.raises(UserError) as info:
        scorer(tmp_path / "val.json", names)
    assert str(info.value).startswith(f"{tmp_path / 'val.json'}: ") and problem in str(info.value)


def oracle(path):
    """infer() for the DECODED head (batch 1, in image id order) returning the ground truth of `path` at
    the input size: class i is CLASSES[i] whatever the category ids."""
    content = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in content["categories"]}
    truth = []
    for image in sorted(content["images"], key=lambda i: i["id"]):
        objects = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        scale = np.array([SIZE[1] / image["width"], SIZE[0] / image["height"]] * 2, np.float32)
        boxes = np.zeros((len(objects) + 1, 4), np.float32)  # one more anchor, scored 0
        scores = np.zeros((len(objects) + 1, len(CLASSES)), np.float32)
        for k, ann in enumerate(objects):
            x, y, w, h = ann["bbox"]
            boxes[k] = np.array([x, y, x + w, y + h]) * scale
            scores[k, CLASSES.index(names[ann["category_id"]])] = 0.9
        truth.append([scores[None], boxes[None]])
    order = iter(truth)
    return lambda batch: next(order)


def swap_circle_and_square(content):
    ids = {c["name"]: c["id"] for c in content["categories"]}
    swap = {ids["circle"]: ids["square"], ids["square"]: ids["circle"]}
    for item in (*content["categories"], *content["annotations"]):
        key = "id" if "name" in item else "category_id"
        item[key] = swap.get(item[key], item[key])


def test_permuted_category_ids_score_the_same_by_name(split, tmp_path):
    original, _ = split
    rewritten(split, tmp_path, swap_circle_and_square)
    swapped = tmp_path / "val.json"
    score = scorer(original, CLASSES)
    expected = score(oracle(original), 1)
    assert expected["map"] == pytest.approx(1.0, abs=1e-3) and score.category_matching == BY_NAME
    assert scorer(swapped, CLASSES)(oracle(swapped), 1) == expected
    by_position = scorer(swapped, ())(oracle(swapped), 1)
    assert by_position["map"] < expected["map"] - 0.1, "by position, circles are scored as squares"


def test_matching_by_position_is_reported(split):
    path, _ = split
    score = scorer(path, ())
    assert score(oracle(path), 1)["map"] == pytest.approx(1.0, abs=1e-3)
    assert score.category_matching == BY_POSITION
    assert BY_POSITION.startswith("by position: the model has no class names")


def test_a_class_beyond_the_categories_is_refused_when_matched_by_position(split, tmp_path):
    rewritten(split, tmp_path, lambda c: keep_classes(c, CLASSES[:3]))
    scores = np.zeros((1, 1, len(CLASSES)), np.float32)
    scores[..., 4] = 0.9  # one hexagon: class 4 of a 5-class model

    def predict(batch):
        return [scores, np.array([[[0, 0, 10, 10]]], np.float32)]

    with pytest.raises(UserError, match="the model predicts class 4, but the dataset has 3 categories"):
        scorer(tmp_path / "val.json", ())(predict, 1)


def test_an_ultralytics_dataset_is_matched_by_name(split):
    path, _ = split
    dataset = load_yolo(write_yolo(path.parent, ("val",)))
    model = tuple(reversed(CLASSES))
    matched, how = for_model(dataset, model)
    assert how == BY_NAME and matched.class_names == list(model) and matched.category_ids == [4, 3, 2, 1, 0]
    for before, after in zip(dataset.samples, matched.samples, strict=True):
        assert [model[i] for i in after.labels] == [CLASSES[i] for i in before.labels]


def test_the_recipe_class_names_are_matched(split):
    path, _ = split
    settings = EvaluationSettings.from_recipe(load_recipe(EMBEDDED), path)
    assert settings.class_names == ("circle", "square", "triangle")
