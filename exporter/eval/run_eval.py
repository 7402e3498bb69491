"""`reparam-export eval`: COCO mAP of the fused torch reference and every built artifact of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporter.artifacts import sha256_file, write_json
from exporter.backends import load_artifact
from exporter.data.coco import load_coco
from exporter.data.transforms import normalize
from exporter.errors import UserError
from exporter.eval.coco_map import evaluate
from exporter.eval.compare import flatten_outputs
from exporter.manifest import read_manifest, run_artifacts
from exporter.recipe import Recipe

DEMO_DATA = "demo"


def run_recipe(run: Path) -> Recipe:
    content = read_manifest(run)
    if "recipe" not in content:
        raise UserError(f"{run} has no finished build; run `reparam-export build` for it first")
    return Recipe.model_validate(content["recipe"])


def head_settings(recipe: Recipe) -> dict:
    """Head mode, reg_max and NMS thresholds from the builder's module (`head_settings(**kwargs)`)."""
    import sys

    from exporter.models.loader import resolve_builder

    module = sys.modules[resolve_builder(recipe.model.builder).__module__]  # import errors: one line
    settings = getattr(module, "head_settings", None)
    if settings is None:
        raise UserError(
            f"eval needs {module.__name__}.head_settings(**kwargs) describing the model's GFL head outputs"
        )
    return settings(**recipe.model.kwargs)


def torch_infer(recipe: Recipe, run: Path):
    from exporter.stages.fuse import load_fused

    model, _ = load_fused(recipe, run / "fused.pt")

    def infer(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [a.astype(np.float32) for a in flatten_outputs(model(torch.from_numpy(batch)))]

    return infer


def evaluation_source(recipe: Recipe, data: str | Path | None = None) -> str | Path:
    """The evaluation dataset: `data`, else the recipe's evaluation.data ('demo': the demo val split)."""
    source = data or recipe.evaluation.data
    if source is None:
        raise UserError("no evaluation data: pass --data or set evaluation.data in the recipe")
    if str(source) == DEMO_DATA:
        from exporter.data.shapes import demo_split

        return demo_split("val")
    return source


class Scorer:
    """The recipe's COCO evaluation for any runner: `scorer(infer, batch)` -> stats (mAP, …) on `data`
    (default evaluation.data; 'demo' is the demo val split), its first `limit` images (default
    evaluation.limit)."""

    def __init__(
        self, recipe: Recipe, data: str | Path | None = None, limit: int | None = None, progress: bool = False
    ):
        self.dataset = load_coco(evaluation_source(recipe, data))
        self.recipe = recipe
        self.settings = head_settings(recipe)
        self.limit = limit or recipe.evaluation.limit
        self.progress = progress

    def _post(self, outputs, sizes, head_mode: str | None = None):
        from exporter.models.damoyolo.postprocess import postprocess

        settings = {**self.settings, **({"head_mode": head_mode} if head_mode else {})}
        return postprocess(outputs, input_size=self.recipe.input_size, image_sizes=sizes, **settings)

    def __call__(self, infer, batch: int, head_mode: str | None = None) -> dict[str, float]:
        """`head_mode` overrides the model's (e.g. 'engine_nms' for end-to-end NMS engines)."""
        recipe = self.recipe
        return evaluate(
            self.dataset,
            infer,
            lambda outputs, sizes: self._post(outputs, sizes, head_mode),
            recipe.input_size,
            lambda p: normalize(p, recipe.preprocess),
            batch,
            self.limit,
            self.progress,
        )


def evaluate_run(
    run: str | Path, data: str | Path | None = None, limit: int | None = None, progress: bool = True
) -> dict[str, Any]:
    run = Path(run)
    recipe = run_recipe(run)
    score = Scorer(recipe, data, limit, progress)
    manifest = read_manifest(run)
    runners = {"torch.fp32": (torch_infer(recipe, run), 8)}
    batch = 8 if recipe.export.dynamic_batch else 1
    artifacts = run_artifacts(run)
    plugin = recipe.tensorrt.plugin_library
    runners.update(
        {key: (load_artifact(key, path, 0, plugin).infer, batch) for key, path in artifacts.items()}
    )
    qdq = manifest["stages"].get("tensorrt.qdq")
    if qdq:  # TensorRT's explicit-INT8 model, run here by onnxruntime's Q/DQ kernels
        runners["tensorrt.qdq (onnxruntime)"] = (
            load_artifact("onnx.int8", run / qdq["output"]["path"]).infer,
            batch,
        )
    from exporter.models.damoyolo.postprocess import ENGINE_NMS

    # end-to-end NMS engines output detections (EfficientNMS_TRT); the Q/DQ ONNX does not
    engines = {k for k in artifacts if k.startswith("tensorrt.")} if recipe.tensorrt.end2end_nms else set()
    results = {
        key: score(infer, size, ENGINE_NMS if key in engines else None)
        for key, (infer, size) in runners.items()
    }
    for key, path in artifacts.items():  # which build was scored (the report ignores older ones)
        results[key]["sha256"] = sha256_file(path)
    report = {
        "data": str(score.dataset.annotations),
        "images": next(iter(results.values()))["images"],
        "results": results,
    }
    write_json(run / "eval.json", report)
    return report
