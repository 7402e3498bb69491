"""`reparam-export eval`: COCO mAP of the fused torch reference and every built artifact of a run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from rich.console import Console

from exporter.base import host
from exporter.base.artifacts import sha256_file, write_json
from exporter.base.data.coco_map import shard_bounds
from exporter.base.errors import UserError, setting
from exporter.base.numerics.parity import flatten_outputs
from exporter.base.rundir import RunDir, read_manifest, run_artifacts, verified
from exporter.base.workers import LazyPool, threads_each
from exporter.models.heads import Head
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages.graph import Call, Node, Record, fixed
from exporter.pipeline.stages.reference import load_fused
from exporter.pipeline.stages.runner import Runner
from exporter.pipeline.stages.scoring import EvaluationSettings, Scorer
from exporter.pipeline.targets.table import TARGETS, artifact_target, load_artifact, unmeasured_here


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
    section: Any = None  # its target's recipe section (the runtime reads it: a plugin library)
    stand_in: bool = False  # a stage's output run on CPU by onnxruntime (TARGETS[...].stand_ins)

    def infer(self, threads: int = 0):
        """A runner's infer(batch) of this model."""
        if self.label == TORCH:
            return torch_infer(self.path)
        if self.stand_in:
            return TARGETS["onnx"].load(self.path, threads=threads).infer
        return load_artifact(self.label, self.path, threads, self.section).infer


def detect_shard(settings: EvaluationSettings, model: Scored, start: int, stop: int, threads: int) -> list:
    """`model`'s detections on the scored images [start, stop), in a worker process of its own."""
    torch.set_num_threads(threads)
    scorer = Scorer(settings, kept_bytes=0)  # one model
    return scorer.detections(model.infer(threads), model.batch, model.head, start, stop)


def score_model(score: Scorer, model: Scored, pool: LazyPool) -> dict[str, Any]:
    """COCO stats of a model: in this process, or its images split into `pool.workers` runs of whole
    batches, each detected in a process of the pool, the detections merged in image order and scored once:
    the same stats, as every batch is the one a single process runs."""
    if pool.workers == 1:
        return score(model.infer(), model.batch, model.head)
    threads = threads_each(pool.workers)
    calls = [
        (score.settings, model, a, b, threads)
        for a, b in shard_bounds(score.images, model.batch, pool.workers)
    ]
    return score.stats([record for part in pool(detect_shard, calls) for record in part])


INT8_GOAL_POINTS = 0.5  # mAP points an INT8 artifact may lose against the fused FP32 model


def int8_goal(results: dict[str, Any]) -> dict[str, Any]:
    """Per INT8 artifact (and stand-in), its mAP drop against the fused torch model, in points, and
    whether it is within INT8_GOAL_POINTS."""
    reference = results["torch.fp32"]["map"]
    quantized = [key for key in results if "int8" in key or "qdq" in key]  # the Q/DQ model is INT8
    drops = {key: 100 * (reference - results[key]["map"]) for key in quantized}
    return {key: {"drop_points": drop, "met": drop <= INT8_GOAL_POINTS} for key, drop in drops.items()}


@dataclass(frozen=True)
class ScoreRecord(Record):
    """One model's COCO stats on the evaluation's images (RUN/scores/<label>.json)."""

    label: str
    images: int
    map: float  # mAP@[.5:.95]

    def describe(self) -> str:
        return f"mAP {self.map:.4f} on {self.images} images"


@dataclass(frozen=True)
class EvaluationRecord(Record):
    images: int
    maps: dict[str, float]  # mAP@[.5:.95] by model label

    def describe(self) -> str:
        scored = ", ".join(f"{label} {value:.4f}" for label, value in self.maps.items())
        return f"mAP on {self.images} images: {scored}"


SCORED = "eval."  # a model's scoring stage: 'eval.torch.fp32', 'eval.openvino.int8', …


def scores_file(label: str) -> str:
    """A model's scores in its run: 'scores/torch.fp32.json', 'scores/tensorrt.qdq_onnxruntime.json'."""
    return f"scores/{re.sub(r'[^A-Za-z0-9.]+', '_', label).strip('_')}.json"


