"""Export stage: fused model → ONNX with metadata, full checker, onnxruntime parity."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from exporter.base.errors import UserError, setting
from exporter.base.version import __version__
from exporter.blocks.lowering.akconv import PLUGIN_DOMAIN
from exporter.blocks.lowering.capability import Choice
from exporter.models.families import family
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import reference
from exporter.pipeline.stages.graph import Record

INPUT_NAME = "images"


@dataclass(frozen=True)
class ExportSettings:
    opset: int
    dynamic_batch: bool
    output_names: tuple[str, ...] | None
    akconv: Choice  # the AKConv lowering chosen for the target (by its descriptor), and why
    metadata: dict[str, str]
    noise_factor: float  # the FP32 check's bound (exporter.pipeline.stages.reference)

    @classmethod
    def from_recipe(cls, recipe: Recipe, akconv: Choice) -> ExportSettings:
        spec = recipe.export
        return cls(
            spec.opset,
            spec.dynamic_batch,
            tuple(spec.output_names) if spec.output_names is not None else None,
            akconv,
            metadata(recipe),
            recipe.thresholds.fp32_noise_factor,
        )


def metadata(recipe: Recipe) -> dict[str, str]:
    """What a deployer needs to feed and read the model, and what the model family's own tools read
    (Ultralytics' predictor: `YOLO("model.sim.onnx")` predicts with it). Not the recipe's hash: the ONNX
    (and every stage after it) would change with settings it does not depend on (evaluation, calibration)."""
    own = family(recipe.model.adapter).metadata(
        recipe.model.ref(), list(recipe.class_names), tuple(recipe.input_size)
    )
    return {
        **{key: str(value) for key, value in own.items()},
        "producer": f"reparam-export {__version__}",
        "model_name": recipe.name,
        "class_names": json.dumps(recipe.class_names),
        "input_size": json.dumps(list(recipe.input_size)),
        "preprocessing": recipe.preprocess.model_dump_json(),
    }


def apply_akconv_lowering(model: torch.nn.Module, choice: Choice) -> dict[str, Any]:
    """Set every AKConv layer to the chosen lowering; returns what to record: the layers lowered, and
    each block that looks like AKConv but is not ours (the fuser did not adopt it), with why."""
    from exporter.blocks.akconv import AKConv, looks_like_akconv, why_not_akconv

    layers = [m for m in model.modules() if isinstance(m, AKConv)]
    refuted = "computed as AKConv it differs (the fuse stage's NOT FUSED has the proof)"
    not_lowered = [
        f"{path} ({type(m).__name__}): {why_not_akconv(m) or refuted}"
        for path, m in model.named_modules()
        if path and looks_like_akconv(m)
    ]
    for layer in layers:
        layer.set_lowering(choice.lowering)
    lowered = {"lowering": choice.lowering, "reason": choice.reason} if layers else {}
    return {"layers": len(layers), **lowered, **({"not_lowered": not_lowered} if not_lowered else {})}


def output_names(requested: tuple[str, ...] | list[str] | None, count: int) -> list[str]:
    """The ONNX output names for a model of `count` outputs: the requested ones, else output0, …"""
    names = list(requested or [f"output{i}" for i in range(count)])
    if len(names) != count:
        raise UserError(
            f"{setting('export.output_names')} has {len(names)} names but the model returns {count} "
            "tensors; name each output once, or drop export.output_names"
        )
    return names


@dataclass(frozen=True)
class ExportRecord(Record):
    check: dict[str, Any]  # onnxruntime against the fused model
    nodes: int
    opset: int
    akconv: dict[str, Any]  # layers lowered, the lowering and why; blocks like AKConv not lowered, and why

    def describe(self) -> str:
        check = reference.describe_check(self.check)
        detail = f"opset {self.opset}, {self.nodes} nodes; onnxruntime {check}"
        akconv = self.akconv
        if akconv.get("layers"):
            detail += f"; AKConv×{akconv['layers']} → {akconv['lowering']} ({akconv['reason']})"
        if akconv.get("not_lowered"):
            detail += f"; AKConv NOT LOWERED: {'; '.join(akconv['not_lowered'])}"
        return detail


def run(settings: ExportSettings, fused_pt: Path, out: Path) -> ExportRecord:
    import onnx  # here: importing it takes a second a CLI start skips

    model, blob = reference.load_fused(fused_pt)
    probe, outputs = blob["probe"], blob["outputs"]
    akconv = apply_akconv_lowering(model, settings.akconv)
    names = output_names(settings.output_names, len(outputs))
    dynamic = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if settings.dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it is the one that
        # targets opsets 13–19 directly and supports custom symbolic nodes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (probe[:1],),
            buffer,
            dynamo=False,
            opset_version=settings.opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic,
            custom_opsets={PLUGIN_DOMAIN: 1} if akconv.get("lowering") == "plugin" else None,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, settings.metadata)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, out)
    parity = reference.onnxruntime_parity("the exported model", out, fused_pt, settings.noise_factor)
    return ExportRecord(parity.as_dict(), len(proto.graph.node), settings.opset, akconv)
