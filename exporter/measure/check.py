"""`reparam-export check`: compare a run's metrics with a stored baseline under one-sided tolerances.

The baseline (JSON) holds per artifact the metric values accepted last time. The tolerances (YAML)
say per metric which direction is better and how far it may move the wrong way:
    map:    {better: higher, abs: 0.005}     # fails when map < baseline − 0.005
    p50_ms: {better: lower, rel: 1.0}        # fails when p50_ms > baseline × 2

Nothing passes unseen: a baseline metric no tolerance names, an artifact the baseline has and the run
lacks (or the other way round), and a value the run did not measure (no eval.json, a measurement of an
earlier build) are findings that fail, each with its cause; the first three pass only where the caller
allows them (Allow), and are then listed as skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.base.artifacts import sha256_json, write_json
from exporter.base.errors import UserError, read_user_file, setting
from exporter.base.rundir import in_run, read_manifest
from exporter.measure.report.metrics import CHECKABLE, collect
from exporter.pipeline.recipe import PATH_FIELDS, Recipe


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    better: Literal["higher", "lower"]
    abs: float = Field(0.0, ge=0)
    rel: float = Field(0.0, ge=0)


# statuses of a finding; every one but OK fails the check unless allowed
OK, REGRESSED, NOT_MEASURED = "ok", "REGRESSED", "NOT MEASURED"
MISSING, NEW, NO_TOLERANCE = "MISSING ARTIFACT", "NEW ARTIFACT", "NO TOLERANCE"


@dataclass(frozen=True)
class Allow:
    """What the caller accepts as skipped instead of failed."""

    untoleranced: bool = False  # baseline metrics no tolerance names
    new_artifacts: bool = False  # artifacts of the run the baseline lacks
    missing_artifacts: bool = False  # artifacts of the baseline the run lacks

    def allows(self, status: str) -> bool:
        return {
            NO_TOLERANCE: self.untoleranced,
            NEW: self.new_artifacts,
            MISSING: self.missing_artifacts,
        }.get(status, False)


@dataclass
class Finding:
    artifact: str
    metric: str | None  # None: about the artifact itself (missing from the run, or new)
    baseline: float | None
    current: float | None
    limit: float | None
    status: str = OK
    why: str = ""  # the cause of anything but OK, and what to do
    skipped: bool = False  # allowed: reported, not failed

    @property
    def failed(self) -> bool:
        return self.status != OK and not self.skipped

    @property
    def name(self) -> str:
        return self.artifact if self.metric is None else f"{self.artifact}.{self.metric}"


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


def section_defaults() -> dict[str, Any]:
    """Each setting of the recipe's sections at its default, by dotted name ('openvino.bf16_for')."""
    return flat(
        {
            name: field.default.model_dump(mode="json")
            for name, field in Recipe.model_fields.items()
            if isinstance(field.default, BaseModel)
        }
    )


def require_same_conditions(
    path: Path, recorded: object, current: dict[str, Any], run: str | Path, metrics: set[str]
) -> None:
    """Numbers are compared only when measured alike: the same evaluation data for mAP, the same benchmark
    for latency, the same build for both; a difference is bad input naming both sides. A run that has
    not measured a side (no eval.json, no bench.json) is not compared on it: its values are missing,
    which `compare` reports with that cause."""
    if not isinstance(recorded, dict) or not all(
        isinstance(recorded.get(k), dict) for k in ("evaluation", "bench", "build")
    ):
        raise UserError(
            f"{path} records not what its numbers were measured under (evaluation data, benchmark, build); "
            f"recreate it with {setting('update_baseline')}"
        )
    parts = [("build", "the build")]
    if metrics & ACCURACY and any(v is not None for v in current["evaluation"].values()):
        parts.append(("evaluation", "the evaluation data (eval.json)"))
    if metrics & LATENCY and any(v is not None for v in current["bench"].values()):
        parts.append(("bench", "the benchmark (bench.json)"))
    for part, what in parts:
        # a setting one side predates compares as its default
        default = section_defaults() if part == "build" else {}
        was, now = {**default, **recorded[part]}, {**default, **current[part]}
        differ = sorted(k for k in {*was, *now} if was.get(k) != now.get(k))
        if differ:
            sides = "; ".join(f"{k}: baseline {was.get(k)!r}, run {now.get(k)!r}" for k in differ[:3])
            raise UserError(
                f"{run} and {path} differ in {what} ({sides}): their numbers are not comparable; measure the "
                f"run as the baseline was, or accept it with {setting('update_baseline')}"
            )


