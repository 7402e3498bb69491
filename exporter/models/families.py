"""Model families by the name a recipe gives them (`model.adapter`).

A family gives the output contract (`Head`) of its models — evaluation, the INT8 search and end-to-end
NMS ask it how outputs become detections, never the builder's module — and, where its checkpoint holds
the whole model (Ultralytics), loads the model from that checkpoint alone, says the class names it
holds and what the family's own tools read of an export (exporter.models.family.Family).
"""

from __future__ import annotations

from exporter.base.errors import UserError
from exporter.models.family import DecodedFamily, Family, ModelRef
from exporter.models.heads import Head


def _table() -> dict[str, Family]:
    from exporter.models.damoyolo import FAMILY as DAMOYOLO
    from exporter.models.ultralytics import FAMILY as ULTRALYTICS

    return {f.name: f for f in (DecodedFamily(), DAMOYOLO, ULTRALYTICS)}


FAMILIES: dict[str, Family] = _table()


class NoFamily(Family):
    """A model whose recipe names no family: no output contract, no checkpoint of its own."""

    name = "none"

    def head(self, model: ModelRef) -> Head:
        raise UserError(
            "the model's output contract is unknown: set model.adapter in the recipe "
            f"(one of {', '.join(FAMILIES)}) to evaluate it or append NMS"
        )


def family(name: str | None) -> Family:
    """The recipe's model family (a family with no contract where the recipe names none)."""
    return NoFamily() if name is None else FAMILIES[name]
