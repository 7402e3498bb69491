"""Export stage: fused model → ONNX with metadata, full checker, onnxruntime parity."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from exporter import __version__
from exporter.backends import onnxruntime as ort_backend
from exporter.errors import CheckFailed, UserError
from exporter.eval.compare import Parity, compare
from exporter.lowering import capability
from exporter.lowering.akconv import PLUGIN_DOMAIN
from exporter.recipe import Recipe
from exporter.stages.fuse import load_fused

INPUT_NAME = "images"


def metadata(recipe: Recipe) -> dict[str, str]:
    """What a deployer needs to feed and read the model. Not the recipe's hash: the ONNX (and every
    stage after it) would change with settings it does not depend on (evaluation, calibration)."""
    return {
        "producer": f"reparam-export {__version__}",
        "model_name": recipe.name,
        "class_names": json.dumps(recipe.class_names),
        "input_size": json.dumps(list(recipe.input_size)),
        "preprocessing": recipe.preprocess.model_dump_json(),
    }


def check_batch(recipe: Recipe, blob: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The probe batch and reference outputs of fused.pt an export is checked on (batch 2 only when
    dynamic; outputs need not be batch-first, e.g. a list of detections)."""
    if recipe.export.dynamic_batch:
        return blob["probe"], blob["outputs"]
    return blob["probe"][:1], blob["first_outputs"]


def reference_parity(recipe: Recipe, blob: dict[str, Any], infer) -> Parity:
    """A runner's outputs on the probe against the FP32 reference outputs stored in fused.pt."""
    probe, reference = check_batch(recipe, blob)
    return compare([r.numpy() for r in reference], infer(probe.numpy()), recipe.thresholds.onnx_rtol)


def require_parity(what: str, parity: Parity) -> None:
    if not parity.ok:
        raise CheckFailed(f"{what} differs from the fused torch model: {parity.describe()}")


def apply_akconv_lowering(model: torch.nn.Module, recipe: Recipe, backend: str) -> dict[str, Any]:
    """Set every AKConv layer to the lowering chosen for `backend`; returns what to record."""
    from exporter.blocks.akconv import AKConv

    layers = [m for m in model.modules() if isinstance(m, AKConv)]
    if not layers:
        return {"layers": 0}
    choice = capability.choose(
        recipe.export.akconv_lowering, backend, recipe.export.opset, recipe.tensorrt.version
    )
    for layer in layers:
        layer.set_lowering(choice.lowering)
    return {"layers": len(layers), "lowering": choice.lowering, "reason": choice.reason}


def export_stage(recipe: Recipe, fused_pt: Path, out: Path, backend: str = "onnxruntime") -> dict[str, Any]:
    model, blob = load_fused(recipe, fused_pt)
    probe, outputs = blob["probe"], blob["outputs"]
    spec = recipe.export
    akconv = apply_akconv_lowering(model, recipe, backend)
    names = spec.output_names or [f"output{i}" for i in range(len(outputs))]
    if len(names) != len(outputs):
        raise UserError(
            f"export.output_names has {len(names)} names but the model returns {len(outputs)} tensors"
        )
    dynamic = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if spec.dynamic_batch else None
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
            opset_version=spec.opset,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic,
            custom_opsets={PLUGIN_DOMAIN: 1} if akconv.get("lowering") == "plugin" else None,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, metadata(recipe))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, out)
    parity = reference_parity(recipe, blob, ort_backend.load(out).infer)
    require_parity("onnxruntime output of the exported model", parity)
    return {"check": parity.as_dict(), "nodes": len(proto.graph.node), "opset": spec.opset, "akconv": akconv}
