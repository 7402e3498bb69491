"""Latency measurement shared by benchmarks: warm-up, then timed calls until count and time are met."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    iterations: int
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    samples_ms: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "samples_ms": [round(v, 3) for v in self.samples_ms]}


def measure(
    call: Callable[[], object], warmup: int = 5, min_iters: int = 20, min_seconds: float = 0.5
) -> Latency:
    """Time `call` (synchronous, batch as given) after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(samples)
    return Latency(
        iterations=len(ms),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        samples_ms=tuple(float(v) for v in ms),
    )


def side_by_side(
    calls: dict[str, Callable[[], object]], rounds: int = 3, min_seconds: float = 1.0
) -> dict[str, float]:
    """p50 ms of each call, compared fairly: the median of its p50 over alternating rounds
    (`rounds_of`) — a machine whose speed drifts during the run (shared hosts, turbo) then favours no
    call in particular, as timing one call after another would."""
    return {name: float(np.median(values)) for name, values in rounds_of(calls, rounds, min_seconds).items()}


def rounds_of(
    calls: dict[str, Callable[[], object]], rounds: int = 3, min_seconds: float = 1.0
) -> dict[str, list[float]]:
    """p50 ms of each call in each of `rounds` passes over all calls in turn (a ratio of two calls
    taken per round, then its median and range, is a side-by-side ratio with its spread)."""
    p50s: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            p50s[name].append(measure(call, min_seconds=min_seconds / rounds).p50_ms)
    return p50s


def throughput(make_call: Callable[[], Callable[[], object]], workers: int, seconds: float = 2.0) -> float:
    """Images per second with `workers` threads each calling its own `make_call()` (batch 1) for
    `seconds` after one warm-up call each."""
    calls = [make_call() for _ in range(workers)]
    for call in calls:
        call()
    counts = [0] * workers
    deadline = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < deadline:
            calls[i]()
            counts[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)
