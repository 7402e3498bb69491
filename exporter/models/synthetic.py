"""Deterministic weights of trained scale for a model without its checkpoint.

Random initialization leaves BatchNorm statistics at (0, 1) and weights small, so activations stay
near 1; a trained detector fed 0–255 pixels carries activations of several hundred through the
network, which is where FP32 rounding shows. These weights imitate that: convolution and linear
weights ~ N(0, GAIN²·2/fan_in) (He, scaled down as weight decay leaves trained kernels), biases
~ N(0, 0.1), BatchNorm γ ~ U(0.5, 1.5), β ~ N(0, 0.2), running mean ~ N(0, 0.5) and running variance
~ U(0.5, 1.5) (statistics near 1), every tensor drawn from a generator seeded by its own key, so a
weight does not change when another is added.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn

# With GAIN 0.65 DAMO-YOLO-S at 640 on 0–255 pixels carries activations of several hundred (up to
# ~1600) and its FP32 class scores drift ~1e-4 from float64; at 1.0 activations explode (~1e10).
GAIN = 0.65


def _generator(key: str, seed: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def trained_scale(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill `model`'s floating-point weights and BatchNorm statistics in place; returns it in eval mode."""
    norms = {name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    with torch.no_grad():
        for key, tensor in model.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point():
                continue
            owner, _, leaf = key.rpartition(".")
            g = _generator(key, seed)
            shape = tensor.shape
            if owner in norms and leaf in ("weight", "running_var"):
                value = torch.rand(shape, generator=g) + 0.5
            elif owner in norms and leaf in ("bias", "running_mean"):
                value = torch.randn(shape, generator=g) * (0.2 if leaf == "bias" else 0.5)
            elif leaf == "weight" and tensor.dim() > 1:
                fan_in = math.prod(shape[1:])
                value = torch.randn(shape, generator=g) * GAIN * math.sqrt(2.0 / fan_in)
            elif leaf == "bias":
                value = torch.randn(shape, generator=g) * 0.1
            else:
                continue  # other tensors (scales, buffers such as bin positions) keep their values
            tensor.copy_(value.to(tensor.dtype))
    return model.eval()


def build(builder: str, seed: int = 0, **kwargs) -> nn.Module:
    """The model `builder(**kwargs)` builds, with trained-scale weights. As a recipe's builder:
    `builder: exporter.models.synthetic:build` with `kwargs: {builder: 'package.module:function', ...}`."""
    from exporter.models.loader import resolve_builder

    return trained_scale(resolve_builder(builder)(**kwargs), seed)
