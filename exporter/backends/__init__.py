"""Backends: `load(artifact) -> Runner` with `Runner.infer(batch) -> list of arrays`.

Artifacts are named `<target>.<precision>` in a run's manifest (onnx.fp32 → onnxruntime,
openvino.fp32/fp16/int8 → OpenVINO CPU, tensorrt.* → TensorRT engines on a GPU).
"""

from __future__ import annotations

from pathlib import Path


def load_artifact(key: str, path: str | Path, threads: int = 0):
    """A runner for the artifact `key` (e.g. 'openvino.int8') stored at `path`."""
    target, _, precision = key.partition(".")
    if target == "onnx":
        from exporter.backends import onnxruntime

        return onnxruntime.load(path, threads)
    if target == "openvino":
        from exporter.backends import openvino

        return openvino.load(path, precision, threads)
    if target == "tensorrt":
        from exporter.backends import tensorrt

        plugin = Path(path).parent / "plugin" / "build" / "libakconv_plugin.so"
        return tensorrt.load(path, plugin if plugin.is_file() else None)
    raise ValueError(f"no runner for artifact '{key}'")
