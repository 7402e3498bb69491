"""`reparam-export figures`: the tables README quotes for the demo, the CPU benchmark, the INT8 search and
DAMO-YOLO's sizes, measured by one command.

Each section is a Markdown block written to reports/figures.md between `<!-- figures:NAME -->` and
`<!-- /figures:NAME -->`; README carries the same blocks between the same markers, and the command
rewrites them there too, so README's figures are always those of the last run of this command
(tests/test_figures.py checks README against the file, and the demo block against a fresh build).
Latency is given as ratios measured side by side (median of alternating rounds, with their range),
never as absolute times of one host.

Each block opens with what it was measured under: a comment README renders invisibly (`<!-- measured:
{json} -->`: date, source digest, CPU, instruction sets, cores, the load other processes put on the
machine) and the same in one line. A section measured while others loaded the machine past
host.Load.NOISY is refused (printed, not written) unless the caller allows it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.base import host
from exporter.base.artifacts import atomic_output, source_digest
from exporter.base.errors import CheckFailed, UserError

BLOCK = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /figures:(?P=name) -->", re.S)
MEASURED = re.compile(r"<!-- measured: (?P<json>\{.*?\}) -->")
ROUNDS = 3  # alternating benchmark rounds behind every latency ratio


def blocks(text: str) -> dict[str, str]:
    """The figure blocks of a text: name -> body."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def replace_blocks(text: str, new: dict[str, str]) -> str:
    """`text` with each of its blocks named in `new` replaced by that body."""
    return BLOCK.sub(
        lambda m: (
            f"<!-- figures:{m['name']} -->\n{new.get(m['name'], m['body'])}<!-- /figures:{m['name']} -->"
        ),
        text,
    )


def conditions(load: host.Load | None) -> dict[str, Any]:
    """What a block was measured under: date, source digest, host and the load of other processes."""
    return {
        "date": datetime.date.today().isoformat(),
        "source": source_digest(),
        "cpu": host.cpu_name(),
        "host_class": host.host_class(),
        "isa": host.isa(),
        "cores": os.cpu_count(),
        "load": None if load is None else load.as_dict(),
    }


def measured_header(measured: dict[str, Any]) -> str:
    load = measured["load"]
    others = "not measurable here" if load is None else host.Load(**load).describe()
    return (
        f"<!-- measured: {json.dumps(measured)} -->\n"
        f"Measured {measured['date']} on {measured['cpu']} ({measured['host_class']}, {measured['cores']} "
        f"cores), {others}; source {measured['source'][:12]}.\n\n"
    )


def measured_under(body: str) -> dict[str, Any] | None:
    """The conditions a block records (None for a block that records none)."""
    match = MEASURED.search(body)
    return None if match is None else json.loads(match["json"])


def read_table(body: str) -> dict[str, dict[str, str]]:
    """The table of a block as {first cell: {column: cell}}."""
    lines = [line for line in body.splitlines() if line.startswith("|")]
    columns = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(columns, row, strict=True)) for row in cells}


def table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)]) + "\n"


def ratio(values: list[float]) -> str:
    """A ratio over rounds: median and range."""
    return ratio_cell(statistics.median(values), (min(values), max(values)))


def ratio_cell(median: float, spread: tuple[float, float]) -> str:
    return f"{median:.2f}x ({spread[0]:.2f}–{spread[1]:.2f})"


def demo(work: Path, say: Callable[[str], None]) -> str:
    """What `make demo` prints: mAP per artifact on the demo val split, and each artifact's speed
    against the ONNX model (batch 1, 2 threads) and its size."""
    from exporter.measure.report.metrics import collect
    from exporter.pipeline.bench import bench_run
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.evaluate import evaluate_run
    from exporter.pipeline.recipe import load_recipe

    pipeline = Pipeline(load_recipe(None), work / "demo")
    say("demo: building (as `make demo`)")
    start = time.perf_counter()
    pipeline.build()
    evaluation = evaluate_run(pipeline.run.root, progress=False)
    seconds = time.perf_counter() - start
    run = pipeline.run.root
    say(f"demo: timing {ROUNDS} rounds")
    rounds = [bench_run(run, threads=2, min_seconds=2.0)["results"] for _ in range(ROUNDS)]
    sizes = {row["artifact"]: row["bytes"] for row in collect(run)["rows"]}
    rows = []
    for key, result in evaluation["results"].items():
        speed = [r["onnx.fp32"]["p50_ms"] / r[key]["p50_ms"] for r in rounds] if key in rounds[0] else []
        rows.append(
            [
                key,
                f"{100 * result['map']:.2f}",
                f"{100 * result['map50']:.2f}",
                ratio(speed) if speed else "",
                f"{sizes[key] / 1e6:.2f}" if sizes.get(key) else "",
            ]
        )
    columns = ["artifact", "mAP", "mAP50", "speed vs onnx.fp32 (p50)", "size MB"]
    return (
        f"The build and its evaluation took {seconds:.0f} s. COCO mAP on the {evaluation['images']} demo "
        f"val images; speed: batch 1, 2 threads, median of {ROUNDS} rounds (range).\n\n"
        + table(columns, rows)
    )


