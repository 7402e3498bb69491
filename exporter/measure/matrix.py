"""A build matrix: models × targets × precisions, each model's cells built by one stage graph (its fuse
and export run once for all of them) in a content-addressed run directory, models in parallel on local
processes or as the tasks of a Ray cluster; a model that fails is one line in the summary and the others
finish.

The summary (matrix.json, matrix.md, matrix.html) has one row per cell: its artifact, hash, size, check
and, where the recipe names evaluation data, its mAP; where it ran; and its model's report (each built
model's run gets the report `reparam-export report` writes).
"""

from __future__ import annotations

import html
import json
import os
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from exporter.base.artifacts import atomic_output, write_json
from exporter.base.errors import CheckFailed, UserError, summary
from exporter.base.workers import in_processes
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.targets.table import TARGETS


@dataclass(frozen=True)
class Cell:
    model: str  # the recipe's name
    target: str
    precision: str
    run: str  # the model's run directory
    status: str  # built, failed, not offered, not built here
    artifact: str | None = None  # relative to the run directory
    sha256: str | None = None
    bytes: int | None = None
    check: str | None = None  # ok, or the recorded error ratio of a measured precision
    map: float | None = None  # COCO mAP@[.5:.95] (0–1), where evaluated
    error: str | None = None  # the one-line error of a failed model
    host: str | None = None  # where it ran
    report: str | None = None  # its model's report (report.html), relative to the run directory
    p50_ms: float | None = None  # batch-1 latency, where the matrix was benchmarked


def run_directory(recipe: Recipe, root: Path) -> Path:
    """The model's run directory under `root`: its name and the recipe's digest (content-addressed)."""
    return root / f"{recipe.name}-{recipe.digest()[:12]}"


def cells_of(recipe: Recipe, run: Path, status: str, **fields: Any) -> list[Cell]:
    """Every cell of `recipe` with `status` (a target's precision it does not offer: 'not offered')."""
    return [
        Cell(
            recipe.name,
            target,
            precision,
            str(run),
            status if precision in TARGETS[target].precisions else "not offered",
            **fields,
        )
        for target in recipe.targets
        for precision in recipe.precisions
    ]


def build_model(
    recipe_json: dict[str, Any], run: str, shards: int = 1, trial_workers: int = 1, on_ray: bool = False
) -> list[dict[str, Any]]:
    """Build one model's cells in this process (and score them where its recipe names evaluation data, as
    `build` does, its images split over `shards` local processes; its INT8 search's trials `trial_workers`
    a round, each a local process or, `on_ray`, a Ray task); a refusal or a failed check is its cells'
    one-line error. Importable by name: the worker function of a matrix."""
    from exporter.base.rundir import read_manifest
    from exporter.measure.report.render import write_report
    from exporter.pipeline.builder import Pipeline

    recipe = Recipe.model_validate(recipe_json)
    where = f"{socket.gethostname()} (pid {os.getpid()})"
    offered = Recipe.model_validate(
        {
            **recipe_json,
            "precisions": [
                p for p in recipe.precisions if any(p in TARGETS[t].precisions for t in recipe.targets)
            ],
        }
    )
    try:
        pipeline = Pipeline(offered, run, shards=shards, trial_workers=trial_workers, trials_on_ray=on_ray)
        built = pipeline.build()  # and evaluated where it names data
        scored = Path(run) / "eval.json"
        results = json.loads(scored.read_text())["results"] if recipe.evaluation.data is not None else {}
        page = write_report(Path(run))["html"].relative_to(run).as_posix()  # the model's own report
    except (UserError, CheckFailed) as error:
        return [asdict(c) for c in cells_of(recipe, Path(run), "failed", error=str(error), host=where)]
    except Exception as error:  # noqa: BLE001 - one model's failure never stops the matrix
        return [asdict(c) for c in cells_of(recipe, Path(run), "failed", error=summary(error), host=where)]
    manifest = read_manifest(Path(run))
    cells = cells_of(recipe, Path(run), "built", host=where, report=page)
    return [asdict(cell_of(cell, built, manifest, results)) for cell in cells]


