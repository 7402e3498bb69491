"""AKConv (alterable kernel convolution, later named LDConv): N learned sampling points per output.

Offsets from a 3x3 `p_conv` (stride s, 2N channels) move an initial grid of N points; the bilinear
samples are mixed by an (N,1)-stride-(N,1) conv + BN + SiLU. Module names follow the official
code, so its checkpoints load with or without the persistent `p_n` buffer. `lowering` picks how
sampling is computed and exported (see exporter.blocks.lowering.akconv); all lowerings are exact.

A user's own copy of the official code (same attributes, any class name) is recognised by its structure
(`looks_like_akconv`) and `adopt`ed: the fuser rewrites it into this class, holding the user's offset and
mixing modules, and keeps the rewrite only where its float64 proof holds.
"""

from __future__ import annotations

import torch
from torch import nn

from exporter.blocks.lowering.akconv import LOWERINGS, initial_grid, sample

AKCONV_NAMES = ("akconv", "ldconv")  # class names of the official code (LDConv: its later name)


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

    @classmethod
    def adopt(cls, module: nn.Module) -> AKConv:
        """This class computing with `module`'s own offset conv (`p_conv`) and mixing modules (`conv`):
        a user's copy of the official code, whose checks `why_not_akconv` passed."""
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block.num_param, block.stride, block.lowering = module.num_param, _stride(module), "gather"
        block.conv, block.p_conv = module.conv, module.p_conv
        block.register_buffer("p_n", initial_grid(block.num_param).to(module.p_conv.weight))
        return block


def looks_like_akconv(module: nn.Module) -> bool:
    """A block not of this class that holds an offset conv `p_conv` and a `num_param`, or is named as the
    official code names it."""
    if isinstance(module, AKConv):
        return False
    named = type(module).__name__.lower() in AKCONV_NAMES
    return named or (hasattr(module, "p_conv") and hasattr(module, "num_param"))


def why_not_akconv(module: nn.Module) -> str | None:
    """Why a block that looks like AKConv cannot be computed as this class; None when it can be (the
    fuser's float64 proof then decides)."""
    p_conv, n = getattr(module, "p_conv", None), getattr(module, "num_param", None)
    if not isinstance(p_conv, nn.Conv2d):
        return "it has no p_conv convolution making the offsets"
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return "it has no integer num_param (its number of sampling points)"
    if p_conv.out_channels != 2 * n:
        return f"its p_conv makes {p_conv.out_channels} offsets, not 2·num_param = {2 * n}"
    stride = _stride(module)
    if stride is None or p_conv.stride != (stride, stride):
        return f"its stride {getattr(module, 'stride', None)!r} is not its p_conv's {p_conv.stride}"
    if not isinstance(getattr(module, "conv", None), nn.Module):
        return "it has no conv module mixing the samples"
    return None


def _stride(module: nn.Module) -> int | None:
    stride = getattr(module, "stride", 1)
    if isinstance(stride, (tuple, list)) and len(set(stride)) == 1:
        stride = stride[0]
    return stride if isinstance(stride, int) and not isinstance(stride, bool) and stride >= 1 else None
