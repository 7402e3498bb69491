"""ZeroHead: per level one conv for class scores and one for GFL box distributions, no stacked convs."""

from __future__ import annotations

import torch
from torch import nn

from exporter.models.damoyolo.postprocess import STRIDES, decode, nms_detections
from exporter.models.heads import MAX_DETECTIONS


class Integral(nn.Module):
    """Holds the bin values 0..reg_max (the checkpoint key head.integral.project)."""

    def __init__(self, reg_max: int):
        super().__init__()
        self.register_buffer("project", torch.linspace(0, reg_max, reg_max + 1))


class Scale(nn.Module):
    """A learnable scalar multiplying the box logits of one level."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class ZeroHead(nn.Module):
    """Outputs by `head_mode`:

    raw: per-level sigmoid scores (N, C, H, W) ×3, then per-level box logits (N, 4·(reg_max+1), H, W) ×3;
    decoded: scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels;
    nms: detections (K, 7) [batch, x1, y1, x2, y2, score, class] after class-wise NMS, top 500 per image.

    `legacy` heads carry one extra (unused) class channel, as in the first official checkpoints.
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        reg_max: int,
        last_kernel_size: int,
        head_mode: str,
        score_threshold: float,
        iou_threshold: float,
        legacy: bool = False,
    ):
        super().__init__()
        self.num_classes, self.reg_max, self.head_mode = num_classes, reg_max, head_mode
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        k = last_kernel_size
        self.integral = Integral(reg_max)
        self.gfl_cls = nn.ModuleList(
            nn.Conv2d(c, num_classes + int(legacy), k, padding=k // 2) for c in in_channels
        )
        self.gfl_reg = nn.ModuleList(nn.Conv2d(c, 4 * (reg_max + 1), k, padding=k // 2) for c in in_channels)
        self.scales = nn.ModuleList(Scale() for _ in in_channels)

    def forward(self, features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        scores = [
            cls(x).sigmoid()[:, : self.num_classes] for cls, x in zip(self.gfl_cls, features, strict=True)
        ]
        regs = [s(reg(x)) for reg, s, x in zip(self.gfl_reg, self.scales, features, strict=True)]
        if self.head_mode == "raw":
            return (*scores, *regs)
        scores, boxes = decode(scores, regs, self.reg_max, STRIDES)
        if self.head_mode == "decoded":
            return scores, boxes
        return (nms_detections(scores, boxes, self.score_threshold, self.iou_threshold, MAX_DETECTIONS),)
