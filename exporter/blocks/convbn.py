"""Conv+BN folding, the ConvBN train-form block and ConvAct, the deploy form every block fuses to."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from exporter.base.errors import UserError
from exporter.base.numerics.complexity import CONV_TYPES


def make_act(act: nn.Module | None) -> nn.Module:
    return nn.Identity() if act is None else act


def require_running_stats(bn: _BatchNorm, name: str = "") -> None:
    """Refuse a BatchNorm that cannot be folded because it normalizes with batch statistics."""
    if bn.running_mean is None or bn.running_var is None:
        label = f"BatchNorm '{name}'" if name else "a BatchNorm"
        raise UserError(
            f"cannot fold {label}: it has no running statistics (track_running_stats=False), "
            "so its output depends on the batch; train it with running statistics or replace it"
        )


def bn_scale_shift(bn: _BatchNorm, name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (t, s) with bn(x) = t·x + s in eval mode, computed in float64.

    t = γ/√(σ²+ε), s = β − μ·t; γ=1, β=0 when the BN has no affine parameters.
    """
    require_running_stats(bn, name)
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    t = gamma / torch.sqrt(var + bn.eps)
    return t, beta - mean * t


def fold_kernel_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: _BatchNorm, name: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a BN that follows a convolution with (weight, bias) into a new (weight, bias), float64."""
    t, s = bn_scale_shift(bn, name)
    w = weight.detach().double() * t.view(-1, *([1] * (weight.dim() - 1)))
    b = s if bias is None else bias.detach().double() * t + s
    return w, b


def conv_with(template: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """A conv of the same type and geometry as `template` (dilation, groups, padding mode kept)."""
    kind = type(template)
    args = (template.in_channels, template.out_channels, template.kernel_size)
    geometry = {
        "stride": template.stride,
        "padding": template.padding,
        "dilation": template.dilation,
        "groups": template.groups,
        "bias": True,
        "padding_mode": template.padding_mode,
    }
    place = {"device": template.weight.device, "dtype": template.weight.dtype}
    if kind in CONV_TYPES:  # torch's own: made without storage, then given the weights below
        conv = kind(*args, **geometry, device="meta")
    else:  # a subclass may set more in its constructor, or take no device
        conv = kind(*args, **geometry).to(**place)
    conv.weight = nn.Parameter(weight.detach().to(**place, copy=True))
    conv.bias = nn.Parameter(bias.detach().to(**place, copy=True))
    return conv.eval()


def fold_conv_bn(conv: nn.Module, bn: _BatchNorm, name: str = "") -> nn.Module:
    """Return one conv equal to bn(conv(x)) in eval mode."""
    if not isinstance(conv, CONV_TYPES):
        raise TypeError(f"expected a Conv1d/2d/3d, got {type(conv).__name__}")
    weight, bias = fold_kernel_bn(conv.weight, conv.bias, bn, name)
    return conv_with(conv, weight, bias)


class ConvAct(nn.Module):
    """Deploy form: one conv with bias, then the activation."""

    def __init__(self, conv: nn.Module, act: nn.Module | None = None):
        super().__init__()
        self.conv = conv
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class ConvBN(nn.Module):
    """Conv → BatchNorm → activation (train form)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        bias: bool = False,
        act: nn.Module | None = None,
        bn_affine: bool = True,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, affine=bn_affine)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> ConvAct:
        return ConvAct(fold_conv_bn(self.conv, self.bn), self.act)