def cell_of(cell: Cell, built: dict, manifest: dict[str, Any], results: dict[str, Any]) -> Cell:
    """`cell` as its model's build left it: its artifact, hash, size, check and mAP; deferred to its
    target's bundle (a TensorRT engine); not offered."""
    key = f"{cell.target}.{cell.precision}"
    if cell.status == "not offered":
        return cell
    deferred = manifest.get("deferred", {}).get(cell.target)
    if key not in built and deferred:
        bundle = str(Path(deferred["bundle"]).relative_to(Path(cell.run).resolve()))
        return replace(cell, status="deferred", artifact=bundle, error=deferred["reason"])
    entry = manifest["stages"][built[key].name]
    return replace(
        cell,
        artifact=entry["output"]["path"],
        sha256=entry["output"]["sha256"],
        bytes=entry["output"]["bytes"],
        check=describe_check(entry.get("check")),
        map=results.get(key, {}).get("map"),
    )


def describe_check(check: dict[str, Any] | None) -> str | None:
    """'ok (err/tol 0.012)', 'measured (err/tol 31)', or None for a stage with no check."""
    if not check:
        return None
    ratio = check.get("ratio")
    verdict = "ok" if check.get("ok") else "measured"
    return f"{verdict} (err/tol {ratio:.2g})" if ratio is not None else verdict


LOCAL = "local"
RETRIES = 2  # a model whose worker died (killed, out of memory) is built again, resuming from its cache


def run_matrix(
    recipes: list[Recipe],
    root: Path,
    workers: int,
    cluster: str = LOCAL,
    shards: int = 1,
    bench: bool = False,
    trial_workers: int = 1,
) -> list[Cell]:
    """Every model's cells: on up to `workers` local processes (1: in this one, in order), or as tasks of
    a Ray cluster (`cluster`: 'ray' starts or joins one here, 'ray://HOST:PORT' a remote one), whose nodes
    must all read `root`; each model's evaluation split over `shards` processes where it runs, its INT8
    search's trials `trial_workers` a round (local processes, or Ray tasks on Ray). With
    `bench`, once every model is built, each built model's artifacts are timed on a worker of their own:
    in this process here, or a Ray task holding a whole node, one model after another."""
    calls = calls_of(recipes, root, shards, trial_workers, cluster != LOCAL)
    if cluster != LOCAL:
        found = on_ray(calls, recipes, cluster, bench)
    else:
        if workers == 1 or len(calls) == 1:
            found = [build_model(*call) for call in calls]
        else:
            found = in_processes(build_model, calls, workers)
        if bench:
            found = [timed_cells(cells) for cells in found]
    return [Cell(**cell) for cells in found for cell in cells]


