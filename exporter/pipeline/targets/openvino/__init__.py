"""The openvino target: its descriptor, IR stage (ir), runtime and INT8 search trials (quantizer)."""
