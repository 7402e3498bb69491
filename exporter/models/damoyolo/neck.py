"""GiraffeNeckV2 (RepGFPN): bidirectional fusion of the stride 8/16/32 maps through CSP stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from exporter.models.damoyolo.layers import DepthwiseConvBN, MobileV3Block, conv_bn_act, rep_conv


class ReverseBlock(nn.Module):
    """BasicBlock_3x3_Reverse: x + ConvBNAct3x3(RepConv3x3(x)); the nano form is one MobileV3Block."""

    def __init__(self, channels: int, hidden_ratio: float, act: str, depthwise: bool):
        super().__init__()
        self.depthwise = depthwise
        if depthwise:
            self.conv = MobileV3Block(channels, channels, 1, act, 3.0, se_slot=False)
        else:
            hidden = int(channels * hidden_ratio)
            self.conv1 = conv_bn_act(hidden, channels, 3, act=act)
            self.conv2 = rep_conv(channels, hidden, 3, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise:
            return self.conv(x)  # carries its own residual
        return x + self.conv1(self.conv2(x))


class CSPStage(nn.Module):
    """conv1 → half the output; conv2 → n chained blocks; all intermediate maps concatenated → conv3."""

    def __init__(self, cin: int, cout: int, n: int, hidden_ratio: float, act: str, depthwise: bool):
        super().__init__()
        first = cout // 2
        mid = cout - first
        self.conv1 = conv_bn_act(cin, first, 1, act=act)
        self.conv2 = conv_bn_act(cin, mid, 1, act=act)
        self.convs = nn.Sequential(*(ReverseBlock(mid, hidden_ratio, act, depthwise) for _ in range(n)))
        self.conv3 = conv_bn_act(mid * n + first, cout, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.conv1(x)]
        y = self.conv2(x)
        for block in self.convs:
            y = block(y)
            outs.append(y)
        return self.conv3(torch.cat(outs, 1))


class GiraffeNeckV2(nn.Module):
    """Inputs (c3, c4, c5) at strides 8/16/32 with widths `in_channels`; outputs widths `out_channels`.

    Node names follow the official code: merge_3 (stride 32), merge_4 (16), merge_5 (8, output),
    merge_7 (16, output), merge_6 (32, output); bu_conv* are strided 3x3 convs.
    """

    def __init__(
        self, in_channels, out_channels, depth: float, hidden_ratio: float, act: str, depthwise: bool
    ):
        super().__init__()
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        n = round(3 * depth)  # Python rounding: depth 1.5 gives 4 blocks

        def down(c: int) -> nn.Module:
            return DepthwiseConvBN(c, c, 3, 2, act) if depthwise else conv_bn_act(c, c, 3, 2, act)

        def stage(cin: int, cout: int) -> CSPStage:
            return CSPStage(cin, cout, n, hidden_ratio, act, depthwise)

        self.bu_conv13 = down(c4)
        self.merge_3 = stage(c4 + c5, c5)
        self.bu_conv24 = down(c3)
        self.merge_4 = stage(c3 + c4 + c5, c4)
        self.merge_5 = stage(c4 + c3, o3)
        self.bu_conv57 = down(o3)
        self.merge_7 = stage(o3 + c4, o4)
        self.bu_conv46 = down(c4)
        self.bu_conv76 = down(o4)
        self.merge_6 = stage(c4 + o4 + c5, o5)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x8, x16, x32 = features
        p32 = self.merge_3(torch.cat([x32, self.bu_conv13(x16)], 1))
        p16 = self.merge_4(torch.cat([x16, self.bu_conv24(x8), _up(p32)], 1))
        out8 = self.merge_5(torch.cat([x8, _up(p16)], 1))
        out16 = self.merge_7(torch.cat([p16, self.bu_conv57(out8)], 1))
        out32 = self.merge_6(torch.cat([p32, self.bu_conv46(p16), self.bu_conv76(out16)], 1))
        return out8, out16, out32


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")
