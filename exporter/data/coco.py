"""COCO-format detection datasets: an instances json plus an image folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from exporter.errors import UserError, read_user_file, summary

ORIENTATION = 0x0112  # the EXIF tag: 5–8 turn the image a quarter


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
    content: dict  # the COCO instances dict pycocotools scores against


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
    annotations, folder = find_split(data)
    content = read_user_file(annotations, "json")
    try:
        return parse_coco(content, annotations, folder)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        problem = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"{annotations}: not a COCO instances file ({problem})") from None


def parse_coco(content: dict, annotations: Path, folder: Path) -> CocoDataset:
    """A COCO instances dict whose images' `file_name`s are relative to `folder`."""
    categories = sorted(content["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list[dict]] = {}
    for ann in content.get("annotations", []):
        if ann["category_id"] not in index:
            raise ValueError(f"annotation {ann.get('id')}: category_id {ann['category_id']} is unknown")
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


def read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, turned upright by its EXIF orientation; a missing or unreadable image is bad
    input (whatever the decoder raises: plugins such as the HEIF opener another library patches into
    PIL raise their own errors)."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception as exc:  # noqa: BLE001 - any failure to decode a user's file
        raise UserError(f"cannot read image {path}: {summary(exc)}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as read_rgb returns it, from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(ORIENTATION) in (5, 6, 7, 8)
    except Exception as exc:  # noqa: BLE001 - any failure to decode a user's file
        raise UserError(f"cannot read image {path}: {summary(exc)}") from None
    return (width, height) if rotated else (height, width)
