"""Calibration images: one stream for every INT8 path (OpenVINO/NNCF now, TensorRT later).

Sources: a folder of images, a COCO instances json (or a folder holding one), an Ultralytics
data.yaml (its train split: the val split is what evaluation scores), or `demo` (the demo dataset's
calib split). A seeded selection of N images is preprocessed exactly like
evaluation. `calibration/<model>-<preprocessing>-<images>/images.json` records the images used (paths
+ sha256): keyed by their contents too, a record (and the range cache beside it) is never reused for
another model nor overwritten by a calibration on other images. A selection
of near-constant images only, or of too few distinct ones, fails the build (exit 1); some such
images are a warning.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.base.artifacts import sha256_file, sha256_json, write_json
from exporter.base.data.coco import load_coco
from exporter.base.data.images import read_rgb, require_file
from exporter.base.data.transforms import Preprocess, normalize, resize
from exporter.base.data.yolo import is_yolo_yaml, split_images
from exporter.base.errors import CheckFailed, UserError, setting

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEMO_SOURCE = "demo"
MIN_PIXEL_STD = 1.0  # levels (of 0–255): an image whose pixels spread less is near-constant (one colour)
MIN_DISTINCT = 8  # distinct images a selection of n needs: min(n, MIN_DISTINCT)


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
    """Every candidate image of a source, in a stable order. In a folder: the files named like images
    (folders so named are not images; a FIFO, device or socket so named is refused)."""
    require_source(source)
    if str(source) == DEMO_SOURCE:
        from exporter.base.data.shapes import demo_split

        source = demo_split("calib")
    path = Path(source)
    if is_yolo_yaml(path):
        return split_images(path, "train")
    if path.is_file() and path.suffix.lower() != ".json":
        raise UserError(f"calibration source {path} is a single file; pass its folder or a COCO json")
    if path.is_file() or (path / "val.json").is_file() or (path / "annotations").is_dir():
        return [s.path for s in load_coco(path).samples]  # a COCO file without images is refused there
    images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    for image in images:  # a FIFO or device named like an image is refused, not read (it may never end)
        require_file(image)
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

    def contents(self) -> list[str]:
        """The sha256 of each image: as recorded when selected, else read now."""
        return list(self.digests or map(sha256_file, self.images))

    def key(self, model_sha256: str) -> str:
        """Cache key: the model, the preprocessing (input size included) and the images' contents, so a
        record or range cache is never overwritten by a calibration on other images."""
        prep = sha256_json({"input_size": list(self.input_size), **self.preprocess.model_dump(mode="json")})
        images = sha256_json(self.contents())
        return f"{model_sha256[:12]}-{prep[:8]}-{images[:8]}"

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
                    {"path": str(p), "sha256": d} for p, d in zip(self.images, self.contents(), strict=True)
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
    which records a warning instead. A degenerate selection fails or warns (`degenerate`). Returns the
    set and its warnings."""
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
    # every image decoded now, so a bad one is named here rather than mid-quantization
    flat = [path for path in chosen if pixel_std(read_rgb(path)) < MIN_PIXEL_STD]
    digests = tuple(sha256_file(p) for p in chosen)
    warnings += degenerate(chosen, flat, digests)
    return CalibrationSet(str(source), chosen, seed, tuple(input_size), preprocess, digests), warnings


def pixel_std(pixels: np.ndarray) -> float:
    """Standard deviation of an image's levels (0–255, every channel), subsampled to about a million
    pixels."""
    step = max(1, math.isqrt(pixels.shape[0] * pixels.shape[1] >> 20))
    return float(pixels[::step, ::step].std())


def degenerate(chosen: list[Path], flat: list[Path], digests: tuple[str, ...]) -> list[str]:
    """Warnings for the near-constant (`flat`) and repeated images of a selection. A selection that is
    all near-constant (INT8 calibrated on it collapses), or holds fewer than min(its size, MIN_DISTINCT)
    distinct images, fails."""
    count = len(chosen)
    if len(flat) == count:
        raise CheckFailed(
            f"the {count} calibration images are all near-constant (pixel std below {MIN_PIXEL_STD:g} level, "
            f"first: {flat[0]}) and INT8 calibrated on them collapses; pass images like the model's inputs "
            f"with {setting('calibration.source')}"
        )
    originals: dict[str, Path] = {}
    copies = []  # (copy, the image it repeats)
    for path, digest in zip(chosen, digests, strict=True):
        if digest in originals:
            copies.append((path, originals[digest]))
        originals.setdefault(digest, path)
    if len(originals) < min(count, MIN_DISTINCT):
        raise CheckFailed(
            f"the {count} calibration images hold {len(originals)} distinct ones ({copies[0][0]} repeats "
            f"{copies[0][1]}), too few to calibrate INT8 on; remove the copies or add distinct images"
        )
    warnings = []
    if flat:
        warnings.append(
            f"{len(flat)} of {count} calibration images are near-constant (pixel std below "
            f"{MIN_PIXEL_STD:g} level, first: {flat[0]}) and tell INT8 calibration nothing; replace them "
            "with images like the model's inputs"
        )
    if copies:
        warnings.append(
            f"{len(copies)} of {count} calibration images repeat another's content (first: {copies[0][0]} "
            f"repeats {copies[0][1]}); remove the copies"
        )
    return warnings