def evaluation(
    run: str | Path,
    data: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    pool: LazyPool | None = None,
) -> Node:
    """The run's evaluation as a stage: the fused model, artifacts and CPU stand-ins (TensorRT's Q/DQ model
    under onnxruntime) scored on `data` (default: the recipe's evaluation data) into RUN/eval.json. Each
    model is a stage of its own upstream of it (SCORED + its label), keyed by the model's file, the data's
    contents (images by content), the scoring settings, the libraries and the host class (INT8 kernels,
    and their last digits, differ by it): a model scored before is not scored again (a second `build
    --target` scores only what it adds). `pool` (a LazyPool of more than one worker) splits each model's
    images over its processes (the same stats, so not in the key); none: this process scores them."""
    run = Path(run)
    pool = pool or LazyPool(1)
    recipe = run_recipe(run)
    artifacts = run_artifacts(run)  # verified, fused.pt with them, before anything is measured
    skipped = unmeasured_here(artifacts)  # computed in bf16 on a CPU without: never scored as f32
    artifacts = {key: path for key, path in artifacts.items() if key not in skipped}
    score = Scorer(EvaluationSettings.from_recipe(recipe, data, limit), progress)
    stages = read_manifest(run)["stages"]
    models = {TORCH: run / "fused.pt", **artifacts}
    for target in TARGETS.values():
        for stage, label in target.stand_ins.items():
            if stage in stages:
                models[label] = verified(run, stages[stage]["output"]["path"])
    batch = 8 if recipe.export.dynamic_batch else 1
    sections = {key: artifact_target(key).settings(recipe) for key in artifacts}
    scoring = {"scoring": score.settings, "data_sha256": score.data_sha256}

    def versions() -> dict[str, str]:
        return {**library_versions(), "host_class": host.host_class()}

    def scored(label: str, path: Path) -> Node:
        section = sections.get(label)
        # artifacts with NMS inside output detections (a stand-in, the Q/DQ ONNX run on CPU, does not)
        nms = label in artifacts and artifact_target(label).detections(section)
        model = Scored(
            label,
            path,
            8 if label == TORCH else batch,
            score.settings.head.engine_nms() if nms else None,
            section,
            stand_in=label not in artifacts and label != TORCH,
        )

        def run_scoring(call: Call) -> ScoreRecord:
            stats = score_model(score, model, pool)
            write_json(
                call.output, {"label": label, "sha256": sha256_file(call.inputs["model"]), "stats": stats}
            )
            return ScoreRecord(label, score.images, stats["map"])

        settings = {
            **scoring,
            "label": label,
            "batch": model.batch,
            "engine_nms": nms,
            "section": section.model_dump(mode="json") if section is not None else None,
        }
        return Node(
            SCORED + label,
            scores_file(label),
            run_scoring,
            ScoreRecord,
            fixed(settings),
            files={"model": path},
            versions=versions,
        )

    def run_evaluation(call: Call) -> EvaluationRecord:
        found = {label: json.loads(call.inputs[label].read_text()) for label in models}
        results = {label: each["stats"] for label, each in found.items()}
        for label in artifacts:  # which build was scored (the report ignores older ones)
            results[label]["sha256"] = found[label]["sha256"]
        report = {
            "data": str(score.dataset.annotations),
            "data_sha256": score.data_sha256,
            "images": score.images,
            "category_matching": score.category_matching,
            "results": results,
            "int8_goal": int8_goal(results),
            "not_measured": skipped,
        }
        write_json(call.output, report)
        return EvaluationRecord(score.images, {label: r["map"] for label, r in results.items()})

    return Node(
        "eval",
        "eval.json",
        run_evaluation,
        EvaluationRecord,
        fixed({**scoring, "not_measured": skipped}),
        reads={label: scored(label, path) for label, path in models.items()},
        versions=versions,
    )


def evaluate_run(
    run: str | Path,
    data: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    rescore: bool = False,
    shards: int = 1,
) -> dict[str, Any]:
    """Run the run's `evaluation` stage (each model's images split over `shards` local processes) and
    return eval.json's report, with `reused`: the models whose scores were found from before (all of
    them unless `rescore`, where the same files were scored under the same key)."""
    runner = Runner(RunDir(run), rescore, Console(stderr=True, quiet=True), lambda line: None)
    with LazyPool(shards) as pool:
        result = runner.result(evaluation(run, data, limit, progress, pool))
    reused = [r.record.label for r in runner.results.values() if r.name.startswith(SCORED) and r.cached]
    return {**json.loads(result.output.read_text()), "reused": reused}


def library_versions() -> dict[str, str]:
    """The versions of the runtimes that score a run beyond those every stage's key holds."""
    from importlib import metadata

    found = {}
    for name in ("openvino", "faster-coco-eval"):  # beside those every stage's key holds
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
