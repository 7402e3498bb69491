"""`reparam-export bench-akconv`: one AKConv layer under each lowering on onnxruntime and OpenVINO CPU,
side by side, and whether each target's `auto` lowering is the fastest exact one measured."""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exporter.base.numerics.latency import Latency, measure
from exporter.base.numerics.parity import compare
from exporter.blocks.akconv import AKConv
from exporter.blocks.lowering.akconv import LOWERINGS, PLUGIN_DOMAIN
from exporter.pipeline.targets.table import TARGETS

RUNTIMES = {"onnxruntime": "onnx", "openvino": "openvino"}  # CPU runtime -> the target it runs


@dataclass
class Row:
    backend: str
    lowering: str
    latency: Latency | None
    max_abs_err: float | None
    note: str = ""


def build_layer(channels: int, num_param: int, stride: int, seed: int = 0) -> AKConv:
    """An AKConv with offsets of a few pixels (some samples leave the map) and non-trivial BN."""
    generator = torch.Generator().manual_seed(seed)
    layer = AKConv(channels, channels, num_param, stride).eval()
    with torch.no_grad():
        layer.p_conv.weight.copy_(torch.randn(layer.p_conv.weight.shape, generator=generator) * 0.05)
        layer.p_conv.bias.copy_(torch.randn(layer.p_conv.bias.shape, generator=generator) * 2)
        bn = layer.conv[1]
        bn.running_mean.copy_(torch.randn(channels, generator=generator) * 0.1)
        bn.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return layer


def export(layer: AKConv, lowering: str, x: torch.Tensor, path: Path, opset: int = 17) -> None:
    layer.set_lowering(lowering)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            layer,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=["y"],
            custom_opsets={PLUGIN_DOMAIN: 1} if lowering == "plugin" else None,
        )
    layer.set_lowering("gather")


def run(
    channels: int = 64,
    size: int = 80,
    num_param: int = 5,
    stride: int = 1,
    threads: int = 0,
    min_seconds: float = 1.0,
    backends: tuple[str, ...] = ("onnxruntime", "openvino"),
) -> list[Row]:
    layer = build_layer(channels, num_param, stride)
    x = torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = layer(x).numpy()
    batch = x.numpy()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for lowering in LOWERINGS:
            path = Path(tmp) / f"akconv_{lowering}.onnx"
            export(layer, lowering, x, path)
            for backend in backends:
                target = TARGETS[RUNTIMES[backend]]
                if lowering == "plugin" and not target.runs_plugin:
                    rows.append(Row(backend, lowering, None, None, "not runnable (custom node)"))
                    continue
                infer = target.load(path, "fp32", threads).infer
                error = compare(reference, infer(batch)[0], 1e-4).max_abs_err
                note = "CPU reference kernel (numpy)" if lowering == "plugin" else ""
                latency = measure(lambda infer=infer: infer(batch), min_seconds=min_seconds)
                rows.append(Row(backend, lowering, latency, error, note))
    return rows


def auto(backend: str, opset: int = 17) -> str:
    """The lowering the target run by `backend` picks with `--akconv-lowering auto`."""
    target = TARGETS[RUNTIMES[backend]]
    return target.akconv_auto(opset, target.settings()).lowering


def fastest(rows: list[Row], backend: str) -> str:
    """The fastest exact native lowering measured for `backend` (the plugin's CPU kernel excluded)."""
    timed = [r for r in rows if r.backend == backend and r.latency and r.lowering != "plugin"]
    return min(timed, key=lambda r: r.latency.p50_ms).lowering


def table(rows: list[Row]) -> list[list[str]]:
    """Rows of (backend, lowering, p50 ms, ratio vs gather, max abs err vs torch, note)."""
    out = []
    for r in rows:
        base = next(g for g in rows if g.backend == r.backend and g.lowering == "gather")
        if r.latency is None:
            out.append([r.backend, r.lowering, "-", "-", "-", r.note])
            continue
        ratio = base.latency.p50_ms / r.latency.p50_ms
        out.append(
            [
                r.backend,
                r.lowering,
                f"{r.latency.p50_ms:.3f}",
                f"{ratio:.2f}x",
                f"{r.max_abs_err:.2e}",
                r.note,
            ]
        )
    return out


def exact(rows: list[Row], atol: float = 1e-4) -> bool:
    return all(r.max_abs_err is None or np.isfinite(r.max_abs_err) and r.max_abs_err <= atol for r in rows)
