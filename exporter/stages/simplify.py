"""Simplify stage: onnxsim with its own check, node counts, onnxruntime parity again.

If onnxsim fails, the unsimplified model is kept as this stage's output and the failure recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch

from exporter.recipe import Recipe
from exporter.stages.export_onnx import check_batch, ort_parity, require_parity


def run_onnxsim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """(simplified model, None) or (the original model, why onnxsim failed)."""
    import onnxsim

    try:
        simplified, check_ok = onnxsim.simplify(model)
    except Exception as exc:  # noqa: BLE001 - any onnxsim failure falls back to the original
        return model, f"onnxsim raised {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    if not check_ok:
        return model, "onnxsim's own output check failed"
    return simplified, None


def simplify_stage(recipe: Recipe, onnx_path: Path, fused_pt: Path, out: Path) -> dict[str, Any]:
    model = onnx.load(onnx_path)
    simplified, failure = run_onnxsim(model)
    onnx.checker.check_model(simplified, full_check=True)
    onnx.save(simplified, out)
    blob = torch.load(fused_pt, map_location="cpu", weights_only=True)
    probe, outputs = check_batch(recipe, blob)
    parity = ort_parity(out, probe, outputs, recipe.thresholds.onnx_rtol)
    require_parity("onnxruntime output of the simplified model", parity)
    return {
        "check": parity.as_dict(),
        "nodes_before": len(model.graph.node),
        "nodes_after": len(simplified.graph.node),
        "simplified": failure is None,
        "failure": failure,
    }
