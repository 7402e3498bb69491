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

from exporter.errors import UserError
from exporter.models import damoyolo
from exporter.models.heads import Head

ULTRALYTICS_CONF, ULTRALYTICS_IOU, ULTRALYTICS_MAX_DET = 0.001, 0.7, 300  # its validation defaults


@dataclass(frozen=True)
class ModelRef:
    """What an adapter may read of a recipe's model: the builder's keyword arguments, the checkpoint
    and the packages trusted for unpickling it."""

    kwargs: dict[str, Any]
    checkpoint: Path | None = None
    trust: tuple[str, ...] = ()


DECODED = Head("decoded", score_threshold=0.05, iou_threshold=0.65)


def decoded(model: ModelRef) -> Head:
    """Scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels (the demo and embedded detectors)."""
    return DECODED


def damoyolo_head(model: ModelRef) -> Head:
    return damoyolo.head(**model.kwargs)


def ultralytics_head(model: ModelRef) -> Head:
    """Detect: NMS at Ultralytics' validation thresholds; YOLOv10/YOLO26 end to end: none."""
    from exporter.models import ultralytics

    end2end = ultralytics.end_to_end(ultralytics.load(model.checkpoint, model.trust))
    mode = "yolo_end2end" if end2end else "yolo"
    return Head(mode, ULTRALYTICS_CONF, ULTRALYTICS_IOU, max_detections=ULTRALYTICS_MAX_DET)


def ultralytics_load(checkpoint: Path, trust: tuple[str, ...]) -> nn.Module:
    from exporter.models import ultralytics

    return ultralytics.load(checkpoint, trust)


@dataclass(frozen=True)
class Adapter:
    head: Callable[[ModelRef], Head]
    load: Callable[[Path, tuple[str, ...]], nn.Module] | None = None  # the model from its checkpoint


ADAPTERS: dict[str, Adapter] = {
    "decoded": Adapter(decoded),
    "damoyolo": Adapter(damoyolo_head),
    "ultralytics": Adapter(ultralytics_head, ultralytics_load),
}


def head(adapter: str | None, model: ModelRef) -> Head:
    """The output contract of the recipe's model; a model without an adapter has none to offer."""
    if adapter is None:
        raise UserError(
            "the model's output contract is unknown: set model.adapter in the recipe "
            f"(one of {', '.join(ADAPTERS)}) to evaluate it or append NMS"
        )
    return ADAPTERS[adapter].head(model)