def is_matrix(path: str | Path) -> bool:
    """Whether `path` is a matrix's output folder (its matrix.json) rather than a run directory."""
    return (Path(path) / "matrix.json").is_file()


def matrix_runs(root: Path) -> dict[str, Path]:
    """Each model of a matrix's folder that built, by name: its run directory under `root`."""
    summary = root / "matrix.json"
    try:
        cells = read_user_file(summary, "json")["cells"]
        built = {
            c["model"]: in_run(root, Path(c["run"]).name)
            for c in cells
            if c["status"] in ("built", "deferred")
        }
    except (KeyError, TypeError) as exc:
        raise UserError(
            f"{summary}: not a matrix summary ({type(exc).__name__}: {exc}); run the matrix again"
        ) from None
    if not built:
        raise UserError(f"{summary} has no model that built; nothing to check")
    return built


def load_baseline(path: str | Path, run: str | Path, measured: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The baseline's metrics; a baseline recorded for another model than `run`'s, or under other
    conditions, is bad input."""
    path = Path(path)
    return baseline_values(read_baseline(path), path, run, measured)


def read_baseline(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"baseline not found: {path}; create one with {setting('update_baseline')}")
    data = read_user_file(path, "json")
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a baseline file (a JSON object)")
    return data


def matrix_baselines(path: str | Path) -> dict[str, dict[str, Any]]:
    """A matrix baseline's entry per model (each a run's baseline)."""
    path = Path(path)
    models = read_baseline(path).get("matrix")
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise UserError(
            f"{path} is not a matrix's baseline (no 'matrix' of model -> baseline); create one with "
            f"{setting('update_baseline')} on the matrix's folder"
        )
    return models


def baseline_values(
    data: dict[str, Any], path: Path, run: str | Path, measured: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """The metrics of a run's baseline `data` (read from `path`), once it is the same model's, measured
    under the same conditions."""
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


MEASURED_BY = {
    **{m: ("eval.json", "eval") for m in ACCURACY},
    **{m: ("bench.json", "bench") for m in LATENCY},
}


def not_measured(measured: dict[str, Any], artifact: str, metric: str) -> str:
    """Why the run has no value of `metric` for `artifact` (`measured`: collect(run)), and what to do."""
    source = MEASURED_BY.get(metric)
    if source is None:
        return "the run's manifest records no such value for it; build it again"
    record, command = source
    if f"{record}: {artifact}" in measured["stale"]:
        return f"{record} measured an earlier build of it; run `reparam-export {command}` again"
    if not measured[command]:
        return f"the run has no {record}; run `reparam-export {command}` on it"
    return f"{record} has no {metric} for it; run `reparam-export {command}` again"


def compare(
    baseline: dict, measured: dict[str, Any], tolerances: dict[str, Tolerance], allow: Allow = Allow()
) -> list[Finding]:
    """Every baseline metric against the run (`measured`: collect(run)), and every artifact of either
    side the other lacks: a value beyond its limit or not a finite number regresses; a value the run did
    not measure, a metric without tolerance and an artifact on one side only fail with their cause, the
    last two unless `allow`ed."""
    current = current_metrics(measured, list(CHECKABLE))
    findings = []
    for artifact, values in baseline.items():
        if artifact not in current:
            why = (
                "the baseline has it and the run does not: build it, or accept with --allow-missing-artifacts"
            )
            findings.append(Finding(artifact, None, None, None, None, MISSING, why))
            continue
        for metric, base in values.items():
            tolerance = tolerances.get(metric)
            if tolerance is None:
                why = f"no tolerance names {metric}: add one, or accept with --allow-untoleranced"
                findings.append(Finding(artifact, metric, base, None, None, NO_TOLERANCE, why))
                continue
            slack = tolerance.abs + tolerance.rel * abs(base)
            limit = base - slack if tolerance.better == "higher" else base + slack
            now = current[artifact].get(metric)  # collect made a damaged measurement NaN
            if now is None:
                why = not_measured(measured, artifact, metric)
                findings.append(Finding(artifact, metric, base, None, limit, NOT_MEASURED, why))
                continue
            worse = not math.isfinite(now) or (now < limit if tolerance.better == "higher" else now > limit)
            why = ("not a number" if not math.isfinite(now) else "beyond its limit") if worse else ""
            findings.append(Finding(artifact, metric, base, now, limit, REGRESSED if worse else OK, why))
    for artifact in current:
        if artifact not in baseline:
            why = "the run has it and the baseline does not: --update-baseline, or --allow-new-artifacts"
            findings.append(Finding(artifact, None, None, None, None, NEW, why))
    for finding in findings:
        finding.skipped = allow.allows(finding.status)
    return findings


def verdict(findings: list[Finding]) -> str:
    """What failed, by status ("1 of 5 metrics regressed beyond their tolerance; 1 not measured")."""
    metrics = [f for f in findings if f.metric is not None and f.status in (OK, REGRESSED)]
    failed = [f for f in findings if f.failed]
    parts = []
    regressed = [f for f in failed if f.status == REGRESSED]
    if regressed:
        parts.append(f"{len(regressed)} of {len(metrics)} metrics regressed beyond their tolerance")
    for status in (NOT_MEASURED, NO_TOLERANCE, MISSING, NEW):
        named = [f.name for f in failed if f.status == status]
        if named:
            parts.append(f"{status.lower()}: {', '.join(named)}")
    return "; ".join(parts)


def summary_line(findings: list[Finding], conditions_: dict[str, Any]) -> str:
    """A passing check's last line: what was checked, what was skipped (named), under which conditions."""
    checked = [f for f in findings if f.status == OK]
    skipped = [f for f in findings if f.skipped]
    named = f" ({', '.join(f'{f.name}: {f.status.lower()}' for f in skipped)})" if skipped else ""
    evaluation, bench = conditions_["evaluation"], conditions_["bench"]
    where = []
    if evaluation.get("data_sha256"):
        where.append(f"evaluation data {evaluation['data_sha256'][:12]} ({evaluation['images']} images)")
    if bench.get("cpu"):
        where.append(f"bench {bench['mode']}, {bench['threads']} threads on {bench['cpu']}")
    build = conditions_["build"]
    where.append(
        f"build {sha256_json(build)[:12]} ({build.get('model.builder') or build.get('model.checkpoint')})"
    )
    return f"{len(checked)} metrics checked, {len(skipped)} skipped{named}; under {'; '.join(where)}"


