"""Synthetic detection dataset: shapes on textured, noisy backgrounds, written in COCO format (and
alongside in Ultralytics' format: data.yaml, images/<split> hard-linking the COCO images, labels/).

Deterministic from a seed (each image from its own generator, so any image can be regenerated
alone). Objects vary in class, size (small ones included), colour and rotation, may partially
occlude each other, and sit on gradient, stripe or blotch textures with pixel noise on top.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from exporter.base.artifacts import atomic_output, write_json

CLASSES = ("circle", "square", "triangle", "star", "hexagon")
SPLITS = {"train": (3000, 1), "val": (500, 2), "calib": (300, 3)}  # name -> (images, seed)
MIN_SIZE, MAX_SIZE = 10, 110  # object extent in pixels
MAX_OCCLUDED = 0.4  # largest fraction of an earlier object's box a later one may cover


@dataclass
class Shape:
    label: int
    polygon: list[tuple[float, float]]

    @property
    def box(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.polygon, strict=True)
        return min(xs), min(ys), max(xs), max(ys)


def _polygon(label: int, cx: float, cy: float, radius: float, angle: float) -> list[tuple[float, float]]:
    name = CLASSES[label]
    if name == "circle":
        angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        radii = np.full(48, radius)
    elif name == "star":
        angles = angle + np.linspace(0, 2 * math.pi, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6}[name]
        angles = angle + np.linspace(0, 2 * math.pi, sides, endpoint=False)
        radii = np.full(sides, radius)
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    if kind == 0:  # linear gradient
        direction = rng.normal(size=2)
        ramp = (xx * direction[0] + yy * direction[1]) / max(height, width)
        image = base + ramp[..., None] * rng.uniform(-80, 80, size=3)
    elif kind == 1:  # stripes
        period, phase, theta = rng.uniform(6, 40), rng.uniform(0, 6.3), rng.uniform(0, math.pi)
        wave = np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period + phase)
        image = base + wave[..., None] * rng.uniform(10, 45, size=3)
    else:  # low-frequency blotches
        coarse = rng.uniform(-1, 1, size=(height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
        blotch = np.asarray(
            Image.fromarray(((coarse + 1) * 127.5).astype(np.uint8)).resize((width, height), Image.BILINEAR),
            dtype=np.float32,
        )
        image = base + (blotch - 127.5) * rng.uniform(0.2, 0.5)
    return image


def _overlaps_too_much(box, boxes) -> bool:
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in boxes:
        inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        if inter > MAX_OCCLUDED * (a1 - a0) * (b1 - b0) or inter > MAX_OCCLUDED * (x1 - x0) * (y1 - y0):
            return True
    return False


def render(seed: int, index: int) -> tuple[Image.Image, list[Shape]]:
    """Image `index` of the split seeded by `seed`, with its shapes (drawn back to front)."""
    rng = np.random.default_rng([seed, index])
    width, height = int(rng.integers(256, 385)), int(rng.integers(256, 385))
    canvas = Image.fromarray(np.clip(_background(rng, height, width), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    shapes: list[Shape] = []
    for _ in range(int(rng.integers(1, 9))):
        for _attempt in range(20):
            size = MIN_SIZE + (MAX_SIZE - MIN_SIZE) * rng.uniform() ** 2  # more small than large
            radius = size / 2
            cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
            shape = Shape(int(rng.integers(len(CLASSES))), [])
            shape.polygon = _polygon(shape.label, cx, cy, radius, rng.uniform(0, 2 * math.pi))
            if not _overlaps_too_much(shape.box, [s.box for s in shapes]):
                break
        else:
            continue
        hue = rng.uniform(0, 1, size=3)
        colour = tuple(int(c) for c in 30 + 195 * hue / hue.max())
        draw.polygon(shape.polygon, fill=colour, outline=tuple(int(c * 0.6) for c in colour))
        shapes.append(shape)
    pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, rng.uniform(2, 12), size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), shapes


def write_image(folder: Path, seed: int, index: int) -> tuple[dict, list[Shape]]:
    """Write image `index` of the split seeded by `seed` as `folder/<index>.jpg`, alone; returns its COCO
    image record (without an id) and its shapes."""
    image, shapes = render(seed, index)
    file_name = f"{index:06d}.jpg"
    with atomic_output(folder / file_name) as tmp:
        image.save(tmp, format="JPEG", quality=92)
    return {"file_name": file_name, "width": image.width, "height": image.height}, shapes


def write_split(root: Path, name: str, count: int, seed: int) -> Path:
    """Write `root/<name>/*.jpg` and `root/<name>.json` (COCO instances); returns the json path."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, shapes = write_image(folder, seed, index)
        images.append({"id": index + 1, **image})
        for shape in shapes:
            x0, y0, x1, y1 = shape.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": shape.label + 1,
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    path = root / f"{name}.json"
    write_json(
        path,
        {
            "images": images,
            "annotations": annotations,
            "categories": categories,
            "info": {"description": f"reparam-export synthetic shapes, split {name}, seed {seed}"},
        },
    )
    return path


