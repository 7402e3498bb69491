"""The stage graph: each stage is one declared value, a Node.

A node names its output in the run directory, the upstream nodes whose outputs it reads, the other files
it reads, how its settings (its cache key, with its inputs' hashes) follow from the recipe and its
upstream stages' records, and a `run` that is a function of those settings and files alone: it receives
a Call and returns its typed, frozen Record. A runner (exporter.pipeline.stages.runner) resolves the
graph, keys each node, and runs it or reuses its cached output; targets only declare nodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from exporter.base.artifacts import plain


@dataclass(frozen=True)
class Record:
    """What a stage found, as its manifest entry holds it (beside the runner's key, inputs, output,
    settings, versions and wall_s). Each stage subclasses it with its fields and its one-line summary."""

    def describe(self) -> str:
        raise NotImplementedError

    def as_json(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Self:
        """The record of a manifest entry (its other fields ignored)."""
        return cls(**{f.name: entry[f.name] for f in dataclasses.fields(cls) if f.name in entry})


@dataclass(frozen=True)
class Result:
    """A node run, or found cached, by a runner."""

    name: str
    output: Path
    record: Record
    cached: bool
    wall_s: float  # of the run that made the output


@dataclass(frozen=True)
class Call:
    """What a node's run receives."""

    settings: Any
    inputs: Mapping[str, Path]  # every file it reads, by input name (upstream outputs and `files`)
    output: Path  # the temporary output, renamed into place when the run returns
    later: Mapping[str, Callable[[], Path]] = field(default_factory=dict)  # on-demand upstream outputs
    say: Callable[[str], None] = lambda line: None  # progress lines


@dataclass(frozen=True, eq=False)
class Node:
    name: str  # in the manifest: 'fuse', 'openvino.int8', …
    output: str  # relative to the run directory
    run: Callable[[Call], Record]
    record: type[Record]  # what `run` returns
    settings: Callable[[Mapping[str, Result]], Any]  # (upstream results by input name) -> settings
    reads: Mapping[str, Node] = field(default_factory=dict)  # upstream nodes, by input name
    files: Mapping[str, Path] = field(default_factory=dict)  # other files in its key, by input name
    later: Mapping[str, Node] = field(default_factory=dict)  # upstream nodes it may need (not keyed)
    companions: tuple[str, ...] = ()  # suffixes of files written beside the output
    versions: Callable[[], dict[str, str]] = dict  # library versions its key holds beyond the shared ones
    accept: Callable[[Record], None] | None = None  # the check its run makes, applied to a cached record

    def upstream(self) -> list[Node]:
        """Every node it reads, itself excluded, each once, upstream first."""
        found: dict[str, Node] = {}
        for node in (*self.reads.values(), *self.later.values()):
            for each in (*node.upstream(), node):
                found.setdefault(each.name, each)
        return list(found.values())


def fixed(settings: Any) -> Callable[[Mapping[str, Result]], Any]:
    """Settings that depend on the recipe alone, not on an upstream record."""
    return lambda upstream: settings
