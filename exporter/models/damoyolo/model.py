"""The DAMO-YOLO detector: TinyNAS backbone, GiraffeNeckV2, ZeroHead; official checkpoint layout."""

from __future__ import annotations

import copy

import torch
from torch import nn

from exporter.base.errors import UserError
from exporter.models.damoyolo.backbone import BACKBONES
from exporter.models.damoyolo.head import ZeroHead
from exporter.models.damoyolo.neck import GiraffeNeckV2
from exporter.models.damoyolo.structures import STRUCTURES, VARIANTS
from exporter.models.heads import HEAD_MODES, Head


class DamoYolo(nn.Module):
    def __init__(self, backbone: nn.Module, neck: nn.Module, head: ZeroHead):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images: (N, 3, H, W) RGB, 0–255; H and W multiples of 32."""
        return self.head(self.neck(self.backbone(images)))

    def checkpoint_hint(self, state: dict[str, torch.Tensor]) -> str:
        """Why an official checkpoint may not fit: its class conv width (legacy heads add one)."""
        weight = state.get("head.gfl_cls.0.weight")
        ours = self.head.gfl_cls[0].out_channels
        if weight is None or weight.shape[0] == ours:
            return ""
        n, classes = weight.shape[0], self.head.num_classes
        if n == classes + 1:
            fix = "set legacy: true"
        elif n == classes:
            fix = "set legacy: false"
        else:
            fix = f"set num_classes: {n} (or {n - 1} with legacy: true)"
        return f"the checkpoint has {n} class channels, the model {ours}: {fix} in model.kwargs"


def variant_config(variant: str) -> dict:
    key = str(variant).lower()
    if key not in VARIANTS:
        raise UserError(f"unknown DAMO-YOLO variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[key]


def head(
    variant: str = "s",
    head_mode: str = "decoded",
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
    **_other_kwargs,
) -> Head:
    """The output contract of the model `build_damoyolo(**kwargs)` builds: its head mode, reg_max and
    NMS thresholds (by default the variant's official evaluation values)."""
    cfg = variant_config(variant)
    if head_mode not in HEAD_MODES:
        raise UserError(f"head_mode must be one of {', '.join(HEAD_MODES)}, got {head_mode!r}")
    return Head.of(
        head_mode,
        cfg["score_threshold"] if score_threshold is None else score_threshold,
        cfg["iou_threshold"] if iou_threshold is None else iou_threshold,
        reg_max=cfg["reg_max"],
    )


def build_damoyolo(
    variant: str = "s",
    num_classes: int = 80,
    legacy: bool = False,
    head_mode: str = "decoded",
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
) -> DamoYolo:
    """DAMO-YOLO T/S/M/L/Ns/Nm/Nl (variant t, s, m, l, ns, nm, nl) in training form, eval mode.

    Official checkpoints load strictly; `legacy=True` for those whose class conv has num_classes + 1
    outputs. `head_mode`: raw | decoded | nms (see ZeroHead); the thresholds only act in nms mode.
    """
    cfg = variant_config(variant)
    contract = head(variant, head_mode, score_threshold, iou_threshold)
    backbone = BACKBONES[cfg["backbone"]](STRUCTURES[cfg["structure"]], cfg["act"])
    neck = GiraffeNeckV2(
        cfg["in_channels"],
        cfg["out_channels"],
        cfg["depth"],
        cfg["hidden_ratio"],
        cfg["act"],
        cfg["depthwise"],
    )
    return DamoYolo(
        backbone,
        neck,
        ZeroHead(
            cfg["out_channels"],
            num_classes,
            contract.reg_max,
            cfg["last_kernel_size"],
            contract.mode,
            contract.score_threshold,
            contract.iou_threshold,
            legacy,
        ),
    ).eval()


def official_deploy_form(model: nn.Module) -> nn.Module:
    """What the official tools measure sizes on: every RepConv re-parameterized, every other BatchNorm
    kept (a copy; `model` is left as it is)."""
    from exporter.blocks import RepConv
    from exporter.blocks.fuse import set_module

    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, RepConv):
            set_module(model, name, module.fuse())
    return model
