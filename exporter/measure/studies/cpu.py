"""`reparam-export bench-cpu`: the CPU story in one run on one machine.

For each recipe: PyTorch eager (unfused, FP32), onnxruntime on the unfused export, OpenVINO on the
unfused export, and OpenVINO on the fused model in FP32, FP16 and INT8 — batch 1, synchronous,
p50 latency, with ratios against PyTorch eager. It checks the goals fused-vs-unfused OpenVINO FP32
≥ 1.2x and INT8-vs-FP32 IR ≥ 1.5x, and, where the recipe names evaluation data, INT8 mAP within
1.0 point of FP32. Beside the fusion ratio it shows what fusion changes in the graph OpenVINO
compiles: BatchNorm reaches neither compiled graph (torch's ONNX export folds it in eval mode, and
OpenVINO folds any that is left), so only merging branches (RepConv 1x1, identity) can gain.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exporter.base.numerics.latency import rounds_of
from exporter.pipeline.recipe import Recipe, recipe_from_dict
from exporter.pipeline.stages import ort_runner as ort_backend
from exporter.pipeline.stages.fuse import FuseSettings
from exporter.pipeline.targets.openvino import runtime as ov_backend

ROUNDS = 3  # alternating passes over every runtime (see latency.side_by_side)


@dataclass
class Row:
    model: str
    name: str
    p50_ms: float  # median over the rounds
    ratio_vs_torch: float  # median over the rounds of PyTorch eager's p50 / this runtime's
    ratio_range: tuple[float, float]  # that ratio's lowest and highest round


@dataclass
class FusionEffect:
    """The compiled OpenVINO FP32 graph and the convolution work, unfused vs fused."""

    convs_unfused: int
    convs_fused: int
    macs_unfused: int
    macs_fused: int

    def describe(self) -> str:
        removed = 1 - self.macs_fused / self.macs_unfused
        return (
            f"OpenVINO compiles {self.convs_unfused} convolutions from the unfused export and "
            f"{self.convs_fused} from the fused one; fusion removes {removed:.1%} of the convolution "
            f"multiply-accumulates ({self.macs_unfused / 1e9:.3f} -> {self.macs_fused / 1e9:.3f} G); "
            "BatchNorm is folded in both (by the ONNX export in eval mode, else by OpenVINO)"
        )


def export_unfused(model: torch.nn.Module, probe: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (probe,), str(path), dynamo=False, opset_version=opset, input_names=["images"]
        )


INT8_BF16 = "OpenVINO, fused INT8, float layers BF16"  # measured where BF16 runs natively


def timed_precisions() -> tuple[str, ...]:
    """OpenVINO FP32, FP16 and INT8, and BF16 on a CPU that computes it natively."""
    return ("fp32", "fp16", *(("bf16",) if ov_backend.runs_bf16() else ()), "int8")


def timed_recipe(
    recipe: Recipe, calib_count: int, calibration_folder: Path, eval_limit: int | None = None
) -> Recipe:
    """The recipe built for timing (timed_precisions), its build's evaluation (where the recipe names
    evaluation data) on the first `eval_limit` images. A model without calibration images of its own
    (DAMO-YOLO's recipes) is calibrated on the demo's: its latency does not depend on them."""
    overrides = {
        "targets": ["openvino"],
        "precisions": list(timed_precisions()),
        "calibration.count": calib_count,
        "calibration.source": recipe.calibration.source or "demo",
        "calibration.folder": str(calibration_folder),
        "openvino.int8_float": "f32",  # the INT8 row; its float layers in bf16 are timed beside it
        "evaluation.limit": eval_limit or recipe.evaluation.limit,
    }
    return recipe_from_dict(recipe.model_dump(mode="json"), recipe.name, overrides)


def bench_recipe(recipe: Recipe, threads: int, min_seconds: float, calib_count: int, eval_limit: int | None):
    """Rows for one model, its goal checks (ratios and, with evaluation data, the INT8 mAP drop) and
    what fusion changes in the compiled graph."""
    from exporter.pipeline.builder import Pipeline

    torch.set_num_threads(threads)
    source = FuseSettings.from_recipe(recipe)
    model = source.source.build()
    probe = source.probe(batch=1)
    batch = probe.numpy()
    calls = {}

    def eager():
        with torch.no_grad():
            return model(probe)

    calls["PyTorch eager, unfused FP32"] = eager
    with tempfile.TemporaryDirectory() as tmp:
        unfused = Path(tmp) / "unfused.onnx"
        export_unfused(model, probe, unfused, recipe.export.opset)
        ort = ort_backend.load(unfused, threads)
        calls["onnxruntime, unfused FP32"] = lambda: ort.infer(batch)
        ov_unfused = ov_backend.load(unfused, "fp32", threads)
        calls["OpenVINO, unfused FP32"] = lambda: ov_unfused.infer(batch)
        built = timed_recipe(recipe, calib_count, Path(tmp) / "calibration", eval_limit)
        pipeline = Pipeline(built, Path(tmp) / "run")
        artifacts = pipeline.build()
        runners = {
            p: ov_backend.load(artifacts[f"openvino.{p}"].output, p, threads) for p in timed_precisions()
        }
        for precision, runner in runners.items():
            calls[f"OpenVINO, fused {precision.upper()}"] = lambda runner=runner: runner.infer(batch)
        if "bf16" in runners:  # the INT8 IR's float layers in bf16 (--ov-int8-float bf16): how much it pays
            mixed = ov_backend.OpenVinoRunner(artifacts["openvino.int8"].output, "bf16", threads)
            calls[INT8_BF16] = lambda: mixed.infer(batch)
        fusion = FusionEffect(
            ov_unfused.compiled_layers("Convolution"),
            runners["fp32"].compiled_layers("Convolution"),
            ov_backend.conv_macs(unfused),
            ov_backend.conv_macs(artifacts["openvino.fp32"].output),
        )
        rounds = rounds_of(calls, ROUNDS, min_seconds)
        accuracy = None
        if recipe.evaluation.data:  # scored by the build (its evaluation stage, reused)
            results = json.loads(pipeline.evaluate().output.read_text())["results"]
            accuracy = {
                k: results[k]["map"]
                for k in ("openvino.fp32", "openvino.int8", "openvino.bf16")
                if k in results
            }
            if INT8_BF16 in calls:  # the same INT8 IR, its float layers in bf16, on the same images
                from exporter.pipeline.stages.scoring import EvaluationSettings, Scorer

                scorer = Scorer(EvaluationSettings.from_recipe(built), kept_bytes=0)
                accuracy[INT8_BF16] = scorer(mixed.infer, 8 if recipe.export.dynamic_batch else 1)["map"]
    timings = {name: float(np.median(p50s)) for name, p50s in rounds.items()}
    rows = []
    for name, p50s in rounds.items():
        ratios = [eager / ms for eager, ms in zip(rounds["PyTorch eager, unfused FP32"], p50s, strict=True)]
        rows.append(
            Row(recipe.name, name, timings[name], float(np.median(ratios)), (min(ratios), max(ratios)))
        )
    goals: dict[str, Any] = {
        "fused vs unfused OpenVINO FP32": timings["OpenVINO, unfused FP32"] / timings["OpenVINO, fused FP32"],
        "INT8 vs FP32 IR": timings["OpenVINO, fused FP32"] / timings["OpenVINO, fused INT8"],
    }
    if "OpenVINO, fused BF16" in timings:
        bf16 = timings["OpenVINO, fused BF16"]
        goals["BF16 vs FP32 IR"] = timings["OpenVINO, fused FP32"] / bf16
        goals["BF16 vs onnxruntime FP32"] = timings["onnxruntime, unfused FP32"] / bf16
        goals["INT8 float layers BF16 vs F32"] = timings["OpenVINO, fused INT8"] / timings[INT8_BF16]
    if accuracy:
        goals["INT8 mAP drop (points)"] = 100 * (accuracy["openvino.fp32"] - accuracy["openvino.int8"])
        goals["mAP FP32 / INT8"] = (accuracy["openvino.fp32"], accuracy["openvino.int8"])
        if "openvino.bf16" in accuracy:
            goals["BF16 mAP drop (points)"] = 100 * (accuracy["openvino.fp32"] - accuracy["openvino.bf16"])
        if INT8_BF16 in accuracy:
            drop = accuracy["openvino.int8"] - accuracy[INT8_BF16]
            goals["INT8 float layers BF16 mAP drop vs F32 (points)"] = 100 * drop
    return rows, goals, fusion


GOALS = {
    "fused vs unfused OpenVINO FP32": (">=", 1.2),
    "INT8 vs FP32 IR": (">=", 1.5),
    "BF16 vs FP32 IR": (">=", 1.5),
    "BF16 vs onnxruntime FP32": (">=", 1.2),
    "INT8 mAP drop (points)": ("<=", 1.0),
    "BF16 mAP drop (points)": ("<=", 0.3),
}


def met(name: str, value: float) -> bool | None:
    if name not in GOALS:
        return None
    op, bound = GOALS[name]
    return value >= bound if op == ">=" else value <= bound
