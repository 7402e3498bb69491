"""Weight-only re-parameterizations without a deploy method: a module whose convolution kernel is
computed from its own parameters and buffers alone (a blog's RefConv: kernel = W + convmap(W); DBB- or
OREPA-style sums of kernels) is one plain convolution with that kernel, followed by the child modules
it applies after that convolution (a BatchNorm and an activation, as YOLO forks wrap RefConv).

Found from what the module computes, not from its name: run on two different inputs, it must make
exactly one convolution of its own input, with a kernel it computes (not one it holds, as a layer
convolving with its own weight does) and the same kernel both times. The form found is a candidate:
the fuser keeps it only when proved equal to the module.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

CONVOLUTIONS = {torch.conv2d, torch.nn.functional.conv2d}
CONV = object()  # an event's kind for a convolution; a child's call has the child's name (any string)


class NotAKernel(Exception):
    """The module does more than one convolution of its input with an input-independent kernel."""


class _Convolutions(TorchFunctionMode):
    """Records, in order, the convolutions run and the names of the module's children called."""

    def __init__(self):
        super().__init__()
        self.events: list[tuple[object, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CONVOLUTIONS:
            self.events.append((CONV, args, kwargs))
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
    tail: tuple[str, ...] = ()  # the module's children applied after the convolution, in order

    def action(self) -> str:
        """The fusion action that rebuilds this convolution (exporter.blocks.fuse)."""
        return "kernel:" + json.dumps(asdict(self))

    @classmethod
    def from_action(cls, action: str) -> Geometry:
        fields = json.loads(action.removeprefix("kernel:"))
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})

    def deploy_form(self, module: nn.Module) -> nn.Module:
        """The convolution, followed by `module`'s tail children (themselves, not copies)."""
        conv = self.conv()
        if not self.tail:
            return conv
        return nn.Sequential(conv, *(getattr(module, name) for name in self.tail))

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


CONV_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _trace(module: nn.Module, x: torch.Tensor, rest: tuple, kwargs: dict) -> list[tuple[object, tuple, dict]]:
    """What `module(x, *rest, **kwargs)` runs, in order: each convolution (CONV, its arguments) and each
    child it calls (the child's name, its inputs)."""
    seen = _Convolutions()

    def called(name: str):
        return lambda _, inputs: seen.events.append((name, inputs, {}))

    hooks = [child.register_forward_pre_hook(called(n)) for n, child in module.named_children()]
    try:
        with torch.no_grad(), seen:
            module(x, *rest, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen.events


def _of_input(events: list[tuple[object, tuple, dict]], x: torch.Tensor) -> list[int]:
    """The positions of the convolutions of `x` among `events`."""
    return [i for i, (kind, args, _) in enumerate(events) if kind is CONV and args and args[0] is x]


def _arguments(event: tuple[str, tuple, dict]) -> dict:
    """A convolution event's arguments by name."""
    _, args, kwargs = event
    return dict(zip(CONV_ARGUMENTS, args, strict=False)) | kwargs


def _own_convolution(module: nn.Module, x: torch.Tensor, rest: tuple, kwargs: dict) -> tuple[dict, tuple]:
    """The one convolution of `x` that `module` runs (its arguments by name) and the names of the
    children it calls after it."""
    events = _trace(module, x, rest, kwargs)
    own = _of_input(events, x)
    if len(own) != 1:
        raise NotAKernel(f"{len(own)} convolutions of its input")
    tail = tuple(kind for kind, _, _ in events[own[0] + 1 :] if kind is not CONV)
    return _arguments(events[own[0]]), tail


def fold_kernel(module: nn.Module, args: tuple, kwargs: dict) -> tuple[nn.Module, Geometry]:
    """The plain convolution `module` computes on its first argument followed by the children it calls
    after it, and its geometry (NotAKernel when it is not one convolution of that argument with an
    input-independent kernel)."""
    x, *rest = args
    first, tail = _own_convolution(module, x, tuple(rest), kwargs)
    weight, bias = first["weight"], first.get("bias")
    if any(weight is t for t in (*module.parameters(), *module.buffers())):
        raise NotAKernel("its convolution uses a kernel it holds, not one it computes")
    second, _ = _own_convolution(module, x * 0.5 + 1.0, tuple(rest), kwargs)
    if not torch.equal(weight, second["weight"]) or (
        bias is not None and not torch.equal(bias, second["bias"])
    ):
        raise NotAKernel("the kernel changes with the input")
    return _convolution(module, x.shape[1], weight, bias, first, tail)


def _convolution(
    module: nn.Module, channels: int, weight: torch.Tensor, bias, call: dict, tail: tuple[str, ...]
) -> tuple[nn.Module, Geometry]:
    """The plain convolution of `weight` and `bias` with the stride, padding, dilation and groups of the
    convolution `call` (its arguments by name), followed by `module`'s `tail` children; and its geometry."""
    geometry = Geometry(
        in_channels=channels,
        out_channels=weight.shape[0],
        kernel_size=tuple(weight.shape[2:]),
        stride=_pair(call.get("stride", 1), "stride"),
        padding=_pair(call.get("padding", 0), "padding"),
        dilation=_pair(call.get("dilation", 1), "dilation"),
        groups=int(call.get("groups", 1)),
        bias=bias is not None,
        tail=tail,
    )
    form = geometry.deploy_form(module)
    conv = form[0] if tail else form
    conv.to(dtype=weight.dtype, device=weight.device).eval()
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return form, geometry


def has_equivalent_kernel(module: nn.Module) -> bool:
    """A block that says its kernel (RepVGG's get_equivalent_kernel_bias()) without a deploy method."""
    method = getattr(module, "get_equivalent_kernel_bias", None)
    return inspect.ismethod(method) and not inspect.signature(method).parameters


def fold_equivalent(module: nn.Module, args: tuple, kwargs: dict) -> tuple[nn.Module, Geometry]:
    """The plain convolution of the kernel and bias `module.get_equivalent_kernel_bias()` gives, with the
    stride, padding, dilation and groups of its branch convolution of that kernel size, followed by the
    children it applies to the branches' sum (not to its input). A candidate, proved like any other."""
    x, *rest = args
    events = _trace(module, x, tuple(rest), kwargs)
    with torch.no_grad():
        kernel, bias = module.get_equivalent_kernel_bias()
    convs = [_arguments(events[i]) for i in _of_input(events, x)]
    branch = next((c for c in convs if tuple(c["weight"].shape[2:]) == tuple(kernel.shape[2:])), None)
    if branch is None:
        raise NotAKernel("no branch convolution of its input has the equivalent kernel's size")
    branches = [i for i, (kind, a, _) in enumerate(events) if kind is not CONV and a and a[0] is x]
    last = max(branches, default=-1)
    tail = tuple(kind for kind, a, _ in events[last + 1 :] if kind is not CONV and not (a and a[0] is x))
    return _convolution(module, x.shape[1], kernel, bias, branch, tail)


def convolutions_of_input(module: nn.Module, args: tuple, kwargs: dict) -> int:
    """How many convolutions `module` runs on its first argument (more than one: it still has branches)."""
    x, *rest = args
    return len(_of_input(_trace(module, x, tuple(rest), kwargs), x))


def holds_a_kernel(module: nn.Module) -> bool:
    """A module of its own class (not torch's) holding a 4-D floating tensor directly: a candidate."""
    if type(module).__module__.startswith("torch."):
        return False
    own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return any(t is not None and t.is_floating_point() and t.dim() == 4 for _, t in own)
