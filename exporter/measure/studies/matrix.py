"""`reparam-export bench-matrix`: what spreading a matrix's models over workers gains. A matrix of
independent small models (the embedded detector under other seeds, so no two share a stage) is built in
this process, one after another (the work itself), then on 1 and on N local worker processes, and on a
local Ray with 1 and N CPUs where Ray is installed; each from empty run directories. Printed: the
speed-up of N workers over 1, against the goal of 0.8·N, and the overhead per model (the 1-worker wall
time over the in-process one, per model)."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from exporter.measure.matrix import LOCAL, run_matrix
from exporter.pipeline.recipe import REPO_RECIPES, Recipe, load_recipe

GOAL_EFFICIENCY = 0.8  # N workers at least 0.8·N times as fast as one, for independent models
GOAL_OVERHEAD_S = 1.0  # per model, on top of its build
WIDTH = 48  # the embedded detector's base width: a few seconds of fuse, proof and export per model


ONE_THREAD = "in-process, one thread"  # the work as a Ray task of one CPU does it (Ray sets 1 thread)
START = "worker start"  # a fresh worker importing what a build runs, once per worker
LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxsim")  # what an ONNX FP32 build of a model imports


@dataclass(frozen=True)
class Timed:
    executor: str  # in-process, ONE_THREAD, processes, ray
    workers: int
    seconds: float


def models(count: int, size: int) -> list[Recipe]:
    """`count` embedded detectors that share no stage (other seeds), at `size`×`size`, ONNX FP32."""
    return [
        load_recipe(
            REPO_RECIPES / "embedded_demo.yaml",
            {
                "name": f"bench-{seed}",
                "model.kwargs": {"num_classes": 3, "width": WIDTH, "seed": seed},
                "input_size": [size, size],
            },
        )
        for seed in range(count)
    ]


def timed(recipes: list[Recipe], workers: int, cluster: str, out: Path) -> float:
    """Wall seconds of the matrix of `recipes` from empty run directories in `out`; any failed model
    refused."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cells = run_matrix(recipes, out, workers, cluster)
    seconds = time.perf_counter() - start
    failed = [c for c in cells if c.status == "failed"]
    if failed:
        raise RuntimeError(f"bench-matrix: {failed[0].model} failed: {failed[0].error}")
    return seconds


def on_ray(recipes: list[Recipe], cpus: int, work: Path) -> float:
    """The matrix as tasks of a local Ray of `cpus` CPUs (started here, shut down after)."""
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        return timed(recipes, cpus, "ray", work / f"ray-{cpus}")
    finally:
        ray.shutdown()


def one_thread(recipes: list[Recipe], work: Path) -> float:
    """The matrix in this process with torch on one thread, as in a Ray task of one CPU (OMP_NUM_THREADS=1
    there): what Ray's overhead is measured against."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return timed(recipes, 1, LOCAL, work / "one-thread")
    finally:
        torch.set_num_threads(threads)


def start_worker() -> None:
    """What a fresh worker imports before its first model is built: the matrix and the libraries its
    build runs. Importable by name: the worker function timed as a worker's start."""
    importlib.import_module("exporter.measure.matrix")
    for name in LIBRARIES:
        importlib.import_module(name)


def worker_start() -> float:
    """Wall seconds of a fresh local worker process spawned to import what a build runs."""
    from exporter.base.workers import in_processes

    start = time.perf_counter()
    in_processes(start_worker, [()], 1)
    return time.perf_counter() - start


def bench_matrix(count: int, workers: int, size: int) -> list[Timed]:
    """The matrix of `count` models in this process, on 1 and `workers` processes, and on a local Ray with
    1 and `workers` CPUs where Ray is installed (and then in this process on one thread, as Ray's tasks
    run)."""
    recipes = models(count, size)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        found = [Timed("in-process", 1, timed(recipes, 1, LOCAL, work / "in-process"))]
        found.append(Timed(START, 1, worker_start()))
        found.append(Timed("processes", 1, timed_in_processes(recipes, 1, work)))
        found.append(Timed("processes", workers, timed_in_processes(recipes, workers, work)))
        if importlib.util.find_spec("ray") is not None:
            found.append(Timed(ONE_THREAD, 1, one_thread(recipes, work)))
            found += [Timed("ray", n, on_ray(recipes, n, work)) for n in (1, workers)]
    return found


def timed_in_processes(recipes: list[Recipe], workers: int, work: Path) -> float:
    """The matrix on `workers` local processes, spawned even for one (what a worker costs)."""
    from exporter.base.workers import in_processes
    from exporter.measure.matrix import build_model, calls_of

    out = work / f"processes-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    calls = calls_of(recipes, out, 1, 1, False)
    start = time.perf_counter()
    in_processes(build_model, calls, workers)
    return time.perf_counter() - start


def verdicts(found: list[Timed], count: int) -> list[str]:
    """Speed-up of N workers over 1 and overhead per model, per executor, against the goals: the overhead
    of one worker over this process doing the same work on as many threads (a process: all the cores;
    a Ray task of one CPU: one thread)."""
    alone = next(t.seconds for t in found if t.executor == "in-process")
    lines = [f"in this process: {alone:.1f} s for {count} models ({alone / count:.2f} s each)"]
    single = next((t.seconds for t in found if t.executor == ONE_THREAD), None)
    if single is not None:
        lines.append(f"in this process on one thread: {single:.1f} s ({single / count:.2f} s each)")
    start = next((t.seconds for t in found if t.executor == START), 0.0)
    if start:
        lines.append(
            f"a fresh worker's start (importing {', '.join(LIBRARIES)}): {start:.1f} s, once per worker"
        )
    for executor in ("processes", "ray"):
        runs = sorted((t for t in found if t.executor == executor), key=lambda t: t.workers)
        if len(runs) < 2:
            continue
        one, many = runs[0], runs[-1]
        speedup = one.seconds / many.seconds
        threaded = executor == "ray" and single is not None  # a Ray task of one CPU runs one thread
        overhead = (one.seconds - (single if threaded else alone)) / count
        per_task = overhead - start / count  # what each model costs beyond its worker's one start
        goal = GOAL_EFFICIENCY * many.workers
        fast = "met" if speedup >= goal else "NOT met"
        light = "met" if per_task <= GOAL_OVERHEAD_S else "NOT met"
        lines.append(
            f"{executor}: 1 worker {one.seconds:.1f} s, {many.workers} workers {many.seconds:.1f} s: "
            "speed-up "
            f"{speedup:.2f}x ({fast}, goal {goal:.1f}x); overhead {overhead:.2f} s per model"
            f"{', against one thread here' if threaded else ''}"
            + (f": the worker's start, then {per_task:.2f} s per model" if start else "")
            + f" ({light}, goal under {GOAL_OVERHEAD_S:g} s per model)"
        )
    return lines
