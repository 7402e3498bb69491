"""Calibration images: one stream for every INT8 path (OpenVINO/NNCF now, TensorRT later).

Sources: a folder of images, a COCO instances json (or a folder holding one), an Ultralytics
data.yaml (its train split: the val split is what evaluation scores), or `demo` (the demo dataset's
calib split). A seeded selection of N images is preprocessed exactly like
evaluation. `calibration/<model>-<preprocessing>/images.json` records the images used (paths +
sha256) so a cache keyed by model and preprocessing is never reused for another model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.artifacts import sha256_file, sha256_json, write_json
from exporter.data.coco import load_coco, read_rgb
from exporter.data.transforms import Preprocess, normalize, resize
from exporter.data.yolo import is_yolo_yaml, split_images
from exporter.errors import UserError, setting

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEMO_SOURCE = "demo"


def require_source(source: str | Path | None) -> None:
    """A calibration source that is not given or does not exist is bad input (checked before any stage
    runs too)."""
    if source is None:
        raise UserError(
            f"INT8 needs calibration images: pass {setting('calibration.source')} (an image folder, a COCO "
            "json, an Ultralytics data.yaml or 'demo' for the demo model)"
        )
    if str(source) != DEMO_SOURCE and not Path(source).exists():
        raise UserError(
            f"calibration source not found: {source}; pass an image folder, a COCO json, a data.yaml or "
            f"'demo' with {setting('calibration.source')}"
        )


def list_images(source: str | Path) -> list[Path]:
    """Every candidate image of a source, in a stable order."""
    require_source(source)
    if str(source) == DEMO_SOURCE:
        from exporter.data.shapes import demo_split

        source = demo_split("calib")
    path = Path(source)
    if is_yolo_yaml(path):
        return split_images(path, "train")
    if path.is_file() and path.suffix.lower() != ".json":
        raise UserError(f"calibration source {path} is a single file; pass its folder or a COCO json")
    if path.is_file() or (path / "val.json").is_file() or (path / "annotations").is_dir():
        images = [s.path for s in load_coco(path).samples]
        if not images:
            raise UserError(f"calibration source {path} lists no images; pass a COCO json that has some")
        return images
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"calibration folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


@dataclass(frozen=True)
class CalibrationSet:
    source: str
    images: list[Path]
    seed: int
    input_size: tuple[int, int]
    preprocess: Preprocess
    digests: tuple[str, ...] = ()  # sha256 of each image: what a stage calibrated on is its content

    def subset(self, count: int) -> CalibrationSet:
        """The first `count` images."""
        return dataclasses.replace(self, images=self.images[:count], digests=self.digests[:count])

    def batches(self, batch: int = 1) -> Iterator[np.ndarray]:
        """NCHW float32 model inputs, preprocessed exactly like evaluation."""
        for start in range(0, len(self.images), batch):
            pixels = np.stack(
                [
                    resize(read_rgb(p), self.input_size, self.preprocess.resize)
                    for p in self.images[start : start + batch]
                ]
            )
            yield normalize(pixels, self.preprocess)

    def key(self, model_sha256: str) -> str:
        """Cache key: the model and the preprocessing (input size included)."""
        prep = sha256_json({"input_size": list(self.input_size), **self.preprocess.model_dump(mode="json")})
        return f"{model_sha256[:12]}-{prep[:8]}"

    def record(self, folder: Path, model_sha256: str) -> Path:
        """Write the manifest of images used (paths + sha256) under folder/<key>/images.json."""
        path = folder / self.key(model_sha256) / "images.json"
        write_json(
            path,
            {
                "source": self.source,
                "seed": self.seed,
                "count": len(self.images),
                "input_size": list(self.input_size),
                "preprocess": self.preprocess.model_dump(mode="json"),
                "images": [
                    {"path": str(p), "sha256": d}
                    for p, d in zip(self.images, self.digests or map(sha256_file, self.images), strict=True)
                ],
            },
        )
        return path


def select(
    source: str | Path,
    count: int,
    seed: int,
    input_size: tuple[int, int],
    preprocess: Preprocess,
    allow_fewer: bool = False,
) -> tuple[CalibrationSet, list[str]]:
    """A seeded selection of `count` images; fewer available is an error unless `allow_fewer`,
    which records a warning instead. Returns the set and its warnings."""
    if count < 1:
        raise UserError(f"calibration count must be at least 1, got {count}")
    images = list_images(source)
    warnings = []
    if len(images) < count:
        message = f"calibration source {source} has {len(images)} images, fewer than the {count} asked for"
        if not allow_fewer:
            raise UserError(f"{message}; pass {setting('calibration.count', len(images))} or add images")
        warnings.append(message)
    order = np.random.default_rng(seed).permutation(len(images))[:count]
    chosen = [images[i] for i in sorted(order)]
    for path in chosen:  # fail now, naming the file, rather than mid-quantization
        read_rgb(path)
    digests = tuple(sha256_file(p) for p in chosen)
    return CalibrationSet(str(source), chosen, seed, tuple(input_size), preprocess, digests), warnings
