"""Which AKConv lowering each backend gets with `--akconv-lowering auto`, and why.

Every lowering is exact; auto picks the fastest one the backend can run (measured by
`reparam-export bench-akconv`). GridSample exists in ONNX from opset 16 and in TensorRT's ONNX
parser from 8.5; older TensorRT (e.g. 8.2 on JetPack 4.6) gets the gather decomposition, since the
AKConvSample plugin implements IPluginV3 and so needs TensorRT 10.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.errors import UserError
from exporter.lowering import trt_compat

GRIDSAMPLE_MIN_OPSET = 16
TRT_GRIDSAMPLE_SINCE = (8, 5)


@dataclass(frozen=True)
class Choice:
    lowering: str
    reason: str


def auto(backend: str, opset: int, trt_version: str | None = None) -> Choice:
    """Measured on x86 CPU (`reparam-export bench-akconv`): gather is the faster exact lowering on
    onnxruntime, GridSample on OpenVINO; TensorRT runs GridSample natively from 8.5 (gather before)."""
    if backend == "onnxruntime":
        return Choice("gather", "onnxruntime CPU runs the gather decomposition faster than GridSample")
    if backend == "tensorrt":
        version = trt_version or trt_compat.DEFAULT_TRT_VERSION
        if trt_compat.parse_trt_version(version).version < TRT_GRIDSAMPLE_SINCE:
            return Choice(
                "gather",
                f"TensorRT {version} predates native GridSample (8.5) and the AKConvSample plugin "
                "(IPluginV3, TensorRT 10): exact gather decomposition",
            )
        if opset < GRIDSAMPLE_MIN_OPSET:
            return Choice("gather", f"opset {opset} has no GridSample (needs {GRIDSAMPLE_MIN_OPSET})")
        return Choice("gridsample", f"TensorRT {version} parses ONNX GridSample natively (since 8.5)")
    if backend == "openvino":
        if opset < GRIDSAMPLE_MIN_OPSET:
            return Choice("gather", f"opset {opset} has no GridSample (needs {GRIDSAMPLE_MIN_OPSET})")
        return Choice("gridsample", "OpenVINO CPU runs GridSample faster than the gather decomposition")
    raise ValueError(f"unknown backend '{backend}'")


def choose(requested: str, backend: str, opset: int, trt_version: str | None = None) -> Choice:
    """The lowering for `backend` given the user's request ('auto' or a lowering name)."""
    if requested == "auto":
        return auto(backend, opset, trt_version)
    if requested == "gridsample" and opset < GRIDSAMPLE_MIN_OPSET:
        raise UserError(
            f"--akconv-lowering gridsample needs opset >= {GRIDSAMPLE_MIN_OPSET} (got {opset}); "
            "raise --opset or use --akconv-lowering gather"
        )
    if requested == "plugin" and backend == "openvino":
        raise UserError(
            "OpenVINO cannot run the AKConvSample plugin; use --akconv-lowering gridsample or gather"
        )
    return Choice(requested, "requested explicitly")
