"""COCO mAP of any backend's runner on a COCO-format dataset, scored with pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rich.progress import Progress

from exporter.data.coco import CocoDataset, Sample, read_rgb
from exporter.data.transforms import Resize, resize

STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large")


@dataclass(frozen=True)
class Detections:
    """One image's detections in original-image pixels: xyxy boxes (K, 4), scores (K,), 0-based labels."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def to_coco_results(dataset: CocoDataset, image_id: int, det: Detections) -> list[dict]:
    """Detections as COCO result records (xywh boxes, dataset category ids)."""
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


def score(dataset: CocoDataset, results: list[dict], image_ids: Sequence[int]) -> dict[str, float]:
    """pycocotools bbox evaluation restricted to `image_ids`; mAP@[.5:.95], mAP50, …"""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = copy.deepcopy(dataset.content)
        truth.createIndex()
        if not results:
            return dict.fromkeys(STAT_NAMES, 0.0)
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.params.imgIds = list(image_ids)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # pycocotools' -1 means "no ground truth in this range" (e.g. no small objects): not a 0 mAP
    return {name: None if v < 0 else float(v) for name, v in zip(STAT_NAMES, evaluation.stats, strict=False)}


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
    """Run `infer` over the dataset (or its first `limit` images) and score the detections.

    `infer` takes an NCHW float32 batch (0–255 pixels resized by `resize_mode`, through `to_input`);
    `postprocess` maps its outputs and the original (height, width) of each image to Detections.
    """
    samples: list[Sample] = dataset.samples[:limit] if limit else dataset.samples
    results: list[dict] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating", total=len(samples))
        for start in range(0, len(samples), batch):
            chunk = samples[start : start + batch]
            pixels = np.stack([resize(read_rgb(s.path), input_size, resize_mode) for s in chunk])
            outputs = infer(to_input(pixels))
            for sample, det in zip(
                chunk, postprocess(outputs, [(s.height, s.width) for s in chunk]), strict=True
            ):
                results.extend(to_coco_results(dataset, sample.image_id, det))
            bar.update(task, advance=len(chunk))
    metrics = score(dataset, results, [s.image_id for s in samples])
    metrics["images"] = len(samples)
    return metrics