def write_yolo(root: Path, splits: tuple[str, ...]) -> Path:
    """Ultralytics' layout of written COCO splits under `root`: `labels/<split>/*.txt` (class cx cy w h,
    normalized), `images/<split>/` (the split's images, hard-linked), and `data.yaml`; returns the yaml's
    path. (Not a link to the folder: Ultralytics resolves links and would look for labels beside it.)"""
    import json

    for name in splits:
        content = json.loads((root / f"{name}.json").read_text())
        first = min(c["id"] for c in content["categories"])
        lines: dict[int, list[str]] = {image["id"]: [] for image in content["images"]}
        sizes = {image["id"]: (image["width"], image["height"]) for image in content["images"]}
        for ann in content["annotations"]:
            (x, y, w, h), (width, height) = ann["bbox"], sizes[ann["image_id"]]
            centre = ((x + w / 2) / width, (y + h / 2) / height)
            values = (*centre, w / width, h / height)
            lines[ann["image_id"]].append(
                f"{ann['category_id'] - first} " + " ".join(f"{v:.6f}" for v in values)
            )
        labels = root / "labels" / name
        labels.mkdir(parents=True, exist_ok=True)
        for image in content["images"]:
            with atomic_output(labels / f"{Path(image['file_name']).stem}.txt") as tmp:
                tmp.write_text("\n".join(lines[image["id"]]) + "\n")
        images = root / "images" / name  # the COCO split's files, hard-linked (copied across devices)
        images.mkdir(parents=True, exist_ok=True)
        for image in content["images"]:
            source, target = root / name / image["file_name"], images / image["file_name"]
            if not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
    path = root / "data.yaml"
    with atomic_output(path) as tmp:
        tmp.write_text(
            "# the demo shapes in Ultralytics' format (written by reparam-export demo-data)\n"
            + "".join(f"{name}: images/{name}\n" for name in splits)
            + f"names: {list(CLASSES)}\n"
        )
    return path


DATA_ENV = "REPARAM_EXPORT_DATA"  # folder of the demo dataset (default: data/shapes in the cwd)


def demo_split(name: str, root: Path | None = None) -> Path:
    """The instances json of a demo split, written under `root` on first use (default: the folder
    named by $REPARAM_EXPORT_DATA, else data/shapes). Processes that ask for it at once write it once:
    the others wait for it."""
    from filelock import FileLock

    root = Path(root or os.environ.get(DATA_ENV) or "data/shapes")
    path = root / f"{name}.json"
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(root / f".{name}.lock"):
            if not path.is_file():
                count, seed = SPLITS[name]
                write_split(root, name, count, seed)
    return path


def demo_yolo(root: Path | None = None) -> Path:
    """The demo's train and val splits in Ultralytics' format (written on first use): the data.yaml."""
    splits = ("train", "val")
    for name in splits:
        root = demo_split(name, root).parent
    path = root / "data.yaml"
    return path if path.is_file() else write_yolo(root, splits)
