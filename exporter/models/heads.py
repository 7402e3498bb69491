"""A detector's output contract (`Head`) and how its outputs become detections.

Modes: `decoded` — scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels, NMS needed; `raw` —
DAMO-YOLO's per-level GFL maps (sigmoid scores ×L, then box logits ×L), decoded here; `nms` —
detections (K, 7) [batch, x1, y1, x2, y2, score, class] from an NMS inside the model; `yolo` —
Ultralytics' Detect, (N, 4 + C, A): centre/size boxes in input pixels then sigmoid scores, NMS needed;
`yolo_end2end` — Ultralytics' NMS-free heads, (N, K, 6) rows [x1, y1, x2, y2, score, class];
`rtdetr` — RT-DETR's, (N, K, 6) rows [cx, cy, w, h, score, class], boxes a fraction of the input;
`engine_nms` — a TensorRT engine's EfficientNMS_TRT outputs (counts, boxes, scores, classes). Post-processing:
every (box, class) with score > threshold, class-wise NMS, the top `max_detections` by score, boxes
mapped from the model input back to the original image (exporter.data.transforms.to_image).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms

from exporter.data.coco_map import Detections
from exporter.data.transforms import Resize, to_image

MAX_DETECTIONS = 500
HEAD_MODES = ("raw", "decoded", "nms")  # DAMO-YOLO's
ENGINE_NMS = "engine_nms"  # outputs of a TensorRT engine built with end-to-end NMS (not a model mode)


@dataclass(frozen=True)
class Head:
    mode: str
    score_threshold: float
    iou_threshold: float
    reg_max: int | None = None  # GFL bins per side: needed by `raw` only
    max_detections: int = MAX_DETECTIONS

    def with_mode(self, mode: str) -> Head:
        return dataclasses.replace(self, mode=mode)

    def classes(self, shapes: list[list[int]]) -> int | None:
        """The model's class count read from its output shapes (batch first); None where the outputs
        carry class indices instead of one score per class."""
        if self.mode == "decoded":  # scores (N, A, C)
            return shapes[0][-1]
        if self.mode == "raw":  # per-level scores (N, C, H, W) first
            return shapes[0][1]
        if self.mode == "yolo":  # (N, 4 + C, A)
            return shapes[0][1] - 4
        return None

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
        results = []
        if self.mode == ENGINE_NMS:  # counts, xyxy boxes, scores, classes (sorted by score)
            counts, boxes, scores, classes = tensors
            for b, size in enumerate(image_sizes):
                n = int(counts[b].reshape(-1)[0])
                results.append((boxes[b, :n].float(), scores[b, :n].float(), classes[b, :n].long(), size))
        elif self.mode == "nms":
            (rows,) = tensors
            for b, size in enumerate(image_sizes):
                mine = rows[rows[:, 0] == b]
                mine = mine[torch.argsort(mine[:, 5], descending=True)]
                results.append((mine[:, 1:5], mine[:, 5], mine[:, 6].long(), size))
        elif self.mode in ("yolo_end2end", "rtdetr"):
            rows = tensors[0]
            if self.mode == "rtdetr":  # centre/size fractions of the input → corners in input pixels
                height, width = input_size
                scale = torch.tensor([width, height], dtype=rows.dtype)
                centre, extent = rows[..., :2] * scale, rows[..., 2:4] * scale
                rows = torch.cat([centre - extent / 2, centre + extent / 2, rows[..., 4:]], -1)
            for b, size in enumerate(image_sizes):
                mine = rows[b][rows[b, :, 4] > self.score_threshold]
                mine = mine[torch.argsort(mine[:, 4], descending=True)][: self.max_detections]
                results.append((mine[:, :4], mine[:, 4], mine[:, 5].long(), size))
        else:
            if self.mode == "raw":
                from exporter.models.damoyolo.postprocess import decode

                half = len(tensors) // 2
                scores, boxes = decode(tensors[:half], tensors[half:], self.reg_max)
            elif self.mode == "decoded":
                scores, boxes = tensors
            elif self.mode == "yolo":
                predictions = tensors[0].transpose(1, 2)  # (N, A, 4 + C)
                centre, extent = predictions[..., :2], predictions[..., 2:4]
                boxes = torch.cat([centre - extent / 2, centre + extent / 2], -1)
                scores = predictions[..., 4:]
            else:
                raise ValueError(f"unknown head_mode {self.mode!r}; expected one of {', '.join(HEAD_MODES)}")
            for b, size in enumerate(image_sizes):
                kept = multiclass_nms(
                    scores[b], boxes[b], self.score_threshold, self.iou_threshold, self.max_detections
                )
                results.append((*kept, size))
        return [
            Detections(to_image(bx, input_size, size, resize).numpy(), sc.numpy(), lb.numpy())
            for bx, sc, lb, size in results
        ]


def multiclass_nms(
    scores: torch.Tensor, boxes: torch.Tensor, score_threshold: float, iou_threshold: float, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: scores (A, C), boxes (A, 4) → kept boxes (K, 4), scores (K,), labels (K,) by score."""
    anchor, label = (scores > score_threshold).nonzero(as_tuple=True)
    kept_scores = scores[anchor, label]
    keep = batched_nms(boxes[anchor].float(), kept_scores.float(), label, iou_threshold)[:top_k]
    return boxes[anchor[keep]], kept_scores[keep], label[keep]
