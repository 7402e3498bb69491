"""The one reader of image files: every image the exporter decodes comes through `read_rgb`.

An image becomes HxWx3 uint8 RGB, turned upright by its EXIF orientation:
- 16-bit integer images keep their high byte (65535 → 255; scaled, never clipped). A 32-bit integer
  image ("I") whose values fit in 16 bits is 16-bit data (Pillow opens a 16-bit PGM so), else it is
  scaled from 31 bits to 8; negative values are black.
- Float images ("F") are read as 0–1 when their values lie in it, else stretched from their own
  minimum–maximum.
- Alpha is dropped, keeping the colour under it, as most detectors' loaders do (OpenCV, Ultralytics).
- Gray, palette, CMYK, YCbCr and the others become RGB by Pillow's conversion.

Refused in one line naming the file (UserError): what is not a regular file (checked before opening,
so a FIFO never blocks and a device is never read), an image of more than MAX_PIXELS pixels (a
decompression bomb: a few hundred KB of PNG may decode to gigabytes) and anything Pillow cannot decode.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from exporter.base.errors import UserError, summary

MAX_PIXELS = 89_478_485  # Pillow's default limit: 256 MiB of 24-bit pixels, 89.5 M pixels
ORIENTATION = 0x0112  # the EXIF tag: 5–8 turn the image a quarter
FILE_KINDS = {
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def require_file(path: Path) -> None:
    """Refuse, without opening it, a path that is not a regular file (a FIFO would block the reader, a
    device never end) or cannot be examined (missing, a broken link, no permission)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise UserError(unreadable(path, exc)) from None
    if not stat.S_ISREG(mode):
        kind = next((kind for test, kind in FILE_KINDS.items() if test(mode)), "a special file")
        raise UserError(f"image {path} is {kind}, not a file; remove it or pass image files only")


@contextmanager
def opened(path: Path) -> Iterator[Image.Image]:
    """The image at `path`, its header read: a regular file of at most MAX_PIXELS pixels."""
    require_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is MAX_PIXELS
            image = Image.open(path)
    except Image.DecompressionBombError as exc:  # past twice Pillow's own limit, before the check below
        pixels = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow names the size, not the dimensions
        raise UserError(too_large(path, f"{int(pixels[1]):,} pixels" if pixels else summary(exc))) from None
    except Exception as exc:  # noqa: BLE001 - any failure to decode a user's file (plugins raise their own)
        raise UserError(unreadable(path, exc)) from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UserError(too_large(path, f"{width}x{height}, {width * height:,} pixels"))
        yield image


def too_large(path: Path, size: str) -> str:
    return (
        f"image {path} is too large to decode ({size}; the limit is {MAX_PIXELS:,} pixels, against "
        "decompression bombs); downscale it or remove it"
    )


def unreadable(path: Path, exc: BaseException) -> str:
    return f"cannot read image {path}: {summary(exc)}; replace it with a readable image or remove it"


def read_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, upright (see the module's description)."""
    with opened(path) as image:
        try:
            upright = ImageOps.exif_transpose(image)
            if upright.mode == "F" or upright.mode.startswith("I"):
                upright = Image.fromarray(to_8bit(upright))
            return np.asarray(upright.convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - a damaged file fails only once decoded
            raise UserError(unreadable(path, exc)) from None


def to_8bit(image: Image.Image) -> np.ndarray:
    """The uint8 levels of a 16- or 32-bit integer ("I;16*", "I") or float ("F") gray image."""
    if image.mode == "F":
        pixels = np.nan_to_num(np.asarray(image, np.float64))
        low, high = float(pixels.min()), float(pixels.max())
        if low >= 0 and high <= 1:
            low, high = 0.0, 1.0
        scaled = (pixels - low) * (255 / (high - low)) if high > low else np.zeros_like(pixels)
        return np.rint(scaled).astype(np.uint8)
    pixels = np.clip(np.asarray(image).astype(np.int64), 0, None)
    bits = 16 if image.mode.startswith("I;16") or pixels.max(initial=0) < 2**16 else 31
    return (pixels >> (bits - 8)).astype(np.uint8)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image as read_rgb returns it, from its header alone."""
    with opened(path) as image:
        try:
            rotated = image.getexif().get(ORIENTATION) in (5, 6, 7, 8)
        except Exception as exc:  # noqa: BLE001 - a damaged EXIF block
            raise UserError(unreadable(path, exc)) from None
        width, height = image.size
    return (width, height) if rotated else (height, width)
