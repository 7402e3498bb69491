"""`reparam-export` command line. Exit codes: 0 ok, 1 a check failed, 2 bad input."""

from __future__ import annotations

import errno
import sys

import click

from exporter.cli import build, measure, tools  # noqa: F401 - registers the commands
from exporter.cli.app import Group, cli, flags, say
from exporter.errors import ExporterError

# failures of the file system, not of the program: one line naming the path and what to do
FILE_SYSTEM = {
    errno.ENOSPC: "the disk is full: free space there or pass --run-dir on another disk",
    errno.EDQUOT: "the disk quota is used up: free space there or pass --run-dir on another disk",
    errno.EFBIG: "the file exceeds the size this process may write: raise ulimit -f or free space",
    errno.EROFS: "the file system is read-only: pass --run-dir to a writable folder",
    errno.EACCES: "permission denied: check its permissions or pass --run-dir to a writable folder",
    errno.EPERM: "not permitted: check its permissions or pass --run-dir to a writable folder",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of raising (one-line errors, no tracebacks)."""
    Group.invoked = None
    try:
        cli.main(args=argv, prog_name="reparam-export", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # usage errors too: one line, with where to read more
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(exc, click.UsageError) and ctx else ""
        say(f"error: {exc.format_message()}{hint}")
        return exc.exit_code
    except click.exceptions.Abort:
        say("aborted")
        return 130
    except ExporterError as exc:
        label = "check failed" if exc.exit_code == 1 else "error"
        say(f"{label}: {exc.render(flags())}")
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM:
            raise
        say(f"error: cannot write {exc.filename or 'a file'}: {FILE_SYSTEM[exc.errno]}")
        return 2
    return 0


def entry() -> None:
    sys.exit(main())
