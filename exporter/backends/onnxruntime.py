"""onnxruntime CPU backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class OrtRunner:
    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})


def load(path: str | Path, threads: int = 0) -> OrtRunner:
    return OrtRunner(path, threads)