def int8_search(work: Path, say: Callable[[str], None]) -> str:
    """The INT8 accuracy search on the demo at budgets 0.5 and 0.1, for OpenVINO and the TensorRT Q/DQ
    model (scored by onnxruntime here)."""
    from exporter.pipeline.builder import Pipeline
    from exporter.pipeline.recipe import load_recipe
    from exporter.pipeline.targets.table import TARGETS

    rows = []
    for backend in ("openvino", "tensorrt"):
        for budget in (0.5, 0.1):
            say(f"int8-search: {backend}, budget {budget}")
            overrides = {"targets": [backend], "precisions": ["int8"], "int8.accuracy_budget": budget}
            pipeline = Pipeline(load_recipe(None, overrides), work / f"int8-{backend}-{budget}")
            pipeline.check()
            target = TARGETS[backend]
            record = pipeline.int8_search(target).record
            latency = record.latency_ms
            speed = (
                " / ".join(f"{latency['fp32'] / latency[k]:.2f}x" for k in ("int8_full", "int8_partial"))
                if latency
                else "not measured (no TensorRT)"
            )
            floats = f"{len(record.float_layers)} of {record.candidates}" if record.ranked else "0"
            rows.append(
                [
                    f"{'OpenVINO' if backend == 'openvino' else 'TensorRT Q/DQ (onnxruntime)'}, {budget:g}",
                    f"{100 * record.fp32_map:.2f}",
                    f"{100 * record.full_int8_map:.2f}",
                    f"{100 * record.partial_int8_map:.2f}",
                    floats,
                    speed,
                ]
            )
    columns = [
        "backend, budget",
        "FP32 mAP",
        "full INT8",
        "partial INT8",
        "float layers",
        "speed full / partial vs FP32",
    ]
    return (
        f"Demo, {record.evaluation['images']} val images; speed: p50, batch 1, median of 3 alternating "
        "rounds.\n\n" + table(columns, rows)
    )


def bench_cpu(work: Path, say: Callable[[str], None]) -> str:
    """PyTorch eager vs onnxruntime vs OpenVINO (unfused, fused FP32/FP16/INT8), as `bench-cpu` with
    `--min-seconds 6`: speed against PyTorch eager."""
    from exporter.measure.studies.cpu import bench_recipe
    from exporter.pipeline.recipe import REPO_RECIPES, load_recipe

    rows, notes = [], []
    for path in (None, REPO_RECIPES / "damoyolo_ns.yaml"):
        recipe = load_recipe(path)
        say(f"bench-cpu: {recipe.name}")
        measured, _, fusion = bench_recipe(recipe, 2, 6.0, 64, 100)
        name = f"{recipe.name} {recipe.input_size[0]}"
        rows.append([name, *(ratio_cell(row.ratio_vs_torch, row.ratio_range) for row in measured)])
        notes.append(f"- {name}: {fusion.describe()}.")
    columns = ["model", *(row.name for row in measured)]
    return (
        "Speed against PyTorch eager: batch 1, 2 threads, median of 3 alternating rounds (range).\n\n"
        + table(columns, rows)
        + "\n"
        + "\n".join(notes)
        + "\n"
    )


