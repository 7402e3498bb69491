"""Train the demo detector on the synthetic shapes set, reproducibly, on CPU.

    python -m exporter.models.demo_train --data data/shapes --out exporter/models/weights/demo_shapes.pt

Task-aligned assignment (candidates: priors inside a box; metric score·IoU⁶; top 10 per box),
losses BCE on IoU-aware class targets + GIoU + distribution focal loss, AdamW with warm-up and
cosine decay, EMA weights (what is saved), random horizontal/vertical flips. Seeded throughout;
a fixed iteration count (not a time budget) so a rerun gives the same weights on the same setup.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from exporter.base.artifacts import atomic_output, save_torch, write_json
from exporter.base.data.coco import load_coco
from exporter.base.data.images import read_rgb
from exporter.base.data.transforms import resize_stretch
from exporter.models.demo import DemoDetector


@dataclass
class TrainConfig:
    data: str = "data/shapes"
    out: str = "exporter/models/weights/demo_shapes.pt"
    input_size: int = 320
    epochs: int = 10
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_iters: int = 300
    ema_decay: float = 0.9995
    seed: int = 0
    threads: int = 1  # one thread: reproducible weights, and no OpenMP oversubscription on a shared CPU


def load_split(json_path: Path, size: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Images resized to size x size (uint8, N x 3 x size x size) and boxes scaled to match."""
    dataset = load_coco(json_path)
    images = torch.empty(len(dataset.samples), 3, size, size, dtype=torch.uint8)
    targets = []
    for i, sample in enumerate(dataset.samples):
        images[i] = torch.from_numpy(resize_stretch(read_rgb(sample.path), (size, size))).to(torch.uint8)
        scale = np.array([size / sample.width, size / sample.height] * 2, np.float32)
        targets.append((torch.from_numpy(sample.boxes * scale), torch.from_numpy(sample.labels)))
    return images, targets


def flip(images: torch.Tensor, targets: list, generator: torch.Generator) -> tuple[torch.Tensor, list]:
    """Random horizontal and vertical flips per image (shape classes are flip-invariant)."""
    size = images.shape[-1]
    images = images.clone()
    flipped = []
    for i, (boxes, labels) in enumerate(targets):
        boxes = boxes.clone()
        if torch.rand(1, generator=generator) < 0.5:
            images[i] = images[i].flip(-1)
            boxes[:, [0, 2]] = size - boxes[:, [2, 0]]
        if torch.rand(1, generator=generator) < 0.5:
            images[i] = images[i].flip(-2)
            boxes[:, [1, 3]] = size - boxes[:, [3, 1]]
        flipped.append((boxes, labels))
    return images, flipped


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes, (G, 4) x (A, 4) -> (G, A)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − GIoU for matched xyxy boxes (n, 4) -> (n,)."""
    lt, rb = torch.maximum(pred[:, :2], target[:, :2]), torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(-1)
    union = area_p + area_t - inter + 1e-9
    hull = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(
        -1
    ) + 1e-9
    return 1 - (inter / union - (hull - union) / hull)


def assign(
    scores, boxes, centres, gt_boxes, gt_labels, topk: int = 10, alpha: float = 1.0, beta: float = 6.0
):
    """Task-aligned assignment for one image: (foreground mask (A,), target boxes (A, 4),
    target class scores (A, C) = IoU-normalized alignment)."""
    num_anchors, num_classes = scores.shape
    target_scores = torch.zeros_like(scores)
    target_boxes = torch.zeros(num_anchors, 4, dtype=boxes.dtype)
    if len(gt_boxes) == 0:
        return torch.zeros(num_anchors, dtype=torch.bool), target_boxes, target_scores
    inside = (
        (centres[None, :, 0] > gt_boxes[:, None, 0])
        & (centres[None, :, 0] < gt_boxes[:, None, 2])
        & (centres[None, :, 1] > gt_boxes[:, None, 1])
        & (centres[None, :, 1] < gt_boxes[:, None, 3])
    )
    ious = box_iou(gt_boxes, boxes)
    metric = scores[:, gt_labels].T.pow(alpha) * ious.pow(beta) * inside
    ranked = (metric + 1e-12 * inside).topk(min(topk, num_anchors), dim=1).indices
    candidate = torch.zeros_like(inside).scatter_(1, ranked, True) & inside
    overlaps = torch.where(candidate, ious, torch.full_like(ious, -1))
    best_iou, owner = overlaps.max(0)
    foreground = best_iou >= 0
    owned = torch.zeros_like(candidate).scatter_(0, owner[None], True) & candidate
    metric = metric * owned
    norm = metric / (metric.amax(1, keepdim=True) + 1e-9) * (ious * owned).amax(1, keepdim=True)
    weight = norm.amax(0)
    target_boxes = gt_boxes[owner]
    target_scores[foreground, gt_labels[owner[foreground]]] = weight[foreground]
    return foreground, target_boxes, target_scores


def dfl_loss(dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: (n, 4, R+1) logits vs continuous targets (n, 4) in bins -> (n,)."""
    left = target.floor().long()
    right_weight = target - left
    logp = dist.log_softmax(-1)
    right = (left + 1).clamp(max=dist.shape[-1] - 1)
    loss = -(
        logp.gather(-1, left[..., None])[..., 0] * (1 - right_weight)
        + logp.gather(-1, right[..., None])[..., 0] * right_weight
    )
    return loss.mean(-1)


