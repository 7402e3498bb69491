"""The Python API: `exporter.build(...)` builds, evaluates and times a model as the CLI does and returns
what it made as typed values; `exporter.read_run(folder)` reads the same values from any run.

    import exporter

    run = exporter.build(targets=["openvino"], precisions=["fp32", "int8"], calib_data="demo",
                         eval_data="demo", eval_limit=100, bench=True)
    run.proof.ok, run.artifacts["openvino.int8"].map, run.artifacts["openvino.int8"].latency_ms
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from exporter.base.rundir import read_manifest, run_artifacts
from exporter.pipeline.recipe import Recipe, recipe_from_dict, resolve_recipe


@dataclass(frozen=True)
class Check:
    """A numeric check against the fused model: `ok` where within `tolerance`; `ratio` = error/tolerance.
    FP16 and INT8 artifacts record their error (`ok` says only that it was measured)."""

    ok: bool
    max_abs_err: float | None
    tolerance: float | None
    ratio: float | None

    @classmethod
    def of(cls, record: dict[str, Any]) -> Check:
        return cls(
            bool(record["ok"]), record.get("max_abs_err"), record.get("tolerance"), record.get("ratio")
        )


@dataclass(frozen=True)
class Artifact:
    key: str  # "<target>.<precision>", e.g. "openvino.int8"
    path: Path
    sha256: str
    check: Check | None  # against the fused model, as its stage checked it
    map: float | None  # COCO mAP@[.5:.95] (0–1) of this very file, where the run was evaluated
    map50: float | None
    latency_ms: float | None  # batch-1 median of this very file, where the run was benchmarked


@dataclass(frozen=True)
class Run:
    root: Path
    recipe: Recipe
    proof: Check  # the fusion, proved in float64
    artifacts: dict[str, Artifact]
    torch_map: float | None  # the fused torch model's mAP on the same data, where evaluated
    deferred: dict[str, str]  # target -> why its artifacts were not built here (a bundle builds them)


def build(
    model: str | os.PathLike | Recipe | None = None,
    *,
    targets: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    calib_data: str | os.PathLike | None = None,
    eval_data: str | os.PathLike | None = None,
    eval_limit: int | None = None,
    bench: bool = False,
    settings: dict[str, Any] | None = None,
    trust: Sequence[str] = (),
    run_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = False,
) -> Run:
    """Build `model` as `reparam-export build` does (same stages, cache and artifacts), then evaluate it
    where there is evaluation data and time it where `bench`.

    `model`: a recipe file (.yaml), a builder ('package.module:function'), a checkpoint, a Recipe, or
    None for the embedded demo. `settings`: further recipe fields by dotted name, e.g.
    {"calibration.count": 64, "int8.accuracy_budget": 0.5}. `trust`: modules a checkpoint may import.
    `progress`: print each stage's line to stderr, as the CLI does."""
    from exporter.pipeline.bench import bench_run
    from exporter.pipeline.builder import Pipeline

    overrides = dict(settings or {})
    given = {
        "targets": list(targets) if targets is not None else None,
        "precisions": list(precisions) if precisions is not None else None,
        "calibration.source": str(calib_data) if calib_data is not None else None,
        "evaluation.data": str(eval_data) if eval_data is not None else None,
        "evaluation.limit": eval_limit,
        "model.trust": list(trust) or None,
    }
    overrides.update({field: value for field, value in given.items() if value is not None})
    recipe = _recipe(model, overrides)
    pipeline = Pipeline(recipe, run_dir, force=force, console=Console(stderr=True, quiet=not progress))
    pipeline.build()  # evaluated too, where the recipe names evaluation data
    root = pipeline.run.root
    if bench:
        bench_run(root)
    return read_run(root)


def _recipe(model: str | os.PathLike | Recipe | None, overrides: dict[str, Any]) -> Recipe:
    if isinstance(model, Recipe):
        return recipe_from_dict(model.model_dump(mode="json"), f"recipe {model.name}", overrides)
    if model is not None and Path(model).suffix in (".yaml", ".yml"):
        return resolve_recipe(model, None, overrides)
    return resolve_recipe(None, str(model) if model is not None else None, overrides)


def read_run(root: str | os.PathLike) -> Run:
    """A built run's results, read from its folder: artifacts verified against the manifest's hashes;
    mAP and latency only where eval.json and bench.json measured these very files."""
    from exporter.pipeline.evaluate import run_recipe

    root = Path(root)
    manifest = read_manifest(root)
    stages = manifest["stages"]
    paths = run_artifacts(root)
    scored = _results(root / "eval.json")
    timed = _results(root / "bench.json")
    artifacts = {}
    for key, path in paths.items():
        stage = next(s for s in stages.values() if (root / s["output"]["path"]) == path)
        sha256 = stage["output"]["sha256"]
        score = scored.get(key) if scored.get(key, {}).get("sha256") == sha256 else None
        latency = timed.get(key) if timed.get(key, {}).get("sha256") == sha256 else None
        artifacts[key] = Artifact(
            key,
            path,
            sha256,
            Check.of(stage["check"]) if stage.get("check") else None,
            score["map"] if score else None,
            score["map50"] if score else None,
            latency["p50_ms"] if latency else None,
        )
    torch = scored.get("torch.fp32")
    return Run(
        root,
        run_recipe(root),
        Check.of(stages["fuse"]["check"]["model_parity"]),
        artifacts,
        torch["map"] if torch else None,
        {target: entry["reason"] for target, entry in manifest.get("deferred", {}).items()},
    )


def _results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["results"] if path.is_file() else {}
