"""onnxruntime CPU backend; graphs with AKConvSample plugin nodes run on its CPU reference kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from exporter.base.errors import UserError
from exporter.base.workers import threads_here


def read_model(path: str | Path) -> onnx.ModelProto:
    """An ONNX model with its external data, which must lie in the model's folder (else one line)."""
    try:
        return onnx.load(str(path))
    except onnx.checker.ValidationError as exc:  # external data leaving the folder, among others
        raise UserError(f"{path} refused: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, a truncated file
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__}); rebuild it") from None


class OrtRunner:
    def __init__(self, path: str | Path, threads: int = 0):
        self.path, self.threads = path, threads
        self.session = self._session(read_model(path))
        self.input_name = self.session.get_inputs()[0].name

    def _session(self, proto: onnx.ModelProto):
        import onnxruntime as ort

        from exporter.blocks.lowering import ort_ops

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or threads_here()
        options.log_severity_level = 3
        if ort_ops.has_plugin_nodes(proto):
            proto, library = ort_ops.for_cpu(proto)
            options.register_custom_ops_library(library)
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})

    def infer_with_orderings(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The outputs and the indices every TopK node picked, in graph order."""
        proto = read_model(self.path)
        picks = [node.output[1] for node in proto.graph.node if node.op_type == "TopK"]
        outputs = len(proto.graph.output)
        proto.graph.output.extend(
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.INT64, None) for n in picks
        )
        results = self._session(proto).run(
            None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return results[:outputs], results[outputs:]


def load(path: str | Path, threads: int = 0) -> OrtRunner:
    return OrtRunner(path, threads)
