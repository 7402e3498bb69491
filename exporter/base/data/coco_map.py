"""COCO mAP of any backend's runner on a COCO-format dataset, scored with faster-coco-eval: pycocotools'
evaluation in C++, the same figures."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rich.progress import Progress

from exporter.base.data.coco import CocoDataset, Sample
from exporter.base.data.images import read_rgb
from exporter.base.data.transforms import Resize, resize
from exporter.base.errors import UserError

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


@dataclass(frozen=True)
class Detections:
    """One image's detections in original-image pixels: xyxy boxes (K, 4), scores (K,), 0-based labels."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


BY_NAME = "by name"
BY_POSITION = "by position: the model has no class names (set class_names in the recipe to match by name)"


def for_model(dataset: CocoDataset, class_names: Sequence[str]) -> tuple[CocoDataset, str]:
    """The dataset indexed by the model's classes (class i is the category named class_names[i]) and
    how its categories were matched to them (BY_NAME, or BY_POSITION where the model names none).
    Refused: nothing to score, or categories and class names that are not the same set."""
    file, names = dataset.annotations, dataset.class_names
    if not names:
        raise UserError(
            f"{file}: no categories, nothing to score; list the dataset's classes under 'categories'"
        )
    if not any(len(sample.labels) for sample in dataset.samples):
        raise UserError(
            f"{file}: no annotations, nothing to score; evaluate on a dataset with labelled objects"
        )
    if not class_names:
        return dataset, BY_POSITION
    for side, listed in (("the dataset's categories", names), ("the model's class names", class_names)):
        twice = sorted({name for name in listed if listed.count(name) > 1})
        if twice:
            raise UserError(
                f"{file}: names given twice in {side} ({len(twice)}, first: '{twice[0]}'); give each class "
                "its own name to match categories to the model's classes by name"
            )
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise UserError(
            f"{file}: {len(unknown)} categories the model does not have (first: '{unknown[0]}'; the model's "
            f"{len(class_names)} classes: {', '.join(class_names)}), which it can never detect; remove them "
            "and their annotations, or set class_names in the recipe to the model's classes"
        )
    missing = [name for name in class_names if name not in names]
    if missing:
        raise UserError(
            f"{file}: {len(missing)} of the model's {len(class_names)} classes are not among the dataset's "
            f"categories (first: '{missing[0]}'); add them as categories (without annotations: only the "
            "others are scored) or evaluate on a dataset with the model's classes"
        )
    order = [names.index(name) for name in class_names]  # the dataset's class index of each model class
    relabel = np.argsort(order)  # dataset class index -> model class index
    samples = [dataclasses.replace(s, labels=relabel[s.labels]) for s in dataset.samples]
    category_ids = [dataset.category_ids[i] for i in order]
    matched = dataclasses.replace(
        dataset, samples=samples, category_ids=category_ids, class_names=list(class_names)
    )
    return matched, BY_NAME


def to_coco_results(dataset: CocoDataset, image_id: int, det: Detections) -> list[dict]:
    """Detections as COCO result records (xywh boxes, dataset category ids); a class index the dataset
    has no category for is refused."""
    count = len(dataset.category_ids)
    unknown = det.labels[(det.labels < 0) | (det.labels >= count)]
    if len(unknown):
        raise UserError(
            f"{dataset.annotations}: the model predicts class {int(unknown[0])}, but the dataset has {count} "
            f"categories (classes 0..{count - 1}); give the model's class names in the recipe (class_names) "
            "or evaluate on a dataset with all its classes"
        )
    xywh = (
        np.concatenate([det.boxes[:, :2], det.boxes[:, 2:] - det.boxes[:, :2]], 1)
        if len(det.boxes)
        else det.boxes
    )
    return [
        {
            "image_id": image_id,
            "category_id": dataset.category_ids[int(label)],
            "bbox": [round(float(v), 3) for v in box],
            "score": round(float(score), 5),
        }
        for box, score, label in zip(xywh, det.scores, det.labels, strict=True)
    ]


def ground_truth(content: dict, image_ids: Sequence[int]) -> dict:
    """The dataset's images in `image_ids` with their annotations, each annotation a copy (COCOeval marks
    the ones it ignores on the record): all that an evaluation restricted to those images reads, without
    copying the rest of a large dataset on every score."""
    wanted = set(image_ids)
    return {
        **content,
        "images": [image for image in content["images"] if image["id"] in wanted],
        "annotations": [dict(a) for a in content.get("annotations", []) if a["image_id"] in wanted],
    }


