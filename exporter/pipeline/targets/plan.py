"""The nodes every target's nodes read: fuse, then per target export and simplify; the calibration
images and, with an INT8 accuracy budget, the sensitivity ranking and the INT8 search.

A Plan declares; it runs nothing but the checks known before any stage (the calibration source, the
evaluation data). Warnings and notes found while planning are collected for the runner to print and
record. The onnx target's files sit at the run directory's root; every other target has its own folder,
because the AKConv lowering it runs best may differ.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from exporter.base.artifacts import sha256_file
from exporter.base.data import calibration
from exporter.base.errors import UserError
from exporter.blocks.lowering.capability import Choice
from exporter.models.families import family
from exporter.models.heads import Head
from exporter.pipeline.recipe import Recipe
from exporter.pipeline.stages import export_onnx, fuse, partial_int8, sensitivity, simplify
from exporter.pipeline.stages.graph import Call, Node, Result, fixed
from exporter.pipeline.stages.scoring import EvaluationSettings
from exporter.pipeline.targets.target import Target
from exporter.pipeline.targets.trials import scored_at_once


class Plan:
    def __init__(self, recipe: Recipe, root: Path, trial_workers: int = 1, trials_on_ray: bool = False):
        self.recipe = recipe
        self.root = root
        self.trial_workers = trial_workers  # INT8 search trials of a round scored at once (the same result)
        self.trials_on_ray = trials_on_ray  # each as a Ray task, not a local process
        self.warnings: list[tuple[str, str]] = []  # (its list in the manifest, warning) found while planning
        self.notes: dict[str, Any] = {}  # run-level manifest fields the targets declare
        self.deferred: dict[str, dict[str, str]] = {}  # target -> what builds its artifacts elsewhere
        self.extras: list[Node] = []  # nodes to run whose outputs are not artifacts (bundles, packages)
        self._nodes: dict[str, Node] = {}
        self._lowerings: dict[str, Choice] = {}  # target -> its AKConv lowering

    def _once(self, node: Node) -> Node:
        """The node of that name planned first (each stage is planned once)."""
        return self._nodes.setdefault(node.name, node)

    def warn(self, field: str, warning: str) -> None:
        self.warnings.append((field, warning))

    def defer(self, target: Target, artifact: str, runtime: str, reason: str, bundle: Node) -> None:
        """`target`'s artifacts (each an `artifact`, e.g. 'TensorRT engine') are not built here (`reason`):
        `bundle`, a node run with the others, writes the script that builds them where `runtime` runs."""
        self.extras.append(bundle)
        self.deferred[target.name] = {
            "artifact": artifact,
            "runtime": runtime,
            "reason": reason,
            "bundle": str(self.root / bundle.output),
        }

    # decisions made before any stage runs (exporter.pipeline checks them all first)

    @functools.cached_property
    def fuse_settings(self) -> fuse.FuseSettings:
        return fuse.FuseSettings.from_recipe(self.recipe)

    def akconv(self, target: Target) -> Choice:
        if target.name not in self._lowerings:
            self._lowerings[target.name] = target.akconv(self.recipe)
        return self._lowerings[target.name]

    @functools.cached_property
    def calibration_set(self) -> calibration.CalibrationSet:
        """The seeded calibration images (the source exists and holds enough readable images)."""
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
            self.warn("calibration_warnings", warning)
        return chosen

    @functools.cached_property
    def head(self) -> Head | None:
        """The output contract of the model's adapter (None without one)."""
        adapter = self.recipe.model.adapter
        return None if adapter is None else family(adapter).head(self.recipe.model.ref())

    @functools.cached_property
    def evaluation(self) -> EvaluationSettings:
        return EvaluationSettings.from_recipe(self.recipe)

    # the shared nodes

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

    @functools.cached_property
    def fuse(self) -> Node:
        settings = self.fuse_settings
        return self._once(
            Node(
                "fuse",
                "fused.pt",
                lambda call: fuse.run(call.settings, call.output, self.accept_outputs),
                fuse.FuseRecord,
                fixed(settings),
                accept=lambda record: self.accept_outputs(record.outputs),
            )
        )

    def export(self, target: Target) -> Node:
        settings = export_onnx.ExportSettings.from_recipe(self.recipe, self.akconv(target))
        return self._once(
            Node(
                target.stage("export"),
                f"{target.folder}model.onnx",
                lambda call: export_onnx.run(call.settings, call.inputs["fused"], call.output),
                export_onnx.ExportRecord,
                fixed(settings),
                reads={"fused": self.fuse},
            )
        )

    def simplified(self, target: Target) -> Node:
        """The model the target's artifacts start from: simplified, or exported where the recipe skips
        simplification."""
        exported = self.export(target)
        if not self.recipe.export.simplify:
            self.notes["simplify"] = "skipped: export.simplify is false"
            return exported
        settings = simplify.SimplifySettings.from_recipe(self.recipe)
        return self._once(
            Node(
                target.stage("simplify"),
                f"{target.folder}model.sim.onnx",
                lambda call: simplify.run(
                    call.settings, call.inputs["onnx"], call.inputs["fused"], call.output
                ),
                simplify.SimplifyRecord,
                fixed(settings),
                reads={"onnx": exported, "fused": self.fuse},
            )
        )

    def ranges(self, model: Path) -> Path:
        """The calibration images' record for `model` (paths + sha256) written, and the folder of its
        Q/DQ range cache: <calibration folder>/<model+preprocessing key>/ (the folder:
        calibration.folder, else the run directory's calibration/)."""
        folder = self.recipe.calibration.folder or self.root / "calibration"
        digest = sha256_file(model)
        self.calibration_set.record(folder, digest)
        return folder / self.calibration_set.key(digest)

    def calibrated(self, run: Callable[..., dict[str, Any]]) -> Callable[[Call], dict[str, Any]]:
        """A Q/DQ stage's node run: `run(settings, model, fused, out, ranges folder)` on the node's inputs,
        with the calibration images' record written beside the range cache."""

        def call_run(call: Call) -> dict[str, Any]:
            model = call.inputs["onnx"]
            return run(call.settings, model, call.inputs["fused"], call.output, self.ranges(model))

        return call_run

    @functools.cached_property
    def sensitivity(self) -> Node:
        """Every convolution of the fused model ranked by the error it causes alone in INT8."""
        settings = sensitivity.SensitivitySettings.from_recipe(self.recipe, self.calibration_set)
        wanted = self.recipe.int8.sensitivity_images
        if len(settings.calibration.images) < wanted:
            self.warn(
                "sensitivity_warnings",
                f"sensitivity scores {len(settings.calibration.images)} images, the whole calibration set, "
                f"not {wanted}",
            )
        return self._once(
            Node(
                "sensitivity",
                "sensitivity.json",
                lambda call: sensitivity.run(call.settings, call.inputs["fused"], call.output),
                sensitivity.SensitivityRecord,
                fixed(settings),
                reads={"fused": self.fuse},
            )
        )

    def search(self, target: Target) -> Node:
        """The fewest most-sensitive layers kept in float for INT8 to meet int8.accuracy_budget (the
        sensitivity ranking is made inside it, when full INT8 misses the budget)."""
        chosen = self.calibration_set
        settings = partial_int8.SearchSettings.from_recipe(
            self.recipe, chosen, self.evaluation, target.search_method(self.recipe)
        )

        def run(call: Call) -> dict[str, Any]:
            model = call.inputs["onnx"]
            ranges = self.ranges(model)
            quantizer = target.quantizer(model, chosen, call.settings.method, ranges)
            sensitivity_json = call.later["sensitivity"]
            method, evaluation = call.settings.method, call.settings.evaluation
            if self.trial_workers == 1:
                return partial_int8.run(
                    call.settings, quantizer, call.inputs["fused"], sensitivity_json, call.output, call.say
                )
            with scored_at_once(
                target.quantizer,
                model,
                chosen,
                method,
                ranges,
                evaluation,
                self.trial_workers,
                self.trials_on_ray,
            ) as scores:  # workers kept for the whole search
                return partial_int8.run(
                    call.settings,
                    quantizer,
                    call.inputs["fused"],
                    sensitivity_json,
                    call.output,
                    call.say,
                    (self.trial_workers, scores),
                )

        return self._once(
            Node(
                target.stage("int8_search"),
                f"{target.folder}int8_search.json",
                run,
                partial_int8.SearchRecord,
                fixed(settings),
                reads={"onnx": self.simplified(target), "fused": self.fuse},
                files={"evaluation": self.evaluation.annotations},
                later={"sensitivity": self.sensitivity},
                versions=target.versions,
            )
        )

    def int8_reads(self, target: Target) -> dict[str, Node]:
        """What a target's INT8 node reads: the model, the fused model and, with an INT8 accuracy budget,
        the search's record (a new search rebuilds it)."""
        reads = {"onnx": self.simplified(target), "fused": self.fuse}
        if self.recipe.int8.accuracy_budget is not None:
            reads["int8_search"] = self.search(target)
        return reads


def float_nodes(upstream: Mapping[str, Result]) -> tuple[str, ...]:
    """The nodes the INT8 search keeps in float (none without a search)."""
    search = upstream.get("int8_search")
    return () if search is None else tuple(search.record.float_nodes)
