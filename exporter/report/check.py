"""`reparam-export check`: compare a run's metrics with a stored baseline under one-sided tolerances.

The baseline (JSON) holds per artifact the metric values accepted last time. The tolerances (YAML)
say per metric which direction is better and how far it may move the wrong way:
    map:    {better: higher, abs: 0.005}     # fails when map < baseline − 0.005
    p50_ms: {better: lower, rel: 1.0}        # fails when p50_ms > baseline × 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.artifacts import sha256_json, write_json
from exporter.errors import UserError, read_user_file, setting
from exporter.manifest import read_manifest
from exporter.recipe import PATH_FIELDS
from exporter.report.metrics import CHECKABLE


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    better: Literal["higher", "lower"]
    abs: float = Field(0.0, ge=0)
    rel: float = Field(0.0, ge=0)


@dataclass
class Finding:
    artifact: str
    metric: str
    baseline: float
    current: float | None
    limit: float
    regressed: bool


def load_tolerances(path: str | Path) -> dict[str, Tolerance]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tolerances not found: {path}; pass an existing YAML with {setting('tolerances')}")
    data = read_user_file(path, "yaml")
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected a mapping of metric -> {{better, abs, rel}}")
    unknown = ", ".join(sorted(str(name) for name in data if name not in CHECKABLE))
    if unknown:
        raise UserError(
            f"{path}: {unknown} is not a metric (checkable: {', '.join(CHECKABLE)}); fix the name: a "
            "misspelt one would check nothing"
        )
    tolerances = {}
    for metric, spec in data.items():
        try:
            tolerances[metric] = Tolerance.model_validate(spec)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise UserError(f"{path}: {metric}.{'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    return tolerances


ACCURACY = {"map", "map50"}
LATENCY = {"p50_ms", "p90_ms", "p99_ms", "fps"}
# recipe fields that do not change what is measured, or name files (their contents are keyed elsewhere)
NOT_CONDITIONS = {"name", "targets", "precisions", "evaluation", *PATH_FIELDS}


def conditions(run: str | Path, measured: dict[str, Any]) -> dict[str, Any]:
    """What a run's numbers (`measured`: collect(run)) were measured under: the evaluation data (digest of
    what was scored, image count), the benchmark (mode, threads, CPU) and the build (the recipe's
    settings; the checkpoint and calibration images by content, not by path)."""
    manifest = read_manifest(run)
    recipe = flat(manifest.get("recipe", {}))
    stages = manifest["stages"].values()
    fuse = manifest["stages"].get("fuse", {}).get("settings", {})
    calibrated = sorted(
        {d for s in stages for d in ((s.get("settings") or {}).get("calibration") or {}).get("digests", [])}
    )
    build = {
        k: v for k, v in recipe.items() if k not in NOT_CONDITIONS and k.split(".")[0] not in NOT_CONDITIONS
    }
    return {
        "evaluation": {k: measured["eval"].get(k) for k in ("data_sha256", "images")},
        "bench": {k: measured["bench"].get(k) for k in ("mode", "threads", "cpu")},
        "build": {
            **build,
            "checkpoint_sha256": fuse.get("checkpoint_sha256"),
            "calibration_sha256": sha256_json(calibrated) if calibrated else None,  # the images' contents
        },
    }


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted names ('calibration.count')."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        out.update(flat(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return out


def require_same_conditions(
    path: Path, recorded: object, current: dict[str, Any], run: str | Path, metrics: set[str]
) -> None:
    """Numbers are compared only when measured alike: the same evaluation data for mAP, the same benchmark
    for latency, the same build for both; a difference is bad input naming both sides."""
    if not isinstance(recorded, dict) or not all(
        isinstance(recorded.get(k), dict) for k in ("evaluation", "bench", "build")
    ):
        raise UserError(
            f"{path} records not what its numbers were measured under (evaluation data, benchmark, build); "
            f"recreate it with {setting('update_baseline')}"
        )
    parts = [("build", "the build")]
    if metrics & ACCURACY:
        parts.append(("evaluation", "the evaluation data (eval.json)"))
    if metrics & LATENCY:
        parts.append(("bench", "the benchmark (bench.json)"))
    for part, what in parts:
        differ = sorted(
            k for k in {*recorded[part], *current[part]} if recorded[part].get(k) != current[part].get(k)
        )
        if differ:
            sides = "; ".join(
                f"{k}: baseline {recorded[part].get(k)!r}, run {current[part].get(k)!r}" for k in differ[:3]
            )
            raise UserError(
                f"{run} and {path} differ in {what} ({sides}): their numbers are not comparable; measure the "
                f"run as the baseline was, or accept it with {setting('update_baseline')}"
            )


def load_baseline(path: str | Path, run: str | Path, measured: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The baseline's metrics; a baseline recorded for another model than `run`'s, or under other
    conditions, is bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"baseline not found: {path}; create one with {setting('update_baseline')}")
    data = read_user_file(path, "json")
    try:
        metrics = data["metrics"]
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise TypeError("metrics must map artifact -> {metric: value}")
        values = {a: {m: _finite(f"{a}.{m}", v) for m, v in ms.items()} for a, ms in metrics.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a baseline file ({type(exc).__name__}: {exc})") from None
    recorded, model = data.get("model"), measured["model"]
    if recorded is None:
        raise UserError(
            f"{path} records no 'model', so it could be any model's baseline; recreate it with "
            f"{setting('update_baseline')}"
        )
    if recorded != model:
        raise UserError(
            f"{path} is the baseline of '{recorded}', not of {run} ('{model}'); pass that run's baseline"
        )
    checked = {m for ms in values.values() for m in ms}
    require_same_conditions(path, data.get("conditions"), conditions(run, measured), run, checked)
    return values


def _finite(name: str, value: object) -> float:
    """A baseline value: a finite number (NaN would make its check pass forever)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    return float(value)


def current_metrics(measured: dict[str, Any], names: list[str]) -> dict[str, dict[str, float]]:
    """Per artifact, the measured values of `names` (`measured`: collect(run))."""
    return {row["artifact"]: {m: row[m] for m in names if row.get(m) is not None} for row in measured["rows"]}


def compare(baseline: dict, current: dict, tolerances: dict[str, Tolerance]) -> list[Finding]:
    """Each baseline metric a tolerance names; a current value missing or not a finite number regresses."""
    findings = []
    for artifact, values in baseline.items():
        for metric, base in values.items():
            tolerance = tolerances.get(metric)
            if tolerance is None:
                continue
            slack = tolerance.abs + tolerance.rel * abs(base)
            limit = base - slack if tolerance.better == "higher" else base + slack
            now = current.get(artifact, {}).get(metric)  # collect made a damaged measurement NaN
            regressed = (
                now is None
                or not math.isfinite(now)
                or (now < limit if tolerance.better == "higher" else now > limit)
            )
            findings.append(Finding(artifact, metric, base, now, limit, regressed))
    return findings


def update_baseline(
    run: str | Path, path: str | Path, tolerances: dict[str, Tolerance], measured: dict[str, Any]
) -> dict:
    """Write the run's values of the tolerated metrics (`measured`: collect(run)) and their conditions."""
    metrics = current_metrics(measured, list(tolerances))
    if not any(metrics.values()):
        raise UserError(
            f"{run} has no measured {', '.join(tolerances)}; run `reparam-export eval` and `bench` on it "
            f"first (the baseline {path} was left as it is)"
        )
    write_json(
        path, {"model": measured["model"], "conditions": conditions(run, measured), "metrics": metrics}
    )
    return metrics
