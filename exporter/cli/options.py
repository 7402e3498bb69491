"""Command-line options, each declared once, in groups; an option that sets a recipe field names it, and
its default is the recipe model's (exporter.pipeline.recipe)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from exporter.pipeline.recipe import Recipe

Decorator = Callable[[Callable], Callable]


class FieldOption(click.Option):
    """An option that overrides a recipe field (`field`, dotted)."""

    def __init__(self, *args, field: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.field = field


class TableChoice(click.Choice):
    """A choice among a table's keys, read when the value is parsed (a target added to the table is
    offered at once)."""

    def __init__(self, table: Mapping[str, Any]):
        self.table = table
        super().__init__(list(table))

    def convert(self, value, param, ctx):
        self.choices = list(self.table)
        return super().convert(value, param, ctx)


def default(field: str) -> Any:
    """The recipe model's default for a dotted field."""
    model: Any = Recipe
    *sections, last = field.split(".")
    for section in sections:
        model = model.model_fields[section].default
    return getattr(model, last) if not isinstance(model, type) else model.model_fields[last].default


def option(*flags: str, field: str | None = None, **kwargs) -> Decorator:
    return click.option(*flags, cls=FieldOption, field=field, **kwargs)


def repository_file(flag: str, default_path: str, help: str) -> Decorator:
    """An option naming one of the repository's files (its path from the repository root by default)."""
    return click.option(
        flag, type=click.Path(path_type=Path), default=Path(default_path), show_default=True, help=help
    )


def group(*decorators: Decorator) -> Decorator:
    """Options applied in the order given (shown so in --help)."""

    def apply(func: Callable) -> Callable:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def targets():
    from exporter.pipeline.targets.table import TARGETS

    return TARGETS


RECIPE = option(
    "--recipe",
    "recipe_path",
    type=click.Path(path_type=Path),
    help="Recipe YAML (default: the embedded demo recipe).",
)
# each target's own options (exporter.pipeline.targets.target.Flag), offered by every command that builds
TARGET_FLAGS = group(
    *(
        option(
            flag.flag,
            field=flag.field,
            type=click.Choice(flag.choices) if flag.choices else None,
            help=f"{flag.help} (default {default(flag.field)}).",
        )
        for target in targets().values()
        for flag in target.flags
    )
)
MODEL = group(
    RECIPE,
    option(
        "--model",
        "builder",
        field="model.builder",
        metavar="PKG.MODULE:FUNC|CHECKPOINT",
        help="Builder returning an nn.Module, or an Ultralytics checkpoint (runs/train/exp/weights/best.pt); "
        "without --recipe the model's own settings are used (a checkpoint's input size and classes).",
    ),
    option(
        "--trust-module",
        "trust",
        field="model.trust",
        multiple=True,
        metavar="PACKAGE",
        help="A package whose code may run: the module classes a pickled checkpoint uses (your fork's "
        "custom blocks) or an installed package's --model builder; repeatable. A checkpoint may use torch's "
        "and ultralytics' module classes without it.",
    ),
    option(
        "--checkpoint",
        field="model.checkpoint",
        type=click.Path(path_type=Path),
        help="State dict to load (torch.load with weights_only=True).",
    ),
    option(
        "--input-size", field="input_size", nargs=2, type=int, metavar="H W", help="Input height and width."
    ),
    option(
        "--opset",
        field="export.opset",
        type=int,
        help=f"ONNX opset, 13–19 (default {default('export.opset')}).",
    ),
    option(
        "--dynamic-batch/--static-batch",
        field="export.dynamic_batch",
        default=None,
        help="Dynamic batch axis in the ONNX.",
    ),
    TARGET_FLAGS,
    option(
        "--akconv-lowering",
        field="export.akconv_lowering",
        type=click.Choice(["auto", "gather", "gridsample", "plugin"]),
        help="How AKConv sampling is exported (default auto: the fastest exact one per target).",
    ),
    option("--run-dir", type=click.Path(path_type=Path), help="Run directory (default runs/<recipe name>)."),
    option("--force", is_flag=True, help="Rerun every stage even when cached."),
)
TARGET = option(
    "--target",
    "targets",
    field="targets",
    multiple=True,
    type=TableChoice(targets()),
    help="Target(s) to build; repeatable (default: the recipe's).",
)
PRECISION = option(
    "--precision",
    "precisions",
    field="precisions",
    multiple=True,
    type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
    help="Precision(s) to build; repeatable (default: the recipe's).",
)


def recipes(help: str) -> Decorator:
    """--recipe, repeatable: the commands that take several models."""
    return click.option("--recipe", "recipes", multiple=True, type=click.Path(path_type=Path), help=help)


def calib_count(**settings) -> Decorator:
    """--calib-count; a command with its own default passes it (shown instead of the recipe's)."""
    recipe_default = "" if "default" in settings else f" (default {default('calibration.count')})"
    return option(
        "--calib-count",
        field="calibration.count",
        type=click.IntRange(min=1),
        help=f"Number of calibration images{recipe_default}.",
        **settings,
    )


def eval_limit(**settings) -> Decorator:
    return option(
        "--eval-limit",
        field="evaluation.limit",
        type=click.IntRange(min=1),
        help="Evaluate only the first N images of the evaluation data.",
        **settings,
    )


CALIBRATION = group(
    option(
        "--calib-data",
        field="calibration.source",
        help="INT8 calibration images: a folder, a COCO json, an Ultralytics data.yaml, or 'demo'.",
    ),
    calib_count(),
)
EVALUATION = group(
    option(
        "--eval-data",
        field="evaluation.data",
        help="Evaluation data: a COCO json or folder, an Ultralytics data.yaml, or 'demo' "
        "(default: the recipe's).",
    ),
    eval_limit(),
)


SHARDS = click.option(
    "--shards",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Split each model's evaluation images over N local processes, scored once (the same mAP).",
)


TRIAL_WORKERS = click.option(
    "--trial-workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="INT8 search: trials of one round built and scored at once, each in a local process (in a matrix "
    "on Ray: a Ray task); the same float layers where mAP never drops as layers go float; with 1: "
    "doubling, then bisection.",
)


def budget(**kwargs) -> Decorator:
    return option(
        "--int8-accuracy-budget",
        field="int8.accuracy_budget",
        type=click.FloatRange(min=0),
        help="INT8 may lose at most this many mAP points vs FP32: keep the fewest sensitive layers in float.",
        **kwargs,
    )


def timing(
    threads: int, min_seconds: float, threads_help: str, seconds_help: str, min_threads: int = 0
) -> Decorator:
    """Benchmark options with the command's own defaults."""
    return group(
        option(
            "--threads",
            default=threads,
            type=click.IntRange(min=min_threads),
            show_default=True,
            help=threads_help,
        ),
        option(
            "--min-seconds",
            default=min_seconds,
            type=click.FloatRange(min=0),
            show_default=True,
            help=seconds_help,
        ),
    )


def overrides(command: click.Command, values: Mapping[str, Any]) -> dict[str, Any]:
    """Recipe field -> value for every field option the user passed to `command`."""
    found: dict[str, Any] = {}
    for param in command.params:
        field = getattr(param, "field", None)
        value = values.get(param.name)
        if field is None or value is None or value == ():
            continue
        if isinstance(value, tuple):
            value = list(value)
        found[field] = str(value) if isinstance(value, Path) else value
    return found


def flags(command: click.Command) -> dict[str, str]:
    """Setting -> the flag that sets it in `command` (its recipe field and its parameter name)."""
    found: dict[str, str] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            flag = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            found[param.name] = flag
            if getattr(param, "field", None):
                found[param.field] = flag
    return found
