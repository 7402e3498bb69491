"""Commands that build a run: build, fuse, export, calibrate, sensitivity, bench-int8."""

from __future__ import annotations

from pathlib import Path

import click

from exporter.base.errors import UserError
from exporter.cli import options
from exporter.cli.app import cli, load, out_console, pipeline, say, timing


@cli.command()
@options.MODEL
@options.TARGET
@options.PRECISION
@options.CALIBRATION
@options.EVALUATION
@options.budget()
@options.TRIAL_WORKERS
@options.option(
    "--trt-end2end-nms",
    field="tensorrt.end2end_nms",
    is_flag=True,
    default=None,
    help="TensorRT: append EfficientNMS_TRT (corner boxes) to a decoded scores/boxes head.",
)
def build(trial_workers, **values):
    """Run every stage: fuse, export ONNX, simplify, then the targets.

    \b
    Examples:
      reparam-export build                                  # embedded demo model
      reparam-export build --target openvino --precision fp32 --precision int8 --calib-data demo
      reparam-export build --target openvino --precision int8 --int8-accuracy-budget 0.5
      reparam-export build --recipe recipes/embedded_demo.yaml --dynamic-batch
      reparam-export build --model mypkg.models:build_yolo --input-size 640 640
    """
    from exporter.pipeline.builder import unread_fields

    recipe = load(values)
    command = click.get_current_context().command
    flags = options.flags(command)
    for field in unread_fields(recipe, options.overrides(command, values)):
        say(
            f"warning: {flags[field]} has no effect on this build (targets {', '.join(recipe.targets)}, "
            f"precisions {', '.join(recipe.precisions)})"
        )
    run = pipeline(recipe, values["run_dir"], values["force"], trial_workers)
    artifacts = run.build()
    for key, result in artifacts.items():
        say(f"built {recipe.name} {key}: {result.output}")
    for target, deferred in run.run.manifest().get("deferred", {}).items():
        if target in recipe.targets:
            say(
                f"no {deferred['artifact']} was built on this machine ({deferred['reason']}); "
                f"build it where {deferred['runtime']} runs with: bash {deferred['bundle']}"
            )
    if recipe.evaluation.data:
        import json

        from exporter.cli.measure import print_evaluation

        print_evaluation(json.loads(run.evaluate().output.read_text()))  # evaluated by the build


@cli.command()
@options.MODEL
def fuse(**values):
    """Fuse every re-parameterizable block and prove the output unchanged.

    Writes fused.pt (deploy-form state dict). Fails with exit 1 naming the first module whose
    output changed by more than rtol·max(1, max|y|).

    \b
    Examples:
      reparam-export fuse
      reparam-export fuse --model mypkg.models:build_repvgg --input-size 224 224
      reparam-export fuse --recipe recipes/embedded_demo.yaml --checkpoint weights.pth
    """
    pipeline(load(values), values["run_dir"], values["force"]).fuse()


@cli.command()
@options.MODEL
def export(**values):
    """Fuse, export ONNX and simplify it, checking onnxruntime against torch after each step.

    \b
    Examples:
      reparam-export export --opset 19 --dynamic-batch
      reparam-export export --model mypkg.models:build_yolo --input-size 640 640 --run-dir out/yolo
    """
    from exporter.pipeline.targets.table import TARGETS

    run = pipeline(load(values), values["run_dir"], values["force"])
    run.check()
    run.simplify(TARGETS["onnx"])


@cli.command()
@options.MODEL
@options.CALIBRATION
def calibrate(**values):
    """Select and check the INT8 calibration images alone, and record them (paths + sha256).

    The record goes to calibration/<model>-<preprocessing>-<images>/images.json, the key every INT8 path
    (OpenVINO, TensorRT) uses, so a stale cache is never reused for another model.

    \b
    Examples:
      reparam-export calibrate --calib-data demo
      reparam-export calibrate --recipe recipes/damoyolo_s.yaml --calib-data /data/coco/val2017
    """
    from exporter.pipeline.targets.table import TARGETS

    run = pipeline(load(values), values["run_dir"], values["force"])
    chosen = run.plan.calibration_set  # the source is checked before any stage runs
    model = run.simplify(TARGETS["openvino"]).output
    record = run.plan.ranges(model) / "images.json"
    say(f"calibration: {len(chosen.images)} images from {chosen.source} → {record}")


