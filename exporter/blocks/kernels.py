"""Weight-only re-parameterizations without a deploy method: a module whose convolution kernel is
computed from its own parameters and buffers alone (a blog's RefConv: kernel = W + convmap(W); DBB- or
OREPA-style sums of kernels) is one plain convolution with that kernel.

Found from what the module computes, not from its name: run on two different inputs, it must make
exactly one convolution of its own input, with the same kernel both times.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

CONVOLUTIONS = {torch.conv2d, torch.nn.functional.conv2d}


class NotAKernel(Exception):
    """The module does more than one convolution of its input with an input-independent kernel."""


class _Convolutions(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CONVOLUTIONS:
            self.calls.append((args, kwargs))
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Geometry:
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    bias: bool

    def action(self) -> str:
        """The fusion action that rebuilds this convolution (exporter.blocks.fuse)."""
        return "kernel:" + json.dumps(asdict(self))

    @classmethod
    def from_action(cls, action: str) -> Geometry:
        fields = json.loads(action.removeprefix("kernel:"))
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def conv(self) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias=self.bias,
        )


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise NotAKernel(f"{name} {value!r} is not a pair of integers")


def _own_convolution(module: nn.Module, x: torch.Tensor, rest: tuple, kwargs: dict):
    with torch.no_grad(), _Convolutions() as seen:
        module(x, *rest, **kwargs)
    own = [c for c in seen.calls if c[0] and c[0][0] is x]
    if len(own) != 1:
        raise NotAKernel(f"{len(own)} convolutions of its input")
    args, kw = own[0]
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    call = dict(zip(names, args, strict=False)) | kw
    return call


def fold_kernel(module: nn.Module, args: tuple, kwargs: dict) -> tuple[nn.Conv2d, Geometry]:
    """The plain convolution `module` computes on its first argument, and its geometry (NotAKernel when
    it is not one convolution of that argument with an input-independent kernel)."""
    x, *rest = args
    first = _own_convolution(module, x, tuple(rest), kwargs)
    second = _own_convolution(module, x * 0.5 + 1.0, tuple(rest), kwargs)
    weight, bias = first["weight"], first.get("bias")
    if not torch.equal(weight, second["weight"]) or (
        bias is not None and not torch.equal(bias, second["bias"])
    ):
        raise NotAKernel("the kernel changes with the input")
    geometry = Geometry(
        in_channels=x.shape[1],
        out_channels=weight.shape[0],
        kernel_size=tuple(weight.shape[2:]),
        stride=_pair(first.get("stride", 1), "stride"),
        padding=_pair(first.get("padding", 0), "padding"),
        dilation=_pair(first.get("dilation", 1), "dilation"),
        groups=int(first.get("groups", 1)),
        bias=bias is not None,
    )
    conv = geometry.conv().to(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv.eval(), geometry


def holds_a_kernel(module: nn.Module) -> bool:
    """A module of its own class (not torch's) holding a 4-D floating tensor directly: a candidate."""
    if type(module).__module__.startswith("torch."):
        return False
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return any(t is not None and t.is_floating_point() and t.dim() == 4 for _, t in own)
