"""Fuse stage: model → deploy form, proved equal; writes fused.pt (weights, probe, reference outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from exporter.blocks.fuse import FuseReport, fuse_model
from exporter.errors import CheckFailed, UserError
from exporter.eval.compare import flatten_outputs
from exporter.eval.complexity import profile
from exporter.models.loader import build_model, probe_input, run_forward
from exporter.recipe import Recipe


def fuse_recipe_model(recipe: Recipe) -> tuple[nn.Module, FuseReport, torch.Tensor]:
    """Build the recipe's model, fuse it and prove it; a mismatch raises CheckFailed."""
    model = build_model(recipe)
    probe = probe_input(recipe)
    run_forward(model, probe)
    fused, report = fuse_model(model, probe, recipe.thresholds.fuse_rtol)
    offender = report.offender
    if offender is not None:
        raise CheckFailed(
            f"fusion changed the output of module '{offender.path or '<root>'}' ({offender.kind}): "
            f"{offender.parity.describe()}"
        )
    if not report.ok:
        raise CheckFailed(f"fused model output differs: {report.model_parity.describe()}")
    return fused, report, probe


def fuse_stage(recipe: Recipe, out: Path) -> dict[str, Any]:
    fused, report, probe = fuse_recipe_model(recipe)

    def reference(batch: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [torch.from_numpy(a).float() for a in flatten_outputs(fused(batch))]

    # Outputs of the first image alone too: outputs need not be batch-first (e.g. detection lists).
    blob = {"probe": probe, "outputs": reference(probe), "first_outputs": reference(probe[:1])}
    torch.save({"state_dict": fused.state_dict(), **blob}, out)
    return {"check": report.as_dict(), "gflops": profile(fused, probe[:1]).gflops}


def load_reference(fused_pt: Path) -> dict[str, Any]:
    """fused.pt: the fused weights, the probe batch and the FP32 reference outputs."""
    if not fused_pt.is_file():
        raise UserError(f"{fused_pt} is missing; rebuild the run with `reparam-export build`")
    try:
        return torch.load(fused_pt, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged file of the run
        raise UserError(f"{fused_pt} is damaged; rebuild with `reparam-export build --force`") from None


def load_fused(recipe: Recipe, fused_pt: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The fused model with the weights of fused.pt, plus that file's contents (probe, reference outputs)."""
    fused, _, _ = fuse_recipe_model(recipe)
    blob = load_reference(fused_pt)
    try:
        fused.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as exc:
        raise UserError(f"{fused_pt} does not match the recipe's fused model; rerun with --force") from exc
    return fused.eval(), blob
