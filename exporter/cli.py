"""`reparam-export` command line. Exit codes: 0 ok, 1 a check failed, 2 bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from exporter import __version__
from exporter.errors import CheckFailed, ExporterError, UserError

console = Console(stderr=True, highlight=False)


def out_console() -> Console:
    """Tables on stdout; wide when piped to a file so no column is truncated."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _model_options(func):
    """Options shared by build/fuse/export: which recipe and model, and recipe overrides."""
    options = [
        click.option(
            "--recipe",
            "recipe_path",
            type=click.Path(path_type=Path),
            help="Recipe YAML (default: the embedded demo recipe).",
        ),
        click.option(
            "--model",
            "builder",
            metavar="PKG.MODULE:FUNC",
            help="Builder returning an nn.Module; overrides the recipe's model.builder.",
        ),
        click.option(
            "--checkpoint",
            type=click.Path(path_type=Path),
            help="State dict to load (torch.load with weights_only=True).",
        ),
        click.option("--input-size", nargs=2, type=int, metavar="H W", help="Input height and width."),
        click.option("--opset", type=int, help="ONNX opset, 13–19 (default 17)."),
        click.option("--dynamic-batch/--static-batch", default=None, help="Dynamic batch axis in the ONNX."),
        click.option("--trt-version", help="TensorRT the engine is for, e.g. 8.6 or 10.x (default 10.x)."),
        click.option(
            "--akconv-lowering",
            type=click.Choice(["auto", "gather", "gridsample", "plugin"]),
            help="How AKConv sampling is exported (default auto: the fastest exact one per backend).",
        ),
        click.option(
            "--run-dir", type=click.Path(path_type=Path), help="Run directory (default runs/<recipe name>)."
        ),
        click.option("--force", is_flag=True, help="Rerun every stage even when cached."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# CLI option -> recipe field it overrides
OVERRIDES = {
    "checkpoint": "model.checkpoint",
    "input_size": "input_size",
    "opset": "export.opset",
    "dynamic_batch": "export.dynamic_batch",
    "akconv_lowering": "export.akconv_lowering",
    "trt_version": "tensorrt.version",
    "trt_end2end_nms": "tensorrt.end2end_nms",
    "targets": "targets",
    "precisions": "precisions",
    "calib_data": "calibration.source",
    "calib_count": "calibration.count",
    "eval_limit": "evaluation.limit",
    "eval_data": "evaluation.data",
    "int8_accuracy_budget": "int8.accuracy_budget",
    "sensitivity_images": "int8.sensitivity_images",
}


def _load(options: dict[str, Any]):
    """The recipe (or the embedded default) with every option the user passed applied on top."""
    from exporter.recipe import load_recipe

    overrides: dict[str, Any] = {}
    for option, field in OVERRIDES.items():
        value = options.get(option)
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            value = list(value)
        overrides[field] = str(value) if isinstance(value, Path) else value
    builder = options.get("builder")
    if builder:
        overrides.update({"model.builder": builder, "model.kwargs": {}})
        if options.get("recipe_path") is None:
            name = builder.rpartition(":")[2] or "model"
            overrides.update({"name": name, "class_names": [], "export.output_names": None})
            overrides.setdefault("evaluation.data", None)  # the demo's val split does not fit this model
    return load_recipe(options.get("recipe_path"), overrides)


def _pipeline(recipe, run_dir, force):
    from exporter.pipeline import Pipeline

    if run_dir is not None and Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserError(f"--run-dir {run_dir} is a file; pass a folder (new or an earlier run's)")
    return Pipeline(recipe, run_dir, force=force, console=console)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reparam-export")
def cli():
    """Fuse re-parameterizable detectors and ship them to ONNX, OpenVINO and TensorRT.

    Exit codes: 0 ok, 1 a check failed (numerical mismatch, accuracy regression), 2 bad input.
    """


@cli.command()
@_model_options
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(["onnx", "openvino", "tensorrt"]),
    help="Target(s) to build; repeatable (default: the recipe's).",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "int8"]),
    help="Precision(s) to build; repeatable (default: the recipe's).",
)
@click.option("--calib-data", help="INT8 calibration images: a folder, a COCO json, or 'demo'.")
@click.option("--calib-count", type=click.IntRange(min=1), help="Number of calibration images (default 300).")
@click.option(
    "--eval-data", help="Evaluation data: a COCO json or folder, or 'demo' (default: the recipe's)."
)
@click.option(
    "--eval-limit",
    type=click.IntRange(min=1),
    help="Evaluate only the first N images of the evaluation data.",
)
@click.option(
    "--int8-accuracy-budget",
    type=float,
    help="INT8 may lose at most this many mAP points vs FP32: keep the fewest sensitive layers in float.",
)
@click.option(
    "--trt-end2end-nms",
    is_flag=True,
    default=None,
    help="TensorRT: append EfficientNMS_TRT (corner boxes) to a decoded scores/boxes head.",
)
def build(**options):
    """Run every stage: fuse, export ONNX, simplify, then the targets.

    \b
    Examples:
      reparam-export build                                  # embedded demo model
      reparam-export build --target openvino --precision fp32 --precision int8 --calib-data demo
      reparam-export build --target openvino --precision int8 --int8-accuracy-budget 0.5
      reparam-export build --recipe recipes/embedded_demo.yaml --dynamic-batch
      reparam-export build --model mypkg.models:build_yolo --input-size 640 640
    """
    recipe = _load(options)
    for option in _unread_options(options, recipe):
        console.print(
            f"warning: {option} has no effect on this build (targets {', '.join(recipe.targets)}, "
            f"precisions {', '.join(recipe.precisions)})",
            markup=False,
            soft_wrap=True,
        )
    pipeline = _pipeline(recipe, options["run_dir"], options["force"])
    artifacts = pipeline.build()
    for key, result in artifacts.items():
        console.print(f"built {recipe.name} {key}: {result.output}", markup=False)
    deferred = pipeline.run.manifest().get("tensorrt", {})
    if "tensorrt" in recipe.targets and deferred.get("deferred"):
        console.print(
            f"no TensorRT engine was built on this machine ({deferred['reason']}); "
            f"build it where TensorRT runs with: bash {deferred['bundle']}",
            markup=False,
            soft_wrap=True,
        )
    if recipe.evaluation.data:
        _print_eval(pipeline.run.root)


