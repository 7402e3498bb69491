"""`reparam-export eval`: COCO mAP of the fused torch reference and every built artifact of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from exporter.core import host
from exporter.core.artifacts import plain, sha256_file, sha256_json, write_json
from exporter.core.errors import UserError, setting
from exporter.core.rundir import read_manifest, run_artifacts, verified
from exporter.core.workers import in_processes, threads_each
from exporter.data.coco_map import shard_bounds
from exporter.models.heads import Head
from exporter.numerics.parity import flatten_outputs
from exporter.recipe import Recipe
from exporter.stages.reference import load_fused
from exporter.stages.scoring import EvaluationSettings, Scorer
from exporter.targets import TARGETS, load_artifact


def run_recipe(run: Path) -> Recipe:
    content = read_manifest(run)
    if "recipe" not in content:
        raise UserError(f"{run} has no finished build; run `reparam-export build` for it first")
    try:
        return Recipe.model_validate(content["recipe"])
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in ("recipe", *error["loc"]))
        raise UserError(
            f"{Path(run) / 'manifest.json'} is damaged ({field}: {error['msg']}); rebuild the run (build "
            f"with {setting('force')})"
        ) from None


def torch_infer(fused_pt: Path):
    model, _ = load_fused(fused_pt)

    def infer(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [a.astype(np.float32) for a in flatten_outputs(model(torch.from_numpy(batch)))]

    return infer


TORCH = "torch.fp32"  # the fused torch model's label


@dataclass(frozen=True)
class Scored:
    """One model an evaluation scores: its label, file, batch size and head (None: the model's own)."""

    label: str
    path: Path
    batch: int
    head: Head | None = None
    plugin: Path | None = None
    stand_in: bool = False  # a stage's output run on CPU by onnxruntime (TARGETS[...].stand_ins)

    def infer(self, threads: int = 0):
        """A runner's infer(batch) of this model."""
        if self.label == TORCH:
            return torch_infer(self.path)
        if self.stand_in:
            return TARGETS["onnx"].load(self.path, threads=threads).infer
        return load_artifact(self.label, self.path, threads, self.plugin).infer


def detect_shard(settings: EvaluationSettings, model: Scored, start: int, stop: int, threads: int) -> list:
    """`model`'s detections on the scored images [start, stop), in a worker process of its own."""
    torch.set_num_threads(threads)
    return Scorer(settings).detections(model.infer(threads), model.batch, model.head, start, stop)


def score_models(score: Scorer, models: list[Scored], shards: int) -> dict[str, dict[str, Any]]:
    """COCO stats of each model: in this process, or each model's images split into `shards` runs of whole
    batches, each detected in a process of its own (one pool for every model), the detections merged in
    image order and scored once: the same stats, as every batch is the one a single process runs."""
    if shards == 1:
        return {m.label: score(m.infer(), m.batch, m.head) for m in models}
    bounds = {m.label: shard_bounds(score.images, m.batch, shards) for m in models}
    threads = threads_each(shards)
    calls = [(score.settings, m, start, stop, threads) for m in models for start, stop in bounds[m.label]]
    parts = iter(in_processes(detect_shard, calls, shards))
    return {m.label: score.stats([r for _ in bounds[m.label] for r in next(parts)]) for m in models}


INT8_GOAL_POINTS = 0.5  # mAP points an INT8 artifact may lose against the fused FP32 model


def int8_goal(results: dict[str, Any]) -> dict[str, Any]:
    """Per INT8 artifact (and stand-in), its mAP drop against the fused torch model, in points, and
    whether it is within INT8_GOAL_POINTS."""
    reference = results["torch.fp32"]["map"]
    quantized = [key for key in results if "int8" in key or "qdq" in key]  # the Q/DQ model is INT8
    drops = {key: 100 * (reference - results[key]["map"]) for key in quantized}
    return {key: {"drop_points": drop, "met": drop <= INT8_GOAL_POINTS} for key, drop in drops.items()}


def evaluate_run(
    run: str | Path,
    data: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    rescore: bool = False,
    shards: int = 1,
) -> dict[str, Any]:
    """Score the run's fused model, artifacts and CPU stand-ins (TensorRT's Q/DQ model under
    onnxruntime) on `data` (default: the recipe's evaluation data); written to RUN/eval.json. An
    eval.json of the same models, data, scoring settings, libraries and host class is reused
    (`reused`: True) instead of scoring again, unless `rescore`. `shards` > 1 splits each model's images
    over that many local processes (the same stats)."""
    run = Path(run)
    recipe = run_recipe(run)
    artifacts = run_artifacts(run)  # verified, fused.pt with them, before anything is measured
    score = Scorer(EvaluationSettings.from_recipe(recipe, data, limit), progress)
    stages = read_manifest(run)["stages"]
    models = {TORCH: run / "fused.pt", **artifacts}
    for target in TARGETS.values():
        for stage, label in target.stand_ins.items():
            if stage in stages:
                models[label] = verified(run, stages[stage]["output"]["path"])
    digests = {key: sha256_file(path) for key, path in models.items()}
    key = sha256_json(
        {
            "models": digests,
            "data": score.data_sha256,
            "settings": plain(score.settings),
            "libraries": library_versions(),
            "host_class": host.host_class(),  # INT8 kernels, and their last digits, differ by it
        }
    )
    previous = None if rescore else _scored(run / "eval.json", key)
    if previous is not None:
        return {**previous, "reused": True}
    batch = 8 if recipe.export.dynamic_batch else 1
    plugin = recipe.tensorrt.plugin_library
    # end-to-end NMS engines output detections (EfficientNMS_TRT); the Q/DQ ONNX does not
    engines = {k for k in artifacts if k.startswith("tensorrt.")} if recipe.tensorrt.end2end_nms else set()
    engine_head = score.settings.head.engine_nms()
    scored = [Scored(TORCH, run / "fused.pt", 8)]
    scored += [
        Scored(key, path, batch, engine_head if key in engines else None, plugin)
        for key, path in artifacts.items()
    ]
    scored += [
        Scored(label, path, batch, stand_in=True)
        for label, path in models.items()
        if label not in artifacts and label != TORCH
    ]
    results = score_models(score, scored, shards)
    for label in artifacts:  # which build was scored (the report ignores older ones)
        results[label]["sha256"] = digests[label]
    report = {
        "data": str(score.dataset.annotations),
        "data_sha256": score.data_sha256,
        "images": next(iter(results.values()))["images"],
        "category_matching": score.category_matching,
        "results": results,
        "int8_goal": int8_goal(results),
        "key": key,
    }
    write_json(run / "eval.json", report)
    return report


def _scored(path: Path, key: str) -> dict[str, Any] | None:
    """The evaluation in `path` if it was made under `key` (absent, damaged or another: None)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return previous if isinstance(previous, dict) and previous.get("key") == key else None


def library_versions() -> dict[str, str | None]:
    """The versions of the runtimes that score a run (the key of a reusable eval.json)."""
    from importlib import metadata

    found = {}
    for name in ("torch", "onnxruntime", "openvino", "pycocotools"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
