"""onnxruntime CPU backend; graphs with AKConvSample plugin nodes run on its CPU reference kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


class OrtRunner:
    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        from exporter.lowering import ort_ops

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        model: str | bytes = str(path)
        proto = onnx.load(str(path), load_external_data=False)
        if ort_ops.has_plugin_nodes(proto):
            proto, library = ort_ops.for_cpu(onnx.load(str(path)))
            options.register_custom_ops_library(library)
            model = proto.SerializeToString()
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})


def load(path: str | Path, threads: int = 0) -> OrtRunner:
    return OrtRunner(path, threads)