def score(dataset: CocoDataset, results: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    """COCO bbox evaluation restricted to `image_ids`: mAP@[.5:.95], mAP50, … (faster-coco-eval, pycocotools'
    algorithm in C++: the same figures, tested)."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(ground_truth(dataset.content, image_ids))
        evaluation = COCOeval_faster(truth, truth.loadRes(results), "bbox")
        evaluation.params.imgIds = list(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # -1 means "no ground truth in this range" (e.g. no small objects): not a 0 mAP
    return {name: None if v < 0 else float(v) for name, v in zip(STAT_NAMES, evaluation.stats, strict=False)}


def scored_samples(dataset: CocoDataset, limit: int | None) -> list[Sample]:
    """The images an evaluation scores: the dataset's, or its first `limit`."""
    return dataset.samples[:limit] if limit else dataset.samples


def shard_bounds(images: int, batch: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each of `shards` contiguous runs of whole batches over `images` images (the last
    batch may be short), so that every batch is the one a single process runs: sharded detections are the
    single-process ones, image for image. Fewer bounds where there are fewer batches than shards."""
    batches = -(-images // batch)
    per, extra = divmod(batches, shards)
    bounds, start = [], 0
    for index in range(min(shards, batches)):
        stop = min(images, start + (per + (index < extra)) * batch)
        bounds.append((start, stop))
        start = stop
    return bounds


KEPT_BYTES = 512 * 2**20  # resized images a scorer keeps: the demo's 500 at 320x320 take 154 MB


class ResizedImages:
    """Images read and resized to one model input (0–255, 3xHxW float32), the first ones kept up to
    `budget` bytes so that the models scored on the same images one after another read and resize each
    once. Kept as uint8: resizing rounds every pixel to a whole number in 0–255, so the copy is exact."""

    def __init__(self, size: tuple[int, int], mode: Resize = "stretch", budget: int = KEPT_BYTES):
        self.size, self.mode, self.budget = tuple(size), mode, budget
        self.kept: dict[str, np.ndarray] = {}
        self.used = 0

    def __call__(self, path) -> np.ndarray:
        found = self.kept.get(str(path))
        if found is not None:
            return found.astype(np.float32)
        pixels = resize(read_rgb(path), self.size, self.mode)
        if self.used + pixels.size <= self.budget:
            self.kept[str(path)] = pixels.astype(np.uint8)
            self.used += pixels.size
        return pixels


def detect(
    dataset: CocoDataset,
    samples: Sequence[Sample],
    infer: Callable[[np.ndarray], list[np.ndarray]],
    postprocess: Callable[[list[np.ndarray], list[tuple[int, int]]], list[Detections]],
    images: ResizedImages,
    to_input: Callable[[np.ndarray], np.ndarray] = lambda x: x,
    batch: int = 8,
    progress: bool = True,
) -> list[dict]:
    """`infer`'s detections on `samples`, in batches of `batch`, as COCO result records in image order.

    `infer` takes an NCHW float32 batch (0–255 pixels from `images`, through `to_input`); `postprocess`
    maps its outputs and the original (height, width) of each image to Detections.
    """
    results: list[dict] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(samples))
        for start in range(0, len(samples), batch):
            chunk = samples[start : start + batch]
            pixels = np.stack([images(s.path) for s in chunk])
            outputs = infer(to_input(pixels))
            for sample, det in zip(
                chunk, postprocess(outputs, [(s.height, s.width) for s in chunk]), strict=True
            ):
                results.extend(to_coco_results(dataset, sample.image_id, det))
            bar.update(task, advance=len(chunk))
    return results


def scored(dataset: CocoDataset, results: list[dict], samples: Sequence[Sample]) -> dict[str, float]:
    """COCO stats of `results` on `samples`, with the number of images scored."""
    metrics = score(dataset, results, [s.image_id for s in samples])
    metrics["images"] = len(samples)
    return metrics


def evaluate(
    dataset: CocoDataset,
    infer: Callable[[np.ndarray], list[np.ndarray]],
    postprocess: Callable[[list[np.ndarray], list[tuple[int, int]]], list[Detections]],
    input_size: tuple[int, int],
    to_input: Callable[[np.ndarray], np.ndarray] = lambda x: x,
    batch: int = 8,
    limit: int | None = None,
    progress: bool = True,
    resize_mode: Resize = "stretch",
) -> dict[str, float]:
    """`infer`'s COCO stats on the dataset (or its first `limit` images), in one process."""
    samples = scored_samples(dataset, limit)
    images = ResizedImages(input_size, resize_mode, budget=0)  # one model: nothing to keep
    results = detect(dataset, samples, infer, postprocess, images, to_input, batch, progress)
    return scored(dataset, results, samples)
