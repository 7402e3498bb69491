"""Commands that measure a built run: eval, bench, report, check."""

from __future__ import annotations

import os
from pathlib import Path

import click

from exporter.base import host
from exporter.base.errors import CheckFailed, UserError, render, setting
from exporter.cli import options
from exporter.cli.app import cli, console, flags, out_console, say, say_load

ARTIFACTS = click.option(
    "--artifacts", "run", required=True, type=click.Path(path_type=Path), help="Run directory."
)


def print_evaluation(report: dict) -> None:
    """An evaluation's table, its category matching and each INT8 artifact's goal."""
    from exporter.base.data.coco_map import BY_NAME
    from exporter.measure.report import tables
    from exporter.pipeline.evaluate import INT8_GOAL_POINTS

    if report["category_matching"] != BY_NAME:
        say(f"warning: {report['data']}: categories matched {report['category_matching']}")
    out_console().print(tables.evaluation(report))
    for key, goal in report["int8_goal"].items():
        verdict = "met" if goal["met"] else f"NOT met; rebuild with {setting('int8.accuracy_budget', 0.5)}"
        line = f"INT8 goal (within {INT8_GOAL_POINTS:g} mAP points of FP32): {key} "
        say(render(f"{line}{-goal['drop_points']:+.2f}, {verdict}", flags()))


@cli.command("eval")
@ARTIFACTS
@options.option(
    "--data",
    field="evaluation.data",
    help="COCO instances json or dataset folder, or 'demo' (default: the recipe's).",
)
@options.option(
    "--limit", field="evaluation.limit", type=click.IntRange(min=1), help="Only the first N images."
)
@click.option(
    "--rescore",
    is_flag=True,
    help="Score every model again, even those scored before with the same files and settings.",
)
@options.SHARDS
def eval_command(run, data, limit, rescore, shards):
    """COCO mAP of the fused torch model and every built artifact of a run (written to RUN/eval.json).

    \b
    Examples:
      reparam-export eval --artifacts runs/demo --data demo
      reparam-export eval --artifacts runs/demo --data demo --shards 2 --rescore
      reparam-export eval --artifacts runs/damoyolo_s --data /data/coco   # annotations/ + val2017/
    """
    from exporter.pipeline.evaluate import evaluate_run

    report = evaluate_run(run, data, limit, rescore=rescore, shards=shards)
    if report["reused"]:
        say(
            f"eval: scores reused for {', '.join(report['reused'])}: the same files, data (images by "
            "content), scoring settings and libraries were scored before (eval --rescore scores again)"
        )
    print_evaluation(report)


@cli.command()
@ARTIFACTS
@options.timing(
    0, 2.0, "CPU threads per backend (0: backend default).", "Timed seconds per artifact, at least."
)
@click.option(
    "--min-iters",
    default=50,
    type=click.IntRange(min=1),
    show_default=True,
    help="Timed calls per artifact, at least.",
)
@click.option(
    "--throughput",
    "workers",
    default=0,
    type=click.IntRange(min=0),
    help="Also measure throughput: onnxruntime with this many parallel single-thread sessions, "
    "OpenVINO with its THROUGHPUT streams and optimal number of async requests.",
)
def bench(run, threads, min_seconds, min_iters, workers):
    """Latency of every artifact of a run: batch 1, synchronous, after warm-up (p50/p90/p99/mean/std).

    Results go to RUN/bench.json with the thread count and CPU model.

    \b
    Examples:
      reparam-export bench --artifacts runs/embedded-demo
      reparam-export bench --artifacts runs/demo --threads 1 --throughput 2
    """
    from exporter.measure.report import tables
    from exporter.pipeline.bench import bench_run

    with console.status("timing artifacts…"):
        report = bench_run(run, threads, min_iters, min_seconds, workers)
    out_console().print(tables.bench(run, report, bool(workers)))
    say_load("bench", None if report["load"] is None else host.Load(**report["load"]))


@cli.command()
@ARTIFACTS
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
    from exporter.measure.report.render import write_report

    for kind, path in write_report(run, out).items():
        say(f"{kind:<8} {path}")


@cli.command()
@ARTIFACTS
@options.repository_file("--baseline", "reports/baseline.json", "Baseline metrics (JSON).")
@options.repository_file("--tolerances", "reports/tolerances.yaml", "Per-metric one-sided tolerances (YAML).")
@click.option("--update-baseline", is_flag=True, help="Accept the run's metrics as the new baseline.")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the findings as JUnit XML (a test case per metric and artifact).",
)
@click.option(
    "--allow-untoleranced", is_flag=True, help="Skip (and name) baseline metrics no tolerance names."
)
@click.option("--allow-new-artifacts", is_flag=True, help="Skip (and name) artifacts the baseline lacks.")
@click.option(
    "--allow-missing-artifacts", is_flag=True, help="Skip (and name) baseline artifacts the run lacks."
)
def check(run, baseline, tolerances, update_baseline, junit, **allowed):
    """Compare a run (or each model of a matrix's folder) with the baseline; exit 1 with a table of what
    failed and why.

    A regressed metric, a value the run did not measure, a baseline metric without a tolerance and an
    artifact on one side only all fail, each with its cause (the last two unless allowed). With
    $GITHUB_STEP_SUMMARY set (GitHub Actions), a Markdown summary is appended there.

    \b
    Examples:
      reparam-export check --artifacts runs/demo
      reparam-export check --artifacts runs/demo --junit check.xml
      reparam-export check --artifacts runs/demo --update-baseline
      reparam-export check --artifacts runs/matrix --baseline matrix-baseline.json   # every model
    """
    from exporter.measure import check as checking
    from exporter.measure import ci
    from exporter.measure.report import tables
    from exporter.measure.report.metrics import collect

    limits = checking.load_tolerances(tolerances)
    allow = checking.Allow(
        allowed["allow_untoleranced"], allowed["allow_new_artifacts"], allowed["allow_missing_artifacts"]
    )
    if checking.is_matrix(run):  # each model against its entry in the matrix's baseline
        findings, last = checking.check_matrix(run, baseline, limits, allow, update_baseline)
        if update_baseline:
            say(last)
            return
    else:
        measured = collect(run)  # the artifacts verified and read once
        if update_baseline:
            metrics = checking.update_baseline(run, baseline, limits, measured)
            say(f"baseline updated: {baseline} ({sum(len(v) for v in metrics.values())} values)")
            return
        expected = checking.load_baseline(baseline, run, measured)
        findings = checking.compare(expected, measured, limits, allow)
        last = checking.summary_line(findings, checking.conditions(run, measured))
    if not findings:
        raise UserError(f"{baseline} shares no artifact/metric with {run}; nothing was checked")
    title = f"{run} vs {baseline}"
    out_console().print(tables.check(title, findings))
    if junit is not None:
        ci.write_junit(junit, findings, f"reparam-export check {run}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        ci.append_step_summary(Path(summary), ci.step_summary(findings, title, last))
    if any(f.failed for f in findings):
        raise CheckFailed(checking.verdict(findings))
    say(last)
