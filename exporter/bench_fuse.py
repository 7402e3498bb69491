"""`reparam-export bench-fuse`: what fusing and proving a model costs, in forward passes of that model,
and what rebuilding the fused model from fused.pt costs against building the model.

All in one process on this machine, each timing the median of a few runs: a forward pass in FP32 and
in float64 (the proof's precision), the fuse stage (fusion and its float64 proof on the probe and a
second input), loading fused.pt (build the model, replay the proved rewrites, load the weights).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from exporter.blocks.fuse import cast
from exporter.recipe import Recipe
from exporter.stages import fuse, reference


@dataclass(frozen=True)
class FuseCost:
    model: str
    input: str
    build_s: float
    forward_fp32_s: float
    forward_fp64_s: float
    fuse_s: float
    load_s: float

    def describe(self) -> str:
        return (
            f"fuse + proof {self.fuse_s:.2f} s = {self.fuse_s / self.forward_fp32_s:.1f} FP32 forward passes "
            f"({self.forward_fp32_s:.3f} s) = {self.fuse_s / self.forward_fp64_s:.1f} float64 forward passes "
            f"({self.forward_fp64_s:.3f} s); loading fused.pt {self.load_s:.2f} s = "
            f"{self.load_s / self.build_s:.2f} × building the model ({self.build_s:.2f} s)"
        )


def _median(call: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(recipe: Recipe, runs: int = 3) -> FuseCost:
    settings = fuse.FuseSettings.from_recipe(recipe)
    build_s = _median(settings.source.build, runs)
    model = settings.source.build()
    probe = settings.probe()
    model64, probe64 = cast(settings.source.build(), torch.float64), probe.double()
    with torch.no_grad():
        forward32 = _median(lambda: model(probe), runs)
        forward64 = _median(lambda: model64(probe64), runs)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fused.pt"
        fuse_s = _median(lambda: fuse.run(settings, out), 1)
        load_s = _median(lambda: reference.load_fused(out), runs)
    size = "x".join(map(str, probe.shape))
    return FuseCost(recipe.name, size, build_s, forward32, forward64, fuse_s, load_s)
