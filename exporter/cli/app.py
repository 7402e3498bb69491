"""The `reparam-export` command group and what its commands share: consoles, the recipe as the user's
options override it, the pipeline of a run directory."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from exporter.base import host
from exporter.base.errors import UserError
from exporter.base.version import __version__
from exporter.cli import options

console = Console(stderr=True, highlight=False)


def out_console() -> Console:
    """Tables on stdout; wide when piped to a file so no column is truncated."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def timing(what: str) -> Iterator[host.LoadMeter]:
    """Around a timed measurement: afterwards, the host and the load other processes put on it while
    `what` was timed (say_load)."""
    with host.LoadMeter() as meter:
        yield meter
    say_load(what, meter.load)


def say_load(what: str, load: host.Load | None) -> None:
    """The host and the load others put on it while `what` was timed, loudly when it moves ratios."""
    if load is None:
        say(f"{what}: {host.describe()}; the load of other processes is not measurable here")
    elif load.noisy:
        say(
            f"WARNING: {what} ran while the machine was busy ({load.describe()}, over {load.NOISY} "
            "cores): its ratios may be off; measure again on a quiet machine"
        )
    else:
        say(f"{what}: {host.describe()}, {load.describe()}")


class Group(click.Group):
    """Remembers which command ran, so that its errors name that command's flags."""

    invoked: click.Command | None = None

    def resolve_command(self, ctx, args):
        name, command, rest = super().resolve_command(ctx, args)
        Group.invoked = command
        return name, command, rest


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="reparam-export")
def cli():
    """Fuse re-parameterizable detectors and ship them to ONNX, OpenVINO and TensorRT.

    Exit codes: 0 ok, 1 a check failed (numerical mismatch, accuracy regression), 2 bad input.
    """


def flags() -> dict[str, str]:
    """Setting -> flag: every command's, the running command's first."""
    found: dict[str, str] = {}
    for command in cli.commands.values():
        for setting, flag in options.flags(command).items():
            found.setdefault(setting, flag)
    if Group.invoked is not None:
        found.update(options.flags(Group.invoked))
    return found


def load(values: dict[str, Any], **fixed: Any):
    """The recipe with every option the user passed applied on top (`fixed`: fields the command decides
    itself): the --recipe file, else the model's own recipe when --model names one (a builder, or a
    checkpoint holding the model), else the embedded demo recipe."""
    from exporter.pipeline.recipe import resolve_recipe

    overrides = options.overrides(click.get_current_context().command, values)
    overrides.update(fixed)
    return resolve_recipe(values.get("recipe_path"), overrides.pop("model.builder", None), overrides)


def pipeline(recipe, run_dir: Path | None, force: bool, trial_workers: int = 1):
    from exporter.pipeline.builder import Pipeline

    if run_dir is not None and Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UserError(f"--run-dir {run_dir} is a file; pass a folder (new or an earlier run's)")
    return Pipeline(recipe, run_dir, force=force, console=console, trial_workers=trial_workers)
