"""Commands around the builds: bench-cpu, bench-akconv, demo-data, doctor, figures."""

from __future__ import annotations

import json
from pathlib import Path

import click

from exporter.base.errors import CheckFailed, UserError, render
from exporter.cli import options
from exporter.cli.app import cli, console, flags, out_console, say, say_load, timing
from exporter.pipeline.recipe import REPO_RECIPES


@cli.command("bench-cpu")
@options.recipes("Recipe(s) to benchmark; repeatable (default: the demo and recipes/damoyolo_ns.yaml).")
@options.timing(
    2,
    2.0,
    "CPU threads for every backend.",
    "Timed seconds per runtime, over 3 alternating rounds.",
    min_threads=1,
)
@options.calib_count(default=64, show_default=True)
@options.eval_limit(default=100, show_default=True)
def bench_cpu(recipes, threads, min_seconds, calib_count, eval_limit):
    """PyTorch eager, onnxruntime and OpenVINO (unfused, fused FP32/FP16/INT8, and BF16 on a CPU that
    computes it natively) side by side, with ratios against PyTorch eager and the goals: fused vs unfused
    OpenVINO FP32 >= 1.2x, INT8 vs FP32 IR >= 1.5x, BF16 vs FP32 IR >= 1.5x and vs onnxruntime FP32 >=
    1.2x, INT8 mAP within 1.0 point of FP32 (models with evaluation data).

    \b
    Examples:
      reparam-export bench-cpu
      reparam-export bench-cpu --recipe recipes/damoyolo_nm.yaml --threads 1
    """
    from exporter.base.host import cpu_name
    from exporter.measure.report import tables
    from exporter.measure.studies.cpu import bench_recipe, met
    from exporter.pipeline.recipe import load_recipe

    out = out_console()
    for path in list(recipes) or [None, REPO_RECIPES / "damoyolo_ns.yaml"]:
        recipe = load_recipe(path)
        with console.status(f"benchmarking {recipe.name}…"), timing(f"bench-cpu {recipe.name}"):
            rows, goals, fusion = bench_recipe(recipe, threads, min_seconds, calib_count, eval_limit)
        height, width = recipe.input_size
        out.print(
            tables.bench_cpu(
                f"{recipe.name} {height}x{width}, batch 1, {threads} threads, {cpu_name()}", rows
            )
        )
        for name, value in goals.items():
            if isinstance(value, tuple):
                out.print(f"  {name}: {100 * value[0]:.2f} / {100 * value[1]:.2f}", highlight=False)
                continue
            verdict = {True: "met", False: "NOT met", None: ""}[met(name, value)]
            out.print(f"  {name}: {value:.2f} {verdict}", highlight=False)
            if name == "fused vs unfused OpenVINO FP32":
                out.print(f"    {fusion.describe()}", highlight=False)


