"""The onnx target: FP32 ONNX checked with onnxruntime (descriptor)."""
