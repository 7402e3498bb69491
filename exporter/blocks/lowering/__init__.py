"""How blocks without a plain deploy form (AKConv's offset sampling) become ONNX, per target."""
