"""The build pipeline: fuse → per target export → simplify → the target's artifacts, each stage cached in
the run directory.

Each stage is a function of a frozen settings object built from the recipe (`Settings.from_recipe`) and
of the artifacts it reads; those settings are its cache key, so a stage reruns exactly when what it
reads changes. Targets (exporter.targets) say which stages they need; the pipeline runs them. The onnx
target's files sit at the run directory's root; every other target has its own folder, because the
AKConv lowering it runs best may differ.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from exporter.core.artifacts import sha256_file
from exporter.core.errors import UserError, setting
from exporter.core.rundir import RunDir, StageResult
from exporter.data import calibration
from exporter.lowering.capability import Choice
from exporter.models.families import family
from exporter.models.heads import Head
from exporter.recipe import Recipe
from exporter.stages import export_onnx, fuse, partial_int8, sensitivity, simplify
from exporter.stages.scoring import EvaluationSettings
from exporter.targets import TARGETS, Target


def targets_of(recipe: Recipe) -> list[Target]:
    """The recipe's targets; an unknown name is bad input."""
    unknown = [name for name in recipe.targets if name not in TARGETS]
    if unknown:
        raise UserError(
            f"target '{unknown[0]}' is not available in this version (available: {', '.join(TARGETS)}); "
            f"pass {setting('targets', 'onnx')} or {setting('targets', 'openvino')}"
        )
    return [TARGETS[name] for name in recipe.targets]


def calibrates(recipe: Recipe) -> bool:
    """Whether a build of this recipe needs calibration images (an INT8 of a target that calibrates)."""
    return any(set(t.calibrated) & set(recipe.precisions) for t in targets_of(recipe))


CALIBRATION_FIELDS = {"calibration.source", "calibration.count"}
SEARCH_FIELDS = {"int8.sensitivity_images"}
EVALUATION_FIELDS = {"evaluation.limit"}


def unread_fields(recipe: Recipe, fields) -> list[str]:
    """Of `fields`, those that only some builds read and this build does not (e.g. tensorrt.version
    for an onnx build): setting them has no effect."""
    optional = {o for t in TARGETS.values() for o in t.options}
    optional |= CALIBRATION_FIELDS | SEARCH_FIELDS | EVALUATION_FIELDS
    read = {o for t in targets_of(recipe) for o in t.options}
    if calibrates(recipe):
        read |= CALIBRATION_FIELDS | (SEARCH_FIELDS if recipe.int8.accuracy_budget is not None else set())
    if recipe.evaluation.data is not None:
        read |= EVALUATION_FIELDS
    return [f for f in fields if f in optional and f not in read]


def check_targets(recipe: Recipe) -> None:
    """Refuse, before any work, targets and precisions this version cannot build here."""
    from exporter.core.libraries import check_library

    targets = targets_of(recipe)
    for target in targets:
        for library in target.libraries:
            if set(library.precisions) & set(recipe.precisions):
                status = check_library(library.dist, library.module, "", library.hint)
                if not status.usable:
                    raise UserError(f"target {target.name} needs {library.dist}: {status.note}")
    if recipe.int8.accuracy_budget is not None:
        if "int8" not in recipe.precisions:
            raise UserError(
                f"{setting('int8.accuracy_budget')} applies to INT8 builds; "
                f"add {setting('precisions', 'int8')}"
            )
        if recipe.evaluation.data is None:
            raise UserError(
                f"{setting('int8.accuracy_budget')} needs evaluation data: set evaluation.data in the recipe "
                "(a COCO json, a COCO folder or 'demo')"
            )
    for precision in recipe.precisions:
        if not any(precision in t.precisions for t in targets):
            buildable = sorted({p for t in targets for p in t.precisions} & set(recipe.precisions))
            offered = "; ".join(f"{t.name}: {', '.join(t.precisions)}" for t in TARGETS.values())
            raise UserError(
                f"precision '{precision}' is not available for target(s) {', '.join(recipe.targets)} "
                f"({offered}); pass " + " ".join(setting("precisions", p) for p in buildable or ["fp32"])
            )


