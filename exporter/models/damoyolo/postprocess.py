"""DAMO-YOLO's GFL decoding and its in-graph NMS, as in the official COCO evaluation.

Decoding (GFL): sigmoid class scores; per side a softmax over reg_max + 1 bins whose expectation,
times the stride, is the distance from the prior at (col·stride, row·stride) (no +0.5 offset);
boxes are xyxy = prior ∓ distances. Pre-processing (exporter.base.data.transforms.resize_stretch): RGB,
plain (stretch) resize to the input size, values 0–255, no mean/std. The rest of post-processing
(threshold, class-wise NMS, top 500, rescale) is exporter.models.heads.
"""

from __future__ import annotations

import torch

STRIDES = (8, 16, 32)


def decode(
    score_maps: list[torch.Tensor], reg_maps: list[torch.Tensor], reg_max: int, strides=STRIDES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level maps (N, C, H, W) sigmoid scores and (N, 4·(reg_max+1), H, W) logits →
    scores (N, A, C) and xyxy boxes (N, A, 4) in input pixels, levels concatenated row-major."""
    all_scores, all_boxes = [], []
    for scores, reg, stride in zip(score_maps, reg_maps, strides, strict=True):
        n, _, h, w = reg.shape
        bins = torch.arange(reg_max + 1, dtype=reg.dtype, device=reg.device)
        prob = reg.reshape(n, 4, reg_max + 1, h * w).softmax(2)
        dist = (prob * bins.view(1, 1, -1, 1)).sum(2).transpose(1, 2) * stride  # (N, HW, 4): l t r b
        ys = torch.arange(h, dtype=reg.dtype, device=reg.device) * stride
        xs = torch.arange(w, dtype=reg.dtype, device=reg.device) * stride
        py, px = (g.reshape(1, -1) for g in torch.meshgrid(ys, xs, indexing="ij"))
        boxes = torch.stack([px - dist[..., 0], py - dist[..., 1], px + dist[..., 2], py + dist[..., 3]], -1)
        all_scores.append(scores.flatten(2).transpose(1, 2))
        all_boxes.append(boxes)
    return torch.cat(all_scores, 1), torch.cat(all_boxes, 1)


class _NonMaxSuppression(torch.autograd.Function):
    """Class-wise NMS over a batch; exported as one ONNX NonMaxSuppression node (corner boxes).

    boxes (B, N, 4) xyxy, scores (B, C, N) → selected (K, 3) int64 rows [batch, class, box].
    The torch forward does not cap boxes per class; that cap (≥ top_k) cannot change the top_k
    selection that follows.
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        from torchvision.ops import batched_nms  # here: importing torchvision takes seconds a CLI start skips

        rows = []
        for b in range(boxes.shape[0]):
            label, index = (scores[b] > score_threshold).nonzero(as_tuple=True)
            keep = batched_nms(boxes[b, index], scores[b, label, index], label, iou_threshold)
            batch = torch.full_like(keep, b)
            rows.append(torch.stack([batch, label[keep], index[keep]], 1))
        return torch.cat(rows).long()

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            const(max_per_class, torch.int64),
            const(iou_threshold, torch.float32),
            const(score_threshold, torch.float32),
            center_point_box_i=0,
        )


def nms_detections(
    scores: torch.Tensor, boxes: torch.Tensor, score_threshold: float, iou_threshold: float, top_k: int
) -> torch.Tensor:
    """Batched end-to-end NMS: scores (B, A, C), boxes (B, A, 4) → (K, 7) rows
    [batch, x1, y1, x2, y2, score, class]: per image the top_k by score after class-wise NMS.

    Rows are ordered by image, class, then anchor (not by score), so that scores equal to within
    rounding cannot reorder them between two runtimes.
    """
    num_boxes, num_classes = scores.shape[1], scores.shape[2]
    selected = _NonMaxSuppression.apply(
        boxes, scores.transpose(1, 2).contiguous(), top_k, iou_threshold, score_threshold
    )
    batch, label, index = selected[:, 0], selected[:, 1], selected[:, 2]
    kept_scores = scores.reshape(-1).index_select(0, (batch * num_boxes + index) * num_classes + label)
    by_score = torch.argsort(batch.to(scores.dtype) * 2 + (1 - kept_scores))  # by image, then score desc
    images = torch.arange(scores.shape[0], device=scores.device)
    counts = (batch[:, None] == images[None]).sum(0)
    first = torch.cumsum(counts, 0) - counts  # position of each image's first row in by_score
    rank = torch.arange(batch.shape[0], device=scores.device) - first[batch[by_score]]
    top = by_score[rank < top_k]
    top = top[torch.argsort((batch[top] * num_classes + label[top]) * num_boxes + index[top])]
    kept_boxes = boxes.reshape(-1, 4).index_select(0, batch[top] * num_boxes + index[top])
    columns = [batch[top, None], kept_boxes, kept_scores[top, None], label[top, None]]
    return torch.cat([c.to(scores.dtype) for c in columns], 1)
