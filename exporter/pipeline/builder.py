"""The build pipeline: checks a recipe before any work, plans its targets' stage graph (fuse → per
target export → simplify → the target's artifacts: exporter.pipeline.targets.plan, then the
evaluation where the recipe names evaluation data) and runs it with the stages' runner, each stage
cached in the run directory.

Each stage's settings are built from the recipe (`Settings.from_recipe`) and its upstream records; with
the hashes of the files it reads they are its cache key, so a stage reruns exactly when what it reads
changes.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from exporter.base.errors import UserError, setting
from exporter.base.rundir import RunDir
from exporter.base.workers import LazyPool
from exporter.models.families import family
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages.graph import Result
from exporter.pipeline.stages.runner import Runner
from exporter.pipeline.targets.plan import Plan
from exporter.pipeline.targets.table import TARGETS
from exporter.pipeline.targets.target import Target


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
    from exporter.base.libraries import check_library

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
        shards: int = 1,
        trial_workers: int = 1,
        trials_on_ray: bool = False,
    ):
        self.recipe = recipe
        self.shards = shards  # local processes the evaluation splits its images over
        self.run = RunDir(run_dir or Path("runs") / recipe.name, force)
        self.console = console or Console(stderr=True, quiet=True)
        self.plan = Plan(recipe, self.run.root, trial_workers, trials_on_ray)
        self.runner = Runner(self.run, force, self.console, self.say)
        self._warned = 0  # the plan's warnings printed so far
        self._recorded: dict[str, list[str]] = {}  # manifest field -> the warnings of this build

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def note(self, **fields: Any) -> None:
        self.run.note(**fields)

    @property
    def results(self) -> list[Result]:
        """The stages run or found cached, in order."""
        return list(self.runner.results.values())

    def result(self, node) -> Result:
        """`node` run or found cached, after the plan's new warnings are printed and recorded."""
        self.warnings()
        return self.runner.result(node)

    def warnings(self) -> None:
        new = self.plan.warnings[self._warned :]
        self._warned = len(self.plan.warnings)
        for field, warning in new:
            self.say(f"warning: {warning}")
            self._recorded.setdefault(field, []).append(warning)
        if new:
            self.note(**self._recorded)

    def check(self) -> None:
        """Everything the recipe's stages would refuse that can be known before the first one runs."""
        check_targets(self.recipe)
        plan = self.plan
        plan.fuse_settings  # noqa: B018 - builder importable, checkpoint present
        for target in targets_of(self.recipe):
            plan.akconv(target)
            target.check(self.recipe)
        notes = family(self.recipe.model.adapter).notes(self.recipe.model.ref())
        for line in notes:
            self.say(f"note: {line}")
        if notes:
            self.note(checkpoint_notes=notes)
        names = self.recipe.class_names
        if len(names) > 1 and names == [str(i) for i in range(len(names))]:
            plan.warn(
                "class_names_warnings",
                f"the class names are their numbers ('0'…'{len(names) - 1}'): the checkpoint holds none; "
                "set class_names in a recipe (--recipe) so that exports, reports and evaluation name them",
            )
        if calibrates(self.recipe):
            plan.calibration_set  # noqa: B018 - the source exists and holds enough readable images
        if self.recipe.evaluation.data is not None:
            plan.evaluation  # noqa: B018 - the evaluation data exists and the model has an adapter
        self.warnings()

    # single stages, as the CLI's commands run them

    def fuse(self) -> Result:
        return self.result(self.plan.fuse)

    def simplify(self, target: Target) -> Result:
        node = self.plan.simplified(target)
        self.say_skipped()
        return self.result(node)

    def say_skipped(self) -> None:
        if self.plan.notes.get("simplify"):
            self.say("simplify  skipped: export.simplify is false in the recipe")

    def sensitivity(self) -> Result:
        return self.result(self.plan.sensitivity)

    def int8_search(self, target: Target) -> Result:
        return self.result(self.plan.search(target))

    def build(self) -> dict[str, Result]:
        """Every stage the recipe's targets need, then the evaluation where the recipe names evaluation
        data; returns the final artifact per target/precision.

        The run keeps the artifacts of other targets built into it earlier from the same fused model
        (a second `build --target` adds to a run); a new fused model leaves them out."""
        self.check()
        with self.run.held():  # from the first stage to the last: no other process writes it meanwhile
            return self._build()

    def _build(self) -> dict[str, Result]:
        previous = self.run.manifest().get("artifacts", {})
        planned = {}
        for target in targets_of(self.recipe):
            planned.update(target.nodes(self.plan))
        self.say_skipped()
        artifacts = {key: self.result(node) for key, node in planned.items()}
        for node in self.plan.extras:
            self.result(node)
        built = {key: str(result.output.relative_to(self.run.root)) for key, result in artifacts.items()}
        kept = {
            key: path
            for key, path in previous.items()
            if key.partition(".")[0] not in self.recipe.targets and (self.run.root / path).is_file()
        }
        deferred = {  # other targets' bundles written into this run earlier, where they still are
            target: entry
            for target, entry in self.run.manifest().get("deferred", {}).items()
            if target not in self.recipe.targets and Path(entry["bundle"]).is_file()
        }
        self.note(
            **self.plan.notes,
            deferred={**(deferred if self.fuse().cached else {}), **self.plan.deferred},
            built=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            recipe=self.recipe.model_dump(mode="json"),
            recipe_hash=self.recipe.digest(),
            artifacts={**(kept if self.fuse().cached else {}), **built},
        )
        if self.recipe.evaluation.data is not None:
            self.evaluate()
        return artifacts

    def evaluate(self) -> Result:
        """The run's evaluation stage (exporter.pipeline.evaluate) on the recipe's evaluation data: every
        artifact of the run, the fused model and the CPU stand-ins, each scored once (a stage of its own),
        written to eval.json."""
        from exporter.pipeline.evaluate import evaluation

        with LazyPool(self.shards) as pool:
            return self.result(evaluation(self.run.root, progress=not self.console.quiet, pool=pool))
