"""The onnxruntime target: its descriptor and its INT8 stage (int8: a static Q/DQ ONNX for onnxruntime's
CPU kernels)."""