@cli.command()
@options.MODEL
@options.CALIBRATION
@options.option(
    "--images",
    "sensitivity_images",
    field="int8.sensitivity_images",
    type=click.IntRange(min=1),
    help=f"Of those, images scored (default {options.default('int8.sensitivity_images')}).",
)
@click.option("--top", default=15, type=click.IntRange(min=1), show_default=True, help="Rows to print.")
def sensitivity(top, **values):
    """Rank the fused model's convolutions by the error each causes when it alone is in INT8.

    Per layer: output SNR with only that layer fake-quantized (INT8 per-channel weights, per-tensor
    input on calibrated ranges; lower is worse) and weight statistics of the fused kernel (per-channel
    range spread, share of 6-sigma outliers). Written to RUN/sensitivity.json (cached like any stage).

    \b
    Examples:
      reparam-export sensitivity --calib-data demo
      reparam-export sensitivity --recipe recipes/damoyolo_s.yaml --checkpoint damoyolo_s.pth
    """
    from exporter.measure.report import tables
    from exporter.pipeline.stages.sensitivity import ranking

    recipe = load(values)
    run = pipeline(recipe, values["run_dir"], values["force"])
    run.plan.calibration_set  # noqa: B018 - the source is checked before any stage runs
    result = run.sensitivity()
    out_console().print(tables.sensitivity(recipe.name, ranking(result.output)[:top]))


@cli.command("bench-int8")
@options.MODEL
@click.option(
    "--target",
    "backend",
    type=click.Choice([name for name, target in options.targets().items() if target.quantizer]),
    default="openvino",
    show_default=True,
    help="Whose INT8 to search, quantized as that target's build quantizes (TensorRT's Q/DQ ONNX is scored "
    "by onnxruntime).",
)
@options.budget(default=0.5, show_default=True)
@options.TRIAL_WORKERS
@options.CALIBRATION
@options.EVALUATION
def bench_int8(backend, trial_workers, **values):
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
    from exporter.measure.report import tables
    from exporter.pipeline.targets.table import TARGETS

    recipe = load(values, targets=[backend], precisions=["int8"])
    run = pipeline(recipe, values["run_dir"], values["force"], trial_workers)
    run.check()
    target = TARGETS[backend]
    with timing("bench-int8"):
        result = run.int8_search(target)
    table, lines = tables.int8_search(recipe.name, result.record)
    out = out_console()
    out.print(table)
    for line in lines:
        out.print(line, markup=False, soft_wrap=True)
    if result.cached:
        say("(cached search from an earlier run of this recipe; --force measures again)")


@cli.command()
@options.recipes("A model's recipe (YAML); repeatable, one model each (default: the demo's).")
@options.TARGET
@options.PRECISION
@options.TARGET_FLAGS
@options.EVALUATION
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Models built at once, each in a local process of its own.",
)
@click.option(
    "--cluster",
    default="local",
    show_default=True,
    metavar="local|ray|ray://HOST:PORT",
    help="Where models are built: local processes, or Ray tasks (ray: start or join a Ray here; ray://: "
    "a remote cluster whose nodes all read --out and import the models' builders).",
)
@options.SHARDS
@options.TRIAL_WORKERS
@click.option(
    "--bench",
    is_flag=True,
    help="Once every model is built, time each one's artifacts (batch 1, p50) on a worker of their own: "
    "this process, or a Ray task holding a whole node; one model after another.",
)
@click.option(
    "--out",
    default=Path("runs/matrix"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where each model's run directory and the summary (matrix.json, matrix.md) go.",
)
def matrix(recipes, workers, cluster, shards, trial_workers, bench, out, **values):
    """Build every model × target × precision cell: each model's stage graph once (its fuse and export are
    shared by its cells) in a run directory named by its recipe's digest, models in parallel; a model that
    fails is one line in the summary and the others finish (exit 1 then).

    \b
    Examples:
      reparam-export matrix --target onnx --target openvino --precision fp32 --precision fp16
      reparam-export matrix --recipe recipes/damoyolo_t.yaml --recipe recipes/damoyolo_s.yaml \\
          --target openvino --target tensorrt --precision fp32 --precision int8 --workers 2
      reparam-export matrix --recipe a.yaml --recipe b.yaml --cluster ray://head:10001 --out /shared/runs
      reparam-export matrix --eval-data demo --shards 2 --bench   # scored on 2 processes, then timed
    """
    from exporter.base.errors import CheckFailed
    from exporter.measure.matrix import run_matrix, write_summary
    from exporter.pipeline.recipe import load_recipe

    if cluster not in ("local", "ray") and not cluster.startswith("ray://"):
        raise UserError(f"--cluster {cluster} is not a place to build: pass local, ray or ray://HOST:PORT")
    overrides = options.overrides(click.get_current_context().command, values)
    loaded = [load_recipe(path, overrides) for path in recipes or [None]]  # every recipe read before any work
    names = [recipe.name for recipe in loaded]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"two recipes are named '{twice[0]}': give each model's recipe its own name")
    with timing("matrix"):
        cells = run_matrix(loaded, out, workers, cluster, shards, bench, trial_workers)
    summary, table, page = write_summary(cells, out)
    for cell in cells:
        detail = cell.error if cell.status == "failed" else cell.artifact or ""
        say(f"{cell.model} {cell.target}.{cell.precision}: {cell.status} {detail}".rstrip())
    say(f"matrix: {len(cells)} cells → {table}, {page}, {summary}")
    failed = sorted({cell.model for cell in cells if cell.status == "failed"})
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(loaded)} models failed ({', '.join(failed)}): see {table}")
