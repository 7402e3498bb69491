"""`reparam-export eval`: COCO mAP of the fused torch reference and every built artifact of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from exporter.core import host
from exporter.core.artifacts import plain, sha256_file, sha256_json, write_json
from exporter.core.errors import UserError, setting
from exporter.core.rundir import read_manifest, run_artifacts, verified
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
) -> dict[str, Any]:
    """Score the run's fused model, artifacts and CPU stand-ins (TensorRT's Q/DQ model under
    onnxruntime) on `data` (default: the recipe's evaluation data); written to RUN/eval.json. An
    eval.json of the same models, data, scoring settings, libraries and host class is reused
    (`reused`: True) instead of scoring again, unless `rescore`."""
    run = Path(run)
    recipe = run_recipe(run)
    artifacts = run_artifacts(run)  # verified, fused.pt with them, before anything is measured
    score = Scorer(EvaluationSettings.from_recipe(recipe, data, limit), progress)
    stages = read_manifest(run)["stages"]
    models = {"torch.fp32": run / "fused.pt", **artifacts}
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
    runners = {"torch.fp32": (torch_infer(run / "fused.pt"), 8)}
    runners.update(
        {key: (load_artifact(key, path, 0, plugin).infer, batch) for key, path in artifacts.items()}
    )
    for label, model in models.items():
        if label not in runners:  # a stand-in
            runners[label] = (TARGETS["onnx"].load(model).infer, batch)
    # end-to-end NMS engines output detections (EfficientNMS_TRT); the Q/DQ ONNX does not
    engines = {k for k in artifacts if k.startswith("tensorrt.")} if recipe.tensorrt.end2end_nms else set()
    engine_head = score.settings.head.engine_nms()
    results = {
        label: score(infer, size, engine_head if label in engines else None)
        for label, (infer, size) in runners.items()
    }
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
