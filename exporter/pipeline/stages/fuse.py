"""Fuse stage: model → deploy form, proved equal in float64; writes fused.pt
(exporter.pipeline.stages.reference).

The proof runs on the probe batch (2 images where the export has a dynamic batch, else 1) and on a second
input of another size and draw, so a rewrite that only holds at one size or for one input is caught."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.base.artifacts import sha256_file
from exporter.base.data.transforms import Preprocess
from exporter.base.errors import UserError, out_of_memory, summary
from exporter.blocks.fuse import ForwardFailed, FuseReport, fuse_model
from exporter.models.loader import ModelSource, builder_source_hash, probe_input, require_checkpoint
from exporter.models.reads import files_read
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record


@dataclass(frozen=True)
class FuseSettings:
    source: ModelSource
    builder_sha256: str | None  # the builder's source: editing the model refuses the cache
    checkpoint_sha256: str | None
    input_size: tuple[int, int]
    preprocess: Preprocess
    seed: int  # of the probe batch
    batch: int  # images in the probe: 2 where exports take a dynamic batch
    rtol: float  # of the float64 proof

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> FuseSettings:
        spec = recipe.model
        checkpoint = require_checkpoint(spec.checkpoint) if spec.checkpoint is not None else None
        # the adapter loads a checkpoint that holds the whole model only; the trusted packages' code may
        # run as that checkpoint's classes or as the builder
        trust = tuple(spec.trust)
        adapter = spec.adapter if spec.builder is None else None
        return cls(
            ModelSource(spec.builder, dict(spec.kwargs), checkpoint, adapter, trust),
            builder_source_hash(spec.builder, trust) if spec.builder else None,
            sha256_file(checkpoint) if checkpoint is not None else None,
            tuple(recipe.input_size),
            recipe.preprocess,
            recipe.seed,
            2 if recipe.export.dynamic_batch else 1,
            recipe.thresholds.fuse_rtol,
        )

    def probe(self, batch: int | None = None) -> torch.Tensor:
        return probe_input(self.input_size, self.preprocess, self.seed, batch or self.batch)

    def second_probe(self) -> torch.Tensor:
        """One image of another draw and a smaller size, as the proof's second input (second_size)."""
        return probe_input(second_size(self.input_size), self.preprocess, self.seed + 1, 1)


def second_size(input_size: Sequence[int]) -> tuple[int, ...]:
    """The size of the proof's second input: a tenth of each side in multiples of 32 but at least 64
    (stride-32 features 2×2: every tap of a 3×3 kernel at work), and never more than the first."""
    return tuple(min(d, max(64, d // 320 * 32)) for d in input_size)


def fuse(settings: FuseSettings) -> tuple[nn.Module, FuseReport, torch.Tensor]:
    """Build the model, fuse it and prove it; a mismatch raises CheckFailed (blocks.fuse.FusionFailed)."""
    return prove(settings, settings.source.build())


def prove(settings: FuseSettings, model: nn.Module) -> tuple[nn.Module, FuseReport, torch.Tensor]:
    """Fuse `model` and prove it on the probe and the second probe (another draw at the probe's size
    where the model takes that size only); the fused model, its report and the probe."""
    probe = settings.probe()
    second = settings.second_probe()
    try:
        try:
            fused, report = fuse_model(model, [probe, second], settings.rtol)
        except ForwardFailed as failure:
            if failure.index == 0:
                raise
            # a model of one input size: the second input is another draw at that size
            second = probe_input(settings.input_size, settings.preprocess, settings.seed + 1, 1)
            fused, report = fuse_model(model, [probe, second], settings.rtol)
    except ForwardFailed as failure:
        shape = "x".join(map(str, failure.shape))
        if out_of_memory(failure.cause):
            raise UserError(
                f"the model's forward on a {shape} input needs more memory than this process may use "
                f"({summary(failure.cause)}); pass a smaller --input-size, or build on a larger machine"
            ) from None
        raise UserError(
            f"model forward failed on a {shape} input ({summary(failure.cause)}); "
            "check input_size and the model builder"
        ) from None
    return fused, report, probe


@dataclass(frozen=True)
class FuseRecord(Record):
    check: dict[str, Any]  # the fuser's report (blocks.fuse.FuseReport.as_dict)
    outputs: list[list[int]]  # the model's output shapes on the probe
    gflops: float
    reads: dict[str, str]  # files the builder read itself: path -> sha256

    def describe(self) -> str:
        check = self.check
        counts = ", ".join(f"{n}×{k}" for k, n in sorted(check["counts"].items())) or "nothing to fuse"
        drift = check["drift"]
        detail = (
            f"{counts}; params {check['params_before']:,} → {check['params_after']:,}; float64 proof on "
            f"{' and '.join(check['inputs'])}: {reference.describe_check(check['model_parity'])}; FP32 drift "
            f"{drift['max_abs_err']:.3g} (output scale {drift['max_abs_ref']:.3g}, rounding)"
        )
        if check["not_fused"]:
            detail += f"; NOT FUSED: {'; '.join(check['not_fused'])}"
        return detail


def run(
    settings: FuseSettings, out: Path, accept: Callable[[list[list[int]]], None] = lambda shapes: None
) -> FuseRecord:
    """Fuse and prove; `accept` sees the output shapes before fused.pt is written and may refuse them."""
    with files_read() as read:
        fused, report, probe = fuse(settings)
    shapes = [list(a.shape) for a in report.reference_outputs]
    accept(shapes)
    reference.save(out, fused, report, settings.source, probe)
    # files the builder read itself (a checkpoint it loads, a config): a change to one reruns the stage
    known = settings.source.checkpoint.resolve() if settings.source.checkpoint else None
    reads = [p for p in read if p != known] if settings.source.builder else []
    return FuseRecord(
        report.as_dict(), shapes, report.complexity.gflops, {str(p): sha256_file(p) for p in reads}
    )
