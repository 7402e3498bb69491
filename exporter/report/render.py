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
SENSITIVITY_COLUMNS = ("layer", "SNR dB", "channel range max/median", "6σ outliers")


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
    if metrics["stale"]:
        lines.append(
            "Left out, measured on an earlier build of the artifact (run eval/bench again): "
            + ", ".join(metrics["stale"])
            + "."
        )
    fused = metrics["fused"]
    if fused.get("params_after"):
        lines.append(
            f"Parameters: {fused['params_before']:,} → {fused['params_after']:,} after fusion"
            + (f"; {fused['gflops']:.2f} GFLOPs" if fused.get("gflops") else "")
            + "."
        )
    if fused.get("not_fused"):
        lines.append(f"NOT FUSED (left in training form): {'; '.join(fused['not_fused'])}.")
    lines += ["", _row([h for _, h in COLUMNS]), "|" + "---|" * len(COLUMNS)]
    lines += [_row([_cell(k, row.get(k)) for k, _ in COLUMNS]) for row in metrics["rows"]]
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
    lines += int8_sections(metrics)
    lines += ["", "## Build times", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds} |" for name, seconds in metrics["stage_seconds"].items()]
    return "\n".join(lines) + "\n"


def int8_sections(metrics: dict[str, Any], top: int = 15) -> list[str]:
    """The partial-INT8 search per backend (FP32 / full / partial INT8) and the sensitivity ranking."""
    lines: list[str] = []
    for backend, search in metrics["int8_search"].items():
        latency = search.get("latency_ms") or {}
        lines += [
            "",
            f"## Partial INT8 ({backend}, budget {search['budget_points']:g} mAP points)",
            "",
            f"Evaluated on {search['evaluation']['images']} images; "
            + (
                f"{search['candidates']} searchable layers."
                if search.get("ranked", True)
                else "full INT8 met the budget, so no layer was ranked."
            ),
            "",
            "| model | float layers | mAP | vs FP32 | p50 ms |",
            "|---|---|---|---|---|",
        ]
        for label, floats, key, ms in (
            ("FP32", "all", "fp32_map", latency.get("fp32")),
            ("full INT8", "0", "full_int8_map", latency.get("int8_full")),
            (
                "partial INT8",
                str(len(search["float_layers"])),
                "partial_int8_map",
                latency.get("int8_partial"),
            ),
        ):
            delta = "" if key == "fp32_map" else f"{100 * (search[key] - search['fp32_map']):+.2f}"
            timing = f"{ms:.2f}" if ms is not None else "not measured"
            lines.append(f"| {label} | {floats} | {100 * search[key]:.2f} | {delta} | {timing} |")
        if search.get("latency_note"):
            lines += ["", search["latency_note"] + "."]
        if search.get("speedup_kept") is not None:
            lines += ["", f"Share of the full-INT8 speedup kept: {100 * search['speedup_kept']:.0f}%."]
        if search["float_layers"]:
            lines += ["", "Kept in float: " + ", ".join(f"`{name}`" for name in search["float_layers"]) + "."]
    if metrics["sensitivity"]:
        lines += [
            "",
            f"## INT8 sensitivity (top {top} of {len(metrics['sensitivity'])} layers)",
            "",
            _row([*SENSITIVITY_COLUMNS, "INT8 builds keep it"]),
            "|" + "---|" * (len(SENSITIVITY_COLUMNS) + 1),
        ]
        lines += [
            _row([*sensitivity_cells(r), _kept_as(r["layer"], metrics["int8_search"])])
            for r in metrics["sensitivity"][:top]
        ]
    return lines


def sensitivity_cells(row: dict[str, Any]) -> list[str]:
    """One layer of sensitivity.json as the cells of SENSITIVITY_COLUMNS."""
    return [
        row["layer"],
        f"{row['snr_db']:.1f}",
        f"{row['channel_range_ratio']:.2f}",
        f"{100 * row['outlier_share']:.2f}%",
    ]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _kept_as(layer: str, searches: dict[str, Any]) -> str:
    """How the INT8 builds of the run treat a layer: 'float (prediction conv)', 'float (search: …)'."""
    if any(layer in s.get("always_float_layers", []) for s in searches.values()):
        return "float (prediction conv)"
    chosen = [backend for backend, s in searches.items() if layer in s["float_layers"]]
    return f"float (search: {', '.join(chosen)})" if chosen else ("INT8" if searches else "")


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
    if metrics["sensitivity"]:
        floats = {name for search in metrics["int8_search"].values() for name in search["float_layers"]}
        images["INT8 sensitivity per layer (orange: kept in float)"] = plots.sensitivity(
            metrics["sensitivity"], floats
        )
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
