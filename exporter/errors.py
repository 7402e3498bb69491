"""Errors the CLI turns into one-line messages and exit codes (0 ok, 1 check failed, 2 bad input)."""


class ExporterError(Exception):
    """Base class: carries the process exit code."""

    exit_code = 2


class UserError(ExporterError):
    """Bad input: a wrong recipe, a missing file, a model that cannot be built or run."""

    exit_code = 2


class CheckFailed(ExporterError):
    """A numerical or accuracy check did not pass."""

    exit_code = 1
