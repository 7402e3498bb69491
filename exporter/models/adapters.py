"""Model adapters: what differs between model families, named in the recipe (`model.adapter`).

An adapter gives the output contract (`Head`) of the model its family's builder returns for the
recipe's `model.kwargs`: evaluation, the INT8 search and end-to-end NMS ask it how outputs become
detections, never the builder's module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exporter.errors import UserError
from exporter.models import damoyolo
from exporter.models.heads import Head


def decoded(**_builder_kwargs: Any) -> Head:
    """Scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels (the demo and embedded detectors)."""
    return Head("decoded", score_threshold=0.05, iou_threshold=0.65)


ADAPTERS: dict[str, Callable[..., Head]] = {
    "decoded": decoded,
    "damoyolo": damoyolo.head,
}


def head(adapter: str | None, kwargs: dict[str, Any]) -> Head:
    """The output contract of the recipe's model; a model without an adapter has none to offer."""
    if adapter is None:
        raise UserError(
            "the model's output contract is unknown: set model.adapter in the recipe "
            f"(one of {', '.join(ADAPTERS)}) to evaluate it or append NMS"
        )
    return ADAPTERS[adapter](**kwargs)