@cli.command("bench-fuse")
@click.option(
    "--recipe",
    "recipes",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Recipe(s) to measure; repeatable (default: the demo, and DAMO-YOLO-S at 640 with "
    "trained-scale weights).",
)
@click.option("--threads", default=2, type=click.IntRange(min=1), show_default=True, help="torch threads.")
@click.option(
    "--runs", default=3, type=click.IntRange(min=1), show_default=True, help="Rounds, each timing all."
)
@click.option(
    "--zoo",
    is_flag=True,
    help="Instead: fuse the models of timm and Ultralytics the fuser is verified on, against each "
    "library's own deploy path (BatchNorms and convolutions left, seconds, fuse + proof in multiples of "
    "the library's time and the least a proof costs, two float64 passes, in the same unit).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="With --zoo: only this model of the zoo (timm's or Ultralytics' name, as the table prints it); "
    "repeatable (default: all).",
)
@click.option(
    "--input-size",
    type=click.IntRange(min=32),
    help="With --zoo: the first input's side (the second as the fuse stage takes it), for the cost at a "
    "detector's own size (default: each model's small size).",
)
def bench_fuse(recipes, threads, runs, zoo, models, input_size):
    """Fuse + float64 proof time as forward passes of the model (FP32 and float64), and loading fused.pt
    against building the model.

    \b
    Examples:
      reparam-export bench-fuse
      reparam-export bench-fuse --recipe recipes/damoyolo_l.yaml --threads 1
      reparam-export bench-fuse --zoo
      reparam-export bench-fuse --zoo --model rtdetr-l --model yolo11n --input-size 640 --runs 1
    """
    import torch

    from exporter.base.host import cpu_name
    from exporter.measure.report import tables
    from exporter.measure.studies.fuse import measure, zoo_entries, zoo_row, zoo_summary
    from exporter.pipeline.recipe import load_recipe

    if (models or input_size) and not zoo:
        raise click.UsageError("--model and --input-size choose the zoo's models: add --zoo")
    torch.set_num_threads(threads)
    if zoo:
        entries, left_out = zoo_entries(models, input_size)
        if left_out:
            say(f"left out: {'; '.join(left_out)}")
        rows = []
        with timing("bench-fuse --zoo"):
            for entry in entries:
                with console.status(f"fusing {entry[1]}…"):
                    rows.append(zoo_row(*entry, runs=runs))
        title = f"fusion of the field's models, {cpu_name()}, {threads} threads, medians of {runs} rounds"
        out_console().print(tables.zoo(title, rows))
        click.echo(zoo_summary(rows))
        return
    paths = list(recipes) or [None, REPO_RECIPES / "synthetic" / "damoyolo_s.yaml"]
    say(f"{cpu_name()}, {threads} threads, medians of {runs} alternating rounds")
    for recipe in map(load_recipe, paths):
        with console.status(f"measuring {recipe.name}…"), timing(f"bench-fuse {recipe.name}"):
            cost = measure(recipe, runs)
        click.echo(f"{cost.model} {cost.input}: {cost.describe()}")


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
    """Write the synthetic shapes detection dataset (COCO format, and Ultralytics' format beside it:
    data.yaml, labels/), deterministic from fixed seeds.

    Splits: train 3000 images (seed 1), val 500 (seed 2), calib 300 (seed 3); five shape classes
    of varied size, colour and rotation, with partial occlusion, on textured noisy backgrounds.

    \b
    Examples:
      reparam-export demo-data                      # all splits into data/shapes
      reparam-export demo-data --split val --split calib --out /tmp/shapes
    """
    from rich.progress import Progress

    from exporter.base.data.shapes import SPLITS, write_split, write_yolo

    splits = splits or tuple(SPLITS)
    with Progress(console=console, transient=True) as progress:
        for name in splits:
            count, seed = SPLITS[name]
            progress.add_task(f"writing {name} ({count} images)", total=None)
            path = write_split(out, name, count, seed)
            say(f"{name:<6} {count} images → {path}")
    say(f"Ultralytics' format → {write_yolo(out, splits)}")


@cli.command("bench-ultralytics")
@click.option(
    "--model",
    "checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="An Ultralytics checkpoint (best.pt).",
)
@click.option(
    "--trust-module", "trust", multiple=True, metavar="PACKAGE", help="A package of your fork's blocks."
)
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Its Ultralytics data.yaml (calibration and mAP).",
)
@options.timing(
    2, 2.0, "CPU threads for every runtime.", "Timed seconds per artifact, over 3 alternating rounds.", 1
)
@options.calib_count(default=300, show_default=True)
@options.eval_limit()
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where both tools' artifacts go (default runs/bench_ultralytics/<checkpoint name>).",
)
def bench_ultralytics(checkpoint, trust, data, threads, min_seconds, calib_count, eval_limit, run_dir):
    """One checkpoint through Ultralytics' exporter and through ours, side by side: convolutions and
    weights of each graph, outputs against the torch model, OpenVINO FP32/INT8 latency (batch 1,
    alternating rounds, ratio to Ultralytics' FP32 IR) and mAP on the same data with one evaluator.

    \b
    Examples:
      reparam-export bench-ultralytics --model runs/train/exp/weights/best.pt --data data.yaml
      reparam-export bench-ultralytics --model best.pt --trust-module myfork --data data.yaml --eval-limit 200
    """
    from exporter.base.host import cpu_name
    from exporter.measure.report import tables
    from exporter.measure.studies.ultralytics import bench
    from exporter.pipeline.recipe import safe_name

    run = run_dir or Path("runs/bench_ultralytics") / safe_name(checkpoint.stem)
    with console.status("building with both tools and measuring…"), timing("bench-ultralytics"):
        report = bench(checkpoint, data, tuple(trust), run, threads, min_seconds, calib_count, eval_limit)
    height, width = report["input_size"]
    title = (
        f"{checkpoint.name} {height}x{width}: batch 1, {threads} threads, {cpu_name()}; speed: median of "
        f"{report['rounds']} alternating rounds (range); mAP on {report['images']} images of {data}"
    )
    out_console().print(tables.bench_ultralytics(title, report["rows"]))
    say(f"→ {run / 'bench_ultralytics.json'}")


