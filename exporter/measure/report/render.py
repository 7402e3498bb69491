"""`reparam-export report`: Markdown, a self-contained HTML page (plots embedded) and JSON."""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.base.artifacts import atomic_output, write_json
from exporter.base.rundir import read_manifest
from exporter.measure.report import plots
from exporter.measure.report.metrics import collect
from exporter.models.damoyolo.published import DAMO_YOLO, SIZES, variant_of

COLUMNS = [
    ("artifact", "artifact"),
    ("map", "mAP"),
    ("map50", "mAP50"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("fps", "fps"),
    ("calls", "calls timed"),
    ("throughput_fps", "throughput fps"),
    ("bytes", "size MB"),
    ("max_abs_err", "max err vs FP32"),
]
SENSITIVITY_COLUMNS = ("layer", "SNR dB", "channel range max/median", "6σ outliers")
P99_CALLS = 100  # fewer timed calls make p99 their maximum: not shown
CHECK_COLUMNS = ("stage", "artifact", "check", "error", "tolerance", "err/tol", "result")
# precisions whose error is recorded, not held to the FP32 bound
RECORDED_ONLY = ("fp16", "bf16", "int8", "qdq")
STYLE = (
    "body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "th{background:#eee;cursor:pointer}tbody tr:nth-child(even){background:#f8f8f8}img{max-width:100%}"
)
CODE_SPAN = re.compile(r"`([^`]*)`")
SORT_SCRIPT = """
const value = (row, i) => { const t = row.cells[i].textContent, n = parseFloat(t); return isNaN(n) ? t : n; };
const order = (a, b) => typeof a !== typeof b ? (typeof a === "number" ? -1 : 1) : a < b ? -1 : a > b ? 1 : 0;
document.querySelectorAll("th").forEach((th) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], i = th.cellIndex, up = th.dataset.up !== "1";
  th.dataset.up = up ? "1" : "0";
  const rows = [...body.rows].sort((a, b) => (up ? 1 : -1) * order(value(a, i), value(b, i)));
  rows.forEach((row) => body.append(row));
}));
"""


def _cell(key: str, value: Any, row: dict[str, Any] | None = None) -> str:
    calls = (row or {}).get("calls")
    if key == "p99_ms" and value is not None and calls is not None and calls < P99_CALLS:
        return f"— ({row['calls']} calls)"
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
    """Published DAMO-YOLO figures beside ours, with ratios and the host they were measured on;
    targets this host cannot measure say so, and what would measure them."""
    variant = variant_of(metrics["model"])
    if variant is None:
        return []
    size, map_, t4_ms, cpu_ms = DAMO_YOLO[variant]
    best = {r["artifact"]: r for r in metrics["rows"]}
    name = f"DAMO-YOLO-{variant.upper()}"
    out = []
    if t4_ms is not None:
        bundle = metrics["deferred"].get("tensorrt", {}).get("bundle")
        where = f"; `bash {bundle}` on a T4 builds and times the engine" if bundle else ""
        out.append(
            {
                "target": f"{name} T4 TensorRT FP16, {size}",
                "published": f"mAP {100 * map_:.1f}, {t4_ms:.2f} ms",
                "ours": f"not measurable here: no T4 GPU with TensorRT on this host{where}",
            }
        )
    if cpu_ms is not None:
        ours = best.get("openvino.fp32") or best.get("openvino.int8")
        text = "not measured: no OpenVINO artifact in this run"
        if ours and ours["p50_ms"] is not None:
            bench = metrics["bench"]
            host = bench.get("cpu") or "this host"
            text = f"{ours['artifact']}: {ours['p50_ms']:.2f} ms on {host}, {bench.get('threads')} threads"
            text += f", head_mode {metrics['head_mode']}" if metrics["head_mode"] else ""
            text += f" ({cpu_ms / ours['p50_ms']:.2f}x the published speed, another CPU)"
            if ours["map"] is not None:
                text += f"; mAP {100 * ours['map']:.1f} ({ours['map'] / map_:.2f}x published)"
        out.append(
            {
                "target": f"{name} CPU OpenVINO (Intel Xeon 8163, batch 1, no post-processing), {size}",
                "published": f"mAP {100 * map_:.1f}, {cpu_ms:.2f} ms",
                "ours": text,
            }
        )
    if metrics["checkpoint"] is None:
        out.append(
            {
                "target": f"{name} weights",
                "published": "trained on COCO",
                "ours": "random (seeded): no checkpoint was given, so no mAP; sizes and latency compare",
            }
        )
    params, gflops = SIZES[variant]
    fused = metrics["fused"]
    if fused.get("params_after"):
        ours_params = fused["params_after"] / 1e6
        out.append(
            {
                "target": f"{name} parameters (M)",
                "published": f"{params:.2f}",
                "ours": f"{ours_params:.3f} fully fused ({ours_params / params:.3f}x; published: RepConvs "
                "fused, other BatchNorms kept)",
            }
        )
    if fused.get("gflops"):
        out.append(
            {
                "target": f"{name} GFLOPs at {size}",
                "published": f"{gflops:.2f}",
                "ours": f"{fused['gflops']:.2f} = 2 x conv MACs, fully fused "
                f"({fused['gflops'] / gflops:.3f}x; published: thop's count, BatchNorms kept)",
            }
        )
    return out


@dataclass(frozen=True)
class Section:
    """One part of the report, emitted alike to Markdown and HTML: a heading (none for the lead table),
    lines before the table, the table, and lines after it (text with `code` spans)."""

    title: str | None
    header: list[str]
    rows: list[list[str]]
    intro: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sections(metrics: dict[str, Any], manifest: dict[str, Any]) -> list[Section]:
    """The report's sections in order, from `collect`'s metrics and the run's manifest (its recipe and
    the check of every stage); the lead section, the table per artifact, comes first."""
    lead = Section(
        None,
        [h for _, h in COLUMNS],
        [[_cell(k, row.get(k), row) for k, _ in COLUMNS] for row in metrics["rows"]],
        intro=summary(metrics),
        notes=not_measured(metrics),
    )
    parts = [lead]
    targets = target_rows(metrics)
    if targets:
        header = list(targets[0])
        parts.append(Section("Published DAMO-YOLO targets", header, [list(t.values()) for t in targets]))
    goal = int8_goal_section(metrics)
    if goal:
        parts.append(goal)
    parts += int8_sections(metrics)
    precision = runtime_precision_section(metrics)
    if precision:
        parts.append(precision)
    parts += [deferred_section(entry) for entry in metrics["deferred"].values()]
    seconds = [[name, str(s)] for name, s in metrics["stage_seconds"].items()]
    parts.append(Section("Build times", ["stage", "seconds"], seconds))
    gated, recorded = check_rows(manifest.get("stages", {}), manifest.get("artifacts", {}))
    if gated:
        intro = ["A check that fails here stops the build (exit 1): nothing past it is written."]
        parts.append(Section("Gated checks", list(CHECK_COLUMNS), gated, intro=intro))
    if recorded:
        intro = ["Measured and recorded, not gated: errors of lower precisions against the FP32 reference."]
        parts.append(Section("Recorded errors", list(CHECK_COLUMNS), recorded, intro=intro))
    parts.append(provenance_section(metrics, manifest))
    if manifest.get("recipe"):
        parts.append(settings(manifest["recipe"], manifest.get("recipe_hash")))
    return parts


def int8_goal_section(metrics: dict[str, Any]) -> Section | None:
    """Per INT8 artifact (and stand-in): its mAP, the fused model's, the drop and whether it is within
    the INT8 goal (evaluate.INT8_GOAL_POINTS)."""
    from exporter.pipeline.evaluate import INT8_GOAL_POINTS

    goals = metrics["int8_goal"]
    if not goals:
        return None
    maps = {row["artifact"]: row["map"] for row in metrics["rows"]}
    rows = [
        [
            key,
            "not measured" if maps.get(key) is None else f"{100 * maps[key]:.2f}",
            "" if maps.get("torch.fp32") is None else f"{100 * maps['torch.fp32']:.2f}",
            f"{-goal['drop_points']:+.2f}",
            "met" if goal["met"] else "NOT met",
        ]
        for key, goal in goals.items()
    ]
    header = ["artifact", "mAP", "fused FP32 mAP", "vs FP32 (points)", "goal"]
    intro = [f"The INT8 goal: within {INT8_GOAL_POINTS:g} mAP points of the fused FP32 model."]
    return Section("INT8 goal", header, rows, intro=intro)


def runtime_precision_section(metrics: dict[str, Any]) -> Section | None:
    """What each OpenVINO IR computes in: as eval and bench run it (the INFERENCE_PRECISION_HINT its stage
    compiled it with: f32, or bf16 for a bf16 IR and INT8 float layers in bf16), and in a consumer that
    sets no precision, on the host that built it."""
    rows = []
    for row in metrics["rows"]:
        plain = row.get("plain_consumer")
        if plain is None:
            continue
        default = plain["default_precision"]
        if "check" in plain:
            check = plain["check"]
            consumer = (
                f"f32 (layers marked precise; default here {default}), err/tol {check['ratio']:.2g}"
                if check["ok"]
                else f"{default}: max abs err {check['max_abs_err']:.3g} past the FP32 tolerance; compile "
                "it with `{'INFERENCE_PRECISION_HINT': 'f32'}`"
            )
            precise = row.get("precise")
            if precise and not precise["marked"]:
                consumer += f" (layers not marked precise: {precise['why_not']})"
        else:
            consumer = f"{default}, the precision the runtime chooses"
        hint = row.get("inference_hint")
        ours = f"{hint} (INFERENCE_PRECISION_HINT={hint})" if hint else "not measured on the build host"
        rows.append([row["artifact"], ours, consumer])
    if not rows:
        return None
    return Section(
        "Precision at run time",
        ["artifact", "in eval and bench", "in a consumer that sets no precision, on the build host"],
        rows,
        notes=[
            "An FP16 IR holds FP16 weights and computes at the precision the runtime chooses: f32 with "
            "`INFERENCE_PRECISION_HINT=f32`, by default bf16 on CPUs with BF16."
        ],
    )


def deferred_section(record: dict[str, Any]) -> Section:
    """Why a target's artifacts were not built here (a TensorRT engine), and what builds them."""
    runtime = record["runtime"]
    return Section(
        runtime,
        [record["artifact"], "why not built here", "to build it"],
        [["not built", record["reason"], f"`bash {record['bundle']}` where {runtime} runs"]],
    )


def provenance_section(metrics: dict[str, Any], manifest: dict[str, Any]) -> Section:
    """Which code and libraries made the run, when, and when this report was written."""
    import datetime

    rows = [["report written", datetime.date.today().isoformat()]]
    if manifest.get("built"):
        rows.append(["built", manifest["built"]])
    rows += [[name, version] for name, version in metrics["versions"].items()]
    intro = ["`reparam-export` is this package's version and the digest of its sources."]
    return Section("Provenance", ["what", "version"], rows, intro=intro)


def summary(metrics: dict[str, Any]) -> list[str]:
    """What was measured how, what was left out, and what fusion did."""
    lines = []
    bench, evaluation = metrics["bench"], metrics["eval"]
    if bench:
        load = metrics.get("bench_load")
        others = f", load from other processes {load['others']:.2f} cores" if load else ""
        lines.append(
            f"Latency: {bench.get('mode')}, {bench.get('threads')} threads, {bench.get('cpu')}{others}."
        )
        few = [r["artifact"] for r in metrics["rows"] if r.get("calls") and r["calls"] < P99_CALLS]
        if few:
            lines.append(
                f"p99 is shown for artifacts timed in at least {P99_CALLS} calls (of fewer it is their "
                f"maximum): not for {', '.join(few)}."
            )
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
    if metrics["not_lowered"]:
        lines.append(f"AKConv NOT LOWERED (exported as traced): {'; '.join(metrics['not_lowered'])}.")
    return lines


def not_measured(metrics: dict[str, Any]) -> list[str]:
    """Per artifact, why its cells that say 'not measured' are empty."""
    lines = []
    for row in metrics["rows"]:
        key, reasons = row["artifact"], []
        for what, value, file, command, recorded in (
            ("mAP", row["map"], "eval.json", "eval", metrics["eval"]),
            ("latency", row["p50_ms"], "bench.json", "bench", metrics["bench"]),
        ):
            if value is not None:
                continue
            if f"{file}: {key}" in metrics["stale"]:
                reasons.append(f"{what} ({file} measured an earlier build)")
            elif key in (recorded.get("not_measured") or {}):
                reasons.append(f"{what} ({recorded['not_measured'][key]})")
            elif recorded:
                reasons.append(f"{what} (not in {file})")
            else:
                reasons.append(f"{what} (no {file}: run `reparam-export {command}`)")
        if row["bytes"] is None:
            reasons.append("size (no artifact file)")
        if row["max_abs_err"] is None:
            reasons.append(
                "error vs FP32 (" + ("the reference itself" if key == "torch.fp32" else "no check") + ")"
            )
        if reasons:
            lines.append(f"Not measured for {key}: {', '.join(reasons)}.")
    return lines


def check_rows(stages: dict[str, Any], artifacts: dict[str, str]) -> tuple[list[list[str]], list[list[str]]]:
    """Each stage's checks as rows of CHECK_COLUMNS, split into those that gate the build (the float64
    proof, FP32 parity, INT8 collapse, the INT8 accuracy budget) and the errors recorded only (FP32 drift,
    FP16/INT8/Q-DQ errors against the FP32 reference, an IR in a consumer that sets no precision)."""
    written = {path: key for key, path in artifacts.items()}
    gated, recorded = [], []
    for name, stage in stages.items():
        artifact = written.get((stage.get("output") or {}).get("path"), "")
        check = stage.get("check")
        if check is None:
            if stage.get("note"):
                recorded.append([name, artifact, "not checked", "", "", "", stage["note"]])
            continue
        held = (stage.get("precision") or name.rpartition(".")[2]) not in RECORDED_ONLY
        if "model_parity" in check:
            gated.append(
                [name, artifact, "float64 proof vs training form", *_parity(check["model_parity"], True)]
            )
        if "drift" in check:
            drift = check["drift"]["max_abs_err"]
            recorded.append([name, artifact, "FP32 drift (rounding)", f"{drift:.3g}", "", "", "recorded"])
        if "max_abs_err" in check:
            (gated if held else recorded).append(
                [name, artifact, "max abs err vs FP32 reference", *_parity(check, held)]
            )
        collapse = stage.get("collapse") or (stage.get("int8") or {}).get("collapse")
        if collapse and collapse.get("slope") is not None:
            slope, least = collapse["slope"], collapse["threshold"]
            gated.append(
                [name, artifact, "INT8 slope on FP32 (collapse below)", f"{slope:.3g}", f"{least:g}",
                 f"{least / slope:.2g}" if slope > 0 else "inf", "pass" if slope >= least else "FAIL"]
            )  # fmt: skip
        if "budget_points" in check:
            drop, budget = check["drop_points"], check["budget_points"]
            verdict = "pass" if drop <= budget else "FAIL"
            ratio = f"{drop / budget:.2g}" if budget else ""
            gated.append(
                [
                    name,
                    artifact,
                    "INT8 mAP drop vs FP32 (points)",
                    f"{drop:.2f}",
                    f"{budget:g}",
                    ratio,
                    verdict,
                ]
            )
        plain = (stage.get("plain_consumer") or {}).get("check")
        if plain:
            verdict = "f32" if plain["ok"] else "NOT f32 (warned)"
            recorded.append(
                [name, artifact, "consumer setting no precision vs FP32 reference",
                 f"{plain['max_abs_err']:.3g}", f"{plain['tolerance']:.3g}", f"{plain['ratio']:.2g}", verdict]
            )  # fmt: skip
    return gated, recorded


def _parity(check: dict[str, Any], held: bool) -> list[str]:
    """Error, tolerance, err/tol and result of one output-parity check."""
    if "tolerance" not in check:
        return [f"{check['max_abs_err']:.3g}", "not recorded", "", "recorded"]
    if held:
        verdict = "pass" if check["ok"] else "FAIL"
    else:
        verdict = "recorded (not held to the FP32 tolerance)"
    return [f"{check['max_abs_err']:.3g}", f"{check['tolerance']:.3g}", f"{check['ratio']:.2g}", verdict]


def settings(recipe: dict[str, Any], recipe_hash: str | None) -> Section:
    """The recipe the run was built with, one row per setting (nested keys dotted)."""
    intro = [f"Recipe digest: `{recipe_hash}`."] if recipe_hash else []
    return Section("Settings (the recipe)", ["setting", "value"], _flatten(recipe), intro=intro)


def _flatten(value: Any, prefix: str = "") -> list[list[str]]:
    if isinstance(value, dict) and value:
        return [row for key, item in value.items() for row in _flatten(item, f"{prefix}{key}.")]
    return [[prefix.rstrip("."), value if isinstance(value, str) else json.dumps(value)]]


def int8_sections(metrics: dict[str, Any], top: int = 15) -> list[Section]:
    """The partial-INT8 search per backend (FP32 / full / partial INT8) and the sensitivity ranking."""
    out = []
    for backend, search in metrics["int8_search"].items():
        latency = search.get("latency_ms") or {}
        rows = []
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
            rows.append([label, floats, f"{100 * search[key]:.2f}", delta, timing])
        notes = []
        if search.get("latency_note"):
            notes.append(search["latency_note"] + ".")
        if search.get("speedup_kept") is not None:
            notes.append(f"Share of the full-INT8 speedup kept: {100 * search['speedup_kept']:.0f}%.")
        if search["float_layers"]:
            notes.append("Kept in float: " + ", ".join(f"`{name}`" for name in search["float_layers"]) + ".")
        scope = (
            f"{search['candidates']} searchable layers."
            if search.get("ranked", True)
            else "full INT8 met the budget, so no layer was ranked."
        )
        out.append(
            Section(
                f"Partial INT8 ({backend}, budget {search['budget_points']:g} mAP points)",
                ["model", "float layers", "mAP", "vs FP32", "p50 ms"],
                rows,
                intro=[f"Evaluated on {search['evaluation']['images']} images; {scope}"],
                notes=notes,
            )
        )
    if metrics["sensitivity"]:
        out.append(
            Section(
                f"INT8 sensitivity (top {top} of {len(metrics['sensitivity'])} layers)",
                [*SENSITIVITY_COLUMNS, "INT8 builds keep it"],
                [
                    [*sensitivity_cells(r), _kept_as(r["layer"], metrics["int8_search"])]
                    for r in metrics["sensitivity"][:top]
                ],
            )
        )
    return out


def to_markdown(metrics: dict[str, Any], manifest: dict[str, Any] | None = None) -> str:
    """The Markdown report; the checks and the settings come from `manifest`."""
    return _markdown(metrics["model"], sections(metrics, manifest or {}))


def _markdown(model: str, parts: list[Section]) -> str:
    lines = [f"# {model}"]
    for section in parts:
        if section.title:
            lines += ["", f"## {section.title}"]
        if section.intro:
            lines += ["", *section.intro]
        lines += ["", _row(section.header), "|" + "---|" * len(section.header)]
        lines += [_row(row) for row in section.rows]
        for note in section.notes:
            lines += ["", note]
    return "\n".join(lines) + "\n"


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


def to_html(model: str, parts: list[Section], images: dict[str, bytes]) -> str:
    """A self-contained page: the sections as HTML tables (a click on a header sorts by that column),
    the plots as data URIs after the lead table."""
    lead, *rest = parts
    figures = "".join(_figure(name, png) for name, png in images.items())
    plots = f"<h2>Plots</h2>{figures}" if images else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(model)}: reparam-export report</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(model)}</h1>{_html_section(lead)}{plots}"
        f"{''.join(_html_section(section) for section in rest)}<script>{SORT_SCRIPT}</script></body></html>"
    )