def timed_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One model's cells with their batch-1 p50 latency (exporter.pipeline.bench), where it built; a model
    whose benchmark fails keeps its cells, its error on each."""
    from exporter.pipeline.bench import bench_run

    built = [c for c in cells if c["status"] == "built"]
    if not built:
        return cells
    try:
        timed = bench_run(Path(built[0]["run"]))["results"]
    except (UserError, CheckFailed) as error:
        return [{**c, "error": f"bench: {error}"} if c in built else c for c in cells]
    return [{**c, "p50_ms": timed.get(f"{c['target']}.{c['precision']}", {}).get("p50_ms")} for c in cells]


def calls_of(recipes: list[Recipe], root: Path, shards: int, trial_workers: int, on_ray: bool) -> list[tuple]:
    """`build_model`'s arguments for each recipe: the recipe as JSON, its run directory under `root`, the
    evaluation's shards, the INT8 search's trials a round and whether they are Ray tasks."""
    run = [str(run_directory(r, root.resolve())) for r in recipes]
    return [
        (r.model_dump(mode="json"), d, shards, trial_workers, on_ray)
        for r, d in zip(recipes, run, strict=True)
    ]


def on_ray(
    calls: list[tuple], recipes: list[Recipe], cluster: str, bench: bool
) -> list[list[dict[str, Any]]]:
    """`build_model` of every call as a Ray task (retried where its worker died). A model with TensorRT
    cells runs on a node that advertises the custom resource 'tensorrt' where the cluster has one (there
    its engines are built), anywhere otherwise (its TensorRT cells then deferred to bundles). With
    `bench`, each built model is then timed by a task holding all the CPUs of a node (of one with the
    'tensorrt' resource for a model built there), one model after another."""
    try:
        import ray
    except ImportError:
        raise UserError(
            f"--cluster {cluster} needs Ray: pip install 'reparam-export[cluster]', or pass --cluster local"
        ) from None
    started = not ray.is_initialized()
    if started:
        address = None if cluster == "ray" else cluster
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        engines = ray.cluster_resources().get("tensorrt", 0) > 0
        task = ray.remote(build_model)
        refs = [
            task.options(
                max_retries=RETRIES,
                resources={"tensorrt": 1} if engines and "tensorrt" in recipe.targets else None,
            ).remote(*call)
            for call, recipe in zip(calls, recipes, strict=True)
        ]
        found = ray.get(refs)
        if bench:
            found = [
                ray.get(
                    ray.remote(timed_cells)
                    .options(**whole_node(ray, engines and "tensorrt" in r.targets))
                    .remote(c)
                )
                for c, r in zip(found, recipes, strict=True)
            ]
        return found
    finally:
        if started:
            ray.shutdown()


def whole_node(ray, tensorrt: bool) -> dict[str, Any]:
    """Ray task options that hold every CPU of the largest node (with the 'tensorrt' resource, if asked):
    no other task runs beside it."""
    nodes = [
        n["Resources"] for n in ray.nodes() if n["Alive"] and (not tensorrt or "tensorrt" in n["Resources"])
    ]
    options: dict[str, Any] = {"num_cpus": max(n.get("CPU", 1) for n in nodes)}
    return {**options, "resources": {"tensorrt": 1}} if tensorrt else options


COLUMNS = (
    "model",
    "target",
    "precision",
    "status",
    "mAP",
    "p50 ms",
    "check",
    "size",
    "artifact",
    "ran on",
    "report",
)


def row(cell: Cell) -> list[str]:
    """A cell's summary row, in COLUMNS order (a failed cell shows its error where its artifact would be)."""
    return [
        cell.model,
        cell.target,
        cell.precision,
        cell.status,
        f"{100 * cell.map:.2f}" if cell.map is not None else "",
        f"{cell.p50_ms:.2f}" if cell.p50_ms is not None else "",
        cell.check or "",
        f"{cell.bytes / 1e6:.2f} MB" if cell.bytes else "",
        (cell.error if cell.status == "failed" else cell.artifact) or "",
        cell.host or "",
        f"{Path(cell.run).name}/{cell.report}" if cell.report else "",
    ]


def write_summary(cells: list[Cell], root: Path) -> tuple[Path, Path, Path]:
    """matrix.json, matrix.md and matrix.html under `root` (each written whole or not at all); the HTML
    links each built artifact and deferred bundle, relative to `root`."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "matrix.json", {"cells": [asdict(c) for c in cells]})
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(c)) + " |" for c in cells]
    with atomic_output(root / "matrix.md") as tmp:
        tmp.write_text("# Build matrix\n\n" + "\n".join(lines) + "\n")
    with atomic_output(root / "matrix.html") as tmp:
        tmp.write_text(html_table(cells, root))
    return root / "matrix.json", root / "matrix.md", root / "matrix.html"


def html_table(cells: list[Cell], root: Path) -> str:
    """The summary as one HTML page: every value escaped, artifacts and the models' reports linked by their
    path under `root`."""
    body = []
    for cell in cells:
        values = [html.escape(v) for v in row(cell)]
        run = Path(cell.run).resolve().relative_to(root.resolve())
        if cell.artifact and cell.status in ("built", "deferred"):
            at = COLUMNS.index("artifact")
            values[at] = (
                f'<a href="{html.escape((run / cell.artifact).as_posix(), quote=True)}">{values[at]}</a>'
            )
        if cell.report:
            values[COLUMNS.index("report")] = (
                f'<a href="{html.escape((run / cell.report).as_posix(), quote=True)}">report</a>'
            )
        body.append("<tr>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Build matrix</title></head><body>\n'
        f"<h1>Build matrix</h1>\n<table>\n<tr>{head}</tr>\n"
        + "\n".join(body)
        + "\n</table>\n</body></html>\n"
    )
