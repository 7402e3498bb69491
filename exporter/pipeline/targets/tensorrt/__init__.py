"""The tensorrt target: its descriptor, engine and bundle stage (engine), Q/DQ INT8 (qdq), op
compatibility rules (compat), end-to-end NMS (nms), AKConv plugin sources (plugin/), runtime (runner) and
INT8 search trials (quantizer)."""
