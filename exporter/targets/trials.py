"""INT8 search trials scored at once: the trials of one round of the search
(exporter.stages.partial_int8.search), each in a local process of its own or as a Ray task, built by its
target's quantizer and scored on the evaluation data as the search scores it in-process (the same mAP)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from exporter.core.workers import as_ray_tasks, in_processes
from exporter.data.calibration import CalibrationSet
from exporter.stages.scoring import EvaluationSettings, Scorer


def trial_map(
    quantizer: Callable,
    model: str,
    calibration: CalibrationSet,
    method: str | None,
    ranges_dir: str,
    evaluation: EvaluationSettings,
    float_nodes: list[str],
) -> float:
    """The mAP of the INT8 model of `model` with `float_nodes` kept in float, built by `quantizer` (a
    target's Target.quantizer, importable by name). Importable by name: the worker function."""
    trials = quantizer(Path(model), calibration, method, Path(ranges_dir))
    return Scorer(evaluation)(trials.runner(list(float_nodes)).infer, 1)["map"]


def scored_at_once(
    quantizer: Callable,
    model: Path,
    calibration: CalibrationSet,
    method: str | None,
    ranges_dir: Path,
    evaluation: EvaluationSettings,
    workers: int,
    on_ray: bool = False,
):
    """`scores(float node lists)`: their trials' mAPs, scored on up to `workers` local processes, or each
    as a task of the Ray cluster this process belongs to (`on_ray`)."""

    def scores(node_lists: list[list[str]]) -> list[float]:
        calls = [
            (quantizer, str(model), calibration, method, str(ranges_dir), evaluation, nodes)
            for nodes in node_lists
        ]
        return as_ray_tasks(trial_map, calls) if on_ray else in_processes(trial_map, calls, workers)

    return scores
