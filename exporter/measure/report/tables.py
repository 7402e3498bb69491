"""The tables and verdict lines the commands print (rich), one function per command's result."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from exporter.measure.report.render import SENSITIVITY_COLUMNS, sensitivity_cells
from exporter.pipeline.stages.partial_int8 import SearchRecord


def _table(title: str, columns: list[str] | tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, no_wrap=index == 0)  # a row's name whole, however narrow the rest
    for row in rows:
        table.add_row(*row)
    return table


def evaluation(report: dict[str, Any]) -> Table:
    """COCO mAP per artifact, with the difference to the fused torch model."""
    reference = report["results"]["torch.fp32"]["map"]
    rows = [
        [
            key,
            f"{100 * m['map']:.2f}",
            f"{100 * m['map50']:.2f}",
            f"{100 * m['map75']:.2f}",
            f"{100 * (m['map'] - reference):+.2f}" if key != "torch.fp32" else "",
        ]
        for key, m in report["results"].items()
    ]
    title = f"COCO mAP on {report['images']} images of {report['data']}"
    return _table(title, ("artifact", "mAP", "mAP50", "mAP75", "vs torch"), rows)


def sensitivity(name: str, layers: list[dict[str, Any]]) -> Table:
    title = f"{name}: INT8 sensitivity per layer (most sensitive first)"
    return _table(title, SENSITIVITY_COLUMNS, [sensitivity_cells(row) for row in layers])


def int8_search(name: str, record: SearchRecord) -> tuple[Table, list[str]]:
    """FP32 vs full vs partial INT8 (mAP, latency) and the lines saying whether the goals were met."""
    latency = record.latency_ms or {}
    fp32_ms = latency.get("fp32")
    rows = []
    for label, floats, map_, key in (
        ("FP32", "all", record.fp32_map, "fp32"),
        ("full INT8", "0", record.full_int8_map, "int8_full"),
        ("partial INT8", str(len(record.float_layers)), record.partial_int8_map, "int8_partial"),
    ):
        ms = latency.get(key)
        rows.append(
            [
                label,
                floats,
                f"{100 * map_:.2f}",
                f"{100 * (map_ - record.fp32_map):+.2f}" if key != "fp32" else "",
                f"{ms:.2f}" if ms is not None else "not measured",
                f"{fp32_ms / ms:.2f}x" if ms and fp32_ms else "",
            ]
        )
    title = (
        f"{name}: INT8 on {record.backend}, budget {record.budget_points:g} mAP points, "
        f"{record.evaluation['images']} images"
    )
    columns = ("model", "float layers", "mAP", "vs FP32", "p50 ms", "speedup vs FP32")
    lines = []
    if record.float_layers:
        lines.append(f"float layers: {', '.join(record.float_layers)}")
    met = record.drop_points <= record.budget_points
    lines.append(
        f"goal: partial INT8 within {record.budget_points:g} points of FP32: "
        f"{record.drop_points:.2f} points below, {'met' if met else 'NOT met'}"
    )
    kept = record.speedup_kept
    if kept is not None:
        verdict = "met" if kept >= 0.8 else "NOT met"
        lines.append(f"goal: ≥ 80% of the full-INT8 speedup kept: {100 * kept:.0f}%, {verdict}")
    else:
        lines.append(f"goal: speedup kept: not measured ({record.latency_note or 'no latency'})")
    return _table(title, columns, rows), lines


def bench(run: Any, report: dict[str, Any], throughput: bool) -> Table:
    columns = ["artifact", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "fps (batch 1)"]
    if throughput:
        columns.append("fps (throughput, requests)")
    rows = []
    for key, r in report["results"].items():
        row = [
            key,
            *(f"{r[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "fps_batch1")),
        ]
        if throughput:
            row.append(f"{r['throughput_fps']:.1f} ({r['throughput_requests']})")
        rows.append(row)
    return _table(f"{run} — {report['mode']}, {report['threads']} threads, {report['cpu']}", columns, rows)


def check(title: str, findings: list) -> Table:
    def number(value):
        return "-" if value is None else f"{value:.4g}"

    colour = {"ok": "green"}
    rows = [
        [
            f.artifact,
            f.metric or "",
            number(f.baseline),
            number(f.current),
            number(f.limit),
            ("skipped: " if f.skipped else "") + f"[{colour.get(f.status, 'red')}]{f.status}[/]",
            f.why,
        ]
        for f in findings
    ]
    return _table(title, ("artifact", "metric", "baseline", "current", "limit", "status", "why"), rows)


def bench_cpu(title: str, rows: list) -> Table:
    cells = [
        [
            row.name,
            f"{row.p50_ms:.2f}",
            f"{row.ratio_vs_torch:.2f}x ({row.ratio_range[0]:.2f}–{row.ratio_range[1]:.2f})",
        ]
        for row in rows
    ]
    return _table(title, ("runtime", "p50 ms", "speed vs PyTorch eager (range over rounds)"), cells)


def akconv(title: str, rows: list[list[str]]) -> Table:
    return _table(title, ("backend", "lowering", "p50 ms", "speed vs gather", "max abs err", "note"), rows)


def doctor(checks: list) -> Table:
    rows = [
        [c.name, c.version, "[green]yes[/green]" if c.usable else "[red]no[/red]", c.note] for c in checks
    ]
    return _table("reparam-export doctor", ("library", "version", "usable", "notes"), rows)


def zoo(title: str, rows: list) -> Table:
    cells = [
        [
            f"{r.library} {r.model}",
            str(r.input),
            "yes" if r.ok else "[red]NO[/red]",
            f"{r.ratio:.1g}",
            "{} / {}".format(*r.left),
            "{} / {}".format(*r.library_left),
            "{} / {}".format(*r.before),
            f"{r.ours_s:.2f}",
            f"{r.ours_s / r.forward64_s:.1f}",
            f"{r.library_s:.2f}",
            f"{r.times_library:.1f} ({r.floor_times_library:.1f})",
            "; ".join(r.not_fused) or "-",
        ]
        for r in rows
    ]
    columns = (
        "model",
        "input",
        "proved",
        "err/tol",
        "BN / conv left",
        "library's deploy",
        "before",
        "fuse + proof s",
        "in float64 passes",
        "library's deploy s",
        "× library (floor: 2 float64 passes)",
        "not fused",
    )
    return _table(title, columns, cells)


def bench_ultralytics(title: str, rows: list[dict[str, Any]]) -> Table:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    cells = [
        [
            r["tool"],
            r["artifact"],
            str(r["convolutions"]),
            f"{r['weights'] / 1e6:.3f}",
            f"{r['max_abs_err']:.3g}" + {True: " ok", False: " [red]FAILS[/red]", None: ""}[r["ok"]],
            cell(r["p50_ms"], ".2f"),
            "-"
            if r["ratio"] is None
            else f"{r['ratio']:.2f}x ({r['ratio_range'][0]:.2f}–{r['ratio_range'][1]:.2f})",
            cell(None if r["map"] is None else 100 * r["map"], ".2f"),
        ]
        for r in rows
    ]
    columns = ("tool", "artifact", "convs", "weights M", "max abs err vs torch", "p50 ms", "speed", "mAP")
    return _table(title, columns, cells)
