"""The fork's blocks, written as YOLO forks publish them (Ultralytics' argument order: c1, c2, k, s).

RefConv: a frozen base kernel refocused by a depthwise convolution over the kernels, then BatchNorm and
SiLU, with no deploy method (reparam-export folds it from what it computes). DamoRepConv: DAMO-YOLO's
RepConv, fused in place by `switch_to_deploy()`. AKConv: reparam-export's block under the fork's
argument order.
"""

import torch
import torch.nn.functional as F
from torch import nn

from exporter.blocks.akconv import AKConv as _AKConv


class RefConv(nn.Module):
    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.stride, self.padding = s, k // 2
        self.register_buffer("weight", torch.randn(c2, c1, k, k) * (2 / (c1 * k * k)) ** 0.5)
        kernels = c2 * c1
        self.convmap = nn.Conv2d(kernels, kernels, 3, 1, 1, groups=kernels, bias=False)
        nn.init.zeros_(self.convmap.weight)
        self.bn, self.act = nn.BatchNorm2d(c2), nn.SiLU()

    def forward(self, x):
        shape = self.weight.shape
        kernel = self.weight + self.convmap(self.weight.reshape(1, -1, *shape[2:])).reshape(shape)
        return self.act(self.bn(F.conv2d(x, kernel, None, self.stride, self.padding)))


def conv_bn(c1, c2, k, s, p):
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(c1, c2, k, s, p, bias=False))
    block.add_module("bn", nn.BatchNorm2d(c2))
    return block


class DamoRepConv(nn.Module):
    def __init__(self, c1, c2, k=3, s=1):
        super().__init__()
        self.rbr_dense = conv_bn(c1, c2, k, s, k // 2)
        self.rbr_1x1 = conv_bn(c1, c2, 1, s, 0)
        self.act = nn.SiLU()
        self.rbr_reparam = None

    def forward(self, x):
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x))

    @staticmethod
    def _fold(branch):
        std = (branch.bn.running_var + branch.bn.eps).sqrt()
        scale = branch.bn.weight / std
        return branch.conv.weight * scale.reshape(
            -1, 1, 1, 1
        ), branch.bn.bias - branch.bn.running_mean * scale

    def switch_to_deploy(self):
        w3, b3 = self._fold(self.rbr_dense)
        w1, b1 = self._fold(self.rbr_1x1)
        dense = self.rbr_dense.conv
        pad = (dense.kernel_size[0] - 1) // 2
        self.rbr_reparam = nn.Conv2d(
            dense.in_channels, dense.out_channels, dense.kernel_size, dense.stride, dense.padding
        )
        self.rbr_reparam.weight.data.copy_(w3 + F.pad(w1, [pad] * 4))
        self.rbr_reparam.bias.data.copy_(b3 + b1)
        del self.rbr_dense, self.rbr_1x1


class AKConv(_AKConv):
    def __init__(self, c1, c2, num_param=5, s=1):
        super().__init__(c1, c2, num_param, s)
