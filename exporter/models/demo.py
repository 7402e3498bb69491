"""Demo detector: a small DAMO-YOLO-style model holding every block the toolchain handles.

RefConv and RepConv in the backbone, an AKConv downsampling into the last stage, a RepGFPN-style
neck of RepConvs (top-down then bottom-up), and a GFL head: sigmoid class scores and a
distribution over 0..reg_max stride units per box side, integrated into distances. Priors sit at
(col·stride, row·stride), boxes are prior ∓ distances (DAMO-YOLO's convention).

`forward` returns (scores (B, A, C), boxes (B, A, 4) xyxy in input pixels); `forward_raw` returns
what the training loss needs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from exporter.blocks import ConvBN, RefConv, RepConv
from exporter.blocks.akconv import AKConv

STRIDES = (8, 16, 32)


def refconv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(RefConv(cin, cout, 3, stride), nn.BatchNorm2d(cout), nn.SiLU())


class RepBlock(nn.Module):
    """ConvBN 1x1 to `cout`, then RepConv 3x3 with identity, summed with the projection (a residual)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = ConvBN(cin, cout, 1, act=nn.SiLU())
        self.rep = RepConv(cout, cout, 3, identity=True, act=nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y + self.rep(y)


class GFLHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, reg_max: int):
        super().__init__()
        self.stem = ConvBN(channels, channels, 3, act=nn.SiLU())
        self.cls = nn.Conv2d(channels, num_classes, 1)
        self.reg = nn.Conv2d(channels, 4 * (reg_max + 1), 1)
        nn.init.constant_(self.cls.bias, -4.6)  # prior probability 0.01

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return self.cls(x).flatten(2).transpose(1, 2), self.reg(x).flatten(2).transpose(1, 2)


def make_priors(
    sizes: list[tuple[int, int]], device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prior centres (A, 2) at (col·stride, row·stride) and their strides (A,)."""
    centres, strides = [], []
    for (h, w), s in zip(sizes, STRIDES, strict=True):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=dtype),
            torch.arange(w, device=device, dtype=dtype),
            indexing="ij",
        )
        centres.append(torch.stack([xs, ys], -1).reshape(-1, 2) * s)
        strides.append(torch.full((h * w,), float(s), device=device, dtype=dtype))
    return torch.cat(centres), torch.cat(strides)


class DemoDetector(nn.Module):
    def __init__(
        self, num_classes: int = 5, reg_max: int = 7, widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    ):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.num_classes, self.reg_max = num_classes, reg_max
        self.stem = ConvBN(3, w0, 3, stride=2, act=nn.SiLU())  # /2
        self.stage1 = nn.Sequential(
            refconv_bn(w0, w1, 2), RepConv(w1, w1, 3, identity=True, act=nn.SiLU())
        )  # /4
        self.stage2 = nn.Sequential(
            refconv_bn(w1, w2, 2), RepConv(w2, w2, 3, identity=True, act=nn.SiLU())
        )  # /8
        self.stage3 = nn.Sequential(ConvBN(w2, w3, 3, stride=2, act=nn.SiLU()), RepBlock(w3, w3))  # /16
        self.stage4 = nn.Sequential(AKConv(w3, w4, num_param=5, stride=2), RepBlock(w4, w4))  # /32
        self.reduce5 = ConvBN(w4, w3, 1, act=nn.SiLU())
        self.td4 = RepBlock(w3 + w3, w3)
        self.reduce4 = ConvBN(w3, w2, 1, act=nn.SiLU())
        self.td3 = RepBlock(w2 + w2, w2)
        self.down3 = ConvBN(w2, w2, 3, stride=2, act=nn.SiLU())
        self.bu4 = RepBlock(w2 + w2, w3)
        self.down4 = ConvBN(w3, w3, 3, stride=2, act=nn.SiLU())
        self.bu5 = RepBlock(w3 + w3, w4)
        self.heads = nn.ModuleList(GFLHead(c, num_classes, reg_max) for c in (w2, w3, w4))
        self.register_buffer("project", torch.arange(reg_max + 1, dtype=torch.float32), persistent=False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage2(self.stage1(self.stem(images)))
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        p5 = self.reduce5(c5)
        p4 = self.td4(torch.cat([F.interpolate(p5, scale_factor=2.0), c4], 1))
        r4 = self.reduce4(p4)
        p3 = self.td3(torch.cat([F.interpolate(r4, scale_factor=2.0), c3], 1))
        n4 = self.bu4(torch.cat([self.down3(p3), r4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return [p3, n4, n5]

    def forward_raw(self, images: torch.Tensor):
        """Class logits (B, A, C), box distributions (B, A, 4, reg_max+1), prior centres, strides."""
        maps = self.features(images)
        outs = [head(m) for head, m in zip(self.heads, maps, strict=True)]
        logits = torch.cat([o[0] for o in outs], 1)
        dist = torch.cat([o[1] for o in outs], 1).reshape(logits.shape[0], -1, 4, self.reg_max + 1)
        centres, strides = make_priors([m.shape[2:] for m in maps], images.device, images.dtype)
        return logits, dist, centres, strides

    def decode(self, dist: torch.Tensor, centres: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """xyxy boxes = prior ∓ (softmax-expected distance · stride)."""
        distances = (dist.softmax(-1) * self.project).sum(-1) * strides[:, None]
        sign = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=dist.dtype, device=dist.device)
        return centres.repeat(1, 2) + sign * distances

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, dist, centres, strides = self.forward_raw(images)
        return logits.sigmoid(), self.decode(dist, centres, strides)


WEIGHTS = Path(__file__).parent / "weights" / "demo_shapes.pt"


def build_demo_detector(pretrained: bool = True) -> DemoDetector:
    """The demo detector, with the weights trained on the shapes dataset shipped in the package."""
    model = DemoDetector()
    if pretrained:
        if not WEIGHTS.is_file():
            raise FileNotFoundError(
                f"{WEIGHTS} is missing; train it with `python -m exporter.models.demo_train`"
            )
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True)["model"])
    return model.eval()
