"""Models the tests build through the CLI as `tests.fixture_models:<builder>`.

Includes foreign re-parameterizable blocks (deploy protocols of third-party code) and faithful
re-creations of known-wrong public fusion helpers, which our checks must catch.
"""

import torch
from torch import nn

from exporter.blocks import ConvBN, RepConv
from exporter.blocks.repconv import centre_pad, conv_bn, fold_branch
from exporter.models.embedded import randomize_batchnorm


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)
        randomize_batchnorm(model, generator)
    return model.eval()


class ForeignRepVGG(nn.Module):
    """Third-party RepVGG-style block fused in place by a protocol method (name set per subclass)."""

    def __init__(self, channels: int):
        super().__init__()
        self.dense = conv_bn(channels, channels, 3, 1, 1)
        self.one = conv_bn(channels, channels, 1, 1, 0)
        self.reparam: nn.Conv2d | None = None

    def forward(self, x):
        if self.reparam is not None:
            return torch.relu(self.reparam(x))
        return torch.relu(self.dense(x) + self.one(x))

    def _deploy(self) -> None:
        w, b = fold_branch(self.dense)
        w1, b1 = fold_branch(self.one)
        conv = nn.Conv2d(self.dense.conv.in_channels, self.dense.conv.out_channels, 3, 1, 1)
        conv.weight.data.copy_(w + centre_pad(w1, 3))
        conv.bias.data.copy_(b + b1)
        self.reparam = conv
        del self.dense, self.one


class SwitchToDeploy(ForeignRepVGG):
    def switch_to_deploy(self):
        self._deploy()


class Reparameterize(ForeignRepVGG):
    def reparameterize(self):
        self._deploy()


class FuseConvs(ForeignRepVGG):
    def fuse_convs(self):
        self._deploy()


class MergeKernel(ForeignRepVGG):
    def merge_kernel(self):
        self._deploy()


class FuseReturnsModule(ForeignRepVGG):
    def fuse(self) -> nn.Module:
        self._deploy()
        return nn.Sequential(self.reparam, nn.ReLU())


class ConvBnAct(nn.Module):
    """Ultralytics/DAMO-style Conv: `conv` and `bn` children, act(bn(conv(x)))."""

    def __init__(self, c1, c2):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class PreNormConv(nn.Module):
    """Has `conv` and `bn` children but applies bn BEFORE conv: folding must be refused."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return self.conv(self.bn(x))


class YOLOv7HelperRepConv(ForeignRepVGG):
    """RepConv with identity fused by YOLOv7's `fuse_repvgg_block` approach: the identity kernel
    comes from `fill_diagonal_` on a (C, C/g) matrix, which is wrong for groups > 1."""

    def __init__(self, channels: int, groups: int):
        nn.Module.__init__(self)
        self.groups = groups
        self.dense = conv_bn(channels, channels, 3, 1, 1, groups=groups)
        self.one = conv_bn(channels, channels, 1, 1, 0, groups=groups)
        self.identity = nn.BatchNorm2d(channels)
        self.reparam = None

    def forward(self, x):
        if self.reparam is not None:
            return self.reparam(x)
        return self.dense(x) + self.one(x) + self.identity(x)

    def switch_to_deploy(self):
        c, g = self.identity.num_features, self.groups
        ident = nn.Sequential(nn.Conv2d(c, c, 1, groups=g, bias=False), self.identity)
        ident[0].weight.data.zero_()
        ident[0].weight.data[:, :, 0, 0].fill_diagonal_(1.0)
        w, b = fold_branch(self.dense)
        w1, b1 = fold_branch(self.one)
        wi, bi = fold_branch(ident)
        conv = nn.Conv2d(c, c, 3, 1, 1, groups=g)
        conv.weight.data.copy_(w + centre_pad(w1, 3) + centre_pad(wi, 3))
        conv.bias.data.copy_(b + b1 + bi)
        self.reparam = conv


class BlogRepConv(ForeignRepVGG):
    """The blog version of switch_to_deploy: sums raw (un-folded) weights and fakes the identity."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.identity = nn.BatchNorm2d(channels)

    def forward(self, x):
        if self.reparam is not None:
            return self.reparam(x)
        return self.dense(x) + self.one(x) + self.identity(x)

    def switch_to_deploy(self):
        c = self.identity.num_features
        w = self.dense.conv.weight.data + centre_pad(self.one.conv.weight.data, 3)
        w[:, :, 1, 1] += torch.eye(c)
        conv = nn.Conv2d(c, c, 3, 1, 1)
        conv.weight.data.copy_(w)
        conv.bias.data.copy_(self.dense.bn.bias.data + self.one.bn.bias.data + self.identity.bias.data)
        self.reparam = conv


def build_user_model() -> nn.Module:
    """A user's model mixing our blocks, foreign protocol blocks and plain Conv+BN."""
    model = nn.Sequential(
        ConvBN(3, 8, 3, stride=2, act=nn.ReLU()),
        SwitchToDeploy(8),
        Reparameterize(8),
        FuseConvs(8),
        MergeKernel(8),
        FuseReturnsModule(8),
        ConvBnAct(8, 8),
        PreNormConv(8),
        RepConv(8, 8, identity=True, act=nn.ReLU()),
        nn.Conv2d(8, 4, 1),
        nn.BatchNorm2d(4),
    )
    return randomized(model)


def build_blog_model() -> nn.Module:
    return randomized(nn.Sequential(ConvBN(3, 8, 3, act=nn.ReLU()), BlogRepConv(8)))


class NeedsMode(ForeignRepVGG):
    def switch_to_deploy(self, mode):
        self._deploy()


def build_with_unfusable_block() -> nn.Module:
    """A block whose deploy method needs an argument the fuser cannot know: left unfused."""
    return randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), NeedsMode(8)))


def build_raising() -> nn.Module:
    raise RuntimeError("weights server unreachable")


def build_bad_forward() -> nn.Module:
    """Expects 4 input channels, so it fails on RGB images."""
    return nn.Sequential(nn.Conv2d(4, 8, 3)).eval()


def build_not_a_module():
    return {"model": "nope"}


def build_dies_once(marker: str, **kwargs) -> nn.Module:
    """The embedded detector, after its process dies once: the first call leaves `marker` and exits
    abruptly (a worker killed mid-build), the next builds."""
    import os
    from pathlib import Path

    from exporter.models.embedded import build_embedded_detector

    if not Path(marker).exists():
        Path(marker).write_text("died once")
        os._exit(1)
    return build_embedded_detector(**kwargs)
