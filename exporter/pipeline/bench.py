"""`reparam-export bench`: latency of every artifact of a run, one artifact after another (for
ratios measured in alternating rounds see `bench-cpu` and `numerics.latency.side_by_side`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from exporter.base import host
from exporter.base.artifacts import sha256_file, write_json
from exporter.base.errors import UserError
from exporter.base.numerics.latency import measure, throughput
from exporter.base.rundir import RunDir, run_artifacts
from exporter.pipeline.evaluate import run_recipe
from exporter.pipeline.stages.graph import Call, Node, Record, fixed
from exporter.pipeline.stages.reference import load_reference
from exporter.pipeline.stages.runner import Runner
from exporter.pipeline.targets.table import artifact_target, load_artifact, unmeasured_here


@dataclass(frozen=True)
class BenchSettings:
    threads: int  # per backend (0: its default)
    min_iters: int
    min_seconds: float
    throughput_workers: int  # 0: latency only
    cpu: str  # where it is timed


@dataclass(frozen=True)
class BenchRecord(Record):
    p50_ms: dict[str, float]  # by artifact key

    def describe(self) -> str:
        return "p50 " + ", ".join(f"{key} {ms:.2f} ms" for key, ms in self.p50_ms.items())


def benchmark(
    run: Path, threads: int = 0, min_iters: int = 50, min_seconds: float = 2.0, throughput_workers: int = 0
) -> Node:
    """The run's benchmark as a stage: batch-1 synchronous latency per artifact (and optional throughput)
    into RUN/bench.json, keyed by the artifacts' contents, the timing settings and the CPU."""
    artifacts = run_artifacts(run)  # verified, fused.pt with them
    if not artifacts:
        raise UserError(f"{run} has no built artifacts; run `reparam-export build` for it first")
    skipped = unmeasured_here(artifacts)  # computed in bf16 on a CPU without: never timed as f32
    artifacts = {key: path for key, path in artifacts.items() if key not in skipped}
    if not artifacts:
        raise UserError(f"{run}: no artifact of it can be timed here ({'; '.join(skipped.values())})")
    recipe = run_recipe(run)
    sections = {key: artifact_target(key).settings(recipe) for key in artifacts}
    probe = run / "fused.pt"

    def run_bench(call: Call) -> BenchRecord:
        blob = load_reference(call.inputs["probe"])
        batch = np.ascontiguousarray(blob["probe"][:1].numpy())
        timed = {key: call.inputs[key] for key in artifacts}
        report = {**_timed(timed, batch, call.settings, sections), "not_measured": skipped}
        write_json(call.output, report)
        return BenchRecord({key: entry["p50_ms"] for key, entry in report["results"].items()})

    settings = BenchSettings(threads, min_iters, min_seconds, throughput_workers, host.cpu_name())
    return Node(
        "bench", "bench.json", run_bench, BenchRecord, fixed(settings), files={"probe": probe, **artifacts}
    )


def _timed(
    artifacts: dict[str, Path], batch: np.ndarray, settings: BenchSettings, sections: dict[str, Any]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    threads, min_seconds, workers = settings.threads, settings.min_seconds, settings.throughput_workers
    with host.LoadMeter() as meter:  # what other processes took while we timed
        for key, path in artifacts.items():
            runner = load_artifact(key, path, threads, sections[key])
            latency = measure(
                lambda runner=runner: runner.infer(batch),
                min_iters=settings.min_iters,
                min_seconds=min_seconds,
            )
            entry: dict[str, Any] = {
                "artifact": str(path),
                "sha256": sha256_file(path),
                **latency.as_dict(),
                "fps_batch1": 1000.0 / latency.mean_ms,
            }
            own = artifact_target(key).throughput
            if workers and own is not None:  # the runtime's own streams and async requests
                entry["throughput_fps"], entry["throughput_requests"] = own(path, batch, min_seconds)
            elif workers:

                def make(key=key, path=path):
                    worker = load_artifact(key, path, 1, sections[key])
                    return lambda: worker.infer(batch)

                entry["throughput_fps"] = throughput(make, workers, min_seconds)
                entry["throughput_requests"] = workers
            results[key] = entry
    return {
        "mode": "batch 1, synchronous",
        "threads": threads or os.cpu_count(),
        "cpu": settings.cpu,
        "isa": host.isa(),
        "load": None if meter.load is None else meter.load.as_dict(),
        "results": results,
    }


def bench_run(
    run: Path, threads: int = 0, min_iters: int = 50, min_seconds: float = 2.0, throughput_workers: int = 0
) -> dict[str, Any]:
    """Run the run's `benchmark` stage, measured afresh (a latency is of the moment it was taken), and
    return bench.json's report."""
    node = benchmark(Path(run), threads, min_iters, min_seconds, throughput_workers)
    runner = Runner(RunDir(run), True, Console(stderr=True, quiet=True), lambda line: None)
    return json.loads(runner.result(node).output.read_text())