def damoyolo_sizes(work: Path, say: Callable[[str], None]) -> str:
    """Parameters and GFLOPs of the seven DAMO-YOLO variants against the published ones: fully fused
    (every BatchNorm folded; GFLOPs = 2 x conv MACs) and in the official convention (RepConvs
    re-parameterized, other BatchNorms kept, thop's op count)."""
    from exporter.base.numerics.complexity import profile
    from exporter.models.damoyolo import official_deploy_form
    from exporter.models.damoyolo.published import DAMO_YOLO, SIZES
    from exporter.pipeline.recipe import REPO_RECIPES, load_recipe
    from exporter.pipeline.stages.fuse import FuseSettings, fuse

    rows, official_gap, fused_gap = [], [], []
    for variant, (params, gflops) in SIZES.items():
        say(f"damoyolo-sizes: {variant}")
        settings = FuseSettings.from_recipe(load_recipe(REPO_RECIPES / f"damoyolo_{variant}.yaml"))
        probe = settings.probe(batch=1)
        official = profile(official_deploy_form(settings.source.build()), probe)
        fused = profile(fuse(settings)[0], probe)
        official_gap.append((abs(official.params / 1e6 / params - 1), abs(official.gflops_thop / gflops - 1)))
        if variant in ("t", "s", "m", "l"):  # the nano models have no RepConv: fully fused is smaller
            fused_gap += [abs(fused.params / 1e6 / params - 1), abs(fused.gflops / gflops - 1)]
        rows.append(
            [
                variant.upper() if len(variant) == 1 else variant.capitalize(),
                str(DAMO_YOLO[variant][0]),
                f"{params:.2f}",
                f"{fused.params / 1e6:.3f}",
                f"{official.params / 1e6:.3f}",
                f"{gflops:.2f}",
                f"{fused.gflops:.2f}",
                f"{official.gflops_thop:.2f}",
            ]
        )
    columns = [
        "model", "input", "params (M) published", "fully fused", "official convention",
        "GFLOPs published", "2 x MACs fused", "official convention",
    ]  # fmt: skip
    params_gap, gflops_gap = (max(gaps) for gaps in zip(*official_gap, strict=True))
    return table(columns, rows) + (
        f"\nIn the official convention ours agree with the published sizes within {params_gap:.2%} "
        f"(parameters) and {gflops_gap:.2%} (GFLOPs); fully fused, T/S/M/L within {max(fused_gap):.2%}.\n"
    )


SECTIONS: dict[str, Callable[[Path, Callable[[str], None]], str]] = {
    "demo": demo,
    "int8-search": int8_search,
    "bench-cpu": bench_cpu,
    "damoyolo-sizes": damoyolo_sizes,
}


def regenerate(
    names: list[str],
    figures: Path,
    readme: Path,
    work: Path,
    say: Callable[[str], None],
    allow_noisy: bool = False,
) -> dict[str, str]:
    """Measure the named sections; each is written into `figures` (other sections kept) and into README
    as soon as it is measured, so a failure later loses nothing measured before it. A section measured
    while other processes loaded the machine past host.Load.NOISY is not written (CheckFailed) unless
    `allow_noisy`; a machine already that busy is refused before anything is measured."""
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise UserError(f"no figure section '{unknown[0]}' (sections: {', '.join(SECTIONS)})")
    before = host.idle_load()
    if before is not None and before.noisy and not allow_noisy:
        raise CheckFailed(f"the machine is busy before measuring ({before.describe()}): {NOISY_ADVICE}")
    new = {}
    for name in names:
        with host.LoadMeter() as meter:
            body = SECTIONS[name](work, say)
        new[name] = measured_header(conditions(meter.load)) + body
        if meter.load is not None and meter.load.noisy:
            warning = f"{name} was measured while the machine was busy ({meter.load.describe()})"
            if not allow_noisy:
                say(f"{name} (not written):\n{new[name]}")
                raise CheckFailed(f"{warning}: its figures were printed, not written; {NOISY_ADVICE}")
            say(f"WARNING: {warning}; written as asked, with the load recorded")
        merged = {**(blocks(figures.read_text()) if figures.is_file() else {}), name: new[name]}
        text = "".join(
            f"<!-- figures:{n} -->\n{merged[n]}<!-- /figures:{n} -->\n\n" for n in SECTIONS if n in merged
        )
        with atomic_output(figures) as tmp:
            tmp.write_text(text)
        with atomic_output(readme) as tmp:
            tmp.write_text(replace_blocks(readme.read_text(), merged))
    return new


NOISY_ADVICE = (
    f"measure on a quiet machine (other processes under {host.Load.NOISY} cores), or pass --allow-noisy "
    "to write them with the load recorded"
)
