"""Report plots (matplotlib, PNG bytes): latency vs mAP with DAMO-YOLO targets; latency distributions."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def latency_vs_map(rows: list[dict[str, Any]], targets: list[tuple[str, float, float]]) -> bytes:
    """Each measured artifact as a point; published targets (label, ms, mAP) as stars."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row["p50_ms"] is not None and row["map"] is not None:
            axis.scatter(row["p50_ms"], row["map"] * 100, s=40)
            axis.annotate(
                row["artifact"],
                (row["p50_ms"], row["map"] * 100),
                fontsize=8,
                xytext=(4, 4),
                textcoords="offset points",
            )
    for label, ms, map_ in targets:
        axis.scatter(ms, map_ * 100, marker="*", s=120, color="black")
        axis.annotate(label, (ms, map_ * 100), fontsize=8, xytext=(4, -10), textcoords="offset points")
    axis.set_xlabel("latency p50 (ms, batch 1)")
    axis.set_ylabel("mAP@[.5:.95] (%)")
    axis.grid(alpha=0.3)
    return _png(figure)


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
