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
from exporter.errors import ExporterError, UserError

console = Console(stderr=True, highlight=False)


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
        click.option(
            "--run-dir", type=click.Path(path_type=Path), help="Run directory (default runs/<recipe name>)."
        ),
        click.option("--force", is_flag=True, help="Rerun every stage even when cached."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load(recipe_path, builder, checkpoint, input_size, opset, dynamic_batch, extra=None):
    from exporter.recipe import load_recipe

    overrides: dict[str, Any] = dict(extra or {})
    if builder:
        overrides["model.builder"] = builder
        overrides["model.kwargs"] = {}
        if recipe_path is None:
            overrides["name"] = builder.rpartition(":")[2] or "model"
            overrides["class_names"] = []
            overrides["export.output_names"] = None
    if checkpoint is not None:
        overrides["model.checkpoint"] = str(checkpoint)
    if input_size:
        overrides["input_size"] = list(input_size)
    if opset is not None:
        overrides["export.opset"] = opset
    if dynamic_batch is not None:
        overrides["export.dynamic_batch"] = dynamic_batch
    return load_recipe(recipe_path, overrides)


def _pipeline(recipe, run_dir, force):
    from exporter.pipeline import Pipeline

    if "" not in sys.path:
        sys.path.insert(0, "")  # builders given as package.module:function resolve from the cwd
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
def build(
    recipe_path, builder, checkpoint, input_size, opset, dynamic_batch, run_dir, force, targets, precisions
):
    """Run every stage: fuse, export ONNX, simplify, then the targets.

    \b
    Examples:
      reparam-export build                                  # embedded demo model
      reparam-export build --recipe recipes/embedded_demo.yaml --dynamic-batch
      reparam-export build --model mypkg.models:build_yolo --input-size 640 640
    """
    extra = {}
    if targets:
        extra["targets"] = list(targets)
    if precisions:
        extra["precisions"] = list(precisions)
    recipe = _load(recipe_path, builder, checkpoint, input_size, opset, dynamic_batch, extra)
    final = _pipeline(recipe, run_dir, force).build()
    console.print(f"built {recipe.name}: {final.output}", markup=False)


@cli.command()
@_model_options
def fuse(recipe_path, builder, checkpoint, input_size, opset, dynamic_batch, run_dir, force):
    """Fuse every re-parameterizable block and prove the output unchanged.

    Writes fused.pt (deploy-form state dict). Fails with exit 1 naming the first module whose
    output changed by more than rtol·max(1, max|y|).

    \b
    Examples:
      reparam-export fuse
      reparam-export fuse --model mypkg.models:build_repvgg --input-size 224 224
      reparam-export fuse --recipe recipes/embedded_demo.yaml --checkpoint weights.pth
    """
    recipe = _load(recipe_path, builder, checkpoint, input_size, opset, dynamic_batch)
    _pipeline(recipe, run_dir, force).fuse()


@cli.command()
@_model_options
def export(recipe_path, builder, checkpoint, input_size, opset, dynamic_batch, run_dir, force):
    """Fuse, export ONNX and simplify it, checking onnxruntime against torch after each step.

    \b
    Examples:
      reparam-export export --opset 19 --dynamic-batch
      reparam-export export --model mypkg.models:build_yolo --input-size 640 640 --run-dir out/yolo
    """
    recipe = _load(recipe_path, builder, checkpoint, input_size, opset, dynamic_batch)
    _pipeline(recipe, run_dir, force).simplify()


@cli.command("eval")
@click.option(
    "--artifacts",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory written by `build` (holds manifest.json and the ONNX model).",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="COCO-format folder: instances_*.json (in it or in annotations/) and an image folder.",
)
@click.option(
    "--annotations", type=click.Path(path_type=Path), help="Instances JSON (default: found in --data)."
)
@click.option("--images", type=click.Path(path_type=Path), help="Image folder (default: found in --data).")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N images (by id).")
def eval_(run_dir, data, annotations, images, limit):
    """COCO box mAP of the built ONNX model (onnxruntime), scored with pycocotools.

    Pre- and post-processing follow the recipe (DAMO-YOLO: stretch resize, 0–255 pixels,
    multi-label NMS, top 500). Writes coco_eval.json into the run directory.

    \b
    Examples:
      reparam-export eval --artifacts runs/damoyolo_s --data /data/coco
      reparam-export eval --artifacts runs/damoyolo_ns --data /data/coco --limit 500
    """
    from exporter.eval.coco_map import METRICS, evaluate_run, locate_dataset

    dataset = locate_dataset(data, annotations, images)
    report = evaluate_run(run_dir, dataset, limit, console)
    table = Table(title=f"COCO bbox: {report['images']} images, {report['detections']} detections")
    for column in ("metric", "value"):
        table.add_column(column)
    for name in METRICS:
        table.add_row(name, f"{report['metrics'][name]:.4f}")
    Console(highlight=False).print(table)
    console.print(f"wrote {run_dir / 'coco_eval.json'}", markup=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(as_json):
    """List each backend library, its version, and whether it is usable here (and why not).

    \b
    Examples:
      reparam-export doctor
      reparam-export doctor --json
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
        Console(highlight=False).print(table)
    missing = required_missing(checks)
    if missing:
        raise UserError(f"required libraries unusable: {', '.join(missing)}; reinstall with `make demo`")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of raising (one-line errors, no tracebacks)."""
    try:
        cli.main(args=argv, prog_name="reparam-export", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
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
