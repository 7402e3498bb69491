"""Image preprocessing shared by training, evaluation and calibration (one place)."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

Resize = Literal["stretch", "letterbox"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFiniteFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PAD_VALUE = 114  # Ultralytics' letterbox border
MAX_INPUT = 1e4  # the largest model input a pixel may become: inputs are 0–1 or so, 0–255 unscaled
MIN_SPREAD = 1e-3  # how far apart pixels 0 and 255 must stay in the model input (else the image vanishes)


class Preprocess(BaseModel):
    """How images become the model input: resize, colour order, then (x·scale − mean)/std."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    color: Literal["rgb", "bgr"] = "rgb"
    # stretch: plain resize, as DAMO-YOLO evaluates; letterbox: aspect kept, centred, padded (Ultralytics)
    resize: Resize = "stretch"
    scale: float = Field(1.0 / 255.0, gt=0, allow_inf_nan=False)
    mean: tuple[FiniteFloat, FiniteFloat, FiniteFloat] = (0.0, 0.0, 0.0)
    std: tuple[PositiveFiniteFloat, PositiveFiniteFloat, PositiveFiniteFloat] = (1.0, 1.0, 1.0)

    @model_validator(mode="after")
    def _sane_input(self) -> Preprocess:
        """What the values do: pixels 0 and 255 of each channel, through `normalize`, are finite, within
        ±MAX_INPUT and at least MIN_SPREAD apart."""
        with np.errstate(all="ignore"):
            extremes = normalize(np.float32([0, 255]).reshape(2, 1, 1, 1).repeat(3, axis=1), self)[:, :, 0, 0]
        for channel, (low, high) in enumerate(extremes.T):
            mean, std = self.mean[channel], self.std[channel]
            bounded = np.isfinite([low, high]).all() and max(abs(low), abs(high)) <= MAX_INPUT
            if not (bounded and high - low >= MIN_SPREAD):
                raise ValueError(
                    f"(pixel·scale − mean)/std takes channel {channel}'s pixels 0–255 to "
                    f"[{low:.3g}, {high:.3g}] with scale {self.scale:g}, mean {mean:g}, std {std:g}; the "
                    f"model input must be finite, within ±{MAX_INPUT:g} and spread over {MIN_SPREAD:g} at "
                    "least: set them as the model was trained (0–1 images: scale 0.00392156862745098, std 1)"
                )
        return self


def resize_stretch(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB → 3xHxW float32 at `size` (height, width), values 0–255, rounded to integers.

    Plain (stretch) resize, bilinear with half-pixel centres and no antialiasing, like OpenCV's
    INTER_LINEAR used by DAMO-YOLO's evaluation. Computed as torch's `interpolate(mode="bilinear")`
    computes it (float32, across then down) but element by element with numpy, so the pixels are the same
    on any host and with any thread count: torch's own kernel rounds differently with the number of
    threads it splits the image across.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    pixels = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    if tuple(pixels.shape[1:]) != tuple(size):
        (y0, y1, wy), (x0, x1, wx) = (_taps(n, m) for n, m in zip(pixels.shape[1:], size, strict=True))
        across = pixels[:, :, x0] * (1 - wx) + pixels[:, :, x1] * wx
        pixels = across[:, y0] * (1 - wy)[:, None] + across[:, y1] * wy[:, None]
    return np.ascontiguousarray(np.clip(np.round(pixels), 0, 255))


def _taps(length: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `size` output positions on an axis of `length` pixels: the two source pixels and the
    weight of the second (half-pixel centres, the source position clamped at 0)."""
    scale = np.float32(length) / np.float32(size)
    source = np.maximum(scale * (np.arange(size, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    first = np.minimum(source.astype(np.int64), length - 1)
    return first, np.minimum(first + 1, length - 1), source - first.astype(np.float32)


def letterbox_fit(
    image_size: tuple[int, int], size: tuple[int, int]
) -> tuple[float, tuple[int, int], int, int]:
    """Ultralytics' letterbox of an image (height, width) into `size`: the gain, the resized (height,
    width) and the top and left padding (the image centred, each side's share rounded as Ultralytics
    rounds it)."""
    (h, w), (height, width) = image_size, size
    gain = min(height / h, width / w)
    resized = max(round(h * gain), 1), max(round(w * gain), 1)
    top = round((height - resized[0]) / 2 - 0.1)
    left = round((width - resized[1]) / 2 - 0.1)
    return gain, resized, top, left


def resize_letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB → 3xHxW float32 at `size`: scaled to fit with its aspect kept (bilinear, as
    resize_stretch), centred, the border filled with 114."""
    _, resized, top, left = letterbox_fit(image.shape[:2], size)
    inner = resize_stretch(image, resized)
    out = np.full((3, *size), PAD_VALUE, np.float32)
    out[:, top : top + resized[0], left : left + resized[1]] = inner
    return out


def resize(image: np.ndarray, size: tuple[int, int], mode: Resize) -> np.ndarray:
    """The model-input pixels of an image (0–255, 3xHxW) by `mode`."""
    return resize_letterbox(image, size) if mode == "letterbox" else resize_stretch(image, size)


def to_image(
    boxes: torch.Tensor, input_size: tuple[int, int], image_size: tuple[int, int], mode: Resize
) -> torch.Tensor:
    """xyxy boxes from the model input (height, width) back to the original image's pixels. Letterbox:
    the padding removed and each axis scaled by the resized image's size, as Ultralytics' scale_boxes
    does, then clipped to the image; stretch: scaled per axis (not clipped)."""
    (in_h, in_w), (h, w) = input_size, image_size
    if mode != "letterbox":
        factor = torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h], dtype=boxes.dtype)
        return boxes * factor
    _, (resized_h, resized_w), top, left = letterbox_fit(image_size, input_size)
    offset = torch.tensor([left, top, left, top], dtype=boxes.dtype)
    gain = torch.tensor([resized_w / w, resized_h / h] * 2, dtype=boxes.dtype)  # of the resized image
    shifted = (boxes - offset) / gain
    limit = torch.tensor([w, h, w, h], dtype=boxes.dtype)
    return torch.minimum(shifted.clamp(min=0), limit)


def normalize(pixels: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """Resized 0–255 RGB pixels (N, 3, H, W) → model input: colour order, (x·scale − mean)/std."""
    x = pixels[:, ::-1] if preprocess.color == "bgr" else pixels
    mean = np.asarray(preprocess.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocess.std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x * np.float32(preprocess.scale) - mean) / std, dtype=np.float32)
