"""A detector's output contract (`Head`, one subclass per kind) and how its outputs become detections.

Modes: `decoded` — scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels, NMS needed; `raw` —
DAMO-YOLO's per-level GFL maps (sigmoid scores ×L, then box logits ×L), decoded here; `nms` —
detections (K, 7) [batch, x1, y1, x2, y2, score, class] from an NMS inside the model; `yolo` —
Ultralytics' Detect, (N, 4 + C, A): centre/size boxes in input pixels then sigmoid scores, NMS needed;
`yolo_end2end` — Ultralytics' NMS-free heads, (N, K, 6) rows [x1, y1, x2, y2, score, class];
`rtdetr` — RT-DETR's, (N, K, 6) rows [cx, cy, w, h, score, class], boxes a fraction of the input;
`engine_nms` — a TensorRT engine's EfficientNMS_TRT outputs (counts, boxes, scores, classes). Post-processing:
every (box, class) with score > threshold, class-wise NMS, the top `max_detections` by score, boxes
mapped from the model input back to the original image (exporter.base.data.transforms.to_image).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from exporter.base.data.coco_map import Detections
from exporter.base.data.transforms import Resize, to_image

MAX_DETECTIONS = 500
HEAD_MODES = ("raw", "decoded", "nms")  # DAMO-YOLO's

# one image's detections: xyxy boxes in input pixels, scores, labels
Picked = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Head:
    """An output contract: each kind of head is a subclass (its `mode` names it in records and recipes)
    that says how many classes its outputs score and how they become detections. `Head.of(mode, …)`
    makes one by name."""

    mode: str = dataclasses.field(init=False)
    score_threshold: float
    iou_threshold: float
    reg_max: int | None = None  # GFL bins per side: read by `raw` only
    max_detections: int = MAX_DETECTIONS

    @staticmethod
    def of(mode: str, score_threshold: float, iou_threshold: float, **fields) -> Head:
        kinds = {kind.mode: kind for kind in HEADS}
        if mode not in kinds:
            raise ValueError(f"unknown head mode {mode!r}; expected one of {', '.join(kinds)}")
        return kinds[mode](score_threshold, iou_threshold, **fields)

    def engine_nms(self) -> Head:
        """The contract of a TensorRT engine built from this model with end-to-end NMS appended."""
        return EngineNms(self.score_threshold, self.iou_threshold, self.reg_max, self.max_detections)

    def classes(self, shapes: list[list[int]]) -> int | None:
        """The model's class count read from its output shapes (batch first); None where the outputs
        carry class indices instead of one score per class."""
        return None

    def pick(self, tensors: list[torch.Tensor], input_size: tuple[int, int], images: int) -> list[Picked]:
        """The detections of each image of the batch, by descending score."""
        raise NotImplementedError

    def postprocess(
        self,
        outputs: list,
        input_size: tuple[int, int],
        image_sizes: list[tuple[int, int]],
        resize: Resize = "stretch",
    ) -> list[Detections]:
        """Outputs (torch tensors or numpy arrays, a batch of images) → Detections per image, by
        descending score, boxes in the original image's pixels (`resize`: how the input was made)."""
        tensors = [torch.as_tensor(np.asarray(o)) for o in outputs]
        picked = self.pick(tensors, input_size, len(image_sizes))
        return [
            Detections(to_image(bx, input_size, size, resize).numpy(), sc.numpy(), lb.numpy())
            for (bx, sc, lb), size in zip(picked, image_sizes, strict=True)
        ]


