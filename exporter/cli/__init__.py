"""`reparam-export` command line. Exit codes: 0 ok, 1 a check failed, 2 bad input."""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
from collections.abc import Iterator

import click

from exporter.base.errors import ExporterError, out_of_memory, summary
from exporter.cli import build, measure, tools  # noqa: F401 - registers the commands
from exporter.cli.app import Group, cli, flags, say

# failures of the file system, not of the program: one line naming the path and what to do
FILE_SYSTEM = {
    errno.ENOSPC: "cannot write {}: the disk is full: free space there or pass --run-dir on another disk",
    errno.EDQUOT: "cannot write {}: the disk quota is used up: free space or pass --run-dir on another disk",
    errno.EFBIG: "cannot write {}: the file exceeds the size this process may write: raise ulimit -f",
    errno.EROFS: "cannot write {}: the file system is read-only: pass --run-dir to a writable folder",
    # reading an input or writing the run: the path says which
    errno.EACCES: "cannot access {}: permission denied: check its permissions (a run: --run-dir moves it)",
    errno.EPERM: "cannot access {}: not permitted: check its permissions (a run: --run-dir moves it)",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is: it ends as an interrupt (Ctrl-C) does, nothing half-written."""


def _terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def terminated_as_interrupted() -> Iterator[None]:
    """SIGTERM handled as SIGINT while a command runs (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code instead of raising (one-line errors, no tracebacks)."""
    Group.invoked = None
    try:
        with terminated_as_interrupted():
            cli.main(args=argv, prog_name="reparam-export", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:  # usage errors too: one line, with where to read more
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(exc, click.UsageError) and ctx else ""
        say(f"error: {exc.format_message()}{hint}")
        return exc.exit_code
    except click.exceptions.Abort as exc:
        terminated = isinstance(exc.__cause__, Terminated)
        say("terminated" if terminated else "aborted")
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    except ExporterError as exc:
        label = "check failed" if exc.exit_code == 1 else "error"
        say(f"{label}: {exc.render(flags())}")
        return exc.exit_code
    except (MemoryError, RuntimeError) as exc:  # an allocation refused outside the model's forward
        if not out_of_memory(exc):
            raise
        say(
            f"error: this command needs more memory than this process may use ({summary(exc)}); "
            "pass a smaller --input-size, or run it on a larger machine"
        )
        return 2
    except OSError as exc:
        if exc.errno not in FILE_SYSTEM:
            raise
        say(f"error: {FILE_SYSTEM[exc.errno].format(exc.filename or 'a file')}")
        return 2
    return 0


def entry() -> None:
    sys.exit(main())
