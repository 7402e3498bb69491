"""Model size and compute per image: parameters, multiply-accumulates, and the ops thop adds to them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int  # multiply-accumulates of Conv1d/2d/3d and Linear calls
    bias_adds: int  # one add per output element of a conv/linear with bias
    norm_elements: int  # output elements of BatchNorm calls

    @property
    def gflops(self) -> float:
        """2 × MACs, in 1e9."""
        return 2 * self.macs / 1e9

    @property
    def gflops_thop(self) -> float:
        """2 × the ops thop (0.0.31) counts: MACs, bias adds and 2 per BatchNorm element, in 1e9.

        The convention of published numbers measured with thop on models that keep their BatchNorms.
        """
        return 2 * (self.macs + self.bias_adds + 2 * self.norm_elements) / 1e9


class Counting:
    """Counts, per image, what the forward passes of `model` run inside the `with` block compute
    (convolution modules only: a functional conv, such as RefConv's train form, is not seen)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.counts = {"macs": 0, "bias_adds": 0, "norm_elements": 0}
        self.handles: list[Any] = []

    def _on_layer(self, module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, (tuple, list)):  # a subclass returning more (a partial conv's mask): its first
            output = next((o for o in output if isinstance(o, torch.Tensor)), None)
        if not isinstance(output, torch.Tensor):
            return
        per_image = output.numel() // output.shape[0]
        if isinstance(module, _BatchNorm):
            self.counts["norm_elements"] += per_image
            return
        fan_in = (
            module.in_channels // module.groups * math.prod(module.kernel_size)
            if isinstance(module, CONV_TYPES)
            else module.in_features
        )
        self.counts["macs"] += per_image * fan_in
        self.counts["bias_adds"] += per_image if module.bias is not None else 0

    def __enter__(self) -> Counting:
        layers = (*CONV_TYPES, nn.Linear, _BatchNorm)
        modules = [m for m in self.model.modules() if isinstance(m, layers)]
        self.handles = [m.register_forward_hook(self._on_layer) for m in modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def result(self) -> Complexity:
        return Complexity(count_params(self.model), **self.counts)


def profile(model: nn.Module, example: torch.Tensor) -> Complexity:
    """What one forward pass of `model` computes per image of `example` (Counting)."""
    with Counting(model) as counting, torch.no_grad():
        model(example)
    return counting.result()
