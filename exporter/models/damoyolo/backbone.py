"""TinyNAS backbones: residual (T, S), CSP (M, L) and mobile (nano). Each returns 3 feature maps."""

from __future__ import annotations

import torch
from torch import nn

from exporter.models.damoyolo.layers import (
    ConvKXBN,
    ConvKXBNAct,
    Focus,
    MobileV3Block,
    SPPBottleneck,
    activation,
    rep_conv,
)


class ResConvBlock(nn.Module):
    """act(RepConv(act(conv1(x))) + shortcut); no shortcut when strided.

    conv1 is 1x1 ("k1kx") or kxk ("kxkx"); the RepConv (kxk, strided) has no activation of its own.
    A 1x1 projection carries the shortcut when the width changes.
    """

    def __init__(self, cin: int, cout: int, btn: int, k: int, stride: int, act: str, kind: str):
        super().__init__()
        self.conv1 = ConvKXBN(cin, btn, 1 if kind == "k1kx" else k)
        self.conv2 = rep_conv(btn, cout, k, stride)
        self.act = activation(act)
        self.residual_proj = ConvKXBN(cin, cout, 1) if cin != cout and stride != 2 else None
        self.shortcut = stride != 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.act(self.conv1(x)))
        if self.shortcut:
            y = y + (x if self.residual_proj is None else self.residual_proj(x))
        return self.act(y)


class Stage(nn.Module):
    """A sequence of blocks under the key `block_list`."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.block_list = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


def _inputs_and_strides(st: dict) -> list[tuple[int, int]]:
    """(input width, stride) of each block of a structure stage: the first one changes both."""
    return [(st["in"], st["s"])] + [(st["out"], 1)] * (st["L"] - 1)


def _with_spp(blocks: list[nn.Module], channels: int) -> list[nn.Module]:
    """SPP after the first block (used in the last stage)."""
    return [blocks[0], SPPBottleneck(channels, channels), *blocks[1:]]


class _Backbone(nn.Module):
    """Runs `self.stages` in order and returns the outputs of `out_indices`."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.out_indices:
                features.append(x)
        return features


class TinyNASRes(_Backbone):
    """Focus stem, then stages of ResConvBlocks (keys backbone.block_list.*); SPP in the last stage."""

    def __init__(self, structure: list[dict], act: str, out_indices=(2, 4, 5)):
        super().__init__()
        stem, *stages = structure
        self.out_indices = tuple(out_indices)
        modules = [Focus(stem["in"], stem["out"], stem["k"], act)]
        for i, st in enumerate(stages):
            blocks = [
                ResConvBlock(cin, st["out"], st["btn"], st["k"], stride, act, st["kind"])
                for cin, stride in _inputs_and_strides(st)
            ]
            modules.append(Stage(_with_spp(blocks, st["out"]) if i == len(stages) - 1 else blocks))
        self.block_list = nn.ModuleList(modules)

    @property
    def stages(self) -> nn.ModuleList:
        return self.block_list


class CSPWrapper(nn.Module):
    """Strided 3x3 downsampler, optional SPP, then a CSP split: half through the blocks, half shortcut.

    Its own convs always use ReLU (the official wrapper never receives the configured activation).
    """

    def __init__(self, cin: int, cout: int, hidden: int, blocks: list[nn.Module], with_spp: bool = False):
        super().__init__()
        self.convstem = nn.ModuleList(blocks)
        self.downsampler = ConvKXBNAct(cin, 2 * hidden, 3, 2, act="relu")
        self.spp = SPPBottleneck(2 * hidden, 2 * hidden) if with_spp else None
        self.conv_start = ConvKXBNAct(2 * hidden, hidden, 1, act="relu")
        self.conv_shortcut = ConvKXBNAct(2 * hidden, cout // 2, 1, act="relu")
        self.conv_fuse = ConvKXBNAct(cout, cout, 1, act="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsampler(x)
        if self.spp is not None:
            x = self.spp(x)
        shortcut = self.conv_shortcut(x)
        x = self.conv_start(x)
        for block in self.convstem:
            x = block(x)
        return self.conv_fuse(torch.cat([x, shortcut], 1))


def _csp_blocks(st: dict, act: str) -> list[nn.Module]:
    """A structure stage inside a CSP wrapper: half width, the strided block replaced by the downsampler."""
    width = st["out"] // 2
    count = st["L"] - 1 if st["s"] == 2 else st["L"]
    first_in = st["in"] // 2 if st["s"] == 1 else width
    return [
        ResConvBlock(first_in if j == 0 else width, width, st["btn"], st["k"], 1, act, st["kind"])
        for j in range(count)
    ]


class TinyNASCsp(_Backbone):
    """Focus stem, then four CSP wrappers over structure stages (1), (2), (3, 4), (5); keys csp_stage.*."""

    def __init__(self, structure: list[dict], act: str, out_indices=(2, 3, 4)):
        super().__init__()
        stem, *stages = structure
        self.out_indices = tuple(out_indices)
        modules: list[nn.Module] = [Focus(stem["in"], stem["out"], stem["k"], act)]
        groups = [stages[0:1], stages[1:2], stages[2:4], stages[4:5]]
        for i, group in enumerate(groups):
            blocks = [block for st in group for block in _csp_blocks(st, act)]
            cin, cout, hidden = group[0]["in"], group[-1]["out"], group[0]["out"] // 2
            modules.append(CSPWrapper(cin, cout, hidden, blocks, with_spp=i == len(groups) - 1))
        self.csp_stage = nn.ModuleList(modules)

    @property
    def stages(self) -> nn.ModuleList:
        return self.csp_stage


class TinyNASMob(_Backbone):
    """Stride-2 3x3 stem, then stages of MobileV3Blocks whose expansion grows with depth."""

    def __init__(self, structure: list[dict], act: str, out_indices=(2, 4, 5)):
        super().__init__()
        stem, *stages = structure
        self.out_indices = tuple(out_indices)
        modules: list[nn.Module] = [ConvKXBNAct(stem["in"], stem["out"], stem["k"], 2, act)]
        for i, st in enumerate(stages):
            expansion = 3.5 + 0.5 * i  # official: 3.5 + (structure index - 1) * 0.5
            blocks = [
                MobileV3Block(cin, st["out"], stride, act, expansion, se_slot=True)
                for cin, stride in _inputs_and_strides(st)
            ]
            modules.append(Stage(_with_spp(blocks, st["out"]) if i == len(stages) - 1 else blocks))
        self.block_list = nn.ModuleList(modules)

    @property
    def stages(self) -> nn.ModuleList:
        return self.block_list


BACKBONES = {"res": TinyNASRes, "csp": TinyNASCsp, "mob": TinyNASMob}
