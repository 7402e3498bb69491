"""Multi-branch re-parameterizable convolutions and their fusion into one conv.

RepConv (RepVGG / DAMO-YOLO RepGFPN): kxk conv+BN, 1x1 conv+BN, optional identity BN.
YOLOv7RepConv: the same branches under YOLOv7's module names, identity on by default.
QARepVGG: kxk conv+BN, 1x1 conv and identity without BN, one BN after the sum.
Fused: W = W_kxk + centre_pad(W_1x1) + W_id, b = Σ b (DESIGN.md §3).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from exporter.blocks.convbn import ConvAct, bn_scale_shift, conv_with, fold_kernel_bn, make_act


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int = 1,
    groups: int = 1,
    bn_affine: bool = True,
    bn_eps: float = 1e-5,
    named: bool = True,
) -> nn.Sequential:
    """Conv (no bias) + BN branch; `named` gives keys conv/bn (RepVGG) instead of 0/1 (YOLOv7)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False)
    bn = nn.BatchNorm2d(out_channels, eps=bn_eps, affine=bn_affine)
    if named:
        return nn.Sequential(OrderedDict(conv=conv, bn=bn))
    return nn.Sequential(conv, bn)


def centre_pad(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a 1x1 kernel to size x size with the tap at the centre."""
    pad = size // 2
    return F.pad(kernel, [pad, pad, pad, pad])


def identity_kernel(channels: int, groups: int, size: int, device: torch.device) -> torch.Tensor:
    """Kernel (float64) of a grouped conv that copies its input: 1 at [o, o mod (C/g), k//2, k//2]."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, size, size, dtype=torch.float64, device=device)
    index = torch.arange(channels, device=device)
    kernel[index, index % per_group, size // 2, size // 2] = 1.0
    return kernel


def fold_branch(branch: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    conv, bn = branch[0], branch[1]
    return fold_kernel_bn(conv.weight, conv.bias, bn)


def fold_identity_bn(bn: _BatchNorm, groups: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    t, s = bn_scale_shift(bn)
    kernel = identity_kernel(bn.num_features, groups, size, t.device)
    return kernel * t.view(-1, 1, 1, 1), s


class _MultiBranch(nn.Module):
    """Shared geometry checks for the RepConv family."""

    def _check_geometry(self, in_channels, out_channels, kernel_size, stride, groups):
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        return stride == 1 and in_channels == out_channels

    def _deploy(self, template: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> ConvAct:
        return ConvAct(conv_with(template, weight, bias), self.nonlinearity)


class RepConv(_MultiBranch):
    """RepVGG / DAMO-YOLO RepConv: act(BN(conv_kxk(x)) + BN(conv_1x1(x)) [+ BN(x)]).

    Any odd kernel size, groups, stride and dilation; the identity branch exists only when
    `identity=True`, stride is 1 and in == out. Module names follow the official code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        identity: bool = False,
        act: nn.Module | None = None,
        bn_affine: bool = True,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        can_identity = self._check_geometry(in_channels, out_channels, kernel_size, stride, groups)
        self.groups = groups
        padding = dilation * (kernel_size // 2)
        self.rbr_dense = conv_bn(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bn_affine, bn_eps
        )
        self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, 0, 1, groups, bn_affine, bn_eps)
        self.rbr_identity = (
            nn.BatchNorm2d(in_channels, eps=bn_eps, affine=bn_affine) if identity and can_identity else None
        )
        self.nonlinearity = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.nonlinearity(y)

    def fuse(self) -> ConvAct:
        dense = self.rbr_dense[0]
        k = dense.kernel_size[0]
        w, b = fold_branch(self.rbr_dense)
        w1, b1 = fold_branch(self.rbr_1x1)
        w, b = w + centre_pad(w1, k), b + b1
        if self.rbr_identity is not None:
            wi, bi = fold_identity_bn(self.rbr_identity, self.groups, k)
            w, b = w + wi, b + bi
        return self._deploy(dense, w, b)


class YOLOv7RepConv(RepConv):
    """YOLOv7's RepConv: 3x3 conv+BN, 1x1 conv+BN and an identity BN when stride 1 and in == out.

    Module names follow YOLOv7 (branches indexed 0/1). Fused correctly for groups > 1, where
    YOLOv7's own helper is not.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 3,
        s: int = 1,
        g: int = 1,
        act: nn.Module | None = None,
        bn_eps: float = 1e-5,
    ):
        nn.Module.__init__(self)
        can_identity = self._check_geometry(c1, c2, k, s, g)
        self.groups = g
        self.rbr_identity = nn.BatchNorm2d(c1, eps=bn_eps) if can_identity else None
        self.rbr_dense = conv_bn(c1, c2, k, s, k // 2, 1, g, bn_eps=bn_eps, named=False)
        self.rbr_1x1 = conv_bn(c1, c2, 1, s, 0, 1, g, bn_eps=bn_eps, named=False)
        self.nonlinearity = nn.SiLU() if act is None else act


class QARepVGG(_MultiBranch):
    """Quantization-aware RepVGG: act(BN(BN(conv_kxk(x)) + conv_1x1(x) [+ x])).

    The 1x1 and identity branches carry no BN; the post-sum BN is folded last.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        identity: bool = True,
        act: nn.Module | None = None,
        bn_affine: bool = True,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        can_identity = self._check_geometry(in_channels, out_channels, kernel_size, stride, groups)
        self.groups = groups
        padding = dilation * (kernel_size // 2)
        self.rbr_dense = conv_bn(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bn_affine, bn_eps
        )
        self.rbr_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, 0, groups=groups, bias=False)
        self.rbr_identity = nn.Identity() if identity and can_identity else None
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, affine=bn_affine)
        self.nonlinearity = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + x
        return self.nonlinearity(self.bn(y))

    def fuse(self) -> ConvAct:
        dense = self.rbr_dense.conv
        k = dense.kernel_size[0]
        w, b = fold_branch(self.rbr_dense)
        w = w + centre_pad(self.rbr_1x1.weight.detach().double(), k)
        if self.rbr_identity is not None:
            w = w + identity_kernel(dense.out_channels, self.groups, k, w.device)
        w, b = fold_kernel_bn(w, b, self.bn)
        return self._deploy(dense, w, b)
