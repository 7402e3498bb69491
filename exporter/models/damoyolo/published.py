"""Published DAMO-YOLO targets (COCO val2017; T4 = TensorRT FP16 batch 1 without NMS; CPU = OpenVINO
on an Intel Xeon 8163, batch 1, no post-processing). mAP as a fraction."""

from __future__ import annotations

# variant: (input, mAP, T4 ms, CPU ms)
DAMO_YOLO = {
    "t": (640, 0.420, 2.78, None),
    "s": (640, 0.460, 3.83, None),
    "m": (640, 0.492, 5.62, None),
    "l": (640, 0.508, 7.95, None),
    "ns": (416, 0.323, None, 4.08),
    "nm": (416, 0.382, None, 5.05),
    "nl": (416, 0.405, None, 6.69),
}


# variant: (parameters in millions, GFLOPs) as published: measured with thop on models whose RepConvs are
# re-parameterized and whose other BatchNorms are kept
SIZES = {
    "t": (8.48, 18.1),
    "s": (16.25, 37.8),
    "m": (28.18, 61.9),
    "l": (42.06, 97.5),
    "ns": (1.41, 1.56),
    "nm": (2.71, 3.69),
    "nl": (5.69, 6.04),
}


def variant_of(model_name: str) -> str | None:
    """'damoyolo_s' → 's'; None for other models."""
    name = model_name.lower().replace("-", "_")
    if name.startswith("damoyolo_") and name.removeprefix("damoyolo_") in DAMO_YOLO:
        return name.removeprefix("damoyolo_")
    return None
