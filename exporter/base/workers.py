"""Work spread over local processes: each call of a function in its own fresh interpreter (spawned, so no
thread pool or lock of this process is inherited), results in the order of the calls."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def threads_each(workers: int) -> int:
    """CPU threads per worker so that `workers` of them share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // workers)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def threads_here() -> int:
    """CPU threads a runtime session of this process takes unless told: OMP_NUM_THREADS where it is set
    (a worker's share of the cores, or the user's limit, which torch follows too), else 0 (the runtime's
    own default, one per core). onnxruntime and OpenVINO read no such variable themselves."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def _share_cores(threads: int) -> None:
    """In a fresh worker: the work's thread pools this many wide. Libraries imported later read the
    variables; torch, when the spawned worker already imported it (re-importing the main module of this
    process does), is told directly, or each worker would run one thread per core."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


Map = Callable[[Callable[..., Any], Sequence[tuple]], list[Any]]  # (function, calls) -> results in order


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[Map]:
    """A map over `workers` local processes that share this machine's cores (each one's thread pools
    threads_each wide), kept for every map inside the block: a process imports its libraries once, and
    what it caches stays. `function(*call)` for every call; an exception of one is raised at the map (the
    first in call order), after every call ended. `function` must be importable by name."""
    context = multiprocessing.get_context("spawn")
    initializer, threads = _share_cores, (threads_each(workers),)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=threads) as pool:

        def run(function: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
            futures = [pool.submit(function, *call) for call in calls]
            return [future.result() for future in futures]

        yield run


class LazyPool:
    """A process_pool of `workers` started on its first map and kept for every later one until its with
    block ends: the maps of the block share its processes, and a block that maps nothing starts none."""

    def __init__(self, workers: int):
        self.workers = workers
        self._stack = contextlib.ExitStack()
        self._map: Map | None = None

    def __call__(self, function: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
        if self._map is None:
            self._map = self._stack.enter_context(process_pool(self.workers))
        return self._map(function, calls)

    def __enter__(self) -> LazyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def in_processes(function: Callable[..., Any], calls: Sequence[tuple], workers: int) -> list[Any]:
    """`function(*call)` for every call, in up to `workers` processes of a process_pool of their own."""
    with process_pool(min(workers, len(calls))) as run:
        return run(function, calls)


def as_ray_tasks(function: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
    """`function(*call)` for every call as a task of the Ray cluster this process belongs to (a task of a
    matrix on Ray, or a driver that joined one), results in the order of the calls. `function` must be
    importable by name on every node."""
    import ray

    task = ray.remote(function)
    return ray.get([task.remote(*call) for call in calls])
