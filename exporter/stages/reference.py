"""The FP32 reference of a run, fused.pt: the fused weights, where the model came from, the probe batch
and the fused model's outputs on it. Every later stage checks its artifact against these outputs.

Loaded with `torch.load(weights_only=True)`: tensors, strings, numbers, lists and dicts only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporter.blocks.fuse import fuse_model
from exporter.errors import CheckFailed, UserError, setting
from exporter.models.loader import ModelSource
from exporter.numerics.parity import Parity, compare, flatten_outputs


def save(out: Path, fused: nn.Module, source: ModelSource, probe: torch.Tensor, rtol: float) -> None:
    def outputs(batch: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [torch.from_numpy(a).float() for a in flatten_outputs(fused(batch))]

    blob = {
        "state_dict": fused.state_dict(),
        "source": {
            "builder": source.builder,
            "kwargs": dict(source.kwargs),
            "checkpoint": None if source.checkpoint is None else str(source.checkpoint),
        },
        "fuse_rtol": rtol,
        "probe": probe,
        "outputs": outputs(probe),
        # outputs of the first image alone too: outputs need not be batch-first (e.g. detection lists)
        "first_outputs": outputs(probe[:1]),
    }
    torch.save(blob, out)


def load_reference(fused_pt: Path) -> dict[str, Any]:
    """fused.pt's contents: state_dict, source, fuse_rtol, probe, outputs, first_outputs."""
    if not fused_pt.is_file():
        raise UserError(f"{fused_pt} is missing; rebuild the run with `reparam-export build`")
    try:
        return torch.load(fused_pt, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged file of the run
        raise UserError(f"{fused_pt} is damaged; rebuild the run (build with {setting('force')})") from None


def load_fused(fused_pt: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The fused model with the weights of fused.pt, plus that file's contents."""
    blob = load_reference(fused_pt)
    source = blob["source"]
    checkpoint = source["checkpoint"]
    model = ModelSource(source["builder"], source["kwargs"], Path(checkpoint) if checkpoint else None).build()
    fused, _ = fuse_model(model, blob["probe"], blob["fuse_rtol"])
    try:
        fused.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"{fused_pt} does not match its model's fused form; "
            f"rebuild the run (build with {setting('force')})"
        ) from exc
    return fused.eval(), blob


def check_batch(blob: dict[str, Any], dynamic_batch: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The probe batch and reference outputs an export is checked on (batch 2 only when dynamic)."""
    if dynamic_batch:
        return blob["probe"], blob["outputs"]
    return blob["probe"][:1], blob["first_outputs"]


def reference_parity(fused_pt: Path, infer, rtol: float, dynamic_batch: bool) -> Parity:
    """A runner's outputs on the probe against the FP32 reference outputs stored in fused.pt."""
    probe, reference = check_batch(load_reference(fused_pt), dynamic_batch)
    candidate = infer(np.ascontiguousarray(probe.numpy()))
    return compare([r.numpy() for r in reference], candidate, rtol)


def require_parity(what: str, parity: Parity) -> None:
    if not parity.ok:
        raise CheckFailed(f"{what} differs from the fused torch model: {parity.describe()}")


def onnxruntime_parity(what: str, model: Path, fused_pt: Path, rtol: float, dynamic_batch: bool) -> Parity:
    """An ONNX model under onnxruntime against the reference; must pass."""
    from exporter.backends import onnxruntime

    parity = reference_parity(fused_pt, onnxruntime.load(model).infer, rtol, dynamic_batch)
    require_parity(f"onnxruntime output of {what}", parity)
    return parity


def describe_check(check: dict[str, Any], measured: bool = False) -> str:
    """A pass/fail check with its tolerance; `measured`: an error against the FP32 reference (FP16,
    INT8), with the output's scale instead."""
    if measured:
        return (
            f"max abs err vs FP32 reference {check['max_abs_err']:.3g} "
            f"(output scale {check['max_abs_ref']:.3g})"
        )
    return f"max abs err {check['max_abs_err']:.3g} (tolerance {check['tolerance']:.3g})"
