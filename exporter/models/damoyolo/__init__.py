"""DAMO-YOLO (tinyvision/damo-yolo) T/S/M/L and nano Ns/Nm/Nl, loading official checkpoints strictly."""

from exporter.models.damoyolo.model import (
    DamoYolo,
    build_damoyolo,
    head,
    official_deploy_form,
    variant_config,
)
from exporter.models.damoyolo.structures import VARIANTS

__all__ = ["VARIANTS", "DamoYolo", "build_damoyolo", "head", "official_deploy_form", "variant_config"]