def _unread_options(options: dict[str, Any], recipe) -> list[str]:
    """Options the user passed that no stage of this build reads (e.g. --trt-version for onnx)."""
    int8 = recipe.calibrates
    read = {
        "trt_version": "tensorrt" in recipe.targets,
        "trt_end2end_nms": "tensorrt" in recipe.targets,
        "calib_data": int8,
        "calib_count": int8,
        "sensitivity_images": int8 and recipe.int8.accuracy_budget is not None,
        "eval_limit": recipe.evaluation.data is not None,
    }
    return [f"--{name.replace('_', '-')}" for name, used in read.items() if options.get(name) and not used]


def _print_eval(run: Path, data=None, limit=None) -> None:
    from exporter.eval.run_eval import evaluate_run

    report = evaluate_run(run, data, limit)
    table = Table(title=f"COCO mAP on {report['images']} images of {report['data']}")
    for column in ("artifact", "mAP", "mAP50", "mAP75", "vs torch"):
        table.add_column(column)
    reference = report["results"]["torch.fp32"]["map"]
    for key, m in report["results"].items():
        delta = f"{100 * (m['map'] - reference):+.2f}" if key != "torch.fp32" else ""
        table.add_row(
            key, f"{100 * m['map']:.2f}", f"{100 * m['map50']:.2f}", f"{100 * m['map75']:.2f}", delta
        )
    out_console().print(table)


