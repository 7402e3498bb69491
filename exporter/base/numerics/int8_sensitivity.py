"""Per-layer INT8 sensitivity of a fused model: which convolutions quantize badly.

Each convolution is fake-quantized alone — weights symmetric per output channel, its input
symmetric per tensor on the range seen over the calibration batches, both INT8 — and the model's
outputs on the calibration batches are compared with FP32 as a signal-to-noise ratio (dB; lower is
worse). Weight statistics of the fused kernels flag quantization-hostile layers independently of
data: the spread of per-channel ranges and the share of weights beyond 6 standard deviations.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from exporter.base.numerics.parity import flatten_outputs
from exporter.base.numerics.replay import Replay, ReplayRefused

QMAX = 127.0


@dataclass(frozen=True)
class LayerScore:
    layer: str
    snr_db: float  # output SNR with only this layer in INT8 (lower = more sensitive)
    channel_range_ratio: float  # max / median of per-output-channel |w| maxima
    outlier_share: float  # share of weights beyond 6 standard deviations of the layer

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def fake_quant_per_channel(weight: torch.Tensor) -> torch.Tensor:
    scale = weight.abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True).clamp(min=1e-12) / QMAX
    return (weight / scale).round().clamp(-QMAX, QMAX) * scale


def fake_quant_tensor(x: torch.Tensor, absmax: float) -> torch.Tensor:
    scale = max(absmax, 1e-12) / QMAX
    return (x / scale).round().clamp(-QMAX, QMAX) * scale


def weight_statistics(weight: torch.Tensor) -> tuple[float, float]:
    per_channel = weight.abs().flatten(1).amax(1)
    ratio = float(per_channel.max() / per_channel.median().clamp(min=1e-12))
    centred = weight - weight.mean()
    outliers = float((centred.abs() > 6 * weight.std().clamp(min=1e-12)).float().mean())
    return ratio, outliers


def input_ranges(
    model: nn.Module, convs: dict[str, nn.Conv2d], batches: list[torch.Tensor]
) -> dict[str, float]:
    ranges = dict.fromkeys(convs, 0.0)
    handles = [
        conv.register_forward_pre_hook(
            lambda _m, args, name=name: ranges.__setitem__(
                name, max(ranges[name], float(args[0].abs().max()))
            )
        )
        for name, conv in convs.items()
    ]
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


@contextlib.contextmanager
def quantized(conv: nn.Conv2d, input_absmax: float) -> Iterator[None]:
    """Within the block, `conv` runs with INT8 fake-quantized weights and input."""
    original = conv.weight.data
    conv.weight.data = fake_quant_per_channel(original)
    handle = conv.register_forward_pre_hook(
        lambda _m, args: (fake_quant_tensor(args[0], input_absmax), *args[1:])
    )
    try:
        yield
    finally:
        handle.remove()
        conv.weight.data = original


def snr_db(signal: list[float], noise: list[float]) -> float:
    """The worst SNR over the model's outputs (scores and boxes live on very different scales), from each
    output's summed squares of the reference and of the difference."""
    worst = math.inf
    for power, error in zip(signal, noise, strict=True):
        if error > 0:
            worst = min(worst, 10 * math.log10(max(power, 1e-30) / error))
    return worst


def layer_sensitivity(model: nn.Module, batches: list[np.ndarray]) -> list[LayerScore]:
    """Every Conv2d of `model` scored alone; most sensitive first. Each batch's forward is recorded once
    and replayed from the quantized convolution on (exactly what a whole forward gives, at a fraction of
    its cost); a model whose forward cannot be replayed runs whole each time."""
    model = model.eval()
    inputs = [torch.from_numpy(b) for b in batches]
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    ranges = input_ranges(model, convs, inputs)
    try:
        signal, noise = squared_errors(model, convs, ranges, inputs, replayed=True)
    except ReplayRefused:
        signal, noise = squared_errors(model, convs, ranges, inputs, replayed=False)
    scores = [
        LayerScore(name, snr_db(signal, noise[name]), *weight_statistics(conv.weight.detach()))
        for name, conv in convs.items()
    ]
    return sorted(scores, key=lambda s: s.snr_db)


def squared_errors(
    model: nn.Module,
    convs: dict[str, nn.Conv2d],
    ranges: dict[str, float],
    inputs: list[torch.Tensor],
    replayed: bool,
) -> tuple[list[float], dict[str, list[float]]]:
    """Each output's sum of squares over the batches, and with each convolution quantized alone the sum
    of squares of its difference from them (summed batch by batch, in order)."""
    signal: list[float] = []
    noise: dict[str, list[float]] = {}
    for x in inputs:
        if replayed:
            replay = Replay(model, x)
            reference = flatten_outputs(replay.reference)
        else:
            with torch.no_grad():
                reference = flatten_outputs(model(x))
        signal = add(signal, [float((r**2).sum()) for r in reference])
        for name, conv in convs.items():
            with quantized(conv, ranges[name]), torch.no_grad():
                output = replay.run(replay.first_call(conv)) if replayed else model(x)
            pairs = zip(reference, flatten_outputs(output), strict=True)
            noise[name] = add(noise.get(name, []), [float(((r - c) ** 2).sum()) for r, c in pairs])
    return signal, noise


def add(total: list[float], terms: list[float]) -> list[float]:
    return [a + b for a, b in zip(total, terms, strict=True)] if total else list(terms)
