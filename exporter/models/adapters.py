"""Model adapters: what differs between model families, named in the recipe (`model.adapter`).

An adapter gives the output contract (`Head`) of its family's models — evaluation, the INT8 search and
end-to-end NMS ask it how outputs become detections, never the builder's module — and, for families
whose checkpoint holds the whole model (Ultralytics), loads the model from that checkpoint alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from exporter.core.errors import UserError
from exporter.core.libraries import Library
from exporter.models import damoyolo, ultralytics
from exporter.models.heads import Decoded, Head

ULTRALYTICS_CONF, ULTRALYTICS_IOU, ULTRALYTICS_MAX_DET = 0.001, 0.7, 300  # its validation defaults


@dataclass(frozen=True)
class ModelRef:
    """What an adapter may read of a recipe's model: the builder's keyword arguments, the checkpoint
    and the packages trusted for unpickling it."""

    kwargs: dict[str, Any]
    checkpoint: Path | None = None
    trust: tuple[str, ...] = ()


DECODED = Decoded(score_threshold=0.05, iou_threshold=0.65)


def decoded(model: ModelRef) -> Head:
    """Scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels (the demo and embedded detectors)."""
    return DECODED


def damoyolo_head(model: ModelRef) -> Head:
    return damoyolo.head(**model.kwargs)


def ultralytics_head(model: ModelRef) -> Head:
    """Detect: NMS at Ultralytics' validation thresholds; YOLOv10/YOLO26 end to end and RT-DETR: none."""
    mode = ultralytics.head_mode(ultralytics.load(model.checkpoint, model.trust))
    return Head.of(mode, ULTRALYTICS_CONF, ULTRALYTICS_IOU, max_detections=ULTRALYTICS_MAX_DET)


def ultralytics_metadata(model: ModelRef, names: list[str], input_size: tuple[int, int]) -> dict[str, Any]:
    return ultralytics.export_metadata(ultralytics.load(model.checkpoint, model.trust), names, input_size)


def ultralytics_names(model: ModelRef) -> list[str]:
    return ultralytics.recipe_fields(model.checkpoint, model.trust)["class_names"]


def ultralytics_load(checkpoint: Path, trust: tuple[str, ...]) -> nn.Module:
    return ultralytics.load(checkpoint, trust)


@dataclass(frozen=True)
class Adapter:
    head: Callable[[ModelRef], Head]
    load: Callable[[Path, tuple[str, ...]], nn.Module] | None = None  # the model from its checkpoint
    libraries: tuple[Library, ...] = ()  # optional packages its models need (doctor lists them)
    # what the family's own tools read of an export (Ultralytics' predictor), written beside ours
    metadata: Callable[[ModelRef, list[str], tuple[int, int]], dict[str, Any]] | None = None
    names: Callable[[ModelRef], list[str]] | None = None  # class names the checkpoint holds


ADAPTERS: dict[str, Adapter] = {
    "decoded": Adapter(decoded),
    "damoyolo": Adapter(damoyolo_head),
    "ultralytics": Adapter(
        ultralytics_head, ultralytics_load, (ultralytics.LIBRARY,), ultralytics_metadata, ultralytics_names
    ),
}


def family_metadata(adapter: str | None, model: ModelRef, names: list[str], size: tuple[int, int]) -> dict:
    """What the model family's own tools read of an export ({} for families without such tools)."""
    found = ADAPTERS[adapter].metadata if adapter is not None else None
    return found(model, list(names), tuple(size)) if found else {}


def class_names(adapter: str | None, model: ModelRef) -> list[str]:
    """The class names the model's checkpoint holds ([] for families whose checkpoints hold none)."""
    found = ADAPTERS[adapter].names if adapter is not None else None
    return list(found(model)) if found else []


def head(adapter: str | None, model: ModelRef) -> Head:
    """The output contract of the recipe's model; a model without an adapter has none to offer."""
    if adapter is None:
        raise UserError(
            "the model's output contract is unknown: set model.adapter in the recipe "
            f"(one of {', '.join(ADAPTERS)}) to evaluate it or append NMS"
        )
    return ADAPTERS[adapter].head(model)
