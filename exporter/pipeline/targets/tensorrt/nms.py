"""End-to-end NMS for TensorRT: an `EfficientNMS_TRT` node appended to a decoded-head ONNX.

Plugin contract (TensorRT plugin/efficientNMSPlugin/README.md, shipped since TensorRT 8.0): inputs boxes
(B, A, 4) and scores (B, A, C); `box_coding` 0 = corners [x1, y1, x2, y2], 1 = centre-size [x, y, w, h];
outputs num_detections (B, 1) int32, detection_boxes (B, K, 4) (always corners), detection_scores (B, K)
and detection_classes (B, K) int32, K = max_output_boxes. Our heads output xyxy corners, so box_coding is
0. (DAMO-YOLO's official end-to-end export, damo/base_models/core/end2end.py, declares 1 while it feeds
xyxy boxes.) Scores are already sigmoid probabilities, so score_activation is 0.

TensorRT's ONNX parser finds the plugin by op type, `plugin_version` and `plugin_namespace` and ignores
the node's domain; the node lives in the custom domain "TRT" so that onnx.checker accepts the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from exporter.base.errors import UserError

OP = "EfficientNMS_TRT"
DOMAIN = "TRT"
BOX_CORNERS, BOX_CENTRE_SIZE = 0, 1
OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value or d.dim_param or "?" for d in value.type.tensor_type.shape.dim]


def split_yolo(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a model with Ultralytics' Detect output (B, 4 + C, A) — centre/size boxes, then scores —
    whose outputs are `boxes` (B, A, 4) and `scores` (B, A, C) instead."""
    if len(model.graph.output) != 1:
        raise UserError(f"end-to-end NMS: a YOLO head has one output, this model {len(model.graph.output)}")
    output = model.graph.output[0]
    dims = _dims(output)
    if len(dims) != 3 or not isinstance(dims[1], int) or dims[1] < 5:
        raise UserError(f"end-to-end NMS needs the YOLO output (B, 4 + C, A), got {dims}")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph

    def const(name: str, values: list[int]) -> str:
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
        return name

    graph.node.extend(
        [
            helper.make_node("Transpose", [output.name], ["end2end/rows"], perm=[0, 2, 1]),
            helper.make_node(
                "Slice",
                [
                    "end2end/rows",
                    const("end2end/0", [0]),
                    const("end2end/4", [4]),
                    const("end2end/axis", [2]),
                ],
                ["boxes"],
            ),  # fmt: skip
            helper.make_node(
                "Slice",
                ["end2end/rows", "end2end/4", const("end2end/end", [dims[1]]), "end2end/axis"],
                ["scores"],
            ),
        ]
    )
    batch, classes, anchors = dims[0], dims[1] - 4, dims[2]
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, anchors, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, anchors, classes]),
        ]
    )
    return result


def append_efficient_nms(
    model: onnx.ModelProto,
    boxes: str = "boxes",
    scores: str = "scores",
    score_threshold: float = 0.05,
    iou_threshold: float = 0.7,
    max_output_boxes: int = 100,
    box_coding: int = BOX_CORNERS,
) -> onnx.ModelProto:
    """A copy of `model` whose outputs are EfficientNMS_TRT's, fed by its `boxes` (corners, or centre/size
    with box_coding 1) and `scores`."""
    outputs = {o.name: o for o in model.graph.output}
    for name in (boxes, scores):
        if name not in outputs:
            raise UserError(
                f"end-to-end NMS: the model has no output '{name}' (outputs: {', '.join(outputs)})"
            )
    box_dims, score_dims = _dims(outputs[boxes]), _dims(outputs[scores])
    if len(box_dims) != 3 or box_dims[2] != 4 or len(score_dims) != 3 or box_dims[:2] != score_dims[:2]:
        raise UserError(
            f"end-to-end NMS needs boxes (B, A, 4) and scores (B, A, C), got {box_dims} and {score_dims}"
        )
    if not (0 <= score_threshold <= 1 and 0 < iou_threshold <= 1 and max_output_boxes >= 1):
        raise UserError(
            "end-to-end NMS needs 0 <= score_threshold <= 1, 0 < iou_threshold <= 1 and max_output_boxes >= 1"
        )
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    graph.node.append(
        helper.make_node(
            OP,
            [boxes, scores],
            list(OUTPUTS),
            name="end2end/EfficientNMS_TRT",
            domain=DOMAIN,
            plugin_version="1",
            plugin_namespace="",
            score_threshold=float(score_threshold),
            iou_threshold=float(iou_threshold),
            max_output_boxes=int(max_output_boxes),
            background_class=-1,
            score_activation=0,
            box_coding=box_coding,
        )
    )
    batch = box_dims[0]
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT32, [batch, 1]),
            helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, [batch, max_output_boxes, 4]),
            helper.make_tensor_value_info(OUTPUTS[2], TensorProto.FLOAT, [batch, max_output_boxes]),
            helper.make_tensor_value_info(OUTPUTS[3], TensorProto.INT32, [batch, max_output_boxes]),
        ]
    )
    result.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    onnx.checker.check_model(result)
    return result


def end2end_stage(onnx_path: Path, out: Path, layout: str = "decoded", **nms: Any) -> dict[str, Any]:
    """Write `onnx_path` with end-to-end NMS to `out`; returns the record (the node's attributes).
    `layout`: 'decoded' (outputs `boxes` in corners and `scores`) or 'yolo' (Ultralytics' Detect)."""
    model = onnx.load(str(onnx_path))
    if layout == "yolo":
        model, nms = split_yolo(model), {**nms, "box_coding": BOX_CENTRE_SIZE}
    model = append_efficient_nms(model, **nms)
    onnx.save(model, str(out))
    values = {a.name: helper.get_attribute_value(a) for a in model.graph.node[-1].attribute}
    return {"op": OP, "attributes": {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}}
