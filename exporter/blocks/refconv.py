"""RefConv: a frozen base kernel refocused by a learnable grouped conv over the kernels.

W = W_b + convmap(W_b), where convmap treats the O·I/g two-dimensional kernels as channels and
mixes them in groups of g (DESIGN.md §3). The deploy form is a plain conv with W; a BatchNorm that
follows it is folded afterwards like any other Conv+BN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RefConv(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        map_k: int = 3,
    ):
        super().__init__()
        if map_k > kernel_size:
            raise ValueError(f"map_k ({map_k}) must not exceed kernel_size ({kernel_size})")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups, self.dilation = kernel_size, stride, groups, dilation
        self.padding = dilation * (kernel_size // 2) if padding is None else padding
        shape = (out_channels, in_channels // groups, kernel_size, kernel_size)
        base = torch.empty(shape)
        nn.init.kaiming_uniform_(base, a=5**0.5)
        self.register_buffer("weight", base)
        kernels = out_channels * in_channels // groups
        self.convmap = nn.Conv2d(kernels, kernels, map_k, 1, map_k // 2, groups=kernels // groups, bias=False)

    def kernel(self) -> torch.Tensor:
        """The effective kernel W_b + convmap(W_b)."""
        k = self.kernel_size
        flat = self.weight.reshape(1, -1, k, k)
        return self.weight + self.convmap(flat).reshape(self.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel(), None, self.stride, self.padding, self.dilation, self.groups)

    def fuse(self) -> nn.Conv2d:
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias=False,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.kernel())
        return conv.eval()
