"""Errors the CLI turns into one-line messages and exit codes (0 ok, 1 check failed, 2 bad input).

Messages speak of settings — recipe fields ('calibration.count') or arguments of the call ('force') —
through `setting()`; the CLI shows each as the flag that sets it ('--calib-count 12').
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_SETTING = re.compile(r"«([A-Za-z0-9_.]+)(?: ([^»]*))?»")


def setting(name: str, value: object = None) -> str:
    """A setting (and the value to give it) named inside an error message."""
    return f"«{name}»" if value is None else f"«{name} {value}»"


def render(text: str, flags: Mapping[str, str] | None = None) -> str:
    """`text` with its settings spelt as flags where `flags` (setting -> flag) has them, else as
    fields ('calibration.count: 12')."""

    def one(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        flag = (flags or {}).get(name)
        if flag:
            return flag if value is None else f"{flag} {value}"
        return name if value is None else f"{name}: {value}"

    return _SETTING.sub(one, text)


def summary(exc: BaseException) -> str:
    """'Type: first line of the message' of an exception raised by user code or a library."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation the process was refused (MemoryError, torch's allocator)."""
    return isinstance(error, MemoryError) or "can't allocate memory" in str(error)


class ExporterError(Exception):
    """Base class: carries the process exit code."""

    exit_code = 2

    def __str__(self) -> str:
        return render(super().__str__())

    def render(self, flags: Mapping[str, str]) -> str:
        """The message with its settings spelt as the flags of the command that ran."""
        return render(super().__str__(), flags)


class UserError(ExporterError):
    """Bad input: a wrong recipe, a missing file, a model that cannot be built or run."""

    exit_code = 2


class CheckFailed(ExporterError):
    """A numerical or accuracy check did not pass."""

    exit_code = 1


def read_user_file(path: Path, kind: str = "yaml", source: str | None = None) -> Any:
    """Parse a YAML or JSON file the user handed us; anything unreadable is a one-line UserError."""
    import json

    import yaml

    source = source or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: not a text file (not UTF-8); pass a {kind.upper()} file") from None
    if kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader, stricter
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{source}: invalid YAML{where}: {problem}") from None


MAX_YAML_NODES = 100_000  # a recipe or data.yaml has hundreds; aliases may not expand past this
MAX_YAML_DEPTH = 64  # nesting levels, aliases expanded; a recipe has four


def _strict_loader():
    """yaml.SafeLoader that refuses a key given twice in one mapping (at the second's line), an alias
    inside the node it names (a cycle), nesting deeper than MAX_YAML_DEPTH levels and a document whose
    aliases expand to more than MAX_YAML_NODES nodes (an alias bomb)."""
    import yaml

    def refuse(problem: str, mark):
        raise yaml.composer.ComposerError(None, None, problem, mark)

    class StrictLoader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self.open_anchors: list[str | None] = []  # of the nodes being composed, outermost first

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) and event.anchor in self.open_anchors:
                refuse(f"alias *{event.anchor} inside the node it names (a cycle; refused)", event.start_mark)
            if len(self.open_anchors) >= MAX_YAML_DEPTH:
                refuse(f"nested deeper than {MAX_YAML_DEPTH} levels (refused)", event.start_mark)
            self.open_anchors.append(getattr(event, "anchor", None))
            try:
                return super().compose_node(parent, index)
            finally:
                self.open_anchors.pop()

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (remove one)", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

        def construct_document(self, node):
            measured: dict[int, tuple[int, int]] = {}  # node -> (nodes, levels), aliases expanded

            def measure(n, level: int) -> tuple[int, int]:  # memoized per node: no cycles (compose_node)
                if id(n) not in measured:
                    children = n.value if isinstance(n.value, list) else []
                    flat = [c for pair in children for c in (pair if isinstance(pair, tuple) else (pair,))]
                    parts = [measure(c, level + 1) for c in flat]
                    measured[id(n)] = 1 + sum(p[0] for p in parts), 1 + max((p[1] for p in parts), default=0)
                size, height = measured[id(n)]
                if size > MAX_YAML_NODES:
                    refuse(f"aliases expand to over {MAX_YAML_NODES} values (refused)", n.start_mark)
                if level + height > MAX_YAML_DEPTH:
                    refuse(f"aliases nest deeper than {MAX_YAML_DEPTH} levels (refused)", n.start_mark)
                return size, height

            measure(node, 0)
            return super().construct_document(node)

    return StrictLoader
