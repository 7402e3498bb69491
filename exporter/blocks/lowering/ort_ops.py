"""CPU reference kernel of the `AKConvSample` plugin node, run under onnxruntime.

onnxruntime-extensions executes Python-defined ops only in its domain `ai.onnx.contrib`, so a graph's
plugin nodes are moved there for CPU runs; the TensorRT parser ignores domains and is unaffected.
The kernel is a numpy implementation of the node's contract, independent of the torch samplers.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx

from exporter.blocks.lowering.akconv import PLUGIN_DOMAIN, PLUGIN_OP, initial_grid

CONTRIB_DOMAIN = "ai.onnx.contrib"


def akconv_sample_reference(x: np.ndarray, offset: np.ndarray, num_param: int, stride: int) -> np.ndarray:
    """The node's contract: (B, C, H, W), (B, 2N, h, w) -> (B, C, h·N, w); see lowering/akconv.py."""
    b, c, height, width = x.shape
    n, h, w = num_param, offset.shape[2], offset.shape[3]
    grid = initial_grid(n).numpy().reshape(2, n)
    offset = offset.astype(np.float32)  # coordinates in float32, as the plugin contract says
    rows = (
        (np.arange(h, dtype=np.float32) * stride)[None, None, :, None]
        + grid[0][None, :, None, None]
        + offset[:, :n]
    )
    cols = (
        (np.arange(w, dtype=np.float32) * stride)[None, None, None, :]
        + grid[1][None, :, None, None]
        + offset[:, n:]
    )

    def corners(u: np.ndarray, length: int):
        floor = np.floor(u)
        lo, hi = np.clip(floor, 0, length - 1), np.clip(floor + 1, 0, length - 1)
        clamped = np.clip(u, 0, length - 1)
        return ((lo.astype(np.int64), 1 + (lo - clamped)), (hi.astype(np.int64), 1 - (hi - clamped)))

    batch = np.arange(b)[:, None, None, None]
    out = np.zeros((b, n, h, w, c), dtype=np.float64)
    for r, wr in corners(rows, height):
        for q, wq in corners(cols, width):
            out += (wr * wq)[..., None] * x[batch, :, r, q]  # advanced indexing: (B, N, h, w, C)
    return out.transpose(0, 4, 2, 1, 3).reshape(b, c, h * n, w).astype(x.dtype)


@functools.cache
def _register() -> str:
    """Register the Python kernel with onnxruntime-extensions; returns its custom-op library path."""
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    @onnx_op(
        op_type=PLUGIN_OP,
        inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float],
        outputs=[PyCustomOpDef.dt_float],
        attrs={
            "num_param": PyCustomOpDef.dt_int64,
            "stride": PyCustomOpDef.dt_int64,
            "plugin_version": PyCustomOpDef.dt_string,
            "plugin_namespace": PyCustomOpDef.dt_string,
        },
    )
    def akconv_sample(x, offset, **attrs):
        return akconv_sample_reference(x, offset, int(attrs["num_param"]), int(attrs["stride"]))

    return get_library_path()


def has_plugin_nodes(model: onnx.ModelProto) -> bool:
    return any(node.domain == PLUGIN_DOMAIN for node in model.graph.node)


def for_cpu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """A copy with plugin nodes moved to the extensions domain, and the library to register."""
    cpu = onnx.ModelProto()
    cpu.CopyFrom(model)
    for node in cpu.graph.node:
        if node.domain == PLUGIN_DOMAIN:
            node.domain = CONTRIB_DOMAIN
    imports = [o for o in cpu.opset_import if o.domain not in (PLUGIN_DOMAIN, CONTRIB_DOMAIN)]
    del cpu.opset_import[:]
    cpu.opset_import.extend([*imports, onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1)])
    return cpu, _register()