class _ScoresAndBoxes(Head):
    """Heads whose outputs score every class of every anchor: NMS picks the detections."""

    def scores_and_boxes(self, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels."""
        raise NotImplementedError

    def pick(self, tensors, input_size, images):
        scores, boxes = self.scores_and_boxes(tensors)
        return [
            multiclass_nms(scores[b], boxes[b], self.score_threshold, self.iou_threshold, self.max_detections)
            for b in range(images)
        ]


@dataclass(frozen=True)
class Decoded(_ScoresAndBoxes):
    """Scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels."""

    mode: str = dataclasses.field(default="decoded", init=False)

    def classes(self, shapes):
        return shapes[0][-1]

    def scores_and_boxes(self, tensors):
        scores, boxes = tensors
        return scores, boxes


@dataclass(frozen=True)
class RawGfl(_ScoresAndBoxes):
    """DAMO-YOLO's per-level GFL maps: sigmoid scores (N, C, H, W) ×L, then box logits ×L."""

    mode: str = dataclasses.field(default="raw", init=False)

    def classes(self, shapes):
        return shapes[0][1]

    def scores_and_boxes(self, tensors):
        from exporter.models.damoyolo.postprocess import decode

        half = len(tensors) // 2
        return decode(tensors[:half], tensors[half:], self.reg_max)


@dataclass(frozen=True)
class Yolo(_ScoresAndBoxes):
    """Ultralytics' Detect: (N, 4 + C, A), centre/size boxes in input pixels then sigmoid scores."""

    mode: str = dataclasses.field(default="yolo", init=False)

    def classes(self, shapes):
        return shapes[0][1] - 4

    def scores_and_boxes(self, tensors):
        predictions = tensors[0].transpose(1, 2)  # (N, A, 4 + C)
        centre, extent = predictions[..., :2], predictions[..., 2:4]
        return predictions[..., 4:], torch.cat([centre - extent / 2, centre + extent / 2], -1)


@dataclass(frozen=True)
class InGraphNms(Head):
    """Detections (K, 7) [batch, x1, y1, x2, y2, score, class] from an NMS inside the model."""

    mode: str = dataclasses.field(default="nms", init=False)

    def pick(self, tensors, input_size, images):
        (rows,) = tensors
        picked = []
        for b in range(images):
            mine = rows[rows[:, 0] == b]
            mine = mine[torch.argsort(mine[:, 5], descending=True)]
            picked.append((mine[:, 1:5], mine[:, 5], mine[:, 6].long()))
        return picked


@dataclass(frozen=True)
class YoloEnd2End(Head):
    """Ultralytics' NMS-free heads (YOLOv10, YOLO26): (N, K, 6) rows [x1, y1, x2, y2, score, class]."""

    mode: str = dataclasses.field(default="yolo_end2end", init=False)

    def corners(self, rows: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        return rows

    def pick(self, tensors, input_size, images):
        rows = self.corners(tensors[0], input_size)
        picked = []
        for b in range(images):
            mine = rows[b][rows[b, :, 4] > self.score_threshold]
            mine = mine[torch.argsort(mine[:, 4], descending=True)][: self.max_detections]
            picked.append((mine[:, :4], mine[:, 4], mine[:, 5].long()))
        return picked


@dataclass(frozen=True)
class RtDetr(YoloEnd2End):
    """RT-DETR's: (N, K, 6) rows [cx, cy, w, h, score, class], boxes a fraction of the input."""

    mode: str = dataclasses.field(default="rtdetr", init=False)

    def corners(self, rows, input_size):
        height, width = input_size
        scale = torch.tensor([width, height], dtype=rows.dtype)
        centre, extent = rows[..., :2] * scale, rows[..., 2:4] * scale
        return torch.cat([centre - extent / 2, centre + extent / 2, rows[..., 4:]], -1)


@dataclass(frozen=True)
class EngineNms(Head):
    """A TensorRT engine's EfficientNMS_TRT outputs: counts, xyxy boxes, scores, classes (by score)."""

    mode: str = dataclasses.field(default="engine_nms", init=False)  # not a model's: an engine's

    def pick(self, tensors, input_size, images):
        counts, boxes, scores, classes = tensors
        picked = []
        for b in range(images):
            n = int(counts[b].reshape(-1)[0])
            picked.append((boxes[b, :n].float(), scores[b, :n].float(), classes[b, :n].long()))
        return picked


HEADS = (Decoded, RawGfl, Yolo, InGraphNms, YoloEnd2End, RtDetr, EngineNms)


def multiclass_nms(
    scores: torch.Tensor, boxes: torch.Tensor, score_threshold: float, iou_threshold: float, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: scores (A, C), boxes (A, 4) → kept boxes (K, 4), scores (K,), labels (K,) by score."""
    from torchvision.ops import batched_nms  # here: importing torchvision takes seconds a CLI start skips

    anchor, label = (scores > score_threshold).nonzero(as_tuple=True)
    kept_scores = scores[anchor, label]
    keep = batched_nms(boxes[anchor].float(), kept_scores.float(), label, iou_threshold)[:top_k]
    return boxes[anchor[keep]], kept_scores[keep], label[keep]
