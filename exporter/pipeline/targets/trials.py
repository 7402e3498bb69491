"""INT8 search trials scored at once: the trials of one round of the search
(exporter.pipeline.stages.partial_int8.search), each in a local process or as a Ray task, built by its
target's quantizer and scored on the evaluation data as the search scores it in-process (the same mAP).

The local processes are kept for the whole search and each keeps its quantizer (the model read, its
ranges loaded) from one trial to the next, as a Ray worker does between the tasks it runs: a worker
pays its start once per search, not once per trial."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from exporter.base.data.calibration import CalibrationSet
from exporter.base.workers import as_ray_tasks, process_pool
from exporter.pipeline.stages.scoring import EvaluationSettings, Scorer

_kept: dict[tuple, object] = {}  # this process's quantizer of the search it serves


def _quantizer(quantizer: Callable, model: str, calibration: CalibrationSet, method: str | None, ranges: str):
    """`quantizer(model, …)`, made once per model file (by path, size and time) and settings here."""
    stat = Path(model).stat()
    key = (
        quantizer.__module__,
        quantizer.__qualname__,
        model,
        stat.st_size,
        stat.st_mtime_ns,
        method,
        ranges,
    )
    if key not in _kept:
        _kept.clear()  # one search at a time: the previous one's model is let go
        _kept[key] = quantizer(Path(model), calibration, method, Path(ranges))
    return _kept[key]


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
    trials = _quantizer(quantizer, model, calibration, method, ranges_dir)
    return Scorer(evaluation, kept_bytes=0)(trials.runner(list(float_nodes)).infer, 1)["map"]  # one model


@contextlib.contextmanager
def scored_at_once(
    quantizer: Callable,
    model: Path,
    calibration: CalibrationSet,
    method: str | None,
    ranges_dir: Path,
    evaluation: EvaluationSettings,
    workers: int,
    on_ray: bool = False,
) -> Iterator[Callable[[list[list[str]]], list[float]]]:
    """Within the block, `scores(float node lists)`: their trials' mAPs, scored on `workers` local
    processes kept for the block, or each as a task of the Ray cluster this process belongs to
    (`on_ray`)."""
    arguments = (quantizer, str(model), calibration, method, str(ranges_dir), evaluation)

    def on(run: Callable) -> Callable[[list[list[str]]], list[float]]:
        return lambda node_lists: run(trial_map, [(*arguments, nodes) for nodes in node_lists])

    if on_ray:
        yield on(as_ray_tasks)
        return
    with process_pool(workers) as run:
        yield on(run)
