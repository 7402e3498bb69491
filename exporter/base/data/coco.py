"""COCO-format detection datasets: an instances json plus an image folder."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.base.data.images import image_size
from exporter.base.errors import UserError, read_user_file


@dataclass(frozen=True)
class Sample:
    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (n, 4) xyxy in image pixels
    labels: np.ndarray  # (n,) 0-based class index


@dataclass(frozen=True)
class CocoDataset:
    annotations: Path  # the file that defines it: an instances json, or an Ultralytics data.yaml
    samples: list[Sample]
    category_ids: list[int]  # class index -> COCO category id
    class_names: list[str]
    content: dict  # the COCO instances dict the evaluation scores against


def find_split(data: str | Path) -> tuple[Path, Path]:
    """(instances json, image folder) for a dataset given as a json file or a folder.

    A folder holds `val.json` beside `val/` (the demo set) or COCO's
    `annotations/instances_val2017.json` beside `val2017/`; a json file names its images' folder
    by its stem (`calib.json` → `calib/`, `instances_val2017.json` → `val2017/`).
    """
    path = Path(data)
    if path.is_dir():
        for candidate in (path / "val.json", path / "annotations" / "instances_val2017.json"):
            if candidate.is_file():
                return find_split(candidate)
        raise UserError(f"{path}: no val.json or annotations/instances_val2017.json in this folder")
    if path.is_file():
        stem = path.stem.removeprefix("instances_")
        for folder in (path.parent / stem, path.parent.parent / stem):
            if folder.is_dir():
                return path, folder
        raise UserError(f"{path}: no image folder '{stem}/' beside it or beside its parent")
    raise UserError(f"dataset not found: {path}; pass a COCO instances json or a folder holding one")


def load_coco(data: str | Path) -> CocoDataset:
    """A COCO dataset, refused in one line unless `coco_problems` finds none."""
    annotations, folder = find_split(data)
    content = read_user_file(annotations, "json")
    try:
        problems = coco_problems(content, folder)
        if problems:
            raise UserError(f"{annotations}: not a COCO instances file: {'; '.join(problems)}")
        return parse_coco(content, annotations, folder)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        problem = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"{annotations}: not a COCO instances file ({problem})") from None


BOX_TOLERANCE = 1.0  # pixels a box may reach past its image's edge (COCO's boxes are rounded)

# kind of problem -> (what the affected items are, the fix)
PROBLEMS = {
    "image id": ("images sharing an id", "give each image its own id"),
    "annotation id": ("annotations sharing an id", "give each annotation its own id"),
    "category id": ("categories sharing an id", "give each category its own id"),
    "no id": ("annotations without an id", "give each annotation a unique integer 'id'"),
    "image_id": ("annotations of an unknown image_id", "add their images to 'images' or remove them"),
    "category_id": (
        "annotations of an unknown category_id",
        "add their categories to 'categories' or remove them",
    ),
    "bbox": (
        "boxes that are not [x, y, width, height] of finite numbers with width, height >= 0",
        "fix or remove them",
    ),
    "outside": (
        f"boxes reaching over {BOX_TOLERANCE:g} px past their image",
        "fix the boxes, or the image's width and height",
    ),
    "size": (
        "images whose width x height is not their file's",
        "set each image's width and height to its file's",
    ),
}


def coco_problems(content: dict, folder: Path) -> list[str]:
    """What is wrong in a COCO instances dict: one line per kind of problem (PROBLEMS) with how many
    items it affects, the first and the fix. Declared image sizes are checked against the headers of
    the image files that exist. Images without annotations are fine (background images)."""
    images, categories = content["images"], content["categories"]
    annotations = content.get("annotations", [])
    if not images:
        return ["no images: list them under 'images' ({id, file_name, width, height} each)"]
    found: dict[str, list[str]] = {kind: [] for kind in PROBLEMS}
    for kind, ids in (
        ("image", [image["id"] for image in images]),
        ("annotation", [ann["id"] for ann in annotations if "id" in ann]),
        ("category", [category["id"] for category in categories]),
    ):
        counts = Counter(ids)
        found[f"{kind} id"] = [f"id {i}" for i in ids if counts[i] > 1]
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    category_ids = {category["id"] for category in categories}
    for n, ann in enumerate(annotations):
        name = f"annotation {ann['id']}" if "id" in ann else f"annotations[{n}]"
        if "id" not in ann:
            found["no id"].append(name)
        if ann["image_id"] not in sizes:
            found["image_id"].append(f"{name}: image_id {ann['image_id']}")
        if ann["category_id"] not in category_ids:
            found["category_id"].append(f"{name}: category_id {ann['category_id']} is unknown")
        box = ann["bbox"]
        valid = isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)
        if not valid or not all(map(math.isfinite, box)) or min(box[2:]) < 0:
            found["bbox"].append(f"{name}: bbox {box}")
        elif ann["image_id"] in sizes:
            (x, y, w, h), (width, height) = box, sizes[ann["image_id"]]
            if min(x, y) < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
                found["outside"].append(f"{name}: bbox {box} on image {ann['image_id']} of {width}x{height}")
    for image in images:
        path = folder / image["file_name"]
        if path.is_file():
            height, width = image_size(path)
            if (width, height) != (image["width"], image["height"]):
                found["size"].append(
                    f"image {image['id']} ({image['file_name']}) says {image['width']}x{image['height']}, "
                    f"its file is {width}x{height}"
                )
    return [
        f"{PROBLEMS[kind][0]} ({len(examples)}, first: {examples[0]}): {PROBLEMS[kind][1]}"
        for kind, examples in found.items()
        if examples
    ]


def parse_coco(content: dict, annotations: Path, folder: Path) -> CocoDataset:
    """A COCO instances dict whose images' `file_name`s are relative to `folder` (free of
    `coco_problems`)."""
    categories = sorted(content["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list[dict]] = {}
    for ann in content.get("annotations", []):
        if not ann.get("iscrowd", 0):
            per_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for image in sorted(content["images"], key=lambda i: i["id"]):
        objects = per_image.get(image["id"], [])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (o["bbox"] for o in objects)], np.float32)
        labels = np.array([index[o["category_id"]] for o in objects], np.int64)
        samples.append(
            Sample(
                image["id"],
                folder / image["file_name"],
                image["height"],
                image["width"],
                boxes.reshape(-1, 4),
                labels,
            )
        )
    return CocoDataset(
        annotations, samples, [c["id"] for c in categories], [c["name"] for c in categories], content
    )
