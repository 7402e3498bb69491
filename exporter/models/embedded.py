"""Embedded default: a small, untrained, detector-shaped model holding every block type.

Backbone (ConvBN stem, RefConv, RepConv, QARepVGG, YOLOv7RepConv), a two-level top-down neck of
RepConvs with an AKConv refining the middle level, and a GFL-style head giving sigmoid class
scores and decoded xyxy boxes. Weights, BatchNorm statistics and AKConv offsets are random but
seeded, so fusion and the AKConv lowerings are exercised with non-trivial numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from exporter.blocks import ConvBN, QARepVGG, RefConv, RepConv, YOLOv7RepConv
from exporter.blocks.akconv import AKConv


class Head(nn.Module):
    """Per level: a shared stem, then class logits and box distances (in strides)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.stem = ConvBN(channels, channels, 3, act=nn.SiLU())
        self.cls = nn.Conv2d(channels, num_classes, 1)
        self.reg = nn.Conv2d(channels, 4, 1)

    def forward(self, x: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        batch, _, height, width = x.shape
        scores = self.cls(x).flatten(2).transpose(1, 2).sigmoid()
        dist = F.relu(self.reg(x)).flatten(2).transpose(1, 2) * stride
        ys = torch.arange(height, dtype=x.dtype, device=x.device) * stride
        xs = torch.arange(width, dtype=x.dtype, device=x.device) * stride
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        priors = torch.stack([grid_x, grid_y, grid_x, grid_y], -1).reshape(1, -1, 4)
        sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=x.dtype, device=x.device)
        return scores, priors + sign * dist


class EmbeddedDetector(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 16):
        super().__init__()
        w = width
        self.stem = ConvBN(3, w, 3, stride=2, act=nn.SiLU())  # /2
        self.stage1 = nn.Sequential(RefConv(w, 2 * w, 3, stride=2), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.stage2 = nn.Sequential(  # /8
            RepConv(2 * w, 4 * w, 3, stride=2, act=nn.ReLU()),
            RepConv(4 * w, 4 * w, 3, groups=2, dilation=2, identity=True, act=nn.ReLU()),
        )
        self.stage3 = nn.Sequential(  # /16
            QARepVGG(4 * w, 8 * w, 3, stride=2, act=nn.ReLU()),
            QARepVGG(8 * w, 8 * w, 3, act=nn.ReLU()),
        )
        self.stage4 = nn.Sequential(  # /32
            YOLOv7RepConv(8 * w, 8 * w, 3, s=2),
            YOLOv7RepConv(8 * w, 8 * w, 3, g=4),
        )
        self.lateral = ConvBN(8 * w, 4 * w, 1, act=nn.SiLU())
        self.merge16 = RepConv(12 * w, 4 * w, 3, act=nn.SiLU())
        self.merge8 = RepConv(8 * w, 4 * w, 5, identity=True, act=nn.SiLU())
        self.refine16 = AKConv(4 * w, 4 * w, num_param=5)
        self.heads = nn.ModuleList(Head(4 * w, num_classes) for _ in range(3))
        self.strides = (8, 16, 32)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = self.stage2(self.stage1(self.stem(images)))
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        p5 = self.lateral(c5)
        p4 = self.merge16(torch.cat([F.interpolate(p5, scale_factor=2.0), c4], 1))
        p3 = self.merge8(torch.cat([F.interpolate(p4, scale_factor=2.0), c3], 1))
        p4 = self.refine16(p4)
        outs = [head(p, s) for head, p, s in zip(self.heads, (p3, p4, p5), self.strides, strict=True)]
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)


def build_embedded_detector(num_classes: int = 3, width: int = 16, seed: int = 0) -> EmbeddedDetector:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = EmbeddedDetector(num_classes, width)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        randomize_batchnorm(model, generator)
        for module in model.modules():  # offsets of a few pixels, some leaving the map
            if isinstance(module, AKConv):
                module.p_conv.weight.copy_(
                    torch.randn(module.p_conv.weight.shape, generator=generator) * 0.02
                )
                module.p_conv.bias.copy_(torch.randn(module.p_conv.bias.shape, generator=generator) * 3)
    return model.eval()