def detection_loss(model: DemoDetector, images: torch.Tensor, targets: list) -> tuple[torch.Tensor, dict]:
    logits, dist, centres, strides = model.forward_raw(images)
    boxes = model.decode(dist, centres, strides)
    cls_total = box_total = dfl_total = torch.zeros(())
    norm = 0.0
    for b, (gt_boxes, gt_labels) in enumerate(targets):
        with torch.no_grad():
            fg, target_boxes, target_scores = assign(
                logits[b].sigmoid(), boxes[b], centres, gt_boxes, gt_labels
            )
        cls_total = cls_total + F.binary_cross_entropy_with_logits(logits[b], target_scores, reduction="sum")
        if fg.any():
            weight = target_scores[fg].sum(-1)
            box_total = box_total + (giou_loss(boxes[b][fg], target_boxes[fg]) * weight).sum()
            ltrb = torch.cat([centres[fg] - target_boxes[fg, :2], target_boxes[fg, 2:] - centres[fg]], 1)
            bins = (ltrb / strides[fg, None]).clamp(0, model.reg_max - 0.01)
            dfl_total = dfl_total + (dfl_loss(dist[b][fg], bins) * weight).sum()
        norm += float(target_scores.sum())
    norm = max(norm, 1.0)
    parts = {"cls": cls_total / norm, "box": 2.0 * box_total / norm, "dfl": 0.5 * dfl_total / norm}
    return sum(parts.values()), {k: v.detach().item() for k, v in parts.items()}


class EMA:
    """Exponential moving average of weights, ramped up over the first updates."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 500))
        source = model.state_dict()
        for key, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[key].detach(), alpha=1 - d)
            else:
                value.copy_(source[key])


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim > 1 and "bn" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(config: TrainConfig) -> Path:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    images, targets = load_split(Path(config.data) / "train.json", config.input_size)
    model = DemoDetector().train()
    ema = EMA(model, config.ema_decay)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = len(images) // config.batch
    total = steps_per_epoch * config.epochs
    generator = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[loss]}"),
    ]
    with Progress(*columns) as progress:
        task = progress.add_task("training", total=total, loss="")
        step = 0
        for epoch in range(config.epochs):
            order = torch.randperm(len(images), generator=generator)
            for i in range(steps_per_epoch):
                lr = config.lr * (
                    min(1.0, (step + 1) / config.warmup_iters)
                    * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total)))
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = order[i * config.batch : (i + 1) * config.batch]
                batch, batch_targets = flip(images[index], [targets[j] for j in index], generator)
                loss, parts = detection_loss(model, batch.float(), batch_targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                optimizer.step()
                ema.update(model)
                step += 1
                text = f"epoch {epoch + 1} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items())
                progress.update(task, advance=1, loss=text)
            progress.console.print(f"{text} lr {lr:.2e} [{time.perf_counter() - start:.0f} s]", markup=False)
    meta = {**asdict(config), "train_seconds": round(time.perf_counter() - start, 1), "iterations": total}
    out = Path(config.out)
    with atomic_output(out) as tmp:
        save_torch({"model": ema.model.state_dict(), "meta": meta}, tmp)
    return out


SUBSET = 100  # the first val images, scored in CI against the recorded figure


def demo_map(model: nn.Module, data: Path, limit: int | None = None) -> dict[str, float]:
    """COCO mAP of a demo detector (torch, unfused or fused) on a shapes split."""
    from exporter.base.data.coco import load_coco
    from exporter.base.data.coco_map import evaluate
    from exporter.models.family import DECODED

    head, size = DECODED, (320, 320)

    def infer(batch: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.numpy() for o in model(torch.from_numpy(batch))]

    def post(outputs, sizes):
        return head.postprocess(outputs, size, sizes)

    return evaluate(load_coco(data), infer, post, size, batch=16, limit=limit)


def record(weights: Path, data: Path, meta: dict) -> Path:
    """Write <weights>.json: val mAP of the unfused model (all, and the CI subset) and how it was made."""
    model = DemoDetector()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
    model.eval()
    path = weights.with_suffix(".json")
    write_json(
        path,
        {
            "val": demo_map(model, data / "val.json"),
            f"val_first_{SUBSET}": demo_map(model, data / "val.json", SUBSET),
            "training": meta,
            "command": "reparam-export demo-data --out data/shapes && python -m exporter.models.demo_train",
        },
    )
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for field, default in asdict(TrainConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--record-only", action="store_true", help="Only evaluate existing weights.")
    args = vars(parser.parse_args(argv))
    record_only = args.pop("record_only")
    config = TrainConfig(**args)
    weights = Path(config.out)
    if not record_only:
        print(f"wrote {train(config)}")
    meta = torch.load(weights, map_location="cpu", weights_only=True).get("meta", {})
    print(f"wrote {record(weights, Path(config.data), meta)}")


if __name__ == "__main__":
    main()
