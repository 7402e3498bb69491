"""Recipes: YAML files describing a model and how to ship it, validated with pydantic (frozen: stages
take what they read through their own settings, built from a recipe)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from exporter.artifacts import sha256_json
from exporter.data.transforms import Preprocess
from exporter.errors import UserError, read_user_file, setting
from exporter.models.adapters import ADAPTERS

Precision = Literal["fp32", "fp16", "int8"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    builder: str = Field(description="'package.module:function' returning an nn.Module")
    kwargs: dict[str, Any] = {}
    checkpoint: Path | None = None
    adapter: str | None = None  # the model family's output contract (exporter.models.adapters)

    @field_validator("builder")
    @classmethod
    def _builder_form(cls, value: str) -> str:
        module, _, func = value.partition(":")
        if not module or not func:
            raise ValueError("expected 'package.module:function'")
        return value

    @field_validator("adapter")
    @classmethod
    def _known_adapter(cls, value: str | None) -> str | None:
        if value is not None and value not in ADAPTERS:
            raise ValueError(f"unknown adapter {value!r} (known: {', '.join(ADAPTERS)})")
        return value


class ExportSpec(Strict):
    opset: int = Field(17, ge=13, le=19)
    dynamic_batch: bool = False
    simplify: bool = True
    output_names: list[str] | None = None
    akconv_lowering: Literal["auto", "gather", "gridsample", "plugin"] = "auto"


class CalibrationSpec(Strict):
    """INT8 calibration images: a folder, a COCO json, or 'demo' (the demo dataset's calib split)."""

    source: str = "demo"
    count: int = Field(300, ge=1)
    seed: int = 0
    allow_fewer: bool = False  # True: use a smaller set and record a warning instead of failing
    folder: Path = Path("calibration")


class TensorRTSpec(Strict):
    """TensorRT build settings (the same for the Python builder and the deferred trtexec bundle)."""

    version: str = "10.x"  # the TensorRT the engine is built with: lowering choice and op compatibility
    workspace_mib: int = Field(4096, ge=64)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    plugin_library: Path | None = None  # libakconv_plugin.so, for graphs lowered with the AKConv plugin
    end2end_nms: bool = False  # append EfficientNMS_TRT (corner box coding) to decoded scores/boxes outputs
    max_output_boxes: int = Field(100, ge=1)


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
    model's own FP32 rounding of each output (exporter.stages.reference)."""

    fuse_rtol: float = Field(1e-9, gt=0)
    fp32_noise_factor: float = Field(8.0, ge=1)


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    model: ModelSpec
    input_size: tuple[int, int]
    class_names: list[str] = []
    preprocess: Preprocess = Preprocess()
    targets: list[str] = ["onnx"]  # names of exporter.targets (checked before a build starts)
    precisions: list[Precision] = ["fp32"]
    export: ExportSpec = ExportSpec()
    thresholds: Thresholds = Thresholds()
    calibration: CalibrationSpec = CalibrationSpec()
    tensorrt: TensorRTSpec = TensorRTSpec()
    int8: Int8Spec = Int8Spec()
    evaluation: EvaluationSpec = EvaluationSpec()
    seed: int = 0

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
        return value

    def digest(self) -> str:
        """Hash of every field, recorded in exported models and the manifest."""
        return sha256_json(self.model_dump(mode="json"))


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


def load_recipe(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe (the embedded default when `path` is None); overrides win.

    Relative checkpoint paths are resolved against the recipe's folder.
    """
    file = Path(path) if path is not None else DEFAULT_RECIPE
    source = str(path) if path is not None else "embedded default recipe"
    if not file.is_file():
        raise UserError(f"recipe not found: {file}; pass an existing YAML file with {setting('recipe_path')}")
    data = read_user_file(file, "yaml", source)
    model = data.get("model") if isinstance(data, dict) else None
    checkpoint = model.get("checkpoint") if isinstance(model, dict) else None
    if isinstance(checkpoint, str) and not Path(checkpoint).is_absolute():
        model["checkpoint"] = str(file.parent / checkpoint)
    return recipe_from_dict(data, source, overrides)
