"""Collect a run's measurements into one table: per artifact mAP, latency, size, error vs FP32."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from exporter.base.artifacts import sha256_json
from exporter.base.errors import UserError
from exporter.base.rundir import read_manifest, run_artifacts


def _read(path: Path) -> dict[str, Any]:
    """A JSON record of the run (eval.json, bench.json, …); absent → empty, damaged → bad input."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is damaged (not JSON); delete it and measure again") from None


def _number(value: Any) -> float | None:
    """A measurement read from a record: absent is None, anything but a number (a damaged record) NaN,
    which the report shows and the regression check fails."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return math.nan


def versions(stages: dict[str, Any]) -> dict[str, str]:
    """The versions of this package and of every library the run's stages recorded."""
    found: dict[str, str] = {}
    for stage in stages.values():
        found.update(stage.get("versions") or {})
    return dict(sorted(found.items()))


def _stage_of(key: str, artifact: str | None, stages: dict[str, Any]) -> dict[str, Any]:
    """The stage that wrote an artifact (found by its output path; by name in older manifests)."""
    written = [s for s in stages.values() if artifact and s.get("output", {}).get("path") == artifact]
    return written[0] if written else stages.get(key, {})


CHECKABLE = ("map", "map50", "p50_ms", "p90_ms", "p99_ms", "fps", "bytes", "max_abs_err")  # numbers per row


def collect(run: str | Path) -> dict[str, Any]:
    run = Path(run)
    manifest = read_manifest(run)
    run_artifacts(run)  # numbers of a changed or damaged artifact are not reported
    stages = manifest.get("stages", {})
    evaluation, bench = _read(run / "eval.json"), _read(run / "bench.json")
    artifacts = manifest.get("artifacts", {})
    rows, stale = [], []
    reference = "fuse" in stages or "torch.fp32" in evaluation.get("results", {})  # fused.pt, the torch model
    for key in [*(["torch.fp32"] if reference else []), *artifacts]:
        backend, _, precision = key.partition(".")
        stage = _stage_of(key, artifacts.get(key), stages)
        check = stage.get("check") or {}
        output = stage.get("output") or {}
        accuracy = evaluation.get("results", {}).get(key, {})
        timing = bench.get("results", {}).get(key, {})
        for name, measured in (("eval.json", accuracy), ("bench.json", timing)):
            if measured.get("sha256") not in (None, output.get("sha256")):  # measured an older build
                stale.append(f"{name}: {key}")
                measured.clear()
        rows.append(
            {
                "artifact": key,
                "backend": backend,
                "precision": precision,
                "map": _number(accuracy.get("map")),
                "map50": _number(accuracy.get("map50")),
                "p50_ms": _number(timing.get("p50_ms")),
                "p90_ms": _number(timing.get("p90_ms")),
                "p99_ms": _number(timing.get("p99_ms")),
                "fps": _number(timing.get("fps_batch1")),
                "bytes": sum(f["bytes"] for f in [output, *output.get("companions", [])]) if output else None,
                "max_abs_err": _number(check.get("max_abs_err")),
                "settings_sha256": sha256_json(stage.get("settings")) if stage.get("settings") else None,
                "samples_ms": timing.get("samples_ms", []),
                "calls": timing.get("iterations"),
                "throughput_fps": _number(timing.get("throughput_fps")),
                "plain_consumer": stage.get("plain_consumer"),
                "inference_hint": (stage.get("runtime") or {}).get("INFERENCE_PRECISION_HINT"),
                "precise": stage.get("precise"),
            }
        )
    fuse = (stages.get("fuse") or {}).get("check", {})
    searches = {
        name.partition(".")[0]: {
            k: v for k, v in stage.items() if k not in ("inputs", "settings", "versions")
        }
        for name, stage in stages.items()
        if name.endswith(".int8_search")
    }
    model = manifest.get("recipe", {}).get("model", {})
    return {
        "model": manifest.get("recipe", {}).get("name", run.name),
        "head_mode": (model.get("kwargs") or {}).get("head_mode"),
        "checkpoint": model.get("checkpoint"),
        "recipe_hash": manifest.get("recipe_hash"),
        "rows": rows,
        "fused": {
            "params_before": fuse.get("params_before"),
            "params_after": fuse.get("params_after"),
            "gflops": (stages.get("fuse") or {}).get("gflops"),
            "not_fused": fuse.get("not_fused", []),
        },
        "not_lowered": sorted(
            {line for s in stages.values() for line in (s.get("akconv") or {}).get("not_lowered", [])}
        ),
        "stage_seconds": {name: s.get("wall_s") for name, s in stages.items()},
        "eval": {k: evaluation.get(k) for k in ("data", "data_sha256", "images", "not_measured")}
        if evaluation
        else {},
        "int8_goal": evaluation.get("int8_goal", {}),
        "bench": {k: bench.get(k) for k in ("mode", "threads", "cpu", "not_measured")} if bench else {},
        "bench_load": bench.get("load"),
        "versions": versions(stages),
        "sensitivity": _read(run / "sensitivity.json").get("layers", []),
        "int8_search": searches,
        "deferred": manifest.get("deferred") or {},  # target -> what builds its artifacts elsewhere
        "stale": stale,
    }