class Pipeline:
    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path | None = None,
        force: bool = False,
        console: Console | None = None,
    ):
        self.recipe = recipe
        self.run = RunDir(run_dir or Path("runs") / recipe.name, force)
        self.force = force
        self.console = console or Console(stderr=True, quiet=True)
        self.results: list[StageResult] = []
        self.lowerings: dict[str, Choice] = {}  # target -> its AKConv lowering

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def note(self, **fields: Any) -> None:
        self.run.note(**fields)

    def stage(
        self,
        name: str,
        output: str,
        inputs: dict[str, Path],
        settings: object,
        func: Callable[[Path], dict[str, Any]],
        describe: Callable[[dict[str, Any]], str],
        companions: tuple[str, ...] = (),
        versions: dict[str, str] | None = None,
    ) -> StageResult:
        """Run `func(tmp_output)` unless the stage is cached under its inputs and settings; print its line."""
        done = next((r for r in self.results if r.name == name), None)
        if done is not None:  # already run (or found cached) by this pipeline
            return done
        with self.console.status(f"[bold]{name}[/bold] running…"):
            result = self.run.run_stage(
                name, output, inputs, settings, func, self.force, companions, versions
            )
        self.results.append(result)
        state = "cached" if result.cached else f"{result.record['wall_s']:.1f} s"
        self.say(f"{name:<16} {describe(result.record)}  [{state}] → {result.output}")
        return result

    # settings resolved once per pipeline (decisions made before any stage runs; see check)

    @functools.cached_property
    def fuse_settings(self) -> fuse.FuseSettings:
        return fuse.FuseSettings.from_recipe(self.recipe)

    def akconv(self, target: Target) -> Choice:
        if target.name not in self.lowerings:
            self.lowerings[target.name] = target.akconv(self.recipe)
        return self.lowerings[target.name]

    @functools.cached_property
    def calibration_set(self) -> calibration.CalibrationSet:
        """The seeded calibration images (warnings printed and recorded once)."""
        spec = self.recipe.calibration
        chosen, warnings = calibration.select(
            spec.source,
            spec.count,
            spec.seed,
            self.recipe.input_size,
            self.recipe.preprocess,
            spec.allow_fewer,
        )
        for warning in warnings:
            self.say(f"warning: {warning}")
        if warnings:
            self.note(calibration_warnings=warnings)
        return chosen

    @functools.cached_property
    def head(self) -> Head | None:
        """The output contract of the model's adapter (None without one)."""
        adapter = self.recipe.model.adapter
        return None if adapter is None else family(adapter).head(self.recipe.model.ref())

    @functools.cached_property
    def evaluation(self) -> EvaluationSettings:
        return EvaluationSettings.from_recipe(self.recipe)

    def check(self) -> None:
        """Everything the recipe's stages would refuse that can be known before the first one runs."""
        check_targets(self.recipe)
        self.fuse_settings  # noqa: B018 - builder importable, checkpoint present
        for target in targets_of(self.recipe):
            self.akconv(target)
            target.check(self.recipe)
        notes = family(self.recipe.model.adapter).notes(self.recipe.model.ref())
        for line in notes:
            self.say(f"note: {line}")
        if notes:
            self.note(checkpoint_notes=notes)
        names = self.recipe.class_names
        if len(names) > 1 and names == [str(i) for i in range(len(names))]:
            warning = (
                f"the class names are their numbers ('0'…'{len(names) - 1}'): the checkpoint holds none; "
                "set class_names in a recipe (--recipe) so that exports, reports and evaluation name them"
            )
            self.say(f"warning: {warning}")
            self.note(class_names_warning=warning)
        if calibrates(self.recipe):
            self.calibration_set  # noqa: B018 - the source exists and holds enough readable images
        if self.recipe.evaluation.data is not None:
            self.evaluation  # noqa: B018 - the evaluation data exists and the model has an adapter

    # stages every target shares

    def accept_outputs(self, shapes: list[list[int]]) -> None:
        """Refuse a recipe that does not fit the model's outputs (before fused.pt is written): the
        export's output names, one per output; the class names, one per class the head scores."""
        export_onnx.output_names(self.recipe.export.output_names, len(shapes))
        names = self.recipe.class_names
        if names and self.head is not None:
            classes = self.head.classes(shapes)
            if classes is not None and classes != len(names):
                raise UserError(
                    f"class_names lists {len(names)} names but the model scores {classes} classes; "
                    "give one name per class in the recipe's class_names"
                )

    def fuse(self) -> StageResult:
        settings = self.fuse_settings
        result = self.stage(
            "fuse",
            "fused.pt",
            {},
            settings,
            lambda out: fuse.run(settings, out, self.accept_outputs),
            fuse.describe,
        )
        if result.cached:
            self.accept_outputs(result.record["outputs"])
        return result

    def export(self, target: Target) -> StageResult:
        fused = self.fuse().output
        settings = export_onnx.ExportSettings.from_recipe(self.recipe, self.akconv(target))
        return self.stage(
            target.stage("export"),
            f"{target.folder}model.onnx",
            {"fused": fused},
            settings,
            lambda out: export_onnx.run(settings, fused, out),
            export_onnx.describe,
        )

    def simplify(self, target: Target) -> StageResult:
        exported = self.export(target)
        if not self.recipe.export.simplify:
            self.say("simplify  skipped: export.simplify is false in the recipe")
            self.note(simplify="skipped: export.simplify is false")
            return exported
        fused = self.fuse().output
        settings = simplify.SimplifySettings.from_recipe(self.recipe)
        return self.stage(
            target.stage("simplify"),
            f"{target.folder}model.sim.onnx",
            {"onnx": exported.output, "fused": fused},
            settings,
            lambda out: simplify.run(settings, exported.output, fused, out),
            simplify.describe,
        )

    def calibration_folder(self, model: Path) -> Path:
        """<calibration folder>/<model+preprocessing key>/: the record of the images and the Q/DQ range
        cache (the folder: calibration.folder, else the run directory's calibration/)."""
        folder = self.recipe.calibration.folder or self.run.root / "calibration"
        return folder / self.calibration_set.key(sha256_file(model))

    def calibration(self, model: Path) -> calibration.CalibrationSet:
        """The calibration images for `model`, recorded (paths + sha256) beside its other caches."""
        chosen = self.calibration_set
        chosen.record(self.calibration_folder(model).parent, sha256_file(model))
        return chosen

    def sensitivity(self) -> StageResult:
        """Every convolution of the fused model ranked by the error it causes alone in INT8."""
        fused = self.fuse().output
        settings = sensitivity.SensitivitySettings.from_recipe(self.recipe, self.calibration_set)
        wanted = self.recipe.int8.sensitivity_images
        if len(settings.calibration.images) < wanted:
            warning = (
                f"sensitivity scores {len(settings.calibration.images)} images, the whole calibration set, "
                f"not {wanted}"
            )
            self.say(f"warning: {warning}")
            self.note(sensitivity_warning=warning)
        return self.stage(
            "sensitivity",
            "sensitivity.json",
            {"fused": fused},
            settings,
            lambda out: sensitivity.run(settings, fused, out),
            sensitivity.describe,
        )

    def int8_search(self, target: Target, model: Path) -> StageResult:
        """The fewest most-sensitive layers kept in float for INT8 to meet int8.accuracy_budget (the
        sensitivity stage runs inside it, when full INT8 misses the budget)."""
        fused = self.fuse().output
        chosen = self.calibration(model)
        settings = partial_int8.SearchSettings.from_recipe(
            self.recipe, chosen, self.evaluation, target.search_method(self.recipe)
        )
        inputs = {
            "onnx": model,
            "fused": fused,
            "evaluation": self.evaluation.annotations,
        }
        ranges = self.calibration_folder(model)

        def run(out: Path) -> dict[str, Any]:
            quantizer = target.quantizer(model, chosen, settings.method, ranges)
            return partial_int8.run(
                settings, quantizer, fused, lambda: self.sensitivity().output, out, self.say
            )

        return self.stage(
            target.stage("int8_search"),
            f"{target.folder}int8_search.json",
            inputs,
            settings,
            run,
            partial_int8.describe,
            versions=target.versions(),
        )

    def float_nodes(self, target: Target, model: Path) -> tuple[tuple[str, ...], dict[str, Path]]:
        """The nodes the INT8 accuracy search keeps in float (none without a budget), and the input the
        INT8 stage adds for it: the search's record, so that a new search rebuilds it."""
        if self.recipe.int8.accuracy_budget is None:
            return (), {}
        search = self.int8_search(target, model)
        return tuple(search.record["float_nodes"]), {"int8_search": search.output}

    def build(self) -> dict[str, StageResult]:
        """Every stage the recipe's targets need; returns the final artifact per target/precision.

        The run keeps the artifacts of other targets built into it earlier from the same fused model
        (a second `build --target` adds to a run); a new fused model leaves them out."""
        self.check()
        previous = self.run.manifest().get("artifacts", {})
        artifacts: dict[str, StageResult] = {}
        for target in targets_of(self.recipe):
            artifacts.update(target.build(self))
        built = {key: str(result.output.relative_to(self.run.root)) for key, result in artifacts.items()}
        kept = {
            key: path
            for key, path in previous.items()
            if key.partition(".")[0] not in self.recipe.targets and (self.run.root / path).is_file()
        }
        self.note(
            built=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            recipe=self.recipe.model_dump(mode="json"),
            recipe_hash=self.recipe.digest(),
            artifacts={**(kept if self.fuse().cached else {}), **built},
        )
        return artifacts