def baseline_of(
    run: str | Path, tolerances: dict[str, Tolerance], measured: dict[str, Any]
) -> dict[str, Any]:
    """A run's baseline: its values of the tolerated metrics (`measured`: collect(run)) and their
    conditions."""
    metrics = current_metrics(measured, list(tolerances))
    if not any(metrics.values()):
        raise UserError(
            f"{run} has no measured {', '.join(tolerances)}; run `reparam-export eval` and `bench` on it "
            "first (the baseline was left as it is)"
        )
    return {"model": measured["model"], "conditions": conditions(run, measured), "metrics": metrics}


def update_baseline(
    run: str | Path, path: str | Path, tolerances: dict[str, Tolerance], measured: dict[str, Any]
) -> dict:
    """Write the run's baseline (baseline_of) to `path`; returns its metrics."""
    entry = baseline_of(run, tolerances, measured)
    write_json(path, entry)
    return entry["metrics"]


def check_matrix(
    root: Path, path: Path, tolerances: dict[str, Tolerance], allow: Allow, update: bool
) -> tuple[list[Finding], str]:
    """Each model of a matrix (matrix_runs(root)) against its entry in the matrix baseline at `path`, its
    findings named '<model>/<artifact>', a model on one side only a finding of its own; or, with
    `update`, the baseline written from every model. Returns the findings and the summary line."""
    runs = matrix_runs(root)
    measured = {model: collect(run) for model, run in runs.items()}  # every run verified before anything
    if update:
        entries = {model: baseline_of(run, tolerances, measured[model]) for model, run in runs.items()}
        write_json(path, {"matrix": entries})
        return [], f"baseline updated: {path} ({len(entries)} models)"
    expected = matrix_baselines(path)
    findings, lines = [], []
    for model, run in runs.items():
        if model not in expected:
            why = "the matrix built it and the baseline has none: --update-baseline, or --allow-new-artifacts"
            findings.append(Finding(model, None, None, None, None, NEW, why, allow.new_artifacts))
            continue
        values = baseline_values(expected[model], path, run, measured[model])
        found = compare(values, measured[model], tolerances, allow)
        findings += [replace(f, artifact=f"{model}/{f.artifact}") for f in found]
        lines.append(f"{model}: {summary_line(found, conditions(run, measured[model]))}")
    for model in expected.keys() - runs.keys():
        why = "the baseline has it and the matrix did not build it: build it, or --allow-missing-artifacts"
        findings.append(Finding(model, None, None, None, None, MISSING, why, allow.missing_artifacts))
    return findings, "; ".join(lines)
