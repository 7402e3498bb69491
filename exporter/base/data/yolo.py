"""Ultralytics (YOLO) datasets: a `data.yaml` naming its splits' images, one `labels/*.txt` per image.

Resolved as Ultralytics resolves them: the yaml's `path` is the dataset root (relative: to the yaml's
folder, else to the current directory; absent: the yaml's folder); a split (`train`, `val`, `test`)
is a folder of images (searched recursively), a text file listing images (`./` lines relative to it)
or a list of those; an image's label file replaces the last `images` folder of its path with `labels`
and its suffix with `.txt`. A label line is `class cx cy w h` normalized to 0–1, or `class x1 y1 x2 y2
…` (a segment: its bounding box). An image without a label file has no objects.

The split becomes a COCO instances dict in memory (category id = class index), scored with COCO's evaluation
like any COCO dataset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from exporter.base.data.coco import CocoDataset, parse_coco
from exporter.base.data.images import image_size
from exporter.base.errors import UserError, read_user_file

SUFFIXES = (".yaml", ".yml")
IMAGE_FORMATS = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm", "heic"}


def is_yolo_yaml(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def read_data_yaml(path: Path) -> dict[str, Any]:
    content = read_user_file(path, "yaml")
    if not isinstance(content, dict):
        raise UserError(f"{path}: not an Ultralytics data.yaml (a mapping with 'val' and 'names')")
    return content


def class_names(content: dict[str, Any], path: Path) -> list[str]:
    """The names in class-index order (`names` as a list or an index → name mapping, or `nc` alone)."""
    names, count = content.get("names"), content.get("nc")
    if names is None:
        if not isinstance(count, int) or count < 1:
            raise UserError(f"{path}: no 'names' (nor an integer 'nc'); list the class names under 'names:'")
        return [f"class_{i}" for i in range(count)]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise UserError(f"{path}: 'names' keys must be the class indices 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise UserError(f"{path}: 'names' must be a list or a mapping of class index to name")
    if count is not None and count != len(names):
        raise UserError(f"{path}: 'nc: {count}' and the {len(names)} 'names' disagree")
    return [str(n) for n in names]


def _root(content: dict[str, Any], path: Path) -> Path:
    named = content.get("path")
    if not named:
        return path.parent.absolute()
    root = Path(str(named)).expanduser()
    if root.is_absolute():
        return root
    for base in (path.parent, Path.cwd()):
        if (base / root).is_dir():
            return Path(os.path.normpath(base.absolute() / root))
    raise UserError(
        f"{path}: dataset root 'path: {named}' found neither beside the yaml nor in the current directory; "
        "give it as an absolute path"
    )


def split_images(path: Path, split: str) -> list[Path]:
    """The images of a split, sorted (an empty or missing split is bad input)."""
    content = read_data_yaml(path)
    entry = content.get(split)
    if not entry:
        raise UserError(f"{path}: no '{split}:' split; name its images folder or list file under '{split}:'")
    root = _root(content, path)
    found: list[Path] = []
    for item in entry if isinstance(entry, list) else [entry]:
        where = Path(os.path.normpath(root / str(item)))  # links kept: labels are found by the path
        if where.is_dir():
            found += [p for p in where.rglob("*.*") if p.is_file()]
        elif where.is_file():
            for line in where.read_text(encoding="utf-8-sig").strip().splitlines():
                line = line.strip()
                listed = where.parent / line[2:] if line.startswith("./") else Path(line)
                found.append(listed if listed.is_absolute() else root / listed)
        else:
            raise UserError(f"{path}: the '{split}' images {where} do not exist")
    images = sorted({p for p in found if p.suffix[1:].lower() in IMAGE_FORMATS})
    if not images:
        raise UserError(f"{path}: the '{split}' split holds no images ({', '.join(sorted(IMAGE_FORMATS))})")
    return images


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    if "images" not in parts[:-1]:
        return image.with_suffix(".txt")
    index = len(parts) - 2 - parts[-2::-1].index("images")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def _box(values: list[float], file: Path, number: int) -> list[float]:
    """Normalized xyxy of one label line's coordinates."""
    if len(values) == 4:
        cx, cy, w, h = values
        box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        if w < 0 or h < 0:
            raise UserError(
                f"{file}:{number}: negative box size; a line is 'class cx cy w h', normalized to 0–1"
            )
    elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        box = [min(xs), min(ys), max(xs), max(ys)]
    else:
        raise UserError(
            f"{file}:{number}: {len(values) + 1} values; a line is 'class cx cy w h' (or a segment "
            "'class x1 y1 x2 y2 …'), normalized to 0–1"
        )
    if not all(np.isfinite(values)) or min(values) < 0 or max(values) > 1:
        raise UserError(
            f"{file}:{number}: coordinates outside 0–1; YOLO labels are normalized by the image size"
        )
    return box


def read_labels(file: Path, classes: int) -> list[tuple[int, list[float]]]:
    """(class, normalized xyxy) per line of one label file."""
    objects = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            label, values = float(fields[0]), [float(v) for v in fields[1:]]
        except ValueError:
            raise UserError(f"{file}:{number}: not numbers: {line.strip()[:60]!r}") from None
        if label != int(label) or not 0 <= label < classes:
            raise UserError(
                f"{file}:{number}: class {fields[0]} is out of range: the data.yaml names {classes} classes "
                f"(0..{classes - 1})"
            )
        objects.append((int(label), _box(values, file, number)))
    return objects


def load_yolo(path: str | Path, split: str = "val") -> CocoDataset:
    """A split of an Ultralytics dataset as a COCO dataset (boxes in pixels, category id = class)."""
    path = Path(path)
    content = read_data_yaml(path)
    names = class_names(content, path)
    images = split_images(path, split)
    folders = {label_path(p).parent for p in images}
    if not any(folder.is_dir() for folder in folders):
        raise UserError(
            f"{path}: no labels folder for the '{split}' images (looked for {sorted(folders)[0]}); "
            "labels live beside images/ in labels/, one .txt per image"
        )
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [{"id": i, "name": n} for i, n in enumerate(names)]
    for image_id, image in enumerate(images):
        height, width = image_size(image)
        coco["images"].append({"id": image_id, "file_name": str(image), "height": height, "width": width})
        labels = label_path(image)
        for label, (x1, y1, x2, y2) in read_labels(labels, len(names)) if labels.is_file() else []:
            box = [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return parse_coco(coco, path, Path("/"))
