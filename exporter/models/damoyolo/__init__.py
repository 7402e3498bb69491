"""DAMO-YOLO (tinyvision/damo-yolo) T/S/M/L and nano Ns/Nm/Nl, loading official checkpoints strictly."""

from exporter.models.damoyolo.model import (
    DamoYolo,
    build_damoyolo,
    head,
    official_deploy_form,
    variant_config,
)
from exporter.models.damoyolo.structures import VARIANTS
from exporter.models.family import Family, ModelRef
from exporter.models.heads import Head


class DamoYoloFamily(Family):
    """DAMO-YOLO: built by build_damoyolo; its head mode and thresholds from the builder's arguments."""

    name = "damoyolo"

    def head(self, model: ModelRef) -> Head:
        return head(**model.kwargs)


FAMILY = DamoYoloFamily()

__all__ = [
    "FAMILY",
    "VARIANTS",
    "DamoYolo",
    "build_damoyolo",
    "head",
    "official_deploy_form",
    "variant_config",
]