@cli.command("eval")
@click.option("--artifacts", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--data", help="COCO instances json or dataset folder, or 'demo' (default: the recipe's).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images.")
def eval_command(run, data, limit):
    """COCO mAP of the fused torch model and every built artifact of a run (written to RUN/eval.json).

    \b
    Examples:
      reparam-export eval --artifacts runs/demo --data demo
      reparam-export eval --artifacts runs/damoyolo_s --data /data/coco   # annotations/ + val2017/
    """
    _print_eval(run, data, limit)


@cli.command()
@_model_options
def fuse(**options):
    """Fuse every re-parameterizable block and prove the output unchanged.

    Writes fused.pt (deploy-form state dict). Fails with exit 1 naming the first module whose
    output changed by more than rtol·max(1, max|y|).

    \b
    Examples:
      reparam-export fuse
      reparam-export fuse --model mypkg.models:build_repvgg --input-size 224 224
      reparam-export fuse --recipe recipes/embedded_demo.yaml --checkpoint weights.pth
    """
    recipe = _load(options)
    _pipeline(recipe, options["run_dir"], options["force"]).fuse()


@cli.command()
@_model_options
def export(**options):
    """Fuse, export ONNX and simplify it, checking onnxruntime against torch after each step.

    \b
    Examples:
      reparam-export export --opset 19 --dynamic-batch
      reparam-export export --model mypkg.models:build_yolo --input-size 640 640 --run-dir out/yolo
    """
    recipe = _load(options)
    _pipeline(recipe, options["run_dir"], options["force"]).simplify()


@cli.command()
@_model_options
@click.option("--calib-data", help="Calibration images: a folder, a COCO json, or 'demo'.")
@click.option("--calib-count", type=click.IntRange(min=1), help="Number of calibration images (default 300).")
def calibrate(**options):
    """Select and check the INT8 calibration images alone, and record them (paths + sha256).

    The record goes to calibration/<model>-<preprocessing>/images.json, the key every INT8 path
    (OpenVINO, TensorRT) uses, so a stale cache is never reused for another model.

    \b
    Examples:
      reparam-export calibrate --calib-data demo
      reparam-export calibrate --recipe recipes/damoyolo_s.yaml --calib-data /data/coco/val2017
    """
    from exporter.data.calibration import require_source

    recipe = _load(options)
    require_source(recipe.calibration.source)
    pipeline = _pipeline(recipe, options["run_dir"], options["force"])
    chosen, record = pipeline.calibration_set(pipeline.simplify("openvino").output)
    console.print(f"calibration: {len(chosen.images)} images from {chosen.source} → {record}", markup=False)


@cli.command()
@_model_options
@click.option("--calib-data", help="Calibration images: a folder, a COCO json, or 'demo'.")
@click.option("--calib-count", type=click.IntRange(min=1), help="Calibration images selected (default 300).")
@click.option(
    "--images", "sensitivity_images", type=click.IntRange(min=1), help="Of those, images scored (default 32)."
)
@click.option("--top", default=15, type=click.IntRange(min=1), show_default=True, help="Rows to print.")
def sensitivity(**options):
    """Rank the fused model's convolutions by the error each causes when it alone is in INT8.

    Per layer: output SNR with only that layer fake-quantized (INT8 per-channel weights, per-tensor
    input on calibrated ranges; lower is worse) and weight statistics of the fused kernel (per-channel
    range spread, share of 6-sigma outliers). Written to RUN/sensitivity.json (cached like any stage).

    \b
    Examples:
      reparam-export sensitivity --calib-data demo
      reparam-export sensitivity --recipe recipes/damoyolo_s.yaml --checkpoint damoyolo_s.pth
    """
    from exporter.data.calibration import require_source
    from exporter.report.render import SENSITIVITY_COLUMNS, sensitivity_cells
    from exporter.stages.sensitivity import ranking

    recipe = _load(options)
    require_source(recipe.calibration.source)
    result = _pipeline(recipe, options["run_dir"], options["force"]).sensitivity()
    table = Table(title=f"{recipe.name}: INT8 sensitivity per layer (most sensitive first)")
    for column in SENSITIVITY_COLUMNS:
        table.add_column(column)
    for row in ranking(result.output)[: options["top"]]:
        table.add_row(*sensitivity_cells(row))
    out_console().print(table)


@cli.command("bench-int8")
@_model_options
@click.option(
    "--target",
    "backend",
    type=click.Choice(["openvino", "tensorrt"]),
    default="openvino",
    show_default=True,
    help="Whose INT8 to search: OpenVINO (NNCF) or the TensorRT Q/DQ ONNX (scored by onnxruntime).",
)
@click.option(
    "--int8-accuracy-budget", type=float, default=0.5, show_default=True, help="mAP points vs FP32."
)
@click.option("--calib-data", help="INT8 calibration images: a folder, a COCO json, or 'demo'.")
@click.option("--calib-count", type=click.IntRange(min=1), help="Number of calibration images (default 300).")
@click.option(
    "--eval-data", help="Evaluation data: a COCO json or folder, or 'demo' (default: the recipe's)."
)
@click.option(
    "--eval-limit",
    type=click.IntRange(min=1),
    help="Evaluate only the first N images of the evaluation data.",
)
def bench_int8(backend, **options):
    """FP32 vs full INT8 vs partial INT8 (fewest float layers within the budget): mAP and latency.

    The search measures all three in one run on this machine (OpenVINO CPU latency, p50, batch 1);
    its record is cached in the run directory: --force measures again. Goal: partial INT8 within
    the budget of FP32 while keeping at least 80% of the full-INT8 speedup.

    \b
    Examples:
      reparam-export bench-int8
      reparam-export bench-int8 --int8-accuracy-budget 0.1 --eval-limit 200
      reparam-export bench-int8 --recipe recipes/damoyolo_s.yaml --checkpoint damoyolo_s.pth
    """
    from exporter.pipeline import check_targets

    recipe = _load({**options, "targets": (backend,), "precisions": ("int8",)})
    check_targets(recipe)
    pipeline = _pipeline(recipe, options["run_dir"], options["force"])
    model = pipeline.simplify(backend).output
    chosen, record = pipeline.calibration_set(model)
    result = pipeline.int8_search(backend, model, chosen, record)
    _print_int8_search(recipe.name, result.record, result.cached)


def _print_int8_search(name: str, record: dict[str, Any], cached: bool) -> None:
    latency = record.get("latency_ms") or {}
    fp32_ms = latency.get("fp32")
    table = Table(
        title=f"{name}: INT8 on {record['backend']}, budget {record['budget_points']:g} mAP points, "
        f"{record['evaluation']['images']} images"
    )
    for column in ("model", "float layers", "mAP", "vs FP32", "p50 ms", "speedup vs FP32"):
        table.add_column(column)
    rows = [
        ("FP32", "all", record["fp32_map"], "fp32"),
        ("full INT8", "0", record["full_int8_map"], "int8_full"),
        ("partial INT8", str(len(record["float_layers"])), record["partial_int8_map"], "int8_partial"),
    ]
    for label, floats, map_, key in rows:
        ms = latency.get(key)
        table.add_row(
            label,
            floats,
            f"{100 * map_:.2f}",
            f"{100 * (map_ - record['fp32_map']):+.2f}" if key != "fp32" else "",
            f"{ms:.2f}" if ms is not None else "not measured",
            f"{fp32_ms / ms:.2f}x" if ms and fp32_ms else "",
        )
    out = out_console()
    out.print(table)
    if record["float_layers"]:
        out.print(f"float layers: {', '.join(record['float_layers'])}", markup=False, soft_wrap=True)
    met = record["drop_points"] <= record["budget_points"]
    out.print(
        f"goal: partial INT8 within {record['budget_points']:g} points of FP32: "
        f"{record['drop_points']:.2f} points below, {'met' if met else 'NOT met'}",
        markup=False,
    )
    kept = record.get("speedup_kept")
    verdict = "" if kept is None else ("met" if kept >= 0.8 else "NOT met")
    out.print(
        f"goal: ≥ 80% of the full-INT8 speedup kept: {100 * kept:.0f}%, {verdict}"
        if kept is not None
        else f"goal: speedup kept: not measured ({record.get('latency_note', 'no latency')})",
        markup=False,
    )
    if cached:
        console.print(
            "(cached search from an earlier run of this recipe; --force measures again)", markup=False
        )


@cli.command()
@click.option("--artifacts", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option(
    "--threads",
    default=0,
    type=click.IntRange(min=0),
    show_default=True,
    help="CPU threads per backend (0: backend default).",
)
@click.option(
    "--min-iters",
    default=50,
    type=click.IntRange(min=1),
    show_default=True,
    help="Timed calls per artifact, at least.",
)
@click.option(
    "--min-seconds",
    default=2.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Timed seconds per artifact, at least.",
)
@click.option(
    "--throughput",
    "workers",
    default=0,
    type=click.IntRange(min=0),
    help="Also measure throughput: onnxruntime with this many parallel single-thread sessions, "
    "OpenVINO with its THROUGHPUT streams and optimal number of async requests.",
)
def bench(run, threads, min_iters, min_seconds, workers):
    """Latency of every artifact of a run: batch 1, synchronous, after warm-up (p50/p90/p99/mean/std).

    Results go to RUN/bench.json with the thread count and CPU model.

    \b
    Examples:
      reparam-export bench --artifacts runs/embedded-demo
      reparam-export bench --artifacts runs/demo --threads 1 --throughput 2
    """
    from exporter.bench import bench_run

    with console.status("timing artifacts…"):
        report = bench_run(run, threads, min_iters, min_seconds, workers)
    table = Table(title=f"{run} — {report['mode']}, {report['threads']} threads, {report['cpu']}")
    columns = ["artifact", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "fps (batch 1)"]
    if workers:
        columns.append("fps (throughput, requests)")
    for column in columns:
        table.add_column(column)
    for key, r in report["results"].items():
        row = [
            key,
            *(f"{r[k]:.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "fps_batch1")),
        ]
        if workers:
            row.append(f"{r['throughput_fps']:.1f} ({r['throughput_requests']})")
        table.add_row(*row)
    out_console().print(table)


@cli.command()
@click.option("--artifacts", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (default RUN/report)."
)
def report(run, out):
    """Write report.md, a self-contained report.html (plots embedded) and report.json for a run.

    Per artifact: mAP, mAP50, latency p50/p90/p99, throughput, size, error vs the FP32 reference;
    DAMO-YOLO models get the published targets beside them.

    \b
    Examples:
      reparam-export report --artifacts runs/demo
      reparam-export report --artifacts runs/damoyolo_ns --out reports/damoyolo_ns
    """
    from exporter.report.render import write_report

    for kind, path in write_report(run, out).items():
        console.print(f"{kind:<8} {path}", markup=False)


@cli.command()
@click.option("--artifacts", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    default=Path("reports/baseline.json"),
    show_default=True,
    help="Baseline metrics (JSON).",
)
@click.option(
    "--tolerances",
    type=click.Path(path_type=Path),
    default=Path("reports/tolerances.yaml"),
    show_default=True,
    help="Per-metric one-sided tolerances (YAML).",
)
@click.option("--update-baseline", is_flag=True, help="Accept the run's metrics as the new baseline.")
def check(run, baseline, tolerances, update_baseline):
    """Compare a run with the baseline; exit 1 with a table of what regressed.

    \b
    Examples:
      reparam-export check --artifacts runs/demo
      reparam-export check --artifacts runs/demo --update-baseline
    """
    from exporter.report import check as checking

    limits = checking.load_tolerances(tolerances)
    if update_baseline:
        metrics = checking.update_baseline(run, baseline, limits)
        console.print(
            f"baseline updated: {baseline} ({sum(len(v) for v in metrics.values())} values)", markup=False
        )
        return
    expected = checking.load_baseline(baseline, run)
    findings = checking.compare(expected, checking.current_metrics(run, list(limits)), limits)
    table = Table(title=f"{run} vs {baseline}")
    for column in ("artifact", "metric", "baseline", "current", "limit", "status"):
        table.add_column(column)
    for f in findings:
        current = "missing" if f.current is None else f"{f.current:.4g}"
        status = "[red]REGRESSED[/red]" if f.regressed else "[green]ok[/green]"
        table.add_row(f.artifact, f.metric, f"{f.baseline:.4g}", current, f"{f.limit:.4g}", status)
    out_console().print(table)
    regressed = [f for f in findings if f.regressed]
    if regressed:
        raise CheckFailed(f"{len(regressed)} of {len(findings)} metrics regressed beyond their tolerance")
    if not findings:
        raise UserError(f"{baseline} shares no artifact/metric with {run}; nothing was checked")


@cli.command("bench-cpu")
@click.option(
    "--recipe",
    "recipes",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Recipe(s) to benchmark; repeatable (default: the demo and recipes/damoyolo_ns.yaml).",
)
@click.option(
    "--threads",
    default=2,
    type=click.IntRange(min=1),
    show_default=True,
    help="CPU threads for every backend.",
)
@click.option(
    "--min-seconds",
    default=2.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Timed seconds per runtime, over 3 alternating rounds.",
)
@click.option(
    "--calib-count",
    default=64,
    type=click.IntRange(min=1),
    show_default=True,
    help="INT8 calibration images.",
)
@click.option(
    "--eval-limit",
    default=100,
    type=click.IntRange(min=1),
    show_default=True,
    help="Val images for the INT8 mAP check.",
)
def bench_cpu(recipes, threads, min_seconds, calib_count, eval_limit):
    """PyTorch eager, onnxruntime and OpenVINO (unfused, fused FP32/FP16/INT8) side by side, with
    ratios against PyTorch eager and the goals: fused vs unfused OpenVINO FP32 >= 1.2x, INT8 vs FP32
    IR >= 1.5x, INT8 mAP within 1.0 point of FP32 (models with evaluation data).

    \b
    Examples:
      reparam-export bench-cpu
      reparam-export bench-cpu --recipe recipes/damoyolo_nm.yaml --threads 1
    """
    from exporter.bench import cpu_name
    from exporter.bench_cpu import bench_recipe, met
    from exporter.recipe import load_recipe

    paths = list(recipes) or [None, Path(__file__).resolve().parents[1] / "recipes" / "damoyolo_ns.yaml"]
    out = out_console()
    for path in paths:
        recipe = load_recipe(path)
        with console.status(f"benchmarking {recipe.name}…"):
            rows, goals, fusion = bench_recipe(recipe, threads, min_seconds, calib_count, eval_limit)
        table = Table(
            title=f"{recipe.name} {recipe.input_size[0]}x{recipe.input_size[1]}, batch 1, "
            f"{threads} threads, {cpu_name()}"
        )
        for column in ("runtime", "p50 ms", "speed vs PyTorch eager"):
            table.add_column(column)
        for row in rows:
            table.add_row(row.name, f"{row.p50_ms:.2f}", f"{row.ratio_vs_torch:.2f}x")
        out.print(table)
        for name, value in goals.items():
            if isinstance(value, tuple):
                out.print(f"  {name}: {100 * value[0]:.2f} / {100 * value[1]:.2f}", highlight=False)
                continue
            verdict = {True: "met", False: "NOT met", None: ""}[met(name, value)]
            out.print(f"  {name}: {value:.2f} {verdict}", highlight=False)
            if name == "fused vs unfused OpenVINO FP32":
                out.print(f"    {fusion.describe()}", highlight=False)


@cli.command("demo-data")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data/shapes"),
    show_default=True,
    help="Folder for <split>.json and <split>/ images.",
)
@click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(["train", "val", "calib"]),
    help="Split(s) to write; repeatable (default: all three).",
)
def demo_data(out, splits):
    """Write the synthetic shapes detection dataset (COCO format), deterministic from fixed seeds.

    Splits: train 3000 images (seed 1), val 500 (seed 2), calib 300 (seed 3); five shape classes
    of varied size, colour and rotation, with partial occlusion, on textured noisy backgrounds.

    \b
    Examples:
      reparam-export demo-data                      # all splits into data/shapes
      reparam-export demo-data --split val --split calib --out /tmp/shapes
    """
    from rich.progress import Progress

    from exporter.data.shapes import SPLITS, write_split

    chosen = splits or tuple(SPLITS)
    with Progress(console=console, transient=True) as progress:
        for name in chosen:
            count, seed = SPLITS[name]
            progress.add_task(f"writing {name} ({count} images)", total=None)
            path = write_split(out, name, count, seed)
            console.print(f"{name:<6} {count} images → {path}", markup=False)


@cli.command("bench-akconv")
@click.option(
    "--channels", default=64, type=click.IntRange(min=1), show_default=True, help="Input and output channels."
)
@click.option(
    "--size", default=80, type=click.IntRange(min=1), show_default=True, help="Feature map height and width."
)
@click.option(
    "--num-param", default=5, type=click.IntRange(min=1), show_default=True, help="AKConv sampling points N."
)
@click.option("--stride", default=1, show_default=True, type=click.IntRange(1, 2), help="AKConv stride.")
@click.option(
    "--threads",
    default=0,
    type=click.IntRange(min=0),
    show_default=True,
    help="CPU threads per backend (0: backend default).",
)
@click.option(
    "--min-seconds",
    default=1.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Timed seconds per measurement.",
)
def bench_akconv(channels, size, num_param, stride, threads, min_seconds):
    """Time one AKConv layer under each lowering on onnxruntime and OpenVINO CPU, side by side.

    Prints p50 latency, the speed ratio against the gather lowering, the error against the torch
    module, and whether `--akconv-lowering auto` picks the fastest exact lowering per backend.
    Exit 1 if any lowering is not exact (max abs err > 1e-4).

    \b
    Examples:
      reparam-export bench-akconv
      reparam-export bench-akconv --channels 128 --size 40 --num-param 9 --threads 1
    """
    from exporter.doctor import check_library
    from exporter.lowering import bench, capability

    backends = ["onnxruntime"]
    if check_library("openvino", "openvino", "", "").usable:
        backends.append("openvino")
    else:
        console.print("openvino is not usable here: timing onnxruntime only", markup=False)
    with console.status("timing AKConv lowerings…"):
        rows = bench.run(channels, size, num_param, stride, threads, min_seconds, tuple(backends))
    table = Table(title=f"AKConv {channels}ch {size}x{size} N={num_param} stride {stride}, batch 1, CPU")
    for column in ("backend", "lowering", "p50 ms", "speed vs gather", "max abs err", "note"):
        table.add_column(column)
    for row in bench.table(rows):
        table.add_row(*row)
    out_console().print(table)
    for backend in backends:
        chosen, best = capability.auto(backend, 17).lowering, bench.fastest(rows, backend)
        verdict = "fastest measured" if chosen == best else f"NOT the fastest measured here ({best})"
        click.echo(f"auto on {backend}: {chosen} — {verdict}")
    if not bench.exact(rows):
        raise CheckFailed("a lowering differs from the torch module by more than 1e-4")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option(
    "--onnx", "onnx_path", type=click.Path(path_type=Path), help="Also check this ONNX against TensorRT."
)
@click.option("--trt-version", default="10.x", show_default=True, help="TensorRT version for --onnx.")
def doctor(as_json, onnx_path, trt_version):
    """List each backend library, its version, and whether it is usable here (and why not).

    With --onnx, also check every op of that graph against what the chosen TensorRT parses.

    \b
    Examples:
      reparam-export doctor
      reparam-export doctor --json
      reparam-export doctor --onnx runs/demo/tensorrt/model.sim.onnx --trt-version 8.6
    """
    from exporter.doctor import required_missing, run_checks

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table(title="reparam-export doctor")
        for column in ("library", "version", "usable", "notes"):
            table.add_column(column)
        for c in checks:
            table.add_row(c.name, c.version, "[green]yes[/green]" if c.usable else "[red]no[/red]", c.note)
        out_console().print(table)
    if onnx_path is not None:
        from exporter.lowering.trt_compat import check_model

        if not onnx_path.is_file():
            raise UserError(f"ONNX not found: {onnx_path}")
        report = check_model(onnx_path, trt_version)
        click.echo(report.describe())
        if not report.ok:
            raise CheckFailed(f"{onnx_path} is not compatible with TensorRT {trt_version}")
    missing = required_missing(checks)
    if missing:
        raise UserError(f"required libraries unusable: {', '.join(missing)}; reinstall with `make demo`")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of raising (one-line errors, no tracebacks)."""
    if "" not in sys.path:
        sys.path.insert(0, "")  # builders given as package.module:function resolve from the cwd
    try:
        cli.main(args=argv, prog_name="reparam-export", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # usage errors too: one line, with where to read more
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(exc, click.UsageError) and ctx else ""
        console.print(f"error: {exc.format_message()}{hint}", markup=False, soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Abort:
        console.print("aborted", markup=False)
        return 130
    except ExporterError as exc:
        label = "check failed" if exc.exit_code == 1 else "error"
        console.print(f"{label}: {exc}", markup=False, soft_wrap=True)
        return exc.exit_code
    return 0


def entry() -> None:
    sys.exit(main())
