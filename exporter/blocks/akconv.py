"""AKConv (alterable kernel convolution, later named LDConv): N learned sampling points per output.

Offsets from a 3x3 `p_conv` (stride s, 2N channels) move an initial grid of N points; the bilinear
samples are mixed by an (N,1)-stride-(N,1) conv + BN + SiLU. Module names follow the official
code, so its checkpoints load with or without the persistent `p_n` buffer. `lowering` picks how
sampling is computed and exported (see exporter.lowering.akconv); all lowerings are exact.
"""

from __future__ import annotations

import torch
from torch import nn

from exporter.lowering.akconv import LOWERINGS, initial_grid, sample


class AKConv(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, num_param: int, stride: int = 1, bias: bool = False
    ):
        super().__init__()
        if num_param < 1:
            raise ValueError(f"num_param must be >= 1, got {num_param}")
        self.num_param, self.stride = num_param, stride
        self.lowering = "gather"
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (num_param, 1), (num_param, 1), bias=bias),
            nn.BatchNorm2d(out_channels),
            nn.SiLU(),
        )
        self.p_conv = nn.Conv2d(in_channels, 2 * num_param, 3, stride, 1)
        nn.init.zeros_(self.p_conv.weight)
        self.register_buffer("p_n", initial_grid(num_param))

    def set_lowering(self, lowering: str) -> None:
        if lowering not in LOWERINGS:
            raise ValueError(f"unknown AKConv lowering '{lowering}' (choose from {', '.join(LOWERINGS)})")
        self.lowering = lowering

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints of the first official release carry no p_n buffer: it is fixed by N.
        state_dict.setdefault(prefix + "p_n", self.p_n.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.p_conv(x)
        return self.conv(sample(self.lowering, x, offset, self.p_n, self.stride))
