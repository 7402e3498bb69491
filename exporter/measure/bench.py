"""`reparam-export bench`: latency of every artifact of a run, one artifact after another (for
ratios measured in alternating rounds see `bench-cpu` and `numerics.latency.side_by_side`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from exporter.core import host
from exporter.core.artifacts import sha256_file, write_json
from exporter.core.errors import UserError
from exporter.core.rundir import run_artifacts
from exporter.measure.evaluate import run_recipe
from exporter.numerics.latency import measure, throughput
from exporter.stages.reference import load_reference
from exporter.targets import artifact_target, load_artifact


def bench_run(
    run: Path, threads: int = 0, min_iters: int = 50, min_seconds: float = 2.0, throughput_workers: int = 0
) -> dict[str, Any]:
    """Batch-1 synchronous latency per artifact (and optional throughput); written to run/bench.json."""
    artifacts = run_artifacts(run)  # verified, fused.pt with them
    if not artifacts:
        raise UserError(f"{run} has no built artifacts; run `reparam-export build` for it first")
    plugin = run_recipe(run).tensorrt.plugin_library
    blob = load_reference(run / "fused.pt")
    batch = np.ascontiguousarray(blob["probe"][:1].numpy())
    results: dict[str, Any] = {}
    with host.LoadMeter() as meter:  # what other processes took while we timed
        for key, path in artifacts.items():
            runner = load_artifact(key, path, threads, plugin)
            latency = measure(
                lambda runner=runner: runner.infer(batch), min_iters=min_iters, min_seconds=min_seconds
            )
            entry: dict[str, Any] = {
                "artifact": str(path),
                "sha256": sha256_file(path),
                **latency.as_dict(),
                "fps_batch1": 1000.0 / latency.mean_ms,
            }
            own = artifact_target(key).throughput
            if throughput_workers and own is not None:  # the runtime's own streams and async requests
                entry["throughput_fps"], entry["throughput_requests"] = own(path, batch, min_seconds)
            elif throughput_workers:

                def make(key=key, path=path):
                    worker = load_artifact(key, path, 1, plugin)
                    return lambda: worker.infer(batch)

                entry["throughput_fps"] = throughput(make, throughput_workers, min_seconds)
                entry["throughput_requests"] = throughput_workers
            results[key] = entry
    report = {
        "mode": "batch 1, synchronous",
        "threads": threads or os.cpu_count(),
        "cpu": host.cpu_name(),
        "isa": host.isa(),
        "load": None if meter.load is None else meter.load.as_dict(),
        "results": results,
    }
    write_json(run / "bench.json", report)
    return report
