"""A model family as one object (`Family`): what differs between families; exporter.models.families
holds them by the name a recipe gives (`model.adapter`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from exporter.base.libraries import Library
from exporter.models.heads import Decoded, Head


@dataclass(frozen=True)
class ModelRef:
    """What a family may read of a recipe's model: the builder's keyword arguments, the checkpoint
    and the packages trusted for unpickling it."""

    kwargs: dict[str, Any]
    checkpoint: Path | None = None
    trust: tuple[str, ...] = ()


class Family:
    """A model family. `loads_checkpoints`: its checkpoints hold the whole model (no builder needed)."""

    name: str
    libraries: tuple[Library, ...] = ()  # optional packages its models need (doctor lists them)
    loads_checkpoints = False

    def head(self, model: ModelRef) -> Head:
        raise NotImplementedError

    def load(self, checkpoint: Path, trust: tuple[str, ...]) -> nn.Module:
        """The model from its checkpoint alone (families that `loads_checkpoints`)."""
        raise NotImplementedError

    def names(self, model: ModelRef) -> list[str]:
        """The class names its checkpoint holds ([] where checkpoints hold none)."""
        return []

    def notes(self, model: ModelRef) -> list[str]:
        """What reading the model's checkpoint has to say (printed and recorded by a build)."""
        return []

    def metadata(self, model: ModelRef, names: list[str], input_size: tuple[int, int]) -> dict[str, Any]:
        """What the family's own tools read of an export, written beside ours ({} without such tools)."""
        return {}


DECODED = Decoded(score_threshold=0.05, iou_threshold=0.65)


class DecodedFamily(Family):
    """Models whose outputs are scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels (the demo and
    embedded detectors, and builders of the same contract)."""

    name = "decoded"

    def head(self, model: ModelRef) -> Head:
        return DECODED
