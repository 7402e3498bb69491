"""reparam-export: fuse re-parameterizable detectors and ship them to ONNX, OpenVINO and TensorRT."""

__version__ = "0.1.0"