def _html_section(section: Section) -> str:
    title = f"<h2>{html.escape(section.title)}</h2>" if section.title else ""
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in section.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in section.rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return title + _paragraphs(section.intro) + table + _paragraphs(section.notes)


def _paragraphs(lines: list[str]) -> str:
    return "".join(f"<p>{_inline(line)}</p>" for line in lines)


def _inline(text: str) -> str:
    """Text as HTML, `code` spans as <code>."""
    return CODE_SPAN.sub(r"<code>\1</code>", html.escape(text))


def _figure(name: str, png: bytes) -> str:
    label = html.escape(name)
    image = f'<img alt="{label}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    return f"<figure>{image}<figcaption>{label}</figcaption></figure>"


def write_report(run: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    metrics, manifest = collect(run), read_manifest(Path(run))
    out = Path(out or Path(run) / "report")
    parts = sections(metrics, manifest)
    images = {}  # a plot of nothing measured is left out (the report says what was not measured)
    rows = metrics["rows"]
    if any(plots.has_point(r) for r in rows):
        images["latency vs mAP"] = plots.latency_vs_map(rows, _plot_targets(metrics))
    if any(r["samples_ms"] for r in rows):
        images["latency distribution"] = plots.latency_distribution(rows)
    if metrics["sensitivity"]:
        floats = {name for search in metrics["int8_search"].values() for name in search["float_layers"]}
        images["INT8 sensitivity per layer (orange: kept in float)"] = plots.sensitivity(
            metrics["sensitivity"], floats
        )
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    with atomic_output(paths["markdown"]) as tmp:
        tmp.write_text(_markdown(metrics["model"], parts))
    with atomic_output(paths["html"]) as tmp:
        tmp.write_text(to_html(metrics["model"], parts, images))
    slim = {
        **metrics,
        "rows": [{k: v for k, v in r.items() if k != "samples_ms"} for r in metrics["rows"]],
        "targets": target_rows(metrics),
    }
    write_json(paths["json"], json.loads(json.dumps(slim)))
    return paths
