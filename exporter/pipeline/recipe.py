"""Recipes: YAML files describing a model and how to ship it, validated with pydantic (frozen: stages
take what they read through their own settings, built from a recipe)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator, model_validator

from exporter.base.artifacts import sha256_json
from exporter.base.data.transforms import Preprocess
from exporter.base.errors import UserError, read_user_file, setting
from exporter.base.strict import Strict
from exporter.models.families import FAMILIES
from exporter.models.family import ModelRef
from exporter.pipeline.targets.registry import REGISTRY

Precision = Literal["fp32", "fp16", "bf16", "int8"]


class ModelSpec(Strict):
    """The model: a builder 'package.module:function' returning an nn.Module (`kwargs` its arguments,
    `checkpoint` a state dict to load), or, for a family whose checkpoint holds the whole model
    (adapter `ultralytics`), that checkpoint alone. `trust`: packages whose module classes a pickled
    checkpoint may use (a fork's custom blocks)."""

    builder: str | None = None
    kwargs: dict[str, Any] = {}
    checkpoint: Path | None = None
    adapter: str | None = None  # the model family (exporter.models.families)
    trust: list[str] = []

    @field_validator("builder")
    @classmethod
    def _builder_form(cls, value: str | None) -> str | None:
        module, _, func = (value or "").partition(":")
        if value is not None and (not module or not func):
            raise ValueError("expected 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _built_somehow(self) -> ModelSpec:
        if self.builder is None:
            loads = self.adapter is not None and FAMILIES[self.adapter].loads_checkpoints
            if not loads or self.checkpoint is None:
                raise ValueError(
                    "needs a builder ('package.module:function'), or a checkpoint that holds the model "
                    "with its adapter (adapter: ultralytics)"
                )
        return self

    def ref(self) -> ModelRef:
        """What the model's adapter reads of it."""
        return ModelRef(dict(self.kwargs), self.checkpoint, tuple(self.trust))

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str | None) -> str | None:
        if value is not None and value not in FAMILIES:
            raise ValueError(f"unknown adapter {value!r} (known: {', '.join(FAMILIES)})")
        return value


class ExportSpec(Strict):
    opset: int = Field(17, ge=13, le=19)
    dynamic_batch: bool = False
    simplify: bool = True
    output_names: list[str] | None = None
    akconv_lowering: Literal["auto", "gather", "gridsample", "plugin"] = "auto"


class CalibrationSpec(Strict):
    """INT8 calibration images: a folder, a COCO json, or 'demo' (the demo dataset's calib split).
    `folder`: where the record of the images chosen and cached activation ranges go (default: the run
    directory's calibration/)."""

    source: str | None = None
    count: int = Field(300, ge=1)
    seed: int = 0
    allow_fewer: bool = False  # True: use a smaller set and record a warning instead of failing
    folder: Path | None = None


class Int8Spec(Strict):
    """INT8 accuracy. `accuracy_budget`: mAP points (0–100 scale) the INT8 model may lose against FP32 on
    the evaluation data; set, the build keeps the fewest most-sensitive layers in float that meet it.
    `sensitivity_images`: calibration images the per-layer sensitivity ranking runs on."""

    accuracy_budget: float | None = Field(None, ge=0)
    sensitivity_images: int = Field(32, ge=1)


class EvaluationSpec(Strict):
    """COCO evaluation after a build: a dataset (COCO json or folder, or 'demo' for the demo val
    split) and optionally only its first `limit` images."""

    data: str | None = None
    limit: int | None = Field(None, ge=1)


class Thresholds(Strict):
    """fuse_rtol: the float64 fusion proof, max|y_fused − y| ≤ fuse_rtol·max(1, max|y|) per output.
    fp32_noise_factor: an FP32 artifact may differ from the float64 reference by this many times the
    model's own FP32 rounding of each output (exporter.pipeline.stages.reference)."""

    fuse_rtol: float = Field(1e-9, gt=0)
    fp32_noise_factor: float = Field(8.0, ge=1)


MAX_INPUT_SIDE = 8192  # pixels: far beyond detectors' inputs (640–1536), far below an allocation failure


class RecipeBase(Strict):
    """A recipe's fields common to every target; `Recipe` adds each target's own section."""

    name: str  # the run folder's name: one path component (runs/<name>/)
    model: ModelSpec
    input_size: tuple[int, int]
    class_names: list[str] = []
    preprocess: Preprocess = Preprocess()
    targets: list[str] = ["onnx"]  # names of exporter.pipeline.targets (checked before a build starts)
    precisions: list[Precision] = ["fp32"]
    export: ExportSpec = ExportSpec()
    thresholds: Thresholds = Thresholds()
    calibration: CalibrationSpec = CalibrationSpec()
    int8: Int8Spec = Int8Spec()
    evaluation: EvaluationSpec = EvaluationSpec()
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _one_folder(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
            raise ValueError(
                f"{value!r} is not a run folder name: use letters, digits, '_', '.' and '-', not starting "
                "with '.' (the run goes to runs/<name>/)"
            )
        return value

    @field_validator("input_size", mode="before")
    @classmethod
    def _two_ints(cls, value: Any) -> Any:
        ok = (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        )
        if not ok:
            raise ValueError(f"expected two positive integers (height, width), got {value!r}")
        if max(value) > MAX_INPUT_SIDE:
            raise ValueError(f"{list(value)} exceeds {MAX_INPUT_SIDE} pixels a side; detectors take 320–1536")
        return value

    def digest(self) -> str:
        """Hash of every field, recorded in exported models and the manifest."""
        return sha256_json(self.model_dump(mode="json"))


def target_sections() -> dict[str, type[Strict]]:
    """Each registered target's recipe section (its package's section.SECTION), by the target's name."""
    found = {}
    for package in REGISTRY:
        if importlib.util.find_spec(f"{package}.section") is not None:
            found[package.rpartition(".")[2]] = importlib.import_module(f"{package}.section").SECTION
    return found


Recipe = create_model(
    "Recipe",
    __base__=RecipeBase,
    __doc__="A recipe: the fields every build reads (RecipeBase) and each target's section.",
    __module__=__name__,
    **{name: (section, section()) for name, section in target_sections().items()},
)


DEFAULT_RECIPE = Path(__file__).parent / "default_recipe.yaml"


def _format_error(source: str, error: dict[str, Any], model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "<top level>"
    if error["type"] == "extra_forbidden":
        parent: Any = model
        for part in error["loc"][:-1]:
            field = getattr(parent, "model_fields", {}).get(part)
            parent = field.annotation if field else None
        allowed = ", ".join(getattr(parent, "model_fields", {})) if parent else ""
        return f"{source}: {loc}: unknown field (allowed: {allowed})"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {loc}: {message}"


def set_dotted(data: dict[str, Any], key: str, value: Any, source: str = "recipe") -> None:
    """data['a']['b'] = value for key 'a.b', creating dicts on the way (an empty section too)."""
    *parents, last = key.split(".")
    for depth, part in enumerate(parents):
        if data.get(part) is None:
            data[part] = {}
        if not isinstance(data[part], dict):
            section = ".".join(parents[: depth + 1])
            raise UserError(
                f"{source}: {section} must be a mapping of fields to set {key}, not {data[part]!r}"
            )
        data = data[part]
    data[last] = value


def recipe_from_dict(data: Any, source: str, overrides: dict[str, Any] | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of recipe fields, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value, source)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(_format_error(source, exc.errors()[0], Recipe)) from None


def is_checkpoint(model: str) -> bool:
    """Whether a model named on the command line is a checkpoint file rather than a builder."""
    return ":" not in model or Path(model).is_file()


def model_recipe(model: str, trust: list[str], overrides: dict[str, Any]) -> Recipe:
    """The recipe of a model given without one: a builder ('package.module:function'; its input size
    must be given) or a checkpoint holding the model (Ultralytics: input size, class names and
    preprocessing read from it). One FP32 ONNX, nothing calibrated or evaluated until asked for."""
    data: dict[str, Any] = {"targets": ["onnx"], "precisions": ["fp32"], "calibration": {}}
    if is_checkpoint(model):
        from exporter.models.ultralytics import recipe_fields

        path = Path(model)
        run = path.parent.parent.name if path.parent.name == "weights" else path.parent.name
        data["name"] = safe_name(f"{run}_{path.stem}" if run else path.stem)
        data["model"] = {"checkpoint": str(path), "adapter": "ultralytics", "trust": trust}
        data.update(recipe_fields(path, tuple(trust)))
        if "input_size" not in data and "input_size" not in overrides:
            raise UserError(
                f"{path} does not record the input size it was trained at (no train_args: saved by "
                f"YOLO.save() or an older layout); pass {setting('input_size')} H W"
            )
    else:
        data["name"] = safe_name(model.rpartition(":")[2])
        data["model"] = {"builder": model, "trust": trust}
        if "input_size" not in overrides:
            raise UserError(
                f"model builder '{model}': pass {setting('input_size')} H W (a builder's model says nothing "
                "of its input), or a recipe with --recipe"
            )
    return recipe_from_dict(data, f"model {model}", overrides)


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in text).strip(".") or "model"


REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"  # the recipes shipped beside the package
# fields naming files or folders: relative ones in a recipe file resolve against the recipe's folder
PATH_FIELDS = (
    "model.checkpoint",
    "calibration.source",
    "calibration.folder",
    "evaluation.data",
    "tensorrt.plugin_library",
)
DEMO = "demo"  # the demo dataset, where a dataset is asked for


def _resolve_paths(data: Any, folder: Path) -> None:
    if not isinstance(data, dict):
        return
    for dotted in PATH_FIELDS:
        section, _, leaf = dotted.partition(".")
        values = data.get(section)
        value = values.get(leaf) if isinstance(values, dict) else None
        if isinstance(value, str) and value != DEMO and not Path(value).is_absolute():
            values[leaf] = str(folder / value)


def load_recipe(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe (the embedded default when `path` is None); overrides win.

    Relative paths in the file (PATH_FIELDS) resolve against the recipe's folder; those given as
    overrides (the command line) against the current directory.
    """
    file = Path(path) if path is not None else DEFAULT_RECIPE
    source = str(path) if path is not None else "embedded default recipe"
    if not file.is_file():
        raise UserError(f"recipe not found: {file}; pass an existing YAML file with {setting('recipe_path')}")
    data = read_user_file(file, "yaml", source)
    _resolve_paths(data, file.parent)
    return recipe_from_dict(data, source, overrides)


def resolve_recipe(
    recipe_path: str | os.PathLike | None, model: str | None, overrides: dict[str, Any]
) -> Recipe:
    """The recipe a command or `exporter.build` runs, `overrides` (dotted fields) applied: the recipe file
    at `recipe_path` (with `model` as its model, a builder or a checkpoint), else the model's own recipe
    when `model` names one, else the embedded demo recipe."""
    overrides = dict(overrides)
    if model and recipe_path is None:
        trust = overrides.pop("model.trust", [])
        return model_recipe(model, trust, overrides)
    if model and is_checkpoint(model):
        overrides.update(
            {
                "model.builder": None,
                "model.checkpoint": model,
                "model.adapter": "ultralytics",
                "model.kwargs": {},
            }
        )
    elif model:
        overrides.update({"model.builder": model, "model.kwargs": {}})
    return load_recipe(recipe_path, overrides)
