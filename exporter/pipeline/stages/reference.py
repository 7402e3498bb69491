"""The reference of a run, fused.pt: the fused weights, where the model came from and the rewrites that
fused it, the probe batch, the model's float64 outputs on it and its own FP32 rounding per output.
Every later stage checks its artifact against these outputs.

Loaded with `torch.load(weights_only=True)`: tensors, strings, numbers, lists and dicts only. The fused
model is rebuilt from its source by replaying the proved rewrites, without proving them again.

An FP32 artifact passes when every output is within `noise_factor` × that output's FP32 rounding (the
error of torch's fused model, computing in FP32, against float64) plus ROUNDING_FLOOR × max(1, |y|):
a correct export of a deep network differs from float64 by rounding of the same order as torch's own, a
wrong one by far more.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exporter.base.artifacts import save_torch
from exporter.base.errors import CheckFailed, UserError, setting
from exporter.base.numerics.parity import Parity, compare_within, scales
from exporter.base.numerics.selections import ORDERINGS, Selections
from exporter.blocks.fuse import FuseReport, cast, replay
from exporter.models.loader import ModelSource

ROUNDING_FLOOR = 64 * 2.0**-24  # an output computed with few operations may round by a few ulps only


def save(out: Path, fused: nn.Module, report: FuseReport, source: ModelSource, probe: torch.Tensor) -> None:
    blob = {
        "state_dict": fused.state_dict(),
        "source": {
            "builder": source.builder,
            "kwargs": dict(source.kwargs),
            "checkpoint": None if source.checkpoint is None else str(source.checkpoint),
            "adapter": source.adapter,
            "trust": list(source.trust),
        },
        "steps": report.fused_steps(),
        "probe": probe,
        "outputs": [torch.from_numpy(a) for a in report.reference_outputs],
        "noise": report.noise,
    }
    save_torch(blob, out)


def load_reference(fused_pt: Path) -> dict[str, Any]:
    """fused.pt's contents: state_dict, source, steps, probe, outputs (float64), noise."""
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
    checkpoint = Path(source["checkpoint"]) if source["checkpoint"] else None
    model = ModelSource(
        source["builder"], source["kwargs"], checkpoint, source["adapter"], tuple(source["trust"])
    ).build()
    fused = replay(model, blob["steps"])
    try:
        fused.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"{fused_pt} does not match its model's fused form; "
            f"rebuild the run (build with {setting('force')})"
        ) from exc
    return fused.eval(), blob


def reference_parity(fused_pt: Path, runner, noise_factor: float) -> Parity:
    """A runner's outputs on the probe against the float64 reference, each output within its FP32
    rounding bound (see the module's description). For FP16 and INT8 the error is what counts: it is
    recorded, not held to the bound.

    Where the graph orders (TopK: top-k, sort) and the outputs differ, a near-tie may have been picked
    the other way: the runtime's own picks are then replayed in the float64 model, and the outputs
    compared under the same choices (a wrong export still differs in what it computes)."""
    blob = load_reference(fused_pt)
    reference = [r.numpy() for r in blob["outputs"]]
    bounds = [
        noise_factor * n + ROUNDING_FLOOR * max(1.0, s)
        for n, s in zip(blob["noise"], scales(reference), strict=True)
    ]
    probe = np.ascontiguousarray(blob["probe"].numpy())
    parity = compare_within(reference, runner.infer(probe), bounds)
    orderings = getattr(runner, "infer_with_orderings", None)
    if parity.ok or orderings is None:
        return parity
    outputs, picks = orderings(probe)
    if not picks:
        return parity
    model = cast(load_fused(fused_pt)[0], torch.float64)
    replay = [("topk", torch.from_numpy(p)) for p in picks]
    with torch.no_grad(), Selections(replay=replay, kinds=ORDERINGS) as replayed:
        expected = model(torch.from_numpy(probe).double())
    if replayed.misaligned:
        return parity
    return dataclasses.replace(
        compare_within(expected, outputs, bounds), note=f"{len(picks)} top-k picks of the runtime replayed"
    )


def require_parity(what: str, parity: Parity) -> None:
    if not parity.ok:
        raise CheckFailed(f"{what} differs from the fused torch model: {parity.describe()}")


def onnxruntime_parity(what: str, model: Path, fused_pt: Path, noise_factor: float) -> Parity:
    """An ONNX model under onnxruntime against the reference; must pass."""
    from exporter.pipeline.stages import ort_runner as onnxruntime

    parity = reference_parity(fused_pt, onnxruntime.load(model), noise_factor)
    require_parity(f"onnxruntime output of {what}", parity)
    return parity


def describe_check(check: dict[str, Any], measured: bool = False) -> str:
    """A pass/fail check with its tolerance and margin; `measured`: an error against the reference
    (FP16, INT8), with the output's scale instead."""
    if measured:
        return (
            f"max abs err vs the reference {check['max_abs_err']:.3g} "
            f"(output scale {check['max_abs_ref']:.3g})"
        )
    note = f"; {check['note']}" if check.get("note") else ""
    return (
        f"max abs err {check['max_abs_err']:.3g} (tolerance {check['tolerance']:.3g}, "
        f"err/tol {check['ratio']:.2g}{note})"
    )


# INT8 collapse: on the probe (seeded random images) the least-squares slope of each INT8 output on its
# float64 reference, cov/var, is near 1 for a correct model and near 0 for one whose output is constant
# or unrelated. Below MIN_SLOPE an output has collapsed. The demo model: 0.48 correct (its scores on
# random images), 4e-6 to 5e-5 calibrated on constant or low-noise images (mAP 0).
MIN_SLOPE = 0.01


def collapse(references: list[np.ndarray], outputs: list[np.ndarray]) -> tuple[float | None, int | None]:
    """The lowest least-squares slope of an output on its reference (cov/var: 1 where it follows the
    reference, 0 where it is constant, unrelated or not finite) and that output's index; outputs the
    reference does not vary in (beyond FP32 rounding) are skipped, and with none left the slope is None."""
    slopes = {}
    for index, (ref, out) in enumerate(zip(references, outputs, strict=True)):
        scale = max(1.0, float(np.abs(ref).max(initial=0)))
        if out.size != ref.size or ref.size == 0 or ref.std() <= ROUNDING_FLOOR * scale:
            continue  # a different shape is the parity check's to report
        ref = ref.ravel() - ref.mean()
        centred = out.ravel().astype(np.float64) - out.mean()
        slope = float(ref @ centred / (ref @ ref))
        slopes[index] = slope if np.isfinite(slope) else 0.0
    if not slopes:
        return None, None
    index = min(slopes, key=slopes.get)
    return slopes[index], index


def require_no_collapse(fused_pt: Path, runner) -> dict[str, Any]:
    """The INT8 runner's collapse measure on the probe against the reference; a collapse fails."""
    blob = load_reference(fused_pt)
    probe = np.ascontiguousarray(blob["probe"].numpy())
    slope, output = collapse([r.numpy() for r in blob["outputs"]], runner.infer(probe))
    if slope is not None and slope < MIN_SLOPE:
        raise CheckFailed(
            f"INT8 output {output} collapsed against FP32 (least-squares slope {slope:.2g} on the FP32 "
            f"output over the probe images, below {MIN_SLOPE:g}; a correct INT8 model is near 1): the "
            "calibration images may be degenerate or unlike the model's inputs; calibrate on images like "
            f"them with {setting('calibration.source')}"
        )
    return {"slope": slope, "output": output, "threshold": MIN_SLOPE}
