"""`reparam-export report`: Markdown, a self-contained HTML page (plots embedded) and JSON."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from exporter.artifacts import atomic_output, write_json
from exporter.report import plots
from exporter.report.metrics import collect
from exporter.report.targets import DAMO_YOLO, variant_of

COLUMNS = [
    ("artifact", "artifact"),
    ("map", "mAP"),
    ("map50", "mAP50"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("fps", "fps"),
    ("bytes", "size MB"),
    ("max_abs_err", "max err vs FP32"),
]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "not measured"
    if key in ("map", "map50"):
        return f"{100 * value:.1f}"
    if key == "bytes":
        return f"{value / 1e6:.2f}"
    if key == "max_abs_err":
        return f"{value:.2g}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def target_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Published DAMO-YOLO figures beside ours, with ratios; targets this host cannot measure say so."""
    variant = variant_of(metrics["model"])
    if variant is None:
        return []
    size, map_, t4_ms, cpu_ms = DAMO_YOLO[variant]
    best = {r["artifact"]: r for r in metrics["rows"]}
    out = []
    if t4_ms is not None:
        out.append(
            {
                "target": f"DAMO-YOLO-{variant.upper()} T4 TensorRT FP16",
                "published mAP": f"{100 * map_:.1f}",
                "published ms": f"{t4_ms:.2f}",
                "ours": "not measured: no T4 GPU with TensorRT on this host",
            }
        )
    if cpu_ms is not None:
        ours = best.get("openvino.fp32") or best.get("openvino.int8")
        text = "not measured: no OpenVINO artifact in this run"
        if ours and ours["p50_ms"] is not None:
            speed = cpu_ms / ours["p50_ms"]
            text = f"{ours['artifact']}: {ours['p50_ms']:.2f} ms"
            text += f" ({speed:.2f}x the published speed, different CPU)"
            if ours["map"] is not None:
                text += f"; mAP {100 * ours['map']:.1f} ({ours['map'] / map_:.2f}x published)"
        out.append(
            {
                "target": f"DAMO-YOLO-{variant.upper()} CPU OpenVINO",
                "published mAP": f"{100 * map_:.1f}",
                "published ms": f"{cpu_ms:.2f}",
                "ours": text,
            }
        )
    return out


def to_markdown(metrics: dict[str, Any]) -> str:
    lines = [f"# {metrics['model']}", ""]
    bench, evaluation = metrics["bench"], metrics["eval"]
    if bench:
        lines.append(f"Latency: {bench.get('mode')}, {bench.get('threads')} threads, {bench.get('cpu')}.")
    if evaluation:
        lines.append(f"Accuracy: COCO mAP on {evaluation.get('images')} images of {evaluation.get('data')}.")
    fused = metrics["fused"]
    if fused.get("params_after"):
        lines.append(
            f"Parameters: {fused['params_before']:,} → {fused['params_after']:,} after fusion"
            + (f"; {fused['gflops']:.2f} GFLOPs" if fused.get("gflops") else "")
            + "."
        )
    lines += ["", "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in metrics["rows"]:
        lines.append("| " + " | ".join(_cell(k, row.get(k)) for k, _ in COLUMNS) + " |")
    targets = target_rows(metrics)
    if targets:
        lines += [
            "",
            "## Published DAMO-YOLO targets",
            "",
            "| target | published mAP | published ms | ours |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {t['target']} | {t['published mAP']} | {t['published ms']} | {t['ours']} |" for t in targets
        ]
    lines += ["", "## Build times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds} |" for name, seconds in metrics["stage_seconds"].items()]
    return "\n".join(lines) + "\n"


def _plot_targets(metrics: dict[str, Any]) -> list[tuple[str, float, float]]:
    variant = variant_of(metrics["model"])
    if variant is None:
        return []
    _, map_, _, cpu_ms = DAMO_YOLO[variant]
    return [(f"DAMO-YOLO-{variant.upper()} CPU (published)", cpu_ms, map_)] if cpu_ms else []


def to_html(markdown: str, images: dict[str, bytes]) -> str:
    """A self-contained page: the tables as preformatted Markdown and the plots as data URIs."""

    def figure(name: str, png: bytes) -> str:
        data = base64.b64encode(png).decode()
        label = html.escape(name)
        image = f'<img alt="{label}" src="data:image/png;base64,{data}">'
        return f"<figure>{image}<figcaption>{label}</figcaption></figure>"

    figures = "".join(figure(name, png) for name, png in images.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>reparam-export report</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}img{max-width:100%}</style></head><body>"
        f"<pre>{html.escape(markdown)}</pre>{figures}</body></html>"
    )


def write_report(run: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    metrics = collect(run)
    out = Path(out or Path(run) / "report")
    markdown = to_markdown(metrics)
    images = {
        "latency vs mAP": plots.latency_vs_map(metrics["rows"], _plot_targets(metrics)),
        "latency distribution": plots.latency_distribution(metrics["rows"]),
    }
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    with atomic_output(paths["markdown"]) as tmp:
        tmp.write_text(markdown)
    with atomic_output(paths["html"]) as tmp:
        tmp.write_text(to_html(markdown, images))
    slim = {
        **metrics,
        "rows": [{k: v for k, v in r.items() if k != "samples_ms"} for r in metrics["rows"]],
        "targets": target_rows(metrics),
    }
    write_json(paths["json"], json.loads(json.dumps(slim)))
    return paths
