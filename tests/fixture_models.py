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


class PostAKConv(nn.Module):
    """AKConv as the official code writes it (a user's copy, under the user's own class name): offsets from
    `p_conv` (its backward hook included) move the initial grid `_p_n`; the four corners are gathered per
    point, weighted bilinearly, laid out as 'b c h w n -> b c (h n) w' and mixed by `conv`."""

    def __init__(self, inc: int, outc: int, num_param: int, stride: int = 1):
        super().__init__()
        self.num_param, self.stride = num_param, stride
        self.conv = nn.Sequential(
            nn.Conv2d(inc, outc, (num_param, 1), (num_param, 1), bias=False), nn.BatchNorm2d(outc), nn.SiLU()
        )
        self.p_conv = nn.Conv2d(inc, 2 * num_param, 3, padding=1, stride=stride)
        nn.init.constant_(self.p_conv.weight, 0)
        self.p_conv.register_full_backward_hook(self._set_lr)

    @staticmethod
    def _set_lr(module, grad_input, grad_output):
        return tuple(g * 0.1 if g is not None else None for g in grad_input)

    @staticmethod
    def _p_n(n: int, dtype) -> torch.Tensor:
        base = round(n**0.5)
        rows, extra = divmod(n, base)
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(base), indexing="ij")
        r, c = r.flatten(), c.flatten()
        if extra:
            r = torch.cat([r, torch.full((extra,), rows)])
            c = torch.cat([c, torch.arange(extra)])
        return torch.cat([r, c]).view(1, 2 * n, 1, 1).to(dtype)

    def _p_0(self, h: int, w: int, n: int, dtype) -> torch.Tensor:
        r, c = torch.meshgrid(
            torch.arange(0, h * self.stride, self.stride),
            torch.arange(0, w * self.stride, self.stride),
            indexing="ij",
        )
        return torch.cat(
            [r.reshape(1, 1, h, w).repeat(1, n, 1, 1), c.reshape(1, 1, h, w).repeat(1, n, 1, 1)], 1
        ).to(dtype)

    @staticmethod
    def _corner(x: torch.Tensor, q: torch.Tensor, n: int) -> torch.Tensor:
        b, h, w, _ = q.shape
        width = x.size(3)
        index = (q[..., :n] * width + q[..., n:]).reshape(b, 1, -1).expand(-1, x.size(1), -1)
        return x.reshape(b, x.size(1), -1).gather(-1, index).reshape(b, x.size(1), h, w, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.p_conv(x)
        n, (h, w) = int(offset.size(1)) // 2, offset.shape[2:]  # a constant when traced
        p = (self._p_0(h, w, n, offset.dtype) + self._p_n(n, offset.dtype) + offset).permute(0, 2, 3, 1)
        top, left = x.size(2) - 1, x.size(3) - 1

        def clamp(q):
            return torch.cat([q[..., :n].clamp(0, top), q[..., n:].clamp(0, left)], -1)

        q_lt = p.detach().floor()
        q_rb = q_lt + 1
        q_lt, q_rb = clamp(q_lt).long(), clamp(q_rb).long()
        q_lb = torch.cat([q_lt[..., :n], q_rb[..., n:]], -1)
        q_rt = torch.cat([q_rb[..., :n], q_lt[..., n:]], -1)
        p = clamp(p)

        def weight(q, row_sign, col_sign):
            q = q.type_as(p)
            return (1 + row_sign * (q[..., :n] - p[..., :n])) * (1 + col_sign * (q[..., n:] - p[..., n:]))

        corners = ((q_lt, 1, 1), (q_rb, -1, -1), (q_lb, 1, -1), (q_rt, -1, 1))
        samples = sum(weight(q, rs, cs).unsqueeze(1) * self._corner(x, q, n) for q, rs, cs in corners)
        b, c = samples.shape[:2]
        samples = samples.permute(0, 1, 2, 4, 3).reshape(b, c, h * n, w)
        return self.conv(samples)


class CentredAKConv(PostAKConv):
    """A variant whose initial grid is centred on the output position: not the sampling AKConv computes."""

    @staticmethod
    def _p_n(n: int, dtype) -> torch.Tensor:
        return PostAKConv._p_n(n, dtype) - 1


class LDConv(PostAKConv):
    """A variant that keeps no num_param: it reads the point count off its offsets."""

    def __init__(self, inc: int, outc: int, num_param: int, stride: int = 1):
        super().__init__(inc, outc, num_param, stride)
        del self.num_param


def build_akconv_user(variant: str = "post") -> nn.Module:
    """A small detector-shaped model holding a user's AKConv (stride 2, 5 points), its variant by name."""
    block = {"post": PostAKConv, "centred": CentredAKConv, "ldconv": LDConv}[variant]
    model = nn.Sequential(ConvBN(3, 8, 3, act=nn.ReLU()), block(8, 8, 5, stride=2), nn.Conv2d(8, 4, 1))
    return randomized(model)
