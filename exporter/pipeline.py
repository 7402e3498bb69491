"""The build pipeline: fuse → per backend export → simplify → target artifacts, each stage cached
in the run directory.

The onnx target's files sit at the run directory's root (model.onnx, model.sim.onnx); each other
backend gets its own folder, because the AKConv lowering it runs best may differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from exporter.artifacts import sha256_file
from exporter.data import calibration
from exporter.errors import UserError
from exporter.manifest import RunDir, StageResult
from exporter.models.loader import builder_source_hash, require_checkpoint
from exporter.recipe import Recipe
from exporter.stages import export_onnx, fuse, simplify

ALL_PRECISIONS = {"fp32", "fp16", "int8"}
AVAILABLE = {"onnx": {"fp32"}, "openvino": ALL_PRECISIONS, "tensorrt": ALL_PRECISIONS}  # target -> precisions
FOLDER = {"onnxruntime": "", "openvino": "openvino/", "tensorrt": "tensorrt/"}


def check_targets(recipe: Recipe) -> None:
    """Refuse, before any work, targets and precisions this version cannot build."""
    for target in recipe.targets:
        if target not in AVAILABLE:
            raise UserError(
                f"target '{target}' is not available in this version (available: "
                f"{', '.join(AVAILABLE)}); use --target onnx or --target openvino"
            )
        if target == "openvino":
            from exporter.doctor import check_library

            for library in ("openvino", "nncf"):
                status = check_library(library, library, "", "pip install 'reparam-export[openvino]'")
                if not status.usable and (library == "openvino" or "int8" in recipe.precisions):
                    raise UserError(f"target openvino needs {library}: {status.note}")
    if recipe.int8.accuracy_budget is not None:
        if "int8" not in recipe.precisions:
            raise UserError("--int8-accuracy-budget applies to INT8 builds; add --precision int8")
        if recipe.evaluation.data is None:
            raise UserError(
                "--int8-accuracy-budget needs evaluation data: set evaluation.data in the recipe "
                "(a COCO json, a COCO folder or 'demo')"
            )
    for precision in recipe.precisions:
        if not any(precision in AVAILABLE[t] for t in recipe.targets):
            buildable = sorted({p for t in recipe.targets for p in AVAILABLE[t]} & set(recipe.precisions))
            raise UserError(
                f"precision '{precision}' is not available for target(s) {', '.join(recipe.targets)} "
                f"(onnx: fp32; openvino and tensorrt: fp32, fp16, int8); pass "
                + " ".join(f"--precision {p}" for p in buildable or ["fp32"])
            )
    _check_sources(recipe)


def _check_sources(recipe: Recipe) -> None:
    """Inputs that later stages read, checked before any work: a TensorRT version that parses, the
    calibration source of INT8 builds, the evaluation data of an INT8 accuracy search."""
    from exporter.eval.run_eval import DEMO_DATA
    from exporter.lowering.trt_compat import parse_trt_version

    if "tensorrt" in recipe.targets:
        parse_trt_version(recipe.tensorrt.version)
    if recipe.calibrates:
        calibration.require_source(recipe.calibration.source)
    evaluation = recipe.evaluation.data
    if (
        recipe.int8.accuracy_budget is not None
        and str(evaluation) != DEMO_DATA
        and not Path(evaluation).exists()
    ):
        raise UserError(
            f"evaluation data not found: {evaluation}; pass a COCO json or folder with --eval-data"
        )


def _error(parity: dict[str, Any] | None, label: str = "max abs err") -> str:
    """A pass/fail check shows its tolerance; an error measured against the FP32 reference does not."""
    if not parity:
        return ""
    if "reference" in label:
        return f"{label} {parity['max_abs_err']:.3g} (output scale {parity['max_abs_ref']:.3g})"
    return f"{label} {parity['max_abs_err']:.3g} (tolerance {parity['tolerance']:.3g})"


def summarize(result: StageResult) -> str:
    """One line per stage: what it did and the numerical check it passed."""
    record, check = result.record, result.record.get("check") or {}
    kind = result.name.rpartition(".")[2]
    if kind == "fuse":
        counts = ", ".join(f"{n}×{k}" for k, n in sorted(check["counts"].items())) or "nothing to fuse"
        detail = f"{counts}; params {check['params_before']:,} → {check['params_after']:,}; "
        detail += _error(check["model_parity"])
    elif kind == "simplify":
        detail = f"nodes {record['nodes_before']} → {record['nodes_after']}; {_error(check)}"
        if record.get("failure"):
            detail += f"; NOT simplified, kept the exported model: {record['failure']}"
    elif kind == "export":
        detail = f"opset {record.get('opset')}, {record.get('nodes')} nodes; onnxruntime {_error(check)}"
        akconv = record.get("akconv") or {}
        if akconv.get("layers"):
            detail += f"; AKConv×{akconv['layers']} → {akconv['lowering']} ({akconv['reason']})"
    elif kind == "qdq":
        detail = (
            f"Q/DQ ONNX, {record['qdq_pairs']} Q/DQ pairs, {record['calibration_images']} calibration images"
        )
        detail += f" ({record['method']}); onnxruntime {_error(check, 'max abs err vs FP32 reference')}"
    elif kind == "sensitivity":
        detail = (
            f"{record['layers']} convolutions ranked on {record['calibration_images']} calibration images"
        )
    elif kind == "int8_search":
        detail = (
            f"{len(record['float_layers'])} of {record['candidates']} layers kept in float; mAP FP32 "
            f"{100 * record['fp32_map']:.2f}, full INT8 {100 * record['full_int8_map']:.2f}, partial INT8 "
            f"{100 * record['partial_int8_map']:.2f} (budget {record['budget_points']:g} points)"
        )
    elif result.name.startswith("tensorrt.end2end"):
        coding = record["attributes"]["box_coding"]
        detail = f"EfficientNMS_TRT appended, box_coding {coding} (corners); {record['note']}"
    elif kind == "bundle":
        detail = (
            f"NO ENGINE BUILT here ({record['reason']}); trtexec bundle for {', '.join(record['precisions'])}"
        )
    else:  # IR or engine: FP32 must pass, FP16/INT8 report their error against the FP32 reference
        label = "max abs err" if record["precision"] == "fp32" else "max abs err vs FP32 reference"
        what = "engine" if result.name.startswith("tensorrt") else "IR"
        detail = f"{record['precision'].upper()} {what}; {_error(check, label)}"
        if "int8" in record:
            int8 = record["int8"]
            detail += f"; {int8['calibration_images']} calibration images"
            detail += f", {int8['float_ops']} head ops kept in float"
            if int8.get("float_layers"):
                detail += f", {len(int8['float_layers'])} layers in float by the accuracy search"
    state = "cached" if result.cached else f"{record['wall_s']:.1f} s"
    return f"{result.name:<16} {detail}  [{state}] → {result.output}"


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

    def _stage(self, name, output, inputs, settings, func, companions=(), versions=None) -> StageResult:
        done = next((r for r in self.results if r.name == name), None)
        if done is not None:  # already run (or found cached) by this pipeline
            return done
        with self.console.status(f"[bold]{name}[/bold] running…"):
            result = self.run.run_stage(
                name, output, inputs, settings, func, self.force, companions, versions
            )
        self.results.append(result)
        self.console.print(summarize(result), markup=False, highlight=False, soft_wrap=True)
        return result

    @staticmethod
    def _name(backend: str, stage: str) -> str:
        return stage if backend == "onnxruntime" else f"{backend}.{stage}"

    def fuse(self) -> StageResult:
        inputs, settings = self._model_source()
        return self._stage(
            "fuse", "fused.pt", inputs, settings, lambda out: fuse.fuse_stage(self.recipe, out)
        )

    def export(self, backend: str = "onnxruntime") -> StageResult:
        fused = self.fuse()
        inputs, settings = self._model_source()
        spec = self.recipe.export
        settings.update(
            opset=spec.opset,
            dynamic_batch=spec.dynamic_batch,
            output_names=spec.output_names,
            akconv_lowering=spec.akconv_lowering,
            backend=backend,
            metadata=export_onnx.metadata(self.recipe),
            onnx_rtol=self.recipe.thresholds.onnx_rtol,
        )
        return self._stage(
            self._name(backend, "export"),
            f"{FOLDER[backend]}model.onnx",
            {**inputs, "fused": fused.output},
            settings,
            lambda out: export_onnx.export_stage(self.recipe, fused.output, out, backend),
        )

    def simplify(self, backend: str = "onnxruntime") -> StageResult:
        exported = self.export(backend)
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
            self._name(backend, "simplify"),
            f"{FOLDER[backend]}model.sim.onnx",
            {"onnx": exported.output, "fused": fused},
            settings,
            lambda out: simplify.simplify_stage(self.recipe, exported.output, fused, out),
        )

    def calibration_set(self, model: Path) -> tuple[calibration.CalibrationSet, Path]:
        """The seeded calibration images for `model`, and the manifest recording them."""
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
            self.console.print(f"warning: {warning}", markup=False)
        if warnings:
            self.run.note(calibration_warnings=warnings)
        return chosen, chosen.record(spec.folder, sha256_file(model))

    def openvino(self, precision: str) -> StageResult:
        from exporter.stages import openvino

        model = self.simplify("openvino").output
        fused = self.run.root / "fused.pt"
        inputs: dict[str, Path] = {"onnx": model, "fused": fused}
        settings: dict[str, Any] = {"precision": precision, "onnx_rtol": self.recipe.thresholds.onnx_rtol}
        chosen, float_nodes = None, []
        if precision == "int8":
            chosen, record = self.calibration_set(model)
            inputs["calibration"] = record
            settings["calibration"] = self.recipe.calibration.model_dump(mode="json")
            float_nodes = self._searched_float_nodes("openvino", model, chosen, record, inputs, settings)
        return self._stage(
            f"openvino.{precision}",
            f"openvino/model_{precision}.xml",
            inputs,
            settings,
            lambda out: openvino.openvino_stage(
                self.recipe, model, fused, precision, out, chosen, float_nodes
            ),
            companions=(".bin",),
            versions=openvino.library_versions(),
        )

    def _qdq(self, model: Path, fused: Path) -> StageResult:
        """The Q/DQ ONNX for TensorRT explicit INT8, from the shared calibration stream."""
        from exporter.stages import quantize_qdq

        method = self.recipe.tensorrt.calibration_method
        chosen, record = self.calibration_set(model)
        settings = {"method": method, "calibration": self.recipe.calibration.model_dump(mode="json")}
        inputs = {"onnx": model, "fused": fused, "calibration": record}
        float_nodes = self._searched_float_nodes("tensorrt", model, chosen, record, inputs, settings)
        return self._stage(
            "tensorrt.qdq",
            "tensorrt/model.qdq.onnx",
            inputs,
            settings,
            lambda out: quantize_qdq.qdq_stage(
                self.recipe, model, fused, out, chosen, method, float_nodes, ranges_dir=record.parent
            ),
        )

    def _searched_float_nodes(self, backend, model, chosen, record, inputs, settings) -> list[str]:
        """The nodes the INT8 accuracy search keeps in float (none without a budget); the search
        result joins the INT8 stage's inputs and settings so a new search rebuilds it."""
        if self.recipe.int8.accuracy_budget is None:
            return []
        search = self.int8_search(backend, model, chosen, record)
        inputs["int8_search"] = search.output
        settings["float_nodes"] = search.record["float_nodes"]
        return settings["float_nodes"]

    def sensitivity(self) -> StageResult:
        """Every convolution of the fused model ranked by the error it causes alone in INT8."""
        from exporter.stages.sensitivity import sensitivity_stage

        fused = self.fuse().output
        chosen, record = self.calibration_set(fused)
        wanted = self.recipe.int8.sensitivity_images
        if len(chosen.images) < wanted:
            warning = (
                f"sensitivity scores {len(chosen.images)} images, the whole calibration set, not {wanted}"
            )
            self.console.print(f"warning: {warning}", markup=False)
            self.run.note(sensitivity_warning=warning)
        settings = {
            "images": self.recipe.int8.sensitivity_images,
            "calibration": self.recipe.calibration.model_dump(mode="json"),
        }
        return self._stage(
            "sensitivity",
            "sensitivity.json",
            {"fused": fused, "calibration": record},
            settings,
            lambda out: sensitivity_stage(self.recipe, fused, chosen, out),
        )

    def int8_search(
        self, backend: str, model: Path, chosen: calibration.CalibrationSet, record: Path
    ) -> StageResult:
        """The fewest most-sensitive layers kept in float for INT8 to meet int8.accuracy_budget."""
        from exporter.data.coco import find_split
        from exporter.eval.run_eval import evaluation_source
        from exporter.stages import partial_int8

        sensitivity = self.sensitivity().output
        fused = self.run.root / "fused.pt"
        method = self.recipe.tensorrt.calibration_method
        settings = {
            "int8": self.recipe.int8.model_dump(mode="json"),
            "evaluation": self.recipe.evaluation.model_dump(mode="json"),
            "calibration": self.recipe.calibration.model_dump(mode="json"),
            **({"method": method} if backend == "tensorrt" else {}),
        }
        inputs = {
            "onnx": model,
            "fused": fused,
            "sensitivity": sensitivity,
            "calibration": record,
            "evaluation": find_split(evaluation_source(self.recipe))[0],
        }

        def run(out: Path) -> dict[str, Any]:
            quantizer = (
                partial_int8.OpenVinoQuantizer(model, chosen)
                if backend == "openvino"
                else partial_int8.QdqQuantizer(model, chosen, method, record.parent)
            )
            say = lambda line: self.console.print(line, markup=False, highlight=False)  # noqa: E731
            return partial_int8.partial_int8_stage(self.recipe, quantizer, fused, sensitivity, out, say)

        versions = None
        if backend == "openvino":
            from exporter.stages.openvino import library_versions

            versions = library_versions()
        return self._stage(
            f"{backend}.int8_search",
            f"{FOLDER[backend]}int8_search.json",
            inputs,
            settings,
            run,
            versions=versions,
        )

    def _end2end(self, precision: str, model: Path) -> StageResult:
        """The model with EfficientNMS_TRT appended (it runs only inside TensorRT: no CPU check)."""
        from exporter.eval.run_eval import head_settings
        from exporter.lowering import efficient_nms

        head = head_settings(self.recipe)
        settings = {k: head[k] for k in ("score_threshold", "iou_threshold")}
        settings["max_output_boxes"] = self.recipe.tensorrt.max_output_boxes
        return self._stage(
            f"tensorrt.end2end.{precision}",
            f"tensorrt/model.{precision}.end2end.onnx",
            {"onnx": model},
            settings,
            lambda out: {
                **efficient_nms.end2end_stage(model, out, **settings),
                "check": None,
                "note": "EfficientNMS_TRT runs only inside TensorRT: not checked on CPU",
            },
        )

    def tensorrt(self) -> dict[str, StageResult]:
        """Engines where TensorRT and a GPU exist; otherwise a deferred trtexec bundle (no engine)."""
        from exporter.stages import tensorrt as trt_stage

        spec = self.recipe.tensorrt
        model = self.simplify("tensorrt").output
        trt_stage.require_compatible(model, spec.version)
        fused = self.run.root / "fused.pt"
        models = {p: self._qdq(model, fused).output if p == "int8" else model for p in self.recipe.precisions}
        if spec.end2end_nms:
            models = {p: self._end2end(p, m).output for p, m in models.items()}
        batch = (1, 1, 8) if self.recipe.export.dynamic_batch else None
        engine_settings = trt_stage.EngineSettings(workspace_mib=spec.workspace_mib, batch=batch)
        settings = {**engine_settings.as_dict(), "version": spec.version}
        reason = trt_stage.unavailable()
        if reason:
            bundle = self._stage(
                "tensorrt.bundle",
                "tensorrt/bundle/build_engine.sh",
                dict(models),
                {**settings, "reason": reason},
                lambda out: trt_stage.write_bundle(out, models, engine_settings, reason, spec.version),
            )
            self.run.note(
                tensorrt={"engine": None, "deferred": True, "reason": reason, "bundle": str(bundle.output)}
            )
            return {}
        timing_cache = self.run.root / "tensorrt" / "timing.cache"
        self.run.note(tensorrt={"deferred": False})
        plugin = spec.plugin_library  # a rebuilt plugin rebuilds engines; build_engine names a missing one
        inputs = {"fused": fused, **({"plugin": plugin} if plugin and Path(plugin).is_file() else {})}
        settings.update(onnx_rtol=self.recipe.thresholds.onnx_rtol, end2end_nms=spec.end2end_nms)
        return {
            f"tensorrt.{precision}": self._stage(
                f"tensorrt.{precision}",
                f"tensorrt/model_{precision}.engine",
                {"onnx": onnx_path, **inputs},
                {**settings, "precision": precision},
                lambda out, p=precision, m=onnx_path: trt_stage.engine_stage(
                    self.recipe,
                    m,
                    fused,
                    p,
                    out,
                    engine_settings,
                    timing_cache,
                    spec.plugin_library,
                    end2end=spec.end2end_nms,
                ),
                versions=trt_stage.runtime_versions(),
            )
            for precision, onnx_path in models.items()
        }

    def build(self) -> dict[str, StageResult]:
        """Every stage the recipe's targets need; returns the final artifact per target/precision."""
        check_targets(self.recipe)
        artifacts: dict[str, StageResult] = {}
        for target in self.recipe.targets:
            if target == "onnx":
                artifacts["onnx.fp32"] = self.simplify()
            elif target == "openvino":
                for precision in self.recipe.precisions:
                    artifacts[f"openvino.{precision}"] = self.openvino(precision)
            elif target == "tensorrt":
                artifacts.update(self.tensorrt())
        self.run.note(
            recipe=self.recipe.model_dump(mode="json"),
            recipe_hash=self.recipe.digest(),
            artifacts={
                key: str(result.output.relative_to(self.run.root)) for key, result in artifacts.items()
            },
        )
        return artifacts
