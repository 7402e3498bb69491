"""Backends: `load(artifact) -> Runner` with `Runner.infer(batch) -> list of arrays`, one module per
runtime (onnxruntime, OpenVINO CPU, TensorRT on a GPU); libraries imported lazily. Which runtime runs
which artifact is its target's (exporter.targets)."""
