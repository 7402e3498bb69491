"""Backends: `load(artifact) -> Runner` with `Runner.infer(batch) -> list of arrays`.

Artifacts are named `<target>.<precision>` in a run's manifest (onnx.fp32 → onnxruntime,
openvino.fp32/fp16/int8 → OpenVINO CPU, tensorrt.* → TensorRT engines on a GPU).
"""

from __future__ import annotations

from pathlib import Path


def load_artifact(key: str, path: str | Path, threads: int = 0, plugin_library: str | Path | None = None):
    """A runner for the artifact `key` (e.g. 'openvino.int8') stored at `path`; TensorRT engines
    built with the AKConv plugin need the run's `plugin_library` (recipe tensorrt.plugin_library)."""
    target, _, precision = key.partition(".")
    if target == "onnx":
        from exporter.backends import onnxruntime

        return onnxruntime.load(path, threads)
    if target == "openvino":
        from exporter.backends import openvino

        return openvino.load(path, precision, threads)
    if target == "tensorrt":
        from exporter.backends import tensorrt

        return tensorrt.load(path, Path(plugin_library) if plugin_library else None)
    raise ValueError(f"no runner for artifact '{key}'")
