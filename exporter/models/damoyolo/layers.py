"""Small DAMO-YOLO layers. Attribute names follow the official checkpoints' keys.

Every BatchNorm uses eps 1e-3 (the official detector sets it after construction; it is not
stored in checkpoints). Layers whose conv/BN names the generic fuser does not know define
`fuse()`, which the fuser calls through its protocol.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from exporter.blocks import ConvAct, ConvBN, RepConv, fold_conv_bn

BN_EPS = 1e-3


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "silu": nn.SiLU, "identity": nn.Identity}[name]()


def batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, act: str = "silu", groups: int = 1) -> ConvBN:
    """The official ConvBNAct (keys conv.*, bn.*): our ConvBN with DAMO's eps."""
    return ConvBN(cin, cout, k, stride, groups, act=activation(act), bn_eps=BN_EPS)


def rep_conv(cin: int, cout: int, k: int = 3, stride: int = 1, act: str = "identity") -> RepConv:
    """The official RepConv: kxk and 1x1 branches, no identity branch."""
    return RepConv(cin, cout, k, stride, act=activation(act), bn_eps=BN_EPS)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never more than 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvKXBN(nn.Module):
    """Conv (no bias) + BN, keys conv1.* / bn1.*."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.bn1 = batchnorm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))

    def fuse(self) -> nn.Module:
        return fold_conv_bn(self.conv1, self.bn1)


class ConvKXBNAct(nn.Module):
    """ConvKXBN followed by an activation, keys conv.conv1.* / conv.bn1.*."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, act: str = "relu"):
        super().__init__()
        self.conv = ConvKXBN(cin, cout, k, stride)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels to channels) then ConvBNAct."""

    def __init__(self, cin: int, cout: int, k: int, act: str):
        super().__init__()
        self.conv = conv_bn_act(4 * cin, cout, k, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(patches, 1))


class SPPBottleneck(nn.Module):
    """1x1 conv to half width, max pools 5/9/13 concatenated with it, 1x1 conv; always SiLU."""

    def __init__(self, cin: int, cout: int, pools: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        hidden = cin // 2
        self.conv1 = conv_bn_act(cin, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in pools)
        self.conv2 = conv_bn_act(hidden * (len(pools) + 1), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, *(pool(x) for pool in self.m)], 1))


class MobileV3Block(nn.Module):
    """Inverted residual: 1x1 expand, 5x5 depthwise (strided), 1x1 project; residual when shapes allow.

    The backbone variant has an (always disabled) squeeze-excitation slot after the depthwise BN,
    which shifts the official key indices of the layers after it; `se_slot` reproduces that.
    """

    def __init__(self, cin: int, cout: int, stride: int, act: str, expansion: float, se_slot: bool):
        super().__init__()
        hidden = make_divisible(math.ceil(cout * expansion))
        layers = [
            nn.Conv2d(cin, hidden, 1, bias=False),
            batchnorm(hidden),
            activation(act),
            nn.Conv2d(hidden, hidden, 5, stride, 2, groups=hidden, bias=False),
            batchnorm(hidden),
            *([nn.Identity()] if se_slot else []),
            activation(act),
            nn.Conv2d(hidden, cout, 1, bias=False),
            batchnorm(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


class DepthwiseConvBN(nn.Module):
    """Depthwise kxk conv + BN + act, then pointwise 1x1 conv + BN + act (the nano necks' downsampler)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, act: str):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, stride, (k - 1) // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.dwnorm = batchnorm(cin)
        self.pwnorm = batchnorm(cout)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))

    def fuse(self) -> nn.Module:
        return nn.Sequential(
            ConvAct(fold_conv_bn(self.depthwise, self.dwnorm), self.act),
            ConvAct(fold_conv_bn(self.pointwise, self.pwnorm), self.act),
        )
