"""Fuse stage: model → deploy form, proved equal; writes fused.pt (see exporter.stages.reference)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.artifacts import sha256_file
from exporter.blocks.fuse import FuseReport, fuse_model
from exporter.data.transforms import Preprocess
from exporter.errors import CheckFailed
from exporter.models.loader import (
    ModelSource,
    builder_source_hash,
    probe_input,
    require_checkpoint,
    run_forward,
)
from exporter.numerics.complexity import profile
from exporter.recipe import Recipe
from exporter.stages import reference


@dataclass(frozen=True)
class FuseSettings:
    source: ModelSource
    builder_sha256: str | None  # the builder's source: editing the model refuses the cache
    checkpoint_sha256: str | None
    input_size: tuple[int, int]
    preprocess: Preprocess
    seed: int  # of the probe batch
    rtol: float

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> FuseSettings:
        spec = recipe.model
        checkpoint = require_checkpoint(spec.checkpoint) if spec.checkpoint is not None else None
        return cls(
            ModelSource(spec.builder, dict(spec.kwargs), checkpoint),
            builder_source_hash(spec.builder),
            sha256_file(checkpoint) if checkpoint is not None else None,
            tuple(recipe.input_size),
            recipe.preprocess,
            recipe.seed,
            recipe.thresholds.fuse_rtol,
        )

    def probe(self, batch: int = 2) -> torch.Tensor:
        return probe_input(self.input_size, self.preprocess, self.seed, batch)


def fuse(settings: FuseSettings) -> tuple[nn.Module, FuseReport, torch.Tensor]:
    """Build the model, fuse it and prove it; a mismatch raises CheckFailed."""
    model = settings.source.build()
    probe = settings.probe()
    run_forward(model, probe)
    fused, report = fuse_model(model, probe, settings.rtol)
    offender = report.offender
    if offender is not None:
        raise CheckFailed(
            f"fusion changed the output of module '{offender.path or '<root>'}' ({offender.kind}): "
            f"{offender.parity.describe()}"
        )
    if not report.ok:
        raise CheckFailed(f"fused model output differs: {report.model_parity.describe()}")
    return fused, report, probe


def run(settings: FuseSettings, out: Path) -> dict[str, Any]:
    fused, report, probe = fuse(settings)
    reference.save(out, fused, settings.source, probe, settings.rtol)
    return {"check": report.as_dict(), "gflops": profile(fused, probe[:1]).gflops}


def describe(record: dict[str, Any]) -> str:
    check = record["check"]
    counts = ", ".join(f"{n}×{k}" for k, n in sorted(check["counts"].items())) or "nothing to fuse"
    return (
        f"{counts}; params {check['params_before']:,} → {check['params_after']:,}; "
        f"{reference.describe_check(check['model_parity'])}"
    )
