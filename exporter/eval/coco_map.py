"""COCO box mAP of a built run: read a COCO-format dataset, run the exported model, score with pycocotools.

Images are pre-processed as the recipe says, outputs decoded and NMS'd by the DAMO-YOLO
post-processing (exporter.models.damoyolo.postprocess), boxes rescaled to each original image and
labels mapped to the dataset's category ids by class name.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from exporter.artifacts import write_json
from exporter.errors import UserError
from exporter.models.damoyolo.postprocess import Detections, postprocess, preprocess
from exporter.recipe import Recipe

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
DAMO_BUILDER = "exporter.models.damoyolo:build_damoyolo"


@dataclass(frozen=True)
class CocoData:
    annotations: Path
    images: Path


def locate_dataset(data: Path, annotations: Path | None = None, images: Path | None = None) -> CocoData:
    """Find the instances json (DIR/annotations/instances_*.json or DIR/instances_*.json) and the image
    folder (DIR/<split>, DIR/images/<split>, DIR/images or DIR, split from instances_<split>.json)."""
    if not data.is_dir():
        raise UserError(f"dataset folder not found: {data}; pass a COCO-format folder with --data")
    if annotations is None:
        found = sorted(data.glob("annotations/instances_*.json")) + sorted(data.glob("instances_*.json"))
        if len(found) != 1:
            what = "no instances_*.json" if not found else f"{len(found)} instances_*.json files"
            raise UserError(f"{data}: {what} in the folder or its annotations/; pass --annotations FILE")
        annotations = found[0]
    if not annotations.is_file():
        raise UserError(f"annotations file not found: {annotations}")
    if images is None:
        split = annotations.stem.removeprefix("instances_")
        candidates = [data / split, data / "images" / split, data / "images", data]
        images = next((c for c in candidates if c.is_dir() and any(c.iterdir())), data)
    if not images.is_dir():
        raise UserError(f"image folder not found: {images}")
    return CocoData(annotations, images)


def load_coco(path: Path):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a COCO instances file ({type(exc).__name__}: {exc})") from None


def category_ids(coco, class_names: list[str]) -> dict[int, int]:
    """Model label → dataset category id: by name, or by sorted id when the recipe names no classes."""
    categories = sorted(coco.loadCats(coco.getCatIds()), key=lambda c: c["id"])
    if not class_names:
        return {label: c["id"] for label, c in enumerate(categories)}
    by_name = {c["name"]: c["id"] for c in categories}
    mapping = {label: by_name[name] for label, name in enumerate(class_names) if name in by_name}
    if not mapping:
        shown = ", ".join(list(by_name)[:5])
        raise UserError(f"no class name of the recipe is a dataset category (categories: {shown}, ...)")
    return mapping


def load_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from None


def model_input(image: np.ndarray, recipe: Recipe) -> np.ndarray:
    """One RGB image → the recipe's model input (3, H, W): resize, colour order, (x·scale − mean)/std."""
    spec = recipe.preprocess
    if spec.resize != "stretch":
        raise UserError(f"preprocess.resize '{spec.resize}' is not supported by eval yet (use stretch)")
    x = preprocess(image, recipe.input_size)
    if spec.color == "bgr":
        x = x[::-1]
    mean, std = (np.asarray(v, dtype=np.float32).reshape(3, 1, 1) for v in (spec.mean, spec.std))
    return np.ascontiguousarray((x * spec.scale - mean) / std, dtype=np.float32)


def decoder(recipe: Recipe) -> Callable[[list[np.ndarray], list[tuple[int, int]]], list[Detections]]:
    """How the recipe's outputs become detections: the DAMO-YOLO head modes and thresholds."""
    from exporter.models.damoyolo import head_settings

    if recipe.model.builder != DAMO_BUILDER:
        raise UserError(f"eval supports DAMO-YOLO recipes ({DAMO_BUILDER}); got {recipe.model.builder}")
    settings = head_settings(**recipe.model.kwargs)

    def decode(outputs: list[np.ndarray], image_sizes: list[tuple[int, int]]) -> list[Detections]:
        return postprocess(outputs, input_size=recipe.input_size, image_sizes=image_sizes, **settings)

    return decode


def coco_results(image_id: int, det: Detections, labels_to_ids: dict[int, int]) -> list[dict[str, Any]]:
    """COCO result entries (xywh boxes); labels without a dataset category are dropped."""
    rows = zip(det.boxes.tolist(), det.scores.tolist(), det.labels.tolist(), strict=True)
    return [
        {
            "image_id": image_id,
            "category_id": labels_to_ids[label],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": s,
        }
        for (x1, y1, x2, y2), s, label in rows
        if label in labels_to_ids
    ]


def score(coco, results: list[dict[str, Any]], image_ids: list[int]) -> dict[str, float]:
    """pycocotools bbox evaluation restricted to `image_ids`; no detections at all scores 0."""
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.params.imgIds = image_ids
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {name: float(value) for name, value in zip(METRICS, evaluation.stats, strict=True)}


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]eval[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def evaluate(
    runner,
    recipe: Recipe,
    data: CocoData,
    limit: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run `runner.infer` (one image per call) over the dataset and score the detections."""
    coco = load_coco(data.annotations)
    labels_to_ids = category_ids(coco, recipe.class_names)
    decode = decoder(recipe)
    image_ids = sorted(coco.getImgIds())[:limit]
    results: list[dict[str, Any]] = []
    with progress_bar(console or Console(stderr=True, quiet=True)) as bar:
        for image_id in bar.track(image_ids, description="eval"):
            info = coco.loadImgs(image_id)[0]
            image = load_image(data.images / info["file_name"])
            outputs = runner.infer(model_input(image, recipe)[None])
            (det,) = decode(outputs, [image.shape[:2]])
            results.extend(coco_results(image_id, det, labels_to_ids))
    metrics = score(coco, results, image_ids)
    return {"metrics": metrics, "images": len(image_ids), "detections": len(results)}


def evaluate_run(
    run_dir: Path,
    data: CocoData,
    limit: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate the ONNX model a `build` left in `run_dir` with onnxruntime; writes coco_eval.json there."""
    from exporter.backends import onnxruntime as ort_backend

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(
            f"{run_dir} is not a run directory (no manifest.json); run `reparam-export build` first"
        )
    manifest = json.loads(manifest_path.read_text())
    if "recipe" not in manifest or "artifacts" not in manifest:
        raise UserError(f"{run_dir}: the build did not finish; run `reparam-export build` again")
    recipe = Recipe.model_validate(manifest["recipe"])
    model_path = run_dir / Path(manifest["artifacts"]["onnx"]).name
    if not model_path.is_file():
        raise UserError(f"{model_path} is missing; run `reparam-export build` again")
    report = evaluate(ort_backend.load(model_path), recipe, data, limit, console)
    report.update(model=model_path.name, annotations=str(data.annotations), images_dir=str(data.images))
    write_json(run_dir / "coco_eval.json", report)
    return report
