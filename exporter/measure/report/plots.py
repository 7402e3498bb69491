"""Report plots (matplotlib, PNG bytes): latency vs mAP with DAMO-YOLO targets; latency distributions."""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

DPI = 110  # labels are laid out at the resolution the PNG is saved at


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def has_point(row: dict[str, Any]) -> bool:
    """Whether an artifact's row has a latency and an mAP to plot (absent: None; damaged: NaN)."""
    return all(row[k] is not None and math.isfinite(row[k]) for k in ("p50_ms", "map"))


def latency_vs_map(rows: list[dict[str, Any]], targets: list[tuple[str, float, float]]) -> bytes:
    return _png(latency_vs_map_figure(rows, targets))


def latency_vs_map_figure(rows: list[dict[str, Any]], targets: list[tuple[str, float, float]]) -> Figure:
    """Each measured artifact as a point labelled in its colour; published targets (label, ms, mAP) as
    black stars. No label covers another or a marker (see `_separate`)."""
    figure, axis = plt.subplots(figsize=(6, 4), dpi=DPI)
    for row in rows:
        if has_point(row):
            point = (row["p50_ms"], row["map"] * 100)
            colour = axis.scatter(*point, s=40).get_facecolor()[0]
            _label(axis, row["artifact"], point, colour)
    for label, ms, map_ in targets:
        axis.scatter(ms, map_ * 100, marker="*", s=120, color="black")
        _label(axis, label, (ms, map_ * 100), "black")
    axis.set_xlabel("latency p50 (ms, batch 1)")
    axis.set_ylabel("mAP@[.5:.95] (%)")
    axis.grid(alpha=0.3)
    axis.margins(x=0.2, y=0.15)  # room for the labels inside the axes
    _separate(axis)
    return figure


def _label(axis, text: str, point: tuple[float, float], colour) -> None:
    axis.annotate(text, point, xytext=(4, 4), textcoords="offset points", fontsize=8, color=colour)


def _separate(axis, gap: float = 1.0) -> None:
    """Top to bottom, move each label down until it overlaps no label placed before it and no marker:
    the labels of points with equal mAP and close latency end up stacked."""
    figure = axis.get_figure()
    figure.draw_without_rendering()  # the axes' final limits place the points
    renderer = figure.canvas.get_renderer()
    pixels_per_point = figure.dpi / 72
    placed = [_marker_box(markers, pixels_per_point) for markers in axis.collections]
    for label in sorted(axis.texts, key=lambda text: -text.get_window_extent(renderer).y1):
        box = label.get_window_extent(renderer)
        while hit := next((other for other in placed if box.overlaps(other)), None):
            x, y = label.xyann
            label.xyann = (x, y - (box.y1 - hit.y0 + gap) / pixels_per_point)
            box = label.get_window_extent(renderer)
        placed.append(box)


def _marker_box(markers: PathCollection, pixels_per_point: float) -> Bbox:
    """The display box of a one-point scatter's marker."""
    ((x, y),) = markers.get_offset_transform().transform(markers.get_offsets())
    radius = markers.get_sizes()[0] ** 0.5 / 2 * pixels_per_point
    return Bbox.from_extents(x - radius, y - radius, x + radius, y + radius)


def latency_distribution(rows: list[dict[str, Any]]) -> bytes:
    figure, axis = plt.subplots(figsize=(6, 3.5))
    timed = [r for r in rows if r["samples_ms"]]
    if timed:
        axis.boxplot([r["samples_ms"] for r in timed], orientation="horizontal", showfliers=True)
        axis.set_yticks(range(1, len(timed) + 1), [r["artifact"] for r in timed])
    axis.set_xlabel("latency per call (ms, batch 1)")
    axis.grid(alpha=0.3, axis="x")
    return _png(figure)


def sensitivity(layers: list[dict[str, Any]], float_layers: set[str], top: int = 20) -> bytes:
    """Output SNR per layer when it alone is INT8 (most sensitive at the top); layers the accuracy
    search kept in float are drawn in orange."""
    shown = layers[:top][::-1]
    figure, axis = plt.subplots(figsize=(6, 0.25 * len(shown) + 1))
    colours = ["tab:orange" if row["layer"] in float_layers else "tab:blue" for row in shown]
    axis.barh([row["layer"] for row in shown], [row["snr_db"] for row in shown], color=colours)
    axis.set_xlabel("output SNR with only this layer in INT8 (dB; lower = more sensitive)")
    axis.tick_params(axis="y", labelsize=7)
    axis.grid(alpha=0.3, axis="x")
    return _png(figure)
