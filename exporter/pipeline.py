"""The build pipeline: fuse → export → simplify (→ targets), each stage cached in the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from exporter.errors import UserError
from exporter.manifest import RunDir, StageResult
from exporter.models.loader import builder_source_hash, require_checkpoint
from exporter.recipe import Recipe
from exporter.stages import export_onnx, fuse, simplify

AVAILABLE = {"onnx": {"fp32"}}  # target -> precisions this version builds


def check_targets(recipe: Recipe) -> None:
    """Refuse, before any work, targets and precisions this version cannot build."""
    for target in recipe.targets:
        if target not in AVAILABLE:
            raise UserError(
                f"target '{target}' is not available in this version (available: "
                f"{', '.join(AVAILABLE)}); use --target onnx"
            )
        for precision in recipe.precisions:
            if precision not in AVAILABLE[target]:
                raise UserError(
                    f"precision '{precision}' is not available for target '{target}' "
                    f"(available: {', '.join(sorted(AVAILABLE[target]))})"
                )


def summarize(result: StageResult) -> str:
    """One line per stage: what it did and the numerical check it passed."""
    record, check = result.record, result.record.get("check") or {}
    parity = check.get("model_parity", check)
    error = f"max abs err {parity['max_abs_err']:.3g} (tolerance {parity['tolerance']:.3g})" if parity else ""
    if result.name == "fuse":
        counts = ", ".join(f"{n}×{k}" for k, n in sorted(check["counts"].items())) or "nothing to fuse"
        detail = f"{counts}; params {check['params_before']:,} → {check['params_after']:,}; {error}"
    elif result.name == "simplify":
        detail = f"nodes {record['nodes_before']} → {record['nodes_after']}; {error}"
        if record.get("failure"):
            detail += f"; NOT simplified, kept the exported model: {record['failure']}"
    else:
        detail = f"opset {record.get('opset')}, {record.get('nodes')} nodes; onnxruntime {error}"
        akconv = record.get("akconv") or {}
        if akconv.get("layers"):
            detail += f"; AKConv×{akconv['layers']} → {akconv['lowering']} ({akconv['reason']})"
    state = "cached" if result.cached else f"{record['wall_s']:.1f} s"
    return f"{result.name:<9} {detail}  [{state}] → {result.output}"


class Pipeline:
    def __init__(
        self,
        recipe: Recipe,
        run_dir: str | Path | None = None,
        force: bool = False,
        console: Console | None = None,
    ):
        self.recipe = recipe
        self.run = RunDir(run_dir or Path("runs") / recipe.name)
        self.force = force
        self.console = console or Console(stderr=True, quiet=True)
        self.results: list[StageResult] = []

    def _model_source(self) -> tuple[dict[str, Path], dict[str, Any]]:
        """Inputs and settings that define the model: builder, its source file, checkpoint, probe."""
        r = self.recipe
        inputs = {"checkpoint": require_checkpoint(r.model.checkpoint)} if r.model.checkpoint else {}
        settings = {
            "builder": r.model.builder,
            "kwargs": r.model.kwargs,
            "builder_sha256": builder_source_hash(r.model.builder),
            "input_size": list(r.input_size),
            "preprocess": r.preprocess.model_dump(mode="json"),
            "seed": r.seed,
            "fuse_rtol": r.thresholds.fuse_rtol,
        }
        return inputs, settings

    def _stage(self, name, output, inputs, settings, func) -> StageResult:
        with self.console.status(f"[bold]{name}[/bold] running…"):
            result = self.run.run_stage(name, output, inputs, settings, func, self.force)
        self.results.append(result)
        self.console.print(summarize(result), markup=False, highlight=False, soft_wrap=True)
        return result

    def fuse(self) -> StageResult:
        inputs, settings = self._model_source()
        return self._stage(
            "fuse", "fused.pt", inputs, settings, lambda out: fuse.fuse_stage(self.recipe, out)
        )

    def export(self) -> StageResult:
        fused = self.fuse()
        inputs, settings = self._model_source()
        spec = self.recipe.export
        settings.update(
            opset=spec.opset,
            dynamic_batch=spec.dynamic_batch,
            output_names=spec.output_names,
            akconv_lowering=spec.akconv_lowering,
            backend="onnxruntime",
            metadata=export_onnx.metadata(self.recipe),
            onnx_rtol=self.recipe.thresholds.onnx_rtol,
        )
        return self._stage(
            "export",
            "model.onnx",
            {**inputs, "fused": fused.output},
            settings,
            lambda out: export_onnx.export_stage(self.recipe, fused.output, out),
        )

    def simplify(self) -> StageResult:
        exported = self.export()
        if not self.recipe.export.simplify:
            self.console.print("simplify  skipped: export.simplify is false in the recipe", markup=False)
            self.run.note(simplify="skipped: export.simplify is false")
            return exported
        fused = self.run.root / "fused.pt"
        settings = {
            "onnx_rtol": self.recipe.thresholds.onnx_rtol,
            "dynamic_batch": self.recipe.export.dynamic_batch,
        }
        return self._stage(
            "simplify",
            "model.sim.onnx",
            {"onnx": exported.output, "fused": fused},
            settings,
            lambda out: simplify.simplify_stage(self.recipe, exported.output, fused, out),
        )

    def build(self) -> StageResult:
        """Every stage the recipe's targets need; returns the final ONNX stage."""
        check_targets(self.recipe)
        final = self.simplify()
        self.run.note(
            recipe=self.recipe.model_dump(mode="json"),
            recipe_hash=self.recipe.digest(),
            artifacts={"onnx": str(final.output)},
        )
        return final
