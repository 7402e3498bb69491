"""Image preprocessing shared by training, evaluation and calibration (one place)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict


class Preprocess(BaseModel):
    """How images become the model input: resize, colour order, then (x·scale − mean)/std."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    color: Literal["rgb", "bgr"] = "rgb"
    resize: Literal["stretch"] = "stretch"  # plain resize, as DAMO-YOLO evaluates (no letterbox)
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


def resize_stretch(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB → 3xHxW float32 at `size` (height, width), values 0–255, rounded to integers.

    Plain (stretch) resize, bilinear with half-pixel centres and no antialiasing, like OpenCV's
    INTER_LINEAR used by DAMO-YOLO's evaluation.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x[0].round().clamp(0, 255).numpy().astype(np.float32)


def normalize(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """Stretch-resized 0–255 RGB pixels (N, 3, H, W) → model input: colour order, (x·scale − mean)/std."""
    x = pixels[:, ::-1] if preprocess.color == "bgr" else pixels
    mean = np.asarray(preprocess.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocess.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x * np.float32(preprocess.scale) - mean) / std, dtype=np.float32)