@cli.command("bench-matrix")
@click.option(
    "--models", default=4, show_default=True, type=click.IntRange(min=1), help="Independent models."
)
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(min=2), help="Workers to compare with one."
)
@click.option(
    "--size", default=128, show_default=True, type=click.IntRange(min=32), help="Input height and width."
)
def bench_matrix(models, workers, size):
    """Time a matrix of independent small models built in this process, on 1 and N local worker
    processes, and on a local Ray with 1 and N CPUs (where Ray is installed), each from empty run
    directories; print the speed-up of N workers over one (goal 0.8·N) and the overhead per model (goal
    under 1 s).

    \b
    Examples:
      reparam-export bench-matrix
      reparam-export bench-matrix --models 8 --workers 4
    """
    from exporter.base import host
    from exporter.measure.studies.matrix import bench_matrix as measure
    from exporter.measure.studies.matrix import verdicts

    # the workers' own CPU counts as other processes' during the run: the load is measured before it
    say_load("bench-matrix (the machine before it)", host.idle_load())
    found = measure(models, workers, size)
    for line in verdicts(found, models):
        out_console().print(line, markup=False, soft_wrap=True)


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
@options.timing(0, 1.0, "CPU threads per backend (0: backend default).", "Timed seconds per measurement.")
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
    from exporter.base.libraries import check_library
    from exporter.measure.report import tables
    from exporter.measure.studies import akconv as bench

    backends = ["onnxruntime"]
    if check_library("openvino", "openvino", "", "").usable:
        backends.append("openvino")
    else:
        say("openvino is not usable here: timing onnxruntime only")
    with console.status("timing AKConv lowerings…"), timing("bench-akconv"):
        rows = bench.run(channels, size, num_param, stride, threads, min_seconds, tuple(backends))
    title = f"AKConv {channels}ch {size}x{size} N={num_param} stride {stride}, batch 1, CPU"
    out_console().print(tables.akconv(title, bench.table(rows)))
    for backend in backends:
        chosen, best = bench.auto(backend), bench.fastest(rows, backend)
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
    """List each backend library, its version, and whether it is usable here (and why not); and the CPU:
    its instruction sets (AVX2, AVX-512, VNNI, BF16, AMX), the precisions it computes natively, and what
    OpenVINO's CPU plugin says it computes.

    With --onnx, also check every op of that graph against what the chosen TensorRT parses.

    \b
    Examples:
      reparam-export doctor
      reparam-export doctor --json
      reparam-export doctor --onnx runs/demo/tensorrt/model.sim.onnx --trt-version 8.6
    """
    from exporter.measure.doctor import required_missing, run_checks
    from exporter.measure.report import tables

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        out_console().print(tables.doctor(checks))
    if onnx_path is not None:
        from exporter.pipeline.stages.ort_runner import read_model
        from exporter.pipeline.targets.tensorrt.compat import check_model

        if not onnx_path.is_file():
            raise UserError(f"ONNX not found: {onnx_path}")
        report = check_model(onnx_path, trt_version)
        read_model(onnx_path)  # its external data in its folder, as every command that runs a model asks
        click.echo(render(report.describe(), flags()))
        if not report.ok:
            raise CheckFailed(f"{onnx_path} is not compatible with TensorRT {trt_version}")
    missing = required_missing(checks)
    if missing:
        raise UserError(f"required libraries unusable: {', '.join(missing)}; reinstall with `make demo`")


@cli.command()
@click.option(
    "--section",
    "sections",
    multiple=True,
    help="Figure section(s) to measure again; repeatable (default: all).",
)
@options.repository_file("--figures", "reports/figures.md", "The file of figure blocks.")
@options.repository_file("--readme", "README.md", "The README whose figure blocks are rewritten.")
@click.option(
    "--allow-noisy",
    is_flag=True,
    help="Write figures measured while other processes loaded the machine (the load is recorded).",
)
def figures(sections, figures, readme, allow_noisy):
    """Measure every figure README quotes (demo mAP per artifact, INT8 search, CPU benchmark) and write
    them to the figures file and into README's marked blocks (tens of minutes).

    \b
    Examples:
      reparam-export figures
      reparam-export figures --section demo
    """
    import tempfile

    from exporter.measure.studies.figures import SECTIONS, regenerate

    if not readme.is_file():
        raise UserError(f"README not found: {readme}; run from the repository root or pass --readme")
    with tempfile.TemporaryDirectory() as work:
        new = regenerate(list(sections) or list(SECTIONS), figures, readme, Path(work), say, allow_noisy)
    for name, body in new.items():
        out_console().print(f"{name}\n{body}", markup=False, highlight=False)
    say(f"wrote {figures} and the figure blocks of {readme}")
